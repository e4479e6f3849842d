// knlp matrix [summary | merge]: test matrices (matrix/): run, plan, continue and rerun
// them; rewrite a results folder's summaries (and its report); merge the folders of shards.
#include "core/error.h"
#include "core/fsutil.h"
#include "matrix/expand.h"
#include "matrix/runner.h"
#include "tools/commands.h"

namespace knlp {

void parse_shard(const std::string &text, int *k, int *n)
{
	char extra = 0;
	if (std::sscanf(text.c_str(), "%d/%d%c", k, n, &extra) != 2)
		fail("matrix: --shard {}: expected k/N, e.g. 1/4", text);
}

namespace {

struct MatrixArgs {
	ConfigArgs config;
	MatrixOptions mo;
	std::string shard;
	bool is_matrix_query = false;
	CLI::App *self = nullptr;
};

void define_matrix(CLI::App *m, MatrixArgs &a)
{
	a.self = m;
	a.config.add_to(m);
	m->add_flag("--dry-run", a.mo.dry_run, "Print the runs, their number and an estimated duration; run nothing");
	m->add_flag("--yes,-y", a.mo.yes, "Do not ask for confirmation");
	m->add_option("--out", a.mo.out,
		      "Results folder of a new matrix (default MATRIX_RESULTS_DIR/test_matrix_results_<stamp>)");
	m->add_flag("--continue", a.mo.cont,
		    "Continue a results folder (--dir, or the newest under MATRIX_RESULTS_DIR)");
	m->add_option("--dir", a.mo.dir, "Results folder for --continue or --rerun");
	m->add_flag("--rerun", a.mo.rerun, "Re-run the runs of --dir from zero (all, or those of --optimizer)");
	m->add_option("--optimizer", a.mo.rerun_optimizer, "With --rerun: only this optimizer's runs");
	m->add_option("--jobs,-j", a.mo.jobs, "Runs at once (default CONFIG_MATRIX_JOBS)");
	m->add_option("--shard", a.shard, "Run shard k/N of the matrix (runs i with i mod N = k - 1)");
	m->add_option("--stop-on-failure", a.mo.stop_on_failure, "1: stop at the first failed run; 0: go on")
		->check(CLI::Range(0, 1));
	m->add_option("--sweep", a.mo.sweep_file,
		      "RANGE_CONFIG file: CONFIG_X=a|b|c or CONFIG_X=start:step:end per line");
	m->add_flag("--force", a.mo.force, "Continue even when the configuration differs from the folder's");
	m->add_flag("--is-matrix", a.is_matrix_query,
		    "Exit 0 when the configuration is a test matrix, 1 when it is one run");
}

void run_matrix_command(MatrixArgs &a)
{
	if (!a.self->get_subcommands().empty())
		return; // `matrix summary` / `matrix merge` did the work
	a.mo.cfg = a.config.load();
	if (a.is_matrix_query)
		std::exit(is_matrix(a.mo.cfg) ? 0 : 1);
	if (!a.shard.empty())
		parse_shard(a.shard, &a.mo.shard_k, &a.mo.shard_n);
	a.mo.self_exe = self_exe();
	if (int rc = run_matrix(a.mo))
		std::exit(rc);
}

struct SummaryArgs {
	std::string dir, parent = "."; // the folder, or (--latest) the newest under parent
	bool latest = false, graphs = false, report = false;
};

void define_summary(CLI::App *c, SummaryArgs &a)
{
	c->add_option("dir", a.dir, "Results folder");
	c->add_flag("--latest", a.latest, "The newest test_matrix_results_* folder (under --in)");
	c->add_option("--in", a.parent, "Where --latest looks")->capture_default_str();
	c->add_flag("--graphs", a.graphs, "Also draw graphs/*.png (scripts/matrix_report.py)");
	c->add_flag("--report", a.report,
		    "Also write report.html with the graphs (scripts/matrix_report.py) and dashboard.html (the "
		    "dashboard's pages)");
}

void run_summary(SummaryArgs &a)
{
	std::string dir = a.dir;
	if (dir.empty()) {
		if (!a.latest)
			fail("matrix summary: name a results folder or pass --latest");
		dir = newest_results_dir(a.parent);
		if (dir.empty())
			fail("{}: no test_matrix_results_* folder (run a matrix first, or name one)", a.parent);
	}
	if (!file_exists(join_path(dir, "plan.json")))
		fail("{}: not a results folder (no plan.json)", dir);
	write_summaries(dir);
	fmt::print("{}\n", read_file(join_path(dir, "summary_report.txt")));
	if (a.graphs || a.report) {
		const std::string py = file_exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
		const std::string cmd = fmt::format("{} '{}/scripts/matrix_report.py' '{}'{}", py, KNLP_SOURCE_DIR, dir,
						    a.report ? "" : " --graphs-only");
		if (int rc = std::system(cmd.c_str()))
			fail("matrix summary: {} exited with {}", cmd, rc);
	}
	if (a.report) { // the dashboard's interactive pages of this matrix, in one file
		export_dashboard({dir}, join_path(dir, "dashboard.html"));
		fmt::print("wrote {}\n", join_path(dir, "dashboard.html"));
	}
}

struct MergeArgs {
	std::string out;
	std::vector<std::string> dirs;
};

void define_merge(CLI::App *c, MergeArgs &a)
{
	c->add_option("--out", a.out, "Merged results folder")->required();
	c->add_option("dirs", a.dirs, "Shard results folders")->required();
}

void run_merge(MergeArgs &a)
{
	int n = merge_results(a.out, a.dirs);
	fmt::print("merged {} runs into {}\n", n, a.out);
}

} // namespace

void add_matrix_commands(CLI::App &app)
{
	CLI::App *m =
		command<MatrixArgs>(app, "matrix", "Run (or plan, continue, rerun) the test matrix a .config describes",
				    define_matrix, run_matrix_command);
	m->require_subcommand(0, 1);
	command<SummaryArgs>(*m, "summary", "Rewrite all_results.json and summary_report.txt of a results folder",
			     define_summary, run_summary);
	command<MergeArgs>(*m, "merge", "Merge the results folders of a matrix's shards", define_merge, run_merge);
}

} // namespace knlp
