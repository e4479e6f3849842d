#include "data/nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "data/unicode.h"

namespace knlp {

namespace {
struct CccEntry {
	uint32_t cp, ccc;
};
struct DecompEntry {
	uint32_t cp, a, b;
};
struct CompEntry {
	uint32_t a, b, c;
};
#include "data/nfc_tables.inc"

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr uint32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
constexpr uint32_t LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;
// Code points standing for one invalid UTF-8 byte each: never composed, never reordered.
constexpr uint32_t RawByte = 0x110000;

struct Tables {
	std::unordered_map<uint32_t, uint8_t> ccc;
	std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>> decomp;
	std::unordered_map<uint64_t, uint32_t> comp;
	std::vector<uint8_t> unstable_bmp; // bit per BMP code point: may change under NFC
	std::vector<uint32_t> unstable_astral;
	Tables() : unstable_bmp(0x10000 / 8, 0)
	{
		auto mark = [&](uint32_t cp) {
			if (cp < 0x10000)
				unstable_bmp[cp >> 3] |= uint8_t(1u << (cp & 7));
			else
				unstable_astral.push_back(cp);
		};
		for (const auto &e : k_ccc) {
			ccc[e.cp] = static_cast<uint8_t>(e.ccc);
			mark(e.cp);
		}
		for (const auto &e : k_decomp) {
			decomp[e.cp] = {e.a, e.b};
			mark(e.cp);
		}
		for (const auto &e : k_comp) {
			comp[uint64_t(e.a) << 32 | e.b] = e.c;
			mark(e.b); // may compose with what precedes it
		}
		for (uint32_t cp = VBase; cp < VBase + VCount; cp++)
			mark(cp);
		for (uint32_t cp = TBase + 1; cp < TBase + TCount; cp++)
			mark(cp);
		std::sort(unstable_astral.begin(), unstable_astral.end());
	}
	bool unstable(uint32_t cp) const
	{
		if (cp < 0x10000)
			return unstable_bmp[cp >> 3] >> (cp & 7) & 1;
		return std::binary_search(unstable_astral.begin(), unstable_astral.end(), cp);
	}
	uint8_t class_of(uint32_t cp) const
	{
		if (cp < 0x300 || cp >= RawByte)
			return 0;
		auto it = ccc.find(cp);
		return it == ccc.end() ? 0 : it->second;
	}
};

const Tables &tables()
{
	static const Tables t;
	return t;
}

void decompose(const Tables &t, uint32_t cp, std::vector<uint32_t> &out)
{
	if (cp >= SBase && cp < SBase + SCount) {
		uint32_t s = cp - SBase;
		out.push_back(LBase + s / NCount);
		out.push_back(VBase + (s % NCount) / TCount);
		if (s % TCount)
			out.push_back(TBase + s % TCount);
		return;
	}
	auto it = cp < RawByte ? t.decomp.find(cp) : t.decomp.end();
	if (it == t.decomp.end()) {
		out.push_back(cp);
		return;
	}
	decompose(t, it->second.first, out);
	if (it->second.second)
		decompose(t, it->second.second, out);
}

uint32_t compose_pair(const Tables &t, uint32_t a, uint32_t b)
{
	if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
		return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
	if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
		return a + (b - TBase);
	auto it = t.comp.find(uint64_t(a) << 32 | b);
	return it == t.comp.end() ? 0 : it->second;
}

void put_utf8(uint32_t cp, std::string &out)
{
	if (cp >= RawByte) {
		out += static_cast<char>(cp - RawByte);
	} else if (cp < 0x80) {
		out += static_cast<char>(cp);
	} else if (cp < 0x800) {
		out += static_cast<char>(0xC0 | cp >> 6);
		out += static_cast<char>(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		out += static_cast<char>(0xE0 | cp >> 12);
		out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
		out += static_cast<char>(0x80 | (cp & 0x3F));
	} else {
		out += static_cast<char>(0xF0 | cp >> 18);
		out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
		out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
		out += static_cast<char>(0x80 | (cp & 0x3F));
	}
}
} // namespace

bool nfc_quick_check(std::string_view text)
{
	const auto *p = reinterpret_cast<const unsigned char *>(text.data());
	size_t n = text.size(), i = 0;
	const Tables *t = nullptr;
	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		uint32_t cp;
		bool valid;
		i += utf8_next(p + i, n - i, &cp, &valid);
		if (!valid || cp < 0x300)
			continue;
		if (!t)
			t = &tables();
		if (t->unstable(cp))
			return false;
	}
	return true;
}

void nfc_normalize(std::string_view text, std::string &out)
{
	out.clear();
	if (nfc_quick_check(text)) {
		out.assign(text);
		return;
	}
	const Tables &t = tables();
	const auto *p = reinterpret_cast<const unsigned char *>(text.data());
	size_t n = text.size();
	// 1. Full canonical decomposition.
	std::vector<uint32_t> cps;
	cps.reserve(n);
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		bool valid;
		size_t len = utf8_next(p + i, n - i, &cp, &valid);
		if (!valid)
			cps.push_back(RawByte + p[i]);
		else
			decompose(t, cp, cps);
		i += len;
	}
	// 2. Canonical ordering: stable sort of every run of non-starters by combining class.
	for (size_t i = 0; i < cps.size();) {
		if (t.class_of(cps[i]) == 0) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < cps.size() && t.class_of(cps[j]) != 0)
			j++;
		std::stable_sort(cps.begin() + i, cps.begin() + j,
				 [&](uint32_t a, uint32_t b) { return t.class_of(a) < t.class_of(b); });
		i = j;
	}
	// 3. Canonical composition: each character joins the last starter unless blocked.
	size_t starter = SIZE_MAX, o = 0;
	int last_class = -1;
	for (size_t i = 0; i < cps.size(); i++) {
		uint32_t cp = cps[i];
		int cls = t.class_of(cp);
		if (starter != SIZE_MAX && (last_class < cls || (last_class == 0 && o == starter + 1))) {
			// Not blocked: nothing between the starter and cp has a class >= cp's, and when
			// cp is itself a starter it must follow the starter directly.
			if (uint32_t c =
				    cps[starter] < RawByte && cp < RawByte ? compose_pair(t, cps[starter], cp) : 0) {
				cps[starter] = c;
				continue;
			}
		}
		if (cls == 0) {
			starter = o;
			last_class = 0;
		} else {
			last_class = cls;
		}
		cps[o++] = cp;
	}
	cps.resize(o);
	out.reserve(n);
	for (uint32_t cp : cps)
		put_utf8(cp, out);
}

} // namespace knlp
