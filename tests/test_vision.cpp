// Image models and data: exact parameter counts, IDX / CIFAR readers and their errors, the
// batch transform (resize, padding, normalisation, augmentation), epoch order, and the real
// Fashion-MNIST files Debian ships.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <zlib.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "data/images.h"
#include "models/pool.h"
#include "models/vision.h"
#include "optim/optimizer.h"
#include "data/image_batch.h"

using namespace knlp;

static VisionConfig vc(const std::string &arch, int ch, int classes)
{
	VisionConfig c;
	c.arch = arch, c.in_channels = ch, c.num_classes = classes;
	return c;
}

TEST(Vision, ParameterCountsOfTheOriginal)
{
	EXPECT_EQ(VisionConfig::expected_params(vc("lenet5", 1, 10)), 61750);
	EXPECT_EQ(VisionConfig::expected_params(vc("resnet18", 3, 10)), 11173962);
	EXPECT_EQ(VisionConfig::expected_params(vc("resnet50", 3, 100)), 23712932);
	EXPECT_EQ(VisionConfig::expected_params(vc("resnet50", 3, 1000)), 25557032);
	for (auto c : {vc("lenet5", 1, 10), vc("lenet5", 3, 7), vc("resnet18", 3, 10), vc("resnet18", 1, 100),
		       vc("resnet50", 3, 100)}) {
		auto m = make_vision_model(c);
		EXPECT_EQ(count_parameters(*m), VisionConfig::expected_params(c)) << c.arch << " " << c.in_channels;
	}
}

TEST(Vision, ForwardShapesAndKaimingInit)
{
	torch::manual_seed(0);
	auto l = make_vision_model(vc("lenet5", 1, 10));
	EXPECT_EQ(l->forward(torch::randn({2, 1, 32, 32})).sizes(), (std::vector<int64_t>{2, 10}));
	auto r = make_vision_model(vc("resnet18", 3, 10));
	r->eval();
	EXPECT_EQ(r->forward(torch::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 10}));
	auto p = r->named_parameters();
	// Kaiming normal, fan_out, ReLU: std = sqrt(2 / (out * k * k)).
	double want = std::sqrt(2.0 / (128 * 9));
	EXPECT_NEAR(p["layer2.0.conv2.weight"].std().item<double>(), want, want * 0.03);
	EXPECT_TRUE(p["layer3.1.bn1.weight"].eq(1).all().item<bool>());
	EXPECT_TRUE(p["layer2.0.shortcut.1.bias"].eq(0).all().item<bool>());
	EXPECT_EQ(p["layer2.0.shortcut.0.weight"].sizes(), (std::vector<int64_t>{128, 64, 1, 1}));
	auto r50 = make_vision_model(vc("resnet50", 3, 100));
	r50->eval();
	EXPECT_EQ(r50->forward(torch::randn({1, 3, 64, 64})).sizes(), (std::vector<int64_t>{1, 100}));
	EXPECT_EQ(r50->named_parameters()["layer1.0.conv2.weight"].sizes(), (std::vector<int64_t>{64, 64, 3, 3}));
	EXPECT_THROW(make_vision_model(vc("vgg", 3, 10)), Error);
}

// Bit patterns, so that -0 against +0 and NaN payloads count as differences.
static bool same_bits(const torch::Tensor &a, const torch::Tensor &b)
{
	return a.sizes() == b.sizes() && a.contiguous().view(torch::kInt).equal(b.contiguous().view(torch::kInt));
}

TEST(Vision, FusedReluMaxPoolIsLibtorchsBitForBit)
{
	torch::manual_seed(3);
	// Few distinct values: ties inside windows everywhere, at zero and above it, with -0,
	// negative values, NaN, and odd sizes whose last row or column no window covers.
	for (auto shape :
	     std::vector<std::vector<int64_t>>{{4, 6, 28, 28}, {3, 16, 10, 10}, {2, 3, 7, 9}, {1, 1, 2, 2}}) {
		auto x = torch::randint(-3, 4, shape).to(torch::kFloat) * 0.5;
		auto flat = x.view(-1);
		flat.index_put_({torch::randint(0, flat.numel(), {flat.numel() / 7})}, -0.0);
		flat.index_put_({torch::randint(0, flat.numel(), {std::max<int64_t>(1, flat.numel() / 50)})}, NAN);
		auto g = torch::randn({shape[0], shape[1], shape[2] / 2, shape[3] / 2});
		auto a = x.clone().requires_grad_(), b = x.clone().requires_grad_();
		auto ya = relu_max_pool2x2(a), yb = torch::max_pool2d(b.relu(), 2);
		ASSERT_TRUE(same_bits(ya, yb)) << shape;
		ya.backward(g);
		yb.backward(g);
		EXPECT_TRUE(same_bits(a.grad(), b.grad())) << shape;
		EXPECT_GT(b.grad().ne(0).sum().item<int64_t>(), 0);
		torch::NoGradGuard ng; // the inference path writes no winner codes
		EXPECT_TRUE(same_bits(relu_max_pool2x2(x), yb)) << shape;
	}
	// Other layouts take libtorch's path, with the same result.
	auto x = torch::randn({2, 4, 6, 6});
	EXPECT_TRUE(same_bits(relu_max_pool2x2(x.contiguous(at::MemoryFormat::ChannelsLast)),
			      torch::max_pool2d(x.relu(), 2)));
}

TEST(Vision, LeNetTrainsTheSameWithTheFusedPool)
{
	// Three AdamW steps from the same seed with either pooling: identical losses and weights.
	std::vector<std::vector<float>> losses(2);
	std::vector<std::vector<torch::Tensor>> weights(2);
	for (int fused = 0; fused < 2; fused++) {
		auto c = vc("lenet5", 1, 10);
		c.fused_pool = fused;
		torch::manual_seed(11);
		auto m = make_vision_model(c);
		auto x = torch::randn({64, 1, 32, 32});
		auto y = torch::randint(0, 10, {64});
		std::vector<std::pair<std::string, torch::Tensor>> named;
		for (auto &p : m->named_parameters())
			named.emplace_back(p.key(), p.value());
		Optimizer opt(named, OptimizerOptions{});
		for (int s = 0; s < 3; s++) {
			auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
			loss.backward();
			opt.step(1e-2, 1.0);
			for (auto &st : opt.state())
				st.param.mutable_grad().reset();
			losses[size_t(fused)].push_back(loss.item<float>());
		}
		for (auto &p : m->parameters())
			weights[size_t(fused)].push_back(p.detach().clone());
	}
	EXPECT_EQ(losses[0], losses[1]);
	EXPECT_LT(losses[1][2], losses[1][0]);
	for (size_t i = 0; i < weights[0].size(); i++)
		EXPECT_TRUE(same_bits(weights[0][i], weights[1][i])) << i;
}

static std::string tmp(const std::string &name)
{
	return ::testing::TempDir() + "knlp_vision_" + name;
}

static void write_bytes(const std::string &path, const std::string &data, bool gz)
{
	if (gz) {
		gzFile f = gzopen(path.c_str(), "wb");
		gzwrite(f, data.data(), unsigned(data.size()));
		gzclose(f);
	} else {
		std::ofstream(path, std::ios::binary) << data;
	}
}

static std::string be(uint32_t v)
{
	std::string s(4, '\0');
	for (int i = 0; i < 4; i++)
		s[size_t(i)] = char((v >> (24 - 8 * i)) & 0xff);
	return s;
}

static std::string idx_images(uint32_t magic, uint32_t n, uint32_t h, uint32_t w, size_t pixels)
{
	std::string s = be(magic) + be(n) + be(h) + be(w);
	for (size_t i = 0; i < pixels; i++)
		s += char(i % 251);
	return s;
}

static std::string errof(const std::function<void()> &f)
{
	try {
		f();
	} catch (const Error &e) {
		return e.what();
	}
	return "no error";
}

TEST(Vision, IdxReaderPlainAndGzipWithClearErrors)
{
	for (bool gz : {false, true}) {
		std::string im = tmp(gz ? "im.gz" : "im"), lb = tmp(gz ? "lb.gz" : "lb");
		write_bytes(im, idx_images(2051, 3, 2, 2, 12), gz);
		write_bytes(lb, be(2049) + be(3) + std::string("\x01\x00\x09", 3), gz);
		auto s = read_idx(im, lb);
		EXPECT_EQ(s.n, 3);
		EXPECT_EQ(s.height, 2);
		EXPECT_EQ(s.labels, (std::vector<uint8_t>{1, 0, 9}));
		EXPECT_EQ(s.image(2)[3], 11);
	}
	std::string im = tmp("bad_im"), lb = tmp("bad_lb");
	write_bytes(lb, be(2049) + be(3) + std::string("\x01\x00\x02", 3), false);
	write_bytes(im, idx_images(2049, 3, 2, 2, 12), false);
	EXPECT_EQ(errof([&] { read_idx(im, lb); }), im + ": wrong magic 2049 (IDX images have 2051)");
	write_bytes(im, idx_images(2051, 3, 2, 2, 11), false);
	EXPECT_EQ(errof([&] { read_idx(im, lb); }),
		  im + ": truncated: 3 images of 2x2 need 12 bytes of pixels, the file has 11");
	write_bytes(im, idx_images(2051, 4, 2, 2, 16), false);
	EXPECT_EQ(errof([&] { read_idx(im, lb); }), lb + ": 3 labels but " + im + " has 4 images");
	write_bytes(im, idx_images(2051, 3, 2, 2, 12), false);
	EXPECT_EQ(errof([&] { read_idx(im, lb, 2); }), lb + ": label 2 of item 2 is outside the 2 classes");
	EXPECT_EQ(errof([&] { read_idx(tmp("nothing"), lb); }), tmp("nothing") + ": file not found");
}

TEST(Vision, CifarRecordsAndTruncation)
{
	std::string rec10(1 + 3072, '\x07'), rec100(2 + 3072, '\x05');
	rec10[0] = 3;
	rec100[0] = 1, rec100[1] = 42;
	write_bytes(tmp("c10.bin"), rec10 + rec10, false);
	auto s = read_cifar({tmp("c10.bin")}, false);
	EXPECT_EQ(s.n, 2);
	EXPECT_EQ(s.channels, 3);
	EXPECT_EQ(s.labels[1], 3);
	EXPECT_EQ(s.pixels.size(), 2u * 3072u);
	write_bytes(tmp("c100.bin"), rec100, false);
	auto s100 = read_cifar({tmp("c100.bin")}, true);
	EXPECT_EQ(s100.labels[0], 42); // the fine label
	EXPECT_EQ(s100.num_classes, 100);
	write_bytes(tmp("c10t.bin"), rec10 + rec10.substr(0, 100), false);
	EXPECT_EQ(errof([&] { read_cifar({tmp("c10t.bin")}, false); }),
		  tmp("c10t.bin") +
			  ": 3173 bytes is not a whole number of 3073-byte CIFAR-10 records (truncated record?)");
	std::string msg = errof([&] { load_image_dataset("cifar10", tmp("nodir"), true); });
	EXPECT_NE(msg.find("data_batch_1.bin not found"), std::string::npos) << msg;
	msg = errof([&] { load_image_dataset("fashion-mnist", tmp("nodir"), true); });
	EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

// Netpbm by hand: an ASCII grey image with maxval 15 (values scaled to 0..255, rounded), a
// binary colour image made channel-planar, comments in the header, and the errors.
TEST(Vision, NetpbmImagesAndTheirErrors)
{
	auto g = parse_pnm("P2\n# two by two\n2 2\n15\n0 15\n7 8\n", "g.pgm");
	EXPECT_EQ(g.channels, 1);
	EXPECT_EQ(g.width, 2);
	// 7 * 255 / 15 = 119, 8 * 255 / 15 = 136 exactly.
	EXPECT_EQ(g.pixels, (std::vector<uint8_t>{0, 255, 119, 136}));
	auto c = parse_pnm(std::string("P6 2 1 255\n") + std::string("\x01\x02\x03\x04\x05\x06", 6), "c.ppm");
	EXPECT_EQ(c.channels, 3);
	EXPECT_EQ(c.pixels, (std::vector<uint8_t>{1, 4, 2, 5, 3, 6})); // R plane, G plane, B plane
	auto odd = parse_pnm("P5 1 1 2\n\x01", "odd.pgm");
	EXPECT_EQ(odd.pixels, (std::vector<uint8_t>{128})); // 1 * 255 / 2 = 127.5, rounded half up
	EXPECT_EQ(errof([] { parse_pnm("P4 1 1\n\x01", "b.pbm"); }),
		  "b.pbm: not a Netpbm image (P2, P3, P5 or P6 expected)");
	EXPECT_EQ(errof([] { parse_pnm("P5 2 2 255\n\x01\x02\x03", "t.pgm"); }),
		  "t.pgm: truncated: 2x2x1 pixels need 4 bytes, the file has 3");
	EXPECT_EQ(errof([] { parse_pnm("P5 2 2 65535\n", "w.pgm"); }),
		  "w.pgm: maxval 65535 (8-bit images with maxval 1..255 are read; 16-bit are not)");
	EXPECT_EQ(errof([] { parse_pnm("P2 2 x", "h.pgm"); }), "h.pgm: malformed Netpbm header (no height)");
	EXPECT_EQ(errof([] { parse_pnm("P2 1 1 9 10", "v.pgm"); }), "v.pgm: pixel value 10 exceeds maxval 9");
}

// A folder dataset: classes in byte order, test labels by the training classes, and the
// errors (a test class the training split lacks, mixed sizes, an empty split).
TEST(Vision, ImageFolderDataset)
{
	namespace fs = std::filesystem;
	std::string root = tmp("folder");
	remove_tree(root);
	auto put = [&](const std::string &rel, const std::string &data) {
		fs::create_directories(fs::path(join_path(root, rel)).parent_path());
		write_bytes(join_path(root, rel), data, false);
	};
	auto pgm = [](int v) { return std::string("P5 2 2 255\n") + std::string(4, char(v)); };
	put("train/zebra/a.pgm", pgm(200));
	put("train/ant/a.pgm", pgm(10));
	put("train/ant/b.pgm", pgm(20));
	put("train/ant/notes.txt", "ignored");
	put("test/zebra/x.pgm", pgm(201));
	auto tr = load_image_dataset("folder", root, true);
	EXPECT_EQ(tr.n, 3);
	EXPECT_EQ(tr.num_classes, 2);
	EXPECT_EQ(tr.labels, (std::vector<uint8_t>{0, 0, 1})); // ant = 0, zebra = 1
	EXPECT_EQ(tr.image(1)[0], 20);
	auto te = load_image_dataset("folder", root, false);
	EXPECT_EQ(te.n, 1);
	EXPECT_EQ(te.labels, (std::vector<uint8_t>{1}));
	float mean[3], sd[3];
	pixel_stats(tr, mean, sd);
	EXPECT_NEAR(mean[0], (10 + 20 + 200) / 3.0 / 255.0, 1e-6);
	EXPECT_EQ(mean[2], mean[0]); // grey images replicate their one channel
	put("test/bee/y.pgm", pgm(1));
	EXPECT_EQ(errof([&] { load_image_dataset("folder", root, false); }),
		  join_path(root, "test/bee") + ": class 'bee' is not among the training classes");
	remove_tree(join_path(root, "test/bee"));
	put("train/zebra/b.pgm", "P5 3 2 255\n" + std::string(6, '\x01'));
	EXPECT_EQ(errof([&] { load_image_dataset("folder", root, true); }),
		  join_path(root, "train/zebra/b.pgm") +
			  ": 1x2x3 but the images before it are 1x2x2 (one size and channel count per dataset)");
	std::string msg = errof([&] { load_image_dataset("folder", tmp("nofolder"), true); });
	EXPECT_NE(msg.find("train/<class>/"), std::string::npos) << msg;
	remove_tree(root);
}

TEST(Vision, BatchTransform)
{
	ImageSet s;
	s.n = 2, s.channels = 1, s.height = 28, s.width = 28;
	s.pixels.assign(2 * 28 * 28, 255);
	std::fill(s.pixels.begin() + 28 * 28, s.pixels.end(), 0);
	s.pixels[28 * 28 + 5 * 28 + 7] = 255; // one bright pixel in image 1
	s.labels = {4, 9};
	ImageTransform t;
	t.out_channels = 1, t.size = 32, t.resize = true;
	t.mean = {0.5f, 0.5f, 0.5f}, t.std = {0.25f, 0.25f, 0.25f};
	int64_t idx[2] = {0, 1}, labels[2];
	std::vector<float> out(2 * 32 * 32);
	make_image_batch(s, idx, 2, t, 0, out.data(), labels);
	EXPECT_EQ(labels[1], 9);
	// A constant image stays constant under bilinear resizing: (1 - 0.5) / 0.25 = 2.
	for (int i = 0; i < 32 * 32; i++)
		ASSERT_NEAR(out[size_t(i)], 2.0f, 1e-5);
	// Padding instead (ResNet on grayscale): 2 zero pixels each side, replicated to 3 channels.
	t.resize = false, t.out_channels = 3;
	std::vector<float> o3(2 * 3 * 32 * 32);
	make_image_batch(s, idx, 2, t, 0, o3.data(), labels);
	EXPECT_NEAR(o3[0], -2.0f, 1e-6);			 // (0 - 0.5) / 0.25
	EXPECT_NEAR(o3[2 * 32 + 2], 2.0f, 1e-6);		 // first real pixel
	const float *img1c2 = o3.data() + (1 * 3 + 2) * 32 * 32; // image 1, channel 2
	EXPECT_NEAR(img1c2[(5 + 2) * 32 + 7 + 2], 2.0f, 1e-6);
	EXPECT_NEAR(img1c2[(5 + 2) * 32 + 8 + 2], -2.0f, 1e-6);
	// Augmentation: a function of (seed, image index) only.
	t.augment = true;
	std::vector<float> a(2 * 3 * 32 * 32), b(2 * 3 * 32 * 32), c(3 * 32 * 32);
	make_image_batch(s, idx, 2, t, 77, a.data(), labels);
	make_image_batch(s, idx, 2, t, 77, b.data(), labels);
	EXPECT_EQ(a, b);
	int64_t one = 1;
	make_image_batch(s, &one, 1, t, 77, c.data(), labels);
	EXPECT_TRUE(std::equal(c.begin(), c.end(), a.begin() + 3 * 32 * 32));
	make_image_batch(s, idx, 2, t, 78, b.data(), labels);
	EXPECT_NE(a, b);
}

TEST(Vision, EpochOrderIsASeededPermutation)
{
	auto a = epoch_order(1000, 5, 0), b = epoch_order(1000, 5, 0), c = epoch_order(1000, 5, 1);
	EXPECT_EQ(a, b);
	EXPECT_NE(a, c);
	auto s = a;
	std::sort(s.begin(), s.end());
	for (int64_t i = 0; i < 1000; i++)
		ASSERT_EQ(s[size_t(i)], i);
}

TEST(Vision, DebianFashionMnist)
{
	if (!file_exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
		GTEST_SKIP() << "dataset-fashion-mnist is not installed";
	auto tr = load_image_dataset("fashion-mnist", "", true);
	auto te = load_image_dataset("fashion-mnist", "", false);
	EXPECT_EQ(tr.n, 60000);
	EXPECT_EQ(te.n, 10000);
	EXPECT_EQ(tr.height, 28);
	std::vector<int> hist(10, 0);
	for (auto l : tr.labels)
		hist[l]++;
	for (int k = 0; k < 10; k++)
		EXPECT_EQ(hist[size_t(k)], 6000) << k; // balanced: 6,000 per class
	double mean = 0;
	for (auto p : tr.pixels)
		mean += p;
	mean /= 255.0 * double(tr.pixels.size());
	EXPECT_NEAR(mean, 0.2860, 0.0005); // the normalisation constant
}
