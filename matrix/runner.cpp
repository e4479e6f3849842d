#include "matrix/runner.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <iostream>
#include <map>
#include <sched.h>
#include <set>
#include <sstream>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/progress.h"
#include "core/run.h"
#include "matrix/expand.h"
#include "matrix/stats.h"

namespace knlp {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

json run_json(const MatrixRun &r, size_t index)
{
	return {{"index", index}, {"test_id", r.id},	   {"config_id", r.config_id}, {"model", r.model},
		{"optimizer", r.optimizer}, {"variant", r.variant},	    {"pruning", r.pruning},
		{"target_sparsity", r.sparsity_pct / 100.0}, {"seed", r.seed}};
}

json read_json(const std::string &path)
{
	try {
		return json::parse(read_file(path));
	} catch (const json::exception &e) {
		fail("{}: malformed JSON ({})", path, e.what());
	}
}

std::string last_error_line(const std::string &log)
{
	if (!file_exists(log))
		return "";
	std::istringstream in(read_file(log));
	std::string line, err, last;
	while (std::getline(in, line)) {
		if (line.rfind("knlp: error:", 0) == 0)
			err = line;
		if (!line.empty())
			last = line;
	}
	return err.empty() ? last : err;
}

bool metrics_complete(const std::string &run_dir)
{
	std::string m = join_path(run_dir, "training_metrics.json");
	if (!file_exists(m) || !file_exists(join_path(run_dir, "checkpoints/FINAL")))
		return false;
	try {
		// A run that stopped on its time budget (CONFIG_MAX_TIME) finished as configured.
		std::string st = json::parse(read_file(m)).value("status", "");
		return st == "complete" || st == "stopped_time_budget";
	} catch (...) {
		return false;
	}
}

// One entry of all_results.json: the plan entry, its state and the run's metrics.
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
	if (e["status"] == "complete" && file_exists(mp)) try {
		json m = read_json(mp);
		e["iterations"] = m.value("final_iteration", 0);
		if (m.contains("gnn")) {
			// GNN runs: fraud-detection quality at the validation threshold, read amplification.
			const json &t = m.value("test", json::object());
			const json &g = m.at("gnn");
			e["elapsed_time"] = m.value("total_training_time", 0.0);
			e["gnn_layout"] = g.value("layout", "");
			e["gnn_sampler"] = g.value("sampler", "");
			e["test_f1"] = t.value("f1", 0.0);
			e["test_pr_auc"] = t.value("pr_auc", 0.0);
			e["test_roc_auc"] = t.value("roc_auc", 0.0);
			e["ra_fetch"] = g.at("read_amplification").value("ra_fetch", 0.0);
			e["ra_signal"] = g.at("read_amplification").value("ra_signal", 0.0);
			e["bytes_per_batch"] = g.at("io").value("bytes_per_batch", 0.0);
			e["fetch_ms_per_batch"] = g.at("io").value("fetch_ms_per_batch", 0.0);
		} else if (m.contains("test_accuracies")) {
			// Image runs (the original's CNN schema): accuracy, higher is better.
			e["elapsed_time"] = m.value("total_training_time", 0.0);
			e["images_per_second"] = m.value("images_per_second", 0.0);
			e["best_accuracy"] = m.value("best_accuracy", json(nullptr));
			if (!m.at("test_accuracies").empty()) {
				e["final_accuracy"] = m.at("test_accuracies").back();
				e["final_test_loss"] = m.at("test_losses").back();
			}
		} else {
			const json &h = m.at("metrics");
			e["elapsed_time"] = m.value("total_time", 0.0);
			e["tokens_per_second"] = m.value("tokens_per_second", 0.0);
			e["best_val_loss"] = m.value("best_val_loss", json(nullptr));
			if (!h.at("val_losses").empty()) {
				e["final_val_loss"] = h.at("val_losses").back();
				e["final_val_perplexity"] = h.at("val_perplexities").back();
			}
		}
		e["optimizer_state_bytes"] = m.value("optimizer_state_bytes", int64_t(0));
		const json p = m.value("pruning", json::object());
		e["final_sparsity"] = p.value("final_sparsity", 0.0);
		e["pruning_buffer_bytes"] = p.value("mask_bytes", int64_t(0)) + p.value("w0_bytes", int64_t(0));
		e["parameters"] = m.value("parameters", int64_t(0));
		if (m.contains("hardware")) { // CONFIG_HW_MONITOR: mean and peak memory of the run
			const json &hw = m.at("hardware");
			for (const char *k : {"rss_mean_mb", "rss_peak_mb", "gpu_memory_mean_mb", "gpu_memory_peak_mb"})
				if (hw.contains(k))
					e[k] = hw.at(k).get<double>();
		}
		// Every figure the summaries read must be a number: check them all here.
		for (const char *k : {"final_val_loss", "final_val_perplexity", "final_accuracy", "final_test_loss", "best_accuracy",
				      "rss_mean_mb", "rss_peak_mb", "gpu_memory_mean_mb", "gpu_memory_peak_mb",
				      "best_val_loss", "elapsed_time", "final_sparsity", "test_f1", "test_pr_auc", "test_roc_auc",
				      "ra_fetch", "ra_signal", "bytes_per_batch", "fetch_ms_per_batch", "tokens_per_second",
				      "images_per_second"})
			if (e.contains(k) && !e[k].is_null())
				e[k] = e[k].get<double>();
		e["optimizer_state_bytes"] = e["optimizer_state_bytes"].get<int64_t>();
		e["pruning_buffer_bytes"] = e["pruning_buffer_bytes"].get<int64_t>();
	} catch (const std::exception &x) { // json type or key errors, and knlp::Error from read_json
		e["status"] = "failed";
		e["success"] = false;
		std::string what = x.what();
		e["error"] = fmt::format("{}: unreadable metrics ({})", mp, what.substr(0, what.find('\n')));
		for (const char *k : {"final_val_loss", "final_val_perplexity", "final_accuracy", "final_test_loss", "test_f1",
				      "test_pr_auc", "best_val_loss", "best_accuracy"})
			e.erase(k);
	}
	return e;
}

std::string pct(double x) { return fmt::format("{:.1f}%", 100 * x); }

std::string mib(double b) { return fmt::format("{:.2f}", b / (1024.0 * 1024.0)); }

struct Group {
	std::string config_id, optimizer;
	std::vector<double> ppl, time, mem;
	std::vector<double> f1, ra_fetch, ra_signal, kib, fetch_ms; // GNN runs
	std::vector<double> rss_peak, gpu_peak;                      // CONFIG_HW_MONITOR
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
		if (ent.is_directory() && n.rfind("test_matrix_results_", 0) == 0 && file_exists(join_path(ent.path().string(), "plan.json")))
			if (best.empty() || n > fs::path(best).filename().string())
				best = ent.path().string();
	}
	return best;
}

void write_summaries(const std::string &dir)
{
	json plan = read_json(join_path(dir, "plan.json"));
	Config cfg = Config::load(join_path(dir, "config.txt"));
	json all = json::array();
	for (const auto &r : plan.at("runs"))
		if (is_dir(join_path(dir, r.at("test_id").get<std::string>())))
			all.push_back(result_entry(dir, r));
	// An external baseline (BASELINE=<results dir>/<config id>) contributes its finished runs.
	std::string baseline = cfg.get_string("MATRIX_BASELINE");
	std::vector<json> external;
	if (baseline.find('/') != std::string::npos) {
		std::string bdir = dirname_of(baseline), bid = fs::path(baseline).filename().string();
		std::string ar = join_path(bdir, "all_results.json");
		if (!file_exists(ar))
			fail("{}: baseline results not found (CONFIG_MATRIX_BASELINE={})", ar, baseline);
		for (const auto &e : read_json(ar))
			if (e.value("config_id", "") == bid && e.value("status", "") == "complete") {
				json x = e;
				x["external"] = bdir;
				external.push_back(x);
			}
		baseline = bid;
	}
	write_file_atomic(join_path(dir, "all_results.json"), all.dump(2, ' ', false, json::error_handler_t::replace) + "\n");

	int n_complete = 0, n_failed = 0, n_incomplete = 0;
	std::map<std::string, Group> groups;
	std::vector<std::string> order;
	bool higher_better = false; // image matrices rank by accuracy (%), LM ones by perplexity
	bool gnn = false;	    // GNN matrices rank by test PR-AUC
	auto add = [&](const json &e) {
		std::string cid = e.value("config_id", "");
		if (!groups.count(cid)) {
			order.push_back(cid);
			groups[cid].config_id = cid;
			groups[cid].optimizer = e.value("optimizer", "");
		}
		Group &g = groups[cid];
		if (e.contains("final_val_perplexity"))
			g.ppl.push_back(e["final_val_perplexity"].get<double>());
		else if (e.contains("final_accuracy")) {
			g.ppl.push_back(100.0 * e["final_accuracy"].get<double>());
			higher_better = true;
		} else if (e.contains("test_pr_auc")) {
			g.ppl.push_back(e["test_pr_auc"].get<double>());
			g.f1.push_back(e["test_f1"].get<double>());
			g.ra_fetch.push_back(e["ra_fetch"].get<double>());
			g.ra_signal.push_back(e["ra_signal"].get<double>());
			g.kib.push_back(e["bytes_per_batch"].get<double>() / 1024);
			g.fetch_ms.push_back(e["fetch_ms_per_batch"].get<double>());
			higher_better = gnn = true;
		}
		g.time.push_back(e.value("elapsed_time", 0.0));
		if (e.contains("rss_peak_mb"))
			g.rss_peak.push_back(e["rss_peak_mb"].get<double>());
		if (e.contains("gpu_memory_peak_mb"))
			g.gpu_peak.push_back(e["gpu_memory_peak_mb"].get<double>());
		g.mem.push_back(double(e.value("optimizer_state_bytes", int64_t(0)) + e.value("pruning_buffer_bytes", int64_t(0))));
		g.sparsity = e.value("final_sparsity", 0.0);
	};
	for (const auto &e : all) {
		std::string st = e["status"];
		n_complete += st == "complete";
		n_failed += st == "failed";
		n_incomplete += st == "incomplete";
		if (st == "complete")
			add(e);
	}
	if (!groups.count(baseline))
		for (const auto &e : external)
			add(e);

	std::string r;
	r += fmt::format("knlp test matrix: {}\n", dir);
	r += fmt::format("runs planned {}, complete {}, failed {}, incomplete {}, not started {}\n\n",
			 plan.at("runs").size(), n_complete, n_failed, n_incomplete,
			 plan.at("runs").size() - n_complete - n_failed - n_incomplete);
	r += "== All runs\n";
	r += fmt::format("{:<44} {:<10} {:>10} {:>10} {:>9} {:>9} {:>10}\n", "run", "status",
			 gnn ? "test F1" : higher_better ? "test loss" : "val loss", gnn ? "PR-AUC" : higher_better ? "test acc" : "val ppl",
			 "sparsity", "time s",
			 "state MiB");
	for (const auto &e : all) {
		bool img = e.contains("final_accuracy"), graph = e.contains("test_pr_auc");
		bool ok = e["status"] == "complete" && (e.contains("final_val_loss") || img || graph);
		const char *lk = graph ? "test_f1" : img ? "final_test_loss" : "final_val_loss";
		r += fmt::format("{:<44} {:<10} {:>10} {:>10} {:>9} {:>9} {:>10}\n", e["test_id"].get<std::string>(),
				 e["status"].get<std::string>(), ok ? fmt::format("{:.4f}", e[lk].get<double>()) : "-",
				 ok ? (graph ? fmt::format("{:.4f}", e["test_pr_auc"].get<double>())
				       : img ? fmt::format("{:.2f}%", 100 * e["final_accuracy"].get<double>())
					   : fmt::format("{:.3f}", e["final_val_perplexity"].get<double>()))
				    : "-",
				 ok ? pct(e["final_sparsity"].get<double>()) : "-",
				 ok ? fmt::format("{:.1f}", e["elapsed_time"].get<double>()) : "-",
				 ok ? mib(double(e["optimizer_state_bytes"].get<int64_t>() + e["pruning_buffer_bytes"].get<int64_t>())) : "-");
		if (e["status"] == "failed")
			r += fmt::format("    error: {}\n", e.value("error", ""));
	}
	double conf = cfg.get_float("MATRIX_CONFIDENCE");
	r += fmt::format("\n== Configurations (final {} over seeds, mean +/- sd){}\n",
			 gnn ? "test PR-AUC" : higher_better ? "test accuracy %" : "validation perplexity",
			 baseline.empty() ? "" : fmt::format("; difference to {} with its {:.0f}% Welch interval", baseline, 100 * conf));
	auto ppl_str = [](const Group &g) {
		SampleStats s = sample_stats(g.ppl);
		if (s.n == 0)
			return std::string("-");
		return s.n > 1 ? fmt::format("{:.3f} +/- {:.3f}", s.mean, s.sd) : fmt::format("{:.3f}", s.mean);
	};
	std::vector<const Group *> ranked;
	for (const auto &id : order)
		if (!groups[id].ppl.empty())
			ranked.push_back(&groups[id]);
	for (const auto &id : order) {
		const Group &g = groups[id];
		std::string cmp;
		if (!baseline.empty() && id != baseline && groups.count(baseline)) {
			DiffCI d = welch_interval(g.ppl, groups[baseline].ppl, conf);
			if (!d.valid)
				cmp = fmt::format("diff {:+.3f} (interval needs 2+ seeds on both sides)", d.diff);
			else
				cmp = fmt::format("diff {:+.3f} [{:+.3f}, {:+.3f}] {}", d.diff, d.lo, d.hi,
						  (higher_better ? d.lo > 0 : d.hi < 0)	  ? "better"
						  : (higher_better ? d.hi < 0 : d.lo > 0) ? "worse"
											  : "inconclusive");
		} else if (id == baseline) {
			cmp = "baseline";
		}
		r += fmt::format("{:<40} n={:<3} {} {:<20} time {:>8.1f} s  {}\n", id, g.ppl.size(),
				 gnn ? "PR-AUC" : higher_better ? "acc" : "ppl",
				 ppl_str(g),
				 sample_stats(g.time).mean, cmp);
	}
	std::stable_sort(ranked.begin(), ranked.end(), [&](const Group *a, const Group *b) {
		double x = sample_stats(a->ppl).mean, y = sample_stats(b->ppl).mean;
		return higher_better ? x > y : x < y;
	});
	r += gnn ? "\n== Top configurations by test PR-AUC\n"
	     : higher_better ? "\n== Top configurations by test accuracy\n" : "\n== Top configurations by validation perplexity\n";
	for (size_t i = 0; i < ranked.size() && i < 10; i++)
		r += fmt::format("{:>2}. {:<40} {}\n", i + 1, ranked[i]->config_id, ppl_str(*ranked[i]));
	r += "\n== Best per optimizer\n";
	std::set<std::string> seen;
	for (const Group *g : ranked)
		if (seen.insert(g->optimizer).second)
			r += fmt::format("{:<12} {:<40} {}\n", g->optimizer, g->config_id, ppl_str(*g));
	r += "\n== Memory and time\n";
	r += fmt::format("{:<40} {:>22} {:>10} {:>10} {:>14} {:>14}\n", "configuration", "state+masks MiB", "sparsity", "time s",
			 "peak RSS MiB", "peak GPU MiB");
	for (const auto &id : order) {
		const Group &g = groups[id];
		auto peak = [](const std::vector<double> &v) {
			return v.empty() ? std::string("-") : fmt::format("{:.0f}", *std::max_element(v.begin(), v.end()));
		};
		r += fmt::format("{:<40} {:>22} {:>10} {:>10.1f} {:>14} {:>14}\n", id, mib(sample_stats(g.mem).mean),
				 pct(g.sparsity), sample_stats(g.time).mean, peak(g.rss_peak), peak(g.gpu_peak));
	}
	if (gnn) {
		auto ms = [](const std::vector<double> &v, const char *f) {
			SampleStats s = sample_stats(v);
			return s.n == 0 ? std::string("-")
			       : s.n > 1 ? fmt::format(fmt::runtime(std::string(f) + " +/- " + f), s.mean, s.sd)
					 : fmt::format(fmt::runtime(f), s.mean);
		};
		r += "\n== Read amplification and quality (mean +/- sd over seeds)\n";
		r += fmt::format("{:<40} {:>18} {:>18} {:>18} {:>18} {:>14} {:>12}\n", "configuration", "RA_fetch", "RA_signal",
				 "test F1", "test PR-AUC", "KiB/batch", "fetch ms/b");
		for (const auto &id : order) {
			const Group &g = groups[id];
			if (g.ra_fetch.empty())
				continue;
			r += fmt::format("{:<40} {:>18} {:>18} {:>18} {:>18} {:>14} {:>12}\n", id, ms(g.ra_fetch, "{:.2f}"),
					 ms(g.ra_signal, "{:.2f}"), ms(g.f1, "{:.4f}"), ms(g.ppl, "{:.4f}"),
					 fmt::format("{:.0f}", sample_stats(g.kib).mean), fmt::format("{:.2f}", sample_stats(g.fetch_ms).mean));
		}
	}
	write_file_atomic(join_path(dir, "summary_report.txt"), r);
}

namespace {

struct Child {
	pid_t pid = -1;
	size_t run = 0;
	int slot = 0;
	std::chrono::steady_clock::time_point start;
};

// The GPUs runs are spread over: the runner's own CUDA_VISIBLE_DEVICES list, else the
// devices the NVIDIA driver lists, else 0..jobs-1.
std::vector<std::string> gpu_ids(int jobs)
{
	std::vector<std::string> ids;
	if (const char *vis = std::getenv("CUDA_VISIBLE_DEVICES")) {
		std::istringstream in(vis);
		for (std::string id; std::getline(in, id, ',');)
			if (!id.empty())
				ids.push_back(id);
		if (!ids.empty())
			return ids;
	}
	std::error_code ec;
	int n = 0;
	if (is_dir("/proc/driver/nvidia/gpus"))
		for (const auto &e : fs::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
			(void)e;
			n++;
		}
	for (int i = 0; i < (n > 0 ? n : jobs); i++)
		ids.push_back(std::to_string(i));
	return ids;
}

std::vector<int> allowed_cpus()
{
	std::vector<int> cpus;
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus.push_back(c);
	if (cpus.empty())
		cpus.push_back(0);
	return cpus;
}

// fork + exec `exe args...` with output appended to log, pinned to cpus, optionally with
// CUDA_VISIBLE_DEVICES; the child dies with the runner (PR_SET_PDEATHSIG).
pid_t spawn(const std::string &exe, const std::vector<std::string> &args, const std::string &log,
	    const std::vector<int> &cpus, const std::string &cuda_device)
{
	int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd < 0)
		fail("{}: cannot open ({})", log, std::strerror(errno));
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		::close(fd);
		fail("matrix: fork failed ({})", std::strerror(errno));
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(fd, 1);
		dup2(fd, 2);
		::close(fd);
		if (!cpus.empty()) {
			cpu_set_t set;
			CPU_ZERO(&set);
			for (int c : cpus)
				CPU_SET(c, &set);
			sched_setaffinity(0, sizeof(set), &set);
		}
		if (!cuda_device.empty())
			setenv("CUDA_VISIBLE_DEVICES", cuda_device.c_str(), 1);
		unsetenv("KNLP_FAULT_ENOSPC_AT"); // injected faults are for the runner only
		std::vector<char *> argv;
		argv.push_back(const_cast<char *>(exe.c_str()));
		for (const auto &a : args)
			argv.push_back(const_cast<char *>(a.c_str()));
		argv.push_back(nullptr);
		execv(exe.c_str(), argv.data());
		fprintf(stderr, "knlp: error: %s: cannot execute (%s)\n", exe.c_str(), strerror(errno));
		_exit(127);
	}
	::close(fd);
	return pid;
}

bool confirm(size_t n, const std::string &dir)
{
	if (!isatty(STDIN_FILENO))
		fail("matrix: {} runs into {}: stdin is not a terminal, so confirm with --yes (make YES=1)", n, dir);
	fmt::print("Run {} training runs into {}? [y/N] ", n, dir);
	std::fflush(stdout);
	std::string answer;
	std::getline(std::cin, answer);
	return !answer.empty() && (answer[0] == 'y' || answer[0] == 'Y');
}

// Mean elapsed seconds of earlier complete runs, per configuration id, found in results
// folders under parent.
std::map<std::string, std::vector<double>> earlier_timings(const std::string &parent)
{
	std::map<std::string, std::vector<double>> t;
	std::error_code ec;
	if (!is_dir(parent))
		return t;
	for (const auto &ent : fs::directory_iterator(parent, ec)) {
		std::string ar = join_path(ent.path().string(), "all_results.json");
		if (!file_exists(ar))
			continue;
		try {
			for (const auto &e : json::parse(read_file(ar)))
				if (e.value("status", "") == "complete")
					t[e.value("config_id", "")].push_back(e.value("elapsed_time", 0.0));
		} catch (...) {
		}
	}
	return t;
}

} // namespace

int run_matrix(const MatrixOptions &o)
{
	const Config &cfg = o.cfg;
	const std::string parent = cfg.get_string("MATRIX_RESULTS_DIR");
	std::string dir;
	if (o.cont || o.rerun) {
		dir = o.dir.empty() ? newest_results_dir(parent) : o.dir;
		if (dir.empty())
			fail("{}: no test_matrix_results_* folder to continue", parent);
		if (!file_exists(join_path(dir, "plan.json")))
			fail("{}: not a results folder (no plan.json)", dir);
	}
	std::string sweep_text;
	if (!o.sweep_file.empty()) {
		if (!file_exists(o.sweep_file))
			fail("{}: sweep file not found (RANGE_CONFIG)", o.sweep_file);
		sweep_text = read_file(o.sweep_file);
	} else if (!dir.empty() && file_exists(join_path(dir, "sweep.txt"))) {
		sweep_text = read_file(join_path(dir, "sweep.txt"));
	}
	std::vector<MatrixRun> all = expand_matrix(cfg);
	if (!sweep_text.empty())
		all = apply_sweep(cfg, all, parse_sweep(sweep_text, o.sweep_file.empty() ? join_path(dir, "sweep.txt") : o.sweep_file));
	if (o.shard_n < 1 || o.shard_k < 1 || o.shard_k > o.shard_n)
		fail("matrix: shard {}/{} is not valid (k/N with 1 <= k <= N)", o.shard_k, o.shard_n);
	std::vector<size_t> mine;
	for (size_t i = 0; i < all.size(); i++)
		if (int(i % size_t(o.shard_n)) == o.shard_k - 1)
			mine.push_back(i);
	std::string baseline = cfg.get_string("MATRIX_BASELINE");
	if (baseline.find('/') != std::string::npos) {
		// Reuse the finished baseline runs of another results folder instead of re-running them.
		std::string bid = fs::path(baseline).filename().string();
		mine.erase(std::remove_if(mine.begin(), mine.end(), [&](size_t i) { return all[i].config_id == bid; }),
			   mine.end());
	}
	const int jobs = o.jobs > 0 ? o.jobs : static_cast<int>(cfg.get_int("MATRIX_JOBS"));

	if (o.dry_run) {
		auto timings = earlier_timings(parent);
		double est = 0;
		int known = 0;
		for (size_t i : mine) {
			const auto &r = all[i];
			fmt::print("  {}\n", r.id);
			auto it = timings.find(r.config_id);
			if (it != timings.end() && !it->second.empty()) {
				est += sample_stats(it->second).mean;
				known++;
			}
		}
		fmt::print("{} runs{}", mine.size(),
			   o.shard_n > 1 ? fmt::format(" (shard {}/{} of {})", o.shard_k, o.shard_n, all.size()) : "");
		if (known)
			fmt::print("; estimated {} at {} at once from earlier results ({} of {} runs timed before)\n",
				   Progress::format_eta(est / jobs), jobs, known, mine.size());
		else
			fmt::print("; no earlier results to estimate the duration from\n");
		return 0;
	}

	if (o.cont || o.rerun) {
		if (!o.sweep_file.empty() && file_exists(join_path(dir, "sweep.txt")) &&
		    read_file(join_path(dir, "sweep.txt")) != sweep_text)
			fail("{}: the folder's sweep.txt differs from {}", dir, o.sweep_file);
		Config saved = Config::load(join_path(dir, "config.txt"));
		auto d = saved.diff(cfg, {"MATRIX_JOBS", "MATRIX_STOP_ON_FAILURE"});
		if (!d.empty() && !o.force)
			fail("{}: results folder was made from a different configuration: {}; pass --force to continue anyway",
			     dir, fmt::join(d, ", "));
		json plan = read_json(join_path(dir, "plan.json"));
		if (plan.value("shard", "1/1") != fmt::format("{}/{}", o.shard_k, o.shard_n))
			fail("{}: holds shard {} but shard {}/{} was asked for", dir, plan.value("shard", "1/1"), o.shard_k,
			     o.shard_n);
	} else {
		dir = !o.out.empty() ? o.out
				     : join_path(parent, "test_matrix_results_" + now_stamp() +
							   (o.shard_n > 1 ? fmt::format("_shard{}of{}", o.shard_k, o.shard_n) : ""));
		if (file_exists(join_path(dir, "plan.json")))
			fail("{}: already holds a matrix; continue it with `make continue` (knlp matrix --continue {})", dir, dir);
	}
	if (o.rerun) {
		int n = 0;
		for (size_t i : mine)
			if (o.rerun_optimizer.empty() || all[i].optimizer == o.rerun_optimizer) {
				remove_tree(join_path(dir, all[i].id));
				n++;
			}
		if (n == 0)
			fail("{}: no run uses optimizer '{}'", dir, o.rerun_optimizer);
	}
	if (!o.yes && !confirm(mine.size(), dir))
		return 1;

	make_dirs(dir);
	if (!file_exists(join_path(dir, "config.txt")))
		write_file_atomic(join_path(dir, "config.txt"), cfg.to_text());
	if (!sweep_text.empty() && !file_exists(join_path(dir, "sweep.txt")))
		write_file_atomic(join_path(dir, "sweep.txt"), sweep_text);
	json plan = {{"shard", fmt::format("{}/{}", o.shard_k, o.shard_n)}, {"matrix_runs", all.size()},
		     {"runs", json::array()}};
	for (size_t i : mine)
		plan["runs"].push_back(run_json(all[i], i));
	write_file_atomic(join_path(dir, "plan.json"), plan.dump(2) + "\n");

	const bool stop_on_failure = o.stop_on_failure >= 0 ? o.stop_on_failure == 1 : cfg.get_bool("MATRIX_STOP_ON_FAILURE");
	const bool cuda = cfg.get_bool("DEVICE_CUDA");
	std::vector<int> cpus = allowed_cpus();
	const std::vector<std::string> gpus = gpu_ids(jobs);
	const int per_job = std::max<int>(1, static_cast<int>(cpus.size()) / jobs);
	std::vector<size_t> todo;
	int done = 0, failed = 0;
	for (size_t i : mine) {
		if (file_exists(join_path(join_path(dir, all[i].id), "COMPLETE")))
			done++;
		else
			todo.push_back(i);
	}
	fmt::print("matrix {}: {} runs, {} already complete, {} at once\n", dir, mine.size(), done, jobs);
	write_summaries(dir);
	Progress prog("matrix", double(todo.size()), "runs");
	std::map<pid_t, Child> running;
	std::vector<bool> slot_busy(static_cast<size_t>(jobs), false);
	size_t next = 0;
	int finished = 0;
	bool stopping = false;

	auto launch = [&](size_t i, int slot) {
		const MatrixRun &r = all[i];
		std::string rd = join_path(dir, r.id);
		if (file_exists(join_path(rd, "error.txt")))
			remove_tree(rd); // failed before: start over
		std::vector<std::string> args;
		if (metrics_complete(rd)) {
			// Finished but killed before the marker: nothing to train.
			write_file_atomic(join_path(rd, "COMPLETE"), json({{"test_id", r.id}, {"finished", iso_time()}}).dump() + "\n");
			return false;
		}
		if (file_exists(join_path(rd, "checkpoints/LATEST")) && file_exists(join_path(rd, "matrix.config"))) {
			args = {"train", "--config", join_path(rd, "matrix.config"), "--resume", rd};
		} else {
			remove_tree(rd);
			make_dirs(rd);
			Config rc = run_config(cfg, r);
			if (jobs > 1 && !cuda)
				rc.set(fmt::format("NUM_THREADS={}", per_job), "matrix");
			write_file_atomic(join_path(rd, "matrix.config"), rc.to_text());
			args = {"train", "--config", join_path(rd, "matrix.config"), "--out", rd};
		}
		std::vector<int> pin;
		if (jobs > 1 && !cuda)
			for (int c = 0; c < per_job; c++)
				pin.push_back(cpus[static_cast<size_t>(slot * per_job + c) % cpus.size()]);
		Child c;
		c.pid = spawn(o.self_exe, args, join_path(rd, "output.log"), pin,
			      cuda && jobs > 1 ? gpus[static_cast<size_t>(slot) % gpus.size()] : "");
		c.run = i;
		c.slot = slot;
		c.start = std::chrono::steady_clock::now();
		running[c.pid] = c;
		slot_busy[static_cast<size_t>(slot)] = true;
		return true;
	};

	while (true) {
		while (!stopping && next < todo.size() && static_cast<int>(running.size()) < jobs) {
			int slot = 0;
			while (slot_busy[static_cast<size_t>(slot)])
				slot++;
			size_t i = todo[next++];
			if (!launch(i, slot)) {
				done++;
				finished++;
				prog.update(finished, all[i].id + " complete (found finished)", true);
				write_summaries(dir);
			}
		}
		if (running.empty())
			break;
		int status = 0;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			fail("matrix: waitpid failed ({})", std::strerror(errno));
		}
		auto it = running.find(pid);
		if (it == running.end())
			continue;
		Child c = it->second;
		running.erase(it);
		slot_busy[static_cast<size_t>(c.slot)] = false;
		const MatrixRun &r = all[c.run];
		std::string rd = join_path(dir, r.id);
		double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
		finished++;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && metrics_complete(rd)) {
			write_file_atomic(join_path(rd, "COMPLETE"),
					  json({{"test_id", r.id}, {"finished", iso_time()}, {"seconds", secs}}).dump() + "\n");
			done++;
			prog.update(finished, fmt::format("{} complete ({:.1f} s)", r.id, secs), true);
		} else {
			std::string why = WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
							      : fmt::format("exit status {}", WEXITSTATUS(status));
			write_file_atomic(join_path(rd, "error.txt"), fmt::format("{}: {}\n", why, last_error_line(join_path(rd, "output.log"))));
			failed++;
			prog.update(finished, fmt::format("{} FAILED ({}; see {})", r.id, why, join_path(rd, "error.txt")), true);
			if (stop_on_failure)
				stopping = true;
		}
		write_summaries(dir);
	}
	prog.finish();
	fmt::print("matrix {}: {} of {} runs complete, {} failed{}\nsummary: {}\n", dir, done, mine.size(), failed,
		   stopping ? " (stopped at the first failure)" : "", join_path(dir, "summary_report.txt"));
	return done == static_cast<int>(mine.size()) ? 0 : 1;
}

int merge_results(const std::string &out, const std::vector<std::string> &srcs)
{
	if (srcs.empty())
		fail("matrix merge: no results folders given");
	std::string cfg_text;
	json runs = json::array();
	std::set<std::string> ids;
	size_t matrix_runs = 0;
	make_dirs(out);
	for (const auto &src : srcs) {
		std::string c = read_file(join_path(src, "config.txt"));
		if (cfg_text.empty())
			cfg_text = c;
		else if (c != cfg_text)
			fail("{}: config.txt differs from {}'s; only shards of one matrix merge", src, srcs[0]);
		json plan = read_json(join_path(src, "plan.json"));
		matrix_runs = plan.value("matrix_runs", size_t(0));
		for (const auto &r : plan.at("runs")) {
			std::string id = r.at("test_id");
			std::string from = join_path(src, id), to = join_path(out, id);
			if (!ids.insert(id).second) {
				if (is_dir(from))
					fail("{}: run {} is present in two shards", src, id);
				continue;
			}
			runs.push_back(r);
			if (!is_dir(from))
				continue;
			if (is_dir(to))
				fail("{}: already holds run {}", out, id);
			std::error_code ec;
			fs::copy(from, to, fs::copy_options::recursive, ec);
			if (ec)
				fail("{}: cannot copy {} ({})", out, from, ec.message());
		}
	}
	std::stable_sort(runs.begin(), runs.end(),
			 [](const json &a, const json &b) { return a.value("index", 0) < b.value("index", 0); });
	write_file_atomic(join_path(out, "config.txt"), cfg_text);
	write_file_atomic(join_path(out, "plan.json"),
			  json({{"shard", "1/1"}, {"matrix_runs", matrix_runs}, {"runs", runs}}).dump(2) + "\n");
	write_summaries(out);
	return static_cast<int>(runs.size());
}

} // namespace knlp
