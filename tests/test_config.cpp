// The .config reader and the generated symbol table.
#include <gtest/gtest.h>

#include <functional>

#include "core/config.h"
#include "core/error.h"
#include "core/run.h"
#include "testutil.h"

using namespace knlp;

using test::error_of;

TEST(SymbolTable, KnowsTypesRangesAndChoices)
{
	const SymbolInfo *seed = find_symbol("SEED");
	ASSERT_NE(seed, nullptr);
	EXPECT_EQ(seed->type, SymbolType::Int);
	EXPECT_TRUE(seed->has_range);
	EXPECT_EQ(seed->lo, 0);
	EXPECT_EQ(std::string(seed->def), "1337");
	EXPECT_EQ(find_symbol("LEARNING_RATE")->type, SymbolType::Float);
	EXPECT_EQ(find_symbol("DATA_DIR")->type, SymbolType::String);
	EXPECT_EQ(find_symbol("GPT2_BIAS")->type, SymbolType::Bool);
	EXPECT_STRNE(find_symbol("DEVICE_CPU")->choice, "");
	EXPECT_STREQ(find_symbol("DEVICE_CPU")->choice, find_symbol("DEVICE_CUDA")->choice);
	EXPECT_EQ(find_symbol("NOT_A_SYMBOL"), nullptr);
	EXPECT_GT(symbol_table().size(), 50u);
}

TEST(Config, ReadsEveryValueKind)
{
	Config c = Config::parse("# comment\n"
				 "\n"
				 "CONFIG_SEED=42\n"
				 "CONFIG_GPT2_N_LAYER=0x10\n"
				 "CONFIG_LEARNING_RATE=\"3e-4\"\n"
				 "CONFIG_DATA_DIR=\"a \\\"q\\\" \\\\ b\"\n"
				 "# CONFIG_GPT2_BIAS is not set\n"
				 "CONFIG_DECAY_LR=y\n"
				 "CONFIG_DEVICE_CPU=y\r\n",
				 "t.config");
	EXPECT_EQ(c.get_int("SEED"), 42);
	EXPECT_EQ(c.get_int("GPT2_N_LAYER"), 16);
	EXPECT_DOUBLE_EQ(c.get_float("LEARNING_RATE"), 3e-4);
	EXPECT_EQ(c.get_string("DATA_DIR"), "a \"q\" \\ b");
	EXPECT_FALSE(c.get_bool("GPT2_BIAS"));
	EXPECT_TRUE(c.get_bool("DECAY_LR"));
	EXPECT_EQ(c.choice("DEVICE_AUTO"), "DEVICE_CPU");
	EXPECT_EQ(c.origin("SEED"), Config::Origin::File);
	EXPECT_EQ(c.origin("BATCH_SIZE"), Config::Origin::Default);
	// Symbols the file does not mention keep their Kconfig defaults.
	EXPECT_EQ(c.get_int("BATCH_SIZE"), std::stoll(find_symbol("BATCH_SIZE")->def));
}

TEST(Config, TextRoundTrips)
{
	Config a = Config::parse("CONFIG_SEED=7\nCONFIG_DATA_DIR=\"x\\\"y\"\nCONFIG_DEVICE_CPU=y\n", "a");
	Config b = Config::parse(a.to_text(), "b");
	EXPECT_TRUE(a.diff(b).empty());
	EXPECT_EQ(a.to_text(), b.to_text());
}

TEST(Config, ErrorsNameFileLineAndSymbol)
{
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_SEED=1\nthis is junk\n", "x.config"); }),
		  "x.config:2: malformed line (expected CONFIG_NAME=value or a # comment): this is junk");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_NOPE=1\n", "x.config"); }),
		  "x.config:1: unknown symbol CONFIG_NOPE");
	EXPECT_EQ(error_of([] { Config::parse("\nCONFIG_SEED=abc\n", "x.config"); }),
		  "x.config:2: CONFIG_SEED expects an integer, got 'abc'");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_GPT2_N_LAYER=0\n", "x.config"); }),
		  "x.config:1: CONFIG_GPT2_N_LAYER=0 is outside its range [1, 256]");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_GPT2_BIAS=m\n", "x.config"); }),
		  "x.config:1: CONFIG_GPT2_BIAS is a bool and takes y or n, not 'm'");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_DATA_DIR=unquoted\n", "x.config"); }),
		  "x.config:1: CONFIG_DATA_DIR is a string and must be quoted, got unquoted");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_LEARNING_RATE=\"fast\"\n", "x.config"); }),
		  "x.config:1: CONFIG_LEARNING_RATE expects a number (a quoted string such as \"6e-4\"), got \"fast\"");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_DATA_DIR=\"open\n", "x.config"); }),
		  "x.config:1: CONFIG_DATA_DIR has a malformed quoted value \"open");
	EXPECT_EQ(error_of([] { Config::parse("# CONFIG_SEED is not set\n", "x.config"); }),
		  "x.config:1: CONFIG_SEED is a int and cannot be 'not set'");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_DEVICE_CPU=y\nCONFIG_DEVICE_CUDA=y\n", "x.config"); }),
		  "x.config: CONFIG_DEVICE_CPU and CONFIG_DEVICE_CUDA are both set but belong to one choice");
}

TEST(Config, MissingFileSuggestsPresets)
{
	std::string e = error_of([] { Config::load("/nonexistent/.config"); });
	EXPECT_NE(e.find("/nonexistent/.config: cannot read configuration"), std::string::npos) << e;
	EXPECT_NE(e.find("make list-defconfigs"), std::string::npos) << e;
}

TEST(Config, OverridesValidateAndSwitchChoices)
{
	Config c = Config::parse("CONFIG_DEVICE_CPU=y\n", "c");
	c.set("CONFIG_SEED=99");
	c.set("MAX_TIME=600");
	c.set("DATA_DIR=plain string");
	c.set("DEVICE_CUDA=y");
	EXPECT_EQ(c.get_int("SEED"), 99);
	EXPECT_EQ(c.get_int("MAX_TIME"), 600);
	EXPECT_EQ(c.get_string("DATA_DIR"), "plain string");
	EXPECT_EQ(c.choice("DEVICE_CPU"), "DEVICE_CUDA");
	EXPECT_FALSE(c.get_bool("DEVICE_CPU"));
	EXPECT_EQ(c.origin("SEED"), Config::Origin::Override);
	EXPECT_EQ(error_of([&] { c.set("BOGUS=1"); }), "--set: unknown symbol CONFIG_BOGUS");
	EXPECT_EQ(error_of([&] { c.set("SEED"); }), "--set: 'SEED' is not SYMBOL=VALUE");
	EXPECT_EQ(error_of([&] { c.set("SEED=-1"); }), "--set: CONFIG_SEED=-1 is outside its range [0, 2147483647]");
	EXPECT_EQ(error_of([&] { c.set("DEVICE_CUDA=n"); }),
		  "--set: CONFIG_DEVICE_CUDA belongs to a choice; select another member with =y instead");
}

TEST(Config, DiffListsChangedSymbols)
{
	Config a = Config::parse("CONFIG_SEED=1\n", "a"), b = Config::parse("CONFIG_SEED=2\nCONFIG_MAX_ITERS=5\n", "b");
	auto d = a.diff(b);
	ASSERT_EQ(d.size(), 2u);
	EXPECT_EQ(d[0], "CONFIG_SEED (1 -> 2)");
	EXPECT_EQ(a.diff(b, {"SEED", "MAX_ITERS"}).size(), 0u);
}

TEST(RunRecord, CpuModelAndWidestVectorExtension)
{
	auto cpuinfo = [](const std::string &name, const std::string &text) {
		auto path = ::testing::TempDir() + "knlp_cpuinfo_" + name;
		test::write(path, text);
		return cpu_info(path);
	};
	// Whole words only: avx512_fp16 or avx512vl alone are not avx512f.
	auto intel = cpuinfo("intel", "processor\t: 0\nmodel name\t: Xeon X\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512_fp16\n\n"
				      "processor\t: 1\nmodel name\t: Xeon X\nflags\t\t: fpu\n");
	EXPECT_EQ(intel.model, "Xeon X");
	EXPECT_EQ(intel.isa, "avx512f");
	EXPECT_EQ(cpuinfo("amd", "model name\t: EPYC Y\nflags\t\t: fpu avx avx2 avx512_fp16 avx512vl\n").isa, "avx2");
	EXPECT_EQ(cpuinfo("old", "model name\t: Z\nflags\t\t: fpu sse2\n").isa, "baseline");
	auto none = cpu_info(::testing::TempDir() + "knlp_cpuinfo_missing");
	EXPECT_EQ(none.model, "unknown");
	EXPECT_EQ(none.isa, "baseline");
}
