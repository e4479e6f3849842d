// knlp prepare | config show | version
#include <iostream>
#include <iterator>

#include <fmt/format.h>

#include "core/error.h"
#include "core/run.h"
#include "data/images.h"
#include "data/prepare.h"
#include "train/image_trainer.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "tools/commands.h"

namespace knlp {

void add_data_commands(CLI::App &app)
{
	auto *prep = app.add_subcommand("prepare", "Tokenize a text corpus into train.bin / val.bin / meta.json");
	static PrepareOptions po;
	static ConfigArgs pca;
	static bool force = false;
	pca.add_to(prep);
	prep->add_option("--corpus", po.corpus, "File or folder of .txt/.rst/.md (or .gz), or 'linux-doc'");
	prep->add_option("--tokenizer", po.tokenizer, "byte or gpt2")->check(CLI::IsMember({"byte", "gpt2"}));
	prep->add_option("--vocab-dir", po.vocab_dir, "Folder with encoder.json and vocab.bpe (GPT-2)");
	prep->add_option("--out", po.out_dir, "Output folder (default: CONFIG_DATA_DIR of --config)");
	prep->add_option("--val-percent", po.val_percent, "Share of tokens for val.bin")->capture_default_str();
	prep->add_option("--threads", po.threads, "Tokenizer threads (0: all cores)");
	prep->add_flag("--force", force, "Prepare again even when meta.json says the folder is complete");
	prep->callback([prep] {
		bool from_config = po.out_dir.empty();
		if (from_config) {
			// Everything not given on the command line comes from the configuration.
			Config c = pca.load();
			if (is_image_config(c)) {
				// Image datasets are read as they are; check that they are there and sound.
				std::string ds = c.choice("IMAGE_DATASET_FASHION_MNIST");
				std::string name = ds == "IMAGE_DATASET_MNIST"	   ? "mnist"
						   : ds == "IMAGE_DATASET_CIFAR10"  ? "cifar10"
						   : ds == "IMAGE_DATASET_CIFAR100" ? "cifar100"
										    : "fashion-mnist";
				std::string dir = c.get_string("IMAGE_DATA_DIR");
				auto tr = load_image_dataset(name, dir, true);
				auto te = load_image_dataset(name, dir, false);
				fmt::print("prepare: {} needs no preparation ({} train + {} test images in {})\n", name, tr.n, te.n,
					   dir.empty() ? default_image_dir(name) : dir);
				return;
			}
			if (c.choice("DATASET_LINUX_DOC") == "DATASET_CUSTOM")
				fail("{}: CONFIG_DATASET_CUSTOM=y: bring your own train.bin/val.bin in {} (nothing to prepare)",
				     c.source(), c.get_string("DATA_DIR"));
			po.out_dir = c.get_string("DATA_DIR");
			if (prep->get_option("--tokenizer")->count() == 0)
				po.tokenizer = c.choice("DATA_TOKENIZER_BYTE") == "DATA_TOKENIZER_GPT2" ? "gpt2" : "byte";
			if (prep->get_option("--val-percent")->count() == 0)
				po.val_percent = static_cast<int>(c.get_int("DATA_VAL_PERCENT"));
		}
		if (po.corpus.empty())
			po.corpus = "linux-doc";
		DataMeta m = read_data_meta(po.out_dir);
		if (m.present && !force && m.tokenizer == po.tokenizer && from_config) {
			fmt::print("prepare: {} is already prepared ({} tokenizer); --force to redo\n", po.out_dir,
				   m.tokenizer);
			return;
		}
		auto r = prepare_corpus(po);
		fmt::print("prepared {}: {} files, {:.1f} MB of text -> {} train + {} val tokens ({}) in {:.1f} s "
			   "({:.1f} MB/s)\n",
			   po.out_dir, r.files, r.text_bytes / 1e6, r.train_tokens, r.val_tokens, po.tokenizer,
			   r.seconds, r.text_bytes / 1e6 / std::max(r.seconds, 1e-9));
	});

	auto *cfg = app.add_subcommand("config", "Configuration tools");
	cfg->require_subcommand(1);
	auto *show = cfg->add_subcommand("show", "Print the resolved configuration");
	static ConfigArgs ca;
	ca.add_to(show);
	static bool origins = false;
	show->add_flag("--origins", origins, "Mark values that come from defaults or overrides");
	show->callback([] {
		Config c = ca.load();
		fmt::print("# resolved from {}\n{}", c.source(), c.to_text(origins));
	});

	auto *check = cfg->add_subcommand("check", "Validate .config files: one line per file, 'FILE: ok' or its error");
	static std::vector<std::string> check_files;
	check->add_option("files", check_files, "Configuration files")->required();
	check->callback([] {
		int bad = 0;
		for (const auto &f : check_files) {
			try {
				Config::load(f);
				fmt::print("{}: ok\n", f);
			} catch (const Error &e) {
				fmt::print("{}\n", e.what());
				bad++;
			}
		}
		if (bad)
			std::exit(1);
	});

	auto *ver = app.add_subcommand("version", "Print version information");
	ver->callback([] { fmt::print("knlp {}\n", code_version()); });

	auto *enc = app.add_subcommand("encode", "Tokenize text from standard input (one id per line)");
	static std::string tok_name = "gpt2", vocab_dir;
	enc->add_option("--tokenizer", tok_name, "byte or gpt2")->capture_default_str();
	enc->add_option("--vocab-dir", vocab_dir, "Folder with encoder.json and vocab.bpe");
	enc->callback([] {
		auto tok = make_tokenizer(tok_name, vocab_dir);
		std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
		auto ids = tok->encode(text);
		std::string out;
		for (auto id : ids)
			out += std::to_string(id) + "\n";
		std::fwrite(out.data(), 1, out.size(), stdout);
	});
}

} // namespace knlp
