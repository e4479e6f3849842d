// Exports of a trained GPT-2: Hugging Face layout (safetensors + config.json).
#pragma once
#include <string>

#include "models/gpt2.h"

namespace knlp {

// Load a model from a checkpoint folder (its config travels in state.json).
GPT2 load_model(const std::string &ckpt_dir, torch::Device dev, Config *cfg_out = nullptr);

// HF GPT-2: names without the "transformer." prefix (as the official gpt2 files), Conv1D
// weights transposed to [in, out], zero biases when the model has none, tied head omitted.
void export_hf(GPT2 &model, const std::string &out_dir);

} // namespace knlp
