// Statistics for multi-seed summaries: mean and sample standard deviation, Student's t
// quantiles and Welch's confidence interval for a difference of means.
#pragma once
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

} // namespace knlp
