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

TokenFile::TokenFile(const std::string &path, int vocab_size, int token_bytes) : path_(path)
{
	if (token_bytes == 0)
		token_bytes = token_bytes_for(vocab_size);
	if (token_bytes != 2 && token_bytes != 4)
		fail("{}: {} bytes per token is not supported (2 or 4)", path, token_bytes);
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
	if (bytes % token_bytes) {
		::close(fd);
		fail("{}: byte size {} is not a multiple of {} (uint{} tokens; truncated file?)", path, bytes,
		     token_bytes, 8 * token_bytes);
	}
	void *p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
	::close(fd);
	if (p == MAP_FAILED)
		fail("{}: mmap failed ({})", path, std::strerror(errno));
	map_ = p;
	n_ = bytes / token_bytes;
	map_len_ = bytes;
	::madvise(p, bytes, MADV_WILLNEED);
	// One pass to find the largest id (vectorizes well; about 10 GB/s).
	auto check = [&](const auto *d) {
		std::decay_t<decltype(d[0])> mx = 0;
		for (uint64_t i = 0; i < n_; i++)
			mx = d[i] > mx ? d[i] : mx;
		if (static_cast<int64_t>(mx) >= vocab_size) {
			uint64_t at = 0;
			while (d[at] != mx)
				at++;
			::munmap(p, bytes);
			fail("{}: token id {} at position {} is outside the vocabulary ({})", path, mx, at, vocab_size);
		}
	};
	if (token_bytes == 4) {
		wide_ = static_cast<const uint32_t *>(p);
		check(wide_);
	} else {
		data_ = static_cast<const uint16_t *>(p);
		check(data_);
	}
}

TokenFile::~TokenFile()
{
	if (map_)
		::munmap(const_cast<void *>(map_), map_len_);
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
		x[t] = at(start + t);
		y[t] = at(start + t + 1);
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
		m.token_bytes = j.value("token_bytes", 2);
	} catch (const nlohmann::json::exception &e) {
		fail("{}: malformed meta.json ({})", path, e.what());
	}
	if (m.token_bytes != 2 && m.token_bytes != 4)
		fail("{}: token_bytes {} is not 2 or 4", path, m.token_bytes);
	if (m.vocab_size <= 0 || m.vocab_size > (m.token_bytes == 2 ? 65536 : (1 << 24)))
		fail("{}: vocab_size {} is invalid for uint{} token files", path, m.vocab_size, 8 * m.token_bytes);
	if (m.token_bytes != token_bytes_for(m.vocab_size))
		fail("{}: token_bytes {} does not match vocab_size {} (expected {})", path, m.token_bytes, m.vocab_size,
		     token_bytes_for(m.vocab_size));
	m.present = true;
	return m;
}

std::unique_ptr<TokenFile> open_split(const std::string &dir, const std::string &split, int model_vocab)
{
	DataMeta m = read_data_meta(dir);
	if (m.present && m.vocab_size > model_vocab)
		fail("{}: the data's vocabulary ({} ids, tokenizer {}) is larger than the model's ({})", dir,
		     m.vocab_size, m.tokenizer, model_vocab);
	return std::make_unique<TokenFile>(join_path(dir, split + ".bin"), model_vocab, m.present ? m.token_bytes : 0);
}

} // namespace knlp
