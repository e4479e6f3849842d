// Exports of a trained GPT-2: Hugging Face layout (safetensors + config.json).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "models/gpt2.h"
#include "quant/plan.h"

namespace knlp {

class HfCheckpoint;

// Load a model from a checkpoint folder (its config travels in state.json) or a Hugging
// Face GPT2LMHeadModel folder (float32, tanh GELU, its config's shapes; *cfg_out gets the
// defaults with an empty DATA_DIR).
GPT2 load_model(const std::string &ckpt_dir, torch::Device dev, Config *cfg_out = nullptr);
GPT2 load_hf_gpt2(const HfCheckpoint &ck);
// The token folder a command reads: `given` when set, else the run's DATA_DIR; a Hugging
// Face folder has none (an error asking for --data).
std::string data_dir_for(const Config &cfg, const std::string &given, const std::string &ckpt);

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

// Where the data-driven plans get their scores:
//   fim        mean empirical Fisher diagonal of the tensor (the original's rule);
//   fim-error  1/2 sum F_ij (w_ij - Q(w)_ij)^2: the loss increase a second-order expansion
//              predicts for quantizing the tensor in the base type;
//   imatrix    sum_j E[x_j^2] sum_i (w_ij - Q(w)_ij)^2: the expected squared output error
//              of the base type, weighted by the mean squared input activation of each
//              input channel (llama.cpp's importance matrix).
// The Fisher comes from `fisher_file` (knlp fim score) or is computed; activations are
// collected on the same windows: `chunks` windows of `seq` tokens of DATA/<split>.bin. The
// default split is train, so that a plan is not fitted to the validation text it is then
// evaluated on.
struct ScoreSource {
	std::string fisher_file, data_dir, split = "train";
	int chunks = 64, seq = 0; // seq 0: min(512, context)
};

// Mean squared input activation per input channel of every linear of a vanilla GPT-2
// (keyed by the weight's name), over the windows a ScoreSource describes.
std::map<std::string, torch::Tensor> collect_imatrix(GPT2 &model, const std::string &val_file, int chunks, int seq);

// What the data-driven plans of a Llama-family export score with (Hugging Face names):
// fim the per-element empirical Fisher (its mean), fim-error the same Fisher against the
// base type's error, imatrix the mean squared input activation per input channel.
// Per-element squared error of a float32 tensor's round trip through type t (rows along the
// last dimension): what quantizing it leaves. The error plans score with it.
torch::Tensor quant_error(const torch::Tensor &t, GgmlType type);
// The GGML bytes of a tensor in type t, rows along the last dimension (its length a
// multiple of the type's block), quantized on every thread (rows are independent).
std::string ggml_bytes(const torch::Tensor &t, GgmlType type);

struct HfPlanData {
	std::map<std::string, torch::Tensor> fisher, imatrix;
	std::string source; // where they came from, for the plan summary
};

// GGUF of a Hugging Face LlamaForCausalLM / Qwen2ForCausalLM folder (llama.cpp's llama and
// qwen2 architectures, its tokenizer.json as tokenizer.ggml.*), by plan none, magnitude,
// random, fim, fim-error or imatrix (the last three with `data`, scored as export_gguf's).
// Writes OUT atomically and OUT.plan.json; returns the plan summary.
nlohmann::json export_hf_gguf(const std::string &hf_dir, const std::string &out, const PlanOptions &plan,
			      const HfPlanData &data = {});

nlohmann::json export_gguf(GPT2 &model, const Settings &cfg, const std::string &ckpt_dir, const std::string &out,
			   const PlanOptions &plan, const ScoreSource &src = {});

} // namespace knlp
