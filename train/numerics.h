// What a trainer does with a non-finite loss or gradient norm (CONFIG_NONFINITE_*): stop,
// or drop the step and count it. One guard per trainer; its counts travel in checkpoints
// so that a resumed run skips exactly what the uninterrupted one did.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/settings.h"

namespace knlp {

struct NonfiniteGuard {
	bool skip = false;
	int64_t max_in_row = 10;
	int64_t skipped = 0, in_row = 0;

	static NonfiniteGuard from(const TrainSettings &t)
	{
		NonfiniteGuard g;
		g.skip = t.nonfinite == choice::Nonfinite::Skip;
		g.max_in_row = g.skip ? t.nonfinite_max_skips : 1;
		return g;
	}
	// A non-finite `what` in this step. Calls stop(message), which must not return, in stop
	// mode or after max_in_row skips in a row; otherwise counts the skip, hands the record
	// for metrics.jsonl to `log` and returns true (the caller drops the step).
	bool skip_step(const std::string &what, double value, const std::function<void(const std::string &)> &stop,
		       const std::function<void(const nlohmann::json &)> &log)
	{
		if (!skip)
			stop(what);
		skipped++;
		in_row++;
		if (in_row >= max_in_row)
			stop(fmt::format("{} for the {}th step in a row (CONFIG_NONFINITE_MAX_SKIPS)", what, in_row));
		log({{"type", "skipped_step"}, {"what", what}, {"skipped_steps", skipped}});
		fmt::print(stderr, "knlp: warning: non-finite {} ({}); step skipped ({} so far)\n", what, value,
			   skipped);
		return true;
	}
	void step_ok() { in_row = 0; }
	void save(nlohmann::json &st) const
	{
		st["skipped_steps"] = skipped;
		st["skipped_in_row"] = in_row;
	}
	void load(const nlohmann::json &st)
	{
		skipped = st.value("skipped_steps", int64_t(0));
		in_row = st.value("skipped_in_row", int64_t(0));
	}
};

} // namespace knlp
