#include "gnn/sage.h"

#include "models/gemm.h"

namespace knlp {

SageConvImpl::SageConvImpl(int64_t in, int64_t out)
{
	lin_l = register_module("lin_l", torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(true)));
	lin_r = register_module("lin_r", torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)));
}

torch::Tensor SageConvImpl::forward(const torch::Tensor &x, const torch::Tensor &src, const torch::Tensor &dst,
				    const torch::Tensor &inv_deg)
{
	const int64_t n = x.size(0);
	// Mean aggregation commutes with the linear map: aggregate the narrower of the two.
	const bool project_first = lin_l->weight.size(0) < lin_l->weight.size(1);
	// Products through knlp::linear (models/gemm.h): knlp's AVX-512 kernel in float32 where
	// it applies, libtorch's linear otherwise.
	torch::Tensor msg = project_first ? knlp::linear(x, lin_l->weight) : x;
	// The neighbour sums accumulate in float32 even when the product ran in bf16 (autocast).
	torch::Tensor agg = torch::zeros({n, msg.size(1)}, msg.options().dtype(torch::kFloat))
				    .index_add(0, dst, msg.index_select(0, src).to(torch::kFloat));
	agg = agg * inv_deg.unsqueeze(1);
	torch::Tensor left = project_first ? agg + lin_l->bias : knlp::linear(agg, lin_l->weight, lin_l->bias);
	return left + knlp::linear(x, lin_r->weight);
}

GraphSageImpl::GraphSageImpl(int64_t in, int64_t hidden, int64_t classes)
{
	conv1 = register_module("conv1", SageConv(in, hidden));
	conv2 = register_module("conv2", SageConv(hidden, classes));
}

torch::Tensor GraphSageImpl::forward(const torch::Tensor &x, const torch::Tensor &src, const torch::Tensor &dst,
				     torch::Tensor *hidden_out)
{
	torch::Tensor inv = inverse_degree(dst, x.size(0));
	torch::Tensor h = torch::relu(conv1->forward(x, src, dst, inv));
	if (hidden_out)
		*hidden_out = h;
	return torch::log_softmax(conv2->forward(h, src, dst, inv), 1);
}

torch::Tensor inverse_degree(const torch::Tensor &dst, int64_t n)
{
	torch::Tensor deg =
		torch::zeros({n}, torch::kFloat).index_add(0, dst, torch::ones({dst.size(0)}, torch::kFloat));
	return 1.0 / deg.clamp_min(1.0);
}

} // namespace knlp
