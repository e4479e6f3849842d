// GGML block quantization: the byte layouts llama.cpp reads (Q8_0, Q4_0, Q5_0, Q5_1 in blocks of 32;
// Q3_K, Q4_K, Q5_K, Q6_K in super-blocks of 256), their reference quantizers (the same
// choices of scales and codes as ggml's quantize_row_*_ref, byte for byte; checked against
// ggml itself by tests/test_quant_ggml.sh) and dequantization. No libtorch here.
//
// Layouts (little-endian; fp16 = IEEE half):
//   Q8_0  34 B / 32:  d fp16 | qs int8[32]                         x = d q
//   Q4_0  18 B / 32:  d fp16 | qs u8[16] (j low nibble, j+16 high)  x = d (q - 8)
//   Q5_0  22 B / 32:  d fp16 | qh u32 (bit j: the fifth bit of x_j) | qs u8[16]  x = d (q - 16)
//   Q5_1  24 B / 32:  d fp16 | m fp16 | qh u32 | qs u8[16]          x = d q + m
//   Q4_K 144 B / 256: d fp16 | dmin fp16 | scales u8[12] (8 x 6-bit scale and min) | qs u8[128]
//                     x = d sc q - dmin m, q 4-bit
//   Q5_K 176 B / 256: as Q4_K plus qh u8[32] (the fifth bit) before qs
//   Q6_K 210 B / 256: ql u8[128] | qh u8[64] | scales int8[16] | d fp16    x = d sc (q - 32)
//   Q3_K 110 B / 256: hmask u8[32] | qs u8[64] | scales u8[12] (16 x 6-bit, offset 32) | d fp16
//                     x = d (sc - 32) (q - 4 if the hmask bit is clear)
#pragma once
#include <cstdint>
#include <string>

namespace knlp {

// ggml_type numbers (the values written into GGUF files).
enum class GgmlType : uint32_t {
	F32 = 0,
	F16 = 1,
	Q4_0 = 2,
	Q5_0 = 6,
	Q5_1 = 7,
	Q8_0 = 8,
	Q3_K = 11,
	Q4_K = 12,
	Q5_K = 13,
	Q6_K = 14,
};

struct GgmlTypeInfo {
	const char *name; // "q4_k"
	int64_t block;	  // elements per block
	int64_t block_bytes;
	double bits_per_weight() const { return 8.0 * double(block_bytes) / double(block); }
};

const GgmlTypeInfo &ggml_type_info(GgmlType t);
// "f32", "f16", "q4_0", "q5_0", "q5_1", "q8_0", "q3_k", "q4_k", "q5_k", "q6_k" (case-insensitive); an
// unknown name is an error listing the known ones.
GgmlType ggml_type_from_name(const std::string &name);
bool ggml_type_known(uint32_t t);
// Bytes of n elements (n a multiple of the block size; an error otherwise).
int64_t ggml_row_bytes(GgmlType t, int64_t n);

// IEEE half conversion, round to nearest even (what ggml stores).
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);

// n elements (a multiple of the type's block) to blocks / back.
void ggml_quantize(GgmlType t, const float *x, int64_t n, uint8_t *out);
void ggml_dequantize(GgmlType t, const uint8_t *in, int64_t n, float *y);
// Whether the k-quant scale searches (q4_k, q5_k) run their AVX-512 form (on CPUs with
// AVX-512; the same bits as the scalar form, about 3x faster). KNLP_GGML_SCALAR in the
// environment turns it off; tests switch it to compare the two.
bool ggml_vector_search();
void ggml_set_vector_search(bool on);

} // namespace knlp
