#include "gnn/quality.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace knlp {

namespace {

std::vector<size_t> by_score_desc(const std::vector<float> &s)
{
	std::vector<size_t> idx(s.size());
	std::iota(idx.begin(), idx.end(), 0);
	std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return s[a] > s[b]; });
	return idx;
}

void check(const std::vector<float> &s, const std::vector<int64_t> &y)
{
	if (s.size() != y.size() || s.empty())
		fail("quality: {} scores for {} labels", s.size(), y.size());
	for (auto v : y)
		if (v != 0 && v != 1)
			fail("quality: label {} is not 0 or 1", v);
}

} // namespace

double best_f1_threshold(const std::vector<float> &s, const std::vector<int64_t> &y, double *f1_out)
{
	check(s, y);
	auto idx = by_score_desc(s);
	const double P = double(std::count(y.begin(), y.end(), 1));
	double tp = 0, best = -1, thr = double(s[idx[0]]);
	for (size_t i = 0; i < idx.size(); i++) {
		tp += double(y[idx[i]]);
		if (i + 1 < idx.size() && s[idx[i + 1]] == s[idx[i]])
			continue; // flag every node of a tied score together
		double pred = double(i + 1);
		double f1 = P > 0 ? 2 * tp / (pred + P) : 0.0;
		if (f1 > best)
			best = f1, thr = double(s[idx[i]]);
	}
	if (f1_out)
		*f1_out = std::max(best, 0.0);
	return thr;
}

Quality score_quality(const std::vector<float> &s, const std::vector<int64_t> &y, double threshold)
{
	check(s, y);
	Quality q;
	q.nodes = int64_t(s.size());
	q.positives = std::count(y.begin(), y.end(), 1);
	q.threshold = threshold;
	const double P = double(q.positives), N = double(q.nodes) - P;
	double tp = 0, fp = 0;
	for (size_t i = 0; i < s.size(); i++)
		if (double(s[i]) >= threshold)
			(y[i] ? tp : fp) += 1;
	q.precision = tp + fp > 0 ? tp / (tp + fp) : 0.0;
	q.recall = P > 0 ? tp / P : 0.0;
	q.f1 = q.precision + q.recall > 0 ? 2 * q.precision * q.recall / (q.precision + q.recall) : 0.0;
	auto idx = by_score_desc(s);
	// PR-AUC: trapezoids from (0, 1) through each distinct-score point.
	double prev_r = 0, prev_p = 1, area = 0;
	tp = fp = 0;
	for (size_t i = 0; i < idx.size(); i++) {
		(y[idx[i]] ? tp : fp) += 1;
		if (i + 1 < idx.size() && s[idx[i + 1]] == s[idx[i]])
			continue;
		double r = P > 0 ? tp / P : 0.0, p = tp / (tp + fp);
		area += (r - prev_r) * (p + prev_p) / 2;
		prev_r = r, prev_p = p;
	}
	q.pr_auc = P > 0 ? area : 0.0;
	// ROC-AUC: mean rank of positives (ties averaged), Mann-Whitney.
	if (P > 0 && N > 0) {
		std::vector<size_t> asc(idx.rbegin(), idx.rend());
		double rank_sum = 0;
		for (size_t i = 0; i < asc.size();) {
			size_t j = i;
			while (j + 1 < asc.size() && s[asc[j + 1]] == s[asc[i]])
				j++;
			double avg = (double(i) + double(j)) / 2 + 1;
			for (size_t k = i; k <= j; k++)
				if (y[asc[k]])
					rank_sum += avg;
			i = j + 1;
		}
		q.roc_auc = (rank_sum - P * (P + 1) / 2) / (P * N);
	}
	// Sorted by score with ties in node order (stable sort of a descending order).
	auto top = [&](double frac) {
		size_t k = std::max<size_t>(1, size_t(std::ceil(frac * double(s.size()))));
		double hits = 0;
		for (size_t i = 0; i < k; i++)
			hits += double(y[idx[i]]);
		return std::make_pair(hits, double(k));
	};
	auto [h05, k05] = top(0.005);
	q.precision_at_05pct = h05 / k05;
	auto [h1, k1] = top(0.01);
	(void)k1;
	q.recall_at_1pct = P > 0 ? h1 / P : 0.0;
	return q;
}

} // namespace knlp
