#include "train/metrics.h"

#include <fstream>
#include <sstream>

#include "core/fsutil.h"
#include "core/tfevents.h"
#include "prune/pruner.h"

namespace knlp {

using json = nlohmann::json;

void log_record(const std::string &run_dir, const TrackingSettings &t, const json &rec)
{
	if (t.tracker == choice::Tracker::None)
		return;
	std::ofstream f(join_path(run_dir, "metrics.jsonl"), std::ios::app);
	f << rec.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
	if (t.tracker != choice::Tracker::Tensorboard)
		return;
	TfEventsWriter tb(run_dir);
	const std::string type = rec.value("type", std::string("record"));
	const int64_t step = rec.value("step", int64_t(0));
	if (type == "sample") {
		tb.text(step, fmt::format("samples/{}", rec.value("prompt", 0)), rec.value("text", std::string()));
		return;
	}
	if (type == "config") {
		tb.text(step, "config", rec.value("text", std::string()));
		return;
	}
	for (const auto &[k, v] : rec.items())
		if (k != "step" && v.is_number())
			tb.scalar(step, type + "/" + k, v.get<double>());
}

void log_config(const std::string &run_dir, const TrackingSettings &t, const std::string &text)
{
	if (t.tracker == choice::Tracker::Tensorboard)
		TfEventsWriter(run_dir).text(0, "config", text);
}

void truncate_records(const std::string &run_dir, int64_t step)
{
	truncate_jsonl(join_path(run_dir, "metrics.jsonl"), step);
	truncate_tfevents(find_tfevents(run_dir), step);
}

void truncate_jsonl(const std::string &path, int64_t step)
{
	if (!file_exists(path))
		return;
	std::istringstream in(read_file(path));
	std::string line, kept;
	while (std::getline(in, line)) {
		try {
			auto j = json::parse(line);
			if (j.value("step", int64_t(0)) <= step)
				kept += line + "\n";
		} catch (...) {
			// a torn last line from a kill: dropped
		}
	}
	write_file_atomic(path, kept);
}

json pruning_summary(const Pruner &p)
{
	if (!p.enabled())
		return {{"method", "none"}};
	PruneStats ps = p.stats();
	const auto &po = p.options();
	return {{"method", method_name(po.method)},
		{"variant", po.method == PruneMethod::State ? fmt::format("bitter{}", po.variant) : ""},
		{"target_sparsity", po.target},
		{"final_sparsity", ps.sparsity},
		{"sparsity_per_tensor", ps.per_tensor},
		{"prunable_parameters", ps.prunable},
		{"mask_bytes", ps.mask_bytes},
		{"w0_bytes", ps.w0_bytes},
		{"score_bytes_peak", ps.score_bytes_peak},
		{"warmup", po.warmup},
		{"frequency", po.frequency},
		{"ramp_end", po.ramp_end}};
}

} // namespace knlp
