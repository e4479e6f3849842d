// Sub-command registration for the knlp binary: one file of sub-commands per area, and in
// each, one options struct and one function per sub-command.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/config.h"

namespace knlp {

// --config FILE and --set SYMBOL=VALUE of a command that reads a configuration.
struct ConfigArgs {
	std::string path = ".config";
	std::vector<std::string> sets;
	CLI::Option *given = nullptr; // --config, to tell an explicit file from the default
	// Saved: a run folder's own configuration, read as the knlp that wrote it meant it.
	Config::Mode mode = Config::Mode::Strict;
	void add_to(CLI::App *cmd);
	bool explicit_path() const { return given && given->count() > 0; }
	Config load() const;
};

// A sub-command whose options live in a struct the callback owns: `define` adds the options
// to the command, `run` does the work. No function-local statics hold options.
template <class Options>
CLI::App *command(CLI::App &parent, const char *name, const char *help, void (*define)(CLI::App *, Options &),
		  void (*run)(Options &))
{
	auto opts = std::make_shared<Options>();
	CLI::App *c = parent.add_subcommand(name, help);
	define(c, *opts);
	c->callback([opts, run] { run(*opts); });
	return c;
}

void add_data_commands(CLI::App &app);
void add_train_commands(CLI::App &app);
void add_run_command(CLI::App &app);
void add_stats_commands(CLI::App &app); // stats interval, prune analyze
void add_matrix_commands(CLI::App &app);
void add_attention_commands(CLI::App &app);
void add_quant_commands(CLI::App &app);
void add_gguf_commands(CLI::App &app);
void add_fim_commands(CLI::App *fim);
void add_gnn_commands(CLI::App &app);
void add_tier_commands(CLI::App &app); // under `knlp fim`, next to `fim attention`
void add_dashboard_command(CLI::App &app);
bool dashboard_available(); // built with cpp-httplib
// One self-contained HTML file with the dashboard's pages over `roots` (knlp dashboard --export).
void export_dashboard(const std::vector<std::string> &roots, const std::string &out,
		      const std::string &assets_dir = "");
extern std::string g_command_line;

// The path of the running knlp binary (for commands that start more of it).
std::string self_exe();

// --shard k/N.
void parse_shard(const std::string &text, int *k, int *n);

} // namespace knlp
