#include "core/parallel.h"
#include "prune/select.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace knlp {

namespace {

// Order-preserving map float -> uint32 (negative floats reversed, sign bit flipped).
inline uint32_t key_of(float f)
{
	uint32_t u;
	std::memcpy(&u, &f, 4);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline float float_of(uint32_t key)
{
	uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
	float f;
	std::memcpy(&f, &u, 4);
	return f;
}

struct Chunk {
	const float *p;
	int64_t n;
};

std::vector<Chunk> chunks_of(const std::vector<torch::Tensor> &scores, int64_t *total)
{
	std::vector<Chunk> out;
	*total = 0;
	const int64_t step = 1 << 18;
	for (const auto &t : scores) {
		if (t.scalar_type() != torch::kFloat || !t.is_contiguous() || !t.device().is_cpu())
			fail("threshold selection needs contiguous float32 CPU tensors");
		const float *p = t.data_ptr<float>();
		for (int64_t o = 0; o < t.numel(); o += step)
			out.push_back({p + o, std::min(step, t.numel() - o)});
		*total += t.numel();
	}
	return out;
}

// Histogram of 16 key bits (shift) over elements whose upper key bits equal `prefix`
// (when mask != 0).
std::vector<int64_t> histogram(const std::vector<Chunk> &chunks, int shift, uint32_t mask, uint32_t prefix)
{
	int nthreads = at::get_num_threads();
	std::vector<std::vector<int64_t>> local(nthreads, std::vector<int64_t>(65536, 0));
	knlp::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
		auto &h = local[at::get_thread_num()];
		for (int64_t c = b; c < e; c++) {
			const float *p = chunks[c].p;
			for (int64_t i = 0; i < chunks[c].n; i++) {
				uint32_t k = key_of(p[i]);
				if ((k & mask) == prefix)
					h[(k >> shift) & 0xffff]++;
			}
		}
	});
	std::vector<int64_t> h(65536, 0);
	for (const auto &l : local)
		for (int i = 0; i < 65536; i++)
			h[i] += l[i];
	return h;
}

} // namespace

float kth_smallest(const std::vector<torch::Tensor> &scores, int64_t k)
{
	int64_t total;
	auto chunks = chunks_of(scores, &total);
	if (k < 1 || k > total)
		fail("threshold selection: k={} outside [1, {}]", k, total);
	auto hi = histogram(chunks, 16, 0, 0);
	int64_t acc = 0;
	uint32_t top = 0;
	for (; top < 65536; top++) {
		if (acc + hi[top] >= k)
			break;
		acc += hi[top];
	}
	auto lo = histogram(chunks, 0, 0xffff0000u, top << 16);
	int64_t rank = k - acc;
	uint32_t low = 0;
	for (; low < 65536; low++) {
		if (rank <= lo[low])
			break;
		rank -= lo[low];
	}
	return float_of((top << 16) | low);
}

float sampled_kth_smallest(const std::vector<torch::Tensor> &scores, int64_t k, double fraction, Rng &rng)
{
	int64_t total;
	auto chunks = chunks_of(scores, &total);
	std::vector<int64_t> offsets;
	int64_t off = 0;
	for (const auto &t : scores) {
		offsets.push_back(off);
		off += t.numel();
	}
	int64_t n = std::max<int64_t>(1, static_cast<int64_t>(fraction * double(total)));
	std::vector<float> sample(n);
	for (auto &s : sample) {
		int64_t idx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(total)));
		size_t t = std::upper_bound(offsets.begin(), offsets.end(), idx) - offsets.begin() - 1;
		s = scores[t].data_ptr<float>()[idx - offsets[t]];
	}
	int64_t j = std::clamp<int64_t>(static_cast<int64_t>(double(k) / double(total) * double(n)), 1, n) - 1;
	std::nth_element(sample.begin(), sample.begin() + j, sample.end());
	return sample[j];
}

} // namespace knlp
