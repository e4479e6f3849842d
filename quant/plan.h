// Mixed-precision plans: which tensors of chosen roles get a higher-precision GGML type.
// Layerwise, as the original: for each role, the top max(1, floor(L * pct / 100)) layers by
// the plan's score are upgraded; every other quantizable weight uses the base type. Rows
// whose length is not a multiple of a type's block fall back to Q8_0 (rows of 32k) or F16,
// and the plan reports it. No libtorch here: scores come in per tensor.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/settings.h"
#include "quant/ggml_quants.h"

namespace knlp {

// llama.cpp's role of a knlp GPT-2 parameter name ("" for names that are not weights of a
// role: norms, biases); *layer gets the block index or -1.
std::string gpt2_role(const std::string &name, int *layer);
// llama.cpp's GGUF tensor name of a knlp GPT-2 parameter ("" when it has none).
std::string gguf_name(const std::string &name);

// llama.cpp's K-quant mixes (llama-quantize's Q3_K_S ... Q5_K_M), by their lower-case names:
// a base type and per-role rules (attn_v / attn_qkv, ffn_down, attn_output, output). Its
// rules for dense models of every architecture but Falcon; mixture-of-experts and 70B
// special cases are not modelled. Empty for a name that is not a mix.
bool is_ggml_mix(const std::string &name);
// The type llama.cpp's mix gives a tensor of `role` in `layer` of `n_layer` (n_layer: the
// number of tensors of that role); tied: the model has no output tensor (token_embd is the
// head). Before the row-fit fallback.
GgmlType mix_type(const std::string &mix, const std::string &role, int layer, int n_layer, bool tied);
// llama.cpp's llama_ftype number of a mix (general.file_type).
uint32_t mix_file_type(const std::string &mix);

struct PlanOptions {
	GgmlType base = GgmlType::F16;
	// A llama.cpp mix ("q3_k_m"): each weight's type before upgrades comes from its rules
	// (base is then the mix's default type). Empty: every weight in base.
	std::string mix;
	// The named recipe the options came from ("fim-q3_k_m": the original's Q3_K_M with
	// Fisher-selected q6_k upgrades of ffn_down), or empty.
	std::string recipe;
	GgmlType upgrade = GgmlType::Q6_K;
	std::vector<std::string> roles = {"ffn_down"};
	double pct = 0; // 0: no upgrades
	// none magnitude random squisher fim fim-error imatrix (the last three need scores
	// computed from data outside this module: train/export.h)
	std::string plan = "none";
	uint64_t seed = 0;
};

struct PlannedTensor {
	std::string name, role;
	int layer = -1;
	GgmlType type = GgmlType::F32;
	bool upgraded = false, fallback = false;
	double score = 0;
	int64_t elements = 0, bytes = 0;
};

// The type a row of `row` values gets when `want` is asked: want when its block divides
// the row, else llama.cpp's fallback (q3_k: q4_0, q4_k: q5_0, q5_k: q5_1, q6_k: q8_0),
// and f16 when that does not fit either; *fallback says whether it fell back.
GgmlType plan_fit(GgmlType want, int64_t row, bool *fallback);

// The type of each tensor before upgrades (the base type, or the mix's rule), fitted to its
// rows; 1-D tensors and tensors without a role are F32. By name.
std::map<std::string, GgmlType> base_types(const std::vector<std::pair<std::string, std::vector<int64_t>>> &tensors,
					   const PlanOptions &o);

// tensors: (knlp name, shape [rows, cols] or 1-D); scores: per tensor name (plans that need
// them); the result lists every tensor with its type.
std::vector<PlannedTensor> make_plan(const std::vector<std::pair<std::string, std::vector<int64_t>>> &tensors,
				     const std::map<std::string, double> &scores, const PlanOptions &o);
// Plan options from their textual forms (type names, comma-separated roles), validated:
// errors name the bad value. Used by the command line and by CONFIG_QUANT_*.
PlanOptions plan_options(const std::string &base, const std::string &upgrade, const std::string &roles, double pct,
			 const std::string &plan, uint64_t seed);

// CONFIG_QUANT_* as plan options, validated (unknown type or role: an error naming the
// symbol).
// The plan CONFIG_QUANT_* describes.
PlanOptions plan_options_from(const QuantSettings &q);

nlohmann::json plan_summary(const std::vector<PlannedTensor> &plan, const PlanOptions &o);

} // namespace knlp
