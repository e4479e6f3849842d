#include "train/lm_trainer.h"

#include <chrono>
#include <filesystem>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "core/torch_compat.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "models/gpt2.h"
#include "optim/optimizer.h"
#include "prune/pruner.h"
#include "train/checkpoint.h"
#include "train/numerics.h"
#include "train/profile.h"
#include "train/ddp.h"
#include "core/hwmon.h"
#include "train/device.h"
#include "train/evaluate.h"
#include "train/export.h"
#include "fim/fisher.h"
#include "tier/tier.h"
#include "quant/plan.h"
#include "fim/attention_fisher.h"
#include "train/generate.h"
#include "train/schedule.h"

namespace knlp {

using json = nlohmann::json;

const std::vector<std::string> &resume_tolerant_symbols()
{
	static const std::vector<std::string> s = {"MAX_ITERS", "MAX_TIME", "LOG_INTERVAL", "OUTPUT_DIR",
						   "RUN_NAME", "DEBUG_VERBOSE", "SAMPLE_AT_EVAL", "KEEP_CHECKPOINTS",
						   "GNN_EPOCHS"};
	return s;
}

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

} // namespace

std::string open_run_dir(const TrainRequest &req, const Config &cfg, const std::string &prefix, std::string *ckpt)
{
	if (!req.resume_dir.empty()) {
		const std::string &dir = req.resume_dir;
		*ckpt = checkpoint_pointer(dir, "LATEST");
		if (ckpt->empty())
			fail("{}: nothing to resume (no complete checkpoint under checkpoints/)", dir);
		Config saved = Config::parse(read_checkpoint_state(*ckpt).at("config").get<std::string>(),
					     join_path(*ckpt, "state.json"));
		auto d = saved.diff(cfg, resume_tolerant_symbols());
		if (!d.empty() && !req.force)
			fail("{}: configuration differs from the checkpoint's: {}; pass --force to resume anyway", dir,
			     fmt::join(d, ", "));
		return dir;
	}
	std::string dir = req.out_dir;
	if (dir.empty()) {
		std::string name = cfg.get_string("RUN_NAME");
		if (name.empty())
			name = prefix + "_" + now_stamp();
		dir = join_path(cfg.get_string("OUTPUT_DIR"), name);
	}
	if (!checkpoint_pointer(dir, "LATEST").empty())
		fail("{}: already holds a run with checkpoints; continue it with --resume {} or choose --out", dir, dir);
	ckpt->clear();
	return dir;
}

json pruning_summary(const Pruner &p)
{
	if (!p.enabled())
		return {{"method", "none"}};
	PruneStats ps = p.stats();
	const auto &po = p.options();
	return {{"method", method_name(po.method)},
		{"variant", po.method == PruneMethod::State ? fmt::format("bitter{}", po.variant) : ""},
		{"target_sparsity", po.target},
		{"final_sparsity", ps.sparsity},
		{"sparsity_per_tensor", ps.per_tensor},
		{"prunable_parameters", ps.prunable},
		{"mask_bytes", ps.mask_bytes},
		{"w0_bytes", ps.w0_bytes},
		{"score_bytes_peak", ps.score_bytes_peak},
		{"warmup", po.warmup},
		{"frequency", po.frequency},
		{"ramp_end", po.ramp_end}};
}

void truncate_jsonl(const std::string &path, int64_t iter)
{
	if (!file_exists(path))
		return;
	std::istringstream in(read_file(path));
	std::string line, kept;
	while (std::getline(in, line)) {
		try {
			auto j = json::parse(line);
			if (j.value("iter", int64_t(0)) <= iter)
				kept += line + "\n";
		} catch (...) {
			// a torn last line from a kill: dropped
		}
	}
	write_file_atomic(path, kept);
}

namespace {

class Trainer {
public:
	Trainer(TrainRequest req) : req_(std::move(req)), cfg_(req_.cfg) {}
	int run();

private:
	void setup();
	void resume_from(const std::string &ckpt);
	void after_training(); // CONFIG_FIM_SCORE, CONFIG_TIER_BENCH
	void evaluate_now();
	void checkpoint_now(bool best);
	double train_step(double lr);
	json state_json() const;
	void write_metrics(const std::string &status) const;
	void log_jsonl(const json &j);
	double estimate(const TokenFile &f, int split);
	// B random windows of f as (inputs, targets) on the training device.
	std::pair<torch::Tensor, torch::Tensor> batch(const TokenFile &f, Rng &rng) const;
	[[noreturn]] void nonfinite(const std::string &what, double value);
	// CONFIG_NONFINITE_SKIP: drop this step (true) or stop (never returns).
	bool skip_nonfinite(const std::string &what, double value); // CONFIG_NONFINITE_SKIP
	NonfiniteGuard guard_;

	TrainRequest req_;
	Config cfg_;
	torch::Device dev_ = torch::kCPU;
	std::string run_dir_, data_dir_, last_ckpt_;
	std::unique_ptr<TokenFile> train_, val_;
	std::unique_ptr<Tokenizer> tok_;
	GPT2 model_{nullptr};
	std::unique_ptr<Optimizer> opt_;
	std::unique_ptr<Pruner> pruner_;
	LrSchedule sched_{};
	Rng data_rng_;
	int64_t seed_ = 0, iter_ = 0, max_iters_ = 0, last_eval_ = -1, last_ckpt_iter_ = -1;
	int B_ = 0, T_ = 0, accum_ = 1;
	double clip_ = 1.0, best_val_ = std::numeric_limits<double>::infinity(), peak_flops_ = 0;
	int64_t best_iter_ = -1;
	// KNLP_PHASE_TIMES=1: synchronised wall time per phase of the step (adds device syncs;
	// for finding where a step's time goes, printed at the end of the run).
	struct Phases {
		bool on = false;
		int64_t steps = 0;
		double t[5] = {0, 0, 0, 0, 0}; // data, forward, backward, norm + clip, update + prune
		std::chrono::steady_clock::time_point mark;
	} ph_;
	void phase(int i);
	double elapsed_before_ = 0;
	std::chrono::steady_clock::time_point t_start_;
	json hist_ = {{"train_losses", json::array()},	   {"val_losses", json::array()},
		      {"train_perplexities", json::array()}, {"val_perplexities", json::array()},
		      {"learning_rates", json::array()},    {"timestamps", json::array()},
		      {"iterations", json::array()}};
	bool just_evaluated_best_ = false;
	double last_tok_s_ = 0, last_norm_ = 0;
	// Data parallel (CONFIG_DDP under a launcher): rank 0 writes every file.
	std::unique_ptr<Ddp> ddp_;
	int rank_ = 0, world_ = 1, device_index_ = -1;
	bool main_rank() const { return rank_ == 0; }
	std::vector<int64_t> scratch_;
	void skip_batch(const TokenFile &f, Rng &rng); // draw another rank's batch: same RNG calls
	double replica_spread_ = 0;
	std::unique_ptr<HwMonitor> hw_;
	json hw_summary_;
	StepProfiler prof_; // KNLP_PROFILE=FILE: a Chrome trace of a few steps

	double elapsed() const
	{
		return elapsed_before_ +
		       std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
	}
};

void Trainer::setup()
{
	setup_threads(cfg_);
	guard_ = NonfiniteGuard::from(cfg_);
	ph_.on = std::getenv("KNLP_PHASE_TIMES") != nullptr;
	dev_ = select_device(cfg_);
	if (dev_.is_cuda() && device_index_ >= 0)
		dev_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_index_));
	seed_ = cfg_.get_int("SEED");
	if (cfg_.get_bool("DEBUG_DETECT_ANOMALY"))
		torch::autograd::AnomalyMode::set_enabled(true);

	data_dir_ = cfg_.get_string("DATA_DIR");
	if (!is_dir(data_dir_))
		fail("{}: dataset folder not found; prepare it with `make prepare` (or set CONFIG_DATA_DIR)", data_dir_);
	DataMeta meta = read_data_meta(data_dir_);
	if (!meta.present && !file_exists(join_path(data_dir_, "train.bin")))
		fail("{}: no train.bin and no meta.json: not a prepared token folder (an interrupted `knlp prepare`? run "
		     "it again)",
		     data_dir_);
	GPT2Config mc = GPT2Config::from(cfg_, meta.present ? meta.vocab_size : 0);
	if (meta.present && meta.vocab_size > mc.vocab_size)
		fail("{}: data vocabulary {} exceeds the model's {} (CONFIG_GPT2_VOCAB_SIZE)", data_dir_,
		     meta.vocab_size, mc.vocab_size);
	train_ = std::make_unique<TokenFile>(join_path(data_dir_, "train.bin"), mc.vocab_raw);
	val_ = std::make_unique<TokenFile>(join_path(data_dir_, "val.bin"), mc.vocab_raw);
	train_->require_window(mc.block_size);
	val_->require_window(mc.block_size);
	if (meta.present) {
		try {
			tok_ = make_tokenizer(meta.tokenizer, "");
		} catch (const Error &e) {
			fmt::print(stderr, "knlp: warning: no text samples ({})\n", e.what());
		}
	}

	B_ = static_cast<int>(cfg_.get_int("BATCH_SIZE"));
	T_ = mc.block_size;
	accum_ = static_cast<int>(cfg_.get_int("GRAD_ACCUM"));
	clip_ = cfg_.get_float("GRAD_CLIP");
	max_iters_ = cfg_.get_int("MAX_ITERS");
	sched_ = {cfg_.get_float("LEARNING_RATE"), cfg_.get_float("MIN_LR"), cfg_.get_int("WARMUP_ITERS"),
		  max_iters_, cfg_.get_bool("DECAY_LR")};
	if (sched_.lr <= 0 || sched_.min_lr < 0)
		fail("training: CONFIG_LEARNING_RATE must be > 0 and CONFIG_MIN_LR >= 0");

	OptimizerOptions oo = optimizer_options_from(cfg_, sched_.lr);
	PruneOptions po = prune_options_from(cfg_, oo, max_iters_, static_cast<uint64_t>(seed_));

	torch::manual_seed(static_cast<uint64_t>(seed_));
	model_ = GPT2(mc);
	model_->to(dev_);
	std::vector<std::pair<std::string, torch::Tensor>> named;
	for (auto &p : model_->named_parameters())
		named.emplace_back(p.key(), p.value());
	opt_ = std::make_unique<Optimizer>(named, oo);
	pruner_ = std::make_unique<Pruner>(po, *opt_);
	if (cfg_.get_bool("QUANT_GGUF")) { // refused now, not after training
		auto qp = plan_options_from(cfg_);
		if (!model_->config().vanilla())
			fail("CONFIG_QUANT_GGUF=y: llama.cpp's gpt2 architecture holds only vanilla attention, not '{}'",
			     model_->config().variant);
		if (qp.plan == "squisher" && !opt_->has_second_moment())
			fail("CONFIG_QUANT_PLAN_SQUISHER=y: the {} optimizer keeps no second moment (exp_avg_sq)",
			     opt_->options().name);
	}
	const int64_t fim_seq = cfg_.get_int("FIM_SEQ");
	if ((cfg_.get_bool("FIM_SCORE") || cfg_.get_bool("QUANT_GGUF") || cfg_.get_bool("TIER_BENCH")) &&
	    fim_seq > model_->config().block_size)
		fail("CONFIG_FIM_SEQ={} exceeds the model's context of {} tokens", fim_seq, model_->config().block_size);
	if (cfg_.get_bool("FIM_COMPARE") && !opt_->has_second_moment())
		fail("CONFIG_FIM_COMPARE=y: the {} optimizer keeps no second moment (exp_avg_sq) to compare",
		     opt_->options().name);
	if (cfg_.get_bool("TIER_BENCH")) {
		auto to = tier_options_from(cfg_);
		if (to.source == "adam" && !opt_->has_second_moment())
			fail("CONFIG_TIER_SOURCE_ADAM=y: the {} optimizer keeps no second moment; choose "
			     "CONFIG_TIER_SOURCE_FIM=y",
			     opt_->options().name);
		if (cfg_.get_int("TIER_CONTEXT") > model_->config().block_size)
			fail("CONFIG_TIER_CONTEXT={} exceeds the model's context of {} tokens", cfg_.get_int("TIER_CONTEXT"),
			     model_->config().block_size);
	}
	data_rng_ = Rng(static_cast<uint64_t>(seed_) * 0x9e3779b97f4a7c15ULL + 1);
}

void Trainer::resume_from(const std::string &ckpt)
{
	json st = read_checkpoint_state(ckpt);
	load_tensors(join_path(ckpt, "model.safetensors"), named_parameters_of(*model_));
	load_optimizer_state(ckpt, *opt_);
	try {
		iter_ = st.at("iteration").get<int64_t>();
		opt_->set_step_count(st.at("optimizer_step").get<int64_t>());
		data_rng_.set_state(std::stoull(st.at("data_rng").get<std::string>()));
		best_val_ = st.at("best_val_loss").is_null() ? std::numeric_limits<double>::infinity()
							      : st.at("best_val_loss").get<double>();
		best_iter_ = st.value("best_iteration", int64_t(-1));
		guard_.load(st);
		last_eval_ = st.value("last_eval_iteration", int64_t(-1));
		elapsed_before_ = st.value("elapsed_seconds", 0.0);
		hist_ = st.at("metrics");
		if (st.contains("optimizer"))
			opt_->load_extra_state(st.at("optimizer"));
		SafetensorsFile of(join_path(ckpt, "optimizer.safetensors"));
		pruner_->load(st.value("pruning", json::object()),
			      [&](const std::string &name) { return read_tensor(of, name); });
	} catch (const json::exception &e) {
		fail("{}: checkpoint state is incomplete ({})", join_path(ckpt, "state.json"), e.what());
	}
	std::string opt_file = join_path(ckpt, "optimizer.safetensors");
	SafetensorsFile f(opt_file);
	const TensorView &g = f.get("rng.torch_cpu");
	auto state = torch::from_blob(const_cast<void *>(g.data), {static_cast<int64_t>(g.nbytes)}, torch::kByte).clone();
	compat::set_generator_state(torch::kCPU, state);
	last_ckpt_iter_ = iter_;
	last_ckpt_ = ckpt;
	if (main_rank()) {
		truncate_jsonl(join_path(run_dir_, "metrics.jsonl"), iter_);
		fmt::print("resumed {} at iteration {}\n", ckpt, iter_);
	}
}

json Trainer::state_json() const
{
	json st = {{"iteration", iter_},
		{"optimizer_step", opt_->step_count()},
		{"data_rng", std::to_string(data_rng_.state())},
		{"best_val_loss", std::isfinite(best_val_) ? json(best_val_) : json(nullptr)},
		{"best_iteration", best_iter_},
		{"last_eval_iteration", last_eval_},
		{"elapsed_seconds", elapsed()},
		{"seed", seed_},
		{"threads", torch::get_num_threads()},
		{"code_version", code_version()},
		{"config", cfg_.to_text()},
		{"vocab_raw", model_->config().vocab_raw},
		{"optimizer", opt_->extra_state()},
		{"pruning", pruner_->extra_state()},
		{"metrics", hist_}};
	guard_.save(st);
	return st;
}

void Trainer::checkpoint_now(bool best)
{
	if (!main_rank()) { // rank 0 writes; the others keep the same bookkeeping
		last_ckpt_iter_ = iter_;
		return;
	}
	CheckpointWriter w{run_dir_, static_cast<int>(cfg_.get_int("KEEP_CHECKPOINTS"))};
	auto extra = optimizer_tensors(*opt_);
	for (auto &[name, t] : pruner_->state_tensors())
		extra.push_back({name, t});
	extra.push_back({"rng.torch_cpu", compat::generator_state(torch::kCPU)});
	last_ckpt_ = w.save(iter_, *model_, extra, state_json(), best);
	last_ckpt_iter_ = iter_;
	write_metrics("running");
}

void Trainer::write_metrics(const std::string &status) const
{
	if (!main_rank())
		return;
	json j = {{"model", "gpt2"},
		  {"attention", model_->config().variant},
		  {"kv_cache_values_per_token", model_->config().cache_values_per_token()},
		  {"status", status},
		  {"final_iteration", iter_},
		  {"best_val_loss", std::isfinite(best_val_) ? json(best_val_) : json(nullptr)},
		  {"best_iteration", best_iter_},
		  {"seed", seed_},
		  {"parameters", model_->config().num_params()},
		  {"total_time", elapsed()},
		  {"tokens_per_second", last_tok_s_},
		  {"code_version", code_version()},
		  {"optimizer", opt_->options().name},
		  {"optimizer_state_bytes", opt_->state_bytes()},
		  {"skipped_steps", guard_.skipped},
		  {"metrics", hist_}};
	j["pruning"] = pruning_summary(*pruner_);
	if (hw_)
		j["hardware"] = hw_summary_.is_null() ? hw_->summary() : hw_summary_;
	if (ddp_)
		j["ddp"] = ddp_record(*ddp_, cfg_, int64_t(B_) * accum_ * world_, replica_spread_);
	write_file_atomic(join_path(run_dir_, "training_metrics.json"), j.dump(2) + "\n");
}

void Trainer::log_jsonl(const json &j)
{
	if (!main_rank() || !cfg_.get_bool("TRACKER_JSONL"))
		return;
	std::ofstream f(join_path(run_dir_, "metrics.jsonl"), std::ios::app);
	f << j.dump() << "\n";
}

std::pair<torch::Tensor, torch::Tensor> Trainer::batch(const TokenFile &f, Rng &rng) const
{
	// On GPUs the batch is staged in pinned host memory and copied without blocking.
	auto opt = torch::TensorOptions().dtype(torch::kLong).pinned_memory(dev_.is_cuda());
	auto x = torch::empty({B_, T_}, opt), y = torch::empty({B_, T_}, opt);
	f.random_batch(rng, B_, T_, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
	if (!dev_.is_cuda())
		return {x, y};
	return {x.to(dev_, /*non_blocking=*/true), y.to(dev_, /*non_blocking=*/true)};
}

void Trainer::skip_batch(const TokenFile &f, Rng &rng)
{
	scratch_.resize(size_t(2) * size_t(B_) * size_t(T_));
	f.random_batch(rng, B_, T_, scratch_.data(), scratch_.data() + size_t(B_) * size_t(T_));
}

double Trainer::estimate(const TokenFile &f, int split)
{
	torch::NoGradGuard ng;
	model_->eval();
	// Batches depend only on (seed, iteration, split): evaluation never disturbs training.
	Rng rng(static_cast<uint64_t>(seed_) * 1000003ULL + static_cast<uint64_t>(iter_) * 7919ULL + split);
	int n = static_cast<int>(cfg_.get_int("EVAL_SAMPLES"));
	double total = 0;
	for (int i = 0; i < n; i++) {
		if (i % world_ != rank_) { // data parallel: every rank scores its share of the batches
			skip_batch(f, rng);
			continue;
		}
		auto [xt, yt] = batch(f, rng);
		compat::AutocastGuard ag(dev_, cfg_.get_bool("AMP_BF16"), torch::kBFloat16);
		total += model_->forward(xt, yt).loss.item<double>();
	}
	model_->train();
	if (ddp_)
		total = ddp_->sum({total})[0];
	return total / n;
}

void Trainer::evaluate_now()
{
	double tl = estimate(*train_, 0), vl = estimate(*val_, 1);
	if (!std::isfinite(vl) || !std::isfinite(tl))
		nonfinite("evaluation loss", std::isfinite(vl) ? tl : vl);
	hist_["train_losses"].push_back(tl);
	hist_["val_losses"].push_back(vl);
	hist_["train_perplexities"].push_back(perplexity_of(tl));
	hist_["val_perplexities"].push_back(perplexity_of(vl));
	hist_["learning_rates"].push_back(sched_.at(iter_));
	hist_["timestamps"].push_back(elapsed());
	hist_["iterations"].push_back(iter_);
	just_evaluated_best_ = iter_ > 0 && vl < best_val_;
	if (just_evaluated_best_) {
		best_val_ = vl;
		best_iter_ = iter_;
	}
	last_eval_ = iter_;
	if (!main_rank())
		return; // spectra, sparsity records and samples come from rank 0
	fmt::print("{}step {}: train loss {:.4f}, val loss {:.4f} (ppl {:.2f}){}\n", isatty(fileno(stdout)) ? "\r\033[K" : "", iter_, tl, vl, perplexity_of(vl),
		   just_evaluated_best_ ? " [best]" : "");
	json rec = {{"type", "eval"}, {"iter", iter_}, {"train_loss", tl}, {"val_loss", vl},
		    {"val_perplexity", perplexity_of(vl)}, {"elapsed", elapsed()}};
	if (cfg_.get_bool("FIM_ATTENTION_AT_EVAL")) {
		// One held-out window, fixed per (seed, iteration): evaluation never disturbs training.
		torch::NoGradGuard ng;
		model_->eval();
		Rng rng(static_cast<uint64_t>(seed_) * 7919ULL + static_cast<uint64_t>(iter_) * 104729ULL + 5);
		auto [xt, yt] = batch(*val_, rng);
		auto layers = spectrum_layers(model_->config().n_layer, cfg_.get_bool("FIM_ATTENTION_ALL_LAYERS"));
		auto probs = model_->attention_probs(xt.narrow(0, 0, 1), layers);
		std::vector<HeadSpectrum> heads;
		for (size_t i = 0; i < layers.size(); i++) {
			auto h = attention_spectrum(probs[i], layers[i], static_cast<int>(cfg_.get_int("FIM_ATTENTION_ROWS")),
						    static_cast<uint64_t>(seed_ + iter_ + layers[i]));
			heads.insert(heads.end(), h.begin(), h.end());
		}
		json summary = json::array(), full = spectrum_json(heads);
		for (const auto &l : full["layers"])
			summary.push_back({{"layer", l["layer"]}, {"trace", l["trace"]}, {"eigmax", l["eigmax"]},
					   {"energy8", l["energy8"]}, {"energy16", l["energy16"]}, {"cond", l["cond"]}});
		rec["attention_fisher"] = summary;
		model_->train();
	}
	if (pruner_->enabled()) {
		PruneStats ps = pruner_->stats();
		rec["sparsity"] = ps.sparsity;
		rec["sparsity_per_tensor"] = ps.per_tensor;
		hist_["sparsities"].push_back(ps.sparsity);
	}
	log_jsonl(rec);
	if (cfg_.get_bool("SAMPLE_AT_EVAL") && tok_) {
		SampleOptions so;
		so.tokens = static_cast<int>(cfg_.get_int("SAMPLE_TOKENS"));
		so.temperature = cfg_.get_float("SAMPLE_TEMPERATURE");
		so.top_k = static_cast<int>(cfg_.get_int("SAMPLE_TOP_K"));
		std::ofstream out(join_path(run_dir_, "samples.txt"), std::ios::app);
		out << "=== step " << iter_ << " ===\n";
		int k = 0;
		for (const auto &prompt : split(cfg_.get_string("SAMPLE_PROMPTS"), '|')) {
			Rng rng(static_cast<uint64_t>(seed_) + static_cast<uint64_t>(iter_) * 31 + k++);
			auto ids = tok_->encode(prompt);
			auto gen = generate(model_, ids, so, rng, dev_);
			std::string text = prompt + tok_->decode(gen);
			out << text << "\n---\n";
			std::string shown = text.substr(0, 160);
			for (char &c : shown)
				if (c == '\n' || c == '\r')
					c = ' ';
			if (cfg_.get_bool("DEBUG_VERBOSE") || k == 1)
				fmt::print("  sample: {}\n", shown);
		}
	}
}

[[noreturn]] void Trainer::nonfinite(const std::string &what, double value)
{
	write_metrics("failed");
	std::string keep = last_ckpt_.empty() ? "no checkpoint was written yet" : "last good checkpoint: " + last_ckpt_;
	fail("{}: non-finite {} ({}) at iteration {}; training stopped, {}", run_dir_, what, value, iter_, keep);
}

bool Trainer::skip_nonfinite(const std::string &what, double value)
{
	return guard_.skip_step(
		what, value, [&](const std::string &w) { nonfinite(w, value); },
		[&](nlohmann::json rec) {
			rec.update({{"iter", iter_}});
			log_jsonl(rec);
		});
}

void Trainer::after_training()
{
	const bool score = cfg_.get_bool("FIM_SCORE"), tier = cfg_.get_bool("TIER_BENCH");
	if (!score && !tier)
		return;
	std::string val_file = join_path(cfg_.get_string("DATA_DIR"), "val.bin");
	FisherOptions fo;
	fo.chunks = static_cast<int>(cfg_.get_int("FIM_CHUNKS"));
	fo.seq = static_cast<int>(cfg_.get_int("FIM_SEQ"));
	if (fo.seq == 0)
		fo.seq = std::min(512, model_->config().block_size);
	fo.seed = static_cast<uint64_t>(cfg_.get_int("FIM_SEED"));
	fo.empirical = !cfg_.get_bool("FIM_KIND_TRUE");
	fo.true_fisher = !cfg_.get_bool("FIM_KIND_EMPIRICAL");
	FisherResult fisher;
	if (score) {
		TokenFile data(val_file, model_->config().vocab_raw);
		fisher = compute_fisher(model_, data, fo);
		auto j = fisher_json(fisher);
		j["checkpoint"] = last_ckpt_;
		j["data"] = val_file;
		std::string dir = join_path(run_dir_, "fim");
		make_dirs(dir);
		save_fisher(join_path(dir, "fisher.safetensors"), fisher);
		write_file_atomic(join_path(dir, "fim.json"), j.dump(2) + "\n");
		fmt::print("fim: {} windows x {} tokens; {}\n", fo.chunks, fo.seq, join_path(dir, "fim.json"));
		if (cfg_.get_bool("FIM_COMPARE")) {
			auto c = compare_fisher(read_adam_moments(last_ckpt_), fisher, CompareOptions{});
			c["checkpoint"] = last_ckpt_;
			write_file_atomic(join_path(dir, "compare.json"), c.dump(2) + "\n");
			for (const auto &[k, r] : c["fisher"].items()) {
				const auto &g = r["global"]["raw"];
				fmt::print("fim: Adam's v vs the {} Fisher: Spearman {:.3f}, Pearson {:.3f}, top-10% overlap {:.3f} "
					   "over {} elements\n",
					   k, g["spearman"].is_null() ? NAN : g["spearman"].get<double>(),
					   g["pearson"].is_null() ? NAN : g["pearson"].get<double>(),
					   g["top10%"].is_null() ? NAN : g["top10%"].get<double>(), g["elements"].get<int64_t>());
			}
		}
	}
	if (tier) {
		TierOptions to = tier_options_from(cfg_);
		std::map<std::string, double> scores;
		if (to.source == "adam") {
			scores = adam_tier_scores(last_ckpt_);
		} else {
			if (fisher.empirical.empty()) {
				TokenFile data(val_file, model_->config().vocab_raw);
				FisherOptions e = fo;
				e.empirical = true;
				e.true_fisher = false;
				fisher = compute_fisher(model_, data, e);
			}
			scores = fisher_tensor_means(fisher, "empirical");
		}
		auto mods = tier_modules(model_);
		assign_tiers(mods, scores, to);
		TierBenchOptions bo;
		bo.context = static_cast<int>(cfg_.get_int("TIER_CONTEXT"));
		bo.warmup = static_cast<int>(cfg_.get_int("TIER_WARMUP"));
		bo.iters = static_cast<int>(cfg_.get_int("TIER_ITERS"));
		bo.modes = {"untiered"};
		if (!cfg_.get_bool("TIER_MODE_OFFLOAD"))
			bo.modes.push_back("emulated");
		if (!cfg_.get_bool("TIER_MODE_EMULATED"))
			bo.modes.push_back("offload");
		bo.store_dir = join_path(run_dir_, "tier");
		TokenFile val(val_file, model_->config().vocab_raw);
		val.require_window(bo.context);
		auto x = torch::empty({1, bo.context}, torch::kLong), y = torch::empty({1, bo.context}, torch::kLong);
		val.window(0, bo.context, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		auto plan = tier_plan_json(mods, to);
		auto j = tier_bench(model_, mods, to, bo, x);
		print_tier_bench(j);
		j["plan"] = plan;
		j["checkpoint"] = last_ckpt_;
		write_file_atomic(join_path(run_dir_, "tier.json"), j.dump(2) + "\n");
		fmt::print("tier: {}; plan {} ({}), {}\n", join_path(run_dir_, "tier.json"), to.source,
			   plan["semantics"].get<std::string>(), "`knlp tier plan` prints it");
	}
}

void Trainer::phase(int i)
{
	if (!ph_.on)
		return;
	synchronize(dev_);
	auto now = std::chrono::steady_clock::now();
	if (i >= 0 && iter_ >= 10) // after warm-up
		ph_.t[i] += std::chrono::duration<double>(now - ph_.mark).count();
	ph_.mark = now;
}

double Trainer::train_step(double lr)
{
	// The losses are read once, after every backward pass was queued: no device sync
	// between the forward and the backward pass. A non-finite loss still stops the run
	// before the update.
	std::vector<torch::Tensor> losses;
	phase(-1);
	// The step's global batch is world x accum micro-batches drawn in order from one stream;
	// rank r takes micro-batches [r accum, (r + 1) accum), so any split of the same global
	// batch over processes sees the same data (and sums the same gradients).
	const int global = accum_ * world_;
	if (ddp_) // dropout differs per rank but never depends on a resume
		torch::manual_seed(static_cast<uint64_t>(seed_) * 1000003ULL + static_cast<uint64_t>(iter_) * 7919ULL +
				   static_cast<uint64_t>(rank_));
	for (int gm = 0; gm < global; gm++) {
		if (gm / accum_ != rank_) {
			skip_batch(*train_, data_rng_);
			continue;
		}
		const int micro = gm - rank_ * accum_;
		const bool sync = ddp_ && micro == accum_ - 1;
		auto [xt, yt] = batch(*train_, data_rng_);
		phase(0);
		torch::Tensor loss;
		{
			compat::AutocastGuard ag(dev_, cfg_.get_bool("AMP_BF16"), torch::kBFloat16);
			loss = model_->forward(xt, yt).loss;
		}
		if (fault_nan("loss"))
			loss = loss * std::numeric_limits<float>::quiet_NaN();
		losses.push_back(loss.detach().to(torch::kFloat).reshape({1}));
		phase(1);
		if (sync)
			ddp_->begin_sync();
		(loss / global).backward();
		if (sync)
			ddp_->end_sync(); // gradients summed over ranks (sent during the backward pass)
		phase(2);
	}
	auto lv_all = torch::cat(losses).to(torch::kCPU, torch::kDouble);
	double loss_sum = 0;
	auto drop = [&] {
		for (auto &s : opt_->state())
			s.param.mutable_grad().reset();
		return std::numeric_limits<double>::quiet_NaN();
	};
	for (int micro = 0; micro < accum_; micro++)
		loss_sum += lv_all[micro].item<double>();
	if (ddp_)
		loss_sum = ddp_->sum({loss_sum})[0]; // a non-finite loss on any rank is seen by all
	if (!std::isfinite(loss_sum) && skip_nonfinite("loss", loss_sum))
		return drop();
	pruner_->mask_grads();
	const double factor = opt_->before_clip();
	double norm = opt_->grad_norm();
	if (!std::isfinite(norm)) {
		if (skip_nonfinite("gradient (first in " + opt_->first_nonfinite_grad() + ")", norm))
			return drop();
	}
	guard_.step_ok();
	double scale = clip_ > 0 && norm > clip_ ? clip_ / (norm + 1e-6) : 1.0;
	phase(3);
	opt_->step(lr * factor, scale);
	pruner_->after_step(opt_->step_count());
	phase(4);
	if (ph_.on)
		ph_.steps++;
	for (auto &s : opt_->state())
		s.param.mutable_grad().reset();
	last_norm_ = norm;
	return loss_sum / global;
}

int Trainer::run()
{
	std::string ckpt;
	{
		DdpStart st = start_data_parallel(req_, cfg_, "gpt2");
		ddp_ = std::move(st.ddp);
		rank_ = st.rank, world_ = st.world, device_index_ = st.local_rank;
		run_dir_ = st.run_dir;
		ckpt = st.ckpt;
	}
	setup();
	if (ddp_) {
		std::vector<torch::Tensor> ps;
		for (auto &p : model_->parameters())
			ps.push_back(p);
		ddp_->broadcast(ps); // identical initial weights (they are seeded alike; this makes sure)
		ddp_->attach(ps, cfg_.get_int("DDP_BUCKET_MB") << 20, cfg_.get_bool("DDP_OVERLAP"));
	}
	if (cfg_.get_bool("DEBUG_DRY_RUN")) {
		fmt::print("dry run: GPT-2 {} layers, {} heads, width {}, context {}, vocab {} -> {} parameters\n",
			   model_->config().n_layer, model_->config().n_head, model_->config().n_embd, T_,
			   model_->config().vocab_size, model_->count_parameters());
		return 0;
	}
	if (main_rank())
		record_run(run_dir_, cfg_, req_.command,
			   {{"torch_version", torch_version()}, {"device", dev_.str()},
			    {"threads", std::to_string(torch::get_num_threads())}, {"resumed_from", ckpt},
			    {"world_size", std::to_string(world_)}});
	t_start_ = std::chrono::steady_clock::now();
	if (!ckpt.empty())
		resume_from(ckpt);
	if (main_rank() && cfg_.get_bool("HW_MONITOR"))
		hw_ = std::make_unique<HwMonitor>(join_path(run_dir_, "hw_stats.json"), dev_.is_cuda() ? int(dev_.index()) : -1);
	silence_other_ranks(rank_);

	const char *pf = std::getenv("KNLP_PEAK_FLOPS");
	peak_flops_ = pf ? std::atof(pf) : measure_matmul_peak(dev_, cfg_.get_bool("AMP_BF16"));
	const auto &mc = model_->config();
	double flops_tok = mc.flops_per_token(T_);
	fmt::print("run {}: GPT-2 {}x{}x{} ctx {} vocab {}, {} attention: {:.3f}M parameters on {} ({} threads), seed {}\n",
		   run_dir_, mc.n_layer, mc.n_head, mc.n_embd, T_, mc.vocab_size, mc.variant,
		   model_->count_parameters() / 1e6, dev_.str(), torch::get_num_threads(), seed_);
	if (pruner_->enabled()) {
		const auto &po = pruner_->options();
		fmt::print("optimizer {}; pruning {}{} to {:.1f}% of {} prunable weights (warmup {}, every {} steps, ramp end {})\n",
			   opt_->options().name, method_name(po.method),
			   po.method == PruneMethod::State ? fmt::format(" (bitter{})", po.variant) : "", 100 * po.target,
			   pruner_->stats().prunable, po.warmup, po.frequency, po.ramp_end);
	} else {
		fmt::print("optimizer {}; no pruning\n", opt_->options().name);
	}

	const int64_t eval_interval = cfg_.get_int("EVAL_INTERVAL"), log_interval = cfg_.get_int("LOG_INTERVAL"),
		      ckpt_interval = cfg_.get_int("CHECKPOINT_INTERVAL"), max_time = cfg_.get_int("MAX_TIME");
	const double tokens_per_step = double(B_) * T_ * accum_ * world_;
	if (ddp_)
		fmt::print("data parallel: {} processes ({}), global batch {} x {} x {} = {} sequences, buckets of {} MiB{}\n",
			   world_, ddp_->backend(), B_, accum_, world_, int64_t(B_) * accum_ * world_,
			   cfg_.get_int("DDP_BUCKET_MB"), cfg_.get_bool("DDP_OVERLAP") ? ", sent during the backward pass" : "");
	Progress prog("train", static_cast<double>(max_iters_ - iter_), "it");
	int64_t start_iter = iter_;
	auto window_t0 = std::chrono::steady_clock::now();
	int64_t window_it0 = iter_;
	bool stop = false;
	model_->train();
	while (true) {
		bool final_point = iter_ >= max_iters_ || stop;
		if ((iter_ % eval_interval == 0 || final_point) && last_eval_ != iter_)
			evaluate_now();
		else
			just_evaluated_best_ = false;
		bool due = iter_ > 0 && (ckpt_interval > 0 ? iter_ % ckpt_interval == 0 : last_eval_ == iter_);
		if ((due || just_evaluated_best_ || final_point) && last_ckpt_iter_ != iter_)
			checkpoint_now(just_evaluated_best_);
		if (final_point)
			break;
		double lr = sched_.at(iter_);
		prof_.before_step(iter_ + 1, dev_);
		double loss = train_step(lr);
		iter_++;
		prof_.after_step(iter_, dev_);
		fault_point("after_step");
		if (max_time > 0 && (elapsed() >= double(max_time) || fault_time_up("after_step")))
			stop = true;
		if (ddp_) { // the stop decision is agreed by every rank
			ddp_->heartbeat(iter_);
			stop = ddp_->max({stop ? 1.0 : 0.0})[0] > 0;
		}
		if (iter_ % log_interval == 0 || stop || iter_ == max_iters_) {
			synchronize(dev_);
			double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_t0).count();
			double tok_s = dt > 0 ? tokens_per_step * double(iter_ - window_it0) / dt : 0;
			last_tok_s_ = tok_s;
			double mfu = peak_flops_ > 0 ? flops_tok * tok_s / (peak_flops_ * world_) : 0;
			window_t0 = std::chrono::steady_clock::now();
			window_it0 = iter_;
			json rec = {{"type", "train"}, {"iter", iter_}, {"loss", loss}, {"lr", lr}, {"grad_norm", last_norm_},
				    {"tokens_per_sec", tok_s}, {"mfu", mfu}, {"elapsed", elapsed()}};
			std::string sp;
			if (pruner_->enabled()) {
				double s = pruner_->stats().sparsity;
				rec["sparsity"] = s;
				sp = fmt::format(" sparsity {:.1f}%", 100 * s);
			}
			log_jsonl(rec);
			prog.update(static_cast<double>(iter_ - start_iter),
				    fmt::format("it {} loss {:.4f} lr {:.2e} {:.0f} tok/s MFU {:.1f}%{}", iter_, loss, lr,
						tok_s, 100 * mfu, sp),
				    true);
		}
	}
	prog.finish();
	if (ddp_) // replicas must hold the same weights: compare a checksum across ranks
		replica_spread_ = replica_weight_spread(*ddp_, *model_);
	if (hw_) {
		hw_->stop();
		hw_summary_ = hw_->summary();
	}
	if (!main_rank())
		return 0; // files, exports and end-of-run tools belong to rank 0
	write_file_atomic(join_path(checkpoints_dir(run_dir_), "FINAL"),
			  std::filesystem::path(last_ckpt_).filename().string() + "\n");
	write_metrics(stop && iter_ < max_iters_ ? "stopped_time_budget" : "complete");
	after_training();
	if (cfg_.get_bool("QUANT_GGUF")) {
		std::string file = join_path(run_dir_, "model.gguf");
		ScoreSource src;
		src.chunks = static_cast<int>(cfg_.get_int("FIM_CHUNKS"));
		src.seq = static_cast<int>(cfg_.get_int("FIM_SEQ"));
		auto s = export_gguf(model_, cfg_, last_ckpt_, file, plan_options_from(cfg_), src);
		fmt::print("gguf: {} ({} bytes, {:.3f} bits per weight, {} upgraded, {} fallbacks; `knlp eval --gguf {}` "
			   "for its perplexity)\n",
			   file, s["file_bytes"].get<uint64_t>(), s["bits_per_weight"].get<double>(), s["upgraded"].size(),
			   s["fallbacks"].size(), file);
	}
	if (ph_.on && ph_.steps > 10) {
		double n = double(ph_.steps - 10) / 1e3;
		fmt::print("phase ms per step: data {:.2f} forward {:.2f} backward {:.2f} norm+clip {:.2f} update {:.2f}\n",
			   ph_.t[0] / n, ph_.t[1] / n, ph_.t[2] / n, ph_.t[3] / n, ph_.t[4] / n);
	}
	fmt::print("done: {} iterations, best val loss {:.4f} (ppl {:.2f}) at iteration {}, {:.1f} s; run folder {}\n",
		   iter_, best_val_, perplexity_of(best_val_), best_iter_, elapsed(), run_dir_);
	return 0;
}

} // namespace

int train_lm(TrainRequest req)
{
	Trainer t(std::move(req));
	return t.run();
}

} // namespace knlp
