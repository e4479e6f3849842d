// NumPy's .npy arrays and .npz archives (a zip of .npy members, stored or deflated, with or
// without zip64 records, as numpy.savez and numpy.savez_compressed write them). Every error
// names the file and the member.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace knlp {

struct NpyArray {
	char kind = 'f';	    // 'f' float, 'i' signed, 'u' unsigned, 'b' bool
	int itemsize = 4;	    // bytes per element
	std::vector<int64_t> shape; // C order (Fortran-order files are rejected)
	std::vector<uint8_t> data;  // little-endian elements
	int64_t size() const;	    // product of the shape
	std::string dtype() const;  // numpy spelling, e.g. "<f4", "|b1"
	// Elements converted (integers: exact or an error naming `what`; floats: as doubles).
	std::vector<int64_t> as_int64(const std::string &what) const;
	std::vector<float> as_float(const std::string &what) const;
};

// Parse one .npy image; `origin` names it in errors.
NpyArray parse_npy(const uint8_t *p, size_t n, const std::string &origin);
std::string npy_bytes(const NpyArray &a);

NpyArray make_npy_f32(const std::vector<float> &v, std::vector<int64_t> shape);
NpyArray make_npy_i64(const std::vector<int64_t> &v, std::vector<int64_t> shape);

// Every member of an .npz ("x.npy" is returned as "x").
std::map<std::string, NpyArray> read_npz(const std::string &path);
// An uncompressed .npz (numpy.load reads it), written atomically.
void write_npz(const std::string &path, const std::map<std::string, NpyArray> &arrays);

} // namespace knlp
