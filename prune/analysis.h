// What Adam's state says about a trained model's weights, from its checkpoint: how many
// second moments sit below bitter8's floor, and how far the state-based scores (bitter7,
// bitter8) rank weights differently from magnitude. scripts/prune_report.py reads it through
// `knlp prune analyze` (docs/pruning.md).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace knlp {

struct StateAnalysisOptions {
	int64_t sample = 400000; // Spearman on a seeded sample of at most this many weights
	uint64_t seed = 0;
};

// Over the prunable weights of the checkpoint folder that are not pruned (w != 0): weights,
// v_below_1e-5, v_median, spearman_bitter8_vs_absw, spearman_bitter7_vs_absw,
// bitter8_distinct_scores, keep50_overlap_bitter8_vs_magnitude. Errors name the file when
// the checkpoint has no Adam state.
nlohmann::json analyze_adam_state(const std::string &ckpt_dir, const StateAnalysisOptions &o = {});

} // namespace knlp
