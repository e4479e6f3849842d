#include "core/parallel.h"
#include "train/export.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "train/loop.h"
#include "core/fsutil.h"
#include "data/tokens.h"
#include "train/checkpoint.h"
#include "core/safetensors.h"
#include "data/tokenizer.h"
#include "quant/gguf.h"
#include "core/run.h"
#include "fim/fisher.h"
#include "models/hf.h"
#include "models/observer.h"

namespace knlp {

GPT2 load_hf_gpt2(const HfCheckpoint &ck)
{
	if (ck.architecture() != "GPT2LMHeadModel")
		fail("{}: a {} folder; this command takes knlp runs and GPT2LMHeadModel folders (eval and sample "
		     "also take LlamaForCausalLM and Qwen2ForCausalLM)",
		     ck.dir(), ck.architecture());
	const auto &j = ck.config();
	GPT2Config mc;
	mc.n_layer = static_cast<int>(hf_int(ck, "n_layer", 1, 1024));
	mc.n_head = static_cast<int>(hf_int(ck, "n_head", 1, 1024));
	mc.n_embd = static_cast<int>(hf_int(ck, "n_embd", 1, 1 << 16));
	mc.block_size =
		static_cast<int>(hf_int_or(ck, "n_positions", hf_int_or(ck, "n_ctx", 1024, 1, 1 << 20), 1, 1 << 20));
	mc.vocab_size = mc.vocab_raw = static_cast<int>(hf_int(ck, "vocab_size", 1, 1 << 24));
	if (mc.n_embd % mc.n_head)
		fail("{}: n_embd {} is not a multiple of n_head {}", ck.config_path(), mc.n_embd, mc.n_head);
	mc.dropout = 0;
	mc.bias = true;
	std::string act = j.value("activation_function", "gelu_new");
	if (act == "gelu_new" || act == "gelu_pytorch_tanh")
		mc.gelu = Gelu::Tanh;
	else if (act == "gelu")
		mc.gelu = Gelu::Erf;
	else
		fail("{}: activation_function '{}' is not supported (knlp supports gelu_new and gelu)",
		     ck.config_path(), act);
	double eps = hf_double_or(ck, "layer_norm_epsilon", 1e-5, 0, 1);
	if (eps != 1e-5)
		fail("{}: layer_norm_epsilon {} is not supported (knlp's GPT-2 uses 1e-5)", ck.config_path(), eps);
	if (j.contains("n_inner") && !j["n_inner"].is_null() && j["n_inner"] != 4 * mc.n_embd)
		fail("{}: n_inner {} is not supported (knlp's GPT-2 MLP is 4 x n_embd)", ck.config_path(),
		     j["n_inner"].dump());
	if (!j.value("tie_word_embeddings", true))
		fail("{}: untied GPT-2 heads are not supported", ck.config_path());
	for (const char *k : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
		if (j.value(k, false))
			fail("{}: {} is not supported", ck.config_path(), k);
	mc.validate();
	GPT2 model(mc);
	// Files name tensors with or without the "transformer." prefix.
	const std::string pre = ck.has("transformer.wte.weight") ? "transformer." : "";
	torch::NoGradGuard ng;
	for (auto &p : model->named_parameters()) {
		std::string name = p.key();
		if (name.rfind("transformer.", 0) == 0)
			name = name.substr(12);
		bool conv1d = name.find(".weight") != std::string::npos &&
			      (name.find("c_attn") != std::string::npos || name.find("c_proj") != std::string::npos ||
			       name.find("c_fc") != std::string::npos);
		auto shape = p.value().sizes().vec();
		if (conv1d)
			std::swap(shape[0], shape[1]);
		auto t = ck.get(pre + name, shape).to(torch::kFloat);
		p.value().copy_(conv1d ? t.t() : t);
	}
	model->eval();
	return model;
}

GPT2 load_model(const std::string &ckpt_dir, torch::Device dev, Config *cfg_out)
{
	if (is_hf_model_dir(ckpt_dir)) {
		GPT2 model = load_hf_gpt2(HfCheckpoint(ckpt_dir));
		model->to(dev);
		if (cfg_out) {
			// No run configuration: the defaults, without a data folder (commands ask for --data).
			*cfg_out = Config();
			cfg_out->set("DATA_DIR=\"\"", ckpt_dir);
		}
		return model;
	}
	auto st = read_checkpoint_state(ckpt_dir);
	if (!st.contains("config") || !st["config"].is_string())
		fail("{}: checkpoint state has no configuration", join_path(ckpt_dir, "state.json"));
	Config cfg =
		Config::parse(st["config"].get<std::string>(), join_path(ckpt_dir, "state.json"), Config::Mode::Saved);
	if (family_name(cfg.settings()) != "gpt2")
		fail("{}: a checkpoint of an image model; this command works on GPT-2 runs (image runs report test "
		     "accuracy in training_metrics.json)",
		     ckpt_dir);
	DataMeta meta = read_data_meta(cfg.settings().data.dir);
	int vocab = meta.present ? meta.vocab_size : 0;
	if (st.contains("vocab_raw"))
		vocab = st["vocab_raw"].get<int>();
	GPT2Config mc = GPT2Config::from(cfg.settings(), vocab);
	GPT2 model(mc);
	load_tensors(join_path(ckpt_dir, "model.safetensors"), named_parameters_of(*model));
	model->to(dev);
	model->eval();
	if (cfg_out)
		*cfg_out = cfg;
	return model;
}

std::string data_dir_for(const Config &cfg, const std::string &given, const std::string &ckpt)
{
	if (!given.empty())
		return given;
	if (is_hf_model_dir(ckpt))
		fail("{}: a Hugging Face folder has no token data of its own; pass --data DIR (from `knlp prepare "
		     "--tokenizer {}`)",
		     ckpt, ckpt);
	return cfg.settings().data.dir;
}

void export_hf(GPT2 &model, const std::string &out_dir)
{
	const auto &c = model->config();
	if (!c.vanilla())
		fail("export: the Hugging Face GPT-2 layout holds only vanilla attention; this model uses '{}' "
		     "attention",
		     c.variant);
	make_dirs(out_dir);
	std::vector<NamedTensor> out;
	auto cpu = [](const torch::Tensor &t) { return t.detach().to(torch::kCPU).contiguous(); };
	for (auto &p : model->named_parameters()) {
		std::string name = p.key();
		const std::string pre = "transformer.";
		if (name.rfind(pre, 0) == 0)
			name = name.substr(pre.size());
		auto t = cpu(p.value());
		bool conv1d = name.find(".weight") != std::string::npos &&
			      (name.find("c_attn") != std::string::npos || name.find("c_proj") != std::string::npos ||
			       name.find("c_fc") != std::string::npos);
		if (conv1d)
			t = t.t().contiguous();
		out.push_back({name, t});
	}
	if (!c.bias) {
		// HF's GPT-2 always has biases; zeros are exactly equivalent.
		for (int i = 0; i < c.n_layer; i++) {
			std::string h = "h." + std::to_string(i) + ".";
			out.push_back({h + "ln_1.bias", torch::zeros({c.n_embd})});
			out.push_back({h + "ln_2.bias", torch::zeros({c.n_embd})});
			out.push_back({h + "attn.c_attn.bias", torch::zeros({3 * c.n_embd})});
			out.push_back({h + "attn.c_proj.bias", torch::zeros({c.n_embd})});
			out.push_back({h + "mlp.c_fc.bias", torch::zeros({4 * c.n_embd})});
			out.push_back({h + "mlp.c_proj.bias", torch::zeros({c.n_embd})});
		}
		out.push_back({"ln_f.bias", torch::zeros({c.n_embd})});
	}
	save_tensors(join_path(out_dir, "model.safetensors"), out, {{"format", "pt"}});
	nlohmann::json cfg = {
		{"architectures", {"GPT2LMHeadModel"}},
		{"model_type", "gpt2"},
		{"vocab_size", c.vocab_size},
		{"n_positions", c.block_size},
		{"n_ctx", c.block_size},
		{"n_embd", c.n_embd},
		{"n_layer", c.n_layer},
		{"n_head", c.n_head},
		{"n_inner", nullptr},
		{"activation_function", c.gelu == Gelu::Erf ? "gelu" : "gelu_new"},
		{"resid_pdrop", c.dropout},
		{"embd_pdrop", c.dropout},
		{"attn_pdrop", c.dropout},
		{"layer_norm_epsilon", 1e-5},
		{"initializer_range", 0.02},
		{"scale_attn_weights", true},
		{"tie_word_embeddings", true},
		{"bos_token_id", c.vocab_raw >= 50257 ? 50256 : 0},
		{"eos_token_id", c.vocab_raw >= 50257 ? 50256 : 0},
		{"torch_dtype", "float32"},
	};
	write_file_atomic(join_path(out_dir, "config.json"), cfg.dump(2) + "\n");
}

namespace {

// GPT-2 BPE tokens by id and merges, from the vocabulary folder the tokenizer uses.
void add_gpt2_tokenizer(GgufWriter &w, int vocab)
{
	std::string dir = default_vocab_dir();
	auto enc = nlohmann::json::parse(read_file(join_path(dir, "encoder.json")));
	std::vector<std::string> tokens(static_cast<size_t>(vocab));
	std::vector<bool> seen(static_cast<size_t>(vocab), false);
	for (auto it = enc.begin(); it != enc.end(); ++it) {
		int id = it.value().get<int>();
		if (id >= 0 && id < vocab) {
			tokens[size_t(id)] = it.key();
			seen[size_t(id)] = true;
		}
	}
	for (int i = 0; i < vocab; i++)
		if (!seen[size_t(i)])
			fail("{}: no token for id {} (the model has {} ids)", join_path(dir, "encoder.json"), i, vocab);
	std::vector<std::string> merges;
	std::string bpe = read_file(join_path(dir, "vocab.bpe"));
	size_t pos = 0;
	while (pos < bpe.size()) {
		size_t nl = bpe.find('\n', pos);
		std::string line = bpe.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
		pos = nl == std::string::npos ? bpe.size() : nl + 1;
		if (!line.empty() && line.back() == '\r')
			line.pop_back();
		if (line.empty() || line.rfind("#version", 0) == 0)
			continue;
		merges.push_back(line);
	}
	std::vector<int32_t> types(static_cast<size_t>(vocab), 1); // normal
	if (vocab > 50256)
		types[50256] = 3; // <|endoftext|>: control
	w.add("tokenizer.ggml.model", GgufType::STRING, "gpt2");
	w.add("tokenizer.ggml.pre", GgufType::STRING, "gpt-2");
	w.add_array("tokenizer.ggml.tokens", GgufType::STRING, tokens);
	w.add_array("tokenizer.ggml.token_type", GgufType::I32, types);
	w.add_array("tokenizer.ggml.merges", GgufType::STRING, merges);
	if (vocab > 50256) {
		w.add("tokenizer.ggml.bos_token_id", GgufType::U32, 50256);
		w.add("tokenizer.ggml.eos_token_id", GgufType::U32, 50256);
	}
}

} // namespace

namespace {

struct ImatrixObserver : ForwardObserver {
	std::map<std::string, torch::Tensor> sum; // float64 sums of x^2 per input channel
	std::map<std::string, int64_t> rows;
	void linear_input(int layer, const char *which, const torch::Tensor &x) override
	{
		std::string name = fmt::format("transformer.h.{}.{}.weight", layer, which);
		auto x2 = x.detach().reshape({-1, x.size(-1)}).to(torch::kDouble).pow(2).sum(0).cpu();
		auto it = sum.find(name);
		if (it == sum.end())
			sum.emplace(name, x2);
		else
			it->second.add_(x2);
		rows[name] += x.numel() / x.size(-1);
	}
};

} // namespace

std::map<std::string, torch::Tensor> collect_imatrix(GPT2 &model, const std::string &val_file, int chunks, int seq)
{
	const auto &c = model->config();
	if (!c.vanilla())
		fail("imatrix: activations are collected for vanilla attention only (this model: {})", c.variant);
	if (seq < 1 || seq > c.block_size)
		fail("imatrix: window of {} tokens outside [1, {}] (the model's context)", seq, c.block_size);
	TokenFile data(val_file, c.vocab_raw);
	auto starts = fisher_windows(data.size(), chunks, seq, val_file);
	model->eval();
	torch::NoGradGuard ng;
	ImatrixObserver obs;
	ObserverScope scope(&obs);
	const auto dev = model->parameters()[0].device();
	const int per = 8; // windows per forward pass
	auto x = torch::empty({per, seq}, torch::kLong), y = torch::empty({per, seq}, torch::kLong);
	for (size_t w = 0; w < starts.size(); w += per) {
		int n = int(std::min<size_t>(per, starts.size() - w));
		for (int i = 0; i < n; i++)
			data.window(uint64_t(starts[w + size_t(i)]), seq, x[i].data_ptr<int64_t>(),
				    y[i].data_ptr<int64_t>());
		model->forward_all(x.narrow(0, 0, n).to(dev));
	}
	std::map<std::string, torch::Tensor> out;
	for (auto &[name, s] : obs.sum)
		out[name] = (s / double(obs.rows[name])).to(torch::kFloat);
	return out;
}

// One function, top to bottom in the order of the file it writes: the plan, the header's
// metadata, the tokenizer fields, the tensor table and the data (llama.cpp reads them in
// that order; splitting it would scatter one format over several places).
std::string ggml_bytes(const torch::Tensor &t, GgmlType type)
{
	auto f = t.to(torch::kFloat).contiguous();
	const int64_t row = f.dim() ? f.size(-1) : 1, rows = f.numel() / std::max<int64_t>(1, row),
		      row_bytes = ggml_row_bytes(type, row);
	std::string q(size_t(row_bytes * rows), '\0');
	const float *src = f.data_ptr<float>();
	uint8_t *dst = reinterpret_cast<uint8_t *>(q.data());
	knlp::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, row)), [&](int64_t b, int64_t e) {
		ggml_quantize(type, src + b * row, (e - b) * row, dst + b * row_bytes);
	});
	return q;
}

torch::Tensor quant_error(const torch::Tensor &t, GgmlType type)
{
	auto f = t.to(torch::kFloat).contiguous();
	const std::string q = ggml_bytes(f, type);
	auto back = torch::empty_like(f);
	ggml_dequantize(type, reinterpret_cast<const uint8_t *>(q.data()), f.numel(), back.data_ptr<float>());
	return (f - back).pow(2);
}

nlohmann::json export_gguf(GPT2 &model, const Settings &cfg, const std::string &ckpt_dir, const std::string &out,
			   const PlanOptions &plan, const ScoreSource &src)
{
	const auto &c = model->config();
	if (!c.vanilla())
		fail("export: llama.cpp's gpt2 architecture holds only vanilla attention; this model uses '{}' "
		     "attention",
		     c.variant);
	{ // what an export killed before its rename left next to `out` (out.tmp.PID, plan too)
		std::string d = dirname_of(out), base = out.substr(out.find_last_of('/') + 1);
		if (is_dir(d.empty() ? "." : d))
			remove_stale_temps(d.empty() ? "." : d, base);
	}
	// Weights on the CPU in float32, the token table cut to the ids the data can hold.
	std::vector<std::pair<std::string, torch::Tensor>> params;
	for (auto &p : model->named_parameters()) {
		auto t = p.value().detach().to(torch::kCPU, torch::kFloat).contiguous();
		if (p.key() == "transformer.wte.weight")
			t = t.narrow(0, 0, c.vocab_raw).contiguous();
		params.emplace_back(p.key(), t);
	}
	if (!c.bias) { // llama.cpp's gpt2 needs every bias: zeros are exactly equivalent
		for (int i = 0; i < c.n_layer; i++) {
			std::string h = "transformer.h." + std::to_string(i) + ".";
			for (auto [n, d] : std::vector<std::pair<std::string, int>>{{"ln_1.bias", c.n_embd},
										    {"ln_2.bias", c.n_embd},
										    {"attn.c_attn.bias", 3 * c.n_embd},
										    {"attn.c_proj.bias", c.n_embd},
										    {"mlp.c_fc.bias", 4 * c.n_embd},
										    {"mlp.c_proj.bias", c.n_embd}})
				params.emplace_back(h + n, torch::zeros({d}));
		}
		params.emplace_back("transformer.ln_f.bias", torch::zeros({c.n_embd}));
	}
	std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
	std::map<std::string, double> scores;
	std::unique_ptr<SafetensorsFile> opt;
	if (plan.plan == "squisher") {
		std::string f = join_path(ckpt_dir, "optimizer.safetensors");
		if (!file_exists(f))
			fail("{}: no optimizer state in this checkpoint; plan squisher reads Adam's exp_avg_sq (use "
			     "--plan magnitude, or a checkpoint written by training)",
			     ckpt_dir);
		opt = std::make_unique<SafetensorsFile>(f);
	}
	nlohmann::json source = nullptr;
	const bool data_plan = plan.plan == "fim" || plan.plan == "fim-error" || plan.plan == "imatrix";
	std::map<std::string, torch::Tensor> fisher, imatrix;
	if (data_plan && plan.pct > 0) {
		std::string dir = src.data_dir.empty() ? cfg.data.dir : src.data_dir;
		if (dir.empty() && (plan.plan == "imatrix" || src.fisher_file.empty()))
			fail("plan {}: {} has no token data of its own; pass --calib-data TOKEN_DIR{}", plan.plan,
			     ckpt_dir, plan.plan == "imatrix" ? "" : " (or --fisher FILE)");
		std::string val = join_path(dir, src.split + ".bin");
		int seq = src.seq > 0 ? src.seq : std::min(512, c.block_size);
		if (plan.plan == "imatrix") {
			imatrix = collect_imatrix(model, val, src.chunks, seq);
			source = {{"activations", val}, {"windows", src.chunks}, {"seq", seq}};
		} else if (!src.fisher_file.empty()) {
			fisher = load_fisher(src.fisher_file).kind("empirical");
			source = {{"fisher", src.fisher_file}};
		} else {
			TokenFile data(val, c.vocab_raw);
			FisherOptions fo;
			fo.chunks = src.chunks;
			fo.seq = seq;
			fo.true_fisher = false;
			fisher = compute_fisher(model, data, fo).empirical;
			source = {{"fisher", "computed"}, {"data", val}, {"windows", src.chunks}, {"seq", seq}};
		}
	}
	std::vector<std::pair<std::string, std::vector<int64_t>>> all_shapes;
	for (auto &kv : params)
		all_shapes.emplace_back(kv.first, kv.second.sizes().vec());
	auto base = base_types(all_shapes, plan);
	// Squared error of the base type's round trip, per element (what the plan would leave).
	auto base_error = [&](const std::string &name, const torch::Tensor &t) {
		return quant_error(t, base.at(name));
	};
	for (auto &kv : params) {
		const auto &name = kv.first; // named references, not bindings: lambdas below capture them
		auto &t = kv.second;
		shapes.emplace_back(name, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
		int role_layer;
		const bool scored = !gpt2_role(name, &role_layer).empty() && t.dim() == 2;
		if (data_plan && plan.pct > 0 && scored) {
			auto need = [&](const std::map<std::string, torch::Tensor> &m,
					const char *what) -> torch::Tensor {
				auto it = m.find(name);
				if (it == m.end())
					fail("export: plan {} has no {} for {}", plan.plan, what, name);
				auto v = it->second;
				if (name == "transformer.wte.weight" && v.size(0) != t.size(0))
					v = v.narrow(0, 0, t.size(0));
				return v.to(torch::kFloat).contiguous();
			};
			if (plan.plan == "fim") {
				scores[name] = need(fisher, "Fisher diagonal").mean(torch::kDouble).item<double>();
			} else if (plan.plan == "fim-error") {
				scores[name] = 0.5 * (need(fisher, "Fisher diagonal") * base_error(name, t))
							     .sum(torch::kDouble)
							     .item<double>();
			} else {
				auto it = imatrix.find(name);
				// Embedding tables have no input activations: weight their rows equally.
				auto a = it == imatrix.end() ? torch::ones({t.size(1)}) : it->second;
				scores[name] = (base_error(name, t).sum(0) * a).sum(torch::kDouble).item<double>();
			}
		}
		if (plan.plan == "magnitude")
			scores[name] = t.abs().mean().item<double>();
		if (plan.plan == "squisher") {
			int layer;
			if (gpt2_role(name, &layer).empty())
				continue;
			const auto *v = opt->find("exp_avg_sq." + name);
			if (!v)
				fail("{}: no exp_avg_sq.{} (the optimizer keeps no second moment?); plan squisher "
				     "needs Adam's "
				     "state: use --plan magnitude",
				     opt->path(), name);
			if (v->dtype != "F32")
				fail("{}: exp_avg_sq.{} is {}, expected F32", opt->path(), name, v->dtype);
			const float *p = static_cast<const float *>(v->data);
			int64_t n = int64_t(v->nbytes / 4);
			double s = 0;
			for (int64_t i = 0; i < n; i++)
				s += p[i];
			scores[name] = s / double(std::max<int64_t>(1, n));
		}
	}
	auto planned = make_plan(shapes, scores, plan);
	GgufWriter w;
	w.add("general.architecture", GgufType::STRING, "gpt2");
	w.add("general.name", GgufType::STRING, cfg.core.run_name.empty() ? "knlp-gpt2" : cfg.core.run_name);
	w.add("general.quantization_version", GgufType::U32, 2);
	w.add("gpt2.context_length", GgufType::U32, c.block_size);
	w.add("gpt2.embedding_length", GgufType::U32, c.n_embd);
	w.add("gpt2.feed_forward_length", GgufType::U32, 4 * c.n_embd);
	w.add("gpt2.block_count", GgufType::U32, c.n_layer);
	w.add("gpt2.attention.head_count", GgufType::U32, c.n_head);
	w.add("gpt2.attention.layer_norm_epsilon", GgufType::F32, 1e-5f);
	DataMeta meta = read_data_meta(cfg.data.dir);
	if (meta.present && meta.tokenizer == "gpt2")
		add_gpt2_tokenizer(w, c.vocab_raw);
	else
		w.add("tokenizer.ggml.model", GgufType::STRING, "none"); // byte-level: no GGML vocabulary
	auto summary = plan_summary(planned, plan);
	summary["score_source"] = source;
	w.add("knlp.plan", GgufType::STRING, plan.recipe.empty() ? plan.plan : plan.recipe);
	if (!plan.mix.empty())
		w.add("general.file_type", GgufType::U32, mix_file_type(plan.mix));
	w.add("knlp.data_dir", GgufType::STRING, cfg.data.dir);
	w.add("knlp.code_version", GgufType::STRING, code_version());
	for (size_t i = 0; i < params.size(); i++) {
		const auto &pt = planned[i];
		const auto &t = params[i].second;
		std::string gname = gguf_name(pt.name);
		if (gname.empty())
			fail("export: no llama.cpp name for tensor {}", pt.name);
		std::vector<int64_t> ne(t.sizes().rbegin(), t.sizes().rend()); // innermost first
		std::string bytes = ggml_bytes(t, pt.type);
		if (int64_t(bytes.size()) != pt.bytes)
			fail("export: tensor {} came to {} bytes, the plan said {}", pt.name, bytes.size(), pt.bytes);
		w.add_tensor(gname, ne, pt.type, std::move(bytes));
	}
	uint64_t size = w.write(out);
	summary["file_bytes"] = size;
	write_file_atomic(out + ".plan.json", summary.dump(2) + "\n");
	return summary;
}

static std::string shape_str(const std::vector<int64_t> &s)
{
	std::string o = "[";
	for (size_t i = 0; i < s.size(); i++)
		o += (i ? ", " : "") + std::to_string(s[i]);
	return o + "]";
}

GPT2 load_gguf_model(const std::string &path, std::string *data_dir)
{
	GgufFile f(path);
	if (f.get("general.architecture").value != "gpt2")
		fail("{}: architecture {} (knlp reads gpt2)", path, f.get("general.architecture").value.dump());
	auto u32 = [&](const char *key) {
		const auto &k = f.get(key);
		if (!k.value.is_number_integer())
			fail("{}: {} is not an integer", path, key);
		return k.value.get<int>();
	};
	GPT2Config c;
	c.n_layer = u32("gpt2.block_count");
	c.n_head = u32("gpt2.attention.head_count");
	c.n_embd = u32("gpt2.embedding_length");
	c.block_size = u32("gpt2.context_length");
	if (u32("gpt2.feed_forward_length") != 4 * c.n_embd)
		fail("{}: feed_forward_length {} is not 4 x {} (knlp's GPT-2 MLP)", path,
		     u32("gpt2.feed_forward_length"), c.n_embd);
	const auto &emb = f.tensor("token_embd.weight");
	if (emb.ne.size() != 2 || emb.ne[0] != c.n_embd)
		fail("{}: token_embd.weight has the wrong shape for width {}", path, c.n_embd);
	c.vocab_raw = int(emb.ne[1]);
	c.vocab_size = pad_vocab(c.vocab_raw, 64);
	c.dropout = 0.0;
	c.bias = true;
	c.gelu = Gelu::GgmlTable; // what llama.cpp computes for a gpt2 file, whatever wrote it
	if (const auto *eps = f.find("gpt2.attention.layer_norm_epsilon"))
		if (!eps->value.is_number() || std::abs(eps->value.get<double>() - 1e-5) > 1e-9)
			fail("{}: gpt2.attention.layer_norm_epsilon is not 1e-5 (knlp's LayerNorm)", path);
	c.validate();
	GPT2 model(c);
	torch::NoGradGuard ng;
	for (auto &p : model->named_parameters()) {
		std::string g = gguf_name(p.key());
		if (g.empty())
			fail("{}: knlp has no GGUF name for {}", path, p.key());
		const auto &t = f.tensor(g);
		auto dst = p.value();
		int64_t n = t.elements();
		bool table = g == "token_embd.weight";
		int64_t want = table ? int64_t(c.vocab_raw) * c.n_embd : dst.numel();
		std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
		if (n != want || (!table && shape != std::vector<int64_t>(dst.sizes().begin(), dst.sizes().end())))
			fail("{}: tensor {} has shape {} but the model needs {}", path, g, shape_str(shape),
			     shape_str(std::vector<int64_t>(dst.sizes().begin(), dst.sizes().end())));
		auto vals = torch::empty({n}, torch::kFloat);
		ggml_dequantize(t.type, t.data, n, vals.data_ptr<float>());
		if (table) {
			dst.zero_();
			dst.narrow(0, 0, c.vocab_raw).copy_(vals.view({c.vocab_raw, c.n_embd}));
		} else {
			dst.copy_(vals.view(dst.sizes()));
		}
	}
	if (data_dir) {
		const auto *d = f.find("knlp.data_dir");
		*data_dir = d && d->value.is_string() ? d->value.get<std::string>() : "";
	}
	model->eval();
	return model;
}

} // namespace knlp
