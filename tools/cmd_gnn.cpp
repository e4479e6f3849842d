// knlp gnn synth | layout | ra: synthetic DGraphFin-style graphs, feature layouts, and the
// read amplification of each sampler over each layout without training (gnn/).
#include <chrono>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "gnn/gnn_trainer.h"
#include "gnn/graph.h"
#include "gnn/layout.h"
#include "gnn/measure.h"
#include "tools/commands.h"

namespace knlp {

namespace {

std::vector<std::string> words(const std::string &s)
{
	std::istringstream in(s);
	std::vector<std::string> w;
	for (std::string t; in >> t;)
		w.push_back(t);
	return w;
}

// The GNN configuration of a command: --config when given or .config when present, else the
// defaults; then the --set overrides; the model is GraphSAGE either way.
Config gnn_config(const ConfigArgs &ca, bool explicit_config)
{
	Config c = explicit_config || file_exists(ca.path) ? Config::load(ca.path) : Config();
	c.set("MODEL_GRAPHSAGE=y", "knlp gnn");
	for (const auto &s : ca.sets)
		c.set(s);
	return c;
}

} // namespace

void add_gnn_commands(CLI::App &app)
{
	auto *gnn = app.add_subcommand("gnn", "Graphs for page-aware GNN training: synth, layout, ra");
	gnn->require_subcommand(1);

	auto *synth = gnn->add_subcommand("synth", "Write a synthetic graph in DGraphFin's .npz schema");
	static int64_t nodes = 37000;
	static uint64_t seed = 1;
	static std::string out = "dgraphfin-synth.npz";
	synth->add_option("--nodes", nodes, "Nodes (37000 = 1% of DGraphFin)")->capture_default_str();
	synth->add_option("--seed", seed, "Generator seed")->capture_default_str();
	synth->add_option("--out", out, "Output .npz")->capture_default_str();
	synth->callback([] {
		auto t0 = std::chrono::steady_clock::now();
		Graph g = synth_graph(nodes, seed);
		save_graph_npz(out, g);
		int64_t c[4] = {0, 0, 0, 0}, iso = 0;
		for (auto y : g.y)
			c[std::clamp<int64_t>(y, 0, 3)]++;
		Csr s = build_csr(g, true);
		for (int64_t v = 0; v < g.n; v++)
			iso += s.degree(v) == 0;
		fmt::print("{}: {} nodes, {} edges ({:.2f} per node), {} features; labels normal {} fraud {} ({:.2f}% of "
			   "labelled) background {}; isolates {:.1f}%; train/valid/test {}/{}/{} ({:.1f} s)\n",
			   out, g.n, g.edges(), double(g.edges()) / double(g.n), g.features, c[0], c[1],
			   100.0 * double(c[1]) / double(c[0] + c[1]), c[2] + c[3], 100.0 * double(iso) / double(g.n),
			   g.train.size(), g.valid.size(), g.test.size(),
			   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
	});

	auto *layout = gnn->add_subcommand("layout", "Build a feature layout of the configured graph and save it");
	static ConfigArgs lca;
	lca.add_to(layout);
	static std::string method = "metis", lout = "layout.npz";
	static uint64_t lseed = 1;
	layout->add_option("--method", method, "identity, random, bfs, metis, rcm")
		->check(CLI::IsMember(layout_methods()))
		->capture_default_str();
	layout->add_option("--seed", lseed, "Seed (random layout, METIS)")->capture_default_str();
	layout->add_option("--out", lout, "Output .npz (pos: node -> slot, order: slot -> node)")->capture_default_str();
	layout->callback([layout] {
		Config cfg = gnn_config(lca, layout->get_option("--config")->count() > 0);
		Graph g = load_gnn_graph(cfg);
		Csr sym = build_csr(g, true);
		PageGeometry geo{int64_t(g.features) * 4, cfg.get_int("GNN_PAGE_BYTES")};
		Layout l = build_layout(method, g, sym, geo, lseed, cfg.get_int("GNN_METIS_PARTS"));
		save_layout(lout, l);
		fmt::print("{}: {} layout of {} ({} nodes) in {:.2f} s{}; a node's neighbours lie on {:.2f} pages on average\n",
			   lout, method, g.origin, g.n, l.build_seconds, l.parts ? fmt::format(", {} parts", l.parts) : "",
			   neighbour_page_spread(sym, l, geo));
	});

	auto *ra = gnn->add_subcommand("ra", "Read amplification of samplers x layouts over one epoch, modelled and "
					      "measured (no training)");
	static ConfigArgs rca;
	rca.add_to(ra);
	static std::string layouts = "identity random bfs metis rcm", samplers = "neighbor page", store_dir = ".", json_out;
	static int threads = 2;
	static int64_t max_batches = 0;
	ra->add_option("--layouts", layouts, "Layouts, space-separated")->capture_default_str();
	ra->add_option("--samplers", samplers, "Samplers, space-separated (fim draws uniformly here: no gradients yet)")
		->capture_default_str();
	ra->add_option("--threads", threads, "Sampler threads")->capture_default_str();
	ra->add_option("--max-batches", max_batches, "Batches per measurement (0: a whole epoch)")->capture_default_str();
	ra->add_option("--store-dir", store_dir, "Folder of the temporary feature file ('' : no measured reads)")
		->capture_default_str();
	ra->add_option("--json", json_out, "Also write the table as JSON here");
	ra->callback([ra] {
		Config cfg = gnn_config(rca, ra->get_option("--config")->count() > 0);
		Graph g = load_gnn_graph(cfg);
		Csr sym = build_csr(g, true);
		Csr adj = cfg.get_bool("GNN_SYMMETRIC") ? sym : build_csr(g, false);
		PageGeometry geo{int64_t(g.features) * 4, cfg.get_int("GNN_PAGE_BYTES")};
		SamplerOptions so = gnn_sampler_options(cfg);
		nlohmann::json rows = nlohmann::json::array();
		fmt::print("{}: {} nodes, {} edges\n", g.origin, g.n, g.edges());
		fmt::print("{:<9} {:<9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>11} {:>10} {:>9}\n", "layout", "sampler", "build s",
			   "RA_fetch", "RA_signal", "pages/b", "nodes/b", "KiB read/b", "fetch ms/b", "batch/s");
		for (const auto &lm : words(layouts)) {
			Layout l = build_layout(lm, g, sym, geo, so.seed, cfg.get_int("GNN_METIS_PARTS"));
			for (const auto &sm : words(samplers)) {
				so.kind = sm;
				std::string sp = store_dir.empty() ? "" : join_path(store_dir, ".knlp-gnn-ra-features.bin");
				EpochIo r = sample_epoch(g, adj, l, geo, so, sp, threads, 0, max_batches);
				auto j = r.to_json(geo);
				j["layout"] = lm, j["sampler"] = sm, j["layout_seconds"] = l.build_seconds;
				j["measured"] = !sp.empty();
				rows.push_back(j);
				fmt::print("{:<9} {:<9} {:>9.2f} {:>8.2f}x {:>9.2f}x {:>9.1f} {:>9.0f} {:>11.1f} {:>10.3f} {:>9.1f}\n", lm, sm,
					   l.build_seconds, r.ra_fetch(geo), r.ra_signal(geo), j["pages_per_batch"].get<double>(),
					   j["loaded_per_batch"].get<double>(), j["bytes_per_batch"].get<double>() / 1024,
					   j["fetch_ms_per_batch"].get<double>(), j["sampler_batches_per_second"].get<double>());
			}
		}
		if (!json_out.empty())
			write_file_atomic(json_out, nlohmann::json{{"graph", g.origin}, {"nodes", g.n}, {"edges", g.edges()},
								   {"rows", rows}}.dump(2) + "\n");
	});
}

} // namespace knlp
