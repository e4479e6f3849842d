// safetensors: 8-byte little-endian header length, a JSON header (name -> dtype, shape,
// data_offsets; optional __metadata__ of strings), then raw little-endian tensor bytes.
// The format Hugging Face and Python's safetensors read. No libtorch here.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace knlp {

size_t dtype_size(const std::string &dtype); // "F32", "F16", "BF16", "I64", "U8", ...; 0 if unknown

struct TensorView {
	std::string name, dtype;
	std::vector<int64_t> shape;
	const void *data = nullptr;
	uint64_t nbytes = 0;
};

// Writes atomically (temporary name, fsync, rename). Tensors are written in the given order.
void write_safetensors(const std::string &path, const std::vector<TensorView> &tensors,
		       const std::map<std::string, std::string> &metadata = {});

class SafetensorsFile {
public:
	// Reads (or, with map, memory-maps privately: pages load on first touch, writes stay
	// private to this process) and validates the whole file.
	explicit SafetensorsFile(const std::string &path, bool map = false);
	~SafetensorsFile();
	SafetensorsFile(const SafetensorsFile &) = delete;
	SafetensorsFile &operator=(const SafetensorsFile &) = delete;
	const std::vector<TensorView> &tensors() const { return tensors_; }
	const TensorView *find(const std::string &name) const;
	const TensorView &get(const std::string &name) const; // error naming file and tensor
	const std::map<std::string, std::string> &metadata() const { return metadata_; }
	const std::string &path() const { return path_; }

private:
	std::string path_, bytes_;
	void *map_ = nullptr;
	size_t map_len_ = 0;
	std::vector<TensorView> tensors_;
	std::map<std::string, std::string> metadata_;
};

} // namespace knlp
