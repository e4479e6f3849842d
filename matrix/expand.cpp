#include "matrix/expand.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.h"

namespace knlp {

namespace {

const std::vector<std::string> k_optimizers = {"sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune", "sinkgd"};
const std::vector<std::string> k_prunings = {"none", "magnitude", "movement", "state"};
const std::vector<int> k_levels = {50, 70, 90, 95, 99};

std::string upper(std::string s)
{
	std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
	return s;
}

std::string lower(std::string s)
{
	std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
	return s;
}

std::string chosen_variant(const Config &cfg)
{
	return lower(cfg.choice("ADAMWPRUNE_VARIANT_BITTER7").substr(std::string("ADAMWPRUNE_VARIANT_").size()));
}

// Attention variants of GPT2_ATTN_VARIANTS and the symbols each sets.
const std::vector<std::pair<std::string, std::vector<std::string>>> k_attn = {
	{"vanilla", {"GPT2_ATTN_VANILLA=y"}},
	{"mla", {"GPT2_ATTN_MLA=y"}},
	{"kvsplice", {"GPT2_ATTN_KVSPLICE=y"}},
	{"hybrid", {"GPT2_ATTN_HYBRID=y"}},
	{"hybrid-last", {"GPT2_ATTN_HYBRID=y", "GPT2_HYBRID_LAST=y"}},
	{"hybrid-first", {"GPT2_ATTN_HYBRID=y", "GPT2_HYBRID_FIRST=y"}},
	{"ra", {"GPT2_ATTN_RA=y"}},
	{"gate", {"GPT2_ATTN_SDPA_GATE=y"}},
	{"ra-gate", {"GPT2_ATTN_RA_GATE=y"}},
};

std::vector<std::string> attention_variants(const Config &cfg)
{
	std::vector<std::string> out;
	std::istringstream in(cfg.get_string("GPT2_ATTN_VARIANTS"));
	for (std::string v; in >> v;) {
		v = lower(v);
		bool known = std::any_of(k_attn.begin(), k_attn.end(), [&](const auto &a) { return a.first == v; });
		if (!known)
			fail("matrix: CONFIG_GPT2_ATTN_VARIANTS: unknown attention variant '{}' (vanilla mla kvsplice hybrid "
			     "hybrid-last hybrid-first ra gate ra-gate)",
			     v);
		if (std::find(out.begin(), out.end(), v) == out.end())
			out.push_back(v);
	}
	return out;
}

// The GNN axes: (layout, sampler) pairs of CONFIG_GNN_MATRIX_LAYOUTS x _SAMPLERS.
std::vector<std::pair<std::string, std::string>> gnn_axes(const Config &cfg)
{
	std::vector<std::pair<std::string, std::string>> out;
	if (cfg.choice("MODEL_GPT2") != "MODEL_GRAPHSAGE")
		return out;
	std::vector<std::string> ls, ss;
	std::istringstream li(cfg.get_string("GNN_MATRIX_LAYOUTS")), si(cfg.get_string("GNN_MATRIX_SAMPLERS"));
	for (std::string v; li >> v;) {
		v = lower(v);
		if (v != "identity" && v != "random" && v != "bfs" && v != "metis" && v != "rcm")
			fail("matrix: CONFIG_GNN_MATRIX_LAYOUTS: unknown layout '{}' (identity random bfs metis rcm)", v);
		if (std::find(ls.begin(), ls.end(), v) == ls.end())
			ls.push_back(v);
	}
	for (std::string v; si >> v;) {
		v = lower(v);
		if (v != "neighbor" && v != "page" && v != "fim")
			fail("matrix: CONFIG_GNN_MATRIX_SAMPLERS: unknown sampler '{}' (neighbor page fim)", v);
		if (std::find(ss.begin(), ss.end(), v) == ss.end())
			ss.push_back(v);
	}
	if (ls.empty() && ss.empty())
		return out;
	if (ls.empty())
		ls.push_back(lower(cfg.choice("GNN_LAYOUT_METIS").substr(std::string("GNN_LAYOUT_").size())));
	if (ss.empty())
		ss.push_back(lower(cfg.choice("GNN_SAMPLER_PAGE").substr(std::string("GNN_SAMPLER_").size())));
	for (const auto &l : ls)
		for (const auto &smp : ss)
			out.emplace_back(l, smp);
	return out;
}

} // namespace

std::string run_id(const std::string &model, const std::string &optimizer, const std::string &variant,
		   const std::string &pruning, int sparsity_pct)
{
	std::string id = model + "_" + optimizer;
	if (!variant.empty())
		id += "_" + variant;
	id += "_" + pruning;
	if (pruning != "none")
		id += "_" + std::to_string(sparsity_pct);
	return id;
}

bool is_matrix(const Config &cfg)
{
	return cfg.get_bool("OPTIMIZER_MODE_MULTIPLE") || cfg.get_bool("PRUNING_MODE_MULTIPLE") ||
	       cfg.get_int("MATRIX_SEEDS") > 1 || !attention_variants(cfg).empty() || !gnn_axes(cfg).empty();
}

std::vector<MatrixRun> expand_matrix(const Config &cfg)
{
	std::vector<std::string> opts, prunes, variants;
	std::vector<int> levels;
	if (cfg.get_bool("OPTIMIZER_MODE_MULTIPLE")) {
		for (const auto &o : k_optimizers)
			if (cfg.get_bool("OPTIMIZER_ENABLE_" + upper(o)))
				opts.push_back(o);
		if (opts.empty())
			fail("matrix: no optimizer enabled; set one of CONFIG_OPTIMIZER_ENABLE_SGD, _ADAM, _ADAMW, _ADAMWADV, "
			     "_ADAMWSPAM, _ADAMWPRUNE, _SINKGD (or choose CONFIG_OPTIMIZER_MODE_SINGLE)");
	} else if (cfg.get_bool("OPTIMIZER_MODE_NONE")) {
		opts.push_back("adamw"); // the model's default optimizer (GPT-2)
	} else {
		opts.push_back(lower(cfg.choice("OPTIMIZER_ADAMW").substr(std::string("OPTIMIZER_").size())));
	}
	if (cfg.get_bool("PRUNING_MODE_MULTIPLE")) {
		for (const auto &p : k_prunings)
			if (cfg.get_bool("PRUNING_ENABLE_" + upper(p)))
				prunes.push_back(p);
		for (int l : k_levels)
			if (cfg.get_bool("SPARSITY_ENABLE_" + std::to_string(l)))
				levels.push_back(l);
		if (prunes.empty())
			fail("matrix: no pruning method enabled; set CONFIG_PRUNING_ENABLE_NONE, _MAGNITUDE, _MOVEMENT or _STATE "
			     "(or choose CONFIG_PRUNING_MODE_SINGLE)");
		bool wants_levels = std::any_of(prunes.begin(), prunes.end(), [](const std::string &p) { return p != "none"; }) ||
				    std::find(opts.begin(), opts.end(), "adamwprune") != opts.end();
		if (wants_levels && levels.empty())
			fail("matrix: pruning runs need a sparsity level but none is enabled; set CONFIG_SPARSITY_ENABLE_50 "
			     "(or _70, _90, _95, _99)");
	} else {
		prunes.push_back(lower(cfg.choice("PRUNING_NONE").substr(std::string("PRUNING_").size())));
		levels.push_back(static_cast<int>(std::lround(cfg.get_float("PRUNING_TARGET_SPARSITY") * 100)));
	}
	std::istringstream vs(cfg.get_string("ADAMWPRUNE_VARIANTS"));
	for (std::string v; vs >> v;) {
		v = lower(v);
		if (v.size() != 7 || v.rfind("bitter", 0) != 0 || v[6] < '0' || v[6] > '9')
			fail("matrix: CONFIG_ADAMWPRUNE_VARIANTS: unknown variant '{}' (bitter0 .. bitter9)", v);
		if (std::find(variants.begin(), variants.end(), v) == variants.end())
			variants.push_back(v);
	}
	if (variants.empty())
		variants.push_back(chosen_variant(cfg));

	struct Combo {
		std::string opt, variant, prune;
		int pct;
	};
	std::vector<Combo> combos;
	for (const auto &o : opts) {
		if (o == "adamwprune") {
			// AdamWPrune prunes by its own state: it pairs with "none" (its built-in pruning)
			// or "state", never with magnitude or movement; both give the same runs.
			bool any = std::find(prunes.begin(), prunes.end(), "none") != prunes.end() ||
				   std::find(prunes.begin(), prunes.end(), "state") != prunes.end();
			if (!any)
				continue;
			for (const auto &v : variants)
				for (int l : levels)
					combos.push_back({o, v, "state", l});
			continue;
		}
		for (const auto &p : prunes) {
			if (p == "state")
				continue; // state pruning only with AdamWPrune
			if (p == "none") {
				combos.push_back({o, "", "none", 0});
				continue;
			}
			for (int l : levels)
				combos.push_back({o, "", p, l});
		}
	}
	if (combos.empty()) {
		fail("matrix: every combination was filtered out (state pruning pairs only with AdamWPrune, AdamWPrune "
		     "only with none/state); enable CONFIG_PRUNING_ENABLE_NONE or _MAGNITUDE, or "
		     "CONFIG_OPTIMIZER_ENABLE_ADAMWPRUNE");
	}
	const int64_t seeds = cfg.get_int("MATRIX_SEEDS"), seed0 = cfg.get_int("SEED");
	std::vector<std::string> attn = attention_variants(cfg);
	const std::string mc = cfg.choice("MODEL_GPT2");
	const std::string base_model = mc == "MODEL_LENET5" ? "lenet5" : mc == "MODEL_RESNET18" ? "resnet18"
				     : mc == "MODEL_RESNET50" ? "resnet50" : mc == "MODEL_GRAPHSAGE" ? "graphsage" : "gpt2";
	// Model axis: attention variants (GPT-2) or layout x sampler pairs (GNN), each with its sets.
	std::vector<std::pair<std::string, std::vector<std::string>>> models;
	for (const auto &[l, smp] : gnn_axes(cfg))
		models.push_back({"gnn-" + l + "-" + smp,
				  {"GNN_LAYOUT_" + upper(l) + "=y", "GNN_SAMPLER_" + upper(smp) + "=y", "GNN_MATRIX_LAYOUTS=",
				   "GNN_MATRIX_SAMPLERS="}});
	if (base_model != "gpt2" && !attn.empty())
		fail("matrix: CONFIG_GPT2_ATTN_VARIANTS applies to GPT-2 only; the model is {}", base_model);
	for (const auto &a : attn) {
		std::vector<std::string> sets;
		for (const auto &[name, s] : k_attn)
			if (name == a)
				sets = s;
		sets.push_back("GPT2_ATTN_VARIANTS=");
		models.push_back({"gpt2-" + a, sets});
	}
	if (models.empty())
		models.push_back({base_model, {}});
	std::vector<MatrixRun> runs;
	for (const auto &[model, model_sets] : models)
	for (const auto &c : combos)
		for (int64_t s = 0; s < seeds; s++) {
			MatrixRun r;
			r.model = model;
			r.optimizer = c.opt;
			r.variant = c.variant;
			r.pruning = c.prune;
			r.sparsity_pct = c.prune == "none" ? 0 : c.pct;
			r.seed = seed0 + s;
			r.config_id = run_id(r.model, r.optimizer, r.variant, r.pruning, r.sparsity_pct);
			r.id = seeds > 1 ? r.config_id + "_s" + std::to_string(r.seed) : r.config_id;
			r.sets = {"OPTIMIZER_MODE_SINGLE=y", "OPTIMIZER_" + upper(c.opt) + "=y", "PRUNING_MODE_SINGLE=y",
				  "PRUNING_" + upper(c.prune == "state" && c.opt == "adamwprune" ? "state" : c.prune) + "=y",
				  "MATRIX_SEEDS=1", "SEED=" + std::to_string(r.seed), "RUN_NAME=" + r.id};
			if (c.prune != "none")
				r.sets.push_back(fmt::format("PRUNING_TARGET_SPARSITY={}", r.sparsity_pct / 100.0));
			if (!c.variant.empty())
				r.sets.push_back("ADAMWPRUNE_VARIANT_" + upper(c.variant) + "=y");
			r.sets.insert(r.sets.end(), model_sets.begin(), model_sets.end());
			runs.push_back(std::move(r));
		}
	return runs;
}

std::vector<SweepAxis> parse_sweep(const std::string &text, const std::string &origin)
{
	std::vector<SweepAxis> axes;
	std::istringstream in(text);
	std::string line;
	int lineno = 0;
	while (std::getline(in, line)) {
		lineno++;
		std::string where = fmt::format("{}:{}", origin, lineno);
		size_t b = line.find_first_not_of(" \t\r");
		if (b == std::string::npos || line[b] == '#')
			continue;
		line = line.substr(b);
		while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t'))
			line.pop_back();
		size_t eq = line.find('=');
		if (eq == std::string::npos)
			fail("{}: expected CONFIG_SYMBOL=a|b|c or CONFIG_SYMBOL=start:step:end", where);
		std::string name = line.substr(0, eq), spec = line.substr(eq + 1);
		if (name.rfind("CONFIG_", 0) == 0)
			name = name.substr(7);
		const SymbolInfo *sym = find_symbol(name);
		if (!sym)
			fail("{}: unknown symbol CONFIG_{}", where, name);
		for (const auto &a : axes)
			if (a.symbol == name)
				fail("{}: CONFIG_{} is swept twice", where, name);
		SweepAxis ax;
		ax.symbol = name;
		if (spec.size() >= 2 && spec.front() == '"' && spec.back() == '"')
			spec = spec.substr(1, spec.size() - 2);
		if (spec.find('|') == std::string::npos && std::count(spec.begin(), spec.end(), ':') == 2) {
			double lo = 0, step = 0, hi = 0;
			char extra = 0;
			std::string s2 = spec;
			std::replace(s2.begin(), s2.end(), ':', ' ');
			if (std::sscanf(s2.c_str(), "%lf %lf %lf %c", &lo, &step, &hi, &extra) != 3 || !(step > 0) || hi < lo)
				fail("{}: range '{}' must be start:step:end with step > 0 and end >= start", where, spec);
			const double count = std::floor((hi - lo) / step + 1e-9) + 1;
			if (!(count <= 10000)) // also catches infinities and NaN before the conversion
				fail("{}: range '{}' has {} values (at most 10000)", where, spec, count);
			int64_t n = static_cast<int64_t>(count);
			if (n > 10000)
				fail("{}: range '{}' has {} values (at most 10000)", where, spec, n);
			if (sym->type == SymbolType::Int && (std::abs(lo) > 9e18 || std::abs(hi) > 9e18))
				fail("{}: range '{}' is outside the integers CONFIG_{} can hold", where, spec, name);
			for (int64_t i = 0; i < n; i++) {
				double v = lo + double(i) * step;
				ax.values.push_back(sym->type == SymbolType::Int ? std::to_string(std::llround(v))
										 : fmt::format("{}", v));
			}
		} else {
			std::istringstream vs(spec);
			for (std::string v; std::getline(vs, v, '|');) {
				size_t vb = v.find_first_not_of(' '), ve = v.find_last_not_of(' ');
				if (vb == std::string::npos)
					fail("{}: empty value in '{}'", where, spec);
				ax.values.push_back(v.substr(vb, ve - vb + 1));
			}
		}
		if (ax.values.empty())
			fail("{}: no values for CONFIG_{}", where, name);
		// Every value must be valid for the symbol (type, range, choice membership).
		Config probe;
		for (const auto &v : ax.values)
			probe.set(name + "=" + v, where);
		axes.push_back(std::move(ax));
	}
	if (axes.empty())
		fail("{}: the sweep sets no symbol", origin);
	return axes;
}

std::vector<MatrixRun> apply_sweep(const Config &cfg, const std::vector<MatrixRun> &runs,
				   const std::vector<SweepAxis> &axes)
{
	(void)cfg;
	std::vector<std::vector<std::string>> combos = {{}};
	for (const auto &ax : axes) {
		std::vector<std::vector<std::string>> next;
		for (const auto &c : combos)
			for (const auto &v : ax.values) {
				auto n = c;
				n.push_back(v);
				next.push_back(n);
			}
		combos = std::move(next);
	}
	auto token = [](std::string v) {
		for (char &ch : v)
			if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '+')
				ch = '_';
		return v;
	};
	std::vector<MatrixRun> out;
	for (const auto &r : runs)
		for (const auto &c : combos) {
			MatrixRun x = r;
			std::string suffix;
			for (size_t i = 0; i < axes.size(); i++) {
				suffix += "_" + lower(axes[i].symbol) + "-" + token(c[i]);
				x.sets.push_back(axes[i].symbol + "=" + c[i]);
			}
			x.config_id += suffix;
			x.id = x.config_id + (r.id.size() > r.config_id.size() ? r.id.substr(r.config_id.size()) : "");
			for (auto &s : x.sets)
				if (s.rfind("RUN_NAME=", 0) == 0)
					s = "RUN_NAME=" + x.id;
			out.push_back(std::move(x));
		}
	return out;
}

Config run_config(const Config &matrix_cfg, const MatrixRun &run)
{
	Config c = matrix_cfg;
	for (const auto &s : run.sets)
		c.set(s, "matrix run " + run.id);
	return c;
}

} // namespace knlp
