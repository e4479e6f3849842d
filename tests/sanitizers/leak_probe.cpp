// Leaks one tensor on purpose: the sanitizer run (`make check-san`) must report it. A
// suppression broad enough to hide every allocation made inside libc10 / libtorch_cpu (where
// every tensor's storage and TensorImpl are allocated) would hide this leak too, and the
// test "san_leak_probe" that runs this program fails then (tests/sanitizers/lsan.supp).
#include <torch/torch.h>

#include <cstdio>

namespace {
// The storage of 65,536 floats is the 262,144-byte leak the test looks for (the stack may end
// inside libtorch, which has no frame pointers, so the test does not rely on this name).
__attribute__((noinline)) void leak_one_tensor()
{
	at::Tensor t = torch::ones({1 << 16}, torch::kFloat32);
	// One reference more than anyone will drop: the TensorImpl and its 256 KiB storage leak.
	c10::raw::intrusive_ptr::incref(t.unsafeGetTensorImpl());
}
} // namespace

int main()
{
	// A libtorch computation before the leak, so that its load-time state is all there.
	at::Tensor a = torch::randn({64, 64});
	std::printf("%.3f\n", a.matmul(a).sum().item<float>() * 0.0f);
	leak_one_tensor();
	return 0;
}
