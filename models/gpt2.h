// GPT-2 (nanoGPT-style): pre-LN blocks, learned positions, tied embedding/head, erf GELU.
// Parameter names follow nanoGPT (transformer.h.N.attn.c_attn.weight, ...); the head reuses
// transformer.wte.weight and is not a separate parameter.
#pragma once
#include <torch/torch.h>

#include "core/config.h"

namespace knlp {

struct GPT2Config {
	int n_layer = 12, n_head = 12, n_embd = 768, block_size = 1024;
	int vocab_size = 50304;   // padded
	int vocab_raw = 50257;    // ids the data can contain
	double dropout = 0.0;
	bool bias = true;
	bool fused_attention = true;
	bool fused_head_loss = true; // CPU: chunked linear + cross-entropy (models/linear_ce.h)

	static GPT2Config from(const Config &cfg, int data_vocab);
	void validate() const;
	int64_t num_params() const; // analytic count, equals the module's
	// Training FLOPs per token (6N + attention, as in the PaLM appendix / nanoGPT).
	double flops_per_token(int T) const;
};

int pad_vocab(int vocab, int multiple);

// Per-layer key/value cache for incremental decoding.
struct KVCache {
	std::vector<torch::Tensor> k, v; // [B, H, S, D] per layer
	int64_t length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
	int64_t bytes() const;
};

class LayerNormImpl : public torch::nn::Module {
public:
	LayerNormImpl(int dim, bool bias);
	torch::Tensor forward(const torch::Tensor &x);
	torch::Tensor weight, bias;

private:
	int dim_;
};
TORCH_MODULE(LayerNorm);

class CausalSelfAttentionImpl : public torch::nn::Module {
public:
	explicit CausalSelfAttentionImpl(const GPT2Config &c);
	// x [B, T, C]; with a cache, keys/values of earlier positions come from it and the new
	// ones are appended.
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, torch::Tensor *k_cache,
			      torch::Tensor *v_cache);
	torch::nn::Linear c_attn{nullptr}, c_proj{nullptr};

private:
	GPT2Config c_;
};
TORCH_MODULE(CausalSelfAttention);

class MLPImpl : public torch::nn::Module {
public:
	explicit MLPImpl(const GPT2Config &c);
	torch::Tensor forward(const torch::Tensor &x);
	torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};

private:
	double dropout_;
};
TORCH_MODULE(MLP);

class BlockImpl : public torch::nn::Module {
public:
	explicit BlockImpl(const GPT2Config &c);
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, torch::Tensor *kc,
			      torch::Tensor *vc);
	LayerNorm ln_1{nullptr}, ln_2{nullptr};
	CausalSelfAttention attn{nullptr};
	MLP mlp{nullptr};
};
TORCH_MODULE(Block);

struct GPT2Output {
	torch::Tensor logits; // [B, T, V], [B, 1, V] without targets; undefined when the fused
			      // CPU head computed the loss directly
	torch::Tensor loss;   // defined when targets were given
};

class GPT2Impl : public torch::nn::Module {
public:
	explicit GPT2Impl(const GPT2Config &c);
	// Training / scoring: idx [B, T]; targets [B, T] with -1 ignored. Without targets only
	// the last position's logits are computed (as nanoGPT does for generation).
	GPT2Output forward(const torch::Tensor &idx, const torch::Tensor &targets = {});
	// Logits of every position (no loss): used by evaluation and the KV-cache tests.
	torch::Tensor forward_all(const torch::Tensor &idx);
	// Incremental decoding: idx holds only the new tokens; returns their logits [B, T, V].
	torch::Tensor forward_cached(const torch::Tensor &idx, KVCache &cache);

	const GPT2Config &config() const { return c_; }
	int64_t count_parameters();
	void init_weights(); // spec init: N(0, 0.02), c_proj N(0, 0.02/sqrt(2L)), biases 0

	torch::nn::Embedding wte{nullptr}, wpe{nullptr};
	torch::nn::ModuleList h;
	LayerNorm ln_f{nullptr};

private:
	torch::Tensor hidden(const torch::Tensor &idx, int64_t pos0, KVCache *cache);
	torch::Tensor mask_bias(int64_t T, int64_t S, torch::Device dev);

	GPT2Config c_;
	torch::Tensor causal_bias_; // [block, block] additive mask, built once
};
TORCH_MODULE(GPT2);

} // namespace knlp
