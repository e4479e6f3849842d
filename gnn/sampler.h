// Mini-batch samplers for GraphSAGE, with the read-amplification model of page-based storage.
// A batch is a subgraph (global node ids, local edge list, supervised local nodes); both
// layers run over its edges. Batches are pure functions of (seed, epoch, batch index) and,
// for the FIM sampler, the importance scores, so they can be built on several threads and
// resumed exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gnn/graph.h"
#include "gnn/layout.h"

namespace knlp {

struct GnnBatch {
	std::vector<int64_t> nodes;	 // global ids; local id = index
	std::vector<int64_t> esrc, edst; // local edges, messages esrc -> edst
	std::vector<int64_t> supervised; // local ids carrying the loss
	int64_t pages_touched = 0;	 // distinct pages of `nodes` (page(v) of the spec)
	int64_t core = 0;		 // page samplers: nodes on the chosen pages
};

struct SamplerOptions {
	std::string kind = "neighbor";	    // neighbor, page, fim
	std::vector<int64_t> fanout{10, 5}; // neighbor: per hop
	int64_t batch_seeds = 1024;	    // neighbor: train seeds per batch
	int64_t pages_per_batch = 32;	    // page, fim
	int64_t hops = 2;		    // page, fim: boundary expansion hops
	double budget = 0.2;		    // page, fim: boundary nodes as a fraction of the core
	double fim_ema = 0.9;		    // fim: EMA factor of the squared hidden gradients
	uint64_t seed = 0;
};

class Sampler {
public:
	Sampler(const Graph &g, const Csr &adj, const Layout &l, const PageGeometry &geo, SamplerOptions o);
	// Shuffle for `epoch` (call before make(); make() is then thread-safe).
	void prepare_epoch(int64_t epoch);
	int64_t batches() const;
	GnnBatch make(int64_t b) const;
	const SamplerOptions &options() const { return o_; }
	// fim: importance s(v) (EMA of the squared hidden-layer gradient norm), updated by the trainer.
	std::vector<float> &importance() { return importance_; }
	void update_importance(const std::vector<int64_t> &nodes, const float *sq_grad);

private:
	void boundary(GnnBatch &b, std::vector<int32_t> &local, uint64_t rng_seed) const;
	const Graph &g_;
	const Csr &adj_;
	const Layout &l_;
	PageGeometry geo_;
	SamplerOptions o_;
	int64_t epoch_ = -1;
	std::vector<int64_t> perm_; // neighbor: train nodes; page: train pages (this epoch)
	std::vector<int64_t> train_pages_;
	std::vector<uint8_t> is_train_;
	std::vector<float> importance_;
};

std::unique_ptr<Sampler> make_sampler(const Graph &g, const Csr &adj, const Layout &l, const PageGeometry &geo,
				      const SamplerOptions &o);

} // namespace knlp
