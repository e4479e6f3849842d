// How raw images become model inputs: the dataset's normalisation, the seeded order of an
// epoch, and batches built from image indices (resize or zero-pad to 32x32, normalise,
// random crop and flip), deterministic whatever thread builds them.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/images.h"

namespace knlp {

// How raw images become model inputs.
struct ImageTransform {
	int out_channels = 1; // the model's input channels (grayscale is replicated)
	int size = 32;	      // output height = width
	bool resize = false;  // bilinear resize (LeNet: 28 -> 32); otherwise zero-pad to size
	bool augment = false; // random crop (pad 4) + horizontal flip, training only
	std::array<float, 3> mean{}, std{};
};

// Normalisation constants of a dataset (per channel of the stored images).
void dataset_normalisation(const std::string &dataset, std::array<float, 3> &mean, std::array<float, 3> &std);

// Fill out [n, out_channels, size, size] (float) with images idx[0..n) of `set`. Augmentation
// for item idx[i] is drawn from a generator seeded by (aug_seed, idx[i]), so a batch depends
// only on its indices and the seed, never on thread timing.
void make_image_batch(const ImageSet &set, const int64_t *idx, int64_t n, const ImageTransform &t, uint64_t aug_seed,
		      float *out, int64_t *labels);

// Order of the training set in one epoch: a seeded permutation of 0 .. n-1.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

} // namespace knlp
