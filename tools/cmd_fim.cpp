// knlp fim score | fim compare: the diagonal Fisher of a trained GPT-2 and its agreement
// with Adam's second moment (fim/fisher.h).
#include <torch/torch.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "data/tokens.h"
#include "fim/fisher.h"
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
		c->add_option("--which", which, "latest or best")->check(CLI::IsMember({"latest", "best"}))->capture_default_str();
		c->add_option("--data", data_dir, "Token folder (default: the run's DATA_DIR)");
		c->add_option("--split", split, "Token file of the folder: val or train")
			->check(CLI::IsMember({"val", "train"}))
			->capture_default_str();
		c->add_option("--chunks", chunks, "Windows (batch 1 each)")->capture_default_str();
		c->add_option("--seq", seq, "Tokens per window (0: 512 or the model's context when shorter)")->capture_default_str();
		c->add_option("--kind", kind, "empirical (true labels), true (labels drawn from the model) or both")
			->check(CLI::IsMember({"empirical", "true", "both"}))
			->capture_default_str();
		c->add_option("--seed", seed, "Seed of the true Fisher's label draws")->capture_default_str();
		if (from_file)
			c->add_option("--fisher", fisher_file, "Use this fisher.safetensors of `knlp fim score` instead of "
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
	setup_threads(cfg);
	torch::Device dev = select_device(cfg);
	model->to(dev);
	std::string dir = a.data_dir.empty() ? cfg.get_string("DATA_DIR") : a.data_dir;
	TokenFile data(join_path(dir, a.split + ".bin"), model->config().vocab_raw);
	*data_file = data.path();
	auto o = a.options();
	if (o.seq == 0)
		o.seq = std::min(512, model->config().block_size);
	fmt::print("Fisher of {} on {}: {} windows x {} tokens ({})\n", ckpt, data.path(), o.chunks, o.seq, a.kind);
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
			fail("fim compare: --topk takes fractions in (0, 1] separated by commas; '{}' is not one", item);
		}
		if (c == std::string::npos)
			break;
		pos = c + 1;
	}
	return out;
}

} // namespace

void add_fim_commands(CLI::App *fim)
{
	// ---- fim score
	auto *sc = fim->add_subcommand("score", "Empirical and true diagonal Fisher of a trained GPT-2 on held-out data");
	static FisherArgs sa;
	static std::string s_out;
	sa.add_to(sc, false);
	sc->add_option("--out", s_out, "Output folder: fim.json and fisher.safetensors (default: RUN/fim)");
	sc->callback([] {
		std::string ckpt = resolve_checkpoint(sa.ckpt_path, sa.which);
		std::string out = s_out.empty() ? default_out(sa.ckpt_path) : s_out;
		make_dirs(out); // fails early when the folder cannot be made
		std::string file;
		auto r = fisher_of(sa, ckpt, &file);
		auto j = fisher_json(r);
		j["checkpoint"] = ckpt;
		j["data"] = file;
		print_fisher_table(r, j);
		save_fisher(join_path(out, "fisher.safetensors"), r);
		write_file_atomic(join_path(out, "fim.json"), j.dump(2) + "\n");
		fmt::print("wrote {} and {}\n", join_path(out, "fim.json"), join_path(out, "fisher.safetensors"));
	});

	// ---- fim compare
	auto *cp = fim->add_subcommand("compare", "Agreement of Adam's exp_avg_sq with the diagonal Fisher");
	static FisherArgs ca;
	static std::string c_out, topk = "0.01,0.1";
	ca.add_to(cp, true);
	cp->add_option("--topk", topk, "Top-k overlaps to report, as fractions of the elements")->capture_default_str();
	cp->add_option("--out", c_out, "Also write the comparison as JSON here");
	cp->callback([] {
		CompareOptions co;
		co.topk = parse_fracs(topk);
		std::string ckpt = resolve_checkpoint(ca.ckpt_path, ca.which);
		AdamMoments adam = read_adam_moments(ckpt); // no optimizer state: fails before the Fisher work
		std::string file = ca.fisher_file;
		FisherResult r = file.empty() ? fisher_of(ca, ckpt, &file) : load_fisher(file);
		auto j = compare_fisher(adam, r, co);
		j["checkpoint"] = ckpt;
		j["fisher_source"] = file;
		j["fisher_windows"] = r.chunks;
		print_compare_table(j);
		if (!c_out.empty()) {
			write_file_atomic(c_out, j.dump(2) + "\n");
			fmt::print("wrote {}\n", c_out);
		}
	});
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
		setup_threads(cfg);
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

void add_tier_commands(CLI::App &app)
{
	auto *tier = app.add_subcommand("tier", "Memory tiering of the weights: plan and inference bench");
	tier->require_subcommand(1);

	auto *pl = tier->add_subcommand("plan", "Assign modules to fast / middle / slow memory by score");
	static TierArgs pa;
	pa.add_to(pl);
	pl->add_option("--out", pa.out, "Also write the plan as JSON here");
	pl->callback([] {
		GPT2 model{nullptr};
		std::string ckpt;
		std::vector<TierModule> mods;
		TierOptions o;
		auto j = pa.plan(&model, &ckpt, &mods, &o);
		print_tier_plan(j);
		if (!pa.out.empty()) {
			write_file_atomic(pa.out, j.dump(2) + "\n");
			fmt::print("wrote {}\n", pa.out);
		}
	});

	auto *bn = tier->add_subcommand("bench", "Inference latency with the tiers emulated and with a real slow tier");
	static TierArgs ba;
	static TierBenchOptions bo;
	static std::string modes = "untiered,emulated,offload";
	ba.add_to(bn);
	bo.context = 0;
	bn->add_option("--context", bo.context, "Tokens per forward pass, batch 1 (0: 128 or the model's context when "
						"shorter)")
		->capture_default_str();
	bn->add_option("--warmup", bo.warmup, "Untimed passes first")->capture_default_str();
	bn->add_option("--iters", bo.iters, "Timed passes")->capture_default_str();
	bn->add_option("--modes", modes, "Comma-separated: untiered emulated offload")->capture_default_str();
	bn->add_option("--store", bo.store_dir, "Folder of the slow tier's file (default: RUN/tier)");
	bn->add_option("--out", ba.out, "Also write plan and results as JSON here");
	bn->callback([] {
		bo.modes = split_list(modes);
		if (bo.modes.empty())
			fail("tier bench: --modes names no mode");
		GPT2 model{nullptr};
		std::string ckpt;
		std::vector<TierModule> mods;
		TierOptions o;
		Config cfg;
		auto plan = ba.plan(&model, &ckpt, &mods, &o, &cfg);
		torch::Device dev = select_device(cfg);
		model->to(dev);
		if (bo.store_dir.empty())
			bo.store_dir = join_path(ba.fa.ckpt_path, "tier");
		if (bo.context == 0)
			bo.context = std::min(128, model->config().block_size);
		if (bo.context < 1 || bo.context > model->config().block_size)
			fail("tier bench: --context {} outside [1, {}] (the model's context)", bo.context,
			     model->config().block_size);
		std::string dir = ba.fa.data_dir.empty() ? cfg.get_string("DATA_DIR") : ba.fa.data_dir;
		TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
		val.require_window(bo.context);
		auto x = torch::empty({1, bo.context}, torch::kLong), y = torch::empty({1, bo.context}, torch::kLong);
		val.window(0, bo.context, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		print_tier_plan(plan);
		auto j = tier_bench(model, mods, o, bo, x);
		print_tier_bench(j);
		j["plan"] = plan;
		if (!ba.out.empty()) {
			write_file_atomic(ba.out, j.dump(2) + "\n");
			fmt::print("wrote {}\n", ba.out);
		}
	});
}

} // namespace knlp
