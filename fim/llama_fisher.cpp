// The diagonal Fisher of an imported Llama-family model, with the same calibration and
// definitions as GPT-2's (fim/fisher.h), computed through the model's gradient taps: each
// weight's gradient is squared into its accumulator as the backward pass produces it, so
// memory is the (mapped) weights, one or two float32 accumulators, the window's embedding
// gradient and the activations of one window.
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "core/progress.h"
#include "data/tokens.h"
#include "fim/fisher.h"
#include "models/llama.h"

namespace knlp {

FisherResult compute_fisher(Llama &model, const TokenFile &data, const FisherOptions &o)
{
	const auto &c = model->config();
	FisherResult r = fisher_start(data, o, c.max_positions);
	auto named = model->named_weights();
	LlamaFisherTap tap;
	std::vector<torch::Tensor> acc_e, acc_t;
	for (size_t i = 0; i < named.size(); i++) {
		const auto &[name, t] = named[i];
		r.names.push_back(name);
		tap.slot[t.data_ptr()] = i;
		if (name == "model.embed_tokens.weight")
			tap.embed_slot = i;
		if (name == "lm_head.weight")
			tap.head_slot = i;
		if (o.empirical)
			acc_e.push_back(torch::zeros(t.sizes(), torch::kFloat));
		if (o.true_fisher)
			acc_t.push_back(torch::zeros(t.sizes(), torch::kFloat));
	}
	tap.tied = c.tied;
	tap.embed_grad = torch::zeros({c.vocab, c.hidden}, torch::kFloat);
	tap.anchor = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).requires_grad(true));
	struct Off {
		Llama &m;
		~Off() { m->set_fisher_tap(nullptr); }
	} off{model};
	model->set_fisher_tap(&tap);
	torch::AutoGradMode grad_on(true);
	auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed * 0x9E3779B97F4A7C15ULL + 0xF15E);
	Progress prog("fim", o.chunks, "windows");
	const int T = o.seq;
	std::vector<int64_t> xs(static_cast<size_t>(T)), ys(static_cast<size_t>(T));
	double loss_sum = 0;
	for (int w = 0; w < o.chunks; w++) {
		data.window(uint64_t(r.starts[size_t(w)]), T, xs.data(), ys.data());
		auto x = torch::from_blob(xs.data(), {1, T}, torch::kLong).clone();
		auto y = torch::from_blob(ys.data(), {T}, torch::kLong).clone();
		auto h = model->hidden(x);
		if (o.empirical) {
			tap.acc = &acc_e;
			auto loss = model->head_loss_sum(h, y) / double(T);
			double l = loss.item<double>();
			if (!std::isfinite(l))
				fail("fim: the loss of window {} (offset {} of {}) is not finite; the model holds NaN "
				     "or "
				     "infinite weights",
				     w, r.starts[size_t(w)], data.path());
			loss_sum += l;
			loss.backward({}, o.true_fisher);
			tap.flush();
		}
		if (o.true_fisher) {
			auto labels = model->sample_labels(h, gen);
			tap.acc = &acc_t;
			auto loss = model->head_loss_sum(h, labels) / double(T);
			if (!o.empirical)
				loss_sum += model->head_loss_sum(h.detach(), y).item<double>() / T;
			loss.backward();
			tap.flush();
		}
		r.tokens += T;
		fisher_window_done(r, prog, o, w, loss_sum);
	}
	fisher_finish(r, prog, o, loss_sum, acc_e, acc_t);
	return r;
}

} // namespace knlp
