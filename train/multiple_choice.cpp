#include "train/multiple_choice.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"

namespace knlp {

std::string joined_ending(const std::string &ctx, const std::string &ending)
{
	bool ctx_space = !ctx.empty() && std::isspace(static_cast<unsigned char>(ctx.back()));
	bool end_space = !ending.empty() && std::isspace(static_cast<unsigned char>(ending.front()));
	return ctx.empty() || ctx_space || end_space ? ending : " " + ending;
}

MCScore score_item(const MCItem &item, Tokenizer &tok, const TokenLogprobs &lp, size_t max_tokens)
{
	MCScore s;
	auto ctx = tok.encode(item.ctx);
	double best = -INFINITY, best_norm = -INFINITY;
	for (size_t e = 0; e < item.endings.size(); e++) {
		auto end = tok.encode(joined_ending(item.ctx, item.endings[e]));
		if (end.empty())
			fail("multiple choice (line {}): ending {} is empty", item.line, e);
		std::vector<uint32_t> seq(ctx);
		seq.insert(seq.end(), end.begin(), end.end());
		if (seq.size() > max_tokens) // keep the newest tokens; the ending must fit
			seq.erase(seq.begin(), seq.begin() + long(seq.size() - max_tokens));
		if (end.size() >= seq.size())
			fail("multiple choice (line {}): ending {} has {} tokens, more than the context length allows",
			     item.line, e, end.size());
		auto l = lp(seq); // l[i] = log p(seq[i+1] | seq[0..i])
		double sum = 0;
		for (size_t i = seq.size() - end.size(); i < seq.size(); i++)
			sum += l[i - 1];
		size_t bytes = std::max<size_t>(1, item.endings[e].size());
		s.logprob.push_back(sum);
		s.bytes.push_back(bytes);
		if (sum > best)
			best = sum, s.pred = int(e);
		if (sum / double(bytes) > best_norm)
			best_norm = sum / double(bytes), s.pred_norm = int(e);
	}
	return s;
}

MCResult score_items(const std::vector<MCItem> &items, Tokenizer &tok, const TokenLogprobs &lp, size_t max_tokens,
		     bool show_progress)
{
	MCResult r;
	Progress prog("hellaswag", double(items.size()), "examples");
	int right = 0, right_norm = 0;
	for (size_t i = 0; i < items.size(); i++) {
		auto s = score_item(items[i], tok, lp, max_tokens);
		right += s.pred == items[i].label;
		right_norm += s.pred_norm == items[i].label;
		r.items.push_back(std::move(s));
		if (show_progress)
			prog.update(double(i + 1));
	}
	if (show_progress)
		prog.finish();
	r.n = static_cast<int>(items.size());
	r.acc = r.n ? double(right) / r.n : 0.0;
	r.acc_norm = r.n ? double(right_norm) / r.n : 0.0;
	return r;
}

TokenLogprobs model_logprobs(GPT2 &model, torch::Device dev)
{
	return [&model, dev](const std::vector<uint32_t> &tokens) {
		torch::NoGradGuard ng;
		model->eval();
		std::vector<int64_t> ids(tokens.begin(), tokens.end());
		auto x = torch::tensor(ids, torch::kLong).view({1, int64_t(ids.size())}).to(dev);
		auto logp =
			torch::log_softmax(model->forward_all(x).to(torch::kFloat)[0], -1).to(torch::kCPU); // [n, V]
		std::vector<double> out(tokens.size() - 1);
		auto acc = logp.accessor<float, 2>();
		for (size_t i = 0; i + 1 < tokens.size(); i++)
			out[i] = acc[int64_t(i)][int64_t(tokens[i + 1])];
		return out;
	};
}

} // namespace knlp

#include "core/rng.h"
#include "data/tokens.h"

namespace knlp {

std::vector<MCItem> make_cloze(const TokenFile &data, const Tokenizer &tok, int count, int ctx_tokens,
			       int ending_tokens, int choices, uint64_t seed)
{
	if (count < 1 || ctx_tokens < 1 || ending_tokens < 1 || choices < 2)
		fail("cloze: need count >= 1, context and ending of at least one token, at least two choices");
	const uint64_t span = uint64_t(ctx_tokens) + uint64_t(ending_tokens);
	if (data.size() < span * 4)
		fail("{}: {} tokens are too few for cloze items of {} tokens", data.path(), data.size(), span);
	Rng rng(seed);
	auto pick = [&](uint64_t len) { return static_cast<uint64_t>(rng.uniform() * double(data.size() - len)); };
	auto text = [&](uint64_t at, uint64_t n) {
		std::vector<uint32_t> ids(n);
		for (uint64_t i = 0; i < n; i++)
			ids[i] = data.at(at + i);
		return tok.decode(ids);
	};
	// Endings start at a word boundary (whitespace first), as HellaSwag's do.
	auto starts_word = [&](uint64_t at) {
		std::string t = text(at, 1);
		return !t.empty() && std::isspace(static_cast<unsigned char>(t[0]));
	};
	auto word_start = [&](uint64_t len) {
		uint64_t at = pick(len);
		for (int tries = 0; tries < 64 && !starts_word(at); tries++)
			at = pick(len);
		return at;
	};
	std::vector<MCItem> out;
	for (int i = 0; i < count; i++) {
		MCItem it;
		it.line = i + 1;
		uint64_t at = word_start(span + 32), cut = at;
		// Context: ctx_tokens tokens before a word boundary (or fewer, never more).
		at = cut >= uint64_t(ctx_tokens) ? cut - uint64_t(ctx_tokens) : 0;
		if (cut == at)
			cut = at + uint64_t(ctx_tokens);
		it.ctx = text(at, cut - at);
		std::string right = text(cut, uint64_t(ending_tokens));
		it.label = static_cast<int>(rng.uniform() * choices) % choices;
		for (int c = 0; c < choices; c++) {
			if (c == it.label) {
				it.endings.push_back(right);
				continue;
			}
			std::string e;
			auto taken = [&](const std::string &x) {
				return x.empty() || x == right ||
				       std::find(it.endings.begin(), it.endings.end(), x) != it.endings.end();
			};
			for (int tries = 0; tries < 100 && taken(e); tries++)
				e = text(word_start(uint64_t(ending_tokens)), uint64_t(ending_tokens));
			it.endings.push_back(e);
		}
		out.push_back(std::move(it));
	}
	return out;
}

} // namespace knlp
