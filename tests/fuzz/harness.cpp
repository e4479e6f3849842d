#include "tests/fuzz/harness.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/images.h"
#include "data/mc_jsonl.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "gnn/graph.h"
#include "gnn/layout.h"
#include "gnn/npz.h"
#include "matrix/expand.h"
#include "matrix/runner.h"
#include "quant/gguf.h"

namespace knlp::fuzz {

namespace {

// A broken invariant: abort so libFuzzer (and the corpus test) report it.
void require(bool ok, const char *what)
{
	if (!ok) {
		std::fprintf(stderr, "fuzz: invariant broken: %s\n", what);
		std::abort();
	}
}

template <typename F> void expect_clean(F &&f)
{
	try {
		f();
	} catch (const Error &) {
		// A clear rejection: fine.
	}
}

std::string text(const uint8_t *d, size_t n)
{
	return std::string(reinterpret_cast<const char *>(d), n);
}

void fuzz_config(const uint8_t *d, size_t n)
{
	expect_clean([&] {
		Config c = Config::parse(text(d, n), "fuzz.config");
		Config r = Config::parse(c.to_text(), "round-trip");
		require(r.to_text() == c.to_text(), "config text round trip");
	});
}

void fuzz_set(const uint8_t *d, size_t n)
{
	// --set SYMBOL=VALUE overrides, one per line.
	Config c;
	std::string s = text(d, n);
	size_t b = 0;
	while (b <= s.size()) {
		size_t e = s.find('\n', b);
		std::string line = s.substr(b, e == std::string::npos ? std::string::npos : e - b);
		expect_clean([&] { c.set(line); });
		if (e == std::string::npos)
			break;
		b = e + 1;
	}
	expect_clean([&] { Config::parse(c.to_text(), "after --set"); });
}

void fuzz_tokenizer(const uint8_t *d, size_t n)
{
	static std::unique_ptr<Tokenizer> gpt2 = [] {
		try {
			return make_gpt2_tokenizer(default_vocab_dir());
		} catch (const Error &) {
			return std::unique_ptr<Tokenizer>();
		}
	}();
	static std::unique_ptr<Tokenizer> byte = make_byte_tokenizer();
	std::string s = text(d, n);
	for (Tokenizer *t : {byte.get(), gpt2.get()}) {
		if (!t)
			continue;
		auto ids = t->encode(s);
		for (auto id : ids)
			require(int(id) < t->vocab_size(), "token id below the vocabulary size");
		require(t->decode(ids.data(), ids.size()) == s, "decode(encode(x)) == x");
	}
}

void fuzz_tokens(const uint8_t *d, size_t n)
{
	std::string p = temp_file(d, n, ".bin");
	for (int vocab : {256, 50257})
		expect_clean([&] {
			TokenFile f(p, vocab);
			for (uint64_t i = 0; i < f.size(); i++)
				require(f.at(i) < vocab, "loaded ids are below the vocabulary size");
			if (f.size() > 9) {
				f.require_window(8);
				Rng r(1);
				std::vector<int64_t> x(16), y(16);
				f.random_batch(r, 2, 8, x.data(), y.data());
			}
		});
}

void fuzz_idx(const uint8_t *d, size_t n)
{
	// First byte: where images end and labels begin (as a share of the rest).
	if (n < 1)
		return;
	size_t cut = 1 + (n - 1) * d[0] / 255;
	std::string pi = temp_file(d + 1, cut - 1, "-images"), pl = pi + "-labels";
	{
		std::ofstream f(pl, std::ios::binary);
		f.write(reinterpret_cast<const char *>(d + cut), std::streamsize(n - cut));
	}
	expect_clean([&] {
		ImageSet s = read_idx(pi, pl, 10);
		require(s.labels.size() == size_t(s.n), "one label per image");
	});
	std::remove(pl.c_str());
}

void fuzz_cifar(const uint8_t *d, size_t n)
{
	std::string p = temp_file(d, n, ".bin");
	for (bool c100 : {false, true})
		expect_clean([&] { read_cifar({p}, c100); });
}

void fuzz_pnm(const uint8_t *d, size_t n)
{
	expect_clean([&] {
		Pnm p = parse_pnm(text(d, n), "fuzz.pnm");
		require(p.pixels.size() == size_t(p.channels) * size_t(p.height) * size_t(p.width),
			"one byte per sample");
		require(p.channels == 1 || p.channels == 3, "grey or colour");
	});
}

void fuzz_npz(const uint8_t *d, size_t n)
{
	std::string p = temp_file(d, n, ".npz");
	expect_clean([&] { read_npz(p); });
	expect_clean([&] { load_graph_npz(p); });
	expect_clean([&] { load_layout(p, 4); });
	expect_clean([&] { parse_npy(d, n, "fuzz.npy"); });
}

void fuzz_safetensors(const uint8_t *d, size_t n)
{
	std::string p = temp_file(d, n, ".safetensors");
	expect_clean([&] {
		SafetensorsFile f(p);
		for (const auto &t : f.tensors())
			require(t.nbytes == 0 || t.data != nullptr, "tensor data present");
	});
}

void fuzz_gguf(const uint8_t *d, size_t n)
{
	std::string p = temp_file(d, n, ".gguf");
	expect_clean([&] { GgufFile f(p); });
}

void fuzz_sweep(const uint8_t *d, size_t n)
{
	expect_clean([&] { parse_sweep(text(d, n), "fuzz.sweep"); });
}

void fuzz_results(const uint8_t *d, size_t n)
{
	// The matrix results loader: a finished run whose training_metrics.json is the input.
	static const std::string dir = [] {
		std::string t = temp_file(nullptr, 0, "-results");
		std::remove(t.c_str());
		make_dirs(t + "/r/checkpoints");
		write_file_atomic(t + "/config.txt", Config().to_text());
		write_file_atomic(t + "/plan.json",
				  R"({"runs": [{"index": 0, "test_id": "r", "config_id": "c", "model": "gpt2",
			"optimizer": "adamw", "variant": "", "pruning": "none", "target_sparsity": 0, "seed": 1}]})");
		write_file_atomic(t + "/r/COMPLETE", "");
		write_file_atomic(t + "/r/checkpoints/FINAL", "iter_00000001\n");
		return t;
	}();
	write_file_atomic(dir + "/r/training_metrics.json", text(d, n));
	expect_clean([&] { write_summaries(dir); });
}

void fuzz_hellaswag(const uint8_t *d, size_t n)
{
	// Parsed items written back and parsed again are the same items.
	expect_clean([&] {
		auto a = parse_mc_jsonl(text(d, n), "fuzz.jsonl");
		auto b = parse_mc_jsonl(mc_jsonl(a), "round-trip.jsonl");
		require(a.size() == b.size(), "hellaswag round trip: item count");
		for (size_t i = 0; i < a.size(); i++)
			require(a[i].ctx == b[i].ctx && a[i].endings == b[i].endings && a[i].label == b[i].label,
				"hellaswag round trip: item");
	});
}

} // namespace

const std::vector<Target> &targets()
{
	static const std::vector<Target> t = {{"config", fuzz_config},
					      {"set", fuzz_set},
					      {"tokenizer", fuzz_tokenizer},
					      {"tokens", fuzz_tokens},
					      {"idx", fuzz_idx},
					      {"cifar", fuzz_cifar},
					      {"npz", fuzz_npz},
					      {"safetensors", fuzz_safetensors},
					      {"gguf", fuzz_gguf},
					      {"sweep", fuzz_sweep},
					      {"results", fuzz_results},
					      {"hellaswag", fuzz_hellaswag},
					      {"pnm", fuzz_pnm}};
	return t;
}

std::string temp_file(const uint8_t *data, size_t size, const char *suffix)
{
	static thread_local std::string base = [] {
		const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		return std::string(dir) + "/knlp-fuzz-" + std::to_string(getpid());
	}();
	std::string p = base + suffix;
	std::ofstream f(p, std::ios::binary | std::ios::trunc);
	f.write(reinterpret_cast<const char *>(data), std::streamsize(size));
	return p;
}

} // namespace knlp::fuzz
