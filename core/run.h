// Run records: every run gets a folder holding the resolved config, the seed, the code
// version (git describe), host, CPU and library versions, written before any work starts.
#pragma once
#include <map>
#include <string>

#include "core/config.h"

namespace knlp {

std::string code_version(); // git describe of the source tree at build time
std::string host_name();

// What the numbers of a run depend on besides the code: the CPU model and the widest
// vector extension libtorch's and oneDNN's kernels can dispatch on (avx512f, avx2, avx,
// sse4_2, or baseline), from /proc/cpuinfo ("unknown" and "baseline" where it is missing).
struct CpuInfo {
	std::string model, isa;
	// Native bf16 matrix instructions: "amx_bf16", "avx512_bf16", or "" (none).
	std::string bf16;
};
CpuInfo cpu_info(const std::string &path = "/proc/cpuinfo");
std::string now_stamp(); // YYYYmmdd_HHMMSS, local time
std::string iso_time();	 // UTC ISO 8601

// Create (or reuse, for resume) a run folder and write config + run.json into it.
void record_run(const std::string &dir, const Config &cfg, const std::string &command,
		const std::map<std::string, std::string> &extra);

} // namespace knlp
