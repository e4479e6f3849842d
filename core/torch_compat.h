// The one place that knows which libtorch we build against. Debian ships 1.13 (CPU); GPU
// users build against the official 2.x CUDA libtorch (`make TORCH_DIR=...`). Everything that
// differs between them (fused attention, autocast API, generator state) goes through here.
#pragma once
#include <torch/torch.h>
#include <torch/version.h>
#include <ATen/autocast_mode.h>

#define KNLP_TORCH_AT_LEAST(major, minor)                                                                              \
	(TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace knlp::compat {

inline bool has_fused_attention()
{
	return KNLP_TORCH_AT_LEAST(2, 0);
}

// Causal attention for q, k, v of shape [B, H, T, D] with keys [B, H, S, D], S >= T, where
// query i sits at absolute position S - T + i (so cached decoding is correct). `bias` is an
// additive mask [T, S] (0 or -inf) used when the fused kernel is unavailable.
inline torch::Tensor causal_attention(const torch::Tensor &q, const torch::Tensor &k, const torch::Tensor &v,
				      const torch::Tensor &bias, double dropout_p, bool use_fused)
{
#if KNLP_TORCH_AT_LEAST(2, 0)
	if (use_fused) {
		if (q.size(2) == k.size(2))
			return at::scaled_dot_product_attention(q, k, v, {}, dropout_p, /*is_causal=*/true);
		return at::scaled_dot_product_attention(q, k, v, bias.to(q.dtype()), dropout_p, false);
	}
#else
	(void)use_fused;
#endif
	auto B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), S = k.size(2);
	auto q3 = q.reshape({B * H, T, D});
	auto k3 = k.reshape({B * H, S, D});
	auto v3 = v.reshape({B * H, S, D});
	// One fused multiply-add: bias + scale * q k^T.
	auto att = torch::baddbmm(bias.to(q.dtype()), q3, k3.transpose(1, 2), 1.0, 1.0 / std::sqrt(double(D)));
	att = torch::softmax(att, -1);
	if (dropout_p > 0)
		att = torch::dropout(att, dropout_p, true);
	return torch::bmm(att, v3).view({B, H, T, D});
}

inline torch::Tensor generator_state(torch::Device dev)
{
	if (dev.is_cuda())
		return at::globalContext().defaultGenerator(dev).get_state();
	return at::globalContext().defaultGenerator(torch::kCPU).get_state();
}

inline void set_generator_state(torch::Device dev, const torch::Tensor &state)
{
	auto gen = dev.is_cuda() ? at::globalContext().defaultGenerator(dev)
				 : at::globalContext().defaultGenerator(torch::kCPU);
	std::lock_guard<std::mutex> lock(gen.mutex());
	gen.set_state(state);
}

// RAII autocast on CUDA (no-op elsewhere).
// Whether CPU autocast is on in this thread.
inline bool cpu_autocast_enabled()
{
#if KNLP_TORCH_AT_LEAST(2, 4)
	return at::autocast::is_autocast_enabled(at::kCPU);
#else
	return at::autocast::is_cpu_enabled();
#endif
}

// The dtype autocast runs matrix products in on this device in this thread; float32 when
// autocast is off there (or the device has none).
inline at::ScalarType autocast_compute_dtype(const torch::Device &dev)
{
	if (dev.is_cpu())
		return cpu_autocast_enabled() ?
#if KNLP_TORCH_AT_LEAST(2, 4)
					      at::autocast::get_autocast_dtype(at::kCPU)
#else
					      at::autocast::get_autocast_cpu_dtype()
#endif
					      : at::kFloat;
	if (!dev.is_cuda())
		return at::kFloat;
#if KNLP_TORCH_AT_LEAST(2, 4)
	return at::autocast::is_autocast_enabled(at::kCUDA) ? at::autocast::get_autocast_dtype(at::kCUDA) : at::kFloat;
#else
	return at::autocast::is_enabled() ? at::autocast::get_autocast_gpu_dtype() : at::kFloat;
#endif
}

class AutocastGuard {
public:
	AutocastGuard(torch::Device dev, bool enable, at::ScalarType dtype)
	{
		cpu_ = enable && dev.is_cpu();
		if (cpu_) {
#if KNLP_TORCH_AT_LEAST(2, 4)
			prev_ = at::autocast::is_autocast_enabled(at::kCPU);
			at::autocast::set_autocast_enabled(at::kCPU, true);
			at::autocast::set_autocast_dtype(at::kCPU, dtype);
#else
			prev_ = at::autocast::is_cpu_enabled();
			at::autocast::set_cpu_enabled(true);
			at::autocast::set_autocast_cpu_dtype(dtype);
#endif
			return;
		}
		active_ = enable && dev.is_cuda();
		if (!active_)
			return;
#if KNLP_TORCH_AT_LEAST(2, 4)
		prev_ = at::autocast::is_autocast_enabled(at::kCUDA);
		at::autocast::set_autocast_enabled(at::kCUDA, true);
		at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
		prev_ = at::autocast::is_enabled();
		at::autocast::set_enabled(true);
		at::autocast::set_autocast_gpu_dtype(dtype);
#endif
	}
	~AutocastGuard()
	{
		if (cpu_) {
#if KNLP_TORCH_AT_LEAST(2, 4)
			at::autocast::set_autocast_enabled(at::kCPU, prev_);
#else
			at::autocast::set_cpu_enabled(prev_);
#endif
			at::autocast::clear_cache();
			return;
		}
		if (!active_)
			return;
#if KNLP_TORCH_AT_LEAST(2, 4)
		at::autocast::set_autocast_enabled(at::kCUDA, prev_);
#else
		at::autocast::set_enabled(prev_);
#endif
		at::autocast::clear_cache();
	}

private:
	bool active_ = false, cpu_ = false, prev_ = false;
};

} // namespace knlp::compat
