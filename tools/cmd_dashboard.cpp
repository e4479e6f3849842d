// knlp dashboard: a local web server over run folders and matrix folders (docs/dashboard.md).
// The pages (dashboard/*.html, *.js, *.css of the source tree) and uPlot (datasets/uplot, from
// npm by `make deps`) are static files; everything they show comes from /api/*, computed here
// from the files a run writes while it trains: metrics.jsonl is read from a byte offset the
// page keeps, so a page polls for what was appended, a torn last line waits for its end, and
// a file that shrank (a resume cut it back) is read again from the start.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "core/config.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/safetensors.h"
#include "matrix/runner.h"
#include "train/checkpoint.h"
#include "tools/commands.h"

#ifdef KNLP_HAVE_HTTPLIB
#include <httplib.h>
#endif

namespace knlp {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DashboardArgs {
	int port = 8080;
	std::string host = "127.0.0.1";
	std::vector<std::string> dirs;
	std::string assets; // default: the source tree's dashboard/
	std::string export_path;
};

json read_json_or_null(const std::string &path)
{
	try {
		if (file_exists(path))
			return json::parse(read_file(path));
	} catch (const std::exception &) {
		// being rewritten (atomic renames make this rare) or damaged: shown as absent
	}
	return nullptr;
}

double mtime(const std::string &path)
{
	struct stat st {};
	if (stat(path.c_str(), &st) != 0)
		return 0;
	return static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9;
}

double now_seconds()
{
	using namespace std::chrono;
	return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Complete lines of metrics.jsonl from byte `since`: {records, offset, reset}.
json read_records(const std::string &path, int64_t since)
{
	json out = {{"records", json::array()}, {"offset", since}, {"reset", false}};
	std::ifstream f(path, std::ios::binary);
	if (!f)
		return out;
	f.seekg(0, std::ios::end);
	const int64_t size = f.tellg();
	if (since > size || since < 0) { // cut back by a resume: start again
		since = 0;
		out["reset"] = true;
	}
	f.seekg(since);
	std::string data(static_cast<size_t>(size - since), '\0');
	f.read(data.data(), static_cast<std::streamsize>(data.size()));
	size_t start = 0, nl;
	while ((nl = data.find('\n', start)) != std::string::npos) {
		try {
			out["records"].push_back(json::parse(data.substr(start, nl - start)));
		} catch (const std::exception &) {
			// a line a kill tore and a resume has not removed yet: skipped
		}
		start = nl + 1;
	}
	out["offset"] = since + static_cast<int64_t>(start); // a torn tail is read when it is complete
	return out;
}

// The last "train" record of a metrics.jsonl (scanning its last 64 KiB).
json last_train_record(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	if (!f)
		return nullptr;
	f.seekg(0, std::ios::end);
	int64_t size = f.tellg(), from = std::max<int64_t>(0, size - 65536);
	json r = read_records(path, from)["records"];
	for (auto it = r.rbegin(); it != r.rend(); ++it)
		if (it->is_object() && it->value("type", "") == "train")
			return *it;
	return nullptr;
}

class Catalogue {
public:
	explicit Catalogue(std::vector<std::string> roots) : roots_(std::move(roots)) {}

	// Rescans the roots: run folders (run.json) and matrix folders (plan.json).
	json list()
	{
		runs_.clear();
		matrices_.clear();
		json runs = json::array(), mats = json::array();
		for (const auto &root : roots_)
			scan(root, 0);
		for (const auto &[id, dir] : runs_)
			runs.push_back(run_summary(id, dir));
		for (const auto &[id, dir] : matrices_)
			mats.push_back(matrix_summary(id, dir));
		return {{"runs", runs}, {"matrices", mats}, {"roots", roots_}, {"now", now_seconds()}};
	}
	std::string run_dir(const std::string &id)
	{
		if (!runs_.count(id))
			list();
		auto it = runs_.find(id);
		return it == runs_.end() ? "" : it->second;
	}
	std::string matrix_dir(const std::string &id)
	{
		if (!matrices_.count(id))
			list();
		auto it = matrices_.find(id);
		return it == matrices_.end() ? "" : it->second;
	}

private:
	void scan(const std::string &dir, int depth)
	{
		std::error_code ec;
		if (!fs::is_directory(dir, ec))
			return;
		std::string id = fs::path(dir).lexically_normal().string();
		if (file_exists(join_path(dir, "run.json")))
			runs_[id] = dir;
		if (file_exists(join_path(dir, "plan.json")))
			matrices_[id] = dir;
		if (depth >= 3)
			return;
		for (const auto &e : fs::directory_iterator(dir, ec)) {
			std::string n = e.path().filename().string();
			if (e.is_directory(ec) && n != "checkpoints" && n != "graphs" && n[0] != '.')
				scan(e.path().string(), depth + 1);
		}
	}

	static json run_summary(const std::string &id, const std::string &dir)
	{
		json m = read_json_or_null(join_path(dir, "training_metrics.json"));
		json runs = read_json_or_null(join_path(dir, "run.json"));
		const std::string jl = join_path(dir, "metrics.jsonl");
		json last = last_train_record(jl);
		json s = {{"id", id}, {"name", fs::path(dir).filename().string()}, {"updated", mtime(jl)}};
		std::string status = m.is_object() ? m.value("status", "unknown") : "starting";
		int64_t step = last.is_object() ? last.value("step", int64_t(0)) : 0, total = 0;
		if (m.is_object()) {
			const json &p = m.value("progress", json::object());
			total = p.value("total_steps", int64_t(0));
			step = std::max(step, p.value("step", int64_t(0)));
			const json &q = m.value("quality", json::object());
			s["quality_metric"] = q.value("metric", "");
			s["higher_is_better"] = q.value("higher_is_better", false);
			s["best"] = q.contains("best") ? q["best"] : json(nullptr);
			s["family"] = m.value("family", "");
		}
		if (runs.is_array() && !runs.empty())
			s["project"] = runs.back().value("project", "");
		// A run that says "running" but has not logged for 10 minutes was most likely killed.
		if (status == "running" && s["updated"].get<double>() > 0 &&
		    now_seconds() - s["updated"].get<double>() > 600)
			status = "stalled";
		s["status"] = status;
		s["step"] = step;
		s["total_steps"] = total;
		s["progress"] = total > 0 ? double(step) / double(total) : 0.0;
		if (last.is_object() && step > 0 && total > step && last.contains("elapsed"))
			s["eta_seconds"] = last["elapsed"].get<double>() / double(step) * double(total - step);
		return s;
	}

	static json matrix_summary(const std::string &id, const std::string &dir)
	{
		json plan = read_json_or_null(join_path(dir, "plan.json"));
		json all = read_json_or_null(join_path(dir, "all_results.json"));
		int complete = 0, failed = 0;
		if (all.is_array())
			for (const auto &e : all) {
				complete += e.value("status", "") == "complete";
				failed += e.value("status", "") == "failed";
			}
		size_t n = plan.is_object() && plan.contains("runs") ? plan["runs"].size() : 0;
		return {{"id", id},
			{"name", fs::path(dir).filename().string()},
			{"runs", n},
			{"complete", complete},
			{"failed", failed}};
	}

	std::vector<std::string> roots_;
	std::map<std::string, std::string> runs_, matrices_;
};

json run_detail(const std::string &dir, int64_t since)
{
	json out = read_records(join_path(dir, "metrics.jsonl"), since);
	out["run"] = read_json_or_null(join_path(dir, "run.json"));
	out["metrics"] = read_json_or_null(join_path(dir, "training_metrics.json"));
	out["config"] = file_exists(join_path(dir, "config")) ? read_file(join_path(dir, "config")) : "";
	json hw = read_json_or_null(join_path(dir, "hw_stats.json"));
	json rss = json::array();
	if (hw.is_object())
		for (const auto &smp : hw.value("samples", json::array()))
			rss.push_back({smp.value("elapsed_seconds", 0.0), smp.value("rss_mb", 0.0),
				       smp.contains("memory_used") ? smp["memory_used"] : json(nullptr),
				       smp.contains("cpu_percent") ? smp["cpu_percent"] : json(nullptr)});
	out["memory"] = rss;
	// Research outputs kept in the run folder (two levels down): `fim compare` (RUN/fim/
	// compare.json, written by CONFIG_FIM_COMPARE), quantization plans (*.plan.json next to
	// exported GGUF files) and `knlp quantize` results (quantize.json).
	json research = {{"fim_compare", read_json_or_null(join_path(dir, "fim/compare.json"))},
			 {"quant_plans", json::array()},
			 {"quantize", json::array()}};
	std::error_code ec;
	for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
	     it.increment(ec)) {
		if (ec)
			break;
		if (it.depth() > 2 || it->path().filename() == "checkpoints") {
			it.disable_recursion_pending();
			continue;
		}
		std::string n = it->path().filename().string();
		if (n == "quantize.json") { // knlp quantize --out DIR: a plan's size and perplexity
			json q = read_json_or_null(it->path().string());
			if (q.is_object())
				research["quantize"].push_back(
					{{"file", fs::relative(it->path(), dir).string()}, {"result", q}});
		}
		if (n.size() > 10 && n.compare(n.size() - 10, 10, ".plan.json") == 0) {
			json plan = read_json_or_null(it->path().string());
			if (plan.is_object())
				research["quant_plans"].push_back(
					{{"file", fs::relative(it->path(), dir).string()}, {"plan", plan}});
		}
	}
	out["research"] = research;
	out["preset"] = nullptr;
	out["differs"] = json::array();
	try { // what differs from the preset the run is named after, or from the defaults
		Config run =
			Config::parse(out["config"].get<std::string>(), join_path(dir, "config"), Config::Mode::Saved);
		std::string name = run.settings().core.run_name,
			    preset = join_path(KNLP_SOURCE_DIR, "defconfigs/" + name);
		bool named = !name.empty() && name.find('/') == std::string::npos && file_exists(preset);
		Config base = named ? Config::load(preset, Config::Mode::Saved) : Config();
		out["preset"] = named ? json(name) : json("defaults");
		for (auto &d : base.diff(run, {"RUN_NAME", "OUTPUT_DIR", "SEED"}))
			out["differs"].push_back(d);
	} catch (const Error &) {
		// a configuration this knlp cannot read: shown as text only
	}
	if (out["metrics"].is_object() && out["metrics"].contains("history"))
		out["metrics"].erase("history"); // the page has the records
	return out;
}

// A matrix's page: its configurations with the statistics summary_report.txt shows
// (configuration_stats, matrix/summary.cpp), the curves per configuration and its runs.
json matrix_detail(const std::string &dir)
{
	json all = read_json_or_null(join_path(dir, "all_results.json"));
	if (!all.is_array())
		all = json::array();
	json out = configuration_stats(dir);
	bool pruned = false;
	for (const auto &e : all)
		pruned |= e.value("pruning", "none") != "none";
	// Curves per configuration: the training loss of every logged step and the validation
	// figure of every evaluation, averaged over the seeds that reached that step.
	std::map<std::string, std::map<int64_t, std::pair<double, int>>> tr, ev;
	for (const auto &e : all) {
		const std::string cid = e.value("config_id", ""),
				  jl = join_path(join_path(dir, e.value("test_id", "")), "metrics.jsonl");
		const json recs = read_records(jl, 0); // named: a reference into a temporary would dangle
		for (const auto &r : recs["records"]) {
			if (!r.is_object() || !r.contains("step"))
				continue;
			const std::string type = r.value("type", "");
			const char *key = type == "train" ? "loss" : type == "eval" ? "quality" : nullptr;
			if (!key || !r.contains(key) || !r[key].is_number())
				continue;
			auto &slot = (type == "train" ? tr : ev)[cid][r["step"].get<int64_t>()];
			slot.first += r[key].get<double>();
			slot.second++;
		}
	}
	auto curves = [&](std::map<std::string, std::map<int64_t, std::pair<double, int>>> &m) {
		json c = json::object();
		for (auto &[cid, steps] : m) {
			json xs = json::array(), ys = json::array();
			for (auto &[step, sum] : steps) {
				xs.push_back(step);
				ys.push_back(sum.first / sum.second);
			}
			c[cid] = {{"steps", xs}, {"mean", ys}};
		}
		return c;
	};
	json runs = json::array();
	for (const auto &e : all)
		runs.push_back({{"test_id", e.value("test_id", "")},
				{"config_id", e.value("config_id", "")},
				{"status", e.value("status", "")},
				{"quality", e.contains("quality") ? e["quality"] : json(nullptr)},
				{"run", fs::path(join_path(dir, e.value("test_id", ""))).lexically_normal().string()}});
	out.update({{"train_curves", curves(tr)}, {"eval_curves", curves(ev)}, {"runs", runs}, {"pruned", pruned}});
	return out;
}

// Kept (nonzero) weights of every mask.* tensor of a run's final checkpoint, in name order.
std::vector<bool> final_masks(const std::string &run_dir)
{
	SafetensorsFile f(join_path(resolve_checkpoint(run_dir, "final"), "optimizer.safetensors"));
	std::vector<const TensorView *> masks;
	for (const auto &t : f.tensors())
		if (t.name.rfind("mask.", 0) == 0)
			masks.push_back(&t);
	std::sort(masks.begin(), masks.end(), [](auto *a, auto *b) { return a->name < b->name; });
	std::vector<bool> kept;
	for (const TensorView *t : masks) {
		const size_t w = dtype_size(t->dtype);
		if (w == 0)
			fail("{}: {} has dtype {}, not a mask", f.path(), t->name, t->dtype);
		const auto *b = static_cast<const unsigned char *>(t->data);
		const bool f32 = t->dtype == "F32";
		for (uint64_t i = 0; i + w <= t->nbytes; i += w) {
			bool nz = false;
			if (f32) {
				float v;
				std::memcpy(&v, b + i, 4);
				nz = v != 0.0f;
			} else {
				for (size_t k = 0; k < w; k++)
					nz |= b[i + k] != 0;
			}
			kept.push_back(nz);
		}
	}
	return kept;
}

// Agreement of the final masks of a matrix's pruned configurations at equal target sparsity,
// per seed: Jaccard |A and B| / |A or B| of the kept weights, against what independent masks
// of the same densities would give, p q / (p + q - p q).
json mask_overlap(const std::string &dir)
{
	json all = read_json_or_null(join_path(dir, "all_results.json"));
	std::map<std::pair<int64_t, double>, std::vector<std::pair<std::string, std::string>>>
		groups; // (seed, sparsity)
	if (all.is_array())
		for (const auto &e : all)
			if (e.value("status", "") == "complete" && e.value("pruning", "none") != "none")
				groups[{e.value("seed", int64_t(0)), e.value("target_sparsity", 0.0)}].push_back(
					{e.value("config_id", ""), join_path(dir, e.value("test_id", ""))});
	std::map<std::tuple<std::string, std::string, double>, std::vector<std::pair<double, double>>> acc;
	for (const auto &[key, runs] : groups) {
		std::vector<std::vector<bool>> m;
		for (const auto &r : runs)
			m.push_back(final_masks(r.second));
		for (size_t i = 0; i < runs.size(); i++)
			for (size_t j = i + 1; j < runs.size(); j++) {
				if (m[i].size() != m[j].size() || m[i].empty())
					continue;
				double both = 0, either = 0, a = 0, b = 0;
				for (size_t k = 0; k < m[i].size(); k++) {
					both += m[i][k] && m[j][k];
					either += m[i][k] || m[j][k];
					a += m[i][k];
					b += m[j][k];
				}
				const double n = double(m[i].size()), p = a / n, q = b / n;
				acc[{runs[i].first, runs[j].first, key.second}].push_back(
					{either > 0 ? both / either : 1.0,
					 p + q - p * q > 0 ? p * q / (p + q - p * q) : 1.0});
			}
	}
	json pairs = json::array();
	for (const auto &[k, v] : acc) {
		double jac = 0, rnd = 0;
		for (const auto &[x, y] : v) {
			jac += x;
			rnd += y;
		}
		pairs.push_back({{"a", std::get<0>(k)},
				 {"b", std::get<1>(k)},
				 {"sparsity", std::get<2>(k)},
				 {"seeds", v.size()},
				 {"jaccard", jac / double(v.size())},
				 {"independent", rnd / double(v.size())}});
	}
	return {{"pairs", pairs}};
}

std::string content_type(const std::string &path)
{
	auto ends = [&](const char *s) {
		std::string e(s);
		return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
	};
	if (ends(".html"))
		return "text/html; charset=utf-8";
	if (ends(".js"))
		return "text/javascript; charset=utf-8";
	if (ends(".css"))
		return "text/css; charset=utf-8";
	return "application/octet-stream";
}

std::string default_assets()
{
	return join_path(KNLP_SOURCE_DIR, "dashboard");
}
std::string uplot_dir()
{
	return join_path(KNLP_SOURCE_DIR, "datasets/uplot");
}

// Text for inside <script>: "</" cannot end the element early.
std::string script_safe(std::string s)
{
	for (size_t i = 0; (i = s.find("</", i)) != std::string::npos; i += 3)
		s.replace(i, 2, "<\\/");
	return s;
}

std::atomic<void *> g_server{nullptr};

void define_dashboard(CLI::App *c, DashboardArgs &x)
{
	c->add_option("--port", x.port, "TCP port (0: any free one, printed)")
		->check(CLI::Range(0, 65535))
		->capture_default_str();
	c->add_option("--host", x.host, "Address to listen on (0.0.0.0: every interface)")->capture_default_str();
	c->add_option("--assets", x.assets, "Folder of the page files (default: the source tree's dashboard/)");
	c->add_option(
		"--export", x.export_path,
		"Write one self-contained HTML file with every page of the given folders (no server, no network)");
	c->add_option("dirs", x.dirs,
		      "Run or matrix folders, or folders holding them (default: runs and test_matrix_results_* here)");
}

void run_dashboard(DashboardArgs &x)
{
	if (!x.export_path.empty()) {
		for (const auto &r : x.dirs)
			if (!fs::is_directory(r))
				fail("dashboard: {}: no such folder", r);
		export_dashboard(x.dirs.empty() ? std::vector<std::string>{"runs"} : x.dirs, x.export_path, x.assets);
		fmt::print("dashboard: wrote {}\n", x.export_path);
		return;
	}
#ifndef KNLP_HAVE_HTTPLIB
	(void)x;
	fail("dashboard: this knlp was built without cpp-httplib (Debian's libcpp-httplib-dev; `make deps` installs "
	     "it)");
#else
	std::vector<std::string> roots = x.dirs;
	if (roots.empty()) {
		roots.push_back("runs");
		std::error_code ec;
		for (const auto &e : fs::directory_iterator(".", ec))
			if (e.path().filename().string().rfind("test_matrix_results", 0) == 0)
				roots.push_back(e.path().filename().string());
	}
	for (const auto &r : roots)
		if (!fs::is_directory(r) && !x.dirs.empty())
			fail("dashboard: {}: no such folder", r);
	const std::string assets = x.assets.empty() ? default_assets() : x.assets;
	if (!file_exists(join_path(assets, "index.html")))
		fail("dashboard: {}: the page files are missing (index.html); give --assets", assets);
	const std::string uplot = uplot_dir();
	auto cat = std::make_shared<Catalogue>(roots);
	auto mu = std::make_shared<std::mutex>();

	httplib::Server srv;
	auto send_json = [](httplib::Response &res, const json &j) {
		res.set_header("Cache-Control", "no-store");
		res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
	};
	auto send_file = [](httplib::Response &res, const std::string &path) {
		if (!file_exists(path)) {
			res.status = 404;
			res.set_content(fmt::format("{}: not found\n", path), "text/plain");
			return;
		}
		res.set_header("Cache-Control", "no-store");
		res.set_content(read_file(path), content_type(path).c_str());
	};
	srv.Get("/", [=](const httplib::Request &, httplib::Response &res) {
		send_file(res, join_path(assets, "index.html"));
	});
	for (const char *f : {"app.js", "app.css"})
		srv.Get(std::string("/") + f, [=](const httplib::Request &, httplib::Response &res) {
			send_file(res, join_path(assets, f));
		});
	srv.Get("/uplot.js", [=](const httplib::Request &, httplib::Response &res) {
		send_file(res, join_path(uplot, "uPlot.iife.min.js"));
	});
	srv.Get("/uplot.css", [=](const httplib::Request &, httplib::Response &res) {
		send_file(res, join_path(uplot, "uPlot.min.css"));
	});
	srv.Get("/api/runs", [=](const httplib::Request &, httplib::Response &res) {
		std::lock_guard<std::mutex> g(*mu);
		send_json(res, cat->list());
	});
	// /api/run, /api/matrix, /api/masks: the folder the id names (404 when none), then an
	// answer built from it (500 with the reason when that fails).
	auto folder_api = [&](const char *path, bool matrix,
			      std::function<json(const std::string &, const httplib::Request &)> answer) {
		srv.Get(path, [=](const httplib::Request &req, httplib::Response &res) {
			const std::string id = req.get_param_value("id");
			std::string dir;
			{
				std::lock_guard<std::mutex> g(*mu);
				dir = matrix ? cat->matrix_dir(id) : cat->run_dir(id);
			}
			if (dir.empty()) {
				res.status = 404;
				return send_json(
					res, {{"error", fmt::format("no such {}: {}", matrix ? "matrix" : "run", id)}});
			}
			try {
				send_json(res, answer(dir, req));
			} catch (const std::invalid_argument &) {
				res.status = 400;
				send_json(res, {{"error", "since must be a byte offset"}});
			} catch (const std::exception &e) {
				res.status = 500;
				send_json(res, {{"error", fmt::format("{}: {}", dir, e.what())}});
			}
		});
	};
	folder_api("/api/run", false, [](const std::string &dir, const httplib::Request &req) {
		return run_detail(dir, req.has_param("since") ? std::stoll(req.get_param_value("since")) : 0);
	});
	folder_api("/api/matrix", true,
		   [](const std::string &dir, const httplib::Request &) { return matrix_detail(dir); });
	folder_api("/api/masks", true,
		   [](const std::string &dir, const httplib::Request &) { return mask_overlap(dir); });
	// SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second
	// dashboard on a taken port would start and share it silently.
	srv.set_socket_options([](socket_t sock) {
		int yes = 1;
		setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const char *>(&yes), sizeof yes);
	});
	int port = x.port;
	if (port == 0)
		port = srv.bind_to_any_port(x.host.c_str());
	else if (!srv.bind_to_port(x.host.c_str(), port))
		fail("dashboard: cannot listen on {}:{} (in use? give --port)", x.host, port);
	if (port < 0)
		fail("dashboard: cannot listen on {}", x.host);
	fmt::print("dashboard: http://{}:{}/ serving {}\n", x.host == "0.0.0.0" ? "localhost" : x.host, port,
		   fmt::join(roots, ", "));
	std::fflush(stdout);
	g_server = &srv;
	std::signal(SIGINT, [](int) {
		if (void *s = g_server.load())
			static_cast<httplib::Server *>(s)->stop();
	});
	std::signal(SIGTERM, [](int) {
		if (void *s = g_server.load())
			static_cast<httplib::Server *>(s)->stop();
	});
	srv.listen_after_bind();
	g_server = nullptr;
#endif
}

} // namespace

void export_dashboard(const std::vector<std::string> &roots, const std::string &out, const std::string &assets_dir)
{
	const std::string assets = assets_dir.empty() ? default_assets() : assets_dir;
	for (const char *f : {"index.html", "app.js", "app.css"})
		if (!file_exists(join_path(assets, f)))
			fail("dashboard: {}: missing (give --assets)", join_path(assets, f));
	const std::string up = join_path(uplot_dir(), "uPlot.iife.min.js"),
			  upc = join_path(uplot_dir(), "uPlot.min.css");
	if (!file_exists(up) || !file_exists(upc))
		fail("dashboard: {}: uPlot is missing (make deps fetches the npm package uplot)", uplot_dir());
	Catalogue cat(roots);
	json snap = json::object();
	json list = cat.list();
	snap["runs"] = list;
	for (const auto &r : list["runs"])
		snap["run:" + r["id"].get<std::string>()] = run_detail(cat.run_dir(r["id"]), 0);
	for (const auto &m : list["matrices"]) {
		const std::string md = cat.matrix_dir(m["id"]);
		snap["matrix:" + m["id"].get<std::string>()] = matrix_detail(md);
		snap["masks:" + m["id"].get<std::string>()] = mask_overlap(md);
	}
	std::string html = read_file(join_path(assets, "index.html"));
	auto swap = [&](const std::string &tag, const std::string &with) {
		size_t i = html.find(tag);
		if (i == std::string::npos)
			fail("dashboard: {}: index.html lacks {}", assets, tag);
		html.replace(i, tag.size(), with);
	};
	swap("<link rel=\"stylesheet\" href=\"/uplot.css\">", "<style>" + read_file(upc) + "</style>");
	swap("<link rel=\"stylesheet\" href=\"/app.css\">",
	     "<style>" + read_file(join_path(assets, "app.css")) + "</style>");
	swap("<script src=\"/uplot.js\"></script>", "<script>" + script_safe(read_file(up)) + "</script>");
	swap("<script src=\"/app.js\"></script>",
	     "<script>window.KNLP_SNAPSHOT = " +
		     script_safe(snap.dump(-1, ' ', false, json::error_handler_t::replace)) + ";</script>\n<script>" +
		     script_safe(read_file(join_path(assets, "app.js"))) + "</script>");
	write_file_atomic(out, html);
}

bool dashboard_available()
{
#ifdef KNLP_HAVE_HTTPLIB
	return true;
#else
	return false;
#endif
}

void add_dashboard_command(CLI::App &app)
{
	command<DashboardArgs>(app, "dashboard", "Local web dashboard of runs and matrices, live while they train",
			       define_dashboard, run_dashboard);
}

} // namespace knlp
