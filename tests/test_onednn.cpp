// The blocked-layout oneDNN path (models/onednn.h) against libtorch's own operators:
// convolution, batch norm (+ ReLU) and whole ResNets, forward and backward.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/run.h"
#include "core/torch_compat.h"
#include "models/onednn.h"
#include "models/vision.h"
#include "optim/optimizer.h"

using namespace knlp;

#define NEED_ONEDNN()                                                                                                  \
	do {                                                                                                           \
		if (!onednn::available())                                                                              \
			GTEST_SKIP() << "built without oneDNN's headers (libdnnl-dev)";                                \
	} while (0)

#define NEED_ONEDNN_BF16()                                                                                             \
	do {                                                                                                           \
		NEED_ONEDNN();                                                                                         \
		if (!onednn::bf16_available())                                                                         \
			GTEST_SKIP() << "no oneDNN bf16 kernels on this CPU (no AVX512-BF16 or AMX-BF16)";             \
	} while (0)

// Largest absolute difference, relative to the reference's largest magnitude.
static double rel_err(const torch::Tensor &a, const torch::Tensor &ref)
{
	return (a - ref).abs().max().item<double>() / std::max(1e-30, ref.abs().max().item<double>());
}

// A convolution case: input channels, size (square), output channels, kernel, stride,
// padding, and whether the input is plain NCHW (a stem) rather than blocked.
struct ConvCase {
	int64_t c, h, o, k, stride, pad;
	bool plain;
};

TEST(OneDnn, BlockedLayoutRoundTrip)
{
	const int64_t B = onednn::block();
	ASSERT_TRUE(B == 8 || B == 16) << B;
	auto x = torch::randn({2, 32, 3, 5});
	auto b = onednn::to_blocked(x);
	ASSERT_EQ(b.sizes(), (std::vector<int64_t>{2, 32 / B, 3, 5, B}));
	// channel B * cb + j of pixel (h, w) sits at [n, cb, h, w, j]
	EXPECT_EQ(b[1][1][2][4][3].item<float>(), x[1][B + 3][2][4].item<float>());
	EXPECT_TRUE(torch::equal(onednn::from_blocked(b), x));
	EXPECT_THROW(onednn::to_blocked(torch::randn({2, 20, 3, 3})), Error);
}

TEST(OneDnn, ConvolutionMatchesLibtorchForwardAndBackward)
{
	NEED_ONEDNN();
	torch::manual_seed(1);
	const ConvCase cases[] = {
		{3, 9, 16, 3, 1, 1, true},    // a stem: plain input, 3 channels
		{16, 8, 32, 3, 2, 1, false},  // strided 3x3
		{32, 6, 16, 1, 2, 0, false},  // 1x1 shortcut
		{16, 10, 16, 3, 1, 1, false}, // Winograd-eligible (3x3, stride 1, >= 8x8)
		{32, 12, 48, 3, 1, 1, false},
	};
	for (const auto &c : cases) {
		for (bool wino : {false, true}) {
			SCOPED_TRACE(fmt::format("c{} h{} o{} k{} s{} p{} winograd {}", c.c, c.h, c.o, c.k, c.stride,
						 c.pad, wino));
			auto x = torch::randn({3, c.c, c.h, c.h}).requires_grad_();
			auto w = (torch::randn({c.o, c.c, c.k, c.k}) * 0.2).requires_grad_();
			auto ref = torch::conv2d(x, w, {}, c.stride, c.pad);
			auto g = torch::randn_like(ref);
			(ref * g).sum().backward();
			auto gx_ref = x.grad().clone(), gw_ref = w.grad().clone();
			x.mutable_grad().reset(), w.mutable_grad().reset();

			auto xin = c.plain ? x : onednn::to_blocked(x);
			auto yb = onednn::conv2d(xin, w, c.stride, c.pad, wino);
			ASSERT_EQ(yb.dim(), 5);
			auto y = onednn::from_blocked(yb);
			ASSERT_EQ(y.sizes(), ref.sizes());
			(y * g).sum().backward();
			// Direct convolution: float rounding of a different summation order. Winograd:
			// its transforms add two to four times more (measured against a double reference:
			// 0.9e-6 and 1.3e-6 of the largest output, direct 0.36e-6 and 0.34e-6).
			const bool w_on = wino && onednn::uses_winograd(xin, w, c.stride, c.pad);
			const double tol = w_on ? 2e-5 : 2e-6;
			EXPECT_LT(rel_err(y, ref), tol);
			EXPECT_LT(rel_err(x.grad(), gx_ref), tol);
			EXPECT_LT(rel_err(w.grad(), gw_ref), tol);
		}
	}
}

// oneDNN's bf16 kernels exactly where the CPU has native bf16: the engine's bf16 path is
// neither missed on such a CPU nor taken (as reference code, slower than f32) elsewhere.
TEST(OneDnn, Bf16KernelsWhereTheCpuHasNativeBf16)
{
	NEED_ONEDNN();
	EXPECT_EQ(onednn::bf16_available(), !cpu_info().bf16.empty()) << "cpu bf16: '" << cpu_info().bf16 << "'";
}

// bf16 convolution against float64 on the same bf16-rounded input, weight and output
// gradient: the output and the input's gradient are rounded to bf16 once (2^-9 relative),
// the weight's gradient is float sums of exact products. The cases take each backward
// route: the stem (plain input), oneDNN's backward-weights convolution (outputs over 8x8),
// and the patch product (8x8 or fewer, with padding, strides and a 1x1 shortcut).
TEST(OneDnn, Bf16ConvolutionMatchesFloat64OnTheSameRoundedValues)
{
	NEED_ONEDNN_BF16();
	torch::manual_seed(11);
	const ConvCase cases[] = {
		{3, 9, 16, 3, 1, 1, true},    // a stem: plain input, 3 channels
		{16, 10, 16, 3, 1, 1, false}, // 10x10 outputs: oneDNN's backward weights
		{32, 12, 48, 3, 1, 1, false}, // 12x12, 48 channels: likewise
		{16, 8, 32, 3, 2, 1, false},  // 4x4 outputs: the patch product, strided
		{32, 6, 16, 1, 2, 0, false},  // 1x1 shortcut, 3x3 outputs
		{32, 4, 32, 3, 1, 1, false},  // 4x4 with padding on every side
		{16, 8, 16, 3, 1, 1, false},  // 8x8: the largest the product takes
	};
	auto bf = [](const torch::Tensor &t) { return t.to(torch::kBFloat16); };
	for (const auto &c : cases) {
		SCOPED_TRACE(fmt::format("c{} h{} o{} k{} s{} p{}", c.c, c.h, c.o, c.k, c.stride, c.pad));
		const auto x = bf(torch::randn({3, c.c, c.h, c.h}));
		const auto w = bf(torch::randn({c.o, c.c, c.k, c.k}) * 0.2).to(torch::kFloat);
		auto xd = x.to(torch::kDouble).requires_grad_(), wd = w.to(torch::kDouble).requires_grad_();
		auto ref = torch::conv2d(xd, wd, {}, c.stride, c.pad);
		const auto g = bf(torch::randn(ref.sizes()));
		(ref * g.to(torch::kDouble)).sum().backward();

		auto xin = (c.plain ? x : onednn::to_blocked(x)).detach().requires_grad_();
		auto win = w.clone().requires_grad_();
		auto yb = onednn::conv2d(xin, win, c.stride, c.pad, true);
		ASSERT_EQ(yb.scalar_type(), torch::kBFloat16);
		auto y = onednn::from_blocked(yb);
		ASSERT_EQ(y.sizes(), ref.sizes());
		(y.to(torch::kFloat) * g.to(torch::kFloat)).sum().backward();
		EXPECT_LT(rel_err(y.to(torch::kDouble), ref), 4e-3);
		ASSERT_EQ(win.grad().scalar_type(), torch::kFloat);
		EXPECT_LT(rel_err(win.grad().to(torch::kDouble), wd.grad()), 2e-5);
		if (!c.plain) {
			ASSERT_EQ(xin.grad().scalar_type(), torch::kBFloat16);
			EXPECT_LT(rel_err(onednn::from_blocked(xin.grad()).to(torch::kDouble), xd.grad()), 4e-3);
		}
	}
}

// bf16 batch norm (+ ReLU) against float64 on the same bf16 input: statistics and the
// parameters' gradients in float, the output and the input's gradient rounded to bf16.
TEST(OneDnn, Bf16BatchNormMatchesFloat64)
{
	NEED_ONEDNN_BF16();
	torch::manual_seed(12);
	for (bool relu : {true, false}) {
		SCOPED_TRACE(fmt::format("relu {}", relu));
		const auto x = (torch::randn({4, 32, 5, 5}) * 3 + 1).to(torch::kBFloat16);
		auto w = (torch::rand({32}) + 0.5).requires_grad_(), b = torch::randn({32}).requires_grad_();
		auto rm = torch::randn({32}), rv = torch::rand({32}) + 0.5;
		auto rmd = rm.to(torch::kDouble), rvd = rv.to(torch::kDouble), nbt = torch::zeros({}, torch::kLong);
		auto xd = x.to(torch::kDouble).requires_grad_();
		auto wd = w.detach().to(torch::kDouble).requires_grad_(),
		     bd = b.detach().to(torch::kDouble).requires_grad_();
		auto ref = torch::batch_norm(xd, wd, bd, rmd, rvd, true, 0.1, 1e-5, false);
		if (relu)
			ref = ref.relu();
		const auto g = torch::randn(ref.sizes()).to(torch::kBFloat16);
		(ref * g.to(torch::kDouble)).sum().backward();

		auto xin = onednn::to_blocked(x).requires_grad_();
		auto yb = onednn::batch_norm(xin, w, b, rm, rv, nbt, true, 0.1, 1e-5, relu);
		ASSERT_EQ(yb.scalar_type(), torch::kBFloat16);
		(onednn::from_blocked(yb).to(torch::kFloat) * g.to(torch::kFloat)).sum().backward();
		EXPECT_LT(rel_err(onednn::from_blocked(yb).to(torch::kDouble), ref), 4e-3);
		EXPECT_LT(rel_err(onednn::from_blocked(xin.grad()).to(torch::kDouble), xd.grad()), 8e-3);
		EXPECT_LT(rel_err(w.grad().to(torch::kDouble), wd.grad()), 1e-4);
		EXPECT_LT(rel_err(b.grad().to(torch::kDouble), bd.grad()), 1e-5);
		EXPECT_LT(rel_err(rm.to(torch::kDouble), rmd), 1e-6);
		EXPECT_LT(rel_err(rv.to(torch::kDouble), rvd), 1e-6);
	}
}

TEST(OneDnn, BatchNormMatchesLibtorchWithAndWithoutReluAndInEval)
{
	NEED_ONEDNN();
	torch::manual_seed(2);
	for (int mode = 0; mode < 3; mode++) { // training + ReLU, training, eval + ReLU
		const bool training = mode < 2, relu = mode != 1;
		SCOPED_TRACE(fmt::format("training {} relu {}", training, relu));
		auto x = (torch::randn({4, 32, 5, 5}) * 3 + 1).requires_grad_();
		auto w = (torch::rand({32}) + 0.5).requires_grad_();
		auto b = torch::randn({32}).requires_grad_();
		auto rm = torch::randn({32}), rv = torch::rand({32}) + 0.5;
		auto rm2 = rm.clone(), rv2 = rv.clone(), nbt = torch::zeros({}, torch::kLong);

		auto ref = torch::batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, false);
		if (relu)
			ref = ref.relu();
		auto g = torch::randn_like(ref);
		(ref * g).sum().backward();
		auto gx = x.grad().clone(), gw = w.grad().clone(), gb = b.grad().clone();
		x.mutable_grad().reset(), w.mutable_grad().reset(), b.mutable_grad().reset();

		auto y = onednn::from_blocked(
			onednn::batch_norm(onednn::to_blocked(x), w, b, rm2, rv2, nbt, training, 0.1, 1e-5, relu));
		(y * g).sum().backward();
		EXPECT_LT(rel_err(y, ref), 1e-5);
		EXPECT_LT(rel_err(x.grad(), gx), 1e-4);
		EXPECT_LT(rel_err(w.grad(), gw), 1e-4);
		EXPECT_LT(rel_err(b.grad(), gb), 1e-5);
		// running statistics: libtorch's update (momentum 0.1, unbiased variance)
		EXPECT_LT(rel_err(rm2, rm), 1e-6);
		EXPECT_LT(rel_err(rv2, rv), 1e-6);
		EXPECT_EQ(nbt.item<int64_t>(), training ? 1 : 0);
	}
}

TEST(OneDnn, BadShapesGetClearErrors)
{
	NEED_ONEDNN();
	auto what = [](const std::function<void()> &f) {
		try {
			f();
		} catch (const Error &e) {
			return std::string(e.what());
		}
		return std::string("no error");
	};
	auto x = onednn::to_blocked(torch::randn({2, 16, 8, 8}));
	EXPECT_NE(what([&] {
			  onednn::conv2d(x, torch::randn({16, 32, 3, 3}), 1, 1);
		  }).find("does not fit input"),
		  std::string::npos);
	EXPECT_NE(what([&] {
			  onednn::conv2d(x, torch::randn({20, 16, 3, 3}), 1, 1);
		  }).find("output channels a multiple of"),
		  std::string::npos);
	EXPECT_NE(what([&] {
			  onednn::conv2d(x, torch::randn({16, 16, 11, 11}), 1, 1);
		  }).find("smaller than"),
		  std::string::npos);
	EXPECT_NE(what([&] {
			  onednn::conv2d(x, torch::randn({16, 16, 3, 3}).to(torch::kBFloat16), 1, 1);
		  }).find("float, square kernel"),
		  std::string::npos);
	EXPECT_NE(what([&] {
			  onednn::batch_norm(x, torch::ones({16}, torch::kBFloat16), torch::zeros({16}),
					     torch::zeros({16}), torch::ones({16}), {}, true, 0.1, 1e-5, false);
		  }).find("must be float, got BFloat16, Float"),
		  std::string::npos);
	EXPECT_NE(what([&] {
			  onednn::conv2d(x.to(torch::kDouble), torch::randn({16, 16, 3, 3}), 1, 1);
		  }).find("float or bf16 CPU"),
		  std::string::npos);
	auto one = onednn::to_blocked(torch::randn({1, 16, 1, 1}));
	auto w = torch::ones({16}), b = torch::zeros({16}), rm = torch::zeros({16}), rv = torch::ones({16});
	EXPECT_NE(what([&] {
			  onednn::batch_norm(one, w, b, rm, rv, {}, true, 0.1, 1e-5, false);
		  }).find("more than one value per channel"),
		  std::string::npos);
}

// One model per engine from the same seed (same initial weights), and libtorch's path in
// double precision as the reference: the blocked path's forward pass, gradients and
// batch-norm statistics must be about as close to it as libtorch's own float path is.
// (Batch norm over small batches makes deep gradients ill-conditioned: in float, either
// engine's differ from double's by up to a few percent; the comparison is relative.)
// bf16: both engines under CPU bf16 autocast (the blocked one then runs its bf16 path), each
// compared with the double reference; the blocked path must be about as close as libtorch's
// own bf16 path is.
static void compare_engines(const std::string &arch, int64_t batch, bool winograd, double slack, bool bf16 = false)
{
	VisionConfig a;
	a.arch = arch, a.in_channels = 3, a.num_classes = 10, a.onednn = true, a.winograd = winograd;
	VisionConfig b = a;
	b.onednn = false;
	torch::manual_seed(7);
	auto ma = make_vision_model(a);
	torch::manual_seed(7);
	auto mb = make_vision_model(b);
	torch::manual_seed(7);
	auto md = make_vision_model(b);
	md->to(torch::kDouble);
	EXPECT_EQ(ma->engine(bf16), bf16				       ? "onednn-blocked-bf16"
				    : winograd && onednn::winograd_available() ? "onednn-blocked-winograd"
									       : "onednn-blocked");
	EXPECT_EQ(mb->engine(bf16), "libtorch");
	auto x = torch::randn({batch, 3, 32, 32});
	auto y = torch::randint(0, 10, {batch}, torch::kLong);
	auto fwd = [&](VisionModel &m) {
		compat::AutocastGuard ag(torch::kCPU, bf16, torch::kBFloat16);
		return m.forward(x).to(torch::kFloat);
	};
	auto la = fwd(*ma), lb = fwd(*mb), ld = md->forward(x.to(torch::kDouble));
	auto check = [&](const std::string &what, const torch::Tensor &ta, const torch::Tensor &tb,
			 const torch::Tensor &td) {
		SCOPED_TRACE(what);
		const double ea = rel_err(ta.to(torch::kDouble), td), eb = rel_err(tb.to(torch::kDouble), td);
		EXPECT_LT(ea, slack * eb + 1e-5) << "onednn " << ea << ", libtorch float " << eb;
	};
	check("logits", la, lb, ld);
	torch::nn::functional::cross_entropy(la, y).backward();
	torch::nn::functional::cross_entropy(lb, y).backward();
	torch::nn::functional::cross_entropy(ld, y).backward();
	auto pa = ma->named_parameters(), pb = mb->named_parameters(), pd = md->named_parameters();
	ASSERT_EQ(pa.size(), pb.size());
	for (size_t i = 0; i < pa.size(); i++) {
		ASSERT_TRUE(pa[i].value().grad().defined());
		check(pa[i].key() + ".grad", pa[i].value().grad(), pb[i].value().grad(), pd[i].value().grad());
	}
	auto ba = ma->named_buffers(), bb = mb->named_buffers(), bd = md->named_buffers();
	for (size_t i = 0; i < ba.size(); i++) {
		if (ba[i].value().scalar_type() == torch::kLong)
			EXPECT_TRUE(torch::equal(ba[i].value(), bb[i].value())) << ba[i].key();
		else
			check(ba[i].key(), ba[i].value(), bb[i].value(), bd[i].value());
	}
	torch::NoGradGuard ng;
	ma->eval(), mb->eval(), md->eval();
	check("eval logits", fwd(*ma), fwd(*mb), md->forward(x.to(torch::kDouble)));
}

TEST(OneDnn, ResNet18MatchesTheLibtorchPath)
{
	NEED_ONEDNN();
	compare_engines("resnet18", 4, false, 3);
}

TEST(OneDnn, ResNet18WithWinogradMatchesTheLibtorchPath)
{
	NEED_ONEDNN();
	compare_engines("resnet18", 4, true, 10);
}

TEST(OneDnn, ResNet50MatchesTheLibtorchPath)
{
	NEED_ONEDNN();
	compare_engines("resnet50", 2, true, 10);
}

TEST(OneDnn, ResNet18InBf16MatchesLibtorchsBf16Path)
{
	NEED_ONEDNN_BF16();
	compare_engines("resnet18", 4, true, 3, true);
}

TEST(OneDnn, ResNet50InBf16MatchesLibtorchsBf16Path)
{
	NEED_ONEDNN_BF16();
	compare_engines("resnet50", 2, true, 3, true);
}

// Training on the blocked path is deterministic: two runs from one seed agree bit for bit
// (what exact resume relies on), and the loss goes down.
static void train_twice(bool bf16)
{
	auto run = [bf16] {
		VisionConfig c;
		c.arch = "resnet18", c.in_channels = 3, c.num_classes = 10;
		torch::manual_seed(3);
		auto m = make_vision_model(c);
		auto x = torch::randn({8, 3, 32, 32});
		auto y = torch::randint(0, 10, {8}, torch::kLong);
		std::vector<std::pair<std::string, torch::Tensor>> named;
		for (auto &p : m->named_parameters())
			named.emplace_back(p.key(), p.value());
		OptimizerOptions oo;
		oo.name = "adamw";
		Optimizer opt(named, oo);
		std::vector<float> losses;
		for (int i = 0; i < 4; i++) {
			torch::Tensor out;
			{
				compat::AutocastGuard ag(torch::kCPU, bf16, torch::kBFloat16);
				out = m->forward(x);
			}
			auto loss = torch::nn::functional::cross_entropy(out.to(torch::kFloat), y);
			losses.push_back(loss.item<float>());
			loss.backward();
			opt.step(1e-3, 1.0);
			for (auto &s : opt.state())
				s.param.mutable_grad().reset();
		}
		return std::make_pair(losses,
				      torch::cat({m->parameters()[0].flatten(), m->parameters().back().flatten()}));
	};
	auto [l1, w1] = run();
	auto [l2, w2] = run();
	EXPECT_EQ(l1, l2);
	EXPECT_TRUE(torch::equal(w1, w2));
	EXPECT_LT(l1.back(), l1.front());
}

TEST(OneDnn, ResNetTrainingIsDeterministicAndLearns)
{
	NEED_ONEDNN();
	train_twice(false);
}

TEST(OneDnn, ResNetTrainingInBf16IsDeterministicAndLearns)
{
	NEED_ONEDNN_BF16();
	train_twice(true);
}
