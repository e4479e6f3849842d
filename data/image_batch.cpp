// Image batches: normalisation constants, the epoch's order, and raw images turned into
// model inputs (resize or pad, normalise, augment).
#include "data/image_batch.h"

#include <algorithm>
#include <numeric>

#include "core/rng.h"

namespace knlp {

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
						float v = (1 - wy) * ((1 - wx) * src[y0 * W + x0] +
								      wx * src[y0 * W + x1]) +
							  wy * ((1 - wx) * src[y1 * W + x0] + wx * src[y1 * W + x1]);
						plane[size_t(y) * S + x] = v / 255.0f;
					}
				}
			} else {
				const int oy = (S - H) / 2, ox = (S - W) / 2;
				for (int y = 0; y < S; y++)
					for (int x = 0; x < S; x++) {
						int sy = y - oy, sx = x - ox;
						plane[size_t(y) * S + x] = sy >= 0 && sy < H && sx >= 0 && sx < W
										   ? src[sy * W + sx] / 255.0f
										   : 0.0f;
					}
			}
			// Normalise; crop (zero padding outside) and flip.
			float *dst = out + ((i * C + c) * S) * S;
			const float m = t.mean[size_t(cs)], sd = t.std[size_t(cs)];
			for (int y = 0; y < S; y++)
				for (int x = 0; x < S; x++) {
					int sy = y + dy, sx = (flip ? S - 1 - x : x) + dx;
					float v = sy >= 0 && sy < S && sx >= 0 && sx < S ? plane[size_t(sy) * S + sx]
											 : 0.0f;
					dst[y * S + x] = (v - m) / sd;
				}
		}
	}
}

} // namespace knlp
