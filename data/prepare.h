// `knlp prepare`: corpus -> nanoGPT-compatible train.bin / val.bin (little-endian uint16, or uint32
// for vocabularies above 65,536 ids)
// + meta.json. Documents are read in order, tokenized in parallel, written in order.
#pragma once
#include <cstdint>
#include <string>

namespace knlp {

struct PrepareOptions {
	std::string corpus; // path or "linux-doc"
	std::string tokenizer = "byte";
	std::string vocab_dir; // GPT-2 files; empty: default_vocab_dir()
	std::string out_dir;
	int val_percent = 10;
	int threads = 0; // 0: hardware concurrency
	bool quiet = false;
};

struct PrepareResult {
	uint64_t train_tokens = 0, val_tokens = 0, files = 0, text_bytes = 0;
	std::string train_sha256, val_sha256, source_digest;
	double seconds = 0;
};

PrepareResult prepare_corpus(const PrepareOptions &opt);

} // namespace knlp
