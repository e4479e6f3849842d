// Test-matrix expansion: models x optimizers x pruning methods x sparsity levels
// (x AdamWPrune variants) x seeds, with the original's compatibility rules and one run-id
// function used by the runner, dry runs, continue, rerun, shards and summaries.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"

namespace knlp {

struct MatrixRun {
	std::string id;	       // folder name: config_id, plus _s<seed> when there are several seeds
	std::string config_id; // <model>_<optimizer>[_<variant>]_<pruning>[_<pct>]
	std::string model, optimizer, variant, pruning;
	int sparsity_pct = 0; // 0 for pruning "none"
	int64_t seed = 0;
	std::vector<std::string> sets; // SYMBOL=VALUE over the matrix configuration
};

// The id grammar of the original: gpt2_adamw_none, gpt2_sgd_magnitude_50,
// gpt2_adamwprune_bitter7_state_50.
std::string run_id(const std::string &model, const std::string &optimizer, const std::string &variant,
		   const std::string &pruning, int sparsity_pct);

// True when the configuration describes more than one run (a MULTIPLE mode or several seeds).
bool is_matrix(const Config &cfg);

// Every run, in a stable order. An empty matrix is an error that says which symbols to change.
std::vector<MatrixRun> expand_matrix(const Config &cfg);

// A sweep (RANGE_CONFIG): lines CONFIG_SYMBOL=a|b|c or CONFIG_SYMBOL=start:step:end
// (numbers; end included), '#' comments. Every run of the matrix is repeated for every
// combination of the values (cartesian product, in file order); ids get a suffix
// _<symbol>-<value> per swept symbol, e.g. gpt2_adamw_none_learning_rate-1e-3.
struct SweepAxis {
	std::string symbol;
	std::vector<std::string> values;
};
std::vector<SweepAxis> parse_sweep(const std::string &text, const std::string &origin);
std::vector<MatrixRun> apply_sweep(const Config &cfg, const std::vector<MatrixRun> &runs,
				   const std::vector<SweepAxis> &axes);

// The single-run configuration of one run.
Config run_config(const Config &matrix_cfg, const MatrixRun &run);

} // namespace knlp
