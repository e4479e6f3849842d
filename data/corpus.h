// Text corpora on disk: a file or a folder tree of .txt/.rst/.md files and their .gz forms,
// listed in a deterministic (byte-wise sorted relative path) order and read one document at
// a time, so a corpus of any size streams through a fixed amount of memory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace knlp {

struct CorpusFile {
	std::string path;    // as opened
	std::string relpath; // relative to the corpus root, used for ordering and the digest
	uint64_t disk_bytes; // size on disk (compressed for .gz)
	bool gz;
};

// Resolve "linux-doc" to Debian's linux-doc-6.1 Documentation folder.
std::string resolve_corpus(const std::string &spec);
// List the text files of a corpus; errors when the path is missing or holds no text.
std::vector<CorpusFile> list_corpus(const std::string &root);

// Reads a document in pieces of about `chunk` bytes, each piece ending at a line boundary
// that cannot change GPT-2 pre-tokenization (a newline followed by a non-space byte).
class DocumentReader {
public:
	DocumentReader(const CorpusFile &f, size_t chunk = 8u << 20);
	~DocumentReader();
	DocumentReader(const DocumentReader &) = delete;
	DocumentReader &operator=(const DocumentReader &) = delete;
	// Next piece of text; false at the end of the document.
	bool next(std::string &out);
	uint64_t disk_bytes_consumed() const;

private:
	size_t raw_read(char *buf, size_t n);
	CorpusFile f_;
	size_t chunk_;
	void *gz_ = nullptr;
	int fd_ = -1;
	std::string carry_;
	bool eof_ = false;
};

// Whole (decompressed) content of one corpus file.
std::string read_document(const CorpusFile &f);

} // namespace knlp
