// Tokenizers: GPT-2 pre-tokenization rules, known ids, round trips, bad vocabularies.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "data/bpe.h"
#include "data/nfc.h"
#include "data/tokenizer.h"
#include "testutil.h"

using namespace knlp;

static std::vector<std::string> pieces(const std::string &s)
{
	std::vector<std::pair<size_t, size_t>> p;
	gpt2_pretokenize(s, p);
	std::vector<std::string> out;
	for (auto [b, e] : p)
		out.push_back(s.substr(b, e - b));
	return out;
}

using V = std::vector<std::string>;

TEST(Pretokenize, FollowsTheGpt2Pattern)
{
	EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
	EXPECT_EQ(pieces("it's we're I'll they've I'm he'd don't"),
		  (V{"it", "'s", " we", "'re", " I", "'ll", " they", "'ve", " I", "'m", " he", "'d", " don", "'t"}));
	EXPECT_EQ(pieces("IT'S"), (V{"IT", "'", "S"})); // contractions are case-sensitive
	EXPECT_EQ(pieces("abc123 456"), (V{"abc", "123", " 456"}));
	EXPECT_EQ(pieces("x!!?y"), (V{"x", "!!?", "y"}));
	EXPECT_EQ(pieces("a ''s"), (V{"a", " ''", "s"}));
	// \s+(?!\S) leaves the last space of a run to the next word.
	EXPECT_EQ(pieces("a   b"), (V{"a", "  ", " b"}));
	EXPECT_EQ(pieces("a\n\nb"), (V{"a", "\n", "\n", "b"}));
	EXPECT_EQ(pieces("a\t b"), (V{"a", "\t", " b"}));
	EXPECT_EQ(pieces("end  "), (V{"end", "  "}));
	EXPECT_EQ(pieces(" "), (V{" "}));
	EXPECT_EQ(pieces(""), (V{}));
	// Unicode letters, numbers and other symbols (UTF-8).
	EXPECT_EQ(pieces("naïve café"), (V{"naïve", " café"}));
	EXPECT_EQ(pieces("x ½²"), (V{"x", " ½²"})); // No class counts as a number
	EXPECT_EQ(pieces("日本語 テキスト"), (V{"日本語", " テキスト"}));
	EXPECT_EQ(pieces("🙂🙂 ok"), (V{"🙂🙂", " ok"}));
	EXPECT_EQ(pieces("a\xc2\xa0"
			 "b"),
		  (V{"a", "\xc2\xa0", "b"})); // no-break space is \s
	// Invalid UTF-8 bytes are "other" characters, one byte each.
	EXPECT_EQ(pieces("a\xff\xfe b"), (V{"a", "\xff\xfe", " b"}));
}

TEST(ByteTokenizer, IsTheIdentity)
{
	auto t = make_byte_tokenizer();
	std::string s("\x00\x01hello\xff", 8);
	auto ids = t->encode(s);
	ASSERT_EQ(ids.size(), 8u);
	EXPECT_EQ(ids[0], 0u);
	EXPECT_EQ(ids[7], 255u);
	EXPECT_EQ(t->decode(ids), s);
	EXPECT_EQ(t->vocab_size(), 256);
	EXPECT_THROW(t->decode(std::vector<uint32_t>{256}), Error);
}

class Gpt2 : public ::testing::Test {
protected:
	void SetUp() override
	{
		dir = default_vocab_dir();
		if (!file_exists(dir + "/encoder.json"))
			GTEST_FAIL() << "GPT-2 vocabulary missing in " << dir << " (make deps installs it)";
		tok = make_gpt2_tokenizer(dir);
	}
	std::string dir;
	std::unique_ptr<Tokenizer> tok;
};

TEST_F(Gpt2, KnownIds)
{
	EXPECT_EQ(tok->vocab_size(), 50257);
	EXPECT_EQ(tok->eot_id(), 50256);
	EXPECT_EQ(tok->encode("Hello world"), (std::vector<uint32_t>{15496, 995}));
	EXPECT_EQ(tok->encode(" the"), (std::vector<uint32_t>{262}));
	EXPECT_EQ(tok->encode("\n"), (std::vector<uint32_t>{198}));
	EXPECT_EQ(tok->decode(std::vector<uint32_t>{50256}), "<|endoftext|>");
}

TEST_F(Gpt2, RoundTripsArbitraryBytes)
{
	Rng rng(5);
	for (int trial = 0; trial < 200; trial++) {
		std::string s(rng.below(64), '\0');
		for (char &c : s)
			c = static_cast<char>(trial % 2 ? rng.below(256) : " aeiou'\n\t1\xc3\xa9"[rng.below(12)]);
		auto ids = tok->encode(s);
		for (auto id : ids)
			ASSERT_LT(id, 50257u);
		ASSERT_EQ(tok->decode(ids), s);
	}
	auto clone = tok->clone();
	EXPECT_EQ(clone->encode("clone me"), tok->encode("clone me"));
}

TEST(Gpt2Files, BadVocabulariesAreReported)
{
	test::TempDir d;
	auto load_error = [&] { return test::error_of([&] { make_gpt2_tokenizer(d.path); }); };
	EXPECT_NE(load_error().find("encoder.json: GPT-2 vocabulary missing; run `make deps`"), std::string::npos)
		<< load_error();
	test::write(d / "encoder.json", "{\"a\": ");
	test::write(d / "vocab.bpe", "#version: 0.2\n");
	EXPECT_NE(load_error().find("encoder.json: malformed JSON"), std::string::npos) << load_error();
	// A complete byte alphabet, then a broken merge line.
	std::string enc = "{";
	std::vector<uint32_t> cps;
	for (int b = '!'; b <= '~'; b++)
		cps.push_back(b);
	for (int b = 0xa1; b <= 0xac; b++)
		cps.push_back(b);
	for (int b = 0xae; b <= 0xff; b++)
		cps.push_back(b);
	for (uint32_t extra = 256; cps.size() < 256; extra++)
		cps.push_back(extra);
	for (size_t i = 0; i < cps.size(); i++) {
		std::string u;
		uint32_t c = cps[i];
		if (c < 0x80)
			u = std::string(1, char(c));
		else
			u = {char(0xc0 | (c >> 6)), char(0x80 | (c & 0x3f))};
		if (u == "\"" || u == "\\")
			u = "\\" + u;
		enc += (i ? "," : "") + std::string("\"") + u + "\":" + std::to_string(i);
	}
	enc += "}";
	test::write(d / "encoder.json", enc);
	test::write(d / "vocab.bpe", "#version: 0.2\na b c\n");
	EXPECT_NE(load_error().find("vocab.bpe:2: malformed merge line"), std::string::npos) << load_error();
}

// ---------------------------------------------------------------- tokenizer.json support

static std::string nfc(const std::string &s)
{
	std::string out;
	nfc_normalize(s, out);
	return out;
}

TEST(Nfc, ComposesReordersAndKeepsBytes)
{
	EXPECT_EQ(nfc("plain ASCII\n"), "plain ASCII\n");
	EXPECT_TRUE(nfc_quick_check("plain ASCII and caf\u00e9"));
	EXPECT_FALSE(nfc_quick_check("cafe\u0301"));
	EXPECT_EQ(nfc("cafe\u0301"), "caf\u00e9");	  // e + acute -> U+00E9
	EXPECT_EQ(nfc("\u212b"), "\u00c5");		  // singleton: the angstrom sign
	EXPECT_EQ(nfc("A\u030a"), "\u00c5");		  // A + ring
	EXPECT_EQ(nfc("\u1e0b\u0323"), "\u1e0d\u0307");	  // d-dot-above + dot-below: reordered
	EXPECT_EQ(nfc("q\u0307\u0323"), "q\u0323\u0307"); // no composite: only reordered
	EXPECT_EQ(nfc("\u1100\u1161\u11a8"), "\uac01");	  // Hangul L V T -> one syllable
	EXPECT_EQ(nfc("\uac00\u11a8"), "\uac01");	  // LV + T
	EXPECT_EQ(nfc("\u0344"), "\u0308\u0301");	  // excluded non-starter decomposition
	EXPECT_EQ(nfc("\u0958"), "\u0915\u093c");	  // composition exclusion (Devanagari qa)
	EXPECT_EQ(nfc("a\u0300\u0300"), "\u00e0\u0300");  // the second grave is blocked
	EXPECT_EQ(nfc("\xff"
		      "e\u0301\xc3"),
		  "\xff\u00e9\xc3"); // invalid bytes pass through
}

TEST(Pretokenize, FollowsTheLlama3AndQwen2Patterns)
{
	auto split = [](Pretok k, const std::string &s) {
		std::vector<std::pair<size_t, size_t>> p;
		pretokenize(k, SpaceFlavor::Unicode, s, p);
		V out;
		for (auto [b, e] : p)
			out.push_back(s.substr(b, e - b));
		return out;
	};
	// Contractions are case-insensitive; a punctuation or space character leads a word.
	EXPECT_EQ(split(Pretok::Llama3, "IT'S we'RE"), (V{"IT", "'S", " we", "'RE"}));
	EXPECT_EQ(split(Pretok::Llama3, "(hello) [x]"), (V{"(hello", ")", " [", "x", "]"}));
	// Digits: groups of up to three (Llama-3), one by one (Qwen2).
	EXPECT_EQ(split(Pretok::Llama3, "1234567 x"), (V{"123", "456", "7", " x"}));
	EXPECT_EQ(split(Pretok::Qwen2, "1234 x"), (V{"1", "2", "3", "4", " x"}));
	// Punctuation takes the line breaks after it; whitespace up to its last line break.
	EXPECT_EQ(split(Pretok::Qwen2, "a.\n\nb"), (V{"a", ".\n\n", "b"}));
	EXPECT_EQ(split(Pretok::Qwen2, "a \n \n  b"), (V{"a", " \n \n", " ", " b"}));
	EXPECT_EQ(split(Pretok::Qwen2, "a  b  "), (V{"a", " ", " b", "  "}));
	// U+0085 is whitespace to Oniguruma; U+FEFF is not.
	EXPECT_EQ(split(Pretok::Qwen2, "a\u0085\u0085b"), (V{"a", "\u0085", "\u0085b"}));
	EXPECT_EQ(split(Pretok::Qwen2, "a \ufeffb"), (V{"a", " \ufeff", "b"}));
}

TEST(HfTokenizer, Qwen3RoundTripsAndNamesItself)
{
	std::string dir = join_path(KNLP_SOURCE_DIR, "datasets/tokenizers/qwen3");
	ASSERT_TRUE(file_exists(join_path(dir, "tokenizer.json"))) << "run make deps";
	auto tok = make_tokenizer(dir, "");
	EXPECT_EQ(tok->name(), dir);
	EXPECT_EQ(tok->vocab_size(), 151669);
	EXPECT_EQ(tok->eot_id(), 151643);
	// Ids checked against Hugging Face's tokenizers (tests/test_hf_tokenizer.sh compares whole
	// corpora; these few pin the API).
	EXPECT_EQ(tok->encode("Hello world's WE'RE 12345 caf\u00e9  \n\n  x<|endoftext|>y"),
		  (std::vector<uint32_t>{9707, 1879, 594, 19677, 94153, 220, 16, 17, 18, 19, 20, 51950, 18611, 220, 856,
					 151643, 88}));
	std::string text = "kernel: don't panic \u2014 \u65e5\u672c <|im_start|>user\n\u00e9\xff";
	EXPECT_EQ(tok->decode(tok->encode(text)), text);
	// Decomposed input comes back composed (the normalizer is NFC).
	EXPECT_EQ(tok->decode(tok->encode("cafe\u0301")), "caf\u00e9");
	auto copy = tok->clone();
	EXPECT_EQ(copy->encode(text), tok->encode(text));
	EXPECT_NE(test::error_of([&] { tok->decode(std::vector<uint32_t>{151669}); }).find("outside the vocabulary"),
		  std::string::npos);
}
