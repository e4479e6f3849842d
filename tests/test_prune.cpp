// Pruning building blocks: exact and sampled threshold selection, schedules, score formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "core/config.h"
#include "core/error.h"
#include "models/gpt2.h"
#include "optim/optimizer.h"
#include "prune/pruner.h"
#include "prune/scores.h"
#include "prune/select.h"
#include "testutil.h"

using namespace knlp;

TEST(Threshold, ExactSelectionMatchesSorting)
{
	torch::manual_seed(11);
	std::vector<torch::Tensor> ts = {torch::randn({1000, 37}), torch::randn({5}).abs(),
					 torch::randint(-3, 4, {777}).to(torch::kFloat), torch::rand({300000})};
	auto all = torch::cat({ts[0].flatten(), ts[1], ts[2], ts[3]});
	auto sorted = std::get<0>(all.sort());
	int64_t n = all.numel();
	for (int64_t k : {int64_t(1), int64_t(2), int64_t(777), n / 2, n - 1, n}) {
		float want = sorted[k - 1].item<float>();
		EXPECT_EQ(kth_smallest(ts, k), want) << k;
	}
	EXPECT_THROW(kth_smallest(ts, 0), Error);
	EXPECT_THROW(kth_smallest(ts, n + 1), Error);
	// Negative zero and zero order together; ties resolve to the shared value.
	std::vector<torch::Tensor> z = {torch::tensor({-0.0f, 0.0f, -1.0f, 2.0f})};
	EXPECT_EQ(kth_smallest(z, 1), -1.0f);
	EXPECT_EQ(kth_smallest(z, 4), 2.0f);
}

TEST(Threshold, SamplingIsClose)
{
	torch::manual_seed(12);
	std::vector<torch::Tensor> ts = {torch::rand({2000000})};
	Rng rng(1);
	int64_t k = 1000000;
	float exact = kth_smallest(ts, k);
	float est = sampled_kth_smallest(ts, k, 0.02, rng);
	EXPECT_NEAR(est, exact, 0.01); // 40,000 samples of U(0,1): standard error ~0.0025
}

TEST(Schedule, CubicAndLinear)
{
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 50, 100, 1100, ScheduleShape::Cubic), 0.0);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 100, 100, 1100, ScheduleShape::Cubic), 0.0);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 600, 100, 1100, ScheduleShape::Cubic), 0.0625);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 600, 100, 1100, ScheduleShape::Linear), 0.25);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 1100, 100, 1100, ScheduleShape::Cubic), 0.5);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 5000, 100, 1100, ScheduleShape::Linear), 0.5);
	EXPECT_THROW(scheduled_sparsity(0.5, 1, 100, 100, ScheduleShape::Cubic), Error);
}

TEST(Scores, HandComputedValues)
{
	// w = -2, m = 0.5, v = 0.25 (sqrt 0.5).
	auto w = torch::tensor({-2.0f}), m = torch::tensor({0.5f}), v = torch::tensor({0.25f});
	auto at = [&](int var, bool intended = false) { return state_score(var, w, m, v, intended).item<double>(); };
	EXPECT_NEAR(at(0), 4.0 * 0.5 / 0.5, 1e-6); // w^2 |m| / (sqrt v + eps)
	EXPECT_DOUBLE_EQ(at(1), 2.0);		   // |w|
	EXPECT_DOUBLE_EQ(at(2), 2.0);
	EXPECT_NEAR(at(3), 2.0 * std::sqrt(0.5), 1e-6); // |w| sqrt(|m| + eps)
	EXPECT_NEAR(at(4), 2.0 * std::sqrt(0.5), 1e-6);
	EXPECT_NEAR(at(5), -1.0 + 0.2, 1e-6);	   // sign(w) m / sqrt(v) + 0.1 |w|
	EXPECT_NEAR(at(5, true), 1.0 + 0.2, 1e-6); // the intended sign
	EXPECT_NEAR(at(6), 2.0 * std::sqrt(0.5) * 1.0, 1e-6);
	EXPECT_NEAR(at(7), 2.0 * std::pow(0.25, 0.25), 1e-6);
	// fp16: 0.25 + 1e-5 rounds to 0.25; rsqrt -> 2; rsqrt(2) = 0.7071.. rounds to 0.70703125.
	EXPECT_DOUBLE_EQ(at(8), 1.4140625);
	EXPECT_DOUBLE_EQ(at(9), 1.4140625);
	// No optimizer state yet: |w|.
	EXPECT_DOUBLE_EQ(state_score(7, w, {}, {}).item<double>(), 2.0);
	EXPECT_THROW(state_score(10, w, m, v), Error);
	EXPECT_DOUBLE_EQ(magnitude_score(w).item<double>(), 2.0);
	EXPECT_DOUBLE_EQ(movement_score(w, torch::tensor({-1.5f})).item<double>(), -2.0 * -0.5);
}

TEST(Scores, Bitter4LayerSparsity)
{
	EXPECT_DOUBLE_EQ(bitter4_layer_sparsity(0.5, 0, 12), 0.35);
	EXPECT_NEAR(bitter4_layer_sparsity(0.5, 11, 12), 0.65, 1e-12);
	EXPECT_DOUBLE_EQ(bitter4_layer_sparsity(0.9, 11, 12), 0.95);
}

namespace {

// A small parameter set with the names GPT-2 uses; grads drawn from a seeded generator.
struct Toy {
	std::vector<std::pair<std::string, torch::Tensor>> params;
	Toy()
	{
		torch::manual_seed(21);
		for (auto [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
			     {"transformer.wte.weight", {64, 16}},
			     {"transformer.wpe.weight", {8, 16}},
			     {"transformer.h.0.ln_1.weight", {16}},
			     {"transformer.h.0.attn.c_attn.weight", {48, 16}},
			     {"transformer.h.0.attn.c_attn.bias", {48}},
			     {"transformer.h.0.mlp.c_fc.weight", {64, 16}},
			     {"transformer.h.0.mlp.c_proj.weight", {16, 64}}})
			params.emplace_back(name, torch::randn(shape).requires_grad_(true));
	}
	void grads(int step)
	{
		torch::manual_seed(1000 + step);
		for (auto &[n, p] : params)
			p.mutable_grad() = torch::randn(p.sizes()) * 0.1 + 0.01 * p.detach();
	}
};

PruneOptions popts(PruneMethod m, int variant = 7)
{
	PruneOptions o;
	o.method = m;
	o.variant = variant;
	o.target = 0.7;
	o.warmup = 5;
	o.frequency = 4;
	o.ramp_end = 17; // not a multiple of the frequency: the ramp end forces an update
	return o;
}

} // namespace

TEST(Pruner, PrunableSetOfGpt2)
{
	Toy t;
	std::vector<std::string> got;
	for (auto &[n, p] : t.params)
		if (prunable(n, p))
			got.push_back(n);
	EXPECT_EQ(got,
		  (std::vector<std::string>{"transformer.wte.weight", "transformer.h.0.attn.c_attn.weight",
					    "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"}));
	// On a real GPT-2: the tied head/embedding plus 12 C^2 per layer, nothing else.
	GPT2Config c;
	c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 16, c.vocab_raw = 256, c.vocab_size = 256;
	GPT2 m(c);
	int64_t n = 0;
	for (auto &p : m->named_parameters())
		if (prunable(p.key(), p.value()))
			n += p.value().numel();
	EXPECT_EQ(n, 256 * 32 + 2 * 12 * 32 * 32);
}

TEST(Pruner, EveryMethodReachesTheTargetAndKeepsPrunedEntriesAtZero)
{
	struct Case {
		PruneMethod m;
		int variant;
	};
	for (Case c : {Case{PruneMethod::Magnitude, 0}, Case{PruneMethod::Movement, 0}, Case{PruneMethod::State, 0},
		       Case{PruneMethod::State, 5}, Case{PruneMethod::State, 7}, Case{PruneMethod::State, 8}}) {
		SCOPED_TRACE(std::string(method_name(c.m)) + " bitter" + std::to_string(c.variant));
		Toy t;
		Optimizer opt(t.params, OptimizerOptions{});
		Pruner pr(popts(c.m, c.variant), opt);
		torch::Tensor held;
		for (int step = 1; step <= 30; step++) {
			t.grads(step);
			pr.mask_grads();
			for (auto &tg : pr.targets())
				if (tg.mask.defined())
					EXPECT_EQ(tg.param.grad().masked_select(~tg.mask).abs().sum().item<double>(),
						  0.0);
			opt.step(1e-2);
			pr.after_step(opt.step_count());
			auto st = pr.stats();
			if (step <= 5)
				EXPECT_EQ(st.sparsity, 0.0);
			if (step == 9) // masks of the first update after the warmup, step 8: p = 3/12
				EXPECT_NEAR(st.sparsity,
					    c.m == PruneMethod::Movement ? 0.7 * 0.25 : 0.7 * 0.25 * 0.25 * 0.25, 1e-3);
			if (step >= 17)
				EXPECT_NEAR(st.sparsity, 0.7, 1e-3) << step;
			for (auto &tg : pr.targets()) {
				if (!tg.mask.defined())
					continue;
				auto off = ~tg.mask;
				EXPECT_EQ(tg.param.masked_select(off).abs().sum().item<double>(), 0.0);
				if (c.m == PruneMethod::State) {
					EXPECT_EQ(tg.state->exp_avg.masked_select(off).abs().sum().item<double>(), 0.0);
					EXPECT_EQ(tg.state->exp_avg_sq.masked_select(off).abs().sum().item<double>(),
						  0.0);
				}
			}
			// Masks are fixed between updates (17 is the ramp end, 20 the next update).
			if (step == 18)
				held = pr.targets()[0].mask.clone();
			if (step == 19)
				EXPECT_TRUE(held.equal(pr.targets()[0].mask));
		}
		auto st = pr.stats();
		EXPECT_EQ(st.prunable, 64 * 16 + 48 * 16 + 64 * 16 + 16 * 64);
		EXPECT_EQ(st.mask_bytes, st.prunable); // one byte per prunable parameter
		EXPECT_EQ(st.w0_bytes, c.m == PruneMethod::Movement ? 4 * st.prunable : 0);
		EXPECT_EQ(st.score_bytes_peak, 4 * st.prunable);
		// Biases, norms and positions are never touched.
		EXPECT_EQ(t.params[1].second.eq(0).sum().item<int64_t>(), 0);
	}
}

TEST(Pruner, Bitter4PrunesEachTensorToItsOwnLevel)
{
	Toy t;
	Optimizer opt(t.params, OptimizerOptions{});
	Pruner pr(popts(PruneMethod::State, 4), opt);
	for (int step = 1; step <= 17; step++) {
		t.grads(step);
		pr.mask_grads();
		opt.step(1e-2);
		pr.after_step(opt.step_count());
	}
	auto st = pr.stats();
	// Four prunable tensors: s_l = 0.7 (0.7 + 0.6 l / 3) = 0.49, 0.63, 0.77, 0.91, in the
	// original's order: c_attn, c_fc, c_proj, then the tied embedding (its LM head) last.
	const std::map<std::string, double> want = {{"transformer.h.0.attn.c_attn.weight", 0.49},
						    {"transformer.h.0.mlp.c_fc.weight", 0.63},
						    {"transformer.h.0.mlp.c_proj.weight", 0.77},
						    {"transformer.wte.weight", 0.91}};
	ASSERT_EQ(pr.targets().size(), want.size());
	for (const auto &[name, level] : want)
		EXPECT_NEAR(st.per_tensor.at(name), level, 1e-3) << name;
}

TEST(Pruner, SampledThresholdIsClose)
{
	Toy t;
	Optimizer opt(t.params, OptimizerOptions{});
	auto o = popts(PruneMethod::Magnitude);
	o.exact = false;
	o.sample_fraction = 0.5;
	o.seed = 3;
	Pruner pr(o, opt);
	for (int step = 1; step <= 17; step++) {
		t.grads(step);
		pr.mask_grads();
		opt.step(1e-2);
		pr.after_step(opt.step_count());
	}
	EXPECT_NEAR(pr.stats().sparsity, 0.7, 0.03);
	EXPECT_NE(pr.stats().sparsity, 0.0);
}

TEST(Pruner, StatePruningRefusesAnOptimizerWithoutSecondMoment)
{
	Toy t;
	OptimizerOptions sgd;
	sgd.kind = OptimKind::SGD;
	sgd.name = "sgd";
	Optimizer opt(t.params, sgd);
	EXPECT_EQ(test::error_of([&] { Pruner(popts(PruneMethod::State), opt); }),
		  "pruning: state pruning needs an optimizer with a second moment (Adam, AdamW, AdamWAdv, AdamWSPAM, "
		  "AdamWPrune); sgd keeps none");
	Pruner ok(popts(PruneMethod::Magnitude), opt); // magnitude works with any optimizer
	EXPECT_TRUE(ok.enabled());
}

TEST(Pruner, ConfigValidation)
{
	auto from = [](const std::string &text) {
		Config c = Config::parse(text, "t.config");
		return prune_options_from(c.settings().prune, optimizer_options_from(c.settings().optim, 1e-3), 1000,
					  1);
	};
	auto o = from("CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_ADAMWPRUNE_VARIANT_BITTER8=y\n");
	EXPECT_EQ(o.method, PruneMethod::State);
	EXPECT_EQ(o.variant, 8);
	EXPECT_EQ(o.ramp_end, 750); // 0: three quarters of the run
	EXPECT_EQ(from("").method, PruneMethod::None);
	EXPECT_EQ(from("CONFIG_PRUNING_MOVEMENT=y\n").method, PruneMethod::Movement);
	EXPECT_EQ(test::error_of([&] { from("CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_TARGET_SPARSITY=\"1.0\"\n"); }),
		  "t.config: CONFIG_PRUNING_TARGET_SPARSITY=1.0 is outside its range [0, 1)");
	EXPECT_EQ(
		test::error_of([&] { from("CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_TARGET_SPARSITY=\"-0.1\"\n"); }),
		"t.config: CONFIG_PRUNING_TARGET_SPARSITY=-0.1 is outside its range [0, 1)");
	EXPECT_EQ(test::error_of([&] {
			  from("CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_WARMUP=500\nCONFIG_PRUNING_RAMP_END=400\n");
		  }),
		  "pruning: CONFIG_PRUNING_RAMP_END (400) must come after CONFIG_PRUNING_WARMUP (500)");
	EXPECT_EQ(test::error_of([&] { from("CONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_STATE=y\n"); }),
		  "pruning: CONFIG_PRUNING_STATE needs an optimizer that keeps a second moment; sgd keeps none");
	EXPECT_EQ(test::error_of([&] { from("CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_PRUNING_MAGNITUDE=y\n"); }),
		  "pruning: CONFIG_OPTIMIZER_ADAMWPRUNE prunes by its own state and does not pair with "
		  "CONFIG_PRUNING_MAGNITUDE; choose CONFIG_PRUNING_STATE or CONFIG_PRUNING_NONE");
	EXPECT_EQ(test::error_of([&] {
			  from("CONFIG_ADAMWPRUNE_VARIANT_BITTER12=y\n");
		  }).find("CONFIG_ADAMWPRUNE_VARIANT_BITTER12"),
		  std::string("t.config:1: unknown symbol ").size());
}

TEST(Pruner, TiesAtTheThresholdArePrunedExactlyToK)
{
	// 100 weights of which 60 share |w| = 1: 50% sparsity prunes the 20 smaller ones and
	// then exactly 30 of the ties (the first 30 by position), not all 60.
	auto w = torch::ones({10, 10});
	w.view(-1).slice(0, 0, 20).fill_(0.5);
	w.view(-1).slice(0, 80, 100).fill_(2.0);
	w.requires_grad_(true);
	Optimizer opt({{"l.weight", w}}, OptimizerOptions{});
	PruneOptions o;
	o.method = PruneMethod::Magnitude;
	o.target = 0.5, o.warmup = 0, o.frequency = 1, o.ramp_end = 1;
	Pruner pr(o, opt);
	w.mutable_grad() = torch::zeros({10, 10});
	pr.mask_grads();
	opt.step(0.0);
	pr.after_step(1);
	auto mask = pr.targets()[0].mask.flatten();
	EXPECT_EQ(pr.stats().sparsity, 0.5);
	EXPECT_EQ(mask.slice(0, 0, 50).sum().item<int64_t>(), 0);    // 20 small + first 30 ties off
	EXPECT_EQ(mask.slice(0, 50, 100).sum().item<int64_t>(), 50); // the rest kept
}
