// Byte-level BPE shared by GPT-2's own vocabulary files (encoder.json + vocab.bpe) and
// Hugging Face tokenizer.json files. Internal to data/.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/tokenizer.h"

namespace knlp {

// The pre-tokenizer regexes knlp implements (by hand, exactly):
//   Gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:  as Llama3 with \p{N} (one digit per piece) instead of \p{N}{1,3}
//   None:   the whole text is one piece
enum class Pretok { Gpt2, Llama3, Qwen2, None };
// What \s means: JavaScript's (gpt-3-encoder, the reference of `gpt2`) or Unicode's
// White_Space (Oniguruma, the regex engine of Hugging Face's tokenizers).
enum class SpaceFlavor { JavaScript, Unicode };

void pretokenize(Pretok kind, SpaceFlavor flavor, std::string_view text,
		 std::vector<std::pair<size_t, size_t>> &pieces);

// GPT-2's printable stand-in code point for every byte (bytes_to_unicode).
const std::vector<uint32_t> &byte_to_unicode();

struct AddedToken {
	std::string content;
	uint32_t id;
	bool lstrip = false, rstrip = false, single_word = false;
};

struct BpeTables {
	std::string name;				 // what meta.json records and make_tokenizer() accepts back
	std::unordered_map<std::string, uint32_t> vocab; // raw bytes -> id
	std::vector<std::string> id_bytes;		 // id -> bytes (added: content)
	std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> merges; // (a,b) -> (rank, id)
	uint32_t byte_id[256];
	int eot = -1;
	Pretok pretok = Pretok::Gpt2;
	SpaceFlavor space = SpaceFlavor::JavaScript;
	bool nfc = false;
	bool ignore_merges = false;    // a piece that is itself a token is not split (Llama-3)
	bool add_prefix_space = false; // ByteLevel's: a space before text that lacks one
	std::vector<AddedToken> added; // split out of the text before anything else
	bool added_first_byte[256] = {};
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(std::shared_ptr<const BpeTables> t);

} // namespace knlp
