// Hugging Face tokenizer.json: byte-level BPE models (GPT-2, Llama-3, Qwen2 and their kin).
// Everything the file asks for that knlp does not implement is an error naming it, so a
// tokenizer never silently encodes differently from Hugging Face's.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "data/bpe.h"
#include "data/tokenizer.h"
#include "data/unicode.h"

namespace knlp {

namespace {
using json = nlohmann::json;

const char *k_gpt2_pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char *k_llama3_pattern =
	R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char *k_qwen2_pattern =
	R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string type_of(const json &j)
{
	return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "?";
}

void byte_level_options(const std::string &file, const json &j, BpeTables &t, bool *use_regex)
{
	t.add_prefix_space = j.value("add_prefix_space", false);
	*use_regex = j.value("use_regex", true);
}

void read_pre_tokenizer(const std::string &file, const json &j, BpeTables &t)
{
	const char *supported = "ByteLevel, or Sequence of a Split with GPT-2's, Llama-3's or Qwen2's "
				"pattern and ByteLevel";
	std::string type = type_of(j);
	bool use_regex = true;
	if (type == "ByteLevel") {
		byte_level_options(file, j, t, &use_regex);
		t.pretok = use_regex ? Pretok::Gpt2 : Pretok::None;
		return;
	}
	if (type != "Sequence")
		fail("{}: pre_tokenizer '{}' is not implemented (knlp implements {})", file,
		     j.is_null() ? "null" : type, supported);
	const json &seq = j.value("pretokenizers", json::array());
	if (seq.size() != 2 || type_of(seq[0]) != "Split" || type_of(seq[1]) != "ByteLevel")
		fail(
			"{}: pre_tokenizer Sequence of [{}] is not implemented (knlp implements {})", file,
			[&] {
				std::string s;
				for (const auto &p : seq)
					s += (s.empty() ? "" : ", ") + type_of(p);
				return s;
			}(),
			supported);
	const json &split = seq[0];
	std::string pattern;
	if (split.contains("pattern") && split["pattern"].is_object() && split["pattern"].contains("Regex"))
		pattern = split["pattern"]["Regex"].get<std::string>();
	else
		fail("{}: pre_tokenizer Split without a Regex pattern is not implemented", file);
	if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
		fail("{}: pre_tokenizer Split with behavior '{}'{} is not implemented (knlp implements Isolated)", file,
		     split.value("behavior", ""), split.value("invert", false) ? " inverted" : "");
	if (pattern == k_gpt2_pattern)
		t.pretok = Pretok::Gpt2;
	else if (pattern == k_llama3_pattern)
		t.pretok = Pretok::Llama3;
	else if (pattern == k_qwen2_pattern)
		t.pretok = Pretok::Qwen2;
	else
		fail("{}: pre-tokenizer pattern {} is not implemented (knlp implements GPT-2's, Llama-3's and "
		     "Qwen2's)",
		     file, json(pattern).dump());
	byte_level_options(file, seq[1], t, &use_regex);
	if (use_regex)
		fail("{}: a ByteLevel pre-tokenizer with use_regex after a Split is not implemented", file);
}

void read_normalizer(const std::string &file, const json &j, BpeTables &t)
{
	if (j.is_null())
		return;
	std::string type = type_of(j);
	if (type == "NFC") {
		t.nfc = true;
		return;
	}
	if (type == "Sequence") {
		for (const auto &n : j.value("normalizers", json::array()))
			read_normalizer(file, n, t);
		return;
	}
	fail("{}: normalizer '{}' is not implemented (knlp implements NFC)", file, type);
}

std::string key_bytes(const std::string &file, const std::string &key, const std::unordered_map<uint32_t, uint8_t> &inv)
{
	std::string out;
	const auto *p = reinterpret_cast<const unsigned char *>(key.data());
	for (size_t i = 0; i < key.size();) {
		uint32_t cp;
		bool valid;
		i += utf8_next(p + i, key.size() - i, &cp, &valid);
		auto it = inv.find(cp);
		if (!valid || it == inv.end())
			fail("{}: vocabulary entry {} is not byte-level (knlp implements byte-level BPE)", file,
			     json(key).dump());
		out += static_cast<char>(it->second);
	}
	return out;
}

std::shared_ptr<const BpeTables> load(const std::string &dir, const std::string &file)
{
	json j;
	try {
		j = json::parse(read_file(file));
	} catch (const json::exception &e) {
		fail("{}: malformed JSON ({})", file, e.what());
	}
	auto t = std::make_shared<BpeTables>();
	t->name = dir;
	t->space = SpaceFlavor::Unicode;
	try {
		const json &model = j.at("model");
		std::string mtype = type_of(model);
		if (mtype != "BPE")
			fail("{}: tokenizer model '{}' is not supported (knlp supports byte-level BPE)", file, mtype);
		if (model.value("byte_fallback", false))
			fail("{}: BPE with byte_fallback (SentencePiece-style) is not supported (knlp supports "
			     "byte-level BPE)",
			     file);
		for (const char *k : {"continuing_subword_prefix", "end_of_word_suffix"})
			if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
				fail("{}: BPE with {} is not supported (knlp supports byte-level BPE)", file, k);
		if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0)
			fail("{}: BPE dropout is not supported (encoding must be deterministic)", file);
		t->ignore_merges = model.value("ignore_merges", false);
		read_normalizer(file, j.value("normalizer", json()), *t);
		read_pre_tokenizer(file, j.value("pre_tokenizer", json()), *t);
		std::string dec = type_of(j.value("decoder", json()));
		if (!j.value("decoder", json()).is_null() && dec != "ByteLevel")
			fail("{}: decoder '{}' is not implemented (knlp implements ByteLevel)", file, dec);

		const auto &u = byte_to_unicode();
		std::unordered_map<uint32_t, uint8_t> inv;
		for (int b = 0; b < 256; b++)
			inv[u[b]] = static_cast<uint8_t>(b);
		const json &vocab = model.at("vocab");
		if (!vocab.is_object() || vocab.empty())
			fail("{}: model.vocab is not a non-empty object", file);
		uint64_t max_id = 0;
		for (auto it = vocab.begin(); it != vocab.end(); ++it)
			max_id = std::max<uint64_t>(max_id, it.value().get<uint64_t>());
		const json &added = j.value("added_tokens", json::array());
		for (const auto &a : added)
			max_id = std::max<uint64_t>(max_id, a.at("id").get<uint64_t>());
		if (max_id >= (1u << 24))
			fail("{}: token id {} is implausibly large", file, max_id);
		t->id_bytes.assign(max_id + 1, std::string());
		std::vector<bool> seen(max_id + 1, false);
		for (auto it = vocab.begin(); it != vocab.end(); ++it) {
			uint32_t id = it.value().get<uint32_t>();
			if (seen[id])
				fail("{}: id {} appears twice in model.vocab", file, id);
			seen[id] = true;
			std::string bytes = key_bytes(file, it.key(), inv);
			t->id_bytes[id] = bytes;
			t->vocab[bytes] = id;
		}
		for (int b = 0; b < 256; b++) {
			auto it = t->vocab.find(std::string(1, static_cast<char>(b)));
			if (it == t->vocab.end())
				fail("{}: the single-byte token for byte {} is missing from model.vocab", file, b);
			t->byte_id[b] = it->second;
		}
		uint32_t rank = 0;
		for (const auto &m : model.at("merges")) {
			std::string a, b;
			if (m.is_string()) {
				std::string s = m.get<std::string>();
				size_t sp = s.find(' ');
				if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
					fail("{}: merge {} is not two tokens separated by one space", file, m.dump());
				a = s.substr(0, sp), b = s.substr(sp + 1);
			} else if (m.is_array() && m.size() == 2) {
				a = m[0].get<std::string>(), b = m[1].get<std::string>();
			} else {
				fail("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", file, m.dump());
			}
			std::string ab = key_bytes(file, a, inv), bb = key_bytes(file, b, inv);
			auto ia = t->vocab.find(ab), ib = t->vocab.find(bb), iab = t->vocab.find(ab + bb);
			if (ia == t->vocab.end() || ib == t->vocab.end() || iab == t->vocab.end())
				fail("{}: merge {} refers to a token missing from model.vocab", file, m.dump());
			t->merges.emplace(uint64_t(ia->second) << 32 | ib->second, std::make_pair(rank++, iab->second));
		}
		for (const auto &a : added) {
			AddedToken at;
			at.content = a.at("content").get<std::string>();
			at.id = a.at("id").get<uint32_t>();
			at.lstrip = a.value("lstrip", false);
			at.rstrip = a.value("rstrip", false);
			at.single_word = a.value("single_word", false);
			if (at.content.empty())
				fail("{}: added token {} has empty content", file, at.id);
			if (seen[at.id] && t->id_bytes[at.id] != at.content &&
			    key_bytes(file, at.content, inv) != t->id_bytes[at.id])
				fail("{}: added token {} reuses id {} of a different vocabulary entry", file,
				     json(at.content).dump(), at.id);
			seen[at.id] = true;
			t->id_bytes[at.id] = at.content;
			t->added_first_byte[static_cast<unsigned char>(at.content[0])] = true;
			t->added.push_back(std::move(at));
		}
		for (uint64_t id = 0; id <= max_id; id++)
			if (!seen[id])
				fail("{}: token id {} is missing (ids must be contiguous from 0)", file, id);
	} catch (const json::exception &e) {
		fail("{}: unexpected structure ({})", file, e.what());
	}
	for (const char *eot : {"<|endoftext|>", "<|end_of_text|>"})
		for (const auto &a : t->added)
			if (t->eot < 0 && a.content == eot)
				t->eot = static_cast<int>(a.id);
	return t;
}
} // namespace

bool is_hf_tokenizer(const std::string &path)
{
	namespace fs = std::filesystem;
	std::error_code ec;
	if (fs::is_directory(path, ec))
		return fs::is_regular_file(fs::path(path) / "tokenizer.json", ec);
	return path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0 && fs::is_regular_file(path, ec);
}

namespace {
std::pair<std::string, std::string> dir_and_file(const std::string &path)
{
	namespace fs = std::filesystem;
	std::error_code ec;
	fs::path p = fs::absolute(path, ec);
	std::string dir, file;
	if (fs::is_directory(p, ec)) {
		dir = p.lexically_normal().string();
		if (!dir.empty() && dir.back() == '/')
			dir.pop_back();
		file = join_path(dir, "tokenizer.json");
	} else {
		file = p.lexically_normal().string();
		dir = file;
	}
	if (!file_exists(file))
		fail("{}: no tokenizer.json (a Hugging Face model folder has one)", file);
	return {dir, file};
}
} // namespace

std::string hf_pretokenizer(const std::string &path)
{
	auto [dir, file] = dir_and_file(path);
	switch (load(dir, file)->pretok) {
	case Pretok::Gpt2: return "gpt2";
	case Pretok::Llama3: return "llama3";
	case Pretok::Qwen2: return "qwen2";
	case Pretok::None: return "none";
	}
	return "none";
}

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string &path)
{
	auto [dir, file] = dir_and_file(path);
	return make_bpe_tokenizer(load(dir, file));
}

} // namespace knlp
