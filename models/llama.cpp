#include "models/llama.h"

#include <cmath>

#include "core/error.h"
#include "models/hf.h"
#include "data/tokens.h"
#include "quant/gguf.h"

namespace knlp {

namespace F = torch::nn::functional;
using json = nlohmann::json;

int64_t LlamaConfig::num_params() const
{
	int64_t q = hidden * n_head * head_dim, kv = hidden * n_kv_head * head_dim;
	int64_t attn = q + 2 * kv + n_head * head_dim * hidden;
	if (qkv_bias)
		attn += n_head * head_dim + 2 * n_kv_head * head_dim;
	if (o_bias)
		attn += hidden;
	int64_t mlp = 3 * hidden * intermediate + (mlp_bias ? 2 * intermediate + hidden : 0);
	int64_t layer = attn + mlp + 2 * hidden;
	return vocab * hidden * (tied ? 1 : 2) + n_layer * layer + hidden;
}

torch::Tensor LlamaConfig::inv_freq() const
{
	auto idx = torch::arange(0, head_dim, 2, torch::kLong).to(torch::kFloat);
	auto inv = 1.0 / torch::pow(torch::tensor(static_cast<float>(rope_theta)), idx / static_cast<float>(head_dim));
	if (rope_scaling == "linear")
		return inv / static_cast<float>(rope_factor);
	if (rope_scaling == "llama3") {
		const double old_ctx = static_cast<double>(original_max_positions);
		const double low_wavelen = old_ctx / low_freq_factor, high_wavelen = old_ctx / high_freq_factor;
		auto wavelen = 2 * M_PI / inv;
		auto scaled = torch::where(wavelen > low_wavelen, inv / rope_factor, inv);
		auto smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
		auto smoothed = (1 - smooth) * scaled / rope_factor + smooth * scaled;
		auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
		return torch::where(medium, smoothed, scaled).to(torch::kFloat);
	}
	return inv;
}

LlamaConfig llama_config_from(const HfCheckpoint &ck)
{
	LlamaConfig c;
	c.hf_arch = ck.architecture();
	if (c.hf_arch == "LlamaForCausalLM")
		c.arch = "llama";
	else if (c.hf_arch == "Qwen2ForCausalLM")
		c.arch = "qwen2";
	else
		fail("{}: architecture {} is not supported (knlp supports GPT2LMHeadModel, LlamaForCausalLM, "
		     "Qwen2ForCausalLM)",
		     ck.config_path(), c.hf_arch);
	const json &j = ck.config();
	c.vocab = hf_int(ck, "vocab_size", 1, 1 << 24);
	c.hidden = hf_int(ck, "hidden_size", 1, 1 << 16);
	c.intermediate = hf_int(ck, "intermediate_size", 1, 1 << 18);
	c.n_layer = hf_int(ck, "num_hidden_layers", 1, 1024);
	c.n_head = hf_int(ck, "num_attention_heads", 1, 1024);
	c.n_kv_head = hf_int_or(ck, "num_key_value_heads", c.n_head, 1, c.n_head);
	if (c.n_head % c.n_kv_head)
		fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", ck.config_path(),
		     c.n_head, c.n_kv_head);
	c.head_dim = hf_int_or(ck, "head_dim", c.hidden / c.n_head, 2, 4096);
	if (!j.contains("head_dim") && c.hidden % c.n_head)
		fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", ck.config_path(), c.hidden,
		     c.n_head);
	if (c.head_dim % 2)
		fail("{}: head_dim {} is odd (rotary positions need pairs)", ck.config_path(), c.head_dim);
	c.max_positions = hf_int_or(ck, "max_position_embeddings", 2048, 1, 1 << 24);
	c.rope_theta = hf_double_or(ck, "rope_theta", 10000.0, 1.0, 1e12);
	c.rms_eps = hf_double_or(ck, "rms_norm_eps", 1e-6, 0.0, 1.0);
	c.tied = j.value("tie_word_embeddings", c.arch == "qwen2" ? false : false);
	if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_boolean())
		fail("{}: tie_word_embeddings is not a boolean", ck.config_path());
	std::string act = j.value("hidden_act", "silu");
	if (act != "silu")
		fail("{}: hidden_act '{}' is not supported (knlp supports silu)", ck.config_path(), act);
	if (c.arch == "qwen2") {
		c.qkv_bias = true;
		if (j.value("use_sliding_window", false))
			fail("{}: use_sliding_window is not supported", ck.config_path());
	} else {
		c.qkv_bias = c.o_bias = j.value("attention_bias", false);
		c.mlp_bias = j.value("mlp_bias", false);
	}
	if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
		const json &r = j["rope_scaling"];
		std::string type = r.value("rope_type", r.value("type", std::string("default")));
		if (type == "default") {
		} else if (type == "linear") {
			c.rope_scaling = "linear";
			c.rope_factor = r.value("factor", 1.0);
		} else if (type == "llama3") {
			c.rope_scaling = "llama3";
			c.rope_factor = r.value("factor", 8.0);
			c.low_freq_factor = r.value("low_freq_factor", 1.0);
			c.high_freq_factor = r.value("high_freq_factor", 4.0);
			c.original_max_positions = r.value("original_max_position_embeddings", int64_t(8192));
			if (!(c.high_freq_factor > c.low_freq_factor) || c.original_max_positions <= 0)
				fail("{}: rope_scaling llama3 needs high_freq_factor > low_freq_factor and "
				     "original_max_position_embeddings > 0",
				     ck.config_path());
		} else {
			fail("{}: rope_scaling type '{}' is not supported (knlp supports linear and llama3)",
			     ck.config_path(), type);
		}
		if (!(c.rope_factor > 0))
			fail("{}: rope_scaling factor {} is not positive", ck.config_path(), c.rope_factor);
	}
	auto id = [&](const char *k) -> int64_t {
		return j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : -1;
	};
	c.bos = id("bos_token_id");
	c.eos = id("eos_token_id");
	return c;
}

int64_t LlamaCache::bytes() const
{
	int64_t b = 0;
	for (size_t i = 0; i < k.size(); i++)
		if (k[i].defined())
			b += (k[i].numel() + v[i].numel()) * k[i].element_size();
	return b;
}

LlamaImpl::LlamaImpl(const LlamaConfig &c, const HfCheckpoint &ck, bool copy) : c_(c)
{
	build([&](const std::string &name, const std::vector<int64_t> &shape) {
		if (name == "lm_head.weight" && !ck.has(name))
			fail("{}: tie_word_embeddings is false but lm_head.weight is missing", ck.dir());
		if (name.find("mlp") != std::string::npos && name.find("bias") != std::string::npos)
			fail("{}: mlp_bias is not supported", ck.config_path());
		return ck.get(name, shape, copy);
	});
	inv_freq_ = c.inv_freq();
}

LlamaImpl::LlamaImpl(const LlamaConfig &c, const LlamaWeightSource &get, const torch::Tensor &freq_factors) : c_(c)
{
	build(get);
	inv_freq_ = c.inv_freq();
	if (freq_factors.defined())
		inv_freq_ = inv_freq_ / freq_factors;
}

void LlamaImpl::build(const LlamaWeightSource &source)
{
	const LlamaConfig &c = c_;
	auto get = [&](const std::string &name, std::vector<int64_t> shape) {
		auto t = source(name, shape);
		std::string reg = name;
		for (auto &ch : reg)
			if (ch == '.')
				ch = '_';
		return register_parameter(reg, t, /*requires_grad=*/false);
	};
	const int64_t C = c.hidden, Dq = c.n_head * c.head_dim, Dkv = c.n_kv_head * c.head_dim, I = c.intermediate;
	embed_ = get("model.embed_tokens.weight", {c.vocab, C});
	for (int64_t l = 0; l < c.n_layer; l++) {
		std::string p = "model.layers." + std::to_string(l) + ".";
		Layer L;
		L.in_norm = get(p + "input_layernorm.weight", {C});
		L.post_norm = get(p + "post_attention_layernorm.weight", {C});
		L.q = get(p + "self_attn.q_proj.weight", {Dq, C});
		L.k = get(p + "self_attn.k_proj.weight", {Dkv, C});
		L.v = get(p + "self_attn.v_proj.weight", {Dkv, C});
		L.o = get(p + "self_attn.o_proj.weight", {C, Dq});
		if (c.qkv_bias) {
			L.q_b = get(p + "self_attn.q_proj.bias", {Dq});
			L.k_b = get(p + "self_attn.k_proj.bias", {Dkv});
			L.v_b = get(p + "self_attn.v_proj.bias", {Dkv});
		}
		if (c.o_bias)
			L.o_b = get(p + "self_attn.o_proj.bias", {C});
		L.gate = get(p + "mlp.gate_proj.weight", {I, C});
		L.up = get(p + "mlp.up_proj.weight", {I, C});
		L.down = get(p + "mlp.down_proj.weight", {C, I});
		if (c.mlp_bias)
			get(p + "mlp.gate_proj.bias", {I}); // reports that mlp biases are unsupported
		layers_.push_back(L);
	}
	norm_ = get("model.norm.weight", {C});
	if (!c.tied)
		lm_head_ = get("lm_head.weight", {c.vocab, C});
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaImpl::named_weights() const
{
	std::vector<std::pair<std::string, torch::Tensor>> out;
	out.emplace_back("model.embed_tokens.weight", embed_);
	for (size_t l = 0; l < layers_.size(); l++) {
		const Layer &L = layers_[l];
		std::string p = "model.layers." + std::to_string(l) + ".";
		out.emplace_back(p + "input_layernorm.weight", L.in_norm);
		out.emplace_back(p + "self_attn.q_proj.weight", L.q);
		out.emplace_back(p + "self_attn.k_proj.weight", L.k);
		out.emplace_back(p + "self_attn.v_proj.weight", L.v);
		if (L.q_b.defined()) {
			out.emplace_back(p + "self_attn.q_proj.bias", L.q_b);
			out.emplace_back(p + "self_attn.k_proj.bias", L.k_b);
			out.emplace_back(p + "self_attn.v_proj.bias", L.v_b);
		}
		out.emplace_back(p + "self_attn.o_proj.weight", L.o);
		if (L.o_b.defined())
			out.emplace_back(p + "self_attn.o_proj.bias", L.o_b);
		out.emplace_back(p + "post_attention_layernorm.weight", L.post_norm);
		out.emplace_back(p + "mlp.gate_proj.weight", L.gate);
		out.emplace_back(p + "mlp.up_proj.weight", L.up);
		out.emplace_back(p + "mlp.down_proj.weight", L.down);
	}
	out.emplace_back("model.norm.weight", norm_);
	if (!c_.tied)
		out.emplace_back("lm_head.weight", lm_head_);
	return out;
}

namespace {
torch::Tensor f32(const torch::Tensor &t)
{
	return t.scalar_type() == torch::kFloat ? t : t.to(torch::kFloat);
}

torch::Tensor lin(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b = {})
{
	return b.defined() ? torch::linear(x, f32(w), f32(b)) : torch::linear(x, f32(w));
}

torch::Tensor rms_norm(const torch::Tensor &x, const torch::Tensor &w, double eps)
{
	auto var = x.pow(2).mean(-1, true);
	return f32(w) * (x * torch::rsqrt(var + eps));
}

// x [B, H, T, D]; cos, sin [T, D]: Hugging Face's rotate_half form.
torch::Tensor rope(const torch::Tensor &x, const torch::Tensor &cos, const torch::Tensor &sin)
{
	int64_t half = x.size(-1) / 2;
	auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
	auto rot = torch::cat({-x2, x1}, -1);
	return x * cos + rot * sin;
}
// Log-sum-exp of each row of h W^T and the logit of its target y (>= 0), with W taken in
// chunks of `cols` rows (widened one chunk at a time): no [rows, vocab] tensor is made.
std::pair<torch::Tensor, torch::Tensor> chunked_lse(const torch::Tensor &h, const torch::Tensor &W,
						    const torch::Tensor &y, int64_t cols)
{
	const int64_t V = W.size(0);
	torch::Tensor m, s, tgt = torch::zeros({h.size(0)}, torch::kFloat);
	for (int64_t c0 = 0; c0 < V; c0 += cols) {
		int64_t n = std::min(cols, V - c0);
		auto logits = torch::matmul(h, f32(W.narrow(0, c0, n)).t());
		auto cm = std::get<0>(logits.max(1));
		if (!m.defined()) {
			m = cm;
			s = (logits - m.unsqueeze(1)).exp().sum(1);
		} else {
			auto nm = torch::maximum(m, cm);
			s = s * (m - nm).exp() + (logits - nm.unsqueeze(1)).exp().sum(1);
			m = nm;
		}
		auto in = (y >= c0).logical_and(y < c0 + n);
		tgt = torch::where(in, logits.gather(1, (y - c0).clamp(0, n - 1).unsqueeze(1)).squeeze(1), tgt);
	}
	return {m + s.log(), tgt};
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

LlamaFisherTap *tap_of(AutogradContext *ctx)
{
	return reinterpret_cast<LlamaFisherTap *>(ctx->saved_data["tap"].toInt());
}

// y = x W^T + b whose backward squares W's (and b's) gradient into the tap.
struct LinearTap : public torch::autograd::Function<LinearTap> {
	static torch::Tensor forward(AutogradContext *ctx, const torch::Tensor &x, const torch::Tensor &w,
				     const torch::Tensor &b, int64_t tap)
	{
		ctx->saved_data["tap"] = tap;
		ctx->saved_data["w"] = w;
		ctx->saved_data["b"] = b;
		ctx->save_for_backward({x});
		return lin(x, w, b.numel() ? b : torch::Tensor());
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto *t = tap_of(ctx);
		auto x = ctx->get_saved_variables()[0];
		auto w = ctx->saved_data["w"].toTensor(), b = ctx->saved_data["b"].toTensor();
		auto g2 = g[0].reshape({-1, g[0].size(-1)}), x2 = x.reshape({-1, x.size(-1)});
		auto gw = g2.t().mm(x2);
		(*t->acc)[t->slot.at(w.data_ptr())].addcmul_(gw, gw);
		if (b.numel()) {
			auto gb = g2.sum(0);
			(*t->acc)[t->slot.at(b.data_ptr())].addcmul_(gb, gb);
		}
		return {g[0].matmul(f32(w)), torch::Tensor(), torch::Tensor(), torch::Tensor()};
	}
};

// Embedding rows (float32) whose backward sums into the tap's window embedding gradient.
struct EmbedTap : public torch::autograd::Function<EmbedTap> {
	static torch::Tensor forward(AutogradContext *ctx, const torch::Tensor &anchor, const torch::Tensor &w,
				     const torch::Tensor &idx, int64_t tap)
	{
		ctx->saved_data["tap"] = tap;
		ctx->saved_data["idx"] = idx;
		return f32(torch::embedding(w, idx)) + anchor * 0;
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto *t = tap_of(ctx);
		auto idx = ctx->saved_data["idx"].toTensor().reshape({-1});
		t->embed_grad.index_add_(0, idx, g[0].reshape({idx.size(0), -1}));
		return {torch::zeros({}), torch::Tensor(), torch::Tensor(), torch::Tensor()};
	}
};

// Sum of the cross-entropies of `targets` under the head, in vocabulary chunks both ways;
// the backward recomputes each chunk's logits and routes the head's gradient to the tap.
struct HeadTap : public torch::autograd::Function<HeadTap> {
	static constexpr int64_t cols = 32768;
	static torch::Tensor forward(AutogradContext *ctx, const torch::Tensor &h, const torch::Tensor &w,
				     const torch::Tensor &y, int64_t tap)
	{
		ctx->saved_data["tap"] = tap;
		ctx->saved_data["w"] = w;
		ctx->saved_data["y"] = y;
		auto [lse, tgt] = chunked_lse(h, w, y, cols);
		ctx->save_for_backward({h, lse});
		return (lse - tgt).sum();
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto *t = tap_of(ctx);
		auto saved = ctx->get_saved_variables();
		auto h = saved[0], lse = saved[1];
		auto w = ctx->saved_data["w"].toTensor(), y = ctx->saved_data["y"].toTensor();
		const int64_t V = w.size(0);
		auto gh = torch::zeros_like(h);
		for (int64_t c0 = 0; c0 < V; c0 += cols) {
			int64_t n = std::min(cols, V - c0);
			auto wc = f32(w.narrow(0, c0, n));
			auto d = (torch::matmul(h, wc.t()) - lse.unsqueeze(1)).exp();
			auto in = (y >= c0).logical_and(y < c0 + n);
			auto rows = torch::nonzero(in).squeeze(1);
			if (rows.numel())
				d.index_put_({rows, (y.index_select(0, rows) - c0)},
					     d.index({rows, (y.index_select(0, rows) - c0)}) - 1);
			d = d * g[0];
			gh.add_(d.mm(wc));
			auto gw = d.t().mm(h);
			if (t->tied)
				t->embed_grad.narrow(0, c0, n).add_(gw);
			else
				(*t->acc)[t->head_slot].narrow(0, c0, n).addcmul_(gw, gw);
		}
		return {gh, torch::Tensor(), torch::Tensor(), torch::Tensor()};
	}
};
} // namespace

void LlamaFisherTap::flush()
{
	(*acc)[embed_slot].addcmul_(embed_grad, embed_grad);
	embed_grad.zero_();
	for (auto &[ptr, leaf] : norm_leaf) {
		auto &g = leaf.mutable_grad();
		if (g.defined()) {
			(*acc)[slot.at(ptr)].addcmul_(g, g);
			g.zero_();
		}
	}
}

torch::Tensor LlamaImpl::proj(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b)
{
	if (act_) {
		auto sq = x.detach().reshape({-1, x.size(-1)}).pow(2).sum(0);
		auto &a = (*act_)[w.data_ptr()];
		a = a.defined() ? a + sq : sq;
	}
	if (!tap_)
		return lin(x, w, b);
	// (An empty tensor stands for no bias: autograd functions take defined tensors.)
	return LinearTap::apply(x, w, b.defined() ? b : torch::empty({0}), reinterpret_cast<int64_t>(tap_));
}

torch::Tensor LlamaImpl::norm(const torch::Tensor &x, const torch::Tensor &w)
{
	if (!tap_)
		return rms_norm(x, w, c_.rms_eps);
	auto it = tap_->norm_leaf.find(w.data_ptr());
	if (it == tap_->norm_leaf.end())
		it = tap_->norm_leaf.emplace(w.data_ptr(), f32(w).detach().clone().requires_grad_(true)).first;
	auto var = x.pow(2).mean(-1, true);
	return it->second * (x * torch::rsqrt(var + c_.rms_eps));
}

torch::Tensor LlamaImpl::head_loss_sum(const torch::Tensor &h, const torch::Tensor &targets)
{
	return HeadTap::apply(h.reshape({-1, c_.hidden}), head_weight(), targets.reshape({-1}),
			      reinterpret_cast<int64_t>(tap_));
}

torch::Tensor LlamaImpl::sample_labels(const torch::Tensor &h, at::Generator &gen)
{
	torch::NoGradGuard ng;
	auto h2 = h.detach().reshape({-1, c_.hidden});
	const auto &W = head_weight();
	const int64_t V = c_.vocab, cols = 32768;
	torch::Tensor best, arg;
	for (int64_t c0 = 0; c0 < V; c0 += cols) {
		int64_t n = std::min(cols, V - c0);
		auto logits = torch::matmul(h2, f32(W.narrow(0, c0, n)).t());
		auto u = torch::rand({h2.size(0), n}, gen, torch::TensorOptions().dtype(torch::kDouble));
		auto z = logits.to(torch::kDouble) - torch::log(-torch::log(u.clamp(1e-300, 1.0)));
		auto [v, i] = z.max(1);
		if (!best.defined()) {
			best = v;
			arg = i;
		} else {
			auto better = v > best;
			best = torch::where(better, v, best);
			arg = torch::where(better, i + c0, arg);
		}
	}
	return arg;
}

torch::Tensor LlamaImpl::attention(const Layer &L, const torch::Tensor &x, int64_t pos0, int layer, LlamaCache *cache)
{
	const int64_t B = x.size(0), T = x.size(1), H = c_.n_head, Hkv = c_.n_kv_head, D = c_.head_dim;
	auto q = proj(x, L.q, L.q_b).view({B, T, H, D}).transpose(1, 2);
	auto k = proj(x, L.k, L.k_b).view({B, T, Hkv, D}).transpose(1, 2);
	auto v = proj(x, L.v, L.v_b).view({B, T, Hkv, D}).transpose(1, 2);
	auto pos = torch::arange(pos0, pos0 + T, torch::kLong).to(torch::kFloat);
	auto freqs = torch::outer(pos, inv_freq_);
	auto emb = torch::cat({freqs, freqs}, -1);
	auto cos = emb.cos(), sin = emb.sin();
	q = rope(q, cos, sin);
	k = rope(k, cos, sin);
	bool causal = true;
	if (cache) {
		auto &ck = cache->k[size_t(layer)], &cv = cache->v[size_t(layer)];
		k = ck.defined() ? torch::cat({ck, k}, 2) : k;
		v = cv.defined() ? torch::cat({cv, v}, 2) : v;
		ck = k;
		cv = v;
		causal = pos0 == 0; // later steps: one new token attends to everything cached
		if (!causal && T > 1)
			fail("llama: cached decoding takes one new token at a time after the prompt");
	}
	if (Hkv != H) {
		k = k.repeat_interleave(H / Hkv, 1);
		v = v.repeat_interleave(H / Hkv, 1);
	}
	auto att = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(D)));
	if (causal && T > 1)
		att = att.masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -INFINITY);
	auto y = torch::matmul(torch::softmax(att, -1), v);
	y = y.transpose(1, 2).reshape({B, T, H * D});
	return proj(y, L.o, L.o_b);
}

torch::Tensor LlamaImpl::hidden(const torch::Tensor &idx, LlamaCache *cache)
{
	int64_t pos0 = 0;
	if (cache) {
		if (cache->k.empty()) {
			cache->k.resize(size_t(c_.n_layer));
			cache->v.resize(size_t(c_.n_layer));
		}
		pos0 = cache->len;
	}
	if (pos0 + idx.size(1) > c_.max_positions)
		fail("llama: {} positions exceed the model's {} (max_position_embeddings)", pos0 + idx.size(1),
		     c_.max_positions);
	auto x = tap_ ? EmbedTap::apply(tap_->anchor, embed_, idx, reinterpret_cast<int64_t>(tap_))
		      : f32(torch::embedding(embed_, idx));
	for (size_t l = 0; l < layers_.size(); l++) {
		const Layer &L = layers_[l];
		x = x + attention(L, norm(x, L.in_norm), pos0, int(l), cache);
		auto h = norm(x, L.post_norm);
		x = x + proj(torch::silu(proj(h, L.gate)) * proj(h, L.up), L.down);
	}
	if (cache)
		cache->len += idx.size(1);
	return norm(x, norm_);
}

std::pair<torch::Tensor, int64_t> LlamaImpl::loss_sum(const torch::Tensor &idx, const torch::Tensor &targets)
{
	auto h = hidden(idx).reshape({-1, c_.hidden});
	auto y = targets.reshape({-1});
	const auto &W = head_weight();
	const int64_t N = h.size(0);
	const int64_t rows = 1024, cols = 32768;
	torch::Tensor total = torch::zeros({}, torch::kFloat);
	int64_t count = 0;
	for (int64_t r = 0; r < N; r += rows) {
		int64_t n = std::min(rows, N - r);
		auto hr = h.narrow(0, r, n), yr = y.narrow(0, r, n);
		auto valid = yr >= 0;
		auto yc = yr.clamp_min(0);
		auto [lse, tgt] = chunked_lse(hr, W, yc, cols);
		auto nll = lse - tgt;
		total = total + torch::where(valid, nll, torch::zeros_like(nll)).sum();
		count += valid.sum().item<int64_t>();
	}
	return {total, count};
}

torch::Tensor LlamaImpl::logits(const torch::Tensor &idx)
{
	return torch::matmul(hidden(idx), f32(head_weight()).t());
}

torch::Tensor LlamaImpl::forward_cached(const torch::Tensor &idx, LlamaCache &cache)
{
	auto h = hidden(idx, &cache);
	auto last = h.select(1, h.size(1) - 1);
	return torch::matmul(last, f32(head_weight()).t());
}

std::string gguf_llama_name(const std::string &hf)
{
	static const std::vector<std::pair<std::string, std::string>> inner = {
		{"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
		{"self_attn.q_proj.bias", "attn_q.bias"},	{"self_attn.k_proj.weight", "attn_k.weight"},
		{"self_attn.k_proj.bias", "attn_k.bias"},	{"self_attn.v_proj.weight", "attn_v.weight"},
		{"self_attn.v_proj.bias", "attn_v.bias"},	{"self_attn.o_proj.weight", "attn_output.weight"},
		{"self_attn.o_proj.bias", "attn_output.bias"},	{"post_attention_layernorm.weight", "ffn_norm.weight"},
		{"mlp.gate_proj.weight", "ffn_gate.weight"},	{"mlp.up_proj.weight", "ffn_up.weight"},
		{"mlp.down_proj.weight", "ffn_down.weight"}};
	if (hf == "model.embed_tokens.weight")
		return "token_embd.weight";
	if (hf == "model.norm.weight")
		return "output_norm.weight";
	if (hf == "lm_head.weight")
		return "output.weight";
	const std::string pre = "model.layers.";
	if (hf.rfind(pre, 0) == 0) {
		size_t dot = hf.find('.', pre.size());
		if (dot != std::string::npos) {
			std::string layer = hf.substr(pre.size(), dot - pre.size()), rest = hf.substr(dot + 1);
			for (const auto &[h, g] : inner)
				if (rest == h)
					return "blk." + layer + "." + g;
		}
	}
	return "";
}

std::string gguf_architecture(const std::string &path)
{
	try {
		GgufFile f(path);
		const auto *a = f.find("general.architecture");
		return a && a->value.is_string() ? a->value.get<std::string>() : "";
	} catch (const Error &) {
		return "";
	}
}

Llama load_gguf_llama(const std::string &path)
{
	GgufFile f(path);
	std::string arch = f.get("general.architecture").value.is_string()
				   ? f.get("general.architecture").value.get<std::string>()
				   : "";
	if (arch != "llama" && arch != "qwen2")
		fail("{}: architecture {} (knlp reads gpt2, llama and qwen2)", path, json(arch).dump());
	auto num = [&](const std::string &key, bool required, double dflt) {
		const auto *k = f.find(arch + "." + key);
		if (!k) {
			if (required)
				fail("{}: {}.{} is missing", path, arch, key);
			return dflt;
		}
		if (!k->value.is_number())
			fail("{}: {}.{} is not a number", path, arch, key);
		return k->value.get<double>();
	};
	LlamaConfig c;
	c.arch = arch;
	c.hf_arch = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
	c.hidden = int64_t(num("embedding_length", true, 0));
	c.n_layer = int64_t(num("block_count", true, 0));
	c.intermediate = int64_t(num("feed_forward_length", true, 0));
	c.n_head = int64_t(num("attention.head_count", true, 0));
	c.n_kv_head = int64_t(num("attention.head_count_kv", false, double(c.n_head)));
	c.head_dim = int64_t(num("attention.key_length", false, c.n_head ? double(c.hidden / c.n_head) : 0));
	c.max_positions = int64_t(num("context_length", true, 0));
	c.rope_theta = num("rope.freq_base", false, 10000.0);
	c.rms_eps = num("attention.layer_norm_rms_epsilon", true, 0);
	if (c.hidden <= 0 || c.n_layer <= 0 || c.n_head <= 0 || c.n_kv_head <= 0 || c.n_head % c.n_kv_head ||
	    c.head_dim <= 0 || c.head_dim % 2 || c.intermediate <= 0)
		fail("{}: inconsistent {} hyperparameters", path, arch);
	if (const auto *t = f.find(arch + ".rope.scaling.type")) {
		std::string type = t->value.is_string() ? t->value.get<std::string>() : "";
		if (type == "linear") {
			c.rope_scaling = "linear";
			c.rope_factor = num("rope.scaling.factor", true, 1.0);
		} else if (type != "none" && !type.empty()) {
			fail("{}: rope scaling '{}' is not supported (knlp reads linear and rope_freqs)", path, type);
		}
	}
	const auto &emb = f.tensor("token_embd.weight");
	if (emb.ne.size() != 2 || emb.ne[0] != c.hidden)
		fail("{}: token_embd.weight has the wrong shape for width {}", path, c.hidden);
	c.vocab = emb.ne[1];
	auto has = [&](const std::string &n) {
		for (const auto &t : f.tensors())
			if (t.name == n)
				return true;
		return false;
	};
	c.tied = !has("output.weight");
	c.qkv_bias = has("blk.0.attn_q.bias");
	c.o_bias = has("blk.0.attn_output.bias");
	auto load = [&](const std::string &g, const std::vector<int64_t> &shape) {
		const auto &t = f.tensor(g);
		std::vector<int64_t> got(t.ne.rbegin(), t.ne.rend());
		if (got != shape)
			fail("{}: tensor {} has shape {} where the metadata implies {}", path, g, json(got).dump(),
			     json(shape).dump());
		auto vals = torch::empty(shape, torch::kFloat);
		ggml_dequantize(t.type, t.data, t.elements(), vals.data_ptr<float>());
		return vals;
	};
	// Hugging Face names -> llama.cpp names; llama's q and k rows back to rotate-half order.
	auto source = [&](const std::string &hf, const std::vector<int64_t> &shape) {
		std::string g = gguf_llama_name(hf);
		if (g.empty())
			fail("{}: no llama.cpp name for {}", path, hf);
		auto t = load(g, shape);
		bool q = hf.find("q_proj") != std::string::npos, k = hf.find("k_proj") != std::string::npos;
		if (arch == "llama" && (q || k)) {
			int64_t heads = q ? c.n_head : c.n_kv_head, d = shape[0] / heads;
			auto s = t.sizes().vec();
			t = t.reshape({heads, d / 2, 2, -1}).transpose(1, 2).reshape(s).contiguous();
		}
		return t;
	};
	torch::Tensor factors;
	if (has("rope_freqs.weight"))
		factors = load("rope_freqs.weight", {c.head_dim / 2});
	return Llama(c, source, factors);
}

std::map<std::string, torch::Tensor> collect_imatrix(Llama &model, const TokenFile &data, int chunks, int seq)
{
	const auto &c = model->config();
	if (seq < 1 || seq > c.max_positions)
		fail("imatrix: window of {} tokens outside [1, {}] (the model's positions)", seq, c.max_positions);
	if (chunks < 1)
		fail("imatrix: {} windows (at least 1)", chunks);
	uint64_t n = data.size();
	if (n < uint64_t(seq) + 1)
		fail("{}: {} tokens is smaller than one window of {} + 1", data.path(), n, seq);
	std::unordered_map<const void *, torch::Tensor> sums;
	model->set_activation_sink(&sums);
	struct Off {
		Llama &m;
		~Off() { m->set_activation_sink(nullptr); }
	} off{model};
	torch::NoGradGuard ng;
	std::vector<int64_t> x(static_cast<size_t>(seq)), y(static_cast<size_t>(seq));
	uint64_t span = n - uint64_t(seq) - 1;
	for (int w = 0; w < chunks; w++) {
		uint64_t start = chunks == 1 ? 0 : span * uint64_t(w) / uint64_t(chunks - 1);
		data.window(start, seq, x.data(), y.data());
		auto h = model->hidden(torch::from_blob(x.data(), {1, seq}, torch::kLong).clone());
		// The head's input: the final normed hidden states.
		auto sq = h.reshape({-1, c.hidden}).pow(2).sum(0);
		auto &a = sums[model->head_weight().data_ptr()];
		a = a.defined() ? a + sq : sq;
	}
	std::map<std::string, torch::Tensor> out;
	const double tokens = double(chunks) * seq;
	for (auto &[name, t] : model->named_weights()) {
		auto it = sums.find(t.data_ptr());
		if (it != sums.end() && t.dim() == 2)
			out[name] = it->second / tokens;
	}
	return out;
}

} // namespace knlp
