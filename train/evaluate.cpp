#include "train/evaluate.h"

#include <chrono>
#include <cmath>
#include <functional>

#include "core/progress.h"

namespace knlp {

double perplexity_of(double loss)
{
	return std::exp(std::min(loss, 20.0));
}

namespace {

// Windows of T tokens at 0, T, 2T, ... plus one aligned to the end whose already-counted
// targets are masked, so each of the N-1 targets is scored exactly once. `score` gets
// inputs and targets [B, T] (-1: not scored) and returns the summed loss and its count.
using Scorer = std::function<std::pair<double, uint64_t>(const torch::Tensor &, const torch::Tensor &)>;

EvalResult evaluate_windows(const TokenFile &data, int T, int batch, torch::Device dev, bool show, const Scorer &score)
{
	uint64_t N = data.size();
	data.require_window(1);
	if (uint64_t(T) + 1 > N)
		T = static_cast<int>(N - 1);
	std::vector<uint64_t> starts;
	for (uint64_t s = 0; s + T + 1 <= N; s += T)
		starts.push_back(s);
	uint64_t covered = starts.empty() ? 0 : starts.back() + T; // targets 1..covered done
	bool tail = covered < N - 1;
	if (tail)
		starts.push_back(N - T - 1);
	auto t0 = std::chrono::steady_clock::now();
	Progress prog("eval", static_cast<double>(starts.size()), "windows");
	double total = 0;
	uint64_t count = 0;
	for (size_t i = 0; i < starts.size(); i += batch) {
		int B = static_cast<int>(std::min<size_t>(batch, starts.size() - i));
		std::vector<int64_t> x(size_t(B) * T), y(size_t(B) * T);
		for (int b = 0; b < B; b++) {
			data.window(starts[i + b], T, &x[size_t(b) * T], &y[size_t(b) * T]);
			if (tail && i + b == starts.size() - 1)
				for (int t = 0; t < T; t++)
					if (starts[i + b] + t + 1 <= covered)
						y[size_t(b) * T + t] = -1;
		}
		auto xt = torch::from_blob(x.data(), {B, T}, torch::kLong).to(dev);
		auto yt = torch::from_blob(y.data(), {B, T}, torch::kLong).to(dev);
		auto [l, n] = score(xt, yt);
		total += l;
		count += n;
		if (show)
			prog.update(static_cast<double>(i + B));
	}
	if (show)
		prog.finish();
	EvalResult r;
	r.tokens = count;
	r.loss = count ? total / double(count) : 0.0;
	r.perplexity = perplexity_of(r.loss);
	r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	return r;
}

} // namespace

EvalResult evaluate_file(GPT2 &model, const TokenFile &data, int batch, torch::Device dev, bool show)
{
	torch::NoGradGuard ng;
	bool was_training = model->is_training();
	model->eval();
	auto r = evaluate_windows(
		data, model->config().block_size, batch, dev, show,
		[&](const torch::Tensor &xt, const torch::Tensor &yt) {
			auto logits = model->forward_all(xt).to(torch::kFloat);
			// Score over the ids the data can hold: the rows padding the
			// vocabulary to a multiple of 64 are not tokens, and llama.cpp
			// (which sees the file's vocabulary only) leaves them out of
			// its softmax too.
			int V = model->config().vocab_raw;
			if (V > 0 && V < logits.size(-1))
				logits = logits.narrow(-1, 0, V);
			auto loss = torch::nn::functional::cross_entropy(
				logits.view({-1, logits.size(-1)}), yt.view({-1}),
				torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1).reduction(
					torch::kSum));
			return std::make_pair(loss.item<double>(),
					      static_cast<uint64_t>((yt >= 0).sum().item<int64_t>()));
		});
	model->train(was_training);
	return r;
}

EvalResult evaluate_file(Llama &model, const TokenFile &data, int batch, int ctx, bool show)
{
	torch::NoGradGuard ng;
	return evaluate_windows(data, ctx, batch, torch::kCPU, show,
				[&](const torch::Tensor &xt, const torch::Tensor &yt) {
					auto [loss, n] = model->loss_sum(xt, yt);
					return std::make_pair(loss.item<double>(), static_cast<uint64_t>(n));
				});
}

} // namespace knlp
