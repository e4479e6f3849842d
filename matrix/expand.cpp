#include "matrix/expand.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.h"

namespace knlp {

namespace {

// The optimizers and pruning methods a matrix can enable, with their switches.
struct OptimizerAxis {
	choice::Optimizer kind;
	bool OptimSettings::*enabled;
};
const OptimizerAxis k_optimizers[] = {
	{choice::Optimizer::Sgd, &OptimSettings::enable_sgd},
	{choice::Optimizer::Adam, &OptimSettings::enable_adam},
	{choice::Optimizer::Adamw, &OptimSettings::enable_adamw},
	{choice::Optimizer::Adamwadv, &OptimSettings::enable_adamwadv},
	{choice::Optimizer::Adamwspam, &OptimSettings::enable_adamwspam},
	{choice::Optimizer::Adamwprune, &OptimSettings::enable_adamwprune},
	{choice::Optimizer::Sinkgd, &OptimSettings::enable_sinkgd},
};
struct PruningAxis {
	choice::Pruning method;
	bool PruneSettings::*enabled;
};
const PruningAxis k_prunings[] = {
	{choice::Pruning::None, &PruneSettings::enable_none},
	{choice::Pruning::Magnitude, &PruneSettings::enable_magnitude},
	{choice::Pruning::Movement, &PruneSettings::enable_movement},
	{choice::Pruning::State, &PruneSettings::enable_state},
};
const std::pair<int, bool PruneSettings::*> k_levels[] = {{50, &PruneSettings::sparsity_enable_50},
							  {70, &PruneSettings::sparsity_enable_70},
							  {90, &PruneSettings::sparsity_enable_90},
							  {95, &PruneSettings::sparsity_enable_95},
							  {99, &PruneSettings::sparsity_enable_99}};

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

// Attention variants of GPT2_ATTN_VARIANTS and the members each selects.
const std::vector<std::pair<std::string, std::vector<std::string>>> k_attn = {
	{"vanilla", {select(choice::Gpt2Attn::Vanilla)}},
	{"mla", {select(choice::Gpt2Attn::Mla)}},
	{"kvsplice", {select(choice::Gpt2Attn::Kvsplice)}},
	{"hybrid", {select(choice::Gpt2Attn::Hybrid)}},
	{"hybrid-last", {select(choice::Gpt2Attn::Hybrid), select(choice::Gpt2Hybrid::Last)}},
	{"hybrid-first", {select(choice::Gpt2Attn::Hybrid), select(choice::Gpt2Hybrid::First)}},
	{"ra", {select(choice::Gpt2Attn::Ra)}},
	{"gate", {select(choice::Gpt2Attn::SdpaGate)}},
	{"ra-gate", {select(choice::Gpt2Attn::RaGate)}},
};

std::vector<std::string> attention_variants(const Settings &st)
{
	std::vector<std::string> out;
	std::istringstream in(st.attention.variants);
	for (std::string v; in >> v;) {
		v = lower(v);
		bool known = std::any_of(k_attn.begin(), k_attn.end(), [&](const auto &a) { return a.first == v; });
		if (!known)
			fail("matrix: CONFIG_GPT2_ATTN_VARIANTS: unknown attention variant '{}' (vanilla mla kvsplice "
			     "hybrid "
			     "hybrid-last hybrid-first ra gate ra-gate)",
			     v);
		if (std::find(out.begin(), out.end(), v) == out.end())
			out.push_back(v);
	}
	return out;
}

// Words of a matrix list symbol that must name members of a choice (lower-case suffixes).
template <class E, size_t N>
std::vector<E> members_named(const std::string &list, const E (&all)[N], const char *symbol, const char *noun)
{
	std::vector<E> out;
	std::istringstream in(list);
	for (std::string v; in >> v;) {
		v = lower(v);
		auto it = std::find_if(std::begin(all), std::end(all), [&](E e) { return v == name_of(e); });
		if (it == std::end(all)) {
			std::string names;
			for (E e : all)
				names += std::string(names.empty() ? "" : " ") + name_of(e);
			fail("matrix: CONFIG_{}: unknown {} '{}' ({})", symbol, noun, v, names);
		}
		if (std::find(out.begin(), out.end(), *it) == out.end())
			out.push_back(*it);
	}
	return out;
}

// The GNN axes: (layout, sampler) pairs of CONFIG_GNN_MATRIX_LAYOUTS x _SAMPLERS.
std::vector<std::pair<choice::GnnLayout, choice::GnnSampler>> gnn_axes(const Settings &st)
{
	using L = choice::GnnLayout;
	using S = choice::GnnSampler;
	static const L layouts[] = {L::Identity, L::Random, L::Bfs, L::Metis, L::Rcm};
	static const S samplers[] = {S::Neighbor, S::Page, S::Fim};
	std::vector<std::pair<L, S>> out;
	if (st.model.kind != choice::Model::Graphsage)
		return out;
	auto ls = members_named(st.gnn.matrix_layouts, layouts, sym::GNN_MATRIX_LAYOUTS, "layout");
	auto ss = members_named(st.gnn.matrix_samplers, samplers, sym::GNN_MATRIX_SAMPLERS, "sampler");
	if (ls.empty() && ss.empty())
		return out;
	if (ls.empty())
		ls.push_back(st.gnn.layout);
	if (ss.empty())
		ss.push_back(st.gnn.sampler);
	for (L l : ls)
		for (S smp : ss)
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
	const Settings &st = cfg.settings();
	return st.optim.mode == choice::OptimizerMode::Multiple || st.prune.mode == choice::PruningMode::Multiple ||
	       st.matrix.seeds > 1 || !attention_variants(st).empty() || !gnn_axes(st).empty();
}

// The axes (optimizers, pruning methods, levels, variants, models, seeds) are gathered and
// crossed in one place, so that the compatibility rules between them stay side by side.
std::vector<MatrixRun> expand_matrix(const Config &cfg)
{
	const Settings &st = cfg.settings();
	std::vector<choice::Optimizer> opts;
	std::vector<choice::Pruning> prunes;
	std::vector<std::string> variants;
	std::vector<int> levels;
	if (st.optim.mode == choice::OptimizerMode::Multiple) {
		for (const auto &o : k_optimizers)
			if (st.optim.*o.enabled)
				opts.push_back(o.kind);
		if (opts.empty())
			fail("matrix: no optimizer enabled; set one of CONFIG_OPTIMIZER_ENABLE_SGD, _ADAM, _ADAMW, "
			     "_ADAMWADV, "
			     "_ADAMWSPAM, _ADAMWPRUNE, _SINKGD (or choose CONFIG_OPTIMIZER_MODE_SINGLE)");
	} else if (st.optim.mode == choice::OptimizerMode::None) {
		opts.push_back(choice::Optimizer::Adamw); // the model's default optimizer (GPT-2)
	} else {
		opts.push_back(st.optim.kind);
	}
	if (st.prune.mode == choice::PruningMode::Multiple) {
		for (const auto &p : k_prunings)
			if (st.prune.*p.enabled)
				prunes.push_back(p.method);
		for (const auto &[l, enabled] : k_levels)
			if (st.prune.*enabled)
				levels.push_back(l);
		if (prunes.empty())
			fail("matrix: no pruning method enabled; set CONFIG_PRUNING_ENABLE_NONE, _MAGNITUDE, _MOVEMENT "
			     "or _STATE "
			     "(or choose CONFIG_PRUNING_MODE_SINGLE)");
		bool wants_levels = std::any_of(prunes.begin(), prunes.end(),
						[](choice::Pruning p) { return p != choice::Pruning::None; }) ||
				    std::find(opts.begin(), opts.end(), choice::Optimizer::Adamwprune) != opts.end();
		if (wants_levels && levels.empty())
			fail("matrix: pruning runs need a sparsity level but none is enabled; set "
			     "CONFIG_SPARSITY_ENABLE_50 "
			     "(or _70, _90, _95, _99)");
	} else {
		prunes.push_back(st.prune.method);
		levels.push_back(static_cast<int>(std::lround(st.prune.target_sparsity * 100)));
	}
	std::istringstream vs(st.prune.adamwprune_variants);
	for (std::string v; vs >> v;) {
		v = lower(v);
		if (v.size() != 7 || v.rfind("bitter", 0) != 0 || v[6] < '0' || v[6] > '9')
			fail("matrix: CONFIG_ADAMWPRUNE_VARIANTS: unknown variant '{}' (bitter0 .. bitter9)", v);
		if (std::find(variants.begin(), variants.end(), v) == variants.end())
			variants.push_back(v);
	}
	if (variants.empty())
		variants.push_back(name_of(st.prune.adamwprune_variant));

	struct Combo {
		choice::Optimizer opt;
		std::string variant;
		choice::Pruning prune;
		int pct;
	};
	using P = choice::Pruning;
	std::vector<Combo> combos;
	for (choice::Optimizer o : opts) {
		if (o == choice::Optimizer::Adamwprune) {
			// AdamWPrune prunes by its own state: it pairs with "none" (its built-in pruning)
			// or "state", never with magnitude or movement; both give the same runs.
			bool any = std::find(prunes.begin(), prunes.end(), P::None) != prunes.end() ||
				   std::find(prunes.begin(), prunes.end(), P::State) != prunes.end();
			if (!any)
				continue;
			for (const auto &v : variants)
				for (int l : levels)
					combos.push_back({o, v, P::State, l});
			continue;
		}
		for (P p : prunes) {
			if (p == P::State)
				continue; // state pruning only with AdamWPrune
			if (p == P::None) {
				combos.push_back({o, "", P::None, 0});
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
	const int64_t seeds = st.matrix.seeds, seed0 = st.core.seed;
	std::vector<std::string> attn = attention_variants(st);
	const std::string base_model = name_of(st.model.kind);
	// Model axis: attention variants (GPT-2) or layout x sampler pairs (GNN), each with its sets.
	std::vector<std::pair<std::string, std::vector<std::string>>> models;
	for (const auto &[l, smp] : gnn_axes(st))
		models.push_back({fmt::format("gnn-{}-{}", name_of(l), name_of(smp)),
				  {select(l), select(smp), fmt::format("{}=", sym::GNN_MATRIX_LAYOUTS),
				   fmt::format("{}=", sym::GNN_MATRIX_SAMPLERS)}});
	if (base_model != "gpt2" && !attn.empty())
		fail("matrix: CONFIG_GPT2_ATTN_VARIANTS applies to GPT-2 only; the model is {}", base_model);
	for (const auto &a : attn) {
		std::vector<std::string> sets;
		for (const auto &[name, s] : k_attn)
			if (name == a)
				sets = s;
		sets.push_back(fmt::format("{}=", sym::GPT2_ATTN_VARIANTS));
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
				r.optimizer = name_of(c.opt);
				r.variant = c.variant;
				r.pruning = name_of(c.prune);
				r.sparsity_pct = c.prune == P::None ? 0 : c.pct;
				r.seed = seed0 + s;
				r.config_id = run_id(r.model, r.optimizer, r.variant, r.pruning, r.sparsity_pct);
				r.id = seeds > 1 ? r.config_id + "_s" + std::to_string(r.seed) : r.config_id;
				r.sets = {select(choice::OptimizerMode::Single),
					  select(c.opt),
					  select(choice::PruningMode::Single),
					  select(c.prune),
					  fmt::format("{}=1", sym::MATRIX_SEEDS),
					  fmt::format("{}={}", sym::SEED, r.seed),
					  fmt::format("{}={}", sym::RUN_NAME, r.id)};
				if (c.prune != P::None)
					r.sets.push_back(fmt::format("{}={}", sym::PRUNING_TARGET_SPARSITY,
								     r.sparsity_pct / 100.0));
				if (!c.variant.empty())
					r.sets.push_back(fmt::format("ADAMWPRUNE_VARIANT_{}=y", upper(c.variant)));
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
			if (std::sscanf(s2.c_str(), "%lf %lf %lf %c", &lo, &step, &hi, &extra) != 3 || !(step > 0) ||
			    hi < lo)
				fail("{}: range '{}' must be start:step:end with step > 0 and end >= start", where,
				     spec);
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
		// Every value must be valid for the symbol (type, range, choice membership); a
		// symbol that a choice opens (GPT2_N_LAYER under GPT2_SIZE_CUSTOM) is probed with it
		// open; whether the matrix opens it is checked when its runs are configured.
		for (const auto &v : ax.values) {
			Config probe;
			std::vector<std::string> sets;
			if (*sym->only_if && find_symbol(sym->only_if))
				sets.push_back(std::string(sym->only_if) + "=y");
			sets.push_back(name + "=" + v);
			probe.set_all(sets, where);
		}
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
	c.set_all(run.sets, "matrix run " + run.id);
	return c;
}

} // namespace knlp
