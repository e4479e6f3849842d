#include "models/hf.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/safetensors.h"

namespace knlp {

using json = nlohmann::json;

bool is_hf_model_dir(const std::string &path)
{
	namespace fs = std::filesystem;
	std::error_code ec;
	fs::path p(path);
	return fs::is_directory(p, ec) && fs::is_regular_file(p / "config.json", ec) &&
	       (fs::is_regular_file(p / "model.safetensors", ec) ||
		fs::is_regular_file(p / "model.safetensors.index.json", ec));
}

bool is_hf_llama_dir(const std::string &path)
{
	if (!is_hf_model_dir(path))
		return false;
	json j;
	try {
		j = json::parse(read_file(join_path(path, "config.json")));
	} catch (const json::exception &e) {
		fail("{}: malformed JSON ({})", join_path(path, "config.json"), e.what());
	}
	return !(j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
		 j["architectures"][0] == "GPT2LMHeadModel");
}

HfCheckpoint::HfCheckpoint(const std::string &dir) : dir_(dir)
{
	config_path_ = join_path(dir, "config.json");
	if (!file_exists(config_path_))
		fail("{}: no config.json (not a Hugging Face model folder)", dir);
	try {
		config_ = json::parse(read_file(config_path_));
	} catch (const json::exception &e) {
		fail("{}: malformed JSON ({})", config_path_, e.what());
	}
	if (!config_.is_object())
		fail("{}: not a JSON object", config_path_);
	if (config_.contains("architectures") && config_["architectures"].is_array() &&
	    !config_["architectures"].empty() && config_["architectures"][0].is_string())
		arch_ = config_["architectures"][0].get<std::string>();
	else
		fail("{}: no architectures list (knlp supports GPT2LMHeadModel, LlamaForCausalLM, "
		     "Qwen2ForCausalLM)",
		     config_path_);

	std::vector<std::string> shards;
	std::string index = join_path(dir, "model.safetensors.index.json");
	std::map<std::string, std::string> listed; // tensor -> shard file, from the index
	if (file_exists(join_path(dir, "model.safetensors"))) {
		shards.push_back("model.safetensors");
	} else if (file_exists(index)) {
		json j;
		try {
			j = json::parse(read_file(index));
			for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it)
				listed[it.key()] = it.value().get<std::string>();
		} catch (const json::exception &e) {
			fail("{}: malformed shard index ({})", index, e.what());
		}
		std::set<std::string> files;
		for (const auto &[t, f] : listed) {
			if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
				fail("{}: shard name {} leaves the folder", index, json(f).dump());
			files.insert(f);
		}
		for (const auto &f : files) {
			if (!file_exists(join_path(dir, f)))
				fail("{}: shard {} listed for tensor {} is missing", index, f, [&] {
					for (const auto &[t, g] : listed)
						if (g == f)
							return t;
					return std::string();
				}());
			shards.push_back(f);
		}
		if (shards.empty())
			fail("{}: the shard index lists no tensors", index);
	} else {
		fail("{}: neither model.safetensors nor model.safetensors.index.json", dir);
	}
	std::set<std::string> dtypes;
	for (const auto &s : shards) {
		auto f = std::make_shared<SafetensorsFile>(join_path(dir, s), true);
		size_t fi = files_.size();
		const auto &ts = f->tensors();
		for (size_t i = 0; i < ts.size(); i++) {
			if (where_.count(ts[i].name))
				fail("{}: tensor {} also appears in another shard", f->path(), ts[i].name);
			if (!listed.empty() && (listed.count(ts[i].name) == 0 || listed[ts[i].name] != s))
				fail("{}: tensor {} is not listed for this shard in model.safetensors.index.json",
				     f->path(), ts[i].name);
			where_[ts[i].name] = {fi, i};
			dtypes.insert(ts[i].dtype);
			weight_bytes_ += ts[i].nbytes;
		}
		files_.push_back(std::move(f));
	}
	for (const auto &[t, f] : listed)
		if (!where_.count(t))
			fail("{}: tensor {} is listed in model.safetensors.index.json but not in the shard",
			     join_path(dir, f), t);
	dtype_ = dtypes.size() == 1 ? *dtypes.begin() : "mixed";
}

std::vector<std::string> HfCheckpoint::names() const
{
	std::vector<std::string> out;
	for (const auto &[n, w] : where_)
		out.push_back(n);
	return out;
}

torch::Tensor HfCheckpoint::get(const std::string &name, const std::vector<int64_t> &shape, bool copy) const
{
	auto it = where_.find(name);
	if (it == where_.end())
		fail("{}: tensor {} is missing", dir_, name);
	const SafetensorsFile &f = *files_[it->second.first];
	const TensorView &v = f.tensors()[it->second.second];
	if (v.shape != shape)
		fail("{}: tensor {} has shape {} where config.json implies {}", f.path(), name, json(v.shape).dump(),
		     json(shape).dump());
	torch::ScalarType dt;
	if (v.dtype == "F32")
		dt = torch::kFloat;
	else if (v.dtype == "F16")
		dt = torch::kHalf;
	else if (v.dtype == "BF16")
		dt = torch::kBFloat16;
	else
		fail("{}: tensor {} has dtype {} (knlp reads F32, F16 and BF16 weights)", f.path(), name, v.dtype);
	auto opts = torch::TensorOptions().dtype(dt);
	auto *ptr = const_cast<void *>(v.data);
	bool aligned = reinterpret_cast<uintptr_t>(ptr) % dtype_size(v.dtype) == 0;
	auto t = torch::from_blob(ptr, v.shape, opts);
	// The mapping lives as long as this checkpoint; tensors that must outlive it are copies.
	return copy || !aligned ? t.clone() : t;
}

int64_t hf_int(const HfCheckpoint &ck, const char *key, int64_t lo, int64_t hi)
{
	const json &c = ck.config();
	if (!c.contains(key) || !c[key].is_number_integer())
		fail("{}: {} is missing or not an integer", ck.config_path(), key);
	int64_t v = c[key].get<int64_t>();
	if (v < lo || v > hi)
		fail("{}: {} = {} is outside [{}, {}]", ck.config_path(), key, v, lo, hi);
	return v;
}

int64_t hf_int_or(const HfCheckpoint &ck, const char *key, int64_t dflt, int64_t lo, int64_t hi)
{
	const json &c = ck.config();
	if (!c.contains(key) || c[key].is_null())
		return dflt;
	return hf_int(ck, key, lo, hi);
}

double hf_double_or(const HfCheckpoint &ck, const char *key, double dflt, double lo, double hi)
{
	const json &c = ck.config();
	if (!c.contains(key) || c[key].is_null())
		return dflt;
	if (!c[key].is_number())
		fail("{}: {} is not a number", ck.config_path(), key);
	double v = c[key].get<double>();
	if (!(v >= lo && v <= hi))
		fail("{}: {} = {} is outside [{}, {}]", ck.config_path(), key, v, lo, hi);
	return v;
}

} // namespace knlp
