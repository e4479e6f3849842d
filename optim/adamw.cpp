#include "optim/adamw.h"

#include <ATen/Parallel.h>
#include <cmath>

namespace knlp {

bool decays(const std::string &name, const torch::Tensor &p)
{
	auto ends = [&](const char *s) {
		std::string suf(s);
		return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
	};
	if (ends(".bias") || p.dim() < 2)
		return false;
	if (name.find(".ln_") != std::string::npos || name.find("norm") != std::string::npos)
		return false;
	if (name.find("wte") != std::string::npos || name.find("wpe") != std::string::npos ||
	    name.find("embed") != std::string::npos)
		return false;
	return true;
}

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>> &named_params, AdamWOptions opt)
    : opt_(opt)
{
	for (const auto &[name, p] : named_params) {
		ParamState s;
		s.name = name;
		s.param = p;
		s.exp_avg = torch::zeros_like(p).contiguous();
		s.exp_avg_sq = torch::zeros_like(p).contiguous();
		s.weight_decay = decays(name, p) ? opt.weight_decay : 0.0;
		state_.push_back(std::move(s));
	}
}

int64_t AdamW::state_bytes() const
{
	int64_t b = 0;
	for (const auto &s : state_)
		b += (s.exp_avg.numel() + s.exp_avg_sq.numel()) * s.exp_avg.element_size();
	return b;
}

void AdamW::zero_grad()
{
	for (auto &s : state_)
		if (s.param.grad().defined())
			s.param.mutable_grad().zero_();
}

namespace {
constexpr int64_t k_chunk = 1 << 16;

struct Span {
	float *p, *g, *m, *v;
	int64_t n;
	float wd;
};
} // namespace

double AdamW::grad_norm() const
{
	bool cpu = !state_.empty() && state_[0].param.device().is_cpu();
	if (!cpu) {
		torch::Tensor total = torch::zeros({}, state_[0].param.options().dtype(torch::kFloat));
		for (const auto &s : state_)
			if (s.param.grad().defined())
				total += s.param.grad().to(torch::kFloat).pow(2).sum();
		return std::sqrt(total.item<double>());
	}
	// Fixed chunks (independent of the thread count) so the sum is bit-reproducible.
	std::vector<std::pair<const float *, int64_t>> chunks;
	for (const auto &s : state_) {
		if (!s.param.grad().defined())
			continue;
		const float *g = s.param.grad().data_ptr<float>();
		for (int64_t o = 0; o < s.param.numel(); o += k_chunk)
			chunks.emplace_back(g + o, std::min(k_chunk, s.param.numel() - o));
	}
	std::vector<double> partial(chunks.size(), 0.0);
	at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
		for (int64_t c = b; c < e; c++) {
			const float *g = chunks[c].first;
			double acc = 0;
			for (int64_t i = 0; i < chunks[c].second; i++)
				acc += double(g[i]) * g[i];
			partial[c] = acc;
		}
	});
	double total = 0;
	for (double p : partial)
		total += p;
	return std::sqrt(total);
}

void AdamW::step(double lr, double grad_scale)
{
	step_++;
	if (!state_.empty() && state_[0].param.device().is_cpu() && state_[0].param.scalar_type() == torch::kFloat)
		step_cpu(lr, grad_scale);
	else
		step_generic(lr, grad_scale);
}

void AdamW::step_cpu(double lr, double grad_scale)
{
	std::vector<Span> spans;
	for (auto &s : state_) {
		if (!s.param.grad().defined())
			continue;
		float *p = s.param.data_ptr<float>(), *g = s.param.mutable_grad().data_ptr<float>();
		float *m = s.exp_avg.data_ptr<float>(), *v = s.exp_avg_sq.data_ptr<float>();
		for (int64_t o = 0; o < s.param.numel(); o += k_chunk)
			spans.push_back({p + o, g + o, m + o, v + o, std::min(k_chunk, s.param.numel() - o),
					 static_cast<float>(s.weight_decay)});
	}
	// 1 - beta is formed in double, as libtorch does, before rounding to float.
	const float b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps, scale = grad_scale;
	const float omb1 = static_cast<float>(1.0 - opt_.beta1), omb2 = static_cast<float>(1.0 - opt_.beta2);
	const double bc1 = 1.0 - std::pow(opt_.beta1, double(step_));
	const double bc2 = 1.0 - std::pow(opt_.beta2, double(step_));
	const float step_size = static_cast<float>(lr / bc1);
	const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
	const float flr = static_cast<float>(lr);
	at::parallel_for(0, static_cast<int64_t>(spans.size()), 1, [&](int64_t b, int64_t e) {
		for (int64_t c = b; c < e; c++) {
			const Span s = spans[c];
			const float decay = 1.0f - flr * s.wd;
#pragma omp simd
			for (int64_t i = 0; i < s.n; i++) {
				float g = s.g[i] * scale;
				float p = s.p[i] * decay;
				float m = b1 * s.m[i] + omb1 * g;
				float v = b2 * s.v[i] + omb2 * g * g;
				s.m[i] = m;
				s.v[i] = v;
				s.p[i] = p - step_size * m / (std::sqrt(v) * inv_sqrt_bc2 + eps);
			}
		}
	});
}

void AdamW::step_generic(double lr, double grad_scale)
{
	torch::NoGradGuard ng;
	const double bc1 = 1.0 - std::pow(opt_.beta1, double(step_));
	const double bc2 = 1.0 - std::pow(opt_.beta2, double(step_));
	for (auto &s : state_) {
		if (!s.param.grad().defined())
			continue;
		auto g = s.param.grad();
		if (grad_scale != 1.0)
			g = g * grad_scale;
		if (s.weight_decay != 0)
			s.param.mul_(1.0 - lr * s.weight_decay);
		s.exp_avg.mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
		s.exp_avg_sq.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
		auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(opt_.eps);
		s.param.addcdiv_(s.exp_avg, denom, -lr / bc1);
	}
}

} // namespace knlp
