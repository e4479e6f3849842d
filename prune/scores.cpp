#include "prune/scores.h"

#include <algorithm>

#include "core/error.h"

namespace knlp {

double scheduled_sparsity(double target, int64_t step, int64_t warmup, int64_t ramp_end, ScheduleShape shape)
{
	if (ramp_end <= warmup)
		fail("pruning: ramp end ({}) must come after the warmup ({})", ramp_end, warmup);
	double p = std::clamp(double(step - warmup) / double(ramp_end - warmup), 0.0, 1.0);
	return shape == ScheduleShape::Cubic ? target * p * p * p : target * p;
}

torch::Tensor magnitude_score(const torch::Tensor &w)
{
	return w.abs();
}

torch::Tensor movement_score(const torch::Tensor &w, const torch::Tensor &w0)
{
	return w * (w - w0);
}

double bitter4_layer_sparsity(double s, int layer, int n_layers)
{
	double frac = n_layers > 1 ? double(layer) / double(n_layers - 1) : 0.0;
	return std::min(0.95, s * (0.7 + 0.6 * frac));
}

torch::Tensor state_score(int variant, const torch::Tensor &w, const torch::Tensor &m, const torch::Tensor &v,
			  bool bitter5_intended)
{
	torch::NoGradGuard ng;
	const double eps = 1e-8;
	auto aw = w.abs();
	if (variant < 0 || variant > 9)
		fail("pruning: unknown AdamWPrune variant bitter{}", variant);
	if (variant == 1 || variant == 2)
		return aw;
	if (!m.defined() || !v.defined())
		return aw; // no optimizer state yet
	switch (variant) {
	case 0: return w * w * m.abs() / (v.sqrt() + eps);
	case 3:
	case 4: return aw * (m.abs() + eps).sqrt();
	case 5: {
		auto dir = w.sign() * m / (v.sqrt() + eps);
		return (bitter5_intended ? -dir : dir) + 0.1 * aw;
	}
	case 6: return aw * (m.abs() + eps).sqrt() * (m * m / (v + eps)).sqrt();
	case 7: return aw * (v.abs() + 1e-8).pow(0.25);
	default: { // 8, 9: |w| rsqrt(rsqrt(|v| + 1e-5)) in fp16
		// Every intermediate is rounded to half precision, as a GPU evaluating the formula
		// in fp16 does (libtorch 1.13 has no half rsqrt on the CPU).
		auto h = [](const torch::Tensor &t) { return t.to(torch::kHalf).to(torch::kFloat); };
		auto vh = h(h(v.abs()) + h(torch::full({}, 1e-5)));
		return h(h(aw) * h(h(vh.rsqrt()).rsqrt()));
	}
	}
}

} // namespace knlp
