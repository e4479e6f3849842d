// knlp quant encode | decode: GGML block coding of raw float32 arrays, for checking knlp's
// quantizers against other implementations (tests/test_quant_ggml.sh) and for inspection.
// knlp gguf show: metadata and tensor table of a GGUF file (optionally a tensor's values).
#include <cstring>

#include "core/error.h"
#include "core/fsutil.h"
#include "quant/ggml_quants.h"
#include "quant/gguf.h"
#include "tools/commands.h"

namespace knlp {

void add_quant_commands(CLI::App &app)
{
	auto *q = app.add_subcommand("quant", "GGML block quantization of raw arrays");
	q->require_subcommand(1);
	static std::string type, in, out;
	auto *enc = q->add_subcommand("encode", "Raw little-endian float32 -> GGML blocks");
	auto *dec = q->add_subcommand("decode", "GGML blocks -> raw little-endian float32");
	for (auto *c : {enc, dec}) {
		c->add_option("--type", type, "f32 f16 q8_0 q4_0 q3_k q4_k q5_k q6_k")->required();
		c->add_option("input", in, "Input file")->required();
		c->add_option("output", out, "Output file")->required();
	}
	enc->callback([] {
		GgmlType t = ggml_type_from_name(type);
		std::string raw = read_file(in);
		if (raw.size() % 4)
			fail("{}: {} bytes is not a whole number of float32 values", in, raw.size());
		int64_t n = int64_t(raw.size() / 4);
		if (n % ggml_type_info(t).block)
			fail("{}: {} values are not a multiple of {}'s block of {}", in, n, ggml_type_info(t).name,
			     ggml_type_info(t).block);
		std::vector<float> x(static_cast<size_t>(n));
		std::memcpy(x.data(), raw.data(), raw.size());
		std::string blocks(size_t(ggml_row_bytes(t, n)), '\0');
		ggml_quantize(t, x.data(), n, reinterpret_cast<uint8_t *>(blocks.data()));
		write_file_atomic(out, blocks);
	});
	dec->callback([] {
		GgmlType t = ggml_type_from_name(type);
		std::string blocks = read_file(in);
		const auto &ti = ggml_type_info(t);
		if (blocks.size() % size_t(ti.block_bytes))
			fail("{}: {} bytes is not a whole number of {} blocks of {} bytes", in, blocks.size(), ti.name,
			     ti.block_bytes);
		int64_t n = int64_t(blocks.size()) / ti.block_bytes * ti.block;
		std::string raw(size_t(n) * 4, '\0');
		ggml_dequantize(t, reinterpret_cast<const uint8_t *>(blocks.data()), n, reinterpret_cast<float *>(raw.data()));
		write_file_atomic(out, raw);
	});
}

void add_gguf_commands(CLI::App &app)
{
	auto *g = app.add_subcommand("gguf", "Inspect GGUF files");
	g->require_subcommand(1);
	static std::string file, tensor, dump;
	auto *show = g->add_subcommand("show", "Metadata and tensors of a GGUF file");
	show->add_option("file", file, "GGUF file")->required();
	show->add_option("--tensor", tensor, "Also dequantize this tensor ...");
	show->add_option("--dump", dump, "... into this raw float32 file");
	show->callback([] {
		GgufFile f(file);
		fmt::print("{}: GGUF v{}, {} keys, {} tensors, alignment {}, data at byte {}\n", file, f.version(),
			   f.kv().size(), f.tensors().size(), f.alignment(), f.data_offset());
		for (const auto &k : f.kv()) {
			std::string v;
			if (k.type == GgufType::ARRAY) {
				v = fmt::format("[{} values]", k.value.size());
				if (!k.value.empty())
					v += " first " + k.value[0].dump();
			} else {
				v = k.value.dump();
			}
			fmt::print("  {} = {}\n", k.key, v.size() > 120 ? v.substr(0, 117) + "..." : v);
		}
		uint64_t total = 0;
		for (const auto &t : f.tensors()) {
			std::string shape;
			for (size_t i = 0; i < t.ne.size(); i++)
				shape += (i ? " x " : "") + std::to_string(t.ne[i]);
			fmt::print("  {:<28} {:<5} [{}] {} bytes at {}\n", t.name, ggml_type_info(t.type).name, shape, t.nbytes,
				   t.offset);
			total += t.nbytes;
		}
		fmt::print("{} bytes of tensor data\n", total);
		if (!tensor.empty()) {
			const auto &t = f.tensor(tensor);
			std::string raw(size_t(t.elements()) * 4, '\0');
			ggml_dequantize(t.type, t.data, t.elements(), reinterpret_cast<float *>(raw.data()));
			if (dump.empty())
				fail("gguf show --tensor needs --dump FILE");
			write_file_atomic(dump, raw);
		}
	});
}

} // namespace knlp
