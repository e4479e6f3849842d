#include "core/settings.h"

#include <cmath>

#include "core/config.h"
#include "core/error.h"

namespace knlp {

#include "settings_fill.inc"

namespace {

// Ranges of float symbols (Kconfig has ranges for integers only). Open bounds exclude the
// end point: the learning rate must be > 0, a dropout probability < 1.
struct FloatRange {
	const char *name;
	double lo, hi;
	bool lo_open, hi_open;
};

const FloatRange k_float_ranges[] = {
	{"LEARNING_RATE", 0, INFINITY, true, true},
	{"MIN_LR", 0, INFINITY, false, true},
	{"ADAMW_BETA1", 0, 1, false, true},
	{"ADAMW_BETA2", 0, 1, false, true},
	{"ADAMW_EPS", 0, INFINITY, true, true},
	{"WEIGHT_DECAY", 0, INFINITY, false, true},
	{"SGD_MOMENTUM", 0, 1, false, true},
	{"SPAM_THETA", 0, INFINITY, true, true},
	{"SPAM_SPIKE_THRESHOLD", 0, INFINITY, true, true},
	{"SINKGD_TAU", 0, INFINITY, true, true},
	{"GRAD_CLIP", 0, INFINITY, false, true},
	{"IMAGE_GRAD_CLIP", 0, INFINITY, false, true},
	{"IMAGE_MIN_LR", 0, INFINITY, false, true},
	{"GPT2_DROPOUT", 0, 1, false, true},
	{"PRUNING_TARGET_SPARSITY", 0, 1, false, true},
	{"PRUNING_SAMPLE_FRACTION", 0, 1, true, false},
	{"GNN_FIM_EMA", 0, 1, false, true},
	{"GNN_BOUNDARY_BUDGET", 0, INFINITY, false, true},
	{"SAMPLE_TEMPERATURE", 0, INFINITY, true, true},
	{"TIER_FAST_US", 0, INFINITY, false, true},
	{"TIER_MIDDLE_US", 0, INFINITY, false, true},
	{"TIER_SLOW_US", 0, INFINITY, false, true},
	{"TIER_FAST_GBPS", 0, INFINITY, true, true},
	{"TIER_MIDDLE_GBPS", 0, INFINITY, true, true},
	{"TIER_SLOW_GBPS", 0, INFINITY, true, true},
};

std::string interval(const FloatRange &r)
{
	auto end = [](double v) { return std::isinf(v) ? std::string("inf") : fmt::format("{}", v); };
	return fmt::format("{}{}, {}{}", r.lo_open ? "(" : "[", end(r.lo), end(r.hi),
			   r.hi_open || std::isinf(r.hi) ? ")" : "]");
}

} // namespace

Settings make_settings(const Config &cfg, const std::string &where)
{
	for (const auto &r : k_float_ranges) {
		const double v = cfg.get_float(r.name);
		const bool ok = (r.lo_open ? v > r.lo : v >= r.lo) && (r.hi_open ? v < r.hi : v <= r.hi);
		if (!ok)
			fail("{}: CONFIG_{}={} is outside its range {}", where, r.name, cfg.raw(r.name), interval(r));
	}
	Settings s;
	fill_settings(cfg, s);
	return s;
}

} // namespace knlp
