// Memory tiering of a GPT-2's weights: which tensors live in fast, middle and slow memory,
// and what that costs at inference.
//
// Plan. A module is a linear, a LayerNorm or an embedding (its weight and bias). Each
// parameter tensor gets a score, from Adam's state (mean |m| + mean sqrt(v), the
// original's rule) or from the diagonal Fisher (its mean); a module's score is the mean of
// its tensors'. Modules are ranked by score, highest first, and cut at two cumulative
// fractions a < b: the first a of them go to the fast tier, those up to b to the middle
// tier, the rest to the slow tier. Fractions count modules (the original) or bytes. The
// original's code used 30/20/50 (cuts 0.3,0.5) and its documentation 30/50/20 (cuts
// 0.3,0.8); the default here is the code's.
//
// Bench. Batch 1, a window of `context` tokens, warm-up passes then timed ones:
//   untiered  the model as it is;
//   emulated  before each block (and before the embedding/head), wait the time the cost
//             model gives for moving that group's tensors from their tiers:
//             setup + bytes / bandwidth per tensor (fast 1 us 800 GB/s, middle 5 us
//             150 GB/s, slow 30 us 10 GB/s by default);
//   offload   real movement: the slow tier's tensors are freed after each use and read back
//             from a file before the next (O_DIRECT where the filesystem allows it, else a
//             buffered read after dropping the file's pages from the cache); on a GPU the
//             middle tier is kept in pinned host memory and copied in before use. On the
//             CPU the middle tier is host memory already and does not move.
// The logits of every mode are compared with the untiered ones (offload must be exact).
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "models/gpt2.h"

namespace knlp {

class Config;

struct TierCost {
	double setup_us = 0, gbps = 1;
	double seconds(int64_t bytes) const { return setup_us * 1e-6 + double(bytes) / (gbps * 1e9); }
};

struct TierOptions {
	std::string source = "adam"; // adam or fim
	double cut_fast = 0.3, cut_middle = 0.5;
	bool by_bytes = false;
	TierCost cost[3] = {{1, 800}, {5, 150}, {30, 10}};
};

struct TierModule {
	std::string name;		  // e.g. transformer.h.3.mlp.c_fc
	std::vector<std::string> tensors; // parameter names
	int layer = -1;			  // block index; -1: embeddings and the final norm
	int64_t bytes = 0;
	double score = 0;
	int tier = 0; // 0 fast, 1 middle, 2 slow
};

extern const char *const kTierNames[3]; // "fast", "middle", "slow"

// "0.3,0.5" -> the two cuts; errors name the text.
void parse_tier_cuts(const std::string &text, TierOptions *o);
// CONFIG_TIER_* as options, validated.
TierOptions tier_options_from(const TierSettings &c);

// Modules of the model with their tensors and bytes (model order).
std::vector<TierModule> tier_modules(GPT2 &model);
// Tensor scores from a checkpoint's optimizer state (mean |m| + mean sqrt(v)); errors say
// what is missing and suggest --source fim.
std::map<std::string, double> adam_tier_scores(const std::string &ckpt_dir);
// Rank and cut: fills score and tier of every module.
void assign_tiers(std::vector<TierModule> &mods, const std::map<std::string, double> &tensor_scores,
		  const TierOptions &o);
nlohmann::json tier_plan_json(const std::vector<TierModule> &mods, const TierOptions &o);
void print_tier_plan(const nlohmann::json &j);

struct TierBenchOptions {
	int context = 128, warmup = 10, iters = 100;
	std::vector<std::string> modes = {"untiered", "emulated", "offload"};
	std::string store_dir; // where offload writes the slow tier's file
	bool progress = true;
};
// Runs the modes and reports latency (mean, p50, p90), tokens/s, the ratio to the untiered
// run, bytes moved per forward and the largest logit difference to the untiered model. The
// model's weights are the same afterwards.
nlohmann::json tier_bench(GPT2 &model, const std::vector<TierModule> &mods, const TierOptions &o,
			  const TierBenchOptions &b, const torch::Tensor &tokens);
void print_tier_bench(const nlohmann::json &j);

} // namespace knlp
