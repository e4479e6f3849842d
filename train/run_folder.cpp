#include "train/run_folder.h"

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/run.h"
#include "train/checkpoint.h"
#include "train/loop.h"

namespace knlp {

const std::vector<std::string> &resume_tolerant_symbols()
{
	static const std::vector<std::string> s = {sym::MAX_ITERS,	sym::MAX_TIME,	       sym::LOG_INTERVAL,
						   sym::OUTPUT_DIR,	sym::RUN_NAME,	       sym::DEBUG_VERBOSE,
						   sym::SAMPLE_AT_EVAL, sym::KEEP_CHECKPOINTS, sym::GNN_EPOCHS};
	return s;
}

std::string open_run_dir(const TrainRequest &req, const Config &cfg, const std::string &prefix, std::string *ckpt)
{
	if (!req.resume_dir.empty()) {
		const std::string &dir = req.resume_dir;
		*ckpt = checkpoint_pointer(dir, "LATEST");
		if (ckpt->empty())
			fail("{}: nothing to resume (no complete checkpoint under checkpoints/)", dir);
		Config saved = Config::parse(read_checkpoint_state(*ckpt).at("config").get<std::string>(),
					     join_path(*ckpt, "state.json"), Config::Mode::Saved);
		auto d = saved.diff(cfg, resume_tolerant_symbols());
		if (!d.empty() && !req.force)
			fail("{}: configuration differs from the checkpoint's: {}; pass --force to resume anyway", dir,
			     fmt::join(d, ", "));
		return dir;
	}
	std::string dir = req.out_dir;
	if (dir.empty()) {
		std::string name = cfg.settings().core.run_name;
		if (name.empty())
			name = prefix + "_" + now_stamp();
		dir = join_path(cfg.settings().core.output_dir, name);
	}
	if (!checkpoint_pointer(dir, "LATEST").empty())
		fail("{}: already holds a run with checkpoints; continue it with --resume {} or choose --out", dir,
		     dir);
	ckpt->clear();
	return dir;
}

} // namespace knlp
