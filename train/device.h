// Device selection (CONFIG_DEVICE_*), thread setup and timing helpers shared by trainers.
#pragma once
#include <string>

#include <torch/torch.h>

#include "core/settings.h"

namespace knlp {

torch::Device select_device(const CoreSettings &c); // CONFIG_DEVICE_*
// mallopt settings that keep freed activations for reuse (called by setup_threads).
void tune_allocator();

void setup_threads(const CoreSettings &c); // CONFIG_NUM_THREADS
void synchronize(torch::Device dev);
// Matrix-multiply throughput (FLOP/s) measured on `dev` in fp32 (bf16 on GPUs), the peak
// against which MFU is reported. Takes about half a second.
double measure_matmul_peak(torch::Device dev, bool bf16);
std::string torch_version();

} // namespace knlp
