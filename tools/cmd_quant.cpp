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

namespace {

// ---- quant encode | decode

struct CodeArgs {
	std::string type, in, out;
};

void define_code(CLI::App *c, CodeArgs &a)
{
	c->add_option("--type", a.type, "f32 f16 q8_0 q4_0 q5_0 q5_1 q3_k q4_k q5_k q6_k")->required();
	c->add_option("input", a.in, "Input file")->required();
	c->add_option("output", a.out, "Output file")->required();
}

void run_encode(CodeArgs &a)
{
	GgmlType t = ggml_type_from_name(a.type);
	std::string raw = read_file(a.in);
	if (raw.size() % 4)
		fail("{}: {} bytes is not a whole number of float32 values", a.in, raw.size());
	int64_t n = int64_t(raw.size() / 4);
	if (n % ggml_type_info(t).block)
		fail("{}: {} values are not a multiple of {}'s block of {}", a.in, n, ggml_type_info(t).name,
		     ggml_type_info(t).block);
	std::vector<float> x(static_cast<size_t>(n));
	std::memcpy(x.data(), raw.data(), raw.size());
	std::string blocks(size_t(ggml_row_bytes(t, n)), '\0');
	ggml_quantize(t, x.data(), n, reinterpret_cast<uint8_t *>(blocks.data()));
	write_file_atomic(a.out, blocks);
}

void run_decode(CodeArgs &a)
{
	GgmlType t = ggml_type_from_name(a.type);
	std::string blocks = read_file(a.in);
	const auto &ti = ggml_type_info(t);
	if (blocks.size() % size_t(ti.block_bytes))
		fail("{}: {} bytes is not a whole number of {} blocks of {} bytes", a.in, blocks.size(), ti.name,
		     ti.block_bytes);
	int64_t n = int64_t(blocks.size()) / ti.block_bytes * ti.block;
	std::string raw(size_t(n) * 4, '\0');
	ggml_dequantize(t, reinterpret_cast<const uint8_t *>(blocks.data()), n, reinterpret_cast<float *>(raw.data()));
	write_file_atomic(a.out, raw);
}

// ---- gguf show

struct ShowArgs {
	std::string file, tensor, dump;
};

void define_show(CLI::App *c, ShowArgs &a)
{
	c->add_option("file", a.file, "GGUF file")->required();
	c->add_option("--tensor", a.tensor, "Also dequantize this tensor ...");
	c->add_option("--dump", a.dump, "... into this raw float32 file");
}

void run_show(ShowArgs &a)
{
	GgufFile f(a.file);
	fmt::print("{}: GGUF v{}, {} keys, {} tensors, alignment {}, data at byte {}\n", a.file, f.version(),
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
	if (a.tensor.empty())
		return;
	if (a.dump.empty())
		fail("gguf show --tensor needs --dump FILE");
	const auto &t = f.tensor(a.tensor);
	std::string raw(size_t(t.elements()) * 4, '\0');
	ggml_dequantize(t.type, t.data, t.elements(), reinterpret_cast<float *>(raw.data()));
	write_file_atomic(a.dump, raw);
}

} // namespace

void add_quant_commands(CLI::App &app)
{
	auto *q = app.add_subcommand("quant", "GGML block quantization of raw arrays");
	q->require_subcommand(1);
	command<CodeArgs>(*q, "encode", "Raw little-endian float32 -> GGML blocks", define_code, run_encode);
	command<CodeArgs>(*q, "decode", "GGML blocks -> raw little-endian float32", define_code, run_decode);
}

void add_gguf_commands(CLI::App &app)
{
	auto *g = app.add_subcommand("gguf", "Inspect GGUF files");
	g->require_subcommand(1);
	command<ShowArgs>(*g, "show", "Metadata and tensors of a GGUF file", define_show, run_show);
}

} // namespace knlp
