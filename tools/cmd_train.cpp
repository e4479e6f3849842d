// knlp train | sample | eval | export
#include <torch/torch.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/evaluate.h"
#include "train/export.h"
#include "train/generate.h"
#include "train/lm_trainer.h"
#include "gnn/gnn_trainer.h"
#include "train/ddp.h"
#include "train/image_trainer.h"
#include "train/multiple_choice.h"

namespace knlp {

namespace {

struct CheckpointArgs {
	std::string path, which = "latest";
	void add_to(CLI::App *cmd, bool required = true)
	{
		auto *o = cmd->add_option("--checkpoint", path, "Run folder (or one checkpoint folder)");
		if (required)
			o->required();
		cmd->add_option("--which", which, "latest or best")
			->check(CLI::IsMember({"latest", "best"}))
			->capture_default_str();
	}
};

// A trained model on the device its run's configuration selects.
struct Loaded {
	std::string ckpt;
	Config cfg;
	GPT2 model{nullptr};
	torch::Device dev = torch::kCPU;
};

Loaded load_for_inference(const CheckpointArgs &args)
{
	Loaded l;
	l.ckpt = resolve_checkpoint(args.path, args.which);
	l.model = load_model(l.ckpt, torch::kCPU, &l.cfg);
	setup_threads(l.cfg);
	l.dev = select_device(l.cfg);
	l.model->to(l.dev);
	return l;
}

void add_score_options(CLI::App *c, ScoreSource &s, bool with_data)
{
	c->add_option("--fisher", s.fisher_file, "fim, fim-error: fisher.safetensors of `knlp fim score` (default: "
						  "compute the empirical Fisher now)");
	if (with_data)
		c->add_option("--calib-data", s.data_dir, "fim, fim-error, imatrix: token folder of the calibration "
							  "windows (default: the run's DATA_DIR)");
	c->add_option("--calib-split", s.split, "fim, fim-error, imatrix: calibration split")
		->check(CLI::IsMember({"train", "val"}))
		->capture_default_str();
	c->add_option("--calib-windows", s.chunks, "fim, fim-error, imatrix: calibration windows")->capture_default_str();
	c->add_option("--calib-seq", s.seq, "fim, fim-error, imatrix: tokens per window (0: min(512, context))")
		->capture_default_str();
}

const char *kPlanHelp = "none, magnitude (mean |w|), squisher (Adam's mean v), fim (mean Fisher diagonal), "
			"fim-error (Fisher-weighted base-type error), imatrix (activation-weighted base-type error), "
			"random";

} // namespace

void add_train_commands(CLI::App &app)
{
	// ---- train
	auto *train = app.add_subcommand("train", "Train the model a .config describes");
	static ConfigArgs ca;
	ca.add_to(train);
	static TrainRequest tr{Config(), "", "", false, ""};
	train->add_option("--out", tr.out_dir, "Run folder (default: OUTPUT_DIR/RUN_NAME)");
	train->add_option("--resume", tr.resume_dir, "Continue the run in this folder from its latest checkpoint");
	train->add_flag("--force", tr.force, "Resume even when the configuration differs");
	train->callback([train] {
		bool explicit_config = train->get_option("--config")->count() > 0;
		if (!tr.resume_dir.empty() && !explicit_config) {
			// Resume with the run's own configuration (plus any --set overrides).
			std::string saved = join_path(tr.resume_dir, "config");
			if (!file_exists(saved))
				fail("{}: not a run folder (no config file); cannot resume", tr.resume_dir);
			ConfigArgs run_cfg = ca;
			run_cfg.path = saved;
			tr.cfg = run_cfg.load();
		} else {
			tr.cfg = ca.load();
		}
		tr.command = g_command_line;
		int rc = is_image_config(tr.cfg) ? train_image(tr) : is_gnn_config(tr.cfg) ? train_gnn(tr) : train_lm(tr);
		if (rc)
			std::exit(rc);
	});

	// ---- launch
	auto *launch = app.add_subcommand("launch", "Start N local processes of a knlp command with torchrun's "
						    "environment (data-parallel training: `knlp launch --nproc 2 -- train ...`)");
	static int nproc = 2, port = 0, grace = 30;
	static std::vector<std::string> largs;
	launch->add_option("--nproc", nproc, "Processes")->capture_default_str();
	launch->add_option("--port", port, "MASTER_PORT (0: a free one)")->capture_default_str();
	launch->add_option("--grace", grace, "Seconds the others get to stop after one fails")->capture_default_str();
	launch->add_option("command", largs, "The knlp command and its arguments (after --)")->required();
	launch->callback([] {
		int rc = launch_local(nproc, largs, port, grace);
		if (rc)
			std::exit(rc);
	});

	// ---- sample
	auto *sample = app.add_subcommand("sample", "Generate text from a trained model (KV-cached decoding)");
	static CheckpointArgs sc;
	sc.add_to(sample);
	static std::string prompt = "The kernel";
	static SampleOptions so;
	static uint64_t seed = 1337;
	static int samples = 1;
	sample->add_option("--prompt", prompt, "Prompt text")->capture_default_str();
	sample->add_option("--tokens", so.tokens, "Tokens to generate")->capture_default_str();
	sample->add_option("--temperature", so.temperature, "Sampling temperature (> 0)")->capture_default_str();
	sample->add_option("--top-k", so.top_k, "Keep the k most likely tokens (0: all)")->capture_default_str();
	sample->add_option("--seed", seed, "Sampling seed")->capture_default_str();
	sample->add_option("--num-samples", samples, "Number of samples")->capture_default_str();
	sample->callback([] {
		auto [ckpt, cfg, model, dev] = load_for_inference(sc);
		DataMeta meta = read_data_meta(cfg.get_string("DATA_DIR"));
		auto tok = make_tokenizer(meta.present ? meta.tokenizer : "byte", "");
		auto ids = tok->encode(prompt);
		Rng rng(seed);
		for (int i = 0; i < samples; i++) {
			int64_t cache_bytes = 0;
			auto t0 = std::chrono::steady_clock::now();
			auto gen = generate(model, ids, so, rng, dev, &cache_bytes);
			double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
			fmt::print("{}{}\n", prompt, tok->decode(gen));
			// Peak cache: the prompt plus all but the last generated token (window permitting).
			int64_t cached = std::min<int64_t>(int64_t(std::max<size_t>(ids.size(), 1) + gen.size()) - 1,
							   model->config().block_size);
			const auto &mc = model->config();
			int64_t elem = model->parameters()[0].element_size();
			int64_t analytic = cached * mc.cache_values_per_token() * elem;
			fmt::print(stderr,
				   "[{} tokens in {:.2f} s, {:.1f} tok/s, {} attention; KV cache measured {} bytes, analytic {} "
				   "bytes = {} tokens x {} values x {} bytes{}]\n",
				   gen.size(), dt, gen.size() / std::max(dt, 1e-9), mc.variant, cache_bytes, analytic, cached,
				   mc.cache_values_per_token(), elem, cache_bytes == analytic ? "" : " MISMATCH");
			if (i + 1 < samples)
				fmt::print("---\n");
		}
	});

	// ---- eval
	auto *ev = app.add_subcommand("eval", "Perplexity over a validation file, or a multiple-choice task");
	static CheckpointArgs ec;
	ec.add_to(ev, false);
	static std::string data_dir, task = "perplexity", gguf;
	ev->add_option("--gguf", gguf, "Evaluate the dequantized model of this GGUF file instead of a checkpoint");
	static int batch = 8, limit = 0;
	ev->add_option("--task", task, "perplexity (val.bin of a token folder) or hellaswag (a jsonl file)")
		->check(CLI::IsMember({"perplexity", "hellaswag"}))
		->capture_default_str();
	ev->add_option("--data", data_dir, "Token folder (default: the run's DATA_DIR); the .jsonl file for hellaswag");
	ev->add_option("--batch", batch, "Windows per batch")->capture_default_str();
	ev->add_option("--limit", limit, "hellaswag: score only the first N examples (0: all)");
	ev->callback([] {
		if (task == "hellaswag") {
			if (data_dir.empty())
				fail("eval --task hellaswag needs --data FILE.jsonl");
			if (ec.path.empty())
				fail("eval --task hellaswag needs --checkpoint RUN_DIR");
			auto items = read_mc_jsonl(data_dir); // bad input fails before the model loads
			if (limit > 0 && size_t(limit) < items.size())
				items.resize(size_t(limit));
			auto [ckpt, cfg, model, dev] = load_for_inference(ec);
			DataMeta meta = read_data_meta(cfg.get_string("DATA_DIR"));
			auto tok = make_tokenizer(meta.present ? meta.tokenizer : "byte", "");
			auto t0 = std::chrono::steady_clock::now();
			auto r = score_items(items, *tok, model_logprobs(model, dev), size_t(model->config().block_size), true);
			double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
			fmt::print("{{\"checkpoint\": \"{}\", \"task\": \"hellaswag\", \"data\": \"{}\", \"examples\": {}, "
				   "\"acc\": {:.4f}, \"acc_norm\": {:.4f}, \"chance\": {:.4f}, \"seconds\": {:.2f}}}\n",
				   ckpt, data_dir, r.n, r.acc, r.acc_norm, 1.0 / double(items[0].endings.size()), dt);
			return;
		}
		if (!gguf.empty()) {
			std::string stored;
			setup_threads(Config());
			GPT2 model = load_gguf_model(gguf, &stored);
			std::string dir = data_dir.empty() ? stored : data_dir;
			if (dir.empty())
				fail("{}: no knlp.data_dir in the file; pass --data DIR", gguf);
			TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
			auto r = evaluate_file(model, val, batch, torch::kCPU);
			fmt::print("{{\"gguf\": \"{}\", \"data\": \"{}\", \"tokens\": {}, \"val_loss\": {:.9f}, "
				   "\"val_perplexity\": {:.4f}, \"seconds\": {:.2f}}}\n",
				   gguf, join_path(dir, "val.bin"), r.tokens, r.loss, r.perplexity, r.seconds);
			return;
		}
		if (ec.path.empty())
			fail("eval needs --checkpoint RUN_DIR (or --gguf FILE)");
		auto [ckpt, cfg, model, dev] = load_for_inference(ec);
		std::string dir = data_dir.empty() ? cfg.get_string("DATA_DIR") : data_dir;
		TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
		auto r = evaluate_file(model, val, batch, dev);
		fmt::print("{{\"checkpoint\": \"{}\", \"data\": \"{}\", \"tokens\": {}, \"val_loss\": {:.9f}, "
			   "\"val_perplexity\": {:.4f}, \"seconds\": {:.2f}}}\n",
			   ckpt, join_path(dir, "val.bin"), r.tokens, r.loss, r.perplexity, r.seconds);
	});

	// ---- export
	auto *ex = app.add_subcommand("export", "Export a trained model");
	static CheckpointArgs xc;
	xc.add_to(ex);
	static std::string format = "hf", out, qtype = "f16", upgrade = "q6_k", roles = "ffn_down", plan = "none";
	static double pct = 0;
	static uint64_t plan_seed = 0;
	ex->add_option("--format", format, "hf (Hugging Face GPT-2: safetensors + config.json) or gguf (llama.cpp)")
		->check(CLI::IsMember({"hf", "gguf"}))
		->capture_default_str();
	ex->add_option("--out", out, "Output folder (hf) or file (gguf)")->required();
	ex->add_option("--type", qtype, "gguf: base type of the weights: f32 f16 q8_0 q4_0 q3_k q4_k q5_k q6_k")
		->capture_default_str();
	ex->add_option("--upgrade", upgrade, "gguf: the higher-precision type of upgraded tensors")->capture_default_str();
	ex->add_option("--roles", roles, "gguf: roles the plan may upgrade (comma-separated: attn_qkv attn_output "
					 "ffn_up ffn_down token_embd position_embd)")
		->capture_default_str();
	ex->add_option("--pct", pct, "gguf: upgrade the top max(1, floor(L pct / 100)) layers per role (0: none)")
		->capture_default_str();
	ex->add_option("--plan", plan, std::string("gguf: ") + kPlanHelp)->capture_default_str();
	ex->add_option("--seed", plan_seed, "gguf: seed of the random plan")->capture_default_str();
	static ScoreSource x_src;
	add_score_options(ex, x_src, true);
	ex->callback([] {
		std::string ckpt = resolve_checkpoint(xc.path, xc.which);
		if (format == "gguf") {
			PlanOptions po = plan_options(qtype, upgrade, roles, pct, plan, plan_seed);
			Config cfg;
			GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
			auto s = export_gguf(model, cfg, ckpt, out, po, x_src);
			fmt::print("exported {} to {} (GGUF v3, llama.cpp gpt2): {} bytes, {:.3f} bits per weight, base {}, "
				   "{} upgraded to {}{}; plan in {}.plan.json\n",
				   ckpt, out, s["file_bytes"].get<uint64_t>(), s["bits_per_weight"].get<double>(), qtype,
				   s["upgraded"].size(), upgrade,
				   s["fallbacks"].empty() ? std::string()
							  : fmt::format(", {} tensors fell back (rows not a multiple of "
									"the block)",
									s["fallbacks"].size()),
				   out);
			return;
		}
		GPT2 model = load_model(ckpt, torch::kCPU);
		export_hf(model, out);
		fmt::print("exported {} to {} (Hugging Face GPT-2 layout)\n", ckpt, out);
	});

	// ---- quantize: a plan's GGUF file and the perplexity of the model it leaves
	auto *qz = app.add_subcommand("quantize", "Quantize a checkpoint by a mixed-precision plan and evaluate it");
	static CheckpointArgs qc;
	qc.add_to(qz);
	static std::string q_base = "q3_k", q_up = "q6_k", q_roles = "ffn_down", q_plan = "none", q_out, q_data;
	static double q_pct = 15;
	static uint64_t q_seed = 0;
	static int q_batch = 8;
	qz->add_option("--base", q_base, "Base type of the weights")->capture_default_str();
	qz->add_option("--upgrade", q_up, "Type of the upgraded tensors")->capture_default_str();
	qz->add_option("--roles", q_roles, "Roles the plan may upgrade (comma-separated)")->capture_default_str();
	qz->add_option("--pct", q_pct, "Upgrade the top max(1, floor(L pct / 100)) layers per role")->capture_default_str();
	qz->add_option("--plan", q_plan, kPlanHelp)->capture_default_str();
	static ScoreSource q_src;
	add_score_options(qz, q_src, true);
	qz->add_option("--seed", q_seed, "Seed of the random plan")->capture_default_str();
	qz->add_option("--batch", q_batch, "Evaluation windows per batch")->capture_default_str();
	qz->add_option("--data", q_data, "Token folder whose val.bin is evaluated (default: the run's DATA_DIR)");
	qz->add_option("--out", q_out, "Output folder (model.gguf, model.gguf.plan.json, quantize.json)")->required();
	qz->callback([] {
		std::string ckpt = resolve_checkpoint(qc.path, qc.which);
		PlanOptions po = plan_options(q_base, q_up, q_roles, q_pct, q_plan, q_seed);
		Config cfg;
		GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
		setup_threads(cfg);
		make_dirs(q_out);
		std::string file = join_path(q_out, "model.gguf");
		auto plan = export_gguf(model, cfg, ckpt, file, po, q_src);
		TokenFile val(join_path(q_data.empty() ? cfg.get_string("DATA_DIR") : q_data, "val.bin"),
			      model->config().vocab_raw);
		auto ref = evaluate_file(model, val, q_batch, torch::kCPU, false);
		GPT2 q = load_gguf_model(file);
		auto got = evaluate_file(q, val, q_batch, torch::kCPU, false);
		nlohmann::json j = {{"checkpoint", ckpt},
				    {"plan", q_plan},
				    {"base", q_base},
				    {"upgrade", q_up},
				    {"roles", q_roles},
				    {"pct", q_pct},
				    {"seed", q_seed},
				    {"upgraded", plan["upgraded"]},
				    {"score_source", plan["score_source"]},
				    {"fallbacks", plan["fallbacks"]},
				    {"tensor_bytes", plan["bytes"]},
				    {"file_bytes", plan["file_bytes"]},
				    {"bits_per_weight", plan["bits_per_weight"]},
				    {"val_tokens", got.tokens},
				    {"val_loss", got.loss},
				    {"val_perplexity", got.perplexity},
				    {"float_val_loss", ref.loss},
				    {"float_val_perplexity", ref.perplexity},
				    {"perplexity_change_pct", 100.0 * (got.perplexity / ref.perplexity - 1.0)}};
		write_file_atomic(join_path(q_out, "quantize.json"), j.dump(2) + "\n");
		fmt::print("{} {} + {} {} {}%: {} bytes ({:.3f} bits/weight), val ppl {:.4f} vs float {:.4f} ({:+.2f}%); "
			   "{}\n",
			   q_plan, q_base, q_up, q_roles, q_pct, plan["bytes"].get<int64_t>(),
			   plan["bits_per_weight"].get<double>(), got.perplexity, ref.perplexity,
			   100.0 * (got.perplexity / ref.perplexity - 1.0), join_path(q_out, "quantize.json"));
	});
}

} // namespace knlp
