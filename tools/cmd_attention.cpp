// knlp kvcache | fim attention | cloze: attention-variant tools.
#include <torch/torch.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
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
	DataMeta meta = read_data_meta(cfg.settings().data.dir);
	int vocab = meta.present ? meta.vocab_size : 50257;
	GPT2Config mine = GPT2Config::from(cfg.settings(), vocab);
	const int bytes = dtype == "fp32" ? 4 : 2;
	std::vector<KVRow> rows;
	auto add = [&](const std::string &name, const std::string &variant, const std::string &where) {
		GPT2Config c = mine;
		HybridPlacement hp;
		hp.where = where;
		try {
			int ra = static_cast<int>(cfg.settings().attention.ra_layers);
			set_attention_variant(c, variant, hp, std::max(1, std::min(ra, c.n_layer)),
					      static_cast<int>(cfg.settings().attention.ra_heads));
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
	fmt::print("{:<14} {:>12} {:>14} {:>12} {:>14} {:>8} {:>16}\n", "variant", "values/tok", "per layer",
		   "bytes/tok", fmt::format("MiB @{}", tokens), "ratio", "seqs in memory");
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

// ---- kvcache

struct KvArgs {
	ConfigArgs config;
	int64_t tokens = 1024;
	double mem = 80;
	std::string dtype = "fp16";
};

void define_kvcache(CLI::App *c, KvArgs &a)
{
	a.config.add_to(c);
	c->add_option("--tokens", a.tokens, "Sequence length")->capture_default_str();
	c->add_option("--memory-gib", a.mem, "Memory for the cache (GiB), for the sequences-that-fit column")
		->capture_default_str();
	c->add_option("--dtype", a.dtype, "Cache element type")
		->check(CLI::IsMember({"fp16", "bf16", "fp32"}))
		->capture_default_str();
}

void run_kvcache(KvArgs &a)
{
	if (a.tokens < 1 || !(a.mem > 0))
		fail("kvcache: --tokens must be >= 1 and --memory-gib > 0");
	print_kvcache_table(a.config.load(), a.tokens, a.mem, a.dtype);
}

// ---- fim attention

struct SpectrumArgs {
	std::string ckpt_path, which = "latest", out, layers = "spec", data_dir;
	int rows = 64, batches = 1;
	uint64_t seed = 0;
};

void define_spectrum(CLI::App *c, SpectrumArgs &a)
{
	c->add_option("--checkpoint", a.ckpt_path, "Run folder (or one checkpoint folder)")->required();
	c->add_option("--which", a.which, "latest or best")
		->check(CLI::IsMember({"latest", "best"}))
		->capture_default_str();
	c->add_option("--layers", a.layers, "spec ({0, L/2, L-1}) or all")
		->check(CLI::IsMember({"spec", "all"}))
		->capture_default_str();
	c->add_option("--rows", a.rows, "Query rows sampled per head")->capture_default_str();
	c->add_option("--batches", a.batches, "Held-out windows (batch of the spectrum)")->capture_default_str();
	c->add_option("--seed", a.seed, "Seed of the window and row choice")->capture_default_str();
	c->add_option("--data", a.data_dir, "Token folder (default: the run's DATA_DIR); val.bin is used");
	c->add_option("--out", a.out, "Also write the spectrum as JSON here");
}

void print_spectrum(const std::vector<HeadSpectrum> &all, const nlohmann::json &j)
{
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
}

void run_spectrum(SpectrumArgs &a)
{
	if (a.rows < 1 || a.batches < 1)
		fail("fim attention: --rows and --batches must be at least 1");
	std::string ckpt = resolve_checkpoint(a.ckpt_path, a.which);
	Config cfg;
	GPT2 model = load_model(ckpt, torch::kCPU, &cfg);
	setup_threads(cfg.settings().core);
	torch::Device dev = select_device(cfg.settings().core);
	model->to(dev);
	model->eval();
	std::string dir = a.data_dir.empty() ? cfg.settings().data.dir : a.data_dir;
	TokenFile val(join_path(dir, "val.bin"), model->config().vocab_raw);
	const int T = model->config().block_size;
	val.require_window(T);
	Rng rng(a.seed * 2654435761ULL + 17);
	auto x = torch::empty({a.batches, T}, torch::kLong), y = torch::empty({a.batches, T}, torch::kLong);
	val.random_batch(rng, a.batches, T, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
	auto ls = spectrum_layers(model->config().n_layer, a.layers == "all");
	auto probs = model->attention_probs(x.to(dev), ls);
	std::vector<HeadSpectrum> all;
	for (size_t i = 0; i < ls.size(); i++) {
		auto h = attention_spectrum(probs[i], ls[i], a.rows, a.seed + uint64_t(ls[i]));
		all.insert(all.end(), h.begin(), h.end());
	}
	auto j = spectrum_json(all);
	j["checkpoint"] = ckpt;
	j["data"] = join_path(dir, "val.bin");
	j["rows"] = a.rows;
	j["attention"] = model->config().variant;
	fmt::print("attention Fisher spectrum of {} ({} attention) on {} held-out window(s) of {}, {} rows per head\n",
		   ckpt, model->config().variant, a.batches, join_path(dir, "val.bin"), a.rows);
	print_spectrum(all, j);
	if (!a.out.empty()) {
		write_file_atomic(a.out, j.dump(2) + "\n");
		fmt::print("wrote {}\n", a.out);
	}
}

// ---- cloze

struct ClozeArgs {
	ConfigArgs config;
	std::string data, out, split = "val";
	int count = 200, ctx_tokens = 96, end_tokens = 24, choices = 4;
	uint64_t seed = 1;
};

void define_cloze(CLI::App *c, ClozeArgs &a)
{
	a.config.add_to(c);
	c->add_option("--data", a.data, "Token folder (default: CONFIG_DATA_DIR)");
	c->add_option("--split", a.split, "train or val")
		->check(CLI::IsMember({"train", "val"}))
		->capture_default_str();
	c->add_option("--out", a.out, "Output .jsonl")->required();
	c->add_option("--count", a.count, "Items")->capture_default_str();
	c->add_option("--ctx-tokens", a.ctx_tokens, "Context tokens")->capture_default_str();
	c->add_option("--ending-tokens", a.end_tokens, "Tokens per ending")->capture_default_str();
	c->add_option("--choices", a.choices, "Endings per item")->capture_default_str();
	c->add_option("--seed", a.seed, "Seed")->capture_default_str();
}

void run_cloze(ClozeArgs &a)
{
	std::string dir = a.data.empty() ? a.config.load().settings().data.dir : a.data;
	DataMeta meta = read_data_meta(dir);
	if (!meta.present)
		fail("{}: no meta.json (prepare the folder with `knlp prepare`)", dir);
	auto tok = make_tokenizer(meta.tokenizer, "");
	TokenFile f(join_path(dir, a.split + ".bin"), meta.vocab_size);
	auto items = make_cloze(f, *tok, a.count, a.ctx_tokens, a.end_tokens, a.choices, a.seed);
	write_file_atomic(a.out, mc_jsonl(items));
	fmt::print("wrote {} cloze items ({} endings each) from {} to {}\n", items.size(), a.choices, f.path(), a.out);
}

} // namespace

void add_attention_commands(CLI::App &app)
{
	command<KvArgs>(app, "kvcache", "KV-cache size per attention variant (analytic)", define_kvcache, run_kvcache);
	auto *fim = app.add_subcommand("fim", "Fisher-information tools");
	fim->require_subcommand(1);
	command<SpectrumArgs>(*fim, "attention", "Attention Fisher spectrum of a trained model on held-out data",
			      define_spectrum, run_spectrum);
	add_fim_commands(fim);
	command<ClozeArgs>(app, "cloze", "Write a multiple-choice cloze set (HellaSwag jsonl) from a token file",
			   define_cloze, run_cloze);
}

} // namespace knlp
