#include "data/unicode.h"

#include <algorithm>

namespace knlp {

namespace {
struct CodeRange {
	uint32_t lo, hi;
};
#include "data/unicode_tables.inc"

template <size_t N> bool in_ranges(const CodeRange (&r)[N], uint32_t cp)
{
	auto it = std::upper_bound(r, r + N, cp, [](uint32_t v, const CodeRange &c) { return v < c.lo; });
	return it != r && cp <= (it - 1)->hi;
}

struct AsciiTable {
	CharClass cls[128];
	AsciiTable()
	{
		for (uint32_t c = 0; c < 128; c++) {
			if (in_ranges(k_letter_ranges, c))
				cls[c] = CharClass::Letter;
			else if (in_ranges(k_number_ranges, c))
				cls[c] = CharClass::Number;
			else if (in_ranges(k_space_ranges, c))
				cls[c] = CharClass::Space;
			else
				cls[c] = CharClass::Other;
		}
	}
};
} // namespace

CharClass char_class(uint32_t cp)
{
	static const AsciiTable ascii;
	if (cp < 128)
		return ascii.cls[cp];
	if (in_ranges(k_letter_ranges, cp))
		return CharClass::Letter;
	if (in_ranges(k_number_ranges, cp))
		return CharClass::Number;
	if (in_ranges(k_space_ranges, cp))
		return CharClass::Space;
	return CharClass::Other;
}

size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp, bool *valid)
{
	unsigned char c = p[0];
	*valid = true;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t len;
	uint32_t v, min;
	if ((c & 0xe0) == 0xc0)
		len = 2, v = c & 0x1f, min = 0x80;
	else if ((c & 0xf0) == 0xe0)
		len = 3, v = c & 0x0f, min = 0x800;
	else if ((c & 0xf8) == 0xf0)
		len = 4, v = c & 0x07, min = 0x10000;
	else
		goto bad;
	if (len > n)
		goto bad;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			goto bad;
		v = (v << 6) | (p[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		goto bad;
	*cp = v;
	return len;
bad:
	*valid = false;
	*cp = c;
	return 1;
}

} // namespace knlp
