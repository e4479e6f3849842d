#include "train/checkpoint.h"

#include "models/hf.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/safetensors.h"
#include "optim/optimizer.h"

namespace knlp {

static std::string st_dtype(torch::ScalarType t)
{
	switch (t) {
	case torch::kFloat: return "F32";
	case torch::kDouble: return "F64";
	case torch::kHalf: return "F16";
	case torch::kBFloat16: return "BF16";
	case torch::kLong: return "I64";
	case torch::kInt: return "I32";
	case torch::kByte: return "U8";
	case torch::kChar: return "I8";
	case torch::kBool: return "BOOL";
	default: fail("safetensors: unsupported tensor type {}", c10::toString(t));
	}
}

static torch::ScalarType torch_dtype(const std::string &d, const std::string &where)
{
	if (d == "F32")
		return torch::kFloat;
	if (d == "F64")
		return torch::kDouble;
	if (d == "F16")
		return torch::kHalf;
	if (d == "BF16")
		return torch::kBFloat16;
	if (d == "I64")
		return torch::kLong;
	if (d == "I32")
		return torch::kInt;
	if (d == "U8")
		return torch::kByte;
	if (d == "I8")
		return torch::kChar;
	if (d == "BOOL")
		return torch::kBool;
	fail("{}: unsupported dtype {}", where, d);
}

void save_tensors(const std::string &path, const std::vector<NamedTensor> &tensors,
		  const std::map<std::string, std::string> &meta)
{
	std::vector<torch::Tensor> keep;
	std::vector<TensorView> views;
	for (const auto &nt : tensors) {
		auto t = nt.tensor.detach().to(torch::kCPU).contiguous();
		keep.push_back(t);
		TensorView v;
		v.name = nt.name;
		v.dtype = st_dtype(t.scalar_type());
		v.shape.assign(t.sizes().begin(), t.sizes().end());
		v.data = t.data_ptr();
		v.nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
		views.push_back(v);
	}
	write_safetensors(path, views, meta);
}

void load_tensors(const std::string &path, const std::vector<NamedTensor> &targets)
{
	SafetensorsFile f(path);
	torch::NoGradGuard ng;
	for (const auto &nt : targets) {
		const TensorView *v = f.find(nt.name);
		if (!v)
			fail("{}: tensor {} is missing (checkpoint from a different model shape?)", path, nt.name);
		std::vector<int64_t> want(nt.tensor.sizes().begin(), nt.tensor.sizes().end());
		if (v->shape != want)
			fail("{}: tensor {} has shape [{}] but the model expects [{}] (incompatible model shape)", path,
			     nt.name, fmt::join(v->shape, ", "), fmt::join(want, ", "));
		auto dt = torch_dtype(v->dtype, path + ": " + nt.name);
		auto src = torch::from_blob(const_cast<void *>(v->data), v->shape, torch::TensorOptions().dtype(dt));
		nt.tensor.copy_(src);
	}
}

std::vector<NamedTensor> named_parameters_of(torch::nn::Module &m)
{
	std::vector<NamedTensor> out;
	for (auto &p : m.named_parameters())
		out.push_back({p.key(), p.value()});
	return out;
}

std::string checkpoints_dir(const std::string &run_dir)
{
	return join_path(run_dir, "checkpoints");
}

// Folder name a pointer file (LATEST, BEST, FINAL) holds; empty when there is none.
static std::string pointer_name(const std::string &root, const std::string &pointer)
{
	std::string p = join_path(root, pointer);
	if (!file_exists(p))
		return "";
	std::string name = read_file(p);
	while (!name.empty() && (name.back() == '\n' || name.back() == ' '))
		name.pop_back();
	return name;
}

std::string checkpoint_pointer(const std::string &run_dir, const std::string &pointer)
{
	std::string name = pointer_name(checkpoints_dir(run_dir), pointer);
	if (name.empty())
		return "";
	std::string dir = join_path(checkpoints_dir(run_dir), name);
	return file_exists(join_path(dir, "state.json")) ? dir : "";
}

std::string CheckpointWriter::save(int64_t iter, torch::nn::Module &model, const std::vector<NamedTensor> &extra,
				   const nlohmann::json &state, bool best)
{
	std::string root = checkpoints_dir(run_dir);
	make_dirs(root);
	std::string name = fmt::format("iter_{:08d}", iter);
	std::string final_dir = join_path(root, name), tmp_dir = final_dir + ".tmp";
	remove_tree(tmp_dir);
	make_dirs(tmp_dir);
	save_tensors(join_path(tmp_dir, "model.safetensors"), named_parameters_of(model),
		     {{"format", "knlp-gpt2"}, {"iteration", std::to_string(iter)}});
	fault_point("checkpoint_between_files");
	if (!extra.empty())
		save_tensors(join_path(tmp_dir, "optimizer.safetensors"), extra);
	// state.json last: its presence marks the folder complete.
	write_file_atomic(join_path(tmp_dir, "state.json"), state.dump(1) + "\n");
	fsync_dir(tmp_dir);
	remove_tree(final_dir);
	if (std::rename(tmp_dir.c_str(), final_dir.c_str()) != 0)
		fail("{}: cannot rename checkpoint into place ({})", final_dir, std::strerror(errno));
	fsync_dir(root);
	fault_point("checkpoint_before_pointer");
	write_file_atomic(join_path(root, "LATEST"), name + "\n");
	if (best)
		write_file_atomic(join_path(root, "BEST"), name + "\n");
	fault_point("checkpoint_after_pointer");

	// Retention: keep the newest `keep` periodic folders plus whatever BEST names.
	std::string best_name = pointer_name(root, "BEST");
	std::vector<std::string> dirs;
	for (auto &e : std::filesystem::directory_iterator(root)) {
		std::string n = e.path().filename().string();
		if (e.is_directory() && n.rfind("iter_", 0) == 0)
			dirs.push_back(n);
	}
	std::sort(dirs.begin(), dirs.end());
	int kept = 0;
	for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
		bool tmp = it->size() > 4 && it->compare(it->size() - 4, 4, ".tmp") == 0;
		if (*it == best_name)
			continue;
		if (!tmp && *it <= name && kept < keep) {
			kept++;
			continue;
		}
		if (!tmp && *it > name)
			continue; // a newer folder from an earlier, longer attempt: left alone
		remove_tree(join_path(root, *it));
	}
	return final_dir;
}

std::string resolve_checkpoint(const std::string &path, const std::string &which)
{
	if (!is_dir(path))
		fail("{}: checkpoint folder not found", path);
	if (file_exists(join_path(path, "state.json")) || is_hf_model_dir(path))
		return path;
	const char *pointer = which == "best" ? "BEST" : which == "final" ? "FINAL" : "LATEST";
	std::string dir = checkpoint_pointer(path, pointer);
	if (dir.empty())
		fail("{}: no complete checkpoint found (expected checkpoints/{} naming a folder with state.json)", path,
		     pointer);
	return dir;
}

nlohmann::json read_checkpoint_state(const std::string &ckpt_dir)
{
	std::string p = join_path(ckpt_dir, "state.json");
	try {
		return nlohmann::json::parse(read_file(p));
	} catch (const nlohmann::json::exception &e) {
		fail("{}: malformed checkpoint state ({})", p, e.what());
	}
}

std::vector<NamedTensor> optimizer_tensors(Optimizer &opt)
{
	std::vector<NamedTensor> ts;
	for (auto &[name, t] : opt.state_tensors())
		ts.push_back({name, t});
	return ts;
}

void load_optimizer_state(const std::string &ckpt_dir, Optimizer &opt)
{
	std::string path = join_path(ckpt_dir, "optimizer.safetensors");
	if (!file_exists(path))
		fail("{}: optimizer state missing (checkpoint incomplete or written without it)", path);
	load_tensors(path, optimizer_tensors(opt));
}

torch::Tensor read_tensor(const SafetensorsFile &f, const std::string &name)
{
	const TensorView *v = f.find(name);
	if (!v)
		return {};
	auto dt = torch_dtype(v->dtype, f.path() + ": " + name);
	return torch::from_blob(const_cast<void *>(v->data), v->shape, torch::TensorOptions().dtype(dt)).clone();
}

} // namespace knlp
