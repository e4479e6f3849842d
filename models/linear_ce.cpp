#include "models/linear_ce.h"

#include <algorithm>

#include <c10/core/impl/LocalDispatchKeySet.h>

#include "models/fused.h"
#include "models/gemm.h"

namespace knlp {

int64_t linear_cross_entropy_rows(int64_t N, int64_t V)
{
	// Every chunk adds its share of w's gradient into one [V, C] float32 buffer (a read and a
	// write of all of it) and makes the GEMMs pack w again, so on both devices fewer, larger
	// chunks are faster: on the CPU at shape (a) one chunk of 768 rows beat five of about
	// 160 by 3-5%, and at 3072 rows chunks of 1024 beat chunks of 166 by 8-14%
	// (docs/performance.md). The cap of 2^26 logits (256 MB in float32) is what keeps the
	// [N, V] tensor from existing in full on big batches. At least 256 rows either way.
	const int64_t budget = int64_t(1) << 26;
	return std::min<int64_t>(N, std::max<int64_t>(256, budget / std::max<int64_t>(V, 1)));
}

namespace {

// Mean loss; with want_grad also the gradients of x and w (for a loss weight of 1).
torch::Tensor chunked_loss(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &targets,
			   at::ScalarType compute, int64_t rows, bool vocab_blocks, bool want_grad,
			   torch::Tensor *gx_out, torch::Tensor *gw_out)
{
	// The casts below are explicit; autocast must not recast the float32 statistics.
	c10::impl::ExcludeDispatchKeyGuard no_autocast(
		c10::DispatchKeySet({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA}));
	const int64_t N = x.size(0), V = w.size(0);
	const bool low = compute != at::kFloat || x.scalar_type() != at::kFloat;
	auto valid = targets.ne(-1);
	// Counts and sums stay on the device: no host synchronisation inside the step.
	auto n = valid.sum().clamp_min(1); // all ignored: every row weighs 0, the loss is 0
	auto inv_n = torch::reciprocal(n.to(torch::kFloat));
	// The CPU (where reading a count costs no synchronisation): the chunk's cross-entropy in
	// one fused kernel, its sum on the host.
	const bool cpu = x.device().is_cpu();
	const float inv_n_host = cpu ? inv_n.item<float>() : 0.0f;
	double host_total = 0;
	// Chunks of equal size (no small remainder chunk that costs a whole pass over w).
	const int64_t cap = rows > 0 ? rows : linear_cross_entropy_rows(N, V);
	const int64_t n_chunks = std::max<int64_t>(1, (N + cap - 1) / cap);
	const int64_t R = std::max<int64_t>(1, (N + n_chunks - 1) / n_chunks);
	// bf16 on a CPU with knlp's bf16 product (models/gemm.h): its products take the float32
	// x and w as they are (rounded while packed) and give float32 logits and gradients, so
	// neither w's bf16 copy nor the logits' casts exist.
	const bool own16 = cpu && low && compute == at::kBFloat16 && own_bf16_gemm_active() &&
			   (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
			   w.scalar_type() == at::kFloat && x.is_contiguous() && w.is_contiguous();
	auto wc = low && !own16 ? w.to(compute) : w;
	auto gx = want_grad ? torch::empty_like(x) : torch::Tensor();
	// The CPU in float32 (or bf16 through knlp's product): the vocabulary-blocked kernel
	// (models/fused.h), where the logits never leave the cache between their product, their
	// reduction and their gradient's products; it writes w's gradient whole in the first
	// chunk.
	const bool blocked = vocab_blocks && cpu && (!low || (own16 && x.scalar_type() == at::kFloat)) &&
			     linear_cross_entropy_blocked_applies(x, w);
	auto gw = !want_grad ? torch::Tensor() : blocked || own16 ? torch::empty_like(w) : torch::zeros_like(w);
	auto total = torch::zeros({}, x.options().dtype(torch::kDouble));
	for (int64_t r0 = 0; r0 < N; r0 += R) {
		int64_t r = std::min(R, N - r0);
		auto xc = x.narrow(0, r0, r);
		auto tc = targets.narrow(0, r0, r);
		if (blocked) {
			torch::Tensor gxc = want_grad ? gx.narrow(0, r0, r) : torch::Tensor();
			host_total += linear_cross_entropy_blocked(xc, w, tc, inv_n_host, want_grad ? &gxc : nullptr,
								   want_grad ? &gw : nullptr, r0 > 0, 0, low);
			continue;
		}
		if (own16) {
			const int64_t C = x.size(1);
			const bool xb = x.scalar_type() == at::kBFloat16;
			auto logits = torch::empty({r, V}, x.options().dtype(torch::kFloat));
			gemm_bf16(false, true, r, V, C, xc.data_ptr(), xb, C, w.data_ptr(), false, C, logits.data_ptr(),
				  false, V);
			host_total += cross_entropy_rows(logits, tc, inv_n_host, want_grad);
			if (!want_grad)
				continue;
			// gx's rows in x's dtype; w's gradient in float32, added up over the chunks.
			gemm_bf16(false, false, r, C, V, logits.data_ptr(), false, V, w.data_ptr(), false, C,
				  static_cast<char *>(gx.data_ptr()) + r0 * C * gx.element_size(), xb, C);
			gemm_bf16(true, false, V, C, r, logits.data_ptr(), false, V, xc.data_ptr(), xb, C,
				  gw.data_ptr(), false, C, nullptr, r0 > 0);
			continue;
		}
		auto xl = low ? xc.to(compute) : xc;
		auto vc = valid.narrow(0, r0, r);
		// float32 on the CPU: the products through models/gemm.h (knlp's kernel on AVX-512).
		const bool own = cpu && !low && own_gemm_active() && x.is_contiguous() && w.is_contiguous();
		torch::Tensor logits; // [r, V]
		if (own) {
			const int64_t C = x.size(1);
			logits = torch::empty({r, V}, x.options());
			sgemm(false, true, r, V, C, 1.0f, xc.data_ptr<float>(), C, w.data_ptr<float>(), C, 0.0f,
			      logits.data_ptr<float>(), V);
		} else {
			logits = torch::mm(xl, wc.t());
		}
		if (low)
			logits = logits.to(torch::kFloat);
		if (cpu) { // a row at a time while it is in cache (models/fused.h)
			host_total += cross_entropy_rows(logits, tc, inv_n_host, want_grad);
		} else {
			auto lse = torch::logsumexp(logits, 1, true);
			auto safe_t = tc.clamp_min(0).unsqueeze(1);
			auto picked = logits.gather(1, safe_t);
			total.add_(((lse - picked).squeeze(1) * vc).sum().to(torch::kDouble));
			if (want_grad) { // d loss / d logits = (softmax - onehot) / n on valid rows, 0 elsewhere
				logits.sub_(lse).exp_();
				logits.scatter_add_(1, safe_t, torch::full({r, 1}, -1.0f, logits.options()));
				logits.mul_((vc.to(logits.dtype()) * inv_n).unsqueeze(1));
			}
		}
		if (!want_grad)
			continue;
		if (low) {
			auto dl = logits.to(compute);
			gx.narrow(0, r0, r).copy_(torch::mm(dl, wc));
			gw.add_(torch::mm(dl.t(), xl));
		} else if (own) { // gx's rows are contiguous, gw accumulates over the chunks
			const int64_t C = x.size(1);
			sgemm(false, false, r, C, V, 1.0f, logits.data_ptr<float>(), V, w.data_ptr<float>(), C, 0.0f,
			      gx.data_ptr<float>() + r0 * C, C);
			sgemm(true, false, V, C, r, 1.0f, logits.data_ptr<float>(), V, xc.data_ptr<float>(), C, 1.0f,
			      gw.data_ptr<float>(), C);
		} else {
			gx.narrow(0, r0, r).copy_(torch::mm(logits, w));
			gw.addmm_(logits.t(), xc);
		}
	}
	if (want_grad)
		*gx_out = gx, *gw_out = gw;
	if (cpu)
		total.fill_(host_total);
	return (total / n.to(torch::kDouble)).to(torch::kFloat);
}

struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
	static torch::Tensor forward(torch::autograd::AutogradContext *ctx, const torch::Tensor &x,
				     const torch::Tensor &w, const torch::Tensor &targets, at::ScalarType compute,
				     int64_t rows, bool vocab_blocks)
	{
		torch::Tensor gx, gw;
		auto loss = chunked_loss(x, w, targets, compute, rows, vocab_blocks, true, &gx, &gw);
		ctx->save_for_backward({gx, gw});
		return loss;
	}

	static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
						     torch::autograd::tensor_list grad_out)
	{
		auto saved = ctx->get_saved_variables();
		auto g = grad_out[0];
		// The usual case, loss.backward() on the CPU: a loss weight of exactly 1 needs no
		// pass over w's [V, C] gradient (reading it costs nothing there; on CUDA it would
		// be a synchronisation, so the product stays).
		if (g.device().is_cpu() && g.numel() == 1 && g.item<double>() == 1.0)
			return {saved[0], saved[1], torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
		return {saved[0] * g.to(saved[0].scalar_type()),
			saved[1] * g,
			torch::Tensor(),
			torch::Tensor(),
			torch::Tensor(),
			torch::Tensor()};
	}
};

} // namespace

torch::Tensor linear_cross_entropy(const torch::Tensor &x, const torch::Tensor &w, const torch::Tensor &targets,
				   at::ScalarType compute, int64_t rows_per_chunk, bool vocab_blocks)
{
	if (!torch::GradMode::is_enabled() || (!x.requires_grad() && !w.requires_grad())) {
		torch::NoGradGuard ng;
		return chunked_loss(x, w, targets, compute, rows_per_chunk, vocab_blocks, false, nullptr, nullptr);
	}
	return LinearCrossEntropy::apply(x, w, targets, compute, rows_per_chunk, vocab_blocks);
}

} // namespace knlp
