#include "gnn/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace knlp {

namespace {

uint64_t mix(uint64_t a, uint64_t b)
{
	Rng r(a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL));
	return r.next();
}

// A per-thread map global id -> local id (-1 when absent), reset after each batch.
std::vector<int32_t> &local_map(int64_t n)
{
	thread_local std::vector<int32_t> m;
	if (int64_t(m.size()) < n)
		m.assign(size_t(n), -1);
	return m;
}

} // namespace

Sampler::Sampler(const Graph &g, const Csr &adj, const Layout &l, const PageGeometry &geo, SamplerOptions o)
    : g_(g), adj_(adj), l_(l), geo_(geo), o_(std::move(o))
{
	if (o_.kind != "neighbor" && o_.kind != "page" && o_.kind != "fim")
		fail("gnn: unknown sampler '{}' (neighbor, page, fim)", o_.kind);
	if (g_.train.empty())
		fail("{}: the train split is empty", g_.origin);
	if (o_.kind == "neighbor") {
		if (o_.batch_seeds < 1)
			fail("gnn: CONFIG_GNN_BATCH_SEEDS must be >= 1");
		for (auto f : o_.fanout)
			if (f < 1)
				fail("gnn: every fanout must be >= 1");
	} else {
		if (o_.pages_per_batch < 1)
			fail("gnn: CONFIG_GNN_PAGES_PER_BATCH must be >= 1");
		if (!(o_.budget >= 0) || o_.hops < 0)
			fail("gnn: the boundary budget must be >= 0 and hops >= 0");
		is_train_.assign(size_t(g_.n), 0);
		for (int64_t v : g_.train)
			is_train_[size_t(v)] = 1;
		for (int64_t v : g_.train)
			train_pages_.push_back(geo_.page_of_slot(l_.pos[size_t(v)]));
		std::sort(train_pages_.begin(), train_pages_.end());
		train_pages_.erase(std::unique(train_pages_.begin(), train_pages_.end()), train_pages_.end());
	}
	if (o_.kind == "fim")
		importance_.assign(size_t(g_.n), 0.0f);
}

void Sampler::prepare_epoch(int64_t epoch)
{
	epoch_ = epoch;
	perm_ = o_.kind == "neighbor" ? g_.train : train_pages_;
	Rng r(mix(o_.seed, uint64_t(epoch)));
	for (size_t i = perm_.size(); i > 1; i--)
		std::swap(perm_[i - 1], perm_[r.below(i)]);
}

int64_t Sampler::batches() const
{
	int64_t per = o_.kind == "neighbor" ? o_.batch_seeds : o_.pages_per_batch;
	return (int64_t(perm_.size()) + per - 1) / per;
}

void Sampler::update_importance(const std::vector<int64_t> &nodes, const float *sq)
{
	const float b = float(o_.fim_ema);
	for (size_t i = 0; i < nodes.size(); i++) {
		float &s = importance_[size_t(nodes[i])];
		s = b * s + (1 - b) * sq[i];
	}
}

void Sampler::boundary(GnnBatch &bt, std::vector<int32_t> &local, uint64_t seed) const
{
	Rng r(seed);
	int64_t budget = int64_t(std::floor(o_.budget * double(bt.core)));
	std::vector<int64_t> frontier(bt.nodes), cand;
	std::vector<double> key;
	for (int64_t h = 0; h < o_.hops && budget > 0; h++) {
		cand.clear();
		for (int64_t u : frontier)
			for (int64_t k = adj_.ptr[size_t(u)]; k < adj_.ptr[size_t(u) + 1]; k++) {
				int64_t w = adj_.col[size_t(k)];
				if (local[size_t(w)] == -1) {
					local[size_t(w)] = -2; // candidate mark
					cand.push_back(w);
				}
			}
		for (int64_t w : cand)
			local[size_t(w)] = -1;
		if (cand.empty())
			break;
		std::sort(cand.begin(), cand.end()); // independent of the frontier's order
		int64_t take = std::min<int64_t>(budget, int64_t(cand.size()));
		if (take < int64_t(cand.size())) {
			if (o_.kind == "fim") {
				// Weighted sampling without replacement (exponential keys): weight (s + 1e-10)^(1/4).
				key.resize(cand.size());
				for (size_t i = 0; i < cand.size(); i++) {
					double wgt = std::pow(double(importance_[size_t(cand[i])]) + 1e-10, 0.25);
					key[i] = -std::log(std::max(r.uniform(), 1e-300)) / wgt;
				}
				std::vector<size_t> idx(cand.size());
				for (size_t i = 0; i < idx.size(); i++)
					idx[i] = i;
				std::nth_element(idx.begin(), idx.begin() + take, idx.end(), [&](size_t a, size_t b) {
					return key[a] < key[b] || (key[a] == key[b] && a < b);
				});
				std::vector<int64_t> pick;
				for (int64_t i = 0; i < take; i++)
					pick.push_back(cand[idx[size_t(i)]]);
				std::sort(pick.begin(), pick.end());
				cand.swap(pick);
			} else {
				for (int64_t i = 0; i < take; i++)
					std::swap(cand[size_t(i)], cand[size_t(i) + r.below(cand.size() - size_t(i))]);
				cand.resize(size_t(take));
			}
		}
		budget -= take;
		for (int64_t w : cand) {
			local[size_t(w)] = int32_t(bt.nodes.size());
			bt.nodes.push_back(w);
		}
		// Edges from the new nodes into the batch (boundary -> core, boundary -> boundary).
		for (int64_t w : cand) {
			int32_t lw = local[size_t(w)];
			for (int64_t k = adj_.ptr[size_t(w)]; k < adj_.ptr[size_t(w) + 1]; k++) {
				// adj holds in-neighbours; messages flow w -> u when w is an in-neighbour of u,
				// i.e. u lists w. With a symmetric adjacency the two coincide.
				int32_t lu = local[size_t(adj_.col[size_t(k)])];
				if (lu >= 0 && lu != lw)
					bt.esrc.push_back(lw), bt.edst.push_back(lu);
			}
		}
		frontier = cand;
	}
}

GnnBatch Sampler::make(int64_t b) const
{
	if (epoch_ < 0)
		fail("gnn sampler: prepare_epoch() was not called");
	GnnBatch bt;
	auto &local = local_map(g_.n);
	const uint64_t bseed = mix(mix(o_.seed, uint64_t(epoch_)), uint64_t(b) + 1);
	if (o_.kind == "neighbor") {
		Rng r(bseed);
		const int64_t lo = b * o_.batch_seeds,
			      hi = std::min<int64_t>(lo + o_.batch_seeds, int64_t(perm_.size()));
		for (int64_t i = lo; i < hi; i++) {
			int64_t v = perm_[size_t(i)];
			local[size_t(v)] = int32_t(bt.nodes.size());
			bt.supervised.push_back(int64_t(bt.nodes.size()));
			bt.nodes.push_back(v);
		}
		size_t fb = 0, fe = bt.nodes.size();
		std::vector<int64_t> nb;
		for (int64_t f : o_.fanout) {
			for (size_t i = fb; i < fe; i++) {
				int64_t u = bt.nodes[i];
				int64_t d = adj_.degree(u);
				const int64_t *row = adj_.col.data() + adj_.ptr[size_t(u)];
				nb.assign(row, row + d);
				if (d > f) // partial Fisher-Yates: f neighbours without replacement
					for (int64_t k = 0; k < f; k++)
						std::swap(nb[size_t(k)], nb[size_t(k) + r.below(uint64_t(d - k))]);
				int64_t take = std::min(d, f);
				for (int64_t k = 0; k < take; k++) {
					int64_t w = nb[size_t(k)];
					if (local[size_t(w)] < 0) {
						local[size_t(w)] = int32_t(bt.nodes.size());
						bt.nodes.push_back(w);
					}
					bt.esrc.push_back(local[size_t(w)]), bt.edst.push_back(int64_t(i));
				}
			}
			fb = fe, fe = bt.nodes.size();
		}
	} else {
		const int64_t lo = b * o_.pages_per_batch,
			      hi = std::min<int64_t>(lo + o_.pages_per_batch, int64_t(perm_.size()));
		std::vector<int64_t> pages(perm_.begin() + lo, perm_.begin() + hi);
		std::sort(pages.begin(), pages.end());
		for (int64_t p : pages)
			for (int64_t s = geo_.first_slot(p); s < std::min(geo_.first_slot(p + 1), g_.n); s++) {
				int64_t v = l_.order[size_t(s)];
				local[size_t(v)] = int32_t(bt.nodes.size());
				bt.nodes.push_back(v);
			}
		bt.core = int64_t(bt.nodes.size());
		for (int64_t i = 0; i < bt.core; i++) { // intra-batch edges among the core
			int64_t u = bt.nodes[size_t(i)];
			for (int64_t k = adj_.ptr[size_t(u)]; k < adj_.ptr[size_t(u) + 1]; k++) {
				int32_t lw = local[size_t(adj_.col[size_t(k)])];
				if (lw >= 0)
					bt.esrc.push_back(lw), bt.edst.push_back(i);
			}
		}
		for (int64_t i = 0; i < bt.core; i++)
			if (is_train_[size_t(bt.nodes[size_t(i)])])
				bt.supervised.push_back(i);
		boundary(bt, local, bseed ^ 0xb0b0ULL);
	}
	std::vector<int64_t> pg;
	pg.reserve(bt.nodes.size());
	for (int64_t v : bt.nodes) {
		pg.push_back(geo_.page_of_slot(l_.pos[size_t(v)]));
		local[size_t(v)] = -1;
	}
	std::sort(pg.begin(), pg.end());
	bt.pages_touched = int64_t(std::unique(pg.begin(), pg.end()) - pg.begin());
	return bt;
}

std::unique_ptr<Sampler> make_sampler(const Graph &g, const Csr &adj, const Layout &l, const PageGeometry &geo,
				      const SamplerOptions &o)
{
	return std::make_unique<Sampler>(g, adj, l, geo, o);
}

} // namespace knlp
