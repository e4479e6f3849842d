// Image datasets in memory as uint8 pixels: IDX (MNIST, Fashion-MNIST; plain or gzip) and
// the CIFAR-10/100 binary format. No libtorch here; the image trainer converts batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/settings.h"

namespace knlp {

struct ImageSet {
	std::string name; // e.g. "fashion-mnist train"
	int64_t n = 0;
	int channels = 1, height = 28, width = 28;
	int num_classes = 10;
	std::vector<uint8_t> pixels; // n x channels x height x width, channel-planar
	std::vector<uint8_t> labels; // n
	const uint8_t *image(int64_t i) const { return pixels.data() + i * channels * height * width; }
};

// Whole file, gunzipped when it is gzip (plain files read as they are).
std::string read_maybe_gzip(const std::string &path);

// IDX images (magic 2051, u8 N x rows x cols) and labels (magic 2049, u8 N). Errors name the
// file: wrong magic, truncated data, counts that disagree, labels >= num_classes.
ImageSet read_idx(const std::string &images_path, const std::string &labels_path, int num_classes = 10);

// CIFAR binary records: CIFAR-10 [label, 3072 pixels], CIFAR-100 [coarse, fine, 3072 pixels]
// (the fine label is used). A file whose size is not a whole number of records is an error.
ImageSet read_cifar(const std::vector<std::string> &files, bool cifar100);

// One Netpbm image (P2/P5 grey, P3/P6 colour; maxval 1..255, scaled to 0..255): channel-
// planar pixels. Errors name `where`: unknown magic, a malformed or truncated header or
// pixel block, a 16-bit maxval.
struct Pnm {
	int channels = 1, height = 0, width = 0;
	std::vector<uint8_t> pixels;
};
Pnm parse_pnm(const std::string &data, const std::string &where);

// A folder of images, one sub-folder per class: ROOT/train/<class>/*.pgm|ppm|pnm and
// ROOT/test/<class>/... Classes are the train folder's sub-folder names in byte order (at
// most 256); a test class the train split lacks, images of differing size or channels, an
// empty split: errors naming the file or folder. `class_names` gets the classes in label order.
std::vector<std::string> class_folders(const std::string &split_dir); // sorted sub-folder names
ImageSet read_image_folder(const std::string &split_dir, std::vector<std::string> *class_names,
			   const std::vector<std::string> *train_classes = nullptr);

// Per-channel mean and standard deviation of the pixels (as fractions of 255).
void pixel_stats(const ImageSet &s, float mean[3], float std[3]);

// Standard layouts: Fashion-MNIST / MNIST folders holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz];
// CIFAR-10 (data_batch_1..5.bin, test_batch.bin) and CIFAR-100 (train.bin, test.bin).
// A "folder" dataset is ROOT/{train,test}/<class>/ of Netpbm images (read_image_folder).
// `dataset` is fashion-mnist, mnist, cifar10, cifar100 or folder. An empty dir means the default:
// /usr/share/datasets/fashion-mnist for Fashion-MNIST (Debian package dataset-fashion-mnist).
// The loader name of a CONFIG_IMAGE_DATASET_* choice: fashion-mnist mnist cifar10 cifar100 folder.
std::string image_dataset_name(choice::ImageDataset d);

ImageSet load_image_dataset(const std::string &dataset, const std::string &dir, bool train);
std::string default_image_dir(const std::string &dataset);

} // namespace knlp
