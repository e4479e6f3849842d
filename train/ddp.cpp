#include "train/ddp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "knlp_features.h"
// KNLP_HAVE_GLOO / KNLP_HAVE_NCCL: set by CMake where libtorch's headers for them compile.
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef KNLP_HAVE_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef KNLP_HAVE_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "core/error.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "train/device.h"
#include "train/loop.h"
#include "train/run_folder.h"

namespace knlp {

namespace {

int env_int(const char *name, int def, bool *present = nullptr)
{
	const char *v = std::getenv(name);
	if (present)
		*present = v && *v;
	if (!v || !*v)
		return def;
	char *end = nullptr;
	long x = std::strtol(v, &end, 10);
	if (*end || x < 0 || x > 1000000)
		fail("ddp: {}={} is not a valid number", name, v);
	return static_cast<int>(x);
}

std::string env_str(const char *name)
{
	const char *v = std::getenv(name);
	return v ? v : "";
}

// A free port on the loopback interface, chosen by the kernel.
int free_tcp_port(const char *who)
{
	int s = ::socket(AF_INET, SOCK_STREAM, 0);
	sockaddr_in a{};
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof a;
	if (s < 0 || ::bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
	    ::getsockname(s, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
		if (s >= 0)
			::close(s);
		fail("{}: cannot find a free TCP port", who);
	}
	::close(s);
	return ntohs(a.sin_port);
}

} // namespace

DdpEnv ddp_env()
{
	DdpEnv e;
	bool has_rank = false, has_world = false;
	int rank = env_int("RANK", 0, &has_rank), world = env_int("WORLD_SIZE", 1, &has_world);
	if (has_rank || has_world) {
		e.source = "torchrun";
		if (!has_world)
			fail("ddp: RANK={} is set but WORLD_SIZE is not", rank);
		e.rank = rank, e.world = world;
		e.local_rank = env_int("LOCAL_RANK", rank);
		e.agent_store = env_str("TORCHELASTIC_USE_AGENT_STORE") == "True";
		e.restart = env_int("TORCHELASTIC_RESTART_COUNT", 0);
	} else if (!env_str("SLURM_PROCID").empty() && !env_str("SLURM_NTASKS").empty()) {
		e.source = "slurm";
		e.rank = env_int("SLURM_PROCID", 0), e.world = env_int("SLURM_NTASKS", 1);
		e.local_rank = env_int("SLURM_LOCALID", 0);
	} else {
		e.source = "none";
		return e;
	}
	if (e.world < 1)
		fail("ddp: WORLD_SIZE={} must be at least 1", e.world);
	if (e.rank >= e.world)
		fail("ddp: RANK={} is outside [0, WORLD_SIZE={})", e.rank, e.world);
	e.addr = env_str("MASTER_ADDR");
	bool has_port = false;
	e.port = env_int("MASTER_PORT", e.source == "slurm" ? 29500 : 0, &has_port);
	if (e.world > 1 && e.addr.empty())
		fail("ddp: WORLD_SIZE={} but MASTER_ADDR is not set (torchrun sets it; with {} export MASTER_ADDR, the "
		     "host "
		     "of rank 0, and MASTER_PORT)",
		     e.world, e.source == "slurm" ? "srun" : "a manual launch");
	if (e.world > 1 && e.source != "slurm" && !has_port)
		fail("ddp: WORLD_SIZE={} but MASTER_PORT is not set", e.world);
	if (e.world == 1 && !has_port)
		e.port = 0; // one process: its own store on a free port
	else if (e.port < 1 || e.port > 65535)
		fail("ddp: MASTER_PORT={} is not a TCP port", e.port);
	return e;
}

struct Ddp::Impl {
	c10::intrusive_ptr<c10d::Store> store;
#ifdef KNLP_HAVE_GLOO
	c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#ifdef KNLP_HAVE_NCCL
	c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
	torch::Device dev{torch::kCPU}; // where the small collectives' tensors live (NCCL: this rank's GPU)
	std::chrono::milliseconds timeout{60000};
	// Gradient buckets.
	std::vector<torch::Tensor> params, bufs;
	std::vector<int> bucket_of;
	std::vector<int64_t> offset;
	std::vector<int> pending, fired;
	std::vector<std::vector<int>> members;
	std::vector<c10::intrusive_ptr<c10d::Work>> works;
	size_t next_launch = 0;
	bool overlap = true, syncing = false;
	std::chrono::steady_clock::time_point t_sync;

	c10::intrusive_ptr<c10d::Work> allreduce(std::vector<torch::Tensor> &t, c10d::ReduceOp op = c10d::ReduceOp::SUM)
	{
		c10d::AllreduceOptions o;
		o.reduceOp = op;
#ifdef KNLP_HAVE_NCCL
		if (nccl)
			return nccl->allreduce(t, o);
#endif
#ifdef KNLP_HAVE_GLOO
		if (gloo)
			return gloo->allreduce(t, o);
#endif
		throw std::runtime_error("no process group");
	}
	c10::intrusive_ptr<c10d::Work> bcast(std::vector<torch::Tensor> &t)
	{
		c10d::BroadcastOptions o;
#ifdef KNLP_HAVE_NCCL
		if (nccl)
			return nccl->broadcast(t, o);
#endif
#ifdef KNLP_HAVE_GLOO
		if (gloo)
			return gloo->broadcast(t, o);
#endif
		throw std::runtime_error("no process group");
	}
};

// The rendezvous in the order every rank must follow (store, digest check, process group,
// first collective); kept together so the order is visible.
Ddp::Ddp(const DdpEnv &env, const std::string &backend, std::chrono::milliseconds timeout, const std::string &digest)
    : impl_(std::make_unique<Impl>()), env_(env), backend_(backend)
{
	impl_->timeout = timeout;
	const double secs = double(timeout.count()) / 1000;
	std::string addr = env.addr.empty() ? "127.0.0.1" : env.addr;
	c10d::TCPStoreOptions so;
	so.port = static_cast<std::uint16_t>(env.port > 0 ? env.port : free_tcp_port("ddp"));
	so.isServer = env.rank == 0 && !env.agent_store;
	so.numWorkers = static_cast<size_t>(env.world);
	so.waitWorkers = false;
	so.timeout = timeout;
	try {
		impl_->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
		if (env.agent_store) // torchrun's store: our keys apart from its own and earlier attempts'
			impl_->store = c10::make_intrusive<c10d::PrefixStore>(
				fmt::format("knlp/attempt{}", env.restart), impl_->store);
	} catch (const std::exception &e) {
		std::string m = e.what();
		m = m.substr(0, m.find('\n'));
		if (env.rank == 0 && !env.agent_store)
			fail("ddp: rank 0 cannot listen on {}:{} for the rendezvous (port in use? choose another "
			     "MASTER_PORT): {}",
			     addr, env.port, m);
		fail("ddp: rank {} cannot reach the rendezvous{} at {}:{} within {:.0f} s: {}", env.rank,
		     env.agent_store ? " (torchrun's agent store)" : "", addr, env.port, secs, m);
	}
	// Every rank must run the same configuration.
	auto bytes = [](const std::string &s) { return std::vector<uint8_t>(s.begin(), s.end()); };
	auto text = [](const std::vector<uint8_t> &v) { return std::string(v.begin(), v.end()); };
	try {
		impl_->store->set(fmt::format("knlp/digest/{}", env.rank), bytes(digest));
		if (env.rank == 0) {
			for (int r = 1; r < env.world; r++) {
				std::string d = text(impl_->store->get(fmt::format("knlp/digest/{}", r)));
				if (d != digest) {
					try { // let rank r read rank 0's digest and report the mismatch too
						impl_->store->wait({fmt::format("knlp/ack/{}", r)},
								   std::chrono::milliseconds(5000));
					} catch (...) {
					}
					fail("ddp: rank {}'s configuration differs from rank 0's (digest {} vs {}); "
					     "every rank must run the "
					     "same .config",
					     r, d.substr(0, 12), digest.substr(0, 12));
				}
			}
		} else {
			std::string d = text(impl_->store->get("knlp/digest/0"));
			impl_->store->set(fmt::format("knlp/ack/{}", env.rank), bytes("1"));
			if (d != digest)
				fail("ddp: rank {}'s configuration differs from rank 0's (digest {} vs {}); every rank "
				     "must run the "
				     "same .config",
				     env.rank, digest.substr(0, 12), d.substr(0, 12));
		}
	} catch (const Error &) {
		throw;
	} catch (const std::exception &e) {
		std::string m = e.what();
		fail("ddp: rank {}: the rendezvous did not complete within {:.0f} s (are all {} processes started?): "
		     "{}",
		     env.rank, secs, env.world, m.substr(0, m.find('\n')));
	}
	if (backend == "nccl") {
#ifdef KNLP_HAVE_NCCL
		impl_->dev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
		auto o = c10d::ProcessGroupNCCL::Options::create();
		o->timeout = timeout;
		try {
			impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env.rank, env.world, o);
			// NCCL creates its communicator lazily: one all-reduce now, so that a broken setup
			// fails here, before training, with the rank that saw it.
			std::vector<double> one = sum({1.0});
			if (one[0] != double(env.world))
				fail("ddp: the NCCL all-reduce check summed to {} instead of {}", one[0], env.world);
		} catch (const Error &) {
			throw;
		} catch (const std::exception &e) {
			lost("NCCL process group setup", e);
		}
#else
		fail("ddp: CONFIG_DDP_BACKEND_NCCL needs knlp built against a CUDA libtorch with NCCL (nccl.h found at "
		     "configure time); this build has none (use CONFIG_DDP_BACKEND_GLOO)");
#endif
	} else {
#ifdef KNLP_HAVE_GLOO
		auto o = c10d::ProcessGroupGloo::Options::create(timeout);
		std::string ifname = env_str("GLOO_SOCKET_IFNAME");
		if (!ifname.empty())
			o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
		else if (addr == "127.0.0.1" || addr == "localhost")
			o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
		else
			o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
		o->threads = 2;
		try {
			impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world, o);
		} catch (const std::exception &e) {
			lost("Gloo process group setup", e);
		}
#else
		fail("ddp: the Gloo backend needs libtorch's Gloo headers at configure time (Debian: apt-get install "
		     "libgloo-dev, then rebuild); this build has none");
#endif
	}
}

Ddp::~Ddp() = default;

std::string Ddp::share(const std::string &key, const std::string &value)
{
	try {
		if (env_.rank == 0)
			impl_->store->set("knlp/share/" + key, std::vector<uint8_t>(value.begin(), value.end()));
		auto v = impl_->store->get("knlp/share/" + key);
		return std::string(v.begin(), v.end());
	} catch (const std::exception &e) {
		lost("sharing " + key, e);
	}
}

void Ddp::broadcast(std::vector<torch::Tensor> ts)
{
	torch::NoGradGuard ng;
	try {
		for (auto &t : ts) {
			std::vector<torch::Tensor> v{t.detach()};
			impl_->bcast(v)->wait();
		}
	} catch (const std::exception &e) {
		lost("broadcast", e);
	}
}

std::vector<double> Ddp::reduce(const std::vector<double> &v, bool max)
{
	auto t = torch::tensor(v, torch::kDouble).to(impl_->dev);
	std::vector<torch::Tensor> ts{t};
	try {
		impl_->allreduce(ts, max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM)->wait();
	} catch (const std::exception &e) {
		lost("all-reduce", e);
	}
	t = t.cpu();
	return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

std::vector<double> Ddp::sum(const std::vector<double> &v)
{
	return reduce(v, false);
}

std::vector<double> Ddp::max(const std::vector<double> &v)
{
	return reduce(v, true);
}

void Ddp::barrier()
{
	sum({0.0});
}

void Ddp::heartbeat(int64_t step)
{
	try {
		std::string s = std::to_string(step);
		impl_->store->set(fmt::format("knlp/hb/{}", env_.rank), std::vector<uint8_t>(s.begin(), s.end()));
	} catch (const std::exception &e) {
		lost("heartbeat", e);
	}
}

void Ddp::lost(const std::string &what, const std::exception &e)
{
	std::string m = e.what();
	m = m.substr(0, m.find('\n'));
	// The lost rank: the store's host when the store is gone, else the rank whose heartbeat
	// is oldest.
	int who = -1;
	int64_t oldest = INT64_MAX;
	try {
		impl_->store->setTimeout(std::chrono::milliseconds(3000));
		for (int r = 0; r < env_.world; r++) {
			if (r == env_.rank)
				continue;
			auto key = fmt::format("knlp/hb/{}", r);
			int64_t hb = -1;
			if (impl_->store->check({key})) {
				auto v = impl_->store->get(key);
				hb = std::stoll(std::string(v.begin(), v.end()));
			}
			if (hb < oldest)
				oldest = hb, who = r;
		}
	} catch (...) {
		who = env_.rank == 0 ? -1 : 0;
	}
	if (who >= 0)
		fail("ddp: rank {} of {} is gone ({} failed on rank {}: {}); stopped. The last complete checkpoint is "
		     "intact and "
		     "resumable, with any number of processes",
		     who, env_.world, what, env_.rank, m);
	fail("ddp: a peer of rank {} is gone ({} failed: {}); stopped. The last complete checkpoint is intact and "
	     "resumable",
	     env_.rank, what, m);
}

void Ddp::attach(const std::vector<torch::Tensor> &params, int64_t bucket_bytes, bool overlap)
{
	auto &I = *impl_;
	I.params = params;
	I.overlap = overlap;
	const size_t n = params.size();
	I.bucket_of.assign(n, -1);
	I.offset.assign(n, 0);
	I.members.clear();
	int64_t cur = 0;
	std::vector<int64_t> sizes;
	for (size_t k = n; k-- > 0;) { // reverse order: the backward pass produces the last layers first
		const auto &p = params[k];
		if (I.members.empty() || cur >= bucket_bytes ||
		    p.scalar_type() != I.params[size_t(I.members.back()[0])].scalar_type()) {
			I.members.emplace_back();
			sizes.push_back(0);
			cur = 0;
		}
		I.bucket_of[k] = int(I.members.size()) - 1;
		I.offset[k] = sizes.back();
		I.members.back().push_back(int(k));
		sizes.back() += p.numel();
		cur += p.numel() * int64_t(p.element_size());
	}
	I.bufs.clear();
	for (size_t b = 0; b < I.members.size(); b++)
		I.bufs.push_back(
			torch::zeros({sizes[b]}, params[size_t(I.members[b][0])].options().requires_grad(false)));
	I.pending.assign(I.members.size(), 0);
	I.fired.assign(n, 0);
	I.works.assign(I.members.size(), {});
	if (overlap)
		for (size_t k = 0; k < n; k++) {
			torch::Tensor p = params[k];
			p.register_hook([this, k](torch::Tensor g) {
				auto &J = *impl_;
				if (!J.syncing || J.fired[k])
					return;
				torch::NoGradGuard ng;
				const auto &q = J.params[k];
				int b = J.bucket_of[k];
				auto slice = J.bufs[size_t(b)].narrow(0, J.offset[k], q.numel());
				if (q.grad().defined())
					slice.copy_((q.grad() + g).reshape({-1}));
				else
					slice.copy_(g.reshape({-1}));
				J.fired[k] = 1;
				if (--J.pending[size_t(b)] == 0) // launch every ready bucket, always in bucket order
					while (J.next_launch < J.members.size() && J.pending[J.next_launch] == 0) {
						std::vector<torch::Tensor> v{J.bufs[J.next_launch]};
						J.works[J.next_launch] = J.allreduce(v);
						J.next_launch++;
					}
			});
		}
}

void Ddp::begin_sync()
{
	auto &I = *impl_;
	I.syncing = true;
	I.next_launch = 0;
	for (size_t b = 0; b < I.members.size(); b++)
		I.pending[b] = int(I.members[b].size());
	std::fill(I.fired.begin(), I.fired.end(), 0);
	for (auto &w : I.works)
		w.reset();
	I.t_sync = std::chrono::steady_clock::now();
}

void Ddp::end_sync()
{
	auto &I = *impl_;
	torch::NoGradGuard ng;
	auto t_bwd = std::chrono::steady_clock::now();
	stats_.backward_seconds += std::chrono::duration<double>(t_bwd - I.t_sync).count();
	try {
		// Buckets the hooks did not finish (no overlap, or parameters without a gradient this
		// pass): filled from .grad and sent, in bucket order.
		for (size_t b = I.next_launch; b < I.members.size(); b++) {
			for (int k : I.members[b]) {
				if (I.fired[size_t(k)])
					continue;
				const auto &q = I.params[size_t(k)];
				auto slice = I.bufs[b].narrow(0, I.offset[size_t(k)], q.numel());
				if (q.grad().defined())
					slice.copy_(q.grad().reshape({-1}));
				else
					slice.zero_();
			}
			std::vector<torch::Tensor> v{I.bufs[b]};
			I.works[b] = I.allreduce(v);
		}
		I.next_launch = I.members.size();
		for (size_t b = 0; b < I.members.size(); b++) {
			I.works[b]->wait();
			stats_.bytes += I.bufs[b].numel() * int64_t(I.bufs[b].element_size());
			for (int k : I.members[b]) {
				auto &q = I.params[size_t(k)];
				auto slice = I.bufs[b].narrow(0, I.offset[size_t(k)], q.numel()).view(q.sizes());
				if (q.grad().defined())
					q.mutable_grad().copy_(slice);
				else
					q.mutable_grad() = slice.clone();
			}
		}
	} catch (const Error &) {
		throw;
	} catch (const std::exception &e) {
		lost("gradient all-reduce", e);
	}
	I.syncing = false;
	stats_.syncs++;
	stats_.buckets += int64_t(I.members.size());
	stats_.comm_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_bwd).count();
}

bool gloo_available()
{
#ifdef KNLP_HAVE_GLOO
	return true;
#else
	return false;
#endif
}

bool nccl_available()
{
#ifdef KNLP_HAVE_NCCL
	return true;
#else
	return false;
#endif
}

void watch_launcher(const DdpEnv &env)
{
	if (env.source == "none")
		return;
	// A rank dies with the process that launched it (knlp launch, torchrun's agent, Slurm's
	// step daemon): a launcher killed with SIGKILL cannot stop its ranks, and they would
	// train on to the end. PR_SET_PDEATHSIG would do it but follows the launching thread,
	// not the process (a launcher whose spawning thread ends would kill its ranks), so a
	// watchdog thread checks the parent instead; the last complete checkpoint stays.
	static bool started = false;
	if (started)
		return;
	started = true;
	const pid_t parent = getppid();
	const int rank = env.rank;
	std::thread([parent, rank] {
		while (true) {
			std::this_thread::sleep_for(std::chrono::milliseconds(250));
			if (getppid() != parent) {
				std::fprintf(stderr, "knlp: error: rank %d: its launcher (pid %d) is gone; stopping\n",
					     rank, int(parent));
				std::fflush(stderr);
				_exit(1);
			}
		}
	}).detach();
}

DdpStart start_data_parallel(const TrainRequest &req, const Config &cfg, const std::string &prefix)
{
	DdpStart st;
	DdpEnv env = ddp_env();
	watch_launcher(env);
	const Settings &s = cfg.settings();
	if (env.world > 1 && !s.ddp.enabled)
		fail("ddp: WORLD_SIZE={} ({} launch) but CONFIG_DDP is not set; enable it or start one process",
		     env.world, env.source);
	// A launched CONFIG_DDP run uses the process group even with one process (torchrun
	// --nproc_per_node=1): the whole data-parallel path, on one GPU or core.
	if (!(env.world > 1 || (env.source != "none" && s.ddp.enabled))) {
		st.run_dir = open_run_dir(req, cfg, prefix, &st.ckpt);
		return st;
	}
	const bool cuda = select_device(s.core).is_cuda();
	std::string backend =
		s.ddp.backend == choice::DdpBackend::Auto ? (cuda ? "nccl" : "gloo") : name_of(s.ddp.backend);
	if (backend == "nccl" && !cuda)
		fail("ddp: CONFIG_DDP_BACKEND_NCCL needs CUDA devices, but this run is on the CPU (choose "
		     "CONFIG_DDP_BACKEND_GLOO or _AUTO)");
	st.ddp = std::make_unique<Ddp>(env, backend, std::chrono::seconds(s.ddp.timeout), config_digest(cfg));
	st.rank = env.rank, st.world = env.world, st.local_rank = env.local_rank;
	// Rank 0 opens (or resumes) the run folder; every rank uses its choice.
	std::string dir;
	if (st.rank == 0) {
		try {
			dir = open_run_dir(req, cfg, prefix, &st.ckpt);
		} catch (const Error &e) {
			st.ddp->share("run_dir", std::string("\x01") + e.what());
			throw;
		}
	}
	dir = st.ddp->share("run_dir", dir);
	if (!dir.empty() && dir[0] == '\x01')
		fail("ddp: rank 0 could not open the run folder: {}", dir.substr(1));
	st.run_dir = dir;
	st.ckpt = st.ddp->share("resume_checkpoint", st.ckpt);
	return st;
}

void silence_other_ranks(int rank)
{
	if (rank == 0)
		return;
	if (!std::freopen("/dev/null", "w", stdout))
		fmt::print(stderr, "knlp: warning: rank {} could not silence its standard output\n", rank);
	Progress::set_quiet(true);
}

nlohmann::json ddp_record(const Ddp &ddp, const DdpSettings &c, int64_t global_batch, double replica_spread)
{
	const auto &st = ddp.stats();
	return {{"world_size", ddp.world()},
		{"backend", ddp.backend()},
		{"overlap", c.overlap},
		{"bucket_mb", c.bucket_mb},
		{"global_batch", global_batch},
		{"syncs", st.syncs},
		{"allreduce_bytes", st.bytes},
		{"backward_seconds", st.backward_seconds},
		{"comm_wait_seconds", st.comm_wait_seconds},
		{"replica_weight_checksum_spread", replica_spread}};
}

double replica_weight_spread(Ddp &ddp, torch::nn::Module &m)
{
	torch::NoGradGuard ng;
	double cs = 0;
	for (auto &p : m.parameters())
		cs += p.detach().to(torch::kDouble).sum().item<double>();
	auto hi = ddp.max({cs, -cs});
	return hi[0] + hi[1];
}

std::string config_digest(const Config &cfg)
{
	std::string t;
	std::istringstream in(cfg.to_text());
	for (std::string line; std::getline(in, line);) {
		// Symbols a rank may legitimately differ in, or that only rank 0 uses.
		if (line.rfind("CONFIG_OUTPUT_DIR=", 0) == 0 || line.rfind("CONFIG_RUN_NAME=", 0) == 0 ||
		    line.rfind("CONFIG_DEBUG_VERBOSE", 0) == 0 || line.rfind("# CONFIG_DEBUG_VERBOSE", 0) == 0)
			continue;
		t += line + "\n";
	}
	return sha256_hex(t);
}

int launch_local(int nproc, const std::vector<std::string> &args, int port, int grace)
{
	if (nproc < 1)
		fail("launch: --nproc must be at least 1");
	if (port == 0)
		port = free_tcp_port("launch");
	std::vector<pid_t> pids;
	for (int r = 0; r < nproc; r++) {
		pid_t pid = ::fork();
		if (pid < 0)
			fail("launch: fork failed");
		if (pid == 0) {
			setenv("RANK", std::to_string(r).c_str(), 1);
			setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
			setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
			setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
			setenv("MASTER_ADDR", "127.0.0.1", 1);
			setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
			std::vector<char *> argv;
			std::string self = "/proc/self/exe";
			argv.push_back(const_cast<char *>("knlp"));
			for (const auto &a : args)
				argv.push_back(const_cast<char *>(a.c_str()));
			argv.push_back(nullptr);
			::execv(self.c_str(), argv.data());
			_exit(127);
		}
		pids.push_back(pid);
	}
	fmt::print(stderr, "launch: {} processes on 127.0.0.1:{} (pids", nproc, port);
	for (auto p : pids)
		fmt::print(stderr, " {}", p);
	fmt::print(stderr, ")\n");
	int rc = 0, alive = nproc;
	std::chrono::steady_clock::time_point deadline{};
	bool stopping = false, killed = false;
	std::map<pid_t, int> rank_of;
	for (int r = 0; r < nproc; r++)
		rank_of[pids[size_t(r)]] = r;
	while (alive > 0) {
		int st = 0;
		pid_t p = ::waitpid(-1, &st, WNOHANG);
		if (p > 0) {
			alive--;
			int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			if (code != 0 && rc == 0) {
				rc = code;
				fmt::print(stderr,
					   "launch: rank {} (pid {}) {}; the others stop on their own or in {} s\n",
					   rank_of[p], p,
					   WIFEXITED(st) ? fmt::format("exited with code {}", code)
							 : fmt::format("was killed by signal {}", WTERMSIG(st)),
					   grace);
				stopping = true;
				deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace);
			}
			continue;
		}
		if (stopping && std::chrono::steady_clock::now() > deadline) {
			for (auto q : pids)
				::kill(q, killed ? SIGKILL : SIGTERM);
			deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
			killed = true;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
	}
	return rc;
}

} // namespace knlp
