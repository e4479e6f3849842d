#include "data/images.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

std::string read_maybe_gzip(const std::string &path)
{
	if (!file_exists(path))
		fail("{}: file not found", path);
	gzFile f = gzopen(path.c_str(), "rb");
	if (!f)
		fail("{}: cannot open", path);
	std::string out;
	char buf[1 << 16];
	for (;;) {
		int n = gzread(f, buf, sizeof buf);
		if (n < 0) {
			int err = 0;
			std::string msg = gzerror(f, &err);
			gzclose(f);
			fail("{}: corrupt or truncated gzip data ({})", path, msg);
		}
		if (n == 0)
			break;
		out.append(buf, size_t(n));
	}
	gzclose(f);
	return out;
}

namespace {

uint32_t be32(const std::string &s, size_t at)
{
	auto b = [&](size_t i) { return uint32_t(uint8_t(s[at + i])); };
	return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

} // namespace

ImageSet read_idx(const std::string &images_path, const std::string &labels_path, int num_classes)
{
	std::string im = read_maybe_gzip(images_path), lb = read_maybe_gzip(labels_path);
	if (im.size() < 16)
		fail("{}: {} bytes, too short for an IDX image header (16 bytes)", images_path, im.size());
	if (be32(im, 0) != 2051)
		fail("{}: wrong magic {} (IDX images have 2051)", images_path, be32(im, 0));
	if (lb.size() < 8)
		fail("{}: {} bytes, too short for an IDX label header (8 bytes)", labels_path, lb.size());
	if (be32(lb, 0) != 2049)
		fail("{}: wrong magic {} (IDX labels have 2049)", labels_path, be32(lb, 0));
	ImageSet s;
	s.n = be32(im, 4);
	s.height = static_cast<int>(be32(im, 8));
	s.width = static_cast<int>(be32(im, 12));
	s.channels = 1;
	s.num_classes = num_classes;
	if (s.height < 1 || s.width < 1 || s.height > 4096 || s.width > 4096)
		fail("{}: implausible image size {}x{}", images_path, s.height, s.width);
	uint64_t want = uint64_t(s.n) * uint64_t(s.height) * uint64_t(s.width);
	if (im.size() - 16 < want)
		fail("{}: truncated: {} images of {}x{} need {} bytes of pixels, the file has {}", images_path, s.n,
		     s.height, s.width, want, im.size() - 16);
	int64_t nl = be32(lb, 4);
	if (nl != s.n)
		fail("{}: {} labels but {} has {} images", labels_path, nl, images_path, s.n);
	if (lb.size() - 8 < uint64_t(nl))
		fail("{}: truncated: {} labels need {} bytes, the file has {}", labels_path, nl, nl, lb.size() - 8);
	s.pixels.assign(im.begin() + 16, im.begin() + 16 + long(want));
	s.labels.assign(lb.begin() + 8, lb.begin() + 8 + nl);
	for (int64_t i = 0; i < nl; i++)
		if (s.labels[size_t(i)] >= num_classes)
			fail("{}: label {} of item {} is outside the {} classes", labels_path, int(s.labels[size_t(i)]),
			     i, num_classes);
	return s;
}

ImageSet read_cifar(const std::vector<std::string> &files, bool cifar100)
{
	ImageSet s;
	s.channels = 3, s.height = 32, s.width = 32;
	s.num_classes = cifar100 ? 100 : 10;
	const size_t head = cifar100 ? 2 : 1, rec = head + 3072;
	for (const auto &f : files) {
		std::string d = read_maybe_gzip(f);
		if (d.empty() || d.size() % rec != 0)
			fail("{}: {} bytes is not a whole number of {}-byte CIFAR-{} records (truncated record?)", f,
			     d.size(), rec, cifar100 ? 100 : 10);
		for (size_t off = 0; off < d.size(); off += rec) {
			uint8_t label = uint8_t(d[off + head - 1]);
			if (label >= s.num_classes)
				fail("{}: record {} has label {}, outside the {} classes", f, off / rec, int(label),
				     s.num_classes);
			s.labels.push_back(label);
			s.pixels.insert(s.pixels.end(), d.begin() + long(off + head), d.begin() + long(off + rec));
		}
	}
	s.n = static_cast<int64_t>(s.labels.size());
	return s;
}

Pnm parse_pnm(const std::string &d, const std::string &where)
{
	if (d.size() < 2 || d[0] != 'P' || d[1] < '2' || d[1] > '6' || d[1] == '4')
		fail("{}: not a Netpbm image (P2, P3, P5 or P6 expected)", where);
	const char kind = d[1];
	const bool ascii = kind == '2' || kind == '3';
	Pnm p;
	p.channels = kind == '3' || kind == '6' ? 3 : 1;
	size_t at = 2;
	// Header numbers: whitespace and #-comments between them.
	auto number = [&](const char *what) -> int64_t {
		for (;;) {
			while (at < d.size() && std::isspace(static_cast<unsigned char>(d[at])))
				at++;
			if (at < d.size() && d[at] == '#') {
				while (at < d.size() && d[at] != '\n')
					at++;
				continue;
			}
			break;
		}
		if (at >= d.size() || !std::isdigit(static_cast<unsigned char>(d[at])))
			fail("{}: malformed Netpbm header (no {})", where, what);
		int64_t v = 0;
		while (at < d.size() && std::isdigit(static_cast<unsigned char>(d[at]))) {
			v = v * 10 + (d[at++] - '0');
			if (v > 1000000)
				fail("{}: Netpbm {} {} is implausibly large", where, what, v);
		}
		return v;
	};
	p.width = static_cast<int>(number("width"));
	p.height = static_cast<int>(number("height"));
	const int64_t maxval = number("maxval");
	if (p.width < 1 || p.height < 1 || p.width > 4096 || p.height > 4096)
		fail("{}: implausible image size {}x{}", where, p.width, p.height);
	if (maxval < 1 || maxval > 255)
		fail("{}: maxval {} (8-bit images with maxval 1..255 are read; 16-bit are not)", where, maxval);
	const size_t count = size_t(p.width) * size_t(p.height) * size_t(p.channels);
	std::vector<uint8_t> interleaved(count);
	if (ascii) {
		for (size_t i = 0; i < count; i++) {
			int64_t v = number("pixel value");
			if (v > maxval)
				fail("{}: pixel value {} exceeds maxval {}", where, v, maxval);
			interleaved[i] = uint8_t(v);
		}
	} else {
		if (at >= d.size() || !std::isspace(static_cast<unsigned char>(d[at])))
			fail("{}: malformed Netpbm header (no whitespace before the pixels)", where);
		at++;
		if (d.size() - at < count)
			fail("{}: truncated: {}x{}x{} pixels need {} bytes, the file has {}", where, p.width, p.height,
			     p.channels, count, d.size() - at);
		for (size_t i = 0; i < count; i++) {
			uint8_t v = uint8_t(d[at + i]);
			if (v > maxval)
				fail("{}: pixel value {} exceeds maxval {}", where, int(v), maxval);
			interleaved[i] = v;
		}
	}
	// Scale to 0..255 and make the channels planar.
	p.pixels.resize(count);
	const size_t plane = size_t(p.width) * size_t(p.height);
	for (size_t i = 0; i < plane; i++)
		for (int c = 0; c < p.channels; c++) {
			unsigned v = interleaved[i * size_t(p.channels) + size_t(c)];
			p.pixels[size_t(c) * plane + i] =
				uint8_t(maxval == 255 ? v : (v * 255 + unsigned(maxval) / 2) / unsigned(maxval));
		}
	return p;
}

std::vector<std::string> class_folders(const std::string &split_dir)
{
	namespace fs = std::filesystem;
	std::error_code ec;
	if (!fs::is_directory(split_dir, ec))
		fail("{}: folder not found (an image folder dataset holds train/<class>/ and test/<class>/ folders of "
		     ".pgm/.ppm images)",
		     split_dir);
	std::vector<std::string> classes;
	for (const auto &e : fs::directory_iterator(split_dir, ec))
		if (e.is_directory())
			classes.push_back(e.path().filename().string());
	std::sort(classes.begin(), classes.end());
	if (classes.empty())
		fail("{}: no class folders", split_dir);
	return classes;
}

ImageSet read_image_folder(const std::string &split_dir, std::vector<std::string> *class_names,
			   const std::vector<std::string> *train_classes)
{
	namespace fs = std::filesystem;
	std::error_code ec;
	const std::vector<std::string> classes = class_folders(split_dir);
	const std::vector<std::string> &label_of = train_classes ? *train_classes : classes;
	if (label_of.size() > 256)
		fail("{}: {} classes; at most 256 are supported", split_dir, label_of.size());
	ImageSet s;
	s.num_classes = static_cast<int>(label_of.size());
	bool first = true;
	for (const auto &c : classes) {
		auto it = std::find(label_of.begin(), label_of.end(), c);
		if (it == label_of.end())
			fail("{}: class '{}' is not among the training classes", join_path(split_dir, c), c);
		const uint8_t label = uint8_t(it - label_of.begin());
		std::vector<std::string> files;
		for (const auto &e : fs::directory_iterator(join_path(split_dir, c), ec)) {
			std::string ext = e.path().extension().string();
			if (e.is_regular_file() && (ext == ".pgm" || ext == ".ppm" || ext == ".pnm"))
				files.push_back(e.path().string());
		}
		std::sort(files.begin(), files.end());
		for (const auto &f : files) {
			Pnm p = parse_pnm(read_file(f), f);
			if (first) {
				s.channels = p.channels, s.height = p.height, s.width = p.width;
				first = false;
			} else if (p.channels != s.channels || p.height != s.height || p.width != s.width) {
				fail("{}: {}x{}x{} but the images before it are {}x{}x{} (one size and channel count "
				     "per dataset)",
				     f, p.channels, p.height, p.width, s.channels, s.height, s.width);
			}
			s.pixels.insert(s.pixels.end(), p.pixels.begin(), p.pixels.end());
			s.labels.push_back(label);
		}
	}
	s.n = static_cast<int64_t>(s.labels.size());
	if (s.n == 0)
		fail("{}: no .pgm/.ppm/.pnm images in its class folders", split_dir);
	if (class_names)
		*class_names = label_of;
	return s;
}

void pixel_stats(const ImageSet &s, float mean[3], float std[3])
{
	const size_t plane = size_t(s.height) * size_t(s.width);
	for (int c = 0; c < 3; c++) {
		const int cs = s.channels == 1 ? 0 : c;
		double sum = 0, sq = 0;
		for (int64_t i = 0; i < s.n; i++) {
			const uint8_t *px = s.image(i) + size_t(cs) * plane;
			for (size_t k = 0; k < plane; k++) {
				double v = px[k] / 255.0;
				sum += v, sq += v * v;
			}
		}
		const double n = double(s.n) * double(plane);
		const double m = n > 0 ? sum / n : 0.0;
		mean[c] = float(m);
		std[c] = float(std::sqrt(std::max(sq / std::max(n, 1.0) - m * m, 1e-12)));
		if (std[c] < 1e-3f)
			std[c] = 1.0f; // a constant channel: centre it only
	}
}

std::string default_image_dir(const std::string &dataset)
{
	if (dataset == "fashion-mnist")
		return "/usr/share/datasets/fashion-mnist";
	return "datasets/" + dataset;
}

ImageSet load_image_dataset(const std::string &dataset, const std::string &dir_in, bool train)
{
	std::string dir = dir_in.empty() ? default_image_dir(dataset) : dir_in;
	if (dataset == "fashion-mnist" || dataset == "mnist") {
		std::string pre = train ? "train" : "t10k";
		auto find = [&](const std::string &base) {
			for (const char *ext : {".gz", ""})
				if (file_exists(join_path(dir, base + ext)))
					return join_path(dir, base + ext);
			if (dataset == "fashion-mnist")
				fail("{}: {}[.gz] not found; install the Debian package dataset-fashion-mnist "
				     "(apt-get install dataset-fashion-mnist) or set CONFIG_IMAGE_DATA_DIR",
				     dir, base);
			fail("{}: {}[.gz] not found (MNIST IDX files: train-images-idx3-ubyte, "
			     "train-labels-idx1-ubyte, "
			     "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
			     dir, base);
		};
		ImageSet s = read_idx(find(pre + "-images-idx3-ubyte"), find(pre + "-labels-idx1-ubyte"));
		s.name = dataset + (train ? " train" : " test");
		return s;
	}
	if (dataset == "cifar10" || dataset == "cifar100") {
		bool c100 = dataset == "cifar100";
		std::vector<std::string> names;
		if (c100)
			names.push_back(train ? "train.bin" : "test.bin");
		else if (train)
			for (int i = 1; i <= 5; i++)
				names.push_back("data_batch_" + std::to_string(i) + ".bin");
		else
			names.push_back("test_batch.bin");
		std::vector<std::string> files;
		for (const auto &n : names) {
			std::string p = join_path(dir, n);
			if (!file_exists(p))
				fail("{}: {} not found; bring the CIFAR-{} binary version ({}) or set "
				     "CONFIG_IMAGE_DATA_DIR",
				     dir, n, c100 ? 100 : 10,
				     c100 ? "train.bin, test.bin" : "data_batch_1..5.bin, test_batch.bin");
			files.push_back(p);
		}
		ImageSet s = read_cifar(files, c100);
		s.name = dataset + (train ? " train" : " test");
		return s;
	}
	if (dataset == "folder") {
		const std::string td = join_path(dir, "train");
		if (train) {
			ImageSet tr = read_image_folder(td, nullptr);
			tr.name = "image folder " + td;
			return tr;
		}
		const std::vector<std::string> classes = class_folders(td);
		ImageSet te = read_image_folder(join_path(dir, "test"), nullptr, &classes);
		te.name = "image folder " + join_path(dir, "test");
		return te;
	}
	fail("image data: unknown dataset '{}' (fashion-mnist, mnist, cifar10, cifar100, folder)", dataset);
}

std::string image_dataset_name(choice::ImageDataset d)
{
	std::string n = name_of(d);
	std::replace(n.begin(), n.end(), '_', '-');
	return n;
}

} // namespace knlp
