// Storage layouts of node features: pos(v) is the storage slot of node v, order[s] the node
// in slot s (the inverse permutation; files store both and the loader checks they agree).
// With records of `record_bytes` (17 fp32 = 68 in DGraphFin) packed into pages of
// `page_bytes` (4096), page(v) = floor(pos(v) * record_bytes / page_bytes).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gnn/graph.h"

namespace knlp {

struct PageGeometry {
	int64_t record_bytes = 68, page_bytes = 4096;
	int64_t page_of_slot(int64_t s) const { return s * record_bytes / page_bytes; }
	// Slots [first, last) of page p, clipped to n.
	int64_t first_slot(int64_t p) const { return (p * page_bytes + record_bytes - 1) / record_bytes; }
	int64_t pages(int64_t n) const { return n == 0 ? 0 : page_of_slot(n - 1) + 1; }
};

struct Layout {
	std::string method;
	std::vector<int64_t> pos, order;
	double build_seconds = 0;
	int64_t parts = 0; // METIS parts (0 for other methods)
};

// Methods: identity, random (seeded), bfs (pages filled by BFS from the unplaced node of highest
// in-degree), metis (METIS k-way on the symmetrised graph, then BFS pages inside each part;
// parts = 0 picks clamp(n / 3700, 2, 1000), which is 1000 on DGraphFin), rcm (reverse
// Cuthill-McKee). `sym` is the symmetrised CSR of g.
Layout build_layout(const std::string &method, const Graph &g, const Csr &sym, const PageGeometry &geo, uint64_t seed,
		    int64_t metis_parts = 0);
const std::vector<std::string> &layout_methods();
bool have_metis();

void save_layout(const std::string &path, const Layout &l);
Layout load_layout(const std::string &path, int64_t n);

// The mean number of distinct pages holding a node's symmetrised neighbours (a quick locality
// figure; lower is better).
double neighbour_page_spread(const Csr &sym, const Layout &l, const PageGeometry &geo);

} // namespace knlp
