// Fused "linear head + cross-entropy" for the CPU: loss = CE(x W^T, targets) computed in
// row chunks so the [N, vocab] logits never exist in full. The gradients are formed in the
// same pass (softmax - onehot is at hand while the chunk is in cache), so backward only
// scales them. Same FLOPs as the unfused path, a fraction of the memory traffic.
#pragma once
#include <torch/torch.h>

namespace knlp {

// x [N, C], w [V, C], targets [N] (int64, -1 ignored). Returns the mean loss over
// non-ignored targets. Differentiable in x and w.
torch::Tensor linear_cross_entropy(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &targets);

} // namespace knlp
