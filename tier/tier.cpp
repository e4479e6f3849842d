#include "tier/tier.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "models/observer.h"
#include "train/checkpoint.h"
#include "train/device.h"

namespace knlp {

const char *const kTierNames[3] = {"fast", "middle", "slow"};

void parse_tier_cuts(const std::string &text, TierOptions *o)
{
	auto comma = text.find(',');
	auto num = [&](const std::string &s) {
		try {
			size_t used = 0;
			double v = std::stod(s, &used);
			if (used == s.size())
				return v;
		} catch (const std::exception &) {
		}
		fail("tier: cuts '{}' are not two fractions 'a,b' with 0 <= a <= b <= 1 (e.g. 0.3,0.5)", text);
	};
	if (comma == std::string::npos)
		num("x");
	double a = num(text.substr(0, comma)), b = num(text.substr(comma + 1));
	if (!(a >= 0 && a <= b && b <= 1))
		fail("tier: cuts '{}' are not two fractions 'a,b' with 0 <= a <= b <= 1 (e.g. 0.3,0.5)", text);
	o->cut_fast = a;
	o->cut_middle = b;
}

TierOptions tier_options_from(const TierSettings &c)
{
	TierOptions o;
	o.source = name_of(c.source);
	try {
		parse_tier_cuts(c.cuts, &o);
	} catch (const Error &e) {
		fail("CONFIG_TIER_CUTS: {}", e.what());
	}
	o.by_bytes = c.by_bytes;
	const double lat[3] = {c.fast_us, c.middle_us, c.slow_us}, bw[3] = {c.fast_gbps, c.middle_gbps, c.slow_gbps};
	for (int t = 0; t < 3; t++) {
		o.cost[t].setup_us = lat[t];
		o.cost[t].gbps = bw[t];
	}
	return o;
}

std::vector<TierModule> tier_modules(GPT2 &model)
{
	std::vector<TierModule> mods;
	static const std::string blk = "transformer.h.";
	for (auto &p : model->named_parameters()) {
		const std::string &n = p.key();
		std::string mod = n.substr(0, n.rfind('.'));
		if (mods.empty() || mods.back().name != mod) {
			TierModule m;
			m.name = mod;
			if (n.rfind(blk, 0) == 0)
				m.layer = std::atoi(n.c_str() + blk.size());
			mods.push_back(m);
		}
		mods.back().tensors.push_back(n);
		mods.back().bytes += p.value().numel() * int64_t(p.value().element_size());
	}
	return mods;
}

std::map<std::string, double> adam_tier_scores(const std::string &ckpt_dir)
{
	std::string f = join_path(ckpt_dir, "optimizer.safetensors");
	if (!file_exists(f))
		fail("{}: no optimizer state in this checkpoint; --source adam needs Adam's m and v (use --source fim)",
		     ckpt_dir);
	SafetensorsFile sf(f);
	std::map<std::string, double> out;
	for (const auto &t : sf.tensors()) {
		static const std::string pre = "exp_avg_sq.";
		if (t.name.rfind(pre, 0) != 0)
			continue;
		std::string name = t.name.substr(pre.size());
		auto v = read_tensor(sf, t.name).to(torch::kDouble);
		auto m = read_tensor(sf, "exp_avg." + name);
		if (!m.defined())
			fail("{}: exp_avg.{} missing next to exp_avg_sq.{}", f, name, name);
		out[name] =
			m.to(torch::kDouble).abs().mean().item<double>() + v.clamp_min(0).sqrt().mean().item<double>();
	}
	if (out.empty())
		fail("{}: no exp_avg_sq.* tensors (this optimizer keeps no second moment); use --source fim", f);
	return out;
}

void assign_tiers(std::vector<TierModule> &mods, const std::map<std::string, double> &scores, const TierOptions &o)
{
	if (!(o.cut_fast >= 0 && o.cut_fast <= o.cut_middle && o.cut_middle <= 1))
		fail("tier: cuts {},{} are not 0 <= a <= b <= 1", o.cut_fast, o.cut_middle);
	for (auto &m : mods) {
		double s = 0;
		for (const auto &t : m.tensors) {
			auto it = scores.find(t);
			if (it == scores.end())
				fail("tier: no {} score for tensor {}", o.source, t);
			s += it->second;
		}
		m.score = s / double(m.tensors.size());
	}
	std::vector<size_t> idx(mods.size());
	std::iota(idx.begin(), idx.end(), size_t(0));
	std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return mods[a].score > mods[b].score; });
	const double n = double(mods.size());
	int64_t total = 0;
	for (const auto &m : mods)
		total += m.bytes;
	int64_t before = 0;
	for (size_t r = 0; r < idx.size(); r++) {
		auto &m = mods[idx[r]];
		// Position of the module's start in the ranking, as a fraction of modules or bytes.
		if (o.by_bytes) {
			double at = double(before) / double(std::max<int64_t>(1, total));
			m.tier = at < o.cut_fast - 1e-12 ? 0 : at < o.cut_middle - 1e-12 ? 1 : 2;
		} else { // the first floor(a n) modules, then up to floor(b n)
			const double rr = double(r);
			m.tier = rr < std::floor(o.cut_fast * n + 1e-9)	    ? 0
				 : rr < std::floor(o.cut_middle * n + 1e-9) ? 1
									    : 2;
		}
		before += m.bytes;
	}
}

nlohmann::json tier_plan_json(const std::vector<TierModule> &mods, const TierOptions &o)
{
	nlohmann::json ms = nlohmann::json::array();
	int64_t bytes[3] = {0, 0, 0}, count[3] = {0, 0, 0};
	for (const auto &m : mods) {
		ms.push_back({{"module", m.name},
			      {"layer", m.layer},
			      {"tensors", m.tensors},
			      {"bytes", m.bytes},
			      {"score", m.score},
			      {"tier", kTierNames[m.tier]}});
		bytes[m.tier] += m.bytes;
		count[m.tier]++;
	}
	nlohmann::json tiers = nlohmann::json::object();
	for (int t = 0; t < 3; t++)
		tiers[kTierNames[t]] = {{"modules", count[t]},
					{"bytes", bytes[t]},
					{"setup_us", o.cost[t].setup_us},
					{"gbps", o.cost[t].gbps}};
	return {{"source", o.source},
		{"cuts", {o.cut_fast, o.cut_middle}},
		{"by", o.by_bytes ? "bytes" : "modules"},
		{"semantics",
		 fmt::format("modules ranked by score, highest first; fast = the first {:g}% of the {}{}, "
			     "middle = up to {:g}%, slow = the rest ({:g}/{:g}/{:g})",
			     100 * o.cut_fast, o.by_bytes ? "bytes" : "modules",
			     o.by_bytes ? " (by where each module starts)" : " (rounded down)", 100 * o.cut_middle,
			     100 * o.cut_fast, 100 * (o.cut_middle - o.cut_fast), 100 * (1 - o.cut_middle))},
		{"score_rule", o.source == "adam" ? "mean |m| + mean sqrt(v) per tensor, mean over the module's tensors"
						  : "mean empirical Fisher diagonal per tensor, mean over the module's "
						    "tensors"},
		{"tiers", tiers},
		{"modules", ms}};
}

void print_tier_plan(const nlohmann::json &j)
{
	fmt::print("tier plan from {}: {}\n", j["source"].get<std::string>(), j["semantics"].get<std::string>());
	fmt::print("{:<34} {:>5} {:>10} {:>12} {:>7}\n", "module", "layer", "bytes", "score", "tier");
	for (const auto &m : j["modules"]) {
		std::string n = m["module"].get<std::string>();
		if (n.rfind("transformer.", 0) == 0)
			n = n.substr(12);
		fmt::print("{:<34} {:>5} {:>10} {:>12.4e} {:>7}\n", n, m["layer"].get<int>(), m["bytes"].get<int64_t>(),
			   m["score"].get<double>(), m["tier"].get<std::string>());
	}
	for (const auto &t : {"fast", "middle", "slow"}) {
		const auto &x = j["tiers"][t];
		fmt::print("{:<7} {:>4} modules {:>12} bytes ({:g} us + bytes / {:g} GB/s)\n", t,
			   x["modules"].get<int>(), x["bytes"].get<int64_t>(), x["setup_us"].get<double>(),
			   x["gbps"].get<double>());
	}
}

namespace {

using Clock = std::chrono::steady_clock;

void spin_for(double seconds)
{
	auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
	while (Clock::now() < until) {
	}
}

struct Slot {
	torch::Tensor param;
	std::vector<int64_t> shape;
	int64_t bytes = 0, offset = 0; // offset inside its group's file range
	torch::Tensor host;	       // GPU middle tier: pinned host copy
};

struct Group {
	std::vector<Slot> slots[3];
	int64_t bytes[3] = {0, 0, 0};
	int64_t file_offset = 0, file_len = 0; // slow tier range, 4096-aligned
	double emulated_seconds = 0;
};

struct AlignedBuffer {
	void *p = nullptr;
	size_t n = 0;
	void reserve(size_t want)
	{
		if (want <= n)
			return;
		std::free(p);
		if (posix_memalign(&p, 4096, want) != 0)
			fail("tier: cannot allocate {} bytes for the slow-tier reads", want);
		n = want;
	}
	~AlignedBuffer() { std::free(p); }
};

class Tiering : public ForwardObserver {
public:
	Tiering(GPT2 &model, const std::vector<TierModule> &mods, const TierOptions &o) : o_(o)
	{
		const int L = model->config().n_layer;
		groups_.resize(size_t(L + 1));
		std::map<std::string, torch::Tensor> params;
		for (auto &p : model->named_parameters())
			params[p.key()] = p.value();
		dev_ = params.begin()->second.device();
		for (const auto &m : mods) {
			auto &g = groups_[size_t(m.layer + 1)];
			for (const auto &t : m.tensors) {
				Slot s;
				s.param = params.at(t);
				s.shape.assign(s.param.sizes().begin(), s.param.sizes().end());
				s.bytes = s.param.numel() * int64_t(s.param.element_size());
				g.bytes[m.tier] += s.bytes;
				g.emulated_seconds += o.cost[m.tier].seconds(s.bytes);
				g.slots[m.tier].push_back(s);
			}
		}
	}

	void set_mode(const std::string &m) { mode_ = m; }

	// Write the slow tier to `file` (each group's tensors together, groups at 4096-byte
	// boundaries) and open it for the reads; on a GPU, keep pinned host copies of the middle
	// tier.
	void prepare_offload(const std::string &file)
	{
		torch::NoGradGuard ng;
		int64_t off = 0;
		std::string blob;
		for (auto &g : groups_) {
			g.file_offset = off;
			int64_t in = 0;
			for (auto &s : g.slots[2]) {
				s.offset = in;
				auto c = s.param.detach().to(torch::kCPU).contiguous();
				blob.append(static_cast<const char *>(c.data_ptr()), size_t(s.bytes));
				in += s.bytes;
			}
			g.file_len = (in + 4095) / 4096 * 4096;
			blob.append(size_t(g.file_len - in), '\0');
			off += g.file_len;
		}
		file_ = file;
		write_file_atomic(file, blob);
		fd_ = ::open(file.c_str(), O_RDONLY | O_DIRECT);
		o_direct_ = fd_ >= 0;
		if (fd_ >= 0 && !blob.empty()) { // some filesystems accept the flag but not the reads
			buf_.reserve(4096);
			if (::pread(fd_, buf_.p, 4096, 0) < 0) {
				::close(fd_);
				fd_ = -1;
				o_direct_ = false;
			}
		}
		if (fd_ < 0)
			fd_ = ::open(file.c_str(), O_RDONLY);
		if (fd_ < 0)
			fail("{}: cannot open the slow-tier file: {}", file, std::strerror(errno));
		if (!dev_.is_cpu())
			for (auto &g : groups_)
				for (auto &s : g.slots[1])
					s.host = s.param.detach().to(torch::kCPU).pin_memory();
	}

	// Offload mode on: the moving tiers are freed, to be read back before each use.
	void evict_all()
	{
		auto m = mode_;
		mode_ = "offload";
		for (size_t i = 0; i < groups_.size(); i++)
			leave(int(i));
		mode_ = m;
	}
	// Every tensor resident again (read back from the file).
	void restore_all()
	{
		for (size_t i = 0; i < groups_.size(); i++)
			load(int(i));
	}

	~Tiering() override
	{
		if (fd_ >= 0)
			::close(fd_);
	}

	void before_block(int layer) override { enter(layer + 1); }
	void after_block(int layer) override { leave(layer + 1); }
	void enter(int g)
	{
		if (mode_ == "emulated")
			spin_for(groups_[size_t(g)].emulated_seconds);
		else if (mode_ == "offload")
			load(g);
	}
	void leave(int g)
	{
		if (mode_ != "offload")
			return;
		torch::NoGradGuard ng;
		auto &gr = groups_[size_t(g)];
		for (auto &s : gr.slots[2])
			s.param.set_data(torch::empty({0}, s.param.options()));
		if (!dev_.is_cpu())
			for (auto &s : gr.slots[1])
				s.param.set_data(torch::empty({0}, s.param.options()));
	}

	int64_t moved_bytes_per_forward() const
	{
		int64_t b = 0;
		for (const auto &g : groups_)
			b += g.bytes[2] + (dev_.is_cpu() ? 0 : g.bytes[1]);
		return b;
	}
	double emulated_seconds_per_forward() const
	{
		double s = 0;
		for (const auto &g : groups_)
			s += g.emulated_seconds;
		return s;
	}
	bool o_direct() const { return o_direct_; }
	int64_t slow_bytes() const
	{
		int64_t b = 0;
		for (const auto &g : groups_)
			b += g.bytes[2];
		return b;
	}

private:
	void load(int g)
	{
		torch::NoGradGuard ng;
		auto &gr = groups_[size_t(g)];
		if (!gr.slots[2].empty()) {
			buf_.reserve(size_t(gr.file_len));
			if (!o_direct_)
				posix_fadvise(fd_, gr.file_offset, gr.file_len, POSIX_FADV_DONTNEED);
			int64_t got = 0;
			while (got < gr.file_len) {
				ssize_t r = ::pread(fd_, static_cast<char *>(buf_.p) + got, size_t(gr.file_len - got),
						    gr.file_offset + got);
				if (r <= 0)
					fail("{}: read of the slow tier failed at offset {}: {}", file_,
					     gr.file_offset + got, r < 0 ? std::strerror(errno) : "file truncated");
				got += r;
			}
			for (auto &s : gr.slots[2]) {
				auto host = torch::from_blob(static_cast<char *>(buf_.p) + s.offset, s.shape,
							     s.param.options().device(torch::kCPU));
				s.param.set_data(dev_.is_cpu() ? host.clone() : host.to(dev_));
			}
		}
		if (!dev_.is_cpu())
			for (auto &s : gr.slots[1])
				s.param.set_data(s.host.to(dev_, /*non_blocking=*/true));
	}

	TierOptions o_;
	std::vector<Group> groups_;
	torch::Device dev_ = torch::kCPU;
	std::string mode_ = "untiered", file_;
	int fd_ = -1;
	bool o_direct_ = false;
	AlignedBuffer buf_;
};

double percentile(std::vector<double> v, double q)
{
	std::sort(v.begin(), v.end());
	size_t i = size_t(std::min<double>(double(v.size() - 1), std::floor(q * double(v.size() - 1) + 0.5)));
	return v[i];
}

} // namespace

// Every mode is timed by the same rounds over the same input, interleaved so that a shared
// machine's drift falls on all alike: one function, so the modes differ only in where the
// weights come from.
nlohmann::json tier_bench(GPT2 &model, const std::vector<TierModule> &mods, const TierOptions &o,
			  const TierBenchOptions &b, const torch::Tensor &tokens)
{
	if (b.warmup < 0 || b.iters < 1)
		fail("tier bench: --warmup must be >= 0 and --iters >= 1");
	model->eval();
	torch::NoGradGuard ng;
	const auto dev = model->parameters()[0].device();
	auto x = tokens.to(dev);
	Tiering tiering(model, mods, o);
	nlohmann::json out = {{"context", x.size(1)},
			      {"batch", x.size(0)},
			      {"warmup", b.warmup},
			      {"iters", b.iters},
			      {"device", dev.str()},
			      {"emulated_wait_ms_per_forward", 1e3 * tiering.emulated_seconds_per_forward()},
			      {"modes", nlohmann::json::array()}};
	for (const auto &mode : b.modes)
		if (mode != "untiered" && mode != "emulated" && mode != "offload")
			fail("tier bench: unknown mode '{}' (untiered emulated offload)", mode);
	const bool offload = std::find(b.modes.begin(), b.modes.end(), "offload") != b.modes.end();
	if (offload) {
		make_dirs(b.store_dir);
		tiering.prepare_offload(join_path(b.store_dir, "slow_tier.bin"));
	}
	auto forward = [&] {
		tiering.enter(0); // embeddings, final norm (the tied head)
		torch::Tensor y;
		{
			ObserverScope scope(&tiering);
			y = model->forward_all(x);
		}
		synchronize(dev);
		tiering.leave(0);
		return y;
	};
	// The reference logits, then the modes in interleaved rounds so that drift of a shared
	// machine falls on every mode alike.
	tiering.set_mode("untiered");
	const torch::Tensor ref = forward().to(torch::kCPU);
	const int rounds = std::min(5, b.iters);
	std::map<std::string, std::vector<double>> ms;
	std::map<std::string, double> diff;
	Progress prog("tier bench", double(b.modes.size()) * (b.warmup + b.iters), "passes");
	int done = 0;
	for (int r = 0; r < rounds; r++) {
		for (const auto &mode : b.modes) {
			tiering.set_mode(mode);
			if (mode == "offload")
				tiering.evict_all();
			const int warm = r == 0 ? b.warmup : 0;
			const int timed = b.iters / rounds + (r < b.iters % rounds ? 1 : 0);
			torch::Tensor last;
			for (int i = 0; i < warm + timed; i++) {
				auto t0 = Clock::now();
				last = forward();
				double dt = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
				if (i >= warm)
					ms[mode].push_back(dt);
				if (b.progress)
					prog.update(++done);
			}
			diff[mode] = std::max(diff[mode], (last.to(torch::kCPU) - ref).abs().max().item<double>());
			if (mode == "offload") {
				tiering.set_mode("untiered");
				tiering.restore_all();
			}
		}
	}
	if (b.progress)
		prog.finish();
	tiering.set_mode("untiered");
	auto mean_of = [](const std::vector<double> &v) {
		return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
	};
	const double base_ms = ms.count("untiered") ? mean_of(ms["untiered"]) : 0.0;
	for (const auto &mode : b.modes) {
		const auto &v = ms[mode];
		double mean = mean_of(v);
		nlohmann::json r = {{"mode", mode},
				    {"latency_ms_mean", mean},
				    {"latency_ms_p50", percentile(v, 0.5)},
				    {"latency_ms_p90", percentile(v, 0.9)},
				    {"tokens_per_second", 1e3 * double(x.numel()) / mean},
				    {"max_abs_logit_diff", diff[mode]}};
		if (mode == "offload") {
			r["bytes_read_per_forward"] = tiering.moved_bytes_per_forward();
			r["slow_tier_bytes"] = tiering.slow_bytes();
			r["o_direct"] = tiering.o_direct();
		}
		if (base_ms > 0) {
			r["slowdown"] = mean / base_ms;
			r["extra_ms"] = mean - base_ms;
			// The rate the reads ran at, if the extra time is theirs.
			if (mode == "offload" && mean > base_ms)
				r["read_rate_gbps"] =
					double(tiering.moved_bytes_per_forward()) / ((mean - base_ms) * 1e-3) / 1e9;
		}
		out["modes"].push_back(r);
	}
	out["rounds"] = rounds;
	tiering.set_mode("untiered");
	return out;
}

void print_tier_bench(const nlohmann::json &j)
{
	fmt::print("tier bench on {}: batch {}, context {}, {} warm-up + {} timed passes; emulated wait {:.3f} ms per "
		   "forward\n",
		   j["device"].get<std::string>(), j["batch"].get<int64_t>(), j["context"].get<int64_t>(),
		   j["warmup"].get<int>(), j["iters"].get<int>(), j["emulated_wait_ms_per_forward"].get<double>());
	fmt::print("{:<9} {:>10} {:>9} {:>9} {:>11} {:>9} {:>13}  {}\n", "mode", "mean ms", "p50", "p90", "tokens/s",
		   "vs flat", "max |dlogit|", "moved");
	for (const auto &r : j["modes"]) {
		std::string moved;
		if (r.contains("bytes_read_per_forward"))
			moved = fmt::format("{} bytes/forward{}{}", r["bytes_read_per_forward"].get<int64_t>(),
					    r.contains("read_rate_gbps")
						    ? fmt::format(", {:.2f} GB/s over the extra time",
								  r["read_rate_gbps"].get<double>())
						    : std::string(),
					    r["o_direct"].get<bool>() ? " (O_DIRECT)" : " (buffered, cache dropped)");
		fmt::print("{:<9} {:>10.3f} {:>9.3f} {:>9.3f} {:>11.0f} {:>8.2f}x {:>13.3g}  {}\n",
			   r["mode"].get<std::string>(), r["latency_ms_mean"].get<double>(),
			   r["latency_ms_p50"].get<double>(), r["latency_ms_p90"].get<double>(),
			   r["tokens_per_second"].get<double>(), r.value("slowdown", 1.0),
			   r.value("max_abs_logit_diff", 0.0), moved);
	}
}

} // namespace knlp
