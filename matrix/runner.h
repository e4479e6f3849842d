// The test-matrix runner: one results folder per matrix, one child `knlp train` process
// per run (optionally several at once, pinned to their share of the CPUs or to one GPU),
// an explicit completion marker written atomically last, summaries rewritten after every
// run, continue / rerun / shards / merge.
//
//   RESULTS/config.txt           the matrix configuration
//   RESULTS/plan.json            every run of the matrix (and this folder's shard)
//   RESULTS/sweep.txt            the sweep (RANGE_CONFIG) when there is one
//   RESULTS/<id>/matrix.config   the run's resolved single-run configuration
//   RESULTS/<id>/output.log      the run's output (appended to on resume)
//   RESULTS/<id>/...             the trainer's run folder (training_metrics.json, checkpoints)
//   RESULTS/<id>/error.txt       why it failed (failed runs are re-run on continue)
//   RESULTS/<id>/COMPLETE        written last, atomically, when the run finished
//   RESULTS/all_results.json, RESULTS/summary_report.txt
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"

namespace knlp {

struct MatrixOptions {
	Config cfg;
	std::string out;    // new matrix: results folder (default MATRIX_RESULTS_DIR/test_matrix_results_<stamp>)
	bool cont = false;  // continue an existing results folder
	std::string dir;    // with cont / rerun: the folder (empty: the newest under MATRIX_RESULTS_DIR)
	bool rerun = false; // re-run (from zero) the runs of `dir` matching rerun_optimizer
	std::string rerun_optimizer;
	bool dry_run = false, yes = false, force = false;
	int jobs = 0; // 0: CONFIG_MATRIX_JOBS
	int shard_k = 1, shard_n = 1;
	int stop_on_failure = -1; // -1: CONFIG_MATRIX_STOP_ON_FAILURE
	std::string sweep_file;	  // RANGE_CONFIG: sweep these symbols over every run (continue: the folder's sweep.txt)
	std::string self_exe;	  // the knlp binary that runs `train`
};

// Returns the exit status: 0 when every run of the (shard of the) matrix completed.
int run_matrix(const MatrixOptions &o);

// Rewrite all_results.json and summary_report.txt of a results folder from its run folders.
void write_summaries(const std::string &dir);

// Each configuration of a results folder (its all_results.json) with the mean and sd of its
// quality over seeds, Welch's interval and verdict against the baseline (an external one
// too), its family figures averaged over seeds: what summary_report.txt's tables show, as
// JSON ({rows, baseline, metric, higher_is_better, confidence}) for knlp dashboard.
nlohmann::json configuration_stats(const std::string &dir);

// Merge shard folders (same config.txt) into `out`; refuses runs present twice with
// different results. Returns the number of runs merged.
int merge_results(const std::string &out, const std::vector<std::string> &srcs);

// Newest test_matrix_results_* folder under parent ("" when there is none).
std::string newest_results_dir(const std::string &parent);

} // namespace knlp
