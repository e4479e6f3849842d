// The language-model trainer: `knlp train` on a GPT-2 configuration.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

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

// The run folder of a request, shared by every trainer. A resume returns the folder's latest
// checkpoint in *ckpt after checking that the configuration matches it (or --force); a new
// run gets --out, OUTPUT_DIR/RUN_NAME or OUTPUT_DIR/<prefix>_<stamp>, which must not hold
// checkpoints yet.
std::string open_run_dir(const TrainRequest &req, const Config &cfg, const std::string &prefix, std::string *ckpt);
class Pruner;
// The "pruning" record of training_metrics.json ({"method": "none"} when pruning is off).
nlohmann::json pruning_summary(const Pruner &p);

// Keep metrics.jsonl consistent with a resumed checkpoint: drop records past `iter`.
void truncate_jsonl(const std::string &path, int64_t iter);

} // namespace knlp
