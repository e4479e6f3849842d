// Token files: flat little-endian uint16 (nanoGPT's format) for vocabularies up to 65,536
// ids, uint32 above (meta.json's token_bytes says which); memory-mapped and bounds-checked.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"

namespace knlp {

class TokenFile {
public:
	// Maps `path`; every id must be < vocab_size (checked once, here). token_bytes 0: the
	// width `knlp prepare` uses for this vocabulary (token_bytes_for).
	TokenFile(const std::string &path, int vocab_size, int token_bytes = 0);
	~TokenFile();
	TokenFile(const TokenFile &) = delete;
	TokenFile &operator=(const TokenFile &) = delete;

	uint64_t size() const { return n_; }
	const std::string &path() const { return path_; }
	uint32_t at(uint64_t i) const { return wide_ ? wide_[i] : data_[i]; }
	int token_bytes() const { return wide_ ? 4 : 2; }

	// Check that windows of `block` inputs (+1 target) fit.
	void require_window(int block) const;
	// B random windows: x = d[i:i+T], y = d[i+1:i+T+1], i uniform in [0, N-T-1].
	void random_batch(Rng &rng, int B, int T, int64_t *x, int64_t *y) const;
	// Window starting at `start` (for contiguous evaluation).
	void window(uint64_t start, int T, int64_t *x, int64_t *y) const;

private:
	std::string path_;
	const uint16_t *data_ = nullptr;
	const uint32_t *wide_ = nullptr;
	const void *map_ = nullptr;
	uint64_t n_ = 0;
	size_t map_len_ = 0;
};

// Bytes per token in the .bin files of a vocabulary: 2 up to 65,536 ids, else 4.
inline int token_bytes_for(int vocab_size)
{
	return vocab_size > 65536 ? 4 : 2;
}

struct DataMeta {
	bool present = false;
	std::string tokenizer;
	int vocab_size = 0;
	int eot_token = -1;
	int token_bytes = 2;
};
// meta.json of a prepared folder (present=false when there is none).
DataMeta read_data_meta(const std::string &dir);
// dir/<split>.bin for a model of model_vocab ids, checked against dir/meta.json when there is
// one: the data's vocabulary must fit the model's, and the token width is meta.json's.
std::unique_ptr<TokenFile> open_split(const std::string &dir, const std::string &split, int model_vocab);

} // namespace knlp
