#include "quant/gguf.h"

#include <cstring>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

namespace {

constexpr uint32_t k_magic = 0x46554747; // "GGUF" read as a little-endian uint32

size_t scalar_size(GgufType t)
{
	switch (t) {
	case GgufType::U8:
	case GgufType::I8:
	case GgufType::BOOL: return 1;
	case GgufType::U16:
	case GgufType::I16: return 2;
	case GgufType::U32:
	case GgufType::I32:
	case GgufType::F32: return 4;
	case GgufType::U64:
	case GgufType::I64:
	case GgufType::F64: return 8;
	default: return 0;
	}
}

template <typename T> void put(std::string &out, T v)
{
	char b[sizeof(T)];
	std::memcpy(b, &v, sizeof(T));
	out.append(b, sizeof(T));
}

void put_string(std::string &out, const std::string &s)
{
	put<uint64_t>(out, s.size());
	out += s;
}

void put_scalar(std::string &out, GgufType t, const nlohmann::json &v, const std::string &key)
{
	auto bad = [&] { fail("gguf: value of {} does not fit its type {}", key, uint32_t(t)); };
	switch (t) {
	case GgufType::U8: put<uint8_t>(out, v.get<uint8_t>()); break;
	case GgufType::I8: put<int8_t>(out, v.get<int8_t>()); break;
	case GgufType::U16: put<uint16_t>(out, v.get<uint16_t>()); break;
	case GgufType::I16: put<int16_t>(out, v.get<int16_t>()); break;
	case GgufType::U32: put<uint32_t>(out, v.get<uint32_t>()); break;
	case GgufType::I32: put<int32_t>(out, v.get<int32_t>()); break;
	case GgufType::F32: put<float>(out, v.get<float>()); break;
	case GgufType::BOOL: put<uint8_t>(out, v.get<bool>() ? 1 : 0); break;
	case GgufType::U64: put<uint64_t>(out, v.get<uint64_t>()); break;
	case GgufType::I64: put<int64_t>(out, v.get<int64_t>()); break;
	case GgufType::F64: put<double>(out, v.get<double>()); break;
	case GgufType::STRING:
		if (!v.is_string())
			bad();
		put_string(out, v.get<std::string>());
		break;
	default: bad();
	}
}

uint64_t align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

class Cursor {
public:
	Cursor(std::string_view b, const std::string &path) : b_(b), path_(path) {}
	void need(uint64_t n, const char *what)
	{
		if (pos_ + n > b_.size() || pos_ + n < pos_)
			fail("{}: truncated GGUF file ({} at byte {} needs {} bytes, file has {})", path_, what, pos_,
			     n, b_.size());
	}
	template <typename T> T get(const char *what)
	{
		need(sizeof(T), what);
		T v;
		std::memcpy(&v, b_.data() + pos_, sizeof(T));
		pos_ += sizeof(T);
		return v;
	}
	std::string str(const char *what)
	{
		uint64_t n = get<uint64_t>(what);
		need(n, what);
		std::string s(b_.substr(pos_, n));
		pos_ += n;
		return s;
	}
	nlohmann::json scalar(GgufType t, const std::string &key)
	{
		switch (t) {
		case GgufType::U8: return get<uint8_t>("a value");
		case GgufType::I8: return get<int8_t>("a value");
		case GgufType::U16: return get<uint16_t>("a value");
		case GgufType::I16: return get<int16_t>("a value");
		case GgufType::U32: return get<uint32_t>("a value");
		case GgufType::I32: return get<int32_t>("a value");
		case GgufType::F32: return get<float>("a value");
		case GgufType::BOOL: return get<uint8_t>("a value") != 0;
		case GgufType::U64: return get<uint64_t>("a value");
		case GgufType::I64: return get<int64_t>("a value");
		case GgufType::F64: return get<double>("a value");
		case GgufType::STRING: return str("a string value");
		default: fail("{}: metadata key {} has unknown value type {}", path_, key, uint32_t(t));
		}
	}
	uint64_t pos() const { return pos_; }

private:
	std::string_view b_;
	const std::string &path_;
	uint64_t pos_ = 0;
};

} // namespace

int64_t GgufTensor::elements() const
{
	int64_t n = 1;
	for (auto d : ne)
		n *= d;
	return n;
}

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment)
{
	if (alignment == 0 || (alignment & (alignment - 1)))
		fail("gguf: alignment {} is not a power of two", alignment);
	if (alignment != 32)
		add("general.alignment", GgufType::U32, alignment);
}

void GgufWriter::add(const std::string &key, GgufType type, nlohmann::json value)
{
	for (const auto &k : kv_)
		if (k.key == key)
			fail("gguf: metadata key {} added twice", key);
	if (type == GgufType::ARRAY)
		fail("gguf: use add_array for {}", key);
	kv_.push_back({key, type, GgufType::U32, std::move(value)});
}

void GgufWriter::add_array(const std::string &key, GgufType elem, nlohmann::json values)
{
	if (!values.is_array() || elem == GgufType::ARRAY)
		fail("gguf: {} must be an array of scalars or strings", key);
	for (const auto &k : kv_)
		if (k.key == key)
			fail("gguf: metadata key {} added twice", key);
	kv_.push_back({key, GgufType::ARRAY, elem, std::move(values)});
}

void GgufWriter::add_tensor(const std::string &name, std::vector<int64_t> ne, GgmlType type, std::string bytes)
{
	GgufTensor t;
	t.name = name;
	t.ne = std::move(ne);
	t.type = type;
	if (t.ne.empty() || t.ne.size() > 4)
		fail("gguf: tensor {} has {} dimensions (1 to 4 allowed)", name, t.ne.size());
	int64_t rows = t.elements() / t.ne[0];
	t.nbytes = uint64_t(ggml_row_bytes(type, t.ne[0]) * rows);
	if (bytes.size() != t.nbytes)
		fail("gguf: tensor {} has {} bytes, its shape and type need {}", name, bytes.size(), t.nbytes);
	for (const auto &o : tensors_)
		if (o.name == name)
			fail("gguf: tensor {} added twice", name);
	uint64_t off = 0;
	if (!tensors_.empty())
		off = align_up(tensors_.back().offset + tensors_.back().nbytes, alignment_);
	t.offset = off;
	tensors_.push_back(std::move(t));
	data_.push_back(std::move(bytes));
}

uint64_t GgufWriter::write(const std::string &path) const
{
	std::string out;
	put<uint32_t>(out, k_magic);
	put<uint32_t>(out, 3);
	put<uint64_t>(out, tensors_.size());
	put<uint64_t>(out, kv_.size());
	for (const auto &k : kv_) {
		put_string(out, k.key);
		put<uint32_t>(out, uint32_t(k.type));
		if (k.type == GgufType::ARRAY) {
			put<uint32_t>(out, uint32_t(k.array_type));
			put<uint64_t>(out, k.value.size());
			for (const auto &v : k.value)
				put_scalar(out, k.array_type, v, k.key);
		} else {
			put_scalar(out, k.type, k.value, k.key);
		}
	}
	for (const auto &t : tensors_) {
		put_string(out, t.name);
		put<uint32_t>(out, uint32_t(t.ne.size()));
		for (auto d : t.ne)
			put<uint64_t>(out, uint64_t(d));
		put<uint32_t>(out, uint32_t(t.type));
		put<uint64_t>(out, t.offset);
	}
	out.resize(align_up(out.size(), alignment_), '\0');
	// The tensors go to the file as they are (no second copy of a model in memory).
	const uint64_t base = out.size();
	AtomicFile f(path);
	f.write(out);
	const std::string zeros(alignment_, '\0');
	for (size_t i = 0; i < tensors_.size(); i++) {
		uint64_t pad = base + tensors_[i].offset - f.bytes_written();
		if (pad > zeros.size())
			fail("{}: internal error: tensor {} placed at {} after byte {}", path, tensors_[i].name,
			     base + tensors_[i].offset, f.bytes_written());
		f.write(zeros.data(), pad);
		f.write(data_[i]);
	}
	uint64_t n = f.bytes_written();
	f.commit();
	return n;
}

GgufFile::GgufFile(const std::string &path) : path_(path)
{
	map_ = std::make_shared<const MappedFile>(path);
	bytes_ = map_->view();
	Cursor c(bytes_, path_);
	if (bytes_.size() < 4 || c.get<uint32_t>("the magic") != k_magic)
		fail("{}: not a GGUF file (wrong magic)", path);
	version_ = c.get<uint32_t>("the version");
	if (version_ != 2 && version_ != 3)
		fail("{}: GGUF version {} (knlp reads versions 2 and 3)", path, version_);
	uint64_t n_tensors = c.get<uint64_t>("the tensor count"), n_kv = c.get<uint64_t>("the key count");
	if (n_tensors > bytes_.size() || n_kv > bytes_.size())
		fail("{}: implausible counts ({} tensors, {} keys) for a {}-byte file", path, n_tensors, n_kv,
		     bytes_.size());
	for (uint64_t i = 0; i < n_kv; i++) {
		GgufKV k;
		k.key = c.str("a key");
		k.type = GgufType(c.get<uint32_t>("a value type"));
		if (k.type == GgufType::ARRAY) {
			k.array_type = GgufType(c.get<uint32_t>("an array type"));
			uint64_t n = c.get<uint64_t>("an array length");
			size_t es = scalar_size(k.array_type);
			if (k.array_type != GgufType::STRING && es == 0)
				fail("{}: metadata key {} is an array of unknown type {}", path, k.key,
				     uint32_t(k.array_type));
			c.need(es ? n * es : n * 8, "an array");
			k.value = nlohmann::json::array();
			for (uint64_t j = 0; j < n; j++)
				k.value.push_back(c.scalar(k.array_type, k.key));
		} else {
			k.value = c.scalar(k.type, k.key);
		}
		if (find(k.key))
			fail("{}: metadata key {} appears twice", path, k.key);
		kv_.push_back(std::move(k));
	}
	if (const auto *a = find("general.alignment")) {
		if (a->type != GgufType::U32 || a->value.get<uint32_t>() == 0 ||
		    (a->value.get<uint32_t>() & (a->value.get<uint32_t>() - 1)))
			fail("{}: general.alignment must be a power of two (uint32)", path);
		alignment_ = a->value.get<uint32_t>();
	}
	for (uint64_t i = 0; i < n_tensors; i++) {
		GgufTensor t;
		t.name = c.str("a tensor name");
		uint32_t nd = c.get<uint32_t>("a dimension count");
		if (nd == 0 || nd > 4)
			fail("{}: tensor {} has {} dimensions", path, t.name, nd);
		for (uint32_t d = 0; d < nd; d++) {
			uint64_t v = c.get<uint64_t>("a dimension");
			if (v == 0 || v > (1ull << 40))
				fail("{}: tensor {} has dimension {} of size {}", path, t.name, d, v);
			t.ne.push_back(int64_t(v));
		}
		uint64_t elems = 1; // no tensor holds 2^48 elements; the product must not overflow
		for (auto d : t.ne)
			if (elems > (1ull << 48) / uint64_t(d) || (elems *= uint64_t(d)) > (1ull << 48))
				fail("{}: tensor {} has dimensions whose product exceeds 2^48 elements", path, t.name);
		uint32_t ty = c.get<uint32_t>("a tensor type");
		if (!ggml_type_known(ty))
			fail("{}: tensor {} has ggml type {}, which knlp does not read", path, t.name, ty);
		t.type = GgmlType(ty);
		t.offset = c.get<uint64_t>("a tensor offset");
		if (t.offset % alignment_)
			fail("{}: tensor {} at offset {} is not aligned to {}", path, t.name, t.offset, alignment_);
		if (t.ne[0] % ggml_type_info(t.type).block)
			fail("{}: tensor {} has rows of {} elements, not a multiple of {}'s block of {}", path, t.name,
			     t.ne[0], ggml_type_info(t.type).name, ggml_type_info(t.type).block);
		t.nbytes = uint64_t(ggml_row_bytes(t.type, t.ne[0]) * (t.elements() / t.ne[0]));
		for (const auto &o : tensors_)
			if (o.name == t.name)
				fail("{}: tensor {} appears twice", path, t.name);
		tensors_.push_back(std::move(t));
	}
	data_offset_ = align_up(c.pos(), alignment_);
	for (auto &t : tensors_) {
		if (data_offset_ > bytes_.size() || t.offset > bytes_.size() - data_offset_ ||
		    t.nbytes > bytes_.size() - data_offset_ - t.offset)
			fail("{}: truncated GGUF file (tensor {} needs bytes {}..{}, the file has {})", path, t.name,
			     data_offset_ + t.offset, data_offset_ + t.offset + t.nbytes, bytes_.size());
		t.data = reinterpret_cast<const uint8_t *>(bytes_.data()) + data_offset_ + t.offset;
	}
}

const GgufKV *GgufFile::find(const std::string &key) const
{
	for (const auto &k : kv_)
		if (k.key == key)
			return &k;
	return nullptr;
}

const GgufKV &GgufFile::get(const std::string &key) const
{
	if (const auto *k = find(key))
		return *k;
	fail("{}: metadata key {} is missing", path_, key);
}

const GgufTensor &GgufFile::tensor(const std::string &name) const
{
	for (const auto &t : tensors_)
		if (t.name == name)
			return t;
	fail("{}: no tensor named {}", path_, name);
}

} // namespace knlp
