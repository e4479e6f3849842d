// Statistics for multi-seed summaries: mean and sample standard deviation, Student's t
// quantiles and Welch's confidence interval for a difference of means.
#pragma once
#include <cstddef>
#include <vector>

namespace knlp {

struct SampleStats {
	int n = 0;
	double mean = 0, sd = 0; // sd: sample standard deviation (n - 1), 0 when n < 2
};
SampleStats sample_stats(const std::vector<double> &x);

// Regularized incomplete beta function I_x(a, b).
double incomplete_beta(double a, double b, double x);
// P(T <= t) for Student's t with df degrees of freedom (df > 0, not necessarily integer).
double student_t_cdf(double t, double df);
// The q-quantile of Student's t (0 < q < 1).
double student_t_quantile(double q, double df);

struct DiffCI {
	bool valid = false; // needs at least two values on each side
	double diff = 0, lo = 0, hi = 0, df = 0;
};
// Welch's interval for mean(a) - mean(b) at the given confidence (e.g. 0.95).
DiffCI welch_interval(const std::vector<double> &a, const std::vector<double> &b, double confidence);
// The t interval of the mean of a[i] - b[i] (paired samples, e.g. the same seeds): the
// per-pair differences cancel what the pairs share. Errors when the lengths differ.
DiffCI paired_interval(const std::vector<double> &a, const std::vector<double> &b, double confidence);

// Agreement of two equally long series (the Fisher tools compare Adam's v with a Fisher
// diagonal element by element). Sums run in double. NaN when either side is constant or
// n < 2.
double pearson(const float *a, const float *b, size_t n);
// Ranks 1..n with ties given their average rank (the fractional ranking Spearman uses).
std::vector<double> fractional_ranks(const float *x, size_t n);
// Pearson correlation of the fractional ranks.
double spearman(const float *a, const float *b, size_t n);
// |top-k of a  intersect  top-k of b| / k for k = max(1, round(frac n)); ties at the cut are
// broken by position (earlier first). A random pairing expects frac.
double topk_overlap(const float *a, const float *b, size_t n, double frac);

} // namespace knlp
