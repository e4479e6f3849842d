// knlp's float32 matrix product (models/gemm.h) against float64, on every transpose, edge
// and accumulation case; its thread-count independence; the linear layer against
// libtorch's in values and gradients; the switch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "models/fused.h"
#include "models/gemm.h"
#include "core/torch_compat.h"

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

// ---------------------------------------------------------------- the bf16 product

namespace {

uint16_t to_bf16_bits(float f) // round to nearest even (finite values)
{
	uint32_t u;
	std::memcpy(&u, &f, 4);
	u += 0x7fffu + ((u >> 16) & 1u);
	return uint16_t(u >> 16);
}

double from_bf16_bits(uint16_t h)
{
	const uint32_t u = uint32_t(h) << 16;
	float f;
	std::memcpy(&f, &u, 4);
	return f;
}

} // namespace

// Every transpose, edge and source/result type against float64 sums of the bf16-rounded
// operands: m, n off the 8 x 48 tiles, odd k (a pair half padding), k past a float32 C's
// block of 512 (partial sums added) and past a bf16 C's block of 4096 (float32 sums, one
// rounding), padded leading dimensions, the bias; one and two threads.
TEST(GemmBf16, MatchesFloat64OnEveryTransposeEdgeAndType)
{
	if (!bf16_gemm_available())
		GTEST_SKIP() << "no AVX512-BF16 on this CPU";
	const std::vector<Case> cases = {{1, 1, 1},	 {13, 49, 7},	  {8, 48, 2},
					 {25, 95, 513},	 {200, 3, 1025},  {17, 130, 4099},
					 {40, 700, 100}, {300, 100, 131}, {3, 200, 33}};
	const int saved = at::get_num_threads();
	for (int threads : {1, 2})
		for (const auto &cs : cases)
			for (int t = 0; t < 16; t++) {
				at::set_num_threads(threads);
				const bool ta = t & 1, tb = t & 2, a16 = t & 4, b16 = t & 8;
				for (bool c16 : {false, true})
					for (bool with_bias : {false, true}) {
						const int64_t m = cs.m, n = cs.n, k = cs.k;
						const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5,
							      ldc = n + 2;
						auto af =
							random_values(size_t((ta ? k : m) * lda), uint32_t(m + 7 * t));
						auto bf =
							random_values(size_t((tb ? n : k) * ldb), uint32_t(n + 11 * t));
						auto bias = random_values(size_t(n), uint32_t(k + 5));
						std::vector<uint16_t> ah(af.size()), bh(bf.size());
						for (size_t i = 0; i < af.size(); i++)
							ah[i] = to_bf16_bits(af[i]);
						for (size_t i = 0; i < bf.size(); i++)
							bh[i] = to_bf16_bits(bf[i]);
						std::vector<float> cf(size_t(m * ldc),
								      std::numeric_limits<float>::quiet_NaN());
						std::vector<uint16_t> ch(size_t(m * ldc), 0x7fc0);
						gemm_bf16(ta, tb, m, n, k, a16 ? (const void *)ah.data() : af.data(),
							  a16, lda, b16 ? (const void *)bh.data() : bf.data(), b16, ldb,
							  c16 ? (void *)ch.data() : cf.data(), c16, ldc,
							  with_bias ? bias.data() : nullptr);
						double worst = 0, worst_rel = 0;
						for (int64_t i = 0; i < m; i++)
							for (int64_t j = 0; j < n; j++) {
								double r = with_bias ? bias[j] : 0.0;
								for (int64_t p = 0; p < k; p++)
									r += from_bf16_bits(ah[ta ? p * lda + i
												  : i * lda + p]) *
									     from_bf16_bits(bh[tb ? j * ldb + p
												  : p * ldb + j]);
								const double got = c16 ? from_bf16_bits(ch[i * ldc + j])
										       : double(cf[i * ldc + j]);
								const double e = std::abs(got - r);
								if (c16) // one rounding to 8 bits after float32 sums
									worst_rel = std::max(
										worst_rel,
										(e - (4e-7 * double(k) + 1e-6)) /
											(std::abs(r) + 1e-30));
								else
									worst = std::max(worst, e);
							}
						const std::string what =
							"m " + std::to_string(m) + " n " + std::to_string(n) + " k " +
							std::to_string(k) + " t " + std::to_string(t) + " c16 " +
							std::to_string(c16) + " threads " + std::to_string(threads);
						if (c16)
							EXPECT_LE(worst_rel, 1.0 / 256) << what;
						else // float32 sums of k products of size <= 1
							EXPECT_LE(worst, 4e-7 * double(k) + 1e-6) << what;
						// The padding between rows of C is never written.
						for (int64_t i = 0; i < m; i++)
							for (int64_t j = n; j < ldc; j++)
								if (c16)
									EXPECT_EQ(ch[i * ldc + j], 0x7fc0) << what;
								else
									EXPECT_TRUE(std::isnan(cf[i * ldc + j]))
										<< what;
					}
			}
	at::set_num_threads(saved);
}

// accumulate adds the product to a float32 C (one k block and several; split and not).
TEST(GemmBf16, AccumulatesIntoFloat32C)
{
	if (!bf16_gemm_available())
		GTEST_SKIP() << "no AVX512-BF16 on this CPU";
	const int saved = at::get_num_threads();
	for (int threads : {1, 2})
		for (const Case &cs : std::vector<Case>{{9, 50, 30}, {300, 100, 1100}, {40, 700, 100}})
			for (int t = 0; t < 4; t++) {
				at::set_num_threads(threads);
				const bool ta = t & 1, tb = t & 2;
				const int64_t m = cs.m, n = cs.n, k = cs.k;
				auto a = random_values(size_t(m * k), 3 + t), b = random_values(size_t(k * n), 4 + t);
				auto c0 = random_values(size_t(m * n), 5), c = c0;
				gemm_bf16(ta, tb, m, n, k, a.data(), false, ta ? m : k, b.data(), false, tb ? k : n,
					  c.data(), false, n, nullptr, true);
				double worst = 0;
				for (int64_t i = 0; i < m; i++)
					for (int64_t j = 0; j < n; j++) {
						double r = c0[i * n + j];
						for (int64_t p = 0; p < k; p++)
							r += from_bf16_bits(
								     to_bf16_bits(ta ? a[p * m + i] : a[i * k + p])) *
							     from_bf16_bits(
								     to_bf16_bits(tb ? b[j * k + p] : b[p * n + j]));
						worst = std::max(worst, std::abs(double(c[i * n + j]) - r));
					}
				EXPECT_LE(worst, 4e-7 * double(k) + 1e-6) << "m " << m << " n " << n << " k " << k
									  << " t " << t << " threads " << threads;
			}
	at::set_num_threads(saved);
}

// Results do not depend on the thread count: each element is summed in one order.
TEST(GemmBf16, SameBitsForAnyThreadCount)
{
	if (!bf16_gemm_available())
		GTEST_SKIP() << "no AVX512-BF16 on this CPU";
	const int saved = at::get_num_threads();
	for (bool ta : {false, true}) {
		const int64_t m = ta ? 200 : 700, n = ta ? 900 : 300, k = 1300;
		auto a = random_values(size_t(m * k), 1), b = random_values(size_t(k * n), 2);
		std::vector<float> c1(size_t(m * n)), c2(size_t(m * n));
		at::set_num_threads(1);
		gemm_bf16(ta, false, m, n, k, a.data(), false, ta ? m : k, b.data(), false, n, c1.data(), false, n);
		at::set_num_threads(2);
		gemm_bf16(ta, false, m, n, k, a.data(), false, ta ? m : k, b.data(), false, n, c2.data(), false, n);
		EXPECT_EQ(c1, c2) << "ta " << ta;
	}
	at::set_num_threads(saved);
}

// Long k with a big whole operand: its k blocks are packed and multiplied in groups that
// fit the cache (the rows path with B whole, the columns path with A whole), which must
// sum like one pass: to float64 of the rounded operands and the same bits on 1 and 2
// threads, accumulating or not.
TEST(GemmBf16, GroupsOfKBlocksSumLikeOnePass)
{
	if (!bf16_gemm_available())
		GTEST_SKIP() << "no AVX512-BF16 on this CPU";
	const int saved = at::get_num_threads();
	for (const Case &cs : std::vector<Case>{{496, 480, 5000}, {480, 600, 5000}})
		for (bool acc : {false, true}) {
			const int64_t m = cs.m, n = cs.n, k = cs.k;
			auto a = random_values(size_t(m * k), 21), b = random_values(size_t(n * k), 22);
			auto c0 = random_values(size_t(m * n), 23);
			std::vector<float> c1 = c0, c2 = c0;
			at::set_num_threads(1);
			gemm_bf16(false, true, m, n, k, a.data(), false, k, b.data(), false, k, c1.data(), false, n,
				  nullptr, acc);
			at::set_num_threads(2);
			gemm_bf16(false, true, m, n, k, a.data(), false, k, b.data(), false, k, c2.data(), false, n,
				  nullptr, acc);
			EXPECT_EQ(c1, c2) << "m " << m << " n " << n << " acc " << acc;
			auto round = [](const std::vector<float> &v, int64_t r, int64_t c) {
				return torch::from_blob(const_cast<float *>(v.data()), {r, c})
					.to(torch::kBFloat16)
					.to(torch::kDouble);
			};
			auto want = torch::mm(round(a, m, k), round(b, n, k).t());
			if (acc)
				want += torch::from_blob(c0.data(), {m, n}).to(torch::kDouble);
			auto got = torch::from_blob(c2.data(), {m, n}).to(torch::kDouble);
			EXPECT_LE((got - want).abs().max().item<double>(), 4e-7 * double(k))
				<< "m " << m << " n " << n << " acc " << acc;
		}
	at::set_num_threads(saved);
}

// Under CPU bf16 autocast linear() runs its products through gemm_bf16: the values and the
// three gradients match libtorch's autocast linear to bf16's precision, come in the
// parameters' own dtypes (float32 master weights get a float32 gradient), and a float32 x
// gets a float32 gradient.
TEST(GemmBf16, LinearUnderAutocastMatchesLibtorch)
{
	if (!bf16_gemm_available())
		GTEST_SKIP() << "no AVX512-BF16 on this CPU";
	if (std::getenv("KNLP_BF16_GEMM"))
		GTEST_SKIP() << "KNLP_BF16_GEMM is set: it overrides the switch";
	torch::manual_seed(5);
	for (auto xt : {torch::kFloat, torch::kBFloat16})
		for (bool bias : {true, false}) {
			auto x = torch::randn({3, 37, 200}).to(xt).requires_grad_();
			auto w = torch::randn({70, 200}, torch::requires_grad());
			auto b = bias ? torch::randn({70}, torch::requires_grad()) : torch::Tensor();
			auto g = torch::randn({3, 37, 70}).to(torch::kBFloat16);
			std::vector<torch::Tensor> ins =
				bias ? std::vector<torch::Tensor>{x, w, b} : std::vector<torch::Tensor>{x, w};
			torch::Tensor y, yr;
			std::vector<torch::Tensor> gs, gr;
			for (bool own : {true, false}) {
				// knlp's product through linear() where it is the default (not beside
				// AMX-BF16), else called directly; libtorch's with the switch off.
				set_own_bf16_gemm(own);
				compat::AutocastGuard ag(torch::kCPU, true, torch::kBFloat16);
				auto out = own && !own_bf16_gemm_active() ? knlp::linear_bf16(x, w, b)
									  : knlp::linear(x, w, b);
				(own ? y : yr) = out;
				(own ? gs : gr) = torch::autograd::grad({out}, ins, {g});
			}
			set_own_bf16_gemm(true);
			EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
			EXPECT_EQ(gs[0].scalar_type(), xt);
			EXPECT_EQ(gs[1].scalar_type(), torch::kFloat);
			// The exact product of the bf16-rounded operands, float64.
			auto xd = x.detach().to(torch::kBFloat16).to(torch::kDouble),
			     wd = w.detach().to(torch::kBFloat16).to(torch::kDouble);
			auto exact = torch::matmul(xd, wd.t());
			if (bias)
				exact = exact + b.detach().to(torch::kDouble);
			auto rel = [](const torch::Tensor &u, const torch::Tensor &v) {
				return (u.to(torch::kDouble) - v.to(torch::kDouble)).abs().max().item<double>() /
				       (v.to(torch::kDouble).abs().max().item<double>() + 1e-30);
			};
			EXPECT_LT(rel(y, exact), 1.0 / 128) << "x " << xt << " bias " << bias;
			EXPECT_LT(rel(y, yr), 1.0 / 64);
			for (size_t i = 0; i < gs.size(); i++)
				EXPECT_LT(rel(gs[i], gr[i]), 1.0 / 64) << "gradient " << i;
			// The weight's gradient: the float64 product of the bf16 operands, closer than
			// libtorch's (rounded to bf16 before its cast to float32).
			auto gwd = torch::matmul(g.to(torch::kDouble).reshape({-1, 70}).t(), xd.reshape({-1, 200}));
			EXPECT_LT(rel(gs[1], gwd), 1e-5);
		}
}

TEST(GemmBf16, SwitchAndEnvironment)
{
	if (std::getenv("KNLP_BF16_GEMM"))
		GTEST_SKIP() << "KNLP_BF16_GEMM is set: it overrides the switch";
	set_own_bf16_gemm(false);
	EXPECT_FALSE(own_bf16_gemm_active());
	set_own_bf16_gemm(true);
	// On by default where it is available, except beside AMX-BF16 (oneDNN's tiles).
	EXPECT_EQ(own_bf16_gemm_active(), bf16_gemm_available() && !cpu_has_amx_bf16());
	// The CPU's flag, as /proc/cpuinfo names it.
	std::ifstream in("/proc/cpuinfo");
	std::string line;
	bool flag = false;
	while (std::getline(in, line))
		if (line.rfind("flags", 0) == 0) {
			flag = (line + " ").find(" avx512_bf16 ") != std::string::npos;
			break;
		}
	if (kernel_isa() == 2)
		EXPECT_EQ(bf16_gemm_available(), flag);
	std::ifstream in2("/proc/cpuinfo");
	bool amx = false;
	while (std::getline(in2, line))
		if (line.rfind("flags", 0) == 0) {
			amx = (line + " ").find(" amx_bf16 ") != std::string::npos;
			break;
		}
	EXPECT_EQ(cpu_has_amx_bf16(), amx);
}
