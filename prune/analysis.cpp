#include "prune/analysis.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "matrix/stats.h"
#include "prune/pruner.h"
#include "prune/scores.h"
#include "train/checkpoint.h"

namespace knlp {

using json = nlohmann::json;

namespace {

double median(std::vector<float> x)
{
	if (x.empty())
		return NAN;
	auto mid = x.begin() + std::ptrdiff_t(x.size() / 2);
	std::nth_element(x.begin(), mid, x.end());
	double hi = *mid;
	if (x.size() % 2)
		return hi;
	return (hi + *std::max_element(x.begin(), mid)) / 2;
}

} // namespace

json analyze_adam_state(const std::string &ckpt_dir, const StateAnalysisOptions &o)
{
	const std::string opt_file = join_path(ckpt_dir, "optimizer.safetensors");
	SafetensorsFile mf(join_path(ckpt_dir, "model.safetensors")), of(opt_file);
	std::vector<float> aw, v, b7, b8;
	for (const auto &t : mf.tensors()) {
		torch::Tensor w = read_tensor(mf, t.name);
		if (!prunable(t.name, w))
			continue;
		torch::Tensor vt = read_tensor(of, "exp_avg_sq." + t.name), mt = read_tensor(of, "exp_avg." + t.name);
		if (!vt.defined() || !mt.defined())
			fail("{}: no Adam state (exp_avg, exp_avg_sq) for {}; the analysis needs an Adam-family "
			     "optimizer",
			     opt_file, t.name);
		auto alive = w.ne(0); // in pruned runs, score only the surviving weights
		auto s7 = state_score(7, w, mt, vt).masked_select(alive).to(torch::kFloat).contiguous();
		auto s8 = state_score(8, w, mt, vt).masked_select(alive).to(torch::kFloat).contiguous();
		auto a = w.abs().masked_select(alive).to(torch::kFloat).contiguous();
		auto vv = vt.masked_select(alive).to(torch::kFloat).contiguous();
		for (auto [dst, src] : {std::pair{&aw, a}, {&v, vv}, {&b7, s7}, {&b8, s8}})
			dst->insert(dst->end(), src.data_ptr<float>(), src.data_ptr<float>() + src.numel());
	}
	if (aw.empty())
		fail("{}: no unpruned prunable weights to analyse", ckpt_dir);
	const size_t n = aw.size();
	// A seeded sample for the rank correlations.
	std::vector<size_t> idx(n);
	std::iota(idx.begin(), idx.end(), size_t(0));
	if (o.sample > 0 && n > size_t(o.sample)) {
		Rng rng(o.seed * 0x9e3779b97f4a7c15ULL + 3);
		for (size_t i = 0; i < size_t(o.sample); i++)
			std::swap(idx[i], idx[i + size_t(rng.below(uint64_t(n - i)))]);
		idx.resize(size_t(o.sample));
	}
	auto pick = [&](const std::vector<float> &x) {
		std::vector<float> out(idx.size());
		for (size_t i = 0; i < idx.size(); i++)
			out[i] = x[idx[i]];
		return out;
	};
	const auto saw = pick(aw), sb7 = pick(b7), sb8 = pick(b8);
	int64_t below = 0;
	for (float x : v)
		below += x < 1e-5f;
	std::vector<float> distinct = b8;
	std::sort(distinct.begin(), distinct.end());
	const double m8 = median(b8), mw = median(aw);
	int64_t agree = 0;
	for (size_t i = 0; i < n; i++)
		agree += (b8[i] > m8) == (aw[i] > mw);
	return {{"checkpoint", ckpt_dir},
		{"weights", int64_t(n)},
		{"spearman_sample", int64_t(idx.size())},
		{"v_below_1e-5", double(below) / double(n)},
		{"v_median", median(v)},
		{"spearman_bitter8_vs_absw", spearman(sb8.data(), saw.data(), saw.size())},
		{"spearman_bitter7_vs_absw", spearman(sb7.data(), saw.data(), saw.size())},
		{"bitter8_distinct_scores", int64_t(std::unique(distinct.begin(), distinct.end()) - distinct.begin())},
		{"keep50_overlap_bitter8_vs_magnitude", double(agree) / double(n)}};
}

} // namespace knlp
