// What a GPT-2 run does after training when its configuration asks: the diagonal Fisher
// (CONFIG_FIM_SCORE, with Adam's v against it under CONFIG_FIM_COMPARE), the tiered-inference
// bench (CONFIG_TIER_BENCH) and a GGUF export by a mixed-precision plan (CONFIG_QUANT_GGUF).
#pragma once
#include <string>

#include "core/settings.h"
#include "models/gpt2.h"

namespace knlp {

class Optimizer;

// Refuse, before training, what the tools could not do with this model and optimizer.
void check_gpt2_tools(const Settings &cfg, const GPT2Config &mc, const Optimizer &opt);

// Run the configured tools on the trained model; `ckpt` is the final checkpoint.
void run_gpt2_tools(const Settings &cfg, GPT2 &model, const std::string &ckpt, const std::string &run_dir);

} // namespace knlp
