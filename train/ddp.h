// Data-parallel training on libtorch's c10d: the process layout from the standard
// environment (torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, Slurm's
// SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, or `knlp launch`), rendezvous through a
// TCPStore, a Gloo (CPU) or NCCL (GPU) process group, and the gradient synchronisation of a
// data-parallel step: gradients summed across ranks in fixed-order buckets that are sent as
// soon as the backward pass has produced them (overlapping the rest of the backward pass),
// and only on the last micro-step of an accumulation.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"

namespace knlp {

struct DdpEnv {
	int rank = 0, world = 1, local_rank = 0;
	std::string addr;
	int port = 0;
	std::string source; // "torchrun", "slurm", "none"
	// torchrun's agent already serves the rendezvous store at MASTER_ADDR:MASTER_PORT
	// (TORCHELASTIC_USE_AGENT_STORE=True): every rank connects to it as a client, under a
	// key prefix of its own per restart (TORCHELASTIC_RESTART_COUNT).
	bool agent_store = false;
	int restart = 0;
};

// The process layout of this process. Errors: WORLD_SIZE without MASTER_ADDR or
// MASTER_PORT, RANK outside [0, WORLD_SIZE), malformed numbers.
DdpEnv ddp_env();

struct DdpStats {
	int64_t syncs = 0, buckets = 0, bytes = 0;
	double comm_wait_seconds = 0; // time the step waited for all-reduces after the backward pass
	double backward_seconds = 0;  // time of the synchronised backward passes
};

class Ddp {
public:
	// Rendezvous and process group. `backend` is gloo or nccl; `digest` (of the configuration)
	// must agree on every rank or every rank fails before training.
	Ddp(const DdpEnv &env, const std::string &backend, std::chrono::milliseconds timeout,
	    const std::string &digest);
	~Ddp();
	int rank() const { return env_.rank; }
	int world() const { return env_.world; }
	const std::string &backend() const { return backend_; }

	// Rank 0's string to everyone (the run folder, the checkpoint to resume).
	std::string share(const std::string &key, const std::string &value_on_rank0);
	// Rank 0's values of `ts` to every rank, in place.
	void broadcast(std::vector<torch::Tensor> ts);
	// Element-wise sums / maxima of a small vector across ranks.
	std::vector<double> sum(const std::vector<double> &v);
	std::vector<double> max(const std::vector<double> &v);
	void barrier();
	// This rank has finished `step` (for naming a lost rank).
	void heartbeat(int64_t step);

	// Gradient synchronisation of `params` (bucket_bytes per bucket, in reverse parameter
	// order; overlap: send each bucket from the backward pass's hooks).
	void attach(const std::vector<torch::Tensor> &params, int64_t bucket_bytes, bool overlap);
	// The next backward pass is the last micro-step: its gradients are synchronised.
	void begin_sync();
	// After that backward pass: every gradient holds the sum over ranks.
	void end_sync();
	const DdpStats &stats() const { return stats_; }

	// Wraps a c10d failure into a clear error naming the lost rank where it can be found.
	[[noreturn]] void lost(const std::string &what, const std::exception &e);

private:
	std::vector<double> reduce(const std::vector<double> &v, bool max);
	struct Impl;
	std::unique_ptr<Impl> impl_;
	DdpEnv env_;
	std::string backend_;
	DdpStats stats_;
};

struct TrainRequest;

// How a trainer's run starts: one plain process, or a rank of a data-parallel launch.
struct DdpStart {
	std::unique_ptr<Ddp> ddp; // null: one plain process
	int rank = 0, world = 1;
	int local_rank = -1;	   // the rank's GPU on CUDA; -1 without a launch
	std::string run_dir, ckpt; // rank 0's run folder and checkpoint to resume, on every rank
};

// Reads the launch environment. Without a launcher (or a launch without CONFIG_DDP on one
// process) the run is plain and opens its folder itself. Under a CONFIG_DDP launch it makes
// the process group (backend by CONFIG_DDP_BACKEND_* and the device), rank 0 opens (or
// resumes) the run folder with `prefix`, and every rank gets its choice. Errors: a
// multi-process launch without CONFIG_DDP, NCCL without CUDA, rank 0 failing to open the
// folder (every rank stops with rank 0's reason).
DdpStart start_data_parallel(const TrainRequest &req, const Config &cfg, const std::string &prefix);

// Under a launcher (DdpEnv::source other than "none"), a thread that ends this process when
// its parent (knlp launch, torchrun's agent, slurmstepd) is gone. Called by
// start_data_parallel; once per process.
void watch_launcher(const DdpEnv &env);

// The process-group backends this build has (Gloo: CPU; NCCL: CUDA libtorch with nccl.h).
bool gloo_available();
bool nccl_available();

// Ranks other than 0 print nothing (one progress line and one set of messages: rank 0's).
void silence_other_ranks(int rank);

// The "ddp" record of training_metrics.json.
nlohmann::json ddp_record(const Ddp &ddp, const DdpSettings &c, int64_t global_batch, double replica_spread);

// Spread (max - min) across ranks of the sum of the module's parameters: 0 when every
// replica holds the same weights.
double replica_weight_spread(Ddp &ddp, torch::nn::Module &m);

// sha256 of the configuration text without the symbols a rank may differ in.
std::string config_digest(const Config &cfg);

// `knlp launch --nproc N -- ARGS`: N local processes of this binary with the environment of a
// torchrun launch; when one fails the others are stopped after `grace` seconds. Returns the
// exit code (the first failure's).
int launch_local(int nproc, const std::vector<std::string> &args, int port, int grace_seconds);

} // namespace knlp
