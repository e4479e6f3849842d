// The image trainer: `knlp train` on a LeNet-5 / ResNet configuration. Epochs over an image
// dataset with a background loader, test loss and accuracy each epoch, the optimizer and
// pruning engine of the LM trainer, checkpoints with exact resume (also mid-epoch, after a
// time budget or a kill), training_metrics.json in the original's CNN schema.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/images.h"
#include "train/lm_trainer.h"

namespace knlp {

// True when the configuration selects an image model.
bool is_image_config(const Config &cfg);

int train_image(TrainRequest req);

// How raw images become model inputs.
struct ImageTransform {
	int out_channels = 1;       // the model's input channels (grayscale is replicated)
	int size = 32;              // output height = width
	bool resize = false;        // bilinear resize (LeNet: 28 -> 32); otherwise zero-pad to size
	bool augment = false;       // random crop (pad 4) + horizontal flip, training only
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
