// The language-model trainer: `knlp train` on a GPT-2 configuration.
#pragma once
#include <string>

#include "core/config.h"

namespace knlp {

struct TrainRequest {
	Config cfg;
	std::string out_dir;    // --out (empty: OUTPUT_DIR/RUN_NAME or a generated name)
	std::string resume_dir; // --resume RUN_DIR
	bool force = false;     // resume even when the configuration differs
	std::string command;    // command line, recorded in run.json
};

// Returns the process exit code (0 on success). Errors the user can fix throw knlp::Error.
int train_lm(TrainRequest req);

// Symbols that may change between a run and its resume without --force.
const std::vector<std::string> &resume_tolerant_symbols();

} // namespace knlp
