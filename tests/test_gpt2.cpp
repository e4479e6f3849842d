// GPT-2 model: exact parameter counts, init, causality, KV cache; LR schedule.
#include <gtest/gtest.h>

#include <cmath>

#include "core/torch_compat.h"
#include "models/gemm.h"
#include "models/gpt2.h"
#include "models/fused.h"
#include "models/linear_ce.h"
#include "train/generate.h"
#include "train/schedule.h"

using namespace knlp;

static GPT2Config shape(int L, int H, int C, int T, int V, bool bias = true)
{
	GPT2Config c;
	c.n_layer = L, c.n_head = H, c.n_embd = C, c.block_size = T, c.vocab_raw = V;
	c.vocab_size = pad_vocab(V, 64);
	c.bias = bias;
	c.dropout = 0.0;
	return c;
}

TEST(Gpt2, VocabularyPadding)
{
	EXPECT_EQ(pad_vocab(50257, 64), 50304);
	EXPECT_EQ(pad_vocab(256, 64), 256);
	EXPECT_EQ(pad_vocab(257, 64), 320);
	EXPECT_EQ(pad_vocab(50257, 1), 50257);
}

// The three GELUs at points computed by hand (Python, float64): exact erf; the tanh form;
// ggml's table, tanh of the input rounded to fp16 with the result rounded to fp16, and the
// pass-through / zero beyond +-10.
TEST(Gpt2, GeluVariants)
{
	auto x = torch::tensor({0.5f, 1.0001f, -2.3f, 3.14159f, -11.f, 12.25f});
	auto erf = gelu(x, Gelu::Erf), tanh = gelu(x, Gelu::Tanh), table = gelu(x, Gelu::GgmlTable);
	const double want_erf[] = {
		0.34573123063700656, 0.8414530788253343, -0.024665453049854423, 3.1389505435814526, 0, 12.25};
	const double want_tanh[] = {
		0.34571400982514394, 0.8413002882272821, -0.024327029795919095, 3.139305692184514, 0, 12.25};
	const double want_table[] = {0.345703125, 0.84130859375, -0.0242767333984375, 3.138671875, 0, 12.25};
	for (int i = 0; i < 6; i++) {
		EXPECT_NEAR(erf[i].item<double>(), want_erf[i], 1e-6) << i;
		EXPECT_NEAR(tanh[i].item<double>(), want_tanh[i], 1e-6) << i;
		EXPECT_EQ(table[i].item<float>(), float(want_table[i])) << i;
	}
}

TEST(Gpt2, ParameterCountsOfThePresets)
{
	// Hand-derived: 12 L C^2 + 13 L C (blocks) + V C + T C + 2 C (final norm).
	EXPECT_EQ(shape(12, 12, 768, 1024, 50257).num_params(), 124475904);
	EXPECT_EQ(shape(6, 8, 512, 1024, 50257).num_params(), 45195264);
	EXPECT_EQ(shape(24, 16, 1024, 1024, 50257).num_params(), 354871296);
	EXPECT_EQ(shape(36, 20, 1280, 1024, 50257).num_params(), 774090240);
	EXPECT_EQ(shape(48, 25, 1600, 1024, 50257).num_params(), 1557686400);
	EXPECT_EQ(shape(4, 4, 128, 128, 256).num_params(), 842496);
	// No biases: minus (1 + 3 + 1 + 1 + 4 + 1) C per block and C for ln_f.
	EXPECT_EQ(shape(4, 4, 128, 128, 256, false).num_params(), 842496 - 4 * 11 * 128 - 128);
}

TEST(Gpt2, ModuleMatchesTheAnalyticCount124M)
{
	torch::manual_seed(0);
	GPT2 m(shape(12, 12, 768, 1024, 50257));
	EXPECT_EQ(m->count_parameters(), 124475904);
	// The tied head is the embedding, not a second parameter.
	int n = 0;
	for (auto &p : m->named_parameters())
		n += p.key().find("lm_head") != std::string::npos;
	EXPECT_EQ(n, 0);
	EXPECT_EQ(m->named_parameters().size(), 2u + 12u * 12u + 2u);
}

TEST(Gpt2, SmallShapesMatchTheAnalyticCount)
{
	for (bool bias : {true, false}) {
		auto c = shape(3, 2, 32, 16, 100, bias);
		GPT2 m(c);
		EXPECT_EQ(m->count_parameters(), c.num_params()) << bias;
	}
}

TEST(Gpt2, InitFollowsTheSpec)
{
	torch::manual_seed(1);
	auto c = shape(8, 4, 256, 64, 256);
	GPT2 m(c);
	auto params = m->named_parameters();
	auto stdof = [&](const std::string &n) { return params[n].std().item<double>(); };
	EXPECT_NEAR(stdof("transformer.h.0.attn.c_attn.weight"), 0.02, 0.001);
	EXPECT_NEAR(stdof("transformer.h.3.mlp.c_fc.weight"), 0.02, 0.001);
	EXPECT_NEAR(stdof("transformer.wte.weight"), 0.02, 0.002);
	EXPECT_NEAR(stdof("transformer.wpe.weight"), 0.02, 0.002);
	double proj = 0.02 / std::sqrt(2.0 * 8);
	EXPECT_NEAR(stdof("transformer.h.0.attn.c_proj.weight"), proj, proj * 0.05);
	EXPECT_NEAR(stdof("transformer.h.7.mlp.c_proj.weight"), proj, proj * 0.05);
	EXPECT_EQ(params["transformer.h.2.attn.c_attn.bias"].abs().max().item<float>(), 0.0f);
	EXPECT_TRUE(params["transformer.h.2.ln_1.weight"].eq(1).all().item<bool>());
	EXPECT_TRUE(params["transformer.ln_f.bias"].eq(0).all().item<bool>());
}

TEST(Gpt2, InitialLossIsNearUniform)
{
	torch::manual_seed(2);
	auto c = shape(2, 2, 64, 32, 256);
	c.fused_head_loss = false;
	GPT2 m(c);
	auto x = torch::randint(0, 256, {4, 32}, torch::kLong);
	auto y = torch::randint(0, 256, {4, 32}, torch::kLong);
	auto out = m->forward(x, y);
	EXPECT_NEAR(out.loss.item<double>(), std::log(256.0), 0.1);
	EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{4, 32, 256}));
	// Ignored targets (-1) do not count.
	auto y2 = y.clone();
	y2.narrow(1, 16, 16).fill_(-1);
	auto half = torch::nn::functional::cross_entropy(out.logits.narrow(1, 0, 16).reshape({-1, 256}),
							 y.narrow(1, 0, 16).reshape({-1}));
	EXPECT_NEAR(m->forward(x, y2).loss.item<double>(), half.item<double>(), 1e-6);
	// Without targets only the last position is returned.
	EXPECT_EQ(m->forward(x).logits.sizes(), (std::vector<int64_t>{4, 1, 256}));
}

TEST(Gpt2, AttentionIsCausal)
{
	torch::manual_seed(3);
	GPT2 m(shape(2, 2, 32, 16, 256));
	m->eval();
	auto x = torch::randint(0, 256, {1, 16}, torch::kLong);
	auto a = m->forward_all(x);
	auto x2 = x.clone();
	x2[0][10] = (x[0][10].item<int64_t>() + 1) % 256;
	auto b = m->forward_all(x2);
	EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 10), b.narrow(1, 0, 10), 0, 0));
	EXPECT_FALSE(torch::allclose(a.narrow(1, 10, 6), b.narrow(1, 10, 6)));
}

TEST(Gpt2, CachedDecodingEqualsFullForward)
{
	torch::manual_seed(4);
	GPT2 m(shape(3, 4, 64, 32, 256));
	m->eval();
	torch::NoGradGuard ng;
	auto x = torch::randint(0, 256, {2, 20}, torch::kLong);
	auto full = m->forward_all(x);
	KVCache cache;
	auto pre = m->forward_cached(x.narrow(1, 0, 7), cache); // prefill 7
	EXPECT_LT((pre - full.narrow(1, 0, 7)).abs().max().item<double>(), 1e-5);
	auto chunk = m->forward_cached(x.narrow(1, 7, 3), cache); // a 3-token chunk
	EXPECT_LT((chunk - full.narrow(1, 7, 3)).abs().max().item<double>(), 1e-5);
	for (int t = 10; t < 20; t++) {
		auto step = m->forward_cached(x.narrow(1, t, 1), cache);
		EXPECT_LT((step - full.narrow(1, t, 1)).abs().max().item<double>(), 1e-5) << t;
	}
	EXPECT_EQ(cache.length(), 20);
	// 3 layers x (K + V) x B 2 x H 4 x 20 positions x D 16 x 4 bytes.
	EXPECT_EQ(cache.bytes(), 3 * 2 * 2 * 4 * 20 * 16 * 4);
}

TEST(Gpt2, SamplingIsDeterministicAndRespectsTopK)
{
	torch::manual_seed(5);
	GPT2 m(shape(2, 2, 32, 64, 256));
	SampleOptions so;
	so.tokens = 20;
	Rng r1(9), r2(9);
	auto a = generate(m, {1, 2, 3}, so, r1, torch::kCPU);
	auto b = generate(m, {1, 2, 3}, so, r2, torch::kCPU);
	EXPECT_EQ(a, b);
	EXPECT_EQ(a.size(), 20u);
	auto logits = torch::tensor({0.0, 5.0, 1.0, 4.0});
	Rng r(1);
	for (int i = 0; i < 100; i++) {
		auto id = sample_logits(logits, 4, 1.0, 2, r);
		EXPECT_TRUE(id == 1 || id == 3);
	}
	EXPECT_EQ(sample_logits(logits, 4, 1.0, 1, r), 1u);
	// Generation longer than the context slides the window instead of failing.
	so.tokens = 100;
	EXPECT_EQ(generate(m, {1}, so, r1, torch::kCPU).size(), 100u);
}

TEST(LrSchedule, WarmupCosineFloor)
{
	LrSchedule s{1e-3, 1e-4, 10, 110, true};
	EXPECT_DOUBLE_EQ(s.at(0), 0.0);
	EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
	EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
	EXPECT_NEAR(s.at(60), 1e-4 + 0.5 * (1e-3 - 1e-4), 1e-15); // halfway: cos(pi/2) = 0
	EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
	EXPECT_DOUBLE_EQ(s.at(500), 1e-4);
	LrSchedule flat{1e-3, 1e-4, 10, 110, false};
	EXPECT_DOUBLE_EQ(flat.at(100), 1e-3);
}

TEST(LinearCrossEntropy, MatchesThePlainPathInLossAndGradients)
{
	torch::manual_seed(7);
	// One chunk, and 300 rows in three chunks of 100 (rows_per_chunk 128, split evenly).
	for (int64_t N : {5, 300}) {
		auto x = torch::randn({N, 24}, torch::requires_grad());
		auto w = (torch::randn({5000, 24}) * 0.1).requires_grad_(true);
		auto t = torch::randint(0, 5000, {N}, torch::kLong);
		t[1] = -1; // ignored
		auto x2 = x.detach().clone().requires_grad_(true), w2 = w.detach().clone().requires_grad_(true);
		auto fused = linear_cross_entropy(x, w, t, torch::kFloat, 128);
		(fused * 3.0).backward();
		auto plain = torch::nn::functional::cross_entropy(
			torch::mm(x2, w2.t()), t, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
		(plain * 3.0).backward();
		EXPECT_NEAR(fused.item<double>(), plain.item<double>(), 1e-5);
		EXPECT_LT((x.grad() - x2.grad()).abs().max().item<double>(), 1e-6);
		EXPECT_LT((w.grad() - w2.grad()).abs().max().item<double>(), 1e-6);
		EXPECT_EQ(x.grad()[1].abs().sum().item<double>(), 0.0); // ignored row: no gradient
		torch::NoGradGuard ng;					// evaluation path: loss only
		EXPECT_NEAR(linear_cross_entropy(x, w, t, torch::kFloat, 128).item<double>(), plain.item<double>(),
			    1e-5);
		EXPECT_NEAR(linear_cross_entropy(x, w, t).item<double>(), plain.item<double>(), 1e-5);
	}
}

// On the CPU in float32 with a large vocabulary the chunks run in blocks of the vocabulary
// (models/fused.h); they agree with the row kernel's chunks, over three chunks of 100 rows
// (w's gradient accumulated across them) and in the loss-only path.
TEST(LinearCrossEntropy, VocabularyBlocksAgreeWithRowChunks)
{
	torch::manual_seed(11);
	const int64_t N = 300, C = 8, V = 42000;
	auto x = torch::randn({N, C}), w = torch::randn({V, C}) * 0.2;
	ASSERT_TRUE(linear_cross_entropy_blocked_applies(x.narrow(0, 0, 100), w)); // 17 blocks of 2608
	auto t = torch::randint(0, V, {N}, torch::kLong);
	t[1] = -1;
	auto run = [&](bool blocks) {
		auto xx = x.clone().requires_grad_(true), ww = w.clone().requires_grad_(true);
		auto loss = linear_cross_entropy(xx, ww, t, torch::kFloat, 128, blocks);
		(loss * 2.0).backward();
		return std::vector<torch::Tensor>{loss.detach(), xx.grad(), ww.grad()};
	};
	auto rows = run(false), blocks = run(true);
	EXPECT_NEAR(blocks[0].item<double>(), rows[0].item<double>(), 1e-5 * rows[0].item<double>());
	EXPECT_LT((blocks[1] - rows[1]).abs().max().item<double>(), 1e-6);
	EXPECT_LT((blocks[2] - rows[2]).abs().max().item<double>(), 1e-6);
	EXPECT_EQ(blocks[1][1].abs().sum().item<double>(), 0.0); // ignored row
	torch::NoGradGuard ng;
	EXPECT_NEAR(linear_cross_entropy(x, w, t, torch::kFloat, 128, true).item<double>(), rows[0].item<double>(),
		    1e-5 * rows[0].item<double>());
}

// Products in bf16 (as autocast runs them), statistics in float32: the chunked head tracks
// libtorch's autocast head (bf16 logits, float32 cross-entropy) over two chunks of 350
// rows, and differs from float32 products as bf16 does. With knlp's bf16 product
// (AVX512-BF16 CPUs) the logits stay float32 instead of being rounded to bf16, so the head
// is closer than libtorch's to the float64 head of the same bf16 operands.
TEST(LinearCrossEntropy, Bf16ProductsTrackTheAutocastPath)
{
	torch::manual_seed(9);
	const int64_t N = 700, V = 20000, C = 32;
	auto x = torch::randn({N, C}, torch::requires_grad());
	auto w = (torch::randn({V, C}) * 0.1).requires_grad_(true);
	auto t = torch::randint(0, V, {N}, torch::kLong);
	t[3] = -1;
	const bool own = own_bf16_gemm_active();
	auto x2 = x.detach().clone().requires_grad_(true), w2 = w.detach().clone().requires_grad_(true);
	auto fused = linear_cross_entropy(x, w, t, torch::kBFloat16, 419);
	EXPECT_EQ(fused.scalar_type(), torch::kFloat);
	fused.backward();
	torch::Tensor plain;
	{
		compat::AutocastGuard ag(torch::kCPU, true, torch::kBFloat16);
		auto logits = torch::mm(x2, w2.t());
		ASSERT_EQ(logits.scalar_type(), torch::kBFloat16);
		plain = torch::nn::functional::cross_entropy(
			logits.to(torch::kFloat), t, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1));
	}
	plain.backward();
	auto ce = torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1);
	// The float64 head of the bf16-rounded operands.
	auto xd = x.detach().to(torch::kBFloat16).to(torch::kDouble).requires_grad_(true),
	     wd = w.detach().to(torch::kBFloat16).to(torch::kDouble).requires_grad_(true);
	auto exact = torch::nn::functional::cross_entropy(torch::mm(xd, wd.t()), t, ce);
	exact.backward();
	auto rel = [](const torch::Tensor &a, const torch::Tensor &b) {
		return ((a.to(torch::kDouble) - b.to(torch::kDouble)).norm() / b.to(torch::kDouble).norm())
			.item<double>();
	};
	// libtorch's path: the same bf16 products; float32 statistics in another summation
	// order, w's gradient also rounded elsewhere (per chunk here, once there). Measured:
	// 1.9e-6 in the loss, 3.6e-6 and 8.9e-4 in the gradients. knlp's bf16 product: the
	// logits unrounded, 1.7e-3 from libtorch's x gradient.
	EXPECT_NEAR(fused.item<double>(), plain.item<double>(), own ? 1e-3 : 1e-4);
	EXPECT_LT(rel(x.grad(), x2.grad()), own ? 5e-3 : 1e-4);
	EXPECT_LT(rel(w.grad(), w2.grad()), 5e-3);
	if (own) {
		EXPECT_LT(std::abs(fused.item<double>() - exact.item<double>()),
			  std::abs(plain.item<double>() - exact.item<double>()));
		EXPECT_LT(rel(x.grad(), xd.grad()), rel(x2.grad(), xd.grad()));
		EXPECT_LT(rel(w.grad(), wd.grad()), rel(w2.grad(), wd.grad()));
	}
	EXPECT_EQ(x.grad()[3].abs().sum().item<double>(), 0.0);
	// Float32 products throughout give other gradients: the products did run in bf16.
	auto x3 = x.detach().clone().requires_grad_(true);
	auto l3 = linear_cross_entropy(x3, w.detach(), t, torch::kFloat, 419);
	l3.backward();
	if (own) // the loss: 2.5e-7 from the float64 head of the bf16 operands, 2.6e-5 from float32's
		EXPECT_GT(std::abs(fused.item<double>() - l3.item<double>()),
			  10 * std::abs(fused.item<double>() - exact.item<double>()));
	else
		EXPECT_GT(rel(x.grad(), x3.grad()), 10 * rel(x.grad(), x2.grad()));
	std::printf(
		"  loss from the float64 head: knlp %.3g, libtorch %.3g, float32 products %.3g; gradients' relative "
		"distance from it: x %.3g, %.3g; w %.3g, %.3g\n",
		std::abs(fused.item<double>() - exact.item<double>()),
		std::abs(plain.item<double>() - exact.item<double>()),
		std::abs(l3.item<double>() - exact.item<double>()), rel(x.grad(), xd.grad()), rel(x2.grad(), xd.grad()),
		rel(w.grad(), wd.grad()), rel(w2.grad(), wd.grad()));
}

// The chunked head (no logits tensor) and libtorch's trade the same loss and gradients, in
// float32 and under CPU bf16 autocast (products in bf16 in both).
TEST(Gpt2, FusedAndPlainHeadsTrainAlike)
{
	auto c = shape(2, 2, 32, 16, 256);
	torch::manual_seed(8);
	GPT2 a(c);
	c.fused_head_loss = false;
	torch::manual_seed(8);
	GPT2 b(c);
	auto x = torch::randint(0, 256, {3, 16}, torch::kLong), y = torch::randint(0, 256, {3, 16}, torch::kLong);
	for (bool bf16 : {false, true}) {
		a->zero_grad();
		b->zero_grad();
		GPT2Output oa, ob;
		{
			compat::AutocastGuard ag(torch::kCPU, bf16, torch::kBFloat16);
			oa = a->forward(x, y), ob = b->forward(x, y);
		}
		EXPECT_FALSE(oa.logits.defined());
		EXPECT_TRUE(ob.logits.defined());
		// Under bf16 with knlp's bf16 product (AVX512-BF16 CPUs) the chunked head keeps its
		// logits in float32 where libtorch's autocast head rounds them to bf16 (2^-9
		// relative): measured 3.5e-5 apart in the loss and 8.4e-5 in the gradient.
		const bool unrounded = bf16 && own_bf16_gemm_active();
		EXPECT_NEAR(oa.loss.item<double>(), ob.loss.item<double>(), unrounded ? 2e-4 : 1e-5) << bf16;
		oa.loss.backward();
		ob.loss.backward();
		auto ga = a->named_parameters()["transformer.h.0.attn.c_attn.weight"].grad();
		auto gb = b->named_parameters()["transformer.h.0.attn.c_attn.weight"].grad();
		EXPECT_LT((ga - gb).abs().max().item<double>(), unrounded ? 4e-4
								: bf16	  ? 1e-5
									  : 1e-6)
			<< bf16; // of 0.01
	}
}

// forward(x, y) takes the token lookup's gradient as a sparse tensor (the rows it touched)
// and adds it to the tied head's dense gradient; the parameter's gradient stays dense and
// equals the dense lookup's (forward_all, a plain loss), with the chunked head and without.
TEST(Gpt2, TiedEmbeddingGradientStaysDense)
{
	for (bool fused : {true, false}) {
		auto c = shape(2, 2, 32, 16, 256);
		c.fused_head_loss = fused;
		torch::manual_seed(8);
		GPT2 m(c);
		auto x = torch::randint(0, 256, {3, 16}, torch::kLong),
		     y = torch::randint(0, 256, {3, 16}, torch::kLong);
		m->forward(x, y).loss.backward();
		auto g1 = m->wte->weight.grad().clone();
		EXPECT_EQ(g1.layout(), torch::kStrided) << fused;
		m->zero_grad();
		auto logits = m->forward_all(x);
		torch::nn::functional::cross_entropy(logits.view({-1, logits.size(-1)}), y.reshape({-1})).backward();
		auto g2 = m->wte->weight.grad();
		EXPECT_GT(g2.abs().max().item<double>(), 1e-3);
		EXPECT_LT((g1 - g2).abs().max().item<double>(), 1e-6) << fused;
	}
}
