// Sub-command registration for the knlp binary; one function per subsystem.
#pragma once
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/config.h"

namespace knlp {

struct ConfigArgs {
	std::string path = ".config";
	std::vector<std::string> sets;
	bool given = false; // --config passed explicitly
	void add_to(CLI::App *cmd);
	Config load() const;
};

void add_data_commands(CLI::App &app);
void add_train_commands(CLI::App &app);
void add_matrix_commands(CLI::App &app);
void add_attention_commands(CLI::App &app);
void add_quant_commands(CLI::App &app);
void add_gguf_commands(CLI::App &app);
void add_fim_commands(CLI::App *fim);
void add_gnn_commands(CLI::App &app);
void add_tier_commands(CLI::App &app); // under `knlp fim`, next to `fim attention`
extern std::string g_command_line;

} // namespace knlp
