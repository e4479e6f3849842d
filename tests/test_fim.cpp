// Fisher tools and tiering: the Fisher equals squared window gradients computed
// independently, seeds, file round trip, the comparison with Adam's v, tier cuts, the
// offload bench's exactness, and the activations the importance matrix sees.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "data/tokens.h"
#include "fim/fisher.h"
#include "models/gpt2.h"
#include "models/observer.h"
#include "testutil.h"
#include "tier/tier.h"
#include "train/export.h"

using namespace knlp;

namespace {

GPT2 tiny_model(uint64_t seed = 3)
{
	GPT2Config c;
	c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 16, c.vocab_raw = 40;
	c.vocab_size = pad_vocab(40, 64);
	c.dropout = 0.0;
	torch::manual_seed(seed);
	GPT2 m(c);
	m->init_weights();
	return m;
}

// A token file of n ids < 40.
std::string token_file(const test::TempDir &d, int n)
{
	std::string bytes(size_t(n) * 2, '\0');
	Rng rng(5);
	for (int i = 0; i < n; i++) {
		uint16_t v = uint16_t(rng.next() % 40);
		std::memcpy(&bytes[size_t(i) * 2], &v, 2);
	}
	std::string path = d / "val.bin";
	test::write(path, bytes);
	return path;
}

} // namespace

TEST(Fisher, WindowsAreEvenlySpacedAndDoNotOverlap)
{
	auto s = fisher_windows(1000, 4, 100, "x.bin");
	EXPECT_EQ(s, (std::vector<int64_t>{0, 299, 599, 899}));
	EXPECT_EQ(fisher_windows(1000, 1, 100, "x.bin"), (std::vector<int64_t>{0}));
	// 10 windows of 100 need 1001 tokens.
	EXPECT_NE(test::error_of([] {
			  fisher_windows(1000, 10, 100, "x.bin");
		  }).find("x.bin: 1000 tokens, but 10 windows"),
		  std::string::npos);
	EXPECT_EQ(fisher_windows(1001, 10, 100, "x.bin").back(), 900);
}

TEST(Fisher, EmpiricalFisherIsTheMeanSquaredWindowGradient)
{
	test::TempDir d;
	TokenFile f(token_file(d, 200), 40);
	GPT2 m = tiny_model();
	FisherOptions o;
	o.chunks = 2;
	o.seq = 16;
	o.true_fisher = false;
	o.progress = false;
	auto r = compute_fisher(m, f, o);
	ASSERT_EQ(r.kinds(), std::vector<std::string>{"empirical"});
	// The same by hand: the fused CPU loss path, .grad, two windows.
	std::map<std::string, torch::Tensor> want;
	for (int64_t start : r.starts) {
		auto x = torch::empty({1, 16}, torch::kLong), y = torch::empty({1, 16}, torch::kLong);
		f.window(uint64_t(start), 16, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		m->zero_grad();
		m->forward(x, y).loss.backward();
		for (auto &p : m->named_parameters()) {
			auto g2 = p.value().grad().pow(2) / 2.0;
			want[p.key()] = want.count(p.key()) ? want[p.key()] + g2 : g2;
		}
	}
	ASSERT_EQ(r.empirical.size(), want.size());
	for (auto &[n, t] : want) {
		SCOPED_TRACE(n);
		EXPECT_TRUE(torch::allclose(r.empirical.at(n), t, 1e-4, 1e-12));
	}
	EXPECT_EQ(r.tokens, 32);
	EXPECT_GT(r.mean_loss, std::log(40.0) - 0.5);
}

TEST(Fisher, TrueFisherIsSeededAndDiffersFromTheEmpirical)
{
	test::TempDir d;
	TokenFile f(token_file(d, 400), 40);
	GPT2 m = tiny_model();
	FisherOptions o;
	o.chunks = 3;
	o.seq = 16;
	o.progress = false;
	o.seed = 7;
	auto a = compute_fisher(m, f, o), b = compute_fisher(m, f, o);
	o.seed = 8;
	auto c = compute_fisher(m, f, o);
	const std::string w = "transformer.h.0.mlp.c_fc.weight";
	EXPECT_TRUE(torch::equal(a.true_fisher.at(w), b.true_fisher.at(w)));
	EXPECT_TRUE(torch::equal(a.empirical.at(w), c.empirical.at(w))); // labels of the data: no seed
	EXPECT_FALSE(torch::equal(a.true_fisher.at(w), c.true_fisher.at(w)));
	EXPECT_FALSE(torch::equal(a.true_fisher.at(w), a.empirical.at(w)));
	for (auto &[n, t] : a.true_fisher)
		EXPECT_GE(t.min().item<float>(), 0.0f) << n;
	// Round trip through fisher.safetensors, bit for bit.
	save_fisher(d / "fisher.safetensors", a);
	auto back = load_fisher(d / "fisher.safetensors");
	EXPECT_EQ(back.names, a.names);
	EXPECT_EQ(back.starts, a.starts);
	EXPECT_EQ(back.chunks, 3);
	for (const auto &n : a.names) {
		EXPECT_TRUE(torch::equal(back.empirical.at(n), a.empirical.at(n)));
		EXPECT_TRUE(torch::equal(back.true_fisher.at(n), a.true_fisher.at(n)));
	}
	// The JSON groups by role: one token table, two ffn_down tensors, traces add up.
	auto j = fisher_json(a);
	EXPECT_EQ(j["roles"]["ffn_down"]["tensors"].get<int>(), 2);
	EXPECT_EQ(j["roles"]["token_embd"]["tensors"].get<int>(), 1);
	double sum = 0;
	for (const auto &t : j["tensors"])
		sum += t["empirical"]["trace"].get<double>();
	EXPECT_NEAR(sum, j["total"]["empirical"].get<double>(), 1e-9 * sum);
	// Not a Fisher file: a clear error.
	EXPECT_NE(test::error_of([&] { load_fisher(d / "nope.safetensors"); }).find("nope.safetensors"),
		  std::string::npos);
}

TEST(Fisher, CompareScoresAProportionalVPerfectly)
{
	FisherResult f;
	f.names = {"a.weight", "b.weight"};
	f.empirical["a.weight"] = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f});
	f.empirical["b.weight"] = torch::tensor({0.5f, 8.0f});
	AdamMoments adam;
	adam.beta2 = 0.5;
	adam.step = 10;
	adam.age = 2; // 1 / (1 - 0.25)
	for (auto &[n, t] : f.empirical)
		adam.v[n] = t * 3.0;
	auto j = compare_fisher(adam, f, CompareOptions{{0.5}});
	const auto &g = j["fisher"]["empirical"]["global"];
	EXPECT_NEAR(g["raw"]["spearman"].get<double>(), 1.0, 1e-12);
	EXPECT_NEAR(g["raw"]["pearson"].get<double>(), 1.0, 1e-12);
	EXPECT_NEAR(g["raw"]["top50%"].get<double>(), 1.0, 1e-12);
	EXPECT_NEAR(g["scale"]["raw"].get<double>(), 3.0, 1e-6);
	EXPECT_NEAR(g["scale"]["bias_corrected"].get<double>(), 4.0, 1e-6);
	EXPECT_NEAR(j["bias_correction"].get<double>(), 4.0 / 3.0, 1e-12);
	// Reversed order inside a: Spearman -1 for that tensor.
	adam.v["a.weight"] = torch::tensor({4.0f, 3.0f, 2.0f, 1.0f});
	j = compare_fisher(adam, f, CompareOptions{{0.5}});
	EXPECT_NEAR(j["fisher"]["empirical"]["tensors"][0]["spearman"].get<double>(), -1.0, 1e-12);
}

TEST(Tier, CutsCountModulesOrBytes)
{
	std::vector<TierModule> mods;
	std::map<std::string, double> scores;
	for (int i = 0; i < 10; i++) {
		TierModule m;
		m.name = "m" + std::to_string(i);
		m.tensors = {m.name + ".weight"};
		m.bytes = i == 9 ? 910 : 10; // the lowest-scored module is the largest
		scores[m.name + ".weight"] = 10 - i;
		mods.push_back(m);
	}
	TierOptions o;
	parse_tier_cuts("0.3,0.5", &o);
	assign_tiers(mods, scores, o);
	std::vector<int> want = {0, 0, 0, 1, 1, 2, 2, 2, 2, 2};
	for (int i = 0; i < 10; i++)
		EXPECT_EQ(mods[size_t(i)].tier, want[size_t(i)]) << i;
	// By bytes (1000 in all): modules 0..8 start before 9% of the bytes: all fast.
	o.by_bytes = true;
	assign_tiers(mods, scores, o);
	for (int i = 0; i < 9; i++)
		EXPECT_EQ(mods[size_t(i)].tier, 0) << i;
	EXPECT_EQ(mods[9].tier, 0); // starts at 90 bytes of 1000 (9%) < 30%
	parse_tier_cuts("0.05,0.085", &o);
	assign_tiers(mods, scores, o);
	EXPECT_EQ(mods[4].tier, 0); // starts at 4%
	EXPECT_EQ(mods[5].tier, 1); // 5%
	EXPECT_EQ(mods[9].tier, 2); // 9%
	auto j = tier_plan_json(mods, o);
	EXPECT_EQ(j["tiers"]["slow"]["bytes"].get<int64_t>(), 910);
	EXPECT_NE(test::error_of([&] { parse_tier_cuts("0.5,0.3", &o); }).find("0.5,0.3"), std::string::npos);
	EXPECT_NE(test::error_of([&] { parse_tier_cuts("0.3", &o); }).find("'0.3'"), std::string::npos);
}

TEST(Tier, OffloadIsExactAndReadsTheSlowTierEveryPass)
{
	test::TempDir d;
	GPT2 m = tiny_model();
	auto mods = tier_modules(m);
	// 2 blocks x (ln_1, c_attn, c_proj, ln_2, c_fc, c_proj) + wte, wpe, ln_f.
	EXPECT_EQ(mods.size(), 15u);
	std::map<std::string, double> scores;
	int64_t total = 0;
	int i = 0;
	for (auto &p : m->named_parameters()) {
		scores[p.key()] = double(i++);
		total += p.value().numel() * 4;
	}
	TierOptions o;
	parse_tier_cuts("0,0", &o); // everything slow
	assign_tiers(mods, scores, o);
	TierBenchOptions b;
	b.context = 16;
	b.warmup = 1;
	b.iters = 3;
	b.modes = {"untiered", "emulated", "offload"};
	b.store_dir = d / "tier";
	b.progress = false;
	auto x = torch::arange(16, torch::kLong).remainder(40).view({1, 16});
	auto before = m->forward_all(x).detach();
	auto j = tier_bench(m, mods, o, b, x);
	ASSERT_EQ(j["modes"].size(), 3u);
	const auto &off = j["modes"][2];
	EXPECT_EQ(off["max_abs_logit_diff"].get<double>(), 0.0);
	EXPECT_EQ(off["bytes_read_per_forward"].get<int64_t>(), total);
	EXPECT_EQ(j["modes"][1]["max_abs_logit_diff"].get<double>(), 0.0);
	// Emulated wait: every tensor from the slow tier, 30 us + bytes / 10 GB/s each.
	double want = 0;
	for (auto &p : m->named_parameters())
		want += 30e-6 + double(p.value().numel() * 4) / 10e9;
	EXPECT_NEAR(j["emulated_wait_ms_per_forward"].get<double>(), 1e3 * want, 1e-9);
	// The model is whole again afterwards.
	EXPECT_TRUE(torch::equal(m->forward_all(x).detach(), before));
	EXPECT_TRUE(std::filesystem::exists(d / "tier/slow_tier.bin"));
}

namespace {
struct Capture : ForwardObserver {
	std::map<std::string, torch::Tensor> seen;
	std::vector<int> blocks;
	void before_block(int l) override { blocks.push_back(l); }
	void linear_input(int l, const char *which, const torch::Tensor &x) override
	{
		seen[std::to_string(l) + "." + which] = x.detach().clone();
	}
};
} // namespace

TEST(Observer, SeesEveryLinearInputAndBlock)
{
	GPT2 m = tiny_model();
	m->eval();
	torch::NoGradGuard ng;
	auto x = torch::arange(8, torch::kLong).view({1, 8});
	Capture c;
	{
		ObserverScope s(&c);
		m->forward_all(x);
	}
	EXPECT_EQ(c.blocks, (std::vector<int>{0, 1}));
	EXPECT_EQ(c.seen.size(), 8u);
	// Layer 0's c_attn sees ln_1(wte + wpe).
	auto h = m->wte(x) + m->wpe(torch::arange(8, torch::kLong));
	auto blk = m->h[0]->as<BlockImpl>();
	EXPECT_TRUE(torch::allclose(c.seen.at("0.attn.c_attn"), blk->ln_1(h), 1e-6, 1e-6));
	EXPECT_EQ(c.seen.at("1.mlp.c_proj").size(-1), 128);
	// No scope, no reports.
	Capture idle;
	m->forward_all(x);
	EXPECT_TRUE(idle.seen.empty());
}

TEST(Imatrix, MeanSquaredInputPerChannel)
{
	test::TempDir d;
	std::string file = token_file(d, 200);
	GPT2 m = tiny_model();
	auto im = collect_imatrix(m, file, 3, 16);
	EXPECT_EQ(im.size(), 8u);
	// By hand for layer 0's c_attn: mean over the 3 x 16 rows of ln_1(x)^2.
	TokenFile f(file, 40);
	auto starts = fisher_windows(f.size(), 3, 16, file);
	torch::NoGradGuard ng;
	auto blk = m->h[0]->as<BlockImpl>();
	torch::Tensor sum = torch::zeros({32}, torch::kDouble);
	for (auto s : starts) {
		auto x = torch::empty({1, 16}, torch::kLong), y = torch::empty({1, 16}, torch::kLong);
		f.window(uint64_t(s), 16, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		auto h = blk->ln_1(m->wte(x) + m->wpe(torch::arange(16, torch::kLong)));
		sum += h.reshape({-1, 32}).to(torch::kDouble).pow(2).sum(0);
	}
	EXPECT_TRUE(torch::allclose(im.at("transformer.h.0.attn.c_attn.weight"), (sum / 48.0).to(torch::kFloat), 1e-5,
				    1e-7));
}
