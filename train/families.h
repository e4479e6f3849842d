// Constructors of the model families the training loop knows (train/families.cpp lists them).
#pragma once
#include <memory>

#include "train/loop.h"

namespace knlp {

std::unique_ptr<Family> make_gpt2_family(const Settings &s);  // train/gpt2_family.cpp
std::unique_ptr<Family> make_image_family(const Settings &s); // train/image_family.cpp
std::unique_ptr<Family> make_gnn_family(const Settings &s);   // gnn/gnn_family.cpp
std::unique_ptr<Family> make_hf_family(const Settings &s);    // train/hf_family.cpp

// What the language-model families (GPT-2, Hugging Face folders) report at an evaluation:
// quality is the validation loss; record, text and the quality line with perplexities.
Evaluation language_model_evaluation(double train_loss, double val_loss);
std::string language_model_quality(double val_loss);

} // namespace knlp
