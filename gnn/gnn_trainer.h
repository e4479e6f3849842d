// The GNN trainer: `knlp train` on a GraphSAGE configuration. Loads or generates the graph,
// builds the feature layout, samples mini-batches (neighbour, page or FIM-weighted page
// batches) on background threads, reads each batch's features through the page store,
// trains with the shared optimizer engine, evaluates the full graph every epoch and reports
// fraud-detection quality next to modelled and measured read amplification.
#pragma once
#include <string>

#include "core/config.h"
#include "gnn/graph.h"
#include "gnn/sampler.h"
#include "train/lm_trainer.h"

namespace knlp {

bool is_gnn_config(const Config &cfg);
int train_gnn(TrainRequest req);

// The configured graph (synthetic or .npz), features z-scored.
Graph load_gnn_graph(const Config &cfg);
std::string gnn_layout_name(const Config &cfg);  // identity, random, bfs, metis, rcm, file
std::string gnn_sampler_name(const Config &cfg); // neighbor, page, fim
// The sampler settings of a configuration (CONFIG_GNN_FANOUT parsed and checked).
SamplerOptions gnn_sampler_options(const Config &cfg);

} // namespace knlp
