#include "train/image_trainer.h"

#include "core/hwmon.h"
#include "train/ddp.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <numeric>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "core/torch_compat.h"
#include "models/vision.h"
#include "optim/optimizer.h"
#include "prune/pruner.h"
#include "train/checkpoint.h"
#include "train/numerics.h"
#include "train/device.h"

namespace knlp {

using json = nlohmann::json;

bool is_image_config(const Config &cfg)
{
	std::string m = cfg.choice("MODEL_GPT2");
	return m == "MODEL_LENET5" || m == "MODEL_RESNET18" || m == "MODEL_RESNET50";
}

void dataset_normalisation(const std::string &dataset, std::array<float, 3> &mean, std::array<float, 3> &std)
{
	if (dataset == "mnist")
		mean = {0.1307f, 0.1307f, 0.1307f}, std = {0.3081f, 0.3081f, 0.3081f};
	else if (dataset == "fashion-mnist")
		mean = {0.2860f, 0.2860f, 0.2860f}, std = {0.3530f, 0.3530f, 0.3530f};
	else if (dataset == "cifar100")
		mean = {0.5071f, 0.4865f, 0.4409f}, std = {0.2673f, 0.2564f, 0.2762f};
	else
		mean = {0.4914f, 0.4822f, 0.4465f}, std = {0.2023f, 0.1994f, 0.2010f};
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch)
{
	std::vector<int64_t> o(static_cast<size_t>(n));
	std::iota(o.begin(), o.end(), 0);
	Rng rng(seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(epoch) * 1000003ULL + 11);
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = static_cast<int64_t>(rng.uniform() * double(i + 1));
		std::swap(o[size_t(i)], o[size_t(std::min(j, i))]);
	}
	return o;
}

void make_image_batch(const ImageSet &set, const int64_t *idx, int64_t n, const ImageTransform &t, uint64_t aug_seed,
		      float *out, int64_t *labels)
{
	const int H = set.height, W = set.width, S = t.size, C = t.out_channels, Cin = set.channels;
	std::vector<float> plane(size_t(S) * S);
	for (int64_t i = 0; i < n; i++) {
		const int64_t k = idx[i];
		labels[i] = set.labels[size_t(k)];
		const uint8_t *img = set.image(k);
		int dx = 0, dy = 0;
		bool flip = false;
		if (t.augment) {
			Rng r(aug_seed ^ (uint64_t(k) * 0xbf58476d1ce4e5b9ULL + 0x94d049bb133111ebULL));
			dx = static_cast<int>(r.uniform() * 9) - 4; // crop offset in [-4, 4] of a 4-padded image
			dy = static_cast<int>(r.uniform() * 9) - 4;
			flip = r.uniform() < 0.5;
		}
		for (int c = 0; c < C; c++) {
			const int cs = Cin == 1 ? 0 : c;
			const uint8_t *src = img + size_t(cs) * H * W;
			// Base image of size S x S: bilinear resize or centred zero padding.
			if (t.resize) {
				const float sy = float(H) / S, sx = float(W) / S;
				for (int y = 0; y < S; y++) {
					float fy = std::max(0.0f, (y + 0.5f) * sy - 0.5f);
					int y0 = std::min(int(fy), H - 1), y1 = std::min(y0 + 1, H - 1);
					float wy = fy - float(y0);
					for (int x = 0; x < S; x++) {
						float fx = std::max(0.0f, (x + 0.5f) * sx - 0.5f);
						int x0 = std::min(int(fx), W - 1), x1 = std::min(x0 + 1, W - 1);
						float wx = fx - float(x0);
						float v = (1 - wy) * ((1 - wx) * src[y0 * W + x0] + wx * src[y0 * W + x1]) +
							  wy * ((1 - wx) * src[y1 * W + x0] + wx * src[y1 * W + x1]);
						plane[size_t(y) * S + x] = v / 255.0f;
					}
				}
			} else {
				const int oy = (S - H) / 2, ox = (S - W) / 2;
				for (int y = 0; y < S; y++)
					for (int x = 0; x < S; x++) {
						int sy = y - oy, sx = x - ox;
						plane[size_t(y) * S + x] =
							sy >= 0 && sy < H && sx >= 0 && sx < W ? src[sy * W + sx] / 255.0f : 0.0f;
					}
			}
			// Normalise; crop (zero padding outside) and flip.
			float *dst = out + ((i * C + c) * S) * S;
			const float m = t.mean[size_t(cs)], sd = t.std[size_t(cs)];
			for (int y = 0; y < S; y++)
				for (int x = 0; x < S; x++) {
					int sy = y + dy, sx = (flip ? S - 1 - x : x) + dx;
					float v = sy >= 0 && sy < S && sx >= 0 && sx < S ? plane[size_t(sy) * S + sx] : 0.0f;
					dst[y * S + x] = (v - m) / sd;
				}
		}
	}
}

namespace {

struct Batch {
	torch::Tensor x, y;
	int64_t n = 0; // images (0: this micro-batch lies past the end of the epoch)
};

class ImageTrainer {
public:
	explicit ImageTrainer(TrainRequest req) : req_(std::move(req)), cfg_(req_.cfg) {}
	int run();

private:
	void setup();
	void resume_from(const std::string &ckpt);
	// Micro-batch `micro` (of world x accum) of step `b` of `epoch`.
	// `order` is the epoch's permutation (epoch_order), computed once per epoch.
	Batch make_batch(const std::vector<int64_t> &order, int64_t epoch, int64_t b, int micro) const;
	int64_t images_in_step(int64_t b) const { return std::min<int64_t>(G_, train_.n - b * G_); }
	bool main_rank() const { return rank_ == 0; }
	void evaluate(double *loss, double *acc);
	void checkpoint_now(bool best);
	json state_json() const;
	void write_metrics(const std::string &status) const;
	void log_jsonl(const json &j) const;
	[[noreturn]] void nonfinite(const std::string &what, double v);
	bool skip_nonfinite(const std::string &what, double value); // CONFIG_NONFINITE_SKIP
	NonfiniteGuard guard_;
	std::unique_ptr<HwMonitor> hw_;
	double lr_at(int64_t epoch) const;
	double elapsed() const
	{
		return elapsed_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
	}

	TrainRequest req_;
	Config cfg_;
	torch::Device dev_ = torch::kCPU;
	std::string run_dir_, dataset_, arch_, last_ckpt_;
	ImageSet train_, test_;
	ImageTransform tf_train_, tf_test_;
	std::shared_ptr<VisionModel> model_;
	std::unique_ptr<Optimizer> opt_;
	std::unique_ptr<Pruner> pruner_;
	int64_t seed_ = 0, epochs_ = 0, spe_ = 0, epoch_ = 0, batch_in_epoch_ = 0, step_ = 0;
	int B_ = 0, accum_ = 1;
	int64_t G_ = 0; // global batch: B_ x accum_ x world_ images per optimizer step
	// Data parallel (CONFIG_DDP under a launcher): rank r takes micro-batches
	// [r accum, (r + 1) accum) of every step; rank 0 writes every file.
	std::unique_ptr<Ddp> ddp_;
	int rank_ = 0, world_ = 1, local_rank_ = -1;
	double replica_spread_ = 0;
	double lr_ = 0, min_lr_ = 0, best_acc_ = -1, last_img_s_ = 0, epoch_loss_sum_ = 0;
	int64_t epoch_loss_n_ = 0, best_epoch_ = -1;
	bool cosine_ = false, channels_last_ = false, adv_recipe_ = false;
	double clip_ = 0;
	double elapsed_before_ = 0, epoch_time_before_ = 0;
	std::chrono::steady_clock::time_point t_start_, epoch_t0_;
	json hist_ = {{"epochs", json::array()},	 {"train_losses", json::array()}, {"test_losses", json::array()},
		      {"test_accuracies", json::array()}, {"sparsities", json::array()},   {"learning_rates", json::array()},
		      {"epoch_times", json::array()}};
};

double ImageTrainer::lr_at(int64_t epoch) const
{
	if (!cosine_)
		return lr_;
	return min_lr_ + 0.5 * (lr_ - min_lr_) * (1.0 + std::cos(M_PI * double(epoch) / double(epochs_)));
}

void ImageTrainer::setup()
{
	setup_threads(cfg_);
	guard_ = NonfiniteGuard::from(cfg_);
	dev_ = select_device(cfg_);
	if (dev_.is_cuda() && local_rank_ >= 0)
		dev_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank_));
	seed_ = cfg_.get_int("SEED");
	std::string m = cfg_.choice("MODEL_GPT2");
	arch_ = m == "MODEL_LENET5" ? "lenet5" : m == "MODEL_RESNET18" ? "resnet18" : "resnet50";
	std::string ds = cfg_.choice("IMAGE_DATASET_FASHION_MNIST");
	dataset_ = ds == "IMAGE_DATASET_MNIST"	  ? "mnist"
		   : ds == "IMAGE_DATASET_CIFAR10"  ? "cifar10"
		   : ds == "IMAGE_DATASET_CIFAR100" ? "cifar100"
		   : ds == "IMAGE_DATASET_FOLDER"   ? "folder"
						    : "fashion-mnist";
	std::string dir = cfg_.get_string("IMAGE_DATA_DIR");
	train_ = load_image_dataset(dataset_, dir, true);
	test_ = load_image_dataset(dataset_, dir, false);
	if (test_.channels != train_.channels || test_.height != train_.height || test_.width != train_.width)
		fail("{}: test images are {}x{}x{} but training images are {}x{}x{}", test_.name, test_.channels, test_.height,
		     test_.width, train_.channels, train_.height, train_.width);
	VisionConfig vc;
	vc.arch = arch_;
	vc.onednn = cfg_.get_bool("IMAGE_ONEDNN");
	vc.winograd = cfg_.get_bool("IMAGE_WINOGRAD");
	vc.in_channels = arch_ == "lenet5" ? train_.channels : 3;
	vc.num_classes = static_cast<int>(cfg_.get_int("IMAGE_NUM_CLASSES"));
	if (vc.num_classes == 0)
		vc.num_classes = train_.num_classes;
	if (vc.num_classes != train_.num_classes)
		fail("{}: the dataset has {} classes but CONFIG_IMAGE_NUM_CLASSES={}", train_.name, train_.num_classes,
		     vc.num_classes);
	if (arch_ == "lenet5" && train_.channels != 1)
		fail("{}: LeNet-5 takes one channel; {} has {} (use a ResNet for colour images)", train_.name, dataset_,
		     train_.channels);
	tf_train_.out_channels = vc.in_channels;
	tf_train_.size = 32;
	// LeNet-5 resizes 28x28 to 32x32 (the original); the ResNets zero-pad MNIST-sized images
	// to 32x32; folder images of another size, or anything larger, are resized.
	const bool is32 = train_.height == 32 && train_.width == 32;
	tf_train_.resize = !is32 && (arch_ == "lenet5" || dataset_ == "folder" || train_.height > 32 || train_.width > 32);
	tf_train_.augment = cfg_.get_bool("IMAGE_AUGMENT") && train_.channels == 3;
	if (dataset_ == "folder") // no published constants: the training images' own statistics
		pixel_stats(train_, tf_train_.mean.data(), tf_train_.std.data());
	else
		dataset_normalisation(dataset_, tf_train_.mean, tf_train_.std);
	tf_test_ = tf_train_;
	tf_test_.augment = false;

	B_ = static_cast<int>(cfg_.get_int("BATCH_SIZE"));
	accum_ = static_cast<int>(cfg_.get_int("GRAD_ACCUM"));
	G_ = int64_t(B_) * accum_ * world_;
	epochs_ = cfg_.get_int("EPOCHS");
	spe_ = (train_.n + G_ - 1) / G_;
	lr_ = cfg_.get_float("LEARNING_RATE");
	min_lr_ = cfg_.get_float("IMAGE_MIN_LR");
	cosine_ = cfg_.get_bool("IMAGE_LR_COSINE");
	if (lr_ <= 0)
		fail("training: CONFIG_LEARNING_RATE must be > 0");
	const int64_t total = epochs_ * spe_;
	OptimizerOptions oo = optimizer_options_from(cfg_, lr_);
	clip_ = cfg_.get_float("IMAGE_GRAD_CLIP");
	adv_recipe_ = oo.amsgrad && cfg_.get_bool("IMAGE_ADV_RECIPE");
	if (adv_recipe_) // AdamWAdv / AdamWSPAM: the original's CNN schedule
		cosine_ = true, min_lr_ = 1e-6, clip_ = 1.0;
	Config pcfg = cfg_;
	int64_t ramp_epoch = cfg_.get_int("PRUNING_RAMP_END_EPOCH");
	if (ramp_epoch > 0 && cfg_.get_int("PRUNING_RAMP_END") == 0)
		pcfg.set(fmt::format("PRUNING_RAMP_END={}", ramp_epoch * spe_), "image trainer");
	PruneOptions po = prune_options_from(pcfg, oo, total, static_cast<uint64_t>(seed_));

	torch::manual_seed(static_cast<uint64_t>(seed_));
	model_ = make_vision_model(vc);
	model_->to(dev_);
	if (ddp_) // identical initial weights (they are seeded alike; this makes sure)
		ddp_->broadcast(model_->parameters());
	// oneDNN's blocked layout (IMAGE_ONEDNN) replaces channels-last for the ResNets.
	channels_last_ = cfg_.get_bool("IMAGE_CHANNELS_LAST") && model_->engine() == "libtorch";
	if (channels_last_) { // convolution weights NHWC; the optimizer's state follows their layout
		torch::NoGradGuard ng;
		for (auto &p : model_->parameters())
			if (p.dim() == 4)
				p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
	}
	std::vector<std::pair<std::string, torch::Tensor>> named;
	for (auto &p : model_->named_parameters())
		named.emplace_back(p.key(), p.value());
	opt_ = std::make_unique<Optimizer>(named, oo);
	pruner_ = std::make_unique<Pruner>(po, *opt_);
	if (ddp_)
		ddp_->attach(model_->parameters(), cfg_.get_int("DDP_BUCKET_MB") << 20, cfg_.get_bool("DDP_OVERLAP"));
}

Batch ImageTrainer::make_batch(const std::vector<int64_t> &order, int64_t epoch, int64_t b, int micro) const
{
	const int64_t start = b * G_ + int64_t(micro) * B_;
	const int64_t n = std::clamp<int64_t>(std::min(b * G_ + G_, train_.n) - start, 0, B_);
	if (n == 0)
		return {};
	auto x = torch::empty({n, tf_train_.out_channels, tf_train_.size, tf_train_.size});
	auto y = torch::empty({n}, torch::kLong);
	make_image_batch(train_, order.data() + start, n, tf_train_,
			 static_cast<uint64_t>(seed_) * 6364136223846793005ULL + static_cast<uint64_t>(epoch), x.data_ptr<float>(),
			 y.data_ptr<int64_t>());
	if (channels_last_)
		x = x.contiguous(at::MemoryFormat::ChannelsLast);
	return {x, y, n};
}

void ImageTrainer::evaluate(double *loss, double *acc)
{
	torch::NoGradGuard ng;
	// Data parallel: BatchNorm statistics are rank 0's everywhere (as PyTorch DDP's
	// broadcast_buffers); rank r evaluates chunks r, r + world, ... and the sums are added.
	if (ddp_) {
		std::vector<torch::Tensor> bufs;
		for (auto &b : model_->buffers())
			bufs.push_back(b);
		ddp_->broadcast(bufs);
	}
	model_->eval();
	double total = 0;
	int64_t right = 0;
	const int64_t eb = 1000;
	std::vector<int64_t> idx(static_cast<size_t>(eb), 0);
	for (int64_t s = 0; s < test_.n; s += eb) {
		if ((s / eb) % world_ != rank_)
			continue;
		int64_t n = std::min(eb, test_.n - s);
		std::iota(idx.begin(), idx.begin() + n, s);
		auto x = torch::empty({n, tf_test_.out_channels, tf_test_.size, tf_test_.size});
		auto y = torch::empty({n}, torch::kLong);
		make_image_batch(test_, idx.data(), n, tf_test_, 0, x.data_ptr<float>(), y.data_ptr<int64_t>());
		if (channels_last_)
			x = x.contiguous(at::MemoryFormat::ChannelsLast);
		auto yd = y.to(dev_);
		auto logits = model_->forward(x.to(dev_)).to(torch::kFloat);
		total += torch::nn::functional::cross_entropy(
				 logits, yd, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
				 .item<double>();
		right += logits.argmax(1).eq(yd).sum().item<int64_t>();
	}
	model_->train();
	if (ddp_) {
		auto r = ddp_->sum({total, double(right)});
		total = r[0], right = std::llround(r[1]);
	}
	*loss = total / double(test_.n);
	*acc = double(right) / double(test_.n);
}

json ImageTrainer::state_json() const
{
	json st = {{"iteration", step_},
		{"optimizer_step", opt_->step_count()},
		{"epoch", epoch_},
		{"batch_in_epoch", batch_in_epoch_},
		{"global_batch", G_},
		{"epoch_loss_sum", epoch_loss_sum_},
		{"epoch_loss_n", epoch_loss_n_},
		{"epoch_time_before", epoch_time_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_t0_).count()},
		{"best_accuracy", best_acc_},
		{"best_epoch", best_epoch_},
		{"elapsed_seconds", elapsed()},
		{"seed", seed_},
		{"code_version", code_version()},
		{"config", cfg_.to_text()},
		{"optimizer", opt_->extra_state()},
		{"pruning", pruner_->extra_state()},
		{"metrics", hist_}};
	guard_.save(st);
	return st;
}

void ImageTrainer::checkpoint_now(bool best)
{
	if (!main_rank())
		return;
	CheckpointWriter w{run_dir_, static_cast<int>(cfg_.get_int("KEEP_CHECKPOINTS"))};
	auto extra = optimizer_tensors(*opt_);
	for (auto &[name, t] : pruner_->state_tensors())
		extra.push_back({name, t});
	for (auto &b : model_->named_buffers()) // BatchNorm running statistics
		extra.push_back({"buffer." + b.key(), b.value()});
	extra.push_back({"rng.torch_cpu", compat::generator_state(torch::kCPU)});
	last_ckpt_ = w.save(step_, *model_, extra, state_json(), best);
	write_metrics("running");
}

void ImageTrainer::resume_from(const std::string &ckpt)
{
	json st = read_checkpoint_state(ckpt);
	load_tensors(join_path(ckpt, "model.safetensors"), named_parameters_of(*model_));
	load_optimizer_state(ckpt, *opt_);
	SafetensorsFile of(join_path(ckpt, "optimizer.safetensors"));
	{
		torch::NoGradGuard ng;
		for (auto &b : model_->named_buffers()) {
			auto t = read_tensor(of, "buffer." + b.key());
			if (!t.defined())
				fail("{}: checkpoint lacks buffer {}", join_path(ckpt, "optimizer.safetensors"), b.key());
			b.value().copy_(t);
		}
	}
	try {
		step_ = st.at("iteration").get<int64_t>();
		opt_->set_step_count(st.at("optimizer_step").get<int64_t>());
		epoch_ = st.at("epoch").get<int64_t>();
		batch_in_epoch_ = st.at("batch_in_epoch").get<int64_t>();
		const int64_t g = st.value("global_batch", G_);
		if (g != G_)
			fail("{}: the checkpoint's steps take {} images (BATCH_SIZE x GRAD_ACCUM x processes) but this run's "
			     "take {}; resume with the same global batch (e.g. fewer processes and more GRAD_ACCUM)",
			     join_path(ckpt, "state.json"), g, G_);
		epoch_loss_sum_ = st.at("epoch_loss_sum").get<double>();
		epoch_loss_n_ = st.at("epoch_loss_n").get<int64_t>();
		guard_.load(st);
		epoch_time_before_ = st.at("epoch_time_before").get<double>();
		best_acc_ = st.at("best_accuracy").get<double>();
		best_epoch_ = st.at("best_epoch").get<int64_t>();
		elapsed_before_ = st.at("elapsed_seconds").get<double>();
		hist_ = st.at("metrics");
		if (st.contains("optimizer"))
			opt_->load_extra_state(st.at("optimizer"));
		pruner_->load(st.value("pruning", json::object()), [&](const std::string &n) { return read_tensor(of, n); });
	} catch (const json::exception &e) {
		fail("{}: checkpoint state is incomplete ({})", join_path(ckpt, "state.json"), e.what());
	}
	const TensorView &g = of.get("rng.torch_cpu");
	auto state = torch::from_blob(const_cast<void *>(g.data), {static_cast<int64_t>(g.nbytes)}, torch::kByte).clone();
	compat::set_generator_state(torch::kCPU, state);
	last_ckpt_ = ckpt;
	if (main_rank())
		truncate_jsonl(join_path(run_dir_, "metrics.jsonl"), step_);
	fmt::print("resumed {} at epoch {}, batch {} (step {})\n", ckpt, epoch_, batch_in_epoch_, step_);
}

void ImageTrainer::write_metrics(const std::string &status) const
{
	if (!main_rank())
		return;
	const auto &acc = hist_["test_accuracies"];
	const auto &sp = hist_["sparsities"];
	json j = {{"model", arch_},
		  {"dataset", dataset_},
		  {"status", status},
		  {"seed", seed_},
		  {"parameters", count_parameters(*model_)},
		  {"optimizer", opt_->options().name},
		  {"optimizer_state_bytes", opt_->state_bytes()},
		  {"batch_size", B_},
		  {"global_batch", G_},
		  {"epochs", hist_["epochs"]},
		  {"train_losses", hist_["train_losses"]},
		  {"test_losses", hist_["test_losses"]},
		  {"test_accuracies", acc},
		  {"sparsities", sp},
		  {"learning_rates", hist_["learning_rates"]},
		  {"epoch_times", hist_["epoch_times"]},
		  {"best_accuracy", best_acc_ >= 0 ? json(best_acc_) : json(nullptr)},
		  {"best_epoch", best_epoch_},
		  {"final_accuracy", acc.empty() ? json(nullptr) : acc.back()},
		  {"final_sparsity", sp.empty() ? 0.0 : sp.back().get<double>()},
		  {"total_training_time", elapsed()},
		  {"images_per_second", last_img_s_},
		  {"final_iteration", step_},
		  {"skipped_steps", guard_.skipped},
		  {"code_version", code_version()}};
	j["pruning"] = pruning_summary(*pruner_);
	if (hw_)
		j["hardware"] = hw_->summary();
	if (ddp_)
		j["ddp"] = ddp_record(*ddp_, cfg_, G_, replica_spread_);
	write_file_atomic(join_path(run_dir_, "training_metrics.json"), j.dump(2) + "\n");
}

void ImageTrainer::log_jsonl(const json &j) const
{
	if (!main_rank() || !cfg_.get_bool("TRACKER_JSONL"))
		return;
	std::ofstream f(join_path(run_dir_, "metrics.jsonl"), std::ios::app);
	f << j.dump() << "\n";
}

bool ImageTrainer::skip_nonfinite(const std::string &what, double value)
{
	return guard_.skip_step(
		what, value, [&](const std::string &w) { nonfinite(w, value); },
		[&](nlohmann::json rec) {
			rec.update({{"epoch", epoch_}, {"iter", step_}});
			log_jsonl(rec);
		});
}

[[noreturn]] void ImageTrainer::nonfinite(const std::string &what, double v)
{
	write_metrics("failed");
	std::string keep = last_ckpt_.empty() ? "no checkpoint was written yet" : "last good checkpoint: " + last_ckpt_;
	fail("{}: non-finite {} ({}) at epoch {}, step {}; training stopped, {}", run_dir_, what, v, epoch_, step_, keep);
}

int ImageTrainer::run()
{
	std::string ckpt;
	{
		DdpStart st = start_data_parallel(req_, cfg_, "image");
		ddp_ = std::move(st.ddp);
		rank_ = st.rank, world_ = st.world, local_rank_ = st.local_rank;
		run_dir_ = st.run_dir;
		ckpt = st.ckpt;
	}
	setup();
	if (cfg_.get_bool("DEBUG_DRY_RUN")) {
		fmt::print("dry run: {} on {} ({} train / {} test images) -> {} parameters\n", arch_, dataset_, train_.n,
			   test_.n, count_parameters(*model_));
		return 0;
	}
	if (main_rank())
		record_run(run_dir_, cfg_, req_.command,
			   {{"torch_version", torch_version()}, {"device", dev_.str()},
			    {"threads", std::to_string(torch::get_num_threads())}, {"resumed_from", ckpt},
			    {"world_size", std::to_string(world_)}, {"engine", model_->engine()}});
	t_start_ = std::chrono::steady_clock::now();
	if (!ckpt.empty())
		resume_from(ckpt);
	if (main_rank() && cfg_.get_bool("HW_MONITOR"))
		hw_ = std::make_unique<HwMonitor>(join_path(run_dir_, "hw_stats.json"), dev_.is_cuda() ? int(dev_.index()) : -1);
	silence_other_ranks(rank_);
	fmt::print("run {}: {} on {} ({} train, {} test images, {}x{}x{} inputs): {} parameters on {} ({} threads), seed {}\n",
		   run_dir_, arch_, dataset_, train_.n, test_.n, tf_train_.out_channels, tf_train_.size, tf_train_.size,
		   count_parameters(*model_), dev_.str(), torch::get_num_threads(), seed_);
	if (channels_last_)
		fmt::print("layout: channels-last (NHWC) convolution weights and inputs\n");
	if (arch_ != "lenet5") {
		const std::string eng = model_->engine();
		if (eng != "libtorch")
			fmt::print("engine: oneDNN primitives on its blocked layout{} (CONFIG_IMAGE_ONEDNN)\n",
				   eng == "onednn-blocked-winograd" ? ", Winograd 3x3 convolutions" : "");
		else if (cfg_.get_bool("IMAGE_ONEDNN"))
			fmt::print("engine: libtorch's ops; CONFIG_IMAGE_ONEDNN needs {}\n",
				   dev_.is_cuda() ? "the CPU" : "a build with oneDNN's headers (libdnnl-dev)");
	}
	if (adv_recipe_)
		fmt::print("{}: the original's CNN recipe, cosine per epoch to 1e-6 and gradient-norm clip 1.0 "
			   "(CONFIG_IMAGE_ADV_RECIPE)\n",
			   opt_->options().name);
	if (ddp_)
		fmt::print("data parallel: {} processes ({}), global batch {} x {} x {} = {} images, buckets of {} MiB{}\n",
			   world_, ddp_->backend(), B_, accum_, world_, G_, cfg_.get_int("DDP_BUCKET_MB"),
			   cfg_.get_bool("DDP_OVERLAP") ? ", sent during the backward pass" : "");
	if (pruner_->enabled()) {
		const auto &po = pruner_->options();
		fmt::print("optimizer {}; pruning {}{} to {:.1f}% (warmup {}, every {} steps, ramp end {} = epoch {:.1f})\n",
			   opt_->options().name, method_name(po.method),
			   po.method == PruneMethod::State ? fmt::format(" (bitter{})", po.variant) : "", 100 * po.target,
			   po.warmup, po.frequency, po.ramp_end, double(po.ramp_end) / double(spe_));
	} else {
		fmt::print("optimizer {}; no pruning\n", opt_->options().name);
	}
	const int64_t max_time = cfg_.get_int("MAX_TIME");
	const double clip = clip_;
	const int64_t log_interval = cfg_.get_int("LOG_INTERVAL");
	Progress prog("train", double(epochs_ * spe_ - step_), "steps");
	const int64_t step0 = step_;
	bool stop = false;
	model_->train();
	auto win_t0 = std::chrono::steady_clock::now();
	int64_t win_images = 0;
	epoch_t0_ = std::chrono::steady_clock::now();
	const int first_micro = rank_ * accum_;
	auto drop_grads = [&] {
		for (auto &s : opt_->state())
			s.param.mutable_grad().reset();
	};
	while (epoch_ < epochs_ && !stop) {
		const double lr = lr_at(epoch_);
		// The next micro-batch is prepared on another thread while this one trains.
		auto order = std::make_shared<const std::vector<int64_t>>(
			epoch_order(train_.n, static_cast<uint64_t>(seed_), epoch_));
		auto fetch = [this, first_micro, order](int64_t e, int64_t b, int j) {
			return std::async(std::launch::async,
					  [this, order, e, b, m = first_micro + j] { return make_batch(*order, e, b, m); });
		};
		auto next = fetch(epoch_, batch_in_epoch_, 0);
		while (batch_in_epoch_ < spe_) {
			// One optimizer step: this rank's accum_ micro-batches of the global batch. Each
			// loss is its sum over images divided by the global batch's image count, so the
			// gradient is the global batch's mean however it is split over ranks and
			// micro-steps. The last micro-step's gradients are summed across ranks.
			const int64_t n_step = images_in_step(batch_in_epoch_);
			double loss_sum = 0;
			for (int j = 0; j < accum_; j++) {
				Batch bt = next.get();
				if (j + 1 < accum_)
					next = fetch(epoch_, batch_in_epoch_, j + 1);
				else if (batch_in_epoch_ + 1 < spe_)
					next = fetch(epoch_, batch_in_epoch_ + 1, 0);
				const bool sync = ddp_ && j == accum_ - 1;
				if (sync)
					ddp_->begin_sync();
				if (bt.n > 0) { // an empty micro-batch (past the epoch's end) adds nothing
					auto logits = model_->forward(bt.x.to(dev_));
					auto loss = torch::nn::functional::cross_entropy(
						logits.to(torch::kFloat), bt.y.to(dev_),
						torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
					loss_sum += loss.item<double>();
					(loss / double(n_step)).backward();
				}
				if (sync)
					ddp_->end_sync(); // gradients summed over ranks (sent during the backward pass)
			}
			if (fault_nan("loss"))
				loss_sum = std::numeric_limits<double>::quiet_NaN();
			if (ddp_)
				loss_sum = ddp_->sum({loss_sum})[0]; // a non-finite loss on any rank is seen by all
			const double lv = loss_sum / double(n_step);
			bool skipped = !std::isfinite(lv) && skip_nonfinite("loss", lv);
			if (!skipped) {
				pruner_->mask_grads();
				const double factor = opt_->before_clip();
				const double norm = opt_->grad_norm();
				if (!std::isfinite(norm))
					skipped = skip_nonfinite("gradient (first in " + opt_->first_nonfinite_grad() + ")", norm);
				if (!skipped) {
					double scale = clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1.0;
					opt_->step(lr * factor, scale);
					pruner_->after_step(opt_->step_count());
					epoch_loss_sum_ += lv * double(n_step);
					epoch_loss_n_ += n_step;
					guard_.step_ok();
				}
			}
			drop_grads();
			win_images += n_step;
			batch_in_epoch_++;
			step_++;
			fault_point("after_step");
			if (max_time > 0 && (elapsed() >= double(max_time) || fault_time_up("after_step")))
				stop = true;
			if (ddp_) { // the stop decision is agreed by every rank
				ddp_->heartbeat(step_);
				stop = ddp_->max({stop ? 1.0 : 0.0})[0] > 0;
			}
			if (step_ % log_interval == 0 || stop || batch_in_epoch_ == spe_) {
				synchronize(dev_);
				double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - win_t0).count();
				last_img_s_ = dt > 0 ? double(win_images) / dt : 0;
				win_t0 = std::chrono::steady_clock::now();
				win_images = 0;
				std::string sp = pruner_->enabled() ? fmt::format(" sparsity {:.1f}%", 100 * pruner_->stats().sparsity) : "";
				log_jsonl({{"type", "train"}, {"iter", step_}, {"epoch", epoch_}, {"loss", lv}, {"lr", lr},
					   {"images_per_sec", last_img_s_}, {"elapsed", elapsed()}});
				prog.update(double(step_ - step0),
					    fmt::format("epoch {}/{} loss {:.4f} lr {:.2e} {:.0f} img/s{}", epoch_ + 1, epochs_, lv, lr,
							last_img_s_, sp),
					    true);
			}
			if (stop)
				break;
		}
		if (batch_in_epoch_ < spe_) { // time budget: a mid-epoch checkpoint, resumable exactly
			if (next.valid())
				next.wait();
			checkpoint_now(false);
			break;
		}
		double tl = 0, ta = 0;
		evaluate(&tl, &ta);
		double et = epoch_time_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_t0_).count();
		double sparsity = pruner_->enabled() ? pruner_->stats().sparsity : 0.0;
		double train_loss = epoch_loss_n_ ? epoch_loss_sum_ / double(epoch_loss_n_) : 0.0;
		hist_["epochs"].push_back(epoch_ + 1);
		hist_["train_losses"].push_back(train_loss);
		hist_["test_losses"].push_back(tl);
		hist_["test_accuracies"].push_back(ta);
		hist_["sparsities"].push_back(sparsity);
		hist_["learning_rates"].push_back(lr);
		hist_["epoch_times"].push_back(et);
		bool best = ta > best_acc_;
		if (best)
			best_acc_ = ta, best_epoch_ = epoch_ + 1;
		log_jsonl({{"type", "eval"}, {"iter", step_}, {"epoch", epoch_ + 1}, {"train_loss", train_loss}, {"test_loss", tl},
			   {"test_accuracy", ta}, {"sparsity", sparsity}, {"epoch_time", et}, {"elapsed", elapsed()}});
		fmt::print("{}epoch {}/{}: train loss {:.4f}, test loss {:.4f}, accuracy {:.2f}%{}{} ({:.1f} s)\n",
			   isatty(fileno(stdout)) ? "\r\033[K" : "", epoch_ + 1, epochs_, train_loss, tl, 100 * ta,
			   pruner_->enabled() ? fmt::format(", sparsity {:.1f}%", 100 * sparsity) : "", best ? " [best]" : "", et);
		epoch_++;
		batch_in_epoch_ = 0;
		epoch_loss_sum_ = 0;
		epoch_loss_n_ = 0;
		epoch_time_before_ = 0;
		epoch_t0_ = std::chrono::steady_clock::now();
		checkpoint_now(best);
	}
	prog.finish();
	if (ddp_) // replicas must hold the same weights: compare a checksum across ranks
		replica_spread_ = replica_weight_spread(*ddp_, *model_);
	if (hw_)
		hw_->stop();
	if (!main_rank())
		return 0; // files belong to rank 0
	write_file_atomic(join_path(checkpoints_dir(run_dir_), "FINAL"),
			  std::filesystem::path(last_ckpt_).filename().string() + "\n");
	write_metrics(epoch_ < epochs_ ? "stopped_time_budget" : "complete");
	fmt::print("done: {} epochs ({} steps), best accuracy {:.2f}% at epoch {}, {:.1f} s; run folder {}\n", epoch_, step_,
		   100 * std::max(best_acc_, 0.0), best_epoch_, elapsed(), run_dir_);
	return 0;
}

} // namespace

int train_image(TrainRequest req)
{
	ImageTrainer t(std::move(req));
	return t.run();
}

} // namespace knlp
