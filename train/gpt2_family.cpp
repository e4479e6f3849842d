// GPT-2 as a model family of the training loop: random windows of a token file, the
// cross-entropy of next-token prediction, evaluation by estimated train and validation loss,
// text samples and attention spectra at evaluations, and the end-of-run tools (Fisher
// scores, the tiering bench, GGUF export).
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "core/torch_compat.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "fim/attention_fisher.h"
#include "models/gpt2.h"
#include "optim/optimizer.h"
#include "quant/plan.h"
#include "tier/tier.h"
#include "train/ddp.h"
#include "train/evaluate.h"
#include "train/export.h"
#include "train/families.h"
#include "train/gpt2_tools.h"
#include "train/generate.h"
#include "train/schedule.h"

namespace knlp {

using json = nlohmann::json;

namespace {

std::vector<std::string> split(const std::string &s, char sep)
{
	std::vector<std::string> out;
	std::stringstream ss(s);
	std::string item;
	while (std::getline(ss, item, sep))
		if (!item.empty())
			out.push_back(item);
	return out;
}

class Gpt2Family : public Family {
public:
	explicit Gpt2Family(const Settings &s) : cfg_(s) {}

	const char *name() const override { return "gpt2"; }
	std::string model_name() const override { return "gpt2"; }

	void load_data(RunContext &ctx) override
	{
		const std::string &dir = cfg_.data.dir;
		if (!is_dir(dir))
			fail("{}: dataset folder not found; prepare it with `make prepare` (or set CONFIG_DATA_DIR)",
			     dir);
		DataMeta meta = read_data_meta(dir);
		if (!meta.present && !file_exists(join_path(dir, "train.bin")))
			fail("{}: no train.bin and no meta.json: not a prepared token folder (an interrupted `knlp "
			     "prepare`? "
			     "run it again)",
			     dir);
		mc_ = GPT2Config::from(cfg_, meta.present ? meta.vocab_size : 0);
		if (meta.present && meta.vocab_size > mc_.vocab_size)
			fail("{}: data vocabulary {} exceeds the model's {} (CONFIG_GPT2_VOCAB_SIZE)", dir,
			     meta.vocab_size, mc_.vocab_size);
		train_ = std::make_unique<TokenFile>(join_path(dir, "train.bin"), mc_.vocab_raw);
		val_ = std::make_unique<TokenFile>(join_path(dir, "val.bin"), mc_.vocab_raw);
		train_->require_window(mc_.block_size);
		val_->require_window(mc_.block_size);
		if (meta.present) {
			try {
				tok_ = make_tokenizer(meta.tokenizer, "");
			} catch (const Error &e) {
				fmt::print(stderr, "knlp: warning: no text samples ({})\n", e.what());
			}
		}
		B_ = static_cast<int>(cfg_.train.batch_size);
		T_ = mc_.block_size;
		accum_ = static_cast<int>(cfg_.train.grad_accum);
		world_ = ctx.world;
		rank_ = ctx.rank;
		sched_ = {cfg_.train.learning_rate, cfg_.train.min_lr, cfg_.train.warmup_iters, cfg_.train.max_iters,
			  cfg_.train.decay_lr};
		data_rng_ = Rng(ctx.seed * 0x9e3779b97f4a7c15ULL + 1);
	}

	void build_model(RunContext &ctx) override
	{
		model_ = GPT2(mc_);
		model_->to(ctx.dev);
	}
	torch::nn::Module &model() override { return *model_; }

	Cadence cadence() const override
	{
		Cadence c;
		c.total_steps = cfg_.train.max_iters;
		c.eval_interval = cfg_.train.eval_interval;
		c.micro_batches = accum_;
		c.clip = cfg_.optim.grad_clip;
		c.unit = "tokens";
		c.flops_per_item = mc_.flops_per_token(T_);
		return c;
	}
	QualityMetric quality() const override { return {"loss", "val", false}; }

	// End-of-run tools are refused now, not after training.
	void check(RunContext &ctx) override { check_gpt2_tools(cfg_, model_->config(), *ctx.opt); }

	std::string describe() const override
	{
		return fmt::format("GPT-2 {}x{}x{} ctx {} vocab {}, {} attention", mc_.n_layer, mc_.n_head, mc_.n_embd,
				   T_, mc_.vocab_size, mc_.variant);
	}
	std::string global_batch_text(const RunContext &ctx) const override
	{
		return fmt::format("{} x {} x {} = {} sequences", B_, accum_, ctx.world, global_batch(ctx));
	}
	int64_t global_batch(const RunContext &ctx) const override { return int64_t(B_) * accum_ * ctx.world; }

	double learning_rate(const Position &p) const override { return sched_.at(p.step); }

	// The step's global batch is world x accum micro-batches drawn in order from one stream;
	// rank r takes micro-batches [r accum, (r + 1) accum), so any split of the same global
	// batch over processes sees the same data (and sums the same gradients).
	void begin_step(RunContext &ctx, const Position &) override
	{
		batches_.clear();
		for (int gm = 0; gm < accum_ * world_; gm++) {
			if (gm / accum_ != rank_)
				skip_batch(*train_, data_rng_);
			else
				batches_.push_back(batch(*train_, data_rng_, ctx.dev));
		}
	}

	std::string bf16_unsupported(const RunContext &) const override { return ""; }

	MicroLoss micro_batch(RunContext &ctx, const Position &, int micro) override
	{
		auto &[xt, yt] = batches_[size_t(micro)];
		torch::Tensor loss;
		{
			compat::AutocastGuard ag(ctx.dev, ctx.bf16, torch::kBFloat16);
			loss = model_->forward(xt, yt).loss;
		}
		return mean_micro_loss(loss, double(accum_) * world_);
	}
	double step_items(const Position &) const override { return double(B_) * T_ * accum_ * world_; }

	Evaluation evaluate(RunContext &ctx, const Position &p) override
	{
		model_->eval();
		auto ev = evaluate_language_model(ctx, p, *train_, *val_, cfg_.train.eval_samples,
						  [&](const TokenFile &f, Rng &rng, bool score) {
							  if (!score) {
								  skip_batch(f, rng);
								  return 0.0;
							  }
							  auto [xt, yt] = batch(f, rng, ctx.dev);
							  compat::AutocastGuard ag(ctx.dev, ctx.bf16, torch::kBFloat16);
							  return model_->forward(xt, yt).loss.item<double>();
						  });
		model_->train();
		return ev;
	}
	std::string format_quality(double q) const override { return language_model_quality(q); }

	void after_evaluation(RunContext &ctx, const Position &p, json &rec) override
	{
		if (cfg_.fim.attention_at_eval)
			rec["attention_fisher"] = attention_summary(ctx, p);
		if (cfg_.train.sample_at_eval && tok_)
			write_samples(ctx, p);
	}

	void save_state(json &st, std::vector<NamedTensor> &) const override
	{
		st["data_rng"] = std::to_string(data_rng_.state());
		st["vocab_raw"] = mc_.vocab_raw;
	}
	void load_state(const json &st, const SafetensorsFile &) override
	{
		data_rng_.set_state(std::stoull(st.at("data_rng").get<std::string>()));
	}

	// The original's GPT-2 names: final_iteration, best_val_loss and per-evaluation lists.
	void metrics(json &j, const json &history, const RunEnd &end) const override
	{
		j["attention"] = mc_.variant;
		j["kv_cache_values_per_token"] = mc_.cache_values_per_token();
		j["final_iteration"] = end.pos.step;
		j["best_val_loss"] = std::isnan(end.best) ? json(nullptr) : json(end.best);
		j["best_iteration"] = end.best_step;
		j["tokens_per_second"] = j["throughput"]["value"];
		json m = {{"train_losses", json::array()},	 {"val_losses", json::array()},
			  {"train_perplexities", json::array()}, {"val_perplexities", json::array()},
			  {"learning_rates", json::array()},	 {"timestamps", json::array()},
			  {"iterations", json::array()}};
		for (const auto &h : history) {
			const double tl = h["train_loss"].get<double>(), vl = h["val_loss"].get<double>();
			m["train_losses"].push_back(tl);
			m["val_losses"].push_back(vl);
			m["train_perplexities"].push_back(perplexity_of(tl));
			m["val_perplexities"].push_back(perplexity_of(vl));
			m["learning_rates"].push_back(h["lr"]);
			m["timestamps"].push_back(h["elapsed"]);
			m["iterations"].push_back(h["step"]);
			if (h.contains("sparsity"))
				m["sparsities"].push_back(h["sparsity"]);
		}
		j["metrics"] = m;
		j["figures"] = {{"val_perplexity",
				 std::isnan(end.last_quality) ? json(nullptr) : json(perplexity_of(end.last_quality))},
				{"kv_cache_values_per_token", mc_.cache_values_per_token()}};
	}

	void after_run(RunContext &ctx, const RunEnd &) override
	{
		run_gpt2_tools(cfg_, model_, ctx.last_checkpoint, ctx.run_dir);
	}

private:
	// B random windows of f as (inputs, targets) on the training device. On GPUs the batch
	// is staged in pinned host memory and copied without blocking.
	std::pair<torch::Tensor, torch::Tensor> batch(const TokenFile &f, Rng &rng, torch::Device dev) const
	{
		auto opt = torch::TensorOptions().dtype(torch::kLong).pinned_memory(dev.is_cuda());
		auto x = torch::empty({B_, T_}, opt), y = torch::empty({B_, T_}, opt);
		f.random_batch(rng, B_, T_, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		if (!dev.is_cuda())
			return {x, y};
		return {x.to(dev, /*non_blocking=*/true), y.to(dev, /*non_blocking=*/true)};
	}
	// Another rank's batch: the same generator calls, nothing kept.
	void skip_batch(const TokenFile &f, Rng &rng)
	{
		scratch_.resize(size_t(2) * size_t(B_) * size_t(T_));
		f.random_batch(rng, B_, T_, scratch_.data(), scratch_.data() + size_t(B_) * size_t(T_));
	}

	// The attention Fisher spectrum of one held-out window, fixed per (seed, step).
	json attention_summary(RunContext &ctx, const Position &p)
	{
		torch::NoGradGuard ng;
		model_->eval();
		Rng rng(ctx.seed * 7919ULL + static_cast<uint64_t>(p.step) * 104729ULL + 5);
		auto [xt, yt] = batch(*val_, rng, ctx.dev);
		auto layers = spectrum_layers(mc_.n_layer, cfg_.fim.attention_all_layers);
		auto probs = model_->attention_probs(xt.narrow(0, 0, 1), layers);
		std::vector<HeadSpectrum> heads;
		for (size_t i = 0; i < layers.size(); i++) {
			auto h = attention_spectrum(probs[i], layers[i], static_cast<int>(cfg_.fim.attention_rows),
						    ctx.seed + static_cast<uint64_t>(p.step + layers[i]));
			heads.insert(heads.end(), h.begin(), h.end());
		}
		json summary = json::array(), full = spectrum_json(heads);
		for (const auto &l : full["layers"])
			summary.push_back({{"layer", l["layer"]},
					   {"trace", l["trace"]},
					   {"eigmax", l["eigmax"]},
					   {"energy8", l["energy8"]},
					   {"energy16", l["energy16"]},
					   {"cond", l["cond"]}});
		model_->train();
		return summary;
	}

	// CONFIG_SAMPLE_AT_EVAL: a continuation of every prompt, appended to samples.txt.
	void write_samples(RunContext &ctx, const Position &p)
	{
		SampleOptions so;
		so.tokens = static_cast<int>(cfg_.train.sample_tokens);
		so.temperature = cfg_.train.sample_temperature;
		so.top_k = static_cast<int>(cfg_.train.sample_top_k);
		std::ofstream out(join_path(ctx.run_dir, "samples.txt"), std::ios::app);
		out << "=== step " << p.step << " ===\n";
		int k = 0;
		for (const auto &prompt : split(cfg_.train.sample_prompts, '|')) {
			Rng rng(ctx.seed + static_cast<uint64_t>(p.step) * 31 + static_cast<uint64_t>(k++));
			auto ids = tok_->encode(prompt);
			auto gen = generate(model_, ids, so, rng, ctx.dev);
			std::string text = prompt + tok_->decode(gen);
			out << text << "\n---\n";
			ctx.log({{"type", "sample"}, {"step", p.step}, {"prompt", k - 1}, {"text", text}});
			std::string shown = text.substr(0, 160);
			for (char &c : shown)
				if (c == '\n' || c == '\r')
					c = ' ';
			if (cfg_.debug.verbose || k == 1)
				fmt::print("  sample: {}\n", shown);
		}
	}

	const Settings &cfg_;
	GPT2Config mc_;
	GPT2 model_{nullptr};
	std::unique_ptr<TokenFile> train_, val_;
	std::unique_ptr<Tokenizer> tok_;
	int B_ = 0, T_ = 0, accum_ = 1, world_ = 1, rank_ = 0;
	LrSchedule sched_{};
	Rng data_rng_;
	std::vector<int64_t> scratch_;
	std::vector<std::pair<torch::Tensor, torch::Tensor>> batches_;
};

} // namespace

std::unique_ptr<Family> make_gpt2_family(const Settings &s)
{
	return std::make_unique<Gpt2Family>(s);
}

} // namespace knlp
