#include "train/loop.h"

#include "models/gemm.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/hwmon.h"
#include "core/progress.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "core/torch_compat.h"
#include "optim/optimizer.h"
#include "prune/pruner.h"
#include "train/ddp.h"
#include "train/device.h"
#include "train/metrics.h"
#include "train/numerics.h"
#include "train/profile.h"

namespace knlp {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Checkpoint state written by this loop. Version 1 was the three trainers' own formats.
constexpr int k_state_version = 2;

double seconds_since(Clock::time_point t)
{
	return std::chrono::duration<double>(Clock::now() - t).count();
}

int64_t count_parameters(torch::nn::Module &m)
{
	int64_t n = 0;
	for (const auto &p : m.parameters())
		n += p.numel();
	return n;
}

class Loop {
public:
	explicit Loop(TrainRequest req)
	    : req_(std::move(req)), cfg_(req_.cfg.settings()), family_(make_family(cfg_)), ctx_(cfg_)
	{
	}
	int run();

private:
	void start();
	void build();
	void resume(const std::string &ckpt);
	void print_start();
	void begin();
	std::string train_steps();
	void end(const std::string &status);
	bool at_end() const { return cad_.epochs ? pos_.epoch >= cad_.total_epochs : pos_.step >= cad_.total_steps; }
	bool step();
	void log_step(double loss, double lr);
	void evaluate_now();
	void checkpoint_now(bool best);
	json state_json() const;
	void write_metrics(const std::string &status) const;
	RunEnd run_end(const std::string &status) const;
	[[noreturn]] void nonfinite(const std::string &what, double value);
	bool skip_nonfinite(const std::string &what, double value);
	std::string where() const
	{
		return cad_.epochs ? fmt::format("epoch {}, step {}", pos_.epoch, pos_.step)
				   : fmt::format("step {}", pos_.step);
	}
	double elapsed() const { return elapsed_before_ + seconds_since(t_start_); }
	void phase(int i);

	TrainRequest req_;
	const Settings &cfg_;
	std::unique_ptr<Family> family_;
	RunContext ctx_;
	Precision prec_;
	std::unique_ptr<Ddp> ddp_;
	std::unique_ptr<Optimizer> opt_;
	std::unique_ptr<Pruner> pruner_;
	std::unique_ptr<HwMonitor> hw_;
	NonfiniteGuard guard_;
	Cadence cad_;
	QualityMetric quality_;
	Position pos_;
	std::string resume_ckpt_;
	torch::Tensor rng_after_start_; // the CPU generator state of the checkpoint resumed from
	int64_t steps_in_epoch_ = 0, last_eval_ = -1, last_ckpt_step_ = -1, best_step_ = -1, best_epoch_ = -1;
	bool epoch_started_ = false, just_best_ = false;
	double best_ = NAN, last_quality_ = NAN, last_loss_ = NAN, last_norm_ = 0, last_rate_ = 0, last_mfu_ = 0,
	       peak_flops_ = 0;
	double elapsed_before_ = 0, replica_spread_ = 0;
	json history_ = json::array(), hw_summary_;
	Clock::time_point t_start_, window_t0_;
	double window_items_ = 0;
	Progress *progress_ = nullptr;
	int64_t step0_ = 0;
	StepProfiler prof_; // KNLP_PROFILE=FILE: a Chrome trace of a few steps
	// KNLP_PHASE_TIMES=1: synchronised wall time per phase of the step (adds device syncs;
	// for finding where a step's time goes, printed at the end of the run).
	struct Phases {
		bool on = false;
		int64_t steps = 0;
		double t[5] = {0, 0, 0, 0, 0}; // data, forward, backward, norm + clip, update + prune
		Clock::time_point mark;
	} ph_;
};

// Data parallel or not, run folder, threads, device and the numeric guard.
void Loop::start()
{
	DdpStart st = start_data_parallel(req_, req_.cfg, family_->name());
	ddp_ = std::move(st.ddp);
	ctx_.rank = st.rank, ctx_.world = st.world, ctx_.local_rank = st.local_rank;
	ctx_.run_dir = st.run_dir;
	ctx_.ddp = ddp_.get();
	resume_ckpt_ = st.ckpt;
	setup_threads(cfg_.core);
	tune_allocator(/*training=*/true);
	guard_ = NonfiniteGuard::from(cfg_.train);
	ph_.on = std::getenv("KNLP_PHASE_TIMES") != nullptr;
	ctx_.dev = select_device(cfg_.core);
	if (ctx_.dev.is_cuda() && ctx_.local_rank >= 0)
		ctx_.dev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(ctx_.local_rank));
	ctx_.dev = family_->device(ctx_.dev);
	prec_ = resolve_precision(cfg_, ctx_.dev);
	ctx_.bf16 = prec_.bf16;
	if (!prec_.notice.empty() && ctx_.main_rank())
		fmt::print(stderr, "{}\n", prec_.notice);
	ctx_.seed = static_cast<uint64_t>(cfg_.core.seed);
	if (cfg_.debug.detect_anomaly)
		torch::autograd::AnomalyMode::set_enabled(true);
}

// Data, model (seeded), replicas in agreement, optimizer, pruner.
void Loop::build()
{
	family_->load_data(ctx_);
	torch::manual_seed(ctx_.seed);
	family_->build_model(ctx_);
	if (ctx_.bf16) {
		const std::string why = family_->bf16_unsupported(ctx_);
		if (!why.empty()) {
			if (prec_.required)
				fail("{}: bf16 required, but {}", prec_.reason, why);
			ctx_.bf16 = prec_.bf16 = false;
			prec_.reason += "; fp32: " + why;
			if (ctx_.main_rank())
				fmt::print(stderr, "knlp: notice: bf16 was chosen ({}), but {}; training in fp32\n",
					   prec_.reason.substr(0, prec_.reason.find("; fp32: ")), why);
		}
	}
	if (ctx_.bf16 && prec_.automatic) {
		const std::string why = family_->bf16_slower(ctx_);
		if (!why.empty()) {
			ctx_.bf16 = prec_.bf16 = false;
			prec_.reason += "; fp32: " + why;
			if (ctx_.main_rank())
				fmt::print("precision: fp32 ({})\n", why);
		}
	}
	auto params = family_->model().parameters();
	if (ddp_) // identical initial weights (they are seeded alike; this makes sure)
		ddp_->broadcast(params);
	family_->prepare_parameters(ctx_);
	cad_ = family_->cadence();
	quality_ = family_->quality();
	OptimizerOptions oo = optimizer_options_from(cfg_.optim, cfg_.train.learning_rate);
	if (std::string(family_->name()) == "gpt2" && apply_original_gpt2_adamwprune(cfg_.optim, oo) &&
	    ctx_.main_rank())
		fmt::print("optimizer: AdamWPrune as the original's GPT-2 trainer ran it (plain AdamW, betas 0.9 / "
			   "0.999, no weight decay; CONFIG_ADAMWPRUNE_GPT2_ORIGINAL_COMPAT)\n");
	std::vector<std::pair<std::string, torch::Tensor>> named;
	for (auto &p : family_->model().named_parameters())
		named.emplace_back(p.key(), p.value());
	opt_ = std::make_unique<Optimizer>(named, oo);
	pruner_ = std::make_unique<Pruner>(
		prune_options_from(cfg_.prune, oo, cad_.total_steps, ctx_.seed, family_->pruning_ramp_end()), *opt_);
	ctx_.opt = opt_.get();
	ctx_.pruner = pruner_.get();
	ctx_.fail_nonfinite = [this](const std::string &what, double v) { nonfinite(what, v); };
	ctx_.log = [this](const json &rec) {
		if (ctx_.main_rank())
			log_record(ctx_.run_dir, cfg_.tracking, rec);
	};
	family_->check(ctx_);
	if (ddp_)
		ddp_->attach(family_->model().parameters(), cfg_.ddp.bucket_mb << 20, cfg_.ddp.overlap);
}

void Loop::resume(const std::string &ckpt)
{
	const std::string state_file = join_path(ckpt, "state.json");
	json st = read_checkpoint_state(ckpt);
	if (st.value("state_version", 1) != k_state_version)
		fail("{}: written by an older knlp (checkpoint state version {}, this one reads {}); resume it with "
		     "the "
		     "version that wrote it (`knlp eval`, `sample` and `export` still read its weights)",
		     state_file, st.value("state_version", 1), k_state_version);
	load_tensors(join_path(ckpt, "model.safetensors"), named_parameters_of(family_->model()));
	load_optimizer_state(ckpt, *opt_);
	SafetensorsFile of(join_path(ckpt, "optimizer.safetensors"));
	try {
		pos_.step = st.at("iteration").get<int64_t>();
		pos_.epoch = st.at("epoch").get<int64_t>();
		pos_.in_epoch = st.at("in_epoch").get<int64_t>();
		opt_->set_step_count(st.at("optimizer_step").get<int64_t>());
		best_ = st.at("best").is_null() ? NAN : st.at("best").get<double>();
		best_step_ = st.at("best_step").get<int64_t>();
		best_epoch_ = st.at("best_epoch").get<int64_t>();
		last_eval_ = st.at("last_eval_step").get<int64_t>();
		last_quality_ = st.at("last_quality").is_null() ? NAN : st.at("last_quality").get<double>();
		// The last logged training loss (training_metrics.json's progress): a run resumed from
		// its final checkpoint logs no step of its own. Absent in older checkpoints.
		const json lt = st.value("last_train_loss", json(nullptr));
		last_loss_ = lt.is_null() ? NAN : lt.get<double>();
		elapsed_before_ = st.at("elapsed_seconds").get<double>();
		history_ = st.at("history");
		guard_.load(st);
		opt_->load_extra_state(st.at("optimizer"));
		pruner_->load(st.at("pruning"), [&](const std::string &name) { return read_tensor(of, name); });
		family_->load_state(st, of);
	} catch (const json::exception &e) {
		fail("{}: checkpoint state is incomplete ({})", state_file, e.what());
	}
	if (of.find("rng.torch_cpu")) {
		const TensorView &g = of.get("rng.torch_cpu");
		auto state =
			torch::from_blob(const_cast<void *>(g.data), {static_cast<int64_t>(g.nbytes)}, torch::kByte)
				.clone();
		rng_after_start_ = state; // set once start-up is over (begin): nothing there may shift it
	}
	last_ckpt_step_ = pos_.step;
	ctx_.last_checkpoint = ckpt;
	if (ctx_.main_rank())
		truncate_records(ctx_.run_dir, pos_.step);
	fmt::print("resumed {} at {}\n", ckpt, where());
}

void Loop::print_start()
{
	fmt::print("run {}: {}: {} parameters on {} ({} threads), seed {}\n", ctx_.run_dir, family_->describe(),
		   count_parameters(family_->model()), ctx_.dev.str(), torch::get_num_threads(), ctx_.seed);
	family_->print_setup(ctx_);
	if (ddp_)
		fmt::print("data parallel: {} processes ({}), global batch {}, buckets of {} MiB{}\n", ctx_.world,
			   ddp_->backend(), family_->global_batch_text(ctx_), cfg_.ddp.bucket_mb,
			   cfg_.ddp.overlap ? ", sent during the backward pass" : "");
	if (pruner_->enabled()) {
		const auto &po = pruner_->options();
		fmt::print("optimizer {}; pruning {}{} to {:.1f}% of {} prunable weights (warmup {}, every {} steps, "
			   "ramp end {})\n",
			   opt_->options().name, method_name(po.method),
			   po.method == PruneMethod::State ? fmt::format(" (bitter{})", po.variant) : "",
			   100 * po.target, pruner_->stats().prunable, po.warmup, po.frequency, po.ramp_end);
	} else {
		fmt::print("optimizer {}; no pruning\n", opt_->options().name);
	}
}

void Loop::phase(int i)
{
	if (!ph_.on)
		return;
	synchronize(ctx_.dev);
	auto now = Clock::now();
	if (i >= 0 && pos_.step >= 10) // after warm-up
		ph_.t[i] += std::chrono::duration<double>(now - ph_.mark).count();
	ph_.mark = now;
}

// One optimizer step: this rank's micro-batches, their losses summed over ranks, the guard,
// masks, clip, update and pruning. Returns true when the run must stop (time budget, on
// every rank alike).
bool Loop::step()
{
	const double lr = family_->learning_rate(pos_);
	prof_.before_step(pos_.step + 1, ctx_.dev);
	phase(-1);
	if (ddp_) // dropout differs per rank but never depends on a resume
		torch::manual_seed(ctx_.seed * 1000003ULL + static_cast<uint64_t>(pos_.step) * 7919ULL +
				   static_cast<uint64_t>(ctx_.rank));
	auto t0 = Clock::now();
	family_->begin_step(ctx_, pos_);
	phase(0);
	std::vector<torch::Tensor> values;
	double weight = 0;
	bool poisoned = false; // KNLP_FAULT_NAN_AT=loss#N: the N-th micro-batch loss is NaN
	for (int m = 0; m < cad_.micro_batches; m++) {
		MicroLoss ml = family_->micro_batch(ctx_, pos_, m);
		if (ml.value.defined() && fault_nan("loss"))
			poisoned = true;
		phase(1);
		const bool sync = ddp_ && m == cad_.micro_batches - 1;
		if (sync)
			ddp_->begin_sync();
		if (ml.backprop.defined())
			ml.backprop.backward();
		if (sync)
			ddp_->end_sync(); // gradients summed over ranks (sent during the backward pass)
		phase(2);
		if (ml.value.defined())
			values.push_back(ml.value.to(torch::kFloat).reshape({1}));
		weight += ml.weight;
	}
	// The losses are read once, after every backward pass was queued: no device sync between
	// the forward and the backward passes.
	double num = 0;
	if (!values.empty()) {
		auto v = torch::cat(values).to(torch::kCPU, torch::kDouble);
		for (int64_t i = 0; i < v.numel(); i++)
			num += v[i].item<double>();
	}
	if (poisoned)
		num = std::numeric_limits<double>::quiet_NaN();
	StepOutcome o;
	o.seconds = seconds_since(t0);
	o.stats = family_->step_stats();
	if (ddp_) { // a non-finite loss on any rank is seen by all
		std::vector<double> all = {num, weight};
		all.insert(all.end(), o.stats.begin(), o.stats.end());
		all = ddp_->sum(all);
		num = all[0], weight = all[1];
		o.stats.assign(all.begin() + 2, all.end());
	}
	o.weight = weight;
	o.loss = weight > 0 ? num / weight : 0.0;
	if (weight > 0) { // a step whose batches hold nothing to learn from changes nothing
		bool skipped = !std::isfinite(num) && skip_nonfinite("loss", o.loss);
		if (!skipped) {
			pruner_->mask_grads();
			const double factor = opt_->before_clip();
			const double norm = opt_->grad_norm();
			if (!std::isfinite(norm))
				skipped = skip_nonfinite("gradient (first in " + opt_->first_nonfinite_grad() + ")",
							 norm);
			if (!skipped) {
				guard_.step_ok();
				const double scale =
					cad_.clip > 0 && norm > cad_.clip ? cad_.clip / (norm + 1e-6) : 1.0;
				phase(3);
				opt_->step(lr * factor, scale);
				pruner_->after_step(opt_->step_count());
				phase(4);
				last_norm_ = norm;
				o.updated = true;
			}
		}
	}
	if (ph_.on)
		ph_.steps++;
	family_->after_step(ctx_, pos_, o);
	for (auto &s : opt_->state())
		s.param.mutable_grad().reset();
	window_items_ += family_->step_items(pos_);
	pos_.step++;
	pos_.in_epoch++;
	prof_.after_step(pos_.step, ctx_.dev);
	fault_point("after_step");
	bool stop =
		cfg_.train.max_time > 0 && (elapsed() >= double(cfg_.train.max_time) || fault_time_up("after_step"));
	if (ddp_) { // the stop decision is agreed by every rank
		ddp_->heartbeat(pos_.step);
		stop = ddp_->max({stop ? 1.0 : 0.0})[0] > 0;
	}
	if (pos_.step % cfg_.train.log_interval == 0 || stop || pos_.in_epoch == steps_in_epoch_)
		log_step(o.loss, lr);
	return stop;
}

void Loop::log_step(double loss, double lr)
{
	synchronize(ctx_.dev);
	const double dt = seconds_since(window_t0_);
	last_rate_ = dt > 0 ? window_items_ / dt : 0;
	last_mfu_ = peak_flops_ > 0 ? cad_.flops_per_item * last_rate_ / (peak_flops_ * ctx_.world) : 0;
	window_t0_ = Clock::now();
	window_items_ = 0;
	last_loss_ = loss;
	json rec = {{"type", "train"}, {"step", pos_.step}};
	if (cad_.epochs)
		rec["epoch"] = pos_.epoch;
	rec.update({{"loss", loss}, {"lr", lr}, {"grad_norm", last_norm_}, {"throughput", last_rate_}});
	std::string text = cad_.epochs ? fmt::format("epoch {}/{} step {}/{}", pos_.epoch + 1, cad_.total_epochs,
						     pos_.in_epoch, steps_in_epoch_)
				       : fmt::format("step {}", pos_.step);
	text += fmt::format(" loss {:.4f} lr {:.2e} {:.0f} {}/s", loss, lr, last_rate_, cad_.unit);
	if (cad_.flops_per_item > 0) {
		rec["mfu"] = last_mfu_;
		text += fmt::format(" MFU {:.1f}%", 100 * last_mfu_);
	}
	if (pruner_->enabled()) {
		const double s = pruner_->stats().sparsity;
		rec["sparsity"] = s;
		text += fmt::format(" sparsity {:.1f}%", 100 * s);
	}
	family_->train_record(rec, text);
	rec["elapsed"] = elapsed();
	ctx_.log(rec);
	progress_->update(double(pos_.step - step0_), text, true);
}

// An evaluation at the current position: the family's figures, the best so far, the
// history, the logs, and (where configured) the family's extra records.
void Loop::evaluate_now()
{
	const double lr = family_->learning_rate(pos_);
	Evaluation ev = family_->evaluate(ctx_, pos_);
	if (!std::isfinite(ev.quality))
		nonfinite("evaluation " + quality_.metric, ev.quality);
	const bool better = std::isnan(best_) || (quality_.higher_is_better ? ev.quality > best_ : ev.quality < best_);
	just_best_ = pos_.step > 0 && better;
	if (just_best_) {
		best_ = ev.quality;
		best_step_ = pos_.step;
		best_epoch_ = cad_.epochs ? pos_.epoch + 1 : -1;
		family_->on_new_best(ctx_);
	}
	last_eval_ = pos_.step;
	last_quality_ = ev.quality;
	json rec = {{"step", pos_.step}};
	if (cad_.epochs)
		rec["epoch"] = pos_.epoch + 1; // the epoch just finished
	auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
	rec.update({{"lr", lr},
		    {"train_loss", num(ev.train_loss)},
		    {"eval_loss", num(ev.eval_loss)},
		    {"quality", ev.quality}});
	rec.update(ev.record);
	if (pruner_->enabled()) {
		PruneStats ps = pruner_->stats();
		rec["sparsity"] = ps.sparsity;
		rec["sparsity_per_tensor"] = ps.per_tensor;
	}
	rec["elapsed"] = elapsed();
	history_.push_back(rec);
	if (!ctx_.main_rank())
		return;
	fmt::print("{}{}: {}{}\n", isatty(fileno(stdout)) ? "\r\033[K" : "",
		   cad_.epochs ? fmt::format("epoch {}/{}", pos_.epoch + 1, cad_.total_epochs)
			       : fmt::format("step {}", pos_.step),
		   ev.text, just_best_ ? " [best]" : "");
	json line = {{"type", "eval"}};
	line.update(rec);
	family_->after_evaluation(ctx_, pos_, line);
	ctx_.log(line);
}

json Loop::state_json() const
{
	json st = {{"state_version", k_state_version},
		   {"family", family_->name()},
		   {"iteration", pos_.step},
		   {"epoch", pos_.epoch},
		   {"in_epoch", pos_.in_epoch},
		   {"optimizer_step", opt_->step_count()},
		   {"best", std::isnan(best_) ? json(nullptr) : json(best_)},
		   {"best_step", best_step_},
		   {"best_epoch", best_epoch_},
		   {"last_eval_step", last_eval_},
		   {"last_quality", std::isnan(last_quality_) ? json(nullptr) : json(last_quality_)},
		   {"last_train_loss", std::isfinite(last_loss_) ? json(last_loss_) : json(nullptr)},
		   {"elapsed_seconds", elapsed()},
		   {"seed", ctx_.seed},
		   {"threads", torch::get_num_threads()},
		   {"code_version", code_version()},
		   {"config", req_.cfg.to_text()},
		   {"optimizer", opt_->extra_state()},
		   {"pruning", pruner_->extra_state()},
		   {"history", history_}};
	guard_.save(st);
	return st;
}

void Loop::checkpoint_now(bool best)
{
	last_ckpt_step_ = pos_.step;
	if (!ctx_.main_rank()) // rank 0 writes; the others keep the same bookkeeping
		return;
	CheckpointWriter w{ctx_.run_dir, static_cast<int>(cfg_.train.keep_checkpoints)};
	auto extra = optimizer_tensors(*opt_);
	for (auto &[name, t] : pruner_->state_tensors())
		extra.push_back({name, t});
	json st = state_json();
	family_->save_state(st, extra);
	extra.push_back({"rng.torch_cpu", compat::generator_state(torch::kCPU)});
	ctx_.last_checkpoint = w.save(pos_.step, family_->model(), extra, st, best);
	write_metrics("running");
}

RunEnd Loop::run_end(const std::string &status) const
{
	RunEnd e;
	e.status = status;
	e.pos = pos_;
	e.best = best_;
	e.best_step = best_step_;
	e.best_epoch = best_epoch_;
	e.last_quality = last_quality_;
	return e;
}

// training_metrics.json: one envelope for every family (identity, status, progress, time,
// throughput, size, optimizer state, sparsity, quality, history), then the family's block
// and the original's field names where its tools read them.
void Loop::write_metrics(const std::string &status) const
{
	if (!ctx_.main_rank())
		return;
	const RunEnd end = run_end(status);
	auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
	// train_loss: the last logged step's, so a run stopped before its first evaluation or
	// epoch end still shows how training went.
	json progress = {{"step", pos_.step}, {"total_steps", cad_.total_steps}, {"train_loss", num(last_loss_)}};
	if (cad_.epochs)
		progress.update({{"epoch", pos_.epoch}, {"total_epochs", cad_.total_epochs}});
	json j = {{"schema", k_metrics_schema},
		  {"family", family_->name()},
		  {"model", family_->model_name()},
		  {"run", std::filesystem::path(ctx_.run_dir).filename().string()},
		  {"status", status},
		  {"seed", ctx_.seed},
		  {"project", cfg_.tracking.project},
		  {"code_version", code_version()},
		  {"progress", progress},
		  {"total_time", elapsed()},
		  {"throughput", {{"value", last_rate_}, {"unit", cad_.unit + "/s"}}},
		  {"mfu", cad_.flops_per_item > 0 ? json(last_mfu_) : json(nullptr)},
		  {"parameters", count_parameters(family_->model())},
		  {"optimizer", opt_->options().name},
		  {"optimizer_state_bytes", opt_->state_bytes()},
		  {"skipped_steps", guard_.skipped},
		  {"pruning", pruning_summary(*pruner_)},
		  {"quality",
		   {{"metric", quality_.metric},
		    {"split", quality_.split},
		    {"higher_is_better", quality_.higher_is_better},
		    {"value", num(last_quality_)},
		    {"best", num(best_)},
		    {"best_step", best_step_},
		    {"best_epoch", best_epoch_}}},
		  {"figures", json::object()},
		  {"history", history_}};
	if (hw_)
		j["hardware"] = hw_summary_.is_null() ? hw_->summary() : hw_summary_;
	if (ddp_)
		j["ddp"] = ddp_record(*ddp_, cfg_.ddp, family_->global_batch(ctx_), replica_spread_);
	family_->metrics(j, history_, end);
	write_file_atomic(join_path(ctx_.run_dir, "training_metrics.json"), j.dump(2) + "\n");
}

[[noreturn]] void Loop::nonfinite(const std::string &what, double value)
{
	write_metrics("failed");
	const std::string &last = ctx_.last_checkpoint;
	fail("{}: non-finite {} ({}) at {}; training stopped, {}", ctx_.run_dir, what, value, where(),
	     last.empty() ? "no checkpoint was written yet" : "last good checkpoint: " + last);
}

bool Loop::skip_nonfinite(const std::string &what, double value)
{
	return guard_.skip_step(
		what, value, [&](const std::string &w) { nonfinite(w, value); },
		[&](json rec) {
			rec["step"] = pos_.step;
			if (cad_.epochs)
				rec["epoch"] = pos_.epoch;
			ctx_.log(rec);
		});
}

// The run record, a resume, the hardware monitor and the start-up lines.
void Loop::begin()
{
	if (ctx_.main_rank()) {
		std::map<std::string, std::string> extra = {{"torch_version", torch_version()},
							    {"device", ctx_.dev.str()},
							    {"threads", std::to_string(torch::get_num_threads())},
							    {"resumed_from", resume_ckpt_},
							    {"world_size", std::to_string(ctx_.world)},
							    {"family", family_->name()},
							    {"precision", prec_.name()},
							    {"precision_reason", prec_.reason},
							    {"gemm", gemm_engine()},
							    {"gemm_bf16", bf16_gemm_engine()},
							    {"throughput_unit", cad_.unit + "/s"}};
		for (const auto &[k, v] : family_->run_record())
			extra[k] = v;
		record_run(ctx_.run_dir, req_.cfg, req_.command, extra);
		if (resume_ckpt_.empty())
			log_config(ctx_.run_dir, cfg_.tracking, req_.cfg.to_text());
	}
	t_start_ = Clock::now();
	if (!resume_ckpt_.empty())
		resume(resume_ckpt_);
	if (ctx_.main_rank() && cfg_.tracking.hw_monitor)
		hw_ = std::make_unique<HwMonitor>(join_path(ctx_.run_dir, "hw_stats.json"),
						  ctx_.dev.is_cuda() ? int(ctx_.dev.index()) : -1);
	family_->start(ctx_, !resume_ckpt_.empty());
	silence_other_ranks(ctx_.rank);
	if (cad_.flops_per_item > 0) {
		const char *pf = std::getenv("KNLP_PEAK_FLOPS");
		peak_flops_ = pf ? std::atof(pf) : measure_matmul_peak(ctx_.dev, ctx_.bf16);
	}
	if (rng_after_start_.defined())
		compat::set_generator_state(torch::kCPU, rng_after_start_);
	print_start();
}

// Evaluations, checkpoints and steps until the run's end or its time budget. Families with
// epochs evaluate at each epoch's end; the others every eval_interval steps and at the end.
// Returns the status.
std::string Loop::train_steps()
{
	Progress prog("train", static_cast<double>(cad_.total_steps - pos_.step), "steps");
	progress_ = &prog;
	step0_ = pos_.step;
	window_t0_ = Clock::now();
	bool stop = false;
	family_->model().train();
	while (true) {
		bool final_point = at_end() || stop;
		just_best_ = false;
		if (cad_.epochs) {
			if (epoch_started_ && pos_.in_epoch >= steps_in_epoch_) {
				evaluate_now();
				family_->end_epoch(ctx_);
				pos_.epoch++;
				pos_.in_epoch = 0;
				epoch_started_ = false;
				final_point = at_end() || stop;
			}
		} else if ((pos_.step % cad_.eval_interval == 0 || final_point) && last_eval_ != pos_.step) {
			evaluate_now();
		}
		const int64_t ckpt_interval = cfg_.train.checkpoint_interval;
		const bool due =
			pos_.step > 0 && (ckpt_interval > 0 ? pos_.step % ckpt_interval == 0 : last_eval_ == pos_.step);
		if ((due || just_best_ || final_point) && last_ckpt_step_ != pos_.step)
			checkpoint_now(just_best_);
		if (final_point)
			break;
		if (!epoch_started_) {
			family_->begin_epoch(ctx_, pos_);
			steps_in_epoch_ = family_->steps_in_epoch(pos_);
			epoch_started_ = true;
			continue; // an epoch already complete on resume is evaluated first
		}
		stop = step();
	}
	prog.finish();
	progress_ = nullptr;
	return at_end() ? "complete" : "stopped_time_budget";
}

// Replicas compared, the FINAL pointer, the family's final figures and tools, the summary.
void Loop::end(const std::string &status)
{
	if (ddp_) // replicas must hold the same weights: compare a checksum across ranks
		replica_spread_ = replica_weight_spread(*ddp_, family_->model());
	if (hw_) {
		hw_->stop();
		hw_summary_ = hw_->summary();
	}
	if (ctx_.main_rank()) {
		write_file_atomic(join_path(checkpoints_dir(ctx_.run_dir), "FINAL"),
				  std::filesystem::path(ctx_.last_checkpoint).filename().string() + "\n");
		family_->finish(ctx_, run_end(status));
		write_metrics(status);
		family_->after_run(ctx_, run_end(status));
		if (ph_.on && ph_.steps > 10) {
			double n = double(ph_.steps - 10) / 1e3;
			fmt::print("phase ms per step: data {:.2f} forward {:.2f} backward {:.2f} norm+clip {:.2f} "
				   "update {:.2f}\n",
				   ph_.t[0] / n, ph_.t[1] / n, ph_.t[2] / n, ph_.t[3] / n, ph_.t[4] / n);
		}
		fmt::print("done: {} steps{}, best {} at step {}, {:.1f} s; run folder {}\n", pos_.step,
			   cad_.epochs ? fmt::format(" ({} epochs)", pos_.epoch) : "",
			   std::isnan(best_) ? std::string("(none)") : family_->format_quality(best_), best_step_,
			   elapsed(), ctx_.run_dir);
	}
	family_->cleanup(ctx_);
}

int Loop::run()
{
	start();
	build();
	if (cfg_.debug.dry_run) {
		fmt::print("dry run: {} -> {} parameters\n", family_->describe(), count_parameters(family_->model()));
		return 0;
	}
	begin();
	end(train_steps());
	return 0;
}

} // namespace

int train(TrainRequest req)
{
	Loop loop(std::move(req));
	return loop.run();
}

} // namespace knlp
