// Exports of a trained GPT-2: Hugging Face layout (safetensors + config.json).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "models/gpt2.h"
#include "quant/plan.h"

namespace knlp {

// Load a model from a checkpoint folder (its config travels in state.json).
GPT2 load_model(const std::string &ckpt_dir, torch::Device dev, Config *cfg_out = nullptr);

// HF GPT-2: names without the "transformer." prefix (as the official gpt2 files), Conv1D
// weights transposed to [in, out], zero biases when the model has none, tied head omitted.
void export_hf(GPT2 &model, const std::string &out_dir);

// GGUF v3 with llama.cpp's "gpt2" architecture metadata and tensor names, the GPT-2
// tokenizer (tokens, merges, types; "none" for byte-level models), every weight in the
// type the plan gives it (quant/plan.h). Scores for the magnitude plan come from the
// weights, for squisher from Adam's exp_avg_sq in the checkpoint. Writes OUT atomically and
// OUT.plan.json next to it; returns the plan summary.
// A GPT-2 rebuilt from a GGUF file of llama.cpp's gpt2 architecture (knlp's export or any
// other), every tensor dequantized to float32: the model a quantization plan leaves.
// *data_dir gets knlp.data_dir from the metadata ("" when absent).
GPT2 load_gguf_model(const std::string &path, std::string *data_dir = nullptr);

nlohmann::json export_gguf(GPT2 &model, const Config &cfg, const std::string &ckpt_dir, const std::string &out,
			   const PlanOptions &plan);

} // namespace knlp
