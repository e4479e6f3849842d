// Hugging Face model folders: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json. Files are memory-mapped; tensors come out without a copy
// where the file's alignment allows, in the file's dtype (fp32, fp16 or bf16).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace knlp {

class SafetensorsFile;

// A folder with config.json and model.safetensors or model.safetensors.index.json.
bool is_hf_model_dir(const std::string &path);
// Such a folder of a Llama-family architecture (anything but GPT2LMHeadModel, whose folders
// load as knlp's GPT-2); unsupported architectures are reported when the model is built.
bool is_hf_llama_dir(const std::string &path);

class HfCheckpoint {
public:
	explicit HfCheckpoint(const std::string &dir); // opens and validates every shard
	const std::string &dir() const { return dir_; }
	const nlohmann::json &config() const { return config_; }
	const std::string &config_path() const { return config_path_; }
	// config.json's architectures[0] (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM).
	const std::string &architecture() const { return arch_; }
	// The weights' dtype when they all share one ("F32", "F16", "BF16"), else "mixed".
	const std::string &dtype() const { return dtype_; }
	uint64_t weight_bytes() const { return weight_bytes_; }
	bool has(const std::string &name) const { return where_.count(name) > 0; }
	std::vector<std::string> names() const;
	// The tensor `name`, which must have `shape` (error naming the file and tensor). Shares
	// the mapped memory unless copy; float dtypes only.
	torch::Tensor get(const std::string &name, const std::vector<int64_t> &shape, bool copy = false) const;

private:
	std::string dir_, config_path_, arch_, dtype_;
	nlohmann::json config_;
	std::vector<std::shared_ptr<SafetensorsFile>> files_;
	std::map<std::string, std::pair<size_t, size_t>> where_; // name -> (file, tensor index)
	uint64_t weight_bytes_ = 0;
};

// Typed reads of config.json fields with range checks; errors name the file and field.
int64_t hf_int(const HfCheckpoint &ck, const char *key, int64_t lo, int64_t hi);
int64_t hf_int_or(const HfCheckpoint &ck, const char *key, int64_t dflt, int64_t lo, int64_t hi);
double hf_double_or(const HfCheckpoint &ck, const char *key, double dflt, double lo, double hi);

} // namespace knlp
