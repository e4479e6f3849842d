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

struct PlanOptions {
	GgmlType base = GgmlType::F16;
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
// the row, else Q8_0 (rows of 32k) or F16; *fallback says which happened.
GgmlType plan_fit(GgmlType want, int64_t row, bool *fallback);

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
