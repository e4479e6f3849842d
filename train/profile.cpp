#include "train/profile.h"

#include <cstdlib>
#include <set>

#include <fmt/format.h>

#include "knlp_features.h"

#ifndef KNLP_NO_PROFILER
#include <torch/csrc/autograd/profiler_kineto.h>
#endif

#include "core/error.h"
#include "train/device.h"

namespace knlp {

#ifndef KNLP_NO_PROFILER
namespace {
// Start libtorch's Kineto profiler: operators, and CUDA kernels where `cuda`.
void start_kineto(bool cuda)
{
	namespace pi = torch::profiler::impl;
	pi::ProfilerConfig config(pi::ProfilerState::KINETO, /*report_input_shapes=*/true);
	std::set<pi::ActivityType> act{pi::ActivityType::CPU};
	if (cuda)
		act.insert(pi::ActivityType::CUDA);
	torch::autograd::profiler::prepareProfiler(config, act);
	torch::autograd::profiler::enableProfiler(config, act);
}
} // namespace
#endif

StepProfiler::StepProfiler()
{
	const char *p = std::getenv("KNLP_PROFILE");
	if (!p || !*p)
		return;
	path_ = p;
	if (const char *s = std::getenv("KNLP_PROFILE_STEPS")) {
		long long a = 0, b = 0;
		char tail = 0;
		if (std::sscanf(s, "%lld:%lld%c", &a, &b, &tail) != 2 || a < 1 || b < a)
			fail("KNLP_PROFILE_STEPS={}: expected FIRST:LAST iterations, 1 <= FIRST <= LAST", s);
		first_ = a, last_ = b;
	}
#ifdef KNLP_NO_PROFILER
	fail("KNLP_PROFILE: this build has no profiler (configured with -DKNLP_PROFILER=OFF)");
#else
	// Fail now, not after the first steps, where libtorch cannot write a trace.
	try {
		start_kineto(false);
		auto r = torch::autograd::profiler::disableProfiler();
		if (r)
			r->save(path_);
	} catch (const std::exception &e) {
		std::string m = e.what();
		fail("KNLP_PROFILE={}: this libtorch cannot write a profile ({}); the official and pip CUDA builds can",
		     path_, m.substr(0, m.find('\n')));
	}
#endif
}

StepProfiler::~StepProfiler()
{
#ifndef KNLP_NO_PROFILER
	if (active_) {
		try {
			torch::autograd::profiler::disableProfiler();
		} catch (...) {
		}
	}
#endif
}

void StepProfiler::before_step(int64_t iter, torch::Device dev)
{
#ifndef KNLP_NO_PROFILER
	if (path_.empty() || active_ || done_ || iter != first_)
		return;
	synchronize(dev);
	start_kineto(dev.is_cuda());
	active_ = true;
#else
	(void)iter, (void)dev;
#endif
}

void StepProfiler::after_step(int64_t iter, torch::Device dev)
{
#ifndef KNLP_NO_PROFILER
	if (!active_ || iter != last_)
		return;
	synchronize(dev);
	auto result = torch::autograd::profiler::disableProfiler();
	active_ = false, done_ = true;
	if (!result)
		fail("KNLP_PROFILE: the profiler returned no result");
	result->save(path_);
	fmt::print(stderr, "profile: iterations {} to {} written to {}\n", first_, last_, path_);
#else
	(void)iter, (void)dev;
#endif
}

} // namespace knlp
