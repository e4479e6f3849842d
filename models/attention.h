// Attention modules of a GPT-2 block. Every variant takes the LayerNorm'd residual x
// [B, T, C] at absolute positions pos0 .. pos0+T-1 and returns [B, T, C]; with a cache it
// appends what it needs for later tokens and reads the earlier ones from it.
//
//   StandardAttention  c_attn C->3C, H heads, c_proj; optional SDPA gate
//                      (y *= sigmoid(W_g x + b_g)) and reciprocal attention (the last
//                      ra_heads heads attend with queries and keys swapped, projected,
//                      LayerNorm'd and added with a tanh(rho) gate, rho = 0 at init).
//                      Caches k, v (and the reciprocal heads' queries).
//   MLAAttention       per-head queries, one latent c = x W_dkv (cached), [k|v] = c W_ukv,
//                      RoPE on q and k over the whole head width.
//   KVSpliceAttention  c = x A (no bias), s = LN(c W_cmp) (cached), one RoPE head of width
//                      splice_dim, out = z A^T + z W_r + b_r with z = a W_c2l.
#pragma once
#include <vector>

#include <torch/torch.h>

#include "models/gemm.h"

#include "models/gpt2.h"

namespace knlp {

class AttentionBase : public torch::nn::Module {
public:
	// probs, when given, receives the softmax attention [B, H, T, S] of the base heads.
	virtual torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
				      std::vector<torch::Tensor> *cache, torch::Tensor *probs) = 0;
};

std::shared_ptr<AttentionBase> make_attention(const GPT2Config &c, int layer);

// Rotate-half rotary embedding of x [B, H, T, D] at positions pos0 .. pos0+T-1.
torch::Tensor apply_rope(const torch::Tensor &x, int64_t pos0, double base);

// y = x W^T + b through ATen's linear, not torch::nn::Linear::forward: the C++ frontend's
// forward does a matmul and a separate bias add for inputs of more than two dimensions,
// which under bf16 autocast costs a transposed weight cast, a mixed-precision bias add and
// its backward (about 8 ms of a 57 ms GPT-2 124M step on an H100, docs/performance.md);
// at::linear folds the batch into one GEMM with the bias in its epilogue. In float32 on
// AVX-512 CPUs the product is knlp's own (models/gemm.h), bias in its epilogue too.
inline torch::Tensor apply_linear(const torch::nn::Linear &l, const torch::Tensor &x)
{
	return knlp::linear(x, l->weight, l->bias);
}

// softmax(q k^T / sqrt(D) + bias) for q [B, H, T, D], k [B, H, S, D]; bias [T, S].
torch::Tensor attention_weights(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &bias);

class StandardAttentionImpl : public AttentionBase {
public:
	StandardAttentionImpl(const GPT2Config &c, int layer);
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
			      std::vector<torch::Tensor> *cache, torch::Tensor *probs) override;
	torch::nn::Linear c_attn{nullptr}, c_proj{nullptr}, gate{nullptr}, ra_proj{nullptr};
	LayerNorm ln_ra{nullptr};
	torch::Tensor ra_rho;

private:
	GPT2Config c_;
	bool ra_ = false;
	int layer_ = 0;
};

class MLAAttentionImpl : public AttentionBase {
public:
	explicit MLAAttentionImpl(const GPT2Config &c);
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
			      std::vector<torch::Tensor> *cache, torch::Tensor *probs) override;
	torch::nn::Linear q_proj{nullptr}, kv_down{nullptr}, kv_up{nullptr}, c_proj{nullptr};

private:
	GPT2Config c_;
};

class KVSpliceAttentionImpl : public AttentionBase {
public:
	explicit KVSpliceAttentionImpl(const GPT2Config &c);
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
			      std::vector<torch::Tensor> *cache, torch::Tensor *probs) override;
	torch::nn::Linear kv_down{nullptr}, splice{nullptr}, q_proj{nullptr}, kv_up{nullptr}, c2l{nullptr},
		res{nullptr};
	LayerNorm ln_splice{nullptr};

private:
	GPT2Config c_;
};

} // namespace knlp
