// AdamW with its state in the open: every parameter's moments are reachable by name (for
// checkpoints now; for pruning and Fisher tools later). On the CPU the whole update, with
// the global-norm clip folded in, is one multithreaded pass over all parameters.
#pragma once
#include <string>
#include <vector>

#include <torch/torch.h>

namespace knlp {

struct ParamState {
	std::string name;
	torch::Tensor param;
	torch::Tensor exp_avg, exp_avg_sq; // m, v (same shape as param)
	double weight_decay = 0.0;
};

struct AdamWOptions {
	double lr = 6e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.1;
};

// Spec parameter groups: no decay for biases, norm parameters and embeddings.
bool decays(const std::string &name, const torch::Tensor &p);

class AdamW {
public:
	AdamW(const std::vector<std::pair<std::string, torch::Tensor>> &named_params, AdamWOptions opt);

	// Global L2 norm of all gradients (deterministic: fixed-size chunks summed in order).
	double grad_norm() const;
	// One step at learning rate lr; gradients are first scaled by grad_scale (the clip).
	void step(double lr, double grad_scale = 1.0);
	void zero_grad();

	int64_t step_count() const { return step_; }
	void set_step_count(int64_t s) { step_ = s; }
	std::vector<ParamState> &state() { return state_; }
	const AdamWOptions &options() const { return opt_; }
	int64_t state_bytes() const;

private:
	void step_cpu(double lr, double grad_scale);
	void step_generic(double lr, double grad_scale);
	std::vector<ParamState> state_;
	AdamWOptions opt_;
	int64_t step_ = 0;
};

} // namespace knlp
