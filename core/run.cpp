#include "core/run.h"

#include <ctime>
#include <fstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/fsutil.h"
#include "version.h"

namespace knlp {

std::string code_version()
{
	return KNLP_GIT_VERSION;
}

std::string host_name()
{
	char buf[256] = {0};
	if (gethostname(buf, sizeof(buf) - 1) != 0)
		return "unknown";
	return buf;
}

CpuInfo cpu_info(const std::string &path)
{
	CpuInfo c{"unknown", "baseline", ""};
	std::ifstream f(path);
	std::string line, flags;
	while (std::getline(f, line)) {
		// "model name\t: Intel(R) ...", "flags\t\t: fpu vme ..."
		const auto colon = line.find(':');
		if (colon == std::string::npos || colon == 0)
			continue;
		const auto end = line.find_last_not_of(" \t", colon - 1);
		const std::string key = end == std::string::npos ? "" : line.substr(0, end + 1);
		const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
		if (key == "model name" && c.model == "unknown")
			c.model = value;
		else if (key == "flags" && flags.empty())
			flags = " " + value + " ";
	}
	// The widest vector extension the kernels of libtorch and oneDNN dispatch on.
	for (const char *isa : {"avx512f", "avx2", "avx", "sse4_2"})
		if (flags.find(std::string(" ") + isa + " ") != std::string::npos) {
			c.isa = isa;
			break;
		}
	for (const char *isa : {"amx_bf16", "avx512_bf16"})
		if (flags.find(std::string(" ") + isa + " ") != std::string::npos) {
			c.bf16 = isa;
			break;
		}
	return c;
}

std::string now_stamp()
{
	std::time_t t = std::time(nullptr);
	std::tm tm;
	localtime_r(&t, &tm);
	char buf[32];
	std::strftime(buf, sizeof(buf), "%Y%m%d_%H%M%S", &tm);
	return buf;
}

std::string iso_time()
{
	std::time_t t = std::time(nullptr);
	std::tm tm;
	gmtime_r(&t, &tm);
	char buf[32];
	std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

void record_run(const std::string &dir, const Config &cfg, const std::string &command,
		const std::map<std::string, std::string> &extra)
{
	make_dirs(dir);
	write_file_atomic(join_path(dir, "config"), cfg.to_text());
	// libtorch and oneDNN pick kernels by instruction set, so the same seed gives slightly
	// different numbers on another CPU family (docs/architecture.md, Reproducibility).
	const CpuInfo cpu = cpu_info();
	nlohmann::json j = {
		{"command", command},
		{"seed", cfg.settings().core.seed},
		{"project", cfg.settings().tracking.project},
		{"code_version", code_version()},
		{"host", host_name()},
		{"cpu", cpu.model},
		{"cpu_isa", cpu.isa},
		{"cpu_bf16", cpu.bf16.empty() ? "none" : cpu.bf16},
		{"started", iso_time()},
		{"config_source", cfg.source()},
		{"compiler", __VERSION__},
	};
	for (const auto &[k, v] : extra)
		j[k] = v;
	// Keep the history of starts/resumes in one file.
	std::string path = join_path(dir, "run.json");
	nlohmann::json all = nlohmann::json::array();
	if (file_exists(path)) {
		try {
			auto old = nlohmann::json::parse(read_file(path));
			if (old.is_array())
				all = old;
		} catch (...) {
		}
	}
	all.push_back(j);
	write_file_atomic(path, all.dump(2) + "\n");
}

} // namespace knlp
