// Image models: LeNet-5, ResNet-18 (CIFAR variant), ResNet-50 (ImageNet stem). Parameter
// names follow torchvision (conv1, bn1, layer1.0.conv1, ..., fc) so checkpoints read like
// the original's; all take [B, C, 32, 32] (ResNet-50: any size >= 32) and return logits.
#pragma once
#include <string>

#include <torch/torch.h>

namespace knlp {

struct VisionConfig {
	std::string arch = "lenet5"; // lenet5, resnet18, resnet50
	int in_channels = 1;
	int num_classes = 10;
	// LeNet-5: ReLU + 2x2 max pooling as one kernel (models/pool.h), bit-identical to
	// libtorch's relu_ + max_pool2d and several times faster; false takes libtorch's.
	bool fused_pool = true;
	// ResNets on the CPU: convolution, batch norm and ReLU on oneDNN's API with activations
	// kept in its blocked layout (models/onednn.h), where this build has oneDNN's headers;
	// false, or a GPU, or no headers: libtorch's ops. VisionModel::engine() says which.
	bool onednn = true;
	// With onednn: Winograd for the 3x3 stride-1 convolutions (models/onednn.h).
	bool winograd = true;
	static int64_t expected_params(const VisionConfig &c); // analytic count
};

class VisionModel : public torch::nn::Module {
public:
	virtual torch::Tensor forward(const torch::Tensor &x) = 0;
	virtual const VisionConfig &config() const = 0;
	// What runs the layers in fp32, or under CPU bf16 autocast with bf16 set:
	// "onednn-blocked", "onednn-blocked-winograd" (fp32), "onednn-blocked-bf16" (bf16 on
	// a CPU with oneDNN bf16 kernels) or "libtorch".
	virtual std::string engine(bool bf16 = false) const
	{
		(void)bf16;
		return "libtorch";
	}
};

std::shared_ptr<VisionModel> make_vision_model(const VisionConfig &c);

int64_t count_parameters(torch::nn::Module &m);

} // namespace knlp
