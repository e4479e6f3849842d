// SHA-256 (FIPS 180-4), streaming. Used for the digests in meta.json and run records.
#pragma once
#include <cstdint>
#include <string>

namespace knlp {

class Sha256 {
public:
	Sha256();
	void update(const void *data, size_t n);
	void update(const std::string &s) { update(s.data(), s.size()); }
	std::string hex(); // finishes the hash

private:
	void block(const uint8_t *p);
	uint32_t h_[8];
	uint8_t buf_[64];
	size_t buflen_ = 0;
	uint64_t total_ = 0;
};

std::string sha256_hex(const std::string &data);
std::string sha256_file(const std::string &path);

} // namespace knlp
