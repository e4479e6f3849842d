// GPT-2's shape and attention layout: decoded from the typed configuration, placed per
// layer (hybrid and reciprocal attention), validated, and counted (parameters, FLOPs, cache).
#include "models/gpt2.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace knlp {

int pad_vocab(int vocab, int multiple)
{
	return multiple <= 1 ? vocab : (vocab + multiple - 1) / multiple * multiple;
}

GPT2Config GPT2Config::from(const Settings &s, int data_vocab)
{
	const Gpt2Settings &g = s.gpt2;
	const AttentionSettings &a = s.attention;
	GPT2Config c;
	c.n_layer = static_cast<int>(g.n_layer);
	c.n_head = static_cast<int>(g.n_head);
	c.n_embd = static_cast<int>(g.n_embd);
	c.block_size = static_cast<int>(g.block_size);
	int v = static_cast<int>(g.vocab_size);
	c.vocab_raw = v > 0 ? v : data_vocab;
	if (c.vocab_raw <= 0)
		fail("GPT-2: vocabulary size unknown: {} has no meta.json (an unfinished `knlp prepare`?); prepare "
		     "the data again or set CONFIG_GPT2_VOCAB_SIZE",
		     s.data.dir.empty() ? std::string("CONFIG_DATA_DIR") : s.data.dir);
	c.vocab_size = pad_vocab(c.vocab_raw, static_cast<int>(g.vocab_multiple));
	c.dropout = g.dropout;
	c.bias = g.bias;
	c.fused_attention = g.flash_attention;
	c.fused_head_loss = g.fused_head_loss;
	c.head_vocab_blocks = g.head_vocab_blocks;
	c.blocked_attention = g.blocked_attention;
	c.fused_layernorm = g.fused_layernorm;
	c.fused_gelu = g.fused_bias_gelu;
	c.d_latent = static_cast<int>(a.mla_d_latent);
	c.splice_dim = static_cast<int>(a.kvsplice_dim);
	HybridPlacement hp;
	hp.where = name_of(a.placement);
	hp.count = static_cast<int>(a.hybrid_layers);
	hp.list = a.hybrid_layer_list;
	hp.fisher_file = a.hybrid_fisher_file;
	set_attention_variant(c, variant_name(a.variant), hp, static_cast<int>(a.ra_layers),
			      static_cast<int>(a.ra_heads));
	c.validate();
	return c;
}

const char *variant_name(choice::Gpt2Attn v)
{
	switch (v) {
	case choice::Gpt2Attn::Vanilla: return "vanilla";
	case choice::Gpt2Attn::Mla: return "mla";
	case choice::Gpt2Attn::Kvsplice: return "kvsplice";
	case choice::Gpt2Attn::Hybrid: return "hybrid";
	case choice::Gpt2Attn::Ra: return "ra";
	case choice::Gpt2Attn::SdpaGate: return "gate";
	case choice::Gpt2Attn::RaGate: return "ra-gate";
	}
	return "vanilla";
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
				fail("GPT-2: CONFIG_GPT2_HYBRID_LAYER_LIST: '{}' is not a layer index in [0, {})", tok,
				     L);
			if (std::find(out.begin(), out.end(), int(v)) == out.end())
				out.push_back(static_cast<int>(v));
		}
		if (out.empty())
			fail("GPT-2: hybrid attention with KVSplice on 0 layers: CONFIG_GPT2_HYBRID_LAYER_LIST is "
			     "empty");
		return out;
	}
	if (n <= 0)
		fail("GPT-2: hybrid attention with KVSplice on 0 layers ({} layers / 3 = 0); set "
		     "CONFIG_GPT2_HYBRID_LAYERS",
		     L);
	if (n > L)
		fail("GPT-2: CONFIG_GPT2_HYBRID_LAYERS={} exceeds CONFIG_GPT2_N_LAYER={}", n, L);
	if (hp.where == "first") {
		for (int i = 0; i < n; i++)
			out.push_back(i);
	} else if (hp.where == "fisher") {
		// The n layers whose attention Fisher trace (mean over heads) is lowest: the least
		// sensitive layers get the strongest compression.
		if (hp.fisher_file.empty())
			fail("GPT-2: Fisher-guided hybrid placement needs CONFIG_GPT2_HYBRID_FISHER_FILE (from `knlp "
			     "fim attention --layers all`)");
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
			fail("{}: no \"layers\" array (write it with `knlp fim attention --layers all --out FILE`)",
			     hp.fisher_file);
		for (const auto &e : j["layers"]) {
			if (!e.contains("layer") || !e.contains("trace"))
				fail("{}: a layer entry lacks \"layer\" or \"trace\"", hp.fisher_file);
			int li = e["layer"].get<int>();
			if (li < 0 || li >= L)
				fail("{}: layer {} is outside this model's {} layers", hp.fisher_file, li, L);
			tr.emplace_back(e["trace"].get<double>(), li);
		}
		if (int(tr.size()) != L)
			fail("{}: has traces for {} layers, the model has {} (run the spectrum with --layers all)",
			     hp.fisher_file, tr.size(), L);
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
				fail("GPT-2: CONFIG_GPT2_RA_LAYERS={} must be between 1 and CONFIG_GPT2_N_LAYER={}",
				     ra_layers, L);
			int first = L / 2 - ra_layers / 2;
			first = std::max(0, std::min(first, L - ra_layers));
			for (int i = first; i < first + ra_layers; i++)
				c.ra_layers.push_back(i);
		}
	} else {
		fail("GPT-2: unknown attention variant '{}' (vanilla, mla, kvsplice, hybrid, ra, gate, ra-gate)",
		     variant);
	}
}

bool GPT2Config::is_ra(int layer) const
{
	return std::find(ra_layers.begin(), ra_layers.end(), layer) != ra_layers.end();
}

bool GPT2Config::vanilla() const
{
	return layer_kind.empty() && ra_layers.empty() && !sdpa_gate;
}

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
		return C * dl + (dl * W + b * W) + (W + b * W) + (W * W + b * W) + (W * 2 * W + b * 2 * W) +
		       (W * dl + b * dl) + (dl * C + C);
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

} // namespace knlp
