// ResNet training straight on oneDNN, in its blocked activation layout.
//
// libtorch hands every convolution to oneDNN too, but keeps activations in NCHW: each call
// reorders its input to oneDNN's blocked layout (nChw16c on AVX-512 CPUs, nChw8c on AVX2:
// a vector register's worth of channels innermost) and its output back, and batch norm and
// ReLU run as separate ATen passes. Here activations stay blocked from the stem to the
// pooling head, stored in ordinary tensors of shape [N, C/B, H, W, B] with B = block();
// convolution, batch norm and the ReLU after it are oneDNN primitives
// wrapped as autograd functions. Parameters and their gradients stay ordinary NCHW tensors
// (optimizer, pruning, checkpoints and DDP see no difference). docs/vision.md has the
// measurements.
#pragma once
#include <torch/torch.h>

namespace knlp::onednn {

// True when this binary was built with oneDNN's headers (libdnnl-dev).
bool available();

// Channels per block on this CPU: 16 where oneDNN's kernels use AVX-512, 8 below (AVX2,
// SSE4.1). oneDNN has vectorised kernels only for the block width of the CPU's vectors; the
// other width falls to its reference code, hundreds of times slower.
int64_t block();

// Channel counts the blocked layout takes (multiples of block()).
inline bool blockable(int64_t channels)
{
	return channels % block() == 0;
}

// [N, C, H, W] <-> [N, C/B, H, W, B], B = block(). Differentiable (ATen permutes).
torch::Tensor to_blocked(const torch::Tensor &x);
torch::Tensor from_blocked(const torch::Tensor &x);

// Convolution without bias. x: blocked [N, C/B, H, W, B], or plain [N, C, H, W] for a
// stem whose input channels are not a multiple of B; float or bf16 (bf16_available());
// weight: float [O, C, K, K] (O a multiple of B); returns blocked [N, O/B, OH, OW, B] of
// x's type. Gradients for x (x's type) and weight (float).
// winograd: oneDNN's F(4x4, 3x3) Winograd algorithm where it applies and pays (3x3, stride
// 1, blocked input, outputs of 8x8 or more): about twice as fast, forward and backward, at
// a rounding error a few times direct convolution's (docs/vision.md has both).
torch::Tensor conv2d(const torch::Tensor &x, const torch::Tensor &weight, int64_t stride, int64_t pad,
		     bool winograd = false);

// Whether conv2d(x, weight, stride, pad, true) runs Winograd on this CPU.
bool uses_winograd(const torch::Tensor &x, const torch::Tensor &weight, int64_t stride, int64_t pad);
// Whether this CPU has oneDNN's Winograd kernels at all (AVX-512 ones only).
bool winograd_available();

// Whether conv2d and batch_norm have fast bf16 kernels here: bf16 inputs then give bf16
// outputs and gradients, products accumulated in f32, weight gradients and batch-norm
// statistics in f32. Needs native bf16 (AVX512-BF16 or AMX-BF16); elsewhere oneDNN's bf16
// is reference code, far slower than f32, and the engine stays f32.
bool bf16_available();

// Batch norm of blocked x (float or bf16; the result and its gradient of x's type) with
// per-channel float weight and bias, statistics in float, and ReLU fused when relu is set. training: batch statistics, and running_mean / running_var updated as libtorch's
// BatchNorm2d does (momentum, unbiased variance) with num_batches_tracked incremented;
// otherwise the running statistics normalise.
torch::Tensor batch_norm(const torch::Tensor &x, const torch::Tensor &weight, const torch::Tensor &bias,
			 torch::Tensor running_mean, torch::Tensor running_var, torch::Tensor num_batches_tracked,
			 bool training, double momentum, double eps, bool relu);

} // namespace knlp::onednn
