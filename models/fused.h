// CPU kernels that replace chains of libtorch operators in the GPT-2 step. Each has a
// Kconfig switch (models/Kconfig.gpt2), is checked against the unfused libtorch path in
// values and gradients (tests/test_fused.cpp) and has its gain in `make bench`
// (docs/performance.md).
#pragma once
#include <torch/torch.h>

namespace knlp {

// Causal self-attention softmax(scale q k^T + causal) v for q, k, v [N, T, D] (N = batch x
// heads), computed in blocks of `block` query rows: block i multiplies only with the keys
// and values at positions up to its last row, so the masked upper triangle (almost half of
// the two attention products and of the softmax, forward and backward) is never
// computed. Each block sees every key it may attend to, so its softmax is exact and needs
// no running statistics. `bias` is the model's [Tmax, Tmax] causal bias (0 on and below the
// diagonal, -inf above). Differentiable in q, k and v; no dropout.
torch::Tensor blocked_causal_attention(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &v,
				       const torch::Tensor &bias, int64_t block);

// The query-block size blocked_causal_attention uses for a sequence of T tokens, 0 where
// blocking does not pay (short sequences: one block is the plain path).
int64_t attention_block_rows(int64_t T);

// y = x + d and n = LayerNorm(y) (weight w, bias b, eps) in one pass over the rows (the
// last dimension), the backward likewise: the residual add in front of every pre-LN
// LayerNorm, without its own pass and without autograd summing the two gradients of y.
// x float32, d float32 or bfloat16 (a bf16 autocast branch output), w and b float32;
// y and n are float32. Differentiable in x, d, w and b.
std::pair<torch::Tensor, torch::Tensor> add_layer_norm(const torch::Tensor &x, const torch::Tensor &d,
						       const torch::Tensor &w, const torch::Tensor &b, double eps);

// a = GELU(h + bias) (the exact, erf form) in one pass, the backward (the GELU derivative
// and the bias gradient's column sums) likewise: the bias of the MLP's first layer moves
// out of the product into the activation. h [.., N] float32 or bfloat16 (a returns in
// its dtype; the arithmetic is float32), bias [N] float32. Differentiable in h and bias.
torch::Tensor bias_gelu(const torch::Tensor &h, const torch::Tensor &bias);

// The chunked head's cross-entropy (models/linear_ce.cpp) over CPU float32 logits [rows, V]
// in place: returns the sum over rows of logsumexp(row) - row[target] (rows with target -1
// count 0; a row with a NaN or an infinity makes it NaN); with grad each row becomes its
// gradient (softmax - onehot(target)) * scale, ignored rows 0. One row at a time while it
// is in cache, rows on every thread, the sum in row order.
double cross_entropy_rows(torch::Tensor &logits, const torch::Tensor &targets, float scale, bool grad);

// The output head and its cross-entropy, loss = sum over rows of CE(x W^T, targets), in
// blocks of the vocabulary on the CPU in float32: each thread multiplies x with a block
// of W's rows (single-threaded GEMMs) and reduces the block's logits while they are in
// cache; a second pass turns each kept block into its gradient and multiplies it out
// while it is in cache (W's gradient rows of the block; x's gradient summed per fixed
// group of blocks). Returns the sum over rows of logsumexp - logit[target] (rows with
// target -1 count 0; NaN where a row holds a NaN or an infinity). With gx (and gw) the
// gradients of that sum times `scale` are written to gx and written to (or, with
// gw_accumulate, added to) gw. The same bits for any thread count. block: columns per
// block (0: head_vocab_block(N)). bf16: the three products through gemm_bf16 (models/gemm.h,
// which must be available), as under bf16 autocast: x, W and each block's gradient rounded
// to bf16, float32 sums, logits and gradients float32.
double linear_cross_entropy_blocked(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &targets,
				    float scale, torch::Tensor *gx, torch::Tensor *gw, bool gw_accumulate,
				    int64_t block = 0, bool bf16 = false);
// Whether it applies: contiguous CPU float32 x [N, C] and w [V, C], BLAS at hand, at most
// 128 channels (where it was measured to pay) and a vocabulary of at least 16 blocks (a
// smaller one keeps the row kernel).
bool linear_cross_entropy_blocked_applies(const torch::Tensor &x, const torch::Tensor &w, int64_t block = 0);
// The vocabulary block it uses for `rows` rows.
int64_t head_vocab_block(int64_t rows);

// The instruction set the CPU kernels (these and models/gemm.h) use: 2 AVX-512 (F, BW,
// DQ, VL), 1 AVX2 with FMA, 0 baseline x86-64; capped by ATEN_CPU_CAPABILITY.
int kernel_isa();

// Whether the fused kernels can run: CPU float32 tensors (the kernels are compiled for
// AVX-512, AVX2 and baseline x86-64 and chosen at run time).
bool fused_kernels_apply(const torch::Tensor &t);

} // namespace knlp
