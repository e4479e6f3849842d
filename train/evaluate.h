// Deterministic evaluation over a whole token file (every target counted exactly once).
#pragma once
#include "data/tokens.h"
#include "models/gpt2.h"
#include "models/llama.h"

namespace knlp {

struct EvalResult {
	double loss = 0, perplexity = 0;
	uint64_t tokens = 0;
	double seconds = 0;
};

double perplexity_of(double loss); // exp(min(loss, 20))
EvalResult evaluate_file(GPT2 &model, const TokenFile &data, int batch, torch::Device dev, bool progress = true);
// The same windows for an imported Llama-family model, ctx tokens each (CPU).
EvalResult evaluate_file(Llama &model, const TokenFile &data, int batch, int ctx, bool progress = true);

} // namespace knlp
