// Learning-rate schedule of the spec: linear warmup lr*it/warmup, then cosine from lr to
// min_lr over [warmup, max_iters], min_lr after max_iters (or constant lr without decay).
#pragma once
#include <cmath>
#include <cstdint>

namespace knlp {

struct LrSchedule {
	double lr = 6e-4, min_lr = 6e-5;
	int64_t warmup = 100, max_iters = 1000;
	bool decay = true;

	double at(int64_t it) const
	{
		if (warmup > 0 && it < warmup)
			return lr * double(it) / double(warmup);
		if (!decay)
			return lr;
		if (it > max_iters || max_iters <= warmup)
			return min_lr;
		double ratio = double(it - warmup) / double(max_iters - warmup);
		return min_lr + 0.5 * (1.0 + std::cos(M_PI * ratio)) * (lr - min_lr);
	}
};

} // namespace knlp
