#include "data/images.h"

#include <zlib.h>

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
		fail("{}: truncated: {} images of {}x{} need {} bytes of pixels, the file has {}", images_path, s.n, s.height,
		     s.width, want, im.size() - 16);
	int64_t nl = be32(lb, 4);
	if (nl != s.n)
		fail("{}: {} labels but {} has {} images", labels_path, nl, images_path, s.n);
	if (lb.size() - 8 < uint64_t(nl))
		fail("{}: truncated: {} labels need {} bytes, the file has {}", labels_path, nl, nl, lb.size() - 8);
	s.pixels.assign(im.begin() + 16, im.begin() + 16 + long(want));
	s.labels.assign(lb.begin() + 8, lb.begin() + 8 + nl);
	for (int64_t i = 0; i < nl; i++)
		if (s.labels[size_t(i)] >= num_classes)
			fail("{}: label {} of item {} is outside the {} classes", labels_path, int(s.labels[size_t(i)]), i,
			     num_classes);
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
			fail("{}: {} bytes is not a whole number of {}-byte CIFAR-{} records (truncated record?)", f, d.size(),
			     rec, cifar100 ? 100 : 10);
		for (size_t off = 0; off < d.size(); off += rec) {
			uint8_t label = uint8_t(d[off + head - 1]);
			if (label >= s.num_classes)
				fail("{}: record {} has label {}, outside the {} classes", f, off / rec, int(label), s.num_classes);
			s.labels.push_back(label);
			s.pixels.insert(s.pixels.end(), d.begin() + long(off + head), d.begin() + long(off + rec));
		}
	}
	s.n = static_cast<int64_t>(s.labels.size());
	return s;
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
			fail("{}: {}[.gz] not found (MNIST IDX files: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
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
				fail("{}: {} not found; bring the CIFAR-{} binary version ({}) or set CONFIG_IMAGE_DATA_DIR", dir, n,
				     c100 ? 100 : 10, c100 ? "train.bin, test.bin" : "data_batch_1..5.bin, test_batch.bin");
			files.push_back(p);
		}
		ImageSet s = read_cifar(files, c100);
		s.name = dataset + (train ? " train" : " test");
		return s;
	}
	fail("image data: unknown dataset '{}' (fashion-mnist, mnist, cifar10, cifar100)", dataset);
}

} // namespace knlp
