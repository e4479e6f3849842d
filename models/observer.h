// Forward observers: a way for tools to see inside a GPT-2 forward pass without changing it.
// While an ObserverScope is alive on a thread, the model reports to its observer:
//   - before_block(i) / after_block(i) around block i (tiering loads and evicts weights);
//   - linear_input(i, which, x) with the input of each linear of a standard block
//     ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"; importance matrices).
// With no scope the cost is one thread-local pointer test per call site.
#pragma once
#include <torch/torch.h>

namespace knlp {

struct ForwardObserver {
	virtual ~ForwardObserver() = default;
	virtual void before_block(int /*layer*/) {}
	virtual void after_block(int /*layer*/) {}
	virtual void linear_input(int /*layer*/, const char * /*which*/, const torch::Tensor & /*x*/) {}
};

ForwardObserver *forward_observer();

class ObserverScope {
public:
	explicit ObserverScope(ForwardObserver *o);
	~ObserverScope();
	ObserverScope(const ObserverScope &) = delete;
	ObserverScope &operator=(const ObserverScope &) = delete;

private:
	ForwardObserver *prev_;
};

} // namespace knlp
