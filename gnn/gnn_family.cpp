// GraphSAGE fraud detection as a model family of the training loop: the graph (synthetic or
// DGraphFin .npz), its feature layout on pages, mini-batches from the neighbour, page or FIM
// sampler built on background threads, features read through the page store, full-graph
// validation every epoch, and at the end the test quality of the best epoch's weights next to
// modelled and measured read amplification.
#include "core/torch_compat.h"
#include "gnn/gnn_family.h"

#include <chrono>
#include <deque>
#include <filesystem>
#include <future>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/safetensors.h"
#include "gnn/layout.h"
#include "gnn/pagestore.h"
#include "gnn/quality.h"
#include "gnn/sage.h"
#include "optim/optimizer.h"
#include "train/ddp.h"
#include "train/families.h"

namespace knlp {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Graph load_gnn_graph(const GnnSettings &c)
{
	Graph g;
	if (c.data == choice::GnnData::Npz) {
		if (!file_exists(c.data_path))
			fail("{}: graph not found (CONFIG_GNN_DATA_PATH; bring your own dgraphfin.npz, or pick "
			     "CONFIG_GNN_DATA_SYNTHETIC)",
			     c.data_path);
		g = load_graph_npz(c.data_path);
	} else {
		g = synth_graph(c.synth_nodes, uint64_t(c.synth_seed));
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

json zero_acc()
{
	return {{"batches", 0},	      {"loss_sum", 0.0}, {"loss_n", 0},	      {"pages", 0},
		{"loaded", 0},	      {"supervised", 0}, {"edges", 0},	      {"io_bytes", 0},
		{"io_pages", 0},      {"io_reads", 0},	 {"io_seconds", 0.0}, {"sample_seconds", 0.0},
		{"step_seconds", 0.0}};
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
	} fields[] = {{"batches", 0, true},	  {"loss_sum", 1, false},   {"loss_n", 2, true},
		      {"pages", 3, true},	  {"loaded", 4, true},	    {"supervised", 2, true},
		      {"edges", 5, true},	  {"io_bytes", 6, true},    {"io_pages", 7, true},
		      {"io_reads", 8, true},	  {"io_seconds", 9, false}, {"sample_seconds", 10, false},
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
	       sup = double(a["supervised"].get<int64_t>()),
	       nb = double(std::max<int64_t>(1, a["batches"].get<int64_t>()));
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

} // namespace

namespace {

class GnnFamily : public Family {
public:
	explicit GnnFamily(const Settings &s) : cfg_(s), g_cfg_(s.gnn) {}

	const char *name() const override { return "gnn"; }
	std::string model_name() const override { return "graphsage"; }
	torch::Device device(torch::Device configured) const override
	{
		if (configured != torch::Device(torch::kCPU))
			fmt::print("note: the GNN trainer runs on the CPU (sparse gathers of small batches)\n");
		return torch::kCPU;
	}

	void load_data(RunContext &ctx) override
	{
		layout_name_ = name_of(g_cfg_.layout);
		sampler_name_ = name_of(g_cfg_.sampler);
		world_ = ctx.world;
		rank_ = ctx.rank;
		g_ = load_gnn_graph(g_cfg_);
		sym_ = build_csr(g_, true);
		adj_ = g_cfg_.symmetric ? sym_ : build_csr(g_, false);
		geo_.record_bytes = int64_t(g_.features) * 4;
		geo_.page_bytes = g_cfg_.page_bytes;
		if (g_cfg_.layout == choice::GnnLayout::File) {
			const std::string &lp = g_cfg_.layout_path;
			if (lp.empty())
				fail("CONFIG_GNN_LAYOUT_FILE=y but CONFIG_GNN_LAYOUT_PATH is empty (write a layout "
				     "with `knlp gnn "
				     "layout`)");
			if (!file_exists(lp))
				fail("{}: layout file not found (CONFIG_GNN_LAYOUT_PATH)", lp);
			auto t0 = Clock::now();
			layout_ = load_layout(lp, g_.n);
			layout_.build_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
		} else {
			layout_ = build_layout(layout_name_, g_, sym_, geo_, ctx.seed, g_cfg_.metis_parts);
		}
		spread_ = neighbour_page_spread(sym_, layout_, geo_);
		sampler_ = make_sampler(g_, adj_, layout_, geo_, gnn_sampler_options(cfg_));
		sampler_->prepare_epoch(0);
		nb_ = sampler_->batches();
		threads_ = sampler_name_ == "fim" ? 0 : static_cast<int>(g_cfg_.sampler_threads);
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
		if (g_cfg_.class_weights) {
			double pos = 0;
			for (int64_t v : g_.train)
				pos += double(g_.y[size_t(v)]);
			double n = double(g_.train.size());
			if (pos == 0 || pos == n)
				fail("{}: the train split holds one class only; class weights are undefined",
				     g_.origin);
			weight_ = torch::tensor({float(n / (2 * (n - pos))), float(n / (2 * pos))});
		}
		ep_ = zero_acc();
		tot_ = zero_acc();
	}

	void build_model(RunContext &) override { model_ = GraphSage(g_.features, g_cfg_.hidden, 2); }
	torch::nn::Module &model() override { return *model_; }

	void check(RunContext &ctx) override
	{
		if (ctx.world > 1 && sampler_name_ == "fim")
			fail("ddp: the fim sampler steers its batches with each batch's gradients; it trains as one "
			     "process "
			     "(choose another CONFIG_GNN_SAMPLER_* for a data-parallel run)");
	}

	Cadence cadence() const override
	{
		Cadence c;
		c.epochs = true;
		c.total_epochs = g_cfg_.epochs;
		c.total_steps = g_cfg_.epochs * ((nb_ + world_ - 1) / world_);
		c.unit = "batches";
		return c;
	}
	QualityMetric quality() const override { return {"pr_auc", "val", true}; }

	std::string describe() const override
	{
		const int64_t labelled = int64_t(g_.train.size() + g_.valid.size() + g_.test.size());
		return fmt::format("graphsage on {}: {} nodes, {} edges, {} features; train/valid/test {}/{}/{} ({} "
				   "labelled)",
				   g_.origin, g_.n, g_.edges(), g_.features, g_.train.size(), g_.valid.size(),
				   g_.test.size(), labelled);
	}
	void print_setup(RunContext &) override
	{
		fmt::print("layout {} ({:.2f} s{}; neighbours on {:.2f} pages per node), sampler {} ({} batches per "
			   "epoch), "
			   "features {}\n",
			   layout_.method == "file" ? "file" : layout_name_, layout_.build_seconds,
			   layout_.parts ? fmt::format(", {} METIS parts", layout_.parts) : "", spread_, sampler_name_,
			   nb_,
			   store_ ? (store_->direct() ? "read with O_DIRECT from " + store_->path() : store_->note())
				  : "from memory");
	}
	std::string global_batch_text(const RunContext &ctx) const override
	{
		return fmt::format("{} sampler batches per step (rank r takes the r-th)", ctx.world);
	}
	int64_t global_batch(const RunContext &ctx) const override { return ctx.world; }

	// The layout beside the checkpoints; each rank reads its own copy of the page file.
	// The layers' products run under bf16 autocast; neighbour sums stay float32 (gnn/sage.cpp).
	std::string bf16_unsupported(const RunContext &) const override { return ""; }
	// Its products (a few thousand nodes by 128 hidden units a batch) are too small for
	// bf16's conversions to pay: knlp_bench gnn 370000 on an AVX512-BF16 AMD EPYC, three
	// runs, 312-336 bf16 steps/s against 340-371 fp32.
	std::string bf16_slower(const RunContext &ctx) const override
	{
		if (ctx.dev.is_cuda())
			return "";
		return "GraphSAGE trains faster in fp32 than in bf16 on the CPU (docs/performance.md); "
		       "CONFIG_CPU_PRECISION_BF16 asks for bf16 anyway";
	}

	void start(RunContext &ctx, bool resumed) override
	{
		bf16_ = ctx.bf16;
		if (!resumed && ctx.main_rank())
			save_layout(join_path(ctx.run_dir, "layout.npz"), layout_);
		if (g_cfg_.feature_store) {
			make_dirs(ctx.run_dir); // another rank may get here before rank 0 has written into the folder
			store_ = std::make_unique<PageStore>(
				join_path(ctx.run_dir, ctx.world > 1 ? fmt::format("features.rank{}.bin", ctx.rank)
								     : "features.bin"),
				g_, layout_, geo_);
		}
	}

	double learning_rate(const Position &) const override { return cfg_.train.learning_rate; }

	void begin_epoch(RunContext &, const Position &p) override
	{
		wait_ahead();
		sampler_->prepare_epoch(p.epoch);
		nb_ = sampler_->batches();
		queued_ = p.in_epoch * world_ + rank_; // this rank's batches: rank, rank + world, ...
		ep_t0_ = Clock::now();
		ep_before_ = ep_.value("epoch_seconds", 0.0);
	}
	int64_t steps_in_epoch(const Position &) const override { return (nb_ + world_ - 1) / world_; }

	// A step takes sampler batches [b, b + world), rank r the r-th; each rank's loss is divided
	// by how many there are, so the summed gradient is their mean.
	MicroLoss micro_batch(RunContext &ctx, const Position &p, int) override
	{
		const int64_t first = p.in_epoch * world_, mine = first + rank_;
		in_step_ = std::min<int64_t>(world_, nb_ - first);
		prepared_.reset();
		if (mine < nb_) {
			refill();
			if (threads_ > 0) {
				prepared_ = ahead_.front().get();
				ahead_.pop_front();
			} else {
				prepared_ = prepare(mine);
			}
			refill();
		}
		t0_ = Clock::now();
		sup_ = prepared_ ? int64_t(prepared_->b.supervised.size()) : 0;
		lv_ = 0;
		h_ = torch::Tensor();
		MicroLoss m;
		if (sup_ == 0)
			return m;
		Prepared &pp = *prepared_;
		const int64_t n = int64_t(pp.b.nodes.size());
		auto x = torch::from_blob(pp.x.data(), {n, g_.features}, torch::kFloat);
		auto src = torch::from_blob(pp.b.esrc.data(), {int64_t(pp.b.esrc.size())}, torch::kLong);
		auto dst = torch::from_blob(pp.b.edst.data(), {int64_t(pp.b.edst.size())}, torch::kLong);
		auto supv = torch::from_blob(pp.b.supervised.data(), {sup_}, torch::kLong);
		std::vector<int64_t> ys;
		for (int64_t i : pp.b.supervised)
			ys.push_back(g_.y[size_t(pp.b.nodes[size_t(i)])]);
		auto yt = torch::tensor(ys, torch::kLong);
		torch::Tensor out;
		{
			compat::AutocastGuard ag(ctx.dev, ctx.bf16, torch::kBFloat16);
			out = model_->forward(x, src, dst, sampler_name_ == "fim" ? &h_ : nullptr).to(torch::kFloat);
		}
		if (h_.defined())
			h_.retain_grad();
		auto opts = torch::nn::functional::NLLLossFuncOptions();
		if (weight_.defined())
			opts.weight(weight_);
		auto loss = torch::nn::functional::nll_loss(out.index_select(0, supv), yt, opts);
		lv_ = loss.item<double>();
		m.backprop = in_step_ > 1 ? loss / double(in_step_) : loss;
		m.value = loss.detach();
		m.weight = 1;
		return m;
	}
	// Every rank counts every rank's batches: these are summed over ranks.
	std::vector<double> step_stats() override
	{
		const double step_s = std::chrono::duration<double>(Clock::now() - t0_).count();
		return step_numbers(prepared_ ? &*prepared_ : nullptr, lv_, sup_, step_s);
	}
	double step_items(const Position &) const override { return double(in_step_); }
	void after_step(RunContext &, const Position &, const StepOutcome &o) override
	{
		add_acc(ep_, o.stats);
		add_acc(tot_, o.stats);
		if (o.updated && h_.defined() && h_.grad().defined()) {
			auto sq = h_.grad().pow(2).sum(1).contiguous();
			sampler_->update_importance(prepared_->b.nodes, sq.data_ptr<float>());
		}
	}
	void train_record(json &rec, std::string &text) const override
	{
		json ra = ra_json(ep_, geo_);
		rec["ra_fetch"] = ra["ra_fetch"];
		rec["ra_signal"] = ra["ra_signal"];
		text += fmt::format(" RA_fetch {:.1f}x", ra["ra_fetch"].get<double>());
	}

	Evaluation evaluate(RunContext &, const Position &) override
	{
		std::vector<float> sv, st;
		score_graph(sv, st);
		double vf1 = 0;
		const double thr = best_f1_threshold(sv, yv_, &vf1);
		Quality vq = score_quality(sv, yv_, thr);
		json ra = ra_json(ep_, geo_), io = io_json(ep_, store_ != nullptr);
		const double et = ep_before_ + std::chrono::duration<double>(Clock::now() - ep_t0_).count();
		const double train_loss = ep_["loss_n"].get<int64_t>()
						  ? ep_["loss_sum"].get<double>() / double(ep_["loss_n"].get<int64_t>())
						  : 0.0;
		Evaluation ev;
		ev.quality = vq.pr_auc;
		ev.train_loss = train_loss;
		ev.record = {{"val_pr_auc", vq.pr_auc},
			     {"val_f1", vq.f1},
			     {"val_roc_auc", vq.roc_auc},
			     {"ra_fetch", ra["ra_fetch"]},
			     {"ra_signal", ra["ra_signal"]},
			     {"bytes_per_batch", io["bytes_per_batch"]},
			     {"fetch_ms_per_batch", io["fetch_ms_per_batch"]},
			     {"epoch_time", et}};
		ev.text = fmt::format(
			"train loss {:.4f}, val PR-AUC {:.4f}, F1 {:.4f}, ROC-AUC {:.4f}; RA_fetch {:.2f}x, "
			"RA_signal {:.2f}x, {:.0f} KiB read per batch ({:.1f} s)",
			train_loss, vq.pr_auc, vq.f1, vq.roc_auc, ra["ra_fetch"].get<double>(),
			ra["ra_signal"].get<double>(), io["bytes_per_batch"].get<double>() / 1024, et);
		return ev;
	}
	std::string format_quality(double q) const override { return fmt::format("val PR-AUC {:.4f}", q); }
	void on_new_best(RunContext &) override
	{
		best_.clear();
		for (auto &p : model_->parameters())
			best_.push_back(p.detach().clone());
	}
	void end_epoch(RunContext &) override
	{
		wait_ahead();
		ep_ = zero_acc();
	}

	void save_state(json &st, std::vector<NamedTensor> &tensors) const override
	{
		json ep = ep_;
		ep["epoch_seconds"] = ep_before_ + std::chrono::duration<double>(Clock::now() - ep_t0_).count();
		st["epoch_acc"] = ep;
		st["total_acc"] = tot_;
		if (sampler_name_ == "fim")
			tensors.push_back({"fim.importance",
					   torch::from_blob(sampler_->importance().data(),
							    {int64_t(sampler_->importance().size())}, torch::kFloat)});
		auto params = model_->named_parameters();
		for (size_t i = 0; i < best_.size(); i++)
			tensors.push_back({"best." + params[i].key(), best_[i]});
	}
	void load_state(const json &st, const SafetensorsFile &f) override
	{
		ep_ = st.at("epoch_acc");
		tot_ = st.at("total_acc");
		if (sampler_name_ == "fim") {
			auto t = read_tensor(f, "fim.importance");
			if (!t.defined() || t.numel() != g_.n)
				fail("{}: checkpoint lacks the FIM sampler's importance scores", f.path());
			std::copy_n(t.data_ptr<float>(), g_.n, sampler_->importance().data());
		}
		best_.clear();
		for (auto &p : model_->named_parameters()) {
			auto t = read_tensor(f, "best." + p.key());
			if (!t.defined())
				break;
			best_.push_back(t);
		}
	}

	// Test: the best epoch's weights (or the last), threshold at the validation argmax-F1.
	void finish(RunContext &, const RunEnd &end) override
	{
		weights_ = "last";
		if (g_cfg_.best_snapshot && !best_.empty()) {
			torch::NoGradGuard ng;
			auto params = model_->parameters();
			for (size_t i = 0; i < params.size(); i++)
				params[i].copy_(best_[i]);
			weights_ = fmt::format("best (epoch {})", end.best_epoch);
		}
		std::vector<float> sv, st;
		score_graph(sv, st);
		double vf1 = 0;
		thr_ = best_f1_threshold(sv, yv_, &vf1);
		vq_ = score_quality(sv, yv_, thr_);
		tq_ = score_quality(st, yt_, thr_);
		tested_ = true;
	}

	void metrics(json &j, const json &history, const RunEnd &end) const override
	{
		auto list = [&](const char *key) {
			json a = json::array();
			for (const auto &h : history)
				a.push_back(h[key]);
			return a;
		};
		const double step_s = tot_["step_seconds"].get<double>(),
			     sample_s = tot_["sample_seconds"].get<double>();
		const double batches = double(tot_["batches"].get<int64_t>());
		j.update(
			{{"dataset", g_.origin},
			 {"final_iteration", end.pos.step},
			 {"graph",
			  {{"nodes", g_.n},
			   {"edges", g_.edges()},
			   {"features", g_.features},
			   {"adjacency_entries", int64_t(adj_.col.size())},
			   {"symmetric", g_cfg_.symmetric},
			   {"train", g_.train.size()},
			   {"valid", g_.valid.size()},
			   {"test", g_.test.size()}}},
			 {"gnn",
			  {{"layout", layout_.method == "file" ? "file" : layout_name_},
			   {"sampler", sampler_name_},
			   {"layout_seconds", layout_.build_seconds},
			   {"metis_parts", layout_.parts},
			   {"neighbour_page_spread", spread_},
			   {"page_bytes", geo_.page_bytes},
			   {"record_bytes", geo_.record_bytes},
			   {"read_amplification", ra_json(tot_, geo_)},
			   {"io", io_json(tot_, store_ != nullptr)},
			   {"io_note", store_ ? store_->note() : "features from memory (CONFIG_GNN_FEATURE_STORE=n)"}}},
			 {"epochs", list("epoch")},
			 {"train_losses", list("train_loss")},
			 {"val_pr_aucs", list("val_pr_auc")},
			 {"val_f1s", list("val_f1")},
			 {"val_roc_aucs", list("val_roc_auc")},
			 {"ra_fetch_per_epoch", list("ra_fetch")},
			 {"ra_signal_per_epoch", list("ra_signal")},
			 {"bytes_per_batch_per_epoch", list("bytes_per_batch")},
			 {"fetch_ms_per_batch_per_epoch", list("fetch_ms_per_batch")},
			 {"epoch_times", list("epoch_time")},
			 {"steps_per_second", step_s > 0 ? batches / step_s : 0.0},
			 {"sampler_batches_per_second", sample_s > 0 ? batches / sample_s : 0.0}});
		json ra = ra_json(tot_, geo_), io = io_json(tot_, store_ != nullptr);
		j["figures"] = {{"layout", layout_.method == "file" ? "file" : layout_name_},
				{"sampler", sampler_name_},
				{"ra_fetch", ra["ra_fetch"]},
				{"ra_signal", ra["ra_signal"]},
				{"kib_per_batch", io["bytes_per_batch"].get<double>() / 1024},
				{"fetch_ms_per_batch", io["fetch_ms_per_batch"]}};
		if (tested_) { // the run's figure is the tested weights' PR-AUC on the test split
			j["figures"]["test_f1"] = tq_.f1;
			j["figures"]["test_roc_auc"] = tq_.roc_auc;
			j["test"] = quality_json(tq_);
			j["val"] = quality_json(vq_);
			j["tested_weights"] = weights_;
			j["quality"]["value"] = tq_.pr_auc;
			j["quality"]["split"] = "test";
		}
	}

	void after_run(RunContext &, const RunEnd &) override
	{
		json ra = ra_json(tot_, geo_), io = io_json(tot_, store_ != nullptr);
		fmt::print(
			"test ({} weights, threshold {:.4f}): F1 {:.4f}, PR-AUC {:.4f}, ROC-AUC {:.4f}, precision@0.5% "
			"{:.4f}, recall@1% {:.4f} ({} positives of {})\n",
			weights_, thr_, tq_.f1, tq_.pr_auc, tq_.roc_auc, tq_.precision_at_05pct, tq_.recall_at_1pct,
			tq_.positives, tq_.nodes);
		fmt::print(
			"read amplification: RA_fetch {:.2f}x, RA_signal {:.2f}x ({:.1f} pages, {:.0f} nodes loaded, "
			"{:.0f} supervised per batch); measured {:.0f} KiB and {:.2f} ms per batch{}\n",
			ra["ra_fetch"].get<double>(), ra["ra_signal"].get<double>(),
			ra["pages_per_batch"].get<double>(), ra["loaded_per_batch"].get<double>(),
			ra["supervised_per_batch"].get<double>(), io["bytes_per_batch"].get<double>() / 1024,
			io["fetch_ms_per_batch"].get<double>(),
			io["measured"].get<bool>() ? "" : " (features from memory: nothing read)");
	}

	void cleanup(RunContext &) override
	{
		wait_ahead();
		if (store_) {
			std::string p = store_->path();
			store_.reset();
			std::filesystem::remove(p);
		}
	}

private:
	Prepared prepare(int64_t b) const
	{
		Prepared p;
		auto t0 = Clock::now();
		p.b = sampler_->make(b);
		p.sample_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
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
	// Keep up to CONFIG_GNN_SAMPLER_THREADS of this rank's next batches in preparation.
	void refill()
	{
		while (threads_ > 0 && int64_t(ahead_.size()) < threads_ && queued_ < nb_)
			ahead_.push_back(std::async(std::launch::async, [this, b = queued_] { return prepare(b); })),
				queued_ += world_;
	}
	void wait_ahead()
	{
		for (auto &f : ahead_)
			f.wait();
		ahead_.clear();
	}
	// Fraud probabilities of the validation and test nodes, from the full graph.
	void score_graph(std::vector<float> &val, std::vector<float> &test)
	{
		torch::NoGradGuard ng;
		model_->eval();
		torch::Tensor prob;
		{
			compat::AutocastGuard ag(torch::kCPU, bf16_, torch::kBFloat16);
			prob = model_->forward(X_, src_, dst_).to(torch::kFloat).select(1, 1).exp().contiguous();
		}
		model_->train();
		const float *pp = prob.data_ptr<float>();
		val.clear(), test.clear();
		for (int64_t v : g_.valid)
			val.push_back(pp[v]);
		for (int64_t v : g_.test)
			test.push_back(pp[v]);
	}

	const Settings &cfg_;
	const GnnSettings &g_cfg_;
	std::string layout_name_, sampler_name_;
	int world_ = 1, rank_ = 0, threads_ = 0;
	Graph g_;
	Csr sym_, adj_;
	Layout layout_;
	PageGeometry geo_;
	double spread_ = 0;
	std::unique_ptr<Sampler> sampler_;
	std::unique_ptr<PageStore> store_;
	GraphSage model_{nullptr};
	torch::Tensor X_, src_, dst_, weight_;
	std::vector<int64_t> yv_, yt_;
	int64_t nb_ = 0, queued_ = 0, in_step_ = 0, sup_ = 0;
	std::deque<std::future<Prepared>> ahead_;
	std::optional<Prepared> prepared_;
	torch::Tensor h_;
	bool bf16_ = false; // bf16 autocast (RunContext::bf16), for the full-graph scoring
	double lv_ = 0, ep_before_ = 0;
	Clock::time_point t0_ = Clock::now(), ep_t0_ = Clock::now();
	json ep_ = json::object(), tot_ = json::object(); // accumulators: this epoch and the whole run
	std::vector<torch::Tensor> best_;
	bool tested_ = false;
	std::string weights_;
	double thr_ = 0;
	Quality vq_, tq_;
};

} // namespace

SamplerOptions gnn_sampler_options(const Settings &s)
{
	SamplerOptions so;
	so.kind = name_of(s.gnn.sampler);
	so.fanout = parse_fanout(s.gnn.fanout);
	so.batch_seeds = s.gnn.batch_seeds;
	so.pages_per_batch = s.gnn.pages_per_batch;
	so.hops = s.gnn.hops;
	so.budget = s.gnn.boundary_budget;
	so.fim_ema = s.gnn.fim_ema;
	so.seed = uint64_t(s.core.seed);
	return so;
}

std::unique_ptr<Family> make_gnn_family(const Settings &s)
{
	return std::make_unique<GnnFamily>(s);
}

} // namespace knlp
