// Fuzz harnesses: one function per parser that reads outside input. Each takes arbitrary
// bytes; a parser may reject them only with knlp::Error (a clear one-line message); any
// other exception, a crash, a sanitizer report or a broken invariant is a bug. The same
// functions run under libFuzzer (`make fuzz`, tests/fuzz/main.cpp) and, over the committed
// seed corpora and every regression input, in `make check` (tests/test_fuzz_corpus.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace knlp::fuzz {

using Harness = void (*)(const uint8_t *data, size_t size);

struct Target {
	const char *name;
	Harness fn;
};

// Every target, by name: config, set, tokenizer, tokens, idx, cifar, npz, safetensors, gguf,
// sweep, results (the matrix results loader).
const std::vector<Target> &targets();

// Write bytes to a private temporary file (on /dev/shm when present); the path lives until
// the next call on this thread.
std::string temp_file(const uint8_t *data, size_t size, const char *suffix = "");

} // namespace knlp::fuzz
