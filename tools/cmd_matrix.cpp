// knlp matrix | matrix-summary | matrix-merge
#include <climits>
#include <unistd.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "matrix/expand.h"
#include "matrix/runner.h"
#include "tools/commands.h"

namespace knlp {

namespace {

std::string self_exe()
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n <= 0)
		fail("matrix: cannot find the knlp binary (/proc/self/exe)");
	buf[n] = 0;
	return buf;
}

} // namespace

void add_matrix_commands(CLI::App &app)
{
	auto *m = app.add_subcommand("matrix", "Run (or plan, continue, rerun) the test matrix a .config describes");
	static ConfigArgs ca;
	ca.add_to(m);
	static MatrixOptions mo;
	static std::string shard, cont_dir;
	static bool cont = false;
	m->add_flag("--dry-run", mo.dry_run, "Print the runs, their number and an estimated duration; run nothing");
	m->add_flag("--yes,-y", mo.yes, "Do not ask for confirmation");
	m->add_option("--out", mo.out, "Results folder of a new matrix (default MATRIX_RESULTS_DIR/test_matrix_results_<stamp>)");
	m->add_flag("--continue", cont, "Continue a results folder (--dir, or the newest under MATRIX_RESULTS_DIR)");
	m->add_option("--dir", cont_dir, "Results folder for --continue or --rerun");
	m->add_flag("--rerun", mo.rerun, "Re-run the runs of --dir from zero (all, or those of --optimizer)");
	m->add_option("--optimizer", mo.rerun_optimizer, "With --rerun: only this optimizer's runs");
	m->add_option("--jobs,-j", mo.jobs, "Runs at once (default CONFIG_MATRIX_JOBS)");
	m->add_option("--shard", shard, "Run shard k/N of the matrix (runs i with i mod N = k - 1)");
	m->add_option("--stop-on-failure", mo.stop_on_failure, "1: stop at the first failed run; 0: go on")
		->check(CLI::Range(0, 1));
	m->add_option("--sweep", mo.sweep_file, "RANGE_CONFIG file: CONFIG_X=a|b|c or CONFIG_X=start:step:end per line");
	m->add_flag("--force", mo.force, "Continue even when the configuration differs from the folder's");
	static bool is_matrix_query = false;
	m->add_flag("--is-matrix", is_matrix_query, "Exit 0 when the configuration is a test matrix, 1 when it is one run");
	m->callback([] {
		mo.cfg = ca.load();
		if (is_matrix_query)
			std::exit(is_matrix(mo.cfg) ? 0 : 1);
		mo.cont = cont;
		mo.dir = cont_dir;
		if (!shard.empty()) {
			int k = 0, n = 0;
			char extra = 0;
			if (std::sscanf(shard.c_str(), "%d/%d%c", &k, &n, &extra) != 2)
				fail("matrix: --shard {}: expected k/N, e.g. 1/4", shard);
			mo.shard_k = k, mo.shard_n = n;
		}
		mo.self_exe = self_exe();
		int rc = run_matrix(mo);
		if (rc != 0)
			std::exit(rc);
	});

	auto *s = app.add_subcommand("matrix-summary", "Rewrite all_results.json and summary_report.txt of a results folder");
	static std::string sdir;
	s->add_option("dir", sdir, "Results folder")->required();
	s->callback([] {
		if (!file_exists(join_path(sdir, "plan.json")))
			fail("{}: not a results folder (no plan.json)", sdir);
		write_summaries(sdir);
		fmt::print("{}\n", read_file(join_path(sdir, "summary_report.txt")));
	});

	auto *g = app.add_subcommand("matrix-merge", "Merge the results folders of a matrix's shards");
	static std::string gout;
	static std::vector<std::string> gsrc;
	g->add_option("--out", gout, "Merged results folder")->required();
	g->add_option("dirs", gsrc, "Shard results folders")->required();
	g->callback([] {
		int n = merge_results(gout, gsrc);
		fmt::print("merged {} runs into {}\n", n, gout);
	});
}

} // namespace knlp
