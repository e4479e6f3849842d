// Global threshold selection over many score tensors without concatenating them.
#pragma once
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "core/rng.h"

namespace knlp {

// Exact k-th smallest value (k counted from 1) over all elements of `scores` (float32,
// contiguous, CPU). Two radix passes over order-preserving 32-bit keys (16 bits each),
// multithreaded; memory beyond the inputs is two 64K-entry histograms per thread.
float kth_smallest(const std::vector<torch::Tensor> &scores, int64_t k);

// The original's estimate: draw `fraction` of all elements uniformly with replacement and
// take the proportional order statistic of the sample.
float sampled_kth_smallest(const std::vector<torch::Tensor> &scores, int64_t k, double fraction, Rng &rng);

} // namespace knlp
