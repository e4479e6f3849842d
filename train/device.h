// Device selection (CONFIG_DEVICE_*), thread setup and timing helpers shared by trainers.
#pragma once
#include <string>

#include <torch/torch.h>

#include "core/settings.h"

namespace knlp {

torch::Device select_device(const CoreSettings &c); // CONFIG_DEVICE_*
// mallopt settings that keep freed activations for reuse (called by setup_threads);
// training: also no mmapped blocks at all (every step's large blocks reused from the heap).
// KNLP_MALLOC_DEFAULT=1 leaves glibc's defaults.
void tune_allocator(bool training = false);

void setup_threads(const CoreSettings &c); // CONFIG_NUM_THREADS, CONFIG_CPU_GEMM's and CONFIG_CPU_GEMM_BF16's switches
void synchronize(torch::Device dev);
// Matrix-multiply throughput (FLOP/s) measured on `dev` in fp32, or in bf16 with bf16, the
// peak against which MFU is reported: on the CPU the faster of libtorch's product and
// knlp's own where the model uses it (models/gemm.h). Takes about half a second.
double measure_matmul_peak(torch::Device dev, bool bf16);

// What a run computes in on its device. CUDA: CONFIG_AMP_*. CPU: CONFIG_CPU_PRECISION_*
// against the CPU's native bf16 (AMX-BF16, AVX512-BF16); KNLP_CPU_PRECISION=fp32|bf16|
// bf16-force overrides it. A bf16 request the CPU cannot serve natively gives fp32 and a
// notice, or an error under CONFIG_CPU_PRECISION_BF16_REQUIRE.
struct Precision {
	bool bf16 = false;	// bf16 autocast (float32 master weights and optimizer state)
	bool required = false;	// CONFIG_CPU_PRECISION_BF16_REQUIRE: no silent fp32
	bool automatic = false; // bf16 by CONFIG_CPU_PRECISION_AUTO (or KNLP_CPU_PRECISION=auto)
	std::string reason;	// for run.json and the start-up line
	std::string notice;	// printed once when not empty
	const char *name() const { return bf16 ? "bf16" : "fp32"; }
};
Precision resolve_precision(const Settings &s, torch::Device dev);
// The precision eval, sample, fim score and tier bench run a knlp checkpoint in: the run's
// CONFIG_CPU_PRECISION (KNLP_CPU_PRECISION overrides) resolved on this CPU; the notice of
// a bf16 choice without native support goes to stderr.
Precision inference_precision(const Settings &s, torch::Device dev);
std::string torch_version();

} // namespace knlp
