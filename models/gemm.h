// knlp's float32 matrix product for CPUs with AVX-512, and the linear layer on top of it.
//
// libtorch's float32 products go to the BLAS it links (OpenBLAS on Debian), whose speed
// depends on which of its kernels runs: OpenBLAS picks them by CPU, and OPENBLAS_CORETYPE
// overrides it (this workplace sets Haswell, AVX2 kernels, on every machine). On an
// AVX-512 CPU with AVX2 kernels libtorch's products run at about half of what its
// AVX-512 kernels reach. This product, a packed 8x48 register-blocked AVX-512 kernel,
// runs the GPT-2 shapes at 1.5-2x the AVX2 kernels and about even with OpenBLAS's AVX-512
// ones (`knlp_bench gemm`, docs/performance.md), so it is used where the CPU has AVX-512
// and the BLAS is not running AVX-512 kernels already. Elsewhere sgemm calls the BLAS.
//
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include <torch/torch.h>

namespace knlp {

// Row-major C = alpha op(A) op(B) + beta C: op(A) is m x k (A itself k x m when ta, with
// leading dimension lda), op(B) is k x n. beta 0 ignores C's old contents (NaN included).
// Threaded on libtorch's threads; inside a parallel region on the calling thread alone.
void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b,
	   int64_t ldb, float beta, float *c, int64_t ldc);

// Whether sgemm uses knlp's kernel now: the CPU has AVX-512 (F, BW, DQ, VL), libtorch's
// kernels are not capped below it (ATEN_CPU_CAPABILITY, as the fused kernels), the BLAS
// does not run AVX-512 kernels (openblas_get_corename), and it is switched on
// (CONFIG_CPU_GEMM). KNLP_GEMM=1 uses it whatever the BLAS runs, KNLP_GEMM=0 never.
bool own_gemm_active();
// Whether sgemm runs without going through ATen: knlp's kernel or a BLAS libtorch links.
bool sgemm_direct();
// The engine's name for run records and benchmarks: "knlp-avx512", or "blas" with
// OpenBLAS's kernel set ("blas (OpenBLAS Haswell)").
std::string gemm_engine();
// The kernel set of the OpenBLAS libtorch links ("Haswell", "SkylakeX", ...; "" for
// another BLAS).
std::string blas_core();
// The switch (CONFIG_CPU_GEMM). KNLP_GEMM in the environment, when set, wins over it.
void set_own_gemm(bool on);

// Row-major C = op(A) op(B) (+ bias[j]) in bf16 with float32 sums, on CPUs with AVX-512
// and AVX512-BF16 (models/gemm_bf16.cpp). A, B: float32 (rounded to bf16, to nearest even,
// while they are packed) or bf16 bits (x_bf16); C float32 or bf16 (rounded once from the
// float32 sums). op as for sgemm; C's old contents are ignored, or with accumulate (a
// float32 C, no bias) the product is added to them. Threaded as sgemm. Each
// element of C is summed in one order whatever the thread count.
void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a, bool a_bf16, int64_t lda,
	       const void *b, bool b_bf16, int64_t ldb, void *c, bool c_bf16, int64_t ldc, const float *bias = nullptr,
	       bool accumulate = false);
// Whether the CPU can run gemm_bf16: AVX-512 (F, BW, DQ, VL, not capped by
// ATEN_CPU_CAPABILITY) with AVX512-BF16.
bool bf16_gemm_available();
// Whether the CPU reports AMX-BF16 (CPUID leaf 7, EDX bit 22).
bool cpu_has_amx_bf16();
// Whether linear runs its bf16 products (under CPU bf16 autocast) through gemm_bf16: it is
// available, switched on (CONFIG_CPU_GEMM_BF16) and the CPU has no AMX-BF16 (there
// oneDNN's tile kernels are faster); KNLP_BF16_GEMM=0|1 in the environment wins over the
// switch and over AMX.
bool own_bf16_gemm_active();
void set_own_bf16_gemm(bool on);
// The engine of CPU bf16 products for run records: "knlp-avx512-bf16" or "onednn".
std::string bf16_gemm_engine();
// y = x W^T + b with its three products through gemm_bf16 (which must be available): x
// float32 or bf16 [..., in], w float32 or bf16 [out, in], b float32 [out] or undefined.
// y is bf16 (the bias added before the rounding); x's and w's gradients come in their own
// dtypes, the bias's in float32. linear() calls it under CPU bf16 autocast while
// own_bf16_gemm_active().
torch::Tensor linear_bf16(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b = {});

// A packing buffer of one thread for the product kernels, grown on demand, 64-byte aligned.
template <class T> struct AlignedBuffer {
	std::unique_ptr<T[], void (*)(void *)> p{nullptr, std::free};
	size_t n = 0;
	T *get(size_t want)
	{
		if (want > n) {
			p.reset(static_cast<T *>(std::aligned_alloc(64, (want * sizeof(T) + 63) / 64 * 64)));
			if (!p)
				throw std::bad_alloc();
			n = want;
		}
		return p.get();
	}
};

// A switch from the environment (KNLP_GEMM, KNLP_BF16_GEMM): 1 when set to anything but
// "0", 0 for "0", -1 when unset or empty.
int env_switch(const char *name);

// y = x W^T + b (b may be undefined) with its gradients through sgemm, for CPU float32
// x [..., in], w [out, in] outside bf16 autocast while own_gemm_active(); under CPU bf16
// autocast through linear_bf16 while own_bf16_gemm_active(); libtorch's linear otherwise.
torch::Tensor linear(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &b = {});

} // namespace knlp
