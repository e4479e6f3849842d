// The training loop, shared by every model family: start-up (data parallel, run folder, run
// record, resume, hardware monitor), the step (micro-batches, non-finite guard, pruning masks,
// gradient clip, optimizer step, pruning), evaluation and checkpoint cadence, the time budget
// and the stop every rank agrees on, metrics and the end-of-run summary.
//
// A model family (GPT-2 language model, image classifier, GraphSAGE) plugs in through
// Family: it builds its data and model, computes one micro-batch's loss, evaluates to a
// quality figure and keeps whatever extra state it needs in checkpoints. Families are listed
// in train/families.cpp, which `knlp train` dispatches through.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "train/checkpoint.h"

namespace knlp {

class Ddp;
class Optimizer;
class Pruner;
class SafetensorsFile;

struct TrainRequest {
	Config cfg;
	std::string out_dir;	// --out (empty: OUTPUT_DIR/RUN_NAME or a generated name)
	std::string resume_dir; // --resume RUN_DIR
	bool force = false;	// resume even when the configuration differs
	std::string command;	// command line, recorded in run.json
};

// `knlp train`: the family the configuration's model belongs to, trained by the loop.
// Returns the process exit code; errors the user can fix throw knlp::Error.
int train(TrainRequest req);

// Where training is. Families without epochs have one epoch as long as the run.
struct Position {
	int64_t step = 0;     // optimizer steps done
	int64_t epoch = 0;    // epochs done
	int64_t in_epoch = 0; // steps done in the current epoch
};

// What the loop hands a family.
struct RunContext {
	explicit RunContext(const Settings &s) : cfg(s) {}
	const Settings &cfg;
	torch::Device dev = torch::kCPU;
	int rank = 0, world = 1;
	int local_rank = -1; // the rank's GPU under a launcher, else -1
	uint64_t seed = 0;
	std::string run_dir;
	bool bf16 = false;	  // bf16 autocast (train/device.h resolve_precision)
	Ddp *ddp = nullptr;	  // null: one plain process
	Optimizer *opt = nullptr; // set once the model is built
	Pruner *pruner = nullptr;
	std::string last_checkpoint; // folder of the newest checkpoint ("" before the first)
	// Stops the run over a non-finite value: metrics marked failed, an error naming the last
	// good checkpoint. Never returns.
	std::function<void(const std::string &what, double value)> fail_nonfinite;
	// Appends a record to metrics.jsonl (rank 0, CONFIG_TRACKER_JSONL).
	std::function<void(const nlohmann::json &rec)> log;
	bool main_rank() const { return rank == 0; }
};

// One micro-batch's share of a step. The step's loss is sum(value) / sum(weight) over its
// micro-batches and ranks; `backprop` is what backward() runs on, already divided the way
// the family's mean needs (so gradients do not depend on how a step is split).
struct MicroLoss {
	torch::Tensor backprop; // undefined: this micro-batch adds nothing (past an epoch's end)
	torch::Tensor value;	// detached, read after the step's backward passes (no sync between)
	double weight = 0;
};

// How a family trains.
struct Cadence {
	bool epochs = false; // evaluate and checkpoint at the end of every epoch
	int64_t total_epochs = 1;
	int64_t total_steps = 0;   // the run's length (progress, schedules, pruning ramps)
	int64_t eval_interval = 0; // without epochs: evaluate every N steps, at step 0 and at the end
	int micro_batches = 1;	   // per rank and step
	double clip = 0;	   // global gradient-norm clip (0: off)
	std::string unit;	   // what throughput counts: "tokens", "images", "batches"
	double flops_per_item = 0; // training FLOPs per unit (MFU); 0: not reported
};

// The figure a family is judged by.
struct QualityMetric {
	std::string metric; // "loss", "accuracy", "pr_auc"
	std::string split;  // "val", "test"
	bool higher_is_better = false;
};

struct Evaluation {
	double quality = NAN;	 // in Quality's metric
	double train_loss = NAN; // the family's training loss at this point
	double eval_loss = NAN;	 // loss on the held-out split (NaN: the family reports none)
	nlohmann::json record;	 // named figures (val_loss, test_accuracy, ...) for the logs and history
	std::string text;	 // for the console: "train loss 1.23, val loss 1.30 (ppl 3.67)"
};

// What the loop reports to a family after a step.
struct StepOutcome {
	double loss = NAN;	   // the step's loss (sum of values / sum of weights)
	double weight = 0;	   // sum of weights over micro-batches and ranks (0: nothing trained)
	bool updated = false;	   // the optimizer stepped (not skipped as non-finite)
	std::vector<double> stats; // the family's step_stats(), summed over ranks
	double seconds = 0;	   // wall time of the step on this rank
};

// The run's end, for a family's summary.
struct RunEnd {
	std::string status; // complete, stopped_time_budget
	Position pos;
	double best = NAN; // best quality seen at an evaluation
	int64_t best_step = -1, best_epoch = -1;
	double last_quality = NAN; // at the last evaluation
};

class Family {
public:
	virtual ~Family() = default;

	// ---- identity and set-up
	virtual const char *name() const = 0;	    // "gpt2", "image", "gnn": run-folder prefix, metrics "family"
	virtual std::string model_name() const = 0; // "gpt2", "lenet5", "graphsage"
	// Data first, then (with libtorch seeded by the loop) the model, on ctx.dev.
	virtual void load_data(RunContext &ctx) = 0;
	virtual void build_model(RunContext &ctx) = 0;
	virtual torch::nn::Module &model() = 0;
	// After the replicas' weights agree and before the optimizer sees them (memory layouts).
	virtual void prepare_parameters(RunContext &ctx) {}
	virtual Cadence cadence() const = 0;
	virtual QualityMetric quality() const = 0;
	// A pruning ramp end in steps the family derives (0: CONFIG_PRUNING_RAMP_END's).
	virtual int64_t pruning_ramp_end() const { return 0; }
	// Checks needing the model and optimizer (end-of-run tools refused before training).
	virtual void check(RunContext &ctx) {}
	// One line: what is trained on what ("GPT-2 4x4x128 ctx 128 vocab 256, vanilla attention").
	virtual std::string describe() const = 0;
	// Further start-up lines (engines, recipes, layouts).
	virtual void print_setup(RunContext &ctx) {}
	// The global batch for the data-parallel banner ("4 x 2 x 2 = 16 sequences").
	virtual std::string global_batch_text(const RunContext &ctx) const = 0;
	virtual int64_t global_batch(const RunContext &ctx) const = 0;
	// Once the run is set up and resumed (files a run keeps beside its checkpoints).
	virtual void start(RunContext &ctx, bool resumed) {}
	// Which device the family trains on, given the configured one.
	virtual torch::Device device(torch::Device configured) const { return configured; }
	// Extra fields for run.json.
	virtual std::vector<std::pair<std::string, std::string>> run_record() const { return {}; }
	// Why bf16 autocast cannot run on ctx.dev once the model is built ("" where it can):
	// a bf16 choice then falls back to fp32 with a notice (or fails under _REQUIRE).
	virtual std::string bf16_unsupported(const RunContext &ctx) const
	{
		return std::string("the ") + name() + " family has no bf16 path";
	}
	// Why bf16, though it runs, would be slower than fp32 for this model ("" where it is
	// not): CONFIG_CPU_PRECISION_AUTO then trains in fp32 and says why; an explicit bf16
	// choice still gets bf16.
	virtual std::string bf16_slower(const RunContext &) const { return ""; }

	// ---- training
	virtual double learning_rate(const Position &p) const = 0;
	// Epoch families: the epoch starts (samplers, orders); steps_in_epoch after it.
	virtual void begin_epoch(RunContext &ctx, const Position &p) {}
	virtual int64_t steps_in_epoch(const Position &p) const { return cadence().total_steps; }
	// Before the step's micro-batches (data drawn for the whole step).
	virtual void begin_step(RunContext &ctx, const Position &p) {}
	// Forward and loss of this rank's micro-batch `micro` of the step at p.
	virtual MicroLoss micro_batch(RunContext &ctx, const Position &p, int micro) = 0;
	// Numbers of this rank's step the loop sums over ranks (I/O, pages): handed back in
	// StepOutcome::stats.
	virtual std::vector<double> step_stats() { return {}; }
	// Items (tokens, images, batches) the step at p trained on, over all ranks.
	virtual double step_items(const Position &p) const = 0;
	virtual void after_step(RunContext &ctx, const Position &p, const StepOutcome &o) {}
	// Extra fields of a train record in metrics.jsonl, and text for the progress line.
	virtual void train_record(nlohmann::json &rec, std::string &text) const {}

	// ---- evaluation
	virtual Evaluation evaluate(RunContext &ctx, const Position &p) = 0;
	// A quality value for people: "val loss 1.2345 (ppl 3.44)", "test accuracy 91.23%".
	virtual std::string format_quality(double q) const = 0;
	virtual void on_new_best(RunContext &ctx) {}
	// Rank 0, after an evaluation: extra fields for its metrics.jsonl record (spectra) and
	// side outputs (text samples).
	virtual void after_evaluation(RunContext &ctx, const Position &p, nlohmann::json &rec) {}
	// After an epoch's evaluation, before its checkpoint.
	virtual void end_epoch(RunContext &ctx) {}

	// ---- checkpoints: extra state next to the loop's own
	virtual void save_state(nlohmann::json &st, std::vector<NamedTensor> &tensors) const {}
	virtual void load_state(const nlohmann::json &st, const SafetensorsFile &f) {}

	// ---- the end
	// Final quality (rank 0, after the last checkpoint): the GNN tests its best weights;
	// default: the last evaluation's.
	virtual void finish(RunContext &ctx, const RunEnd &end) {}
	// The family's block of training_metrics.json, its "figures" (flat numbers and names
	// that matrix summaries tabulate) and the original's field names where its tools expect
	// them (history: the loop's evaluation records).
	virtual void metrics(nlohmann::json &j, const nlohmann::json &history, const RunEnd &end) const {}
	// End-of-run tools (Fisher scores, tiering bench, GGUF export) and closing lines.
	virtual void after_run(RunContext &ctx, const RunEnd &end) {}
	// Every rank, before the loop returns (temporary files).
	virtual void cleanup(RunContext &ctx) {}
};

// The table of families `knlp train` dispatches through (train/families.cpp).
std::unique_ptr<Family> make_family(const Settings &s);
// Name of the family a configuration trains ("gpt2", "image", "gnn").
std::string family_name(const Settings &s);

} // namespace knlp
