#include "gnn/npz.h"

#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <zlib.h>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

namespace {

uint16_t rd16(const uint8_t *p)
{
	return uint16_t(p[0] | (p[1] << 8));
}
uint32_t rd32(const uint8_t *p)
{
	return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t rd64(const uint8_t *p)
{
	return uint64_t(rd32(p)) | (uint64_t(rd32(p + 4)) << 32);
}
void wr16(std::string &s, uint16_t v)
{
	s.push_back(char(v & 0xff)), s.push_back(char(v >> 8));
}
void wr32(std::string &s, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		s.push_back(char((v >> (8 * i)) & 0xff));
}

// Value of `key` in the header dict, as the raw text up to the next top-level comma or '}'.
std::string dict_value(const std::string &h, const std::string &key, const std::string &origin)
{
	size_t k = h.find("'" + key + "'");
	if (k == std::string::npos)
		k = h.find("\"" + key + "\"");
	if (k == std::string::npos)
		fail("{}: .npy header lacks '{}'", origin, key);
	size_t c = h.find(':', k + key.size() + 2);
	if (c == std::string::npos)
		fail("{}: malformed .npy header", origin);
	size_t b = c + 1, e = b;
	int depth = 0;
	for (; e < h.size(); e++) {
		char ch = h[e];
		if (ch == '(' || ch == '[')
			depth++;
		else if (ch == ')' || ch == ']')
			depth--;
		else if ((ch == ',' || ch == '}') && depth == 0)
			break;
	}
	std::string v = h.substr(b, e - b);
	size_t vb = v.find_first_not_of(" "), ve = v.find_last_not_of(" ");
	return vb == std::string::npos ? "" : v.substr(vb, ve - vb + 1);
}

} // namespace

int64_t NpyArray::size() const
{
	int64_t n = 1;
	for (auto d : shape)
		n *= d;
	return n;
}

std::string NpyArray::dtype() const
{
	return fmt::format("{}{}{}", itemsize == 1 ? '|' : '<', kind, itemsize);
}

std::vector<int64_t> NpyArray::as_int64(const std::string &what) const
{
	const int64_t n = size();
	std::vector<int64_t> out(static_cast<size_t>(n));
	const uint8_t *p = data.data();
	for (int64_t i = 0; i < n; i++, p += itemsize) {
		int64_t v = 0;
		if (kind == 'i') {
			if (itemsize == 1)
				v = int8_t(p[0]);
			else if (itemsize == 2)
				v = int16_t(rd16(p));
			else if (itemsize == 4)
				v = int32_t(rd32(p));
			else
				v = int64_t(rd64(p));
		} else if (kind == 'u' || kind == 'b') {
			uint64_t u = itemsize == 1 ? p[0] : itemsize == 2 ? rd16(p) : itemsize == 4 ? rd32(p) : rd64(p);
			if (u > uint64_t(std::numeric_limits<int64_t>::max()))
				fail("{}: value {} at element {} does not fit int64", what, u, i);
			v = int64_t(u);
		} else {
			double d;
			if (itemsize == 4) {
				float f;
				std::memcpy(&f, p, 4);
				d = f;
			} else {
				std::memcpy(&d, p, 8);
			}
			if (!(d == std::floor(d)) || std::abs(d) > 9e15)
				fail("{}: element {} is {}, not an integer (dtype {})", what, i, d, dtype());
			v = int64_t(d);
		}
		out[size_t(i)] = v;
	}
	return out;
}

std::vector<float> NpyArray::as_float(const std::string &what) const
{
	const int64_t n = size();
	std::vector<float> out(static_cast<size_t>(n));
	const uint8_t *p = data.data();
	if (kind == 'f' && itemsize == 4) {
		std::memcpy(out.data(), p, size_t(n) * 4);
	} else if (kind == 'f' && itemsize == 8) {
		for (int64_t i = 0; i < n; i++) {
			double d;
			std::memcpy(&d, p + 8 * i, 8);
			out[size_t(i)] = float(d);
		}
	} else if (kind == 'f' && itemsize == 2) {
		fail("{}: float16 features are not supported (dtype <f2); convert to float32", what);
	} else {
		auto iv = as_int64(what);
		for (size_t i = 0; i < iv.size(); i++)
			out[i] = float(iv[i]);
	}
	return out;
}

NpyArray parse_npy(const uint8_t *p, size_t n, const std::string &origin)
{
	if (n < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0)
		fail("{}: not a .npy array (bad magic)", origin);
	int major = p[6];
	size_t hlen, hoff;
	if (major == 1) {
		hlen = rd16(p + 8), hoff = 10;
	} else if (major == 2 || major == 3) {
		if (n < 12)
			fail("{}: truncated .npy header", origin);
		hlen = rd32(p + 8), hoff = 12;
	} else {
		fail("{}: unsupported .npy version {}", origin, major);
	}
	if (hoff + hlen > n)
		fail("{}: truncated .npy header ({} bytes announced, {} present)", origin, hlen, n - hoff);
	std::string h(reinterpret_cast<const char *>(p + hoff), hlen);
	NpyArray a;
	std::string descr = dict_value(h, "descr", origin);
	if (descr.size() < 4 || (descr.front() != '\'' && descr.front() != '"'))
		fail("{}: unsupported dtype {} (structured or object arrays are not arrays of numbers)", origin, descr);
	descr = descr.substr(1, descr.size() - 2);
	char order = descr[0];
	if (order == '>' && descr.substr(1) != "b1" && descr.substr(1) != "i1" && descr.substr(1) != "u1")
		fail("{}: big-endian dtype {} is not supported", origin, descr);
	a.kind = descr[1];
	try {
		a.itemsize = std::stoi(descr.substr(2));
	} catch (...) {
		fail("{}: unsupported dtype {}", origin, descr);
	}
	bool ok = (a.kind == 'f' && (a.itemsize == 2 || a.itemsize == 4 || a.itemsize == 8)) ||
		  ((a.kind == 'i' || a.kind == 'u') &&
		   (a.itemsize == 1 || a.itemsize == 2 || a.itemsize == 4 || a.itemsize == 8)) ||
		  (a.kind == 'b' && a.itemsize == 1);
	if (!ok)
		fail("{}: unsupported dtype {}", origin, descr);
	if (dict_value(h, "fortran_order", origin) != "False")
		fail("{}: Fortran-order arrays are not supported (save with C order)", origin);
	std::string sh = dict_value(h, "shape", origin);
	if (sh.size() < 2 || sh.front() != '(' || sh.back() != ')')
		fail("{}: malformed shape {}", origin, sh);
	sh = sh.substr(1, sh.size() - 2);
	size_t pos = 0;
	while (pos < sh.size()) {
		size_t e = sh.find(',', pos);
		std::string tok = sh.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
		size_t tb = tok.find_first_not_of(" "), te = tok.find_last_not_of(" ");
		if (tb != std::string::npos) {
			tok = tok.substr(tb, te - tb + 1);
			if (tok.back() == 'L')
				tok.pop_back();
			char *end = nullptr;
			long long d = std::strtoll(tok.c_str(), &end, 10);
			if (*end || d < 0 || tok.empty())
				fail("{}: malformed shape ({})", origin, sh);
			a.shape.push_back(d);
		}
		if (e == std::string::npos)
			break;
		pos = e + 1;
	}
	const size_t body = n - hoff - hlen;
	uint64_t prod = 1; // the shape's product, without overflow
	for (auto d : a.shape) {
		if (d != 0 && prod > body / uint64_t(d))
			fail("{}: truncated data ({} bytes, shape needs more)", origin, body);
		prod *= uint64_t(d);
	}
	const int64_t elems = a.size();
	if (elems < 0 || (a.itemsize && uint64_t(elems) > body / size_t(a.itemsize)))
		fail("{}: truncated data ({} bytes, shape needs {} x {} bytes)", origin, body, elems, a.itemsize);
	if (uint64_t(elems) * size_t(a.itemsize) != body)
		fail("{}: {} trailing bytes after the data", origin, body - uint64_t(elems) * size_t(a.itemsize));
	a.data.assign(p + hoff + hlen, p + n);
	return a;
}

std::string npy_bytes(const NpyArray &a)
{
	std::string shape = "(";
	for (size_t i = 0; i < a.shape.size(); i++)
		shape += std::to_string(a.shape[i]) + (a.shape.size() == 1 ? "," : i + 1 < a.shape.size() ? ", " : "");
	shape += ")";
	std::string h = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", a.dtype(), shape);
	size_t total = 10 + h.size() + 1;
	h.append((64 - total % 64) % 64, ' ');
	h.push_back('\n');
	std::string s("\x93NUMPY\x01\x00", 8);
	wr16(s, uint16_t(h.size()));
	s += h;
	s.append(reinterpret_cast<const char *>(a.data.data()), a.data.size());
	return s;
}

NpyArray make_npy_f32(const std::vector<float> &v, std::vector<int64_t> shape)
{
	NpyArray a;
	a.kind = 'f', a.itemsize = 4, a.shape = std::move(shape);
	a.data.resize(v.size() * 4);
	if (!v.empty()) // an empty vector's data() may be null, and memcpy's pointers must not be
		std::memcpy(a.data.data(), v.data(), a.data.size());
	return a;
}

NpyArray make_npy_i64(const std::vector<int64_t> &v, std::vector<int64_t> shape)
{
	NpyArray a;
	a.kind = 'i', a.itemsize = 8, a.shape = std::move(shape);
	a.data.resize(v.size() * 8);
	if (!v.empty())
		std::memcpy(a.data.data(), v.data(), a.data.size());
	return a;
}

// A zip reader in one pass over the central directory: each check sits next to the field it
// validates (the fuzzer's findings are fixed here).
std::map<std::string, NpyArray> read_npz(const std::string &path)
{
	if (!file_exists(path))
		fail("{}: no such file", path);
	std::string buf = read_file(path);
	const auto *b = reinterpret_cast<const uint8_t *>(buf.data());
	const size_t n = buf.size();
	// End of central directory: the last signature within 22 + 65535 bytes of the end.
	if (n < 22)
		fail("{}: not an .npz archive (too short for a zip file)", path);
	size_t eocd = std::string::npos;
	for (size_t i = n - 22 + 1; i-- > 0 && n - i <= 22 + 65535;)
		if (rd32(b + i) == 0x06054b50) {
			eocd = i;
			break;
		}
	if (eocd == std::string::npos)
		fail("{}: not an .npz archive (no zip end-of-directory record; truncated?)", path);
	uint64_t entries = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12), cd_off = rd32(b + eocd + 16);
	if (entries == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
		if (eocd < 20 || rd32(b + eocd - 20) != 0x07064b50)
			fail("{}: zip64 archive without its locator", path);
		uint64_t z = rd64(b + eocd - 20 + 8);
		if (z + 56 > n || rd32(b + z) != 0x06064b50)
			fail("{}: bad zip64 end-of-directory record", path);
		entries = rd64(b + z + 32), cd_size = rd64(b + z + 40), cd_off = rd64(b + z + 48);
	}
	if (cd_off + cd_size > n)
		fail("{}: central directory beyond the end of the file (truncated?)", path);
	std::map<std::string, NpyArray> out;
	size_t p = cd_off;
	for (uint64_t e = 0; e < entries; e++) {
		if (p + 46 > n || rd32(b + p) != 0x02014b50)
			fail("{}: malformed central directory entry {}", path, e);
		uint16_t method = rd16(b + p + 10), flags = rd16(b + p + 8);
		uint32_t crc = rd32(b + p + 16);
		uint64_t csize = rd32(b + p + 20), usize = rd32(b + p + 24);
		size_t nl = rd16(b + p + 28), xl = rd16(b + p + 30), cl = rd16(b + p + 32);
		uint64_t loff = rd32(b + p + 42);
		if (p + 46 + nl + xl + cl > n)
			fail("{}: malformed central directory entry {}", path, e);
		std::string name(reinterpret_cast<const char *>(b + p + 46), nl);
		// zip64 extra field: the 0xffffffff fields in order usize, csize, offset.
		for (size_t x = p + 46 + nl; x + 4 <= p + 46 + nl + xl;) {
			uint16_t id = rd16(b + x), len = rd16(b + x + 2);
			if (id == 0x0001) {
				size_t q = x + 4, qe = x + 4 + len;
				if (usize == 0xffffffffu && q + 8 <= qe)
					usize = rd64(b + q), q += 8;
				if (csize == 0xffffffffu && q + 8 <= qe)
					csize = rd64(b + q), q += 8;
				if (loff == 0xffffffffu && q + 8 <= qe)
					loff = rd64(b + q), q += 8;
			}
			x += 4 + len;
		}
		p += 46 + nl + xl + cl;
		std::string member = path + ":" + name;
		if (flags & 1)
			fail("{}: encrypted members are not supported", member);
		if (loff + 30 > n || rd32(b + loff) != 0x04034b50)
			fail("{}: bad local header", member);
		size_t data = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
		if (data + csize > n)
			fail("{}: member data beyond the end of the file (truncated?)", member);
		std::vector<uint8_t> raw;
		if (method == 0) {
			if (csize != usize)
				fail("{}: stored member with different sizes", member);
			raw.assign(b + data, b + data + csize);
		} else if (method == 8) {
			if (usize > 1032 * csize + 1024) // deflate cannot expand more than ~1032:1
				fail("{}: corrupt archive ({} bytes cannot inflate to {})", member, csize, usize);
			raw.resize(usize);
			z_stream zs{};
			if (inflateInit2(&zs, -15) != Z_OK)
				fail("{}: zlib initialisation failed", member);
			zs.next_in = const_cast<Bytef *>(b + data);
			zs.avail_in = static_cast<uInt>(csize);
			zs.next_out = raw.data();
			zs.avail_out = static_cast<uInt>(usize);
			int rc = inflate(&zs, Z_FINISH);
			uint64_t got = zs.total_out;
			inflateEnd(&zs);
			if (rc != Z_STREAM_END || got != usize)
				fail("{}: corrupt deflate data", member);
		} else {
			fail("{}: compression method {} is not supported (stored or deflate only)", member, method);
		}
		if (crc32(0L, raw.data(), static_cast<uInt>(raw.size())) != crc)
			fail("{}: CRC mismatch (corrupt archive)", member);
		std::string key = name.size() > 4 && name.substr(name.size() - 4) == ".npy"
					  ? name.substr(0, name.size() - 4)
					  : name;
		out[key] = parse_npy(raw.data(), raw.size(), member);
	}
	return out;
}

void write_npz(const std::string &path, const std::map<std::string, NpyArray> &arrays)
{
	std::string zip, cd;
	uint16_t count = 0;
	for (const auto &[key, a] : arrays) {
		std::string body = npy_bytes(a), name = key + ".npy";
		if (body.size() >= 0xffffffffu || zip.size() >= 0xffffffffu)
			fail("{}: member {} is too large for a plain zip (over 4 GiB)", path, name);
		uint32_t crc = crc32(0L, reinterpret_cast<const Bytef *>(body.data()), static_cast<uInt>(body.size()));
		uint32_t off = static_cast<uint32_t>(zip.size());
		wr32(zip, 0x04034b50), wr16(zip, 20), wr16(zip, 0), wr16(zip, 0), wr16(zip, 0), wr16(zip, 0x21);
		wr32(zip, crc), wr32(zip, uint32_t(body.size())), wr32(zip, uint32_t(body.size()));
		wr16(zip, uint16_t(name.size())), wr16(zip, 0);
		zip += name;
		zip += body;
		wr32(cd, 0x02014b50), wr16(cd, 20), wr16(cd, 20), wr16(cd, 0), wr16(cd, 0), wr16(cd, 0), wr16(cd, 0x21);
		wr32(cd, crc), wr32(cd, uint32_t(body.size())), wr32(cd, uint32_t(body.size()));
		wr16(cd, uint16_t(name.size())), wr16(cd, 0), wr16(cd, 0), wr16(cd, 0), wr16(cd, 0), wr32(cd, 0),
			wr32(cd, off);
		cd += name;
		count++;
	}
	uint32_t cd_off = static_cast<uint32_t>(zip.size());
	zip += cd;
	wr32(zip, 0x06054b50), wr16(zip, 0), wr16(zip, 0), wr16(zip, count), wr16(zip, count);
	wr32(zip, uint32_t(cd.size())), wr32(zip, cd_off), wr16(zip, 0);
	write_file_atomic(path, zip);
}

} // namespace knlp
