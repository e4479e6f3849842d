// GPT-2, the network: LayerNorm, MLP and blocks around the attention modules, the forward
// pass with its fused CPU head, attention probabilities for the Fisher tools and cached
// decoding. Its configuration (shape, attention layout, counts) is models/gpt2_config.cpp.
#include "models/gpt2.h"
#include "models/observer.h"

#include <cmath>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/attention.h"
#include "core/torch_compat.h"
#include "models/fused.h"
#include "models/linear_ce.h"

namespace knlp {

int64_t KVCache::bytes() const
{
	int64_t b = 0;
	for (const auto &l : layers)
		for (const auto &t : l)
			if (t.defined())
				b += t.numel() * t.element_size();
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
	// Under bf16 autocast a LayerNorm can receive a bf16 product (KVSplice's splice, the
	// reciprocal heads' projection): it normalises in float32, with its float32 weights
	// (libtorch's CPU kernel takes one dtype for all three).
	if (x.scalar_type() != weight.scalar_type())
		return torch::layer_norm(x.to(weight.scalar_type()), {dim_}, weight, bias, 1e-5);
	return torch::layer_norm(x, {dim_}, weight, bias, 1e-5);
}

std::pair<torch::Tensor, torch::Tensor> LayerNormImpl::forward_add(const torch::Tensor &x, const torch::Tensor &d,
								   bool fused)
{
	if (fused && fused_kernels_apply(x) && fused_kernels_apply(weight) &&
	    (d.scalar_type() == torch::kFloat || d.scalar_type() == torch::kBFloat16) && x.sizes() == d.sizes())
		return add_layer_norm(x, d, weight, bias, 1e-5);
	auto y = x + d;
	return {y, forward(y)};
}

torch::Tensor gelu(const torch::Tensor &x, Gelu kind)
{
	if (kind == Gelu::Erf)
		return torch::gelu(x);
	if (kind == Gelu::Tanh)
		return torch::gelu(x, "tanh");
	auto y = torch::gelu(x.to(torch::kHalf).to(x.scalar_type()), "tanh").to(torch::kHalf).to(x.scalar_type());
	return torch::where(x <= -10.0, torch::zeros_like(x), torch::where(x >= 10.0, x, y));
}

MLPImpl::MLPImpl(const GPT2Config &c, int layer)
    : dropout_(c.dropout), layer_(layer), gelu_(c.gelu), fused_gelu_(c.fused_gelu)
{
	c_fc = register_module("c_fc",
			       torch::nn::Linear(torch::nn::LinearOptions(c.n_embd, 4 * c.n_embd).bias(c.bias)));
	c_proj = register_module("c_proj",
				 torch::nn::Linear(torch::nn::LinearOptions(4 * c.n_embd, c.n_embd).bias(c.bias)));
}

torch::Tensor MLPImpl::forward(const torch::Tensor &x)
{
	auto *o = forward_observer();
	if (o)
		o->linear_input(layer_, "mlp.c_fc", x);
	torch::Tensor a;
	// The bias moves from the product into the activation's pass (models/fused.h).
	if (fused_gelu_ && gelu_ == Gelu::Erf && c_fc->bias.defined() && x.device().is_cpu() &&
	    fused_kernels_apply(c_fc->bias)) {
		auto h = knlp::linear(x, c_fc->weight);
		a = h.scalar_type() == torch::kFloat || h.scalar_type() == torch::kBFloat16
			    ? bias_gelu(h, c_fc->bias)
			    : gelu(h + c_fc->bias, gelu_);
	} else {
		a = gelu(apply_linear(c_fc, x), gelu_);
	}
	if (o)
		o->linear_input(layer_, "mlp.c_proj", a);
	auto y = apply_linear(c_proj, a);
	return is_training() && dropout_ > 0 ? torch::dropout(y, dropout_, true) : y;
}

BlockImpl::BlockImpl(const GPT2Config &c, int layer)
{
	ln_1 = register_module("ln_1", LayerNorm(c.n_embd, c.bias));
	attn = register_module("attn", make_attention(c, layer));
	ln_2 = register_module("ln_2", LayerNorm(c.n_embd, c.bias));
	mlp = register_module("mlp", MLP(c, layer));
}

torch::Tensor BlockImpl::forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
				 std::vector<torch::Tensor> *cache, torch::Tensor *probs)
{
	auto [y, m] = forward_pair(x, torch::Tensor(), false, mask_bias, pos0, cache, probs);
	return y + m;
}

std::pair<torch::Tensor, torch::Tensor> BlockImpl::forward_pair(const torch::Tensor &r, const torch::Tensor &d,
								bool fused, const torch::Tensor &mask_bias,
								int64_t pos0, std::vector<torch::Tensor> *cache,
								torch::Tensor *probs)
{
	torch::Tensor x, n;
	if (d.defined())
		std::tie(x, n) = ln_1->forward_add(r, d, fused);
	else
		x = r, n = ln_1(r);
	auto [y, n2] = ln_2->forward_add(x, attn->forward(n, mask_bias, pos0, cache, probs), fused);
	return {y, mlp(n2)};
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
		h->push_back(Block(c, i));
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
		if (is_bias || n.find("ra_rho") != std::string::npos)
			t.zero_(); // biases; the reciprocal-attention gate starts closed (tanh(0) = 0)
		else if (is_ln)
			t.fill_(1.0);
		else if (n.find("c_proj.weight") != std::string::npos)
			t.normal_(0.0, proj_std);
		else
			t.normal_(0.0, 0.02);
	}
}

void GPT2Impl::set_gelu(Gelu g)
{
	c_.gelu = g;
	for (size_t i = 0; i < h->size(); i++)
		h[i]->as<BlockImpl>()->mlp->set_gelu(g);
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

torch::Tensor GPT2Impl::hidden(const torch::Tensor &idx, int64_t pos0, KVCache *cache,
			       std::vector<torch::Tensor> *probs, const std::vector<int> *prob_layers,
			       bool sparse_wte_grad)
{
	auto T = idx.size(1);
	if (pos0 + T > c_.block_size)
		fail("GPT-2: sequence of {} tokens exceeds the context length {}", pos0 + T, c_.block_size);
	auto pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kLong).device(idx.device()));
	// sparse_wte_grad: the lookup's gradient as the touched rows only (a sparse tensor),
	// added in place to the tied head's dense [V, C] gradient, instead of a dense [V, C]
	// tensor of mostly zeros and a pass adding it (at vocabulary 50304 two passes over
	// 25.7 MB per step fewer at C 128). Only where the head's dense gradient is certain to
	// join it: the parameter's gradient stays dense.
	auto x = (sparse_wte_grad ? torch::embedding(wte->weight, idx, -1, false, true) : wte(idx)) + wpe(pos);
	if (is_training() && c_.dropout > 0)
		x = torch::dropout(x, c_.dropout, true);
	auto bias = mask_bias(T, pos0 + T, idx.device());
	if (cache && cache->layers.empty())
		cache->layers.assign(size_t(c_.n_layer), {});
	// The residual stream is carried as x + pending (the last branch output); each LayerNorm
	// adds it, in its own pass where the fused kernel applies (models/fused.h).
	const bool fused_ln = c_.fused_layernorm && fused_kernels_apply(x);
	torch::Tensor pending;
	for (int i = 0; i < c_.n_layer; i++) {
		auto blk = h[i]->as<BlockImpl>();
		torch::Tensor p, *pp = nullptr;
		if (probs && std::find(prob_layers->begin(), prob_layers->end(), i) != prob_layers->end())
			pp = &p;
		auto *obs = forward_observer();
		if (obs)
			obs->before_block(i);
		auto *lc = cache ? &cache->layers[size_t(i)] : nullptr;
		std::tie(x, pending) = blk->forward_pair(x, pending, fused_ln, bias, pos0, lc, pp);
		if (obs)
			obs->after_block(i);
		if (pp)
			probs->push_back(p);
	}
	if (cache)
		cache->len = pos0 + T;
	if (pending.defined())
		return ln_f->forward_add(x, pending, fused_ln).second;
	return ln_f(x);
}

GPT2Output GPT2Impl::forward(const torch::Tensor &idx, const torch::Tensor &targets)
{
	GPT2Output out;
	// The sparse lookup gradient on the CPU only: on CUDA, adding an uncoalesced sparse
	// tensor may read its size back to the host, and the step must not synchronise.
	auto x = hidden(idx, 0, nullptr, nullptr, nullptr,
			targets.defined() && idx.device().is_cpu() && torch::GradMode::is_enabled() &&
				wte->weight.requires_grad());
	// The chunked head: its products in autocast's dtype where autocast is on (bf16 on the
	// CPU or a GPU), the loss and gradients' sums in float32, never the whole logits tensor.
	if (targets.defined() && c_.fused_head_loss && (x.device().is_cpu() || x.device().is_cuda()) &&
	    x.scalar_type() == torch::kFloat && wte->weight.scalar_type() == torch::kFloat) {
		out.loss = linear_cross_entropy(x.reshape({-1, x.size(-1)}), wte->weight, targets.reshape({-1}),
						compat::autocast_compute_dtype(x.device()), 0, c_.head_vocab_blocks);
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

std::vector<torch::Tensor> GPT2Impl::attention_probs(const torch::Tensor &idx, const std::vector<int> &layers)
{
	torch::NoGradGuard ng;
	for (int l : layers)
		if (l < 0 || l >= c_.n_layer)
			fail("GPT-2: layer {} does not exist (the model has {})", l, c_.n_layer);
	std::vector<int> sorted(layers);
	std::sort(sorted.begin(), sorted.end());
	std::vector<torch::Tensor> got;
	hidden(idx, 0, nullptr, &got, &sorted);
	std::vector<torch::Tensor> out;
	for (int l : layers)
		out.push_back(got[size_t(std::find(sorted.begin(), sorted.end(), l) - sorted.begin())]);
	return out;
}

torch::Tensor GPT2Impl::forward_cached(const torch::Tensor &idx, KVCache &cache)
{
	return torch::matmul(hidden(idx, cache.length(), &cache), wte->weight.t());
}

} // namespace knlp

namespace knlp {

namespace {
thread_local ForwardObserver *g_observer = nullptr;
}

ForwardObserver *forward_observer()
{
	return g_observer;
}

ObserverScope::ObserverScope(ForwardObserver *o) : prev_(g_observer)
{
	g_observer = o;
}

ObserverScope::~ObserverScope()
{
	g_observer = prev_;
}

} // namespace knlp
