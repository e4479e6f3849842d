#include "fim/attention_fisher.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace knlp {

std::vector<int> spectrum_layers(int n_layer, bool all)
{
	std::vector<int> out;
	if (all) {
		for (int i = 0; i < n_layer; i++)
			out.push_back(i);
		return out;
	}
	for (int l : {0, n_layer / 2, n_layer - 1})
		if (std::find(out.begin(), out.end(), l) == out.end())
			out.push_back(l);
	return out;
}

std::vector<HeadSpectrum> attention_spectrum(const torch::Tensor &probs, int layer, int rows, uint64_t seed)
{
	if (probs.dim() != 4)
		fail("attention spectrum: expected probabilities [B, H, T, S], got {} dimensions", probs.dim());
	const int64_t B = probs.size(0), H = probs.size(1), T = probs.size(2), S = probs.size(3);
	const int64_t total = B * T;
	// Choose rows: a partial Fisher-Yates shuffle of 0 .. B*T-1.
	std::vector<int64_t> idx(static_cast<size_t>(total));
	std::iota(idx.begin(), idx.end(), 0);
	int64_t R = rows <= 0 ? total : std::min<int64_t>(rows, total);
	Rng rng(seed);
	for (int64_t i = 0; i < R; i++) {
		int64_t j = i + static_cast<int64_t>(rng.uniform() * double(total - i));
		j = std::min(j, total - 1);
		std::swap(idx[size_t(i)], idx[size_t(j)]);
	}
	idx.resize(static_cast<size_t>(R));
	std::sort(idx.begin(), idx.end());
	auto sel = torch::tensor(std::vector<int64_t>(idx.begin(), idx.end()), torch::kLong);
	auto p = probs.detach().to(torch::kCPU, torch::kDouble).permute({1, 0, 2, 3}).reshape({H, total, S});
	p = p.index_select(1, sel); // [H, R, S]
	std::vector<HeadSpectrum> out;
	for (int64_t h = 0; h < H; h++) {
		auto P = p[h];							   // [R, S]
		auto F = torch::diag(P.mean(0)) - torch::mm(P.t(), P) / double(R); // [S, S]
		auto ev = std::get<0>(torch::linalg_eigh(F)).flip(0).contiguous(); // descending
		const double *e = ev.data_ptr<double>();
		HeadSpectrum hs;
		hs.layer = layer;
		hs.head = static_cast<int>(h);
		hs.eigmax = e[0];
		hs.eigmin = e[S - 1];
		hs.trace = F.trace().item<double>();
		hs.cond = hs.eigmax / (std::abs(hs.eigmin) + 1e-8);
		double sum = 0, s8 = 0, s16 = 0;
		for (int64_t i = 0; i < S; i++) {
			sum += e[i];
			if (i < 8)
				s8 += e[i];
			if (i < 16)
				s16 += e[i];
		}
		hs.energy8 = sum > 0 ? s8 / sum : 0.0;
		hs.energy16 = sum > 0 ? s16 / sum : 0.0;
		for (int64_t i = 0; i < std::min<int64_t>(8, S); i++)
			hs.top.push_back(e[i]);
		out.push_back(hs);
	}
	return out;
}

nlohmann::json spectrum_json(const std::vector<HeadSpectrum> &heads)
{
	std::map<int, std::vector<const HeadSpectrum *>> by_layer;
	for (const auto &h : heads)
		by_layer[h.layer].push_back(&h);
	nlohmann::json layers = nlohmann::json::array();
	for (const auto &[layer, hs] : by_layer) {
		double n = double(hs.size());
		nlohmann::json lj = {{"layer", layer}, {"trace", 0.0},	 {"eigmax", 0.0},
				     {"cond", 0.0},    {"energy8", 0.0}, {"energy16", 0.0}};
		nlohmann::json arr = nlohmann::json::array();
		for (const auto *h : hs) {
			lj["trace"] = lj["trace"].get<double>() + h->trace / n;
			lj["eigmax"] = lj["eigmax"].get<double>() + h->eigmax / n;
			lj["cond"] = lj["cond"].get<double>() + h->cond / n;
			lj["energy8"] = lj["energy8"].get<double>() + h->energy8 / n;
			lj["energy16"] = lj["energy16"].get<double>() + h->energy16 / n;
			arr.push_back({{"head", h->head},
				       {"eigmax", h->eigmax},
				       {"eigmin", h->eigmin},
				       {"trace", h->trace},
				       {"cond", h->cond},
				       {"energy8", h->energy8},
				       {"energy16", h->energy16},
				       {"top8", h->top}});
		}
		lj["heads"] = arr;
		layers.push_back(lj);
	}
	return {{"layers", layers}};
}

} // namespace knlp
