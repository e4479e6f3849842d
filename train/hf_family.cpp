// Fine-tuning of Hugging Face folders (LlamaForCausalLM, Qwen2ForCausalLM, and
// GPT2LMHeadModel through knlp's GPT-2) as a
// model family of the training loop: the folder's weights as float32 master weights, random
// windows of a token folder made with its tokenizer, the next-token cross-entropy through the
// model's chunked head, evaluation by estimated train and validation loss, and at the end a
// Hugging Face folder of the fine-tuned model (RUN/hf) that every HF_DIR command reads.
#include <cmath>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/tokens.h"
#include "models/gpt2.h"
#include "models/hf.h"
#include "models/llama.h"
#include "train/ddp.h"
#include "train/evaluate.h"
#include "train/export.h"
#include "train/families.h"
#include "train/schedule.h"

namespace knlp {

using json = nlohmann::json;

namespace {

class HfFamily : public Family {
public:
	explicit HfFamily(const Settings &s) : cfg_(s) {}

	const char *name() const override { return "hf"; }
	std::string model_name() const override { return gpt2_arch_ ? "gpt2" : c_.arch; }

	void load_data(RunContext &ctx) override
	{
		const std::string &m = cfg_.model.hf_dir;
		if (m.empty())
			fail("CONFIG_MODEL_HF_DIR is empty: set it to the Hugging Face folder to fine-tune");
		if (!is_hf_model_dir(m))
			fail("CONFIG_MODEL_HF_DIR: {}: not a Hugging Face model folder (config.json and safetensors "
			     "weights of LlamaForCausalLM, Qwen2ForCausalLM or GPT2LMHeadModel)",
			     m);
		HfCheckpoint ck(m);
		gpt2_arch_ = ck.architecture() == "GPT2LMHeadModel";
		if (gpt2_arch_) {
			// Only what the family reports; the weights load in build_model.
			c_.hf_arch = ck.architecture();
			c_.n_layer = hf_int(ck, "n_layer", 1, 1024);
			c_.hidden = hf_int(ck, "n_embd", 1, 1 << 16);
			c_.n_head = c_.n_kv_head = hf_int(ck, "n_head", 1, 1024);
			c_.head_dim = c_.hidden / c_.n_head;
			c_.vocab = hf_int(ck, "vocab_size", 1, 1 << 24);
			c_.max_positions =
				hf_int_or(ck, "n_positions", hf_int_or(ck, "n_ctx", 1024, 1, 1 << 20), 1, 1 << 20);
		} else {
			c_ = llama_config_from(ck);
		}
		T_ = static_cast<int>(cfg_.model.hf_context);
		if (T_ > c_.max_positions)
			fail("CONFIG_MODEL_HF_CONTEXT={} exceeds {}'s max_position_embeddings ({})", T_, m,
			     c_.max_positions);
		const std::string &dir = cfg_.data.dir;
		if (!is_dir(dir))
			fail("{}: token folder not found; make it with `knlp prepare --corpus ... --tokenizer {} --out "
			     "{}` (CONFIG_DATA_DIR)",
			     dir, m, dir);
		train_ = open_split(dir, "train", int(c_.vocab));
		val_ = open_split(dir, "val", int(c_.vocab));
		train_->require_window(T_);
		val_->require_window(T_);
		B_ = static_cast<int>(cfg_.train.batch_size);
		accum_ = static_cast<int>(cfg_.train.grad_accum);
		world_ = ctx.world;
		rank_ = ctx.rank;
		sched_ = {cfg_.train.learning_rate, cfg_.train.min_lr, cfg_.train.warmup_iters, cfg_.train.max_iters,
			  cfg_.train.decay_lr};
		data_rng_ = Rng(ctx.seed * 0x9e3779b97f4a7c15ULL + 1);
	}

	// Every weight widened to a float32 copy that trains (the folder itself is never written).
	void build_model(RunContext &ctx) override
	{
		HfCheckpoint ck(cfg_.model.hf_dir);
		if (gpt2_arch_) {
			gpt2_ = load_hf_gpt2(ck);
			params_ = 0;
			for (auto &p : gpt2_->parameters())
				params_ += p.numel();
			return;
		}
		model_ = Llama(c_, [&](const std::string &name, const std::vector<int64_t> &shape) {
			return ck.get(name, shape, /*copy=*/true).to(torch::kFloat).contiguous();
		});
		for (auto &p : model_->parameters())
			p.requires_grad_(true);
		params_ = c_.num_params();
	}
	torch::nn::Module &model() override
	{
		if (gpt2_arch_)
			return *gpt2_;
		return *model_;
	}
	torch::Device device(torch::Device configured) const override
	{
		if (!configured.is_cpu())
			fmt::print("knlp: Hugging Face fine-tuning runs on the CPU (float32); CONFIG_DEVICE ignored\n");
		return torch::kCPU;
	}

	Cadence cadence() const override
	{
		Cadence c;
		c.total_steps = cfg_.train.max_iters;
		c.eval_interval = cfg_.train.eval_interval;
		c.micro_batches = accum_;
		c.clip = cfg_.optim.grad_clip;
		c.unit = "tokens";
		// 6 N per token for the weights, and the causal attention's scores and sums
		// (forward 2 T d per layer and head on average, backward twice that).
		c.flops_per_item =
			6.0 * double(params_) + 6.0 * double(c_.n_layer * c_.n_head * c_.head_dim) * double(T_);
		return c;
	}
	QualityMetric quality() const override { return {"loss", "val", false}; }

	std::string describe() const override
	{
		return fmt::format("{} from {}: {} layers x {} hidden, {} heads ({} kv), vocab {}, ctx {}; {:.1f}M "
				   "parameters as float32 master weights",
				   c_.hf_arch, cfg_.model.hf_dir, c_.n_layer, c_.hidden, c_.n_head, c_.n_kv_head,
				   c_.vocab, T_, double(params_) / 1e6);
	}
	std::string global_batch_text(const RunContext &ctx) const override
	{
		return fmt::format("{} x {} x {} = {} sequences", B_, accum_, ctx.world, global_batch(ctx));
	}
	int64_t global_batch(const RunContext &ctx) const override { return int64_t(B_) * accum_ * ctx.world; }
	std::vector<std::pair<std::string, std::string>> run_record() const override
	{
		return {{"hf_model", cfg_.model.hf_dir}, {"hf_architecture", c_.hf_arch}};
	}

	double learning_rate(const Position &p) const override { return sched_.at(p.step); }

	// As GPT-2's: the step's global batch comes from one stream; rank r takes its share.
	void begin_step(RunContext &ctx, const Position &) override
	{
		batches_.clear();
		for (int gm = 0; gm < accum_ * world_; gm++) {
			auto b = batch(*train_, data_rng_);
			if (gm / accum_ == rank_)
				batches_.push_back(b);
		}
	}

	MicroLoss micro_batch(RunContext &ctx, const Position &, int micro) override
	{
		auto &[x, y] = batches_[size_t(micro)];
		auto loss = mean_loss(x, y);
		return mean_micro_loss(loss, double(accum_) * world_);
	}
	double step_items(const Position &) const override { return double(B_) * T_ * accum_ * world_; }

	Evaluation evaluate(RunContext &ctx, const Position &p) override
	{
		return evaluate_language_model(ctx, p, *train_, *val_, cfg_.train.eval_samples,
					       [&](const TokenFile &f, Rng &rng, bool score) {
						       auto [x, y] = batch(f, rng);
						       return score ? mean_loss(x, y).item<double>() : 0.0;
					       });
	}
	std::string format_quality(double q) const override { return language_model_quality(q); }

	void save_state(json &st, std::vector<NamedTensor> &) const override
	{
		st["data_rng"] = std::to_string(data_rng_.state());
	}
	void load_state(const json &st, const SafetensorsFile &) override
	{
		data_rng_.set_state(std::stoull(st.at("data_rng").get<std::string>()));
	}

	void metrics(json &j, const json &, const RunEnd &end) const override
	{
		j["hf_model"] = cfg_.model.hf_dir;
		j["final_iteration"] = end.pos.step;
		j["best_val_loss"] = std::isnan(end.best) ? json(nullptr) : json(end.best);
		j["best_iteration"] = end.best_step;
		j["figures"] = {{"val_perplexity",
				 std::isnan(end.last_quality) ? json(nullptr) : json(perplexity_of(end.last_quality))}};
	}

	// RUN/hf: the fine-tuned weights (float32, Hugging Face's names), config.json with
	// torch_dtype float32, and the folder's tokenizer files.
	void after_run(RunContext &ctx, const RunEnd &) override
	{
		if (!ctx.main_rank())
			return;
		const std::string src = cfg_.model.hf_dir, out = join_path(ctx.run_dir, "hf");
		make_dirs(out);
		if (gpt2_arch_)
			export_hf(gpt2_, out); // config.json and model.safetensors in Hugging Face's GPT-2 layout
		else
			write_llama(out);
		for (const char *f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
				      "generation_config.json", "vocab.json", "merges.txt"}) {
			std::string from = join_path(src, f);
			if (file_exists(from))
				write_file_atomic(join_path(out, f), read_file(from));
		}
		fmt::print(
			"fine-tuned model: {} (a Hugging Face folder: knlp eval / sample / export --checkpoint {})\n",
			out, out);
	}

private:
	torch::Tensor mean_loss(const torch::Tensor &x, const torch::Tensor &y)
	{
		if (gpt2_arch_)
			return gpt2_->forward(x, y).loss;
		auto [sum, n] = model_->loss_sum(x, y);
		return sum / double(n);
	}

	void write_llama(const std::string &out)
	{
		std::vector<TensorView> views;
		std::vector<torch::Tensor> keep;
		for (auto &[name, t] : model_->named_weights()) {
			keep.push_back(t.detach().to(torch::kCPU, torch::kFloat).contiguous());
			const auto &k = keep.back();
			views.push_back({name, "F32", k.sizes().vec(), k.data_ptr(), uint64_t(k.numel()) * 4});
		}
		write_safetensors(join_path(out, "model.safetensors"), views, {{"format", "pt"}});
		HfCheckpoint ck(cfg_.model.hf_dir);
		json config = ck.config();
		config["torch_dtype"] = "float32";
		write_file_atomic(join_path(out, "config.json"), config.dump(2) + "\n");
	}

	std::pair<torch::Tensor, torch::Tensor> batch(const TokenFile &f, Rng &rng) const
	{
		auto x = torch::empty({B_, T_}, torch::kLong), y = torch::empty({B_, T_}, torch::kLong);
		f.random_batch(rng, B_, T_, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		return {x, y};
	}

	const Settings &cfg_;
	LlamaConfig c_;
	Llama model_{nullptr};
	GPT2 gpt2_{nullptr};
	bool gpt2_arch_ = false;
	int64_t params_ = 0;
	std::unique_ptr<TokenFile> train_, val_;
	int B_ = 0, T_ = 0, accum_ = 1, world_ = 1, rank_ = 0;
	LrSchedule sched_{};
	Rng data_rng_;
	std::vector<std::pair<torch::Tensor, torch::Tensor>> batches_;
};

} // namespace

std::unique_ptr<Family> make_hf_family(const Settings &s)
{
	return std::make_unique<HfFamily>(s);
}

} // namespace knlp
