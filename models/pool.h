// ReLU followed by 2x2 max pooling (stride 2, floor mode), fused, for contiguous float
// NCHW tensors on the CPU. libtorch 1.13's max_pool2d forward on such tensors costs about
// ten times a ReLU pass over the same data; this kernel reads the input once, writes the
// output and a one-byte winner code per window, and its backward writes every input
// gradient in one pass. Bit for bit what relu_() then max_pool2d(2) give, values and
// gradients, ties (first in row-major order wins) and NaN (propagated) included.
#pragma once
#include <torch/torch.h>

namespace knlp {

// Same as torch::max_pool2d(x.relu(), 2); other devices, dtypes and layouts take that path.
torch::Tensor relu_max_pool2x2(const torch::Tensor &x);

} // namespace knlp
