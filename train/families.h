// Constructors of the model families the training loop knows (train/families.cpp lists them).
#pragma once
#include <memory>

#include "core/rng.h"
#include "train/loop.h"

namespace knlp {

std::unique_ptr<Family> make_gpt2_family(const Settings &s);  // train/gpt2_family.cpp
std::unique_ptr<Family> make_image_family(const Settings &s); // train/image_family.cpp
std::unique_ptr<Family> make_gnn_family(const Settings &s);   // gnn/gnn_family.cpp
std::unique_ptr<Family> make_hf_family(const Settings &s);    // train/hf_family.cpp

class TokenFile;

// The language-model families' (GPT-2, Hugging Face folders) evaluation: the mean loss of
// `samples` batches of each split, drawn from an Rng fixed by (seed, step, split) so that
// evaluation never disturbs training; every rank scores its share and data parallel sums
// them. batch_loss(f, rng, score) draws one batch of f from rng and returns its mean loss,
// or, score false, only advances rng past it. A non-finite loss goes to the run's guard.
// quality is the validation loss; record, text and the quality line carry perplexities.
using BatchLoss = std::function<double(const TokenFile &f, Rng &rng, bool score)>;
Evaluation evaluate_language_model(RunContext &ctx, const Position &p, const TokenFile &train, const TokenFile &val,
				   int64_t samples, const BatchLoss &batch_loss);
std::string language_model_quality(double val_loss);

// A micro-batch's mean loss as the loop takes it: backpropagated divided by `share` (micro
// batches times ranks), its detached value weighted 1.
MicroLoss mean_micro_loss(const torch::Tensor &loss, double share);

} // namespace knlp
