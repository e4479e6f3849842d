// knlp gnn synth | layout | ra: synthetic DGraphFin-style graphs, feature layouts, and the
// read amplification of each sampler over each layout without training (gnn/).
#include <chrono>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "gnn/gnn_family.h"
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
Config gnn_config(const ConfigArgs &ca)
{
	Config c = ca.explicit_path() || file_exists(ca.path) ? Config::load(ca.path) : Config();
	std::vector<std::string> sets = {select(choice::Model::Graphsage)};
	sets.insert(sets.end(), ca.sets.begin(), ca.sets.end());
	c.set_all(sets);
	return c;
}

// ---- gnn synth

struct SynthArgs {
	int64_t nodes = 37000;
	uint64_t seed = 1;
	std::string out = "dgraphfin-synth.npz";
};

void define_synth(CLI::App *c, SynthArgs &a)
{
	c->add_option("--nodes", a.nodes, "Nodes (37000 = 1% of DGraphFin)")->capture_default_str();
	c->add_option("--seed", a.seed, "Generator seed")->capture_default_str();
	c->add_option("--out", a.out, "Output .npz")->capture_default_str();
}

void run_synth(SynthArgs &a)
{
	auto t0 = std::chrono::steady_clock::now();
	Graph g = synth_graph(a.nodes, a.seed);
	save_graph_npz(a.out, g);
	int64_t c[4] = {0, 0, 0, 0}, iso = 0;
	for (auto y : g.y)
		c[std::clamp<int64_t>(y, 0, 3)]++;
	Csr s = build_csr(g, true);
	for (int64_t v = 0; v < g.n; v++)
		iso += s.degree(v) == 0;
	fmt::print("{}: {} nodes, {} edges ({:.2f} per node), {} features; labels normal {} fraud {} ({:.2f}% of "
		   "labelled) background {}; isolates {:.1f}%; train/valid/test {}/{}/{} ({:.1f} s)\n",
		   a.out, g.n, g.edges(), double(g.edges()) / double(g.n), g.features, c[0], c[1],
		   100.0 * double(c[1]) / double(c[0] + c[1]), c[2] + c[3], 100.0 * double(iso) / double(g.n),
		   g.train.size(), g.valid.size(), g.test.size(),
		   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

// ---- gnn layout

struct LayoutArgs {
	ConfigArgs config;
	std::string method = "metis", out = "layout.npz";
	uint64_t seed = 1;
};

void define_layout(CLI::App *c, LayoutArgs &a)
{
	a.config.add_to(c);
	c->add_option("--method", a.method, "identity, random, bfs, metis, rcm")
		->check(CLI::IsMember(layout_methods()))
		->capture_default_str();
	c->add_option("--seed", a.seed, "Seed (random layout, METIS)")->capture_default_str();
	c->add_option("--out", a.out, "Output .npz (pos: node -> slot, order: slot -> node)")->capture_default_str();
}

void run_layout(LayoutArgs &a)
{
	const Settings s = gnn_config(a.config).settings();
	Graph g = load_gnn_graph(s.gnn);
	Csr sym = build_csr(g, true);
	PageGeometry geo{int64_t(g.features) * 4, s.gnn.page_bytes};
	Layout l = build_layout(a.method, g, sym, geo, a.seed, s.gnn.metis_parts);
	save_layout(a.out, l);
	fmt::print("{}: {} layout of {} ({} nodes) in {:.2f} s{}; a node's neighbours lie on {:.2f} pages on average\n",
		   a.out, a.method, g.origin, g.n, l.build_seconds, l.parts ? fmt::format(", {} parts", l.parts) : "",
		   neighbour_page_spread(sym, l, geo));
}

// ---- gnn ra

struct RaArgs {
	ConfigArgs config;
	std::string layouts = "identity random bfs metis rcm", samplers = "neighbor page", store_dir = ".", json_out;
	int threads = 2;
	int64_t max_batches = 0;
};

void define_ra(CLI::App *c, RaArgs &a)
{
	a.config.add_to(c);
	c->add_option("--layouts", a.layouts, "Layouts, space-separated")->capture_default_str();
	c->add_option("--samplers", a.samplers,
		      "Samplers, space-separated (fim draws uniformly here: no gradients yet)")
		->capture_default_str();
	c->add_option("--threads", a.threads, "Sampler threads")->capture_default_str();
	c->add_option("--max-batches", a.max_batches, "Batches per measurement (0: a whole epoch)")
		->capture_default_str();
	c->add_option("--store-dir", a.store_dir, "Folder of the temporary feature file ('' : no measured reads)")
		->capture_default_str();
	c->add_option("--json", a.json_out, "Also write the table as JSON here");
}

void run_ra(RaArgs &a)
{
	const Settings s = gnn_config(a.config).settings();
	Graph g = load_gnn_graph(s.gnn);
	Csr sym = build_csr(g, true);
	Csr adj = s.gnn.symmetric ? sym : build_csr(g, false);
	PageGeometry geo{int64_t(g.features) * 4, s.gnn.page_bytes};
	SamplerOptions so = gnn_sampler_options(s);
	nlohmann::json rows = nlohmann::json::array();
	fmt::print("{}: {} nodes, {} edges\n", g.origin, g.n, g.edges());
	fmt::print("{:<9} {:<9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>11} {:>10} {:>9}\n", "layout", "sampler", "build s",
		   "RA_fetch", "RA_signal", "pages/b", "nodes/b", "KiB read/b", "fetch ms/b", "batch/s");
	for (const auto &lm : words(a.layouts)) {
		Layout l = build_layout(lm, g, sym, geo, so.seed, s.gnn.metis_parts);
		for (const auto &sm : words(a.samplers)) {
			so.kind = sm;
			std::string sp = a.store_dir.empty() ? "" : join_path(a.store_dir, ".knlp-gnn-ra-features.bin");
			EpochIo r = sample_epoch(g, adj, l, geo, so, sp, a.threads, 0, a.max_batches);
			auto j = r.to_json(geo);
			j["layout"] = lm, j["sampler"] = sm, j["layout_seconds"] = l.build_seconds;
			j["measured"] = !sp.empty();
			rows.push_back(j);
			fmt::print("{:<9} {:<9} {:>9.2f} {:>8.2f}x {:>9.2f}x {:>9.1f} {:>9.0f} {:>11.1f} {:>10.3f} "
				   "{:>9.1f}\n",
				   lm, sm, l.build_seconds, r.ra_fetch(geo), r.ra_signal(geo),
				   j["pages_per_batch"].get<double>(), j["loaded_per_batch"].get<double>(),
				   j["bytes_per_batch"].get<double>() / 1024, j["fetch_ms_per_batch"].get<double>(),
				   j["sampler_batches_per_second"].get<double>());
		}
	}
	if (!a.json_out.empty())
		write_file_atomic(
			a.json_out,
			nlohmann::json{{"graph", g.origin}, {"nodes", g.n}, {"edges", g.edges()}, {"rows", rows}}.dump(
				2) +
				"\n");
}

} // namespace

void add_gnn_commands(CLI::App &app)
{
	auto *gnn = app.add_subcommand("gnn", "Graphs for page-aware GNN training: synth, layout, ra");
	gnn->require_subcommand(1);
	command<SynthArgs>(*gnn, "synth", "Write a synthetic graph in DGraphFin's .npz schema", define_synth,
			   run_synth);
	command<LayoutArgs>(*gnn, "layout", "Build a feature layout of the configured graph and save it", define_layout,
			    run_layout);
	command<RaArgs>(*gnn, "ra",
			"Read amplification of samplers x layouts over one epoch, modelled and measured (no "
			"training)",
			define_ra, run_ra);
}

} // namespace knlp
