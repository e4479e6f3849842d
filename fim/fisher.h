// Diagonal Fisher information of a GPT-2 on held-out text, and its agreement with Adam's
// second moment.
//
// Calibration as the original: `chunks` non-overlapping windows of `seq` tokens spread
// evenly over a token file, batch size 1, evaluation mode. For each window the gradient of
// the mean next-token loss is taken
//   - with the true labels: the empirical Fisher, F_emp = mean over windows of g^2;
//   - with labels drawn from the model's own predictive distribution at every position
//     (seeded): the true Fisher, F = mean over windows of g^2.
// One forward pass serves both backward passes. Every element is kept (float32), so the
// per-tensor, per-role and per-layer summaries and the element-wise comparison with v come
// from the same numbers.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "models/gpt2.h"
#include "models/llama.h"

namespace knlp {

class TokenFile;
class SafetensorsFile;
class Progress;

struct FisherOptions {
	int chunks = 64;
	int seq = 512;
	bool empirical = true, true_fisher = true;
	uint64_t seed = 0; // draws of the true Fisher's labels
	bool progress = true;
};

struct FisherResult {
	std::vector<std::string> names;				     // parameters, model order
	std::map<std::string, torch::Tensor> empirical, true_fisher; // per element, CPU float32
	int chunks = 0, seq = 0;
	uint64_t seed = 0;
	int64_t tokens = 0;
	double seconds = 0, mean_loss = 0;
	std::vector<int64_t> starts; // window offsets in the token file
	const std::map<std::string, torch::Tensor> &kind(const std::string &k) const;
	std::vector<std::string> kinds() const; // "empirical", "true" (those computed)
};

// Window starts: chunks windows of seq (+1 target) tokens, evenly spaced over n tokens and
// not overlapping. Errors name `path` when the file is too short.
std::vector<int64_t> fisher_windows(uint64_t n, int chunks, int seq, const std::string &path);

// A result with the run's options and windows filled in, after checking that something is
// to be computed and that --seq fits the model's `context` positions.
FisherResult fisher_start(const TokenFile &data, const FisherOptions &o, int64_t context);
// The progress line after window w (loss_sum: the summed loss of windows 0..w), and the end:
// time, mean loss, and the accumulated squared gradients (acc_e empirical, acc_t true, in
// r.names order) as per-window means on the CPU.
void fisher_window_done(FisherResult &r, Progress &prog, const FisherOptions &o, int w, double loss_sum);
void fisher_finish(FisherResult &r, Progress &prog, const FisherOptions &o, double loss_sum,
		   std::vector<torch::Tensor> &acc_e, std::vector<torch::Tensor> &acc_t);

FisherResult compute_fisher(GPT2 &model, const TokenFile &data, const FisherOptions &o);
// The same for an imported Llama-family model (fim/llama_fisher.cpp; CPU, memory bounded:
// the weights, the accumulators and one window's activations).
FisherResult compute_fisher(Llama &model, const TokenFile &data, const FisherOptions &o);

// Role of a parameter for the Fisher tables: llama.cpp's role (attn_qkv, attn_output,
// ffn_up, ffn_down, token_embd, position_embd), else "norm" or "bias" or "other".
std::string fisher_role(const std::string &name, int *layer);

// {"tensors": [...], "roles": {...}, "layers": [...], "total": {...}} with per-tensor trace
// (sum of the diagonal), mean, max, the z-score of its mean within its role and the
// percentile of its mean over all tensors.
nlohmann::json fisher_json(const FisherResult &r);
void print_fisher_table(const FisherResult &r, const nlohmann::json &j);

// fisher.safetensors: "empirical.<param>", "true.<param>"; metadata holds the options.
void save_fisher(const std::string &path, const FisherResult &r);
FisherResult load_fisher(const std::string &path);

// Mean of each tensor's diagonal, per parameter name (for plans and tiering).
std::map<std::string, double> fisher_tensor_means(const FisherResult &r, const std::string &kind);

// Agreement of Adam's second moment with each Fisher. v comes from a checkpoint's
// optimizer.safetensors (exp_avg_sq.<param>); bias correction divides by 1 - beta2^age,
// age = steps since v was last zeroed (SPAM's periodic reset) or the optimizer step.
struct AdamMoments {
	std::map<std::string, torch::Tensor> v; // raw
	int64_t step = 0, age = 0;
	double beta2 = 0.999;
	double correction() const; // 1 / (1 - beta2^age)
	std::string optimizer;
	int64_t tokens_per_step = 0; // batch x block x accumulation
	bool clipped = false;
	double clip = 0;
};
AdamMoments read_adam_moments(const std::string &ckpt_dir);

struct CompareOptions {
	std::vector<double> topk = {0.01, 0.1};
};
nlohmann::json compare_fisher(const AdamMoments &adam, const FisherResult &f, const CompareOptions &o);
void print_compare_table(const nlohmann::json &j);

} // namespace knlp
