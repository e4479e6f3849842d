// GraphSAGE's family of the training loop (gnn/gnn_family.cpp) and the pieces other commands
// share with it: the configured graph and the sampler settings.
#pragma once
#include "core/settings.h"
#include "gnn/graph.h"
#include "gnn/sampler.h"

namespace knlp {

// The configured graph (synthetic or .npz), features z-scored.
Graph load_gnn_graph(const GnnSettings &c);
// The sampler settings of a configuration (CONFIG_GNN_FANOUT parsed and checked).
SamplerOptions gnn_sampler_options(const Settings &s);

} // namespace knlp
