// The HellaSwag jsonl format of multiple-choice items: one JSON object per line with "ctx"
// (string), "endings" (array of at least two strings) and "label" (index of the right
// ending, a number or a numeric string). Parsing and writing only (no libtorch): the
// scoring is in train/multiple_choice.h; the parser is fuzzed (tests/fuzz, target hellaswag).
#pragma once
#include <string>
#include <vector>

namespace knlp {

struct MCItem {
	std::string ctx;
	std::vector<std::string> endings;
	int label = 0;
	int line = 0; // 1-based line in the file
};

// Errors name the file and line: malformed JSON, missing fields, label out of range.
std::vector<MCItem> read_mc_jsonl(const std::string &path);
std::vector<MCItem> parse_mc_jsonl(const std::string &text, const std::string &origin);

// One JSON object per line (HellaSwag fields ctx, endings, label); invalid UTF-8 replaced.
std::string mc_jsonl(const std::vector<MCItem> &items);

} // namespace knlp
