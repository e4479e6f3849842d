// knlp's bf16 matrix product for CPUs with AVX512-BF16 (models/gemm.h).
//
// The operands are rounded to bf16 while they are packed (from float32 or read as bf16),
// the sums are float32 (vdpbf16ps: each lane adds the products of a pair of k values).
// The design is that of the float32 kernel in models/gemm.cpp with k taken in pairs:
// a B panel is [k/2][48 columns] of 32-bit pairs, an A panel [k/2][8 rows] of pairs, and
// the 8 x 48 tile is 24 zmm registers of sums, fed per pair of k by three loads of B and
// eight broadcasts of A.
#include "models/gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "models/fused.h"

namespace knlp {

namespace {

constexpr int64_t MR = 8, NV = 3, NR = 16 * NV;
// k in one block up to this many values for a bf16 C: the tile is then written once, and
// needs no float32 partial sums. A float32 C takes k in blocks of up to KC_MAX_F32 (the
// sums of later blocks added to it), so that a B panel stays near L1: `knlp_bench gemm`
// under KNLP_BENCH_BF16 measured the weight gradients (k = 3072) 4-8% faster in blocks of
// 256 or 512 than in one. Longer k is cut into equal blocks.
constexpr int64_t KC_MAX = 4096, KC_MAX_F32 = 512;

#define KNLP_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma")))

int64_t k_block(int64_t k, bool bf16_out)
{
	const int64_t mx = bf16_out ? KC_MAX : KC_MAX_F32;
	const int64_t blocks = (k + mx - 1) / mx;
	return (k + blocks - 1) / blocks;
}

// Rows of A per block (its packed block stays in L2: about 256 KiB) and columns of B per
// block (about 4 MiB), for a k block of kc values.
int64_t m_block(int64_t kc)
{
	return std::clamp<int64_t>(262144 / (2 * kc) / MR * MR, MR, 192);
}
int64_t n_block(int64_t kc)
{
	return std::clamp<int64_t>(4194304 / (2 * kc) / NR * NR, NR, 3072);
}

// 16 values from p (lanes beyond mask zero) as bf16 bits.
KNLP_BF16 inline __m256i load16(const float *p, __mmask16 m)
{
	return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, p));
}
KNLP_BF16 inline __m256i load16(const uint16_t *p, __mmask16 m)
{
	return _mm256_maskz_loadu_epi16(m, p);
}

inline __mmask16 mask16(int64_t n)
{
	return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// An 8 x 8 transpose of 32-bit elements.
KNLP_BF16 inline void transpose8(__m256i r[8])
{
	__m256 t[8], u[8];
	for (int i = 0; i < 4; i++) {
		t[2 * i] = _mm256_unpacklo_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
		t[2 * i + 1] = _mm256_unpackhi_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
	}
	for (int i = 0; i < 2; i++) {
		u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
		u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xee);
		u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
		u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
	}
	for (int i = 0; i < 4; i++) {
		r[i] = _mm256_castps_si256(_mm256_permute2f128_ps(u[i], u[4 + i], 0x20));
		r[4 + i] = _mm256_castps_si256(_mm256_permute2f128_ps(u[i], u[4 + i], 0x31));
	}
}

// Pairs of rows g..g + 15 (v) into panels of `width` rows (kcp pairs each) from base.
KNLP_BF16 inline void put_pairs(uint32_t *base, int64_t width, int64_t kcp, int64_t padded, int64_t g, __m512i v)
{
	uint32_t *d = base + (g / width) * width * kcp + g % width;
	if (width >= 16) {
		_mm512_storeu_si512(d, v);
	} else { // panels of 8: rows g.. in one, g + 8.. in the next
		_mm256_storeu_si256(reinterpret_cast<__m256i *>(d), _mm512_castsi512_si256(v));
		if (g + 8 < padded)
			_mm256_storeu_si256(reinterpret_cast<__m256i *>(d + width * kcp),
					    _mm512_extracti64x4_epi64(v, 1));
	}
}

// The threaded product's budgets: the whole operand's packed share per group of k blocks
// (in L2 and L3), and a block of columns' packed B (in L2).
constexpr int64_t WHOLE_BYTES = 4 << 20, ITEM_BYTES = 512 << 10;
constexpr int64_t PF = 4; // pairs of k prefetched ahead by the strided packing

// Operand rows [r0, r0 + nrows) (rows: what becomes a panel's width, i of A or j of B),
// values [p0, p0 + kc) of k, packed as pairs into panels of `width` rows: pair q of row r
// of a panel at dst[q * width + r]; rows and pairs past the ends are zeros.
//
// kmajor: element (r, p) at s[r * ld + p] (k contiguous: A as is, B transposed), so a pair
// is 32 contiguous bits and the packing is an 8 x 8 transpose of pairs. Otherwise element
// (r, p) at s[p * ld + r] (rows contiguous), and two rows of k are interleaved.
template <class S>
KNLP_BF16 void pack(bool kmajor, const S *s, int64_t ld, int64_t r0, int64_t nrows, int64_t p0, int64_t kc,
		    int64_t width, uint32_t *dst)
{
	const int64_t kcp = (kc + 1) / 2;
	if (!kmajor) {
		// Rows contiguous: for each pair of k, 32 rows at a time across all panels (the
		// source read in order), the two k interleaved by two permutes, then 16 at a time
		// under masks. 16 rows lie in one panel of 48, or fill two panels of 8.
		const int64_t padded = (nrows + width - 1) / width * width;
		alignas(64) static const uint16_t lo_v[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
							      37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
							      11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
		const __m512i lo_idx = _mm512_load_si512(lo_v),
			      hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
		const int64_t full = nrows / 32 * 32;
		for (int64_t q = 0; q < kcp; q++) {
			const S *e = s + (p0 + 2 * q) * ld + r0;
			const bool odd = 2 * q + 1 < kc;
			// The two rows PF pairs ahead into the cache: the rows are short segments of long
			// ones (one block of columns), too short for the hardware's stream detection.
			if (q + PF < kcp)
				for (int64_t g = 0; g < nrows; g += 64 / int64_t(sizeof(S))) {
					_mm_prefetch(reinterpret_cast<const char *>(e + 2 * PF * ld + g), _MM_HINT_T0);
					if (2 * (q + PF) + 1 < kc)
						_mm_prefetch(reinterpret_cast<const char *>(e + (2 * PF + 1) * ld + g),
							     _MM_HINT_T0);
				}
			uint32_t *base = dst + q * width;
			int64_t g = 0;
			// 32 rows a time: 32 values of each k, two permutes.
			for (; g < full; g += 32) {
				__m512i a, b;
				if constexpr (std::is_same_v<S, float>) {
					a = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(e + g + 16),
									 _mm512_loadu_ps(e + g));
					b = odd ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(e + ld + g + 16),
									       _mm512_loadu_ps(e + ld + g))
						: _mm512_setzero_si512();
				} else {
					a = _mm512_loadu_si512(e + g);
					b = odd ? _mm512_loadu_si512(e + ld + g) : _mm512_setzero_si512();
				}
				put_pairs(base, width, kcp, padded, g, _mm512_permutex2var_epi16(a, lo_idx, b));
				put_pairs(base, width, kcp, padded, g + 16, _mm512_permutex2var_epi16(a, hi_idx, b));
			}
			for (; g < padded; g += 16) {
				const __mmask16 m = mask16(nrows - g);
				const __m256i lo = load16(e + g, m),
					      hi = odd ? load16(e + ld + g, m) : _mm256_setzero_si256();
				put_pairs(base, width, kcp, padded, g,
					  _mm512_permutex2var_epi16(_mm512_castsi256_si512(lo), lo_idx,
								    _mm512_castsi256_si512(hi)));
			}
		}
		return;
	}
	for (int64_t pr = 0; pr < nrows; pr += width) {
		uint32_t *d = dst + pr * kcp;
		const int64_t rows = std::min(width, nrows - pr);
		for (int64_t g = 0; g < width; g += 8)
			for (int64_t q = 0; q < kcp; q += 8) {
				const __mmask16 m = mask16(kc - 2 * q);
				__m256i v[8];
				for (int64_t i = 0; i < 8; i++)
					v[i] = g + i < rows ? load16(s + (r0 + pr + g + i) * ld + p0 + 2 * q, m)
							    : _mm256_setzero_si256();
				// The next group of 8 rows at the same columns.
				for (int64_t i = 8; i < 16; i++)
					if (g + i < rows)
						_mm_prefetch(reinterpret_cast<const char *>(s + (r0 + pr + g + i) * ld +
											    p0 + 2 * q),
							     _MM_HINT_T0);
				transpose8(v);
				const int64_t nq = std::min<int64_t>(8, kcp - q);
				for (int64_t j = 0; j < nq; j++)
					_mm256_storeu_si256(reinterpret_cast<__m256i *>(d + (q + j) * width + g), v[j]);
			}
	}
}

// The tile's sums: the first k block writes C (+ bias[j]), later ones add (float32 C
// only). Edges store under masks.
template <bool BF16_OUT>
KNLP_BF16 void kernel_tile(int64_t kcp, const uint32_t *__restrict a, const uint32_t *__restrict b, void *cv,
			   int64_t ldc, int64_t mr, int64_t nr, bool first, const float *bias)
{
	__m512 acc[MR][NV];
	for (int i = 0; i < MR; i++)
		for (int h = 0; h < NV; h++)
			acc[i][h] = _mm512_setzero_ps();
	for (int64_t q = 0; q < kcp; q++) {
		__m512bh bv[NV];
		for (int h = 0; h < NV; h++)
			bv[h] = (__m512bh)_mm512_loadu_si512(b + q * NR + 16 * h);
		const uint32_t *ap = a + q * MR;
		for (int i = 0; i < MR; i++) {
			const __m512bh av = (__m512bh)_mm512_set1_epi32(int(ap[i]));
			for (int h = 0; h < NV; h++)
				acc[i][h] = _mm512_dpbf16_ps(acc[i][h], av, bv[h]);
		}
	}
	__mmask16 mk[NV];
	for (int h = 0; h < NV; h++)
		mk[h] = mask16(nr - 16 * h);
	if (first && bias)
		for (int h = 0; h < NV; h++) {
			const __m512 v = _mm512_maskz_loadu_ps(mk[h], bias + 16 * h);
			for (int i = 0; i < MR; i++)
				acc[i][h] = _mm512_add_ps(acc[i][h], v);
		}
	// Constant row indices (the loop unrolled, rows past mr skipped): a loop to the run-time
	// mr would index acc in memory, and the compiler would then zero and spill all 24
	// registers through the stack on every call.
	for (int i = 0; i < MR; i++)
		for (int h = 0; h < NV; h++) {
			if (i >= mr || !mk[h])
				continue;
			if constexpr (BF16_OUT) {
				uint16_t *ci = static_cast<uint16_t *>(cv) + i * ldc + 16 * h;
				_mm256_mask_storeu_epi16(ci, mk[h], (__m256i)_mm512_cvtneps_pbh(acc[i][h]));
			} else {
				float *ci = static_cast<float *>(cv) + i * ldc + 16 * h;
				__m512 v = acc[i][h];
				if (!first)
					v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk[h], ci));
				_mm512_mask_storeu_ps(ci, mk[h], v);
			}
		}
}

using Buffer = AlignedBuffer<uint32_t>;

template <class SA, class SB, bool BF16_OUT>
void block(bool ta, bool tb, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t k, const SA *a, int64_t lda,
	   const SB *b, int64_t ldb, void *c, int64_t ldc, const float *bias, bool acc)
{
	thread_local Buffer pa, pb;
	const int64_t KC = k_block(k, BF16_OUT), KCP = (KC + 1) / 2, MC = m_block(KC), NC = n_block(KC);
	uint32_t *ap = pa.get(size_t(MC * KCP)), *bp = pb.get(size_t(KCP * std::min(NC, (j1 - j0 + NR - 1) / NR * NR)));
	const size_t esz = BF16_OUT ? 2 : 4;
	for (int64_t jc = j0; jc < j1; jc += NC) {
		const int64_t nc = std::min(NC, j1 - jc);
		for (int64_t pc = 0; pc < k; pc += KC) {
			const int64_t kc = std::min(KC, k - pc), kcp = (kc + 1) / 2;
			pack<SB>(tb, b, ldb, jc, nc, pc, kc, NR, bp);
			for (int64_t ic = i0; ic < i1; ic += MC) {
				const int64_t mc = std::min(MC, i1 - ic);
				pack<SA>(!ta, a, lda, ic, mc, pc, kc, MR, ap);
				for (int64_t jr = 0; jr < nc; jr += NR)
					for (int64_t ir = 0; ir < mc; ir += MR)
						kernel_tile<BF16_OUT>(kcp, ap + ir * kcp, bp + jr * kcp,
								      static_cast<char *>(c) +
									      ((ic + ir) * ldc + jc + jr) * esz,
								      ldc, std::min(MR, mc - ir), std::min(NR, nc - jr),
								      pc == 0 && !acc, bias ? bias + jc + jr : nullptr);
			}
		}
	}
}

// Threaded: the operand every part of C reads whole (B when C is cut into blocks of rows,
// A when into blocks of columns: whichever is smaller) is packed once, by all threads,
// then the blocks of C are handed to whichever thread is free (parallel_items), each
// packing its own part of the other operand. A thread's blocks of C are whole, so every
// element is summed in the same order whatever the thread count.
template <class SA, class SB, bool BF16_OUT>
void run(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const SA *a, int64_t lda, const SB *b, int64_t ldb, void *c,
	 int64_t ldc, const float *bias, bool acc)
{
	const int threads = parallel_threads();
	const bool split = threads > 1 && double(m) * double(n) * double(k) >= 2e6;
	if (!split) {
		block<SA, SB, BF16_OUT>(ta, tb, 0, m, 0, n, k, a, lda, b, ldb, c, ldc, bias, acc);
		return;
	}
	const int64_t KC = k_block(k, BF16_OUT), KCP = (KC + 1) / 2, kblocks = (k + KC - 1) / KC;
	const size_t esz = BF16_OUT ? 2 : 4;
	auto kc_of = [&](int64_t kb) { return std::min(KC, k - kb * KC); };
	const bool rows = n <= m; // B is packed whole
	const int64_t W = rows ? NR : MR, extent = rows ? n : m, panels = (extent + W - 1) / W;
	// k blocks in groups whose packed share of the whole operand stays in the cache
	// (WHOLE_BYTES): every block of C reads all of it, so a whole operand larger than the
	// cache would be read from memory once per block of C (the head's input gradient at
	// 256 rows: 26 MB, read by every block of columns). The blocks are summed in the same
	// order either way.
	const int64_t block_bytes = panels * KCP * W * 4;
	const int64_t group = std::clamp<int64_t>(WHOLE_BYTES / std::max<int64_t>(block_bytes, 1), 1, kblocks);
	// A group's blocks of k of the whole operand: panels of kcp pairs each, after the
	// group's earlier blocks. The calling thread's buffer, kept between calls (no
	// allocation, no fresh pages).
	thread_local Buffer whole_buf;
	uint32_t *const whole = whole_buf.get(size_t(group * panels * KCP * W));
	// Blocks of columns (when A is whole): whole panels, wide ones (B's rows are read in
	// segments of a block's width, and short segments of long rows are slow to fetch), but
	// few enough panels that a block's packed B stays in L2; a multiple of the thread count
	// of them, so that the threads get equal shares.
	const int64_t npan = (n + NR - 1) / NR, cap = std::max<int64_t>(1, ITEM_BYTES / (NR * KCP * 4)),
		      rounds = (npan + threads * cap - 1) / (threads * cap),
		      per = std::max<int64_t>(1, (npan + threads * rounds - 1) / (threads * rounds));
	const int64_t MC = m_block(KC), items = rows ? (m + MC - 1) / MC : (npan + per - 1) / per;
	for (int64_t g0 = 0; g0 < kblocks; g0 += group) {
		const int64_t g1 = std::min(kblocks, g0 + group), gn = g1 - g0;
		parallel_for(0, gn * panels, 1, [&](int64_t t0, int64_t t1) {
			for (int64_t t = t0; t < t1; t++) {
				const int64_t kb = g0 + t / panels, pn = t % panels, kc = kc_of(kb), kcp = (kc + 1) / 2;
				uint32_t *d = whole + (kb - g0) * panels * KCP * W + pn * kcp * W;
				const int64_t r0 = pn * W, nr = std::min(W, extent - r0);
				if (rows)
					pack<SB>(tb, b, ldb, r0, nr, kb * KC, kc, NR, d);
				else
					pack<SA>(!ta, a, lda, r0, nr, kb * KC, kc, MR, d);
			}
		});
		const uint32_t *wp = whole;
		if (rows) {
			parallel_items(items, [&](int64_t it) {
				thread_local Buffer pa;
				uint32_t *ap = pa.get(size_t(MC * KCP));
				const int64_t ic = it * MC, mc = std::min(MC, m - ic);
				for (int64_t kb = g0; kb < g1; kb++) {
					const int64_t kc = kc_of(kb), kcp = (kc + 1) / 2;
					pack<SA>(!ta, a, lda, ic, mc, kb * KC, kc, MR, ap);
					const uint32_t *bk = wp + (kb - g0) * panels * KCP * NR;
					for (int64_t jr = 0; jr < n; jr += NR)
						for (int64_t ir = 0; ir < mc; ir += MR)
							kernel_tile<BF16_OUT>(
								kcp, ap + ir * kcp, bk + jr * kcp,
								static_cast<char *>(c) + ((ic + ir) * ldc + jr) * esz,
								ldc, std::min(MR, mc - ir), std::min(NR, n - jr),
								kb == 0 && !acc, bias ? bias + jr : nullptr);
				}
			});
			continue;
		}
		parallel_items(items, [&](int64_t it) {
			thread_local Buffer pb;
			const int64_t jc = it * per * NR, nc = std::min(per * NR, n - jc);
			uint32_t *bp = pb.get(size_t(per * NR * KCP));
			for (int64_t kb = g0; kb < g1; kb++) {
				const int64_t kc = kc_of(kb), kcp = (kc + 1) / 2;
				pack<SB>(tb, b, ldb, jc, nc, kb * KC, kc, NR, bp);
				const uint32_t *ak = wp + (kb - g0) * panels * KCP * MR;
				for (int64_t jr = 0; jr < nc; jr += NR)
					for (int64_t ir = 0; ir < m; ir += MR)
						kernel_tile<BF16_OUT>(kcp, ak + ir * kcp, bp + jr * kcp,
								      static_cast<char *>(c) +
									      (ir * ldc + jc + jr) * esz,
								      ldc, std::min(MR, m - ir), std::min(NR, nc - jr),
								      kb == 0 && !acc, bias ? bias + jc + jr : nullptr);
			}
		});
	}
}

template <class SA, class SB>
void run_out(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const SA *a, int64_t lda, const SB *b, int64_t ldb,
	     void *c, bool c_bf16, int64_t ldc, const float *bias, bool acc)
{
	if (!c_bf16) {
		run<SA, SB, false>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, bias, acc);
		return;
	}
	if (k <= KC_MAX) {
		run<SA, SB, true>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, bias, false);
		return;
	}
	// Several k blocks: float32 sums first, one rounding at the end.
	std::vector<float> t(size_t(m * n));
	run<SA, SB, false>(ta, tb, m, n, k, a, lda, b, ldb, t.data(), n, bias, false);
	auto *o = static_cast<uint16_t *>(c);
	for (int64_t i = 0; i < m; i++) {
		auto src = torch::from_blob(t.data() + i * n, {n});
		auto dst = torch::from_blob(o + i * ldc, {n}, torch::kBFloat16);
		dst.copy_(src);
	}
}

// Bit `bit` of CPUID leaf 7, sub-leaf `sub`, register EAX (reg 0) or EDX (reg 3).
bool cpuid7_bit(unsigned sub, int reg, int bit)
{
#if defined(__x86_64__)
	unsigned r[4];
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(7), "c"(sub));
	return (r[reg] >> bit) & 1u;
#else
	(void)sub, (void)reg, (void)bit;
	return false;
#endif
}

bool cpu_has_avx512_bf16()
{
	static const bool yes = cpuid7_bit(1, 0, 5);
	return yes;
}

} // namespace

bool cpu_has_amx_bf16()
{
	static const bool yes = cpuid7_bit(0, 3, 22);
	return yes;
}

namespace {

std::atomic<int> g_switch{1};

} // namespace

bool bf16_gemm_available()
{
	return kernel_isa() == 2 && cpu_has_avx512_bf16();
}

bool own_bf16_gemm_active()
{
	static const int e = env_switch("KNLP_BF16_GEMM");
	if (e >= 0)
		return e == 1 && bf16_gemm_available();
	// With AMX-BF16 oneDNN multiplies on the tile unit, faster than vdpbf16ps: it keeps
	// the products unless KNLP_BF16_GEMM=1 asks for knlp's.
	return g_switch.load(std::memory_order_relaxed) != 0 && bf16_gemm_available() && !cpu_has_amx_bf16();
}

std::string bf16_gemm_engine()
{
	return own_bf16_gemm_active() ? "knlp-avx512-bf16" : "onednn";
}

void set_own_bf16_gemm(bool on)
{
	g_switch.store(on ? 1 : 0, std::memory_order_relaxed);
}

void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a, bool a_bf16, int64_t lda,
	       const void *b, bool b_bf16, int64_t ldb, void *c, bool c_bf16, int64_t ldc, const float *bias,
	       bool accumulate)
{
	TORCH_CHECK(bf16_gemm_available(), "gemm_bf16: this CPU has no AVX512-BF16");
	TORCH_CHECK(!accumulate || (!c_bf16 && !bias), "gemm_bf16: accumulates into a float32 C without a bias");
	if (m == 0 || n == 0 || (k == 0 && accumulate))
		return;
	if (k == 0) { // C = bias (or 0)
		for (int64_t i = 0; i < m; i++) {
			auto row =
				c_bf16 ? torch::from_blob(static_cast<uint16_t *>(c) + i * ldc, {n}, torch::kBFloat16)
				       : torch::from_blob(static_cast<float *>(c) + i * ldc, {n});
			if (bias)
				row.copy_(torch::from_blob(const_cast<float *>(bias), {n}));
			else
				row.zero_();
		}
		return;
	}
	using U = uint16_t;
	if (a_bf16 && b_bf16)
		run_out(ta, tb, m, n, k, static_cast<const U *>(a), lda, static_cast<const U *>(b), ldb, c, c_bf16, ldc,
			bias, accumulate);
	else if (a_bf16)
		run_out(ta, tb, m, n, k, static_cast<const U *>(a), lda, static_cast<const float *>(b), ldb, c, c_bf16,
			ldc, bias, accumulate);
	else if (b_bf16)
		run_out(ta, tb, m, n, k, static_cast<const float *>(a), lda, static_cast<const U *>(b), ldb, c, c_bf16,
			ldc, bias, accumulate);
	else
		run_out(ta, tb, m, n, k, static_cast<const float *>(a), lda, static_cast<const float *>(b), ldb, c,
			c_bf16, ldc, bias, accumulate);
}

} // namespace knlp
