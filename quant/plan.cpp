#include "quant/plan.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <tuple>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"

namespace knlp {

std::string gpt2_role(const std::string &name, int *layer)
{
	static const std::regex blk(R"((?:transformer\.)?h\.(\d+)\.(.*))");
	std::smatch m;
	*layer = -1;
	std::string rest = name;
	if (std::regex_match(name, m, blk)) {
		*layer = std::stoi(m[1].str());
		rest = m[2].str();
	}
	if (rest == "attn.c_attn.weight")
		return "attn_qkv";
	if (rest == "attn.c_proj.weight")
		return "attn_output";
	if (rest == "mlp.c_fc.weight")
		return "ffn_up";
	if (rest == "mlp.c_proj.weight")
		return "ffn_down";
	if (name == "transformer.wte.weight" || name == "wte.weight")
		return "token_embd";
	if (name == "transformer.wpe.weight" || name == "wpe.weight")
		return "position_embd";
	// llama.cpp's own names (Llama-family exports plan on them): blk.N.<role>.weight.
	static const std::regex gguf(
		R"(blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight)");
	if (std::regex_match(name, m, gguf)) {
		*layer = std::stoi(m[1].str());
		return m[2].str();
	}
	if (name == "token_embd.weight" || name == "model.embed_tokens.weight")
		return "token_embd";
	if (name == "output.weight" || name == "lm_head.weight")
		return "output";
	// Hugging Face's Llama-family names.
	static const std::regex hf(R"(model\.layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight)");
	if (std::regex_match(name, m, hf)) {
		*layer = std::stoi(m[1].str());
		static const std::map<std::string, std::string> role = {
			{"q", "attn_q"},      {"k", "attn_k"},	{"v", "attn_v"},     {"o", "attn_output"},
			{"gate", "ffn_gate"}, {"up", "ffn_up"}, {"down", "ffn_down"}};
		return role.at(m[3].str());
	}
	return "";
}

std::string gguf_name(const std::string &name)
{
	static const std::regex blk(R"((?:transformer\.)?h\.(\d+)\.(.*))");
	static const std::map<std::string, std::string> inner = {
		{"ln_1.weight", "attn_norm.weight"},	      {"ln_1.bias", "attn_norm.bias"},
		{"attn.c_attn.weight", "attn_qkv.weight"},    {"attn.c_attn.bias", "attn_qkv.bias"},
		{"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
		{"ln_2.weight", "ffn_norm.weight"},	      {"ln_2.bias", "ffn_norm.bias"},
		{"mlp.c_fc.weight", "ffn_up.weight"},	      {"mlp.c_fc.bias", "ffn_up.bias"},
		{"mlp.c_proj.weight", "ffn_down.weight"},     {"mlp.c_proj.bias", "ffn_down.bias"}};
	std::smatch m;
	if (std::regex_match(name, m, blk)) {
		auto it = inner.find(m[2].str());
		return it == inner.end() ? "" : "blk." + m[1].str() + "." + it->second;
	}
	static const std::map<std::string, std::string> top = {{"transformer.wte.weight", "token_embd.weight"},
							       {"transformer.wpe.weight", "position_embd.weight"},
							       {"transformer.ln_f.weight", "output_norm.weight"},
							       {"transformer.ln_f.bias", "output_norm.bias"}};
	auto it = top.find(name);
	return it == top.end() ? "" : it->second;
}

GgmlType plan_fit(GgmlType want, int64_t row, bool *fallback)
{
	*fallback = false;
	if (row % ggml_type_info(want).block == 0)
		return want;
	*fallback = true;
	GgmlType next = want == GgmlType::Q3_K	 ? GgmlType::Q4_0
			: want == GgmlType::Q4_K ? GgmlType::Q5_0
			: want == GgmlType::Q5_K ? GgmlType::Q5_1
			: want == GgmlType::Q6_K ? GgmlType::Q8_0
						 : GgmlType::F16;
	return row % ggml_type_info(next).block == 0 ? next : GgmlType::F16;
}

namespace {

struct Mix {
	const char *name;
	GgmlType base;
	uint32_t file_type;
};
const Mix k_mixes[] = {{"q3_k_s", GgmlType::Q3_K, 11}, {"q3_k_m", GgmlType::Q3_K, 12}, {"q3_k_l", GgmlType::Q3_K, 13},
		       {"q4_k_s", GgmlType::Q4_K, 14}, {"q4_k_m", GgmlType::Q4_K, 15}, {"q5_k_s", GgmlType::Q5_K, 16},
		       {"q5_k_m", GgmlType::Q5_K, 17}};

const Mix &mix_of(const std::string &name)
{
	for (const auto &m : k_mixes)
		if (name == m.name)
			return m;
	fail("unknown llama.cpp mix '{}' (q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m)", name);
}

// llama.cpp's "more bits" layers: the first and last eighth, and every third in between.
bool more_bits(int i, int n)
{
	return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

std::string lower(std::string s)
{
	for (auto &c : s)
		c = char(std::tolower(static_cast<unsigned char>(c)));
	return s;
}

} // namespace

bool is_ggml_mix(const std::string &name)
{
	for (const auto &m : k_mixes)
		if (lower(name) == m.name)
			return true;
	return false;
}

uint32_t mix_file_type(const std::string &mix)
{
	return mix_of(mix).file_type;
}

GgmlType mix_type(const std::string &mix, const std::string &role, int i, int n, bool tied)
{
	const Mix &m = mix_of(mix);
	const std::string f = m.name;
	const GgmlType base = m.base;
	using G = GgmlType;
	if (role == "output" || (role == "token_embd" && tied))
		return G::Q6_K; // the head (llama.cpp: q8_0 when its rows do not fit, as plan_fit does)
	if (role == "position_embd")
		return G::F32; // llama.cpp leaves position tables unquantized
	if (role == "attn_v" || role == "attn_qkv") {
		if (f == "q3_k_m")
			return i < 2 ? G::Q5_K : G::Q4_K;
		if (f == "q3_k_l")
			return G::Q5_K;
		if ((f == "q4_k_m" || f == "q5_k_m") && more_bits(i, n))
			return G::Q6_K;
		if (f == "q4_k_s" && i < 4)
			return G::Q5_K;
		return base;
	}
	if (role == "ffn_down") {
		if (f == "q3_k_m")
			return i < n / 16 ? G::Q5_K : G::Q4_K;
		if (f == "q3_k_l")
			return G::Q5_K;
		if ((f == "q4_k_m" || f == "q5_k_m") && more_bits(i, n))
			return G::Q6_K;
		if (f == "q4_k_s" && i < n / 8)
			return G::Q5_K;
		return base;
	}
	if (role == "attn_output")
		return f == "q3_k_m" ? G::Q4_K : f == "q3_k_l" ? G::Q5_K : base;
	return base;
}

namespace {

// Each tensor's type before upgrades, in order, with whether it fell back.
std::vector<std::pair<GgmlType, bool>> base_plan(
	const std::vector<std::pair<std::string, std::vector<int64_t>>> &tensors, const PlanOptions &o)
{
	std::map<std::string, int> per_role;
	bool tied = true;
	for (const auto &[name, shape] : tensors) {
		int layer;
		std::string role = gpt2_role(name, &layer);
		if (shape.size() >= 2 && !role.empty())
			per_role[role]++;
		tied &= role != "output";
	}
	std::vector<std::pair<GgmlType, bool>> out;
	for (const auto &[name, shape] : tensors) {
		int layer;
		std::string role = gpt2_role(name, &layer);
		bool fb = false;
		GgmlType t = GgmlType::F32; // norms and biases stay exact
		if (shape.size() >= 2 && !role.empty()) {
			t = o.mix.empty() ? o.base : mix_type(o.mix, role, layer, per_role[role], tied);
			if (t != GgmlType::F32)
				t = plan_fit(t, shape.back(), &fb);
		}
		out.emplace_back(t, fb);
	}
	return out;
}

} // namespace

std::map<std::string, GgmlType> base_types(const std::vector<std::pair<std::string, std::vector<int64_t>>> &tensors,
					   const PlanOptions &o)
{
	auto b = base_plan(tensors, o);
	std::map<std::string, GgmlType> out;
	for (size_t i = 0; i < tensors.size(); i++)
		out[tensors[i].first] = b[i].first;
	return out;
}

std::vector<PlannedTensor> make_plan(const std::vector<std::pair<std::string, std::vector<int64_t>>> &tensors,
				     const std::map<std::string, double> &scores, const PlanOptions &o)
{
	static const std::vector<std::string> plans = {"none", "magnitude", "random", "squisher",
						       "fim",  "fim-error", "imatrix"};
	if (std::find(plans.begin(), plans.end(), o.plan) == plans.end())
		fail("unknown plan '{}' (none magnitude random squisher fim fim-error imatrix; the recipe "
		     "fim-q3_k_m)",
		     o.plan);
	if (o.pct < 0 || o.pct > 100)
		fail("--pct {} is outside [0, 100]", o.pct);
	static const std::vector<std::string> roles = {"attn_qkv",   "attn_output",   "ffn_up", "ffn_down",
						       "token_embd", "position_embd", "attn_q", "attn_k",
						       "attn_v",     "ffn_gate",      "output"};
	for (const auto &r : o.roles)
		if (std::find(roles.begin(), roles.end(), r) == roles.end())
			fail("unknown role '{}' (attn_qkv attn_output ffn_up ffn_down token_embd position_embd; "
			     "Llama-family models: attn_q attn_k attn_v ffn_gate output)",
			     r);
	std::vector<PlannedTensor> out;
	auto base = base_plan(tensors, o);
	for (size_t i = 0; i < tensors.size(); i++) {
		PlannedTensor t;
		t.name = tensors[i].first;
		t.role = gpt2_role(t.name, &t.layer);
		t.elements = 1;
		for (auto d : tensors[i].second)
			t.elements *= d;
		std::tie(t.type, t.fallback) = base[i];
		out.push_back(t);
	}
	if (o.plan != "none" && o.pct > 0) {
		Rng rng(o.seed * 7919 + 17);
		for (const auto &role : o.roles) {
			std::vector<PlannedTensor *> cand;
			for (auto &t : out)
				if (t.role == role)
					cand.push_back(&t);
			if (cand.empty())
				continue;
			for (auto *t : cand) {
				if (o.plan == "random") {
					t->score = rng.uniform();
				} else {
					auto it = scores.find(t->name);
					if (it == scores.end())
						fail("plan {}: no score for tensor {}", o.plan, t->name);
					t->score = it->second;
				}
			}
			// The layerwise rule: top max(1, floor(L * pct / 100)) of this role.
			int64_t k = std::max<int64_t>(1, int64_t(std::floor(double(cand.size()) * o.pct / 100.0)));
			std::stable_sort(cand.begin(), cand.end(), [](const PlannedTensor *a, const PlannedTensor *b) {
				return a->score > b->score;
			});
			for (int64_t i = 0; i < k && i < int64_t(cand.size()); i++) {
				auto *t = cand[size_t(i)];
				bool fb;
				int64_t row = 0;
				for (const auto &[name, shape] : tensors)
					if (name == t->name)
						row = shape.back();
				t->type = plan_fit(o.upgrade, row, &fb);
				t->fallback = t->fallback || fb;
				t->upgraded = true;
			}
		}
	}
	for (auto &t : out) {
		const auto &ti = ggml_type_info(t.type);
		t.bytes = t.elements / ti.block * ti.block_bytes;
	}
	return out;
}

PlanOptions plan_options(const std::string &base, const std::string &upgrade, const std::string &roles, double pct,
			 const std::string &plan, uint64_t seed)
{
	PlanOptions o;
	std::string plan_name = plan;
	if (plan == "fim-q3_k_m") {
		// The original's recipe: llama.cpp's Q3_K_M with the top Fisher layers' ffn_down in
		// q6_k (4 of Qwen2.5-1.5B's 28 at 15%). Roles, upgrade and pct as given (their
		// defaults are the recipe's), 15% when none is.
		if (is_ggml_mix(base) && lower(base) != "q3_k_m")
			fail("plan fim-q3_k_m is the Q3_K_M recipe; the base mix {} disagrees (use --plan fim "
			     "with it)",
			     base);
		o.recipe = plan;
		o.mix = "q3_k_m";
		o.base = GgmlType::Q3_K;
		plan_name = "fim";
		if (pct == 0)
			pct = 15;
	} else if (is_ggml_mix(base)) {
		o.mix = lower(base);
		o.base = mix_of(o.mix).base;
	} else {
		o.base = ggml_type_from_name(base);
	}
	o.upgrade = ggml_type_from_name(upgrade);
	o.roles.clear();
	for (size_t a = 0; a <= roles.size();) {
		size_t b = roles.find(',', a);
		if (b == std::string::npos)
			b = roles.size();
		std::string r = roles.substr(a, b - a);
		r.erase(0, r.find_first_not_of(' '));
		r.erase(r.find_last_not_of(' ') + 1);
		if (!r.empty())
			o.roles.push_back(r);
		a = b + 1;
	}
	o.pct = pct;
	o.plan = plan_name;
	o.seed = seed;
	make_plan({}, {}, o); // validates plan, pct and roles
	return o;
}

PlanOptions plan_options_from(const QuantSettings &q)
{
	std::string plan = name_of(q.plan);
	std::replace(plan.begin(), plan.end(), '_', '-'); // QUANT_PLAN_FIM_ERROR: fim-error
	if (plan == "fim-q3-k-m")
		plan = "fim-q3_k_m";
	try {
		ggml_type_from_name(q.upgrade);
	} catch (const Error &e) {
		fail("CONFIG_QUANT_UPGRADE: {}", e.what());
	}
	try {
		return plan_options(name_of(q.base), q.upgrade, q.roles, double(q.pct), plan, uint64_t(q.seed));
	} catch (const Error &e) {
		fail("CONFIG_QUANT_ROLES / CONFIG_QUANT_PLAN: {}", e.what());
	}
}

nlohmann::json plan_summary(const std::vector<PlannedTensor> &plan, const PlanOptions &o)
{
	nlohmann::json tensors = nlohmann::json::array();
	int64_t bytes = 0, f32_bytes = 0;
	std::vector<std::string> upgraded, fallbacks;
	for (const auto &t : plan) {
		tensors.push_back({{"name", t.name},
				   {"role", t.role},
				   {"layer", t.layer},
				   {"type", ggml_type_info(t.type).name},
				   {"upgraded", t.upgraded},
				   {"fallback", t.fallback},
				   {"score", t.score},
				   {"bytes", t.bytes}});
		bytes += t.bytes;
		f32_bytes += 4 * t.elements;
		if (t.upgraded)
			upgraded.push_back(t.name);
		if (t.fallback)
			fallbacks.push_back(t.name);
	}
	std::vector<std::string> role_list(o.roles.begin(), o.roles.end());
	return {{"base", o.mix.empty() ? std::string(ggml_type_info(o.base).name) : o.mix},
		{"recipe", o.recipe},
		{"upgrade", ggml_type_info(o.upgrade).name},
		{"roles", role_list},
		{"pct", o.pct},
		{"plan", o.plan},
		{"seed", o.seed},
		{"bytes", bytes},
		{"f32_bytes", f32_bytes},
		{"bits_per_weight", 32.0 * double(bytes) / double(std::max<int64_t>(1, f32_bytes))},
		{"upgraded", upgraded},
		{"fallbacks", fallbacks},
		{"fallback_rule", "rows not a multiple of the type's block: q8_0 when a multiple of 32, else f16"},
		{"tensors", tensors}};
}

} // namespace knlp
