// Kernel-level profile of a few training steps (KNLP_PROFILE=FILE.json, steps from
// KNLP_PROFILE_STEPS=FIRST:LAST, default 10:12): libtorch's Kineto profiler records the
// operators and, on a GPU, every CUDA kernel of those steps into a Chrome trace, the same
// format torch.profiler writes, so scripts/ref/profile_summary.py can put knlp's step next
// to eager PyTorch's kernel by kernel. Off (and free) when the variable is unset.
#pragma once
#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace knlp {

class StepProfiler {
public:
	StepProfiler(); // reads the environment
	~StepProfiler();
	bool enabled() const { return !path_.empty(); }
	// Call before step `iter` starts and after it ends (iterations counted from 1).
	void before_step(int64_t iter, torch::Device dev);
	void after_step(int64_t iter, torch::Device dev);

private:
	std::string path_;
	int64_t first_ = 10, last_ = 12;
	bool active_ = false, done_ = false;
};

} // namespace knlp
