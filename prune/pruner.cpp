#include "prune/pruner.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "prune/scores.h"
#include "prune/select.h"

namespace knlp {

const char *method_name(PruneMethod m)
{
	switch (m) {
	case PruneMethod::Magnitude: return "magnitude";
	case PruneMethod::Movement: return "movement";
	case PruneMethod::State: return "state";
	default: return "none";
	}
}

bool prunable(const std::string &name, const torch::Tensor &p)
{
	auto ends = [&](const std::string &suf) {
		return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
	};
	if (p.dim() < 2 || !ends(".weight"))
		return false;
	if (name.find("wpe") != std::string::npos || name.find(".ln_") != std::string::npos ||
	    name.find("norm") != std::string::npos)
		return false;
	return true;
}

Pruner::Pruner(PruneOptions o, Optimizer &opt) : o_(o)
{
	if (o_.method == PruneMethod::None)
		return;
	if (o_.method == PruneMethod::State && !opt.has_second_moment())
		fail("pruning: state pruning needs an optimizer with a second moment (Adam, AdamW, AdamWAdv, "
		     "AdamWSPAM, AdamWPrune); {} keeps none",
		     opt.options().name);
	for (auto &s : opt.state())
		if (prunable(s.name, s.param)) {
			Target t;
			t.name = s.name;
			t.param = s.param;
			t.state = &s;
			targets_.push_back(t);
		}
	if (targets_.empty())
		fail("pruning: the model has no prunable weights");
	if (o_.method == PruneMethod::Movement && o_.warmup == 0)
		for (auto &t : targets_)
			t.w0 = t.param.detach().clone();
}

double Pruner::scheduled(int64_t step) const
{
	auto shape = o_.method == PruneMethod::Movement ? ScheduleShape::Linear : ScheduleShape::Cubic;
	return scheduled_sparsity(o_.target, step, o_.warmup, o_.ramp_end, shape);
}

void Pruner::mask_grads()
{
	torch::NoGradGuard ng;
	for (auto &t : targets_)
		if (t.mask.defined() && t.param.grad().defined())
			t.param.mutable_grad().mul_(t.mask);
}

torch::Tensor Pruner::score(const Target &t) const
{
	torch::NoGradGuard ng;
	torch::Tensor s;
	switch (o_.method) {
	case PruneMethod::Magnitude: s = magnitude_score(t.param); break;
	case PruneMethod::Movement: s = movement_score(t.param, t.w0); break;
	default: s = state_score(o_.variant, t.param, t.state->exp_avg, t.state->exp_avg_sq, o_.bitter5_intended);
	}
	return s.to(torch::kCPU, torch::kFloat).contiguous();
}

void Pruner::update_masks(int64_t step)
{
	torch::NoGradGuard ng;
	target_now_ = scheduled(step);
	std::vector<torch::Tensor> scores;
	int64_t bytes = 0;
	for (auto &t : targets_) {
		scores.push_back(score(t));
		bytes += scores.back().numel() * 4;
	}
	score_bytes_peak_ = std::max(score_bytes_peak_, bytes);
	// Prune exactly k entries of `idx`'s tensors: all scores below the k-th smallest value
	// theta, then entries equal to theta in position order until k are off (the original's
	// strict `score > theta` pruned every tie, overshooting when scores repeat, e.g. fp16).
	auto prune_k = [&](const std::vector<size_t> &idx, int64_t k, float theta) {
		int64_t below = 0;
		std::vector<torch::Tensor> keep(idx.size());
		for (size_t j = 0; j < idx.size(); j++) {
			keep[j] = scores[idx[j]].gt(theta);
			below += scores[idx[j]].lt(theta).sum().item<int64_t>();
		}
		int64_t ties_to_prune = k - below;
		for (size_t j = 0; j < idx.size(); j++) {
			auto eq = scores[idx[j]].eq(theta).flatten().nonzero().flatten();
			int64_t n_eq = eq.numel(), cut = std::clamp<int64_t>(ties_to_prune, 0, n_eq);
			if (cut < n_eq)
				keep[j].view(-1).index_fill_(0, eq.slice(0, cut), true);
			ties_to_prune -= cut;
			targets_[idx[j]].mask = keep[j].to(targets_[idx[j]].param.device());
		}
	};
	auto keep_all = [&](size_t i) {
		targets_[i].mask =
			torch::ones(targets_[i].param.sizes(), targets_[i].param.options().dtype(torch::kBool));
	};
	if (o_.method == PruneMethod::State && o_.variant == 4) {
		// The original's order of "layers": its Linear modules in model order, so GPT-2's
		// tied token embedding comes last (as the LM head) and gets the highest level;
		// knlp's parameter order would put it first.
		std::vector<size_t> order;
		for (size_t i = 0; i < targets_.size(); i++)
			if (targets_[i].name.find("wte") == std::string::npos)
				order.push_back(i);
		for (size_t i = 0; i < targets_.size(); i++)
			if (targets_[i].name.find("wte") != std::string::npos)
				order.push_back(i);
		const int L = static_cast<int>(targets_.size());
		for (int pos = 0; pos < L; pos++) {
			const size_t l = order[size_t(pos)];
			double sl = bitter4_layer_sparsity(target_now_, pos, L);
			int64_t k = std::llround(sl * double(scores[l].numel()));
			if (k > 0)
				prune_k({size_t(l)}, k, kth_smallest({scores[l]}, k));
			else
				keep_all(l);
		}
		return;
	}
	int64_t n = 0;
	for (auto &s : scores)
		n += s.numel();
	int64_t k = std::llround(target_now_ * double(n));
	if (k == 0) {
		for (size_t i = 0; i < targets_.size(); i++)
			keep_all(i);
		return;
	}
	std::vector<size_t> all(targets_.size());
	for (size_t i = 0; i < all.size(); i++)
		all[i] = i;
	if (o_.exact) {
		prune_k(all, k, kth_smallest(scores, k));
	} else {
		// The original's estimate: prune every score <= the sampled threshold.
		Rng rng(o_.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(step));
		float theta = sampled_kth_smallest(scores, k, o_.sample_fraction, rng);
		for (size_t i = 0; i < targets_.size(); i++)
			targets_[i].mask = scores[i].gt(theta).to(targets_[i].param.device());
	}
}

void Pruner::apply()
{
	torch::NoGradGuard ng;
	const bool state = o_.method == PruneMethod::State;
	for (auto &t : targets_) {
		if (!t.mask.defined())
			continue;
		t.param.mul_(t.mask);
		if (state) {
			t.state->exp_avg.mul_(t.mask);
			t.state->exp_avg_sq.mul_(t.mask);
		}
	}
}

void Pruner::after_step(int64_t step)
{
	if (o_.method == PruneMethod::None)
		return;
	if (o_.method == PruneMethod::Movement && step == o_.warmup)
		for (auto &t : targets_)
			t.w0 = t.param.detach().clone();
	if (step > o_.warmup && (step % o_.frequency == 0 || step == o_.ramp_end))
		update_masks(step);
	apply();
}

PruneStats Pruner::stats() const
{
	PruneStats st;
	st.target_now = target_now_;
	st.score_bytes_peak = score_bytes_peak_;
	int64_t off = 0;
	for (const auto &t : targets_) {
		int64_t n = t.param.numel();
		st.prunable += n;
		st.mask_bytes += t.mask.defined() ? t.mask.numel() * t.mask.element_size() : 0;
		st.w0_bytes += t.w0.defined() ? t.w0.numel() * t.w0.element_size() : 0;
		int64_t z = t.mask.defined() ? n - t.mask.sum().item<int64_t>() : 0;
		off += z;
		st.per_tensor[t.name] = n ? double(z) / double(n) : 0.0;
	}
	st.sparsity = st.prunable ? double(off) / double(st.prunable) : 0.0;
	return st;
}

std::vector<std::pair<std::string, torch::Tensor>> Pruner::state_tensors() const
{
	std::vector<std::pair<std::string, torch::Tensor>> out;
	for (const auto &t : targets_) {
		if (t.mask.defined())
			out.emplace_back("mask." + t.name, t.mask);
		if (t.w0.defined())
			out.emplace_back("w0." + t.name, t.w0);
	}
	return out;
}

nlohmann::json Pruner::extra_state() const
{
	return {{"method", method_name(o_.method)},
		{"target_now", target_now_},
		{"score_bytes_peak", score_bytes_peak_}};
}

void Pruner::load(const nlohmann::json &j, const std::function<torch::Tensor(const std::string &)> &get)
{
	if (o_.method == PruneMethod::None)
		return;
	if (j.value("method", std::string("none")) != method_name(o_.method))
		fail("checkpoint pruning method is {} but the configuration selects {}",
		     j.value("method", std::string("none")), method_name(o_.method));
	target_now_ = j.value("target_now", 0.0);
	score_bytes_peak_ = j.value("score_bytes_peak", int64_t(0));
	for (auto &t : targets_) {
		auto m = get("mask." + t.name);
		if (m.defined())
			t.mask = m.to(t.param.device(), torch::kBool);
		auto w0 = get("w0." + t.name);
		if (w0.defined())
			t.w0 = w0.to(t.param.device(), t.param.scalar_type());
	}
}

PruneOptions prune_options_from(const PruneSettings &c, const OptimizerOptions &opt, int64_t max_iters, uint64_t seed,
				int64_t ramp_end)
{
	PruneOptions o;
	using P = choice::Pruning;
	const bool adamwprune = opt.name == "adamwprune";
	o.method = c.method == P::Magnitude  ? PruneMethod::Magnitude
		   : c.method == P::Movement ? PruneMethod::Movement
		   : c.method == P::State    ? PruneMethod::State
					     : PruneMethod::None;
	if (adamwprune) {
		if (o.method == PruneMethod::Magnitude || o.method == PruneMethod::Movement)
			fail("pruning: CONFIG_OPTIMIZER_ADAMWPRUNE prunes by its own state and does not pair with "
			     "CONFIG_{}; choose CONFIG_PRUNING_STATE or CONFIG_PRUNING_NONE",
			     symbol_of(c.method));
		o.method = PruneMethod::State;
	}
	if (o.method == PruneMethod::State && (opt.kind == OptimKind::SGD || opt.kind == OptimKind::SinkGD))
		fail("pruning: CONFIG_PRUNING_STATE needs an optimizer that keeps a second moment; {} keeps none",
		     opt.name);
	o.variant = name_of(c.adamwprune_variant)[6] - '0'; // "bitter7"
	o.bitter5_intended = c.adamwprune_bitter5_intended;
	o.target = c.target_sparsity;
	o.warmup = c.warmup;
	o.frequency = c.frequency;
	o.ramp_end = ramp_end > 0 ? ramp_end : c.ramp_end;
	if (o.ramp_end == 0)
		o.ramp_end = std::max<int64_t>(o.warmup + 1, max_iters * 3 / 4);
	o.exact = c.exact_threshold;
	o.sample_fraction = c.sample_fraction;
	o.seed = seed;
	if (o.method == PruneMethod::None)
		return o;
	if (o.ramp_end <= o.warmup)
		fail("pruning: CONFIG_PRUNING_RAMP_END ({}) must come after CONFIG_PRUNING_WARMUP ({})", o.ramp_end,
		     o.warmup);
	return o;
}

} // namespace knlp
