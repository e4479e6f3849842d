// The CUDA paths against the CPU ones: optimizers (libtorch-ops update on the device vs the
// fused CPU pass and the CPU libtorch-ops path), the pruner with device masks, the model in
// fp32 and under bf16 autocast, cached decoding with the fused attention, and the device
// generator's state. Every test skips where no CUDA device is usable (the CPU build and
// CI); a GPU machine runs them (docs/performance.md, "GPU").
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/fsutil.h"
#include "core/torch_compat.h"
#include "models/gpt2.h"
#include "models/linear_ce.h"
#include "optim/optimizer.h"
#include "prune/pruner.h"
#include "tier/tier.h"

using namespace knlp;

#define REQUIRE_CUDA()                                                                                                 \
	do {                                                                                                           \
		if (!torch::cuda::is_available())                                                                      \
			GTEST_SKIP() << "no CUDA device";                                                              \
	} while (0)

namespace {

const torch::Device kGpu(torch::kCUDA, 0);

using Named = std::vector<std::pair<std::string, torch::Tensor>>;

// GPT-2-named parameters on `dev` in `dt`, drawn from the CPU generator (same values on
// every device).
Named toy(torch::Device dev, torch::Dtype dt)
{
	torch::manual_seed(21);
	Named out;
	for (auto [name, shape] :
	     std::vector<std::pair<std::string, std::vector<int64_t>>>{{"transformer.wte.weight", {64, 16}},
								       {"transformer.wpe.weight", {8, 16}},
								       {"transformer.h.0.ln_1.weight", {16}},
								       {"transformer.h.0.attn.c_attn.weight", {48, 16}},
								       {"transformer.h.0.attn.c_attn.bias", {48}},
								       {"transformer.h.0.mlp.c_fc.weight", {64, 16}},
								       {"transformer.h.0.mlp.c_proj.weight", {16, 64}}})
		out.emplace_back(name, torch::randn(shape, torch::kDouble).to(dev, dt).requires_grad_(true));
	return out;
}

// The same gradients on both sets: drawn on the CPU in double, then converted.
void set_grads(Named &a, Named &b, int step, double spike = 1.0)
{
	torch::manual_seed(1000 + step);
	for (size_t i = 0; i < a.size(); i++) {
		auto g = (torch::randn(a[i].second.sizes(), torch::kDouble) * 0.1 +
			  0.01 * a[i].second.detach().cpu().to(torch::kDouble)) *
			 spike;
		a[i].second.mutable_grad() = g.to(a[i].second.device(), a[i].second.scalar_type());
		b[i].second.mutable_grad() = g.to(b[i].second.device(), b[i].second.scalar_type());
	}
}

double max_diff(const torch::Tensor &a, const torch::Tensor &b)
{
	if (!a.defined() && !b.defined())
		return 0;
	EXPECT_TRUE(a.defined() && b.defined());
	if (!a.defined() || !b.defined())
		return 1e30;
	return (a.detach().cpu().to(torch::kDouble) - b.detach().cpu().to(torch::kDouble)).abs().max().item<double>();
}

GPT2Config small(const std::string &variant)
{
	GPT2Config c;
	c.n_layer = 3, c.n_head = 4, c.n_embd = 64, c.block_size = 32, c.vocab_raw = 97;
	c.vocab_size = pad_vocab(97, 64);
	c.dropout = 0.0;
	c.fused_head_loss = false;
	c.d_latent = 32;
	c.splice_dim = 16;
	HybridPlacement hp;
	set_attention_variant(c, variant, hp, 2, 1);
	c.validate();
	return c;
}

} // namespace

TEST(Cuda, OptimizersOnTheDeviceMatchTheCpu)
{
	REQUIRE_CUDA();
	struct Case {
		const char *name;
		OptimKind kind;
		bool ams, spam;
	};
	for (Case c :
	     {Case{"sgd", OptimKind::SGD, false, false}, Case{"adam", OptimKind::Adam, false, false},
	      Case{"adamw", OptimKind::AdamW, false, false}, Case{"adamwadv", OptimKind::AdamW, true, false},
	      Case{"adamwspam", OptimKind::AdamW, true, true}, Case{"sinkgd", OptimKind::SinkGD, false, false}}) {
		// double: the same libtorch ops on both devices; float: the CPU's fused pass.
		for (auto dt : {torch::kDouble, torch::kFloat}) {
			SCOPED_TRACE(std::string(c.name) + (dt == torch::kDouble ? " double" : " float"));
			OptimizerOptions o;
			o.kind = c.kind, o.name = c.name, o.amsgrad = c.ams, o.spam = c.spam;
			o.spam_interval = 7, o.spam_warmup = 3; // a periodic reset inside the run
			auto cpu = toy(torch::kCPU, dt), gpu = toy(kGpu, dt);
			Optimizer oc(cpu, o), og(gpu, o);
			for (int step = 1; step <= 16; step++) {
				set_grads(cpu, gpu, step, step == 14 ? 50.0 : 1.0); // a spike for SPAM's z-score reset
				double fc = oc.before_clip(), fg = og.before_clip();
				EXPECT_NEAR(fc, fg, 1e-12);
				double nc = oc.grad_norm(), ng = og.grad_norm();
				EXPECT_NEAR(nc, ng, 1e-5 * nc);
				double scale = nc > 1.0 ? 1.0 / nc : 1.0;
				oc.step(1e-2 * fc, scale);
				og.step(1e-2 * fg, scale);
			}
			EXPECT_EQ(oc.spam_soft_resets(), og.spam_soft_resets());
			EXPECT_EQ(oc.spam_hard_resets(), og.spam_hard_resets());
			if (c.spam)
				EXPECT_GT(og.spam_hard_resets(), 0);
			// SinkGD's transform runs in float32 on every device.
			double tol = dt == torch::kDouble && c.kind != OptimKind::SinkGD ? 1e-12 : 2e-6;
			for (size_t i = 0; i < cpu.size(); i++) {
				const auto &a = oc.state()[i], &b = og.state()[i];
				EXPECT_EQ(a.name, b.name);
				EXPECT_TRUE(b.param.device().is_cuda());
				EXPECT_LT(max_diff(a.param, b.param), tol) << a.name;
				EXPECT_LT(max_diff(a.exp_avg, b.exp_avg), tol) << a.name;
				EXPECT_LT(max_diff(a.exp_avg_sq, b.exp_avg_sq), tol) << a.name;
				EXPECT_LT(max_diff(a.max_exp_avg_sq, b.max_exp_avg_sq), tol) << a.name;
			}
		}
	}
}

TEST(Cuda, PrunerKeepsDeviceMasksAndMatchesTheCpu)
{
	REQUIRE_CUDA();
	struct Case {
		PruneMethod m;
		int variant;
	};
	for (Case c : {Case{PruneMethod::Magnitude, 0}, Case{PruneMethod::Movement, 0}, Case{PruneMethod::State, 0},
		       Case{PruneMethod::State, 7}, Case{PruneMethod::State, 8}}) {
		SCOPED_TRACE(std::string(method_name(c.m)) + " bitter" + std::to_string(c.variant));
		auto cpu = toy(torch::kCPU, torch::kFloat), gpu = toy(kGpu, torch::kFloat);
		Optimizer oc(cpu, OptimizerOptions{}), og(gpu, OptimizerOptions{});
		PruneOptions po;
		po.method = c.m, po.variant = c.variant, po.target = 0.7;
		po.warmup = 5, po.frequency = 4, po.ramp_end = 17;
		Pruner pc(po, oc), pg(po, og);
		for (int step = 1; step <= 30; step++) {
			set_grads(cpu, gpu, step);
			pc.mask_grads();
			pg.mask_grads();
			oc.step(1e-2);
			og.step(1e-2);
			pc.after_step(oc.step_count());
			pg.after_step(og.step_count());
			if (step >= 17)
				EXPECT_NEAR(pg.stats().sparsity, 0.7, 1e-3) << step;
			for (auto &t : pg.targets()) {
				if (!t.mask.defined())
					continue;
				EXPECT_TRUE(t.mask.device().is_cuda());
				EXPECT_EQ(t.mask.scalar_type(), torch::kBool);
				auto off = ~t.mask;
				EXPECT_EQ(t.param.masked_select(off).abs().sum().item<double>(), 0.0);
				if (c.m == PruneMethod::State) {
					EXPECT_EQ(t.state->exp_avg.masked_select(off).abs().sum().item<double>(), 0.0);
					EXPECT_EQ(t.state->exp_avg_sq.masked_select(off).abs().sum().item<double>(),
						  0.0);
				}
			}
		}
		// The same masks as on the CPU, up to entries whose scores differ in the last bit.
		int64_t same = 0, all = 0;
		for (size_t i = 0; i < pc.targets().size(); i++) {
			same += pc.targets()[i].mask.eq(pg.targets()[i].mask.cpu()).sum().item<int64_t>();
			all += pc.targets()[i].mask.numel();
		}
		EXPECT_GE(double(same) / all, 0.995);
		EXPECT_EQ(pg.stats().mask_bytes, pg.stats().prunable);
	}
}

TEST(Cuda, ModelMatchesTheCpuAndCachedDecodingIsExact)
{
	REQUIRE_CUDA();
	for (const char *v : {"vanilla", "mla", "kvsplice", "hybrid", "ra", "gate", "ra-gate"}) {
		SCOPED_TRACE(v);
		auto c = small(v);
		torch::manual_seed(5);
		GPT2 mc(c);
		torch::manual_seed(5);
		GPT2 mg(c);
		mg->to(kGpu);
		{
			torch::NoGradGuard ng;
			for (auto &p : mc->named_parameters())
				if (p.key().find("ra_rho") != std::string::npos)
					p.value().fill_(0.7);
			for (auto &p : mg->named_parameters())
				if (p.key().find("ra_rho") != std::string::npos)
					p.value().fill_(0.7);
		}
		torch::manual_seed(6);
		auto x = torch::randint(0, 97, {2, 24}, torch::kLong), y = torch::randint(0, 97, {2, 24}, torch::kLong);
		auto lc = mc->forward(x, y).loss;
		auto lg = mg->forward(x.to(kGpu), y.to(kGpu)).loss;
		EXPECT_NEAR(lc.item<double>(), lg.item<double>(), 1e-4);
		lc.backward();
		lg.backward();
		auto pcs = mc->named_parameters(), pgs = mg->named_parameters();
		for (auto &p : pcs) {
			auto gg = pgs[p.key()].grad();
			ASSERT_TRUE(gg.defined()) << p.key();
			double scale = std::max(1e-3, p.value().grad().abs().max().item<double>());
			EXPECT_LT(max_diff(p.value().grad(), gg) / scale, 1e-3) << p.key();
		}
		// Cached decoding on the device equals the device's full forward pass.
		mg->eval();
		torch::NoGradGuard ng;
		auto xg = x.to(kGpu);
		auto full = mg->forward_all(xg);
		KVCache cache;
		auto pre = mg->forward_cached(xg.narrow(1, 0, 9), cache);
		EXPECT_LT(max_diff(pre, full.narrow(1, 0, 9)), 1e-4);
		for (int t = 9; t < 24; t++) {
			auto step = mg->forward_cached(xg.narrow(1, t, 1), cache);
			EXPECT_LT(max_diff(step, full.narrow(1, t, 1)), 1e-4) << "position " << t;
		}
		EXPECT_EQ(cache.bytes(), c.cache_values_per_token() * 24 * 2 * 4);
	}
}

TEST(Cuda, Bf16AutocastStaysCloseAndLearns)
{
	REQUIRE_CUDA();
	auto c = small("vanilla");
	torch::manual_seed(5);
	GPT2 m(c);
	m->to(kGpu);
	torch::manual_seed(6);
	auto x = torch::randint(0, 97, {4, 32}, torch::kLong).to(kGpu),
	     y = torch::randint(0, 97, {4, 32}, torch::kLong).to(kGpu);
	double fp32 = m->forward(x, y).loss.item<double>();
	double first = 0, last = 0;
	std::vector<std::pair<std::string, torch::Tensor>> named;
	for (auto &p : m->named_parameters())
		named.emplace_back(p.key(), p.value());
	Optimizer opt(named, OptimizerOptions{});
	for (int i = 0; i < 40; i++) {
		torch::Tensor loss;
		{
			compat::AutocastGuard ac(kGpu, true, torch::kBFloat16);
			auto out = m->forward(x, y);
			if (out.logits.defined())
				EXPECT_EQ(out.logits.scalar_type(), torch::kBFloat16);
			loss = out.loss;
		}
		if (i == 0) {
			first = loss.item<double>();
			EXPECT_NEAR(first, fp32, 0.05); // ln(97) = 4.57; bf16 keeps about 3 digits
		}
		last = loss.item<double>();
		loss.backward();
		for (auto &p : named)
			EXPECT_EQ(p.second.grad().scalar_type(), torch::kFloat) << p.first; // fp32 master weights
		double n = opt.grad_norm();
		opt.step(3e-3, n > 1 ? 1 / n : 1);
		opt.zero_grad();
	}
	EXPECT_LT(last, first - 2.0); // one fixed batch: memorised
}

// The chunked head on the GPU (several chunks) against libtorch's whole-logits head, in
// float32 and with bf16 products under autocast: values and gradients.
TEST(Cuda, ChunkedHeadMatchesThePlainHead)
{
	REQUIRE_CUDA();
	torch::manual_seed(12);
	const int64_t V = 50304, C = 64, N = 2 * linear_cross_entropy_rows(4096, V) + 100;
	auto x0 = torch::randn({N, C}).to(kGpu), w0 = (torch::randn({V, C}) * 0.1).to(kGpu);
	auto t = torch::randint(0, V, {N}, torch::kLong).to(kGpu);
	t[5] = -1;
	for (bool bf16 : {false, true}) {
		auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
		auto x2 = x0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
		torch::Tensor fused, plain;
		{
			compat::AutocastGuard ag(kGpu, bf16, torch::kBFloat16);
			fused = linear_cross_entropy(x, w, t, compat::autocast_compute_dtype(kGpu));
			plain = torch::nn::functional::cross_entropy(
				torch::mm(x2, w2.t()).to(torch::kFloat), t,
				torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
		}
		fused.backward();
		plain.backward();
		const double tol = bf16 ? 1e-2 : 1e-5;
		EXPECT_NEAR(fused.item<double>(), plain.item<double>(), bf16 ? 1e-3 : 1e-5) << bf16;
		auto rel = [](const torch::Tensor &a, const torch::Tensor &b) {
			return ((a - b).norm() / b.norm()).item<double>();
		};
		EXPECT_LT(rel(x.grad(), x2.grad()), tol) << bf16;
		EXPECT_LT(rel(w.grad(), w2.grad()), tol) << bf16;
		EXPECT_EQ(x.grad()[5].abs().sum().item<double>(), 0.0);
	}
}

TEST(Cuda, GeneratorStateRoundTrips)
{
	REQUIRE_CUDA();
	torch::manual_seed(3);
	auto s = compat::generator_state(kGpu);
	auto a = torch::randn({1000}, torch::TensorOptions().device(kGpu));
	compat::set_generator_state(kGpu, s);
	auto b = torch::randn({1000}, torch::TensorOptions().device(kGpu));
	EXPECT_TRUE(a.equal(b));
	auto d = torch::randn({1000}, torch::TensorOptions().device(kGpu));
	EXPECT_FALSE(a.equal(d));
}

TEST(Cuda, TierOffloadMovesTheMiddleAndSlowTiersExactly)
{
	REQUIRE_CUDA();
	GPT2Config c;
	c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.block_size = 32, c.vocab_raw = 100;
	c.vocab_size = pad_vocab(100, 64);
	c.dropout = 0.0;
	torch::manual_seed(1);
	GPT2 m(c);
	m->init_weights();
	m->to(torch::kCUDA);
	auto mods = tier_modules(m);
	std::map<std::string, double> scores;
	double s = 0;
	for (auto &p : m->named_parameters())
		scores[p.key()] = s++;
	TierOptions o;
	parse_tier_cuts("0.3,0.6", &o);
	assign_tiers(mods, scores, o);
	int64_t moved = 0;
	for (const auto &md : mods)
		if (md.tier > 0)
			moved += md.bytes;
	char tmpl[] = "/tmp/knlp-cuda-tier-XXXXXX";
	TierBenchOptions b;
	b.context = 32;
	b.warmup = 1;
	b.iters = 5;
	b.modes = {"untiered", "offload"};
	b.store_dir = mkdtemp(tmpl);
	b.progress = false;
	auto x = torch::arange(32, torch::kLong).remainder(100).view({1, 32});
	auto j = tier_bench(m, mods, o, b, x);
	const auto &off = j["modes"][1];
	EXPECT_EQ(off["max_abs_logit_diff"].get<double>(), 0.0);
	EXPECT_EQ(off["bytes_read_per_forward"].get<int64_t>(), moved); // middle (host) + slow (file)
	EXPECT_EQ(j["device"].get<std::string>().rfind("cuda", 0), 0u);
	remove_tree(b.store_dir); // not std::filesystem::remove_all (core/fsutil.cpp)
}
