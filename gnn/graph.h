// Graphs for page-aware GNN training: the DGraphFin schema (x [N,F], y [N], edge_index [E,2],
// train/valid/test index arrays) read from .npz or generated synthetically with the same
// schema, features z-scored per column, CSR adjacency.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace knlp {

struct Graph {
	int64_t n = 0;				 // nodes
	int features = 0;			 // F
	std::vector<float> x;			 // [n, F], row-major
	std::vector<int64_t> y;			 // [n]: 0 normal, 1 fraud, 2/3 background
	std::vector<int64_t> src, dst;		 // directed edges src -> dst
	std::vector<int64_t> train, valid, test; // node ids, labels in {0, 1}
	std::string origin;			 // file name or "synthetic(N, seed)"
	int64_t edges() const { return static_cast<int64_t>(src.size()); }
};

// Read a DGraphFin-style .npz. Split arrays may be index arrays or boolean masks of length N.
// Errors name the file and the key (missing key, wrong dtype or shape, ids out of range,
// labels outside {0, 1} in a split, an empty train split).
Graph load_graph_npz(const std::string &path);
void save_graph_npz(const std::string &path, const Graph &g);

// A synthetic graph with DGraphFin's schema and proportions: 17 features, ~1.16 directed
// edges per node, ~67% background nodes, ~1.3% fraud among the labelled, 70/15/15 splits of
// the labelled nodes; communities with their own feature centres, fraud rings (dense among
// themselves, shifted features), heavy-tailed degrees, ~3% isolates, and node ids that keep
// half of the community order (weak id locality, as registration-ordered ids have).
Graph synth_graph(int64_t nodes, uint64_t seed);

// z-score every feature column in place (constant columns become 0). Returns mean and sd.
void zscore_columns(Graph &g, std::vector<double> *mean = nullptr, std::vector<double> *sd = nullptr);

// Compressed sparse rows: the neighbours of v are col[ptr[v] .. ptr[v+1]).
struct Csr {
	std::vector<int64_t> ptr, col;
	int64_t degree(int64_t v) const { return ptr[size_t(v) + 1] - ptr[size_t(v)]; }
};
// In-neighbours (messages flow src -> dst); with `symmetric` every edge in both directions.
// Self loops and repeated edges are dropped; each row sorted.
Csr build_csr(const Graph &g, bool symmetric);
std::vector<int64_t> in_degrees(const Graph &g);

} // namespace knlp
