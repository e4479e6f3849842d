#include "train/generate.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace knlp {

uint32_t sample_logits(const torch::Tensor &logits, int vocab, double temperature, int top_k, Rng &rng)
{
	if (!(temperature > 0))
		fail("sampling: temperature must be greater than 0 (got {})", temperature);
	auto l = logits.detach().to(torch::kCPU, torch::kDouble).contiguous();
	const double *p = l.data_ptr<double>();
	std::vector<double> z(p, p + vocab);
	for (double &v : z)
		v /= temperature;
	if (top_k > 0 && top_k < vocab) {
		std::vector<double> sorted(z);
		std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<double>());
		double kth = sorted[top_k - 1];
		for (double &v : z)
			if (v < kth)
				v = -INFINITY;
	}
	double mx = *std::max_element(z.begin(), z.end());
	double total = 0;
	for (double &v : z) {
		v = std::exp(v - mx);
		total += v;
	}
	double u = rng.uniform() * total, acc = 0;
	for (int i = 0; i < vocab; i++) {
		acc += z[i];
		if (u < acc && z[i] > 0)
			return static_cast<uint32_t>(i);
	}
	for (int i = vocab - 1; i >= 0; i--)
		if (z[i] > 0)
			return static_cast<uint32_t>(i);
	return 0;
}

std::vector<uint32_t> generate(GPT2 &model, const std::vector<uint32_t> &prompt, const SampleOptions &opt, Rng &rng,
			       torch::Device dev, int64_t *peak_cache_bytes)
{
	torch::NoGradGuard ng;
	bool was_training = model->is_training();
	model->eval();
	const auto &c = model->config();
	std::vector<uint32_t> ctx = prompt;
	if (ctx.empty())
		ctx.push_back(0);
	std::vector<uint32_t> out;
	KVCache cache;
	auto to_tensor = [&](const uint32_t *ids, size_t n) {
		std::vector<int64_t> v(ids, ids + n);
		return torch::tensor(v, torch::kLong).view({1, static_cast<int64_t>(n)}).to(dev);
	};
	// Prefill with (at most) the last block_size tokens.
	size_t start = ctx.size() > size_t(c.block_size) ? ctx.size() - c.block_size : 0;
	auto logits = model->forward_cached(to_tensor(ctx.data() + start, ctx.size() - start), cache);
	int64_t peak = cache.bytes();
	for (int i = 0; i < opt.tokens; i++) {
		uint32_t id =
			sample_logits(logits[0][logits.size(1) - 1], c.vocab_raw, opt.temperature, opt.top_k, rng);
		out.push_back(id);
		ctx.push_back(id);
		if (i + 1 == opt.tokens)
			break;
		if (cache.length() >= c.block_size) {
			// The window is full: restart the cache on the newest half of the context.
			cache = KVCache();
			size_t keep = std::max<size_t>(1, c.block_size / 2);
			logits = model->forward_cached(to_tensor(ctx.data() + ctx.size() - keep, keep), cache);
		} else {
			logits = model->forward_cached(to_tensor(&id, 1), cache);
		}
		peak = std::max(peak, cache.bytes());
	}
	if (peak_cache_bytes)
		*peak_cache_bytes = peak;
	model->train(was_training);
	return out;
}

} // namespace knlp

namespace knlp {

std::vector<uint32_t> generate(Llama &model, const std::vector<uint32_t> &prompt, const SampleOptions &opt, Rng &rng,
			       int64_t *peak_cache_bytes)
{
	torch::NoGradGuard ng;
	const auto &c = model->config();
	const int64_t window = c.max_positions;
	std::vector<uint32_t> ctx = prompt;
	if (ctx.empty())
		ctx.push_back(c.bos >= 0 ? uint32_t(c.bos) : 0);
	std::vector<uint32_t> out;
	LlamaCache cache;
	auto to_tensor = [&](const uint32_t *ids, size_t n) {
		std::vector<int64_t> v(ids, ids + n);
		return torch::tensor(v, torch::kLong).view({1, static_cast<int64_t>(n)});
	};
	size_t start = ctx.size() > size_t(window) ? ctx.size() - size_t(window) : 0;
	auto logits = model->forward_cached(to_tensor(ctx.data() + start, ctx.size() - start), cache);
	int64_t peak = cache.bytes();
	for (int i = 0; i < opt.tokens; i++) {
		uint32_t id = sample_logits(logits[0], int(c.vocab), opt.temperature, opt.top_k, rng);
		out.push_back(id);
		ctx.push_back(id);
		if (i + 1 == opt.tokens)
			break;
		if (cache.len >= window) {
			// Positions are absolute: restart on the newest half of the context.
			cache = LlamaCache();
			size_t keep = std::max<size_t>(1, size_t(window) / 2);
			logits = model->forward_cached(to_tensor(ctx.data() + ctx.size() - keep, keep), cache);
		} else {
			logits = model->forward_cached(to_tensor(&id, 1), cache);
		}
		peak = std::max(peak, cache.bytes());
	}
	if (peak_cache_bytes)
		*peak_cache_bytes = peak;
	return out;
}

} // namespace knlp
