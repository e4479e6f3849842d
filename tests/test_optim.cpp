// Optimizers: every update rule against values worked out by hand (the comments show the
// arithmetic), against libtorch's optimizers where the semantics coincide, and the fused
// CPU pass against the libtorch-ops path. SPAM's three mechanisms and SinkGD's transform.
#include <gtest/gtest.h>

#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "optim/optimizer.h"
#include "testutil.h"

using namespace knlp;

namespace {

OptimizerOptions opts(OptimKind k, double wd = 0.1, bool ams = false)
{
	OptimizerOptions o;
	o.kind = k;
	o.weight_decay = wd;
	o.amsgrad = ams;
	o.beta1 = 0.9, o.beta2 = 0.999, o.eps = 1e-8, o.momentum = 0.9;
	return o;
}

// One scalar parameter p = 1 (named so that it decays) stepped with gradients gs at
// lr 0.1; returns p after each step.
std::vector<double> scalar_run(OptimizerOptions o, std::vector<double> gs, torch::Dtype dt = torch::kFloat)
{
	auto p = torch::ones({1, 1}, dt).requires_grad_(true);
	Optimizer opt({{"x.weight", p}}, o);
	std::vector<double> out;
	for (double g : gs) {
		p.mutable_grad() = torch::full({1, 1}, g, dt);
		opt.step(0.1);
		out.push_back(p.item<double>());
	}
	return out;
}

} // namespace

TEST(Optimizer, DecayGroupsFollowTheSpec)
{
	auto w = torch::zeros({4, 4}), b = torch::zeros({4});
	EXPECT_TRUE(decays("transformer.h.0.attn.c_attn.weight", w));
	EXPECT_FALSE(decays("transformer.h.0.attn.c_attn.bias", b));
	EXPECT_FALSE(decays("transformer.h.0.ln_1.weight", b));
	EXPECT_FALSE(decays("transformer.wte.weight", w));
	EXPECT_FALSE(decays("transformer.wpe.weight", w));
}

TEST(Optimizer, SgdByHand)
{
	// d = g + 0.1 p; buf = 0.9 buf + d; p -= 0.1 buf
	// 1: d = 0.6,      buf = 0.6,     p = 0.94
	// 2: d = 0.594,    buf = 1.134,   p = 0.8266
	// 3: d = -0.11734, buf = 0.90326, p = 0.736274
	for (auto dt : {torch::kFloat, torch::kDouble}) {
		auto p = scalar_run(opts(OptimKind::SGD), {0.5, 0.5, -0.2}, dt);
		EXPECT_NEAR(p[0], 0.94, 1e-7);
		EXPECT_NEAR(p[1], 0.8266, 1e-7);
		EXPECT_NEAR(p[2], 0.736274, 2e-7);
	}
}

TEST(Optimizer, AdamCoupledByHand)
{
	// 1: g' = 0.5 + 0.1 = 0.6; m = 0.06, v = 0.00036; m^ = 0.6, v^ = 0.36; p = 1 - 0.1 = 0.9
	// 2: g' = 0.5 + 0.09 = 0.59; m = 0.113, v = 0.00070774; m^ = 0.594737, sqrt(v^) = 0.595019
	//    p = 0.9 - 0.1 * 0.999527 = 0.800047
	// 3: g' = -0.2 + 0.0800047; m = 0.0897005, v = 0.000721431 -> p = 0.732583
	for (auto dt : {torch::kFloat, torch::kDouble}) {
		auto p = scalar_run(opts(OptimKind::Adam), {0.5, 0.5, -0.2}, dt);
		EXPECT_NEAR(p[0], 0.9, 2e-7);
		EXPECT_NEAR(p[1], 0.8000473, 3e-7);
		EXPECT_NEAR(p[2], 0.7325834, 4e-7);
	}
}

TEST(Optimizer, AdamWByHand)
{
	// p = 1, g = 0.5, wd 0.1: decay p = 0.99; m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25;
	// p = 0.99 - 0.1 * 0.5 / 0.5 = 0.89. Same gradient again: m^ = 0.5, v^ = 0.25, so
	// p = 0.89 * 0.99 - 0.1 = 0.7811.
	for (auto dt : {torch::kFloat, torch::kDouble}) {
		auto p = scalar_run(opts(OptimKind::AdamW), {0.5, 0.5}, dt);
		EXPECT_NEAR(p[0], 0.89, 2e-7);
		EXPECT_NEAR(p[1], 0.7811, 4e-7);
	}
	auto p = torch::ones({1, 1}).requires_grad_(true);
	Optimizer opt({{"x.weight", p}}, opts(OptimKind::AdamW));
	p.mutable_grad() = torch::full({1, 1}, 0.5);
	EXPECT_NEAR(opt.grad_norm(), 0.5, 1e-9);
	opt.step(0.1);
	EXPECT_NEAR(opt.state()[0].exp_avg.item<double>(), 0.05, 1e-9);
	EXPECT_NEAR(opt.state()[0].exp_avg_sq.item<double>(), 0.00025, 1e-10);
	// The clip scale is applied inside the step: grad 1.0 at scale 0.5 is grad 0.5.
	auto q = torch::ones({1, 1}).requires_grad_(true);
	Optimizer o2({{"x.weight", q}}, opts(OptimKind::AdamW));
	q.mutable_grad() = torch::full({1, 1}, 1.0);
	o2.step(0.1, 0.5);
	EXPECT_EQ(q.item<float>(), p.item<float>());
}

TEST(Optimizer, AmsgradByHand)
{
	// Gradients 1, 0.01, 0.01 with decoupled decay: v = 0.001, 0.0009991, 0.0009982009, so
	// v_max stays 0.001 and the denominator differs from plain AdamW from step 2 on:
	// AMSGrad p = 0.890000, 0.8133836, 0.7522921; AdamW p = 0.890000, 0.8133531, 0.7522142.
	for (auto dt : {torch::kFloat, torch::kDouble}) {
		auto a = scalar_run(opts(OptimKind::AdamW, 0.1, true), {1.0, 0.01, 0.01}, dt);
		auto w = scalar_run(opts(OptimKind::AdamW, 0.1, false), {1.0, 0.01, 0.01}, dt);
		EXPECT_NEAR(a[0], 0.89, 2e-7);
		EXPECT_NEAR(a[1], 0.8133836, 3e-7);
		EXPECT_NEAR(a[2], 0.7522921, 4e-7);
		EXPECT_NEAR(w[1], 0.8133531, 3e-7);
		EXPECT_NEAR(w[2], 0.7522142, 4e-7);
	}
}

namespace {

// Ten steps of ours and of a libtorch optimizer on a weight (decayed) and a bias (not).
template <typename Ref, typename RefOpts> void agree_with_libtorch(OptimizerOptions o, RefOpts decay, RefOpts nodecay)
{
	torch::manual_seed(6);
	auto a = torch::randn({300, 70}), b = torch::randn({70});
	auto a2 = a.clone(), b2 = b.clone();
	a.requires_grad_(true), b.requires_grad_(true), a2.requires_grad_(true), b2.requires_grad_(true);
	Optimizer mine({{"l.weight", a}, {"l.bias", b}}, o);
	std::vector<torch::optim::OptimizerParamGroup> groups;
	groups.emplace_back(std::vector<torch::Tensor>{a2}, std::make_unique<RefOpts>(decay));
	groups.emplace_back(std::vector<torch::Tensor>{b2}, std::make_unique<RefOpts>(nodecay));
	Ref ref(groups, decay);
	for (int s = 0; s < 10; s++) {
		auto ga = torch::randn({300, 70}) * (s == 3 ? 0.01 : 1.0), gb = torch::randn({70});
		a.mutable_grad() = ga.clone(), b.mutable_grad() = gb.clone();
		a2.mutable_grad() = ga.clone(), b2.mutable_grad() = gb.clone();
		mine.step(1e-3);
		ref.step();
	}
	EXPECT_LT((a - a2).abs().max().item<double>(), 1e-6) << o.name;
	EXPECT_LT((b - b2).abs().max().item<double>(), 1e-6) << o.name;
}

} // namespace

TEST(Optimizer, AgreesWithLibtorch)
{
	using namespace torch::optim;
	auto w = opts(OptimKind::AdamW);
	w.beta2 = 0.95;
	agree_with_libtorch<AdamW>(w, AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1),
				   AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0));
	auto ams = opts(OptimKind::AdamW, 0.1, true);
	agree_with_libtorch<AdamW>(ams, AdamWOptions(1e-3).weight_decay(0.1).amsgrad(true),
				   AdamWOptions(1e-3).weight_decay(0.0).amsgrad(true));
	agree_with_libtorch<Adam>(opts(OptimKind::Adam), AdamOptions(1e-3).weight_decay(0.1),
				  AdamOptions(1e-3).weight_decay(0.0));
	agree_with_libtorch<SGD>(opts(OptimKind::SGD), SGDOptions(1e-3).momentum(0.9).weight_decay(0.1),
				 SGDOptions(1e-3).momentum(0.9).weight_decay(0.0));
}

// A channels-last convolution weight steps exactly like the same weight laid out NCHW: the
// state takes the parameter's layout, a gradient in another layout is re-laid first, and the
// element-wise rules give bit-identical values in logical order. The gradient norm agrees
// to rounding (its sum runs in memory order).
TEST(Optimizer, GradNormIsTheDoubleSumForAnyThreadCount)
{
	// Sizes off the 32 sums' width and past the 65536-value chunks, one of them tiny; the
	// norm against libtorch's double-precision norm, and the same bits on 1 and 2 threads.
	torch::manual_seed(3);
	std::vector<std::pair<std::string, torch::Tensor>> ps;
	for (int64_t n : {1, 31, 33, 65536 + 17, 3 * 65536 - 5})
		ps.push_back({"p" + std::to_string(n), torch::zeros({n}).requires_grad_(true)});
	std::vector<torch::Tensor> grads;
	for (auto &[name, p] : ps) {
		p.mutable_grad() = torch::randn({p.numel()}) * 3.0;
		grads.push_back(p.grad().to(torch::kDouble).flatten());
	}
	Optimizer opt(ps, opts(OptimKind::AdamW));
	const double want = torch::cat(grads).norm().item<double>();
	const int before = torch::get_num_threads();
	torch::set_num_threads(1);
	const double one = opt.grad_norm();
	torch::set_num_threads(2);
	const double two = opt.grad_norm();
	torch::set_num_threads(before);
	EXPECT_NEAR(one, want, 1e-13 * want);
	EXPECT_EQ(one, two);
	// A gradient of one huge value and many small ones: no float32 accumulation.
	ps[3].second.mutable_grad().fill_(1e-4);
	ps[3].second.mutable_grad()[0] = 1e4f;
	double sq = 0;
	for (auto &[name, p] : ps)
		sq += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
	EXPECT_NEAR(opt.grad_norm(), std::sqrt(sq), 1e-13 * std::sqrt(sq));
}

TEST(Optimizer, ChannelsLastWeightsStepLikeContiguousOnes)
{
	for (auto kind : {OptimKind::SGD, OptimKind::Adam, OptimKind::AdamW}) {
		for (bool ams : {false, true}) {
			if (ams && kind == OptimKind::SGD)
				continue;
			torch::manual_seed(7);
			auto w0 = torch::randn({6, 5, 3, 3});
			auto a = w0.clone().requires_grad_(true);
			auto b = w0.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
			ASSERT_FALSE(b.is_contiguous());
			Optimizer oa({{"c.weight", a}}, opts(kind, 0.1, ams)),
				ob({{"c.weight", b}}, opts(kind, 0.1, ams));
			EXPECT_EQ(ob.state_tensors()[0].second.strides(), b.strides());
			for (int i = 0; i < 4; i++) {
				auto g = torch::randn({6, 5, 3, 3});
				a.mutable_grad() = g.clone();
				// Odd steps hand the channels-last weight an NCHW gradient.
				b.mutable_grad() = i % 2 ? g.clone() : g.contiguous(at::MemoryFormat::ChannelsLast);
				EXPECT_NEAR(oa.grad_norm(), ob.grad_norm(), 1e-9 * oa.grad_norm());
				oa.step(1e-2);
				ob.step(1e-2);
				EXPECT_EQ(b.grad().strides(), b.strides());
			}
			EXPECT_TRUE(torch::equal(a, b)) << static_cast<int>(kind) << " amsgrad " << ams;
			EXPECT_TRUE(b.is_contiguous(at::MemoryFormat::ChannelsLast));
			auto sa = oa.state_tensors(), sb = ob.state_tensors();
			ASSERT_EQ(sa.size(), sb.size());
			for (size_t k = 0; k < sa.size(); k++)
				EXPECT_TRUE(torch::equal(sa[k].second, sb[k].second)) << sa[k].first;
		}
	}
}

TEST(Optimizer, StateIsExposedByName)
{
	auto w = torch::randn({8, 4}).requires_grad_(true), b = torch::randn({4}).requires_grad_(true);
	auto names = [&](OptimizerOptions o) {
		Optimizer opt({{"l.weight", w}, {"l.bias", b}}, o);
		std::vector<std::string> n;
		for (auto &[name, t] : opt.state_tensors())
			n.push_back(name);
		return std::make_pair(n, opt.state_bytes());
	};
	auto [n1, b1] = names(opts(OptimKind::AdamW));
	EXPECT_EQ(n1, (std::vector<std::string>{"exp_avg.l.weight", "exp_avg_sq.l.weight", "exp_avg.l.bias",
						"exp_avg_sq.l.bias"}));
	EXPECT_EQ(b1, 2 * 36 * 4);
	EXPECT_EQ(names(opts(OptimKind::AdamW, 0.1, true)).second, 3 * 36 * 4);
	EXPECT_EQ(names(opts(OptimKind::SGD)).first,
		  (std::vector<std::string>{"momentum.l.weight", "momentum.l.bias"}));
	auto sink = opts(OptimKind::SinkGD);
	EXPECT_EQ(names(sink).second, 0);
	Optimizer opt({{"l.weight", w}}, opts(OptimKind::AdamW));
	ASSERT_NE(opt.find("l.weight"), nullptr);
	EXPECT_EQ(opt.find("nope"), nullptr);
	EXPECT_TRUE(opt.has_second_moment());
	EXPECT_FALSE(Optimizer({{"l.weight", w}}, opts(OptimKind::SGD)).has_second_moment());
}

TEST(Optimizer, SpamSpikeClip)
{
	// After one step with g = 0.01: v = 0.001 * 1e-4 = 1e-7, so the bound is
	// sqrt(50 (1e-7 + 1e-12)) = 0.00223607; a gradient of 1 is clipped to it, -1 to -it.
	auto o = opts(OptimKind::AdamW, 0.0, true);
	o.spam = true;
	o.spam_interval = 0;
	auto p = torch::zeros({2, 1}).requires_grad_(true);
	Optimizer opt({{"x.weight", p}}, o);
	p.mutable_grad() = torch::full({2, 1}, 0.01);
	EXPECT_EQ(opt.before_clip(), 1.0);
	EXPECT_EQ(p.grad()[0][0].item<float>(), 0.01f); // no state yet: untouched
	opt.step(0.1);
	p.mutable_grad() = torch::tensor({{1.0f}, {-1.0f}});
	opt.before_clip();
	EXPECT_NEAR(p.grad()[0][0].item<double>(), 0.00223607, 2e-8);
	EXPECT_NEAR(p.grad()[1][0].item<double>(), -0.00223607, 2e-8);
}

TEST(Optimizer, SpamSoftResetOnANormSpike)
{
	// Norms alternate 1.0 and 1.1 (mean 1.05, std 0.05): a norm of 1.2 has z = 3 > 2.
	auto o = opts(OptimKind::AdamW, 0.0, true);
	o.spam = true;
	o.spam_theta = 1e12; // keep the spike clip out of the way
	o.spam_interval = 0;
	auto p = torch::zeros({1, 1}).requires_grad_(true);
	Optimizer opt({{"x.weight", p}}, o);
	for (int i = 0; i < 10; i++) {
		p.mutable_grad() = torch::full({1, 1}, i % 2 ? 1.1 : 1.0);
		opt.before_clip();
		opt.step(0.01);
	}
	EXPECT_EQ(opt.spam_soft_resets(), 0);
	double m = opt.state()[0].exp_avg.item<double>(), v = opt.state()[0].exp_avg_sq.item<double>();
	p.mutable_grad() = torch::full({1, 1}, 1.2);
	opt.before_clip();
	EXPECT_EQ(opt.spam_soft_resets(), 1);
	EXPECT_NEAR(opt.state()[0].exp_avg.item<double>(), 0.5 * m, 1e-9);
	EXPECT_NEAR(opt.state()[0].exp_avg_sq.item<double>(), 0.9 * v, 1e-9);
	// A norm of 1.05 is not a spike (z = -0.21 against the 11 norms now kept).
	opt.step(0.01);
	p.mutable_grad() = torch::full({1, 1}, 1.05);
	opt.before_clip();
	EXPECT_EQ(opt.spam_soft_resets(), 1);
}

TEST(Optimizer, SpamPeriodicResetAndRewarmup)
{
	// interval 5, warmup 4: before step 5 the moments are zeroed and the lr factor runs
	// max(1e-3, 0.5 (1 - cos(pi tau))) for tau = 0, 1/4, 2/4, 3/4: 0.001, 0.146447, 0.5,
	// 0.853553, then 1.
	for (bool twice : {false, true}) {
		auto o = opts(OptimKind::AdamW, 0.0, true);
		o.spam = true;
		o.spam_theta = 1e12;
		o.spam_interval = twice ? 10 : 5; // counted twice per iteration: the same iterations
		o.spam_warmup = twice ? 8 : 4;
		o.spam_double_step = twice;
		auto p = torch::zeros({1, 1}).requires_grad_(true);
		Optimizer opt({{"x.weight", p}}, o);
		std::vector<double> f;
		for (int i = 0; i < 9; i++) {
			p.mutable_grad() = torch::full({1, 1}, 0.3);
			f.push_back(opt.before_clip());
			if (i == 4) {
				EXPECT_EQ(opt.state()[0].exp_avg.item<float>(), 0.0f);
				EXPECT_EQ(opt.state()[0].exp_avg_sq.item<float>(), 0.0f);
				EXPECT_GT(opt.state()[0].max_exp_avg_sq.item<float>(), 0.0f); // v_max kept
			}
			opt.step(0.01);
		}
		std::vector<double> want = {1, 1, 1, 1, 0.001, 0.1464466, 0.5, 0.8535534, 1};
		for (size_t i = 0; i < want.size(); i++)
			EXPECT_NEAR(f[i], want[i], 1e-6) << i << (twice ? " compat" : "");
		EXPECT_EQ(opt.spam_hard_resets(), 1);
		// The SPAM state survives a checkpoint round trip.
		Optimizer again({{"x.weight", p}}, o);
		again.load_extra_state(opt.extra_state());
		EXPECT_EQ(again.extra_state(), opt.extra_state());
	}
}

TEST(Optimizer, SinkgdByHand)
{
	// Vector g = (1, -3): sum|g| = 4 -> (0.25, -0.75) / 0.1 -> tanh: 0.9866143, -0.9999994.
	auto t = sinkgd_transform(torch::tensor({1.0f, -3.0f}), 0.1, 5);
	EXPECT_NEAR(t[0].item<double>(), 0.9866143, 1e-6);
	EXPECT_NEAR(t[1].item<double>(), -0.9999994, 1e-6);
	// Matrix: a plain double reference of the spec's loop.
	std::vector<std::vector<double>> g = {{0.3, -1.2, 0.5}, {2.0, 0.1, -0.4}};
	auto x = g;
	for (int it = 0; it < 5; it++) {
		for (auto &row : x) {
			double s = 0;
			for (double e : row)
				s += std::abs(e);
			for (double &e : row)
				e /= s;
		}
		for (int c = 0; c < 3; c++) {
			double s = std::abs(x[0][c]) + std::abs(x[1][c]);
			x[0][c] /= s, x[1][c] /= s;
		}
		for (auto &row : x)
			for (double &e : row)
				e = std::tanh(e / 0.1);
	}
	double rg = 0, rx = 0;
	for (int r = 0; r < 2; r++)
		for (int c = 0; c < 3; c++)
			rg += g[r][c] * g[r][c], rx += x[r][c] * x[r][c];
	double scale = std::sqrt(rg / 6) / std::sqrt(rx / 6);
	auto gt = torch::tensor({0.3f, -1.2f, 0.5f, 2.0f, 0.1f, -0.4f}).reshape({2, 3});
	auto mt = sinkgd_transform(gt, 0.1, 5);
	for (int r = 0; r < 2; r++)
		for (int c = 0; c < 3; c++)
			EXPECT_NEAR(mt[r][c].item<double>(), x[r][c] * scale, 1e-6) << r << c;
	// The step: p = p (1 - lr wd) - lr T(g).
	auto p = torch::ones({2, 3}).requires_grad_(true);
	Optimizer opt({{"x.weight", p}}, opts(OptimKind::SinkGD));
	p.mutable_grad() = gt.clone();
	opt.step(0.1);
	EXPECT_NEAR(p[1][0].item<double>(), 0.99 - 0.1 * x[1][0] * scale, 1e-6);
}

// The original's GPT-2 AdamWPrune: plain AdamW, betas 0.9 / 0.999, no decay, no AMSGrad,
// whatever the configuration says; only when asked and only for AdamWPrune.
TEST(Optimizer, OriginalGpt2AdamWPruneCompat)
{
	auto settings = [](const std::string &text) { return Config::parse(text, "t.config").settings().optim; };
	const std::string spam = "CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y\n"
				 "CONFIG_ADAMW_BETA2=\"0.95\"\nCONFIG_WEIGHT_DECAY=\"0.1\"\n";
	auto c = settings(spam + "CONFIG_ADAMWPRUNE_GPT2_ORIGINAL_COMPAT=y\n");
	auto o = optimizer_options_from(c, 1e-3);
	EXPECT_TRUE(o.spam && o.amsgrad && o.beta2 == 0.95 && o.weight_decay == 0.1);
	EXPECT_TRUE(apply_original_gpt2_adamwprune(c, o));
	EXPECT_EQ(o.kind, OptimKind::AdamW);
	EXPECT_FALSE(o.spam || o.amsgrad);
	EXPECT_EQ(o.beta1, 0.9);
	EXPECT_EQ(o.beta2, 0.999);
	EXPECT_EQ(o.weight_decay, 0.0);
	EXPECT_EQ(o.name, "adamwprune");
	auto off = settings(spam);
	auto o2 = optimizer_options_from(off, 1e-3);
	EXPECT_FALSE(apply_original_gpt2_adamwprune(off, o2));
	EXPECT_EQ(o2.weight_decay, 0.1);
	auto adamw = settings("CONFIG_OPTIMIZER_ADAMW=y\nCONFIG_ADAMWPRUNE_GPT2_ORIGINAL_COMPAT=y\n");
	auto o3 = optimizer_options_from(adamw, 1e-3);
	EXPECT_FALSE(apply_original_gpt2_adamwprune(adamw, o3));
}

TEST(Optimizer, FromConfig)
{
	auto from = [](const std::string &text) {
		return optimizer_options_from(Config::parse(text, "t.config").settings().optim, 1e-3);
	};
	auto o = from("CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y\n");
	EXPECT_EQ(o.name, "adamwprune");
	EXPECT_TRUE(o.spam && o.amsgrad);
	EXPECT_EQ(o.kind, OptimKind::AdamW);
	EXPECT_EQ(from("CONFIG_OPTIMIZER_SGD=y\n").kind, OptimKind::SGD);
	EXPECT_EQ(from("CONFIG_OPTIMIZER_ADAMWADV=y\n").amsgrad, true);
	EXPECT_EQ(from("CONFIG_OPTIMIZER_ADAM=y\n").kind, OptimKind::Adam);
	// The image recipes: Adam without decay, the others with WEIGHT_DECAY.
	const char *nodecay = "CONFIG_ADAM_NO_WEIGHT_DECAY=y\nCONFIG_WEIGHT_DECAY=\"1e-4\"\n";
	EXPECT_EQ(from(std::string("CONFIG_OPTIMIZER_ADAM=y\n") + nodecay).weight_decay, 0.0);
	EXPECT_EQ(from(std::string("CONFIG_OPTIMIZER_ADAMW=y\n") + nodecay).weight_decay, 1e-4);
	EXPECT_EQ(from(std::string("CONFIG_OPTIMIZER_SGD=y\n") + nodecay).weight_decay, 1e-4);
	EXPECT_EQ(from("CONFIG_OPTIMIZER_ADAM=y\nCONFIG_WEIGHT_DECAY=\"1e-4\"\n").weight_decay, 1e-4);
	EXPECT_EQ(from("").name, "adamw");
	auto none = from("CONFIG_OPTIMIZER_MODE_NONE=y\nCONFIG_OPTIMIZER_SGD=y\n"); // mode NONE: the model's default
	EXPECT_EQ(none.name, "adamw");
	EXPECT_EQ(none.kind, OptimKind::AdamW);
	EXPECT_EQ(test::error_of([&] { from("CONFIG_ADAMW_BETA2=\"1.0\"\n"); }),
		  "t.config: CONFIG_ADAMW_BETA2=1.0 is outside its range [0, 1)");
	EXPECT_EQ(test::error_of([&] { from("CONFIG_OPTIMIZER_SGD=y\nCONFIG_SGD_MOMENTUM=\"1.5\"\n"); }),
		  "t.config: CONFIG_SGD_MOMENTUM=1.5 is outside its range [0, 1)");
}
