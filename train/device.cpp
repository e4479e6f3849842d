#include "train/device.h"

#include "models/gemm.h"

#include <cstdlib>

#include <array>
#include <chrono>
#include <malloc.h>
#include <sched.h>
#include <thread>
#include <torch/version.h>

#include "core/error.h"
#include "core/run.h"

namespace knlp {

torch::Device select_device(const CoreSettings &c)
{
	bool cuda = torch::cuda::is_available();
	if (c.device == choice::Device::Cpu)
		return torch::kCPU;
	if (c.device == choice::Device::Cuda) {
		if (!cuda) {
			const char *vis = std::getenv("CUDA_VISIBLE_DEVICES");
			fail("CONFIG_DEVICE_CUDA=y but no CUDA device is usable (libtorch built without CUDA, or "
			     "no GPU visible{}); choose CONFIG_DEVICE_AUTO or CONFIG_DEVICE_CPU",
			     vis ? fmt::format(": CUDA_VISIBLE_DEVICES={}", vis) : "");
		}
		return torch::Device(torch::kCUDA, 0);
	}
	return cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

void tune_allocator(bool training)
{
	// glibc returns large freed blocks to the kernel (blocks from 128 KiB up are mmapped until
	// its adaptive threshold has risen, and the heap top is trimmed), so every training step
	// page-faults its activations in afresh: 5% of a CPU step in the kernel's fault handler
	// and 5-10% of tokens/s (docs/performance.md). Keep blocks up to 32 MiB (glibc's limit
	// for this setting) on the heap and the heap untrimmed below 1 GiB: freed activations are
	// reused, peak RSS is unchanged. KNLP_MALLOC_DEFAULT=1 leaves glibc's defaults.
	static bool done = false, done_training = false;
	if (std::getenv("KNLP_MALLOC_DEFAULT"))
		return;
	if (!done) {
		done = true;
		mallopt(M_MMAP_THRESHOLD, 32 << 20);
		mallopt(M_TRIM_THRESHOLD, 1 << 30);
	}
	// Training repeats the same allocations every step, and blocks above 32 MiB are still
	// mapped afresh each time: at a vocabulary of 50304 the tied embedding's gradients
	// (154 MB each at width 768) made 18% of a 124M CPU step kernel time, most of it
	// zeroing new pages. With mmap off every block comes from the heap and is reused
	// (+15-20% tokens/s at shapes (a) and (c)). Only for training: a one-shot command with
	// blocks of changing sizes could fragment the heap and raise its peak.
	if (training && !done_training) {
		done_training = true;
		mallopt(M_MMAP_MAX, 0);
	}
}

void setup_threads(const CoreSettings &c)
{
	tune_allocator();
	// 0 means every core this process may use. libtorch's own default relies on cpuinfo,
	// which reports a single core on some virtual machines.
	long long n = c.num_threads;
	if (n <= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
								 : std::thread::hardware_concurrency();
	}
	torch::set_num_threads(static_cast<int>(std::max(1LL, n)));
	set_own_gemm(c.cpu_gemm);
	set_own_bf16_gemm(c.cpu_gemm_bf16);
}

void synchronize(torch::Device dev)
{
	if (dev.is_cuda())
		torch::cuda::synchronize(dev.index());
}

Precision resolve_precision(const Settings &s, torch::Device dev)
{
	Precision p;
	if (dev.is_cuda()) {
		p.bf16 = s.train.amp == choice::Amp::Bf16;
		p.reason = p.bf16 ? "CONFIG_AMP_BF16" : "CONFIG_AMP_FP32";
		return p;
	}
	const CpuInfo cpu = cpu_info();
	const bool native = !cpu.bf16.empty();
	std::string want;
	switch (s.train.cpu_precision) {
	case choice::CpuPrecision::Auto: want = "auto"; break;
	case choice::CpuPrecision::Fp32: want = "fp32"; break;
	case choice::CpuPrecision::Bf16: want = "bf16"; break;
	case choice::CpuPrecision::Bf16Require: want = "bf16-require"; break;
	}
	std::string source = std::string("CONFIG_") + symbol_of(s.train.cpu_precision);
	if (const char *e = std::getenv("KNLP_CPU_PRECISION"); e && *e) {
		want = e;
		source = std::string("KNLP_CPU_PRECISION=") + e;
		if (want != "fp32" && want != "bf16" && want != "bf16-force" && want != "auto")
			fail("KNLP_CPU_PRECISION={}: expected fp32, bf16, bf16-force or auto", e);
	}
	const std::string has = native ? "native " + cpu.bf16 : "no native bf16 (AMX-BF16 or AVX512-BF16)";
	p.required = want == "bf16-require";
	if (want == "fp32") {
		p.reason = source;
	} else if (want == "bf16-force") {
		p.bf16 = true;
		p.reason = source + " (" + has + ")";
	} else if (native) {
		p.bf16 = true;
		p.automatic = want == "auto";
		p.reason = source + ": " + has;
	} else if (want == "bf16-require") {
		fail("{}: this CPU ({}) has {}", source, cpu.model, has);
	} else {
		p.reason = source + ": " + has + " on " + cpu.model;
		if (want == "bf16")
			p.notice = fmt::format("knlp: notice: {}: this CPU ({}) has {}; training in fp32", source,
					       cpu.model, has);
	}
	return p;
}

Precision inference_precision(const Settings &s, torch::Device dev)
{
	Precision p = resolve_precision(s, dev);
	if (!p.notice.empty())
		fmt::print(stderr, "{}\n", p.notice);
	return p;
}

double measure_matmul_peak(torch::Device dev, bool bf16)
{
	// The best of several square and transformer-like shapes: the peak MFU is quoted against.
	torch::NoGradGuard ng;
	auto opts = torch::TensorOptions().device(dev).dtype(bf16 ? torch::kBFloat16 : torch::kFloat);
	std::vector<std::array<int64_t, 3>> shapes;
	if (dev.is_cuda())
		shapes = {{8192, 8192, 8192}, {16384, 4096, 4096}};
	else
		shapes = {
			{512, 512, 512}, {1024, 1024, 1024}, {2048, 2048, 2048}, {3072, 384, 1536}, {3072, 1536, 384}};
	double best = 0;
	at::Generator gen = at::detail::createCPUGenerator(1);
	for (auto [m, k, n] : shapes) {
		// Values from a generator of its own: the training run's random stream (dropout) must not
		// depend on whether this measurement ran, e.g. after a resume.
		auto a = torch::empty({m, k}).uniform_(-1, 1, gen).to(opts),
		     b = torch::empty({k, n}).uniform_(-1, 1, gen).to(opts);
		auto c = torch::mm(a, b);
		// On the CPU: the faster of libtorch's product and knlp's (models/gemm.h: float32, or
		// bf16 under CONFIG_CPU_GEMM_BF16), whichever the model uses.
		const bool own = !dev.is_cuda() && (bf16 ? own_bf16_gemm_active() : own_gemm_active());
		const int64_t M = m, N = n, K = k;
		for (int engine = 0; engine < (own ? 2 : 1); engine++) {
			auto run = [&] {
				if (engine == 0)
					c = torch::mm(a, b);
				else if (bf16)
					gemm_bf16(false, false, M, N, K, a.data_ptr(), true, K, b.data_ptr(), true, N,
						  c.data_ptr(), true, N);
				else
					sgemm(false, false, M, N, K, 1.0f, a.data_ptr<float>(), K, b.data_ptr<float>(),
					      N, 0.0f, c.data_ptr<float>(), N);
			};
			run();
			synchronize(dev);
			int reps = 0;
			auto t0 = std::chrono::steady_clock::now();
			double el = 0;
			while (el < 0.15 || reps < 2) {
				run();
				synchronize(dev);
				reps++;
				el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
			}
			best = std::max(best, 2.0 * m * k * n * reps / el);
		}
	}
	return best;
}

std::string torch_version()
{
	return TORCH_VERSION;
}

} // namespace knlp
