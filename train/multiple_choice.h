// Multiple-choice evaluation in the HellaSwag jsonl format: one JSON object per line with
// "ctx" (string), "endings" (array of strings) and "label" (index of the right ending, a
// number or a numeric string). Each ending is scored by the summed log-probability of its
// tokens given the context; acc takes the argmax of the sum, acc_norm the argmax of the sum
// divided by the ending's length in bytes.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/mc_jsonl.h"
#include "data/tokenizer.h"
#include "models/gpt2.h"

namespace knlp {

struct MCScore {
	std::vector<double> logprob; // summed log-probability per ending
	std::vector<size_t> bytes;   // ending length in bytes (the acc_norm divisor)
	int pred = 0, pred_norm = 0;
};

struct MCResult {
	int n = 0;
	double acc = 0, acc_norm = 0;
	std::vector<MCScore> items;
};

// Log-probabilities of tokens[i] given tokens[0..i-1], for i = 1 .. n-1 (n-1 values).
using TokenLogprobs = std::function<std::vector<double>(const std::vector<uint32_t> &tokens)>;

// The text scored for an ending: a space joins context and ending unless one side already
// has whitespace there.
std::string joined_ending(const std::string &ctx, const std::string &ending);

MCScore score_item(const MCItem &item, Tokenizer &tok, const TokenLogprobs &lp, size_t max_tokens);
MCResult score_items(const std::vector<MCItem> &items, Tokenizer &tok, const TokenLogprobs &lp, size_t max_tokens,
		     bool show_progress = false);

// A model's TokenLogprobs (no grad, eval mode, on dev).
TokenLogprobs model_logprobs(GPT2 &model, torch::Device dev);

} // namespace knlp

namespace knlp {

class TokenFile;
class Rng;

// A cloze set from a token file: `count` items whose context is `ctx_tokens` tokens of the
// file and whose right ending is the next `ending_tokens` tokens; the other endings are
// windows of the same length from random other places. Labels are uniform.
std::vector<MCItem> make_cloze(const TokenFile &data, const Tokenizer &tok, int count, int ctx_tokens,
			       int ending_tokens, int choices, uint64_t seed);

} // namespace knlp
