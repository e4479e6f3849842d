// knlp fim score | fim compare: the diagonal Fisher of a trained GPT-2 and its agreement
// with Adam's second moment (fim/fisher.h).
#include <filesystem>
#include <sys/resource.h>

#include <torch/torch.h>

#include "core/torch_compat.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "data/tokens.h"
#include "fim/fisher.h"
#include "models/hf.h"
#include "models/llama.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/export.h"
#include "tier/tier.h"

namespace knlp {

namespace {

struct FisherArgs {
	std::string ckpt_path, which = "latest", data_dir, split = "val", kind = "both", fisher_file;
	int chunks = 64, seq = 0;
	uint64_t seed = 0;
	void add_to(CLI::App *c, bool from_file)
	{
		c->add_option("--checkpoint", ckpt_path, "Run folder (or one checkpoint folder)")->required();
		c->add_option("--which", which, "latest or best")
			->check(CLI::IsMember({"latest", "best"}))
			->capture_default_str();
		c->add_option("--data", data_dir, "Token folder (default: the run's DATA_DIR)");
		c->add_option("--split", split, "Token file of the folder: val or train")
			->check(CLI::IsMember({"val", "train"}))
			->capture_default_str();
		c->add_option("--chunks", chunks, "Windows (batch 1 each)")->capture_default_str();
		c->add_option("--seq", seq, "Tokens per window (0: 512 or the model's context when shorter)")
			->capture_default_str();
		c->add_option("--kind", kind, "empirical (true labels), true (labels drawn from the model) or both")
			->check(CLI::IsMember({"empirical", "true", "both"}))
			->capture_default_str();
		c->add_option("--seed", seed, "Seed of the true Fisher's label draws")->capture_default_str();
		if (from_file)
			c->add_option("--fisher", fisher_file,
				      "Use this fisher.safetensors of `knlp fim score` instead of "
				      "computing the Fisher");
	}
	FisherOptions options() const
	{
		FisherOptions o;
		o.chunks = chunks;
		o.seq = seq;
		o.seed = seed;
		o.empirical = kind != "true";
		o.true_fisher = kind != "empirical";
		return o;
	}
};

// The Fisher of a checkpoint's model, on the device its configuration selects.
FisherResult fisher_of(const FisherArgs &a, const std::string &ckpt, std::string *data_file)
{
	Config cfg;
	GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
	setup_threads(cfg.settings().core);
	torch::Device dev = select_device(cfg.settings().core);
	model->to(dev);
	std::string dir = data_dir_for(cfg, a.data_dir, ckpt);
	TokenFile data(join_path(dir, a.split + ".bin"), model->config().vocab_raw);
	*data_file = data.path();
	auto o = a.options();
	if (o.seq == 0)
		o.seq = std::min(512, model->config().block_size);
	// Under bf16 autocast the products run in bf16; the squared gradients are of the float32
	// weights and accumulate in float32.
	const Precision prec = inference_precision(cfg.settings(), dev);
	fmt::print("Fisher of {} on {}: {} windows x {} tokens ({}, {})\n", ckpt, data.path(), o.chunks, o.seq, a.kind,
		   prec.name());
	compat::AutocastGuard ag(dev, prec.bf16, torch::kBFloat16);
	return compute_fisher(model, data, o);
}

// Run folder: RUN/fim; a checkpoint folder given directly: its own fim/.
std::string default_out(const std::string &given)
{
	return join_path(given, "fim");
}

std::vector<double> parse_fracs(const std::string &s)
{
	std::vector<double> out;
	size_t pos = 0;
	while (pos <= s.size()) {
		size_t c = s.find(',', pos);
		std::string item = s.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
		try {
			size_t used = 0;
			double v = std::stod(item, &used);
			if (used != item.size() || !(v > 0 && v <= 1))
				throw std::invalid_argument("range");
			out.push_back(v);
		} catch (const std::exception &) {
			fail("fim compare: --topk takes fractions in (0, 1] separated by commas; '{}' is not one",
			     item);
		}
		if (c == std::string::npos)
			break;
		pos = c + 1;
	}
	return out;
}

} // namespace

namespace {

// ---- fim score

struct ScoreArgs {
	FisherArgs fa;
	std::string out;
};

void define_score(CLI::App *c, ScoreArgs &a)
{
	a.fa.add_to(c, false);
	c->add_option("--out", a.out, "Output folder: fim.json and fisher.safetensors (default: RUN/fim)");
}

// A Hugging Face Llama-family folder: the Fisher through the model's gradient taps.
void score_hf(ScoreArgs &a)
{
	const std::string &dir = a.fa.ckpt_path;
	if (a.fa.data_dir.empty())
		fail("fim score --checkpoint {}: a Hugging Face folder needs --data TOKEN_DIR (knlp prepare "
		     "--tokenizer "
		     "{})",
		     dir, dir);
	std::string out =
		a.out.empty() ? "fim-" + std::filesystem::path(dir).lexically_normal().filename().string() : a.out;
	if (out == "fim-")
		out = "fim-model";
	make_dirs(out);
	HfCheckpoint ck(dir);
	LlamaConfig c = llama_config_from(ck);
	setup_threads(Config().settings().core);
	Llama model(c, ck);
	auto data = open_split(a.fa.data_dir, a.fa.split, static_cast<int>(c.vocab));
	auto o = a.fa.options();
	if (o.seq == 0)
		o.seq = static_cast<int>(std::min<int64_t>(512, c.max_positions));
	fmt::print("Fisher of {} ({}, {} parameters, {} weights) on {}: {} windows x {} tokens ({})\n", dir, c.hf_arch,
		   c.num_params(), ck.dtype(), data->path(), o.chunks, o.seq, a.fa.kind);
	auto r = compute_fisher(model, *data, o);
	auto j = fisher_json(r);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	j["checkpoint"] = dir;
	j["data"] = data->path();
	j["peak_rss_bytes"] = int64_t(ru.ru_maxrss) * 1024;
	j["weight_bytes"] = ck.weight_bytes();
	print_fisher_table(r, j);
	save_fisher(join_path(out, "fisher.safetensors"), r);
	write_file_atomic(join_path(out, "fim.json"), j.dump(2) + "\n");
	fmt::print("memory: peak resident {:.2f} GB ({:.2f}x the weights' {:.2f} GB)\n", ru.ru_maxrss * 1024 / 1e9,
		   ru.ru_maxrss * 1024.0 / double(ck.weight_bytes()), ck.weight_bytes() / 1e9);
	fmt::print("wrote {} and {}\n", join_path(out, "fim.json"), join_path(out, "fisher.safetensors"));
}

void run_score(ScoreArgs &a)
{
	if (is_hf_llama_dir(a.fa.ckpt_path))
		return score_hf(a);
	std::string ckpt = resolve_checkpoint(a.fa.ckpt_path, a.fa.which);
	std::string out = a.out.empty() ? default_out(a.fa.ckpt_path) : a.out;
	make_dirs(out); // fails early when the folder cannot be made
	std::string file;
	auto r = fisher_of(a.fa, ckpt, &file);
	auto j = fisher_json(r);
	j["checkpoint"] = ckpt;
	j["data"] = file;
	print_fisher_table(r, j);
	save_fisher(join_path(out, "fisher.safetensors"), r);
	write_file_atomic(join_path(out, "fim.json"), j.dump(2) + "\n");
	fmt::print("wrote {} and {}\n", join_path(out, "fim.json"), join_path(out, "fisher.safetensors"));
}

// ---- fim compare

struct CompareArgs {
	FisherArgs fa;
	std::string out, topk = "0.01,0.1";
};

void define_compare(CLI::App *c, CompareArgs &a)
{
	a.fa.add_to(c, true);
	c->add_option("--topk", a.topk, "Top-k overlaps to report, as fractions of the elements")
		->capture_default_str();
	c->add_option("--out", a.out, "Also write the comparison as JSON here");
}

void run_compare(CompareArgs &a)
{
	CompareOptions co;
	co.topk = parse_fracs(a.topk);
	std::string ckpt = resolve_checkpoint(a.fa.ckpt_path, a.fa.which);
	AdamMoments adam = read_adam_moments(ckpt); // no optimizer state: fails before the Fisher work
	std::string file = a.fa.fisher_file;
	FisherResult r = file.empty() ? fisher_of(a.fa, ckpt, &file) : load_fisher(file);
	auto j = compare_fisher(adam, r, co);
	j["checkpoint"] = ckpt;
	j["fisher_source"] = file;
	j["fisher_windows"] = r.chunks;
	print_compare_table(j);
	if (!a.out.empty()) {
		write_file_atomic(a.out, j.dump(2) + "\n");
		fmt::print("wrote {}\n", a.out);
	}
}

} // namespace

void add_fim_commands(CLI::App *fim)
{
	command<ScoreArgs>(*fim, "score", "Empirical and true diagonal Fisher of a trained GPT-2 on held-out data",
			   define_score, run_score);
	command<CompareArgs>(*fim, "compare", "Agreement of Adam's exp_avg_sq with the diagonal Fisher", define_compare,
			     run_compare);
}

namespace {

struct TierArgs {
	FisherArgs fa;
	std::string source = "adam", cuts = "0.3,0.5", by = "modules", out;
	void add_to(CLI::App *c)
	{
		fa.add_to(c, true);
		c->add_option("--source", source, "Scores from Adam's state (mean |m| + mean sqrt v) or the Fisher")
			->check(CLI::IsMember({"adam", "fim"}))
			->capture_default_str();
		c->add_option("--cuts", cuts, "Cumulative cuts a,b: fast = first a, middle = up to b, slow = rest")
			->capture_default_str();
		c->add_option("--by", by, "Cut fractions count modules (the original) or bytes")
			->check(CLI::IsMember({"modules", "bytes"}))
			->capture_default_str();
	}
	// The plan of the checkpoint's model; *model gets the model.
	nlohmann::json plan(GPT2 *model, std::string *ckpt_out, std::vector<TierModule> *mods, TierOptions *o,
			    Config *cfg_out = nullptr) const
	{
		parse_tier_cuts(cuts, o);
		o->source = source;
		o->by_bytes = by == "bytes";
		std::string ckpt = resolve_checkpoint(fa.ckpt_path, fa.which);
		*ckpt_out = ckpt;
		std::map<std::string, double> scores;
		if (source == "adam") {
			scores = adam_tier_scores(ckpt); // fails before any other work
		} else {
			std::string file = fa.fisher_file;
			FisherArgs f = fa;
			f.kind = "empirical";
			FisherResult r = file.empty() ? fisher_of(f, ckpt, &file) : load_fisher(file);
			scores = fisher_tensor_means(r, "empirical");
		}
		Config cfg;
		*model = load_model(ckpt, torch::kCPU, &cfg);
		setup_threads(cfg.settings().core);
		if (cfg_out)
			*cfg_out = cfg;
		*mods = tier_modules(*model);
		assign_tiers(*mods, scores, *o);
		auto j = tier_plan_json(*mods, *o);
		j["checkpoint"] = ckpt;
		return j;
	}
};

std::vector<std::string> split_list(const std::string &s)
{
	std::vector<std::string> out;
	size_t a = 0;
	while (a <= s.size()) {
		size_t b = s.find(',', a);
		if (b == std::string::npos)
			b = s.size();
		if (b > a)
			out.push_back(s.substr(a, b - a));
		a = b + 1;
	}
	return out;
}

} // namespace

namespace {

// ---- tier plan

void define_plan(CLI::App *c, TierArgs &a)
{
	a.add_to(c);
	c->add_option("--out", a.out, "Also write the plan as JSON here");
}

void run_plan(TierArgs &a)
{
	GPT2 model{nullptr};
	std::string ckpt;
	std::vector<TierModule> mods;
	TierOptions o;
	auto j = a.plan(&model, &ckpt, &mods, &o);
	print_tier_plan(j);
	if (!a.out.empty()) {
		write_file_atomic(a.out, j.dump(2) + "\n");
		fmt::print("wrote {}\n", a.out);
	}
}

// ---- tier bench

struct BenchArgs {
	TierArgs ta;
	TierBenchOptions bo;
	std::string modes = "untiered,emulated,offload";
};

void define_bench(CLI::App *c, BenchArgs &a)
{
	a.ta.add_to(c);
	a.bo.context = 0;
	c->add_option("--context", a.bo.context,
		      "Tokens per forward pass, batch 1 (0: 128 or the model's context when "
		      "shorter)")
		->capture_default_str();
	c->add_option("--warmup", a.bo.warmup, "Untimed passes first")->capture_default_str();
	c->add_option("--iters", a.bo.iters, "Timed passes")->capture_default_str();
	c->add_option("--modes", a.modes, "Comma-separated: untiered emulated offload")->capture_default_str();
	c->add_option("--store", a.bo.store_dir, "Folder of the slow tier's file (default: RUN/tier)");
	c->add_option("--out", a.ta.out, "Also write plan and results as JSON here");
}

void run_bench(BenchArgs &a)
{
	TierBenchOptions bo = a.bo;
	bo.modes = split_list(a.modes);
	if (bo.modes.empty())
		fail("tier bench: --modes names no mode");
	GPT2 model{nullptr};
	std::string ckpt;
	std::vector<TierModule> mods;
	TierOptions o;
	Config cfg;
	auto plan = a.ta.plan(&model, &ckpt, &mods, &o, &cfg);
	torch::Device dev = select_device(cfg.settings().core);
	model->to(dev);
	if (bo.store_dir.empty())
		bo.store_dir = join_path(a.ta.fa.ckpt_path, "tier");
	if (bo.context == 0)
		bo.context = std::min(128, model->config().block_size);
	if (bo.context < 1 || bo.context > model->config().block_size)
		fail("tier bench: --context {} outside [1, {}] (the model's context)", bo.context,
		     model->config().block_size);
	std::string dir = data_dir_for(cfg, a.ta.fa.data_dir, ckpt);
	TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
	val.require_window(bo.context);
	auto x = torch::empty({1, bo.context}, torch::kLong), y = torch::empty({1, bo.context}, torch::kLong);
	val.window(0, bo.context, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
	print_tier_plan(plan);
	// Every mode in the checkpoint's precision on this CPU (bf16 autocast: the weights move in
	// float32, the products run in bf16).
	const Precision prec = inference_precision(cfg.settings(), dev);
	nlohmann::json j;
	{
		compat::AutocastGuard ag(dev, prec.bf16, torch::kBFloat16);
		j = tier_bench(model, mods, o, bo, x);
	}
	j["precision"] = prec.name();
	print_tier_bench(j);
	j["plan"] = plan;
	if (!a.ta.out.empty()) {
		write_file_atomic(a.ta.out, j.dump(2) + "\n");
		fmt::print("wrote {}\n", a.ta.out);
	}
}

} // namespace

void add_tier_commands(CLI::App &app)
{
	auto *tier = app.add_subcommand("tier", "Memory tiering of the weights: plan and inference bench");
	tier->require_subcommand(1);
	command<TierArgs>(*tier, "plan", "Assign modules to fast / middle / slow memory by score", define_plan,
			  run_plan);
	command<BenchArgs>(*tier, "bench", "Inference latency with the tiers emulated and with a real slow tier",
			   define_bench, run_bench);
}

} // namespace knlp
