// knlp stats interval | prune analyze: the statistics and pruning analyses the report
// scripts need, computed by the code the summaries and the pruner use (matrix/stats.h,
// prune/analysis.h), printed as one JSON line.
#include <sstream>

#include "core/error.h"
#include "matrix/stats.h"
#include "prune/analysis.h"
#include "tools/commands.h"
#include "train/checkpoint.h"

namespace knlp {

namespace {

std::vector<double> numbers(const std::string &list, const char *what)
{
	std::vector<double> out;
	std::stringstream ss(list);
	for (std::string item; std::getline(ss, item, ',');) {
		size_t used = 0;
		double v = 0;
		try {
			v = std::stod(item, &used);
		} catch (const std::exception &) {
			used = 0;
		}
		if (used == 0 || used != item.size() || !std::isfinite(v))
			fail("stats: {} '{}' is not a finite number (give comma-separated numbers)", what, item);
		out.push_back(v);
	}
	return out;
}

// ---- stats interval

struct IntervalArgs {
	std::string a, b;
	bool paired = false;
	double confidence = 0.95;
};

void define_interval(CLI::App *c, IntervalArgs &x)
{
	c->add_option("--a", x.a, "Comma-separated values of the first sample")->required();
	c->add_option("--b", x.b, "Comma-separated values of the second sample")->required();
	c->add_flag("--paired", x.paired, "a[i] and b[i] belong together (same seed): the t interval of a - b");
	c->add_option("--confidence", x.confidence, "Confidence of the interval")
		->check(CLI::Range(0.5, 0.9999))
		->capture_default_str();
}

void run_interval(IntervalArgs &x)
{
	const auto a = numbers(x.a, "--a"), b = numbers(x.b, "--b");
	DiffCI d = x.paired ? paired_interval(a, b, x.confidence) : welch_interval(a, b, x.confidence);
	SampleStats sa = sample_stats(a), sb = sample_stats(b);
	nlohmann::json j = {{"method", x.paired ? "paired t" : "Welch"},
			    {"confidence", x.confidence},
			    {"n_a", sa.n},
			    {"n_b", sb.n},
			    {"mean_a", sa.mean},
			    {"mean_b", sb.mean},
			    {"sd_a", sa.sd},
			    {"sd_b", sb.sd},
			    {"diff", d.diff},
			    {"valid", d.valid}};
	if (x.paired && a.size() == b.size()) {
		std::vector<double> diffs(a.size());
		for (size_t i = 0; i < a.size(); i++)
			diffs[i] = a[i] - b[i];
		j["sd_diff"] = sample_stats(diffs).sd;
	}
	if (d.valid)
		j.update({{"lo", d.lo},
			  {"hi", d.hi},
			  {"df", std::isfinite(d.df) ? nlohmann::json(d.df) : nlohmann::json(nullptr)},
			  {"verdict", d.hi < 0	 ? "below"
				      : d.lo > 0 ? "above"
						 : "inconclusive"}});
	fmt::print("{}\n", j.dump());
}

// ---- prune analyze

struct AnalyzeArgs {
	std::string path, which = "latest";
	StateAnalysisOptions o;
};

void define_analyze(CLI::App *c, AnalyzeArgs &a)
{
	c->add_option("--checkpoint", a.path, "Run folder (or one checkpoint folder)")->required();
	c->add_option("--which", a.which, "latest, best or final")
		->check(CLI::IsMember({"latest", "best", "final"}))
		->capture_default_str();
	c->add_option("--sample", a.o.sample, "Weights in the Spearman sample (0: all)")->capture_default_str();
	c->add_option("--seed", a.o.seed, "Seed of the sample")->capture_default_str();
}

void run_analyze(AnalyzeArgs &a)
{
	fmt::print("{}\n", analyze_adam_state(resolve_checkpoint(a.path, a.which), a.o).dump());
}

} // namespace

void add_stats_commands(CLI::App &app)
{
	auto *s = app.add_subcommand("stats", "Statistics of seed samples (the matrix summaries' own)");
	s->require_subcommand(1);
	command<IntervalArgs>(*s, "interval", "Confidence interval of a difference of means (Welch, or paired t)",
			      define_interval, run_interval);
	auto *p = app.add_subcommand("prune", "Pruning analyses of trained runs");
	p->require_subcommand(1);
	command<AnalyzeArgs>(*p, "analyze", "Adam's state against magnitude: bitter7/8 rank agreement, v's floor",
			     define_analyze, run_analyze);
}

} // namespace knlp
