// GGML block types: half conversion, block sizes, Q8_0 and Q4_0 blocks worked out by hand,
// the byte layout of the k-quants, round-trip error on known inputs, bad input. Byte-for-byte
// agreement with ggml itself is tests/test_quant_ggml.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "quant/ggml_quants.h"

using namespace knlp;

TEST(Quant, HalfConversionRoundsToNearestEven)
{
	EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
	EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
	EXPECT_EQ(fp32_to_fp16(0.1f), 0x2E66);
	EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
	EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
	EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);		       // rounds to infinity
	EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -24)), 0x0001);	       // smallest subnormal
	EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);	       // a tie: to even (zero)
	EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);	       // 1.5 ulp: to even (2)
	EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00); // tie below: even
	EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(3.0f, -11)), 0x3C02); // tie above: even
	EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -14)), 0x0400);	       // smallest normal
	EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
	EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
	EXPECT_TRUE(std::isinf(fp16_to_fp32(0xFC00)) && fp16_to_fp32(0xFC00) < 0);
	// Every finite half survives the round trip.
	for (uint32_t h = 0; h < 0x10000; h++)
		if ((h & 0x7C00) != 0x7C00)
			ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(uint16_t(h))), h) << h;
}

TEST(Quant, BlockSizesAreGgmls)
{
	struct Want {
		GgmlType t;
		int64_t block, bytes;
		double bpw;
	};
	for (Want w : {Want{GgmlType::Q8_0, 32, 34, 8.5}, Want{GgmlType::Q4_0, 32, 18, 4.5},
		       Want{GgmlType::Q3_K, 256, 110, 3.4375}, Want{GgmlType::Q4_K, 256, 144, 4.5},
		       Want{GgmlType::Q5_K, 256, 176, 5.5}, Want{GgmlType::Q6_K, 256, 210, 6.5625}}) {
		const auto &ti = ggml_type_info(w.t);
		EXPECT_EQ(ti.block, w.block) << ti.name;
		EXPECT_EQ(ti.block_bytes, w.bytes) << ti.name;
		EXPECT_DOUBLE_EQ(ti.bits_per_weight(), w.bpw) << ti.name;
		EXPECT_EQ(ggml_type_from_name(ti.name), w.t);
	}
	// GGUF type numbers.
	EXPECT_EQ(uint32_t(GgmlType::Q8_0), 8u);
	EXPECT_EQ(uint32_t(GgmlType::Q3_K), 11u);
	EXPECT_EQ(uint32_t(GgmlType::Q6_K), 14u);
	EXPECT_EQ(ggml_type_from_name("Q4_K"), GgmlType::Q4_K);
	EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_K, 768), 3 * 144);
}

TEST(Quant, Q8_0BlockByHand)
{
	// x_j = j/2 - 8: amax 8, d = 8/127 = 0.0629921 -> half 0x2C08 (0.06298828);
	// q = round(x * 127/8): x = -8 -> -127, x = 7.5 -> round(119.0625) = 119, x = 0 -> 0.
	float x[32];
	for (int j = 0; j < 32; j++)
		x[j] = j * 0.5f - 8;
	uint8_t b[34];
	ggml_quantize(GgmlType::Q8_0, x, 32, b);
	EXPECT_EQ(b[0] | (b[1] << 8), 0x2C08);
	EXPECT_EQ(int8_t(b[2]), -127);
	EXPECT_EQ(int8_t(b[2 + 16]), 0);
	EXPECT_EQ(int8_t(b[2 + 31]), 119);
	EXPECT_EQ(int8_t(b[2 + 1]), -119); // -7.5 * 15.875 = -119.0625
	float y[32];
	ggml_dequantize(GgmlType::Q8_0, b, 32, y);
	EXPECT_FLOAT_EQ(y[0], -127 * 0.06298828125f);
	EXPECT_FLOAT_EQ(y[31], 119 * 0.06298828125f);
}

TEST(Quant, Q4_0BlockByHand)
{
	// x_j = j - 8 (j < 16), x_{16+j} = (j - 8) / 2. The largest |x| is -8: d = -8 / -8 = 1;
	// q = min(15, int(x + 8.5)): -8 -> 0, 7 -> 15, -4 -> 4, 3.5 -> 12.
	float x[32];
	for (int j = 0; j < 16; j++) {
		x[j] = float(j - 8);
		x[16 + j] = float(j - 8) / 2;
	}
	uint8_t b[18];
	ggml_quantize(GgmlType::Q4_0, x, 32, b);
	EXPECT_EQ(b[0] | (b[1] << 8), 0x3C00); // d = 1
	EXPECT_EQ(b[2 + 0], 0x40);	       // lo q(-8) = 0, hi q(-4) = 4
	EXPECT_EQ(b[2 + 15], 0xCF);	       // lo q(7) = 15, hi q(3.5) = 12
	float y[32];
	ggml_dequantize(GgmlType::Q4_0, b, 32, y);
	for (int j = 0; j < 16; j++)
		EXPECT_EQ(y[j], x[j]) << j; // integers are exact
	EXPECT_EQ(y[16 + 15], 4.0f);	    // 3.5 -> code 12 -> 12 - 8
}

TEST(Quant, KQuantLayoutsPutFieldsWhereGgmlReadsThem)
{
	// A super-block of one repeated value v > 0 in every Q4_K sub-block: min 0, every
	// 6-bit scale code 63 and every 4-bit code 15, d = (v/15) / 63 in half precision.
	std::vector<float> x(256, 3.0f);
	std::vector<uint8_t> b(144);
	ggml_quantize(GgmlType::Q4_K, x.data(), 256, b.data());
	EXPECT_EQ(b[0] | (b[1] << 8), fp32_to_fp16(3.0f / 15 / 63));
	EXPECT_EQ(b[2] | (b[3] << 8), 0); // dmin
	for (int j = 0; j < 4; j++)
		EXPECT_EQ(b[4 + j] & 63, 63); // scales 0..3 in the low 6 bits of bytes 0..3
	for (int i = 16; i < 144; i++)
		EXPECT_EQ(b[i], 0xFF) << i; // codes 15 | 15 << 4
	// Q6_K: ql 128 B, qh 64 B, 16 int8 scales, d last.
	std::vector<uint8_t> c(210);
	for (int i = 0; i < 256; i++)
		x[size_t(i)] = i < 16 ? -1.0f : 0.0f; // only the first 16-group is non-zero
	// Group 0: codes -32, scale 1/32; the block scale -128 / (1/32) gives d = -2^-12 (half
	// 0x8C00) and the group's 8-bit scale -128; every other group's scale is 0.
	ggml_quantize(GgmlType::Q6_K, x.data(), 256, c.data());
	EXPECT_EQ(int8_t(c[192]), -128);
	for (int g = 1; g < 16; g++)
		EXPECT_EQ(c[size_t(192 + g)], 0) << g;
	EXPECT_EQ(c[208] | (c[209] << 8), 0x8C00);
	std::vector<float> y(256);
	ggml_dequantize(GgmlType::Q6_K, c.data(), 256, y.data());
	for (int i = 0; i < 256; i++)
		EXPECT_EQ(y[size_t(i)], x[size_t(i)]) << i; // -1 = (0 - 32) / 32 exactly
	// Q3_K: hmask 32 B, qs 64 B, scales 12 B, d last; all-zero input is an all-zero block.
	std::vector<uint8_t> z(110, 0xAA);
	std::vector<float> zeros(256, 0.0f);
	ggml_quantize(GgmlType::Q3_K, zeros.data(), 256, z.data());
	EXPECT_EQ(z[108] | (z[109] << 8), 0);
	for (int i = 96; i < 108; i++)
		EXPECT_EQ(z[size_t(i)], 0) << i;
}

TEST(Quant, RoundTripErrorShrinksWithBits)
{
	// Gaussian weights: relative RMS error of each type, and the order of the types.
	std::mt19937 gen(5);
	std::normal_distribution<float> nd(0.0f, 0.02f);
	std::vector<float> x(256 * 64);
	for (auto &v : x)
		v = nd(gen);
	double rms = 0;
	for (float v : x)
		rms += double(v) * v;
	rms = std::sqrt(rms / double(x.size()));
	auto rel_err = [&](GgmlType t) {
		std::vector<uint8_t> b(size_t(ggml_row_bytes(t, int64_t(x.size()))));
		std::vector<float> y(x.size());
		ggml_quantize(t, x.data(), int64_t(x.size()), b.data());
		ggml_dequantize(t, b.data(), int64_t(x.size()), y.data());
		double e = 0;
		for (size_t i = 0; i < x.size(); i++)
			e += double(y[i] - x[i]) * (y[i] - x[i]);
		return std::sqrt(e / double(x.size())) / rms;
	};
	double q8 = rel_err(GgmlType::Q8_0), q6 = rel_err(GgmlType::Q6_K), q5 = rel_err(GgmlType::Q5_K),
	       q4k = rel_err(GgmlType::Q4_K), q4 = rel_err(GgmlType::Q4_0), q3 = rel_err(GgmlType::Q3_K);
	// Uniform rounding of a Gaussian: about 2^-bits x (range / rms) / sqrt(12).
	EXPECT_LT(q8, 0.01);
	EXPECT_LT(q6, 0.04);
	EXPECT_LT(q5, 0.07);
	EXPECT_LT(q4k, 0.13);
	EXPECT_LT(q4, 0.16);
	EXPECT_LT(q3, 0.26);
	EXPECT_LT(q8, q6);
	EXPECT_LT(q6, q5);
	EXPECT_LT(q5, q4k);
	EXPECT_LT(q4k, q3);
	EXPECT_GT(q3, 0.05); // 3 bits cannot be near-lossless
	EXPECT_EQ(rel_err(GgmlType::F32), 0.0);
}

TEST(Quant, VectorScaleSearchMatchesTheScalarOne)
{
	// q4_k and q5_k search 21 / 16 candidate scales per 32 values; the AVX-512 form runs the
	// candidates side by side and must choose exactly what the scalar loop chooses (a winning
	// candidate moves the min the later ones start from). Blocks of every kind: Gaussian,
	// heavy outliers, all positive, all equal, tiny, and mixed signs of very different sizes.
	if (!ggml_vector_search())
		GTEST_SKIP() << "no AVX-512 on this CPU";
	std::mt19937 gen(11);
	std::normal_distribution<float> nd(0.0f, 1.0f);
	std::uniform_real_distribution<float> ud(0.0f, 1.0f);
	std::vector<float> x(256 * 512);
	for (size_t b = 0; b < x.size() / 256; b++)
		for (size_t i = 0; i < 256; i++) {
			float &v = x[b * 256 + i];
			switch (b % 6) {
			case 0: v = 0.02f * nd(gen); break;
			case 1: v = ud(gen) < 0.03f ? 50.f * nd(gen) : 0.01f * nd(gen); break;
			case 2: v = 1.f + ud(gen); break;
			case 3: v = i < 128 ? 0.25f : -3.f * ud(gen); break;
			case 4: v = 1e-30f * nd(gen); break;
			default: v = (i % 2 ? 1e3f : 1e-3f) * nd(gen); break;
			}
		}
	for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K}) {
		std::vector<uint8_t> vec(size_t(ggml_row_bytes(t, int64_t(x.size())))), sca(vec.size());
		ggml_quantize(t, x.data(), int64_t(x.size()), vec.data());
		ggml_set_vector_search(false);
		ggml_quantize(t, x.data(), int64_t(x.size()), sca.data());
		ggml_set_vector_search(true);
		EXPECT_TRUE(vec == sca) << ggml_type_info(t).name;
	}
}

TEST(Quant, BadInputIsAClearError)
{
	float x[64] = {};
	uint8_t b[256];
	EXPECT_THROW(ggml_quantize(GgmlType::Q4_K, x, 64, b), Error); // not a multiple of 256
	EXPECT_THROW(ggml_row_bytes(GgmlType::Q8_0, 33), Error);
	try {
		ggml_type_from_name("q2_k");
		FAIL();
	} catch (const Error &e) {
		EXPECT_NE(std::string(e.what()).find("q2_k"), std::string::npos);
		EXPECT_NE(std::string(e.what()).find("q6_k"), std::string::npos); // lists the known ones
	}
	EXPECT_FALSE(ggml_type_known(10));
	EXPECT_TRUE(ggml_type_known(12));
}

// ---- GGUF

#include <fstream>

#include "core/fsutil.h"
#include "quant/gguf.h"
#include "quant/plan.h"

namespace {

std::string tmp_path(const char *name)
{
	return std::string("/tmp/knlp-test-quant-") + name;
}

} // namespace

TEST(Gguf, WriterAndReaderRoundTripEveryValueTypeAndTensor)
{
	for (uint32_t align : {32u, 64u}) {
		GgufWriter w(align);
		w.add("general.architecture", GgufType::STRING, "gpt2");
		w.add("a.u8", GgufType::U8, 200);
		w.add("a.i8", GgufType::I8, -100);
		w.add("a.u16", GgufType::U16, 60000);
		w.add("a.i16", GgufType::I16, -30000);
		w.add("a.u32", GgufType::U32, 4000000000u);
		w.add("a.i32", GgufType::I32, -2000000000);
		w.add("a.f32", GgufType::F32, 0.5f);
		w.add("a.bool", GgufType::BOOL, true);
		w.add("a.u64", GgufType::U64, uint64_t(1) << 40);
		w.add("a.i64", GgufType::I64, -(int64_t(1) << 40));
		w.add("a.f64", GgufType::F64, 0.1);
		w.add_array("a.strs", GgufType::STRING, {"Ġthe", "", "x y"});
		w.add_array("a.ints", GgufType::I32, {1, -2, 3});
		EXPECT_THROW(w.add("a.u8", GgufType::U8, 1), Error); // duplicate key
		std::vector<float> x(512);
		for (size_t i = 0; i < x.size(); i++)
			x[i] = std::sin(float(i));
		std::string q(size_t(ggml_row_bytes(GgmlType::Q4_K, 512)), '\0'), f(512 * 4, '\0');
		ggml_quantize(GgmlType::Q4_K, x.data(), 512, reinterpret_cast<uint8_t *>(q.data()));
		std::memcpy(f.data(), x.data(), f.size());
		w.add_tensor("blk.0.ffn_down.weight", {256, 2}, GgmlType::Q4_K, q);
		w.add_tensor("odd.bias", {3}, GgmlType::F32, std::string(12, '\1')); // 12 bytes: next offset pads
		w.add_tensor("blk.0.ffn_up.weight", {512}, GgmlType::F32, f);
		EXPECT_THROW(w.add_tensor("bad", {100}, GgmlType::Q8_0, std::string(100, 0)),
			     Error); // not whole blocks
		EXPECT_THROW(w.add_tensor("short", {32}, GgmlType::Q8_0, std::string(10, 0)), Error); // wrong size
		std::string path = tmp_path("rt.gguf");
		uint64_t size = w.write(path);
		EXPECT_EQ(size, file_size(path));

		GgufFile r(path);
		EXPECT_EQ(r.version(), 3u);
		EXPECT_EQ(r.alignment(), align);
		EXPECT_EQ(r.data_offset() % align, 0u);
		EXPECT_EQ(r.get("general.architecture").value, "gpt2");
		EXPECT_EQ(r.get("a.u8").value, 200);
		EXPECT_EQ(r.get("a.i8").value, -100);
		EXPECT_EQ(r.get("a.u16").value, 60000);
		EXPECT_EQ(r.get("a.i16").value, -30000);
		EXPECT_EQ(r.get("a.u32").value, 4000000000u);
		EXPECT_EQ(r.get("a.i32").value, -2000000000);
		EXPECT_EQ(r.get("a.f32").value.get<float>(), 0.5f);
		EXPECT_EQ(r.get("a.bool").value, true);
		EXPECT_EQ(r.get("a.u64").value, uint64_t(1) << 40);
		EXPECT_EQ(r.get("a.i64").value, -(int64_t(1) << 40));
		EXPECT_EQ(r.get("a.f64").value.get<double>(), 0.1);
		EXPECT_EQ(r.get("a.strs").array_type, GgufType::STRING);
		EXPECT_EQ(r.get("a.strs").value, nlohmann::json({"Ġthe", "", "x y"}));
		EXPECT_EQ(r.get("a.ints").value, nlohmann::json({1, -2, 3}));
		EXPECT_EQ(r.get("a.u32").type, GgufType::U32);
		EXPECT_EQ(r.find("general.alignment") != nullptr, align != 32); // written only when not the default
		ASSERT_EQ(r.tensors().size(), 3u);
		const auto &t0 = r.tensor("blk.0.ffn_down.weight");
		EXPECT_EQ(t0.ne, (std::vector<int64_t>{256, 2}));
		EXPECT_EQ(t0.type, GgmlType::Q4_K);
		EXPECT_EQ(t0.offset, 0u);
		EXPECT_EQ(std::string(reinterpret_cast<const char *>(t0.data), t0.nbytes), q);
		const auto &t2 = r.tensor("blk.0.ffn_up.weight");
		EXPECT_EQ(t2.offset % align, 0u);
		uint64_t odd_at = (2 * 144 + align - 1) / align * align; // each tensor starts aligned
		EXPECT_EQ(r.tensor("odd.bias").offset, odd_at);
		EXPECT_EQ(t2.offset, (odd_at + 12 + align - 1) / align * align);
		std::vector<float> y(512);
		ggml_dequantize(t2.type, t2.data, 512, y.data());
		EXPECT_EQ(y, x);
		EXPECT_THROW(r.tensor("nope"), Error);
		EXPECT_THROW(r.get("nope"), Error);
	}
}

TEST(Gguf, BadFilesAreClearErrors)
{
	GgufWriter w;
	w.add("general.architecture", GgufType::STRING, "gpt2");
	w.add_tensor("t", {32}, GgmlType::F32, std::string(128, '\0'));
	std::string good = tmp_path("good.gguf");
	w.write(good);
	std::string bytes = read_file(good);
	auto expect = [&](const std::string &data, const std::string &msg) {
		std::string p = tmp_path("bad.gguf");
		write_file_atomic(p, data);
		try {
			GgufFile f(p);
			ADD_FAILURE() << "no error for " << msg;
		} catch (const Error &e) {
			std::string m = e.what();
			EXPECT_NE(m.find(p), std::string::npos) << m;
			EXPECT_NE(m.find(msg), std::string::npos) << m;
		}
	};
	expect("GGML" + bytes.substr(4), "wrong magic");
	std::string v1 = bytes;
	v1[4] = 1;
	expect(v1, "GGUF version 1");
	expect(bytes.substr(0, bytes.size() - 10), "truncated");
	expect(bytes.substr(0, 30), "truncated");
	std::string badtype = bytes;
	// The tensor type field: after the header (24 B), the key (8 + 20 B name, 4 B type, 8 + 4 B
	// value) and the tensor name (8 + 1), dims (4 + 8).
	size_t type_at = 24 + 8 + 20 + 4 + 8 + 4 + 8 + 1 + 4 + 8;
	ASSERT_EQ(uint8_t(badtype[type_at]), 0u);
	badtype[type_at] = 10; // Q2_K: not read
	expect(badtype, "ggml type 10");
	// Writing into a folder that does not exist fails and leaves nothing behind.
	EXPECT_THROW(w.write("/nonexistent-dir/x.gguf"), Error);
}

TEST(Gguf, LlamaCppMixesFollowTheirLayerRules)
{
	// A 32-layer Llama-shaped model with an untied head, rows of 256 (every k-quant fits).
	std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {{"token_embd.weight", {1000, 256}},
									    {"output.weight", {1000, 256}}};
	for (int i = 0; i < 32; i++)
		for (const char *r : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
			shapes.push_back({"blk." + std::to_string(i) + "." + r + ".weight", {256, 256}});
	auto types = [&](const std::string &mix) {
		PlanOptions o = plan_options(mix, "q6_k", "ffn_down", 0, "none", 0);
		EXPECT_EQ(o.mix, mix);
		return base_types(shapes, o);
	};
	auto layers = [](const std::map<std::string, GgmlType> &t, const std::string &role, GgmlType want) {
		std::vector<int> v;
		for (int i = 0; i < 32; i++)
			if (t.at("blk." + std::to_string(i) + "." + role + ".weight") == want)
				v.push_back(i);
		return v;
	};
	using G = GgmlType;
	auto m = types("q3_k_m");
	// attn_v: the first two in q5_k, the rest q4_k; ffn_down: 32/16 = 2 layers q5_k, the
	// rest q4_k; attn_output q4_k; q, k, gate, up and the untied token table q3_k; head q6_k.
	EXPECT_EQ(layers(m, "attn_v", G::Q5_K), (std::vector<int>{0, 1}));
	EXPECT_EQ(layers(m, "attn_v", G::Q4_K).size(), 30u);
	EXPECT_EQ(layers(m, "ffn_down", G::Q5_K), (std::vector<int>{0, 1}));
	EXPECT_EQ(layers(m, "ffn_down", G::Q4_K).size(), 30u);
	EXPECT_EQ(layers(m, "attn_output", G::Q4_K).size(), 32u);
	for (const char *r : {"attn_q", "attn_k", "ffn_gate", "ffn_up"})
		EXPECT_EQ(layers(m, r, G::Q3_K).size(), 32u) << r;
	EXPECT_EQ(m.at("token_embd.weight"), G::Q3_K);
	EXPECT_EQ(m.at("output.weight"), G::Q6_K);
	// q4_k_m: "more bits" layers (the first and last eighth, every third between) in q6_k
	// for attn_v and ffn_down: 0-3, 6, 9, ..., 27, 28-31.
	auto k = types("q4_k_m");
	std::vector<int> more = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
	EXPECT_EQ(layers(k, "attn_v", G::Q6_K), more);
	EXPECT_EQ(layers(k, "ffn_down", G::Q6_K), more);
	EXPECT_EQ(layers(k, "attn_output", G::Q4_K).size(), 32u);
	// q4_k_s: attn_v of the first 4 and ffn_down of the first 32/8 = 4 in q5_k.
	auto s = types("q4_k_s");
	EXPECT_EQ(layers(s, "attn_v", G::Q5_K), (std::vector<int>{0, 1, 2, 3}));
	EXPECT_EQ(layers(s, "ffn_down", G::Q5_K), (std::vector<int>{0, 1, 2, 3}));
	// Tied: the token table is the head (q6_k); rows of 320 fall back as llama.cpp does.
	shapes.erase(shapes.begin() + 1);
	shapes.push_back({"blk.32.ffn_down.weight", {256, 320}});
	m = types("q3_k_m");
	EXPECT_EQ(m.at("token_embd.weight"), G::Q6_K);
	EXPECT_EQ(m.at("blk.32.ffn_down.weight"), G::Q5_0); // q4_k: q5_0
	bool fb;
	EXPECT_EQ(plan_fit(G::Q5_K, 320, &fb), G::Q5_1);
	EXPECT_EQ(plan_fit(G::Q6_K, 320, &fb), G::Q8_0);
	EXPECT_EQ(plan_fit(G::Q3_K, 48, &fb), G::F16); // 48 fits no block of 32 either
	EXPECT_TRUE(fb);
	// The recipe: Q3_K_M, fim, 15% unless given.
	auto r = plan_options("q3_k", "q6_k", "ffn_down", 0, "fim-q3_k_m", 0);
	EXPECT_EQ(r.mix, "q3_k_m");
	EXPECT_EQ(r.plan, "fim");
	EXPECT_EQ(r.recipe, "fim-q3_k_m");
	EXPECT_EQ(r.pct, 15);
	EXPECT_THROW(plan_options("q4_k_m", "q6_k", "ffn_down", 0, "fim-q3_k_m", 0), Error);
	EXPECT_THROW(plan_options("q3_k_x", "q6_k", "ffn_down", 0, "none", 0), Error);
}

TEST(Gguf, PlansFollowTheLayerwiseRuleAndFallBack)
{
	// 8 layers of ffn_down [64 x 256] and ffn_up [256 x 64] (rows of 64: no k-quant block).
	std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
	std::map<std::string, double> score;
	for (int i = 0; i < 8; i++) {
		std::string h = "transformer.h." + std::to_string(i) + ".";
		shapes.push_back({h + "mlp.c_proj.weight", {64, 256}});
		shapes.push_back({h + "mlp.c_fc.weight", {256, 64}});
		shapes.push_back({h + "ln_1.weight", {64}});
		score[h + "mlp.c_proj.weight"] = i == 3 ? 9 : i == 6 ? 8 : i;
		score[h + "mlp.c_fc.weight"] = 0;
	}
	PlanOptions o;
	o.base = GgmlType::Q3_K;
	o.upgrade = GgmlType::Q6_K;
	o.pct = 25; // floor(8 * 0.25) = 2 layers
	o.plan = "magnitude";
	auto plan = make_plan(shapes, score, o);
	std::vector<std::string> up;
	for (const auto &t : plan) {
		if (t.upgraded)
			up.push_back(t.name);
		if (t.role == "ffn_down")
			EXPECT_EQ(t.type, t.upgraded ? GgmlType::Q6_K : GgmlType::Q3_K) << t.name;
		if (t.role == "ffn_up") {
			EXPECT_EQ(t.type, GgmlType::Q4_0) << t.name; // 64 is not a multiple of 256: llama.cpp's q4_0
			EXPECT_TRUE(t.fallback);
		}
		if (t.role.empty())
			EXPECT_EQ(t.type, GgmlType::F32);
		EXPECT_EQ(t.bytes, t.elements / ggml_type_info(t.type).block * ggml_type_info(t.type).block_bytes);
	}
	EXPECT_EQ(up,
		  (std::vector<std::string>{"transformer.h.3.mlp.c_proj.weight", "transformer.h.6.mlp.c_proj.weight"}));
	o.pct = 5; // floor(0.4) = 0, but at least one
	plan = make_plan(shapes, score, o);
	int n = 0;
	for (const auto &t : plan)
		n += t.upgraded;
	EXPECT_EQ(n, 1);
	// Random plans depend on the seed only.
	o.plan = "random";
	o.pct = 50;
	auto a = make_plan(shapes, {}, o), b = make_plan(shapes, {}, o);
	o.seed = 1;
	auto c = make_plan(shapes, {}, o);
	bool same_ab = true, same_ac = true;
	for (size_t i = 0; i < a.size(); i++) {
		same_ab &= a[i].upgraded == b[i].upgraded;
		same_ac &= a[i].upgraded == c[i].upgraded;
	}
	EXPECT_TRUE(same_ab);
	EXPECT_FALSE(same_ac);
	o.plan = "sorted";
	EXPECT_THROW(make_plan(shapes, score, o), Error);
	o.plan = "magnitude";
	o.roles = {"ffn_sideways"};
	EXPECT_THROW(make_plan(shapes, score, o), Error);
	EXPECT_EQ(gguf_name("transformer.h.11.mlp.c_proj.bias"), "blk.11.ffn_down.bias");
	EXPECT_EQ(gguf_name("transformer.wte.weight"), "token_embd.weight");
	EXPECT_EQ(gguf_name("transformer.h.0.attn.ra_proj.weight"), "");
}
