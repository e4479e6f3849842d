#include "train/gpt2_tools.h"

#include "core/error.h"
#include "core/fsutil.h"
#include "data/tokens.h"
#include "fim/fisher.h"
#include "optim/optimizer.h"
#include "quant/plan.h"
#include "tier/tier.h"
#include "train/export.h"

namespace knlp {

using json = nlohmann::json;

void check_gpt2_tools(const Settings &cfg, const GPT2Config &mc, const Optimizer &opt)
{
	if (cfg.quant.gguf) {
		auto qp = plan_options_from(cfg.quant);
		if (!mc.vanilla())
			fail("CONFIG_QUANT_GGUF=y: llama.cpp's gpt2 architecture holds only vanilla attention, not "
			     "'{}'",
			     mc.variant);
		if (qp.plan == "squisher" && !opt.has_second_moment())
			fail("CONFIG_QUANT_PLAN_SQUISHER=y: the {} optimizer keeps no second moment (exp_avg_sq)",
			     opt.options().name);
	}
	const int64_t fim_seq = cfg.fim.seq;
	if ((cfg.fim.score || cfg.quant.gguf || cfg.tier.bench) && fim_seq > mc.block_size)
		fail("CONFIG_FIM_SEQ={} exceeds the model's context of {} tokens", fim_seq, mc.block_size);
	if (cfg.fim.compare && !opt.has_second_moment())
		fail("CONFIG_FIM_COMPARE=y: the {} optimizer keeps no second moment (exp_avg_sq) to compare",
		     opt.options().name);
	if (cfg.tier.bench) {
		auto to = tier_options_from(cfg.tier);
		if (to.source == "adam" && !opt.has_second_moment())
			fail("CONFIG_TIER_SOURCE_ADAM=y: the {} optimizer keeps no second moment; choose "
			     "CONFIG_TIER_SOURCE_FIM=y",
			     opt.options().name);
		if (cfg.tier.context > mc.block_size)
			fail("CONFIG_TIER_CONTEXT={} exceeds the model's context of {} tokens", cfg.tier.context,
			     mc.block_size);
	}
}

namespace {

FisherResult fisher_scores(const Settings &cfg, GPT2 &model, const FisherOptions &fo, const std::string &ckpt,
			   const std::string &run_dir)
{
	const std::string val_file = join_path(cfg.data.dir, "val.bin");
	TokenFile data(val_file, model->config().vocab_raw);
	FisherResult fisher = compute_fisher(model, data, fo);
	auto j = fisher_json(fisher);
	j["checkpoint"] = ckpt;
	j["data"] = val_file;
	std::string dir = join_path(run_dir, "fim");
	make_dirs(dir);
	save_fisher(join_path(dir, "fisher.safetensors"), fisher);
	write_file_atomic(join_path(dir, "fim.json"), j.dump(2) + "\n");
	fmt::print("fim: {} windows x {} tokens; {}\n", fo.chunks, fo.seq, join_path(dir, "fim.json"));
	if (cfg.fim.compare) {
		auto c = compare_fisher(read_adam_moments(ckpt), fisher, CompareOptions{});
		c["checkpoint"] = ckpt;
		write_file_atomic(join_path(dir, "compare.json"), c.dump(2) + "\n");
		for (const auto &[k, r] : c["fisher"].items()) {
			const auto &g = r["global"]["raw"];
			fmt::print("fim: Adam's v vs the {} Fisher: Spearman {:.3f}, Pearson {:.3f}, top-10% overlap "
				   "{:.3f} over "
				   "{} elements\n",
				   k, g["spearman"].is_null() ? NAN : g["spearman"].get<double>(),
				   g["pearson"].is_null() ? NAN : g["pearson"].get<double>(),
				   g["top10%"].is_null() ? NAN : g["top10%"].get<double>(),
				   g["elements"].get<int64_t>());
		}
	}
	return fisher;
}

void tier_bench_run(const Settings &cfg, GPT2 &model, FisherResult &fisher, const FisherOptions &fo,
		    const std::string &ckpt, const std::string &run_dir)
{
	const std::string val_file = join_path(cfg.data.dir, "val.bin");
	TierOptions to = tier_options_from(cfg.tier);
	std::map<std::string, double> scores;
	if (to.source == "adam") {
		scores = adam_tier_scores(ckpt);
	} else {
		if (fisher.empirical.empty()) {
			TokenFile data(val_file, model->config().vocab_raw);
			FisherOptions e = fo;
			e.empirical = true;
			e.true_fisher = false;
			fisher = compute_fisher(model, data, e);
		}
		scores = fisher_tensor_means(fisher, "empirical");
	}
	auto mods = tier_modules(model);
	assign_tiers(mods, scores, to);
	TierBenchOptions bo;
	bo.context = static_cast<int>(cfg.tier.context);
	bo.warmup = static_cast<int>(cfg.tier.warmup);
	bo.iters = static_cast<int>(cfg.tier.iters);
	bo.modes = {"untiered"};
	if (cfg.tier.mode != choice::TierMode::Offload)
		bo.modes.push_back("emulated");
	if (cfg.tier.mode != choice::TierMode::Emulated)
		bo.modes.push_back("offload");
	bo.store_dir = join_path(run_dir, "tier");
	TokenFile val(val_file, model->config().vocab_raw);
	val.require_window(bo.context);
	auto x = torch::empty({1, bo.context}, torch::kLong), y = torch::empty({1, bo.context}, torch::kLong);
	val.window(0, bo.context, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
	auto plan = tier_plan_json(mods, to);
	auto j = tier_bench(model, mods, to, bo, x);
	print_tier_bench(j);
	j["plan"] = plan;
	j["checkpoint"] = ckpt;
	write_file_atomic(join_path(run_dir, "tier.json"), j.dump(2) + "\n");
	fmt::print("tier: {}; plan {} ({}), {}\n", join_path(run_dir, "tier.json"), to.source,
		   plan["semantics"].get<std::string>(), "`knlp tier plan` prints it");
}

} // namespace

void run_gpt2_tools(const Settings &cfg, GPT2 &model, const std::string &ckpt, const std::string &run_dir)
{
	FisherOptions fo;
	fo.chunks = static_cast<int>(cfg.fim.chunks);
	fo.seq = static_cast<int>(cfg.fim.seq);
	if (fo.seq == 0)
		fo.seq = std::min(512, model->config().block_size);
	fo.seed = static_cast<uint64_t>(cfg.fim.seed);
	fo.empirical = cfg.fim.kind != choice::FimKind::True;
	fo.true_fisher = cfg.fim.kind != choice::FimKind::Empirical;
	FisherResult fisher;
	if (cfg.fim.score)
		fisher = fisher_scores(cfg, model, fo, ckpt, run_dir);
	if (cfg.tier.bench)
		tier_bench_run(cfg, model, fisher, fo, ckpt, run_dir);
	if (cfg.quant.gguf) {
		std::string file = join_path(run_dir, "model.gguf");
		ScoreSource src;
		src.chunks = static_cast<int>(cfg.fim.chunks);
		src.seq = static_cast<int>(cfg.fim.seq);
		auto s = export_gguf(model, cfg, ckpt, file, plan_options_from(cfg.quant), src);
		fmt::print(
			"gguf: {} ({} bytes, {:.3f} bits per weight, {} upgraded, {} fallbacks; `knlp eval --gguf {}` "
			"for its perplexity)\n",
			file, s["file_bytes"].get<uint64_t>(), s["bits_per_weight"].get<double>(), s["upgraded"].size(),
			s["fallbacks"].size(), file);
	}
}

} // namespace knlp
