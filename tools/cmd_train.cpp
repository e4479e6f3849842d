// knlp train | launch | sample | eval | export | quantize: training a configuration, and
// what is done with a trained GPT-2 afterwards.
#include <sys/resource.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "core/torch_compat.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "models/hf.h"
#include "models/llama.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/ddp.h"
#include "train/device.h"
#include "train/evaluate.h"
#include "fim/fisher.h"
#include "train/export.h"
#include "train/generate.h"
#include "train/loop.h"
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
	setup_threads(l.cfg.settings().core);
	l.dev = select_device(l.cfg.settings().core);
	l.model->to(l.dev);
	return l;
}

// The tokenizer a run's data was prepared with (bytes when its folder has no meta.json).
std::unique_ptr<Tokenizer> run_tokenizer(const Config &cfg)
{
	DataMeta meta = read_data_meta(cfg.settings().data.dir);
	return make_tokenizer(meta.present ? meta.tokenizer : "byte", "");
}

void add_score_options(CLI::App *c, ScoreSource &s)
{
	c->add_option("--fisher", s.fisher_file,
		      "fim, fim-error: fisher.safetensors of `knlp fim score` (default: "
		      "compute the empirical Fisher now)");
	c->add_option("--calib-data", s.data_dir,
		      "fim, fim-error, imatrix: token folder of the calibration "
		      "windows (default: the run's DATA_DIR)");
	c->add_option("--calib-split", s.split, "fim, fim-error, imatrix: calibration split")
		->check(CLI::IsMember({"train", "val"}))
		->capture_default_str();
	c->add_option("--calib-windows", s.chunks, "fim, fim-error, imatrix: calibration windows")
		->capture_default_str();
	c->add_option("--calib-seq", s.seq, "fim, fim-error, imatrix: tokens per window (0: min(512, context))")
		->capture_default_str();
}

const char *kPlanHelp = "none, magnitude (mean |w|), squisher (Adam's mean v), fim (mean Fisher diagonal), "
			"fim-error (Fisher-weighted base-type error), imatrix (activation-weighted base-type error), "
			"random; the recipe fim-q3_k_m (llama.cpp's Q3_K_M with fim upgrades, 15% unless --pct)";

// ---- train

struct TrainArgs {
	ConfigArgs config;
	TrainRequest req{Config(), "", "", false, ""};
};

void define_train(CLI::App *c, TrainArgs &a)
{
	a.config.add_to(c);
	c->add_option("--out", a.req.out_dir, "Run folder (default: OUTPUT_DIR/RUN_NAME)");
	c->add_option("--resume", a.req.resume_dir, "Continue the run in this folder from its latest checkpoint");
	c->add_flag("--force", a.req.force, "Resume even when the configuration differs");
}

void run_train(TrainArgs &a)
{
	if (!a.req.resume_dir.empty() && !a.config.explicit_path()) {
		// Resume with the run's own configuration (plus any --set overrides).
		std::string saved = join_path(a.req.resume_dir, "config");
		if (!file_exists(saved))
			fail("{}: not a run folder (no config file); cannot resume", a.req.resume_dir);
		ConfigArgs run_cfg = a.config;
		run_cfg.path = saved;
		run_cfg.mode = Config::Mode::Saved;
		a.req.cfg = run_cfg.load();
	} else {
		a.req.cfg = a.config.load();
	}
	a.req.command = g_command_line;
	if (int rc = train(a.req))
		std::exit(rc);
}

// ---- launch

struct LaunchArgs {
	int nproc = 2, port = 0, grace = 30;
	std::vector<std::string> args;
};

void define_launch(CLI::App *c, LaunchArgs &a)
{
	c->add_option("--nproc", a.nproc, "Processes")->capture_default_str();
	c->add_option("--port", a.port, "MASTER_PORT (0: a free one)")->capture_default_str();
	c->add_option("--grace", a.grace, "Seconds the others get to stop after one fails")->capture_default_str();
	c->add_option("command", a.args, "The knlp command and its arguments (after --)")->required();
}

void run_launch(LaunchArgs &a)
{
	if (int rc = launch_local(a.nproc, a.args, a.port, a.grace))
		std::exit(rc);
}

// ---- sample

struct SampleArgs {
	CheckpointArgs ck;
	std::string prompt = "The kernel";
	SampleOptions so;
	uint64_t seed = 1337;
	int samples = 1;
};

void define_sample(CLI::App *c, SampleArgs &a)
{
	a.ck.add_to(c);
	c->add_option("--prompt", a.prompt, "Prompt text")->capture_default_str();
	c->add_option("--tokens", a.so.tokens, "Tokens to generate")->capture_default_str();
	c->add_option("--temperature", a.so.temperature, "Sampling temperature (> 0)")->capture_default_str();
	c->add_option("--top-k", a.so.top_k, "Keep the k most likely tokens (0: all)")->capture_default_str();
	c->add_option("--seed", a.seed, "Sampling seed")->capture_default_str();
	c->add_option("--num-samples", a.samples, "Number of samples")->capture_default_str();
}

// Peak resident memory of this process (Linux reports ru_maxrss in KiB).
int64_t peak_rss_bytes()
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return int64_t(ru.ru_maxrss) * 1024;
}

// A Hugging Face folder's tokenizer (tokenizer.json next to the weights).
std::unique_ptr<Tokenizer> hf_folder_tokenizer(const std::string &dir)
{
	if (!file_exists(join_path(dir, "tokenizer.json")))
		fail("{}: no tokenizer.json in the model folder", dir);
	return make_hf_tokenizer(dir);
}

bool is_hf_llama(const std::string &path)
{
	return is_hf_llama_dir(path);
}

void sample_hf(SampleArgs &a)
{
	HfCheckpoint ck(a.ck.path);
	LlamaConfig c = llama_config_from(ck);
	auto tok = hf_folder_tokenizer(a.ck.path);
	setup_threads(Config().settings().core);
	Llama model(c, ck);
	auto ids = tok->encode(a.prompt);
	Rng rng(a.seed);
	for (int i = 0; i < a.samples; i++) {
		int64_t cache_bytes = 0;
		auto t0 = std::chrono::steady_clock::now();
		auto gen = generate(model, ids, a.so, rng, &cache_bytes);
		double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
		fmt::print("{}{}\n", a.prompt, tok->decode(gen));
		int64_t cached =
			std::min<int64_t>(int64_t(std::max<size_t>(ids.size(), 1) + gen.size()) - 1, c.max_positions);
		int64_t analytic = cached * c.cache_values_per_token() * 4;
		fmt::print(stderr,
			   "[{} tokens in {:.2f} s, {:.1f} tok/s, {} ({} heads, {} kv heads); KV cache measured {} "
			   "bytes, analytic {} bytes = {} tokens x {} values x 4 bytes{}]\n",
			   gen.size(), dt, gen.size() / std::max(dt, 1e-9), c.hf_arch, c.n_head, c.n_kv_head,
			   cache_bytes, analytic, cached, c.cache_values_per_token(),
			   cache_bytes == analytic ? "" : " MISMATCH");
		if (i + 1 < a.samples)
			fmt::print("---\n");
	}
}

void run_sample(SampleArgs &a)
{
	if (is_hf_llama(a.ck.path))
		return sample_hf(a);
	auto [ckpt, cfg, model, dev] = load_for_inference(a.ck);
	auto tok = is_hf_model_dir(ckpt) ? (file_exists(join_path(ckpt, "tokenizer.json")) ? make_hf_tokenizer(ckpt)
											   : make_tokenizer("gpt2", ""))
					 : run_tokenizer(cfg);
	auto ids = tok->encode(a.prompt);
	Rng rng(a.seed);
	const auto &mc = model->config();
	// The run's CONFIG_CPU_PRECISION (or KNLP_CPU_PRECISION) on this machine's CPU: under bf16
	// the cache holds bf16 keys and values.
	const Precision prec = inference_precision(cfg.settings(), dev);
	for (int i = 0; i < a.samples; i++) {
		int64_t cache_bytes = 0;
		auto t0 = std::chrono::steady_clock::now();
		std::vector<uint32_t> gen;
		{
			compat::AutocastGuard ag(dev, prec.bf16, torch::kBFloat16);
			gen = generate(model, ids, a.so, rng, dev, &cache_bytes);
		}
		double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
		fmt::print("{}{}\n", a.prompt, tok->decode(gen));
		// Peak cache: the prompt plus all but the last generated token (window permitting).
		int64_t cached =
			std::min<int64_t>(int64_t(std::max<size_t>(ids.size(), 1) + gen.size()) - 1, mc.block_size);
		int64_t elem = prec.bf16 ? 2 : model->parameters()[0].element_size();
		int64_t analytic = cached * mc.cache_values_per_token() * elem;
		fmt::print(stderr,
			   "[{} tokens in {:.2f} s, {:.1f} tok/s, {} attention, {}; KV cache measured {} bytes, "
			   "analytic {} "
			   "bytes = {} tokens x {} values x {} bytes{}]\n",
			   gen.size(), dt, gen.size() / std::max(dt, 1e-9), mc.variant, prec.name(), cache_bytes,
			   analytic, cached, mc.cache_values_per_token(), elem,
			   cache_bytes == analytic ? "" : " MISMATCH");
		if (i + 1 < a.samples)
			fmt::print("---\n");
	}
}

// ---- eval

struct EvalArgs {
	CheckpointArgs ck;
	std::string data_dir, task = "perplexity", gguf, logits;
	int batch = 8, limit = 0, ctx = 0;
};

void define_eval(CLI::App *c, EvalArgs &a)
{
	a.ck.add_to(c, false);
	c->add_option("--gguf", a.gguf, "Evaluate the dequantized model of this GGUF file instead of a checkpoint");
	c->add_option("--task", a.task, "perplexity (val.bin of a token folder) or hellaswag (a jsonl file)")
		->check(CLI::IsMember({"perplexity", "hellaswag"}))
		->capture_default_str();
	c->add_option("--data", a.data_dir,
		      "Token folder (default: the run's DATA_DIR); the .jsonl file for hellaswag");
	c->add_option("--batch", a.batch, "Windows per batch")->capture_default_str();
	c->add_option("--limit", a.limit, "hellaswag: score only the first N examples (0: all)");
	c->add_option("--ctx", a.ctx,
		      "Tokens per window for a Hugging Face folder (0: max_position_embeddings, at most 1024)");
	c->add_option("--logits", a.logits,
		      "Llama-family folder: also write the first window's logits [ctx, vocab] as raw float32 here "
		      "(for comparisons with other implementations)");
}

void eval_hf(EvalArgs &a)
{
	HfCheckpoint ck(a.ck.path);
	LlamaConfig c = llama_config_from(ck);
	if (a.data_dir.empty())
		fail("eval --checkpoint {}: a Hugging Face folder needs --data TOKEN_DIR (knlp prepare --tokenizer {})",
		     a.ck.path, a.ck.path);
	DataMeta meta = read_data_meta(a.data_dir);
	if (!meta.present)
		fail("{}: no meta.json (prepare it with `knlp prepare --tokenizer {}`)", a.data_dir, a.ck.path);
	if (meta.vocab_size > c.vocab)
		fail("{}: the data's vocabulary ({} ids, {}) is larger than the model's ({})", a.data_dir,
		     meta.vocab_size, meta.tokenizer, c.vocab);
	int ctx = a.ctx > 0 ? a.ctx : static_cast<int>(std::min<int64_t>(c.max_positions, 1024));
	if (ctx > c.max_positions)
		fail("eval: --ctx {} exceeds the model's {} positions", ctx, c.max_positions);
	setup_threads(Config().settings().core);
	Llama model(c, ck);
	TokenFile val(join_path(a.data_dir, "val.bin"), static_cast<int>(c.vocab), meta.token_bytes);
	auto r = evaluate_file(model, val, a.batch, ctx);
	if (!a.logits.empty()) {
		if (val.size() <= uint64_t(ctx))
			fail("{}: {} tokens, too few for a window of {}", val.path(), val.size(), ctx);
		std::vector<int64_t> xs(static_cast<size_t>(ctx)), ys(static_cast<size_t>(ctx));
		val.window(0, ctx, xs.data(), ys.data());
		torch::NoGradGuard ng;
		auto lg = model->logits(torch::from_blob(xs.data(), {1, ctx}, torch::kLong)).contiguous();
		write_file_atomic(a.logits,
				  std::string(static_cast<const char *>(lg.data_ptr()), size_t(lg.numel()) * 4));
	}
	fmt::print("{{\"checkpoint\": \"{}\", \"architecture\": \"{}\", \"dtype\": \"{}\", \"params\": {}, "
		   "\"data\": \"{}\", \"ctx\": {}, \"tokens\": {}, \"val_loss\": {:.9f}, \"val_perplexity\": {:.4f}, "
		   "\"seconds\": {:.2f}, \"peak_rss_bytes\": {}}}\n",
		   a.ck.path, c.hf_arch, ck.dtype(), c.num_params(), join_path(a.data_dir, "val.bin"), ctx, r.tokens,
		   r.loss, r.perplexity, r.seconds, peak_rss_bytes());
}

void eval_hellaswag(EvalArgs &a)
{
	if (a.data_dir.empty())
		fail("eval --task hellaswag needs --data FILE.jsonl");
	if (a.ck.path.empty())
		fail("eval --task hellaswag needs --checkpoint RUN_DIR");
	auto items = read_mc_jsonl(a.data_dir); // bad input fails before the model loads
	if (a.limit > 0 && size_t(a.limit) < items.size())
		items.resize(size_t(a.limit));
	auto [ckpt, cfg, model, dev] = load_for_inference(a.ck);
	auto tok = run_tokenizer(cfg);
	auto t0 = std::chrono::steady_clock::now();
	auto r = score_items(items, *tok, model_logprobs(model, dev), size_t(model->config().block_size), true);
	double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	fmt::print("{{\"checkpoint\": \"{}\", \"task\": \"hellaswag\", \"data\": \"{}\", \"examples\": {}, \"acc\": "
		   "{:.4f}, "
		   "\"acc_norm\": {:.4f}, \"chance\": {:.4f}, \"seconds\": {:.2f}}}\n",
		   ckpt, a.data_dir, r.n, r.acc, r.acc_norm, 1.0 / double(items[0].endings.size()), dt);
}

void run_eval(EvalArgs &a)
{
	if (a.task == "hellaswag")
		return eval_hellaswag(a);
	std::string gguf_arch = a.gguf.empty() ? "" : gguf_architecture(a.gguf);
	if (gguf_arch == "llama" || gguf_arch == "qwen2") {
		if (a.data_dir.empty())
			fail("eval --gguf {}: pass --data TOKEN_DIR", a.gguf);
		setup_threads(Config().settings().core);
		Llama model = load_gguf_llama(a.gguf);
		const auto &c = model->config();
		int ctx = a.ctx > 0 ? a.ctx : static_cast<int>(std::min<int64_t>(c.max_positions, 1024));
		if (ctx > c.max_positions)
			fail("eval: --ctx {} exceeds the model's {} positions", ctx, c.max_positions);
		auto val = open_split(a.data_dir, "val", static_cast<int>(c.vocab));
		auto r = evaluate_file(model, *val, a.batch, ctx);
		fmt::print(
			"{{\"gguf\": \"{}\", \"architecture\": \"{}\", \"data\": \"{}\", \"ctx\": {}, \"tokens\": {}, "
			"\"val_loss\": {:.9f}, \"val_perplexity\": {:.4f}, \"seconds\": {:.2f}}}\n",
			a.gguf, c.arch, val->path(), ctx, r.tokens, r.loss, r.perplexity, r.seconds);
		return;
	}
	if (!a.gguf.empty()) {
		std::string stored;
		setup_threads(Config().settings().core);
		GPT2 model = load_gguf_model(a.gguf, &stored);
		std::string dir = a.data_dir.empty() ? stored : a.data_dir;
		if (dir.empty())
			fail("{}: no knlp.data_dir in the file; pass --data DIR", a.gguf);
		TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
		auto r = evaluate_file(model, val, a.batch, torch::kCPU);
		fmt::print("{{\"gguf\": \"{}\", \"data\": \"{}\", \"tokens\": {}, \"val_loss\": {:.9f}, "
			   "\"val_perplexity\": {:.4f}, \"seconds\": {:.2f}}}\n",
			   a.gguf, join_path(dir, "val.bin"), r.tokens, r.loss, r.perplexity, r.seconds);
		return;
	}
	if (a.ck.path.empty())
		fail("eval needs --checkpoint RUN_DIR (or --gguf FILE)");
	if (is_hf_llama(a.ck.path))
		return eval_hf(a);
	auto [ckpt, cfg, model, dev] = load_for_inference(a.ck);
	std::string dir = data_dir_for(cfg, a.data_dir, ckpt);
	auto val = open_split(dir, "val", model->config().vocab_raw);
	const Precision prec = inference_precision(cfg.settings(), dev);
	EvalResult r;
	{
		compat::AutocastGuard ag(dev, prec.bf16, torch::kBFloat16);
		r = evaluate_file(model, *val, a.batch, dev);
	}
	fmt::print("{{\"checkpoint\": \"{}\", \"data\": \"{}\", \"tokens\": {}, \"val_loss\": {:.9f}, "
		   "\"val_perplexity\": {:.4f}, \"seconds\": {:.2f}, \"precision\": \"{}\"}}\n",
		   ckpt, join_path(dir, "val.bin"), r.tokens, r.loss, r.perplexity, r.seconds, prec.name());
}

// ---- export

struct ExportArgs {
	CheckpointArgs ck;
	std::string format = "hf", out, qtype = "f16", upgrade = "q6_k", roles = "ffn_down", plan = "none";
	double pct = 0;
	uint64_t plan_seed = 0;
	ScoreSource src;
};

void define_export(CLI::App *c, ExportArgs &a)
{
	a.ck.add_to(c);
	c->add_option("--format", a.format, "hf (Hugging Face GPT-2: safetensors + config.json) or gguf (llama.cpp)")
		->check(CLI::IsMember({"hf", "gguf"}))
		->capture_default_str();
	c->add_option("--out", a.out, "Output folder (hf) or file (gguf)")->required();
	c->add_option("--type", a.qtype,
		      "gguf: base type of the weights (f32 f16 q8_0 q5_1 q5_0 q4_0 q6_k q5_k q4_k q3_k) "
		      "or a llama.cpp mix (q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m)")
		->capture_default_str();
	c->add_option("--upgrade", a.upgrade, "gguf: the higher-precision type of upgraded tensors")
		->capture_default_str();
	c->add_option("--roles", a.roles,
		      "gguf: roles the plan may upgrade (comma-separated: attn_qkv attn_output "
		      "ffn_up ffn_down token_embd position_embd)")
		->capture_default_str();
	c->add_option("--pct", a.pct, "gguf: upgrade the top max(1, floor(L pct / 100)) layers per role (0: none)")
		->capture_default_str();
	c->add_option("--plan", a.plan, std::string("gguf: ") + kPlanHelp)->capture_default_str();
	c->add_option("--seed", a.plan_seed, "gguf: seed of the random plan")->capture_default_str();
	add_score_options(c, a.src);
}

// What a data-driven plan scores a Llama-family folder with: the empirical Fisher (from
// --fisher, or computed on the calibration windows) for fim and fim-error, activation
// statistics for imatrix. Calibration: --calib-data, else default_data, split --calib-split.
HfPlanData hf_plan_data(const std::string &ckpt, const PlanOptions &po, const ScoreSource &src,
			const std::string &default_data)
{
	HfPlanData d;
	const bool fisher = po.plan == "fim" || po.plan == "fim-error";
	if (po.pct <= 0 || (!fisher && po.plan != "imatrix"))
		return d;
	if (fisher && !src.fisher_file.empty()) {
		d.fisher = load_fisher(src.fisher_file).empirical;
		d.source = src.fisher_file;
		return d;
	}
	std::string dir = src.data_dir.empty() ? default_data : src.data_dir;
	if (dir.empty())
		fail("plan {} on a Hugging Face folder needs --calib-data TOKEN_DIR{}", po.plan,
		     fisher ? " (or --fisher FILE of knlp fim score)" : "");
	HfCheckpoint ck(ckpt);
	Llama m(llama_config_from(ck), ck);
	auto data = open_split(dir, src.split, int(m->config().vocab));
	int seq = src.seq > 0 ? src.seq : int(std::min<int64_t>(512, m->config().max_positions));
	if (fisher) {
		FisherOptions fo;
		fo.chunks = src.chunks;
		fo.seq = seq;
		fo.true_fisher = false;
		d.fisher = compute_fisher(m, *data, fo).empirical;
	} else {
		d.imatrix = collect_imatrix(m, *data, src.chunks, seq);
	}
	d.source = fmt::format("{} windows x {} tokens of {}", src.chunks, seq, data->path());
	return d;
}

void run_export(ExportArgs &a)
{
	std::string ckpt = resolve_checkpoint(a.ck.path, a.ck.which);
	if (a.format == "hf") {
		GPT2 model = load_model(ckpt, torch::kCPU);
		export_hf(model, a.out);
		fmt::print("exported {} to {} (Hugging Face GPT-2 layout)\n", ckpt, a.out);
		return;
	}
	PlanOptions po = plan_options(a.qtype, a.upgrade, a.roles, a.pct, a.plan, a.plan_seed);
	if (is_hf_llama(ckpt)) {
		setup_threads(Config().settings().core);
		auto s = export_hf_gguf(ckpt, a.out, po, hf_plan_data(ckpt, po, a.src, ""));
		fmt::print("exported {} to {} (GGUF v3, llama.cpp {}): {} bytes, {:.3f} bits per weight, base {}, {} "
			   "upgraded to {}; plan in {}.plan.json\n",
			   ckpt, a.out, s["architecture"].get<std::string>(), s["file_bytes"].get<uint64_t>(),
			   s["bits_per_weight"].get<double>(), a.qtype, s["upgraded"].size(), a.upgrade, a.out);
		return;
	}
	Config cfg;
	GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
	auto s = export_gguf(model, cfg.settings(), ckpt, a.out, po, a.src);
	fmt::print(
		"exported {} to {} (GGUF v3, llama.cpp gpt2): {} bytes, {:.3f} bits per weight, base {}, {} upgraded "
		"to {}{}; plan in {}.plan.json\n",
		ckpt, a.out, s["file_bytes"].get<uint64_t>(), s["bits_per_weight"].get<double>(), a.qtype,
		s["upgraded"].size(), a.upgrade,
		s["fallbacks"].empty() ? std::string()
				       : fmt::format(", {} tensors fell back (rows not a multiple of the block)",
						     s["fallbacks"].size()),
		a.out);
}

// ---- quantize: a plan's GGUF file and the perplexity of the model it leaves

struct QuantizeArgs {
	CheckpointArgs ck;
	std::string base = "q3_k", upgrade = "q6_k", roles = "ffn_down", plan = "none", out, data;
	double pct = 15;
	uint64_t seed = 0;
	int batch = 8, ctx = 0;
	ScoreSource src;
};

void define_quantize(CLI::App *c, QuantizeArgs &a)
{
	a.ck.add_to(c);
	c->add_option("--base", a.base, "Base type of the weights, or a llama.cpp mix (q3_k_m, q4_k_m, ...)")
		->capture_default_str();
	c->add_option("--upgrade", a.upgrade, "Type of the upgraded tensors")->capture_default_str();
	c->add_option("--roles", a.roles, "Roles the plan may upgrade (comma-separated)")->capture_default_str();
	c->add_option("--pct", a.pct, "Upgrade the top max(1, floor(L pct / 100)) layers per role")
		->capture_default_str();
	c->add_option("--plan", a.plan, kPlanHelp)->capture_default_str();
	add_score_options(c, a.src);
	c->add_option("--seed", a.seed, "Seed of the random plan")->capture_default_str();
	c->add_option("--batch", a.batch, "Evaluation windows per batch")->capture_default_str();
	c->add_option("--data", a.data, "Token folder whose val.bin is evaluated (default: the run's DATA_DIR)");
	c->add_option("--ctx", a.ctx,
		      "Hugging Face folders: tokens per evaluation window (0: max_position_embeddings, at most 1024)");
	c->add_option("--out", a.out, "Output folder (model.gguf, model.gguf.plan.json, quantize.json)")->required();
}

// quantize.json (atomic) and the one-line summary: the plan's choices, its size and the
// validation perplexity of the quantized model against the float one. `extra` adds fields
// (a Hugging Face model's architecture and context).
void report_quantize(const QuantizeArgs &a, const std::string &ckpt, const nlohmann::json &plan, const EvalResult &ref,
		     const EvalResult &got, const nlohmann::json &extra)
{
	const double change = 100.0 * (got.perplexity / ref.perplexity - 1.0);
	nlohmann::json j = {{"checkpoint", ckpt},
			    {"plan", a.plan},
			    {"base", plan["base"]},
			    {"recipe", plan["recipe"]},
			    {"upgrade", a.upgrade},
			    {"roles", a.roles},
			    {"pct", plan["pct"]},
			    {"seed", a.seed},
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
			    {"perplexity_change_pct", change}};
	j.update(extra);
	write_file_atomic(join_path(a.out, "quantize.json"), j.dump(2) + "\n");
	fmt::print("{} {} + {} {} {}%: {} bytes ({:.3f} bits/weight), val ppl {:.4f} vs float {:.4f} ({:+.2f}%); {}\n",
		   a.plan, plan["base"].get<std::string>(), a.upgrade, a.roles, plan["pct"].get<double>(),
		   plan["bytes"].get<int64_t>(), plan["bits_per_weight"].get<double>(), got.perplexity, ref.perplexity,
		   change, join_path(a.out, "quantize.json"));
}

// A Llama-family folder: the plan's GGUF file, and the perplexity of the model it leaves
// against the folder's own (same windows).
void quantize_hf(QuantizeArgs &a, const PlanOptions &po)
{
	const std::string &ckpt = a.ck.path;
	if (a.data.empty())
		fail("quantize --checkpoint {}: a Hugging Face folder needs --data TOKEN_DIR", ckpt);
	setup_threads(Config().settings().core);
	make_dirs(a.out);
	std::string file = join_path(a.out, "model.gguf");
	// Calibration defaults to the training split of --data (not the text it is judged on).
	auto plan = export_hf_gguf(ckpt, file, po, hf_plan_data(ckpt, po, a.src, a.data));
	HfCheckpoint ck(ckpt);
	LlamaConfig c = llama_config_from(ck);
	int ctx = a.ctx > 0 ? a.ctx : static_cast<int>(std::min<int64_t>(c.max_positions, 1024));
	if (ctx > c.max_positions)
		fail("quantize: --ctx {} exceeds the model's {} positions", ctx, c.max_positions);
	auto val = open_split(a.data, "val", static_cast<int>(c.vocab));
	Llama model(c, ck);
	auto ref = evaluate_file(model, *val, a.batch, ctx, false);
	Llama q = load_gguf_llama(file);
	auto got = evaluate_file(q, *val, a.batch, ctx, false);
	report_quantize(a, ckpt, plan, ref, got, {{"architecture", c.arch}, {"ctx", ctx}});
}

void run_quantize(QuantizeArgs &a)
{
	PlanOptions po = plan_options(a.base, a.upgrade, a.roles, a.pct, a.plan, a.seed);
	if (is_hf_llama(a.ck.path))
		return quantize_hf(a, po);
	std::string ckpt = resolve_checkpoint(a.ck.path, a.ck.which);
	// A Hugging Face GPT-2 folder calibrates on --data's training split unless told otherwise.
	if (is_hf_model_dir(ckpt) && a.src.data_dir.empty())
		a.src.data_dir = a.data;
	Config cfg;
	GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
	setup_threads(cfg.settings().core);
	make_dirs(a.out);
	std::string file = join_path(a.out, "model.gguf");
	auto plan = export_gguf(model, cfg.settings(), ckpt, file, po, a.src);
	TokenFile val(join_path(data_dir_for(cfg, a.data, ckpt), "val.bin"), model->config().vocab_raw);
	// The float reference as llama.cpp would run it (the GGUF's GELU), so the change is the
	// quantization's alone.
	model->set_gelu(Gelu::GgmlTable);
	auto ref = evaluate_file(model, val, a.batch, torch::kCPU, false);
	GPT2 q = load_gguf_model(file);
	auto got = evaluate_file(q, val, a.batch, torch::kCPU, false);
	report_quantize(a, ckpt, plan, ref, got, nlohmann::json::object());
}

} // namespace

void add_train_commands(CLI::App &app)
{
	command<TrainArgs>(app, "train", "Train the model a .config describes", define_train, run_train);
	command<LaunchArgs>(app, "launch",
			    "Start N local processes of a knlp command with torchrun's environment (data-parallel "
			    "training: `knlp launch --nproc 2 -- train ...`)",
			    define_launch, run_launch);
	command<SampleArgs>(app, "sample", "Generate text from a trained model (KV-cached decoding)", define_sample,
			    run_sample);
	command<EvalArgs>(app, "eval", "Perplexity over a validation file, or a multiple-choice task", define_eval,
			  run_eval);
	command<ExportArgs>(app, "export", "Export a trained model", define_export, run_export);
	command<QuantizeArgs>(app, "quantize", "Quantize a checkpoint by a mixed-precision plan and evaluate it",
			      define_quantize, run_quantize);
}

} // namespace knlp
