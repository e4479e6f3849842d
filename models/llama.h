// Llama-family decoders as Hugging Face defines them: LlamaForCausalLM and Qwen2ForCausalLM
// (RMSNorm, rotary positions with the config's theta and scaling, grouped-query attention,
// SwiGLU MLP; Qwen2's q/k/v biases; tied or untied embeddings). Parameters keep Hugging
// Face's names and the checkpoint's dtype (bf16 stays bf16, memory-mapped); arithmetic is
// float32 on the CPU, each weight widened as it is used.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

namespace knlp {

class HfCheckpoint;

struct LlamaConfig {
	std::string arch = "llama"; // llama.cpp's name: llama or qwen2
	std::string hf_arch;	    // LlamaForCausalLM or Qwen2ForCausalLM
	int64_t vocab = 0, hidden = 0, intermediate = 0, n_layer = 0, n_head = 0, n_kv_head = 0, head_dim = 0;
	int64_t max_positions = 0;
	double rope_theta = 10000.0, rms_eps = 1e-6;
	std::string rope_scaling = "none"; // none, linear, llama3
	double rope_factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
	int64_t original_max_positions = 0;
	bool tied = false, qkv_bias = false, o_bias = false, mlp_bias = false;
	int64_t bos = -1, eos = -1;

	int64_t num_params() const;
	// Cached values (keys and values of the kv heads) per token over all layers.
	int64_t cache_values_per_token() const { return 2 * n_layer * n_kv_head * head_dim; }
	// The rotary inverse frequencies [head_dim / 2] (float32, as Hugging Face computes them).
	torch::Tensor inv_freq() const;
};

// config.json of LlamaForCausalLM / Qwen2ForCausalLM, range-checked.
LlamaConfig llama_config_from(const HfCheckpoint &ck);

// Gradient sinks of the diagonal Fisher (fim/llama_fisher.cpp). While set on a model, a
// backward pass through it adds each weight's squared gradient into `acc` (float32, one per
// named weight) as the gradient is produced, without keeping it and without float32 copies
// of the weights: memory stays at the weights plus the accumulators.
struct LlamaFisherTap {
	std::unordered_map<const void *, size_t> slot; // weight storage -> index in named_weights()
	std::vector<torch::Tensor> *acc = nullptr;     // the accumulators of the current pass
	// The window's embedding gradient: summed over its uses (lookup and, tied, the head)
	// before it is squared, by flush().
	torch::Tensor embed_grad;
	size_t embed_slot = 0, head_slot = 0;
	bool tied = false;
	// Float32 leaves of the norm weights (small), differentiated by autograd.
	std::unordered_map<const void *, torch::Tensor> norm_leaf;
	torch::Tensor anchor; // a leaf that makes the embedding lookup differentiable
	void flush();	      // square what the window left in embed_grad and the norm leaves
};

struct LlamaCache {
	std::vector<torch::Tensor> k, v; // per layer [B, n_kv_head, S, head_dim]
	int64_t len = 0;
	int64_t bytes() const;
};

// A weight by its Hugging Face name and the shape the configuration implies.
using LlamaWeightSource = std::function<torch::Tensor(const std::string &, const std::vector<int64_t> &)>;

class LlamaImpl : public torch::nn::Module {
public:
	// Weights from the checkpoint (shared with its mapping unless copy).
	LlamaImpl(const LlamaConfig &c, const HfCheckpoint &ck, bool copy = false);
	// Weights from any source (a GGUF file's, dequantized). freq_factors: llama.cpp's
	// rope_freqs (each rotary frequency is divided by its factor), or undefined.
	LlamaImpl(const LlamaConfig &c, const LlamaWeightSource &get, const torch::Tensor &freq_factors = {});
	const LlamaConfig &config() const { return c_; }
	// Final hidden states [B, T, hidden] (float32) of tokens at positions pos0.. .
	torch::Tensor hidden(const torch::Tensor &idx, LlamaCache *cache = nullptr);
	// Sum of the next-token cross-entropies over targets >= 0, and their count; the head and
	// the softmax go in chunks, so no [B, T, vocab] tensor is ever whole.
	std::pair<torch::Tensor, int64_t> loss_sum(const torch::Tensor &idx, const torch::Tensor &targets);
	// Logits [B, T, vocab] (float32): for tests and short inputs.
	torch::Tensor logits(const torch::Tensor &idx);
	// Incremental decoding: logits [B, vocab] of the last new token.
	torch::Tensor forward_cached(const torch::Tensor &idx, LlamaCache &cache);
	// Parameters in Hugging Face's names.
	std::vector<std::pair<std::string, torch::Tensor>> named_weights() const;
	torch::Tensor head_weight() const { return c_.tied ? embed_ : lm_head_; }
	// Fisher mode (nullptr: off). In it, loss_sum() differentiates through the taps.
	void set_fisher_tap(LlamaFisherTap *t) { tap_ = t; }
	// Activation statistics (nullptr: off): every linear adds the sum over tokens of its
	// input's squares, per input channel, keyed by its weight's storage.
	void set_activation_sink(std::unordered_map<const void *, torch::Tensor> *s) { act_ = s; }
	// The final hidden states and, for the Fisher, the loss of given labels from them.
	torch::Tensor head_loss_sum(const torch::Tensor &h, const torch::Tensor &targets);
	// One label per position drawn from the model's predictive distribution (Gumbel-max over
	// vocabulary chunks; `gen` seeded by the caller).
	torch::Tensor sample_labels(const torch::Tensor &h, at::Generator &gen);

private:
	void build(const LlamaWeightSource &get);
	struct Layer {
		torch::Tensor in_norm, post_norm, q, k, v, o, q_b, k_b, v_b, o_b, gate, up, down;
	};
	torch::Tensor attention(const Layer &L, const torch::Tensor &x, int64_t pos0, int layer, LlamaCache *cache);
	torch::Tensor proj(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b = {});
	torch::Tensor norm(const torch::Tensor &x, const torch::Tensor &w);
	LlamaFisherTap *tap_ = nullptr;
	std::unordered_map<const void *, torch::Tensor> *act_ = nullptr;
	LlamaConfig c_;
	torch::Tensor embed_, norm_, lm_head_;
	std::vector<Layer> layers_;
	torch::Tensor inv_freq_;
};
TORCH_MODULE(Llama);

// Mean squared input activation per input channel of every linear weight (Hugging Face
// names), over `chunks` windows of `seq` tokens spread over the file: llama.cpp's
// importance matrix.
class TokenFile;
std::map<std::string, torch::Tensor> collect_imatrix(Llama &model, const TokenFile &data, int chunks, int seq);

// A model rebuilt from a GGUF file of llama.cpp's llama or qwen2 architecture (knlp's export
// or another), every tensor dequantized to float32: the model a quantization plan leaves.
Llama load_gguf_llama(const std::string &path);
// llama.cpp's tensor name of a Llama-family weight's Hugging Face name ("" when none).
std::string gguf_llama_name(const std::string &hf);
// The architecture a GGUF file declares ("" when it cannot be read).
std::string gguf_architecture(const std::string &path);

} // namespace knlp
