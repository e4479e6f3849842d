// The trainer end to end through the knlp binary: learning, exact resume (also after
// SIGKILL mid-checkpoint), refusals, NaN handling, evaluation, sampling, export.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "models/gpt2.h"
#include "testutil.h"
#include "train/checkpoint.h"
#include "train/export.h"

using namespace knlp;
using json = nlohmann::json;

namespace {

// A learnable byte corpus: sentences drawn from a small grammar.
std::string make_text(uint64_t seed, size_t bytes)
{
	const char *subj[] = {"the driver", "a module", "the scheduler", "this patch", "the kernel"};
	const char *verb[] = {" maps", " frees", " locks", " probes", " reads"};
	const char *obj[] = {" the page.\n", " a buffer.\n", " the device.\n", " memory.\n", " the queue.\n"};
	Rng r(seed);
	std::string s;
	while (s.size() < bytes)
		s += std::string(subj[r.below(5)]) + verb[r.below(5)] + obj[r.below(5)];
	return s;
}

std::string as_tokens(const std::string &text)
{
	std::string out;
	for (unsigned char c : text)
		out += std::string{char(c), '\0'};
	return out;
}

struct TrainFixture : ::testing::Test {
	test::TempDir d;
	std::string cfg;
	void SetUp() override
	{
		test::write(d / "data/train.bin", as_tokens(make_text(1, 60000)));
		test::write(d / "data/val.bin", as_tokens(make_text(2, 6000)));
		test::write(d / "data/meta.json", R"({"tokenizer": "byte", "vocab_size": 256, "eot_token": -1})");
		cfg = d / "test.config";
		test::write(
			cfg,
			"CONFIG_DEVICE_CPU=y\n"
			"CONFIG_DATA_DIR=\"" +
				d / "data" +
				"\"\n"
				"CONFIG_NUM_THREADS=2\n"
				"CONFIG_GPT2_SIZE_CUSTOM=y\nCONFIG_GPT2_N_LAYER=2\nCONFIG_GPT2_N_HEAD=2\nCONFIG_GPT2_N_"
				"EMBD=32\n"
				"CONFIG_GPT2_BLOCK_SIZE=16\nCONFIG_GPT2_DROPOUT=\"0.1\"\n"
				"CONFIG_BATCH_SIZE=4\nCONFIG_GRAD_ACCUM=2\nCONFIG_MAX_ITERS=20\nCONFIG_WARMUP_ITERS=4\n"
				"CONFIG_LEARNING_RATE=\"3e-3\"\nCONFIG_MIN_LR=\"3e-4\"\n"
				"CONFIG_EVAL_INTERVAL=10\nCONFIG_EVAL_SAMPLES=2\nCONFIG_LOG_INTERVAL=1\n"
				"CONFIG_CHECKPOINT_INTERVAL=5\nCONFIG_KEEP_CHECKPOINTS=2\nCONFIG_SAMPLE_TOKENS=8\n");
	}
	test::RunResult train(const std::string &args, const std::string &env = "")
	{
		return test::run("KNLP_PEAK_FLOPS=1e9 " + env + " " + test::knlp_bin() + " train --config " + cfg +
				 " " + args);
	}
	// Per-step records of metrics.jsonl without the timing fields: the train and eval records,
	// or (samples = true) only the sample records.
	std::vector<std::string> steps(const std::string &run, bool samples = false)
	{
		std::vector<std::string> out;
		std::istringstream in(test::slurp(run + "/metrics.jsonl"));
		std::string line;
		while (std::getline(in, line)) {
			auto j = json::parse(line);
			if ((j["type"] == "sample") != samples)
				continue;
			for (const char *k : {"throughput", "mfu", "elapsed"})
				j.erase(k);
			out.push_back(j.dump());
		}
		return out;
	}
	std::string final_weights(const std::string &run)
	{
		return test::slurp(run + "/checkpoints/iter_00000020/model.safetensors") +
		       test::slurp(run + "/checkpoints/iter_00000020/optimizer.safetensors");
	}
};

} // namespace

TEST_F(TrainFixture, LossGoesDownAndMetricsAreWritten)
{
	auto r = train("--out " + d / "run --set MAX_ITERS=60 --set EVAL_INTERVAL=30");
	ASSERT_EQ(r.status, 0) << r.output;
	auto m = json::parse(test::slurp(d / "run/training_metrics.json"));
	auto val = m["metrics"]["val_losses"];
	ASSERT_EQ(val.size(), 3u); // iterations 0, 30, 60
	EXPECT_EQ(m["metrics"]["iterations"], json({0, 30, 60}));
	EXPECT_NEAR(val[0].get<double>(), std::log(256.0), 0.3);
	EXPECT_LT(val[2].get<double>(), val[0].get<double>() - 1.5);
	EXPECT_EQ(m["final_iteration"], 60);
	EXPECT_EQ(m["status"], "complete");
	EXPECT_EQ(m["best_iteration"], 60);
	for (const char *k : {"train_losses", "val_losses", "train_perplexities", "val_perplexities", "learning_rates",
			      "timestamps", "iterations"})
		EXPECT_EQ(m["metrics"][k].size(), 3u) << k;
	EXPECT_NEAR(m["metrics"]["val_perplexities"][2].get<double>(), std::exp(val[2].get<double>()), 1e-6);
	// The run folder records what produced it.
	auto runs = json::parse(test::slurp(d / "run/run.json"));
	EXPECT_EQ(runs[0]["seed"], 1337);
	EXPECT_FALSE(runs[0]["code_version"].get<std::string>().empty());
	EXPECT_EQ(runs[0]["cpu"], cpu_info().model);
	EXPECT_NE(runs[0]["cpu"], "unknown"); // Linux has /proc/cpuinfo
	EXPECT_TRUE(std::set<std::string>({"avx512f", "avx2", "avx", "sse4_2"}).count(runs[0]["cpu_isa"]))
		<< runs[0]["cpu_isa"];
	EXPECT_NE(test::slurp(d / "run/config").find("CONFIG_GPT2_N_EMBD=32"), std::string::npos);
	EXPECT_NE(test::slurp(d / "run/samples.txt").find("=== step 60 ==="), std::string::npos);
	EXPECT_EQ(steps(d / "run").size(), 60u + 3u);
	EXPECT_EQ(steps(d / "run", true).size(), 3u * 3u); // the three default prompts at each evaluation
}

TEST_F(TrainFixture, ResumeIsBitExactAfterKills)
{
	ASSERT_EQ(train("--out " + d / "a").status, 0);
	std::string want = final_weights(d / "a");
	auto want_steps = steps(d / "a");
	ASSERT_EQ(want_steps.size(), 20u + 3u);

	// Killed between steps 12 and 13: resume from iteration 10.
	auto k = train("--out " + d / "b", "KNLP_FAULT_KILL_AT=after_step#12");
	EXPECT_EQ(k.status, 128 + 9) << k.output;
	auto r = train("--resume " + d / "b");
	ASSERT_EQ(r.status, 0) << r.output;
	EXPECT_NE(r.output.find("at step 10"), std::string::npos) << r.output;
	EXPECT_TRUE(final_weights(d / "b") == want);
	EXPECT_EQ(steps(d / "b"), want_steps);
	EXPECT_EQ(steps(d / "b", true), steps(d / "a", true)); // samples too, text for text

	// Killed in the middle of writing the model file of the checkpoint at 15 (the 5th
	// safetensors write: two per checkpoint).
	k = train("--out " + d / "c", "KNLP_FAULT_KILL_AT=safetensors_write#5");
	EXPECT_EQ(k.status, 128 + 9) << k.output;
	EXPECT_EQ(test::slurp(d / "c/checkpoints/LATEST"), "iter_00000010\n");
	r = train("--resume " + d / "c");
	ASSERT_EQ(r.status, 0) << r.output;
	EXPECT_TRUE(final_weights(d / "c") == want);
	EXPECT_EQ(steps(d / "c"), want_steps);

	// Killed after the folder was complete but before LATEST moved.
	k = train("--out " + d / "e", "KNLP_FAULT_KILL_AT=checkpoint_before_pointer#3");
	EXPECT_EQ(k.status, 128 + 9);
	r = train("--resume " + d / "e");
	ASSERT_EQ(r.status, 0) << r.output;
	EXPECT_TRUE(final_weights(d / "e") == want);

	// Killed right after the final checkpoint (the 4th: steps 5, 10, 15, 20) was in place:
	// the resumed run trains no step, and its training_metrics.json must still show the
	// last logged training loss (it once said null; tests/test_matrix.sh caught it).
	k = train("--out " + d / "f", "KNLP_FAULT_KILL_AT=checkpoint_after_pointer#4");
	EXPECT_EQ(k.status, 128 + 9) << k.output;
	r = train("--resume " + d / "f");
	ASSERT_EQ(r.status, 0) << r.output;
	EXPECT_TRUE(final_weights(d / "f") == want);
	auto pa = json::parse(test::slurp(d / "a/training_metrics.json"))["progress"];
	auto pf = json::parse(test::slurp(d / "f/training_metrics.json"))["progress"];
	EXPECT_FALSE(pa["train_loss"].is_null());
	EXPECT_EQ(pf, pa);
}

TEST_F(TrainFixture, TimeBudgetStopsWithACheckpointAndResumesExactly)
{
	ASSERT_EQ(train("--out " + d / "a").status, 0);
	// The budget runs out after step 7 (the hook stands in for a slow machine): a final
	// checkpoint at 7, status stopped_time_budget, exit 0; resuming finishes the same run.
	auto r = train("--out " + d / "t --set MAX_TIME=1000", "KNLP_FAULT_TIME_UP_AT=after_step#7");
	ASSERT_EQ(r.status, 0) << r.output;
	auto m = json::parse(test::slurp(d / "t/training_metrics.json"));
	EXPECT_EQ(m["status"], "stopped_time_budget");
	EXPECT_EQ(m["final_iteration"], 7);
	EXPECT_EQ(test::slurp(d / "t/checkpoints/LATEST"), "iter_00000007\n");
	r = train("--resume " + d / "t --set MAX_TIME=1000");
	ASSERT_EQ(r.status, 0) << r.output;
	EXPECT_EQ(json::parse(test::slurp(d / "t/training_metrics.json"))["status"], "complete");
	EXPECT_TRUE(final_weights(d / "t") == final_weights(d / "a"));
	// The same records, plus the evaluation the stop made at step 7.
	auto got = steps(d / "t");
	auto extra = std::find_if(got.begin(), got.end(), [](const std::string &l) {
		auto j = json::parse(l);
		return j["type"] == "eval" && j["step"] == 7;
	});
	ASSERT_NE(extra, got.end());
	got.erase(extra);
	EXPECT_EQ(got, steps(d / "a"));
}

TEST_F(TrainFixture, ResumeRefusesADifferentConfiguration)
{
	ASSERT_EQ(train("--out " + d / "r --set MAX_ITERS=10").status, 0);
	auto r = test::run(test::knlp_bin() + " train --resume " + d / "r" +
			   " --set LEARNING_RATE=1e-3 --set MAX_ITERS=15");
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.output.find("configuration differs from the checkpoint's: CONFIG_LEARNING_RATE (3e-3 -> 1e-3)"),
		  std::string::npos)
		<< r.output;
	// Extending MAX_ITERS alone is allowed; --force accepts other changes.
	r = test::run("KNLP_PEAK_FLOPS=1e9 " + test::knlp_bin() + " train --resume " + d / "r" +
		      " --set LEARNING_RATE=1e-3 --set MAX_ITERS=15 --force");
	EXPECT_EQ(r.status, 0) << r.output;
	// Starting over in a folder that holds a run is refused.
	r = train("--out " + d / "r");
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.output.find("already holds a run with checkpoints"), std::string::npos) << r.output;
}

TEST_F(TrainFixture, NonFiniteLossStopsAndKeepsTheLastCheckpoint)
{
	auto r = train("--out " + d / "nan --set LEARNING_RATE=1e30 --set GRAD_CLIP=0 --set WARMUP_ITERS=0 "
				      "--set CHECKPOINT_INTERVAL=1 --set MAX_ITERS=50");
	EXPECT_EQ(r.status, 1) << r.output;
	EXPECT_NE(r.output.find("non-finite"), std::string::npos) << r.output;
	EXPECT_NE(r.output.find("at step"), std::string::npos) << r.output;
	EXPECT_NE(r.output.find("last good checkpoint"), std::string::npos) << r.output;
	auto m = json::parse(test::slurp(d / "nan/training_metrics.json"));
	EXPECT_EQ(m["status"], "failed");
}

TEST_F(TrainFixture, NonFiniteStepsAreSkippedCountedAndResumeExactly)
{
	// Two micro-batches per step: the 3rd loss is the first of iteration 1.
	auto r = train("--out " + d / "stop", "KNLP_FAULT_NAN_AT=loss#3");
	EXPECT_EQ(r.status, 1) << r.output;
	EXPECT_NE(r.output.find("non-finite loss (nan) at step 1"), std::string::npos) << r.output;
	r = train("--out " + d / "s --set NONFINITE_SKIP=y", "KNLP_FAULT_NAN_AT=loss#3");
	ASSERT_EQ(r.status, 0) << r.output;
	auto m = json::parse(test::slurp(d / "s/training_metrics.json"));
	EXPECT_EQ(m["status"], "complete");
	EXPECT_EQ(m["skipped_steps"], 1);
	EXPECT_NE(test::slurp(d / "s/metrics.jsonl")
			  .find(R"({"skipped_steps":1,"step":1,"type":"skipped_step","what":"loss"})"),
		  std::string::npos);
	ASSERT_EQ(train("--out " + d / "a").status, 0);
	EXPECT_FALSE(final_weights(d / "s") == final_weights(d / "a")); // the step was really dropped
	// Killed after step 7 (checkpoint at 5), resumed: the same weights and count.
	r = train("--out " + d / "k --set NONFINITE_SKIP=y",
		  "KNLP_FAULT_NAN_AT=loss#3 KNLP_FAULT_KILL_AT=after_step#7");
	EXPECT_NE(r.status, 0);
	r = test::run("KNLP_PEAK_FLOPS=1e9 " + test::knlp_bin() + " train --resume " + d / "k");
	ASSERT_EQ(r.status, 0) << r.output;
	EXPECT_TRUE(final_weights(d / "k") == final_weights(d / "s"));
	EXPECT_EQ(json::parse(test::slurp(d / "k/training_metrics.json"))["skipped_steps"], 1);
	// A diverged run skips NONFINITE_MAX_SKIPS steps in a row, then stops.
	r = train("--out " + d / "div --set NONFINITE_SKIP=y --set NONFINITE_MAX_SKIPS=3 --set LEARNING_RATE=1e30 "
				 "--set GRAD_CLIP=0 --set WARMUP_ITERS=0");
	EXPECT_EQ(r.status, 1) << r.output;
	EXPECT_NE(r.output.find("for the 3th step in a row (CONFIG_NONFINITE_MAX_SKIPS)"), std::string::npos)
		<< r.output;
	EXPECT_EQ(json::parse(test::slurp(d / "div/training_metrics.json"))["status"], "failed");
}

TEST_F(TrainFixture, EvalSampleExport)
{
	ASSERT_EQ(train("--out " + d / "m --set MAX_ITERS=10").status, 0);
	auto e1 = test::run(test::knlp_bin() + " eval --checkpoint " + d / "m");
	auto e2 = test::run(test::knlp_bin() + " eval --checkpoint " + d / "m" + " --batch 3");
	ASSERT_EQ(e1.status, 0) << e1.output;
	auto j1 = json::parse(e1.output.substr(e1.output.find('{')));
	auto j2 = json::parse(e2.output.substr(e2.output.find('{')));
	EXPECT_EQ(j1["tokens"], make_text(2, 6000).size() - 1);			       // every target exactly once
	EXPECT_NEAR(j1["val_loss"].get<double>(), j2["val_loss"].get<double>(), 1e-5); // batching only reorders sums

	auto s1 = test::run(test::knlp_bin() + " sample --checkpoint " + d / "m" +
			    " --prompt 'the ' --tokens 20 --seed 3");
	auto s2 = test::run(test::knlp_bin() + " sample --checkpoint " + d / "m" +
			    " --prompt 'the ' --tokens 20 --seed 3");
	ASSERT_EQ(s1.status, 0) << s1.output;
	EXPECT_EQ(s1.output.substr(0, s1.output.find('[')), s2.output.substr(0, s2.output.find('[')));
	EXPECT_NE(s1.output.find("KV cache"), std::string::npos);

	auto x = test::run(test::knlp_bin() + " export --checkpoint " + d / "m" + " --format hf --out " + d / "hf");
	ASSERT_EQ(x.status, 0) << x.output;
	SafetensorsFile hf(d / "hf/model.safetensors"), own(d / "m/checkpoints/iter_00000010/model.safetensors");
	EXPECT_EQ(hf.get("wte.weight").shape, (std::vector<int64_t>{256, 32}));
	EXPECT_EQ(hf.get("wpe.weight").shape, (std::vector<int64_t>{16, 32}));
	EXPECT_EQ(hf.get("h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{32, 96}));
	EXPECT_EQ(hf.get("h.1.attn.c_proj.weight").shape, (std::vector<int64_t>{32, 32}));
	EXPECT_EQ(hf.get("h.1.mlp.c_fc.weight").shape, (std::vector<int64_t>{32, 128}));
	EXPECT_EQ(hf.get("h.1.mlp.c_proj.weight").shape, (std::vector<int64_t>{128, 32}));
	EXPECT_EQ(hf.get("ln_f.bias").shape, (std::vector<int64_t>{32}));
	EXPECT_EQ(hf.find("lm_head.weight"), nullptr);
	EXPECT_EQ(hf.tensors().size(), 2u + 2u * 12u + 2u);
	// Conv1D layout: HF [in, out] is our [out, in] transposed.
	const float *a = static_cast<const float *>(hf.get("h.0.mlp.c_fc.weight").data);
	const float *b = static_cast<const float *>(own.get("transformer.h.0.mlp.c_fc.weight").data);
	for (int i = 0; i < 32; i++)
		for (int o = 0; o < 128; o++)
			ASSERT_EQ(a[i * 128 + o], b[o * 32 + i]);
	auto cj = json::parse(test::slurp(d / "hf/config.json"));
	EXPECT_EQ(cj["model_type"], "gpt2");
	EXPECT_EQ(cj["n_embd"], 32);
	EXPECT_EQ(cj["n_layer"], 2);
	EXPECT_EQ(cj["n_positions"], 16);
	EXPECT_EQ(cj["activation_function"], "gelu");
}

TEST_F(TrainFixture, BadCheckpointsAndDataAreReported)
{
	auto r = test::run(test::knlp_bin() + " sample --checkpoint " + d / "none");
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.output.find("knlp: error: " + d / "none" + ": checkpoint folder not found"), std::string::npos)
		<< r.output;
	ASSERT_EQ(train("--out " + d / "t --set MAX_ITERS=5").status, 0);
	std::string model = d / "t/checkpoints/iter_00000005/model.safetensors";
	std::string bytes = test::slurp(model);
	test::write(model, bytes.substr(0, bytes.size() - 100));
	r = test::run(test::knlp_bin() + " eval --checkpoint " + d / "t");
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.output.find(model + ": tensor"), std::string::npos) << r.output;
	EXPECT_NE(r.output.find("truncated file"), std::string::npos) << r.output;
	// Incompatible shape: the error names the tensor.
	test::write(model, bytes);
	r = train("--resume " + d / "t --set GPT2_N_EMBD=64 --set MAX_ITERS=6 --force");
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.output.find("tensor transformer.wte.weight has shape [256, 32] but the model expects [256, 64]"),
		  std::string::npos)
		<< r.output;
	// Data smaller than one window.
	test::write(d / "data/val.bin", as_tokens("short"));
	r = train("--out " + d / "w");
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.output.find("val.bin: 5 tokens is smaller than one window of 16 + 1 tokens"), std::string::npos)
		<< r.output;
	// Missing data folder.
	r = train("--out " + d / "w2 --set DATA_DIR=" + d / "nowhere");
	EXPECT_NE(r.output.find("dataset folder not found; prepare it with `make prepare`"), std::string::npos)
		<< r.output;
}

TEST_F(TrainFixture, PruningRunsResumeBitExactWithTheirMasks)
{
	// AdamWPrune over AdamWSPAM (SPAM state, v_max, masks in the checkpoint) and movement
	// pruning (W0 in the checkpoint); killed at step 12, after pruning began at step 4.
	const std::vector<std::string> setups = {
		"--set OPTIMIZER_ADAMWPRUNE=y --set ADAMWPRUNE_BASE_ADAMWSPAM=y --set ADAMWPRUNE_VARIANT_BITTER7=y "
		"--set SPAM_INTERVAL=8 --set SPAM_WARMUP=3",
		"--set PRUNING_MOVEMENT=y"};
	int i = 0;
	for (const auto &s : setups) {
		SCOPED_TRACE(s);
		const bool state = s.find("ADAMWPRUNE") != std::string::npos;
		std::string common = s + " --set PRUNING_TARGET_SPARSITY=0.6 --set PRUNING_WARMUP=4 "
					 "--set PRUNING_FREQUENCY=3 --set PRUNING_RAMP_END=14";
		std::string a = d / ("pa" + std::to_string(i)), b = d / ("pb" + std::to_string(i));
		i++;
		auto r = train("--out " + a + " " + common);
		ASSERT_EQ(r.status, 0) << r.output;
		EXPECT_NE(r.output.find("sparsity 60.0%"), std::string::npos) << r.output;
		auto k = train("--out " + b + " " + common, "KNLP_FAULT_KILL_AT=after_step#12");
		EXPECT_EQ(k.status, 128 + 9) << k.output;
		r = train("--resume " + b + " " + common);
		ASSERT_EQ(r.status, 0) << r.output;
		EXPECT_TRUE(final_weights(b) == final_weights(a));
		EXPECT_EQ(steps(b), steps(a));

		auto m = json::parse(test::slurp(a + "/training_metrics.json"));
		EXPECT_NEAR(m["pruning"]["final_sparsity"].get<double>(), 0.6, 1e-3);
		EXPECT_EQ(m["pruning"]["mask_bytes"], m["pruning"]["prunable_parameters"]);
		EXPECT_EQ(m["pruning"]["prunable_parameters"], 256 * 32 + 2 * 12 * 32 * 32);
		// In the final checkpoint every masked-off weight is exactly zero, and so are m and v
		// under state pruning.
		SafetensorsFile model(a + "/checkpoints/iter_00000020/model.safetensors");
		SafetensorsFile opt(a + "/checkpoints/iter_00000020/optimizer.safetensors");
		int64_t off = 0;
		for (const auto &t : opt.tensors()) {
			if (t.name.rfind("mask.", 0) != 0)
				continue;
			std::string p = t.name.substr(5);
			const auto *mask = static_cast<const uint8_t *>(t.data);
			const auto *w = static_cast<const float *>(model.get(p).data);
			const float *mv = static_cast<const float *>(opt.get("exp_avg." + p).data);
			const float *vv = static_cast<const float *>(opt.get("exp_avg_sq." + p).data);
			for (uint64_t j = 0; j < t.nbytes; j++)
				if (!mask[j]) {
					off++;
					ASSERT_EQ(w[j], 0.0f) << p << " " << j;
					if (state)
						ASSERT_TRUE(mv[j] == 0.0f && vv[j] == 0.0f) << p << " " << j;
				}
		}
		EXPECT_EQ(off, std::llround(0.6 * (256 * 32 + 2 * 12 * 32 * 32)));
	}
}

TEST_F(TrainFixture, PruningBadInputFailsBeforeTraining)
{
	struct Case {
		std::string set, message;
	};
	for (const auto &c : std::vector<Case>{
		     {"--set PRUNING_MAGNITUDE=y --set PRUNING_TARGET_SPARSITY=1.0",
		      "--set: CONFIG_PRUNING_TARGET_SPARSITY=1.0 is outside its range [0, 1)"},
		     {"--set PRUNING_MAGNITUDE=y --set PRUNING_WARMUP=10 --set PRUNING_RAMP_END=5",
		      "pruning: CONFIG_PRUNING_RAMP_END (5) must come after CONFIG_PRUNING_WARMUP (10)"},
		     {"--set OPTIMIZER_SGD=y --set PRUNING_STATE=y",
		      "pruning: CONFIG_PRUNING_STATE needs an optimizer that keeps a second moment; sgd keeps none"},
		     {"--set OPTIMIZER_SINKGD=y --set PRUNING_STATE=y",
		      "pruning: CONFIG_PRUNING_STATE needs an optimizer that keeps a second moment; sinkgd keeps none"},
		     {"--set ADAMWPRUNE_VARIANT_BITTER10=y", "unknown symbol CONFIG_ADAMWPRUNE_VARIANT_BITTER10"}}) {
		auto r = train("--out " + d / "bad " + c.set);
		EXPECT_EQ(r.status, 1) << c.set;
		EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
		EXPECT_EQ(r.output.find("step 0"), std::string::npos) << r.output; // nothing trained
		EXPECT_FALSE(std::filesystem::exists(d / "bad/checkpoints"));
	}
}
