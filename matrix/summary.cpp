// A results folder's all_results.json and summary_report.txt, from its runs' metrics. Every
// family writes the same envelope (train/loop.cpp, docs/formats.md): status, progress,
// time, the quality block {metric, split, higher_is_better, value, best}, sparsity, memory,
// and "figures" (the family's own numbers for tables). Nothing here knows a family.
#include "matrix/runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "matrix/stats.h"
#include "train/metrics.h"

namespace knlp {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

double number(const json &v)
{
	return v.is_null() ? NAN : v.get<double>();
}

// One entry of all_results.json: the plan entry, its state and the run's figures.
json result_entry(const std::string &dir, const json &plan_run)
{
	json e = plan_run;
	std::string rd = join_path(dir, plan_run.at("test_id").get<std::string>());
	if (file_exists(join_path(rd, "COMPLETE")))
		e["status"] = "complete";
	else if (file_exists(join_path(rd, "error.txt")))
		e["status"] = "failed";
	else
		e["status"] = is_dir(rd) ? "incomplete" : "pending";
	e["success"] = e["status"] == "complete";
	if (e["status"] == "failed")
		e["error"] = read_file(join_path(rd, "error.txt"));
	std::string mp = join_path(rd, "training_metrics.json");
	if (e["status"] != "complete" || !file_exists(mp))
		return e;
	try {
		json m = read_json_file(mp);
		if (m.value("schema", "") != k_metrics_schema)
			fail("written by another knlp version (schema '{}', this one reads '{}'); re-run it",
			     m.value("schema", ""), k_metrics_schema);
		const json &q = m.at("quality"), &p = m.at("pruning");
		const json &h = m.at("history");
		e["family"] = m.at("family");
		e["iterations"] = m.at("progress").at("step");
		e["elapsed_time"] = number(m.at("total_time"));
		e["throughput"] = number(m.at("throughput").at("value"));
		e["throughput_unit"] = m.at("throughput").at("unit");
		e["quality_metric"] = q.at("metric");
		e["quality_split"] = q.at("split");
		e["higher_is_better"] = q.at("higher_is_better").get<bool>();
		if (q.at("value").is_null())
			fail("no quality value (the run never evaluated)");
		e["quality"] = number(q.at("value"));
		e["best_quality"] = q.at("best");
		e["eval_loss"] = h.empty() ? json(nullptr) : h.back().at("eval_loss");
		e["optimizer_state_bytes"] = m.at("optimizer_state_bytes").get<int64_t>();
		e["final_sparsity"] = p.value("final_sparsity", 0.0);
		e["pruning_buffer_bytes"] = p.value("mask_bytes", int64_t(0)) + p.value("w0_bytes", int64_t(0));
		e["parameters"] = m.at("parameters").get<int64_t>();
		if (m.contains("hardware")) { // CONFIG_HW_MONITOR: mean and peak memory of the run
			const json &hw = m.at("hardware");
			for (const char *k : {"rss_mean_mb", "rss_peak_mb", "gpu_memory_mean_mb", "gpu_memory_peak_mb"})
				if (hw.contains(k))
					e[k] = hw.at(k).get<double>();
		}
		json figures = json::object();
		for (const auto &[k, v] : m.at("figures").items())
			if (v.is_number() || v.is_string())
				figures[k] = v;
		e["figures"] = figures;
	} catch (const std::exception &x) { // json type or key errors, and knlp::Error
		e["status"] = "failed";
		e["success"] = false;
		std::string what = x.what();
		e["error"] = fmt::format("{}: unreadable metrics ({})", mp, what.substr(0, what.find('\n')));
		for (const char *k : {"quality", "best_quality", "eval_loss", "figures"})
			e.erase(k);
	}
	return e;
}

std::string pct(double x)
{
	return fmt::format("{:.1f}%", 100 * x);
}

std::string mib(double b)
{
	return fmt::format("{:.2f}", b / (1024.0 * 1024.0));
}

// How a quality value reads: accuracies as percentages, the rest as numbers.
std::string show(const std::string &metric, double v)
{
	if (std::isnan(v))
		return "-";
	return metric == "accuracy" ? fmt::format("{:.2f}%", 100 * v) : fmt::format("{:.4f}", v);
}

std::string show_stats(const std::string &metric, const std::vector<double> &v)
{
	SampleStats s = sample_stats(v);
	if (s.n == 0)
		return "-";
	const double k = metric == "accuracy" ? 100 : 1;
	const char *unit = metric == "accuracy" ? "%" : "";
	return s.n > 1 ? fmt::format("{:.4g}{} +/- {:.3g}", k * s.mean, unit, k * s.sd)
		       : fmt::format("{:.4g}{}", k * s.mean, unit);
}

struct Group {
	std::string config_id, optimizer, model, pruning;
	double target_sparsity = 0;
	std::vector<double> quality, time, mem;
	std::vector<double> rss_peak, gpu_peak; // CONFIG_HW_MONITOR
	std::map<std::string, std::vector<double>> figures;
	std::map<std::string, std::string> names; // figures that are names (the GNN's layout)
	double sparsity = 0;
};

} // namespace

std::string newest_results_dir(const std::string &parent)
{
	std::string best;
	std::error_code ec;
	if (!is_dir(parent))
		return "";
	for (const auto &ent : fs::directory_iterator(parent, ec)) {
		std::string n = ent.path().filename().string();
		if (ent.is_directory() && n.rfind("test_matrix_results_", 0) == 0 &&
		    file_exists(join_path(ent.path().string(), "plan.json")))
			if (best.empty() || n > fs::path(best).filename().string())
				best = ent.path().string();
	}
	return best;
}

namespace {

// What the runs are judged by: their own quality block (one family per matrix).
struct Judged {
	std::string metric = "quality", split;
	bool higher_better = false;
	std::string what() const { return split.empty() ? metric : split + " " + metric; }
};

// The complete runs grouped by configuration, in plan order.
struct Groups {
	std::map<std::string, Group> by_id;
	std::vector<std::string> order, figure_names;

	void add(const json &e)
	{
		if (!e.contains("quality"))
			return;
		std::string cid = e.value("config_id", "");
		if (!by_id.count(cid)) {
			order.push_back(cid);
			by_id[cid].config_id = cid;
			by_id[cid].optimizer = e.value("optimizer", "");
			by_id[cid].model = e.value("model", "");
			by_id[cid].pruning = e.value("pruning", "");
			by_id[cid].target_sparsity = e.value("target_sparsity", 0.0);
		}
		Group &g = by_id[cid];
		g.quality.push_back(e["quality"].get<double>());
		g.time.push_back(e.value("elapsed_time", 0.0));
		if (e.contains("rss_peak_mb"))
			g.rss_peak.push_back(e["rss_peak_mb"].get<double>());
		if (e.contains("gpu_memory_peak_mb"))
			g.gpu_peak.push_back(e["gpu_memory_peak_mb"].get<double>());
		g.mem.push_back(double(e.value("optimizer_state_bytes", int64_t(0)) +
				       e.value("pruning_buffer_bytes", int64_t(0))));
		g.sparsity = e.value("final_sparsity", 0.0);
		const json figures = e.value("figures", json::object()); // iterated below: must outlive the loop
		for (const auto &[k, v] : figures.items()) {
			if (std::find(figure_names.begin(), figure_names.end(), k) == figure_names.end())
				figure_names.push_back(k);
			if (v.is_number())
				g.figures[k].push_back(v.get<double>());
			else if (v.is_string())
				g.names[k] = v.get<std::string>();
		}
	}
};

// An external baseline (BASELINE=<results dir>/<config id>): its finished runs, and the
// configuration id it stands for.
std::vector<json> external_baseline(std::string &baseline)
{
	std::vector<json> external;
	if (baseline.find('/') == std::string::npos)
		return external;
	std::string bdir = dirname_of(baseline), bid = fs::path(baseline).filename().string();
	std::string ar = join_path(bdir, "all_results.json");
	if (!file_exists(ar))
		fail("{}: baseline results not found (CONFIG_MATRIX_BASELINE={})", ar, baseline);
	for (const auto &e : read_json_file(ar))
		if (e.value("config_id", "") == bid && e.value("status", "") == "complete") {
			json x = e;
			x["external"] = bdir;
			external.push_back(x);
		}
	baseline = bid;
	return external;
}

// A Welch interval read against the baseline: "better" or "worse" only when it excludes zero.
const char *verdict(const DiffCI &d, bool higher_better)
{
	return (higher_better ? d.lo > 0 : d.hi < 0)   ? "better"
	       : (higher_better ? d.hi < 0 : d.lo > 0) ? "worse"
						       : "inconclusive";
}

std::string all_runs_table(const json &all, const Judged &j)
{
	std::string r = "== All runs\n";
	r += fmt::format("{:<44} {:<10} {:>14} {:>10} {:>9} {:>9} {:>10}\n", "run", "status", j.what(),
			 j.split.empty() ? "loss" : j.split + " loss", "sparsity", "time s", "state MiB");
	for (const auto &e : all) {
		const bool ok = e["status"] == "complete" && e.contains("quality");
		r += fmt::format("{:<44} {:<10} {:>14} {:>10} {:>9} {:>9} {:>10}\n", e["test_id"].get<std::string>(),
				 e["status"].get<std::string>(), ok ? show(j.metric, e["quality"].get<double>()) : "-",
				 ok && !e["eval_loss"].is_null() ? fmt::format("{:.4f}", e["eval_loss"].get<double>())
								 : "-",
				 ok ? pct(e["final_sparsity"].get<double>()) : "-",
				 ok ? fmt::format("{:.1f}", e["elapsed_time"].get<double>()) : "-",
				 ok ? mib(double(e["optimizer_state_bytes"].get<int64_t>() +
						 e["pruning_buffer_bytes"].get<int64_t>()))
				    : "-");
		if (e["status"] == "failed")
			r += fmt::format("    error: {}\n", e.value("error", ""));
	}
	return r;
}

// Mean +/- sd per configuration, with Welch's interval against the baseline; the ranking.
std::string configurations(Groups &gs, const Judged &j, const std::string &baseline, double conf)
{
	std::string r = fmt::format("\n== Configurations (final {}, {} is better; mean +/- sd over seeds){}\n",
				    j.what(), j.higher_better ? "higher" : "lower",
				    baseline.empty() ? ""
						     : fmt::format("; difference to {} with its {:.0f}% Welch interval",
								   baseline, 100 * conf));
	const double k = j.metric == "accuracy" ? 100 : 1;
	for (const auto &id : gs.order) {
		const Group &g = gs.by_id[id];
		std::string cmp;
		if (!baseline.empty() && id != baseline && gs.by_id.count(baseline)) {
			DiffCI d = welch_interval(g.quality, gs.by_id[baseline].quality, conf);
			if (!d.valid)
				cmp = fmt::format("diff {:+.4g} (interval needs 2+ seeds on both sides)", k * d.diff);
			else
				cmp = fmt::format("diff {:+.4g} [{:+.4g}, {:+.4g}] {}", k * d.diff, k * d.lo, k * d.hi,
						  verdict(d, j.higher_better));
		} else if (id == baseline) {
			cmp = "baseline";
		}
		r += fmt::format("{:<40} n={:<3} {:<24} time {:>8.1f} s  {}\n", id, g.quality.size(),
				 show_stats(j.metric, g.quality), sample_stats(g.time).mean, cmp);
	}
	std::vector<const Group *> ranked;
	for (const auto &id : gs.order)
		ranked.push_back(&gs.by_id[id]);
	std::stable_sort(ranked.begin(), ranked.end(), [&](const Group *a, const Group *b) {
		double x = sample_stats(a->quality).mean, y = sample_stats(b->quality).mean;
		return j.higher_better ? x > y : x < y;
	});
	r += fmt::format("\n== Top configurations by {}\n", j.what());
	for (size_t i = 0; i < ranked.size() && i < 10; i++)
		r += fmt::format("{:>2}. {:<40} {}\n", i + 1, ranked[i]->config_id,
				 show_stats(j.metric, ranked[i]->quality));
	r += "\n== Best per optimizer\n";
	std::set<std::string> seen;
	for (const Group *g : ranked)
		if (seen.insert(g->optimizer).second)
			r += fmt::format("{:<12} {:<40} {}\n", g->optimizer, g->config_id,
					 show_stats(j.metric, g->quality));
	return r;
}

std::string memory_and_time(Groups &gs)
{
	std::string r = "\n== Memory and time\n";
	r += fmt::format("{:<40} {:>22} {:>10} {:>10} {:>14} {:>14}\n", "configuration", "state+masks MiB", "sparsity",
			 "time s", "peak RSS MiB", "peak GPU MiB");
	auto peak = [](const std::vector<double> &v) {
		return v.empty() ? std::string("-") : fmt::format("{:.0f}", *std::max_element(v.begin(), v.end()));
	};
	for (const auto &id : gs.order) {
		const Group &g = gs.by_id[id];
		r += fmt::format("{:<40} {:>22} {:>10} {:>10.1f} {:>14} {:>14}\n", id, mib(sample_stats(g.mem).mean),
				 pct(g.sparsity), sample_stats(g.time).mean, peak(g.rss_peak), peak(g.gpu_peak));
	}
	return r;
}

// The family's figures (training_metrics.json "figures"): a column each.
std::string family_figures(Groups &gs)
{
	if (gs.figure_names.empty())
		return "";
	std::string r = "\n== Family figures (mean over seeds)\n" + fmt::format("{:<40}", "configuration");
	for (const auto &f : gs.figure_names)
		r += fmt::format(" {:>18}", f);
	r += "\n";
	for (const auto &id : gs.order) {
		const Group &g = gs.by_id[id];
		r += fmt::format("{:<40}", id);
		for (const auto &f : gs.figure_names) {
			std::string cell = "-";
			if (g.names.count(f))
				cell = g.names.at(f);
			else if (g.figures.count(f))
				cell = fmt::format("{:.4g}", sample_stats(g.figures.at(f)).mean);
			r += fmt::format(" {:>18}", cell);
		}
		r += "\n";
	}
	return r;
}

Judged judged_by(const json &all)
{
	Judged j;
	for (const auto &e : all)
		if (e.contains("quality_metric")) {
			j.metric = e["quality_metric"], j.split = e["quality_split"],
			j.higher_better = e["higher_is_better"];
			break;
		}
	return j;
}

// The complete runs of `all` by configuration; the external baseline's when the baseline is
// not among them.
Groups group_complete(const json &all, const std::string &baseline, const std::vector<json> &external)
{
	Groups gs;
	for (const auto &e : all)
		if (e.value("status", "") == "complete")
			gs.add(e);
	if (!gs.by_id.count(baseline))
		for (const auto &e : external)
			gs.add(e);
	return gs;
}

} // namespace

json configuration_stats(const std::string &dir)
{
	json all = file_exists(join_path(dir, "all_results.json")) ? read_json_file(join_path(dir, "all_results.json"))
								   : json::array();
	Config cfg = Config::load(join_path(dir, "config.txt"), Config::Mode::Saved);
	std::string baseline = cfg.settings().matrix.baseline;
	const std::vector<json> external = external_baseline(baseline);
	const double conf = cfg.settings().matrix.confidence;
	const Judged j = judged_by(all);
	Groups gs = group_complete(all, baseline, external);
	for (const auto &e : all) { // configurations without a complete run yet, in plan order
		std::string cid = e.value("config_id", "");
		if (!gs.by_id.count(cid)) {
			gs.order.push_back(cid);
			Group &g = gs.by_id[cid];
			g.config_id = cid, g.optimizer = e.value("optimizer", ""), g.model = e.value("model", "");
			g.pruning = e.value("pruning", ""), g.target_sparsity = e.value("target_sparsity", 0.0);
		}
	}
	json rows = json::array();
	for (const auto &id : gs.order) {
		const Group &g = gs.by_id[id];
		SampleStats st = sample_stats(g.quality);
		json figs = json::object(); // the family's figures: numbers averaged over seeds
		for (const auto &[k, v] : g.figures)
			figs[k] = sample_stats(v).mean;
		for (const auto &[k, v] : g.names)
			figs[k] = v;
		json r = {{"config_id", id},
			  {"model", g.model},
			  {"optimizer", g.optimizer},
			  {"pruning", g.pruning},
			  {"sparsity", g.target_sparsity},
			  {"n", st.n},
			  {"mean", st.n ? json(st.mean) : json(nullptr)},
			  {"sd", st.n > 1 ? json(st.sd) : json(nullptr)},
			  {"baseline", id == baseline},
			  {"figures", figs}};
		if (id != baseline && gs.by_id.count(baseline)) {
			DiffCI d = welch_interval(g.quality, gs.by_id[baseline].quality, conf);
			if (d.valid)
				r.update({{"diff", d.diff},
					  {"lo", d.lo},
					  {"hi", d.hi},
					  {"verdict", verdict(d, j.higher_better)}});
		}
		rows.push_back(r);
	}
	return {{"rows", rows},
		{"baseline", baseline},
		{"metric", j.metric},
		{"higher_is_better", j.higher_better},
		{"confidence", conf}};
}

void write_summaries(const std::string &dir)
{
	json plan = read_json_file(join_path(dir, "plan.json"));
	Config cfg = Config::load(join_path(dir, "config.txt"), Config::Mode::Saved);
	json all = json::array();
	for (const auto &r : plan.at("runs"))
		if (is_dir(join_path(dir, r.at("test_id").get<std::string>())))
			all.push_back(result_entry(dir, r));
	std::string baseline = cfg.settings().matrix.baseline;
	const std::vector<json> external = external_baseline(baseline);
	write_file_atomic(join_path(dir, "all_results.json"),
			  all.dump(2, ' ', false, json::error_handler_t::replace) + "\n");

	const Judged j = judged_by(all);
	int n_complete = 0, n_failed = 0, n_incomplete = 0;
	for (const auto &e : all) {
		std::string st = e["status"];
		n_complete += st == "complete";
		n_failed += st == "failed";
		n_incomplete += st == "incomplete";
	}
	Groups gs = group_complete(all, baseline, external);

	const size_t planned = plan.at("runs").size();
	std::string r = fmt::format("knlp test matrix: {}\n", dir);
	r += fmt::format("runs planned {}, complete {}, failed {}, incomplete {}, not started {}\n\n", planned,
			 n_complete, n_failed, n_incomplete, planned - n_complete - n_failed - n_incomplete);
	r += all_runs_table(all, j);
	r += configurations(gs, j, baseline, cfg.settings().matrix.confidence);
	r += memory_and_time(gs);
	r += family_figures(gs);
	write_file_atomic(join_path(dir, "summary_report.txt"), r);
}

} // namespace knlp
