#include "core/run.h"

#include <ctime>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/fsutil.h"
#include "version.h"

namespace knlp {

std::string code_version() { return KNLP_GIT_VERSION; }

std::string host_name()
{
	char buf[256] = {0};
	if (gethostname(buf, sizeof(buf) - 1) != 0)
		return "unknown";
	return buf;
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
	nlohmann::json j = {
		{"command", command},
		{"seed", cfg.get_int("SEED")},
		{"code_version", code_version()},
		{"host", host_name()},
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
