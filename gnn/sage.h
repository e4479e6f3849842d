// GraphSAGE with mean aggregation and root weight (PyG's SAGEConv, aggr="mean"):
//   h_i = W_l mean_{j -> i} x_j + b + W_r x_i,
// two layers F -> hidden -> classes with ReLU between, log-softmax out.
#pragma once
#include <torch/torch.h>

namespace knlp {

struct SageConvImpl : torch::nn::Module {
	SageConvImpl(int64_t in, int64_t out);
	// x [n, in]; edges src -> dst (local ids, int64 [e]); inv_deg [n] = 1 / max(in-degree, 1).
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &src, const torch::Tensor &dst,
			      const torch::Tensor &inv_deg);
	torch::nn::Linear lin_l{nullptr}, lin_r{nullptr};
};
TORCH_MODULE(SageConv);

struct GraphSageImpl : torch::nn::Module {
	GraphSageImpl(int64_t in, int64_t hidden, int64_t classes);
	// Log-probabilities [n, classes]; *hidden_out (when given) is the first layer's output
	// after the ReLU (the FIM sampler's hidden activation).
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &src, const torch::Tensor &dst,
			      torch::Tensor *hidden_out = nullptr);
	SageConv conv1{nullptr}, conv2{nullptr};
};
TORCH_MODULE(GraphSage);

// 1 / max(in-degree, 1) over dst for n nodes.
torch::Tensor inverse_degree(const torch::Tensor &dst, int64_t n);

} // namespace knlp
