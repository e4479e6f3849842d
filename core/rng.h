// A small, fast, seedable generator whose whole state is one 64-bit word (splitmix64), so
// data-sampler positions are trivially saved in checkpoints and restored bit-exactly.
#pragma once
#include <cstdint>

namespace knlp {

class Rng {
public:
	explicit Rng(uint64_t seed = 0) : s_(seed) {}
	uint64_t next()
	{
		uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		return z ^ (z >> 31);
	}
	// Uniform integer in [0, n) without modulo bias (n > 0).
	uint64_t below(uint64_t n)
	{
		uint64_t limit = UINT64_MAX - UINT64_MAX % n;
		uint64_t v;
		do
			v = next();
		while (v >= limit);
		return v % n;
	}
	double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
	uint64_t state() const { return s_; }
	void set_state(uint64_t s) { s_ = s; }

private:
	uint64_t s_;
};

} // namespace knlp
