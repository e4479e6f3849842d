// Image classifiers (LeNet-5, ResNet-18, ResNet-50) as a model family of the training loop:
// epochs over an image dataset with the next micro-batch built on another thread, the
// cross-entropy of the labels, test loss and accuracy after every epoch, the original's CNN
// recipes (cosine schedule and clip for AdamWAdv / AdamWSPAM), BatchNorm statistics in
// checkpoints.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <numeric>

#include "core/torch_compat.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "data/image_batch.h"
#include "models/onednn.h"
#include "models/vision.h"
#include "optim/optimizer.h"
#include "prune/pruner.h"
#include "train/ddp.h"
#include "train/families.h"

namespace knlp {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Batch {
	torch::Tensor x, y;
	int64_t n = 0; // images (0: this micro-batch lies past the end of the epoch)
};

class ImageFamily : public Family {
public:
	explicit ImageFamily(const Settings &s) : cfg_(s) {}

	const char *name() const override { return "image"; }
	std::string model_name() const override { return arch_; }

	void load_data(RunContext &ctx) override
	{
		arch_ = name_of(cfg_.model.kind);
		dataset_ = image_dataset_name(cfg_.image.dataset);
		const std::string &dir = cfg_.image.data_dir;
		train_ = load_image_dataset(dataset_, dir, true);
		test_ = load_image_dataset(dataset_, dir, false);
		if (test_.channels != train_.channels || test_.height != train_.height || test_.width != train_.width)
			fail("{}: test images are {}x{}x{} but training images are {}x{}x{}", test_.name,
			     test_.channels, test_.height, test_.width, train_.channels, train_.height, train_.width);
		vc_.arch = arch_;
		vc_.onednn = cfg_.image.onednn;
		vc_.winograd = cfg_.image.winograd;
		vc_.in_channels = arch_ == "lenet5" ? train_.channels : 3;
		vc_.num_classes = static_cast<int>(cfg_.image.num_classes);
		if (vc_.num_classes == 0)
			vc_.num_classes = train_.num_classes;
		if (vc_.num_classes != train_.num_classes)
			fail("{}: the dataset has {} classes but CONFIG_IMAGE_NUM_CLASSES={}", train_.name,
			     train_.num_classes, vc_.num_classes);
		if (arch_ == "lenet5" && train_.channels != 1)
			fail("{}: LeNet-5 takes one channel; {} has {} (use a ResNet for colour images)", train_.name,
			     dataset_, train_.channels);
		tf_train_.out_channels = vc_.in_channels;
		tf_train_.size = 32;
		// LeNet-5 resizes 28x28 to 32x32 (the original); the ResNets zero-pad MNIST-sized
		// images to 32x32; folder images of another size, or anything larger, are resized.
		const bool is32 = train_.height == 32 && train_.width == 32;
		tf_train_.resize =
			!is32 && (arch_ == "lenet5" || dataset_ == "folder" || train_.height > 32 || train_.width > 32);
		tf_train_.augment = cfg_.image.augment && train_.channels == 3;
		if (dataset_ == "folder") // no published constants: the training images' own statistics
			pixel_stats(train_, tf_train_.mean.data(), tf_train_.std.data());
		else
			dataset_normalisation(dataset_, tf_train_.mean, tf_train_.std);
		tf_test_ = tf_train_;
		tf_test_.augment = false;

		B_ = static_cast<int>(cfg_.train.batch_size);
		accum_ = static_cast<int>(cfg_.train.grad_accum);
		G_ = int64_t(B_) * accum_ * ctx.world;
		first_micro_ = ctx.rank * accum_;
		epochs_ = cfg_.image.epochs;
		spe_ = (train_.n + G_ - 1) / G_;
		seed_ = ctx.seed;
		lr_ = cfg_.train.learning_rate;
		min_lr_ = cfg_.image.min_lr;
		cosine_ = cfg_.image.lr_cosine;
		clip_ = cfg_.image.grad_clip;
		adv_recipe_ = optimizer_options_from(cfg_.optim, lr_).amsgrad && cfg_.image.adv_recipe;
		if (adv_recipe_) // AdamWAdv / AdamWSPAM: the original's CNN schedule
			cosine_ = true, min_lr_ = 1e-6, clip_ = 1.0;
	}

	void build_model(RunContext &ctx) override
	{
		model_ = make_vision_model(vc_);
		model_->to(ctx.dev);
	}
	torch::nn::Module &model() override { return *model_; }

	// oneDNN's blocked layout (IMAGE_ONEDNN) replaces channels-last for the ResNets.
	void prepare_parameters(RunContext &ctx) override
	{
		engine_ = model_->engine(ctx.bf16); // the precision is settled by now
		channels_last_ = cfg_.image.channels_last && engine_ == "libtorch";
		if (!channels_last_)
			return;
		// Convolution weights NHWC; the optimizer's state follows their layout.
		torch::NoGradGuard ng;
		for (auto &p : model_->parameters())
			if (p.dim() == 4)
				p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
	}

	Cadence cadence() const override
	{
		Cadence c;
		c.epochs = true;
		c.total_epochs = epochs_;
		c.total_steps = epochs_ * spe_;
		c.micro_batches = accum_;
		c.clip = clip_;
		c.unit = "images";
		return c;
	}
	QualityMetric quality() const override { return {"accuracy", "test", true}; }
	// CONFIG_PRUNING_RAMP_END_EPOCH in steps, unless CONFIG_PRUNING_RAMP_END gives them.
	int64_t pruning_ramp_end() const override
	{
		const int64_t e = cfg_.image.pruning_ramp_end_epoch;
		return e > 0 && cfg_.prune.ramp_end == 0 ? e * spe_ : 0;
	}

	std::string describe() const override
	{
		return fmt::format("{} on {} ({} train, {} test images, {}x{}x{} inputs)", arch_, dataset_, train_.n,
				   test_.n, tf_train_.out_channels, tf_train_.size, tf_train_.size);
	}
	void print_setup(RunContext &ctx) override
	{
		if (channels_last_)
			fmt::print("layout: channels-last (NHWC) convolution weights and inputs\n");
		if (arch_ != "lenet5") {
			const std::string &eng = engine_;
			if (eng != "libtorch")
				fmt::print("engine: oneDNN primitives on its blocked layout{} (CONFIG_IMAGE_ONEDNN)\n",
					   eng == "onednn-blocked-winograd" ? ", Winograd 3x3 convolutions"
					   : eng == "onednn-blocked-bf16"   ? ", bf16 activations"
									    : "");
			else if (cfg_.image.onednn)
				fmt::print("engine: libtorch's ops; CONFIG_IMAGE_ONEDNN needs {}\n",
					   ctx.dev.is_cuda() ? "the CPU"
							     : "a build with oneDNN's headers (libdnnl-dev)");
		}
		if (adv_recipe_)
			fmt::print("{}: the original's CNN recipe, cosine per epoch to 1e-6 and gradient-norm clip 1.0 "
				   "(CONFIG_IMAGE_ADV_RECIPE)\n",
				   ctx.opt->options().name);
	}
	std::vector<std::pair<std::string, std::string>> run_record() const override { return {{"engine", engine_}}; }
	// libtorch's convolutions, batch norm and linear layers run under bf16 autocast
	// (oneDNN's bf16 kernels on the CPU); the oneDNN blocked-layout engine runs bf16 only
	// where oneDNN has bf16 kernels for this CPU (native bf16).
	std::string bf16_unsupported(const RunContext &) const override
	{
		if (model_->engine() == "libtorch" || onednn::bf16_available())
			return "";
		return "the oneDNN blocked-layout engine (CONFIG_IMAGE_ONEDNN) has no bf16 kernels on this CPU "
		       "(CONFIG_IMAGE_ONEDNN=n runs bf16 on libtorch's ops)";
	}
	// LeNet-5's layers (6 and 16 channels, 400-120-84 linear) are too small for bf16's
	// conversions to pay: make bench of 2026-12-07 on an AVX512-BF16 AMD EPYC, 2 threads,
	// batch 512: 15.9K img/s in bf16 against 23.9K in fp32.
	std::string bf16_slower(const RunContext &ctx) const override
	{
		if (arch_ != "lenet5" || ctx.dev.is_cuda())
			return "";
		return "LeNet-5 trains faster in fp32 than in bf16 on the CPU (docs/performance.md); "
		       "CONFIG_CPU_PRECISION_BF16 asks for bf16 anyway";
	}
	std::string global_batch_text(const RunContext &ctx) const override
	{
		return fmt::format("{} x {} x {} = {} images", B_, accum_, ctx.world, G_);
	}
	int64_t global_batch(const RunContext &) const override { return G_; }

	double learning_rate(const Position &p) const override
	{
		if (!cosine_)
			return lr_;
		return min_lr_ + 0.5 * (lr_ - min_lr_) * (1.0 + std::cos(M_PI * double(p.epoch) / double(epochs_)));
	}

	// The epoch's order, computed once; its first micro-batch starts building.
	void begin_epoch(RunContext &, const Position &p) override
	{
		order_ = std::make_shared<const std::vector<int64_t>>(epoch_order(train_.n, seed_, p.epoch));
		epoch_t0_ = Clock::now();
		next_ = fetch(p.epoch, p.in_epoch, 0);
	}
	int64_t steps_in_epoch(const Position &) const override { return spe_; }

	// One step is this rank's accum_ micro-batches of the global batch. Each loss is its sum
	// over images divided by the global batch's image count, so the gradient is the global
	// batch's mean however it is split over ranks and micro-steps.
	MicroLoss micro_batch(RunContext &ctx, const Position &p, int micro) override
	{
		Batch bt = next_.get();
		if (micro + 1 < accum_)
			next_ = fetch(p.epoch, p.in_epoch, micro + 1);
		else if (p.in_epoch + 1 < spe_)
			next_ = fetch(p.epoch, p.in_epoch + 1, 0);
		MicroLoss m;
		if (bt.n == 0) // past the epoch's end: adds nothing
			return m;
		torch::Tensor logits;
		{
			compat::AutocastGuard ag(ctx.dev, ctx.bf16, torch::kBFloat16);
			logits = model_->forward(bt.x.to(ctx.dev));
		}
		auto loss = torch::nn::functional::cross_entropy(
			logits.to(torch::kFloat), bt.y.to(ctx.dev),
			torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
		m.backprop = loss / double(images_in_step(p.in_epoch));
		m.value = loss.detach();
		m.weight = double(bt.n);
		return m;
	}
	double step_items(const Position &p) const override { return double(images_in_step(p.in_epoch)); }
	void after_step(RunContext &, const Position &p, const StepOutcome &o) override
	{
		if (!o.updated)
			return;
		const int64_t n = images_in_step(p.in_epoch);
		epoch_loss_sum_ += o.loss * double(n);
		epoch_loss_n_ += n;
	}

	Evaluation evaluate(RunContext &ctx, const Position &) override
	{
		double tl = 0, ta = 0;
		test(ctx, &tl, &ta);
		const double et = epoch_seconds();
		const double train_loss = epoch_loss_n_ ? epoch_loss_sum_ / double(epoch_loss_n_) : 0.0;
		Evaluation ev;
		ev.quality = ta;
		ev.train_loss = train_loss;
		ev.eval_loss = tl;
		ev.record = {{"test_loss", tl}, {"test_accuracy", ta}, {"epoch_time", et}};
		const bool pruning = ctx.pruner->enabled();
		ev.text = fmt::format(
			"train loss {:.4f}, test loss {:.4f}, accuracy {:.2f}%{} ({:.1f} s)", train_loss, tl, 100 * ta,
			pruning ? fmt::format(", sparsity {:.1f}%", 100 * ctx.pruner->stats().sparsity) : "", et);
		return ev;
	}
	std::string format_quality(double q) const override { return fmt::format("test accuracy {:.2f}%", 100 * q); }

	void end_epoch(RunContext &) override
	{
		epoch_loss_sum_ = 0;
		epoch_loss_n_ = 0;
		epoch_time_before_ = 0;
		epoch_t0_ = Clock::now();
	}

	void save_state(json &st, std::vector<NamedTensor> &tensors) const override
	{
		st["global_batch"] = G_;
		st["epoch_loss_sum"] = epoch_loss_sum_;
		st["epoch_loss_n"] = epoch_loss_n_;
		st["epoch_time_before"] = epoch_seconds();
		for (auto &b : model_->named_buffers()) // BatchNorm running statistics
			tensors.push_back({"buffer." + b.key(), b.value()});
	}
	void load_state(const json &st, const SafetensorsFile &f) override
	{
		const int64_t g = st.at("global_batch").get<int64_t>();
		if (g != G_)
			fail("{}: the checkpoint's steps take {} images (BATCH_SIZE x GRAD_ACCUM x processes) but this "
			     "run's "
			     "take {}; resume with the same global batch (e.g. fewer processes and more GRAD_ACCUM)",
			     f.path(), g, G_);
		epoch_loss_sum_ = st.at("epoch_loss_sum").get<double>();
		epoch_loss_n_ = st.at("epoch_loss_n").get<int64_t>();
		epoch_time_before_ = st.at("epoch_time_before").get<double>();
		torch::NoGradGuard ng;
		for (auto &b : model_->named_buffers()) {
			auto t = read_tensor(f, "buffer." + b.key());
			if (!t.defined())
				fail("{}: checkpoint lacks buffer {}", f.path(), b.key());
			b.value().copy_(t);
		}
	}

	// The original's CNN names: per-epoch lists, best and final accuracy, final sparsity.
	void metrics(json &j, const json &history, const RunEnd &end) const override
	{
		json epochs = json::array(), tl = json::array(), te = json::array(), acc = json::array(),
		     sp = json::array(), lr = json::array(), et = json::array();
		for (const auto &h : history) {
			epochs.push_back(h["epoch"]);
			tl.push_back(h["train_loss"]);
			te.push_back(h["test_loss"]);
			acc.push_back(h["test_accuracy"]);
			sp.push_back(h.value("sparsity", 0.0));
			lr.push_back(h["lr"]);
			et.push_back(h["epoch_time"]);
		}
		j.update({{"dataset", dataset_},
			  {"batch_size", B_},
			  {"global_batch", G_},
			  {"epochs", epochs},
			  {"train_losses", tl},
			  {"test_losses", te},
			  {"test_accuracies", acc},
			  {"sparsities", sp},
			  {"learning_rates", lr},
			  {"epoch_times", et},
			  {"best_accuracy", std::isnan(end.best) ? json(nullptr) : json(end.best)},
			  {"best_epoch", end.best_epoch},
			  {"final_accuracy", acc.empty() ? json(nullptr) : acc.back()},
			  {"final_sparsity", sp.empty() ? 0.0 : sp.back().get<double>()},
			  {"images_per_second", j["throughput"]["value"]},
			  {"final_iteration", end.pos.step}});
		j["figures"] = {{"best_accuracy", j["best_accuracy"]}, {"images_per_second", j["images_per_second"]}};
	}

private:
	int64_t images_in_step(int64_t b) const { return std::min<int64_t>(G_, train_.n - b * G_); }
	double epoch_seconds() const
	{
		return epoch_time_before_ + std::chrono::duration<double>(Clock::now() - epoch_t0_).count();
	}

	// Micro-batch `micro` (of world x accum) of step `b` of `epoch`, from the epoch's order.
	Batch make_batch(const std::vector<int64_t> &order, int64_t epoch, int64_t b, int micro) const
	{
		const int64_t start = b * G_ + int64_t(micro) * B_;
		const int64_t n = std::clamp<int64_t>(std::min(b * G_ + G_, train_.n) - start, 0, B_);
		if (n == 0)
			return {};
		auto x = torch::empty({n, tf_train_.out_channels, tf_train_.size, tf_train_.size});
		auto y = torch::empty({n}, torch::kLong);
		make_image_batch(train_, order.data() + start, n, tf_train_,
				 seed_ * 6364136223846793005ULL + uint64_t(epoch), x.data_ptr<float>(),
				 y.data_ptr<int64_t>());
		if (channels_last_)
			x = x.contiguous(at::MemoryFormat::ChannelsLast);
		return {x, y, n};
	}
	// This rank's micro-batch j of step b, built on another thread.
	std::future<Batch> fetch(int64_t epoch, int64_t b, int j)
	{
		return std::async(std::launch::async, [this, order = order_, epoch, b, m = first_micro_ + j] {
			return make_batch(*order, epoch, b, m);
		});
	}

	// Test loss and accuracy. Data parallel: BatchNorm statistics are rank 0's everywhere (as
	// PyTorch DDP's broadcast_buffers); rank r evaluates chunks r, r + world, ... and the
	// sums are added.
	void test(RunContext &ctx, double *loss, double *acc)
	{
		torch::NoGradGuard ng;
		if (ctx.ddp) {
			std::vector<torch::Tensor> bufs;
			for (auto &b : model_->buffers())
				bufs.push_back(b);
			ctx.ddp->broadcast(bufs);
		}
		model_->eval();
		double total = 0;
		int64_t right = 0;
		const int64_t eb = 1000;
		std::vector<int64_t> idx(static_cast<size_t>(eb), 0);
		for (int64_t s = 0; s < test_.n; s += eb) {
			if ((s / eb) % ctx.world != ctx.rank)
				continue;
			int64_t n = std::min(eb, test_.n - s);
			std::iota(idx.begin(), idx.begin() + n, s);
			auto x = torch::empty({n, tf_test_.out_channels, tf_test_.size, tf_test_.size});
			auto y = torch::empty({n}, torch::kLong);
			make_image_batch(test_, idx.data(), n, tf_test_, 0, x.data_ptr<float>(), y.data_ptr<int64_t>());
			if (channels_last_)
				x = x.contiguous(at::MemoryFormat::ChannelsLast);
			auto yd = y.to(ctx.dev);
			torch::Tensor logits;
			{
				compat::AutocastGuard ag(ctx.dev, ctx.bf16, torch::kBFloat16);
				logits = model_->forward(x.to(ctx.dev)).to(torch::kFloat);
			}
			total += torch::nn::functional::cross_entropy(
					 logits, yd,
					 torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
					 .item<double>();
			right += logits.argmax(1).eq(yd).sum().item<int64_t>();
		}
		model_->train();
		if (ctx.ddp) {
			auto r = ctx.ddp->sum({total, double(right)});
			total = r[0], right = std::llround(r[1]);
		}
		*loss = total / double(test_.n);
		*acc = double(right) / double(test_.n);
	}

	const Settings &cfg_;
	std::string arch_, dataset_;
	ImageSet train_, test_;
	ImageTransform tf_train_, tf_test_;
	VisionConfig vc_;
	std::shared_ptr<VisionModel> model_;
	int B_ = 0, accum_ = 1, first_micro_ = 0;
	int64_t G_ = 0, epochs_ = 0, spe_ = 0; // G_: images per optimizer step, over all ranks
	uint64_t seed_ = 0;
	double lr_ = 0, min_lr_ = 0, clip_ = 0;
	bool cosine_ = false, channels_last_ = false, adv_recipe_ = false;
	std::string engine_ = "libtorch"; // what runs the layers, at the settled precision
	double epoch_loss_sum_ = 0, epoch_time_before_ = 0;
	int64_t epoch_loss_n_ = 0;
	Clock::time_point epoch_t0_ = Clock::now();
	std::shared_ptr<const std::vector<int64_t>> order_;
	std::future<Batch> next_;
};

} // namespace

std::unique_ptr<Family> make_image_family(const Settings &s)
{
	return std::make_unique<ImageFamily>(s);
}

} // namespace knlp
