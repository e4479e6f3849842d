#include "core/parallel.h"
#include "models/fused.h"
#include "models/gemm.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace knlp {

// 2: AVX-512 (F, BW, DQ, VL), 1: AVX2 with FMA, 0: baseline x86-64 (or another
// architecture). ATEN_CPU_CAPABILITY (default, avx2, avx512), the variable that pins
// ATen's own kernels, caps it too: the vector width decides the order of the kernels'
// sums, so pinning both gives the same bits on any x86-64 host (tests/test_golden.sh).
int kernel_isa()
{
#if defined(__x86_64__)
	static const int isa = [] {
		const int hw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
					       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
				       ? 2
			       : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
												 : 0;
		const char *cap = std::getenv("ATEN_CPU_CAPABILITY");
		const std::string c = cap ? cap : "";
		const int limit = c == "default" ? 0 : c == "avx2" ? 1 : 2;
		return std::min(hw, limit);
	}();
	return isa;
#else
	return 0;
#endif
}

namespace {

// Query blocks [r0, r0 + rows) of a T-token sequence; block i attends to keys [0, r0 + rows).
struct Blocks {
	std::vector<int64_t> r0, rows, offset; // offset: where block i's probabilities start
	int64_t total = 0;		       // probabilities per (batch x head)
	Blocks(int64_t T, int64_t block)
	{
		for (int64_t s = 0; s < T; s += block) {
			int64_t n = std::min(block, T - s);
			r0.push_back(s), rows.push_back(n), offset.push_back(total);
			total += n * (s + n);
		}
	}
};

// Row-major C = alpha op(A) op(B) + beta C (models/gemm.h).
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
	     const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
	sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// fp32: one (batch x head) at a time per thread, single-threaded products on blocks that
// stay in cache, so the softmax and its backward run on data the product just wrote.
// Inside at::parallel_for BLAS runs on the calling thread only.
void forward_f32(const float *q, const float *k, const float *v, float *probs, float *out, int64_t N, int64_t T,
		 int64_t D, const Blocks &b, float scale)
{
	const float ninf = -std::numeric_limits<float>::infinity();
	knlp::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
		for (int64_t n = n0; n < n1; n++) {
			const float *qn = q + n * T * D, *kn = k + n * T * D, *vn = v + n * T * D;
			float *pn = probs + n * b.total, *on = out + n * T * D;
			for (size_t i = 0; i < b.r0.size(); i++) {
				const int64_t r0 = b.r0[i], rows = b.rows[i], S = r0 + rows;
				float *p = pn + b.offset[i];
				gemm_rm(false, true, rows, S, D, scale, qn + r0 * D, D, kn, D, 0.0f, p, S);
				for (int64_t r = 0; r < rows; r++)
					std::fill(p + r * S + r0 + r + 1, p + (r + 1) * S, ninf);
				auto pt = torch::from_blob(p, {rows, S});
				at::_softmax_out(pt, pt, -1, false);
				gemm_rm(false, false, rows, D, S, 1.0f, p, S, vn, D, 0.0f, on + r0 * D, D);
			}
		}
	});
}

void backward_f32(const float *q, const float *k, const float *v, const float *probs, const float *go, float *gq,
		  float *gk, float *gv, int64_t N, int64_t T, int64_t D, const Blocks &b, float scale)
{
	knlp::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
		std::vector<float> gs(size_t(b.rows.empty() ? 0 : b.rows[0]) * size_t(T));
		for (int64_t n = n0; n < n1; n++) {
			const int64_t o = n * T * D;
			const float *pn = probs + n * b.total;
			bool first = true;
			// The last block reaches every key: it initialises gk and gv.
			for (size_t j = b.r0.size(); j-- > 0;) {
				const int64_t r0 = b.r0[j], rows = b.rows[j], S = r0 + rows;
				const float *p = pn + b.offset[j], *g = go + o + r0 * D;
				const float beta = first ? 0.0f : 1.0f;
				first = false;
				gemm_rm(true, false, S, D, rows, 1.0f, p, S, g, D, beta, gv + o, D);
				float *t = gs.data();
				gemm_rm(false, true, rows, S, D, 1.0f, g, D, v + o, D, 0.0f, t, S);
				for (int64_t r = 0; r < rows; r++) {
					const float *pr = p + r * S;
					float *tr = t + r * S;
					float dot = 0;
					for (int64_t c = 0; c < S; c++)
						dot += pr[c] * tr[c];
					for (int64_t c = 0; c < S; c++)
						tr[c] = pr[c] * (tr[c] - dot);
				}
				gemm_rm(false, false, rows, D, S, scale, t, S, k + o, D, 0.0f, gq + o + r0 * D, D);
				gemm_rm(true, false, S, D, rows, scale, t, S, q + o + r0 * D, D, beta, gk + o, D);
			}
		}
	});
}

void bf16_to_f32(const uint16_t *in, float *out, int64_t n);
void f32_to_bf16(const float *in, uint16_t *out, int64_t n);

// bf16 (under autocast, with knlp's bf16 product): as the fp32 path, the products through
// gemm_bf16 with float32 sums. Scores, the softmax and its backward are float32; the
// probabilities are kept in bf16 (the operand of the products after them, as libtorch's
// path keeps them); gk and gv are summed over blocks in float32 and rounded once.
void forward_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *probs, uint16_t *out, int64_t N,
		  int64_t T, int64_t D, const Blocks &b, float scale)
{
	const float ninf = -std::numeric_limits<float>::infinity();
	knlp::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
		std::vector<float> sc(size_t(b.rows.empty() ? 0 : b.rows[0]) * size_t(T));
		for (int64_t n = n0; n < n1; n++) {
			const uint16_t *qn = q + n * T * D, *kn = k + n * T * D, *vn = v + n * T * D;
			uint16_t *pn = probs + n * b.total, *on = out + n * T * D;
			for (size_t i = 0; i < b.r0.size(); i++) {
				const int64_t r0 = b.r0[i], rows = b.rows[i], S = r0 + rows;
				float *s = sc.data();
				gemm_bf16(false, true, rows, S, D, qn + r0 * D, true, D, kn, true, D, s, false, S);
				for (int64_t r = 0; r < rows; r++) {
					float *sr = s + r * S;
					const int64_t valid = r0 + r + 1;
					for (int64_t c = 0; c < valid; c++)
						sr[c] *= scale;
					std::fill(sr + valid, sr + S, ninf);
				}
				auto st = torch::from_blob(s, {rows, S});
				at::_softmax_out(st, st, -1, false);
				uint16_t *p = pn + b.offset[i];
				f32_to_bf16(s, p, rows * S);
				gemm_bf16(false, false, rows, D, S, p, true, S, vn, true, D, on + r0 * D, true, D);
			}
		}
	});
}

void backward_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *probs, const uint16_t *go,
		   uint16_t *gq, uint16_t *gk, uint16_t *gv, int64_t N, int64_t T, int64_t D, const Blocks &b,
		   float scale)
{
	knlp::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
		const size_t R = size_t(b.rows.empty() ? 0 : b.rows[0]);
		std::vector<float> t(R * size_t(T)), pf(R * size_t(T)), gka(size_t(T * D)), gva(size_t(T * D));
		for (int64_t n = n0; n < n1; n++) {
			const int64_t o = n * T * D;
			const uint16_t *pn = probs + n * b.total;
			bool first = true;
			// The last block reaches every key: it initialises the float32 sums of gk and gv,
			// the blocks before it add to their first rows.
			for (size_t j = b.r0.size(); j-- > 0;) {
				const int64_t r0 = b.r0[j], rows = b.rows[j], S = r0 + rows;
				const uint16_t *p = pn + b.offset[j], *g = go + o + r0 * D;
				gemm_bf16(true, false, S, D, rows, p, true, S, g, true, D, gva.data(), false, D,
					  nullptr, !first);
				gemm_bf16(false, true, rows, S, D, g, true, D, v + o, true, D, t.data(), false, S);
				bf16_to_f32(p, pf.data(), rows * S);
				for (int64_t r = 0; r < rows; r++) {
					const float *pr = pf.data() + r * S;
					float *tr = t.data() + r * S;
					float dot = 0;
					for (int64_t c = 0; c < S; c++)
						dot += pr[c] * tr[c];
					for (int64_t c = 0; c < S; c++)
						tr[c] = scale * (pr[c] * (tr[c] - dot));
				}
				gemm_bf16(false, false, rows, D, S, t.data(), false, S, k + o, true, D, gq + o + r0 * D,
					  true, D);
				gemm_bf16(true, false, S, D, rows, t.data(), false, S, q + o + r0 * D, true, D,
					  gka.data(), false, D, nullptr, !first);
				first = false;
			}
			f32_to_bf16(gka.data(), gk + o, T * D);
			f32_to_bf16(gva.data(), gv + o, T * D);
		}
	});
}

// The inputs keep the dtype they arrive in (bf16 under autocast): the products run in it,
// the softmax accumulates in fp32 inside libtorch's kernel either way.
struct BlockedCausalAttention : public torch::autograd::Function<BlockedCausalAttention> {
	static torch::Tensor forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &q_in,
				     const torch::Tensor &k_in, const torch::Tensor &v_in, const torch::Tensor &bias,
				     int64_t block)
	{
		c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
		auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
		const int64_t N = q.size(0), T = q.size(1), D = q.size(2);
		const double scale = 1.0 / std::sqrt(double(D));
		Blocks b(T, block);
		auto probs = torch::empty({N, b.total}, q.options());
		auto out = torch::empty_like(q);
		if (q.scalar_type() == torch::kFloat && sgemm_direct()) {
			forward_f32(q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(),
				    probs.data_ptr<float>(), out.data_ptr<float>(), N, T, D, b, float(scale));
			ctx->save_for_backward({q, k, v, probs});
			ctx->saved_data["block"] = block;
			return out;
		}
		if (q.scalar_type() == torch::kBFloat16 && own_bf16_gemm_active()) {
			auto bits = [](const torch::Tensor &t) {
				return reinterpret_cast<uint16_t *>(t.data_ptr<at::BFloat16>());
			};
			forward_bf16(bits(q), bits(k), bits(v), bits(probs), bits(out), N, T, D, b, float(scale));
			ctx->save_for_backward({q, k, v, probs});
			ctx->saved_data["block"] = block;
			return out;
		}
		auto bias_t = bias.to(q.scalar_type());
		for (size_t i = 0; i < b.r0.size(); i++) {
			int64_t r0 = b.r0[i], n = b.rows[i], S = r0 + n;
			// Each block's probabilities contiguous (block after block): libtorch's bf16
			// kernels (oneDNN) give wrong values for strided operands.
			auto p = probs.view({-1}).narrow(0, N * b.offset[i], N * n * S).view({N, n, S});
			auto s = at::baddbmm(bias_t.narrow(0, r0, n).narrow(1, 0, S), q.narrow(1, r0, n),
					     k.narrow(1, 0, S).transpose(1, 2), 1.0, scale);
			at::_softmax_out(p, s, -1, false);
			// Products into fresh tensors: libtorch's bf16 bmm (oneDNN) writes wrong values into
			// strided outputs such as a block of rows of `out`.
			out.narrow(1, r0, n).copy_(at::bmm(p, v.narrow(1, 0, S)));
		}
		ctx->save_for_backward({q, k, v, probs});
		ctx->saved_data["block"] = block;
		return out;
	}

	static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
						     torch::autograd::tensor_list grad_out)
	{
		c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
		auto saved = ctx->get_saved_variables();
		auto &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
		const int64_t block = ctx->saved_data["block"].toInt();
		const int64_t N = q.size(0), T = q.size(1), D = q.size(2);
		const double scale = 1.0 / std::sqrt(double(D));
		auto go = grad_out[0].to(q.scalar_type()).contiguous();
		Blocks b(T, block);
		if (q.scalar_type() == torch::kFloat && sgemm_direct()) {
			auto gq = torch::empty_like(q), gk = torch::empty_like(k), gv = torch::empty_like(v);
			backward_f32(q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(),
				     probs.data_ptr<float>(), go.data_ptr<float>(), gq.data_ptr<float>(),
				     gk.data_ptr<float>(), gv.data_ptr<float>(), N, T, D, b, float(scale));
			return {gq, gk, gv, torch::Tensor(), torch::Tensor()};
		}
		if (q.scalar_type() == torch::kBFloat16 && own_bf16_gemm_active()) {
			auto gq = torch::empty_like(q), gk = torch::empty_like(k), gv = torch::empty_like(v);
			auto bits = [](const torch::Tensor &t) {
				return reinterpret_cast<uint16_t *>(t.data_ptr<at::BFloat16>());
			};
			backward_bf16(bits(q), bits(k), bits(v), bits(probs), bits(go), bits(gq), bits(gk), bits(gv), N,
				      T, D, b, float(scale));
			return {gq, gk, gv, torch::Tensor(), torch::Tensor()};
		}
		auto gq = torch::empty_like(q), gk = torch::zeros_like(k), gv = torch::zeros_like(v);
		// Later blocks reach further; walking them last-first lets the widest products
		// initialise most of gk and gv.
		for (size_t j = b.r0.size(); j-- > 0;) {
			int64_t r0 = b.r0[j], n = b.rows[j], S = r0 + n;
			auto p = probs.view({-1}).narrow(0, N * b.offset[j], N * n * S).view({N, n, S});
			auto g = go.narrow(1, r0, n);
			gv.narrow(1, 0, S).add_(at::bmm(p.transpose(1, 2), g));
			auto gp = torch::bmm(g, v.narrow(1, 0, S).transpose(1, 2)); // [N, n, S]
			auto gs = at::_softmax_backward_data(gp, p, -1, p.scalar_type());
			gq.narrow(1, r0, n).copy_(at::bmm(gs, k.narrow(1, 0, S)).mul_(scale));
			gk.narrow(1, 0, S).add_(at::bmm(gs.transpose(1, 2), q.narrow(1, r0, n)), scale);
		}
		return {gq, gk, gv, torch::Tensor(), torch::Tensor()};
	}
};

// ---------------------------------------------------------------- elementwise kernels
//
// Row kernels compiled three times (AVX-512, AVX2 + FMA, baseline x86-64) and picked at
// load time by the CPU's features; the arithmetic is float32 whatever the tensors hold.

#define KNLP_BODY static inline __attribute__((always_inline))

// One body, compiled for each instruction set, dispatched by kernel_isa().
#if defined(__x86_64__)
#define KNLP_VERSIONS(name, params, args)                                                                              \
	__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2"))) void name##_avx512 params     \
	{                                                                                                              \
		name##_body args;                                                                                      \
	}                                                                                                              \
	__attribute__((target("avx2,fma,f16c,bmi2"))) void name##_avx2 params                                          \
	{                                                                                                              \
		name##_body args;                                                                                      \
	}                                                                                                              \
	void name##_base params                                                                                        \
	{                                                                                                              \
		name##_body args;                                                                                      \
	}                                                                                                              \
	void name params                                                                                               \
	{                                                                                                              \
		switch (kernel_isa()) {                                                                                \
		case 2: return name##_avx512 args;                                                                     \
		case 1: return name##_avx2 args;                                                                       \
		default: return name##_base args;                                                                      \
		}                                                                                                      \
	}
#else
#define KNLP_VERSIONS(name, params, args)                                                                              \
	void name params                                                                                               \
	{                                                                                                              \
		name##_body args;                                                                                      \
	}
#endif

// e^x for x <= 0 (as GELU and erf need it): Cody-Waite reduction by ln 2 and a degree-6
// polynomial (Cephes' expf coefficients), about 1 ulp; branch-free so loops vectorize.
KNLP_BODY float exp_neg(float x)
{
	x = std::fmax(x, -87.0f);
	const float n = std::nearbyint(x * 1.44269504088896341f);
	float r = x - n * 0.693359375f;
	r = r + n * 2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
	float scale;
	std::memcpy(&scale, &e, sizeof scale);
	return p * scale;
}

// 1 + erf(z), without cancellation for negative z (where it is erfc(|z|)): Abramowitz and
// Stegun 7.1.26, absolute error below 1.5e-7 in erf.
KNLP_BODY float one_plus_erf(float z, float *e_out)
{
	const float az = std::fabs(z);
	const float t = 1.0f / (1.0f + 0.3275911f * az);
	const float y =
		((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
	const float e = exp_neg(-az * az);
	*e_out = e;
	const float c = y * e; // erfc(|z|)
	return z < 0 ? c : 2.0f - c;
}

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// a = GELU(h + bias). The pre-activation is not stored: the backward pass adds the bias
// to h again, which costs less than writing and rereading a tensor of h's size.
KNLP_BODY void gelu_forward_rows_body(const float *h, const float *bias, float *a, int64_t rows, int64_t n)
{
	for (int64_t r = 0; r < rows; r++) {
		const float *hr = h + r * n;
		float *ar = a + r * n;
#pragma omp simd
		for (int64_t c = 0; c < n; c++) {
			const float x = hr[c] + bias[c];
			float e;
			ar[c] = 0.5f * x * one_plus_erf(x * kInvSqrt2, &e);
		}
	}
}
KNLP_VERSIONS(gelu_forward_rows, (const float *h, const float *bias, float *a, int64_t rows, int64_t n),
	      (h, bias, a, rows, n))

// gu = ga GELU'(h + bias), and the column sums of gu added to gb.
KNLP_BODY void gelu_backward_rows_body(const float *h, const float *bias, const float *ga, float *gu, float *gb,
				       int64_t rows, int64_t n)
{
	for (int64_t r = 0; r < rows; r++) {
		const float *hr = h + r * n, *gr = ga + r * n;
		float *o = gu + r * n;
#pragma omp simd
		for (int64_t c = 0; c < n; c++) {
			const float x = hr[c] + bias[c];
			float e; // exp(-x^2 / 2)
			const float cdf = 0.5f * one_plus_erf(x * kInvSqrt2, &e);
			const float g = gr[c] * (cdf + x * e * kInvSqrt2Pi);
			o[c] = g;
			gb[c] += g;
		}
	}
}
KNLP_VERSIONS(gelu_backward_rows,
	      (const float *h, const float *bias, const float *ga, float *gu, float *gb, int64_t rows, int64_t n),
	      (h, bias, ga, gu, gb, rows, n))

// The same two passes on bf16 tensors (h, a, gu; ga bf16 or float32), converted in the
// loop: the values and roundings of converting a chunk to float32, running the float32
// bodies above and rounding back (round to nearest even, NaN kept), without the two extra
// passes over the chunk.
KNLP_BODY float bf16_value(uint16_t h)
{
	const uint32_t u = uint32_t(h) << 16;
	float f;
	std::memcpy(&f, &u, sizeof f);
	return f;
}
KNLP_BODY uint16_t bf16_bits(float f)
{
	uint32_t u;
	std::memcpy(&u, &f, sizeof u);
	const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
	return f != f ? uint16_t(0x7fc0) : uint16_t(r);
}
KNLP_BODY void gelu_forward_rows_bf16_body(const uint16_t *h, const float *bias, uint16_t *a, int64_t rows, int64_t n)
{
	for (int64_t r = 0; r < rows; r++) {
		const uint16_t *hr = h + r * n;
		uint16_t *ar = a + r * n;
#pragma omp simd
		for (int64_t c = 0; c < n; c++) {
			const float x = bf16_value(hr[c]) + bias[c];
			float e;
			ar[c] = bf16_bits(0.5f * x * one_plus_erf(x * kInvSqrt2, &e));
		}
	}
}
KNLP_VERSIONS(gelu_forward_rows_bf16, (const uint16_t *h, const float *bias, uint16_t *a, int64_t rows, int64_t n),
	      (h, bias, a, rows, n))

KNLP_BODY float grad_value(float g)
{
	return g;
}
KNLP_BODY float grad_value(uint16_t g)
{
	return bf16_value(g);
}
template <class G>
KNLP_BODY void gelu_backward_rows_bf16_t(const uint16_t *h, const float *bias, const G *ga, uint16_t *gu, float *gb,
					 int64_t rows, int64_t n)
{
	for (int64_t r = 0; r < rows; r++) {
		const uint16_t *hr = h + r * n;
		const G *gr = ga + r * n;
		uint16_t *o = gu + r * n;
#pragma omp simd
		for (int64_t c = 0; c < n; c++) {
			const float x = bf16_value(hr[c]) + bias[c];
			float e; // exp(-x^2 / 2)
			const float cdf = 0.5f * one_plus_erf(x * kInvSqrt2, &e);
			const float g = grad_value(gr[c]) * (cdf + x * e * kInvSqrt2Pi);
			o[c] = bf16_bits(g);
			gb[c] += g;
		}
	}
}
KNLP_BODY void gelu_backward_rows_bf16_body(const uint16_t *h, const float *bias, const uint16_t *ga16,
					    const float *ga32, uint16_t *gu, float *gb, int64_t rows, int64_t n)
{
	if (ga16)
		gelu_backward_rows_bf16_t(h, bias, ga16, gu, gb, rows, n);
	else
		gelu_backward_rows_bf16_t(h, bias, ga32, gu, gb, rows, n);
}
KNLP_VERSIONS(gelu_backward_rows_bf16,
	      (const uint16_t *h, const float *bias, const uint16_t *ga16, const float *ga32, uint16_t *gu, float *gb,
	       int64_t rows, int64_t n),
	      (h, bias, ga16, ga32, gu, gb, rows, n))

// The largest of row[0, n), NaNs skipped (-inf for none), in 16 lanes: a float max is no
// reduction the vectorizer accepts.
KNLP_BODY float row_max(const float *row, int64_t n)
{
	float lane[16];
	std::fill(lane, lane + 16, -std::numeric_limits<float>::infinity());
	int64_t j = 0;
	for (; j + 16 <= n; j += 16)
		for (int l = 0; l < 16; l++)
			lane[l] = row[j + l] > lane[l] ? row[j + l] : lane[l];
	for (; j < n; j++)
		lane[0] = row[j] > lane[0] ? row[j] : lane[0];
	float m = lane[0];
	for (int l = 1; l < 16; l++)
		m = lane[l] > m ? lane[l] : m;
	return m;
}

// Cross-entropy over rows of logits z [rows, V], in place. loss[r] = logsumexp(z_r) -
// z_r[t_r] (NaN when the row holds a NaN or an infinity, so the non-finite guard sees it);
// with grad each row becomes (softmax(z_r) - onehot(t_r)) * scale. A row whose target is
// negative is ignored: loss 0, gradient row 0. Three passes over a row while it is in
// cache (max; exp and its sum; the scale), where libtorch's operators make seven over the
// whole chunk.
KNLP_BODY void xent_rows_body(float *z, const int64_t *t, int64_t rows, int64_t V, float scale, bool grad, double *loss)
{
	for (int64_t r = 0; r < rows; r++) {
		float *row = z + r * V;
		const int64_t tr = t[r];
		if (tr < 0) {
			loss[r] = 0;
			if (grad)
				std::memset(row, 0, size_t(V) * sizeof(float));
			continue;
		}
		const float m = row_max(row, V);
		const float picked = row[tr];
		// The exponentials are summed in float over blocks of 256 (vectorized: 8 or 16
		// lanes of 16-32 terms) and the block sums in double: a plain float sum of 50304
		// terms in order (an unvectorized build) would be off by about 1e-5. bad: the sum
		// of x - x, 0 for finite x and NaN for a NaN or an infinity (exp_neg clamps, and
		// the max skips NaNs), so such a row's loss is NaN.
		double s = 0;
		float bad = 0;
		for (int64_t j0 = 0; j0 < V; j0 += 256) {
			const int64_t j1 = std::min<int64_t>(V, j0 + 256);
			float bs = 0;
			if (grad) {
#pragma omp simd reduction(+ : bs, bad)
				for (int64_t j = j0; j < j1; j++) {
					bad += row[j] - row[j];
					const float e = exp_neg(row[j] - m);
					row[j] = e;
					bs += e;
				}
			} else {
#pragma omp simd reduction(+ : bs, bad)
				for (int64_t j = j0; j < j1; j++) {
					bad += row[j] - row[j];
					bs += exp_neg(row[j] - m);
				}
			}
			s += bs;
		}
		loss[r] = double(m) + std::log(s) - double(picked) + double(bad);
		if (grad) {
			const float k = float(double(scale) / s);
#pragma omp simd
			for (int64_t j = 0; j < V; j++)
				row[j] *= k;
			row[tr] -= scale;
		}
	}
}
KNLP_VERSIONS(xent_rows, (float *z, const int64_t *t, int64_t rows, int64_t V, float scale, bool grad, double *loss),
	      (z, t, rows, V, scale, grad, loss))

// The vocabulary-blocked head (linear_cross_entropy_blocked): per row of a block of
// logits z [rows, vb] (leading dimension vb), the block's max m, the sum s of exp(z - m)
// (float, at most a few thousand terms in 8 or 16 lanes) and bad, the sum of z - z (NaN
// where the row holds a NaN or an infinity); picked[r] = z[r, t[r] - v0] where the target
// falls in the block. With keep, z becomes exp(z - m) for the gradient pass.
KNLP_BODY void xent_block_stats_body(float *z, const int64_t *t, int64_t rows, int64_t vb, int64_t v0, bool keep,
				     float *m, float *s, float *bad, float *picked)
{
	for (int64_t r = 0; r < rows; r++) {
		float *row = z + r * vb;
		const float mx = row_max(row, vb);
		const int64_t tr = t[r] - v0;
		if (tr >= 0 && tr < vb)
			picked[r] = row[tr];
		float sum = 0, b = 0;
		if (keep) {
#pragma omp simd reduction(+ : sum, b)
			for (int64_t c = 0; c < vb; c++) {
				b += row[c] - row[c];
				const float e = exp_neg(row[c] - mx);
				row[c] = e;
				sum += e;
			}
		} else {
#pragma omp simd reduction(+ : sum, b)
			for (int64_t c = 0; c < vb; c++) {
				b += row[c] - row[c];
				sum += exp_neg(row[c] - mx);
			}
		}
		m[r] = mx, s[r] = sum, bad[r] = b;
	}
}
KNLP_VERSIONS(xent_block_stats,
	      (float *z, const int64_t *t, int64_t rows, int64_t vb, int64_t v0, bool keep, float *m, float *s,
	       float *bad, float *picked),
	      (z, t, rows, vb, v0, keep, m, s, bad, picked))

// e [rows, vb] (exp(z - m) from xent_block_stats) becomes the block's gradient in place:
// e * k[r] (k: the scale times exp(m - logsumexp of the whole row)), minus scale[r] at the
// target; rows of scale 0 (ignored targets) become 0.
KNLP_BODY void xent_block_grad_body(float *e, const int64_t *t, int64_t rows, int64_t vb, int64_t v0, const float *k,
				    const float *scale)
{
	for (int64_t r = 0; r < rows; r++) {
		float *row = e + r * vb;
		if (scale[r] == 0) {
			std::memset(row, 0, size_t(vb) * sizeof(float));
			continue;
		}
		const float kr = k[r];
#pragma omp simd
		for (int64_t c = 0; c < vb; c++)
			row[c] *= kr;
		const int64_t tr = t[r] - v0;
		if (tr >= 0 && tr < vb)
			row[tr] -= scale[r];
	}
}
KNLP_VERSIONS(xent_block_grad,
	      (float *e, const int64_t *t, int64_t rows, int64_t vb, int64_t v0, const float *k, const float *scale),
	      (e, t, rows, vb, v0, k, scale))

KNLP_BODY void add_ln_forward_rows_body(const float *x, const float *d, float *y, float *n, float *mean, float *rstd,
					const float *w, const float *b, int64_t rows, int64_t C, float eps)
{
	for (int64_t r = 0; r < rows; r++) {
		const float *xr = x + r * C, *dr = d + r * C;
		float *yr = y + r * C, *nr = n + r * C;
		float s = 0;
#pragma omp simd reduction(+ : s)
		for (int64_t c = 0; c < C; c++) {
			yr[c] = xr[c] + dr[c];
			s += yr[c];
		}
		const float mu = s / float(C);
		float v = 0;
#pragma omp simd reduction(+ : v)
		for (int64_t c = 0; c < C; c++)
			v += (yr[c] - mu) * (yr[c] - mu);
		const float rs = 1.0f / std::sqrt(v / float(C) + eps);
		mean[r] = mu, rstd[r] = rs;
		if (b) {
#pragma omp simd
			for (int64_t c = 0; c < C; c++)
				nr[c] = (yr[c] - mu) * rs * w[c] + b[c];
		} else {
#pragma omp simd
			for (int64_t c = 0; c < C; c++)
				nr[c] = (yr[c] - mu) * rs * w[c];
		}
	}
}
KNLP_VERSIONS(add_ln_forward_rows,
	      (const float *x, const float *d, float *y, float *n, float *mean, float *rstd, const float *w,
	       const float *b, int64_t rows, int64_t C, float eps),
	      (x, d, y, n, mean, rstd, w, b, rows, C, eps))

// gx = gy + LayerNorm'(gn); gw and gb accumulate the column sums of gn xhat and gn.
KNLP_BODY void add_ln_backward_rows_body(const float *y, const float *mean, const float *rstd, const float *w,
					 const float *gn, const float *gy, float *gx, float *gw, float *gb,
					 int64_t rows, int64_t C)
{
	for (int64_t r = 0; r < rows; r++) {
		const float *yr = y + r * C, *gr = gn + r * C;
		float *o = gx + r * C;
		const float mu = mean[r], rs = rstd[r];
		float a = 0, bb = 0;
#pragma omp simd reduction(+ : a, bb)
		for (int64_t c = 0; c < C; c++) {
			const float xh = (yr[c] - mu) * rs, g = gr[c] * w[c];
			a += g;
			bb += g * xh;
			gw[c] += gr[c] * xh;
			gb[c] += gr[c];
		}
		a /= float(C), bb /= float(C);
		const float *gyr = gy ? gy + r * C : nullptr;
#pragma omp simd
		for (int64_t c = 0; c < C; c++) {
			const float xh = (yr[c] - mu) * rs;
			o[c] = rs * (gr[c] * w[c] - a - xh * bb) + (gyr ? gyr[c] : 0.0f);
		}
	}
}
KNLP_VERSIONS(add_ln_backward_rows,
	      (const float *y, const float *mean, const float *rstd, const float *w, const float *gn, const float *gy,
	       float *gx, float *gw, float *gb, int64_t rows, int64_t C),
	      (y, mean, rstd, w, gn, gy, gx, gw, gb, rows, C))

KNLP_BODY void bf16_to_f32_body(const uint16_t *in, float *out, int64_t n)
{
#pragma omp simd
	for (int64_t i = 0; i < n; i++) {
		const uint32_t u = uint32_t(in[i]) << 16;
		std::memcpy(&out[i], &u, sizeof u);
	}
}
KNLP_VERSIONS(bf16_to_f32, (const uint16_t *in, float *out, int64_t n), (in, out, n))

// Round to nearest even, as c10::BFloat16 does; NaN stays NaN.
KNLP_BODY void f32_to_bf16_body(const float *in, uint16_t *out, int64_t n)
{
#pragma omp simd
	for (int64_t i = 0; i < n; i++) {
		uint32_t u;
		std::memcpy(&u, &in[i], sizeof u);
		const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
		out[i] = in[i] != in[i] ? uint16_t(0x7fc0) : uint16_t(r);
	}
}
KNLP_VERSIONS(f32_to_bf16, (const float *in, uint16_t *out, int64_t n), (in, out, n))

// A contiguous float copy of t. bf16 goes through bf16_to_f32 above: libtorch 1.13's own
// bf16 -> float copy runs at about 5 ns an element on one thread (22 ms for the 4.7M values
// of a GELU gradient at shape (b), against 0.5 ms for float -> bf16), which made the bf16
// step's GELU backward half of its time.
torch::Tensor to_float(const torch::Tensor &t)
{
	if (t.scalar_type() != torch::kBFloat16)
		return t.to(torch::kFloat).contiguous();
	const torch::Tensor src = t.contiguous();
	auto out = torch::empty(src.sizes(), src.options().dtype(torch::kFloat));
	const int64_t n = src.numel(), per = int64_t(1) << 16;
	const auto *in = reinterpret_cast<const uint16_t *>(src.data_ptr<at::BFloat16>());
	float *o = out.data_ptr<float>();
	knlp::parallel_for(0, (n + per - 1) / per, 1, [&](int64_t k0, int64_t k1) {
		for (int64_t k = k0; k < k1; k++)
			bf16_to_f32(in + k * per, o + k * per, std::min(per, n - k * per));
	});
	return out;
}

// Rows are processed in fixed chunks, and per-chunk column sums are added in chunk order:
// the same result for any number of threads.
constexpr int64_t kChunkRows = 64;

int64_t chunks_of(int64_t rows)
{
	return (rows + kChunkRows - 1) / kChunkRows;
}

// Column sums of per-chunk partial results [chunks, width] in chunk order.
torch::Tensor sum_chunks(const std::vector<float> &part, int64_t chunks, int64_t width)
{
	auto out = torch::zeros({width});
	float *o = out.data_ptr<float>();
	for (int64_t k = 0; k < chunks; k++)
		for (int64_t c = 0; c < width; c++)
			o[c] += part[size_t(k * width + c)];
	return out;
}

struct AddLayerNorm : public torch::autograd::Function<AddLayerNorm> {
	static torch::autograd::tensor_list forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &x_in,
						    const torch::Tensor &d_in, const torch::Tensor &w,
						    const torch::Tensor &b, double eps)
	{
		auto x = x_in.contiguous(), d = d_in.contiguous();
		const int64_t C = x.size(-1), rows = x.numel() / C;
		auto y = torch::empty_like(x), n = torch::empty_like(x);
		auto mean = torch::empty({rows}), rstd = torch::empty({rows});
		const bool bf = d.scalar_type() == torch::kBFloat16;
		const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
		const float *bp = b.numel() > 0 ? b.data_ptr<float>() : nullptr;
		float *yp = y.data_ptr<float>(), *np = n.data_ptr<float>();
		float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
		knlp::parallel_for(0, chunks_of(rows), 1, [&](int64_t k0, int64_t k1) {
			std::vector<float> tmp(bf ? size_t(kChunkRows * C) : 0);
			for (int64_t k = k0; k < k1; k++) {
				const int64_t r0 = k * kChunkRows, nr = std::min(kChunkRows, rows - r0);
				const float *dp;
				if (bf) {
					bf16_to_f32(reinterpret_cast<const uint16_t *>(d.data_ptr<at::BFloat16>()) +
							    r0 * C,
						    tmp.data(), nr * C);
					dp = tmp.data();
				} else {
					dp = d.data_ptr<float>() + r0 * C;
				}
				add_ln_forward_rows(xp + r0 * C, dp, yp + r0 * C, np + r0 * C, mp + r0, rp + r0, wp, bp,
						    nr, C, float(eps));
			}
		});
		ctx->save_for_backward({y, w, mean, rstd});
		ctx->saved_data["has_bias"] = b.numel() > 0;
		return {y, n};
	}

	static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
						     torch::autograd::tensor_list grad_out)
	{
		auto saved = ctx->get_saved_variables();
		auto &y = saved[0], &w = saved[1], &mean = saved[2], &rstd = saved[3];
		const bool has_bias = ctx->saved_data["has_bias"].toBool();
		auto gy = grad_out[0].defined() ? to_float(grad_out[0]) : torch::Tensor();
		if (!grad_out[1].defined()) {
			auto g = gy.defined() ? gy : torch::zeros_like(y);
			return {g, g, torch::zeros_like(w), has_bias ? torch::zeros_like(w) : torch::Tensor(),
				torch::Tensor()};
		}
		auto gn = to_float(grad_out[1]);
		const int64_t C = y.size(-1), rows = y.numel() / C, chunks = chunks_of(rows);
		auto gx = torch::empty_like(y);
		std::vector<float> part(size_t(chunks * 2 * C), 0.0f);
		const float *yp = y.data_ptr<float>(), *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
		const float *wp = w.data_ptr<float>(), *gnp = gn.data_ptr<float>();
		const float *gyp = gy.defined() ? gy.data_ptr<float>() : nullptr;
		float *gxp = gx.data_ptr<float>();
		knlp::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
			for (int64_t k = k0; k < k1; k++) {
				const int64_t r0 = k * kChunkRows, nr = std::min(kChunkRows, rows - r0);
				float *pw = part.data() + k * 2 * C;
				add_ln_backward_rows(yp + r0 * C, mp + r0, rp + r0, wp, gnp + r0 * C,
						     gyp ? gyp + r0 * C : nullptr, gxp + r0 * C, pw, pw + C, nr, C);
			}
		});
		auto sums = sum_chunks(part, chunks, 2 * C);
		auto gw = sums.narrow(0, 0, C).clone(), gb = sums.narrow(0, C, C).clone();
		return {gx, gx, gw, has_bias ? gb : torch::Tensor(), torch::Tensor()};
	}
};

struct BiasGelu : public torch::autograd::Function<BiasGelu> {
	static torch::Tensor forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &h_in,
				     const torch::Tensor &bias)
	{
		auto h = h_in.contiguous();
		const int64_t N = h.size(-1), rows = h.numel() / N;
		const bool bf = h.scalar_type() == torch::kBFloat16;
		auto a = torch::empty_like(h);
		const float *bp = bias.data_ptr<float>();
		knlp::parallel_for(0, chunks_of(rows), 1, [&](int64_t k0, int64_t k1) {
			for (int64_t k = k0; k < k1; k++) {
				const int64_t r0 = k * kChunkRows, nr = std::min(kChunkRows, rows - r0);
				if (!bf) {
					gelu_forward_rows(h.data_ptr<float>() + r0 * N, bp,
							  a.data_ptr<float>() + r0 * N, nr, N);
					continue;
				}
				auto bits = [&](torch::Tensor &t) {
					return reinterpret_cast<uint16_t *>(t.data_ptr<at::BFloat16>()) + r0 * N;
				};
				gelu_forward_rows_bf16(bits(h), bp, bits(a), nr, N);
			}
		});
		ctx->save_for_backward({h, bias});
		return a;
	}

	static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
						     torch::autograd::tensor_list grad_out)
	{
		auto saved = ctx->get_saved_variables();
		auto h = saved[0];
		const float *bp = saved[1].data_ptr<float>();
		const int64_t N = h.size(-1), rows = h.numel() / N, chunks = chunks_of(rows);
		const bool bf = h.scalar_type() == torch::kBFloat16;
		// A bf16 incoming gradient is read as it is under bf16; otherwise as float32.
		const bool ga16 = bf && grad_out[0].scalar_type() == torch::kBFloat16;
		auto ga = ga16 ? grad_out[0].contiguous() : to_float(grad_out[0]);
		auto gu = torch::empty_like(h);
		std::vector<float> part(size_t(chunks * N), 0.0f);
		knlp::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
			for (int64_t k = k0; k < k1; k++) {
				const int64_t r0 = k * kChunkRows, nr = std::min(kChunkRows, rows - r0);
				if (!bf) {
					gelu_backward_rows(h.data_ptr<float>() + r0 * N, bp,
							   ga.data_ptr<float>() + r0 * N, gu.data_ptr<float>() + r0 * N,
							   part.data() + k * N, nr, N);
					continue;
				}
				auto bits = [&](torch::Tensor &t) {
					return reinterpret_cast<uint16_t *>(t.data_ptr<at::BFloat16>()) + r0 * N;
				};
				gelu_backward_rows_bf16(bits(h), bp, ga16 ? bits(ga) : nullptr,
							ga16 ? nullptr : ga.data_ptr<float>() + r0 * N, bits(gu),
							part.data() + k * N, nr, N);
			}
		});
		return {gu, sum_chunks(part, chunks, N)};
	}
};

} // namespace

int64_t attention_block_rows(int64_t T)
{
	// Four or more blocks of at least 64 rows (products of 64 rows still run near the
	// GEMM's peak); below 128 tokens the saving does not pay for the extra calls.
	if (T < 128)
		return 0;
	return std::max<int64_t>(64, (T + 7) / 8);
}

torch::Tensor blocked_causal_attention(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &v,
				       const torch::Tensor &bias, int64_t block)
{
	TORCH_CHECK(q.dim() == 3 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
		    "blocked_causal_attention: q, k, v must be [N, T, D] of one shape");
	TORCH_CHECK(block > 0 && bias.size(0) >= q.size(1), "blocked_causal_attention: bad block or bias");
	return BlockedCausalAttention::apply(q, k, v, bias, block);
}

} // namespace knlp

namespace knlp {

double cross_entropy_rows(torch::Tensor &logits, const torch::Tensor &targets, float scale, bool grad)
{
	TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous() && logits.scalar_type() == torch::kFloat &&
			    logits.device().is_cpu(),
		    "cross_entropy_rows: logits must be a contiguous CPU float32 [rows, V]");
	auto t = targets.to(torch::kLong).contiguous();
	TORCH_CHECK(t.numel() == logits.size(0), "cross_entropy_rows: one target per row");
	const int64_t rows = logits.size(0), V = logits.size(1);
	const int64_t *tp = t.data_ptr<int64_t>();
	for (int64_t r = 0; r < rows; r++)
		TORCH_CHECK(tp[r] >= -1 && tp[r] < V, "cross_entropy_rows: target ", tp[r],
			    " is neither -1 (ignored) nor in the vocabulary of ", V);
	std::vector<double> loss(size_t(rows), 0.0);
	float *z = logits.data_ptr<float>();
	knlp::parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
		xent_rows(z + b * V, tp + b, e - b, V, scale, grad, loss.data() + b);
	});
	double sum = 0; // in row order: the same for any thread count
	for (double l : loss)
		sum += l;
	return sum;
}

int64_t head_vocab_block(int64_t rows)
{
	// A block of logits [rows, vb] should stay in cache between its product and its kernel:
	// about 2^18 floats (1 MB), multiples of 16 columns, at least 64 and at most 4096. At
	// shape (a) (768 rows: 336 columns) blocks of 256 to 1024 columns ran within this
	// machine's spread of each other (docs/performance.md).
	const int64_t vb = ((int64_t(1) << 18) / std::max<int64_t>(rows, 1)) / 16 * 16;
	return std::clamp<int64_t>(vb, 64, 4096);
}

bool linear_cross_entropy_blocked_applies(const torch::Tensor &x, const torch::Tensor &w, int64_t block)
{
	// At least 16 blocks (the groups the work is shared in): a small vocabulary keeps the
	// row kernel, whose rows spread over the threads. At most 128 channels: the saving is
	// memory traffic per logit, against 6 C FLOPs per logit in the three products; in
	// the whole GPT-2 step (scripts/ab.sh, vocabulary 50304) blocks gained 4.5-7% at 128
	// channels and lost 4-6% at 256 and 384 and 3% at 768.
	const int64_t vb = block > 0 ? block : x.dim() == 2 ? head_vocab_block(x.size(0)) : 0;
	return sgemm_direct() && vb > 0 && w.dim() == 2 && w.size(0) >= 16 * vb && w.size(1) <= 128 &&
	       x.device().is_cpu() && w.device().is_cpu() && x.scalar_type() == torch::kFloat &&
	       w.scalar_type() == torch::kFloat && x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) &&
	       x.is_contiguous() && w.is_contiguous();
}

double linear_cross_entropy_blocked(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &targets,
				    float scale, torch::Tensor *gx, torch::Tensor *gw, bool gw_accumulate,
				    int64_t block, bool bf16)
{
	TORCH_CHECK(!bf16 || bf16_gemm_available(), "linear_cross_entropy_blocked: bf16 needs AVX512-BF16");
	// Row-major C (+)= op(A) op(B), float32 operands: sgemm, or gemm_bf16 (bf16 products).
	auto mm = [bf16](bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
			 int64_t ldb, bool add, float *c, int64_t ldc) {
		if (bf16)
			gemm_bf16(ta, tb, m, n, k, a, false, lda, b, false, ldb, c, false, ldc, nullptr, add);
		else
			gemm_rm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, add ? 1.0f : 0.0f, c, ldc);
	};
	TORCH_CHECK(linear_cross_entropy_blocked_applies(x, w, block),
		    "linear_cross_entropy_blocked: x [N, C] and w [V, C] contiguous CPU float32, V at least 16 blocks");
	const int64_t N = x.size(0), C = x.size(1), V = w.size(0);
	auto t = targets.to(torch::kLong).contiguous();
	TORCH_CHECK(t.numel() == N, "linear_cross_entropy_blocked: one target per row");
	const int64_t *tp = t.data_ptr<int64_t>();
	for (int64_t r = 0; r < N; r++)
		TORCH_CHECK(tp[r] >= -1 && tp[r] < V, "linear_cross_entropy_blocked: target ", tp[r],
			    " is neither -1 (ignored) nor in the vocabulary of ", V);
	const bool grad = gx != nullptr;
	if (grad)
		TORCH_CHECK(gw && gx->is_contiguous() && gx->sizes() == x.sizes() && gw->is_contiguous() &&
				    gw->sizes() == w.sizes(),
			    "linear_cross_entropy_blocked: gradients must be contiguous, shaped like x and w");
	const int64_t vb = block > 0 ? block : head_vocab_block(N), nb = (V + vb - 1) / vb;
	// Blocks are handed out in a fixed number of groups of consecutive blocks, a group at a
	// time to whichever thread is free; each group sums its share of x's gradient in its
	// own buffer and the buffers are added in group order, so the result is the same for
	// any number of threads and any schedule.
	const int64_t groups = std::min<int64_t>(nb, 16);
	auto first_block = [&](int64_t g) { return g * nb / groups; };
	const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
	// With gradients every block's logits are kept for the second pass; without, each
	// group reuses one block.
	auto store = torch::empty({grad ? nb : groups, N * vb});
	float *zp = store.data_ptr<float>();
	std::vector<float> m(size_t(nb * N)), s(size_t(nb * N)), bad(size_t(nb * N)), picked(size_t(N), 0.0f);
	knlp::parallel_items(groups, [&](int64_t g) {
		for (int64_t b = first_block(g); b < first_block(g + 1); b++) {
			const int64_t v0 = b * vb, width = std::min(vb, V - v0);
			float *z = zp + (grad ? b : g) * N * vb;
			mm(false, true, N, width, C, xp, C, wp + v0 * C, C, false, z, width);
			xent_block_stats(z, tp, N, width, v0, grad, m.data() + b * N, s.data() + b * N,
					 bad.data() + b * N, picked.data());
		}
	});
	// Per row: the log-sum-exp over blocks in double, the loss, and for the second pass
	// each block's factor scale * exp(m_b - lse) (held in s).
	std::vector<double> loss(static_cast<size_t>(N), 0.0);
	std::vector<float> row_scale(static_cast<size_t>(N));
	knlp::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
		for (int64_t r = r0; r < r1; r++) {
			float mx = -std::numeric_limits<float>::infinity();
			double b_sum = 0;
			for (int64_t b = 0; b < nb; b++) {
				mx = m[size_t(b * N + r)] > mx ? m[size_t(b * N + r)] : mx;
				b_sum += bad[size_t(b * N + r)];
			}
			double sum = 0;
			for (int64_t b = 0; b < nb; b++)
				sum += double(s[size_t(b * N + r)]) *
				       std::exp(double(m[size_t(b * N + r)]) - double(mx));
			const double lse = double(mx) + std::log(sum);
			const bool valid = tp[r] >= 0;
			loss[size_t(r)] = valid ? lse - double(picked[size_t(r)]) + b_sum : 0.0;
			row_scale[size_t(r)] = valid ? scale : 0.0f;
			for (int64_t b = 0; b < nb; b++)
				s[size_t(b * N + r)] =
					float(double(scale) * std::exp(double(m[size_t(b * N + r)]) - lse));
		}
	});
	double total = 0; // in row order: the same for any thread count
	for (double l : loss)
		total += l;
	if (!grad)
		return total;
	float *gwp = gw->data_ptr<float>(), *gxp = gx->data_ptr<float>();
	std::vector<float> gx_part(static_cast<size_t>(groups * N * C));
	knlp::parallel_items(groups, [&](int64_t g) {
		float *part = gx_part.data() + g * N * C;
		for (int64_t b = first_block(g); b < first_block(g + 1); b++) {
			const int64_t v0 = b * vb, width = std::min(vb, V - v0);
			float *z = zp + b * N * vb;
			xent_block_grad(z, tp, N, width, v0, s.data() + b * N, row_scale.data());
			mm(true, false, width, C, N, z, width, xp, C, gw_accumulate, gwp + v0 * C, C);
			mm(false, false, N, C, width, z, width, wp + v0 * C, C, b != first_block(g), part, C);
		}
	});
	knlp::parallel_for(0, N * C, 4096, [&](int64_t i0, int64_t i1) {
		std::copy(gx_part.begin() + i0, gx_part.begin() + i1, gxp + i0);
		for (int64_t g = 1; g < groups; g++) {
			const float *p = gx_part.data() + g * N * C;
			for (int64_t i = i0; i < i1; i++)
				gxp[i] += p[i];
		}
	});
	return total;
}

bool fused_kernels_apply(const torch::Tensor &t)
{
	return t.device().is_cpu() && t.scalar_type() == torch::kFloat;
}

std::pair<torch::Tensor, torch::Tensor> add_layer_norm(const torch::Tensor &x, const torch::Tensor &d,
						       const torch::Tensor &w, const torch::Tensor &b, double eps)
{
	TORCH_CHECK(x.sizes() == d.sizes(), "add_layer_norm: x and d differ in shape");
	TORCH_CHECK(x.scalar_type() == torch::kFloat && w.scalar_type() == torch::kFloat &&
			    (d.scalar_type() == torch::kFloat || d.scalar_type() == torch::kBFloat16),
		    "add_layer_norm: x, w float32; d float32 or bfloat16");
	// libtorch 1.13's custom functions reject undefined inputs: no bias is an empty one.
	auto r = AddLayerNorm::apply(x, d, w, b.defined() ? b : torch::empty({0}), eps);
	return {r[0], r[1]};
}

torch::Tensor bias_gelu(const torch::Tensor &h, const torch::Tensor &bias)
{
	TORCH_CHECK(h.scalar_type() == torch::kFloat || h.scalar_type() == torch::kBFloat16,
		    "bias_gelu: h must be float32 or bfloat16");
	TORCH_CHECK(bias.scalar_type() == torch::kFloat && bias.numel() == h.size(-1), "bias_gelu: bias [N] float32");
	return BiasGelu::apply(h, bias);
}

} // namespace knlp
