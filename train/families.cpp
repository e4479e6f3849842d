// The model families `knlp train` dispatches through: which models each one trains. Adding a
// family is its own file (a Family subclass and a make_ function, declared in families.h)
// and one row here.
#include "train/families.h"

#include "core/error.h"
#include "train/ddp.h"
#include "train/evaluate.h"

namespace knlp {

namespace {

struct FamilyRow {
	const char *name;
	std::vector<choice::Model> models;
	std::unique_ptr<Family> (*make)(const Settings &);
};

const FamilyRow k_families[] = {
	{"gpt2", {choice::Model::Gpt2}, make_gpt2_family},
	{"image", {choice::Model::Lenet5, choice::Model::Resnet18, choice::Model::Resnet50}, make_image_family},
	{"gnn", {choice::Model::Graphsage}, make_gnn_family},
	{"hf", {choice::Model::Hf}, make_hf_family},
};

const FamilyRow &row_of(const Settings &s)
{
	for (const auto &r : k_families)
		for (choice::Model m : r.models)
			if (m == s.model.kind)
				return r;
	fail("no training family for CONFIG_{} (train/families.cpp)", symbol_of(s.model.kind));
}

} // namespace

std::unique_ptr<Family> make_family(const Settings &s)
{
	return row_of(s).make(s);
}

namespace {

double split_loss(RunContext &ctx, const TokenFile &f, int split, int64_t step, int64_t samples,
		  const BatchLoss &batch_loss)
{
	torch::NoGradGuard ng;
	Rng rng(ctx.seed * 1000003ULL + static_cast<uint64_t>(step) * 7919ULL + static_cast<uint64_t>(split));
	double total = 0;
	for (int64_t i = 0; i < samples; i++) {
		const bool mine = i % ctx.world == ctx.rank;
		const double l = batch_loss(f, rng, mine);
		if (mine)
			total += l;
	}
	if (ctx.ddp)
		total = ctx.ddp->sum({total})[0];
	return total / double(samples);
}

} // namespace

Evaluation evaluate_language_model(RunContext &ctx, const Position &p, const TokenFile &train, const TokenFile &val,
				   int64_t samples, const BatchLoss &batch_loss)
{
	const double tl = split_loss(ctx, train, 0, p.step, samples, batch_loss),
		     vl = split_loss(ctx, val, 1, p.step, samples, batch_loss);
	if (!std::isfinite(vl) || !std::isfinite(tl))
		ctx.fail_nonfinite("evaluation loss", std::isfinite(vl) ? tl : vl);
	Evaluation ev;
	ev.quality = vl;
	ev.train_loss = tl;
	ev.eval_loss = vl;
	ev.record = {{"val_loss", vl}, {"val_perplexity", perplexity_of(vl)}};
	ev.text = fmt::format("train loss {:.4f}, val loss {:.4f} (ppl {:.2f})", tl, vl, perplexity_of(vl));
	return ev;
}

MicroLoss mean_micro_loss(const torch::Tensor &loss, double share)
{
	MicroLoss m;
	m.backprop = loss / share;
	m.value = loss.detach();
	m.weight = 1;
	return m;
}

std::string language_model_quality(double vl)
{
	return fmt::format("val loss {:.4f} (ppl {:.2f})", vl, perplexity_of(vl));
}

std::string family_name(const Settings &s)
{
	return row_of(s).name;
}

} // namespace knlp
