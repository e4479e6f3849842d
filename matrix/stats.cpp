#include "matrix/stats.h"

#include "core/error.h"

#include <cmath>
#include <algorithm>
#include <limits>
#include <iterator>
#include <numeric>

namespace knlp {

SampleStats sample_stats(const std::vector<double> &x)
{
	SampleStats s;
	s.n = static_cast<int>(x.size());
	if (x.empty())
		return s;
	double sum = 0;
	for (double v : x)
		sum += v;
	s.mean = sum / s.n;
	if (s.n > 1) {
		double ss = 0;
		for (double v : x)
			ss += (v - s.mean) * (v - s.mean);
		s.sd = std::sqrt(ss / (s.n - 1));
	}
	return s;
}

namespace {

// Continued fraction of the incomplete beta function, evaluated with the modified Lentz
// method; converges quickly for x < (a + 1) / (a + b + 2).
double beta_fraction(double a, double b, double x)
{
	const double tiny = 1e-300, eps = 1e-15;
	double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
	if (std::fabs(d) < tiny)
		d = tiny;
	d = 1.0 / d;
	double f = d;
	// One Lentz step with coefficient num; returns the factor it multiplies f by.
	auto lentz = [&](double num) {
		d = 1.0 + num * d;
		c = 1.0 + num / c;
		if (std::fabs(d) < tiny)
			d = tiny;
		if (std::fabs(c) < tiny)
			c = tiny;
		d = 1.0 / d;
		return d * c;
	};
	for (int m = 1; m <= 500; m++) {
		// even step: d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))
		f *= lentz(m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)));
		// odd step: d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
		double delta = lentz(-(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)));
		f *= delta;
		if (std::fabs(delta - 1.0) < eps)
			break;
	}
	return f;
}

} // namespace

double incomplete_beta(double a, double b, double x)
{
	if (x <= 0)
		return 0.0;
	if (x >= 1)
		return 1.0;
	double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
	if (x < (a + 1.0) / (a + b + 2.0))
		return std::exp(log_front) * beta_fraction(a, b, x) / a;
	// Symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges.
	return 1.0 - std::exp(log_front) * beta_fraction(b, a, 1.0 - x) / b;
}

double student_t_cdf(double t, double df)
{
	double tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
	return t >= 0 ? 1.0 - tail : tail;
}

double student_t_quantile(double q, double df)
{
	if (q == 0.5)
		return 0.0;
	if (q < 0.5)
		return -student_t_quantile(1.0 - q, df);
	double lo = 0, hi = 1;
	while (student_t_cdf(hi, df) < q && hi < 1e12)
		hi *= 2;
	for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
		double mid = 0.5 * (lo + hi);
		(student_t_cdf(mid, df) < q ? lo : hi) = mid;
	}
	return 0.5 * (lo + hi);
}

DiffCI welch_interval(const std::vector<double> &a, const std::vector<double> &b, double confidence)
{
	DiffCI r;
	SampleStats sa = sample_stats(a), sb = sample_stats(b);
	r.diff = sa.mean - sb.mean;
	if (sa.n < 2 || sb.n < 2)
		return r;
	double va = sa.sd * sa.sd / sa.n, vb = sb.sd * sb.sd / sb.n, se2 = va + vb;
	if (se2 == 0) {
		r.valid = true;
		r.lo = r.hi = r.diff;
		r.df = std::numeric_limits<double>::infinity();
		return r;
	}
	r.df = se2 * se2 / (va * va / (sa.n - 1) + vb * vb / (sb.n - 1));
	double t = student_t_quantile(0.5 + confidence / 2.0, r.df);
	r.lo = r.diff - t * std::sqrt(se2);
	r.hi = r.diff + t * std::sqrt(se2);
	r.valid = true;
	return r;
}

DiffCI paired_interval(const std::vector<double> &a, const std::vector<double> &b, double confidence)
{
	if (a.size() != b.size())
		fail("paired interval: {} values against {}; pairs need equal counts", a.size(), b.size());
	std::vector<double> d(a.size());
	for (size_t i = 0; i < a.size(); i++)
		d[i] = a[i] - b[i];
	DiffCI r;
	SampleStats s = sample_stats(d);
	r.diff = s.mean;
	if (s.n < 2)
		return r;
	r.df = s.n - 1;
	const double half = student_t_quantile(0.5 + confidence / 2.0, r.df) * s.sd / std::sqrt(double(s.n));
	r.lo = r.diff - half;
	r.hi = r.diff + half;
	r.valid = true;
	return r;
}

namespace {

template <typename A, typename B> double pearson_of(const A *a, const B *b, size_t n)
{
	if (n < 2)
		return std::numeric_limits<double>::quiet_NaN();
	double ma = 0, mb = 0;
	for (size_t i = 0; i < n; i++) {
		ma += double(a[i]);
		mb += double(b[i]);
	}
	ma /= double(n);
	mb /= double(n);
	double sab = 0, saa = 0, sbb = 0;
	for (size_t i = 0; i < n; i++) {
		double x = double(a[i]) - ma, y = double(b[i]) - mb;
		sab += x * y;
		saa += x * x;
		sbb += y * y;
	}
	if (saa <= 0 || sbb <= 0)
		return std::numeric_limits<double>::quiet_NaN();
	return sab / std::sqrt(saa * sbb);
}

std::vector<size_t> top_indices(const float *x, size_t n, size_t k)
{
	std::vector<size_t> idx(n);
	std::iota(idx.begin(), idx.end(), size_t(0));
	auto before = [x](size_t i, size_t j) { return x[i] > x[j] || (x[i] == x[j] && i < j); };
	std::nth_element(idx.begin(), idx.begin() + std::ptrdiff_t(k - 1), idx.end(), before);
	idx.resize(k);
	std::sort(idx.begin(), idx.end());
	return idx;
}

} // namespace

double pearson(const float *a, const float *b, size_t n)
{
	return pearson_of(a, b, n);
}

std::vector<double> fractional_ranks(const float *x, size_t n)
{
	std::vector<size_t> idx(n);
	std::iota(idx.begin(), idx.end(), size_t(0));
	std::stable_sort(idx.begin(), idx.end(), [x](size_t i, size_t j) { return x[i] < x[j]; });
	std::vector<double> r(n);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && x[idx[j]] == x[idx[i]])
			j++;
		double avg = 0.5 * double(i + 1 + j); // ranks i+1 .. j
		for (size_t t = i; t < j; t++)
			r[idx[t]] = avg;
		i = j;
	}
	return r;
}

double spearman(const float *a, const float *b, size_t n)
{
	auto ra = fractional_ranks(a, n), rb = fractional_ranks(b, n);
	return pearson_of(ra.data(), rb.data(), n);
}

double topk_overlap(const float *a, const float *b, size_t n, double frac)
{
	if (n == 0)
		return std::numeric_limits<double>::quiet_NaN();
	size_t k = std::max<size_t>(1, std::min(n, size_t(std::llround(frac * double(n)))));
	auto ta = top_indices(a, n, k), tb = top_indices(b, n, k);
	std::vector<size_t> both;
	std::set_intersection(ta.begin(), ta.end(), tb.begin(), tb.end(), std::back_inserter(both));
	return double(both.size()) / double(k);
}

} // namespace knlp
