// knlp's float32 matrix product (models/gemm.h) against float64, on every transpose, edge
// and accumulation case; its thread-count independence; the linear layer against
// libtorch's in values and gradients; the switch.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "models/fused.h"
#include "models/gemm.h"

using namespace knlp;

namespace {

// C = alpha op(A) op(B) + beta C0 in float64, row-major.
std::vector<double> reference(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
			      const std::vector<float> &a, int64_t lda, const std::vector<float> &b, int64_t ldb,
			      double beta, const std::vector<float> &c0, int64_t ldc)
{
	std::vector<double> c(size_t(m * ldc));
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			double s = 0;
			for (int64_t p = 0; p < k; p++)
				s += double(ta ? a[p * lda + i] : a[i * lda + p]) *
				     double(tb ? b[j * ldb + p] : b[p * ldb + j]);
			c[i * ldc + j] = alpha * s + (beta == 0 ? 0.0 : beta * c0[i * ldc + j]);
		}
	return c;
}

std::vector<float> random_values(size_t n, uint32_t seed)
{
	std::vector<float> v(n);
	uint32_t s = seed * 2654435761u + 1;
	for (auto &x : v) {
		s = s * 1664525u + 1013904223u;
		x = float(int32_t(s >> 8) % 2001 - 1000) / 1000.0f;
	}
	return v;
}

struct Case {
	int64_t m, n, k;
};

} // namespace

// Edges of every blocking level: tiles of 12 x 32, k blocks of 256, row blocks of 192,
// column blocks of 3072; padded leading dimensions; beta 0 over NaN (must be ignored), 1
// and -0.5; alpha 0.75.
TEST(Gemm, MatchesFloat64OnEveryTransposeEdgeAndBeta)
{
	const std::vector<Case> cases = {{1, 1, 1},	 {13, 33, 7},	 {12, 32, 256}, {25, 31, 257},
					 {193, 65, 300}, {40, 3100, 20}, {5, 17, 600},	{200, 3, 513}};
	for (const auto &cs : cases)
		for (int t = 0; t < 4; t++)
			for (float beta : {0.0f, 1.0f, -0.5f}) {
				const bool ta = t & 1, tb = t & 2;
				const int64_t m = cs.m, n = cs.n, k = cs.k;
				const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
				auto a = random_values(size_t((ta ? k : m) * lda), uint32_t(m + 7 * t));
				auto b = random_values(size_t((tb ? n : k) * ldb), uint32_t(n + 11 * t));
				auto c0 = random_values(size_t(m * ldc), uint32_t(k));
				auto c = c0;
				if (beta == 0.0f)
					std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
				sgemm(ta, tb, m, n, k, 0.75f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
				auto r = reference(ta, tb, m, n, k, 0.75, a, lda, b, ldb, beta, c0, ldc);
				double worst = 0;
				for (int64_t i = 0; i < m; i++)
					for (int64_t j = 0; j < n; j++)
						worst = std::max(worst,
								 std::abs(double(c[i * ldc + j]) - r[i * ldc + j]));
				// Sums of k terms of size <= 1 in float32: a few ulps of k.
				EXPECT_LE(worst, 4e-7 * double(k) + 1e-6)
					<< "m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb
					<< " beta " << beta << " (" << gemm_engine() << ")";
				// The padding between rows is never written.
				for (int64_t i = 0; i < m; i++)
					for (int64_t j = n; j < ldc; j++)
						if (beta != 0.0f)
							EXPECT_EQ(c[i * ldc + j], c0[i * ldc + j]);
			}
}

TEST(Gemm, SameBitsForAnyThreadCount)
{
	const int64_t m = 300, n = 500, k = 700;
	auto a = random_values(size_t(m * k), 1), b = random_values(size_t(k * n), 2);
	std::vector<float> c1(size_t(m * n)), c2(size_t(m * n));
	const int saved = at::get_num_threads();
	at::set_num_threads(1);
	sgemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c1.data(), n);
	at::set_num_threads(2);
	sgemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c2.data(), n);
	at::set_num_threads(saved);
	if (!own_gemm_active())
		GTEST_SKIP() << "knlp's kernel is not in use here (" << gemm_engine() << "): the BLAS decides";
	EXPECT_EQ(c1, c2);
}

TEST(Gemm, LinearEqualsLibtorchInValuesAndGradients)
{
	torch::manual_seed(3);
	for (bool bias : {true, false})
		for (auto shape : {std::vector<int64_t>{4, 37, 200}, std::vector<int64_t>{5, 300}}) {
			auto x = torch::randn(shape, torch::requires_grad());
			auto w = torch::randn({70, shape.back()}, torch::requires_grad());
			auto b = bias ? torch::randn({70}, torch::requires_grad()) : torch::Tensor();
			auto g = torch::randn([&] {
				auto s = shape;
				s.back() = 70;
				return s;
			}());
			auto y = knlp::linear(x, w, b);
			auto gs = torch::autograd::grad(
				{y}, bias ? std::vector<torch::Tensor>{x, w, b} : std::vector<torch::Tensor>{x, w},
				{g});
			auto xd = x.detach().to(torch::kDouble).requires_grad_(),
			     wd = w.detach().to(torch::kDouble).requires_grad_();
			auto bd = bias ? b.detach().to(torch::kDouble).requires_grad_() : torch::Tensor();
			auto yd = bias ? torch::linear(xd, wd, bd) : torch::linear(xd, wd);
			auto gd = torch::autograd::grad({yd},
							bias ? std::vector<torch::Tensor>{xd, wd, bd}
							     : std::vector<torch::Tensor>{xd, wd},
							{g.to(torch::kDouble)});
			EXPECT_EQ(y.sizes(), yd.sizes());
			auto close = [](const torch::Tensor &u, const torch::Tensor &v) {
				return (u.to(torch::kDouble) - v).abs().max().item<double>() /
				       (v.abs().max().item<double>() + 1e-30);
			};
			EXPECT_LT(close(y, yd), 1e-6) << "bias " << bias;
			for (size_t i = 0; i < gs.size(); i++)
				EXPECT_LT(close(gs[i], gd[i]), 1e-6) << "gradient " << i << " bias " << bias;
		}
}

TEST(Gemm, LinearOnlyNeedsTheGradientsAskedFor)
{
	auto x = torch::randn({8, 16}), w = torch::randn({4, 16}, torch::requires_grad());
	auto y = knlp::linear(x, w).sum();
	y.backward();
	ASSERT_TRUE(w.grad().defined());
	EXPECT_TRUE(torch::allclose(w.grad(), x.sum(0).expand({4, 16}), 1e-5, 1e-5));
	EXPECT_FALSE(x.grad().defined());
}

TEST(Gemm, SwitchChoosesTheEngine)
{
	if (std::getenv("KNLP_GEMM"))
		GTEST_SKIP() << "KNLP_GEMM is set: it overrides the switch";
	set_own_gemm(false);
	EXPECT_EQ(gemm_engine().rfind("blas", 0), 0u) << gemm_engine();
	EXPECT_FALSE(own_gemm_active());
	set_own_gemm(true);
	const std::string core = blas_core();
	const bool blas_avx512 = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
	EXPECT_EQ(own_gemm_active(), kernel_isa() == 2 && !blas_avx512) << core;
	EXPECT_EQ(gemm_engine(), own_gemm_active() ? "knlp-avx512"
				 : core.empty()	   ? "blas"
						   : "blas (OpenBLAS " + core + ")");
	// This machine's BLAS, as the workplace pins it (OPENBLAS_CORETYPE=Haswell): knlp's kernel
	// is the one in use on an AVX-512 CPU.
	const char *ct = std::getenv("OPENBLAS_CORETYPE");
	if (ct && std::string(ct) == "Haswell")
		EXPECT_EQ(own_gemm_active(), kernel_isa() == 2);
}
