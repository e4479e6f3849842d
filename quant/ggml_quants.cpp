#include "quant/ggml_quants.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"

namespace knlp {

namespace {

constexpr int64_t QK = 32, QK_K = 256;
constexpr float GROUP_MAX_EPS = 1e-15f;

const GgmlTypeInfo k_f32{"f32", 1, 4}, k_f16{"f16", 1, 2}, k_q4_0{"q4_0", QK, 18}, k_q8_0{"q8_0", QK, 34},
	k_q5_0{"q5_0", QK, 22}, k_q5_1{"q5_1", QK, 24}, k_q3_k{"q3_k", QK_K, 110}, k_q4_k{"q4_k", QK_K, 144},
	k_q5_k{"q5_k", QK_K, 176}, k_q6_k{"q6_k", QK_K, 210};

// Round half to even for |x| < 2^22: adding 1.5 x 2^23 leaves the rounded integer in the
// low mantissa bits (one float add instead of a libm call; the same result as rint).
inline int nearest_int(float x)
{
	float v = x + 12582912.f;
	int32_t i;
	std::memcpy(&i, &v, 4);
	return (i & 0x007fffff) - 0x00400000;
}

inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = uint8_t(v & 0xff);
	p[1] = uint8_t(v >> 8);
}
inline uint16_t get16(const uint8_t *p)
{
	return uint16_t(p[0] | (p[1] << 8));
}
inline float half_at(const uint8_t *p)
{
	return fp16_to_fp32(get16(p));
}

// ---- scale searches (the reference quantizers' choices)

// The start both forms of search_scale_min share: the range, the weighted sums and the
// codes of the plain min-max scale with their error. False (codes 0, *neg_min set) when
// every value is the same.
struct ScaleStart {
	float mn, mx, sum_w, sum_x, scale, best;
};
bool scale_search_start(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min, ScaleStart *st)
{
	// No fused multiply-adds where this is inlined into the AVX-512 form: both forms must round
	// alike.
#ifdef __clang__
#pragma clang fp contract(off)
#endif
	float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0];
	for (int i = 1; i < n; i++) {
		mn = std::min(mn, x[i]);
		mx = std::max(mx, x[i]);
		sum_w += w[i];
		sum_x += w[i] * x[i];
	}
	if (mn > 0)
		mn = 0;
	if (mx == mn) {
		std::fill(L, L + n, uint8_t(0));
		*neg_min = -mn;
		return false;
	}
	float iscale = nmax / (mx - mn), scale = 1 / iscale, best = 0;
	for (int i = 0; i < n; i++) {
		int l = std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax);
		L[i] = uint8_t(l);
		float d = scale * l + mn - x[i];
		best += w[i] * (d * d);
	}
	*st = {mn, mx, sum_w, sum_x, scale, best};
	return true;
}

// Asymmetric codes 0..nmax with a scale and a (non-positive) min, weighted least squares
// over a sweep of nstep+1 candidate inverse scales. Returns the scale; *neg_min = -min.
float search_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min, uint8_t *Laux,
		       float rmin, float rdelta, int nstep)
{
	ScaleStart st;
	if (!scale_search_start(n, nmax, x, w, L, neg_min, &st))
		return 0.f;
	float mn = st.mn, scale = st.scale, best = st.best;
	const float mx = st.mx, sum_w = st.sum_w, sum_x = st.sum_x;
	float iscale;
	for (int is = 0; is <= nstep; is++) {
		iscale = (rmin + rdelta * is + nmax) / (mx - mn);
		float sl = 0, sl2 = 0, sxl = 0;
		for (int i = 0; i < n; i++) {
			int l = std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax);
			Laux[i] = uint8_t(l);
			sl += w[i] * l;
			sl2 += w[i] * l * l;
			sxl += w[i] * l * x[i];
		}
		float D = sum_w * sl2 - sl * sl;
		if (D > 0) {
			float s = (sum_w * sxl - sum_x * sl) / D, m = (sl2 * sum_x - sl * sxl) / D;
			if (m > 0) {
				m = 0;
				s = sxl / sl2;
			}
			float err = 0;
			for (int i = 0; i < n; i++) {
				float d = s * Laux[i] + m - x[i];
				err += w[i] * (d * d);
			}
			if (err < best) {
				std::copy(Laux, Laux + n, L);
				best = err;
				scale = s;
				mn = m;
			}
		}
	}
	*neg_min = -mn;
	return scale;
}

#if defined(__x86_64__) && defined(__clang__)
// search_scale_min with the candidate scales across the lanes of two AVX-512 registers:
// each lane runs one candidate's sums over x in the scalar loop's order with the same
// roundings (separate multiplies and adds, no fused ones), so the choice and the codes are
// bit-identical to it (test GgmlQuants.VectorScaleSearchMatchesTheScalarOne), at about a
// tenth of the time. Up to 32 candidates (nstep <= 31).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) float search_scale_min_avx512(int n, int nmax,
											    const float *x,
											    const float *w, uint8_t *L,
											    float *neg_min, float rmin,
											    float rdelta, int nstep)
{
#pragma clang fp contract(off)
	ScaleStart st;
	if (!scale_search_start(n, nmax, x, w, L, neg_min, &st))
		return 0.f;
	float mn = st.mn, scale = st.scale, best = st.best;
	const float mx = st.mx, sum_w = st.sum_w, sum_x = st.sum_x;
	// A candidate that wins moves the min (mn), and the candidates after it scale from the new
	// min, as in the scalar loop: so the lanes after a winner are computed again.
	alignas(64) float is[32], vsl[32], vsl2[32], vsxl[32], vs[32], vm[32], verr[32];
	bool valid[32];
	const int nc = nstep + 1;
	const __m512i top = _mm512_set1_epi32(nmax);
#define codes(scale_v, xm)                                                                                             \
	_mm512_cvtepi32_ps(                                                                                            \
		_mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(scale_v, _mm512_set1_ps(xm))),      \
						  _mm512_setzero_si512()),                                             \
				 top))
	int start = 0;
	while (start < nc) {
		for (int c = 0; c < 32; c++)
			is[c] = c >= start && c < nc ? (rmin + rdelta * c + nmax) / (mx - mn) : 0.f;
		const __m512 is0 = _mm512_load_ps(is), is1 = _mm512_load_ps(is + 16);
		__m512 sl0 = _mm512_setzero_ps(), sl1 = sl0, sl20 = sl0, sl21 = sl0, sx0 = sl0, sx1 = sl0;
		for (int i = 0; i < n; i++) {
			const float xm = x[i] - mn;
			const __m512 wi = _mm512_set1_ps(w[i]), xi = _mm512_set1_ps(x[i]);
			const __m512 l0 = codes(is0, xm), l1 = codes(is1, xm);
			const __m512 wl0 = _mm512_mul_ps(wi, l0), wl1 = _mm512_mul_ps(wi, l1);
			sl0 = _mm512_add_ps(sl0, wl0), sl1 = _mm512_add_ps(sl1, wl1);
			sl20 = _mm512_add_ps(sl20, _mm512_mul_ps(wl0, l0));
			sl21 = _mm512_add_ps(sl21, _mm512_mul_ps(wl1, l1));
			sx0 = _mm512_add_ps(sx0, _mm512_mul_ps(wl0, xi)),
			sx1 = _mm512_add_ps(sx1, _mm512_mul_ps(wl1, xi));
		}
		_mm512_store_ps(vsl, sl0), _mm512_store_ps(vsl + 16, sl1);
		_mm512_store_ps(vsl2, sl20), _mm512_store_ps(vsl2 + 16, sl21);
		_mm512_store_ps(vsxl, sx0), _mm512_store_ps(vsxl + 16, sx1);
		bool any = false;
		for (int c = 0; c < 32; c++) {
			vs[c] = vm[c] = 0;
			valid[c] = false;
			if (c < start || c >= nc)
				continue;
			const float sl = vsl[c], sl2 = vsl2[c], sxl = vsxl[c];
			const float D = sum_w * sl2 - sl * sl;
			if (!(D > 0))
				continue;
			float sc = (sum_w * sxl - sum_x * sl) / D, m = (sl2 * sum_x - sl * sxl) / D;
			if (m > 0) {
				m = 0;
				sc = sxl / sl2;
			}
			vs[c] = sc, vm[c] = m, valid[c] = any = true;
		}
		if (!any)
			break;
		const __m512 s0 = _mm512_load_ps(vs), s1 = _mm512_load_ps(vs + 16), m0 = _mm512_load_ps(vm),
			     m1 = _mm512_load_ps(vm + 16);
		__m512 e0 = _mm512_setzero_ps(), e1 = e0;
		for (int i = 0; i < n; i++) {
			const float xm = x[i] - mn;
			const __m512 wi = _mm512_set1_ps(w[i]), xi = _mm512_set1_ps(x[i]);
			const __m512 d0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(s0, codes(is0, xm)), m0), xi);
			const __m512 d1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(s1, codes(is1, xm)), m1), xi);
			e0 = _mm512_add_ps(e0, _mm512_mul_ps(wi, _mm512_mul_ps(d0, d0)));
			e1 = _mm512_add_ps(e1, _mm512_mul_ps(wi, _mm512_mul_ps(d1, d1)));
		}
		_mm512_store_ps(verr, e0), _mm512_store_ps(verr + 16, e1);
		int win = -1;
		for (int c = start; c < nc && win < 0; c++)
			if (valid[c] && verr[c] < best)
				win = c;
		if (win < 0)
			break;
		for (int i = 0; i < n; i++) // the winner's codes, from the min they were computed with
			L[i] = uint8_t(std::clamp(nearest_int(is[win] * (x[i] - mn)), 0, nmax));
		best = verr[win];
		scale = vs[win];
		mn = vm[win];
		start = win + 1;
	}
#undef codes
	*neg_min = -mn;
	return scale;
}

bool cpu_has_avx512()
{
	static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
				__builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
	return yes;
}
#endif

// Both symmetric searches start alike: codes round(-nmax x / max) in [-nmax, nmax-1] (max:
// the value of largest |x|), stored + offset, and their x^2-weighted sums. False (codes 0)
// when every |x| is below GROUP_MAX_EPS.
bool sym_start(int n, int nmax, const float *x, int8_t *L, int offset, float *mx, float *sumlx, float *suml2)
{
	float amax = 0;
	*mx = 0;
	for (int i = 0; i < n; i++) {
		float ax = std::fabs(x[i]);
		if (ax > amax) {
			amax = ax;
			*mx = x[i];
		}
	}
	if (amax < GROUP_MAX_EPS) {
		std::fill(L, L + n, int8_t(0));
		return false;
	}
	const float iscale = -nmax / *mx;
	*sumlx = *suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
		L[i] = int8_t(l + offset);
		float w = x[i] * x[i];
		*sumlx += w * x[i] * l;
		*suml2 += w * l * l;
	}
	return true;
}

// Symmetric codes in [-nmax, nmax-1] (stored + nmax), weights x^2, with a sweep of 18
// inverse scales around nmax / max. Returns the scale (negative when the largest |x| is
// positive, as in ggml).
float search_scale_sym(int n, int nmax, const float *x, int8_t *L)
{
	float mx, sumlx, suml2;
	if (!sym_start(n, nmax, x, L, nmax, &mx, &sumlx, &suml2))
		return 0.f;
	float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
	for (int is = -9; is <= 9; is++) {
		if (is == 0)
			continue;
		const float iscale = -(nmax + 0.1f * is) / mx;
		sumlx = suml2 = 0;
		for (int i = 0; i < n; i++) {
			int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
			float w = x[i] * x[i];
			sumlx += w * x[i] * l;
			suml2 += w * l * l;
		}
		if (suml2 > 0 && sumlx * sumlx > best * suml2) {
			for (int i = 0; i < n; i++)
				L[i] = int8_t(nmax + std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
			scale = sumlx / suml2;
			best = scale * sumlx;
		}
	}
	return scale;
}

// Symmetric codes in [-nmax, nmax-1] refined one element at a time (up to 5 sweeps) to
// maximise (sum w x l)^2 / sum w l^2 with w = x^2; codes returned + nmax.
float search_scale_sym_refine(int n, int nmax, const float *x, int8_t *L)
{
	float mx, sumlx, suml2;
	if (!sym_start(n, nmax, x, L, 0, &mx, &sumlx, &suml2))
		return 0.f;
	for (int pass = 0; pass < 5; pass++) {
		int changed = 0;
		for (int i = 0; i < n; i++) {
			float w = x[i] * x[i];
			float slx = sumlx - w * x[i] * L[i];
			if (slx > 0) {
				float sl2 = suml2 - w * L[i] * L[i];
				int nl = std::clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
				if (nl != L[i]) {
					slx += w * x[i] * nl;
					sl2 += w * nl * nl;
					if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = int8_t(nl);
						sumlx = slx;
						suml2 = sl2;
						changed++;
					}
				}
			}
		}
		if (!changed)
			break;
	}
	for (int i = 0; i < n; i++)
		L[i] = int8_t(L[i] + nmax);
	return sumlx / suml2;
}

// 8 six-bit scales and 8 six-bit mins of Q4_K / Q5_K in 12 bytes.
void pack_scale_min(uint8_t *s, int j, int ls, int lm)
{
	if (j < 4) {
		s[j] = uint8_t(ls);
		s[j + 4] = uint8_t(lm);
	} else {
		s[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
		s[j - 4] |= uint8_t((ls >> 4) << 6);
		s[j] |= uint8_t((lm >> 4) << 6);
	}
}

void unpack_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

// 16 six-bit Q3_K scales (stored + 32): low nibbles in bytes 0..7, high 2 bits in 8..11.
int q3k_scale(const uint8_t *s, int j)
{
	int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
	int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
	return (lo | (hi << 4)) - 32;
}

// ---- per-type block coders

void q8_0_block(const float *x, uint8_t *b)
{
	float amax = 0;
	for (int j = 0; j < QK; j++)
		amax = std::max(amax, std::fabs(x[j]));
	const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
	put16(b, fp32_to_fp16(d));
	for (int j = 0; j < QK; j++)
		b[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
}

void q4_0_block(const float *x, uint8_t *b)
{
	float amax = 0, mx = 0;
	for (int j = 0; j < QK; j++)
		if (amax < std::fabs(x[j])) {
			amax = std::fabs(x[j]);
			mx = x[j];
		}
	const float d = mx / -8, id = d ? 1.0f / d : 0.0f;
	put16(b, fp32_to_fp16(d));
	for (int j = 0; j < QK / 2; j++) {
		int lo = std::min(15, int(int8_t(x[j] * id + 8.5f)));
		int hi = std::min(15, int(int8_t(x[QK / 2 + j] * id + 8.5f)));
		b[2 + j] = uint8_t(lo | (hi << 4));
	}
}

// The five-bit codes of Q5_0 / Q5_1: low nibbles as Q4_0's, the fifth bits in a
// little-endian 32-bit mask (bit j for x_j, bit j + 16 for x_{j+16}).
void put_q5(uint8_t *qh, uint8_t *qs, const uint8_t *q)
{
	uint32_t h = 0;
	for (int j = 0; j < QK / 2; j++) {
		qs[j] = uint8_t((q[j] & 0x0F) | ((q[QK / 2 + j] & 0x0F) << 4));
		h |= uint32_t((q[j] & 0x10u) >> 4) << j;
		h |= uint32_t((q[QK / 2 + j] & 0x10u) >> 4) << (j + QK / 2);
	}
	for (int k = 0; k < 4; k++)
		qh[k] = uint8_t(h >> (8 * k));
}

void get_q5(const uint8_t *qh, const uint8_t *qs, int *q)
{
	const uint32_t h = uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
	for (int j = 0; j < QK / 2; j++) {
		q[j] = (qs[j] & 0x0F) | int((h >> j) << 4 & 0x10);
		q[QK / 2 + j] = (qs[j] >> 4) | int((h >> (j + 12)) & 0x10);
	}
}

// Q5_0: the signed extreme maps to -16, as Q4_0 maps it to -8.
void q5_0_block(const float *x, uint8_t *b)
{
	float amax = 0, mx = 0;
	for (int j = 0; j < QK; j++)
		if (amax < std::fabs(x[j])) {
			amax = std::fabs(x[j]);
			mx = x[j];
		}
	const float d = mx / -16, id = d ? 1.0f / d : 0.0f;
	put16(b, fp32_to_fp16(d));
	uint8_t q[QK];
	for (int j = 0; j < QK; j++)
		q[j] = uint8_t(std::min(31, int(int8_t(x[j] * id + 16.5f))));
	put_q5(b + 2, b + 6, q);
}

// Q5_1: 32 levels between the block's minimum and maximum.
void q5_1_block(const float *x, uint8_t *b)
{
	float lo = x[0], hi = x[0];
	for (int j = 1; j < QK; j++) {
		lo = std::min(lo, x[j]);
		hi = std::max(hi, x[j]);
	}
	const float d = (hi - lo) / 31, id = d ? 1.0f / d : 0.0f;
	put16(b, fp32_to_fp16(d));
	put16(b + 2, fp32_to_fp16(lo));
	uint8_t q[QK];
	for (int j = 0; j < QK; j++)
		q[j] = uint8_t((x[j] - lo) * id + 0.5f);
	put_q5(b + 4, b + 8, q);
}

// Q4_K (bits 4) and Q5_K (bits 5): scale/min search per 32, then 6-bit scale codes.
void qk_asym_block(const float *x, uint8_t *b, int bits)
{
	const int nmax = (1 << bits) - 1;
	uint8_t L[QK_K], Laux[32];
	float w[32], mins[8], scales[8], max_scale = 0, max_min = 0;
	for (int j = 0; j < 8; j++) {
		const float *xs = x + 32 * j;
		float sum_x2 = 0;
		for (int l = 0; l < 32; l++)
			sum_x2 += xs[l] * xs[l];
		float av = std::sqrt(sum_x2 / 32);
		for (int l = 0; l < 32; l++)
			w[l] = av + std::fabs(xs[l]);
		const float rmin = bits == 4 ? -1.f : -0.5f;
		const int nstep = bits == 4 ? 20 : 15;
#if defined(__x86_64__) && defined(__clang__)
		if (ggml_vector_search())
			scales[j] = search_scale_min_avx512(32, nmax, xs, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
		else
#endif
			scales[j] = search_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
		max_scale = std::max(max_scale, scales[j]);
		max_min = std::max(max_min, mins[j]);
	}
	uint8_t *d_p = b, *dmin_p = b + 2, *sc = b + 4;
	std::memset(sc, 0, 12);
	float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
	for (int j = 0; j < 8; j++)
		pack_scale_min(sc, j, std::min(63, nearest_int(inv_scale * scales[j])),
			       std::min(63, nearest_int(inv_min * mins[j])));
	put16(d_p, fp32_to_fp16(max_scale / 63.f));
	put16(dmin_p, fp32_to_fp16(max_min / 63.f));
	const float D = half_at(d_p), DM = half_at(dmin_p);
	for (int j = 0; j < 8; j++) {
		int s, m;
		unpack_scale_min(sc, j, &s, &m);
		const float d = D * s;
		if (!d)
			continue;
		const float dm = DM * m;
		for (int i = 0; i < 32; i++)
			L[32 * j + i] = uint8_t(std::clamp(nearest_int((x[32 * j + i] + dm) / d), 0, nmax));
	}
	if (bits == 4) {
		uint8_t *q = b + 16;
		for (int j = 0; j < QK_K; j += 64, q += 32)
			for (int l = 0; l < 32; l++)
				q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
		return;
	}
	uint8_t *qh = b + 16, *ql = b + 48;
	std::memset(qh, 0, 32);
	uint8_t m1 = 1, m2 = 2;
	for (int n = 0; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
		for (int j = 0; j < 32; j++) {
			int l1 = L[n + j], l2 = L[n + j + 32];
			if (l1 > 15) {
				l1 -= 16;
				qh[j] |= m1;
			}
			if (l2 > 15) {
				l2 -= 16;
				qh[j] |= m2;
			}
			ql[j] = uint8_t(l1 | (l2 << 4));
		}
}

void q6_k_block(const float *x, uint8_t *b)
{
	int8_t L[QK_K];
	float scales[16], max_scale = 0, max_abs = 0;
	for (int ib = 0; ib < 16; ib++) {
		scales[ib] = search_scale_sym(16, 32, x + 16 * ib, L + 16 * ib);
		if (std::fabs(scales[ib]) > max_abs) {
			max_abs = std::fabs(scales[ib]);
			max_scale = scales[ib];
		}
	}
	uint8_t *ql = b, *qh = b + 128;
	int8_t *sc = reinterpret_cast<int8_t *>(b + 192);
	uint8_t *d_p = b + 208;
	if (max_abs < GROUP_MAX_EPS) {
		std::memset(b, 0, 210);
		return;
	}
	const float iscale = -128.f / max_scale;
	put16(d_p, fp32_to_fp16(1 / iscale));
	for (int ib = 0; ib < 16; ib++)
		sc[ib] = int8_t(std::min(127, nearest_int(iscale * scales[ib])));
	const float D = half_at(d_p);
	for (int j = 0; j < 16; j++) {
		const float d = D * sc[j];
		if (!d)
			continue;
		for (int i = 0; i < 16; i++)
			L[16 * j + i] = int8_t(std::clamp(nearest_int(x[16 * j + i] / d), -32, 31) + 32);
	}
	for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
		for (int l = 0; l < 32; l++) {
			int a = L[j + l], c = L[j + l + 32], e = L[j + l + 64], f = L[j + l + 96];
			ql[l] = uint8_t((a & 0xF) | ((e & 0xF) << 4));
			ql[l + 32] = uint8_t((c & 0xF) | ((f & 0xF) << 4));
			qh[l] = uint8_t((a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((f >> 4) << 6));
		}
}

void q3_k_block(const float *x, uint8_t *b)
{
	int8_t L[QK_K];
	float scales[16], max_scale = 0, amax = 0;
	for (int ib = 0; ib < 16; ib++) {
		scales[ib] = search_scale_sym_refine(16, 4, x + 16 * ib, L + 16 * ib);
		if (std::fabs(scales[ib]) > amax) {
			amax = std::fabs(scales[ib]);
			max_scale = scales[ib];
		}
	}
	uint8_t *hmask = b, *qs = b + 32, *sc = b + 96, *d_p = b + 108;
	std::memset(sc, 0, 12);
	if (max_scale) {
		const float iscale = -32.f / max_scale;
		for (int j = 0; j < 16; j++) {
			int l = std::clamp(nearest_int(iscale * scales[j]), -32, 31) + 32;
			if (j < 8)
				sc[j] = uint8_t(l & 0xF);
			else
				sc[j - 8] |= uint8_t((l & 0xF) << 4);
			sc[8 + j % 4] |= uint8_t((l >> 4) << (2 * (j / 4)));
		}
		put16(d_p, fp32_to_fp16(1 / iscale));
	} else {
		put16(d_p, 0);
	}
	const float D = half_at(d_p);
	for (int j = 0; j < 16; j++) {
		const float d = D * q3k_scale(sc, j);
		if (!d)
			continue;
		for (int i = 0; i < 16; i++)
			L[16 * j + i] = int8_t(std::clamp(nearest_int(x[16 * j + i] / d), -4, 3) + 4);
	}
	std::memset(hmask, 0, 32);
	int m = 0;
	uint8_t hm = 1;
	for (int j = 0; j < QK_K; j++) {
		if (L[j] > 3) {
			hmask[m] |= hm;
			L[j] = int8_t(L[j] - 4);
		}
		if (++m == 32) {
			m = 0;
			hm = uint8_t(hm << 1);
		}
	}
	for (int j = 0; j < QK_K; j += 128)
		for (int l = 0; l < 32; l++)
			qs[j / 4 + l] =
				uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// ---- dequantization

void dq_q8_0(const uint8_t *b, float *y)
{
	const float d = half_at(b);
	for (int j = 0; j < QK; j++)
		y[j] = d * float(int8_t(b[2 + j]));
}

void dq_q4_0(const uint8_t *b, float *y)
{
	const float d = half_at(b);
	for (int j = 0; j < QK / 2; j++) {
		y[j] = float((b[2 + j] & 0xF) - 8) * d;
		y[j + QK / 2] = float((b[2 + j] >> 4) - 8) * d;
	}
}

void dq_q5_0(const uint8_t *b, float *y)
{
	const float d = half_at(b);
	int q[QK];
	get_q5(b + 2, b + 6, q);
	for (int j = 0; j < QK; j++)
		y[j] = float(q[j] - 16) * d;
}

void dq_q5_1(const uint8_t *b, float *y)
{
	const float d = half_at(b), m = half_at(b + 2);
	int q[QK];
	get_q5(b + 4, b + 8, q);
	for (int j = 0; j < QK; j++)
		y[j] = float(q[j]) * d + m;
}

void dq_qk_asym(const uint8_t *b, float *y, int bits)
{
	const float d = half_at(b), dmin = half_at(b + 2);
	const uint8_t *sc = b + 4;
	const uint8_t *qh = b + 16, *q = bits == 4 ? b + 16 : b + 48;
	uint8_t u1 = 1, u2 = 2;
	int is = 0;
	for (int j = 0; j < QK_K; j += 64, q += 32, u1 <<= 2, u2 <<= 2) {
		int s, m;
		unpack_scale_min(sc, is++, &s, &m);
		const float d1 = d * s, m1 = dmin * m;
		unpack_scale_min(sc, is++, &s, &m);
		const float d2 = d * s, m2 = dmin * m;
		for (int l = 0; l < 32; l++) {
			int lo = q[l] & 0xF, hi = q[l] >> 4;
			if (bits == 5) {
				lo += (qh[l] & u1) ? 16 : 0;
				hi += (qh[l] & u2) ? 16 : 0;
			}
			y[j + l] = d1 * lo - m1;
			y[j + 32 + l] = d2 * hi - m2;
		}
	}
}

void dq_q6_k(const uint8_t *b, float *y)
{
	const uint8_t *ql = b, *qh = b + 128;
	const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192);
	const float d = half_at(b + 208);
	for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32, sc += 8)
		for (int l = 0; l < 32; l++) {
			int is = l / 16;
			int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
			int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
			int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
			int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
			y[n + l] = d * sc[is + 0] * q1;
			y[n + l + 32] = d * sc[is + 2] * q2;
			y[n + l + 64] = d * sc[is + 4] * q3;
			y[n + l + 96] = d * sc[is + 6] * q4;
		}
}

void dq_q3_k(const uint8_t *b, float *y)
{
	const uint8_t *hm = b, *q = b + 32;
	const float d = half_at(b + 108);
	int sc[16];
	for (int j = 0; j < 16; j++)
		sc[j] = q3k_scale(b + 96, j);
	int is = 0;
	uint8_t m = 1;
	for (int n = 0; n < QK_K; n += 128, q += 32) {
		int shift = 0;
		for (int j = 0; j < 4; j++, shift += 2, m = uint8_t(m << 1)) {
			for (int half = 0; half < 2; half++) {
				const float dl = d * float(sc[is++]);
				for (int l = 0; l < 16; l++) {
					int k = half * 16 + l;
					int v = int((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
					*y++ = dl * v;
				}
			}
		}
	}
}

} // namespace

const GgmlTypeInfo &ggml_type_info(GgmlType t)
{
	switch (t) {
	case GgmlType::F32: return k_f32;
	case GgmlType::F16: return k_f16;
	case GgmlType::Q4_0: return k_q4_0;
	case GgmlType::Q5_0: return k_q5_0;
	case GgmlType::Q5_1: return k_q5_1;
	case GgmlType::Q8_0: return k_q8_0;
	case GgmlType::Q3_K: return k_q3_k;
	case GgmlType::Q4_K: return k_q4_k;
	case GgmlType::Q5_K: return k_q5_k;
	case GgmlType::Q6_K: return k_q6_k;
	}
	fail("ggml type {} is not supported", uint32_t(t));
}

bool ggml_type_known(uint32_t t)
{
	return t == 0 || t == 1 || t == 2 || t == 6 || t == 7 || t == 8 || (t >= 11 && t <= 14);
}

GgmlType ggml_type_from_name(const std::string &name)
{
	std::string n = name;
	for (auto &c : n)
		c = char(std::tolower(static_cast<unsigned char>(c)));
	for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
			   GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
		if (n == ggml_type_info(t).name)
			return t;
	fail("unknown block type '{}' (known: f32 f16 q8_0 q4_0 q5_0 q5_1 q3_k q4_k q5_k q6_k)", name);
}

int64_t ggml_row_bytes(GgmlType t, int64_t n)
{
	const auto &ti = ggml_type_info(t);
	if (n % ti.block != 0)
		fail("{}: {} elements are not a multiple of the block size {}", ti.name, n, ti.block);
	return n / ti.block * ti.block_bytes;
}

uint16_t fp32_to_fp16(float f)
{
	uint32_t x;
	std::memcpy(&x, &f, 4);
	const uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
	if (a >= 0x7f800000u) // inf, nan (quiet, keeping the top payload bits)
		return uint16_t(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
	if (a >= 0x477ff000u) // rounds to infinity
		return uint16_t(sign | 0x7c00u);
	if (a < 0x38800000u) { // below the smallest normal half: a multiple of 2^-24
		float v;
		std::memcpy(&v, &a, 4);
		return uint16_t(sign | uint32_t(std::nearbyint(v * 16777216.0f)));
	}
	const uint32_t r = a + 0xfffu + ((a >> 13) & 1u); // round to nearest even
	return uint16_t(sign | ((r >> 13) - (112u << 10)));
}

float fp16_to_fp32(uint16_t h)
{
	const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
	uint32_t x;
	if (e == 0) {
		float v = std::ldexp(float(m), -24);
		std::memcpy(&x, &v, 4);
		x |= sign;
	} else if (e == 31) {
		x = sign | 0x7f800000u | (m << 13);
	} else {
		x = sign | ((e + 112u) << 23) | (m << 13);
	}
	float f;
	std::memcpy(&f, &x, 4);
	return f;
}

namespace {

// One loop per type (the switch outside it), so each block coder is inlined.
template <typename F> void each_block(int64_t n, int64_t block, int64_t bytes, F f)
{
	for (int64_t i = 0; i < n / block; i++)
		f(i * block, i * bytes);
}

} // namespace

namespace {
std::atomic<int> g_vector_search{-1}; // -1: not decided yet
} // namespace

bool ggml_vector_search()
{
#if defined(__x86_64__) && defined(__clang__)
	int v = g_vector_search.load(std::memory_order_relaxed);
	if (v < 0) {
		v = cpu_has_avx512() && !std::getenv("KNLP_GGML_SCALAR");
		g_vector_search.store(v, std::memory_order_relaxed);
	}
	return v != 0;
#else
	return false;
#endif
}

void ggml_set_vector_search(bool on)
{
#if defined(__x86_64__) && defined(__clang__)
	g_vector_search.store(on && cpu_has_avx512(), std::memory_order_relaxed);
#else
	(void)on;
#endif
}

void ggml_quantize(GgmlType t, const float *x, int64_t n, uint8_t *out)
{
	const auto &ti = ggml_type_info(t);
	ggml_row_bytes(t, n); // validates n
	const int64_t B = ti.block, S = ti.block_bytes;
	switch (t) {
	case GgmlType::F32: std::memcpy(out, x, size_t(n) * 4); break;
	case GgmlType::F16:
		each_block(n, B, S, [&](int64_t e, int64_t o) { put16(out + o, fp32_to_fp16(x[e])); });
		break;
	case GgmlType::Q8_0: each_block(n, B, S, [&](int64_t e, int64_t o) { q8_0_block(x + e, out + o); }); break;
	case GgmlType::Q4_0: each_block(n, B, S, [&](int64_t e, int64_t o) { q4_0_block(x + e, out + o); }); break;
	case GgmlType::Q5_0: each_block(n, B, S, [&](int64_t e, int64_t o) { q5_0_block(x + e, out + o); }); break;
	case GgmlType::Q5_1: each_block(n, B, S, [&](int64_t e, int64_t o) { q5_1_block(x + e, out + o); }); break;
	case GgmlType::Q4_K:
		each_block(n, B, S, [&](int64_t e, int64_t o) { qk_asym_block(x + e, out + o, 4); });
		break;
	case GgmlType::Q5_K:
		each_block(n, B, S, [&](int64_t e, int64_t o) { qk_asym_block(x + e, out + o, 5); });
		break;
	case GgmlType::Q6_K: each_block(n, B, S, [&](int64_t e, int64_t o) { q6_k_block(x + e, out + o); }); break;
	case GgmlType::Q3_K: each_block(n, B, S, [&](int64_t e, int64_t o) { q3_k_block(x + e, out + o); }); break;
	}
}

void ggml_dequantize(GgmlType t, const uint8_t *in, int64_t n, float *y)
{
	const auto &ti = ggml_type_info(t);
	ggml_row_bytes(t, n);
	const int64_t B = ti.block, S = ti.block_bytes;
	switch (t) {
	case GgmlType::F32: std::memcpy(y, in, size_t(n) * 4); break;
	case GgmlType::F16: each_block(n, B, S, [&](int64_t e, int64_t o) { y[e] = half_at(in + o); }); break;
	case GgmlType::Q8_0: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_q8_0(in + o, y + e); }); break;
	case GgmlType::Q4_0: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_q4_0(in + o, y + e); }); break;
	case GgmlType::Q5_0: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_q5_0(in + o, y + e); }); break;
	case GgmlType::Q5_1: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_q5_1(in + o, y + e); }); break;
	case GgmlType::Q4_K: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_qk_asym(in + o, y + e, 4); }); break;
	case GgmlType::Q5_K: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_qk_asym(in + o, y + e, 5); }); break;
	case GgmlType::Q6_K: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_q6_k(in + o, y + e); }); break;
	case GgmlType::Q3_K: each_block(n, B, S, [&](int64_t e, int64_t o) { dq_q3_k(in + o, y + e); }); break;
	}
}

} // namespace knlp
