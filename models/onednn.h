// ResNet training straight on oneDNN, in its blocked activation layout.
//
// libtorch hands every convolution to oneDNN too, but keeps activations in NCHW: each call
// reorders its input to oneDNN's blocked layout (nChw16c: 16 channels innermost) and its
// output back, and batch norm and ReLU run as separate ATen passes. Here activations stay
// blocked from the stem to the pooling head, stored in ordinary tensors of shape
// [N, C/16, H, W, 16]; convolution, batch norm and the ReLU after it are oneDNN primitives
// wrapped as autograd functions. Parameters and their gradients stay ordinary NCHW tensors
// (optimizer, pruning, checkpoints and DDP see no difference). docs/vision.md has the
// measurements.
#pragma once
#include <torch/torch.h>

namespace knlp::onednn {

// True when this binary was built with oneDNN's headers (libdnnl-dev).
bool available();

// Channel counts the blocked layout takes (multiples of 16).
inline bool blockable(int64_t channels) { return channels % 16 == 0; }

// [N, C, H, W] <-> [N, C/16, H, W, 16]. Differentiable (ATen permutes).
torch::Tensor to_blocked(const torch::Tensor &x);
torch::Tensor from_blocked(const torch::Tensor &x);

// Convolution without bias. x: blocked [N, C/16, H, W, 16], or plain [N, C, H, W] for a
// stem whose input channels are not a multiple of 16; weight: [O, C, K, K] (O a multiple
// of 16); returns blocked [N, O/16, OH, OW, 16]. Gradients for x and weight.
// winograd: oneDNN's F(4x4, 3x3) Winograd algorithm where it applies and pays (3x3, stride
// 1, blocked input, outputs of 8x8 or more): about twice as fast, forward and backward, at
// a rounding error a few times direct convolution's (docs/vision.md has both).
torch::Tensor conv2d(const torch::Tensor &x, const torch::Tensor &weight, int64_t stride, int64_t pad,
		     bool winograd = false);

// Whether conv2d(x, weight, stride, pad, true) runs Winograd on this CPU.
bool uses_winograd(const torch::Tensor &x, const torch::Tensor &weight, int64_t stride, int64_t pad);

// Batch norm of blocked x with per-channel weight and bias, and ReLU fused when relu is
// set. training: batch statistics, and running_mean / running_var updated as libtorch's
// BatchNorm2d does (momentum, unbiased variance) with num_batches_tracked incremented;
// otherwise the running statistics normalise.
torch::Tensor batch_norm(const torch::Tensor &x, const torch::Tensor &weight, const torch::Tensor &bias,
			 torch::Tensor running_mean, torch::Tensor running_var, torch::Tensor num_batches_tracked,
			 bool training, double momentum, double eps, bool relu);

} // namespace knlp::onednn
