// GNN: npz round trips and bad input, synthetic graph proportions, CSR, layouts, samplers,
// page store reads, quality metrics by hand, GraphSAGE by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>

#include "core/fsutil.h"
#include "gnn/graph.h"
#include "gnn/layout.h"
#include "gnn/measure.h"
#include "gnn/npz.h"
#include "gnn/pagestore.h"
#include "gnn/quality.h"
#include "gnn/sage.h"
#include "gnn/sampler.h"
#include "testutil.h"

using namespace knlp;

namespace {

std::string tmpdir()
{
	auto d = std::filesystem::temp_directory_path() / ("knlp_gnn_" + std::to_string(::getpid()));
	std::filesystem::create_directories(d);
	return d.string();
}

// A small hand graph: 0->1, 1->2, 2->0, 3->2, 2->2 (self loop), 0->1 (repeat); node 4 isolated.
Graph hand_graph()
{
	Graph g;
	g.n = 5, g.features = 2, g.origin = "hand";
	g.x = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
	g.y = {0, 1, 0, 2, 1};
	g.src = {0, 1, 2, 3, 2, 0};
	g.dst = {1, 2, 0, 2, 2, 1};
	g.train = {0, 1}, g.valid = {2}, g.test = {4};
	return g;
}

} // namespace

TEST(Npz, RoundTripsEveryMemberExactly)
{
	std::string p = tmpdir() + "/a.npz";
	std::map<std::string, NpyArray> a;
	a["f"] = make_npy_f32({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f}, {2, 3});
	a["i"] = make_npy_i64({-1, 0, 1LL << 40}, {3});
	write_npz(p, a);
	auto b = read_npz(p);
	ASSERT_EQ(b.size(), 2u);
	EXPECT_EQ(b["f"].shape, (std::vector<int64_t>{2, 3}));
	EXPECT_EQ(b["f"].dtype(), "<f4");
	EXPECT_EQ(b["f"].as_float("f"), (std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f}));
	EXPECT_EQ(b["i"].as_int64("i"), (std::vector<int64_t>{-1, 0, 1LL << 40}));
}

TEST(Npz, BadInputNamesTheFileAndMember)
{
	std::string d = tmpdir();
	write_file_atomic(d + "/junk.npz", "this is not a zip archive at all, just text");
	EXPECT_NE(test::error_of([&] { read_npz(d + "/junk.npz"); }).find("junk.npz: not an .npz archive"),
		  std::string::npos);
	EXPECT_EQ(test::error_of([&] { read_npz(d + "/none.npz"); }), d + "/none.npz: no such file");
	std::string npy = npy_bytes(make_npy_f32({1, 2, 3, 4}, {4}));
	auto *u = reinterpret_cast<const uint8_t *>(npy.data());
	EXPECT_NE(test::error_of([&] { parse_npy(u, npy.size() - 3, "m.npy"); }).find("m.npy: truncated data"),
		  std::string::npos);
	std::string bad = npy;
	bad[1] = 'X';
	EXPECT_EQ(
		test::error_of([&] { parse_npy(reinterpret_cast<const uint8_t *>(bad.data()), bad.size(), "m.npy"); }),
		"m.npy: not a .npy array (bad magic)");
	std::string fort = npy;
	fort.replace(fort.find("False"), 5, "True ");
	EXPECT_NE(test::error_of([&] {
			  parse_npy(reinterpret_cast<const uint8_t *>(fort.data()), fort.size(), "m.npy");
		  }).find("Fortran-order"),
		  std::string::npos);
	// A truncated archive: the end-of-directory record is gone.
	std::map<std::string, NpyArray> a;
	a["x"] = make_npy_f32({1, 2}, {2});
	write_npz(d + "/t.npz", a);
	std::string z = read_file(d + "/t.npz");
	write_file_atomic(d + "/t.npz", z.substr(0, z.size() - 30));
	EXPECT_NE(test::error_of([&] { read_npz(d + "/t.npz"); }).find("truncated?"), std::string::npos);
}

TEST(GraphNpz, LoaderChecksKeysShapesIdsAndLabels)
{
	std::string d = tmpdir();
	Graph g = hand_graph();
	save_graph_npz(d + "/g.npz", g);
	Graph h = load_graph_npz(d + "/g.npz");
	EXPECT_EQ(h.n, 5);
	EXPECT_EQ(h.x, g.x);
	EXPECT_EQ(h.src, g.src);
	EXPECT_EQ(h.train, g.train);
	auto write_with = [&](const std::function<void(std::map<std::string, NpyArray> &)> &f) {
		auto a = read_npz(d + "/g.npz");
		f(a);
		write_npz(d + "/b.npz", a);
		return test::error_of([&] { load_graph_npz(d + "/b.npz"); });
	};
	std::string b = d + "/b.npz";
	EXPECT_EQ(write_with([](auto &a) { a.erase("y"); }),
		  b + ": missing key 'y' (the archive holds: edge_index, test_mask, train_mask, valid_mask, x)");
	EXPECT_EQ(write_with([](auto &a) {
			  a["edge_index"] = make_npy_i64({0, 1, 2}, {3});
		  }),
		  b + ": key 'edge_index' must have shape (E, 2), has shape (3,)");
	EXPECT_EQ(write_with([](auto &a) {
			  a["edge_index"] = make_npy_i64({0, 1, 2, 9}, {2, 2});
		  }),
		  b + ": key 'edge_index': edge 1 names node 9, outside [0, 5)");
	EXPECT_EQ(write_with([](auto &a) {
			  a["x"] = make_npy_i64({1, 2, 3, 4, 5}, {5, 1});
		  }),
		  b + ": key 'x' has dtype <i8; expected float32 or float64 features");
	EXPECT_EQ(write_with([](auto &a) { a["train_mask"] = make_npy_i64({3}, {1}); }),
		  b + ": key 'train_mask': node 3 has label 2; split nodes must be labelled 0 or 1");
	EXPECT_EQ(write_with([](auto &a) { a["train_mask"] = make_npy_i64({}, {0}); }),
		  b + ": key 'train_mask': the train split is empty");
	EXPECT_EQ(write_with([](auto &a) { a["test_mask"] = make_npy_i64({2}, {1}); }),
		  b + ": keys 'valid_mask' and 'test_mask' share 1 nodes (first: 2); the splits must be disjoint");
	EXPECT_EQ(write_with([](auto &a) {
			  a["y"] = make_npy_i64({0, 1}, {2});
		  }),
		  b + ": key 'y' must have shape (5,), has shape (2,)");
}

TEST(GraphSynth, HasDGraphFinProportionsAndIsSeeded)
{
	Graph g = synth_graph(40000, 3);
	EXPECT_EQ(g.n, 40000);
	EXPECT_EQ(g.features, 17);
	int64_t c[4] = {0, 0, 0, 0};
	for (auto y : g.y)
		c[y]++;
	double labelled = double(c[0] + c[1]);
	EXPECT_NEAR(double(c[1]) / labelled, 0.0127, 0.003);
	EXPECT_NEAR(double(c[2] + c[3]) / double(g.n), 0.67, 0.03);
	EXPECT_NEAR(double(g.edges()) / double(g.n), 1.16, 0.1);
	Csr s = build_csr(g, true);
	int64_t iso = 0;
	for (int64_t v = 0; v < g.n; v++)
		iso += s.degree(v) == 0;
	EXPECT_GT(double(iso) / double(g.n), 0.01);
	EXPECT_LT(double(iso) / double(g.n), 0.06);
	EXPECT_NEAR(double(g.train.size()) / labelled, 0.70, 0.01);
	EXPECT_EQ(g.train.size() + g.valid.size() + g.test.size(), size_t(labelled));
	Graph h = synth_graph(40000, 3), k = synth_graph(40000, 4);
	EXPECT_EQ(g.x, h.x);
	EXPECT_EQ(g.dst, h.dst);
	EXPECT_NE(g.dst, k.dst);
	EXPECT_EQ(test::error_of([] { synth_graph(10, 1); }), "gnn synth: --nodes must be at least 1000 (got 10)");
}

TEST(GraphCsr, InNeighboursSortedWithoutLoopsOrRepeats)
{
	Graph g = hand_graph();
	Csr in = build_csr(g, false);
	EXPECT_EQ(in.ptr, (std::vector<int64_t>{0, 1, 2, 4, 4, 4}));
	EXPECT_EQ(in.col, (std::vector<int64_t>{2, 0, 1, 3}));
	Csr s = build_csr(g, true);
	EXPECT_EQ(s.ptr, (std::vector<int64_t>{0, 2, 4, 7, 8, 8}));
	EXPECT_EQ(s.col, (std::vector<int64_t>{1, 2, 0, 2, 0, 1, 3, 2}));
	zscore_columns(g);
	EXPECT_NEAR(g.x[0], (0 - 4) / std::sqrt(8.0), 1e-6); // column 0: 0 2 4 6 8, mean 4, sd sqrt(8)
}

TEST(GnnLayout, EveryMethodIsAPermutationAndFilesRoundTrip)
{
	Graph g = synth_graph(6000, 2);
	Csr s = build_csr(g, true);
	PageGeometry geo;
	for (const auto &m : layout_methods()) {
		if (m == "metis" && !have_metis())
			continue;
		Layout l = build_layout(m, g, s, geo, 7);
		std::vector<int64_t> sorted = l.order;
		std::sort(sorted.begin(), sorted.end());
		for (int64_t v = 0; v < g.n; v++) {
			ASSERT_EQ(sorted[size_t(v)], v) << m;
			ASSERT_EQ(l.order[size_t(l.pos[size_t(v)])], v) << m;
		}
	}
	// Locality: BFS and METIS put a node's neighbours on fewer pages than a random order.
	double rnd = neighbour_page_spread(s, build_layout("random", g, s, geo, 1), geo);
	double bfs = neighbour_page_spread(s, build_layout("bfs", g, s, geo, 1), geo);
	EXPECT_LT(bfs, rnd);
	if (have_metis()) {
		Layout m = build_layout("metis", g, s, geo, 1);
		EXPECT_EQ(m.parts, 2); // clamp(6000 / 3700, 2, 1000)
		EXPECT_LT(neighbour_page_spread(s, m, geo), rnd);
	}
	if (have_metis()) { // one part (METIS itself divides by zero there; found by the randconfig sweep)
		Layout one = build_layout("metis", g, s, geo, 1, 1);
		EXPECT_EQ(one.parts, 1);
		EXPECT_EQ(one.order.size(), size_t(g.n));
	}
	std::string p = tmpdir() + "/l.npz";
	Layout l = build_layout("rcm", g, s, geo, 1);
	save_layout(p, l);
	Layout r = load_layout(p, g.n);
	EXPECT_EQ(r.pos, l.pos);
	EXPECT_EQ(r.order, l.order);
	EXPECT_EQ(test::error_of([&] { load_layout(p, g.n + 1); }),
		  p + ": key 'pos' must have shape (6001,) for this graph");
	auto a = read_npz(p);
	auto pos = a["pos"].as_int64("pos");
	std::swap(pos[0], pos[1]);
	a["pos"] = make_npy_i64(pos, {g.n});
	write_npz(p, a);
	EXPECT_NE(test::error_of([&] { load_layout(p, g.n); }).find(": keys 'pos' and 'order' disagree"),
		  std::string::npos);
}

TEST(GnnLayout, BfsPagesFollowThePageFormulaOnAPath)
{
	// A path 0-1-...-199 whose in-degrees favour node 100: the first page is a BFS from 100.
	Graph g;
	g.n = 200, g.features = 17;
	for (int64_t v = 0; v + 1 < g.n; v++)
		g.src.push_back(v), g.dst.push_back(v + 1);
	g.src.push_back(0), g.dst.push_back(100);
	Csr s = build_csr(g, true);
	PageGeometry geo; // 68-byte records in 4096-byte pages: slots 0..60 are page 0
	EXPECT_EQ(geo.page_of_slot(60), 0);
	EXPECT_EQ(geo.page_of_slot(61), 1);
	EXPECT_EQ(geo.first_slot(1), 61);
	Layout l = build_layout("bfs", g, s, geo, 0);
	EXPECT_EQ(l.order[0], 100);
	// BFS from 100 grows three ways (its neighbours are 0, 99, 101): level k adds k-1, 100-k
	// and 100+k, so the 61 slots of page 0 hold levels 0..20.
	std::set<int64_t> first(l.order.begin(), l.order.begin() + 61), want = {100};
	for (int64_t k = 1; k <= 20; k++)
		want.insert({k - 1, 100 - k, 100 + k});
	EXPECT_EQ(first, want);
	EXPECT_EQ(l.order[61], 20); // page 1 continues from the highest-in-degree unplaced node
	Layout r = build_layout("rcm", g, s, geo, 0);
	EXPECT_EQ(r.order.size(), 200u);
}

TEST(GnnSampler, NeighbourBatchesRespectFanoutAndCoverTheSeeds)
{
	Graph g = synth_graph(8000, 5);
	Csr s = build_csr(g, true);
	PageGeometry geo;
	Layout l = build_layout("identity", g, s, geo, 0);
	SamplerOptions o;
	o.kind = "neighbor", o.batch_seeds = 256, o.seed = 3;
	Sampler smp(g, s, l, geo, o);
	smp.prepare_epoch(0);
	std::vector<int64_t> seen;
	for (int64_t b = 0; b < smp.batches(); b++) {
		GnnBatch bt = smp.make(b);
		for (int64_t i : bt.supervised)
			seen.push_back(bt.nodes[size_t(i)]);
		std::map<int64_t, int64_t> indeg;
		for (size_t e = 0; e < bt.esrc.size(); e++) {
			int64_t u = bt.nodes[size_t(bt.esrc[e])], v = bt.nodes[size_t(bt.edst[e])];
			ASSERT_TRUE(std::binary_search(s.col.begin() + s.ptr[size_t(v)],
						       s.col.begin() + s.ptr[size_t(v) + 1], u));
			indeg[bt.edst[e]]++;
		}
		for (auto [v, d] : indeg)
			ASSERT_LE(d, v < int64_t(bt.supervised.size()) ? 10 : 5);
		std::set<int64_t> pages;
		for (int64_t v : bt.nodes)
			pages.insert(geo.page_of_slot(l.pos[size_t(v)]));
		ASSERT_EQ(bt.pages_touched, int64_t(pages.size()));
	}
	std::sort(seen.begin(), seen.end());
	EXPECT_EQ(seen, g.train); // every train node is a seed exactly once per epoch
	GnnBatch a = smp.make(1), b = smp.make(1);
	EXPECT_EQ(a.nodes, b.nodes);
	EXPECT_EQ(a.esrc, b.esrc);
}

TEST(GnnSampler, PageBatchesTakeWholePagesAndABoundedBoundary)
{
	Graph g = synth_graph(8000, 5);
	Csr s = build_csr(g, true);
	PageGeometry geo;
	Layout l = build_layout("bfs", g, s, geo, 0);
	SamplerOptions o;
	o.kind = "page", o.pages_per_batch = 4, o.seed = 3;
	Sampler smp(g, s, l, geo, o);
	smp.prepare_epoch(2);
	std::set<int64_t> train(g.train.begin(), g.train.end()), sup_all;
	for (int64_t b = 0; b < smp.batches(); b++) {
		GnnBatch bt = smp.make(b);
		std::set<int64_t> core_pages;
		for (int64_t i = 0; i < bt.core; i++)
			core_pages.insert(geo.page_of_slot(l.pos[size_t(bt.nodes[size_t(i)])]));
		ASSERT_LE(core_pages.size(), 4u);
		int64_t on_pages = 0; // every node of those pages is in the core
		for (int64_t p : core_pages)
			on_pages += std::min(geo.first_slot(p + 1), g.n) - geo.first_slot(p);
		ASSERT_EQ(on_pages, bt.core);
		ASSERT_LE(int64_t(bt.nodes.size()) - bt.core, int64_t(0.2 * double(bt.core)));
		for (int64_t i : bt.supervised) {
			ASSERT_LT(i, bt.core);
			ASSERT_TRUE(train.count(bt.nodes[size_t(i)]));
			sup_all.insert(bt.nodes[size_t(i)]);
		}
		for (size_t e = 0; e < bt.esrc.size(); e++) // boundary nodes send, never receive from outside
			ASSERT_TRUE(bt.edst[e] < bt.core || bt.esrc[e] >= bt.core);
	}
	EXPECT_EQ(sup_all, train);
}

TEST(GnnSampler, FimBoundaryFollowsTheImportance)
{
	Graph g = synth_graph(8000, 5);
	Csr s = build_csr(g, true);
	PageGeometry geo;
	Layout l = build_layout("identity", g, s, geo, 0);
	SamplerOptions o;
	o.kind = "fim", o.pages_per_batch = 8, o.hops = 1, o.budget = 0.02, o.seed = 1, o.fim_ema = 0.5;
	Sampler smp(g, s, l, geo, o);
	smp.prepare_epoch(0);
	GnnBatch u = smp.make(0);
	// Mark every odd node as important: the boundary should become (almost) all odd.
	std::vector<int64_t> odd;
	std::vector<float> sq;
	for (int64_t v = 1; v < g.n; v += 2)
		odd.push_back(v), sq.push_back(2.0f);
	smp.update_importance(odd, sq.data());
	EXPECT_FLOAT_EQ(smp.importance()[1], 1.0f); // 0.5 * 0 + 0.5 * 2
	GnnBatch w = smp.make(0);
	int64_t odd_b = 0, tot = 0;
	for (size_t i = size_t(w.core); i < w.nodes.size(); i++)
		odd_b += w.nodes[i] % 2, tot++;
	ASSERT_GT(tot, 5);
	EXPECT_GE(double(odd_b) / double(tot), 0.9);
	EXPECT_EQ(u.core, w.core);
}

TEST(GnnPageStore, FetchReturnsTheFeaturesAndCountsPagesWithStraddles)
{
	Graph g = synth_graph(3000, 1);
	Csr s = build_csr(g, true);
	PageGeometry geo;
	Layout l = build_layout("random", g, s, geo, 9);
	std::string p = tmpdir() + "/f.bin";
	PageStore st(p, g, l, geo);
	EXPECT_EQ(int64_t(std::filesystem::file_size(p)), (3000 * 68 + 4095) / 4096 * 4096);
	// Slot 60 straddles pages 0 and 1 (bytes 4080..4147); slot 0 lies in page 0.
	std::vector<int64_t> nodes = {l.order[60], l.order[0], l.order[2999]};
	std::vector<float> out(nodes.size() * 17);
	FetchStats fs = st.fetch(nodes, out.data());
	EXPECT_EQ(fs.pages, 3); // pages 0, 1 and the last
	EXPECT_EQ(fs.reads, 2); // 0-1 coalesced
	EXPECT_EQ(fs.bytes, 3 * 4096);
	for (size_t i = 0; i < nodes.size(); i++)
		for (int f = 0; f < 17; f++)
			ASSERT_EQ(out[i * 17 + size_t(f)], g.x[size_t(nodes[i] * 17 + f)]);
	// One epoch of measured reads: bytes = pages read x 4096 and at least the modelled pages.
	SamplerOptions o;
	o.kind = "page";
	EpochIo r = sample_epoch(g, s, l, geo, o, tmpdir() + "/e.bin", 2);
	EXPECT_EQ(r.io_bytes, r.io_pages * 4096);
	EXPECT_GE(r.io_pages, r.pages);
	EXPECT_NEAR(r.ra_fetch(geo), double(r.pages) * 4096 / (double(r.loaded) * 68), 1e-9);
}

TEST(GnnQuality, GoldenNumbersByHand)
{
	std::vector<float> s = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f};
	std::vector<int64_t> y = {1, 0, 1, 0, 0};
	double f1 = 0;
	EXPECT_FLOAT_EQ(float(best_f1_threshold(s, y, &f1)), 0.7f);
	EXPECT_NEAR(f1, 0.8, 1e-12); // 2 tp of 3 flagged, 2 positives
	Quality q = score_quality(s, y, best_f1_threshold(s, y, nullptr));
	EXPECT_NEAR(q.precision, 2.0 / 3, 1e-12);
	EXPECT_NEAR(q.recall, 1.0, 1e-12);
	// (0,1) (0.5,1) (0.5,0.5) (1,2/3) (1,0.5) (1,0.4): 0.5 + 0.5 * (0.5 + 2/3) / 2
	EXPECT_NEAR(q.pr_auc, 0.5 + 0.25 * (0.5 + 2.0 / 3), 1e-12);
	EXPECT_NEAR(q.roc_auc, 5.0 / 6, 1e-12);
	EXPECT_NEAR(q.precision_at_05pct, 1.0, 1e-12); // ceil(0.025) = 1 node: a positive
	EXPECT_NEAR(q.recall_at_1pct, 0.5, 1e-12);
	Quality t = score_quality({0.3f, 0.3f, 0.3f, 0.3f}, {1, 0, 0, 1}, 0.3);
	EXPECT_NEAR(t.roc_auc, 0.5, 1e-12);
	EXPECT_NEAR(t.pr_auc, (1 + 0.5) / 2, 1e-12); // one point (1, 0.5) after (0, 1)
	EXPECT_EQ(test::error_of([] { score_quality({0.1f}, {2}, 0.5); }), "quality: label 2 is not 0 or 1");
}

TEST(GraphSage, ParameterCountAndMeanAggregationByHand)
{
	torch::manual_seed(0);
	GraphSage m(17, 128, 2);
	int64_t n = 0;
	for (auto &p : m->parameters())
		n += p.numel();
	EXPECT_EQ(n, 2 * 17 * 128 + 128 + 2 * 128 * 2 + 2); // 4994
	// One layer by hand: node 0 <- {1, 2}, node 1 <- {2}, node 2 isolated.
	SageConv c(3, 4);
	auto x = torch::randn({3, 3});
	auto src = torch::tensor({1, 2, 2}, torch::kLong), dst = torch::tensor({0, 0, 1}, torch::kLong);
	auto out = c->forward(x, src, dst, inverse_degree(dst, 3));
	auto W = c->lin_l->weight, b = c->lin_l->bias, R = c->lin_r->weight;
	auto m0 = (x[1] + x[2]) / 2, m1 = x[2], m2 = torch::zeros({3});
	auto ref = torch::stack({torch::mv(W, m0) + b + torch::mv(R, x[0]), torch::mv(W, m1) + b + torch::mv(R, x[1]),
				 torch::mv(W, m2) + b + torch::mv(R, x[2])});
	EXPECT_TRUE(torch::allclose(out, ref, 1e-5, 1e-6));
	// Wide-to-narrow layers project before aggregating: the same numbers.
	SageConv d(6, 2);
	auto x6 = torch::randn({3, 6});
	auto o6 = d->forward(x6, src, dst, inverse_degree(dst, 3));
	auto r6 = torch::stack(
		{torch::mv(d->lin_l->weight, (x6[1] + x6[2]) / 2) + d->lin_l->bias + torch::mv(d->lin_r->weight, x6[0]),
		 torch::mv(d->lin_l->weight, x6[2]) + d->lin_l->bias + torch::mv(d->lin_r->weight, x6[1]),
		 d->lin_l->bias + torch::mv(d->lin_r->weight, x6[2])});
	EXPECT_TRUE(torch::allclose(o6, r6, 1e-5, 1e-6));
}
