#include "gnn/layout.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"
#include "gnn/npz.h"

#ifdef KNLP_HAVE_METIS
#include <metis.h>
#endif

namespace knlp {

namespace {

// Fill slots from `next` onwards with the nodes of `cand` (in priority order), one page at a
// time: each page starts a BFS at the highest-priority unplaced candidate and takes the nodes
// it discovers (restricted to `allowed` when given) until the page is full; when the BFS runs
// dry the next unplaced candidate continues the same page.
void bfs_pages(const Csr &sym, const std::vector<int64_t> &cand, const PageGeometry &geo,
	       const std::vector<int64_t> *part, int64_t part_id, std::vector<uint8_t> &placed,
	       std::vector<int64_t> &order)
{
	size_t ci = 0;
	std::vector<int64_t> queue;
	auto allowed = [&](int64_t v) { return !part || (*part)[size_t(v)] == part_id; };
	while (true) {
		while (ci < cand.size() && placed[size_t(cand[ci])])
			ci++;
		if (ci == cand.size())
			return;
		const int64_t page = geo.page_of_slot(int64_t(order.size()));
		queue.clear();
		size_t head = 0;
		auto place = [&](int64_t v) {
			placed[size_t(v)] = 1;
			order.push_back(v);
			queue.push_back(v);
		};
		place(cand[ci]);
		while (geo.page_of_slot(int64_t(order.size())) == page) {
			if (head == queue.size()) { // BFS ran dry: the next candidate continues this page
				while (ci < cand.size() && placed[size_t(cand[ci])])
					ci++;
				if (ci == cand.size())
					return;
				place(cand[ci]);
				continue;
			}
			int64_t u = queue[head++];
			for (int64_t k = sym.ptr[size_t(u)]; k < sym.ptr[size_t(u) + 1]; k++) {
				int64_t w = sym.col[size_t(k)];
				if (placed[size_t(w)] || !allowed(w))
					continue;
				place(w);
				if (geo.page_of_slot(int64_t(order.size())) != page)
					break;
			}
		}
	}
}

std::vector<int64_t> by_in_degree(const Graph &g, const std::vector<int64_t> &nodes)
{
	auto deg = in_degrees(g);
	std::vector<int64_t> c = nodes;
	std::stable_sort(c.begin(), c.end(), [&](int64_t a, int64_t b) { return deg[size_t(a)] > deg[size_t(b)]; });
	return c;
}

} // namespace

const std::vector<std::string> &layout_methods()
{
	static const std::vector<std::string> m = {"identity", "random", "bfs", "metis", "rcm"};
	return m;
}

bool have_metis()
{
#ifdef KNLP_HAVE_METIS
	return true;
#else
	return false;
#endif
}

// One switch over the layout methods, each a few lines, sharing the page geometry and the
// timing around them.
Layout build_layout(const std::string &method, const Graph &g, const Csr &sym, const PageGeometry &geo, uint64_t seed,
		    int64_t metis_parts)
{
	auto t0 = std::chrono::steady_clock::now();
	Layout l;
	l.method = method;
	const int64_t n = g.n;
	std::vector<int64_t> order;
	order.reserve(size_t(n));
	if (method == "identity") {
		order.resize(size_t(n));
		std::iota(order.begin(), order.end(), 0);
	} else if (method == "random") {
		order.resize(size_t(n));
		std::iota(order.begin(), order.end(), 0);
		Rng r(seed ^ 0x6c61796f7574ULL);
		for (size_t i = order.size(); i > 1; i--)
			std::swap(order[i - 1], order[r.below(i)]);
	} else if (method == "bfs") {
		std::vector<int64_t> all(static_cast<size_t>(n));
		std::iota(all.begin(), all.end(), 0);
		std::vector<uint8_t> placed(static_cast<size_t>(n));
		bfs_pages(sym, by_in_degree(g, all), geo, nullptr, 0, placed, order);
	} else if (method == "metis") {
#ifdef KNLP_HAVE_METIS
		int64_t parts = metis_parts > 0 ? std::min(metis_parts, n) : std::clamp<int64_t>(n / 3700, 2, 1000);
		l.parts = parts;
		std::vector<idx_t> xadj(static_cast<size_t>(n + 1)), adj(sym.col.size()), part(static_cast<size_t>(n));
		if (sym.col.size() > size_t(std::numeric_limits<idx_t>::max()))
			fail("gnn layout metis: {} adjacency entries exceed METIS's 32-bit index type", sym.col.size());
		for (int64_t v = 0; v <= n; v++)
			xadj[size_t(v)] = idx_t(sym.ptr[size_t(v)]);
		for (size_t k = 0; k < sym.col.size(); k++)
			adj[k] = idx_t(sym.col[k]);
		idx_t nv = idx_t(n), ncon = 1, np = idx_t(parts), objval = 0;
		idx_t options[METIS_NOPTIONS];
		METIS_SetDefaultOptions(options);
		options[METIS_OPTION_SEED] = idx_t(seed & 0x7fffffff);
		// METIS divides by zero for a single part (SIGFPE): one part is the whole graph.
		int rc = parts == 1
				 ? METIS_OK
				 : METIS_PartGraphKway(&nv, &ncon, xadj.data(), adj.data(), nullptr, nullptr, nullptr,
						       &np, nullptr, nullptr, options, &objval, part.data());
		if (rc != METIS_OK)
			fail("gnn layout metis: METIS_PartGraphKway failed (code {}) on {} nodes, {} parts", rc, n,
			     parts);
		std::vector<int64_t> p64(part.begin(), part.end());
		std::vector<std::vector<int64_t>> members(static_cast<size_t>(parts));
		for (int64_t v = 0; v < n; v++)
			members[size_t(p64[size_t(v)])].push_back(v);
		std::vector<uint8_t> placed(static_cast<size_t>(n));
		for (int64_t p = 0; p < parts; p++)
			bfs_pages(sym, by_in_degree(g, members[size_t(p)]), geo, &p64, p, placed, order);
#else
		(void)metis_parts;
		fail("gnn layout metis: knlp was built without METIS (install libmetis-dev and rebuild)");
#endif
	} else if (method == "rcm") {
		std::vector<uint8_t> seen(static_cast<size_t>(n));
		std::vector<int64_t> nodes(static_cast<size_t>(n));
		std::iota(nodes.begin(), nodes.end(), 0);
		std::stable_sort(nodes.begin(), nodes.end(),
				 [&](int64_t a, int64_t b) { return sym.degree(a) < sym.degree(b); });
		std::vector<int64_t> nb;
		for (int64_t s : nodes) {
			if (seen[size_t(s)])
				continue;
			size_t head = order.size();
			seen[size_t(s)] = 1;
			order.push_back(s);
			while (head < order.size()) {
				int64_t u = order[head++];
				nb.clear();
				for (int64_t k = sym.ptr[size_t(u)]; k < sym.ptr[size_t(u) + 1]; k++)
					if (!seen[size_t(sym.col[size_t(k)])])
						nb.push_back(sym.col[size_t(k)]);
				std::stable_sort(nb.begin(), nb.end(),
						 [&](int64_t a, int64_t b) { return sym.degree(a) < sym.degree(b); });
				for (int64_t w : nb)
					seen[size_t(w)] = 1, order.push_back(w);
			}
		}
		std::reverse(order.begin(), order.end());
	} else {
		fail("gnn layout: unknown method '{}' (identity, random, bfs, metis, rcm)", method);
	}
	if (int64_t(order.size()) != n)
		fail("gnn layout {}: internal error, placed {} of {} nodes", method, order.size(), n);
	l.order = std::move(order);
	l.pos.assign(size_t(n), -1);
	for (int64_t s = 0; s < n; s++)
		l.pos[size_t(l.order[size_t(s)])] = s;
	l.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	return l;
}

void save_layout(const std::string &path, const Layout &l)
{
	std::map<std::string, NpyArray> a;
	const int64_t n = int64_t(l.pos.size());
	a["pos"] = make_npy_i64(l.pos, {n});
	a["order"] = make_npy_i64(l.order, {n});
	write_npz(path, a);
}

Layout load_layout(const std::string &path, int64_t n)
{
	auto a = read_npz(path);
	Layout l;
	l.method = "file";
	for (const char *k : {"pos", "order"}) {
		auto it = a.find(k);
		if (it == a.end())
			fail("{}: missing key '{}' (a layout holds pos: node -> slot and order: slot -> node)", path,
			     k);
		if (it->second.shape.size() != 1 || it->second.shape[0] != n)
			fail("{}: key '{}' must have shape ({},) for this graph", path, k, n);
		if (it->second.kind != 'i' && it->second.kind != 'u')
			fail("{}: key '{}' has dtype {}; expected integers", path, k, it->second.dtype());
	}
	l.pos = a.at("pos").as_int64(path + ": key 'pos'");
	l.order = a.at("order").as_int64(path + ": key 'order'");
	for (int64_t s = 0; s < n; s++) {
		int64_t v = l.order[size_t(s)];
		if (v < 0 || v >= n)
			fail("{}: key 'order': slot {} names node {}, outside [0, {})", path, s, v, n);
		if (l.pos[size_t(v)] != s)
			fail("{}: keys 'pos' and 'order' disagree: order[{}] = {} but pos[{}] = {} (pos must map node "
			     "-> slot, "
			     "order slot -> node)",
			     path, s, v, v, l.pos[size_t(v)]);
	}
	return l;
}

double neighbour_page_spread(const Csr &sym, const Layout &l, const PageGeometry &geo)
{
	const int64_t n = int64_t(l.pos.size());
	double total = 0;
	int64_t counted = 0;
	std::vector<int64_t> pages;
	for (int64_t v = 0; v < n; v++) {
		if (sym.degree(v) == 0)
			continue;
		pages.clear();
		for (int64_t k = sym.ptr[size_t(v)]; k < sym.ptr[size_t(v) + 1]; k++)
			pages.push_back(geo.page_of_slot(l.pos[size_t(sym.col[size_t(k)])]));
		std::sort(pages.begin(), pages.end());
		total += double(std::unique(pages.begin(), pages.end()) - pages.begin());
		counted++;
	}
	return counted ? total / double(counted) : 0.0;
}

} // namespace knlp
