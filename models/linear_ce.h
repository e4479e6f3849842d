// Fused "linear head + cross-entropy": loss = CE(x W^T, targets) computed in row chunks so
// the [N, vocab] logits never exist in full (on the CPU and on CUDA). The gradients are
// formed in the same pass (softmax - onehot is at hand while the chunk is in cache), so
// backward only scales them. Same FLOPs as the unfused path, a fraction of the memory
// traffic, and no host synchronisation: the loss stays on the device.
#pragma once
#include <torch/torch.h>

namespace knlp {

// x [N, C] (float32), w [V, C] float32, targets [N] (int64, -1 ignored). Returns the mean
// loss over non-ignored targets, float32. Differentiable in x and w.
// compute: the dtype of the two matrix products per chunk: float32, or bfloat16 / half as
// autocast would run them (x and W cast per chunk, products accumulated in float32 by the
// GEMM). The log-sum-exp, the loss and the gradients' sums are float32 either way.
// rows_per_chunk: at most this many rows per chunk (0: linear_cross_entropy_rows); the rows
// are split into chunks of equal size.
// vocab_blocks: on the CPU in float32 with a large vocabulary, each chunk in blocks of the
// vocabulary (linear_cross_entropy_blocked, models/fused.h) rather than whole rows of logits.
torch::Tensor linear_cross_entropy(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &targets,
				   at::ScalarType compute = at::kFloat, int64_t rows_per_chunk = 0,
				   bool vocab_blocks = true);

// The most rows per chunk for N rows of a vocabulary of V: about 2^26 logits
// (256 MB in float32), at least 256 rows.
int64_t linear_cross_entropy_rows(int64_t N, int64_t V);

} // namespace knlp
