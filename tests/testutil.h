// Helpers shared by the tests: temporary folders, running the knlp binary, file access.
#pragma once
#include "core/fsutil.h"
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"

namespace knlp::test {

struct TempDir {
	std::string path;
	TempDir()
	{
		char tmpl[] = "/tmp/knlp-test-XXXXXX";
		path = mkdtemp(tmpl);
	}
	~TempDir()
	{
		try { // not std::filesystem::remove_all: it crashes in GCC 13 builds against libtorch 2.11
			knlp::remove_tree(path);
		} catch (...) {
		}
	}
	std::string operator/(const std::string &name) const { return path + "/" + name; }
};

inline void write(const std::string &path, const std::string &data)
{
	std::filesystem::create_directories(std::filesystem::path(path).parent_path());
	std::ofstream f(path, std::ios::binary);
	f << data;
}

inline std::string slurp(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	std::stringstream ss;
	ss << f.rdbuf();
	return ss.str();
}

struct RunResult {
	int status = -1;
	std::string output; // stdout + stderr
};

// Run a shell command, capturing its output and exit status.
// Tests pin the CPU's precision to fp32 (CONFIG_CPU_PRECISION_AUTO picks bf16 on CPUs with
// native bf16; the tests' golden numbers are fp32's). Commands inherit it.
inline const bool k_pin_cpu_fp32 = [] {
	setenv("KNLP_CPU_PRECISION", "fp32", 0);
	return true;
}();

inline RunResult run(const std::string &cmd)
{
	RunResult r;
	FILE *p = popen((cmd + " 2>&1").c_str(), "r");
	if (!p)
		return r;
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		r.output.append(buf, n);
	int st = pclose(p);
	r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return r;
}

// The message of the knlp::Error that f throws ("" when it throws none).
inline std::string error_of(const std::function<void()> &f)
{
	try {
		f();
	} catch (const Error &e) {
		return e.what();
	}
	return "";
}

inline std::string knlp_bin()
{
	const char *b = std::getenv("KNLP_BIN");
	return b ? b : "build/knlp";
}

inline std::string source_dir()
{
#ifdef KNLP_SOURCE_DIR
	return KNLP_SOURCE_DIR;
#else
	return ".";
#endif
}

} // namespace knlp::test
