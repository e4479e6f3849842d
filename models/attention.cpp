#include "models/attention.h"
#include "models/observer.h"

#include <cmath>

#include "core/error.h"
#include "core/torch_compat.h"
#include "models/fused.h"

namespace knlp {

namespace {

torch::nn::Linear linear(torch::nn::Module &m, const char *name, int in, int out, bool bias)
{
	return m.register_module(name, torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias)));
}

// Append the new rows (dim `dim`) to a cached tensor and return everything so far.
torch::Tensor append(std::vector<torch::Tensor> *cache, size_t slot, const torch::Tensor &t, int64_t dim)
{
	if (!cache)
		return t;
	if (cache->size() <= slot)
		cache->resize(slot + 1);
	auto &c = (*cache)[slot];
	c = c.defined() ? torch::cat({c, t}, dim) : t.contiguous();
	return c;
}

// Causal attention, explicit when the probabilities are wanted; on the CPU without a fused
// kernel, in query blocks (models/fused.h) where that pays.
torch::Tensor attend(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &v, const torch::Tensor &bias,
		     double p, const GPT2Config &c, torch::Tensor *probs)
{
	const bool fused = c.fused_attention && compat::has_fused_attention();
	if (!probs && !fused && c.blocked_attention && p == 0 && q.device().is_cpu() && q.size(2) == k.size(2)) {
		const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
		if (int64_t block = attention_block_rows(T))
			return blocked_causal_attention(q.reshape({B * H, T, D}), k.reshape({B * H, T, D}),
							v.reshape({B * H, T, D}), bias, block)
				.view({B, H, T, D});
	}
	if (!probs)
		return compat::causal_attention(q, k, v, bias, p, fused);
	auto w = attention_weights(q, k, bias);
	*probs = w;
	if (p > 0)
		w = torch::dropout(w, p, true);
	return torch::matmul(w, v);
}

torch::Tensor merge_heads(const torch::Tensor &y) // [B, H, T, D] -> [B, T, H*D]
{
	return y.transpose(1, 2).reshape({y.size(0), y.size(2), y.size(1) * y.size(3)});
}

} // namespace

torch::Tensor apply_rope(const torch::Tensor &x, int64_t pos0, double base)
{
	const int64_t T = x.size(2), D = x.size(3), half = D / 2;
	auto opts = torch::TensorOptions().dtype(torch::kDouble).device(x.device());
	auto inv = torch::pow(base, -torch::arange(0, half, opts) * (2.0 / double(D)));
	auto ang = torch::outer(torch::arange(pos0, pos0 + T, opts), inv); // [T, D/2]
	ang = torch::cat({ang, ang}, 1).to(x.scalar_type());
	auto cos = ang.cos(), sin = ang.sin();
	auto x1 = x.narrow(3, 0, half), x2 = x.narrow(3, half, half);
	auto rot = torch::cat({-x2, x1}, 3);
	return x * cos + rot * sin;
}

torch::Tensor attention_weights(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &bias)
{
	auto s = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(-1))));
	return torch::softmax(s + bias.to(s.dtype()), -1);
}

std::shared_ptr<AttentionBase> make_attention(const GPT2Config &c, int layer)
{
	switch (c.kind(layer)) {
	case AttnKind::MLA: return std::make_shared<MLAAttentionImpl>(c);
	case AttnKind::KVSplice: return std::make_shared<KVSpliceAttentionImpl>(c);
	default: return std::make_shared<StandardAttentionImpl>(c, layer);
	}
}

// ---------------------------------------------------------------- standard (+ gate, RA)

StandardAttentionImpl::StandardAttentionImpl(const GPT2Config &c, int layer) : c_(c), ra_(c.is_ra(layer)), layer_(layer)
{
	c_attn = linear(*this, "c_attn", c.n_embd, 3 * c.n_embd, c.bias);
	c_proj = linear(*this, "c_proj", c.n_embd, c.n_embd, c.bias);
	if (c.sdpa_gate)
		gate = linear(*this, "gate", c.n_embd, c.n_embd, true);
	if (ra_) {
		int D = c.n_embd / c.n_head;
		ra_proj = linear(*this, "ra_proj", D * c.ra_heads, c.n_embd, true);
		ln_ra = register_module("ln_ra", LayerNorm(c.n_embd, c.bias));
		ra_rho = register_parameter("ra_rho", torch::zeros({1}));
	}
}

torch::Tensor StandardAttentionImpl::forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t,
					     std::vector<torch::Tensor> *cache, torch::Tensor *probs)
{
	auto B = x.size(0), T = x.size(1), C = x.size(2);
	int64_t H = c_.n_head, D = C / H, n = c_.ra_heads;
	auto *obs = forward_observer();
	if (obs)
		obs->linear_input(layer_, "attn.c_attn", x);
	// Three [B, T, C] slices viewed as [B, H, T, D] heads: their backward is one concatenation.
	auto qkv = apply_linear(c_attn, x).split(C, 2);
	auto heads = [&](const torch::Tensor &t) { return t.view({B, T, H, D}).transpose(1, 2); };
	auto q = heads(qkv[0]), k_new = heads(qkv[1]);
	auto k = append(cache, 0, k_new, 2), v = append(cache, 1, heads(qkv[2]), 2);
	double p = is_training() ? c_.dropout : 0.0;
	auto y = merge_heads(attend(q, k, v, mask_bias, p, c_, probs));
	if (gate)
		y = y * torch::sigmoid(apply_linear(gate, x));
	if (ra_) {
		// Reciprocal heads: row i scores k_i . q_j for j <= i (queries and keys swapped).
		auto q_all = append(cache, 2, q.narrow(1, H - n, n), 2); // [B, n, S, D]
		auto k_r = k_new.narrow(1, H - n, n);			 // [B, n, T, D]
		auto v_r = v.narrow(1, H - n, n);
		auto yr = merge_heads(attend(k_r, q_all, v_r, mask_bias, p, c_, nullptr));
		y = y + torch::tanh(ra_rho) * ln_ra(apply_linear(ra_proj, yr));
	}
	if (obs)
		obs->linear_input(layer_, "attn.c_proj", y);
	y = apply_linear(c_proj, y);
	return p > 0 ? torch::dropout(y, p, true) : y;
}

// ---------------------------------------------------------------- MLA

MLAAttentionImpl::MLAAttentionImpl(const GPT2Config &c) : c_(c)
{
	q_proj = linear(*this, "q_proj", c.n_embd, c.n_embd, c.bias);
	kv_down = linear(*this, "kv_down", c.n_embd, c.d_latent, c.bias);
	kv_up = linear(*this, "kv_up", c.d_latent, 2 * c.n_embd, c.bias);
	c_proj = linear(*this, "c_proj", c.n_embd, c.n_embd, c.bias);
}

torch::Tensor MLAAttentionImpl::forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
					std::vector<torch::Tensor> *cache, torch::Tensor *probs)
{
	auto B = x.size(0), T = x.size(1), C = x.size(2);
	int64_t H = c_.n_head, D = C / H;
	auto q = apply_rope(apply_linear(q_proj, x).view({B, T, H, D}).transpose(1, 2), pos0, c_.rope_base);
	auto lat = append(cache, 0, apply_linear(kv_down, x), 1); // [B, S, d_latent]: the only cached tensor
	auto S = lat.size(1);
	auto kv = apply_linear(kv_up, lat).split(C, 2);
	auto heads = [&](const torch::Tensor &t) { return t.view({B, S, H, D}).transpose(1, 2); };
	auto k = apply_rope(heads(kv[0]), 0, c_.rope_base), v = heads(kv[1]);
	double p = is_training() ? c_.dropout : 0.0;
	auto y = apply_linear(c_proj, merge_heads(attend(q, k, v, mask_bias, p, c_, probs)));
	return p > 0 ? torch::dropout(y, p, true) : y;
}

// ---------------------------------------------------------------- KVSplice

KVSpliceAttentionImpl::KVSpliceAttentionImpl(const GPT2Config &c) : c_(c)
{
	const int W = c.splice_dim;
	kv_down = linear(*this, "kv_down", c.n_embd, c.d_latent, false); // A; its transpose decodes
	splice = linear(*this, "splice", c.d_latent, W, c.bias);
	ln_splice = register_module("ln_splice", LayerNorm(W, c.bias));
	q_proj = linear(*this, "q_proj", W, W, c.bias);
	kv_up = linear(*this, "kv_up", W, 2 * W, c.bias);
	c2l = linear(*this, "c2l", W, c.d_latent, c.bias);
	res = linear(*this, "res", c.d_latent, c.n_embd, true);
}

torch::Tensor KVSpliceAttentionImpl::forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
					     std::vector<torch::Tensor> *cache, torch::Tensor *probs)
{
	auto B = x.size(0), T = x.size(1);
	const int64_t W = c_.splice_dim;
	auto s_new = ln_splice(apply_linear(splice, apply_linear(kv_down, x))); // [B, T, W]
	// Under CPU bf16 autocast the LayerNorm returns float32 but every use of s is a product
	// that runs in bf16: cache it in bf16 (half the bytes, the same results).
	if (compat::cpu_autocast_enabled() && s_new.is_cpu())
		s_new = s_new.to(torch::kBFloat16);
	auto s = append(cache, 0, s_new, 1); // cached splice [B, S, W]
	auto S = s.size(1);
	auto q = apply_rope(apply_linear(q_proj, s_new).view({B, 1, T, W}), pos0, c_.rope_base);
	auto kv = apply_linear(kv_up, s);
	auto k = apply_rope(kv.narrow(2, 0, W).reshape({B, 1, S, W}), 0, c_.rope_base);
	auto v = kv.narrow(2, W, W).reshape({B, 1, S, W});
	double p = is_training() ? c_.dropout : 0.0;
	auto a = attend(q, k, v, mask_bias, p, c_, probs).view({B, T, W});
	auto z = apply_linear(c2l, a);					   // [B, T, d_latent]
	auto y = torch::matmul(z, kv_down->weight) + apply_linear(res, z); // z A^T + z W_r + b_r
	return p > 0 ? torch::dropout(y, p, true) : y;
}

} // namespace knlp
