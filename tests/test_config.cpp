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
				 "CONFIG_GPT2_SIZE_CUSTOM=y\n"
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
	EXPECT_EQ(c.selected("DEVICE"), "DEVICE_CPU");
	EXPECT_EQ(c.settings().core.device, choice::Device::Cpu);
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
	EXPECT_EQ(c.selected("DEVICE"), "DEVICE_CUDA");
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
	auto intel = cpuinfo(
		"intel", "processor\t: 0\nmodel name\t: Xeon X\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512_fp16\n\n"
			 "processor\t: 1\nmodel name\t: Xeon X\nflags\t\t: fpu\n");
	EXPECT_EQ(intel.model, "Xeon X");
	EXPECT_EQ(intel.isa, "avx512f");
	EXPECT_EQ(cpuinfo("amd", "model name\t: EPYC Y\nflags\t\t: fpu avx avx2 avx512_fp16 avx512vl\n").isa, "avx2");
	EXPECT_EQ(cpuinfo("old", "model name\t: Z\nflags\t\t: fpu sse2\n").isa, "baseline");
	auto none = cpu_info(::testing::TempDir() + "knlp_cpuinfo_missing");
	EXPECT_EQ(none.model, "unknown");
	EXPECT_EQ(none.isa, "baseline");
}

// The size choice decides the shape; a custom size opens the dimension symbols.
TEST(Config, SizeChoiceDecidesTheShape)
{
	// A full .config as kconfiglib writes it for the quickstart (every symbol resolved).
	Config cpu = Config::parse("CONFIG_GPT2_SIZE_CPU=y\n", "q.config");
	Config full = Config::parse(cpu.to_text(), "full.config");
	EXPECT_EQ(full.settings().gpt2.n_layer, 4);
	EXPECT_EQ(full.settings().gpt2.block_size, 128);
	full.set("GPT2_SIZE_124M=y");
	const auto &g = full.settings().gpt2;
	EXPECT_EQ(g.size, choice::Gpt2Size::Size124M);
	EXPECT_EQ(g.n_layer, 12);
	EXPECT_EQ(g.n_head, 12);
	EXPECT_EQ(g.n_embd, 768);
	EXPECT_EQ(g.block_size, 1024); // followed its default: the file held what the CPU size gave
	EXPECT_EQ(full.settings().attention.mla_d_latent, 256);
	EXPECT_EQ(full.origin("GPT2_N_LAYER"), Config::Origin::Derived);
	// A file naming only the size gets the size's defaults.
	Config m = Config::parse("CONFIG_GPT2_SIZE_350M=y\n", "m.config");
	EXPECT_EQ(m.settings().gpt2.n_layer, 24);
	EXPECT_EQ(m.settings().gpt2.n_embd, 1024);
	EXPECT_EQ(m.settings().gpt2.block_size, 1024);
	// What a file chose on purpose stays when the size changes.
	Config ctx = Config::parse("CONFIG_GPT2_SIZE_CPU=y\nCONFIG_GPT2_BLOCK_SIZE=64\n", "c.config");
	ctx.set("GPT2_SIZE_124M=y");
	EXPECT_EQ(ctx.settings().gpt2.block_size, 64);
	EXPECT_EQ(ctx.settings().gpt2.n_layer, 12);
	// The resolved text reads back unchanged, derived values included.
	Config back = Config::parse(full.to_text(), "back.config");
	EXPECT_TRUE(full.diff(back).empty());
}

TEST(Config, CustomOnlySymbolsSaySo)
{
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_GPT2_SIZE_124M=y\nCONFIG_GPT2_N_LAYER=4\n", "x.config"); }),
		  "x.config: CONFIG_GPT2_N_LAYER=4 cannot be set: it applies only with CONFIG_GPT2_SIZE_CUSTOM=y (the "
		  "current choice makes it 12)");
	Config c = Config::parse("CONFIG_GPT2_SIZE_CPU=y\n", "c.config");
	EXPECT_EQ(error_of([&] { c.set("GPT2_N_EMBD=256"); }),
		  "--set: CONFIG_GPT2_N_EMBD=256 cannot be set: it applies only with CONFIG_GPT2_SIZE_CUSTOM=y (the "
		  "current choice makes it 128)");
	// Several overrides are judged together, in any order.
	Config d = Config::parse("CONFIG_GPT2_SIZE_CPU=y\n", "d.config");
	d.set_all({"GPT2_N_EMBD=256", "GPT2_SIZE_CUSTOM=y"});
	EXPECT_EQ(d.settings().gpt2.n_embd, 256);
	EXPECT_EQ(d.settings().gpt2.n_layer, 12); // as kconfiglib resolves it: the custom size's own default
	// Leaving the custom size drops the custom shape.
	d.set("GPT2_SIZE_TINY=y");
	EXPECT_EQ(d.settings().gpt2.n_embd, 512);
	// A custom shape in a file.
	Config e = Config::parse("CONFIG_GPT2_SIZE_CUSTOM=y\nCONFIG_GPT2_N_LAYER=3\n", "e.config");
	EXPECT_EQ(e.settings().gpt2.n_layer, 3);
	EXPECT_EQ(e.settings().gpt2.n_head, 12); // unset under custom: the symbol's own default
}

TEST(Config, SavedConfigurationsKeepTheirShape)
{
	// Written before GPT2_SIZE_CUSTOM existed: a shape that differs from its size was custom.
	const std::string legacy =
		"CONFIG_GPT2_SIZE_CPU=y\nCONFIG_GPT2_N_LAYER=2\nCONFIG_GPT2_N_HEAD=2\nCONFIG_GPT2_N_EMBD=64\n";
	EXPECT_NE(error_of([&] { Config::parse(legacy, "old.config"); }), "");
	Config c = Config::parse(legacy, "state.json", Config::Mode::Saved);
	EXPECT_EQ(c.settings().gpt2.size, choice::Gpt2Size::Custom);
	EXPECT_EQ(c.settings().gpt2.n_layer, 2);
	EXPECT_EQ(c.settings().gpt2.n_embd, 64);
	// A saved shape that matches its size stays a named size.
	Config same = Config::parse("CONFIG_GPT2_SIZE_CPU=y\nCONFIG_GPT2_N_LAYER=4\n", "s", Config::Mode::Saved);
	EXPECT_EQ(same.settings().gpt2.size, choice::Gpt2Size::Cpu);
}

TEST(Config, DataFolderFollowsTheTokenizer)
{
	Config c = Config::parse(Config().to_text(), "d.config");
	EXPECT_EQ(c.settings().data.dir, "datasets/linux-doc-byte");
	c.set(select(choice::DataTokenizer::Gpt2));
	EXPECT_EQ(c.settings().data.dir, "datasets/linux-doc-gpt2");
	Config own = Config::parse("CONFIG_DATA_DIR=\"mine\"\n", "o.config");
	own.set("DATA_TOKENIZER_GPT2=y");
	EXPECT_EQ(own.settings().data.dir, "mine");
}

TEST(Settings, TypedFieldsAndFloatRanges)
{
	Config c = Config::parse("CONFIG_MODEL_LENET5=y\nCONFIG_LEARNING_RATE=\"3e-3\"\nCONFIG_OPTIMIZER_SGD=y\n"
				 "CONFIG_GNN_LAYOUT_RCM=y\n",
				 "t.config");
	const Settings &s = c.settings();
	EXPECT_EQ(s.model.kind, choice::Model::Lenet5);
	EXPECT_DOUBLE_EQ(s.train.learning_rate, 3e-3);
	EXPECT_EQ(s.optim.kind, choice::Optimizer::Sgd);
	EXPECT_STREQ(name_of(s.optim.kind), "sgd");
	EXPECT_STREQ(symbol_of(s.gnn.layout), "GNN_LAYOUT_RCM");
	EXPECT_EQ(select(choice::Gpt2Size::Size124M), "GPT2_SIZE_124M=y");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_LEARNING_RATE=\"0\"\n", "x.config"); }),
		  "x.config: CONFIG_LEARNING_RATE=0 is outside its range (0, inf)");
	EXPECT_EQ(error_of([] { Config::parse("CONFIG_GPT2_DROPOUT=\"1\"\n", "x.config"); }),
		  "x.config: CONFIG_GPT2_DROPOUT=1 is outside its range [0, 1)");
	Config d;
	EXPECT_EQ(error_of([&] { d.set("PRUNING_SAMPLE_FRACTION=0"); }),
		  "--set: CONFIG_PRUNING_SAMPLE_FRACTION=0 is outside its range (0, 1]");
}
