// Imported Llama-family models: parameter counts, Hugging Face folders written here (sharded,
// bf16, tied), KV-cached decoding against the full forward, the loss in chunks against a
// plain cross-entropy, and the errors for bad folders.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/fsutil.h"
#include "core/rng.h"
#include "data/tokens.h"
#include "fim/fisher.h"
#include "core/safetensors.h"
#include "models/hf.h"
#include "models/llama.h"
#include "testutil.h"

using namespace knlp;
using json = nlohmann::json;

namespace {

struct Spec {
	std::string arch = "Qwen2ForCausalLM";
	int64_t vocab = 97, hidden = 32, inter = 48, layers = 2, heads = 4, kv = 2, ctx = 64;
	bool tied = false;
	torch::ScalarType dtype = torch::kFloat;
	int shards = 1;
};

// A random model folder in Hugging Face's layout; returns the tensors written (float32).
std::map<std::string, torch::Tensor> write_model(const std::string &dir, const Spec &s)
{
	make_dirs(dir);
	torch::manual_seed(7);
	std::map<std::string, torch::Tensor> w;
	const int64_t D = s.hidden / s.heads, C = s.hidden;
	bool qwen = s.arch == "Qwen2ForCausalLM";
	w["model.embed_tokens.weight"] = torch::randn({s.vocab, C});
	for (int64_t l = 0; l < s.layers; l++) {
		std::string p = "model.layers." + std::to_string(l) + ".";
		w[p + "input_layernorm.weight"] = 1 + 0.1 * torch::randn({C});
		w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch::randn({C});
		w[p + "self_attn.q_proj.weight"] = 0.3 * torch::randn({s.heads * D, C});
		w[p + "self_attn.k_proj.weight"] = 0.3 * torch::randn({s.kv * D, C});
		w[p + "self_attn.v_proj.weight"] = 0.2 * torch::randn({s.kv * D, C});
		w[p + "self_attn.o_proj.weight"] = 0.1 * torch::randn({C, s.heads * D});
		if (qwen) {
			w[p + "self_attn.q_proj.bias"] = 0.1 * torch::randn({s.heads * D});
			w[p + "self_attn.k_proj.bias"] = 0.1 * torch::randn({s.kv * D});
			w[p + "self_attn.v_proj.bias"] = 0.1 * torch::randn({s.kv * D});
		}
		w[p + "mlp.gate_proj.weight"] = 0.2 * torch::randn({s.inter, C});
		w[p + "mlp.up_proj.weight"] = 0.2 * torch::randn({s.inter, C});
		w[p + "mlp.down_proj.weight"] = 0.1 * torch::randn({C, s.inter});
	}
	w["model.norm.weight"] = 1 + 0.1 * torch::randn({C});
	if (!s.tied)
		w["lm_head.weight"] = 0.5 * torch::randn({s.vocab, C});
	std::string dt = s.dtype == torch::kFloat ? "F32" : s.dtype == torch::kBFloat16 ? "BF16" : "F16";
	std::vector<std::pair<std::string, torch::Tensor>> items;
	for (auto &[n, t] : w) {
		t = t.to(s.dtype).contiguous();
		items.emplace_back(n, t);
		t = t.to(torch::kFloat);
	}
	json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
	size_t per = (items.size() + s.shards - 1) / s.shards;
	for (int k = 0; k < s.shards; k++) {
		std::string file = s.shards == 1 ? "model.safetensors"
						 : fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, s.shards);
		std::vector<TensorView> views;
		for (size_t i = k * per; i < std::min(items.size(), (k + 1) * per); i++) {
			const auto &t = items[i].second;
			views.push_back({items[i].first, dt, t.sizes().vec(), t.data_ptr(), uint64_t(t.nbytes())});
			index["weight_map"][items[i].first] = file;
		}
		write_safetensors(join_path(dir, file), views);
	}
	if (s.shards > 1)
		write_file_atomic(join_path(dir, "model.safetensors.index.json"), index.dump());
	json cfg = {{"architectures", {s.arch}},     {"vocab_size", s.vocab},
		    {"hidden_size", s.hidden},	     {"intermediate_size", s.inter},
		    {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads},
		    {"num_key_value_heads", s.kv},   {"max_position_embeddings", s.ctx},
		    {"rope_theta", 10000.0},	     {"rms_norm_eps", 1e-6},
		    {"hidden_act", "silu"},	     {"tie_word_embeddings", s.tied}};
	write_file_atomic(join_path(dir, "config.json"), cfg.dump());
	return w;
}

} // namespace

TEST(Llama, ParameterCountsAreExact)
{
	// Qwen2.5-0.5B's shape: 494,032,768 parameters (tied), as its model card states.
	LlamaConfig c;
	c.vocab = 151936, c.hidden = 896, c.intermediate = 4864, c.n_layer = 24, c.n_head = 14, c.n_kv_head = 2;
	c.head_dim = 64, c.tied = true, c.qkv_bias = true;
	EXPECT_EQ(c.num_params(), 494032768);
	// Llama-3.2-1B: 1,235,814,400 (tied, no biases).
	LlamaConfig l;
	l.vocab = 128256, l.hidden = 2048, l.intermediate = 8192, l.n_layer = 16, l.n_head = 32, l.n_kv_head = 8;
	l.head_dim = 64, l.tied = true;
	EXPECT_EQ(l.num_params(), 1235814400);
	EXPECT_EQ(l.cache_values_per_token(), 2 * 16 * 8 * 64);
}

TEST(Llama, CachedDecodingEqualsTheFullForward)
{
	for (bool tied : {false, true}) {
		test::TempDir d;
		Spec s;
		s.tied = tied;
		s.shards = tied ? 2 : 1;
		auto w = write_model(d.path, s);
		HfCheckpoint ck(d.path);
		LlamaConfig c = llama_config_from(ck);
		EXPECT_EQ(c.arch, "qwen2");
		EXPECT_EQ(c.tied, tied);
		Llama m(c, ck);
		int64_t n = 0;
		for (auto &[name, t] : m->named_weights())
			n += t.numel();
		EXPECT_EQ(n, c.num_params());
		EXPECT_EQ(size_t(n), [&] {
			size_t k = 0;
			for (auto &[name, t] : w)
				k += size_t(t.numel());
			return k;
		}());
		torch::NoGradGuard ng;
		auto idx = torch::randint(0, s.vocab, {1, 12}, torch::kLong);
		auto full = m->logits(idx); // [1, 12, V]
		LlamaCache cache;
		auto first = m->forward_cached(idx.narrow(1, 0, 5), cache);
		EXPECT_TRUE(torch::allclose(first, full[0][4].unsqueeze(0), 1e-4, 1e-4));
		for (int64_t t = 5; t < 12; t++) {
			auto step = m->forward_cached(idx.narrow(1, t, 1), cache);
			EXPECT_TRUE(torch::allclose(step, full[0][t].unsqueeze(0), 1e-4, 1e-4)) << "position " << t;
		}
		// Grouped-query: the cache holds the kv heads only.
		EXPECT_EQ(cache.bytes(), 12 * c.cache_values_per_token() * 4);
		// The chunked loss equals a plain cross-entropy over the whole logits.
		auto y = torch::randint(0, s.vocab, {1, 12}, torch::kLong);
		y[0][3] = -1;
		auto [sum, count] = m->loss_sum(idx, y);
		auto want = torch::nn::functional::cross_entropy(
			full.view({-1, s.vocab}), y.view({-1}),
			torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1).reduction(torch::kSum));
		EXPECT_EQ(count, 11);
		EXPECT_NEAR(sum.item<double>(), want.item<double>(), 1e-3);
	}
}

TEST(Llama, Bf16WeightsStayBf16AndMapped)
{
	test::TempDir d;
	Spec s;
	s.dtype = torch::kBFloat16;
	s.arch = "LlamaForCausalLM";
	write_model(d.path, s);
	HfCheckpoint ck(d.path);
	EXPECT_EQ(ck.dtype(), "BF16");
	Llama m(llama_config_from(ck), ck);
	for (auto &[name, t] : m->named_weights())
		EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << name;
	EXPECT_EQ(ck.weight_bytes(), uint64_t(m->config().num_params()) * 2);
}

TEST(Llama, BadFoldersAreReported)
{
	test::TempDir d;
	Spec s;
	write_model(d.path, s);
	auto err = [&] {
		return test::error_of([&] {
			HfCheckpoint ck(d.path);
			Llama m(llama_config_from(ck), ck);
		});
	};
	std::string cfg = read_file(join_path(d.path, "config.json"));
	auto edit = [&](const std::function<void(json &)> &f) {
		json j = json::parse(cfg);
		f(j);
		write_file_atomic(join_path(d.path, "config.json"), j.dump());
	};
	edit([](json &j) { j["architectures"] = {"MistralForCausalLM"}; });
	EXPECT_NE(err().find("architecture MistralForCausalLM is not supported (knlp supports GPT2LMHeadModel, "
			     "LlamaForCausalLM, Qwen2ForCausalLM)"),
		  std::string::npos);
	edit([](json &j) { j["num_key_value_heads"] = 3; });
	EXPECT_NE(err().find("num_attention_heads 4 is not a multiple of num_key_value_heads 3"), std::string::npos)
		<< err();
	edit([](json &j) { j["hidden_size"] = 0; });
	EXPECT_NE(err().find("hidden_size = 0 is outside [1, 65536]"), std::string::npos) << err();
	edit([](json &j) { j["intermediate_size"] = 50; });
	EXPECT_NE(err().find("tensor model.layers.0.mlp.gate_proj.weight has shape [48,32] where config.json implies "
			     "[50,32]"),
		  std::string::npos)
		<< err();
	edit([](json &j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
	EXPECT_NE(err().find("rope_scaling type 'yarn' is not supported"), std::string::npos) << err();
	edit([](json &) {});
	// A truncated weights file.
	std::string st = read_file(join_path(d.path, "model.safetensors"));
	write_file_atomic(join_path(d.path, "model.safetensors"), st.substr(0, st.size() - 100));
	EXPECT_NE(err().find("data offsets outside the file (truncated file?)"), std::string::npos) << err();
	// A shard index that points at a missing file.
	test::TempDir e;
	s.shards = 2;
	write_model(e.path, s);
	std::remove(join_path(e.path, "model-00002-of-00002.safetensors").c_str());
	EXPECT_NE(test::error_of([&] {
			  HfCheckpoint ck(e.path);
		  }).find("shard model-00002-of-00002.safetensors listed for tensor"),
		  std::string::npos);
}

TEST(Llama, FisherThroughTheTapsEqualsPlainAutograd)
{
	for (bool tied : {false, true}) {
		test::TempDir d;
		Spec s;
		s.tied = tied;
		write_model(d.path, s);
		// A token file of 400 ids.
		std::string bytes;
		Rng rng(3);
		for (int i = 0; i < 400; i++) {
			uint16_t v = static_cast<uint16_t>(rng.below(uint64_t(s.vocab)));
			bytes.append(reinterpret_cast<const char *>(&v), 2);
		}
		write_file_atomic(join_path(d.path, "val.bin"), bytes);
		TokenFile data(join_path(d.path, "val.bin"), int(s.vocab));
		HfCheckpoint ck(d.path);
		LlamaConfig c = llama_config_from(ck);
		Llama m(c, ck);
		FisherOptions o;
		o.chunks = 3;
		o.seq = 16;
		o.progress = false;
		auto r = compute_fisher(m, data, o);
		// Plain autograd on float32 copies: the mean over windows of the squared gradient of
		// the mean window loss.
		Llama ref(c, ck, true);
		auto named = ref->named_weights();
		for (auto &[n, t] : named)
			t.requires_grad_(true);
		std::map<std::string, torch::Tensor> want;
		for (int w = 0; w < o.chunks; w++) {
			std::vector<int64_t> x(16), y(16);
			data.window(uint64_t(r.starts[size_t(w)]), 16, x.data(), y.data());
			auto logits = ref->logits(torch::tensor(x).view({1, 16}));
			auto loss = torch::nn::functional::cross_entropy(logits.view({16, -1}), torch::tensor(y));
			std::vector<torch::Tensor> ps;
			for (auto &[n, t] : named)
				ps.push_back(t);
			auto g = torch::autograd::grad({loss}, ps, {}, false, false, true);
			for (size_t i = 0; i < named.size(); i++) {
				auto sq = g[i].defined() ? g[i] * g[i] : torch::zeros_like(named[i].second);
				want[named[i].first] = want.count(named[i].first) ? want[named[i].first] + sq : sq;
			}
		}
		ASSERT_EQ(r.names.size(), named.size());
		for (auto &[n, t] : want) {
			auto got = r.empirical.at(n);
			auto expect = t / double(o.chunks);
			EXPECT_TRUE(torch::allclose(got, expect, 1e-4, 1e-9 + 1e-4 * expect.abs().max().item<double>()))
				<< n << (tied ? " (tied)" : "") << ": max difference "
				<< (got - expect).abs().max().item<double>() << " of "
				<< expect.abs().max().item<double>();
		}
		// The true Fisher: finite, non-negative, not the empirical one.
		for (auto &[n, t] : r.true_fisher) {
			EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << n;
			EXPECT_GE(t.min().item<double>(), 0) << n;
		}
		EXPECT_FALSE(
			torch::allclose(r.true_fisher.at("model.norm.weight"), r.empirical.at("model.norm.weight")));
	}
}

TEST(Llama, ImatrixIsTheMeanSquaredInputOfEachLinear)
{
	test::TempDir d;
	Spec s;
	write_model(d.path, s);
	std::string bytes;
	Rng rng(5);
	for (int i = 0; i < 200; i++) {
		uint16_t v = static_cast<uint16_t>(rng.below(uint64_t(s.vocab)));
		bytes.append(reinterpret_cast<const char *>(&v), 2);
	}
	write_file_atomic(join_path(d.path, "val.bin"), bytes);
	TokenFile data(join_path(d.path, "val.bin"), int(s.vocab));
	HfCheckpoint ck(d.path);
	Llama m(llama_config_from(ck), ck);
	auto im = collect_imatrix(m, data, 3, 10);
	// Layer 0's q, k and v see the RMS-normed embedding: computed here by hand.
	auto E = ck.get("model.embed_tokens.weight", {s.vocab, s.hidden}, true);
	auto g = ck.get("model.layers.0.input_layernorm.weight", {s.hidden}, true);
	torch::Tensor sum = torch::zeros({s.hidden});
	uint64_t span = data.size() - 10 - 1;
	for (int w = 0; w < 3; w++) {
		std::vector<int64_t> x(10), y(10);
		data.window(span * uint64_t(w) / 2, 10, x.data(), y.data());
		auto e = E.index_select(0, torch::tensor(x));
		auto h = g * (e * torch::rsqrt(e.pow(2).mean(-1, true) + 1e-6));
		sum += h.pow(2).sum(0);
	}
	auto want = sum / 30.0;
	for (const char *n : {"q_proj", "k_proj", "v_proj"})
		EXPECT_TRUE(torch::allclose(im.at(std::string("model.layers.0.self_attn.") + n + ".weight"), want, 1e-4,
					    1e-6))
			<< n;
	EXPECT_EQ(im.size(), size_t(2 * 7 + 1)); // seven linears a layer, and the untied head
	EXPECT_EQ(im.at("lm_head.weight").size(0), s.hidden);
	EXPECT_EQ(im.at("model.layers.1.mlp.down_proj.weight").size(0), s.inter);
}
