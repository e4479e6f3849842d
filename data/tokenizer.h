// Tokenizers: text bytes in, token ids out, and back. Byte-level (vocabulary 256) and GPT-2
// byte-level BPE. Encoders keep a per-instance cache and are not thread-safe; clone() gives
// each worker thread its own encoder over the same immutable tables.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace knlp {

class Tokenizer {
public:
	virtual ~Tokenizer() = default;
	virtual std::string name() const = 0;
	virtual int vocab_size() const = 0;
	virtual int eot_id() const = 0; // -1 when the tokenizer has no end-of-text token
	// Append the ids of `text` to `out`.
	virtual void encode(std::string_view text, std::vector<uint32_t> &out) = 0;
	// Bytes of the given ids; ids outside the vocabulary are an error.
	virtual std::string decode(const uint32_t *ids, size_t n) const = 0;
	virtual std::unique_ptr<Tokenizer> clone() const = 0;

	std::vector<uint32_t> encode(std::string_view text)
	{
		std::vector<uint32_t> out;
		encode(text, out);
		return out;
	}
	std::string decode(const std::vector<uint32_t> &ids) const { return decode(ids.data(), ids.size()); }
};

std::unique_ptr<Tokenizer> make_byte_tokenizer();
// GPT-2 BPE from encoder.json and vocab.bpe inside `dir`.
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string &dir);
// Byte-level BPE from a Hugging Face tokenizer.json (`path` is the file or the model folder
// holding it): GPT-2's, Llama-3's and Qwen2's pre-tokenizers, the NFC normalizer, added and
// special tokens. name() is the absolute path, which make_tokenizer() accepts back. Encoding
// adds no special tokens (Hugging Face's add_special_tokens=False); the end-of-text token is
// <|endoftext|> or <|end_of_text|> when the vocabulary has one.
std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string &path);
// Its pre-tokenizer: "gpt2", "llama3", "qwen2" or "none" (GGUF's tokenizer.ggml.pre).
std::string hf_pretokenizer(const std::string &path);
// A folder with tokenizer.json, or a .json file.
bool is_hf_tokenizer(const std::string &path);
// "byte", "gpt2" (files looked up in vocab_dir) or a Hugging Face tokenizer (see above).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string &name, const std::string &vocab_dir);
// Default place for the GPT-2 vocabulary: $KNLP_VOCAB_DIR, else <source tree>/datasets/gpt2.
std::string default_vocab_dir();

// GPT-2's pre-tokenizer: split text into the pieces its regex matches, as [begin, end)
// byte offsets. Exposed for tests.
void gpt2_pretokenize(std::string_view text, std::vector<std::pair<size_t, size_t>> &pieces);

} // namespace knlp
