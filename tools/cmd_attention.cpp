// knlp kvcache | fim attention | cloze: attention-variant tools.
#include <torch/torch.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "fim/attention_fisher.h"
#include "models/gpt2.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/export.h"
#include "train/multiple_choice.h"

namespace knlp {

namespace {

struct KVRow {
	std::string name;
	GPT2Config c;
};

void print_kvcache_table(const Config &cfg, int64_t tokens, double mem_gib, const std::string &dtype)
{
	DataMeta meta = read_data_meta(cfg.get_string("DATA_DIR"));
	int vocab = meta.present ? meta.vocab_size : 50257;
	GPT2Config mine = GPT2Config::from(cfg, vocab);
	const int bytes = dtype == "fp32" ? 4 : 2;
	std::vector<KVRow> rows;
	auto add = [&](const std::string &name, const std::string &variant, const std::string &where) {
		GPT2Config c = mine;
		HybridPlacement hp;
		hp.where = where;
		try {
			int ra = static_cast<int>(cfg.get_int("GPT2_RA_LAYERS"));
			set_attention_variant(c, variant, hp, std::max(1, std::min(ra, c.n_layer)),
					      static_cast<int>(cfg.get_int("GPT2_RA_HEADS")));
			c.validate();
		} catch (const Error &) {
			return; // e.g. KVSplice width not dividing the latent at this shape
		}
		rows.push_back({name, c});
	};
	add("vanilla", "vanilla", "last");
	add("mla", "mla", "last");
	add("kvsplice", "kvsplice", "last");
	add("hybrid-last", "hybrid", "last");
	add("hybrid-first", "hybrid", "first");
	add("ra", "ra", "last");
	const int64_t base = rows.empty() ? 1 : rows[0].c.cache_values_per_token();
	fmt::print("KV cache of GPT-2 {}x{}x{} (MLA latent {}, KVSplice width {}), {} values, {} tokens, {:.0f} GiB\n",
		   mine.n_layer, mine.n_head, mine.n_embd, mine.d_latent, mine.splice_dim, dtype, tokens, mem_gib);
	fmt::print("{:<14} {:>12} {:>14} {:>12} {:>14} {:>8} {:>16}\n", "variant", "values/tok", "per layer", "bytes/tok",
		   fmt::format("MiB @{}", tokens), "ratio", "seqs in memory");
	auto line = [&](const std::string &name, const GPT2Config &c, bool mark) {
		int64_t v = c.cache_values_per_token();
		std::string per;
		int64_t first = c.cache_values_per_token(0);
		bool uniform = true;
		for (int i = 1; i < c.n_layer; i++)
			uniform &= c.cache_values_per_token(i) == first;
		per = uniform ? std::to_string(first) : "mixed";
		double bpt = double(v) * bytes;
		double mib = bpt * double(tokens) / (1024.0 * 1024.0);
		int64_t fit = static_cast<int64_t>(mem_gib * 1024.0 * 1024.0 * 1024.0 / (bpt * double(tokens)));
		fmt::print("{:<14} {:>12} {:>14} {:>12.0f} {:>14.2f} {:>7.2f}x {:>16}{}\n", name, v, per, bpt, mib,
			   double(base) / double(v), fit, mark ? "   <- this configuration" : "");
	};
	bool shown = false;
	for (const auto &r : rows) {
		bool same = r.c.layer_kind == mine.layer_kind && r.c.ra_layers == mine.ra_layers && !mine.sdpa_gate;
		line(r.name, r.c, same);
		shown |= same;
	}
	if (!shown)
		line(mine.variant, mine, true);
}

} // namespace

void add_attention_commands(CLI::App &app)
{
	// ---- kvcache
	auto *kv = app.add_subcommand("kvcache", "KV-cache size per attention variant (analytic)");
	static ConfigArgs kca;
	kca.add_to(kv);
	static int64_t tokens = 1024;
	static double mem = 80;
	static std::string dtype = "fp16";
	kv->add_option("--tokens", tokens, "Sequence length")->capture_default_str();
	kv->add_option("--memory-gib", mem, "Memory for the cache (GiB), for the sequences-that-fit column")
		->capture_default_str();
	kv->add_option("--dtype", dtype, "Cache element type")
		->check(CLI::IsMember({"fp16", "bf16", "fp32"}))
		->capture_default_str();
	kv->callback([] {
		if (tokens < 1 || !(mem > 0))
			fail("kvcache: --tokens must be >= 1 and --memory-gib > 0");
		print_kvcache_table(kca.load(), tokens, mem, dtype);
	});

	// ---- fim attention
	auto *fim = app.add_subcommand("fim", "Fisher-information tools");
	fim->require_subcommand(1);
	auto *att = fim->add_subcommand("attention", "Attention Fisher spectrum of a trained model on held-out data");
	static std::string ckpt_path, which = "latest", out, layers = "spec", data_dir;
	static int rows = 64, batches = 1;
	static uint64_t seed = 0;
	att->add_option("--checkpoint", ckpt_path, "Run folder (or one checkpoint folder)")->required();
	att->add_option("--which", which, "latest or best")->check(CLI::IsMember({"latest", "best"}))->capture_default_str();
	att->add_option("--layers", layers, "spec ({0, L/2, L-1}) or all")
		->check(CLI::IsMember({"spec", "all"}))
		->capture_default_str();
	att->add_option("--rows", rows, "Query rows sampled per head")->capture_default_str();
	att->add_option("--batches", batches, "Held-out windows (batch of the spectrum)")->capture_default_str();
	att->add_option("--seed", seed, "Seed of the window and row choice")->capture_default_str();
	att->add_option("--data", data_dir, "Token folder (default: the run's DATA_DIR); val.bin is used");
	att->add_option("--out", out, "Also write the spectrum as JSON here");
	att->callback([] {
		if (rows < 1 || batches < 1)
			fail("fim attention: --rows and --batches must be at least 1");
		std::string ckpt = resolve_checkpoint(ckpt_path, which);
		Config cfg;
		GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
		setup_threads(cfg);
		torch::Device dev = select_device(cfg);
		model->to(dev);
		model->eval();
		std::string dir = data_dir.empty() ? cfg.get_string("DATA_DIR") : data_dir;
		TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
		const int T = model->config().block_size;
		val.require_window(T);
		Rng rng(seed * 2654435761ULL + 17);
		auto x = torch::empty({batches, T}, torch::kLong), y = torch::empty({batches, T}, torch::kLong);
		val.random_batch(rng, batches, T, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		auto ls = spectrum_layers(model->config().n_layer, layers == "all");
		auto probs = model->attention_probs(x.to(dev), ls);
		std::vector<HeadSpectrum> all;
		for (size_t i = 0; i < ls.size(); i++) {
			auto h = attention_spectrum(probs[i], ls[i], rows, seed + uint64_t(ls[i]));
			all.insert(all.end(), h.begin(), h.end());
		}
		auto j = spectrum_json(all);
		j["checkpoint"] = ckpt;
		j["data"] = join_path(dir, "val.bin");
		j["rows"] = rows;
		j["attention"] = model->config().variant;
		fmt::print("attention Fisher spectrum of {} ({} attention) on {} held-out window(s) of {}, {} rows per head\n",
			   ckpt, model->config().variant, batches, join_path(dir, "val.bin"), rows);
		fmt::print("{:>5} {:>4} {:>10} {:>10} {:>10} {:>8} {:>9}  top-8 eigenvalues\n", "layer", "head", "trace",
			   "eigmax", "cond", "energy8", "energy16");
		for (const auto &h : all) {
			std::string top;
			for (double e : h.top)
				top += fmt::format(" {:.4f}", e);
			fmt::print("{:>5} {:>4} {:>10.5f} {:>10.5f} {:>10.3g} {:>8.4f} {:>9.4f} {}\n", h.layer, h.head, h.trace,
				   h.eigmax, h.cond, h.energy8, h.energy16, top);
		}
		for (const auto &l : j["layers"])
			fmt::print("layer {:>3}: mean trace {:.5f}, eigmax {:.5f}, energy8 {:.4f}\n", l["layer"].get<int>(),
				   l["trace"].get<double>(), l["eigmax"].get<double>(), l["energy8"].get<double>());
		if (!out.empty()) {
			write_file_atomic(out, j.dump(2) + "\n");
			fmt::print("wrote {}\n", out);
		}
	});

	add_fim_commands(fim);

	// ---- cloze
	auto *cz = app.add_subcommand("cloze", "Write a multiple-choice cloze set (HellaSwag jsonl) from a token file");
	static std::string cz_data, cz_out, cz_split = "val";
	static int count = 200, ctx_tokens = 96, end_tokens = 24, choices = 4;
	static uint64_t cz_seed = 1;
	static ConfigArgs cca;
	cca.add_to(cz);
	cz->add_option("--data", cz_data, "Token folder (default: CONFIG_DATA_DIR)");
	cz->add_option("--split", cz_split, "train or val")->check(CLI::IsMember({"train", "val"}))->capture_default_str();
	cz->add_option("--out", cz_out, "Output .jsonl")->required();
	cz->add_option("--count", count, "Items")->capture_default_str();
	cz->add_option("--ctx-tokens", ctx_tokens, "Context tokens")->capture_default_str();
	cz->add_option("--ending-tokens", end_tokens, "Tokens per ending")->capture_default_str();
	cz->add_option("--choices", choices, "Endings per item")->capture_default_str();
	cz->add_option("--seed", cz_seed, "Seed")->capture_default_str();
	cz->callback([] {
		std::string dir = cz_data.empty() ? cca.load().get_string("DATA_DIR") : cz_data;
		DataMeta meta = read_data_meta(dir);
		if (!meta.present)
			fail("{}: no meta.json (prepare the folder with `knlp prepare`)", dir);
		auto tok = make_tokenizer(meta.tokenizer, "");
		TokenFile f(join_path(dir, cz_split + ".bin"), meta.vocab_size);
		auto items = make_cloze(f, *tok, count, ctx_tokens, end_tokens, choices, cz_seed);
		write_file_atomic(cz_out, mc_jsonl(items));
		fmt::print("wrote {} cloze items ({} endings each) from {} to {}\n", items.size(), choices, f.path(), cz_out);
	});
}

} // namespace knlp
