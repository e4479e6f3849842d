#include "core/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

size_t dtype_size(const std::string &d)
{
	if (d == "F64" || d == "I64" || d == "U64")
		return 8;
	if (d == "F32" || d == "I32" || d == "U32")
		return 4;
	if (d == "F16" || d == "BF16" || d == "I16" || d == "U16")
		return 2;
	if (d == "U8" || d == "I8" || d == "BOOL")
		return 1;
	return 0;
}

static uint64_t numel(const std::vector<int64_t> &shape)
{
	uint64_t n = 1;
	for (auto s : shape)
		n *= static_cast<uint64_t>(s);
	return n;
}

void write_safetensors(const std::string &path, const std::vector<TensorView> &tensors,
		       const std::map<std::string, std::string> &metadata)
{
	nlohmann::ordered_json header = nlohmann::ordered_json::object();
	if (!metadata.empty())
		header["__metadata__"] = metadata;
	uint64_t off = 0;
	for (const auto &t : tensors) {
		if (dtype_size(t.dtype) == 0 || numel(t.shape) * dtype_size(t.dtype) != t.nbytes)
			fail("{}: tensor {} has inconsistent dtype/shape/size", path, t.name);
		header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes}}};
		off += t.nbytes;
	}
	std::string h = header.dump();
	while ((h.size() + 8) % 8)
		h += ' ';
	uint8_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = static_cast<uint8_t>(uint64_t(h.size()) >> (8 * i));
	AtomicFile f(path);
	f.write(len, 8);
	f.write(h);
	for (size_t i = 0; i < tensors.size(); i++) {
		f.write(tensors[i].data, tensors[i].nbytes);
		if (i == tensors.size() / 2)
			fault_point("safetensors_write");
	}
	f.commit();
}

SafetensorsFile::~SafetensorsFile()
{
	if (map_)
		::munmap(map_, map_len_);
}

SafetensorsFile::SafetensorsFile(const std::string &path, bool map) : path_(path)
{
	if (!file_exists(path))
		fail("{}: file not found", path);
	const char *base;
	size_t size;
	if (map) {
		int fd = ::open(path.c_str(), O_RDONLY);
		if (fd < 0)
			fail("{}: cannot open ({})", path, std::strerror(errno));
		struct stat st;
		if (::fstat(fd, &st) != 0) {
			::close(fd);
			fail("{}: cannot stat ({})", path, std::strerror(errno));
		}
		size = static_cast<size_t>(st.st_size);
		if (size < 8) {
			::close(fd);
			fail("{}: truncated safetensors file ({} bytes)", path, size);
		}
		void *p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		::close(fd);
		if (p == MAP_FAILED)
			fail("{}: mmap failed ({})", path, std::strerror(errno));
		map_ = p;
		map_len_ = size;
		base = static_cast<const char *>(p);
	} else {
		bytes_ = read_file(path);
		base = bytes_.data();
		size = bytes_.size();
	}
	if (size < 8)
		fail("{}: truncated safetensors file ({} bytes)", path, size);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= uint64_t(static_cast<uint8_t>(base[i])) << (8 * i);
	if (hlen > size - 8)
		fail("{}: header length {} exceeds the file size (truncated file?)", path, hlen);
	nlohmann::json header;
	try {
		header = nlohmann::json::parse(base + 8, base + 8 + hlen);
	} catch (const nlohmann::json::exception &e) {
		fail("{}: malformed safetensors header ({})", path, e.what());
	}
	if (!header.is_object())
		fail("{}: safetensors header is not a JSON object", path);
	uint64_t data_start = 8 + hlen, data_len = size - data_start;
	std::vector<std::pair<uint64_t, uint64_t>> ranges;
	for (auto it = header.begin(); it != header.end(); ++it) {
		if (it.key() == "__metadata__") {
			if (!it.value().is_object())
				fail("{}: __metadata__ is not an object", path);
			for (auto m = it.value().begin(); m != it.value().end(); ++m) {
				if (!m.value().is_string())
					fail("{}: metadata value of {} is not a string", path, m.key());
				metadata_[m.key()] = m.value().get<std::string>();
			}
			continue;
		}
		const auto &v = it.value();
		TensorView t;
		t.name = it.key();
		try {
			t.dtype = v.at("dtype").get<std::string>();
			t.shape = v.at("shape").get<std::vector<int64_t>>();
			auto offs = v.at("data_offsets").get<std::vector<uint64_t>>();
			if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_len)
				fail("{}: tensor {} has data offsets outside the file (truncated file?)", path, t.name);
			size_t es = dtype_size(t.dtype);
			if (es == 0)
				fail("{}: tensor {} has unknown dtype {}", path, t.name, t.dtype);
			for (auto s : t.shape)
				if (s < 0 || s > (int64_t(1) << 40))
					fail("{}: tensor {} has an invalid shape", path, t.name);
			if (numel(t.shape) * es != offs[1] - offs[0])
				fail("{}: tensor {} size does not match its shape and dtype", path, t.name);
			t.data = base + data_start + offs[0];
			t.nbytes = offs[1] - offs[0];
			ranges.emplace_back(offs[0], offs[1]);
		} catch (const nlohmann::json::exception &e) {
			fail("{}: malformed entry for tensor {} ({})", path, t.name, e.what());
		}
		tensors_.push_back(std::move(t));
	}
	std::sort(ranges.begin(), ranges.end());
	for (size_t i = 1; i < ranges.size(); i++)
		if (ranges[i].first < ranges[i - 1].second)
			fail("{}: tensors overlap in the data section", path);
}

const TensorView *SafetensorsFile::find(const std::string &name) const
{
	for (const auto &t : tensors_)
		if (t.name == name)
			return &t;
	return nullptr;
}

const TensorView &SafetensorsFile::get(const std::string &name) const
{
	const TensorView *t = find(name);
	if (!t)
		fail("{}: tensor {} is missing", path_, name);
	return *t;
}

} // namespace knlp
