#include "models/gpt2.h"
#include "models/observer.h"

#include <cmath>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/attention.h"
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
	c.d_latent = static_cast<int>(cfg.get_int("GPT2_MLA_D_LATENT"));
	c.splice_dim = static_cast<int>(cfg.get_int("GPT2_KVSPLICE_DIM"));
	static const std::pair<const char *, const char *> variants[] = {
		{"GPT2_ATTN_VANILLA", "vanilla"}, {"GPT2_ATTN_MLA", "mla"},   {"GPT2_ATTN_KVSPLICE", "kvsplice"},
		{"GPT2_ATTN_HYBRID", "hybrid"},   {"GPT2_ATTN_RA", "ra"},     {"GPT2_ATTN_SDPA_GATE", "gate"},
		{"GPT2_ATTN_RA_GATE", "ra-gate"}};
	std::string chosen = cfg.choice("GPT2_ATTN_VANILLA"), variant = "vanilla";
	for (const auto &[sym, name] : variants)
		if (chosen == sym)
			variant = name;
	HybridPlacement hp;
	std::string pl = cfg.choice("GPT2_HYBRID_LAST");
	hp.where = pl == "GPT2_HYBRID_FIRST" ? "first" : pl == "GPT2_HYBRID_LIST" ? "list" : pl == "GPT2_HYBRID_FISHER" ? "fisher" : "last";
	hp.count = static_cast<int>(cfg.get_int("GPT2_HYBRID_LAYERS"));
	hp.list = cfg.get_string("GPT2_HYBRID_LAYER_LIST");
	hp.fisher_file = cfg.get_string("GPT2_HYBRID_FISHER_FILE");
	set_attention_variant(c, variant, hp, static_cast<int>(cfg.get_int("GPT2_RA_LAYERS")),
			      static_cast<int>(cfg.get_int("GPT2_RA_HEADS")));
	c.validate();
	return c;
}

namespace {

std::vector<int> kvsplice_layers(const GPT2Config &c, const HybridPlacement &hp)
{
	const int L = c.n_layer;
	int n = hp.count > 0 ? hp.count : L / 3;
	std::vector<int> out;
	if (hp.where == "list") {
		std::string s = hp.list;
		for (char &ch : s)
			if (ch == ',')
				ch = ' ';
		std::istringstream in(s);
		std::string tok;
		while (in >> tok) {
			char *end = nullptr;
			long v = std::strtol(tok.c_str(), &end, 10);
			if (*end || v < 0 || v >= L)
				fail("GPT-2: CONFIG_GPT2_HYBRID_LAYER_LIST: '{}' is not a layer index in [0, {})", tok, L);
			if (std::find(out.begin(), out.end(), int(v)) == out.end())
				out.push_back(static_cast<int>(v));
		}
		if (out.empty())
			fail("GPT-2: hybrid attention with KVSplice on 0 layers: CONFIG_GPT2_HYBRID_LAYER_LIST is empty");
		return out;
	}
	if (n <= 0)
		fail("GPT-2: hybrid attention with KVSplice on 0 layers ({} layers / 3 = 0); set CONFIG_GPT2_HYBRID_LAYERS", L);
	if (n > L)
		fail("GPT-2: CONFIG_GPT2_HYBRID_LAYERS={} exceeds CONFIG_GPT2_N_LAYER={}", n, L);
	if (hp.where == "first") {
		for (int i = 0; i < n; i++)
			out.push_back(i);
	} else if (hp.where == "fisher") {
		// The n layers whose attention Fisher trace (mean over heads) is lowest: the least
		// sensitive layers get the strongest compression.
		if (hp.fisher_file.empty())
			fail("GPT-2: Fisher-guided hybrid placement needs CONFIG_GPT2_HYBRID_FISHER_FILE (from `knlp fim attention --layers all`)");
		std::ifstream f(hp.fisher_file);
		if (!f)
			fail("{}: cannot open the Fisher-trace file", hp.fisher_file);
		nlohmann::json j;
		try {
			f >> j;
		} catch (const std::exception &e) {
			fail("{}: not a JSON Fisher-trace file ({})", hp.fisher_file, e.what());
		}
		std::vector<std::pair<double, int>> tr;
		if (!j.contains("layers") || !j["layers"].is_array())
			fail("{}: no \"layers\" array (write it with `knlp fim attention --layers all --out FILE`)", hp.fisher_file);
		for (const auto &e : j["layers"]) {
			if (!e.contains("layer") || !e.contains("trace"))
				fail("{}: a layer entry lacks \"layer\" or \"trace\"", hp.fisher_file);
			int li = e["layer"].get<int>();
			if (li < 0 || li >= L)
				fail("{}: layer {} is outside this model's {} layers", hp.fisher_file, li, L);
			tr.emplace_back(e["trace"].get<double>(), li);
		}
		if (int(tr.size()) != L)
			fail("{}: has traces for {} layers, the model has {} (run the spectrum with --layers all)", hp.fisher_file,
			     tr.size(), L);
		std::stable_sort(tr.begin(), tr.end());
		for (int i = 0; i < n; i++)
			out.push_back(tr[size_t(i)].second);
		std::sort(out.begin(), out.end());
	} else {
		for (int i = L - n; i < L; i++)
			out.push_back(i);
	}
	return out;
}

} // namespace

void set_attention_variant(GPT2Config &c, const std::string &variant, const HybridPlacement &hp, int ra_layers,
			   int ra_heads)
{
	const int L = c.n_layer;
	c.variant = variant;
	c.layer_kind.clear();
	c.ra_layers.clear();
	c.sdpa_gate = false;
	c.ra_heads = ra_heads;
	if (variant == "vanilla") {
	} else if (variant == "mla") {
		c.layer_kind.assign(size_t(L), AttnKind::MLA);
	} else if (variant == "kvsplice") {
		c.layer_kind.assign(size_t(L), AttnKind::KVSplice);
	} else if (variant == "hybrid") {
		c.layer_kind.assign(size_t(L), AttnKind::MLA);
		for (int i : kvsplice_layers(c, hp))
			c.layer_kind[size_t(i)] = AttnKind::KVSplice;
	} else if (variant == "ra" || variant == "gate" || variant == "ra-gate") {
		c.sdpa_gate = variant != "ra";
		if (variant != "gate") {
			if (ra_layers < 1 || ra_layers > L)
				fail("GPT-2: CONFIG_GPT2_RA_LAYERS={} must be between 1 and CONFIG_GPT2_N_LAYER={}", ra_layers, L);
			int first = L / 2 - ra_layers / 2;
			first = std::max(0, std::min(first, L - ra_layers));
			for (int i = first; i < first + ra_layers; i++)
				c.ra_layers.push_back(i);
		}
	} else {
		fail("GPT-2: unknown attention variant '{}' (vanilla, mla, kvsplice, hybrid, ra, gate, ra-gate)", variant);
	}
}

bool GPT2Config::is_ra(int layer) const
{
	return std::find(ra_layers.begin(), ra_layers.end(), layer) != ra_layers.end();
}

bool GPT2Config::vanilla() const { return layer_kind.empty() && ra_layers.empty() && !sdpa_gate; }

int64_t GPT2Config::cache_values_per_token(int layer) const
{
	switch (kind(layer)) {
	case AttnKind::MLA: return d_latent;
	case AttnKind::KVSplice: return splice_dim;
	default: return 2 * int64_t(n_embd) + (is_ra(layer) ? int64_t(ra_heads) * (n_embd / n_head) : 0);
	}
}

int64_t GPT2Config::cache_values_per_token() const
{
	int64_t v = 0;
	for (int i = 0; i < n_layer; i++)
		v += cache_values_per_token(i);
	return v;
}

int64_t GPT2Config::attention_params(int layer) const
{
	const int64_t C = n_embd, b = bias ? 1 : 0, dl = d_latent, W = splice_dim;
	switch (kind(layer)) {
	case AttnKind::MLA: return (C * C + b * C) + (C * dl + b * dl) + (dl * 2 * C + b * 2 * C) + (C * C + b * C);
	case AttnKind::KVSplice:
		return C * dl + (dl * W + b * W) + (W + b * W) + (W * W + b * W) + (W * 2 * W + b * 2 * W) + (W * dl + b * dl) +
		       (dl * C + C);
	default: {
		int64_t n = (C * 3 * C + b * 3 * C) + (C * C + b * C);
		if (sdpa_gate)
			n += C * C + C;
		if (is_ra(layer))
			n += int64_t(ra_heads) * (C / n_head) * C + C + (C + b * C) + 1;
		return n;
	}
	}
}

void GPT2Config::validate() const
{
	if (n_embd % n_head != 0)
		fail("GPT-2: CONFIG_GPT2_N_HEAD={} does not divide CONFIG_GPT2_N_EMBD={}", n_head, n_embd);
	if (dropout < 0 || dropout >= 1)
		fail("GPT-2: CONFIG_GPT2_DROPOUT={} is outside [0, 1)", dropout);
	if (vocab_size < vocab_raw)
		fail("GPT-2: padded vocabulary {} smaller than {}", vocab_size, vocab_raw);
	bool mla = false, splice = false;
	for (int i = 0; i < n_layer; i++) {
		mla |= kind(i) == AttnKind::MLA;
		splice |= kind(i) == AttnKind::KVSplice;
	}
	if ((mla || splice) && (n_embd / n_head) % 2 != 0)
		fail("GPT-2: RoPE needs an even head width; {} / {} heads = {}", n_embd, n_head, n_embd / n_head);
	if ((mla || splice) && d_latent < 1)
		fail("GPT-2: CONFIG_GPT2_MLA_D_LATENT must be at least 1");
	if (splice && (splice_dim < 2 || splice_dim % 2 != 0))
		fail("GPT-2: CONFIG_GPT2_KVSPLICE_DIM={} must be even (RoPE) and at least 2", splice_dim);
	if (splice && d_latent % splice_dim != 0)
		fail("GPT-2: the latent width CONFIG_GPT2_MLA_D_LATENT={} is not divided evenly by the splice width "
		     "CONFIG_GPT2_KVSPLICE_DIM={}",
		     d_latent, splice_dim);
	if (!ra_layers.empty() && (ra_heads < 1 || ra_heads > n_head))
		fail("GPT-2: CONFIG_GPT2_RA_HEADS={} must be between 1 and CONFIG_GPT2_N_HEAD={}", ra_heads, n_head);
	if (int(ra_layers.size()) > n_layer)
		fail("GPT-2: {} reciprocal-attention layers but only {} layers", ra_layers.size(), n_layer);
}

int64_t GPT2Config::num_params() const
{
	int64_t C = n_embd, L = n_layer, b = bias ? 1 : 0;
	int64_t ln = C + b * C;
	int64_t per_layer = 2 * ln + (C * 4 * C + b * 4 * C) + (4 * C * C + b * C);
	int64_t n = int64_t(vocab_size) * C + int64_t(block_size) * C + L * per_layer + ln;
	for (int i = 0; i < n_layer; i++)
		n += attention_params(i);
	return n;
}

double GPT2Config::flops_per_token(int T) const
{
	double N = static_cast<double>(num_params());
	double attn = 0; // 2 matmuls (scores, values) x 2 (mul-add) x 3 (forward + backward)
	for (int i = 0; i < n_layer; i++) {
		double width = kind(i) == AttnKind::KVSplice ? splice_dim : n_embd;
		if (is_ra(i))
			width += double(ra_heads) * (n_embd / n_head);
		attn += 12.0 * width * T;
	}
	return 6.0 * N + attn;
}

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
	return torch::layer_norm(x, {dim_}, weight, bias, 1e-5);
}

MLPImpl::MLPImpl(const GPT2Config &c, int layer) : dropout_(c.dropout), layer_(layer)
{
	c_fc = register_module("c_fc", torch::nn::Linear(torch::nn::LinearOptions(c.n_embd, 4 * c.n_embd).bias(c.bias)));
	c_proj = register_module("c_proj", torch::nn::Linear(torch::nn::LinearOptions(4 * c.n_embd, c.n_embd).bias(c.bias)));
}

torch::Tensor MLPImpl::forward(const torch::Tensor &x)
{
	auto *o = forward_observer();
	if (o)
		o->linear_input(layer_, "mlp.c_fc", x);
	auto a = torch::gelu(apply_linear(c_fc, x));
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
	auto y = x + attn->forward(ln_1(x), mask_bias, pos0, cache, probs);
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

torch::Tensor GPT2Impl::hidden(const torch::Tensor &idx, int64_t pos0, KVCache *cache, std::vector<torch::Tensor> *probs,
			       const std::vector<int> *prob_layers)
{
	auto T = idx.size(1);
	if (pos0 + T > c_.block_size)
		fail("GPT-2: sequence of {} tokens exceeds the context length {}", pos0 + T, c_.block_size);
	auto pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kLong).device(idx.device()));
	auto x = wte(idx) + wpe(pos);
	if (is_training() && c_.dropout > 0)
		x = torch::dropout(x, c_.dropout, true);
	auto bias = mask_bias(T, pos0 + T, idx.device());
	if (cache && cache->layers.empty())
		cache->layers.assign(size_t(c_.n_layer), {});
	for (int i = 0; i < c_.n_layer; i++) {
		auto blk = h[i]->as<BlockImpl>();
		torch::Tensor p, *pp = nullptr;
		if (probs && std::find(prob_layers->begin(), prob_layers->end(), i) != prob_layers->end())
			pp = &p;
		auto *obs = forward_observer();
		if (obs)
			obs->before_block(i);
		x = blk->forward(x, bias, pos0, cache ? &cache->layers[size_t(i)] : nullptr, pp);
		if (obs)
			obs->after_block(i);
		if (pp)
			probs->push_back(p);
	}
	if (cache)
		cache->len = pos0 + T;
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
