#include "train/export.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "train/image_trainer.h"
#include "core/fsutil.h"
#include "data/tokens.h"
#include "train/checkpoint.h"

namespace knlp {

GPT2 load_model(const std::string &ckpt_dir, torch::Device dev, Config *cfg_out)
{
	auto st = read_checkpoint_state(ckpt_dir);
	if (!st.contains("config") || !st["config"].is_string())
		fail("{}: checkpoint state has no configuration", join_path(ckpt_dir, "state.json"));
	Config cfg = Config::parse(st["config"].get<std::string>(), join_path(ckpt_dir, "state.json"));
	if (is_image_config(cfg))
		fail("{}: a checkpoint of an image model; this command works on GPT-2 runs (image runs report test "
		     "accuracy in training_metrics.json)",
		     ckpt_dir);
	DataMeta meta = read_data_meta(cfg.get_string("DATA_DIR"));
	int vocab = meta.present ? meta.vocab_size : 0;
	if (st.contains("vocab_raw"))
		vocab = st["vocab_raw"].get<int>();
	GPT2Config mc = GPT2Config::from(cfg, vocab);
	GPT2 model(mc);
	load_tensors(join_path(ckpt_dir, "model.safetensors"), named_parameters_of(*model));
	model->to(dev);
	model->eval();
	if (cfg_out)
		*cfg_out = cfg;
	return model;
}

void export_hf(GPT2 &model, const std::string &out_dir)
{
	const auto &c = model->config();
	if (!c.vanilla())
		fail("export: the Hugging Face GPT-2 layout holds only vanilla attention; this model uses '{}' attention",
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
		{"activation_function", "gelu"},
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

} // namespace knlp
