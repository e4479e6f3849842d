// Attention variants: parameter counts, cache accounting, cached decoding = full forward,
// RoPE and reciprocal attention against hand computations, placement and bad input; the
// attention Fisher spectrum; multiple-choice scoring.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer.h"
#include "fim/attention_fisher.h"
#include "models/attention.h"
#include "models/gpt2.h"
#include "train/multiple_choice.h"

using namespace knlp;

static GPT2Config shape(int L, int H, int C, int T, int V, bool bias = true)
{
	GPT2Config c;
	c.n_layer = L, c.n_head = H, c.n_embd = C, c.block_size = T, c.vocab_raw = V;
	c.vocab_size = pad_vocab(V, 64);
	c.bias = bias;
	c.dropout = 0.0;
	c.fused_head_loss = false;
	return c;
}

static GPT2Config variant(GPT2Config c, const std::string &v, const std::string &where = "last", int ra = 1)
{
	HybridPlacement hp;
	hp.where = where;
	set_attention_variant(c, v, hp, ra, 1);
	c.validate();
	return c;
}

static const std::vector<std::string> k_variants = {"vanilla", "mla", "kvsplice", "hybrid", "ra", "gate", "ra-gate"};

TEST(Attention, Mla124MHasTheOriginalsParameterCount)
{
	// Vocabulary 50257 unpadded: 38,597,376 + 786,432 (positions) + 12 x 6,498,304 + 1,536.
	auto c = variant(shape(12, 12, 768, 1024, 50257), "mla");
	c.vocab_size = 50257;
	c.d_latent = 256;
	EXPECT_EQ(c.num_params(), 117364992);
	torch::manual_seed(0);
	GPT2 m(c);
	EXPECT_EQ(m->count_parameters(), 117364992);
}

TEST(Attention, ModuleCountsEqualTheAnalyticCountForEveryVariant)
{
	for (bool bias : {true, false})
		for (const auto &v : k_variants) {
			auto c = shape(6, 4, 64, 32, 100, bias);
			c.d_latent = 32;
			c.splice_dim = 16;
			c = variant(c, v, "last", 3);
			GPT2 m(c);
			EXPECT_EQ(m->count_parameters(), c.num_params()) << v << " bias " << bias;
		}
}

TEST(Attention, KVSpliceAttentionParametersByHand)
{
	// 124M shape: A 768x256 (no bias), W_cmp 256->128, LN 128, W_q 128->128, W_kv 128->256,
	// W_c2l 128->256, W_r 256->768 with bias.
	auto c = variant(shape(12, 12, 768, 1024, 50257), "kvsplice");
	c.d_latent = 256;
	c.splice_dim = 128;
	int64_t expect = 196608 + (32768 + 128) + 256 + (16384 + 128) + (32768 + 256) + (32768 + 256) + (196608 + 768);
	EXPECT_EQ(c.attention_params(0), expect);
	EXPECT_EQ(c.attention_params(0), 509696);
}

TEST(Attention, CacheValuesPerTokenFor124M)
{
	auto base = shape(12, 12, 768, 1024, 50257);
	base.d_latent = 256;
	base.splice_dim = 128;
	EXPECT_EQ(variant(base, "vanilla").cache_values_per_token(0), 1536);
	EXPECT_EQ(variant(base, "mla").cache_values_per_token(0), 256);
	EXPECT_EQ(variant(base, "kvsplice").cache_values_per_token(0), 128);
	auto hy = variant(base, "hybrid");
	EXPECT_EQ(hy.cache_values_per_token(), 8 * 256 + 4 * 128); // 2560 (7.2x vs 18432)
	for (int i = 0; i < 8; i++)
		EXPECT_EQ(hy.kind(i), AttnKind::MLA) << i;
	for (int i = 8; i < 12; i++)
		EXPECT_EQ(hy.kind(i), AttnKind::KVSplice) << i;
	EXPECT_NEAR(double(variant(base, "vanilla").cache_values_per_token()) / 2560.0, 7.2, 1e-12);
	// 12 layers x 1024 tokens x 2 bytes: 36 MiB standard, 6 MiB MLA.
	EXPECT_EQ(variant(base, "vanilla").cache_values_per_token() * 1024 * 2, 36 * 1024 * 1024);
	EXPECT_EQ(variant(base, "mla").cache_values_per_token() * 1024 * 2, 6 * 1024 * 1024);
	// RA layers 5, 6, 7 also keep one head's queries (64 values).
	auto ra = variant(base, "ra", "last", 3);
	EXPECT_EQ(ra.ra_layers, (std::vector<int>{5, 6, 7}));
	EXPECT_EQ(ra.cache_values_per_token(6), 1536 + 64);
	EXPECT_EQ(ra.cache_values_per_token(4), 1536);
}

TEST(Attention, HybridPlacements)
{
	auto base = shape(12, 2, 32, 16, 50);
	base.d_latent = 16;
	base.splice_dim = 8;
	auto kinds = [](const GPT2Config &c) {
		std::vector<int> s;
		for (int i = 0; i < c.n_layer; i++)
			if (c.kind(i) == AttnKind::KVSplice)
				s.push_back(i);
		return s;
	};
	EXPECT_EQ(kinds(variant(base, "hybrid", "last")), (std::vector<int>{8, 9, 10, 11}));
	EXPECT_EQ(kinds(variant(base, "hybrid", "first")), (std::vector<int>{0, 1, 2, 3}));
	HybridPlacement hp;
	hp.where = "list";
	hp.list = "2, 5 7";
	auto c = base;
	set_attention_variant(c, "hybrid", hp);
	EXPECT_EQ(kinds(c), (std::vector<int>{2, 5, 7}));
	// Fisher placement: the n lowest mean traces.
	std::string path = ::testing::TempDir() + "knlp_fisher_trace.json";
	{
		nlohmann::json j = {{"layers", nlohmann::json::array()}};
		double tr[12] = {0.9, 0.8, 0.1, 0.7, 0.6, 0.05, 0.5, 0.4, 0.3, 0.2, 0.95, 0.15};
		for (int i = 0; i < 12; i++)
			j["layers"].push_back({{"layer", i}, {"trace", tr[i]}});
		std::ofstream(path) << j.dump();
	}
	hp = {};
	hp.where = "fisher";
	hp.fisher_file = path;
	c = base;
	set_attention_variant(c, "hybrid", hp);
	EXPECT_EQ(kinds(c), (std::vector<int>{2, 5, 9, 11}));
}

TEST(Attention, BadShapesAreClearErrors)
{
	auto base = shape(4, 2, 32, 16, 50);
	base.d_latent = 24;
	base.splice_dim = 16; // 24 is not a multiple of 16
	try {
		variant(base, "kvsplice");
		FAIL() << "no error";
	} catch (const Error &e) {
		EXPECT_NE(std::string(e.what()).find("not divided evenly"), std::string::npos) << e.what();
	}
	base.d_latent = 32;
	try {
		variant(base, "ra", "last", 5); // 5 RA layers in a 4-layer model
		FAIL() << "no error";
	} catch (const Error &e) {
		EXPECT_NE(std::string(e.what()).find("CONFIG_GPT2_RA_LAYERS=5"), std::string::npos) << e.what();
	}
	auto two = shape(2, 2, 32, 16, 50);
	two.d_latent = 32;
	two.splice_dim = 16;
	try {
		variant(two, "hybrid"); // 2 / 3 = 0 layers
		FAIL() << "no error";
	} catch (const Error &e) {
		EXPECT_NE(std::string(e.what()).find("KVSplice on 0 layers"), std::string::npos) << e.what();
	}
	HybridPlacement hp;
	hp.where = "list";
	hp.list = "1 9";
	EXPECT_THROW(set_attention_variant(base, "hybrid", hp), Error);
	EXPECT_THROW(set_attention_variant(base, "bogus", {}), Error);
}

TEST(Attention, RopeGoldenValuesAndRelativePositions)
{
	// D = 4, base 10000: frequencies 1 and 0.01; x = e0 at position 1 -> (cos 1, 0, sin 1, 0).
	auto x = torch::zeros({1, 1, 1, 4}, torch::kDouble);
	x[0][0][0][0] = 1.0;
	auto y = apply_rope(x, 1, 10000.0);
	EXPECT_NEAR(y[0][0][0][0].item<double>(), std::cos(1.0), 1e-12);
	EXPECT_NEAR(y[0][0][0][1].item<double>(), 0.0, 1e-12);
	EXPECT_NEAR(y[0][0][0][2].item<double>(), std::sin(1.0), 1e-12);
	// e1 at position 3 turns by 0.03 rad into the fourth coordinate.
	x.zero_();
	x[0][0][0][1] = 1.0;
	y = apply_rope(x, 3, 10000.0);
	EXPECT_NEAR(y[0][0][0][1].item<double>(), std::cos(0.03), 1e-12);
	EXPECT_NEAR(y[0][0][0][3].item<double>(), std::sin(0.03), 1e-12);
	// q.k after RoPE depends only on the offset of the positions.
	torch::manual_seed(3);
	auto q = torch::randn({1, 1, 1, 16}, torch::kDouble), k = torch::randn({1, 1, 1, 16}, torch::kDouble);
	auto dot = [&](int pq, int pk) {
		return (apply_rope(q, pq, 1e4) * apply_rope(k, pk, 1e4)).sum().item<double>();
	};
	EXPECT_NEAR(dot(7, 3), dot(104, 100), 1e-10);
	EXPECT_GT(std::abs(dot(7, 3) - dot(7, 6)), 1e-6);
}

// Open the RA gate so that the reciprocal path is exercised.
static void open_ra(GPT2 &m, double rho)
{
	torch::NoGradGuard ng;
	for (auto &p : m->named_parameters())
		if (p.key().find("ra_rho") != std::string::npos)
			p.value().fill_(rho);
}

TEST(Attention, CachedDecodingEqualsTheFullForwardForEveryVariant)
{
	for (const auto &v : k_variants) {
		torch::manual_seed(11);
		auto c = shape(4, 4, 64, 32, 97);
		c.d_latent = 32;
		c.splice_dim = 16;
		c = variant(c, v, "last", 2);
		GPT2 m(c);
		open_ra(m, 0.7);
		m->eval();
		torch::NoGradGuard ng;
		auto x = torch::randint(0, 97, {2, 20}, torch::kLong);
		auto full = m->forward_all(x);
		KVCache cache;
		auto pre = m->forward_cached(x.narrow(1, 0, 7), cache); // prefill 7
		EXPECT_TRUE(torch::allclose(pre, full.narrow(1, 0, 7), 1e-5, 1e-5)) << v;
		auto chunk = m->forward_cached(x.narrow(1, 7, 3), cache); // a 3-token chunk
		EXPECT_TRUE(torch::allclose(chunk, full.narrow(1, 7, 3), 1e-5, 1e-5)) << v;
		for (int t = 10; t < 20; t++) {
			auto step = m->forward_cached(x.narrow(1, t, 1), cache);
			double err = (step - full.narrow(1, t, 1)).abs().max().item<double>();
			EXPECT_LT(err, 1e-5) << v << " position " << t;
		}
		// Measured cache bytes = analytic values x tokens x batch x 4 bytes.
		EXPECT_EQ(cache.length(), 20);
		EXPECT_EQ(cache.bytes(), c.cache_values_per_token() * 20 * 2 * 4) << v;
	}
}

TEST(Attention, EveryVariantIsCausalAndEveryParameterLearns)
{
	for (const auto &v : k_variants) {
		torch::manual_seed(5);
		auto c = shape(3, 2, 32, 16, 50);
		c.d_latent = 16;
		c.splice_dim = 8;
		c = variant(c, v, "last", 1);
		GPT2 m(c);
		open_ra(m, 0.5);
		auto x = torch::randint(0, 50, {2, 16}, torch::kLong);
		{
			torch::NoGradGuard ng;
			auto a = m->forward_all(x);
			auto x2 = x.clone();
			x2.narrow(1, 10, 6).random_(0, 50);
			auto b = m->forward_all(x2);
			EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 10), b.narrow(1, 0, 10), 1e-6, 1e-6)) << v;
		}
		// No dead parameters: every tensor gets a non-zero gradient.
		auto y = torch::randint(0, 50, {2, 16}, torch::kLong);
		m->forward(x, y).loss.backward();
		for (auto &p : m->named_parameters()) {
			ASSERT_TRUE(p.value().grad().defined()) << v << " " << p.key();
			EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << v << " " << p.key();
		}
	}
}

TEST(Attention, ReciprocalAttentionMatchesAHandComputation)
{
	torch::manual_seed(9);
	auto c = variant(shape(1, 2, 8, 6, 20), "ra", "last", 1); // layer 0 is RA, last head reciprocal
	StandardAttentionImpl att(c, 0);
	{
		torch::NoGradGuard ng;
		att.ra_rho.fill_(0.8);
		for (auto &p : att.parameters())
			if (p.dim() == 2 || p.numel() == 8)
				p.normal_(0.0, 0.5);
	}
	att.eval();
	torch::NoGradGuard ng;
	const int T = 6, C = 8, D = 4;
	auto x = torch::randn({1, T, C});
	auto bias = torch::triu(torch::full({T, T}, -INFINITY), 1);
	auto out = att.forward(x, bias, 0, nullptr, nullptr);
	// By hand: per-row loops.
	auto qkv = torch::addmm(att.c_attn->bias, x[0], att.c_attn->weight.t()); // [T, 3C]
	auto q = qkv.narrow(1, 0, C), k = qkv.narrow(1, C, C), v = qkv.narrow(1, 2 * C, C);
	auto y = torch::zeros({T, C});
	auto yr = torch::zeros({T, D});
	for (int h = 0; h < 2; h++)
		for (int i = 0; i < T; i++) {
			std::vector<double> s(size_t(i + 1)), sr(size_t(i + 1));
			double mx = -1e300, mxr = -1e300;
			for (int j = 0; j <= i; j++) {
				s[size_t(j)] =
					(q[i].narrow(0, h * D, D) * k[j].narrow(0, h * D, D)).sum().item<double>() /
					2.0;
				sr[size_t(j)] =
					(k[i].narrow(0, D, D) * q[j].narrow(0, D, D)).sum().item<double>() / 2.0;
				mx = std::max(mx, s[size_t(j)]), mxr = std::max(mxr, sr[size_t(j)]);
			}
			double z = 0, zr = 0;
			for (int j = 0; j <= i; j++)
				z += std::exp(s[size_t(j)] - mx), zr += std::exp(sr[size_t(j)] - mxr);
			for (int j = 0; j <= i; j++) {
				y[i].narrow(0, h * D, D) += std::exp(s[size_t(j)] - mx) / z * v[j].narrow(0, h * D, D);
				if (h == 1)
					yr[i] += std::exp(sr[size_t(j)] - mxr) / zr * v[j].narrow(0, D, D);
			}
		}
	auto r = torch::addmm(att.ra_proj->bias, yr, att.ra_proj->weight.t());
	r = torch::layer_norm(r, {C}, att.ln_ra->weight, att.ln_ra->bias, 1e-5);
	auto expect = torch::addmm(att.c_proj->bias, y + std::tanh(0.8) * r, att.c_proj->weight.t());
	EXPECT_TRUE(torch::allclose(out[0], expect, 1e-5, 1e-5)) << (out[0] - expect).abs().max().item<double>();
}

TEST(Attention, GateAndClosedRAStartAsSimpleFunctionsOfVanilla)
{
	// rho = 0: an RA model computes exactly what the vanilla model with the same weights does.
	torch::manual_seed(4);
	auto c = shape(2, 2, 16, 8, 30);
	GPT2 van(c);
	auto cr = variant(c, "ra", "last", 1);
	GPT2 ra(cr);
	{
		torch::NoGradGuard ng;
		auto src = van->named_parameters();
		for (auto &p : ra->named_parameters())
			if (src.contains(p.key()))
				p.value().copy_(src[p.key()]);
	}
	torch::NoGradGuard ng;
	auto x = torch::randint(0, 30, {1, 8}, torch::kLong);
	EXPECT_TRUE(torch::allclose(van->forward_all(x), ra->forward_all(x), 1e-6, 1e-6));
	open_ra(ra, 0.5);
	EXPECT_FALSE(torch::allclose(van->forward_all(x), ra->forward_all(x), 1e-4, 1e-4));
}

TEST(AttentionFisher, TraceIdentityAndUniformCausalAttention)
{
	// Uniform causal attention: row i puts 1/(i+1) on keys 0..i, ||p_i||^2 = 1/(i+1).
	const int T = 10;
	auto p = torch::zeros({1, 1, T, T}, torch::kDouble);
	double expect = 0;
	for (int i = 0; i < T; i++) {
		p[0][0][i].narrow(0, 0, i + 1).fill_(1.0 / (i + 1));
		expect += 1.0 - 1.0 / (i + 1);
	}
	expect /= T; // 1 - H_10 / 10
	auto s = attention_spectrum(p, 0, 0, 1);
	ASSERT_EQ(s.size(), 1u);
	EXPECT_NEAR(s[0].trace, expect, 1e-12);
	EXPECT_NEAR(s[0].trace, 1.0 - 7381.0 / 2520.0 / 10.0, 1e-12);
	// F 1 = 0: the smallest eigenvalue is 0 up to rounding; eigenvalues sum to the trace.
	EXPECT_NEAR(s[0].eigmin, 0.0, 1e-12);
	double top_sum = 0;
	for (double e : s[0].top)
		top_sum += e;
	EXPECT_NEAR(s[0].energy8, top_sum / s[0].trace, 1e-9);
	// Random softmax rows, a sample of 64: trace = 1 - mean ||p||^2 over exactly those rows.
	torch::manual_seed(2);
	auto logits = torch::randn({2, 3, 50, 50}, torch::kDouble) * 2;
	auto mask = torch::triu(torch::full({50, 50}, -INFINITY, torch::kDouble), 1);
	auto probs = torch::softmax(logits + mask, -1);
	auto heads = attention_spectrum(probs, 4, 64, 7);
	ASSERT_EQ(heads.size(), 3u);
	auto all = attention_spectrum(probs, 4, 0, 7);
	for (int h = 0; h < 3; h++) {
		auto rows = probs.select(1, h).reshape({100, 50});
		double full_trace = 1.0 - rows.pow(2).sum(1).mean().item<double>();
		EXPECT_NEAR(all[size_t(h)].trace, full_trace, 1e-12);
		EXPECT_GT(heads[size_t(h)].trace, 0.0);
		EXPECT_LT(heads[size_t(h)].trace, 1.0);
		EXPECT_EQ(heads[size_t(h)].layer, 4);
		EXPECT_EQ(heads[size_t(h)].top.size(), 8u);
		EXPECT_GE(heads[size_t(h)].energy16, heads[size_t(h)].energy8);
	}
	EXPECT_EQ(spectrum_layers(12, false), (std::vector<int>{0, 6, 11}));
	EXPECT_EQ(spectrum_layers(1, false), (std::vector<int>{0}));
	EXPECT_EQ(spectrum_layers(3, true).size(), 3u);
}

TEST(AttentionFisher, ModelProbabilitiesAreCausalSoftmaxRows)
{
	for (const auto &v : k_variants) {
		torch::manual_seed(1);
		auto c = shape(3, 2, 32, 12, 40);
		c.d_latent = 16;
		c.splice_dim = 8;
		c = variant(c, v, "last", 1);
		GPT2 m(c);
		m->eval();
		auto x = torch::randint(0, 40, {2, 12}, torch::kLong);
		auto pr = m->attention_probs(x, {2, 0});
		ASSERT_EQ(pr.size(), 2u);
		int heads = c.kind(2) == AttnKind::KVSplice ? 1 : 2;
		EXPECT_EQ(pr[0].sizes(), (std::vector<int64_t>{2, heads, 12, 12})) << v;
		EXPECT_TRUE(torch::allclose(pr[0].sum(-1), torch::ones({2, heads, 12}), 1e-5, 1e-5)) << v;
		EXPECT_EQ(torch::triu(pr[1], 1).abs().max().item<float>(), 0.0f) << v;
	}
}

// A hand-made "model": log-probabilities from a table over byte pairs.
TEST(MultipleChoice, ScoresSummedLogProbabilitiesAndNormalisesByBytes)
{
	auto tok = make_byte_tokenizer();
	// Every next byte costs -1, except 'a' (-0.1) and 'z' (-3).
	TokenLogprobs lp = [](const std::vector<uint32_t> &t) {
		std::vector<double> out;
		for (size_t i = 1; i < t.size(); i++)
			out.push_back(t[i] == 'a' ? -0.1 : t[i] == 'z' ? -3.0 : -1.0);
		return out;
	};
	MCItem it;
	it.ctx = "ctx";
	it.endings = {"zz", "aaaa", "bbbbbbbbbb", "a"};
	it.label = 1;
	auto s = score_item(it, *tok, lp, 1024);
	// Each ending is preceded by a joining space (-1).
	EXPECT_NEAR(s.logprob[0], -1 - 6.0, 1e-12);
	EXPECT_NEAR(s.logprob[1], -1 - 0.4, 1e-12);
	EXPECT_NEAR(s.logprob[2], -1 - 10.0, 1e-12);
	EXPECT_NEAR(s.logprob[3], -1 - 0.1, 1e-12);
	EXPECT_EQ(s.pred, 3);	   // -1.1 is the largest sum
	EXPECT_EQ(s.pred_norm, 1); // -1.4 / 4 = -0.35 beats -1.1 / 1
	EXPECT_EQ(s.bytes, (std::vector<size_t>{2, 4, 10, 1}));
	auto r = score_items({it, it}, *tok, lp, 1024);
	EXPECT_EQ(r.n, 2);
	EXPECT_DOUBLE_EQ(r.acc, 0.0);
	EXPECT_DOUBLE_EQ(r.acc_norm, 1.0);
	EXPECT_EQ(joined_ending("a ", "b"), "b");
	EXPECT_EQ(joined_ending("a", " b"), " b");
	EXPECT_EQ(joined_ending("a", "b"), " b");
}

TEST(MultipleChoice, JsonlParsingAndErrorsWithLineNumbers)
{
	auto items = parse_mc_jsonl("{\"ctx\": \"A man\", \"endings\": [\"x\", \"y\", \"z\", \"w\"], \"label\": 2}\n\n"
				    "{\"ctx\": \"B\", \"endings\": [\"p\", \"q\"], \"label\": \"1\", \"ind\": 4}\n",
				    "hs.jsonl");
	ASSERT_EQ(items.size(), 2u);
	EXPECT_EQ(items[0].label, 2);
	EXPECT_EQ(items[1].label, 1);
	EXPECT_EQ(items[1].line, 3);
	auto err = [](const std::string &text) {
		try {
			parse_mc_jsonl(text, "hs.jsonl");
		} catch (const Error &e) {
			return std::string(e.what());
		}
		return std::string("no error");
	};
	const std::string good = "{\"ctx\": \"c\", \"endings\": [\"a\", \"b\"], \"label\": 0}\n";
	EXPECT_EQ(err(good + good + "{\"ctx\": \"c\", \"endings\": [\"a\", \"b\"], \"lab"),
		  "hs.jsonl:3: not a JSON object");
	EXPECT_EQ(err(good + "{\"endings\": [\"a\", \"b\"], \"label\": 0}"),
		  "hs.jsonl:2: missing string field \"ctx\"");
	EXPECT_EQ(err("{\"ctx\": \"c\", \"endings\": [\"a\", \"b\"], \"label\": 2}"),
		  "hs.jsonl:1: label 2 is outside the 2 endings");
	EXPECT_EQ(err("{\"ctx\": \"c\", \"endings\": [\"a\"], \"label\": 0}"),
		  "hs.jsonl:1: \"endings\" must be an array of at least two strings");
	EXPECT_EQ(err(""), "hs.jsonl: no examples");
}
