// Every fuzz harness over its committed seed corpus and every regression input (inputs that
// once crashed or broke an invariant): a crash or an abort here is a regression.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/harness.h"

namespace fs = std::filesystem;

TEST(FuzzCorpus, EveryTargetRunsItsSeedsAndRegressions)
{
	const fs::path root = fs::path(KNLP_SOURCE_DIR) / "tests" / "fuzz";
	for (const auto &t : knlp::fuzz::targets()) {
		int seeds = 0;
		for (const char *kind : {"corpus", "regressions"}) {
			fs::path dir = root / kind / t.name;
			if (!fs::is_directory(dir))
				continue;
			for (const auto &e : fs::directory_iterator(dir)) {
				std::ifstream f(e.path(), std::ios::binary);
				std::string b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
				SCOPED_TRACE(e.path().string());
				t.fn(reinterpret_cast<const uint8_t *>(b.data()), b.size());
				seeds += std::string(kind) == "corpus";
			}
		}
		EXPECT_GT(seeds, 0) << "no seed corpus for fuzz target " << t.name;
	}
}
