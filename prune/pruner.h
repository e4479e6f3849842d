// The pruning engine: which tensors are prunable, their 1-byte masks, the sparsity schedule
// and the spec's order of operations around the optimizer step:
//   mask_grads()  g *= mask                      (before the clip and the step)
//   optimizer step
//   after_step()  recompute masks when step > warmup and step % freq == 0 (or step ==
//                 ramp end); w *= mask; state pruning also m *= mask, v *= mask (every step)
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/settings.h"
#include <torch/torch.h>

#include "optim/optimizer.h"

namespace knlp {

enum class PruneMethod { None, Magnitude, Movement, State };

struct PruneOptions {
	PruneMethod method = PruneMethod::None;
	double target = 0.5;
	int64_t warmup = 100, frequency = 50, ramp_end = 1000;
	int variant = 7; // bitter variant for state pruning
	bool bitter5_intended = false;
	bool exact = true; // exact radix selection, else sampling
	double sample_fraction = 0.02;
	uint64_t seed = 0; // for the sampled threshold
};

const char *method_name(PruneMethod m);

// Linear / Conv weights (and the tied token embedding, which is the output head); never
// biases, norms or position tables.
bool prunable(const std::string &name, const torch::Tensor &p);

struct PruneStats {
	double sparsity = 0;   // fraction of prunable weights masked off (0 before pruning starts)
	double target_now = 0; // scheduled sparsity at the last mask update
	int64_t prunable = 0;  // number of prunable parameters
	int64_t mask_bytes = 0, w0_bytes = 0, score_bytes_peak = 0;
	std::map<std::string, double> per_tensor; // name -> sparsity
};

class Pruner {
public:
	// opt: the optimizer whose state state-pruning scores read and whose moments it masks.
	Pruner(PruneOptions o, Optimizer &opt);

	bool enabled() const { return o_.method != PruneMethod::None; }
	void mask_grads();
	// Called after each optimizer step with the optimizer's step count.
	void after_step(int64_t step);
	PruneStats stats() const;
	double scheduled(int64_t step) const;
	const PruneOptions &options() const { return o_; }

	// Checkpoint form: mask.<p> (BOOL) and w0.<p> tensors, plus JSON.
	std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
	nlohmann::json extra_state() const;
	// Restore from a checkpoint: `get` returns the stored tensor or an undefined one.
	void load(const nlohmann::json &j, const std::function<torch::Tensor(const std::string &)> &get);

	struct Target {
		std::string name;
		torch::Tensor param, mask, w0; // mask: kBool, undefined until the first update
		ParamState *state = nullptr;
	};
	const std::vector<Target> &targets() const { return targets_; }

private:
	void update_masks(int64_t step);
	torch::Tensor score(const Target &t) const;
	void apply();
	PruneOptions o_;
	std::vector<Target> targets_;
	double target_now_ = 0;
	int64_t score_bytes_peak_ = 0;
};

// CONFIG_PRUNING_* and CONFIG_ADAMWPRUNE_* (with the optimizer choice), validated: bad
// values fail before training starts. max_iters resolves a ramp end of 0.
// ramp_end > 0 replaces CONFIG_PRUNING_RAMP_END (the image trainer derives it from
// CONFIG_PRUNING_RAMP_END_EPOCH and the steps per epoch).
PruneOptions prune_options_from(const PruneSettings &c, const OptimizerOptions &opt, int64_t max_iters, uint64_t seed,
				int64_t ramp_end = 0);

} // namespace knlp
