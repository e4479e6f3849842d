#include "data/tokens.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

TokenFile::TokenFile(const std::string &path, int vocab_size) : path_(path)
{
	int fd = ::open(path.c_str(), O_RDONLY);
	if (fd < 0)
		fail("{}: cannot open token file ({}); prepare data with `make prepare`", path, std::strerror(errno));
	struct stat st;
	if (::fstat(fd, &st) != 0) {
		::close(fd);
		fail("{}: cannot stat ({})", path, std::strerror(errno));
	}
	uint64_t bytes = static_cast<uint64_t>(st.st_size);
	if (bytes == 0) {
		::close(fd);
		fail("{}: token file is empty", path);
	}
	if (bytes % 2) {
		::close(fd);
		fail("{}: odd byte size {} (uint16 tokens need an even size; truncated file?)", path, bytes);
	}
	void *p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
	::close(fd);
	if (p == MAP_FAILED)
		fail("{}: mmap failed ({})", path, std::strerror(errno));
	data_ = static_cast<const uint16_t *>(p);
	n_ = bytes / 2;
	map_len_ = bytes;
	::madvise(p, bytes, MADV_WILLNEED);
	// One pass to find the largest id (vectorizes well; about 10 GB/s).
	uint16_t mx = 0;
	for (uint64_t i = 0; i < n_; i++)
		mx = data_[i] > mx ? data_[i] : mx;
	if (mx >= vocab_size) {
		uint64_t at = 0;
		while (data_[at] != mx)
			at++;
		fail("{}: token id {} at position {} is outside the vocabulary ({})", path, mx, at, vocab_size);
	}
}

TokenFile::~TokenFile()
{
	if (data_)
		::munmap(const_cast<uint16_t *>(data_), map_len_);
}

void TokenFile::require_window(int block) const
{
	if (n_ < static_cast<uint64_t>(block) + 1)
		fail("{}: {} tokens is smaller than one window of {} + 1 tokens", path_, n_, block);
}

void TokenFile::window(uint64_t start, int T, int64_t *x, int64_t *y) const
{
	if (start + T + 1 > n_)
		fail("{}: window [{}, {}) is outside the file ({} tokens)", path_, start, start + T + 1, n_);
	for (int t = 0; t < T; t++) {
		x[t] = data_[start + t];
		y[t] = data_[start + t + 1];
	}
}

void TokenFile::random_batch(Rng &rng, int B, int T, int64_t *x, int64_t *y) const
{
	require_window(T);
	uint64_t span = n_ - T; // starts 0 .. N-T-1
	for (int b = 0; b < B; b++)
		window(rng.below(span), T, x + int64_t(b) * T, y + int64_t(b) * T);
}

DataMeta read_data_meta(const std::string &dir)
{
	DataMeta m;
	std::string path = join_path(dir, "meta.json");
	if (!file_exists(path)) {
		// A folder that `knlp prepare` was writing when it was stopped: no meta.json yet, its
		// intermediate all.bin or temporary files present. Say so rather than fail later.
		std::error_code ec;
		for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
			std::string n = it->path().filename().string();
			if (n == "all.bin" || n.find(".bin.tmp.") != std::string::npos)
				fail("{}: an unfinished `knlp prepare` ({} but no meta.json); run the preparation "
				     "again",
				     dir, n);
		}
		return m;
	}
	try {
		auto j = nlohmann::json::parse(read_file(path));
		m.tokenizer = j.at("tokenizer").get<std::string>();
		m.vocab_size = j.at("vocab_size").get<int>();
		m.eot_token = j.value("eot_token", -1);
	} catch (const nlohmann::json::exception &e) {
		fail("{}: malformed meta.json ({})", path, e.what());
	}
	if (m.vocab_size <= 0 || m.vocab_size > 65536)
		fail("{}: vocab_size {} is invalid for uint16 token files", path, m.vocab_size);
	m.present = true;
	return m;
}

} // namespace knlp
