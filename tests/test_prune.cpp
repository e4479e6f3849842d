// Pruning building blocks: exact and sampled threshold selection, schedules, score formulas.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "prune/scores.h"
#include "prune/select.h"

using namespace knlp;

TEST(Threshold, ExactSelectionMatchesSorting)
{
	torch::manual_seed(11);
	std::vector<torch::Tensor> ts = {torch::randn({1000, 37}), torch::randn({5}).abs(),
					 torch::randint(-3, 4, {777}).to(torch::kFloat), torch::rand({300000})};
	auto all = torch::cat({ts[0].flatten(), ts[1], ts[2], ts[3]});
	auto sorted = std::get<0>(all.sort());
	int64_t n = all.numel();
	for (int64_t k : {int64_t(1), int64_t(2), int64_t(777), n / 2, n - 1, n}) {
		float want = sorted[k - 1].item<float>();
		EXPECT_EQ(kth_smallest(ts, k), want) << k;
	}
	EXPECT_THROW(kth_smallest(ts, 0), Error);
	EXPECT_THROW(kth_smallest(ts, n + 1), Error);
	// Negative zero and zero order together; ties resolve to the shared value.
	std::vector<torch::Tensor> z = {torch::tensor({-0.0f, 0.0f, -1.0f, 2.0f})};
	EXPECT_EQ(kth_smallest(z, 1), -1.0f);
	EXPECT_EQ(kth_smallest(z, 4), 2.0f);
}

TEST(Threshold, SamplingIsClose)
{
	torch::manual_seed(12);
	std::vector<torch::Tensor> ts = {torch::rand({2000000})};
	Rng rng(1);
	int64_t k = 1000000;
	float exact = kth_smallest(ts, k);
	float est = sampled_kth_smallest(ts, k, 0.02, rng);
	EXPECT_NEAR(est, exact, 0.01); // 40,000 samples of U(0,1): standard error ~0.0025
}

TEST(Schedule, CubicAndLinear)
{
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 50, 100, 1100, ScheduleShape::Cubic), 0.0);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 100, 100, 1100, ScheduleShape::Cubic), 0.0);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 600, 100, 1100, ScheduleShape::Cubic), 0.0625);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 600, 100, 1100, ScheduleShape::Linear), 0.25);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 1100, 100, 1100, ScheduleShape::Cubic), 0.5);
	EXPECT_DOUBLE_EQ(scheduled_sparsity(0.5, 5000, 100, 1100, ScheduleShape::Linear), 0.5);
	EXPECT_THROW(scheduled_sparsity(0.5, 1, 100, 100, ScheduleShape::Cubic), Error);
}

TEST(Scores, HandComputedValues)
{
	// w = -2, m = 0.5, v = 0.25 (sqrt 0.5).
	auto w = torch::tensor({-2.0f}), m = torch::tensor({0.5f}), v = torch::tensor({0.25f});
	auto at = [&](int var, bool intended = false) { return state_score(var, w, m, v, intended).item<double>(); };
	EXPECT_NEAR(at(0), 4.0 * 0.5 / 0.5, 1e-6);      // w^2 |m| / (sqrt v + eps)
	EXPECT_DOUBLE_EQ(at(1), 2.0);                    // |w|
	EXPECT_DOUBLE_EQ(at(2), 2.0);
	EXPECT_NEAR(at(3), 2.0 * std::sqrt(0.5), 1e-6); // |w| sqrt(|m| + eps)
	EXPECT_NEAR(at(4), 2.0 * std::sqrt(0.5), 1e-6);
	EXPECT_NEAR(at(5), -1.0 + 0.2, 1e-6);            // sign(w) m / sqrt(v) + 0.1 |w|
	EXPECT_NEAR(at(5, true), 1.0 + 0.2, 1e-6);       // the intended sign
	EXPECT_NEAR(at(6), 2.0 * std::sqrt(0.5) * 1.0, 1e-6);
	EXPECT_NEAR(at(7), 2.0 * std::pow(0.25, 0.25), 1e-6);
	// fp16: 0.25 + 1e-5 rounds to 0.25; rsqrt -> 2; rsqrt(2) = 0.7071.. rounds to 0.70703125.
	EXPECT_DOUBLE_EQ(at(8), 1.4140625);
	EXPECT_DOUBLE_EQ(at(9), 1.4140625);
	// No optimizer state yet: |w|.
	EXPECT_DOUBLE_EQ(state_score(7, w, {}, {}).item<double>(), 2.0);
	EXPECT_THROW(state_score(10, w, m, v), Error);
	EXPECT_DOUBLE_EQ(magnitude_score(w).item<double>(), 2.0);
	EXPECT_DOUBLE_EQ(movement_score(w, torch::tensor({-1.5f})).item<double>(), -2.0 * -0.5);
}

TEST(Scores, Bitter4LayerSparsity)
{
	EXPECT_DOUBLE_EQ(bitter4_layer_sparsity(0.5, 0, 12), 0.35);
	EXPECT_NEAR(bitter4_layer_sparsity(0.5, 11, 12), 0.65, 1e-12);
	EXPECT_DOUBLE_EQ(bitter4_layer_sparsity(0.9, 11, 12), 0.95);
}
