// knlp run: what a .config describes, from start to finish. The data is prepared (or
// checked) first; then a configuration with a MULTIPLE mode, several seeds or a matrix list
// runs as a test matrix, one with CONFIG_DDP as a data-parallel launch of CONFIG_DDP_PROCS
// processes on this machine, and anything else as one training run. `make` calls this.
#include "core/error.h"
#include "matrix/expand.h"
#include "matrix/runner.h"
#include "tools/commands.h"
#include "train/ddp.h"
#include "train/loop.h"

namespace knlp {

void prepare_for_run(const Config &c); // tools/cmd_data.cpp

namespace {

struct RunArgs {
	ConfigArgs config;
	bool yes = false, dry_run = false, no_prepare = false;
	int jobs = 0, stop_on_failure = -1, nproc = 0;
	std::string shard;
};

void define_run(CLI::App *c, RunArgs &a)
{
	a.config.add_to(c);
	c->add_flag("--yes,-y", a.yes, "Matrix: do not ask for confirmation");
	c->add_flag("--dry-run", a.dry_run, "Matrix: print the runs and an estimated duration; run nothing");
	c->add_option("--jobs,-j", a.jobs, "Matrix: runs at once (default CONFIG_MATRIX_JOBS)");
	c->add_option("--stop-on-failure", a.stop_on_failure, "Matrix: 1 stops at the first failed run")
		->check(CLI::Range(0, 1));
	c->add_option("--shard", a.shard, "Matrix: run shard k/N");
	c->add_option("--nproc", a.nproc, "Data parallel: processes (default CONFIG_DDP_PROCS)");
	c->add_flag("--no-prepare", a.no_prepare, "Do not prepare (or check) the data first");
}

void run_run(RunArgs &a)
{
	Config cfg = a.config.load();
	const Settings &s = cfg.settings();
	if (!a.no_prepare && !a.dry_run)
		prepare_for_run(cfg);
	if (is_matrix(cfg)) {
		MatrixOptions mo;
		mo.cfg = cfg;
		mo.yes = a.yes, mo.dry_run = a.dry_run, mo.jobs = a.jobs, mo.stop_on_failure = a.stop_on_failure;
		if (!a.shard.empty())
			parse_shard(a.shard, &mo.shard_k, &mo.shard_n);
		mo.self_exe = self_exe();
		fmt::print("test matrix: {} runs (knlp matrix --config {})\n", expand_matrix(cfg).size(),
			   a.config.path);
		if (int rc = run_matrix(mo))
			std::exit(rc);
		return;
	}
	if (s.ddp.enabled) {
		const int n = a.nproc > 0 ? a.nproc : static_cast<int>(s.ddp.procs);
		std::vector<std::string> args = {"train", "--config", a.config.path};
		for (const auto &set : a.config.sets)
			args.insert(args.end(), {"--set", set});
		fmt::print("data parallel: {} processes (knlp launch --nproc {} -- train --config {})\n", n, n,
			   a.config.path);
		if (int rc = launch_local(n, args, 0, 30))
			std::exit(rc);
		return;
	}
	TrainRequest req{cfg, "", "", false, g_command_line};
	if (int rc = train(req))
		std::exit(rc);
}

} // namespace

void add_run_command(CLI::App &app)
{
	command<RunArgs>(app, "run",
			 "Prepare the data, then train what the .config describes: one run, a test matrix or a "
			 "data-parallel launch",
			 define_run, run_run);
}

} // namespace knlp
