// Optimizers with their state in the open. Every parameter's state (m, v, v_max) is
// reachable by parameter name, for pruning, Fisher tools and checkpoints. On the CPU the
// update of SGD, Adam, AdamW and AMSGrad, with the global-norm clip folded in, is one
// multithreaded pass over all parameters; elsewhere it runs as libtorch ops.
//
//   SGD        buf = mu buf + (g + wd p); p -= lr buf
//   Adam       g += wd p; Adam moments; p -= lr m^ / (sqrt(v^) + eps)
//   AdamW      p *= 1 - lr wd; then Adam without the coupled term
//   AdamWAdv   AdamW with AMSGrad (v_max in the denominator); the trainer clips at 1.0
//   AdamWSPAM  AdamWAdv + spike-aware clip, z-score soft reset, periodic reset with a
//              cosine re-warmup (before_clip())
//   SinkGD     p -= lr wd p; p -= lr T(g) (Sinkhorn-normalised gradient, RMS of g)
#pragma once
#include <deque>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/settings.h"
#include <torch/torch.h>

namespace knlp {

struct ParamState {
	std::string name;
	torch::Tensor param;
	torch::Tensor exp_avg;	      // m (SGD: the momentum buffer); undefined for SinkGD
	torch::Tensor exp_avg_sq;     // v; undefined for SGD and SinkGD
	torch::Tensor max_exp_avg_sq; // v_max; defined only with AMSGrad
	double weight_decay = 0.0;
};

enum class OptimKind { SGD, Adam, AdamW, SinkGD };

struct OptimizerOptions {
	OptimKind kind = OptimKind::AdamW;
	std::string name = "adamw"; // sgd, adam, adamw, adamwadv, adamwspam, adamwprune, sinkgd
	double lr = 6e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.1;
	double momentum = 0.9;
	bool amsgrad = false;
	// AdamWSPAM
	bool spam = false;
	double spam_theta = 50.0, spam_spike_z = 2.0;
	int64_t spam_interval = 1000, spam_warmup = 150;
	bool spam_double_step = false; // the original's step counted twice per iteration
	// SinkGD
	double sinkgd_tau = 0.1;
	int sinkgd_iters = 5;
};

// Spec parameter groups: no decay for biases, norm parameters and embeddings.
bool decays(const std::string &name, const torch::Tensor &p);

class Optimizer {
public:
	Optimizer(const std::vector<std::pair<std::string, torch::Tensor>> &named_params, OptimizerOptions opt);

	// AdamWSPAM's per-iteration work before the clip (spike-aware clip, z-score soft reset,
	// periodic reset). Returns the factor for this iteration's learning rate (its cosine
	// re-warmup); 1 for every other optimizer.
	double before_clip();
	// Global L2 norm of all gradients (deterministic: fixed-size chunks summed in order).
	double grad_norm() const;
	// Name of the first parameter (in order) whose gradient holds a NaN or an infinity; "?"
	// when none does.
	std::string first_nonfinite_grad() const;
	// One step at learning rate lr; gradients are first scaled by grad_scale (the clip).
	void step(double lr, double grad_scale = 1.0);
	void zero_grad();

	int64_t step_count() const { return step_; }
	void set_step_count(int64_t s) { step_ = s; }
	std::vector<ParamState> &state() { return state_; }
	const std::vector<ParamState> &state() const { return state_; }
	ParamState *find(const std::string &name);
	const OptimizerOptions &options() const { return opt_; }
	bool has_second_moment() const { return opt_.kind == OptimKind::Adam || opt_.kind == OptimKind::AdamW; }
	int64_t state_bytes() const;

	// Checkpoint form: state tensors named exp_avg.<p>, exp_avg_sq.<p>, max_exp_avg_sq.<p>
	// (momentum.<p> for SGD), and the scalar state as JSON.
	std::vector<std::pair<std::string, torch::Tensor>> state_tensors();
	nlohmann::json extra_state() const;
	void load_extra_state(const nlohmann::json &j);

	// SPAM counters, exposed for tests.
	int64_t spam_soft_resets() const { return spam_soft_resets_; }
	int64_t spam_hard_resets() const { return spam_hard_resets_; }

private:
	void step_cpu(double lr, double grad_scale);
	void step_generic(double lr, double grad_scale);
	void step_sinkgd(double lr, double grad_scale);
	std::vector<ParamState> state_;
	OptimizerOptions opt_;
	int64_t step_ = 0;
	std::deque<double> spam_norms_;
	int64_t spam_reset_at_ = -1, spam_soft_resets_ = 0, spam_hard_resets_ = 0;
};

// The optimizer CONFIG_OPTIMIZER_* selects, with its CONFIG_* parameters, validated.
OptimizerOptions optimizer_options_from(const OptimSettings &c, double lr);
// CONFIG_ADAMWPRUNE_GPT2_ORIGINAL_COMPAT on a GPT-2 AdamWPrune run: what the original's GPT-2
// trainer effectively ran (plain AdamW, betas 0.9 / 0.999, no weight decay, no AMSGrad);
// true when it changed o.
bool apply_original_gpt2_adamwprune(const OptimSettings &c, OptimizerOptions &o);

// SinkGD's transform of one gradient (exposed for tests).
torch::Tensor sinkgd_transform(const torch::Tensor &g, double tau, int iters);

} // namespace knlp
