// Test matrices: expansion counts and ids (worked out by hand in the comments),
// compatibility filtering, empty matrices, per-run configurations, and the statistics.
#include <gtest/gtest.h>

#include <cmath>

#include "core/config.h"
#include "matrix/expand.h"
#include "matrix/stats.h"
#include "testutil.h"

using namespace knlp;

namespace {

std::vector<std::string> ids(const std::string &cfg)
{
	std::vector<std::string> out;
	for (const auto &r : expand_matrix(Config::parse(cfg, "m.config")))
		out.push_back(r.id);
	return out;
}

const char *k_multi =
	"CONFIG_OPTIMIZER_MODE_MULTIPLE=y\n"
	"CONFIG_OPTIMIZER_ENABLE_SGD=y\nCONFIG_OPTIMIZER_ENABLE_ADAMW=y\nCONFIG_OPTIMIZER_ENABLE_ADAMWPRUNE=y\n"
	"CONFIG_PRUNING_MODE_MULTIPLE=y\n"
	"CONFIG_PRUNING_ENABLE_NONE=y\nCONFIG_PRUNING_ENABLE_MAGNITUDE=y\nCONFIG_PRUNING_ENABLE_MOVEMENT=y\n"
	"CONFIG_PRUNING_ENABLE_STATE=y\n";

} // namespace

TEST(Matrix, RunIdGrammar)
{
	EXPECT_EQ(run_id("lenet5", "sgd", "", "magnitude", 50), "lenet5_sgd_magnitude_50");
	EXPECT_EQ(run_id("gpt2", "adamw", "", "none", 0), "gpt2_adamw_none");
	EXPECT_EQ(run_id("gpt2", "adamwprune", "bitter7", "state", 50), "gpt2_adamwprune_bitter7_state_50");
}

TEST(Matrix, SingleConfigurationIsOneRun)
{
	Config c;
	EXPECT_FALSE(is_matrix(c));
	EXPECT_EQ(ids(""), std::vector<std::string>{"gpt2_adamw_none"});
	EXPECT_EQ(ids("CONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_TARGET_SPARSITY=\"0.7\"\n"),
		  std::vector<std::string>{"gpt2_sgd_magnitude_70"});
	EXPECT_TRUE(is_matrix(Config::parse("CONFIG_MATRIX_SEEDS=2\n", "m")));
	EXPECT_EQ(ids("CONFIG_OPTIMIZER_MODE_NONE=y\nCONFIG_OPTIMIZER_SGD=y\n"),
		  std::vector<std::string>{"gpt2_adamw_none"});
}

TEST(Matrix, ExpansionFollowsTheCompatibilityRules)
{
	// SGD and AdamW: none + magnitude x {50,70,90} + movement x {50,70,90} = 7 each (state
	// pairs only with AdamWPrune); AdamWPrune: bitter7 x {50,70,90} = 3. Total 17.
	auto got = ids(k_multi);
	std::vector<std::string> want = {"gpt2_sgd_none",
					 "gpt2_sgd_magnitude_50",
					 "gpt2_sgd_magnitude_70",
					 "gpt2_sgd_magnitude_90",
					 "gpt2_sgd_movement_50",
					 "gpt2_sgd_movement_70",
					 "gpt2_sgd_movement_90",
					 "gpt2_adamw_none",
					 "gpt2_adamw_magnitude_50",
					 "gpt2_adamw_magnitude_70",
					 "gpt2_adamw_magnitude_90",
					 "gpt2_adamw_movement_50",
					 "gpt2_adamw_movement_70",
					 "gpt2_adamw_movement_90",
					 "gpt2_adamwprune_bitter7_state_50",
					 "gpt2_adamwprune_bitter7_state_70",
					 "gpt2_adamwprune_bitter7_state_90"};
	EXPECT_EQ(got, want);
	// Variants multiply AdamWPrune's runs only: 14 + 3 variants x 2 levels = 20.
	auto v = ids(std::string(k_multi) + "CONFIG_ADAMWPRUNE_VARIANTS=\"bitter0 bitter7 bitter8\"\n"
					    "# CONFIG_SPARSITY_ENABLE_90 is not set\n");
	EXPECT_EQ(v.size(), 16u); // SGD, AdamW: none + 2 magnitude + 2 movement; AdamWPrune 3 x 2
	EXPECT_EQ(v.back(), "gpt2_adamwprune_bitter8_state_70");
	// Seeds: every configuration three times, ids suffixed with the seed.
	auto s = expand_matrix(Config::parse(std::string(k_multi) + "CONFIG_MATRIX_SEEDS=3\nCONFIG_SEED=10\n", "m"));
	ASSERT_EQ(s.size(), 51u);
	EXPECT_EQ(s[0].id, "gpt2_sgd_none_s10");
	EXPECT_EQ(s[2].id, "gpt2_sgd_none_s12");
	EXPECT_EQ(s[2].config_id, "gpt2_sgd_none");
	EXPECT_EQ(s[2].seed, 12);
}

TEST(Matrix, PerRunConfiguration)
{
	Config m = Config::parse(k_multi, "m");
	auto runs = expand_matrix(m);
	Config c = run_config(m, runs[2]); // gpt2_sgd_magnitude_70
	const Settings &s = c.settings();
	EXPECT_EQ(s.optim.kind, choice::Optimizer::Sgd);
	EXPECT_EQ(s.prune.method, choice::Pruning::Magnitude);
	EXPECT_DOUBLE_EQ(s.prune.target_sparsity, 0.7);
	EXPECT_EQ(s.optim.mode, choice::OptimizerMode::Single);
	EXPECT_EQ(s.prune.mode, choice::PruningMode::Single);
	EXPECT_EQ(s.core.run_name, "gpt2_sgd_magnitude_70");
	EXPECT_FALSE(is_matrix(c));
	Config p = run_config(m, runs[16]); // gpt2_adamwprune_bitter7_state_90
	EXPECT_EQ(p.settings().optim.kind, choice::Optimizer::Adamwprune);
	EXPECT_EQ(p.settings().prune.method, choice::Pruning::State);
	EXPECT_EQ(p.settings().prune.adamwprune_variant, choice::AdamwpruneVariant::Bitter7);
	EXPECT_DOUBLE_EQ(p.settings().prune.target_sparsity, 0.9);
}

TEST(Matrix, EmptyMatricesSayWhy)
{
	EXPECT_NE(test::error_of([] {
			  ids("CONFIG_OPTIMIZER_MODE_MULTIPLE=y\n# CONFIG_OPTIMIZER_ENABLE_ADAMW is not set\n");
		  }).find("no optimizer enabled; set one of CONFIG_OPTIMIZER_ENABLE_SGD"),
		  std::string::npos);
	EXPECT_NE(test::error_of([] {
			  ids("CONFIG_OPTIMIZER_MODE_MULTIPLE=y\n# CONFIG_OPTIMIZER_ENABLE_ADAMW is not set\n"
			      "CONFIG_OPTIMIZER_ENABLE_ADAMWPRUNE=y\nCONFIG_PRUNING_MODE_MULTIPLE=y\n"
			      "# CONFIG_PRUNING_ENABLE_NONE is not set\n# CONFIG_PRUNING_ENABLE_MOVEMENT is not set\n");
		  }).find("every combination was filtered out"),
		  std::string::npos);
	EXPECT_NE(test::error_of([] {
			  ids("CONFIG_PRUNING_MODE_MULTIPLE=y\n# CONFIG_PRUNING_ENABLE_NONE is not set\n"
			      "# CONFIG_SPARSITY_ENABLE_50 is not set\n# CONFIG_SPARSITY_ENABLE_70 is not set\n"
			      "# CONFIG_SPARSITY_ENABLE_90 is not set\n");
		  }).find("pruning runs need a sparsity level but none is enabled; set CONFIG_SPARSITY_ENABLE_50"),
		  std::string::npos);
	EXPECT_EQ(test::error_of([] {
			  ids("CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_ADAMWPRUNE_VARIANTS=\"bitter7 bitter11\"\n");
		  }),
		  "matrix: CONFIG_ADAMWPRUNE_VARIANTS: unknown variant 'bitter11' (bitter0 .. bitter9)");
}

TEST(Stats, MeanSdAndStudentT)
{
	auto s = sample_stats({1, 2, 3, 4});
	EXPECT_EQ(s.n, 4);
	EXPECT_DOUBLE_EQ(s.mean, 2.5);
	EXPECT_NEAR(s.sd, std::sqrt(5.0 / 3.0), 1e-15); // (2.25 + 0.25 + 0.25 + 2.25) / 3
	EXPECT_EQ(sample_stats({7}).sd, 0.0);
	// I_0.7(3, 4) = sum_{j=3..6} C(6,j) 0.7^j 0.3^(6-j) = 0.18522 + 0.324135 + 0.302526 + 0.117649
	EXPECT_NEAR(incomplete_beta(3, 4, 0.7), 0.92953, 1e-12);
	EXPECT_NEAR(incomplete_beta(4, 3, 0.3), 1 - 0.92953, 1e-12);
	// df = 1 is the Cauchy distribution: quantile tan(pi (q - 1/2)); 0.975 -> 12.7062047.
	EXPECT_NEAR(student_t_quantile(0.975, 1), std::tan(M_PI * 0.475), 1e-8);
	// df = 2: closed form t = (2q - 1) sqrt(2 / (1 - (2q - 1)^2)); 0.975 -> 4.3026527.
	EXPECT_NEAR(student_t_quantile(0.975, 2), 0.95 * std::sqrt(2 / (1 - 0.95 * 0.95)), 1e-8);
	EXPECT_NEAR(student_t_quantile(0.975, 10), 2.2281388519649385, 1e-8); // tables: 2.228
	EXPECT_NEAR(student_t_quantile(0.975, 1e7), 1.959964, 1e-5);	      // the normal limit
	EXPECT_NEAR(student_t_quantile(0.025, 10), -2.2281388519649385, 1e-8);
	EXPECT_NEAR(student_t_cdf(0, 3.3), 0.5, 1e-15);
}

TEST(Stats, WelchInterval)
{
	// a = {1,2,3}: mean 2, var 1; b = {4,5,6,7}: mean 5.5, var 5/3.
	// se^2 = 1/3 + 5/12 = 0.75; df = 0.75^2 / ((1/3)^2 / 2 + (5/12)^2 / 3) = 4.959184;
	// t(0.975, 4.959184) = 2.576958; interval -3.5 -/+ 2.576958 sqrt(0.75) = [-5.731711, -1.268289].
	auto d = welch_interval({1, 2, 3}, {4, 5, 6, 7}, 0.95);
	ASSERT_TRUE(d.valid);
	EXPECT_DOUBLE_EQ(d.diff, -3.5);
	EXPECT_NEAR(d.df, 4.959183673469387, 1e-12);
	EXPECT_NEAR(d.lo, -5.7317114814479915, 1e-7);
	EXPECT_NEAR(d.hi, -1.2682885185520085, 1e-7);
	EXPECT_FALSE(welch_interval({1}, {2, 3}, 0.95).valid);
	auto z = welch_interval({1, 1}, {1, 1}, 0.95);
	EXPECT_TRUE(z.valid);
	EXPECT_EQ(z.lo, 0.0);
}

TEST(Matrix, Sweeps)
{
	auto axes = parse_sweep("# learning rates and batch sizes\nCONFIG_LEARNING_RATE=1e-3|2e-3\n"
				"CONFIG_BATCH_SIZE=2:2:6\n\nWEIGHT_DECAY=\"0:0.05:0.1\"\n",
				"r.config");
	ASSERT_EQ(axes.size(), 3u);
	EXPECT_EQ(axes[0].values, (std::vector<std::string>{"1e-3", "2e-3"}));
	EXPECT_EQ(axes[1].values, (std::vector<std::string>{"2", "4", "6"}));
	EXPECT_EQ(axes[2].values, (std::vector<std::string>{"0", "0.05", "0.1"}));
	Config base;
	auto runs = apply_sweep(base, expand_matrix(base), axes);
	ASSERT_EQ(runs.size(), 18u); // 1 run x 2 x 3 x 3
	EXPECT_EQ(runs[0].id, "gpt2_adamw_none_learning_rate-1e-3_batch_size-2_weight_decay-0");
	EXPECT_EQ(runs[17].id, "gpt2_adamw_none_learning_rate-2e-3_batch_size-6_weight_decay-0.1");
	Config c = run_config(base, runs[4]); // 1e-3, batch 4, wd 0.05
	EXPECT_EQ(c.get_int("BATCH_SIZE"), 4);
	EXPECT_DOUBLE_EQ(c.get_float("WEIGHT_DECAY"), 0.05);
	EXPECT_DOUBLE_EQ(c.get_float("LEARNING_RATE"), 1e-3);
	EXPECT_EQ(c.get_string("RUN_NAME"), runs[4].id);
	// Seeds keep their suffix after the sweep's.
	auto seeded = apply_sweep(base, expand_matrix(Config::parse("CONFIG_MATRIX_SEEDS=2\n", "m")), {axes[0]});
	ASSERT_EQ(seeded.size(), 4u);
	EXPECT_EQ(seeded[1].id, "gpt2_adamw_none_learning_rate-2e-3_s1337");
	EXPECT_EQ(seeded[1].config_id, "gpt2_adamw_none_learning_rate-2e-3");
	EXPECT_EQ(test::error_of([] { parse_sweep("CONFIG_NOPE=1|2\n", "r.config"); }),
		  "r.config:1: unknown symbol CONFIG_NOPE");
	EXPECT_EQ(test::error_of([] { parse_sweep("CONFIG_BATCH_SIZE=5:0:9\n", "r.config"); }),
		  "r.config:1: range '5:0:9' must be start:step:end with step > 0 and end >= start");
	EXPECT_NE(test::error_of([] { parse_sweep("CONFIG_BATCH_SIZE=a|b\n", "r.config"); }).find("expects an integer"),
		  std::string::npos);
	EXPECT_EQ(test::error_of([] { parse_sweep("# nothing\n", "r.config"); }), "r.config: the sweep sets no symbol");
}

TEST(Stats, CorrelationsByHand)
{
	// Pearson of (1,2,3) and (2,4,7): deviations (-1,0,1) and (-7/3,-1/3,8/3):
	// sab = 5, saa = 2, sbb = 114/9 -> 5 / sqrt(2 * 114 / 9) = 0.993399.
	const float a[] = {1, 2, 3}, b[] = {2, 4, 7};
	EXPECT_NEAR(pearson(a, b, 3), 5.0 / std::sqrt(2.0 * 114.0 / 9.0), 1e-12);
	// Ties share their average rank: (1, 2.5, 2.5, 4) against (1, 3, 2, 4):
	// sab = 4.5, saa = 4.5, sbb = 5 -> 4.5 / sqrt(22.5).
	const float c[] = {1, 2, 2, 3}, d[] = {1, 3, 2, 4};
	auto r = fractional_ranks(c, 4);
	EXPECT_EQ(r, (std::vector<double>{1, 2.5, 2.5, 4}));
	EXPECT_NEAR(spearman(c, d, 4), 4.5 / std::sqrt(22.5), 1e-12);
	// Spearman ignores monotone transforms; Pearson does not.
	const float e[] = {1, 10, 100, 1000};
	const float f[] = {1, 2, 3, 4};
	// Ranks (1, 3, 2, 4) against (1, 2, 3, 4): sab = 4, saa = sbb = 5 -> 0.8, for e as for f.
	EXPECT_NEAR(spearman(d, e, 4), 0.8, 1e-12);
	EXPECT_NEAR(spearman(d, f, 4), 0.8, 1e-12);
	EXPECT_NEAR(spearman(f, e, 4), 1.0, 1e-12);
	EXPECT_LT(pearson(f, e, 4), 0.95);
	// A constant side has no correlation.
	const float g[] = {5, 5, 5};
	EXPECT_TRUE(std::isnan(pearson(a, g, 3)));
	EXPECT_TRUE(std::isnan(spearman(a, g, 3)));
	// Top-40% of 5 = 2: {0, 1} and {2, 1} share one.
	const float h[] = {5, 4, 3, 2, 1}, k[] = {1, 4, 5, 3, 2};
	EXPECT_DOUBLE_EQ(topk_overlap(h, k, 5, 0.4), 0.5);
	EXPECT_DOUBLE_EQ(topk_overlap(h, h, 5, 0.4), 1.0);
	// Ties at the cut go to the earlier position: top-1 of (1, 1) is element 0 on both sides.
	const float t[] = {1, 1};
	EXPECT_DOUBLE_EQ(topk_overlap(t, t, 2, 0.5), 1.0);
}
