// Run records: every run gets a folder holding the resolved config, the seed, the code
// version (git describe), host and library versions, written before any work starts.
#pragma once
#include <map>
#include <string>

#include "core/config.h"

namespace knlp {

std::string code_version();   // git describe of the source tree at build time
std::string host_name();
std::string now_stamp();      // YYYYmmdd_HHMMSS, local time
std::string iso_time();       // UTC ISO 8601

// Create (or reuse, for resume) a run folder and write config + run.json into it.
void record_run(const std::string &dir, const Config &cfg, const std::string &command,
		const std::map<std::string, std::string> &extra);

} // namespace knlp
