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
#include <memory>
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
	return {{"index", index},
		{"test_id", r.id},
		{"config_id", r.config_id},
		{"model", r.model},
		{"optimizer", r.optimizer},
		{"variant", r.variant},
		{"pruning", r.pruning},
		{"target_sparsity", r.sparsity_pct / 100.0},
		{"seed", r.seed}};
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

} // namespace

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

namespace {

// The runs this invocation is about: every run of the matrix (with its sweep), this
// shard's share of them, and the results folder they go to.
struct Planned {
	std::string dir, sweep_text;
	std::vector<MatrixRun> all;
	std::vector<size_t> mine; // indices into all
	int jobs = 1;
};

Planned plan_runs(const MatrixOptions &o)
{
	const Config &cfg = o.cfg;
	const std::string parent = cfg.settings().matrix.results_dir;
	Planned p;
	if (o.cont || o.rerun) {
		p.dir = o.dir.empty() ? newest_results_dir(parent) : o.dir;
		if (p.dir.empty())
			fail("{}: no test_matrix_results_* folder to continue", parent);
		if (!file_exists(join_path(p.dir, "plan.json")))
			fail("{}: not a results folder (no plan.json)", p.dir);
	}
	if (!o.sweep_file.empty()) {
		if (!file_exists(o.sweep_file))
			fail("{}: sweep file not found (RANGE_CONFIG)", o.sweep_file);
		p.sweep_text = read_file(o.sweep_file);
	} else if (!p.dir.empty() && file_exists(join_path(p.dir, "sweep.txt"))) {
		p.sweep_text = read_file(join_path(p.dir, "sweep.txt"));
	}
	p.all = expand_matrix(cfg);
	if (!p.sweep_text.empty())
		p.all = apply_sweep(
			cfg, p.all,
			parse_sweep(p.sweep_text, o.sweep_file.empty() ? join_path(p.dir, "sweep.txt") : o.sweep_file));
	if (o.shard_n < 1 || o.shard_k < 1 || o.shard_k > o.shard_n)
		fail("matrix: shard {}/{} is not valid (k/N with 1 <= k <= N)", o.shard_k, o.shard_n);
	for (size_t i = 0; i < p.all.size(); i++)
		if (int(i % size_t(o.shard_n)) == o.shard_k - 1)
			p.mine.push_back(i);
	const std::string &baseline = cfg.settings().matrix.baseline;
	if (baseline.find('/') != std::string::npos) {
		// Reuse the finished baseline runs of another results folder instead of re-running them.
		std::string bid = fs::path(baseline).filename().string();
		p.mine.erase(std::remove_if(p.mine.begin(), p.mine.end(),
					    [&](size_t i) { return p.all[i].config_id == bid; }),
			     p.mine.end());
	}
	p.jobs = o.jobs > 0 ? o.jobs : static_cast<int>(cfg.settings().matrix.jobs);
	return p;
}

// The runs and, from earlier results folders, an estimate of how long they take.
void print_dry_run(const MatrixOptions &o, const Planned &p)
{
	auto timings = earlier_timings(o.cfg.settings().matrix.results_dir);
	double est = 0;
	int known = 0;
	for (size_t i : p.mine) {
		const auto &r = p.all[i];
		fmt::print("  {}\n", r.id);
		auto it = timings.find(r.config_id);
		if (it != timings.end() && !it->second.empty()) {
			est += sample_stats(it->second).mean;
			known++;
		}
	}
	fmt::print("{} runs{}", p.mine.size(),
		   o.shard_n > 1 ? fmt::format(" (shard {}/{} of {})", o.shard_k, o.shard_n, p.all.size()) : "");
	if (known)
		fmt::print("; estimated {} at {} at once from earlier results ({} of {} runs timed before)\n",
			   Progress::format_eta(est / p.jobs), p.jobs, known, p.mine.size());
	else
		fmt::print("; no earlier results to estimate the duration from\n");
}

// A continued folder must hold this matrix and shard; a new one must not exist yet. Writes
// config.txt, sweep.txt and plan.json. Returns false when the user declined.
bool open_results_folder(const MatrixOptions &o, Planned &p)
{
	const Config &cfg = o.cfg;
	if (o.cont || o.rerun) {
		if (!o.sweep_file.empty() && file_exists(join_path(p.dir, "sweep.txt")) &&
		    read_file(join_path(p.dir, "sweep.txt")) != p.sweep_text)
			fail("{}: the folder's sweep.txt differs from {}", p.dir, o.sweep_file);
		Config saved = Config::load(join_path(p.dir, "config.txt"), Config::Mode::Saved);
		auto d = saved.diff(cfg, {sym::MATRIX_JOBS, sym::MATRIX_STOP_ON_FAILURE});
		if (!d.empty() && !o.force)
			fail("{}: results folder was made from a different configuration: {}; pass --force to continue "
			     "anyway",
			     p.dir, fmt::join(d, ", "));
		json plan = read_json_file(join_path(p.dir, "plan.json"));
		if (plan.value("shard", "1/1") != fmt::format("{}/{}", o.shard_k, o.shard_n))
			fail("{}: holds shard {} but shard {}/{} was asked for", p.dir, plan.value("shard", "1/1"),
			     o.shard_k, o.shard_n);
	} else {
		p.dir = !o.out.empty()
				? o.out
				: join_path(cfg.settings().matrix.results_dir,
					    "test_matrix_results_" + now_stamp() +
						    (o.shard_n > 1 ? fmt::format("_shard{}of{}", o.shard_k, o.shard_n)
								   : ""));
		if (file_exists(join_path(p.dir, "plan.json")))
			fail("{}: already holds a matrix; continue it with `make continue` (knlp matrix --continue {})",
			     p.dir, p.dir);
	}
	if (o.rerun) {
		int n = 0;
		for (size_t i : p.mine)
			if (o.rerun_optimizer.empty() || p.all[i].optimizer == o.rerun_optimizer) {
				remove_tree(join_path(p.dir, p.all[i].id));
				n++;
			}
		if (n == 0)
			fail("{}: no run uses optimizer '{}'", p.dir, o.rerun_optimizer);
	}
	if (!o.yes && !confirm(p.mine.size(), p.dir))
		return false;
	make_dirs(p.dir);
	if (!file_exists(join_path(p.dir, "config.txt")))
		write_file_atomic(join_path(p.dir, "config.txt"), cfg.to_text());
	if (!p.sweep_text.empty() && !file_exists(join_path(p.dir, "sweep.txt")))
		write_file_atomic(join_path(p.dir, "sweep.txt"), p.sweep_text);
	json plan = {{"shard", fmt::format("{}/{}", o.shard_k, o.shard_n)},
		     {"matrix_runs", p.all.size()},
		     {"runs", json::array()}};
	for (size_t i : p.mine)
		plan["runs"].push_back(run_json(p.all[i], i));
	write_file_atomic(join_path(p.dir, "plan.json"), plan.dump(2) + "\n");
	return true;
}

// Runs the unfinished runs of p as child `knlp train` processes, p.jobs at once (each pinned
// to its share of the CPUs, or to a GPU), marking each COMPLETE or failed as it ends and
// rewriting the summaries after every run.
class Scheduler {
public:
	Scheduler(const MatrixOptions &o, const Planned &p) : o_(o), p_(p), slot_busy_(size_t(p.jobs), false)
	{
		cuda_ = o.cfg.settings().core.device == choice::Device::Cuda;
		cpus_ = allowed_cpus();
		gpus_ = gpu_ids(p.jobs);
		per_job_ = std::max<int>(1, static_cast<int>(cpus_.size()) / p.jobs);
		stop_on_failure_ =
			o.stop_on_failure >= 0 ? o.stop_on_failure == 1 : o.cfg.settings().matrix.stop_on_failure;
	}
	int run();

private:
	bool launch(size_t i, int slot);
	void reap(pid_t pid, int status);

	const MatrixOptions &o_;
	const Planned &p_;
	std::vector<bool> slot_busy_;
	bool cuda_ = false, stop_on_failure_ = false, stopping_ = false;
	std::vector<int> cpus_;
	std::vector<std::string> gpus_;
	int per_job_ = 1, done_ = 0, failed_ = 0, finished_ = 0;
	std::map<pid_t, Child> running_;
	std::unique_ptr<Progress> prog_;
};

// Starts run i in a slot; false when it needs no training (finished before its marker).
bool Scheduler::launch(size_t i, int slot)
{
	const MatrixRun &r = p_.all[i];
	std::string rd = join_path(p_.dir, r.id);
	if (file_exists(join_path(rd, "error.txt")))
		remove_tree(rd); // failed before: start over
	std::vector<std::string> args;
	if (metrics_complete(rd)) {
		// Finished but killed before the marker: nothing to train.
		write_file_atomic(join_path(rd, "COMPLETE"),
				  json({{"test_id", r.id}, {"finished", iso_time()}}).dump() + "\n");
		return false;
	}
	if (file_exists(join_path(rd, "checkpoints/LATEST")) && file_exists(join_path(rd, "matrix.config"))) {
		args = {"train", "--config", join_path(rd, "matrix.config"), "--resume", rd};
	} else {
		remove_tree(rd);
		make_dirs(rd);
		Config rc = run_config(o_.cfg, r);
		if (p_.jobs > 1 && !cuda_)
			rc.set(fmt::format("{}={}", sym::NUM_THREADS, per_job_), "matrix");
		write_file_atomic(join_path(rd, "matrix.config"), rc.to_text());
		args = {"train", "--config", join_path(rd, "matrix.config"), "--out", rd};
	}
	std::vector<int> pin;
	if (p_.jobs > 1 && !cuda_)
		for (int c = 0; c < per_job_; c++)
			pin.push_back(cpus_[static_cast<size_t>(slot * per_job_ + c) % cpus_.size()]);
	Child c;
	c.pid = spawn(o_.self_exe, args, join_path(rd, "output.log"), pin,
		      cuda_ && p_.jobs > 1 ? gpus_[static_cast<size_t>(slot) % gpus_.size()] : "");
	c.run = i;
	c.slot = slot;
	c.start = std::chrono::steady_clock::now();
	running_[c.pid] = c;
	slot_busy_[static_cast<size_t>(slot)] = true;
	return true;
}

// A child ended: COMPLETE when it exited 0 with complete metrics, error.txt otherwise.
void Scheduler::reap(pid_t pid, int status)
{
	auto it = running_.find(pid);
	if (it == running_.end())
		return;
	Child c = it->second;
	running_.erase(it);
	slot_busy_[static_cast<size_t>(c.slot)] = false;
	const MatrixRun &r = p_.all[c.run];
	std::string rd = join_path(p_.dir, r.id);
	double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
	finished_++;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && metrics_complete(rd)) {
		write_file_atomic(join_path(rd, "COMPLETE"),
				  json({{"test_id", r.id}, {"finished", iso_time()}, {"seconds", secs}}).dump() + "\n");
		done_++;
		prog_->update(finished_, fmt::format("{} complete ({:.1f} s)", r.id, secs), true);
	} else {
		std::string why = WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
						      : fmt::format("exit status {}", WEXITSTATUS(status));
		write_file_atomic(join_path(rd, "error.txt"),
				  fmt::format("{}: {}\n", why, last_error_line(join_path(rd, "output.log"))));
		failed_++;
		prog_->update(finished_, fmt::format("{} FAILED ({}; see {})", r.id, why, join_path(rd, "error.txt")),
			      true);
		if (stop_on_failure_)
			stopping_ = true;
	}
	write_summaries(p_.dir);
}

int Scheduler::run()
{
	std::vector<size_t> todo;
	for (size_t i : p_.mine) {
		if (file_exists(join_path(join_path(p_.dir, p_.all[i].id), "COMPLETE")))
			done_++;
		else
			todo.push_back(i);
	}
	fmt::print("matrix {}: {} runs, {} already complete, {} at once\n", p_.dir, p_.mine.size(), done_, p_.jobs);
	write_summaries(p_.dir);
	prog_ = std::make_unique<Progress>("matrix", double(todo.size()), "runs");
	size_t next = 0;
	while (true) {
		while (!stopping_ && next < todo.size() && static_cast<int>(running_.size()) < p_.jobs) {
			int slot = 0;
			while (slot_busy_[static_cast<size_t>(slot)])
				slot++;
			size_t i = todo[next++];
			if (!launch(i, slot)) {
				done_++;
				finished_++;
				prog_->update(finished_, p_.all[i].id + " complete (found finished)", true);
				write_summaries(p_.dir);
			}
		}
		if (running_.empty())
			break;
		int status = 0;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			fail("matrix: waitpid failed ({})", std::strerror(errno));
		}
		reap(pid, status);
	}
	prog_->finish();
	fmt::print("matrix {}: {} of {} runs complete, {} failed{}\nsummary: {}\n", p_.dir, done_, p_.mine.size(),
		   failed_, stopping_ ? " (stopped at the first failure)" : "",
		   join_path(p_.dir, "summary_report.txt"));
	return done_ == static_cast<int>(p_.mine.size()) ? 0 : 1;
}

} // namespace

int run_matrix(const MatrixOptions &o)
{
	Planned p = plan_runs(o);
	if (o.dry_run) {
		print_dry_run(o, p);
		return 0;
	}
	if (!open_results_folder(o, p))
		return 1;
	Scheduler s(o, p);
	return s.run();
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
		json plan = read_json_file(join_path(src, "plan.json"));
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
