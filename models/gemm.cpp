#include "models/gemm.h"

#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <ATen/autocast_mode.h>

#include "core/parallel.h"
#include "core/torch_compat.h"
#include "models/fused.h"

namespace knlp {

namespace {

// The BLAS libtorch itself calls (libblas.so.3: OpenBLAS on Debian), found at run time;
// null where libtorch carries its own (MKL builds), and ATen's mm is used instead.
using sgemm_fn = void (*)(const char *, const char *, const int *, const int *, const int *, const float *,
			  const float *, const int *, const float *, const int *, const float *, float *, const int *);
sgemm_fn blas_sgemm()
{
	static sgemm_fn f = reinterpret_cast<sgemm_fn>(dlsym(RTLD_DEFAULT, "sgemm_"));
	return f;
}

void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
	       const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
	if (m == 0 || n == 0)
		return;
	if (auto f = blas_sgemm()) {
		// Row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T.
		const char ca = tb ? 'T' : 'N', cb = ta ? 'T' : 'N';
		const int M = int(n), N = int(m), K = int(k), la = int(ldb), lb = int(lda), lc = int(ldc);
		f(&ca, &cb, &M, &N, &K, &alpha, b, &la, a, &lb, &beta, c, &lc);
		return;
	}
	auto A = ta ? torch::from_blob(const_cast<float *>(a), {m, k}, {1, lda})
		    : torch::from_blob(const_cast<float *>(a), {m, k}, {lda, 1});
	auto B = tb ? torch::from_blob(const_cast<float *>(b), {k, n}, {1, ldb})
		    : torch::from_blob(const_cast<float *>(b), {k, n}, {ldb, 1});
	auto C = torch::from_blob(c, {m, n}, {ldc, 1});
	if (beta == 0.0f)
		at::mm_out(C, A, B).mul_(alpha);
	else
		C.mul_(beta).addmm_(A, B, 1.0, alpha);
}

// ---------------------------------------------------------------- the AVX-512 kernel
//
// C is computed in tiles of MR x NR by a kernel that keeps the tile in 24 zmm registers
// and, for each k, loads three vectors of a packed B panel and broadcasts MR values of a
// packed A panel. Operands are packed per block: up to KC_MAX values of k (a B panel,
// then an A panel of MC rows in L2), NC columns of B (in L3). Packing also applies op()
// and alpha and pads the edges with zeros, so the kernel never branches on the shape.
// K is cut into equal blocks (384 stays one block: the tile is written once), which
// `knlp_bench gemm` measured faster than fixed blocks of 256 on the GPT-2 shapes.
constexpr int64_t MR = 8, NV = 3, NR = 16 * NV, KC_MAX = 512, MC = 192, NC = 3072;

int64_t k_block(int64_t k)
{
	const int64_t blocks = (k + KC_MAX - 1) / KC_MAX;
	return (k + blocks - 1) / blocks;
}

#define KNLP_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))

// The tile's sums into C: the first k block writes C = beta C + (sum) (+ bias[j]), later
// blocks add. Partial tiles (at the edges) store under masks.
KNLP_AVX512 void kernel_tile(int64_t kc, const float *__restrict a, const float *__restrict b, float *c, int64_t ldc,
			     int64_t mr, int64_t nr, bool first, float beta, const float *bias)
{
	__m512 acc[MR][NV];
	for (int i = 0; i < MR; i++)
		for (int h = 0; h < NV; h++)
			acc[i][h] = _mm512_setzero_ps();
	for (int64_t p = 0; p < kc; p++) {
		__m512 bv[NV];
		for (int h = 0; h < NV; h++)
			bv[h] = _mm512_loadu_ps(b + p * NR + 16 * h);
		const float *ap = a + p * MR;
		for (int i = 0; i < MR; i++) {
			const __m512 av = _mm512_set1_ps(ap[i]);
			for (int h = 0; h < NV; h++)
				acc[i][h] = _mm512_fmadd_ps(av, bv[h], acc[i][h]);
		}
	}
	__mmask16 mk[NV];
	for (int h = 0; h < NV; h++) {
		const int64_t left = std::clamp<int64_t>(nr - 16 * h, 0, 16);
		mk[h] = left == 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
	}
	if (first && bias) {
		for (int h = 0; h < NV; h++) {
			const __m512 v = _mm512_maskz_loadu_ps(mk[h], bias + 16 * h);
			for (int i = 0; i < MR; i++)
				acc[i][h] = _mm512_add_ps(acc[i][h], v);
		}
	}
	const bool keep = !first || beta != 0.0f; // C's old values take part
	const __m512 vb = _mm512_set1_ps(first ? beta : 1.0f);
	if (mr == MR && nr == NR) {
		for (int i = 0; i < MR; i++) {
			float *ci = c + i * ldc;
			for (int h = 0; h < NV; h++) {
				__m512 v = acc[i][h];
				if (keep)
					v = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16 * h), v);
				_mm512_storeu_ps(ci + 16 * h, v);
			}
		}
		return;
	}
	// Constant row indices (unrolled, rows past mr skipped): acc stays in registers.
	for (int i = 0; i < MR; i++) {
		float *ci = c + i * ldc;
		for (int h = 0; h < NV; h++) {
			if (i >= mr || !mk[h])
				continue;
			__m512 v = acc[i][h];
			if (keep)
				v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk[h], ci + 16 * h), v);
			_mm512_mask_storeu_ps(ci + 16 * h, mk[h], v);
		}
	}
}

// dst[q * ld + r] = src[r * lds + q] for an 8 x 8 block (r rows of src, q its columns):
// one register transpose.
KNLP_AVX512 inline void transpose8(const float *src, int64_t lds, float *dst, int64_t ld, float alpha)
{
	__m256 r[8];
	for (int i = 0; i < 8; i++)
		r[i] = _mm256_loadu_ps(src + i * lds);
	__m256 t[8];
	for (int i = 0; i < 4; i++) {
		t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	__m256 u[8];
	for (int i = 0; i < 2; i++) {
		u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
		u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xee);
		u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
		u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
	}
	const __m256 va = _mm256_set1_ps(alpha);
	for (int i = 0; i < 4; i++) {
		_mm256_storeu_ps(dst + i * ld, _mm256_mul_ps(va, _mm256_permute2f128_ps(u[i], u[4 + i], 0x20)));
		_mm256_storeu_ps(dst + (4 + i) * ld, _mm256_mul_ps(va, _mm256_permute2f128_ps(u[i], u[4 + i], 0x31)));
	}
}

// A block: rows [i0, i0 + mc), k [p0, p0 + kc) of op(A), times alpha, as panels of MR rows
// ([kc][MR] each), the last panel padded with zeros.
KNLP_AVX512 void pack_a(bool ta, const float *a, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
			float alpha, float *dst)
{
	for (int64_t ir = 0; ir < mc; ir += MR) {
		const int64_t mr = std::min(MR, mc - ir);
		float *d = dst + ir * kc;
		if (ta) { // element (i, p) at a[p * lda + i]: rows of the panel are contiguous
			const __mmask8 m = mr == MR ? __mmask8(0xff) : __mmask8((1u << mr) - 1);
			const __m256 va = _mm256_set1_ps(alpha);
			for (int64_t p = 0; p < kc; p++) {
				const __m256 v = _mm256_maskz_loadu_ps(m, a + (p0 + p) * lda + i0 + ir);
				_mm256_storeu_ps(d + p * MR, _mm256_mul_ps(va, v));
			}
			continue;
		}
		// element (i, p) at a[i * lda + p]: 8 x 8 transposes, the rest one by one
		const float *s = a + (i0 + ir) * lda + p0;
		int64_t p = 0;
		if (mr == MR)
			for (; p + 8 <= kc; p += 8)
				transpose8(s + p, lda, d + p * MR, MR, alpha);
		for (; p < kc; p++)
			for (int64_t i = 0; i < MR; i++)
				d[p * MR + i] = i < mr ? alpha * s[i * lda + p] : 0.0f;
	}
}

// B block: k [p0, p0 + kc), columns [j0, j0 + nc) of op(B), as panels of NR columns
// ([kc][NR] each), the last padded with zeros.
KNLP_AVX512 void pack_b(bool tb, const float *b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
			float *dst)
{
	for (int64_t jr = 0; jr < nc; jr += NR) {
		const int64_t nr = std::min(NR, nc - jr);
		float *d = dst + jr * kc;
		if (!tb) { // element (p, j) at b[p * ldb + j]: rows of NR values, masked at the edge
			__mmask16 mk[NV];
			for (int h = 0; h < NV; h++) {
				const int64_t left = std::clamp<int64_t>(nr - 16 * h, 0, 16);
				mk[h] = left == 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
			}
			for (int64_t p = 0; p < kc; p++) {
				const float *s = b + (p0 + p) * ldb + j0 + jr;
				float *dp = d + p * NR;
				for (int h = 0; h < NV; h++)
					_mm512_storeu_ps(dp + 16 * h, _mm512_maskz_loadu_ps(mk[h], s + 16 * h));
			}
			continue;
		}
		// element (p, j) at b[j * ldb + p]: 8 x 8 transposes for whole groups of 8 columns
		const float *s = b + (j0 + jr) * ldb + p0;
		const int64_t full = nr / 8 * 8;
		int64_t p = 0;
		for (; p + 8 <= kc; p += 8)
			for (int64_t j = 0; j < full; j += 8)
				transpose8(s + j * ldb + p, ldb, d + p * NR + j, NR, 1.0f);
		for (int64_t q = 0; q < kc; q++)
			for (int64_t j = q < p ? full : 0; j < NR; j++)
				d[q * NR + j] = j < nr ? s[j * ldb + q] : 0.0f;
	}
}

using Buffer = AlignedBuffer<float>;

// The rows [i0, i1) and columns [j0, j1) of C on the calling thread: for each block of k,
// op(B) packed for NC columns, then each block of MC rows of op(A) packed and multiplied
// with every panel of it.
void gemm_block(bool ta, bool tb, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t k, float alpha,
		const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
		const float *bias)
{
	thread_local Buffer pa, pb;
	const int64_t KC = k_block(k);
	float *ap = pa.get(size_t(MC * KC)), *bp = pb.get(size_t(KC * NC));
	for (int64_t jc = j0; jc < j1; jc += NC) {
		const int64_t nc = std::min(NC, j1 - jc);
		for (int64_t pc = 0; pc < k; pc += KC) {
			const int64_t kc = std::min(KC, k - pc);
			const bool first = pc == 0;
			pack_b(tb, b, ldb, pc, kc, jc, nc, bp);
			for (int64_t ic = i0; ic < i1; ic += MC) {
				const int64_t mc = std::min(MC, i1 - ic);
				pack_a(ta, a, lda, ic, mc, pc, kc, alpha, ap);
				for (int64_t jr = 0; jr < nc; jr += NR) {
					const int64_t nr = std::min(NR, nc - jr);
					for (int64_t ir = 0; ir < mc; ir += MR)
						kernel_tile(kc, ap + ir * kc, bp + jr * kc,
							    c + (ic + ir) * ldc + jc + jr, ldc, std::min(MR, mc - ir),
							    nr, first, beta, bias ? bias + jc + jr : nullptr);
				}
			}
		}
	}
}

// The product split into one task per thread, of whole tiles along C's longer side (in
// tiles), each packing what it reads.
void own_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
	      const float *b, int64_t ldb, float beta, float *c, int64_t ldc, const float *bias)
{
	if (m == 0 || n == 0)
		return;
	if (k == 0) { // C = beta C (+ bias)
		for (int64_t i = 0; i < m; i++)
			for (int64_t j = 0; j < n; j++)
				c[i * ldc + j] =
					(beta == 0.0f ? 0.0f : beta * c[i * ldc + j]) + (bias ? bias[j] : 0.0f);
		return;
	}
	const int threads = parallel_threads();
	// Below about a million multiply-adds a second thread costs more than it saves.
	const bool split = threads > 1 && double(m) * double(n) * double(k) >= 1e6;
	if (!split) {
		gemm_block(ta, tb, 0, m, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
		return;
	}
	const bool rows = m / MR >= n / NR;
	const int64_t tiles = rows ? (m + MR - 1) / MR : (n + NR - 1) / NR;
	const int64_t tasks = std::min<int64_t>(tiles, threads);
	parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
		for (int64_t t = t0; t < t1; t++) {
			const int64_t s = tiles * t / tasks, e = tiles * (t + 1) / tasks;
			if (rows)
				gemm_block(ta, tb, s * MR, std::min(m, e * MR), 0, n, k, alpha, a, lda, b, ldb, beta, c,
					   ldc, bias);
			else
				gemm_block(ta, tb, 0, m, s * NR, std::min(n, e * NR), k, alpha, a, lda, b, ldb, beta, c,
					   ldc, bias);
		}
	});
}

std::atomic<int> g_switch{1};

// ---------------------------------------------------------------- the linear layer

// C = op(A) op(B) (+ bias) for the linear layer: float32 through own_gemm, or bf16
// through gemm_bf16 (operands float32 or bf16, C in c's dtype).
void linear_product(bool bf16, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const torch::Tensor &a,
		    const torch::Tensor &b, torch::Tensor &c, const float *bias)
{
	const int64_t lda = a.size(1), ldb = b.size(1), ldc = c.size(1);
	if (bf16) {
		auto is16 = [](const torch::Tensor &t) { return t.scalar_type() == torch::kBFloat16; };
		gemm_bf16(ta, tb, m, n, k, a.data_ptr(), is16(a), lda, b.data_ptr(), is16(b), ldb, c.data_ptr(),
			  is16(c), ldc, bias);
	} else {
		own_gemm(ta, tb, m, n, k, 1.0f, a.data_ptr<float>(), lda, b.data_ptr<float>(), ldb, 0.0f,
			 c.data_ptr<float>(), ldc, bias);
	}
}

// y = x W^T + b and its gradients. float32: every tensor float32. bf16 (linear_bf16): x
// float32 or bf16, y bf16 (the bias added to the float32 sums before rounding), x's
// gradient in x's dtype, W's in W's (float32 master weights: no bf16 copy of W and no cast
// of its gradient, which autocast's path pays on every step), the bias's in float32.
struct GemmLinear : public torch::autograd::Function<GemmLinear> {
	// b: the bias, or an empty tensor for none.
	static torch::Tensor forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &x_in,
				     const torch::Tensor &w_in, const torch::Tensor &b, bool bf16)
	{
		const int64_t K = x_in.size(-1), N = w_in.size(0), M = x_in.numel() / std::max<int64_t>(K, 1);
		auto x = x_in.reshape({M, K}).contiguous(), w = w_in.contiguous();
		auto y = torch::empty({M, N}, x.options().dtype(bf16 ? torch::kBFloat16 : torch::kFloat));
		linear_product(bf16, false, true, M, N, K, x, w, y,
			       b.numel() > 0 ? b.contiguous().data_ptr<float>() : nullptr);
		ctx->save_for_backward({x, w});
		ctx->saved_data["has_bias"] = b.numel() > 0;
		ctx->saved_data["bf16"] = bf16;
		auto shape = x_in.sizes().vec();
		shape.back() = N;
		return y.view(shape);
	}

	static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
						     torch::autograd::tensor_list grad_out)
	{
		auto saved = ctx->get_saved_variables();
		auto &x = saved[0], &w = saved[1];
		const bool bf16 = ctx->saved_data["bf16"].toBool();
		const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
		auto gy = grad_out[0].reshape({M, N});
		if (!bf16 || gy.scalar_type() != torch::kBFloat16)
			gy = gy.to(torch::kFloat);
		gy = gy.contiguous();
		torch::Tensor gx, gw, gb;
		if (ctx->needs_input_grad(0)) {
			gx = torch::empty({M, K}, x.options());
			linear_product(bf16, false, false, M, K, N, gy, w, gx, nullptr);
			auto shape = grad_out[0].sizes().vec();
			shape.back() = K;
			gx = gx.view(shape);
		}
		if (ctx->needs_input_grad(1)) {
			gw = torch::empty({N, K}, w.options());
			linear_product(bf16, true, false, N, K, M, gy, x, gw, nullptr);
		}
		if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2))
			gb = gy.sum(0, false, torch::kFloat);
		return {gx, gw, gb, torch::Tensor()};
	}
};

} // namespace

std::string blas_core()
{
	static const std::string name = [] {
		using fn = char *(*)();
		auto f = reinterpret_cast<fn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
		const char *n = f ? f() : nullptr;
		return std::string(n ? n : "");
	}();
	return name;
}

// Decided once: own_gemm_active() runs before every product.
bool blas_runs_avx512()
{
	static const bool yes = [] {
		std::string n = blas_core();
		for (auto &ch : n)
			ch = char(std::tolower(static_cast<unsigned char>(ch)));
		return n == "skylakex" || n == "cooperlake" || n == "sapphirerapids";
	}();
	return yes;
}

bool own_gemm_active()
{
	static const int e = env_switch("KNLP_GEMM");
	if (e >= 0)
		return e == 1 && kernel_isa() == 2;
	return g_switch.load(std::memory_order_relaxed) != 0 && kernel_isa() == 2 && !blas_runs_avx512();
}

bool sgemm_direct()
{
	return own_gemm_active() || blas_sgemm();
}

std::string gemm_engine()
{
	const std::string core = blas_core();
	if (own_gemm_active())
		return "knlp-avx512";
	return core.empty() ? "blas" : "blas (OpenBLAS " + core + ")";
}

void set_own_gemm(bool on)
{
	g_switch.store(on ? 1 : 0, std::memory_order_relaxed);
}

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b,
	   int64_t ldb, float beta, float *c, int64_t ldc)
{
	if (own_gemm_active())
		own_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, nullptr);
	else
		blas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

torch::Tensor linear(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b)
{
	if (x.device().is_cpu() && compat::autocast_compute_dtype(x.device()) == torch::kBFloat16 &&
	    (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16) &&
	    (w.scalar_type() == torch::kFloat || w.scalar_type() == torch::kBFloat16) && w.dim() == 2 && x.dim() >= 1 &&
	    x.size(-1) == w.size(1) &&
	    (!b.defined() || (b.scalar_type() == torch::kFloat && b.dim() == 1 && b.size(0) == w.size(0))) &&
	    own_bf16_gemm_active())
		return linear_bf16(x, w, b);
	const bool applies =
		x.device().is_cpu() && x.scalar_type() == torch::kFloat && w.scalar_type() == torch::kFloat &&
		w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1) &&
		(!b.defined() || (b.scalar_type() == torch::kFloat && b.dim() == 1 && b.size(0) == w.size(0))) &&
		!at::autocast::is_cpu_enabled() && own_gemm_active();
	if (!applies)
		return b.defined() ? torch::linear(x, w, b) : torch::linear(x, w);
	// An empty tensor stands for no bias (autograd's inputs must be defined tensors).
	return GemmLinear::apply(x, w, b.defined() ? b : torch::empty({0}, w.options()), false);
}

torch::Tensor linear_bf16(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b)
{
	auto fb = [](const torch::Tensor &t) {
		return t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kBFloat16;
	};
	TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu() && fb(x) && fb(w) && w.dim() == 2 && x.dim() >= 1 &&
			    x.size(-1) == w.size(1),
		    "linear_bf16: x [..., in] and w [out, in], CPU float32 or bf16");
	TORCH_CHECK(!b.defined() || (b.scalar_type() == torch::kFloat && b.dim() == 1 && b.size(0) == w.size(0)),
		    "linear_bf16: the bias must be float32 [out]");
	return GemmLinear::apply(x, w, b.defined() ? b : torch::empty({0}, w.options().dtype(torch::kFloat)), true);
}

int env_switch(const char *name)
{
	const char *e = std::getenv(name);
	return !e || !*e ? -1 : std::strcmp(e, "0") != 0 ? 1 : 0;
}

} // namespace knlp
