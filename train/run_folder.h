// The run folder of a training request: a new one (--out, OUTPUT_DIR/RUN_NAME or a
// generated name) or the one being resumed, whose checkpoint must match the configuration.
#pragma once
#include <string>
#include <vector>

namespace knlp {

struct TrainRequest;
class Config;

// Symbols that may change between a run and its resume without --force.
const std::vector<std::string> &resume_tolerant_symbols();

// A resume returns the folder's latest checkpoint in *ckpt after checking that the
// configuration matches it (or --force); a new run gets --out, OUTPUT_DIR/RUN_NAME or
// OUTPUT_DIR/<prefix>_<stamp>, which must not hold checkpoints yet.
std::string open_run_dir(const TrainRequest &req, const Config &cfg, const std::string &prefix, std::string *ckpt);

} // namespace knlp
