// Corpus preparation, token files, SHA-256, safetensors.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "data/corpus.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "testutil.h"

using namespace knlp;

static std::string gzip(const std::string &s)
{
	uLongf n = compressBound(s.size()) + 64;
	std::string out(n, '\0');
	z_stream zs{};
	deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
	zs.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(s.data()));
	zs.avail_in = s.size();
	zs.next_out = reinterpret_cast<Bytef *>(&out[0]);
	zs.avail_out = n;
	deflate(&zs, Z_FINISH);
	out.resize(zs.total_out);
	deflateEnd(&zs);
	return out;
}

using test::error_of;

TEST(Sha256, KnownVectors)
{
	EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	Sha256 s;
	for (int i = 0; i < 1000; i++)
		s.update(std::string(1000, 'a'));
	EXPECT_EQ(s.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

struct Corpus : ::testing::Test {
	test::TempDir d;
	std::string a = "First document.\n", b = "Second, in a sub folder\n", c = "third (gzipped)\n";
	void SetUp() override
	{
		test::write(d / "corpus/b_dir/b.rst", b);
		test::write(d / "corpus/a.txt", a);
		test::write(d / "corpus/c.md.gz", gzip(c));
		test::write(d / "corpus/ignored.bin", "not text");
		test::write(d / "corpus/notes.txt.orig", "not text either");
	}
};

TEST_F(Corpus, ListsTextInSortedOrder)
{
	auto files = list_corpus(d / "corpus");
	ASSERT_EQ(files.size(), 3u);
	EXPECT_EQ(files[0].relpath, "a.txt");
	EXPECT_EQ(files[1].relpath, "b_dir/b.rst");
	EXPECT_EQ(files[2].relpath, "c.md.gz");
	EXPECT_TRUE(files[2].gz);
	EXPECT_EQ(read_document(files[2]), c);
}

TEST_F(Corpus, PrepareWritesExactBytesAndDigests)
{
	PrepareOptions o;
	o.corpus = d / "corpus";
	o.out_dir = d / "out";
	o.quiet = true;
	auto r = prepare_corpus(o);
	std::string all = a + b + c; // byte tokenizer: tokens are the bytes, no separators
	uint64_t n = all.size(), val = n * 10 / 100;
	EXPECT_EQ(r.train_tokens + r.val_tokens, n);
	EXPECT_EQ(r.val_tokens, val);
	std::string train_bytes, val_bytes;
	for (uint64_t i = 0; i < n; i++) {
		std::string le{all[i], '\0'};
		(i < n - val ? train_bytes : val_bytes) += le;
	}
	EXPECT_EQ(test::slurp(d / "out/train.bin"), train_bytes);
	EXPECT_EQ(test::slurp(d / "out/val.bin"), val_bytes);
	auto meta = nlohmann::json::parse(test::slurp(d / "out/meta.json"));
	EXPECT_EQ(meta["train_sha256"], sha256_hex(train_bytes));
	EXPECT_EQ(meta["val_sha256"], sha256_hex(val_bytes));
	EXPECT_EQ(meta["source_digest"], sha256_hex("a.txt" + std::string(1, '\0') + a + "b_dir/b.rst" +
						    std::string(1, '\0') + b + "c.md.gz" + std::string(1, '\0') + c));
	EXPECT_EQ(meta["vocab_size"], 256);
	EXPECT_EQ(meta["source_files"], 3);
	EXPECT_FALSE(file_exists(d / "out/all.bin"));
	// Deterministic: a second preparation (other thread count) is byte-identical.
	o.out_dir = d / "out2";
	o.threads = 1;
	auto r2 = prepare_corpus(o);
	EXPECT_EQ(r2.train_sha256, r.train_sha256);
	EXPECT_EQ(r2.source_digest, r.source_digest);
}

TEST_F(Corpus, Gpt2PrepareSeparatesDocumentsWithEndOfText)
{
	if (!file_exists(default_vocab_dir() + "/encoder.json"))
		GTEST_FAIL() << "GPT-2 vocabulary missing (make deps)";
	PrepareOptions o;
	o.corpus = d / "corpus";
	o.out_dir = d / "g";
	o.tokenizer = "gpt2";
	o.val_percent = 50;
	auto r = prepare_corpus(o);
	auto tok = make_gpt2_tokenizer(default_vocab_dir());
	std::vector<uint32_t> want;
	for (const auto &doc : {a, b, c}) {
		auto ids = tok->encode(doc);
		want.insert(want.end(), ids.begin(), ids.end());
		want.push_back(50256);
	}
	ASSERT_EQ(r.train_tokens + r.val_tokens, want.size());
	TokenFile tf(d / "g/train.bin", 50257), vf(d / "g/val.bin", 50257);
	for (uint64_t i = 0; i < want.size(); i++)
		EXPECT_EQ(i < tf.size() ? tf.at(i) : vf.at(i - tf.size()), want[i]) << i;
}

TEST_F(Corpus, BadCorporaAreReported)
{
	PrepareOptions o;
	o.out_dir = d / "bad";
	o.corpus = d / "missing";
	EXPECT_EQ(error_of([&] { prepare_corpus(o); }), d / "missing" + ": corpus path does not exist");
	test::write(d / "empty/readme.bin", "x");
	o.corpus = d / "empty";
	EXPECT_EQ(error_of([&] { prepare_corpus(o); }),
		  d / "empty" + ": holds no text files (.txt, .rst, .md or their .gz forms)");
	std::string big(200000, 'x');
	std::string z = gzip(big);
	test::write(d / "trunc/t.txt.gz", z.substr(0, z.size() / 2));
	o.corpus = d / "trunc";
	std::string e = error_of([&] { prepare_corpus(o); });
	EXPECT_NE(e.find("t.txt.gz: corrupt or truncated gzip data"), std::string::npos) << e;
	// Nothing left that looks complete.
	EXPECT_FALSE(file_exists(d / "bad/meta.json"));
	EXPECT_FALSE(file_exists(d / "bad/train.bin"));
}

TEST(TokenFile, RejectsBadFiles)
{
	test::TempDir d;
	test::write(d / "empty.bin", "");
	test::write(d / "odd.bin", std::string("\x01\x00\x02", 3));
	test::write(d / "big.bin", std::string("\x01\x00\x00\x01", 4)); // ids 1 and 256
	EXPECT_EQ(error_of([&] { TokenFile f(d / "empty.bin", 256); }), d / "empty.bin" + ": token file is empty");
	EXPECT_EQ(error_of([&] { TokenFile f(d / "odd.bin", 256); }),
		  d / "odd.bin" + ": byte size 3 is not a multiple of 2 (uint16 tokens; truncated file?)");
	EXPECT_EQ(error_of([&] { TokenFile f(d / "big.bin", 256); }),
		  d / "big.bin" + ": token id 256 at position 1 is outside the vocabulary (256)");
	EXPECT_NE(error_of([&] { TokenFile f(d / "nope.bin", 256); }).find("cannot open token file"),
		  std::string::npos);
	TokenFile ok(d / "big.bin", 257);
	EXPECT_EQ(error_of([&] { ok.require_window(2); }),
		  d / "big.bin" + ": 2 tokens is smaller than one window of 2 + 1 tokens");
	// Vocabularies above 65,536 ids: uint32 little-endian.
	EXPECT_EQ(error_of([&] { TokenFile f(d / "odd.bin", 100000); }),
		  d / "odd.bin" + ": byte size 3 is not a multiple of 4 (uint32 tokens; truncated file?)");
	test::write(d / "wide.bin", std::string("\x01\x00\x00\x00\xa0\x86\x01\x00\x9f\x86\x01\x00", 12));
	EXPECT_EQ(error_of([&] { TokenFile f(d / "wide.bin", 100000); }),
		  d / "wide.bin" + ": token id 100000 at position 1 is outside the vocabulary (100000)");
	TokenFile wide(d / "wide.bin", 100001);
	ASSERT_EQ(wide.size(), 3u);
	EXPECT_EQ(wide.token_bytes(), 4);
	EXPECT_EQ(wide.at(0), 1u);
	EXPECT_EQ(wide.at(1), 100000u);
	EXPECT_EQ(wide.at(2), 99999u);
	int64_t x[2], y[2];
	wide.window(0, 2, x, y);
	EXPECT_EQ(x[1], 100000);
	EXPECT_EQ(y[1], 99999);
}

TEST(TokenFile, RandomWindowsAreShiftedAndInBounds)
{
	test::TempDir d;
	std::string data;
	for (int i = 0; i < 100; i++)
		data += std::string{char(i), '\0'};
	test::write(d / "t.bin", data);
	TokenFile f(d / "t.bin", 256);
	Rng r1(3), r2(3);
	std::vector<int64_t> x(4 * 10), y(4 * 10), x2(40), y2(40);
	std::set<int64_t> starts;
	for (int k = 0; k < 200; k++) {
		f.random_batch(r1, 4, 10, x.data(), y.data());
		f.random_batch(r2, 4, 10, x2.data(), y2.data());
		ASSERT_EQ(x, x2);
		for (int b = 0; b < 4; b++) {
			starts.insert(x[b * 10]);
			for (int t = 0; t < 10; t++) {
				ASSERT_EQ(x[b * 10 + t], x[b * 10] + t);     // contiguous
				ASSERT_EQ(y[b * 10 + t], x[b * 10 + t] + 1); // shifted by one
				ASSERT_LE(y[b * 10 + t], 99);
			}
		}
	}
	EXPECT_EQ(*starts.begin(), 0);
	EXPECT_EQ(*starts.rbegin(), 89); // the last full window x=[89,99), y=[90,100)
}

TEST(Safetensors, RoundTripAndValidation)
{
	test::TempDir d;
	std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1.0f};
	std::vector<int64_t> ids = {1, 2, 3};
	write_safetensors(d / "t.safetensors",
			  {{"w", "F32", {2, 3}, w.data(), 24}, {"ids", "I64", {3}, ids.data(), 24}}, {{"k", "v"}});
	SafetensorsFile f(d / "t.safetensors");
	ASSERT_EQ(f.tensors().size(), 2u);
	EXPECT_EQ(f.get("w").shape, (std::vector<int64_t>{2, 3}));
	EXPECT_EQ(std::memcmp(f.get("w").data, w.data(), 24), 0);
	EXPECT_EQ(std::memcmp(f.get("ids").data, ids.data(), 24), 0);
	EXPECT_EQ(f.metadata().at("k"), "v");
	// Layout: 8-byte little-endian header length, header padded to 8 bytes, then data.
	std::string raw = test::slurp(d / "t.safetensors");
	uint64_t hlen = 0;
	std::memcpy(&hlen, raw.data(), 8);
	EXPECT_EQ((8 + hlen) % 8, 0u);
	EXPECT_EQ(raw.size(), 8 + hlen + 48);
	EXPECT_EQ(error_of([&] { f.get("nope"); }), d / "t.safetensors" + ": tensor nope is missing");
	test::write(d / "cut.safetensors", raw.substr(0, raw.size() - 4));
	EXPECT_NE(
		error_of([&] { SafetensorsFile g(d / "cut.safetensors"); }).find("outside the file (truncated file?)"),
		std::string::npos);
	test::write(d / "tiny.safetensors", "abc");
	EXPECT_NE(error_of([&] { SafetensorsFile g(d / "tiny.safetensors"); }).find("truncated safetensors file"),
		  std::string::npos);
}
