#include "core/parallel.h"
#include "optim/optimizer.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "core/config.h"
#include "core/error.h"

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

namespace {
// A zero state tensor laid out in memory like `p` (channels-last weights get channels-last
// moments), so the fused CPU pass can walk parameter, gradient and state in memory order.
torch::Tensor state_like(const torch::Tensor &p)
{
	if (p.is_non_overlapping_and_dense())
		return torch::zeros_like(p, at::MemoryFormat::Preserve);
	return torch::zeros(p.sizes(), p.options());
}
} // namespace

Optimizer::Optimizer(const std::vector<std::pair<std::string, torch::Tensor>> &named_params, OptimizerOptions opt)
    : opt_(std::move(opt))
{
	for (const auto &[name, p] : named_params) {
		ParamState s;
		s.name = name;
		s.param = p;
		if (opt_.kind != OptimKind::SinkGD)
			s.exp_avg = state_like(p);
		if (has_second_moment())
			s.exp_avg_sq = state_like(p);
		if (has_second_moment() && opt_.amsgrad)
			s.max_exp_avg_sq = state_like(p);
		s.weight_decay = decays(name, p) ? opt_.weight_decay : 0.0;
		state_.push_back(std::move(s));
	}
}

ParamState *Optimizer::find(const std::string &name)
{
	for (auto &s : state_)
		if (s.name == name)
			return &s;
	return nullptr;
}

int64_t Optimizer::state_bytes() const
{
	int64_t b = 0;
	for (const auto &s : state_)
		for (const auto *t : {&s.exp_avg, &s.exp_avg_sq, &s.max_exp_avg_sq})
			if (t->defined())
				b += t->numel() * t->element_size();
	return b;
}

std::vector<std::pair<std::string, torch::Tensor>> Optimizer::state_tensors()
{
	std::vector<std::pair<std::string, torch::Tensor>> ts;
	const char *first = opt_.kind == OptimKind::SGD ? "momentum." : "exp_avg.";
	for (auto &s : state_) {
		if (s.exp_avg.defined())
			ts.emplace_back(first + s.name, s.exp_avg);
		if (s.exp_avg_sq.defined())
			ts.emplace_back("exp_avg_sq." + s.name, s.exp_avg_sq);
		if (s.max_exp_avg_sq.defined())
			ts.emplace_back("max_exp_avg_sq." + s.name, s.max_exp_avg_sq);
	}
	return ts;
}

nlohmann::json Optimizer::extra_state() const
{
	nlohmann::json j = {{"name", opt_.name}, {"step", step_}};
	if (opt_.spam)
		j["spam"] = {{"norms", std::vector<double>(spam_norms_.begin(), spam_norms_.end())},
			     {"reset_at", spam_reset_at_},
			     {"soft_resets", spam_soft_resets_},
			     {"hard_resets", spam_hard_resets_}};
	return j;
}

void Optimizer::load_extra_state(const nlohmann::json &j)
{
	if (j.contains("name") && j.at("name").get<std::string>() != opt_.name)
		fail("checkpoint optimizer is {} but the configuration selects {}", j.at("name").get<std::string>(),
		     opt_.name);
	step_ = j.value("step", step_);
	if (opt_.spam && j.contains("spam")) {
		const auto &s = j.at("spam");
		auto norms = s.at("norms").get<std::vector<double>>();
		spam_norms_.assign(norms.begin(), norms.end());
		spam_reset_at_ = s.at("reset_at").get<int64_t>();
		spam_soft_resets_ = s.value("soft_resets", int64_t(0));
		spam_hard_resets_ = s.value("hard_resets", int64_t(0));
	}
}

void Optimizer::zero_grad()
{
	for (auto &s : state_)
		if (s.param.grad().defined())
			s.param.mutable_grad().zero_();
}

namespace {
constexpr int64_t k_chunk = 1 << 16;

struct Span {
	float *p, *g, *m, *v, *vmax;
	int64_t n;
	float wd;
};

// The sum of squares of n floats in double: LANES independent sums (the loop's iterations
// no longer wait for each other's additions, which held one chain to an add's latency per
// element), combined in a fixed order. A float's square is exact in double, so every
// instruction set (and FMA or not) gives the same bits, whatever the thread count.
constexpr int LANES = 32;
__attribute__((always_inline)) inline double sum_of_squares_body(const float *g, int64_t n)
{
	double acc[LANES] = {};
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
			acc[j] += double(g[i + j]) * double(g[i + j]);
	for (int j = 0; i < n; i++, j++)
		acc[j] += double(g[i]) * double(g[i]);
	for (int w = LANES / 2; w > 0; w /= 2)
		for (int j = 0; j < w; j++)
			acc[j] += acc[j + w];
	return acc[0];
}
#if defined(__x86_64__)
// Baseline x86-64 has 16 two-lane registers for the 32 sums; AVX-512 holds them in four.
__attribute__((target("avx512f,avx512vl,avx2,fma"))) double sum_of_squares_avx512(const float *g, int64_t n)
{
	return sum_of_squares_body(g, n);
}
#endif
double sum_of_squares(const float *g, int64_t n)
{
#if defined(__x86_64__)
	static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
	if (avx512)
		return sum_of_squares_avx512(g, n);
#endif
	return sum_of_squares_body(g, n);
}
} // namespace

double Optimizer::grad_norm() const
{
	// The fixed-chunk pass reads float32 CPU gradients; every other device and dtype sums
	// through libtorch ops.
	bool fast =
		!state_.empty() && state_[0].param.device().is_cpu() && state_[0].param.scalar_type() == torch::kFloat;
	for (const auto &s : state_) // the chunked pass reads each gradient's memory as one block
		if (fast && s.param.grad().defined() && !s.param.grad().is_non_overlapping_and_dense())
			fast = false;
	if (!fast) {
		std::vector<torch::Tensor> grads;
		for (const auto &s : state_)
			if (s.param.grad().defined())
				grads.push_back(s.param.grad());
		if (grads.empty())
			return 0.0;
		auto acc = state_[0].param.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
		auto norms = torch::stack(at::_foreach_norm(grads, 2)).to(acc);
		return norms.pow(2).sum().sqrt().item<double>();
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
	knlp::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
		for (int64_t c = b; c < e; c++) {
			partial[c] = sum_of_squares(chunks[c].first, chunks[c].second);
		}
	});
	double total = 0;
	for (double p : partial)
		total += p;
	return std::sqrt(total);
}

std::string Optimizer::first_nonfinite_grad() const
{
	for (const auto &s : state_)
		if (s.param.grad().defined() && !torch::isfinite(s.param.grad()).all().item<bool>())
			return s.name;
	return "?";
}

double Optimizer::before_clip()
{
	if (!opt_.spam)
		return 1.0;
	torch::NoGradGuard ng;
	const int64_t per_iter = opt_.spam_double_step ? 2 : 1;
	const int64_t t = (step_ + 1) * per_iter; // SPAM's counter for the step about to happen
	// 1. Spike-aware clip, once v means something: not on the first step (v = 0: the bound
	//    7e-6 would clip every gradient), nor on the first step after a periodic reset (v
	//    then holds one step, (1 - b2) g^2, a bound of 0.22 |g| that would cut nearly
	//    every entry; docs/optimizers.md).
	const bool have_v = step_ > 0 && (spam_reset_at_ < 0 || t - spam_reset_at_ > per_iter);
	if (have_v)
		for (auto &s : state_) {
			if (!s.param.grad().defined())
				continue;
			auto g = s.param.mutable_grad();
			auto thr = (s.exp_avg_sq + 1e-12).mul_(opt_.spam_theta).sqrt_();
			g.copy_(torch::max(torch::min(g, thr), -thr));
		}
	// 2. Z-score of the global gradient norm against the previous (up to 100) finite ones.
	double G = grad_norm();
	if (spam_norms_.size() >= 10 && std::isfinite(G)) {
		double mean = std::accumulate(spam_norms_.begin(), spam_norms_.end(), 0.0) / spam_norms_.size();
		double var = 0;
		for (double x : spam_norms_)
			var += (x - mean) * (x - mean);
		double sd = std::sqrt(var / spam_norms_.size());
		if (sd > 0 && (G - mean) / sd > opt_.spam_spike_z) {
			for (auto &s : state_) {
				s.exp_avg.mul_(0.5);
				s.exp_avg_sq.mul_(0.9);
			}
			spam_soft_resets_++;
		}
	}
	if (std::isfinite(G)) {
		spam_norms_.push_back(G);
		if (spam_norms_.size() > 100)
			spam_norms_.pop_front();
	}
	// 3. Periodic reset of m and v (step and v_max kept), then the cosine re-warmup.
	if (opt_.spam_interval > 0 && t % opt_.spam_interval < per_iter && t >= opt_.spam_interval) {
		for (auto &s : state_) {
			s.exp_avg.zero_();
			s.exp_avg_sq.zero_();
		}
		spam_reset_at_ = t;
		spam_hard_resets_++;
	}
	if (spam_reset_at_ >= 0 && opt_.spam_warmup > 0 && t - spam_reset_at_ < opt_.spam_warmup) {
		double tau = double(t - spam_reset_at_) / double(opt_.spam_warmup);
		return std::max(1e-3, 0.5 * (1.0 - std::cos(M_PI * tau)));
	}
	return 1.0;
}

void Optimizer::step(double lr, double grad_scale)
{
	step_++;
	if (opt_.kind == OptimKind::SinkGD)
		step_sinkgd(lr, grad_scale);
	else if (!state_.empty() && state_[0].param.device().is_cpu() && state_[0].param.scalar_type() == torch::kFloat)
		step_cpu(lr, grad_scale);
	else
		step_generic(lr, grad_scale);
}

void Optimizer::step_cpu(double lr, double grad_scale)
{
	std::vector<Span> spans;
	for (auto &s : state_) {
		if (!s.param.grad().defined())
			continue;
		// The pass walks parameter, gradient and state in memory order: they must share one
		// dense layout. A gradient laid out otherwise is copied into the parameter's layout.
		if (!s.param.is_non_overlapping_and_dense())
			fail("optimizer: parameter {} is not densely laid out in memory", s.name);
		if (s.param.grad().strides() != s.param.strides()) {
			auto g = torch::empty_like(s.param, at::MemoryFormat::Preserve);
			g.copy_(s.param.grad());
			s.param.mutable_grad() = g;
		}
		for (const auto *t : {&s.exp_avg, &s.exp_avg_sq, &s.max_exp_avg_sq})
			if (t->defined() && t->strides() != s.param.strides())
				fail("optimizer: the state of {} is laid out unlike the parameter", s.name);
		float *p = s.param.data_ptr<float>(), *g = s.param.mutable_grad().data_ptr<float>();
		float *m = s.exp_avg.data_ptr<float>();
		float *v = s.exp_avg_sq.defined() ? s.exp_avg_sq.data_ptr<float>() : nullptr;
		float *vmax = s.max_exp_avg_sq.defined() ? s.max_exp_avg_sq.data_ptr<float>() : nullptr;
		for (int64_t o = 0; o < s.param.numel(); o += k_chunk)
			spans.push_back({p + o, g + o, m + o, v ? v + o : nullptr, vmax ? vmax + o : nullptr,
					 std::min(k_chunk, s.param.numel() - o), static_cast<float>(s.weight_decay)});
	}
	// 1 - beta is formed in double, as libtorch does, before rounding to float.
	const float b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps, scale = grad_scale;
	const float omb1 = static_cast<float>(1.0 - opt_.beta1), omb2 = static_cast<float>(1.0 - opt_.beta2);
	const double bc1 = 1.0 - std::pow(opt_.beta1, double(step_));
	const double bc2 = 1.0 - std::pow(opt_.beta2, double(step_));
	const float step_size = static_cast<float>(lr / bc1);
	const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
	const float flr = static_cast<float>(lr), mu = static_cast<float>(opt_.momentum);
	const OptimKind kind = opt_.kind;
	const bool ams = opt_.amsgrad;
	knlp::parallel_for(0, static_cast<int64_t>(spans.size()), 1, [&](int64_t b, int64_t e) {
		for (int64_t c = b; c < e; c++) {
			const Span s = spans[c];
			if (kind == OptimKind::SGD) {
#pragma omp simd
				for (int64_t i = 0; i < s.n; i++) {
					float d = s.g[i] * scale + s.wd * s.p[i];
					float m = mu * s.m[i] + d;
					s.m[i] = m;
					s.p[i] -= flr * m;
				}
				continue;
			}
			const bool coupled = kind == OptimKind::Adam;
			const float decay = coupled ? 1.0f : 1.0f - flr * s.wd;
			const float l2 = coupled ? s.wd : 0.0f;
			if (ams) {
#pragma omp simd
				for (int64_t i = 0; i < s.n; i++) {
					float g = s.g[i] * scale + l2 * s.p[i];
					float p = s.p[i] * decay;
					float m = b1 * s.m[i] + omb1 * g;
					float v = b2 * s.v[i] + omb2 * g * g;
					float vm = std::max(s.vmax[i], v);
					s.m[i] = m;
					s.v[i] = v;
					s.vmax[i] = vm;
					s.p[i] = p - step_size * m / (std::sqrt(vm) * inv_sqrt_bc2 + eps);
				}
			} else {
#pragma omp simd
				for (int64_t i = 0; i < s.n; i++) {
					float g = s.g[i] * scale + l2 * s.p[i];
					float p = s.p[i] * decay;
					float m = b1 * s.m[i] + omb1 * g;
					float v = b2 * s.v[i] + omb2 * g * g;
					s.m[i] = m;
					s.v[i] = v;
					s.p[i] = p - step_size * m / (std::sqrt(v) * inv_sqrt_bc2 + eps);
				}
			}
		}
	});
}

void Optimizer::step_generic(double lr, double grad_scale)
{
	// The same formulas as the fused CPU pass, as multi-tensor (_foreach) libtorch ops: on a
	// GPU a handful of kernels per step instead of several per parameter.
	torch::NoGradGuard ng;
	const double bc1 = 1.0 - std::pow(opt_.beta1, double(step_));
	const double bc2 = 1.0 - std::pow(opt_.beta2, double(step_));
	std::vector<torch::Tensor> P, G, M, V, VM;
	std::map<double, std::vector<size_t>> by_wd; // weight decay -> positions in P
	for (auto &s : state_) {
		if (!s.param.grad().defined())
			continue;
		if (s.weight_decay != 0)
			by_wd[s.weight_decay].push_back(P.size());
		P.push_back(s.param);
		G.push_back(s.param.grad());
		M.push_back(s.exp_avg);
		if (s.exp_avg_sq.defined())
			V.push_back(s.exp_avg_sq);
		if (s.max_exp_avg_sq.defined())
			VM.push_back(s.max_exp_avg_sq);
	}
	if (P.empty())
		return;
	auto pick = [](const std::vector<torch::Tensor> &from, const std::vector<size_t> &idx) {
		std::vector<torch::Tensor> out;
		out.reserve(idx.size());
		for (size_t i : idx)
			out.push_back(from[i]);
		return out;
	};
	if (grad_scale != 1.0)
		G = at::_foreach_mul(G, grad_scale);
	const bool coupled = opt_.kind == OptimKind::SGD || opt_.kind == OptimKind::Adam;
	for (auto &[wd, idx] : by_wd) {
		if (coupled) { // g + wd p
			auto gd = at::_foreach_add(pick(G, idx), pick(P, idx), wd);
			for (size_t j = 0; j < idx.size(); j++)
				G[idx[j]] = gd[j];
		} else { // AdamW: p *= 1 - lr wd
			auto pd = pick(P, idx);
			at::_foreach_mul_(pd, 1.0 - lr * wd);
		}
	}
	if (opt_.kind == OptimKind::SGD) {
		at::_foreach_mul_(M, opt_.momentum);
		at::_foreach_add_(M, G);
		at::_foreach_add_(P, M, -lr);
		return;
	}
	at::_foreach_mul_(M, opt_.beta1);
	at::_foreach_add_(M, G, 1.0 - opt_.beta1);
	at::_foreach_mul_(V, opt_.beta2);
	at::_foreach_addcmul_(V, G, G, 1.0 - opt_.beta2);
	if (opt_.amsgrad)
		for (size_t i = 0; i < VM.size(); i++)
			torch::max_out(VM[i], VM[i], V[i]);
	auto denom = at::_foreach_sqrt(opt_.amsgrad ? VM : V);
	at::_foreach_div_(denom, std::sqrt(bc2));
	at::_foreach_add_(denom, opt_.eps);
	at::_foreach_addcdiv_(P, M, denom, -lr / bc1);
}

torch::Tensor sinkgd_transform(const torch::Tensor &g_in, double tau, int iters)
{
	torch::NoGradGuard ng;
	auto g = g_in.to(torch::kFloat);
	if (g.dim() < 2)
		return torch::tanh(g / g.abs().sum().clamp_min(1e-30) / tau);
	auto x = g.reshape({g.size(0), -1});
	for (int i = 0; i < iters; i++) {
		x = x / x.abs().sum(1, true).clamp_min(1e-30);
		x = x / x.abs().sum(0, true).clamp_min(1e-30);
		x = torch::tanh(x / tau);
	}
	auto rms_g = g.pow(2).mean().sqrt(), rms_x = x.pow(2).mean().sqrt().clamp_min(1e-30);
	return (x * (rms_g / rms_x)).reshape(g.sizes());
}

void Optimizer::step_sinkgd(double lr, double grad_scale)
{
	torch::NoGradGuard ng;
	for (auto &s : state_) {
		if (!s.param.grad().defined())
			continue;
		if (s.weight_decay != 0)
			s.param.mul_(1.0 - lr * s.weight_decay);
		auto g = grad_scale != 1.0 ? s.param.grad() * grad_scale : s.param.grad();
		s.param.add_(sinkgd_transform(g, opt_.sinkgd_tau, opt_.sinkgd_iters).to(s.param.scalar_type()), -lr);
	}
}

OptimizerOptions optimizer_options_from(const OptimSettings &c, double lr)
{
	using O = choice::Optimizer;
	OptimizerOptions o;
	o.lr = lr;
	o.beta1 = c.adamw_beta1;
	o.beta2 = c.adamw_beta2;
	o.eps = c.adamw_eps;
	o.weight_decay = c.weight_decay;
	o.momentum = c.sgd_momentum;
	o.spam_theta = c.spam_theta;
	o.spam_spike_z = c.spam_spike_threshold;
	o.spam_interval = c.spam_interval;
	o.spam_warmup = c.spam_warmup;
	o.spam_double_step = c.spam_double_step_compat;
	o.sinkgd_tau = c.sinkgd_tau;
	o.sinkgd_iters = static_cast<int>(c.sinkgd_iters);
	// Mode NONE: the model's default optimizer (GPT-2: AdamW).
	const O sel = c.mode == choice::OptimizerMode::None ? O::Adamw : c.kind;
	O base = sel;
	if (sel == O::Adamwprune) {
		switch (c.adamwprune_base) {
		case choice::AdamwpruneBase::Adam: base = O::Adam; break;
		case choice::AdamwpruneBase::Adamw: base = O::Adamw; break;
		case choice::AdamwpruneBase::Adamwadv: base = O::Adamwadv; break;
		case choice::AdamwpruneBase::Adamwspam: base = O::Adamwspam; break;
		}
	}
	o.kind = base == O::Sgd	     ? OptimKind::SGD
		 : base == O::Adam   ? OptimKind::Adam
		 : base == O::Sinkgd ? OptimKind::SinkGD
				     : OptimKind::AdamW;
	if (sel == O::Adam && c.adam_no_weight_decay)
		o.weight_decay = 0;
	o.amsgrad = base == O::Adamwadv || base == O::Adamwspam;
	o.spam = base == O::Adamwspam;
	o.name = name_of(sel);
	return o;
}

bool apply_original_gpt2_adamwprune(const OptimSettings &c, OptimizerOptions &o)
{
	if (!c.adamwprune_gpt2_original_compat || c.mode == choice::OptimizerMode::None ||
	    c.kind != choice::Optimizer::Adamwprune)
		return false;
	o.kind = OptimKind::AdamW;
	o.beta1 = 0.9;
	o.beta2 = 0.999;
	o.weight_decay = 0.0;
	o.amsgrad = false;
	o.spam = false;
	return true;
}

} // namespace knlp
