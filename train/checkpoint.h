// Checkpoints: RUN/checkpoints/<name>/{model.safetensors, optimizer.safetensors, state.json}.
// A checkpoint folder is written under a temporary name and renamed when complete; the
// pointer files LATEST and BEST (written atomically afterwards) name the folders to use. A
// kill at any moment leaves the pointers on complete checkpoints.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace knlp {

class Optimizer;
class SafetensorsFile;

struct NamedTensor {
	std::string name;
	torch::Tensor tensor;
};

// Tensors -> safetensors (copied to contiguous CPU memory first).
void save_tensors(const std::string &path, const std::vector<NamedTensor> &tensors,
		  const std::map<std::string, std::string> &meta = {});
// Copy tensors of a safetensors file into `targets` in place; every target must be present
// with the same shape (errors name the file and tensor).
void load_tensors(const std::string &path, const std::vector<NamedTensor> &targets);

std::vector<NamedTensor> named_parameters_of(torch::nn::Module &m);

struct CheckpointWriter {
	std::string run_dir;
	int keep = 2;
	// Write a checkpoint for `iter` steps: model parameters, `extra` tensors (optimizer
	// moments, generator states) and the state JSON; mark it best when `best`. Returns its folder.
	std::string save(int64_t iter, torch::nn::Module &model, const std::vector<NamedTensor> &extra,
			 const nlohmann::json &state, bool best);
};

std::string checkpoints_dir(const std::string &run_dir);
// Folder of the checkpoint a pointer (LATEST or BEST) names; empty when there is none.
std::string checkpoint_pointer(const std::string &run_dir, const std::string &pointer);
// Resolve --checkpoint: a run folder (LATEST, or BEST / FINAL when which is "best" / "final") or a checkpoint
// folder itself. Errors when nothing usable is there.
std::string resolve_checkpoint(const std::string &path, const std::string &which = "latest");
nlohmann::json read_checkpoint_state(const std::string &ckpt_dir);
// Optimizer state of every parameter: exp_avg.<param>, exp_avg_sq.<param>,
// max_exp_avg_sq.<param> (momentum.<param> for SGD).
std::vector<NamedTensor> optimizer_tensors(Optimizer &opt);
void load_optimizer_state(const std::string &ckpt_dir, Optimizer &opt);
// A tensor of a safetensors file as a new CPU tensor; undefined when the file lacks it.
torch::Tensor read_tensor(const SafetensorsFile &f, const std::string &name);

} // namespace knlp
