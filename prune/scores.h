// Pruning scores (higher = kept) and sparsity schedules, exactly as the spec's table.
#pragma once
#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace knlp {

enum class ScheduleShape { Cubic, Linear }; // s_T p^3 (magnitude, state) or s_T p (movement)

// Target sparsity at `step`: p = clamp((step - warmup) / (ramp_end - warmup), 0, 1).
double scheduled_sparsity(double target, int64_t step, int64_t warmup, int64_t ramp_end, ScheduleShape shape);

// bitter0..bitter9 from weights w and Adam moments m (exp_avg), v (exp_avg_sq). An
// undefined m or v (no optimizer state yet) falls back to |w|. bitter5_intended flips the
// original's inverted sign (keep weights that Adam is growing).
torch::Tensor state_score(int variant, const torch::Tensor &w, const torch::Tensor &m, const torch::Tensor &v,
			  bool bitter5_intended = false);

torch::Tensor magnitude_score(const torch::Tensor &w);
torch::Tensor movement_score(const torch::Tensor &w, const torch::Tensor &w0);

// bitter4's per-layer sparsity: min(0.95, s (0.7 + 0.6 l / (L - 1))).
double bitter4_layer_sparsity(double s, int layer, int n_layers);

} // namespace knlp
