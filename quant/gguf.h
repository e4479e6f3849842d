// GGUF v3 files (llama.cpp's model format): magic "GGUF", version, tensor and key counts,
// typed key/value metadata, tensor infos (name, dims innermost first, ggml type, offset),
// padding to general.alignment (default 32), then the tensor data, each tensor aligned.
// Little-endian throughout. The writer is atomic (temporary name, fsync, rename); the reader
// validates everything it reads and names the file and the problem. No libtorch here.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/fsutil.h"
#include "quant/ggml_quants.h"

namespace knlp {

// GGUF metadata value types.
enum class GgufType : uint32_t {
	U8 = 0,
	I8 = 1,
	U16 = 2,
	I16 = 3,
	U32 = 4,
	I32 = 5,
	F32 = 6,
	BOOL = 7,
	STRING = 8,
	ARRAY = 9,
	U64 = 10,
	I64 = 11,
	F64 = 12,
};

struct GgufKV {
	std::string key;
	GgufType type = GgufType::U32;
	GgufType array_type = GgufType::U32; // element type when type == ARRAY
	nlohmann::json value;		     // number, bool, string, or an array of them
};

struct GgufTensor {
	std::string name;
	std::vector<int64_t> ne; // ggml order: ne[0] is the row length
	GgmlType type = GgmlType::F32;
	uint64_t offset = 0; // from the start of the data section
	uint64_t nbytes = 0;
	const uint8_t *data = nullptr; // reader only
	int64_t elements() const;
};

class GgufWriter {
public:
	explicit GgufWriter(uint32_t alignment = 32);
	void add(const std::string &key, GgufType type, nlohmann::json value);
	void add_array(const std::string &key, GgufType elem, nlohmann::json values);
	// `bytes` holds the tensor already coded in `type` (ggml_row_bytes of its elements).
	void add_tensor(const std::string &name, std::vector<int64_t> ne, GgmlType type, std::string bytes);
	// Atomic write; returns the file size.
	uint64_t write(const std::string &path) const;

private:
	uint32_t alignment_;
	std::vector<GgufKV> kv_;
	std::vector<GgufTensor> tensors_;
	std::vector<std::string> data_;
};

class GgufFile {
public:
	explicit GgufFile(const std::string &path);
	uint32_t version() const { return version_; }
	uint32_t alignment() const { return alignment_; }
	const std::vector<GgufKV> &kv() const { return kv_; }
	const GgufKV *find(const std::string &key) const;
	const GgufKV &get(const std::string &key) const; // error naming the file and key
	const std::vector<GgufTensor> &tensors() const { return tensors_; }
	const GgufTensor &tensor(const std::string &name) const;
	uint64_t data_offset() const { return data_offset_; }
	const std::string &path() const { return path_; }

private:
	std::string path_;
	std::shared_ptr<const MappedFile> map_; // tensors' data points into it
	std::string_view bytes_;
	uint32_t version_ = 0, alignment_ = 32;
	uint64_t data_offset_ = 0;
	std::vector<GgufKV> kv_;
	std::vector<GgufTensor> tensors_;
};

} // namespace knlp
