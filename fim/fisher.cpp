#include "fim/fisher.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/tokens.h"
#include "matrix/stats.h"
#include "optim/optimizer.h"
#include "quant/plan.h"
#include "train/checkpoint.h"

namespace knlp {

const std::map<std::string, torch::Tensor> &FisherResult::kind(const std::string &k) const
{
	if (k == "empirical" && !empirical.empty())
		return empirical;
	if (k == "true" && !true_fisher.empty())
		return true_fisher;
	fail("fim: no {} Fisher in this result (computed: {})", k, fmt::join(kinds(), ", "));
}

std::vector<std::string> FisherResult::kinds() const
{
	std::vector<std::string> k;
	if (!empirical.empty())
		k.push_back("empirical");
	if (!true_fisher.empty())
		k.push_back("true");
	return k;
}

std::vector<int64_t> fisher_windows(uint64_t n, int chunks, int seq, const std::string &path)
{
	if (chunks < 1 || seq < 1)
		fail("fim: --chunks and --seq must be at least 1 (got {} and {})", chunks, seq);
	const uint64_t need = uint64_t(chunks) * uint64_t(seq) + 1;
	if (n < need)
		fail("{}: {} tokens, but {} windows of {} tokens need {} (use fewer --chunks or a shorter --seq)", path,
		     n, chunks, seq, need);
	std::vector<int64_t> s(static_cast<size_t>(chunks), 0);
	if (chunks > 1) {
		// Evenly spaced over [0, n - seq - 1]; the spacing is at least seq, so windows
		// (inputs and their targets) do not overlap.
		const uint64_t last = n - uint64_t(seq) - 1;
		for (int i = 0; i < chunks; i++)
			s[size_t(i)] = int64_t(last * uint64_t(i) / uint64_t(chunks - 1));
	}
	return s;
}

namespace {

// One label per row drawn from softmax(logits) by inversion of the cumulative sum.
std::vector<int64_t> sample_labels(const torch::Tensor &logits, Rng &rng)
{
	auto p = torch::softmax(logits.detach().to(torch::kCPU, torch::kDouble), -1).contiguous();
	const int64_t T = p.size(0), V = p.size(1);
	const double *d = p.data_ptr<double>();
	std::vector<int64_t> out(static_cast<size_t>(T));
	for (int64_t t = 0; t < T; t++) {
		const double *row = d + t * V;
		double u = rng.uniform(), acc = 0;
		int64_t k = V - 1;
		for (int64_t v = 0; v < V; v++) {
			acc += row[v];
			if (u < acc) {
				k = v;
				break;
			}
		}
		out[size_t(t)] = k;
	}
	return out;
}

} // namespace

FisherResult fisher_start(const TokenFile &data, const FisherOptions &o, int64_t context)
{
	if (!o.empirical && !o.true_fisher)
		fail("fim: nothing to compute (neither the empirical nor the true Fisher selected)");
	if (o.seq > context)
		fail("fim: --seq {} exceeds the model's context of {} tokens", o.seq, context);
	FisherResult r;
	r.chunks = o.chunks;
	r.seq = o.seq;
	r.seed = o.seed;
	r.starts = fisher_windows(data.size(), o.chunks, o.seq, data.path());
	return r;
}

void fisher_window_done(FisherResult &r, Progress &prog, const FisherOptions &o, int w, double loss_sum)
{
	if (o.progress)
		prog.update(w + 1, fmt::format("{:.0f} tok/s, loss {:.4f}", double(r.tokens) / prog.elapsed(),
					       loss_sum / (w + 1)));
}

void fisher_finish(FisherResult &r, Progress &prog, const FisherOptions &o, double loss_sum,
		   std::vector<torch::Tensor> &acc_e, std::vector<torch::Tensor> &acc_t)
{
	r.seconds = prog.elapsed();
	if (o.progress)
		prog.finish(fmt::format("{} tokens in {:.1f} s", r.tokens, r.seconds));
	r.mean_loss = loss_sum / o.chunks;
	for (size_t i = 0; i < r.names.size(); i++) {
		if (o.empirical)
			r.empirical[r.names[i]] = acc_e[i].div_(double(o.chunks)).to(torch::kCPU).contiguous();
		if (o.true_fisher)
			r.true_fisher[r.names[i]] = acc_t[i].div_(double(o.chunks)).to(torch::kCPU).contiguous();
	}
}

FisherResult compute_fisher(GPT2 &model, const TokenFile &data, const FisherOptions &o)
{
	const auto &c = model->config();
	FisherResult r = fisher_start(data, o, c.block_size);
	model->eval();
	torch::AutoGradMode grad_on(true);
	std::vector<torch::Tensor> params;
	for (auto &p : model->named_parameters()) {
		if (!p.value().requires_grad())
			continue;
		r.names.push_back(p.key());
		params.push_back(p.value());
	}
	if (params.empty())
		fail("fim: the model has no trainable parameters");
	const auto dev = params[0].device();
	std::vector<torch::Tensor> acc_e, acc_t;
	for (auto &p : params) {
		if (o.empirical)
			acc_e.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat)));
		if (o.true_fisher)
			acc_t.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat)));
	}
	Rng rng(o.seed * 0x9E3779B97F4A7C15ULL + 0xF15E);
	Progress prog("fim", o.chunks, "windows");
	const int T = o.seq;
	auto x = torch::empty({1, T}, torch::kLong), y = torch::empty({1, T}, torch::kLong);
	double loss_sum = 0;
	auto accumulate = [&](const torch::Tensor &loss, std::vector<torch::Tensor> &acc, bool keep) {
		auto g = torch::autograd::grad({loss}, params, {}, keep, false, true);
		for (size_t i = 0; i < params.size(); i++)
			if (g[i].defined())
				acc[i].addcmul_(g[i].to(torch::kFloat), g[i].to(torch::kFloat));
	};
	for (int w = 0; w < o.chunks; w++) {
		data.window(uint64_t(r.starts[size_t(w)]), T, x.data_ptr<int64_t>(), y.data_ptr<int64_t>());
		auto logits = model->forward_all(x.to(dev)).view({T, -1}).to(torch::kFloat);
		auto target = y.view({T}).to(dev);
		torch::Tensor loss_e = torch::nn::functional::cross_entropy(logits, target);
		loss_sum += loss_e.item<double>();
		if (!std::isfinite(loss_e.item<double>()))
			fail("fim: the loss of window {} (offset {} of {}) is not finite; the checkpoint holds NaN or "
			     "infinite weights",
			     w, r.starts[size_t(w)], data.path());
		if (o.empirical)
			accumulate(loss_e, acc_e, o.true_fisher);
		if (o.true_fisher) {
			auto lab = sample_labels(logits, rng);
			auto yt = torch::from_blob(lab.data(), {T}, torch::kLong).clone().to(dev);
			accumulate(torch::nn::functional::cross_entropy(logits, yt), acc_t, false);
		}
		r.tokens += T;
		fisher_window_done(r, prog, o, w, loss_sum);
	}
	fisher_finish(r, prog, o, loss_sum, acc_e, acc_t);
	return r;
}

std::string fisher_role(const std::string &name, int *layer)
{
	std::string role = gpt2_role(name, layer);
	if (!role.empty())
		return role;
	for (const std::string pre : {"transformer.h.", "model.layers."})
		if (name.rfind(pre, 0) == 0)
			*layer = std::atoi(name.c_str() + pre.size());
	auto ends = [&](const std::string &s) {
		return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
	};
	if (name.find("ln_") != std::string::npos || name.find("layernorm") != std::string::npos ||
	    name == "model.norm.weight")
		return "norm";
	if (ends(".bias"))
		return "bias";
	return "other";
}

namespace {

struct TensorSums {
	double trace = 0, max = 0;
	int64_t numel = 0;
};

TensorSums sums(const torch::Tensor &t)
{
	TensorSums s;
	s.numel = t.numel();
	s.trace = t.sum(torch::kDouble).item<double>();
	s.max = s.numel ? t.max().item<double>() : 0.0;
	return s;
}

std::string short_name(const std::string &n)
{
	static const std::string pre = "transformer.";
	return n.rfind(pre, 0) == 0 ? n.substr(pre.size()) : n;
}

} // namespace

nlohmann::json fisher_json(const FisherResult &r)
{
	using nlohmann::json;
	const auto kinds = r.kinds();
	const std::string primary = kinds.front();
	json tensors = json::array();
	std::map<std::string, std::vector<double>> role_means; // primary kind, for z-scores
	std::vector<double> all_means;
	json roles = json::object(), total = json::object();
	std::map<int, json> layers;
	for (const auto &name : r.names) {
		int layer;
		std::string role = fisher_role(name, &layer);
		json t = {{"name", name}, {"role", role}, {"layer", layer}};
		for (const auto &k : kinds) {
			auto s = sums(r.kind(k).at(name));
			t["numel"] = s.numel;
			t[k] = {{"trace", s.trace},
				{"mean", s.trace / double(std::max<int64_t>(1, s.numel))},
				{"max", s.max}};
			auto &rr = roles[role][k];
			if (!rr.is_object())
				rr = json::object();
			rr["trace"] = rr.value("trace", 0.0) + s.trace;
			rr["numel"] = rr.value("numel", int64_t(0)) + s.numel;
			total[k] = total.value(k, 0.0) + s.trace;
			if (layer >= 0) {
				auto &l = layers[layer];
				l["layer"] = layer;
				l[k] = l.value(k, 0.0) + s.trace;
			}
		}
		roles[role]["tensors"] = roles[role].value("tensors", 0) + 1;
		double m = t[primary]["mean"].get<double>();
		role_means[role].push_back(m);
		all_means.push_back(m);
		tensors.push_back(t);
	}
	for (auto &[role, j] : roles.items())
		for (const auto &k : kinds)
			j[k]["mean"] = j[k]["trace"].get<double>() /
				       double(std::max<int64_t>(1, j[k]["numel"].get<int64_t>()));
	std::vector<double> sorted = all_means;
	std::sort(sorted.begin(), sorted.end());
	for (auto &t : tensors) {
		double m = t[primary]["mean"].get<double>();
		auto st = sample_stats(role_means[t["role"].get<std::string>()]);
		t["z"] = st.n > 1 && st.sd > 0 ? (m - st.mean) / st.sd : 0.0;
		auto le = std::upper_bound(sorted.begin(), sorted.end(), m) - sorted.begin();
		t["percentile"] = 100.0 * double(le) / double(sorted.size());
	}
	json ls = json::array();
	for (auto &[i, l] : layers)
		ls.push_back(l);
	return {{"kinds", kinds},
		{"primary", primary},
		{"chunks", r.chunks},
		{"seq", r.seq},
		{"seed", r.seed},
		{"tokens", r.tokens},
		{"seconds", r.seconds},
		{"tokens_per_second", r.seconds > 0 ? double(r.tokens) / r.seconds : 0.0},
		{"mean_loss", r.mean_loss},
		{"tensors", tensors},
		{"roles", roles},
		{"layers", ls},
		{"total", total}};
}

void print_fisher_table(const FisherResult &r, const nlohmann::json &j)
{
	const auto kinds = r.kinds();
	const bool both = kinds.size() == 2;
	const std::string p = j["primary"].get<std::string>();
	fmt::print("{:<34} {:<13} {:>5} {:>10} {:>11} {:>7} {:>11} {:>7} {:>6}\n", "tensor", "role", "layer",
		   "elements", p + " mean", "share", both ? "true mean" : "", both ? "share" : "", "z");
	for (const auto &t : j["tensors"]) {
		auto share = [&](const std::string &k) {
			double tot = j["total"][k].get<double>();
			return tot > 0 ? 100.0 * t[k]["trace"].get<double>() / tot : 0.0;
		};
		fmt::print("{:<34} {:<13} {:>5} {:>10} {:>11.4e} {:>6.2f}% {:>11} {:>7} {:>6.2f}\n",
			   short_name(t["name"].get<std::string>()), t["role"].get<std::string>(),
			   t["layer"].get<int>(), t["numel"].get<int64_t>(), t[p]["mean"].get<double>(), share(p),
			   both ? fmt::format("{:.4e}", t["true"]["mean"].get<double>()) : "",
			   both ? fmt::format("{:.2f}%", share("true")) : "", t["z"].get<double>());
	}
	fmt::print("\nper role (trace = sum of the diagonal)\n");
	for (const auto &[role, v] : j["roles"].items()) {
		std::string line = fmt::format("  {:<14} {:>3} tensors", role, v["tensors"].get<int>());
		for (const auto &k : kinds)
			line += fmt::format("  {} trace {:.4e} mean {:.4e}", k, v[k]["trace"].get<double>(),
					    v[k]["mean"].get<double>());
		fmt::print("{}\n", line);
	}
	fmt::print("per layer\n");
	for (const auto &l : j["layers"]) {
		std::string line = fmt::format("  layer {:>3}", l["layer"].get<int>());
		for (const auto &k : kinds)
			line += fmt::format("  {} trace {:.4e}", k, l[k].get<double>());
		fmt::print("{}\n", line);
	}
	fmt::print("{} windows x {} tokens, mean loss {:.4f}, {:.0f} tokens/s\n", r.chunks, r.seq, r.mean_loss,
		   j["tokens_per_second"].get<double>());
}

void save_fisher(const std::string &path, const FisherResult &r)
{
	std::vector<NamedTensor> ts;
	for (const auto &k : r.kinds())
		for (const auto &n : r.names)
			ts.push_back({k + "." + n, r.kind(k).at(n)});
	nlohmann::json starts = r.starts;
	save_tensors(path, ts,
		     {{"format", "knlp-fisher"},
		      {"chunks", std::to_string(r.chunks)},
		      {"seq", std::to_string(r.seq)},
		      {"seed", std::to_string(r.seed)},
		      {"tokens", std::to_string(r.tokens)},
		      {"mean_loss", fmt::format("{:.17g}", r.mean_loss)},
		      {"names", nlohmann::json(r.names).dump()},
		      {"starts", starts.dump()}});
}

FisherResult load_fisher(const std::string &path)
{
	SafetensorsFile f(path);
	const auto &m = f.metadata();
	auto it = m.find("format");
	if (it == m.end() || it->second != "knlp-fisher")
		fail("{}: not a Fisher file of `knlp fim score` (metadata format is not knlp-fisher)", path);
	FisherResult r;
	try {
		r.chunks = std::stoi(m.at("chunks"));
		r.seq = std::stoi(m.at("seq"));
		r.seed = std::stoull(m.at("seed"));
		r.tokens = std::stoll(m.at("tokens"));
		r.mean_loss = std::stod(m.at("mean_loss"));
		r.names = nlohmann::json::parse(m.at("names")).get<std::vector<std::string>>();
		r.starts = nlohmann::json::parse(m.at("starts")).get<std::vector<int64_t>>();
	} catch (const std::exception &e) {
		fail("{}: damaged Fisher metadata ({})", path, e.what());
	}
	for (const std::string k : {"empirical", "true"}) {
		auto &dst = k == "empirical" ? r.empirical : r.true_fisher;
		for (const auto &n : r.names) {
			auto t = read_tensor(f, k + "." + n);
			if (!t.defined()) {
				if (!dst.empty())
					fail("{}: {}.{} missing", path, k, n);
				break;
			}
			dst[n] = t.to(torch::kFloat);
		}
	}
	if (r.kinds().empty())
		fail("{}: holds no Fisher tensors", path);
	return r;
}

std::map<std::string, double> fisher_tensor_means(const FisherResult &r, const std::string &kind)
{
	std::map<std::string, double> out;
	for (const auto &[n, t] : r.kind(kind))
		out[n] = t.numel() ? t.mean(torch::kDouble).item<double>() : 0.0;
	return out;
}

double AdamMoments::correction() const
{
	return age > 0 ? 1.0 / (1.0 - std::pow(beta2, double(age))) : 1.0;
}

AdamMoments read_adam_moments(const std::string &ckpt_dir)
{
	AdamMoments a;
	auto st = read_checkpoint_state(ckpt_dir);
	const std::string f = join_path(ckpt_dir, "optimizer.safetensors");
	if (!file_exists(f))
		fail("{}: no optimizer state in this checkpoint; Adam's v is needed (use a checkpoint written by "
		     "training, or --source fim where the command has one)",
		     ckpt_dir);
	const Settings cfg =
		Config::parse(st.value("config", std::string()), join_path(ckpt_dir, "state.json"), Config::Mode::Saved)
			.settings();
	const auto &opt = st.contains("optimizer") ? st["optimizer"] : nlohmann::json::object();
	const auto oo = optimizer_options_from(cfg.optim, 1.0);
	a.optimizer = opt.value("name", oo.name);
	a.step = opt.value("step", st.value("optimizer_step", st.value("iteration", int64_t(0))));
	a.age = a.step;
	if (opt.contains("spam")) {
		// SPAM zeroes v at its counter t = (step + 1) x per_iter before that step; v has
		// then seen step - t / per_iter + 1 updates.
		const int64_t at = opt["spam"].value("reset_at", int64_t(-1)), per = oo.spam_double_step ? 2 : 1;
		if (at >= 0)
			a.age = a.step - at / per + 1;
	}
	a.beta2 = oo.beta2;
	a.tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.gpt2.block_size;
	a.clip = cfg.optim.grad_clip;
	a.clipped = a.clip > 0;
	SafetensorsFile sf(f);
	for (const auto &t : sf.tensors()) {
		static const std::string pre = "exp_avg_sq.";
		if (t.name.rfind(pre, 0) == 0)
			a.v[t.name.substr(pre.size())] = read_tensor(sf, t.name).to(torch::kFloat);
	}
	if (a.v.empty())
		fail("{}: no exp_avg_sq.* tensors: optimizer {} keeps no second moment (Adam, AdamW, AdamWSPAM and "
		     "AdamWPrune do); use --source fim where the command has one",
		     f, a.optimizer);
	return a;
}

namespace {

nlohmann::json agreement(const float *v, const float *F, size_t n, const CompareOptions &o)
{
	nlohmann::json j = {{"elements", n}};
	auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
	j["spearman"] = num(spearman(v, F, n));
	j["pearson"] = num(pearson(v, F, n));
	for (double k : o.topk)
		j[fmt::format("top{:g}%", 100 * k)] = num(topk_overlap(v, F, n, k));
	return j;
}

double sum_of(const float *x, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += x[i];
	return s;
}

double median_log10_ratio(const float *v, const float *F, size_t n, double scale)
{
	std::vector<double> r;
	r.reserve(n);
	for (size_t i = 0; i < n; i++)
		if (v[i] > 0 && F[i] > 0)
			r.push_back(std::log10(scale * double(v[i]) / double(F[i])));
	if (r.empty())
		return std::numeric_limits<double>::quiet_NaN();
	std::nth_element(r.begin(), r.begin() + std::ptrdiff_t(r.size() / 2), r.end());
	return r[r.size() / 2];
}

} // namespace

// One table per Fisher kind and per tensor, built in one loop so that every statistic is
// computed over exactly the same element pairs.
nlohmann::json compare_fisher(const AdamMoments &adam, const FisherResult &f, const CompareOptions &o)
{
	using nlohmann::json;
	const double bc = adam.correction();
	json out = {{"optimizer", adam.optimizer},
		    {"step", adam.step},
		    {"v_age", adam.age},
		    {"beta2", adam.beta2},
		    {"bias_correction", bc},
		    {"grad_clip", adam.clip},
		    {"tokens_per_step", adam.tokens_per_step},
		    {"fisher_tokens_per_window", f.seq},
		    // If the mini-batch gradient were pure noise, E[g_batch^2] = F_window x (window /
		    // batch tokens): the scale bias-corrected v should show against the Fisher.
		    {"noise_only_scale", adam.tokens_per_step > 0 ? double(f.seq) / double(adam.tokens_per_step) : 0.0},
		    {"note", "raw and bias-corrected v differ by one positive factor, so Spearman, Pearson and top-k "
			     "agree for both; the scale entries differ"}};
	std::vector<std::string> names;
	for (const auto &n : f.names)
		if (adam.v.count(n))
			names.push_back(n);
	if (names.empty())
		fail("fim compare: the checkpoint's exp_avg_sq tensors name no parameter of the Fisher file");
	for (const auto &k : f.kinds()) {
		const auto &F = f.kind(k);
		std::vector<float> gv, gf;
		json tensors = json::array();
		std::vector<float> tv, tf; // per-tensor means
		std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> by_role;
		for (const auto &n : names) {
			auto v = adam.v.at(n).contiguous();
			auto fi = F.at(n).contiguous();
			if (v.sizes() != fi.sizes())
				fail("fim compare: exp_avg_sq.{} has a different shape from the Fisher's", n);
			const float *pv = v.data_ptr<float>(), *pf = fi.data_ptr<float>();
			size_t m = size_t(v.numel());
			gv.insert(gv.end(), pv, pv + m);
			gf.insert(gf.end(), pf, pf + m);
			int layer;
			std::string role = fisher_role(n, &layer);
			json t = agreement(pv, pf, m, o);
			double sv = sum_of(pv, m), sf = sum_of(pf, m);
			t["name"] = n;
			t["role"] = role;
			t["layer"] = layer;
			t["mean_v"] = sv / double(m); // raw v; the per-tensor scatter of the dashboard
			t["mean_fisher"] = sf / double(m);
			t["scale_raw"] = sf > 0 ? sv / sf : 0.0;
			t["scale_bias_corrected"] = sf > 0 ? bc * sv / sf : 0.0;
			t["v_zeros"] = int64_t(std::count(pv, pv + m, 0.0f));
			tensors.push_back(t);
			tv.push_back(float(sv / double(m)));
			tf.push_back(float(sf / double(m)));
			int l2;
			if (layer >= 0 && !gpt2_role(n, &l2).empty()) { // one tensor per layer and role
				by_role[role].first.push_back(tv.back());
				by_role[role].second.push_back(tf.back());
			}
		}
		json g = agreement(gv.data(), gf.data(), gv.size(), o);
		double sv = sum_of(gv.data(), gv.size()), sf = sum_of(gf.data(), gf.size());
		json scale = {
			{"raw", sf > 0 ? sv / sf : 0.0},
			{"bias_corrected", sf > 0 ? bc * sv / sf : 0.0},
			{"median_log10_ratio_raw", median_log10_ratio(gv.data(), gf.data(), gv.size(), 1.0)},
			{"median_log10_ratio_bias_corrected", median_log10_ratio(gv.data(), gf.data(), gv.size(), bc)}};
		for (auto &s : scale)
			if (s.is_number_float() && !std::isfinite(s.get<double>()))
				s = nullptr;
		json roles = json::object();
		for (auto &[role, p] : by_role) {
			auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
			roles[role] = {{"layers", p.first.size()},
				       {"spearman", num(spearman(p.first.data(), p.second.data(), p.first.size()))}};
		}
		auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
		out["fisher"][k] = {{"global", {{"raw", g}, {"bias_corrected", g}, {"scale", scale}}},
				    {"tensor_means",
				     {{"tensors", tv.size()},
				      {"spearman", num(spearman(tv.data(), tf.data(), tv.size()))},
				      {"pearson", num(pearson(tv.data(), tf.data(), tv.size()))}}},
				    {"layers_within_role", roles},
				    {"tensors", tensors}};
	}
	if (f.kinds().size() == 2) {
		std::vector<float> a, b;
		for (const auto &n : f.names) {
			auto x = f.empirical.at(n).contiguous(), y = f.true_fisher.at(n).contiguous();
			a.insert(a.end(), x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
			b.insert(b.end(), y.data_ptr<float>(), y.data_ptr<float>() + y.numel());
		}
		out["empirical_vs_true"] = agreement(a.data(), b.data(), a.size(), o);
	}
	return out;
}

void print_compare_table(const nlohmann::json &j)
{
	auto f = [](const nlohmann::json &x) {
		return x.is_null() ? std::string("n/a") : fmt::format("{:.3f}", x.get<double>());
	};
	fmt::print(
		"Adam's v ({} at step {}, v age {}, beta2 {}, bias correction x{:.4g}, grad clip {}) vs the diagonal "
		"Fisher\n",
		j["optimizer"].get<std::string>(), j["step"].get<int64_t>(), j["v_age"].get<int64_t>(),
		j["beta2"].get<double>(), j["bias_correction"].get<double>(), j["grad_clip"].get<double>());
	for (const auto &[k, r] : j["fisher"].items()) {
		const auto &g = r["global"]["raw"];
		const auto &s = r["global"]["scale"];
		fmt::print("\n{} Fisher, all {} elements: Spearman {}  Pearson {}", k, g["elements"].get<int64_t>(),
			   f(g["spearman"]), f(g["pearson"]));
		for (const auto &[key, val] : g.items())
			if (key.rfind("top", 0) == 0)
				fmt::print("  {} overlap {}", key, f(val));
		fmt::print(
			"\n  scale sum(v)/sum(F): raw {:.4g}, bias-corrected {:.4g} (noise-only expectation {:.4g}); "
			"median log10(v/F) bias-corrected {}\n",
			s["raw"].get<double>(), s["bias_corrected"].get<double>(), j["noise_only_scale"].get<double>(),
			f(s["median_log10_ratio_bias_corrected"]));
		const auto &tm = r["tensor_means"];
		fmt::print("  ranking of tensors by mean: Spearman {} over {} tensors; layers within a role:",
			   f(tm["spearman"]), tm["tensors"].get<int>());
		for (const auto &[role, x] : r["layers_within_role"].items())
			fmt::print(" {} {}", role, f(x["spearman"]));
		fmt::print("\n  {:<34} {:>9} {:>9} {:>9} {:>11}\n", "tensor", "spearman", "pearson", "top10%",
			   "scale(bc)");
		for (const auto &t : r["tensors"]) {
			std::string n = t["name"].get<std::string>();
			if (n.rfind("transformer.", 0) == 0)
				n = n.substr(12);
			fmt::print("  {:<34} {:>9} {:>9} {:>9} {:>11.4g}\n", n, f(t["spearman"]), f(t["pearson"]),
				   f(t.value("top10%", nlohmann::json(nullptr))),
				   t["scale_bias_corrected"].get<double>());
		}
	}
	if (j.contains("empirical_vs_true"))
		fmt::print("\nempirical vs true Fisher: Spearman {}  Pearson {}\n",
			   f(j["empirical_vs_true"]["spearman"]), f(j["empirical_vs_true"]["pearson"]));
}

} // namespace knlp
