// GGUF export of Hugging Face Llama-family folders (llama.cpp's llama and qwen2
// architectures): llama.cpp's tensor names and metadata, the tokenizer.json vocabulary as
// tokenizer.ggml.*, every weight in the type a mixed-precision plan gives it.
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/run.h"
#include "data/tokenizer.h"
#include "models/hf.h"
#include "models/llama.h"
#include "quant/gguf.h"
#include "quant/plan.h"
#include "train/export.h"

namespace knlp {

using json = nlohmann::json;

namespace {

// tokenizer.json as GGUF's tokenizer.ggml.* (model "gpt2": byte-level BPE). Ids the model
// has beyond the tokenizer's are padding tokens ([PADn], type unused), as llama.cpp's own
// converter writes them.
void add_hf_tokenizer(GgufWriter &w, const std::string &dir, int64_t vocab, const LlamaConfig &c)
{
	std::string file = join_path(dir, "tokenizer.json");
	if (!file_exists(file))
		fail("{}: no tokenizer.json (a GGUF file carries its vocabulary)", dir);
	std::string pre = hf_pretokenizer(dir); // validates everything the encoder needs
	json j = json::parse(read_file(file));
	std::vector<std::string> tokens(static_cast<size_t>(vocab));
	std::vector<int32_t> types(static_cast<size_t>(vocab), 5); // unused
	std::vector<bool> seen(static_cast<size_t>(vocab), false);
	auto put = [&](int64_t id, const std::string &text, int32_t type) {
		if (id < 0 || id >= vocab)
			fail("{}: token id {} is outside the model's vocabulary ({})", file, id, vocab);
		tokens[size_t(id)] = text;
		types[size_t(id)] = type;
		seen[size_t(id)] = true;
	};
	for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it)
		put(it.value().get<int64_t>(), it.key(), 1); // normal
	for (const auto &a : j.value("added_tokens", json::array()))
		put(a.at("id").get<int64_t>(), a.at("content").get<std::string>(), a.value("special", false) ? 3 : 4);
	for (int64_t i = 0; i < vocab; i++)
		if (!seen[size_t(i)])
			tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
	std::vector<std::string> merges;
	for (const auto &m : j["model"]["merges"])
		merges.push_back(m.is_string() ? m.get<std::string>()
					       : m[0].get<std::string>() + " " + m[1].get<std::string>());
	w.add("tokenizer.ggml.model", GgufType::STRING, "gpt2");
	w.add("tokenizer.ggml.pre", GgufType::STRING,
	      pre == "qwen2"	? "qwen2"
	      : pre == "llama3" ? "llama-bpe"
				: "gpt-2");
	w.add_array("tokenizer.ggml.tokens", GgufType::STRING, tokens);
	w.add_array("tokenizer.ggml.token_type", GgufType::I32, types);
	w.add_array("tokenizer.ggml.merges", GgufType::STRING, merges);
	if (c.bos >= 0 && c.bos < vocab)
		w.add("tokenizer.ggml.bos_token_id", GgufType::U32, uint32_t(c.bos));
	if (c.eos >= 0 && c.eos < vocab)
		w.add("tokenizer.ggml.eos_token_id", GgufType::U32, uint32_t(c.eos));
	// knlp encodes without the post-processor's special tokens; so does the file.
	w.add("tokenizer.ggml.add_bos_token", GgufType::BOOL, false);
}

// llama.cpp's llama architecture rotates interleaved pairs; Hugging Face's Llama rotates
// halves. Its converter reorders the rows of q and k so that both agree; so does this.
torch::Tensor permute_rows(const torch::Tensor &w, int64_t heads)
{
	auto s = w.sizes().vec();
	int64_t d = s[0] / heads;
	auto r = w.reshape({heads, 2, d / 2, -1}).transpose(1, 2).reshape(s);
	return r.contiguous();
}

// llama.cpp's name of a weight, which every weight of the model has.
std::string gguf_name_of(const std::string &hf)
{
	std::string g = gguf_llama_name(hf);
	if (g.empty())
		fail("export: no llama.cpp name for tensor {}", hf);
	return g;
}

} // namespace

json export_hf_gguf(const std::string &hf_dir, const std::string &out, const PlanOptions &plan, const HfPlanData &data)
{
	HfCheckpoint ck(hf_dir);
	LlamaConfig c = llama_config_from(ck);
	if (plan.plan == "squisher")
		fail("export: plan squisher needs Adam's second moment; a Hugging Face folder has no optimizer state");
	Llama model(c, ck);
	const std::string &a = c.arch;
	GgufWriter w;
	w.add("general.architecture", GgufType::STRING, a);
	w.add("general.name", GgufType::STRING, "knlp-" + a);
	w.add("general.quantization_version", GgufType::U32, 2);
	w.add(a + ".context_length", GgufType::U32, uint32_t(c.max_positions));
	w.add(a + ".embedding_length", GgufType::U32, uint32_t(c.hidden));
	w.add(a + ".block_count", GgufType::U32, uint32_t(c.n_layer));
	w.add(a + ".feed_forward_length", GgufType::U32, uint32_t(c.intermediate));
	w.add(a + ".attention.head_count", GgufType::U32, uint32_t(c.n_head));
	w.add(a + ".attention.head_count_kv", GgufType::U32, uint32_t(c.n_kv_head));
	w.add(a + ".rope.freq_base", GgufType::F32, float(c.rope_theta));
	w.add(a + ".attention.layer_norm_rms_epsilon", GgufType::F32, float(c.rms_eps));
	w.add(a + ".rope.dimension_count", GgufType::U32, uint32_t(c.head_dim));
	if (c.head_dim * c.n_head != c.hidden) {
		w.add(a + ".attention.key_length", GgufType::U32, uint32_t(c.head_dim));
		w.add(a + ".attention.value_length", GgufType::U32, uint32_t(c.head_dim));
	}
	w.add(a + ".vocab_size", GgufType::U32, uint32_t(c.vocab));
	if (c.rope_scaling == "linear") {
		w.add(a + ".rope.scaling.type", GgufType::STRING, "linear");
		w.add(a + ".rope.scaling.factor", GgufType::F32, float(c.rope_factor));
	}
	add_hf_tokenizer(w, hf_dir, c.vocab, c);
	w.add("knlp.plan", GgufType::STRING, plan.recipe.empty() ? plan.plan : plan.recipe);
	if (!plan.mix.empty())
		w.add("general.file_type", GgufType::U32, mix_file_type(plan.mix));
	w.add("knlp.code_version", GgufType::STRING, code_version());

	// Scores of the data-driven plans, on the weights in Hugging Face's row order (blocks
	// run along rows, so llama's q/k row reordering leaves each row's error as it is).
	const bool data_plan =
		plan.pct > 0 && (plan.plan == "fim" || plan.plan == "fim-error" || plan.plan == "imatrix");
	std::map<std::string, double> hf_scores;
	std::vector<std::pair<std::string, std::vector<int64_t>>> hf_shapes;
	for (auto &named : model->named_weights())
		hf_shapes.emplace_back(named.first, named.second.sizes().vec());
	auto base = base_types(hf_shapes, plan);
	auto base_error = [&](const std::string &hf, const torch::Tensor &t) { return quant_error(t, base.at(hf)); };
	if (data_plan)
		for (auto &named : model->named_weights()) {
			const std::string &hf = named.first;
			const torch::Tensor &t = named.second;
			int layer;
			if (gpt2_role(hf, &layer).empty() || t.dim() != 2)
				continue;
			auto need = [&](const std::map<std::string, torch::Tensor> &m, const char *what) {
				auto it = m.find(hf);
				if (it == m.end())
					fail("export: plan {}: no {} for tensor {}", plan.plan, what, hf);
				return it->second;
			};
			auto f = t.to(torch::kFloat).contiguous();
			if (plan.plan == "fim")
				hf_scores[hf] = need(data.fisher, "Fisher diagonal").mean().item<double>();
			else if (plan.plan == "fim-error")
				hf_scores[hf] = 0.5 * (need(data.fisher, "Fisher diagonal") * base_error(hf, f))
							      .sum(torch::kDouble)
							      .item<double>();
			else
				hf_scores[hf] = (base_error(hf, f).sum(0) * need(data.imatrix, "activation statistics"))
							.sum(torch::kDouble)
							.item<double>();
		}

	// Weights in llama.cpp's names and row order, as float32 for the quantizers.
	std::vector<std::pair<std::string, torch::Tensor>> tensors;
	for (auto &[hf, t] : model->named_weights()) {
		auto f = t.to(torch::kFloat).contiguous();
		if (a == "llama" && (hf.find("q_proj") != std::string::npos || hf.find("k_proj") != std::string::npos))
			f = permute_rows(f, hf.find("q_proj") != std::string::npos ? c.n_head : c.n_kv_head);
		tensors.emplace_back(gguf_name_of(hf), f);
	}
	if (c.rope_scaling == "llama3") {
		// llama.cpp divides each rotary frequency by its factor: the unscaled over the scaled.
		LlamaConfig plain = c;
		plain.rope_scaling = "none";
		tensors.emplace_back("rope_freqs.weight", (plain.inv_freq() / c.inv_freq()).contiguous());
	}
	std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
	std::map<std::string, double> scores;
	for (auto &[name, t] : tensors) {
		shapes.emplace_back(name, t.sizes().vec());
		if (plan.plan == "magnitude")
			scores[name] = t.abs().mean().item<double>();
	}
	for (const auto &[hf, v] : hf_scores)
		scores[gguf_name_of(hf)] = v;
	auto planned = make_plan(shapes, scores, plan);
	for (size_t i = 0; i < tensors.size(); i++) {
		const auto &pt = planned[i];
		const auto &t = tensors[i].second;
		std::vector<int64_t> ne(t.sizes().rbegin(), t.sizes().rend()); // innermost first
		std::string bytes = ggml_bytes(t, pt.type);
		if (int64_t(bytes.size()) != pt.bytes)
			fail("export: tensor {} came to {} bytes, the plan said {}", pt.name, bytes.size(), pt.bytes);
		w.add_tensor(pt.name, ne, pt.type, std::move(bytes));
	}
	auto summary = plan_summary(planned, plan);
	summary["architecture"] = a;
	summary["score_source"] = data_plan ? data.source : plan.plan == "magnitude" ? "weights" : "";
	summary["checkpoint"] = hf_dir;
	uint64_t size = w.write(out);
	summary["file_bytes"] = size;
	write_file_atomic(out + ".plan.json", summary.dump(2) + "\n");
	return summary;
}

} // namespace knlp
