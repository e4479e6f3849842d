// One libFuzzer binary per target: KNLP_FUZZ_TARGET names the harness (tests/fuzz/harness.h).
#include <cstring>

#include "tests/fuzz/harness.h"

#ifndef KNLP_FUZZ_TARGET
#error "define KNLP_FUZZ_TARGET"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static knlp::fuzz::Harness fn = [] {
		for (const auto &t : knlp::fuzz::targets())
			if (!std::strcmp(t.name, KNLP_FUZZ_TARGET))
				return t.fn;
		return knlp::fuzz::Harness(nullptr);
	}();
	fn(data, size);
	return 0;
}
