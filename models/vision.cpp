#include "models/vision.h"

#include "core/error.h"
#include "core/torch_compat.h"
#include "models/onednn.h"
#include "models/pool.h"

namespace knlp {

namespace nn = torch::nn;

namespace {

nn::Conv2d conv(int in, int out, int k, int stride, int pad, bool bias)
{
	return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(bias));
}

// The blocked-layout path (models/onednn.h): a libtorch Conv2d's weight through oneDNN.
torch::Tensor conv_b(const nn::Conv2d &c, const torch::Tensor &x, int stride, int pad, bool winograd)
{
	return onednn::conv2d(x, c->weight, stride, pad, winograd);
}

// A libtorch BatchNorm2d's parameters and statistics through oneDNN, ReLU fused on request;
// running statistics follow BatchNorm2d's rule (momentum, or a cumulative average without).
torch::Tensor bn_b(const nn::BatchNorm2d &b, const torch::Tensor &x, bool relu)
{
	const auto &o = b->options;
	double momentum = o.momentum() ? *o.momentum() : 1.0 / double(b->num_batches_tracked.item<int64_t>() + 1);
	return onednn::batch_norm(x, b->weight, b->bias, b->running_mean, b->running_var, b->num_batches_tracked,
				  b->is_training(), momentum, o.eps(), relu);
}

// A residual block's end on the blocked path: y + shortcut(x), then ReLU in place. The
// shortcut is the identity when its convolution is absent, else 1x1 convolution + BN.
torch::Tensor residual_b(torch::Tensor y, const torch::Tensor &x, const nn::Conv2d &sc_conv,
			 const nn::BatchNorm2d &sc_bn, int stride)
{
	y += sc_conv ? bn_b(sc_bn, conv_b(sc_conv, x, stride, 0, false), false) : x;
	return y.relu_();
}

// LeNet-5 with batch norm: conv5 1->6, BN, ReLU, pool; conv5 6->16, BN, ReLU, pool -> 400;
// 400->120->84->classes. 61,750 parameters for one channel and 10 classes.
class LeNet5 : public VisionModel {
public:
	explicit LeNet5(const VisionConfig &c) : c_(c)
	{
		conv1 = register_module("conv1", conv(c.in_channels, 6, 5, 1, 0, true));
		bn1 = register_module("bn1", nn::BatchNorm2d(6));
		conv2 = register_module("conv2", conv(6, 16, 5, 1, 0, true));
		bn2 = register_module("bn2", nn::BatchNorm2d(16));
		fc1 = register_module("fc1", nn::Linear(400, 120));
		fc2 = register_module("fc2", nn::Linear(120, 84));
		fc3 = register_module("fc3", nn::Linear(84, c.num_classes));
	}
	torch::Tensor forward(const torch::Tensor &x) override
	{
		// In-place ReLU: BatchNorm's and Linear's backward need their inputs, not their
		// outputs, and ReLU's backward needs only its result, so no copy is kept.
		auto pool = [this](const torch::Tensor &t) {
			return c_.fused_pool ? relu_max_pool2x2(t) : torch::max_pool2d(torch::Tensor(t).relu_(), 2);
		};
		auto y = pool(bn1(conv1(x)));
		y = pool(bn2(conv2(y))).flatten(1);
		return fc3(fc2(fc1(y).relu_()).relu_());
	}
	const VisionConfig &config() const override { return c_; }

private:
	VisionConfig c_;
	nn::Conv2d conv1{nullptr}, conv2{nullptr};
	nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
	nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

class BasicBlock : public nn::Module {
public:
	BasicBlock(int in, int out, int stride, bool winograd) : stride_(stride), wino_(winograd)
	{
		conv1 = register_module("conv1", conv(in, out, 3, stride, 1, false));
		bn1 = register_module("bn1", nn::BatchNorm2d(out));
		conv2 = register_module("conv2", conv(out, out, 3, 1, 1, false));
		bn2 = register_module("bn2", nn::BatchNorm2d(out));
		if (stride != 1 || in != out) {
			sc_conv = conv(in, out, 1, stride, 0, false), sc_bn = nn::BatchNorm2d(out);
			shortcut = register_module("shortcut", nn::Sequential(sc_conv, sc_bn));
		}
	}
	torch::Tensor forward(const torch::Tensor &x)
	{
		// In place, as in LeNet5::forward; the residual add needs neither operand back.
		auto y = bn2(conv2(bn1(conv1(x)).relu_()));
		y += shortcut ? shortcut->forward(x) : x;
		return y.relu_();
	}
	torch::Tensor forward_blocked(const torch::Tensor &x)
	{
		auto y = bn_b(bn1, conv_b(conv1, x, stride_, 1, wino_), true);
		y = bn_b(bn2, conv_b(conv2, y, 1, 1, wino_), false);
		return residual_b(y, x, sc_conv, sc_bn, stride_);
	}

private:
	int stride_;
	bool wino_;
	nn::Conv2d conv1{nullptr}, conv2{nullptr};
	nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
	nn::Sequential shortcut{nullptr};
	nn::Conv2d sc_conv{nullptr}; // shortcut's two modules, shared with it
	nn::BatchNorm2d sc_bn{nullptr};
};

class Bottleneck : public nn::Module {
public:
	static constexpr int expansion = 4;
	Bottleneck(int in, int width, int stride, bool winograd) : stride_(stride), wino_(winograd)
	{
		int out = width * expansion;
		conv1 = register_module("conv1", conv(in, width, 1, 1, 0, false));
		bn1 = register_module("bn1", nn::BatchNorm2d(width));
		conv2 = register_module("conv2", conv(width, width, 3, stride, 1, false)); // stride on the 3x3
		bn2 = register_module("bn2", nn::BatchNorm2d(width));
		conv3 = register_module("conv3", conv(width, out, 1, 1, 0, false));
		bn3 = register_module("bn3", nn::BatchNorm2d(out));
		if (stride != 1 || in != out) {
			sc_conv = conv(in, out, 1, stride, 0, false), sc_bn = nn::BatchNorm2d(out);
			downsample = register_module("downsample", nn::Sequential(sc_conv, sc_bn));
		}
	}
	torch::Tensor forward(const torch::Tensor &x)
	{
		auto y = bn1(conv1(x)).relu_();
		y = bn2(conv2(y)).relu_();
		y = bn3(conv3(y));
		y += downsample ? downsample->forward(x) : x;
		return y.relu_();
	}
	torch::Tensor forward_blocked(const torch::Tensor &x)
	{
		auto y = bn_b(bn1, conv_b(conv1, x, 1, 0, false), true);
		y = bn_b(bn2, conv_b(conv2, y, stride_, 1, wino_), true);
		y = bn_b(bn3, conv_b(conv3, y, 1, 0, false), false);
		return residual_b(y, x, sc_conv, sc_bn, stride_);
	}

private:
	int stride_;
	bool wino_;
	nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
	nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
	nn::Sequential downsample{nullptr};
	nn::Conv2d sc_conv{nullptr}; // downsample's two modules, shared with it
	nn::BatchNorm2d sc_bn{nullptr};
};

void kaiming_init(nn::Module &m)
{
	torch::NoGradGuard ng;
	for (auto &p : m.named_parameters()) {
		const auto &n = p.key();
		auto &t = p.value();
		if (t.dim() == 4)
			nn::init::kaiming_normal_(t, 0.0, torch::kFanOut, torch::kReLU);
		else if (n.find("bn") != std::string::npos || n.find("shortcut.1") != std::string::npos ||
			 n.find("downsample.1") != std::string::npos)
			n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 ? t.fill_(1.0) : t.zero_();
	}
}

class ResNet : public VisionModel {
public:
	explicit ResNet(const VisionConfig &c) : c_(c)
	{
		bool deep = c.arch == "resnet50";
		if (deep) {
			conv1 = register_module("conv1", conv(c.in_channels, 64, 7, 2, 3, false));
		} else {
			conv1 = register_module("conv1", conv(c.in_channels, 64, 3, 1, 1, false));
		}
		bn1 = register_module("bn1", nn::BatchNorm2d(64));
		const int blocks18[4] = {2, 2, 2, 2}, blocks50[4] = {3, 4, 6, 3};
		int in = 64;
		for (int s = 0; s < 4; s++) {
			int width = 64 << s, stride = s == 0 ? 1 : 2;
			nn::Sequential layer;
			for (int b = 0; b < (deep ? blocks50[s] : blocks18[s]); b++) {
				if (deep) {
					auto blk = std::make_shared<Bottleneck>(in, width, b == 0 ? stride : 1,
										c.winograd);
					layer->push_back(blk);
					bottlenecks_.push_back(blk);
					in = width * Bottleneck::expansion;
				} else {
					auto blk = std::make_shared<BasicBlock>(in, width, b == 0 ? stride : 1,
										c.winograd);
					layer->push_back(blk);
					basics_.push_back(blk);
					in = width;
				}
			}
			layers_[s] = register_module("layer" + std::to_string(s + 1), layer);
		}
		fc = register_module("fc", nn::Linear(in, c.num_classes));
		deep_ = deep;
		kaiming_init(*this);
	}
	torch::Tensor forward(const torch::Tensor &x) override
	{
		if (blocked())
			return forward_blocked(x);
		auto y = bn1(conv1(x)).relu_();
		if (deep_)
			y = torch::max_pool2d(y, 3, 2, 1);
		for (auto &l : layers_)
			y = l->forward(y);
		return fc(torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1));
	}
	const VisionConfig &config() const override { return c_; }
	std::string engine(bool bf16) const override
	{
		if (!blocked())
			return "libtorch";
		if (bf16 && onednn::bf16_available())
			return "onednn-blocked-bf16";
		return c_.winograd && onednn::winograd_available() ? "onednn-blocked-winograd" : "onednn-blocked";
	}

private:
	// oneDNN's blocked path: asked for, built in, and the weights are float on the CPU.
	bool blocked() const
	{
		const auto &w = conv1->weight;
		return c_.onednn && onednn::available() && w.device().is_cpu() && w.scalar_type() == torch::kFloat;
	}

	// Activations blocked from the stem's output to the pooling head: [N, C/B, H, W, B].
	// Under CPU bf16 autocast, where oneDNN has bf16 kernels, they are bf16 (the input is
	// rounded to bf16 at the stem); weights, their gradients and batch-norm statistics stay
	// float.
	torch::Tensor forward_blocked(const torch::Tensor &xin)
	{
		const bool bf16 =
			compat::autocast_compute_dtype(torch::kCPU) == torch::kBFloat16 && onednn::bf16_available();
		const torch::Tensor x = bf16 ? xin.to(torch::kBFloat16) : xin;
		auto y = bn_b(bn1, conv_b(conv1, x, deep_ ? 2 : 1, deep_ ? 3 : 1, false), true);
		if (deep_) // max pooling is libtorch's, between two layout changes
			y = onednn::to_blocked(torch::max_pool2d(onednn::from_blocked(y), 3, 2, 1));
		for (auto &b : basics_)
			y = b->forward_blocked(y);
		for (auto &b : bottlenecks_)
			y = b->forward_blocked(y);
		// Global average pooling: blocked channel cb * B + j sits at [:, cb, :, :, j].
		y = y.mean({2, 3}).reshape({y.size(0), y.size(1) * onednn::block()});
		return fc(y);
	}

	VisionConfig c_;
	std::vector<std::shared_ptr<BasicBlock>> basics_;
	std::vector<std::shared_ptr<Bottleneck>> bottlenecks_;
	bool deep_ = false;
	nn::Conv2d conv1{nullptr};
	nn::BatchNorm2d bn1{nullptr};
	nn::Sequential layers_[4] = {nullptr, nullptr, nullptr, nullptr};
	nn::Linear fc{nullptr};
};

} // namespace

int64_t count_parameters(torch::nn::Module &m)
{
	int64_t n = 0;
	for (const auto &p : m.parameters())
		n += p.numel();
	return n;
}

int64_t VisionConfig::expected_params(const VisionConfig &c)
{
	const int64_t ch = c.in_channels, k = c.num_classes;
	auto bn = [](int64_t n) { return 2 * n; };
	if (c.arch == "lenet5")
		return (ch * 25 * 6 + 6) + bn(6) + (6 * 25 * 16 + 16) + bn(16) + (400 * 120 + 120) + (120 * 84 + 84) +
		       (84 * k + k);
	int64_t n = 0;
	if (c.arch == "resnet18") {
		n += ch * 9 * 64 + bn(64);
		int64_t in = 64;
		for (int s = 0; s < 4; s++) {
			int64_t w = 64 << s;
			for (int b = 0; b < 2; b++) {
				n += in * 9 * w + bn(w) + w * 9 * w + bn(w);
				if (in != w)
					n += in * w + bn(w);
				in = w;
			}
		}
		return n + 512 * k + k;
	}
	if (c.arch == "resnet50") {
		n += ch * 49 * 64 + bn(64);
		int64_t in = 64;
		const int blocks[4] = {3, 4, 6, 3};
		for (int s = 0; s < 4; s++) {
			int64_t w = 64 << s, out = 4 * w;
			for (int b = 0; b < blocks[s]; b++) {
				n += in * w + bn(w) + w * 9 * w + bn(w) + w * out + bn(out);
				if (b == 0)
					n += in * out + bn(out);
				in = out;
			}
		}
		return n + 2048 * k + k;
	}
	fail("vision: unknown architecture '{}' (lenet5, resnet18, resnet50)", c.arch);
}

std::shared_ptr<VisionModel> make_vision_model(const VisionConfig &c)
{
	if (c.in_channels < 1 || c.num_classes < 2)
		fail("vision: {} needs at least one input channel and two classes (got {} and {})", c.arch,
		     c.in_channels, c.num_classes);
	if (c.arch == "lenet5")
		return std::make_shared<LeNet5>(c);
	if (c.arch == "resnet18" || c.arch == "resnet50")
		return std::make_shared<ResNet>(c);
	fail("vision: unknown architecture '{}' (lenet5, resnet18, resnet50)", c.arch);
}

} // namespace knlp
