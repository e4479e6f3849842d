#include "models/onednn.h"

#include <fmt/ranges.h>
#include <algorithm>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "core/error.h"
#include "core/parallel.h"

#ifdef KNLP_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace knlp::onednn {

torch::Tensor to_blocked(const torch::Tensor &x)
{
	const int64_t B = block();
	if (x.dim() != 4 || !blockable(x.size(1)))
		fail("onednn: to_blocked needs [N, C, H, W] with C a multiple of {}, got {}", B,
		     fmt::join(x.sizes(), "x"));
	const auto n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
	return x.reshape({n, c / B, B, h, w}).permute({0, 1, 3, 4, 2}).contiguous();
}

torch::Tensor from_blocked(const torch::Tensor &x)
{
	const int64_t B = block();
	if (x.dim() != 5 || x.size(4) != B)
		fail("onednn: from_blocked needs [N, C/{}, H, W, {}], got {}", B, B, fmt::join(x.sizes(), "x"));
	return x.permute({0, 1, 4, 2, 3}).reshape({x.size(0), x.size(1) * B, x.size(2), x.size(3)});
}

#ifndef KNLP_HAVE_DNNL

bool available()
{
	return false;
}

int64_t block()
{
	return 16;
}

bool uses_winograd(const torch::Tensor &, const torch::Tensor &, int64_t, int64_t)
{
	return false;
}

bool winograd_available()
{
	return false;
}

bool bf16_available()
{
	return false;
}

torch::Tensor conv2d(const torch::Tensor &, const torch::Tensor &, int64_t, int64_t, bool)
{
	fail("onednn: this knlp was built without oneDNN's headers (install libdnnl-dev and rebuild), "
	     "set CONFIG_IMAGE_ONEDNN=n");
}

torch::Tensor batch_norm(const torch::Tensor &, const torch::Tensor &, const torch::Tensor &, torch::Tensor,
			 torch::Tensor, torch::Tensor, bool, double, double, bool)
{
	fail("onednn: this knlp was built without oneDNN's headers (install libdnnl-dev and rebuild), "
	     "set CONFIG_IMAGE_ONEDNN=n");
}

#else

bool available()
{
	return true;
}

int64_t block()
{
	static const int64_t b = [] {
		const auto isa = dnnl::get_effective_cpu_isa();
		return isa >= dnnl::cpu_isa::avx512_core && isa != dnnl::cpu_isa::all ? int64_t(16) : int64_t(8);
	}();
	return b;
}

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

dnnl::engine &engine()
{
	static dnnl::engine e(dnnl::engine::kind::cpu, 0);
	return e;
}

// CPU streams run primitives synchronously on the calling thread's OpenMP team (the one
// at::set_num_threads sizes); one per thread, as streams are not shared across threads.
dnnl::stream &stream()
{
	thread_local dnnl::stream s(engine());
	return s;
}

memory mem(const memory::desc &d, const Tensor &t)
{
	return memory(d, engine(), t.data_ptr());
}

// The activations' format: block() channels innermost.
tag blocked_tag()
{
	return block() == 16 ? tag::nChw16c : tag::nChw8c;
}

// An uninitialised buffer big enough for d (blocked formats may pad; bf16 or f32).
Tensor alloc(const memory::desc &d)
{
	return torch::empty({std::max<int64_t>(1, int64_t(d.get_size()))}, torch::kByte);
}

// The activations' element type: f32, or bf16 for bf16 inputs.
memory::data_type act_type(const Tensor &x)
{
	return x.scalar_type() == torch::kBFloat16 ? memory::data_type::bf16 : memory::data_type::f32;
}

bool float_or_bf16(const Tensor &x)
{
	return x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16;
}

Tensor scratch(const memory::desc &d)
{
	return torch::empty({std::max<int64_t>(1, int64_t(d.get_size()))}, torch::kByte);
}

dnnl::primitive_attr user_scratchpad()
{
	dnnl::primitive_attr a;
	a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
	return a;
}

dnnl::reorder make_reorder(const memory::desc &from, const memory::desc &to)
{
	return dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to));
}

template <class Plan>
Plan &cached(std::unordered_map<std::string, std::unique_ptr<Plan>> &cache, std::mutex &mu, const std::string &key,
	     const std::function<std::unique_ptr<Plan>()> &make)
{
	std::lock_guard<std::mutex> g(mu);
	auto &p = cache[key];
	if (!p)
		p = make();
	return *p;
}

// ---- convolution ----------------------------------------------------------------------

// Activations (src, dst and their gradients) and the weights the primitives read are of type
// dt: f32, or bf16 with f32 accumulation. The user's weights and their gradient are f32
// plain [O, C, K, K] either way; reorders convert.
struct ConvShape {
	int64_t n, c, h, w, o, k, stride, pad;
	bool plain_src;
	bool winograd; // asked for, and the shape is one it pays on
	memory::data_type dt;
	// The weight gradient as one matrix product (gemm_weight_grad() below) instead of
	// oneDNN's backward-weights convolution: bf16 with outputs of 8x8 or fewer, where that
	// kernel is slow (ResNet-18's step 1.13-1.17x faster with the product, docs/vision.md).
	bool gemm_w;
	int64_t rows() const { return n * oh() * ow(); } // of the product: one per output pixel
	int64_t oh() const { return (h + 2 * pad - k) / stride + 1; }
	int64_t ow() const { return (w + 2 * pad - k) / stride + 1; }
	std::string key() const
	{
		return fmt::format("{}x{}x{}x{} o{} k{} s{} p{} {}{}{} {}", n, c, h, w, o, k, stride, pad, plain_src,
				   winograd, gemm_w, int(dt));
	}
	memory::desc src() const { return {{n, c, h, w}, dt, plain_src ? tag::nchw : blocked_tag()}; }
	memory::desc dst() const { return {{n, o, oh(), ow()}, dt, blocked_tag()}; }
	memory::desc wts_any() const { return {{o, c, k, k}, dt, tag::any}; }
	// The weight gradient: f32 whatever dt is (bf16 sums would lose the small updates).
	memory::desc dwts_any() const { return {{o, c, k, k}, memory::data_type::f32, tag::any}; }
	memory::desc wts_plain() const { return {{o, c, k, k}, memory::data_type::f32, tag::oihw}; }
	// gemm_w's product: f32 [O, C/B, K, K, B]
	memory::desc dw_grouped() const
	{
		return {{o, c, k, k}, memory::data_type::f32, block() == 16 ? tag::aBcd16b : tag::aBcd8b};
	}
};

struct ConvPlan {
	dnnl::convolution_forward::primitive_desc fwd_pd;
	dnnl::convolution_forward fwd;
	bool w_fwd_plain = false;
	dnnl::reorder w_to_fwd;
	dnnl::algorithm alg = dnnl::algorithm::convolution_direct;
	bool have_bwd = false; // the rest is made on first use
	dnnl::convolution_backward_data::primitive_desc bd_pd;
	dnnl::convolution_backward_data bd;
	bool w_bd_plain = false, w_bd_as_fwd = false;
	dnnl::reorder w_to_bd;
	dnnl::convolution_backward_weights::primitive_desc bw_pd;
	dnnl::convolution_backward_weights bw;
	bool dw_plain = false;
	dnnl::reorder dw_to_plain;
	// gemm_w: dW [O, C*K*K] (f32, blocked as [O, C/B, K, K, B]) = dY [O, rows] x the
	// patches [rows, C*K*K] (dt), then reordered to plain OIHW
	dnnl::matmul::primitive_desc mm_pd;
	dnnl::matmul mm;
	dnnl::reorder mm_to_plain;
};

std::mutex conv_mu;
std::unordered_map<std::string, std::unique_ptr<ConvPlan>> conv_cache;

// The forward primitive (Winograd when asked and oneDNN has it for the shape and CPU;
// direct otherwise) and its weight reorder.
std::unique_ptr<ConvPlan> make_conv_plan(const ConvShape &s)
{
	const memory::dims st{s.stride, s.stride}, pd{s.pad, s.pad};
	auto make = [&](dnnl::algorithm alg) {
		auto p = std::make_unique<ConvPlan>();
		dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, alg, s.src(), s.wts_any(), s.dst(),
						  st, pd, pd);
		p->fwd_pd = dnnl::convolution_forward::primitive_desc(d, user_scratchpad(), engine());
		p->alg = alg;
		return p;
	};
	std::unique_ptr<ConvPlan> p;
	if (s.winograd) {
		try {
			p = make(dnnl::algorithm::convolution_winograd);
		} catch (const dnnl::error &) { // no Winograd kernel here: direct it is
		}
	}
	if (!p)
		p = make(dnnl::algorithm::convolution_direct);
	p->fwd = dnnl::convolution_forward(p->fwd_pd);
	p->w_fwd_plain = p->fwd_pd.weights_desc() == s.wts_plain();
	if (!p->w_fwd_plain)
		p->w_to_fwd = make_reorder(s.wts_plain(), p->fwd_pd.weights_desc());
	return p;
}

// Backward data and weights, on first use, with the forward's algorithm (or direct, should
// oneDNN lack that algorithm's backward; the gradients are the same up to rounding).
void add_backward(const ConvShape &s, ConvPlan &p)
{
	const memory::dims st{s.stride, s.stride}, pd{s.pad, s.pad};
	auto make = [&](dnnl::algorithm alg, const dnnl::convolution_forward::primitive_desc &hint) {
		dnnl::convolution_backward_data::desc dd(alg, s.src(), s.wts_any(), s.dst(), st, pd, pd);
		p.bd_pd = dnnl::convolution_backward_data::primitive_desc(dd, user_scratchpad(), engine(), hint);
		if (s.gemm_w)
			return;
		dnnl::convolution_backward_weights::desc wd(alg, s.src(), s.dwts_any(), s.dst(), st, pd, pd);
		p.bw_pd = dnnl::convolution_backward_weights::primitive_desc(wd, user_scratchpad(), engine(), hint);
	};
	try {
		make(p.alg, p.fwd_pd);
	} catch (const dnnl::error &) {
		if (p.alg == dnnl::algorithm::convolution_direct)
			throw;
		dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training,
						  dnnl::algorithm::convolution_direct, s.src(), s.wts_any(), s.dst(),
						  st, pd, pd);
		make(dnnl::algorithm::convolution_direct,
		     dnnl::convolution_forward::primitive_desc(d, user_scratchpad(), engine()));
	}
	p.bd = dnnl::convolution_backward_data(p.bd_pd);
	p.w_bd_plain = p.bd_pd.weights_desc() == s.wts_plain();
	p.w_bd_as_fwd = p.bd_pd.weights_desc() == p.fwd_pd.weights_desc();
	if (!p.w_bd_plain && !p.w_bd_as_fwd)
		p.w_to_bd = make_reorder(s.wts_plain(), p.bd_pd.weights_desc());
	if (s.gemm_w) {
		const int64_t kk = s.c * s.k * s.k;
		dnnl::matmul::desc d(memory::desc({s.o, s.rows()}, s.dt, tag::ab),
				     memory::desc({s.rows(), kk}, s.dt, tag::ab),
				     memory::desc({s.o, kk}, memory::data_type::f32, tag::ab));
		p.mm_pd = dnnl::matmul::primitive_desc(d, user_scratchpad(), engine());
		p.mm = dnnl::matmul(p.mm_pd);
		p.mm_to_plain = make_reorder(s.dw_grouped(), s.wts_plain());
		p.have_bwd = true;
		return;
	}
	p.bw = dnnl::convolution_backward_weights(p.bw_pd);
	p.dw_plain = p.bw_pd.diff_weights_desc() == s.wts_plain();
	if (!p.dw_plain)
		p.dw_to_plain = make_reorder(p.bw_pd.diff_weights_desc(), s.wts_plain());
	p.have_bwd = true;
}

ConvPlan &conv_plan(const ConvShape &s, bool backward)
{
	ConvPlan &p = cached<ConvPlan>(conv_cache, conv_mu, s.key(), [&] { return make_conv_plan(s); });
	std::lock_guard<std::mutex> g(conv_mu);
	if (backward && !p.have_bwd)
		add_backward(s, p);
	return p;
}

ConvShape conv_shape(const Tensor &x, const Tensor &w, int64_t stride, int64_t pad, bool winograd)
{
	ConvShape s{};
	s.plain_src = x.dim() == 4;
	const int64_t B = block();
	if (!(x.dim() == 4 || (x.dim() == 5 && x.size(4) == B)) || !float_or_bf16(x) || !x.device().is_cpu())
		fail("onednn: conv2d takes a float or bf16 CPU [N, C, H, W] or blocked [N, C/{}, H, W, {}] input, got "
		     "{} {}",
		     B, B, c10::toString(x.scalar_type()), fmt::join(x.sizes(), "x"));
	s.dt = act_type(x);
	s.n = x.size(0), s.c = s.plain_src ? x.size(1) : x.size(1) * B, s.h = x.size(2), s.w = x.size(3);
	if (w.dim() != 4 || w.size(1) != s.c || w.size(2) != w.size(3) || !blockable(w.size(0)) ||
	    w.scalar_type() != torch::kFloat)
		fail("onednn: conv2d weight {} {} does not fit input {} (float, square kernel, output channels a "
		     "multiple of {})",
		     c10::toString(w.scalar_type()), w.sizes(), fmt::join(x.sizes(), "x"), B);
	s.o = w.size(0), s.k = w.size(2), s.stride = stride, s.pad = pad;
	if (s.oh() < 1 || s.ow() < 1)
		fail("onednn: conv2d input {} is smaller than its {}x{} kernel", fmt::join(x.sizes(), "x"), s.k, s.k);
	// oneDNN's F(4x4, 3x3) Winograd: 3x3, stride 1, blocked input; below 8x8 outputs it
	// gains nothing over direct convolution (docs/vision.md). oneDNN has it in f32 only.
	s.winograd = winograd && s.k == 3 && s.stride == 1 && !s.plain_src && s.h >= 8 && s.w >= 8 &&
		     s.dt == memory::data_type::f32;
	s.gemm_w = s.dt == memory::data_type::bf16 && !s.plain_src && s.oh() * s.ow() <= 64 && s.k * s.k <= 64;
	return s;
}

void run(dnnl::primitive &p, const dnnl::primitive_desc_base &pd, std::unordered_map<int, memory> args)
{
	Tensor sp = scratch(pd.scratchpad_desc());
	args.emplace(DNNL_ARG_SCRATCHPAD, mem(pd.scratchpad_desc(), sp));
	try {
		p.execute(stream(), args);
		stream().wait();
	} catch (const dnnl::error &e) {
		fail("onednn: {} (status {}, {})", e.what(), int(e.status), pd.impl_info_str());
	}
}

void reorder_into(dnnl::reorder &r, const memory::desc &from, const Tensor &src, const memory::desc &to,
		  const Tensor &dst)
{
	r.execute(stream(), {{DNNL_ARG_FROM, mem(from, src)}, {DNNL_ARG_TO, mem(to, dst)}});
	stream().wait();
}

// The input patches as rows [N*OH*OW, C*K*K], one per output pixel, zeros in the padding.
// x is blocked [N, C/B, H, W, B], channel c = cb * B + j, and the columns keep that
// grouping: (cb, kernel row, kernel column, j), so that each tap copies B contiguous
// values. The product dY [O, rows] x rows is then dW in the weights' blocked layout
// [O, C/B, K, K, B] (oneDNN's aBcd16b or aBcd8b), one reorder from plain OIHW.
template <class T> void fill_gemm_rows(const T *x, T *r, const ConvShape &s)
{
	const int64_t B = block(), K = s.k, KK = K * K, CB = s.c / B, cols = s.c * KK, oh = s.oh(), ow = s.ow();
	knlp::parallel_for(0, s.rows(), 8, [&](int64_t begin, int64_t end) {
		for (int64_t row = begin; row < end; row++) {
			const int64_t n = row / (oh * ow), y0 = (row / ow) % oh * s.stride - s.pad,
				      x0 = row % ow * s.stride - s.pad;
			T *o = r + row * cols;
			for (int64_t kh = 0; kh < K; kh++)
				for (int64_t kw = 0; kw < K; kw++) {
					const int64_t iy = y0 + kh, ix = x0 + kw, t = kh * K + kw;
					if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) {
						for (int64_t cb = 0; cb < CB; cb++)
							std::fill_n(o + (cb * KK + t) * B, B, T(0));
						continue;
					}
					const T *in = x + ((n * CB * s.h + iy) * s.w + ix) * B;
					for (int64_t cb = 0; cb < CB; cb++)
						std::copy_n(in + cb * s.h * s.w * B, B, o + (cb * KK + t) * B);
				}
		}
	});
}

// dY blocked [N, O/B, OH, OW, B] as the matrix [O, N*OH*OW].
template <class T> void fill_gemm_dy(const T *g, T *d, const ConvShape &s)
{
	const int64_t B = block(), S = s.oh() * s.ow(), M = s.rows(), OB = s.o / B;
	knlp::parallel_for(0, OB, 1, [&](int64_t begin, int64_t end) {
		for (int64_t ob = begin; ob < end; ob++)
			for (int64_t n = 0; n < s.n; n++)
				for (int64_t i = 0; i < S; i++) {
					const T *in = g + ((n * OB + ob) * S + i) * B;
					for (int64_t j = 0; j < B; j++)
						d[(ob * B + j) * M + n * S + i] = in[j];
				}
	});
}

// The weight gradient of the convolution s as one matrix product (gemm_w).
void gemm_weight_grad(ConvPlan &p, const ConvShape &s, const Tensor &x, const Tensor &g, const Tensor &gw)
{
	const int64_t kk = s.c * s.k * s.k;
	Tensor rows = torch::empty({s.rows(), kk}, x.options()), dy = torch::empty({s.o, s.rows()}, x.options());
	Tensor grouped = torch::empty({s.o, kk});
	if (s.dt == memory::data_type::bf16) {
		fill_gemm_rows(static_cast<const uint16_t *>(x.data_ptr()), static_cast<uint16_t *>(rows.data_ptr()),
			       s);
		fill_gemm_dy(static_cast<const uint16_t *>(g.data_ptr()), static_cast<uint16_t *>(dy.data_ptr()), s);
	} else {
		fill_gemm_rows(x.data_ptr<float>(), rows.data_ptr<float>(), s);
		fill_gemm_dy(g.data_ptr<float>(), dy.data_ptr<float>(), s);
	}
	run(p.mm, p.mm_pd,
	    {{DNNL_ARG_SRC, mem(memory::desc({s.o, s.rows()}, s.dt, tag::ab), dy)},
	     {DNNL_ARG_WEIGHTS, mem(memory::desc({s.rows(), kk}, s.dt, tag::ab), rows)},
	     {DNNL_ARG_DST, mem(memory::desc({s.o, kk}, memory::data_type::f32, tag::ab), grouped)}});
	reorder_into(p.mm_to_plain, s.dw_grouped(), grouped, s.wts_plain(), gw);
}

struct ConvFn : public torch::autograd::Function<ConvFn> {
	static Tensor forward(AutogradContext *ctx, const Tensor &xin, const Tensor &win, int64_t stride, int64_t pad,
			      bool winograd)
	{
		Tensor x = xin.contiguous(), w = win.contiguous();
		const ConvShape s = conv_shape(x, w, stride, pad, winograd);
		ConvPlan &p = conv_plan(s, false);
		Tensor wf = w;
		if (!p.w_fwd_plain) {
			wf = alloc(p.fwd_pd.weights_desc());
			reorder_into(p.w_to_fwd, s.wts_plain(), w, p.fwd_pd.weights_desc(), wf);
		}
		Tensor y = torch::empty({s.n, s.o / block(), s.oh(), s.ow(), block()}, x.options());
		run(p.fwd, p.fwd_pd,
		    {{DNNL_ARG_SRC, mem(s.src(), x)},
		     {DNNL_ARG_WEIGHTS, mem(p.fwd_pd.weights_desc(), wf)},
		     {DNNL_ARG_DST, mem(s.dst(), y)}});
		ctx->save_for_backward({x, w});
		ctx->saved_data["wf"] = wf;
		ctx->saved_data["stride"] = stride;
		ctx->saved_data["pad"] = pad;
		ctx->saved_data["winograd"] = winograd;
		return y;
	}

	static variable_list backward(AutogradContext *ctx, variable_list grads)
	{
		auto saved = ctx->get_saved_variables();
		const Tensor &x = saved[0], &w = saved[1];
		const ConvShape s = conv_shape(x, w, ctx->saved_data["stride"].toInt(), ctx->saved_data["pad"].toInt(),
					       ctx->saved_data["winograd"].toBool());
		ConvPlan &p = conv_plan(s, true);
		const Tensor g = grads[0].to(x.scalar_type()).contiguous();
		Tensor gx, gw;
		if (ctx->needs_input_grad(0)) {
			Tensor wb = w;
			if (p.w_bd_as_fwd) {
				wb = ctx->saved_data["wf"].toTensor();
			} else if (!p.w_bd_plain) {
				wb = alloc(p.bd_pd.weights_desc());
				reorder_into(p.w_to_bd, s.wts_plain(), w, p.bd_pd.weights_desc(), wb);
			}
			gx = torch::empty_like(x);
			run(p.bd, p.bd_pd,
			    {{DNNL_ARG_DIFF_DST, mem(s.dst(), g)},
			     {DNNL_ARG_WEIGHTS, mem(p.bd_pd.weights_desc(), wb)},
			     {DNNL_ARG_DIFF_SRC, mem(s.src(), gx)}});
		}
		if (ctx->needs_input_grad(1) && s.gemm_w) {
			gw = torch::empty({s.o, s.c, s.k, s.k});
			gemm_weight_grad(p, s, x, g, gw);
		} else if (ctx->needs_input_grad(1)) {
			gw = torch::empty({s.o, s.c, s.k, s.k});
			Tensor gwb = p.dw_plain ? gw : alloc(p.bw_pd.diff_weights_desc());
			run(p.bw, p.bw_pd,
			    {{DNNL_ARG_SRC, mem(s.src(), x)},
			     {DNNL_ARG_DIFF_DST, mem(s.dst(), g)},
			     {DNNL_ARG_DIFF_WEIGHTS, mem(p.bw_pd.diff_weights_desc(), gwb)}});
			if (!p.dw_plain)
				reorder_into(p.dw_to_plain, p.bw_pd.diff_weights_desc(), gwb, s.wts_plain(), gw);
		}
		return {gx, gw, Tensor(), Tensor(), Tensor()};
	}
};

// ---- batch norm (+ ReLU) ----------------------------------------------------------------

// Data (and its gradient) of type dt, f32 or bf16; scale, shift, mean and variance f32.
struct BnShape {
	int64_t n, c, h, w;
	bool batch_stats, relu, grad;
	float eps;
	memory::data_type dt;
	std::string key() const
	{
		return fmt::format("{}x{}x{}x{} {}{}{} {} {}", n, c, h, w, batch_stats, relu, grad, eps, int(dt));
	}
	memory::desc data() const { return {{n, c, h, w}, dt, blocked_tag()}; }
	memory::desc vec() const { return {{c}, memory::data_type::f32, tag::x}; }
	dnnl::normalization_flags flags() const
	{
		auto f = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
		if (relu)
			f = f | dnnl::normalization_flags::fuse_norm_relu;
		if (!batch_stats)
			f = f | dnnl::normalization_flags::use_global_stats;
		return f;
	}
};

struct BnPlan {
	dnnl::batch_normalization_forward::primitive_desc fwd_pd;
	dnnl::batch_normalization_forward fwd;
	bool have_bwd = false;
	dnnl::batch_normalization_backward::primitive_desc bwd_pd;
	dnnl::batch_normalization_backward bwd;
};

std::mutex bn_mu;
std::unordered_map<std::string, std::unique_ptr<BnPlan>> bn_cache;

BnPlan &bn_plan(const BnShape &s, bool backward)
{
	auto &p = cached<BnPlan>(bn_cache, bn_mu, s.key(), [&] {
		auto p = std::make_unique<BnPlan>();
		// forward_training also when the running statistics normalise but gradients are
		// wanted: only it keeps the ReLU workspace the backward pass reads.
		auto prop = s.batch_stats || s.grad ? dnnl::prop_kind::forward_training
						    : dnnl::prop_kind::forward_inference;
		dnnl::batch_normalization_forward::desc d(prop, s.data(), s.eps, s.flags());
		p->fwd_pd = dnnl::batch_normalization_forward::primitive_desc(d, user_scratchpad(), engine());
		p->fwd = dnnl::batch_normalization_forward(p->fwd_pd);
		return p;
	});
	std::lock_guard<std::mutex> g(bn_mu);
	if (backward && !p.have_bwd) {
		dnnl::batch_normalization_backward::desc d(dnnl::prop_kind::backward, s.data(), s.data(), s.eps,
							   s.flags());
		p.bwd_pd = dnnl::batch_normalization_backward::primitive_desc(d, user_scratchpad(), engine(), p.fwd_pd);
		p.bwd = dnnl::batch_normalization_backward(p.bwd_pd);
		p.have_bwd = true;
	}
	return p;
}

BnShape bn_shape(const Tensor &x, bool batch_stats, bool relu, bool grad, double eps)
{
	const int64_t B = block();
	if (x.dim() != 5 || x.size(4) != B || !float_or_bf16(x) || !x.device().is_cpu())
		fail("onednn: batch_norm takes a float or bf16 CPU blocked [N, C/{}, H, W, {}] input, got {} {}", B, B,
		     c10::toString(x.scalar_type()), fmt::join(x.sizes(), "x"));
	return {x.size(0), x.size(1) * B, x.size(2), x.size(3), batch_stats, relu, grad, float(eps), act_type(x)};
}

struct BnFn : public torch::autograd::Function<BnFn> {
	// batch_stats: normalise with the batch's statistics and fold them into run_mean and
	// run_var (in place, libtorch's rule: unbiased variance, weight momentum); otherwise
	// normalise with run_mean and run_var.
	static Tensor forward(AutogradContext *ctx, const Tensor &xin, const Tensor &weight, const Tensor &bias,
			      Tensor run_mean, Tensor run_var, bool batch_stats, bool relu, double eps, double momentum)
	{
		Tensor x = xin.contiguous();
		const bool grad = weight.requires_grad() || bias.requires_grad() || xin.requires_grad();
		const BnShape s = bn_shape(x, batch_stats, relu, grad, eps);
		if (batch_stats && s.n * s.h * s.w < 2)
			fail("onednn: batch_norm in training needs more than one value per channel, got input {}",
			     fmt::join(x.sizes(), "x"));
		BnPlan &p = bn_plan(s, false);
		Tensor mean = batch_stats ? torch::empty({s.c}) : run_mean.contiguous().clone();
		Tensor var = batch_stats ? torch::empty({s.c}) : run_var.contiguous().clone();
		Tensor y = torch::empty_like(x);
		const Tensor wt = weight.contiguous(), bs = bias.contiguous();
		std::unordered_map<int, memory> args{
			{DNNL_ARG_SRC, mem(s.data(), x)},    {DNNL_ARG_DST, mem(s.data(), y)},
			{DNNL_ARG_MEAN, mem(s.vec(), mean)}, {DNNL_ARG_VARIANCE, mem(s.vec(), var)},
			{DNNL_ARG_SCALE, mem(s.vec(), wt)},  {DNNL_ARG_SHIFT, mem(s.vec(), bs)}};
		Tensor ws;
		if (relu && (batch_stats || grad)) {
			ws = torch::empty({std::max<int64_t>(1, int64_t(p.fwd_pd.workspace_desc().get_size()))},
					  torch::kByte);
			args.emplace(DNNL_ARG_WORKSPACE, mem(p.fwd_pd.workspace_desc(), ws));
		}
		run(p.fwd, p.fwd_pd, std::move(args));
		if (batch_stats) { // forward runs without autograd: plain in-place updates
			const double n = double(s.n * s.h * s.w);
			run_mean.mul_(1 - momentum).add_(mean, momentum);
			run_var.mul_(1 - momentum).add_(var * (n / std::max(1.0, n - 1)), momentum);
		}
		ctx->save_for_backward({x, wt, bs, mean, var, ws});
		ctx->saved_data["batch_stats"] = batch_stats;
		ctx->saved_data["relu"] = relu;
		ctx->saved_data["eps"] = eps;
		ctx->saved_data["grad"] = grad;
		return y;
	}

	static variable_list backward(AutogradContext *ctx, variable_list grads)
	{
		auto v = ctx->get_saved_variables();
		const Tensor &x = v[0], &wt = v[1], &bs = v[2], &mean = v[3], &var = v[4], &ws = v[5];
		const BnShape s = bn_shape(x, ctx->saved_data["batch_stats"].toBool(), ctx->saved_data["relu"].toBool(),
					   ctx->saved_data["grad"].toBool(), ctx->saved_data["eps"].toDouble());
		BnPlan &p = bn_plan(s, true);
		const Tensor g = grads[0].to(x.scalar_type()).contiguous();
		Tensor gx = torch::empty_like(x), gw = torch::empty({s.c}), gb = torch::empty({s.c});
		std::unordered_map<int, memory> args{
			{DNNL_ARG_SRC, mem(s.data(), x)},	{DNNL_ARG_DIFF_DST, mem(s.data(), g)},
			{DNNL_ARG_MEAN, mem(s.vec(), mean)},	{DNNL_ARG_VARIANCE, mem(s.vec(), var)},
			{DNNL_ARG_SCALE, mem(s.vec(), wt)},	{DNNL_ARG_SHIFT, mem(s.vec(), bs)},
			{DNNL_ARG_DIFF_SRC, mem(s.data(), gx)}, {DNNL_ARG_DIFF_SCALE, mem(s.vec(), gw)},
			{DNNL_ARG_DIFF_SHIFT, mem(s.vec(), gb)}};
		if (s.relu)
			args.emplace(DNNL_ARG_WORKSPACE, mem(p.bwd_pd.workspace_desc(), ws));
		run(p.bwd, p.bwd_pd, std::move(args));
		return {gx, gw, gb, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
	}
};

} // namespace

torch::Tensor conv2d(const torch::Tensor &x, const torch::Tensor &weight, int64_t stride, int64_t pad, bool winograd)
{
	return ConvFn::apply(x, weight, stride, pad, winograd);
}

bool uses_winograd(const torch::Tensor &x, const torch::Tensor &weight, int64_t stride, int64_t pad)
{
	const ConvShape s = conv_shape(x, weight, stride, pad, true);
	return s.winograd && conv_plan(s, false).alg == dnnl::algorithm::convolution_winograd;
}

bool winograd_available()
{
	static const bool yes = [] { // a layer Winograd pays on: 64 channels at 16x16
		torch::NoGradGuard ng;
		return uses_winograd(to_blocked(torch::zeros({1, 64, 16, 16})), torch::zeros({64, 64, 3, 3}), 1, 1);
	}();
	return yes;
}

bool bf16_available()
{
	static const bool yes = [] {
		// The CPU's bf16 instructions (AVX512-BF16, AMX-BF16) and oneDNN's jit kernels for
		// them: a reference implementation, or a failure to make one, means no.
		const auto isa = dnnl::get_effective_cpu_isa();
		if (isa < dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::all || block() != 16)
			return false;
		try {
			ConvShape s{1, 64, 16, 16, 64, 3, 1, 1, false, false, memory::data_type::bf16, false};
			ConvPlan &p = conv_plan(s, true);
			BnShape b{1, 64, 16, 16, true, true, true, 1e-5f, memory::data_type::bf16};
			BnPlan &q = bn_plan(b, true);
			for (const auto *pd : std::initializer_list<const dnnl::primitive_desc_base *>{
				     &p.fwd_pd, &p.bd_pd, &p.bw_pd, &q.fwd_pd, &q.bwd_pd})
				if (std::string(pd->impl_info_str()).rfind("ref", 0) == 0)
					return false;
			return true;
		} catch (const dnnl::error &) {
			return false;
		}
	}();
	return yes;
}

torch::Tensor batch_norm(const torch::Tensor &x, const torch::Tensor &weight, const torch::Tensor &bias,
			 torch::Tensor running_mean, torch::Tensor running_var, torch::Tensor num_batches_tracked,
			 bool training, double momentum, double eps, bool relu)
{
	if (!weight.defined() || !bias.defined() || !running_mean.defined() || !running_var.defined())
		fail("onednn: batch_norm needs an affine BatchNorm that tracks running statistics");
	auto f32 = [](const torch::Tensor &t) { return t.scalar_type() == torch::kFloat; };
	if (!f32(weight) || !f32(bias) || !f32(running_mean) || !f32(running_var))
		fail("onednn: batch_norm's weight, bias and running statistics must be float, got {}, {}, {}, {}",
		     c10::toString(weight.scalar_type()), c10::toString(bias.scalar_type()),
		     c10::toString(running_mean.scalar_type()), c10::toString(running_var.scalar_type()));
	if (training && num_batches_tracked.defined()) {
		torch::NoGradGuard ng;
		num_batches_tracked.add_(1);
	}
	return BnFn::apply(x, weight, bias, running_mean, running_var, training, relu, eps, momentum);
}

#endif

} // namespace knlp::onednn
