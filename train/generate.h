// Text generation with a KV cache: prefill the prompt once, then one token per step.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "models/gpt2.h"
#include "models/llama.h"

namespace knlp {

struct SampleOptions {
	int tokens = 50;
	double temperature = 0.8;
	int top_k = 200;
};

// Returns the generated ids (without the prompt). Deterministic for a given rng state.
// peak_cache_bytes, when given, receives the largest KV-cache size reached.
std::vector<uint32_t> generate(GPT2 &model, const std::vector<uint32_t> &prompt, const SampleOptions &opt, Rng &rng,
			       torch::Device dev, int64_t *peak_cache_bytes = nullptr);

// The same for an imported Llama-family model (CPU; the cache holds the kv heads only).
std::vector<uint32_t> generate(Llama &model, const std::vector<uint32_t> &prompt, const SampleOptions &opt, Rng &rng,
			       int64_t *peak_cache_bytes = nullptr);

// Draw one id from logits (first `vocab` entries) with temperature and top-k.
uint32_t sample_logits(const torch::Tensor &logits, int vocab, double temperature, int top_k, Rng &rng);

} // namespace knlp
