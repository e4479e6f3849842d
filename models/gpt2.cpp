#include "models/gpt2.h"

#include <cmath>

#include "core/error.h"
#include "core/torch_compat.h"
#include "models/linear_ce.h"

namespace knlp {

int pad_vocab(int vocab, int multiple)
{
	return multiple <= 1 ? vocab : (vocab + multiple - 1) / multiple * multiple;
}

GPT2Config GPT2Config::from(const Config &cfg, int data_vocab)
{
	GPT2Config c;
	c.n_layer = static_cast<int>(cfg.get_int("GPT2_N_LAYER"));
	c.n_head = static_cast<int>(cfg.get_int("GPT2_N_HEAD"));
	c.n_embd = static_cast<int>(cfg.get_int("GPT2_N_EMBD"));
	c.block_size = static_cast<int>(cfg.get_int("GPT2_BLOCK_SIZE"));
	int v = static_cast<int>(cfg.get_int("GPT2_VOCAB_SIZE"));
	c.vocab_raw = v > 0 ? v : data_vocab;
	if (c.vocab_raw <= 0)
		fail("GPT-2: vocabulary size unknown: set CONFIG_GPT2_VOCAB_SIZE or prepare data with meta.json");
	c.vocab_size = pad_vocab(c.vocab_raw, static_cast<int>(cfg.get_int("GPT2_VOCAB_MULTIPLE")));
	c.dropout = cfg.get_float("GPT2_DROPOUT");
	c.bias = cfg.get_bool("GPT2_BIAS");
	c.fused_attention = cfg.get_bool("GPT2_FLASH_ATTENTION");
	c.fused_head_loss = cfg.get_bool("GPT2_FUSED_HEAD_LOSS");
	c.validate();
	return c;
}

void GPT2Config::validate() const
{
	if (n_embd % n_head != 0)
		fail("GPT-2: CONFIG_GPT2_N_HEAD={} does not divide CONFIG_GPT2_N_EMBD={}", n_head, n_embd);
	if (dropout < 0 || dropout >= 1)
		fail("GPT-2: CONFIG_GPT2_DROPOUT={} is outside [0, 1)", dropout);
	if (vocab_size < vocab_raw)
		fail("GPT-2: padded vocabulary {} smaller than {}", vocab_size, vocab_raw);
}

int64_t GPT2Config::num_params() const
{
	int64_t C = n_embd, L = n_layer, b = bias ? 1 : 0;
	int64_t ln = C + b * C;
	int64_t per_layer = 2 * ln + (C * 3 * C + b * 3 * C) + (C * C + b * C) + (C * 4 * C + b * 4 * C) +
			    (4 * C * C + b * C);
	return int64_t(vocab_size) * C + int64_t(block_size) * C + L * per_layer + ln;
}

double GPT2Config::flops_per_token(int T) const
{
	double N = static_cast<double>(num_params());
	return 6.0 * N + 12.0 * n_layer * n_embd * T;
}

int64_t KVCache::bytes() const
{
	int64_t b = 0;
	for (size_t i = 0; i < k.size(); i++)
		if (k[i].defined())
			b += k[i].numel() * k[i].element_size() + v[i].numel() * v[i].element_size();
	return b;
}

// ---------------------------------------------------------------- layers

LayerNormImpl::LayerNormImpl(int dim, bool with_bias) : dim_(dim)
{
	weight = register_parameter("weight", torch::ones({dim}));
	if (with_bias)
		bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor &x)
{
	return torch::layer_norm(x, {dim_}, weight, bias, 1e-5);
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GPT2Config &c) : c_(c)
{
	c_attn = register_module("c_attn", torch::nn::Linear(torch::nn::LinearOptions(c.n_embd, 3 * c.n_embd).bias(c.bias)));
	c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(c.n_embd, c.n_embd).bias(c.bias)));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor &x, const torch::Tensor &mask_bias,
					       torch::Tensor *k_cache, torch::Tensor *v_cache)
{
	auto B = x.size(0), T = x.size(1), C = x.size(2);
	int64_t H = c_.n_head, D = C / H;
	auto qkv = c_attn(x).view({B, T, 3, H, D}).permute({2, 0, 3, 1, 4}); // [3, B, H, T, D]
	auto q = qkv[0], k = qkv[1], v = qkv[2];
	if (k_cache) {
		if (k_cache->defined()) {
			k = torch::cat({*k_cache, k}, 2);
			v = torch::cat({*v_cache, v}, 2);
		}
		*k_cache = k;
		*v_cache = v;
	}
	double p = is_training() ? c_.dropout : 0.0;
	auto y = compat::causal_attention(q, k, v, mask_bias, p, c_.fused_attention && compat::has_fused_attention());
	y = y.transpose(1, 2).reshape({B, T, C});
	y = c_proj(y);
	return p > 0 ? torch::dropout(y, p, true) : y;
}

MLPImpl::MLPImpl(const GPT2Config &c) : dropout_(c.dropout)
{
	c_fc = register_module("c_fc", torch::nn::Linear(torch::nn::LinearOptions(c.n_embd, 4 * c.n_embd).bias(c.bias)));
	c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(4 * c.n_embd, c.n_embd).bias(c.bias)));
}

torch::Tensor MLPImpl::forward(const torch::Tensor &x)
{
	auto y = c_proj(torch::gelu(c_fc(x)));
	return is_training() && dropout_ > 0 ? torch::dropout(y, dropout_, true) : y;
}

BlockImpl::BlockImpl(const GPT2Config &c)
{
	ln_1 = register_module("ln_1", LayerNorm(c.n_embd, c.bias));
	attn = register_module("attn", CausalSelfAttention(c));
	ln_2 = register_module("ln_2", LayerNorm(c.n_embd, c.bias));
	mlp = register_module("mlp", MLP(c));
}

torch::Tensor BlockImpl::forward(const torch::Tensor &x, const torch::Tensor &mask_bias, torch::Tensor *kc,
				 torch::Tensor *vc)
{
	auto y = x + attn(ln_1(x), mask_bias, kc, vc);
	return y + mlp(ln_2(y));
}

// ---------------------------------------------------------------- model

GPT2Impl::GPT2Impl(const GPT2Config &c) : c_(c)
{
	c.validate();
	// nanoGPT nests these under "transformer"; a sub-module keeps the same names.
	auto tr = register_module("transformer", std::make_shared<torch::nn::Module>());
	wte = tr->register_module("wte", torch::nn::Embedding(c.vocab_size, c.n_embd));
	wpe = tr->register_module("wpe", torch::nn::Embedding(c.block_size, c.n_embd));
	h = tr->register_module("h", torch::nn::ModuleList());
	for (int i = 0; i < c.n_layer; i++)
		h->push_back(Block(c));
	ln_f = tr->register_module("ln_f", LayerNorm(c.n_embd, c.bias));
	auto full = torch::full({c.block_size, c.block_size}, -std::numeric_limits<float>::infinity());
	causal_bias_ = register_buffer("causal_bias", torch::triu(full, 1));
	init_weights();
}

void GPT2Impl::init_weights()
{
	torch::NoGradGuard ng;
	double proj_std = 0.02 / std::sqrt(2.0 * c_.n_layer);
	for (auto &p : named_parameters()) {
		const std::string &n = p.key();
		auto &t = p.value();
		bool is_bias = n.size() >= 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
		bool is_ln = n.find(".ln_") != std::string::npos;
		if (is_bias)
			t.zero_();
		else if (is_ln)
			t.fill_(1.0);
		else if (n.find("c_proj.weight") != std::string::npos)
			t.normal_(0.0, proj_std);
		else
			t.normal_(0.0, 0.02);
	}
}

int64_t GPT2Impl::count_parameters()
{
	int64_t n = 0;
	for (const auto &p : parameters())
		n += p.numel();
	return n;
}

torch::Tensor GPT2Impl::mask_bias(int64_t T, int64_t S, torch::Device dev)
{
	if (causal_bias_.device() != dev)
		causal_bias_ = causal_bias_.to(dev);
	// Rows of the last T query positions against all S key positions.
	return causal_bias_.narrow(0, S - T, T).narrow(1, 0, S);
}

torch::Tensor GPT2Impl::hidden(const torch::Tensor &idx, int64_t pos0, KVCache *cache)
{
	auto T = idx.size(1);
	if (pos0 + T > c_.block_size)
		fail("GPT-2: sequence of {} tokens exceeds the context length {}", pos0 + T, c_.block_size);
	auto pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kLong).device(idx.device()));
	auto x = wte(idx) + wpe(pos);
	if (is_training() && c_.dropout > 0)
		x = torch::dropout(x, c_.dropout, true);
	auto bias = mask_bias(T, pos0 + T, idx.device());
	if (cache && cache->k.empty()) {
		cache->k.assign(c_.n_layer, torch::Tensor());
		cache->v.assign(c_.n_layer, torch::Tensor());
	}
	for (int i = 0; i < c_.n_layer; i++) {
		auto blk = h[i]->as<BlockImpl>();
		x = blk->forward(x, bias, cache ? &cache->k[i] : nullptr, cache ? &cache->v[i] : nullptr);
	}
	return ln_f(x);
}

GPT2Output GPT2Impl::forward(const torch::Tensor &idx, const torch::Tensor &targets)
{
	GPT2Output out;
	auto x = hidden(idx, 0, nullptr);
	if (targets.defined() && c_.fused_head_loss && x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
		out.loss = linear_cross_entropy(x.reshape({-1, x.size(-1)}), wte->weight, targets.reshape({-1}));
	} else if (targets.defined()) {
		out.logits = torch::matmul(x, wte->weight.t());
		out.loss = torch::nn::functional::cross_entropy(
			out.logits.view({-1, out.logits.size(-1)}).to(torch::kFloat), targets.reshape({-1}),
			torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
	} else {
		out.logits = torch::matmul(x.narrow(1, x.size(1) - 1, 1), wte->weight.t());
	}
	return out;
}

torch::Tensor GPT2Impl::forward_all(const torch::Tensor &idx)
{
	return torch::matmul(hidden(idx, 0, nullptr), wte->weight.t());
}

torch::Tensor GPT2Impl::forward_cached(const torch::Tensor &idx, KVCache &cache)
{
	return torch::matmul(hidden(idx, cache.length(), &cache), wte->weight.t());
}

} // namespace knlp
