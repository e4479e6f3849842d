// Attention Fisher spectrum. For a softmax row p (one query's attention over the keys),
// the Fisher information of the categorical distribution in logit space is
// diag(p) - p p^T. Averaged over sampled query rows of one head:
//   F = mean_i (diag(p_i) - p_i p_i^T),   trace F = 1 - mean_i ||p_i||^2.
// F 1 = 0 always, so the smallest eigenvalue is ~0 and cond = eigmax / (|eigmin| + 1e-8)
// mostly measures rounding; it is reported but should not be trusted.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace knlp {

struct HeadSpectrum {
	int layer = 0, head = 0;
	double eigmax = 0, eigmin = 0, trace = 0, cond = 0, energy8 = 0, energy16 = 0;
	std::vector<double> top; // the 8 largest eigenvalues, descending
};

// probs [B, H, T, S]: softmax rows of one layer. `rows` query rows (b, t) are drawn without
// replacement from all B*T rows with `seed` (all rows when rows >= B*T); the same rows for
// every head.
std::vector<HeadSpectrum> attention_spectrum(const torch::Tensor &probs, int layer, int rows, uint64_t seed);

// Per-layer means over heads plus every head, as written by `knlp fim attention`:
// {"layers": [{"layer", "trace", "eigmax", "cond", "energy8", "energy16", "heads": [...]}]}.
nlohmann::json spectrum_json(const std::vector<HeadSpectrum> &heads);

// Layers the spectrum covers: {0, L/2, L-1} (deduplicated), or all.
std::vector<int> spectrum_layers(int n_layer, bool all);

} // namespace knlp
