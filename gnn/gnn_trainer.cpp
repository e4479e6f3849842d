#include "gnn/gnn_trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/hwmon.h"
#include "train/ddp.h"
#include "core/progress.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "core/torch_compat.h"
#include "gnn/layout.h"
#include "gnn/pagestore.h"
#include "gnn/quality.h"
#include "gnn/sage.h"
#include "gnn/sampler.h"
#include "optim/optimizer.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/numerics.h"

namespace knlp {

using json = nlohmann::json;

bool is_gnn_config(const Config &cfg) { return cfg.choice("MODEL_GPT2") == "MODEL_GRAPHSAGE"; }

std::string gnn_layout_name(const Config &cfg)
{
	std::string c = cfg.choice("GNN_LAYOUT_METIS");
	std::string m = c.substr(std::string("GNN_LAYOUT_").size());
	for (auto &ch : m)
		ch = char(std::tolower(ch));
	return m;
}

std::string gnn_sampler_name(const Config &cfg)
{
	std::string c = cfg.choice("GNN_SAMPLER_PAGE");
	return c == "GNN_SAMPLER_NEIGHBOR" ? "neighbor" : c == "GNN_SAMPLER_FIM" ? "fim" : "page";
}

Graph load_gnn_graph(const Config &cfg)
{
	Graph g;
	if (cfg.choice("GNN_DATA_SYNTHETIC") == "GNN_DATA_NPZ") {
		std::string p = cfg.get_string("GNN_DATA_PATH");
		if (!file_exists(p))
			fail("{}: graph not found (CONFIG_GNN_DATA_PATH; bring your own dgraphfin.npz, or pick "
			     "CONFIG_GNN_DATA_SYNTHETIC)",
			     p);
		g = load_graph_npz(p);
	} else {
		g = synth_graph(cfg.get_int("GNN_SYNTH_NODES"), uint64_t(cfg.get_int("GNN_SYNTH_SEED")));
	}
	zscore_columns(g);
	return g;
}

namespace {

std::vector<int64_t> parse_fanout(const std::string &s)
{
	std::vector<int64_t> f;
	std::istringstream in(s);
	std::string tok;
	while (in >> tok) {
		char *end = nullptr;
		long long v = std::strtoll(tok.c_str(), &end, 10);
		if (*end || v < 1)
			fail("CONFIG_GNN_FANOUT: '{}' is not a positive integer (expected e.g. \"10 5\")", tok);
		f.push_back(v);
	}
	if (f.empty())
		fail("CONFIG_GNN_FANOUT is empty (expected e.g. \"10 5\")");
	return f;
}

struct Prepared {
	GnnBatch b;
	std::vector<float> x;
	FetchStats io;
	double sample_seconds = 0;
};

json quality_json(const Quality &q)
{
	return {{"nodes", q.nodes},
		{"positives", q.positives},
		{"threshold", q.threshold},
		{"f1", q.f1},
		{"precision", q.precision},
		{"recall", q.recall},
		{"pr_auc", q.pr_auc},
		{"roc_auc", q.roc_auc},
		{"precision_at_0.5pct", q.precision_at_05pct},
		{"recall_at_1pct", q.recall_at_1pct}};
}

class GnnTrainer {
public:
	explicit GnnTrainer(TrainRequest req) : req_(std::move(req)), cfg_(req_.cfg) {}
	int run();

private:
	void setup();
	Prepared prepare(int64_t b) const;
	void evaluate(std::vector<float> &val, std::vector<float> &test);
	void checkpoint_now(bool best);
	void resume_from(const std::string &ckpt);
	json state_json() const;
	void write_metrics(const std::string &status, const json &final_quality) const;
	void log_jsonl(const json &j) const;
	[[noreturn]] void nonfinite(const std::string &what, double v);
	double elapsed() const
	{
		return elapsed_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
	}

	TrainRequest req_;
	Config cfg_;
	std::string run_dir_, layout_name_, sampler_name_, last_ckpt_;
	Graph g_;
	Csr sym_, adj_;
	Layout layout_;
	PageGeometry geo_;
	std::unique_ptr<Sampler> sampler_;
	std::unique_ptr<PageStore> store_;
	GraphSage model_{nullptr};
	std::unique_ptr<Optimizer> opt_;
	NonfiniteGuard guard_;
	std::unique_ptr<HwMonitor> hw_;
	torch::Tensor X_, src_, dst_, weight_;
	std::vector<int64_t> yv_, yt_;
	int64_t n_params_ = 0;
	int64_t seed_ = 0, epochs_ = 0, epoch_ = 0, batch_in_epoch_ = 0, step_ = 0, best_epoch_ = -1;
	double lr_ = 0, best_val_ = -1, elapsed_before_ = 0, layout_seconds_ = 0, spread_ = 0;
	std::vector<torch::Tensor> best_;
	// Accumulators: this epoch and the whole run.
	json ep_ = json::object(), tot_ = json::object();
	json hist_ = {{"epochs", json::array()},	 {"train_losses", json::array()}, {"val_pr_aucs", json::array()},
		      {"val_f1s", json::array()},	 {"val_roc_aucs", json::array()}, {"ra_fetch", json::array()},
		      {"ra_signal", json::array()},	 {"bytes_per_batch", json::array()},
		      {"fetch_ms_per_batch", json::array()}, {"epoch_times", json::array()}};
	std::chrono::steady_clock::time_point t_start_;
	// Data parallel (CONFIG_DDP under a launcher): a step takes sampler batches
	// [batch_in_epoch_, batch_in_epoch_ + world_), rank r the r-th; rank 0 writes every file.
	std::unique_ptr<Ddp> ddp_;
	int rank_ = 0, world_ = 1;
	double replica_spread_ = 0;
	bool main_rank() const { return rank_ == 0; }
};

json zero_acc()
{
	return {{"batches", 0},	      {"loss_sum", 0.0}, {"loss_n", 0},	  {"pages", 0},	   {"loaded", 0},
		{"supervised", 0},    {"edges", 0},	 {"io_bytes", 0}, {"io_pages", 0}, {"io_reads", 0},
		{"io_seconds", 0.0}, {"sample_seconds", 0.0}, {"step_seconds", 0.0}};
}

// One step's numbers in accumulator order (batches, loss x supervised, supervised, pages,
// loaded, edges, io bytes, io pages, io reads, io seconds, sample seconds, step seconds):
// data-parallel ranks sum them, so every rank's accumulators count every rank's batches.
std::vector<double> step_numbers(const Prepared *p, double loss, int64_t sup, double step_s)
{
	if (!p)
		return std::vector<double>(12, 0.0);
	return {1.0,
		loss * double(sup),
		double(sup),
		double(p->b.pages_touched),
		double(p->b.nodes.size()),
		double(p->b.esrc.size()),
		double(p->io.bytes),
		double(p->io.pages),
		double(p->io.reads),
		p->io.seconds,
		p->sample_seconds,
		step_s};
}

void add_acc(json &a, const std::vector<double> &v)
{
	// Accumulator key, index into step_numbers(), integer count or seconds.
	static const struct {
		const char *key;
		int at;
		bool count;
	} fields[] = {{"batches", 0, true},	 {"loss_sum", 1, false},     {"loss_n", 2, true},
		      {"pages", 3, true},	 {"loaded", 4, true},	     {"supervised", 2, true},
		      {"edges", 5, true},	 {"io_bytes", 6, true},	     {"io_pages", 7, true},
		      {"io_reads", 8, true},	 {"io_seconds", 9, false},   {"sample_seconds", 10, false},
		      {"step_seconds", 11, false}};
	for (const auto &f : fields) {
		const double x = v[size_t(f.at)];
		if (f.count)
			a[f.key] = a[f.key].get<int64_t>() + std::llround(x);
		else
			a[f.key] = a[f.key].get<double>() + x;
	}
}

// RA_fetch = pages * page / (loaded * record), RA_signal = pages * page / (supervised * record).
json ra_json(const json &a, const PageGeometry &geo)
{
	double pages = double(a["pages"].get<int64_t>()), loaded = double(a["loaded"].get<int64_t>()),
	       sup = double(a["supervised"].get<int64_t>()), nb = double(std::max<int64_t>(1, a["batches"].get<int64_t>()));
	double pb = double(geo.page_bytes), rb = double(geo.record_bytes);
	return {{"ra_fetch", loaded > 0 ? pages * pb / (loaded * rb) : 0.0},
		{"ra_signal", sup > 0 ? pages * pb / (sup * rb) : 0.0},
		{"batches", a["batches"]},
		{"pages_touched", a["pages"]},
		{"loaded_nodes", a["loaded"]},
		{"supervised_nodes", a["supervised"]},
		{"pages_per_batch", pages / nb},
		{"loaded_per_batch", loaded / nb},
		{"supervised_per_batch", sup / nb},
		{"edges_per_batch", double(a["edges"].get<int64_t>()) / nb}};
}

json io_json(const json &a, bool measured)
{
	double nb = double(std::max<int64_t>(1, a["batches"].get<int64_t>()));
	double secs = a["io_seconds"].get<double>();
	return {{"measured", measured},
		{"bytes_read", a["io_bytes"]},
		{"pages_read", a["io_pages"]},
		{"reads", a["io_reads"]},
		{"fetch_seconds", secs},
		{"bytes_per_batch", double(a["io_bytes"].get<int64_t>()) / nb},
		{"fetch_ms_per_batch", 1000 * secs / nb},
		{"read_mb_per_second", secs > 0 ? double(a["io_bytes"].get<int64_t>()) / secs / 1e6 : 0.0}};
}

void GnnTrainer::setup()
{
	setup_threads(cfg_);
	guard_ = NonfiniteGuard::from(cfg_);
	if (select_device(cfg_) != torch::Device(torch::kCPU))
		fmt::print("note: the GNN trainer runs on the CPU (sparse gathers of small batches)\n");
	seed_ = cfg_.get_int("SEED");
	layout_name_ = gnn_layout_name(cfg_);
	sampler_name_ = gnn_sampler_name(cfg_);
	epochs_ = cfg_.get_int("GNN_EPOCHS");
	lr_ = cfg_.get_float("LEARNING_RATE");
	if (!(lr_ > 0))
		fail("training: CONFIG_LEARNING_RATE must be > 0");
	g_ = load_gnn_graph(cfg_);
	sym_ = build_csr(g_, true);
	adj_ = cfg_.get_bool("GNN_SYMMETRIC") ? sym_ : build_csr(g_, false);
	geo_.record_bytes = int64_t(g_.features) * 4;
	geo_.page_bytes = cfg_.get_int("GNN_PAGE_BYTES");
	if (layout_name_ == "file") {
		const std::string lp = cfg_.get_string("GNN_LAYOUT_PATH");
		if (lp.empty())
			fail("CONFIG_GNN_LAYOUT_FILE=y but CONFIG_GNN_LAYOUT_PATH is empty (write a layout with `knlp gnn layout`)");
		if (!file_exists(lp))
			fail("{}: layout file not found (CONFIG_GNN_LAYOUT_PATH)", lp);
		auto t0 = std::chrono::steady_clock::now();
		layout_ = load_layout(cfg_.get_string("GNN_LAYOUT_PATH"), g_.n);
		layout_.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	} else {
		layout_ = build_layout(layout_name_, g_, sym_, geo_, uint64_t(seed_), cfg_.get_int("GNN_METIS_PARTS"));
	}
	layout_seconds_ = layout_.build_seconds;
	spread_ = neighbour_page_spread(sym_, layout_, geo_);
	SamplerOptions so = gnn_sampler_options(cfg_);
	sampler_ = make_sampler(g_, adj_, layout_, geo_, so);

	torch::manual_seed(uint64_t(seed_));
	model_ = GraphSage(g_.features, cfg_.get_int("GNN_HIDDEN"), 2);
	for (auto &p : model_->parameters())
		n_params_ += p.numel();
	std::vector<std::pair<std::string, torch::Tensor>> named;
	for (auto &p : model_->named_parameters())
		named.emplace_back(p.key(), p.value());
	opt_ = std::make_unique<Optimizer>(named, optimizer_options_from(cfg_, lr_));
	if (ddp_) {
		if (world_ > 1 && sampler_name_ == "fim")
			fail("ddp: the fim sampler steers its batches with each batch's gradients; it trains as one process "
			     "(choose another CONFIG_GNN_SAMPLER_* for a data-parallel run)");
		ddp_->broadcast(model_->parameters()); // identical initial weights
		ddp_->attach(model_->parameters(), cfg_.get_int("DDP_BUCKET_MB") << 20, cfg_.get_bool("DDP_OVERLAP"));
	}
	// Full-graph tensors for evaluation.
	X_ = torch::from_blob(g_.x.data(), {g_.n, g_.features}, torch::kFloat);
	std::vector<int64_t> s, d;
	s.reserve(adj_.col.size()), d.reserve(adj_.col.size());
	for (int64_t v = 0; v < g_.n; v++)
		for (int64_t k = adj_.ptr[size_t(v)]; k < adj_.ptr[size_t(v) + 1]; k++)
			s.push_back(adj_.col[size_t(k)]), d.push_back(v);
	src_ = torch::tensor(s, torch::kLong);
	dst_ = torch::tensor(d, torch::kLong);
	for (int64_t v : g_.valid)
		yv_.push_back(g_.y[size_t(v)]);
	for (int64_t v : g_.test)
		yt_.push_back(g_.y[size_t(v)]);
	if (cfg_.get_bool("GNN_CLASS_WEIGHTS")) {
		double pos = 0;
		for (int64_t v : g_.train)
			pos += double(g_.y[size_t(v)]);
		double n = double(g_.train.size());
		if (pos == 0 || pos == n)
			fail("{}: the train split holds one class only; class weights are undefined", g_.origin);
		weight_ = torch::tensor({float(n / (2 * (n - pos))), float(n / (2 * pos))});
	}
	ep_ = zero_acc();
	tot_ = zero_acc();
}

Prepared GnnTrainer::prepare(int64_t b) const
{
	Prepared p;
	auto t0 = std::chrono::steady_clock::now();
	p.b = sampler_->make(b);
	p.sample_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	const int F = g_.features;
	p.x.resize(p.b.nodes.size() * size_t(F));
	if (store_) {
		p.io = store_->fetch(p.b.nodes, p.x.data());
	} else {
		for (size_t i = 0; i < p.b.nodes.size(); i++)
			std::copy_n(&g_.x[size_t(p.b.nodes[i] * F)], F, &p.x[i * size_t(F)]);
	}
	return p;
}

void GnnTrainer::evaluate(std::vector<float> &val, std::vector<float> &test)
{
	torch::NoGradGuard ng;
	model_->eval();
	torch::Tensor prob = model_->forward(X_, src_, dst_).select(1, 1).exp().contiguous();
	model_->train();
	const float *pp = prob.data_ptr<float>();
	val.clear(), test.clear();
	for (int64_t v : g_.valid)
		val.push_back(pp[v]);
	for (int64_t v : g_.test)
		test.push_back(pp[v]);
}

json GnnTrainer::state_json() const
{
	json st = {{"iteration", step_},
		   {"optimizer_step", opt_->step_count()},
		   {"epoch", epoch_},
		   {"batch_in_epoch", batch_in_epoch_},
		   {"epoch_acc", ep_},
		   {"total_acc", tot_},
		   {"best_val_pr_auc", best_val_},
		   {"best_epoch", best_epoch_},
		   {"elapsed_seconds", elapsed()},
		   {"seed", seed_},
		   {"code_version", code_version()},
		   {"config", cfg_.to_text()},
		   {"optimizer", opt_->extra_state()},
		   {"metrics", hist_}};
	guard_.save(st);
	return st;
}

void GnnTrainer::checkpoint_now(bool best)
{
	if (!main_rank())
		return;
	CheckpointWriter w{run_dir_, static_cast<int>(cfg_.get_int("KEEP_CHECKPOINTS"))};
	auto extra = optimizer_tensors(*opt_);
	if (sampler_name_ == "fim")
		extra.push_back({"fim.importance", torch::from_blob(sampler_->importance().data(),
								    {int64_t(sampler_->importance().size())}, torch::kFloat)});
	auto params = model_->named_parameters();
	for (size_t i = 0; i < best_.size(); i++)
		extra.push_back({"best." + params[i].key(), best_[i]});
	last_ckpt_ = w.save(step_, *model_, extra, state_json(), best);
	write_metrics("running", json(nullptr));
}

void GnnTrainer::resume_from(const std::string &ckpt)
{
	json st = read_checkpoint_state(ckpt);
	load_tensors(join_path(ckpt, "model.safetensors"), named_parameters_of(*model_));
	load_optimizer_state(ckpt, *opt_);
	SafetensorsFile of(join_path(ckpt, "optimizer.safetensors"));
	try {
		step_ = st.at("iteration").get<int64_t>();
		opt_->set_step_count(st.at("optimizer_step").get<int64_t>());
		epoch_ = st.at("epoch").get<int64_t>();
		batch_in_epoch_ = st.at("batch_in_epoch").get<int64_t>();
		ep_ = st.at("epoch_acc");
		tot_ = st.at("total_acc");
		best_val_ = st.at("best_val_pr_auc").get<double>();
		best_epoch_ = st.at("best_epoch").get<int64_t>();
		elapsed_before_ = st.at("elapsed_seconds").get<double>();
		hist_ = st.at("metrics");
		guard_.load(st);
		if (st.contains("optimizer"))
			opt_->load_extra_state(st.at("optimizer"));
	} catch (const json::exception &e) {
		fail("{}: checkpoint state is incomplete ({})", join_path(ckpt, "state.json"), e.what());
	}
	if (sampler_name_ == "fim") {
		auto t = read_tensor(of, "fim.importance");
		if (!t.defined() || t.numel() != g_.n)
			fail("{}: checkpoint lacks the FIM sampler's importance scores", join_path(ckpt, "optimizer.safetensors"));
		std::copy_n(t.data_ptr<float>(), g_.n, sampler_->importance().data());
	}
	best_.clear();
	for (auto &p : model_->named_parameters()) {
		auto t = read_tensor(of, "best." + p.key());
		if (!t.defined())
			break;
		best_.push_back(t);
	}
	last_ckpt_ = ckpt;
	if (main_rank())
		truncate_jsonl(join_path(run_dir_, "metrics.jsonl"), step_);
	fmt::print("resumed {} at epoch {}, batch {} (step {})\n", ckpt, epoch_, batch_in_epoch_, step_);
}

void GnnTrainer::write_metrics(const std::string &status, const json &final_quality) const
{
	if (!main_rank())
		return;
	json j = {{"model", "graphsage"},
		  {"dataset", g_.origin},
		  {"status", status},
		  {"seed", seed_},
		  {"parameters", n_params_},
		  {"optimizer", opt_->options().name},
		  {"optimizer_state_bytes", opt_->state_bytes()},
		  {"graph", {{"nodes", g_.n}, {"edges", g_.edges()}, {"features", g_.features},
			     {"adjacency_entries", int64_t(adj_.col.size())}, {"symmetric", cfg_.get_bool("GNN_SYMMETRIC")},
			     {"train", g_.train.size()}, {"valid", g_.valid.size()}, {"test", g_.test.size()}}},
		  {"gnn", {{"layout", layout_.method == "file" ? "file" : layout_name_},
			   {"sampler", sampler_name_},
			   {"layout_seconds", layout_seconds_},
			   {"metis_parts", layout_.parts},
			   {"neighbour_page_spread", spread_},
			   {"page_bytes", geo_.page_bytes},
			   {"record_bytes", geo_.record_bytes},
			   {"read_amplification", ra_json(tot_, geo_)},
			   {"io", io_json(tot_, store_ != nullptr)},
			   {"io_note", store_ ? store_->note() : "features from memory (CONFIG_GNN_FEATURE_STORE=n)"}}},
		  {"epochs", hist_["epochs"]},
		  {"train_losses", hist_["train_losses"]},
		  {"val_pr_aucs", hist_["val_pr_aucs"]},
		  {"val_f1s", hist_["val_f1s"]},
		  {"val_roc_aucs", hist_["val_roc_aucs"]},
		  {"ra_fetch_per_epoch", hist_["ra_fetch"]},
		  {"ra_signal_per_epoch", hist_["ra_signal"]},
		  {"bytes_per_batch_per_epoch", hist_["bytes_per_batch"]},
		  {"fetch_ms_per_batch_per_epoch", hist_["fetch_ms_per_batch"]},
		  {"epoch_times", hist_["epoch_times"]},
		  {"best_epoch", best_epoch_},
		  {"best_val_pr_auc", best_val_ >= 0 ? json(best_val_) : json(nullptr)},
		  {"final_iteration", step_},
		  {"skipped_steps", guard_.skipped},
		  {"total_training_time", elapsed()},
		  {"steps_per_second", tot_["step_seconds"].get<double>() > 0
					       ? double(tot_["batches"].get<int64_t>()) / tot_["step_seconds"].get<double>()
					       : 0.0},
		  {"sampler_batches_per_second", tot_["sample_seconds"].get<double>() > 0
							 ? double(tot_["batches"].get<int64_t>()) / tot_["sample_seconds"].get<double>()
							 : 0.0},
		  {"code_version", code_version()}};
	if (hw_)
		j["hardware"] = hw_->summary();
	if (ddp_)
		j["ddp"] = ddp_record(*ddp_, cfg_, world_, replica_spread_); // global batch: sampler batches per step
	if (!final_quality.is_null()) {
		j["test"] = final_quality.at("test");
		j["val"] = final_quality.at("val");
		j["tested_weights"] = final_quality.at("weights");
	}
	write_file_atomic(join_path(run_dir_, "training_metrics.json"), j.dump(2) + "\n");
}

void GnnTrainer::log_jsonl(const json &j) const
{
	if (!main_rank() || !cfg_.get_bool("TRACKER_JSONL"))
		return;
	std::ofstream f(join_path(run_dir_, "metrics.jsonl"), std::ios::app);
	f << j.dump() << "\n";
}

[[noreturn]] void GnnTrainer::nonfinite(const std::string &what, double v)
{
	write_metrics("failed", json(nullptr));
	std::string keep = last_ckpt_.empty() ? "no checkpoint was written yet" : "last good checkpoint: " + last_ckpt_;
	fail("{}: non-finite {} ({}) at epoch {}, step {}; training stopped, {}", run_dir_, what, v, epoch_, step_, keep);
}

int GnnTrainer::run()
{
	std::string ckpt;
	{
		DdpStart st = start_data_parallel(req_, cfg_, "gnn");
		ddp_ = std::move(st.ddp);
		rank_ = st.rank, world_ = st.world;
		run_dir_ = st.run_dir;
		ckpt = st.ckpt;
	}
	setup();
	if (cfg_.get_bool("DEBUG_DRY_RUN")) {
		fmt::print("dry run: graphsage on {} ({} nodes, {} edges), layout {}, sampler {} -> {} parameters\n", g_.origin,
			   g_.n, g_.edges(), layout_name_, sampler_name_, n_params_);
		return 0;
	}
	if (main_rank())
		record_run(run_dir_, cfg_, req_.command,
			   {{"torch_version", torch_version()}, {"device", "cpu"},
			    {"threads", std::to_string(torch::get_num_threads())}, {"resumed_from", ckpt},
			    {"world_size", std::to_string(world_)}});
	t_start_ = std::chrono::steady_clock::now();
	if (!ckpt.empty())
		resume_from(ckpt);
	else if (main_rank())
		save_layout(join_path(run_dir_, "layout.npz"), layout_);
	if (main_rank() && cfg_.get_bool("HW_MONITOR"))
		hw_ = std::make_unique<HwMonitor>(join_path(run_dir_, "hw_stats.json"), -1);
	if (cfg_.get_bool("GNN_FEATURE_STORE")) { // each rank reads its own copy of the page file
		make_dirs(run_dir_); // another rank may get here before rank 0 has written into the folder
		store_ = std::make_unique<PageStore>(
			join_path(run_dir_, world_ > 1 ? fmt::format("features.rank{}.bin", rank_) : "features.bin"), g_, layout_,
			geo_);
	}
	silence_other_ranks(rank_);
	int64_t labelled = int64_t(g_.train.size() + g_.valid.size() + g_.test.size());
	fmt::print("run {}: graphsage on {}: {} nodes, {} edges, {} features; train/valid/test {}/{}/{} ({} labelled), "
		   "{} parameters, seed {}\n",
		   run_dir_, g_.origin, g_.n, g_.edges(), g_.features, g_.train.size(), g_.valid.size(), g_.test.size(),
		   labelled, n_params_, seed_);
	fmt::print("layout {} ({:.2f} s{}; neighbours on {:.2f} pages per node), sampler {} ({} batches per epoch), "
		   "features {}\n",
		   layout_.method == "file" ? "file" : layout_name_, layout_seconds_,
		   layout_.parts ? fmt::format(", {} METIS parts", layout_.parts) : "", spread_, sampler_name_,
		   [&] { sampler_->prepare_epoch(epoch_); return sampler_->batches(); }(),
		   store_ ? (store_->direct() ? "read with O_DIRECT from " + store_->path() : store_->note()) : "from memory");
	if (ddp_)
		fmt::print("data parallel: {} processes ({}), {} sampler batches per step (rank r takes the r-th), buckets of {} "
			   "MiB{}\n",
			   world_, ddp_->backend(), world_, cfg_.get_int("DDP_BUCKET_MB"),
			   cfg_.get_bool("DDP_OVERLAP") ? ", sent during the backward pass" : "");

	const int64_t max_time = cfg_.get_int("MAX_TIME");
	const int64_t log_interval = cfg_.get_int("LOG_INTERVAL");
	const int threads = sampler_name_ == "fim" ? 0 : static_cast<int>(cfg_.get_int("GNN_SAMPLER_THREADS"));
	sampler_->prepare_epoch(epoch_);
	Progress prog("train", double(epochs_ * ((sampler_->batches() + world_ - 1) / world_) - step_), "steps");
	const int64_t step0 = step_;
	bool stop = false;
	model_->train();
	while (epoch_ < epochs_ && !stop) {
		sampler_->prepare_epoch(epoch_);
		const int64_t nb = sampler_->batches();
		auto ep_t0 = std::chrono::steady_clock::now();
		double ep_before = ep_.value("epoch_seconds", 0.0);
		std::deque<std::future<Prepared>> ahead;
		int64_t queued = batch_in_epoch_ + rank_; // this rank's batches: rank, rank + world, ...
		auto refill = [&] {
			while (threads > 0 && int64_t(ahead.size()) < threads && queued < nb)
				ahead.push_back(std::async(std::launch::async, [this, b = queued] { return prepare(b); })),
					queued += world_;
		};
		while (batch_in_epoch_ < nb) {
			// This step: batches [batch_in_epoch_, batch_in_epoch_ + world); each rank's loss is
			// divided by how many there are, so the summed gradient is their mean.
			const int64_t mine = batch_in_epoch_ + rank_, in_step = std::min<int64_t>(world_, nb - batch_in_epoch_);
			std::optional<Prepared> p;
			if (mine < nb) {
				refill();
				p = threads > 0 ? (ahead.front().get()) : prepare(mine);
				if (threads > 0)
					ahead.pop_front();
				refill();
			}
			auto t0 = std::chrono::steady_clock::now();
			const int64_t sup = p ? int64_t(p->b.supervised.size()) : 0;
			double lv = 0;
			torch::Tensor h;
			if (ddp_)
				ddp_->begin_sync();
			if (sup > 0) {
				const int64_t n = int64_t(p->b.nodes.size());
				auto x = torch::from_blob(p->x.data(), {n, g_.features}, torch::kFloat);
				auto src = torch::from_blob(p->b.esrc.data(), {int64_t(p->b.esrc.size())}, torch::kLong);
				auto dst = torch::from_blob(p->b.edst.data(), {int64_t(p->b.edst.size())}, torch::kLong);
				auto supv = torch::from_blob(p->b.supervised.data(), {sup}, torch::kLong);
				std::vector<int64_t> ys;
				for (int64_t i : p->b.supervised)
					ys.push_back(g_.y[size_t(p->b.nodes[size_t(i)])]);
				auto yt = torch::tensor(ys, torch::kLong);
				auto out = model_->forward(x, src, dst, sampler_name_ == "fim" ? &h : nullptr);
				if (h.defined())
					h.retain_grad();
				auto opts = torch::nn::functional::NLLLossFuncOptions();
				if (weight_.defined())
					opts.weight(weight_);
				auto loss = torch::nn::functional::nll_loss(out.index_select(0, supv), yt, opts);
				lv = loss.item<double>();
				if (fault_nan("loss"))
					lv = std::numeric_limits<double>::quiet_NaN();
				(in_step > 1 ? loss / double(in_step) : loss).backward();
			}
			if (ddp_)
				ddp_->end_sync(); // gradients summed over ranks (sent during the backward pass)
			double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
			auto nums = step_numbers(p ? &*p : nullptr, lv, sup, step_s);
			if (ddp_) // every rank counts every rank's batches; a non-finite loss anywhere is seen by all
				nums = ddp_->sum(nums);
			const int64_t sup_all = std::llround(nums[2]);
			const double loss_all = sup_all > 0 ? nums[1] / double(sup_all) : 0.0;
			if (ddp_ && world_ > 1)
				lv = loss_all;
			if (sup_all > 0) { // a step whose batches supervise nothing changes nothing
				bool skipped = !std::isfinite(loss_all) &&
					       guard_.skip_step("loss", loss_all, [&](const std::string &w) { nonfinite(w, loss_all); },
								[&](json rec) { rec.update({{"epoch", epoch_}, {"iter", step_}}); log_jsonl(rec); });
				if (!skipped) {
					const double norm = opt_->grad_norm();
					if (!std::isfinite(norm))
						skipped = guard_.skip_step(
							"gradient (first in " + opt_->first_nonfinite_grad() + ")", norm,
							[&](const std::string &w) { nonfinite(w, norm); },
							[&](json rec) { rec.update({{"epoch", epoch_}, {"iter", step_}}); log_jsonl(rec); });
					if (!skipped) {
						opt_->step(lr_, 1.0);
						guard_.step_ok();
						if (h.defined() && h.grad().defined()) {
							auto sq = h.grad().pow(2).sum(1).contiguous();
							sampler_->update_importance(p->b.nodes, sq.data_ptr<float>());
						}
					}
				}
			}
			for (auto &st : opt_->state())
				st.param.mutable_grad().reset();
			add_acc(ep_, nums);
			add_acc(tot_, nums);
			batch_in_epoch_ += in_step;
			step_++;
			fault_point("after_step");
			if (max_time > 0 && (elapsed() >= double(max_time) || fault_time_up("after_step")))
				stop = true;
			if (ddp_) { // the stop decision is agreed by every rank
				ddp_->heartbeat(step_);
				stop = ddp_->max({stop ? 1.0 : 0.0})[0] > 0;
			}
			if (step_ % log_interval == 0 || stop || batch_in_epoch_ == nb) {
				json ra = ra_json(ep_, geo_);
				double rate = ep_["step_seconds"].get<double>() > 0
						      ? double(ep_["batches"].get<int64_t>()) /
								std::chrono::duration<double>(std::chrono::steady_clock::now() - ep_t0).count()
						      : 0.0;
				log_jsonl({{"type", "train"}, {"iter", step_}, {"epoch", epoch_}, {"loss", lv},
					   {"ra_fetch", ra["ra_fetch"]}, {"ra_signal", ra["ra_signal"]}, {"elapsed", elapsed()}});
				prog.update(double(step_ - step0),
					    fmt::format("epoch {}/{} batch {}/{} loss {:.4f} RA_fetch {:.1f}x {:.1f} batch/s", epoch_ + 1,
							epochs_, batch_in_epoch_, nb, lv, ra["ra_fetch"].get<double>(), rate),
					    true);
			}
			if (stop)
				break;
		}
		for (auto &f : ahead)
			f.wait();
		ahead.clear();
		double et = ep_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - ep_t0).count();
		if (batch_in_epoch_ < nb) { // time budget: a mid-epoch checkpoint, resumable exactly
			ep_["epoch_seconds"] = et;
			checkpoint_now(false);
			break;
		}
		std::vector<float> sv, st;
		evaluate(sv, st);
		double vf1 = 0;
		double thr = best_f1_threshold(sv, yv_, &vf1);
		Quality vq = score_quality(sv, yv_, thr);
		json ra = ra_json(ep_, geo_), io = io_json(ep_, store_ != nullptr);
		double train_loss = ep_["loss_n"].get<int64_t>() ? ep_["loss_sum"].get<double>() / double(ep_["loss_n"].get<int64_t>()) : 0.0;
		hist_["epochs"].push_back(epoch_ + 1);
		hist_["train_losses"].push_back(train_loss);
		hist_["val_pr_aucs"].push_back(vq.pr_auc);
		hist_["val_f1s"].push_back(vq.f1);
		hist_["val_roc_aucs"].push_back(vq.roc_auc);
		hist_["ra_fetch"].push_back(ra["ra_fetch"]);
		hist_["ra_signal"].push_back(ra["ra_signal"]);
		hist_["bytes_per_batch"].push_back(io["bytes_per_batch"]);
		hist_["fetch_ms_per_batch"].push_back(io["fetch_ms_per_batch"]);
		hist_["epoch_times"].push_back(et);
		bool best = vq.pr_auc > best_val_;
		if (best) {
			best_val_ = vq.pr_auc, best_epoch_ = epoch_ + 1;
			best_.clear();
			for (auto &p : model_->parameters())
				best_.push_back(p.detach().clone());
		}
		log_jsonl({{"type", "eval"}, {"iter", step_}, {"epoch", epoch_ + 1}, {"train_loss", train_loss},
			   {"val_pr_auc", vq.pr_auc}, {"val_f1", vq.f1}, {"val_roc_auc", vq.roc_auc}, {"ra_fetch", ra["ra_fetch"]},
			   {"ra_signal", ra["ra_signal"]}, {"bytes_per_batch", io["bytes_per_batch"]},
			   {"epoch_time", et}, {"elapsed", elapsed()}});
		fmt::print("{}epoch {}/{}: train loss {:.4f}, val PR-AUC {:.4f}, F1 {:.4f}, ROC-AUC {:.4f}; RA_fetch {:.2f}x, "
			   "RA_signal {:.2f}x, {:.0f} KiB read per batch{} ({:.1f} s)\n",
			   isatty(fileno(stdout)) ? "\r\033[K" : "", epoch_ + 1, epochs_, train_loss, vq.pr_auc, vq.f1, vq.roc_auc,
			   ra["ra_fetch"].get<double>(), ra["ra_signal"].get<double>(), io["bytes_per_batch"].get<double>() / 1024,
			   best ? " [best]" : "", et);
		epoch_++;
		batch_in_epoch_ = 0;
		ep_ = zero_acc();
		checkpoint_now(best);
	}
	prog.finish();
	if (ddp_) // replicas must hold the same weights: compare a checksum across ranks
		replica_spread_ = replica_weight_spread(*ddp_, *model_);
	if (hw_)
		hw_->stop();
	if (!main_rank()) {
		if (store_) {
			std::string p = store_->path();
			store_.reset();
			std::filesystem::remove(p);
		}
		return 0; // files and the final test belong to rank 0
	}
	// Test: the best epoch's weights (or the last), threshold at the validation argmax-F1.
	std::string weights = "last";
	if (cfg_.get_bool("GNN_BEST_SNAPSHOT") && !best_.empty()) {
		torch::NoGradGuard ng;
		auto params = model_->parameters();
		for (size_t i = 0; i < params.size(); i++)
			params[i].copy_(best_[i]);
		weights = fmt::format("best (epoch {})", best_epoch_);
	}
	std::vector<float> sv, st;
	evaluate(sv, st);
	double vf1 = 0;
	double thr = best_f1_threshold(sv, yv_, &vf1);
	Quality vq = score_quality(sv, yv_, thr), tq = score_quality(st, yt_, thr);
	json fq = {{"test", quality_json(tq)}, {"val", quality_json(vq)}, {"weights", weights}};
	write_file_atomic(join_path(checkpoints_dir(run_dir_), "FINAL"),
			  last_ckpt_.empty() ? "\n" : std::filesystem::path(last_ckpt_).filename().string() + "\n");
	json ra = ra_json(tot_, geo_), io = io_json(tot_, store_ != nullptr);
	write_metrics(epoch_ < epochs_ ? "stopped_time_budget" : "complete", fq);
	if (store_) {
		std::string p = store_->path();
		store_.reset();
		std::filesystem::remove(p);
	}
	fmt::print("test ({} weights, threshold {:.4f}): F1 {:.4f}, PR-AUC {:.4f}, ROC-AUC {:.4f}, precision@0.5% {:.4f}, "
		   "recall@1% {:.4f} ({} positives of {})\n",
		   weights, thr, tq.f1, tq.pr_auc, tq.roc_auc, tq.precision_at_05pct, tq.recall_at_1pct, tq.positives, tq.nodes);
	fmt::print("read amplification: RA_fetch {:.2f}x, RA_signal {:.2f}x ({:.1f} pages, {:.0f} nodes loaded, {:.0f} "
		   "supervised per batch); measured {:.0f} KiB and {:.2f} ms per batch{}\n",
		   ra["ra_fetch"].get<double>(), ra["ra_signal"].get<double>(), ra["pages_per_batch"].get<double>(),
		   ra["loaded_per_batch"].get<double>(), ra["supervised_per_batch"].get<double>(),
		   io["bytes_per_batch"].get<double>() / 1024, io["fetch_ms_per_batch"].get<double>(),
		   io["measured"].get<bool>() ? "" : " (features from memory: nothing read)");
	fmt::print("done: {} epochs ({} steps), {:.1f} s; run folder {}\n", epoch_, step_, elapsed(), run_dir_);
	return 0;
}

} // namespace

SamplerOptions gnn_sampler_options(const Config &cfg)
{
	SamplerOptions so;
	so.kind = gnn_sampler_name(cfg);
	so.fanout = parse_fanout(cfg.get_string("GNN_FANOUT"));
	so.batch_seeds = cfg.get_int("GNN_BATCH_SEEDS");
	so.pages_per_batch = cfg.get_int("GNN_PAGES_PER_BATCH");
	so.hops = cfg.get_int("GNN_HOPS");
	so.budget = cfg.get_float("GNN_BOUNDARY_BUDGET");
	so.fim_ema = cfg.get_float("GNN_FIM_EMA");
	if (!(so.fim_ema >= 0 && so.fim_ema < 1))
		fail("CONFIG_GNN_FIM_EMA={} must be in [0, 1)", so.fim_ema);
	so.seed = uint64_t(cfg.get_int("SEED"));
	return so;
}

int train_gnn(TrainRequest req)
{
	GnnTrainer t(std::move(req));
	return t.run();
}

} // namespace knlp
