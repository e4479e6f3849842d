#include "models/pool.h"

#include <ATen/Parallel.h>

#include "core/parallel.h"

namespace knlp {

namespace {

// Winner code 0..3 (row-major in the window), or kDead when the output is <= 0: ReLU's
// backward then passes nothing to the window.
constexpr uint8_t kDead = 4;

inline float relu(float v)
{
	return v < 0.f ? 0.f : v; // keeps -0 and NaN, as torch's relu does
}

// One plane: in [H, W] -> out [H/2, W/2] and, when code is not null, the winner codes.
void forward_plane(const float *in, float *out, uint8_t *code, int64_t H, int64_t W)
{
	const int64_t Ho = H / 2, Wo = W / 2;
	for (int64_t oh = 0; oh < Ho; oh++) {
		const float *r0 = in + 2 * oh * W, *r1 = r0 + W;
		float *o = out + oh * Wo;
		uint8_t *c = code ? code + oh * Wo : nullptr;
		// max_pool2d's scan: row-major, a later value wins when greater or NaN. Written
		// branch-free so that the loop vectorizes.
#pragma omp simd
		for (int64_t ow = 0; ow < Wo; ow++) {
			const float a = relu(r0[2 * ow]), b = relu(r0[2 * ow + 1]), d = relu(r1[2 * ow]),
				    e = relu(r1[2 * ow + 1]);
			float m = a;
			int k = 0;
			bool u = b > m || b != b;
			m = u ? b : m, k = u ? 1 : k;
			u = d > m || d != d;
			m = u ? d : m, k = u ? 2 : k;
			u = e > m || e != e;
			m = u ? e : m, k = u ? 3 : k;
			o[ow] = m;
			if (c)
				c[ow] = uint8_t(m <= 0.f ? kDead : k); // NaN passes, as in ReLU's backward
		}
	}
}

void backward_plane(const float *g, const uint8_t *code, float *gin, int64_t H, int64_t W)
{
	const int64_t Ho = H / 2, Wo = W / 2;
	for (int64_t oh = 0; oh < Ho; oh++) {
		float *r0 = gin + 2 * oh * W, *r1 = r0 + W;
		const float *go = g + oh * Wo;
		const uint8_t *c = code + oh * Wo;
#pragma omp simd
		for (int64_t ow = 0; ow < Wo; ow++) {
			const float v = go[ow];
			const uint8_t k = c[ow];
			r0[2 * ow] = k == 0 ? v : 0.f;
			r0[2 * ow + 1] = k == 1 ? v : 0.f;
			r1[2 * ow] = k == 2 ? v : 0.f;
			r1[2 * ow + 1] = k == 3 ? v : 0.f;
		}
	}
}

// Planes per task: enough work to be worth a thread hand-off.
int64_t grain(int64_t plane)
{
	return std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1));
}

bool fast_path(const torch::Tensor &x)
{
	return x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 && x.is_contiguous() &&
	       x.size(2) >= 2 && x.size(3) >= 2;
}

torch::Tensor forward_impl(const torch::Tensor &x, torch::Tensor *codes)
{
	const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = H / 2, Wo = W / 2;
	auto out = torch::empty({N, C, Ho, Wo}, x.options());
	if (codes)
		*codes = torch::empty({N, C, Ho, Wo}, x.options().dtype(torch::kUInt8));
	const float *in = x.data_ptr<float>();
	float *o = out.data_ptr<float>();
	uint8_t *c = codes ? codes->data_ptr<uint8_t>() : nullptr;
	knlp::parallel_for(0, N * C, grain(H * W), [&](int64_t b, int64_t e) {
		for (int64_t p = b; p < e; p++)
			forward_plane(in + p * H * W, o + p * Ho * Wo, c ? c + p * Ho * Wo : nullptr, H, W);
	});
	return out;
}

struct ReluMaxPool2x2 : public torch::autograd::Function<ReluMaxPool2x2> {
	static torch::Tensor forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &x)
	{
		torch::Tensor codes;
		auto out = forward_impl(x, &codes);
		ctx->save_for_backward({codes});
		ctx->saved_data["H"] = x.size(2);
		ctx->saved_data["W"] = x.size(3);
		return out;
	}

	static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
						     torch::autograd::tensor_list grad_out)
	{
		const auto codes = ctx->get_saved_variables()[0];
		const int64_t H = ctx->saved_data["H"].toInt(), W = ctx->saved_data["W"].toInt();
		const int64_t N = codes.size(0), C = codes.size(1), Ho = H / 2, Wo = W / 2;
		const auto g = grad_out[0].contiguous();
		// Floor mode leaves an odd last row or column out of every window: zero it.
		auto gin = (H % 2 || W % 2) ? torch::zeros({N, C, H, W}, g.options())
					    : torch::empty({N, C, H, W}, g.options());
		const float *gp = g.data_ptr<float>();
		const uint8_t *cp = codes.data_ptr<uint8_t>();
		float *gi = gin.data_ptr<float>();
		knlp::parallel_for(0, N * C, grain(H * W), [&](int64_t b, int64_t e) {
			for (int64_t p = b; p < e; p++)
				backward_plane(gp + p * Ho * Wo, cp + p * Ho * Wo, gi + p * H * W, H, W);
		});
		return {gin};
	}
};

} // namespace

torch::Tensor relu_max_pool2x2(const torch::Tensor &x)
{
	if (!fast_path(x))
		return torch::max_pool2d(torch::relu(x), 2);
	if (!torch::GradMode::is_enabled() || !x.requires_grad()) {
		torch::NoGradGuard ng;
		return forward_impl(x, nullptr);
	}
	return ReluMaxPool2x2::apply(x);
}

} // namespace knlp
