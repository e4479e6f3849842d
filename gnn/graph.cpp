#include "gnn/graph.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"
#include "gnn/npz.h"

namespace knlp {

namespace {

const NpyArray &need(const std::map<std::string, NpyArray> &a, const std::string &path, const std::string &key)
{
	auto it = a.find(key);
	if (it == a.end()) {
		std::string have;
		for (const auto &[k, v] : a)
			have += (have.empty() ? "" : ", ") + k;
		fail("{}: missing key '{}' (the archive holds: {})", path, key, have.empty() ? "nothing" : have);
	}
	return it->second;
}

std::string shape_str(const NpyArray &a)
{
	std::string s = "(";
	for (size_t i = 0; i < a.shape.size(); i++)
		s += (i ? ", " : "") + std::to_string(a.shape[i]);
	return s + (a.shape.size() == 1 ? ",)" : ")");
}

std::vector<int64_t> split_nodes(const std::map<std::string, NpyArray> &a, const std::string &path,
				 const std::vector<std::string> &keys, const Graph &g)
{
	std::string key;
	for (const auto &k : keys)
		if (a.count(k)) {
			key = k;
			break;
		}
	if (key.empty())
		need(a, path, keys[0]);
	const NpyArray &m = a.at(key);
	const std::string what = fmt::format("{}: key '{}'", path, key);
	if (m.shape.size() != 1)
		fail("{} must be 1-D, has shape {}", what, shape_str(m));
	std::vector<int64_t> ids;
	if (m.kind == 'b') {
		if (m.shape[0] != g.n)
			fail("{} is a boolean mask of length {}, expected {} (the number of nodes)", what, m.shape[0],
			     g.n);
		for (int64_t v = 0; v < g.n; v++)
			if (m.data[size_t(v)])
				ids.push_back(v);
	} else if (m.kind == 'i' || m.kind == 'u') {
		ids = m.as_int64(what);
		for (size_t i = 0; i < ids.size(); i++)
			if (ids[i] < 0 || ids[i] >= g.n)
				fail("{}: node id {} at position {} is outside [0, {})", what, ids[i], i, g.n);
	} else {
		fail("{} has dtype {}; expected integer node ids or a boolean mask", what, m.dtype());
	}
	for (auto v : ids)
		if (g.y[size_t(v)] != 0 && g.y[size_t(v)] != 1)
			fail("{}: node {} has label {}; split nodes must be labelled 0 or 1", what, v, g.y[size_t(v)]);
	return ids;
}

} // namespace

Graph load_graph_npz(const std::string &path)
{
	auto a = read_npz(path);
	Graph g;
	g.origin = path;
	const NpyArray &x = need(a, path, "x");
	if (x.shape.size() != 2 || x.shape[0] == 0 || x.shape[1] == 0)
		fail("{}: key 'x' must be a non-empty 2-D array [N, F], has shape {}", path, shape_str(x));
	if (x.kind != 'f')
		fail("{}: key 'x' has dtype {}; expected float32 or float64 features", path, x.dtype());
	g.n = x.shape[0];
	g.features = static_cast<int>(x.shape[1]);
	g.x = x.as_float(path + ": key 'x'");
	for (size_t i = 0; i < g.x.size(); i++)
		if (!std::isfinite(g.x[i]))
			fail("{}: key 'x' holds a non-finite value at node {}, feature {}", path,
			     int64_t(i) / g.features, int64_t(i) % g.features);
	const NpyArray &y = need(a, path, "y");
	if (y.shape.size() != 1 || y.shape[0] != g.n)
		fail("{}: key 'y' must have shape ({},), has shape {}", path, g.n, shape_str(y));
	if (y.kind == 'b')
		fail("{}: key 'y' has dtype {}; expected integer labels", path, y.dtype());
	g.y = y.as_int64(path + ": key 'y'");
	const NpyArray &e = need(a, path, "edge_index");
	if (e.shape.size() != 2 || e.shape[1] != 2)
		fail("{}: key 'edge_index' must have shape (E, 2), has shape {}", path, shape_str(e));
	if (e.kind != 'i' && e.kind != 'u')
		fail("{}: key 'edge_index' has dtype {}; expected integer node ids", path, e.dtype());
	auto ev = e.as_int64(path + ": key 'edge_index'");
	const size_t E = size_t(e.shape[0]);
	g.src.resize(E), g.dst.resize(E);
	for (size_t i = 0; i < E; i++) {
		g.src[i] = ev[2 * i], g.dst[i] = ev[2 * i + 1];
		for (int64_t v : {g.src[i], g.dst[i]})
			if (v < 0 || v >= g.n)
				fail("{}: key 'edge_index': edge {} names node {}, outside [0, {})", path, i, v, g.n);
	}
	g.train = split_nodes(a, path, {"train_mask", "train_idx", "train"}, g);
	g.valid = split_nodes(a, path, {"valid_mask", "val_mask", "valid_idx", "valid"}, g);
	g.test = split_nodes(a, path, {"test_mask", "test_idx", "test"}, g);
	for (auto *s : {&g.train, &g.valid, &g.test}) {
		std::sort(s->begin(), s->end());
		s->erase(std::unique(s->begin(), s->end()), s->end());
	}
	auto overlap = [&](const std::vector<int64_t> &a, const std::vector<int64_t> &b, const char *na,
			   const char *nb) {
		std::vector<int64_t> both;
		std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
		if (!both.empty())
			fail("{}: keys '{}' and '{}' share {} nodes (first: {}); the splits must be disjoint", path, na,
			     nb, both.size(), both[0]);
	};
	overlap(g.train, g.valid, "train_mask", "valid_mask");
	overlap(g.train, g.test, "train_mask", "test_mask");
	overlap(g.valid, g.test, "valid_mask", "test_mask");
	if (g.train.empty())
		fail("{}: key 'train_mask': the train split is empty", path);
	if (g.valid.empty())
		fail("{}: key 'valid_mask': the validation split is empty", path);
	if (g.test.empty())
		fail("{}: key 'test_mask': the test split is empty", path);
	return g;
}

void save_graph_npz(const std::string &path, const Graph &g)
{
	std::vector<int64_t> ei(size_t(2 * g.edges()));
	for (int64_t i = 0; i < g.edges(); i++)
		ei[size_t(2 * i)] = g.src[size_t(i)], ei[size_t(2 * i + 1)] = g.dst[size_t(i)];
	std::map<std::string, NpyArray> a;
	a["x"] = make_npy_f32(g.x, {g.n, g.features});
	a["y"] = make_npy_i64(g.y, {g.n});
	a["edge_index"] = make_npy_i64(ei, {g.edges(), 2});
	a["train_mask"] = make_npy_i64(g.train, {int64_t(g.train.size())});
	a["valid_mask"] = make_npy_i64(g.valid, {int64_t(g.valid.size())});
	a["test_mask"] = make_npy_i64(g.test, {int64_t(g.test.size())});
	write_npz(path, a);
}

namespace {

double normal(Rng &r)
{
	double u1 = std::max(r.uniform(), 1e-300), u2 = r.uniform();
	return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

} // namespace

// One recipe read top to bottom (communities, roles, features, edges, ids, splits), each
// step drawing from the same generator: split up, the draw order would be harder to see.
Graph synth_graph(int64_t nodes, uint64_t seed)
{
	if (nodes < 1000)
		fail("gnn synth: --nodes must be at least 1000 (got {})", nodes);
	Rng r(seed * 0x9e3779b97f4a7c15ULL + 17);
	const int F = 17;
	Graph g;
	g.n = nodes;
	g.features = F;
	g.origin = fmt::format("synthetic({}, seed {})", nodes, seed);
	// Communities in internal order: heavy-tailed sizes around 80.
	std::vector<int64_t> comm(static_cast<size_t>(nodes)), cstart;
	for (int64_t v = 0; v < nodes;) {
		int64_t size = std::max<int64_t>(8, std::llround(60 * std::exp(0.8 * normal(r))));
		size = std::min(size, nodes - v);
		cstart.push_back(v);
		for (int64_t i = 0; i < size; i++)
			comm[size_t(v + i)] = int64_t(cstart.size()) - 1;
		v += size;
	}
	cstart.push_back(nodes);
	const int64_t C = int64_t(cstart.size()) - 1;
	// Roles: isolates (no edges), background (label 2 or 3), labelled normal; fraud rings.
	std::vector<uint8_t> isolate(static_cast<size_t>(nodes));
	std::vector<int64_t> label(static_cast<size_t>(nodes));
	std::vector<double> w(static_cast<size_t>(nodes));
	for (int64_t v = 0; v < nodes; v++) {
		isolate[size_t(v)] = r.uniform() < 0.03;
		label[size_t(v)] = r.uniform() < 0.67 ? (r.uniform() < 0.9 ? 2 : 3) : 0;
		w[size_t(v)] = 1.0 / std::pow(std::max(r.uniform(), 1e-12), 0.5); // Pareto(2) activity
	}
	std::vector<std::vector<int64_t>> rings;
	int64_t fraud = 0, target_fraud = std::max<int64_t>(8, std::llround(0.0042 * double(nodes)));
	while (fraud < target_fraud) {
		int64_t c = int64_t(r.below(uint64_t(C)));
		int64_t b = cstart[size_t(c)], sz = cstart[size_t(c) + 1] - b;
		int64_t k = std::min<int64_t>(sz, 4 + int64_t(r.below(9)));
		std::vector<int64_t> ring;
		for (int64_t i = 0; i < k; i++) {
			int64_t v = b + int64_t(r.below(uint64_t(sz)));
			if (label[size_t(v)] == 1)
				continue;
			label[size_t(v)] = 1, isolate[size_t(v)] = 0, fraud++;
			ring.push_back(v);
		}
		if (ring.size() >= 2)
			rings.push_back(ring);
	}
	// Features: community centre + node noise; fraud and background shifted on a few columns.
	std::vector<double> centre(size_t(C * F));
	for (auto &c : centre)
		c = 0.6 * normal(r);
	g.x.resize(size_t(nodes * F));
	for (int64_t v = 0; v < nodes; v++)
		for (int f = 0; f < F; f++) {
			double val = centre[size_t(comm[size_t(v)] * F + f)] + normal(r);
			if (label[size_t(v)] == 1 && f < 5)
				val += 0.45;
			if (label[size_t(v)] == 1 && f == 5)
				val -= 0.45;
			if (label[size_t(v)] >= 2 && f == 16)
				val += 1.5;
			if (f == 6) // a skewed, count-like column
				val = std::floor(std::exp(0.5 * val));
			g.x[size_t(v * F + f)] = float(val);
		}
	// Edges: ~1.16 out-edges per active node, 75% inside the community; targets chosen by the
	// best of three draws by activity (heavy-tailed in-degrees).
	auto pick = [&](int64_t lo, int64_t hi) {
		int64_t best = -1;
		for (int t = 0; t < 3; t++) {
			int64_t u = lo + int64_t(r.below(uint64_t(hi - lo)));
			if (isolate[size_t(u)])
				continue;
			if (best < 0 || w[size_t(u)] > w[size_t(best)])
				best = u;
		}
		return best;
	};
	for (int64_t v = 0; v < nodes; v++) {
		if (isolate[size_t(v)])
			continue;
		int64_t k = 1; // every active node has an edge; a few have many
		while (r.uniform() > 0.862 && k < 50)
			k++;
		int64_t c = comm[size_t(v)];
		for (int64_t i = 0; i < k; i++) {
			int64_t u =
				r.uniform() < 0.75 ? pick(cstart[size_t(c)], cstart[size_t(c) + 1]) : pick(0, nodes);
			if (u < 0 || u == v)
				continue;
			g.src.push_back(v), g.dst.push_back(u);
		}
	}
	for (const auto &ring : rings)
		for (int64_t v : ring)
			for (int t = 0; t < 2; t++) {
				int64_t u = ring[r.below(ring.size())];
				if (u != v)
					g.src.push_back(v), g.dst.push_back(u);
			}
	// Ids: half the nodes keep their community-ordered id, the other half are shuffled.
	std::vector<int64_t> id(static_cast<size_t>(nodes)), moved;
	std::iota(id.begin(), id.end(), 0);
	for (int64_t v = 0; v < nodes; v++)
		if (r.uniform() < 0.5)
			moved.push_back(v);
	std::vector<int64_t> targets = moved;
	for (size_t i = targets.size(); i > 1; i--)
		std::swap(targets[i - 1], targets[r.below(i)]);
	for (size_t i = 0; i < moved.size(); i++)
		id[size_t(moved[i])] = targets[i];
	std::vector<float> x2(g.x.size());
	g.y.assign(size_t(nodes), 0);
	for (int64_t v = 0; v < nodes; v++) {
		std::copy_n(&g.x[size_t(v * F)], F, &x2[size_t(id[size_t(v)] * F)]);
		g.y[size_t(id[size_t(v)])] = label[size_t(v)];
	}
	g.x.swap(x2);
	for (auto &s : g.src)
		s = id[size_t(s)];
	for (auto &d : g.dst)
		d = id[size_t(d)];
	// Splits: the labelled nodes, shuffled, 70/15/15.
	std::vector<int64_t> lab;
	for (int64_t v = 0; v < nodes; v++)
		if (g.y[size_t(v)] <= 1)
			lab.push_back(v);
	for (size_t i = lab.size(); i > 1; i--)
		std::swap(lab[i - 1], lab[r.below(i)]);
	size_t a = lab.size() * 70 / 100, b = lab.size() * 85 / 100;
	g.train.assign(lab.begin(), lab.begin() + long(a));
	g.valid.assign(lab.begin() + long(a), lab.begin() + long(b));
	g.test.assign(lab.begin() + long(b), lab.end());
	for (auto *s : {&g.train, &g.valid, &g.test})
		std::sort(s->begin(), s->end());
	return g;
}

void zscore_columns(Graph &g, std::vector<double> *mean_out, std::vector<double> *sd_out)
{
	const int F = g.features;
	std::vector<double> mean(static_cast<size_t>(F)), sd(static_cast<size_t>(F));
	for (int f = 0; f < F; f++) {
		double s = 0, ss = 0;
		for (int64_t v = 0; v < g.n; v++)
			s += g.x[size_t(v * F + f)];
		double m = s / double(g.n);
		for (int64_t v = 0; v < g.n; v++) {
			double d = g.x[size_t(v * F + f)] - m;
			ss += d * d;
		}
		mean[size_t(f)] = m;
		sd[size_t(f)] = std::sqrt(ss / double(g.n));
	}
	for (int64_t v = 0; v < g.n; v++)
		for (int f = 0; f < F; f++) {
			float &val = g.x[size_t(v * F + f)];
			val = sd[size_t(f)] > 0 ? float((val - mean[size_t(f)]) / sd[size_t(f)]) : 0.0f;
		}
	if (mean_out)
		*mean_out = mean;
	if (sd_out)
		*sd_out = sd;
}

Csr build_csr(const Graph &g, bool symmetric)
{
	Csr c;
	c.ptr.assign(size_t(g.n + 1), 0);
	const size_t E = g.src.size();
	for (size_t i = 0; i < E; i++) {
		if (g.src[i] == g.dst[i])
			continue;
		c.ptr[size_t(g.dst[i]) + 1]++;
		if (symmetric)
			c.ptr[size_t(g.src[i]) + 1]++;
	}
	for (int64_t v = 0; v < g.n; v++)
		c.ptr[size_t(v) + 1] += c.ptr[size_t(v)];
	std::vector<int64_t> fill(c.ptr.begin(), c.ptr.end() - 1);
	c.col.resize(size_t(c.ptr.back()));
	for (size_t i = 0; i < E; i++) {
		if (g.src[i] == g.dst[i])
			continue;
		c.col[size_t(fill[size_t(g.dst[i])]++)] = g.src[i];
		if (symmetric)
			c.col[size_t(fill[size_t(g.src[i])]++)] = g.dst[i];
	}
	// Sort and deduplicate each row, compacting in place.
	int64_t out = 0;
	for (int64_t v = 0; v < g.n; v++) {
		auto b = c.col.begin() + c.ptr[size_t(v)], e = c.col.begin() + c.ptr[size_t(v) + 1];
		std::sort(b, e);
		auto u = std::unique(b, e);
		int64_t start = out;
		for (auto it = b; it != u; ++it)
			c.col[size_t(out++)] = *it;
		c.ptr[size_t(v)] = start;
	}
	c.ptr[size_t(g.n)] = out;
	c.col.resize(size_t(out));
	return c;
}

std::vector<int64_t> in_degrees(const Graph &g)
{
	std::vector<int64_t> d(size_t(g.n));
	for (auto v : g.dst)
		d[size_t(v)]++;
	return d;
}

} // namespace knlp
