#include "core/hwmon.h"

#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/fsutil.h"
#include "core/run.h"

namespace knlp {

namespace {

double wall_now()
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_seconds() // user + system time of this process
{
	std::ifstream f("/proc/self/stat");
	std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
	size_t p = s.rfind(')');
	if (p == std::string::npos)
		return 0;
	std::istringstream in(s.substr(p + 2));
	std::string tok;
	unsigned long long ut = 0, st = 0;
	for (int i = 3; i <= 15 && (in >> tok); i++) {
		if (i == 14)
			ut = std::stoull(tok);
		if (i == 15)
			st = std::stoull(tok);
	}
	return double(ut + st) / double(sysconf(_SC_CLK_TCK));
}

double rss_mb()
{
	std::ifstream f("/proc/self/statm");
	long long size = 0, res = 0;
	f >> size >> res;
	return double(res) * double(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// The NVML calls used, resolved once.
struct Nvml {
	struct Memory {
		unsigned long long total, free, used;
	};
	struct Util {
		unsigned int gpu, memory;
	};
	int (*init)() = nullptr;
	int (*handle)(unsigned int, void **) = nullptr;
	int (*memory)(void *, Memory *) = nullptr;
	int (*util)(void *, Util *) = nullptr;
	int (*power)(void *, unsigned int *) = nullptr;
	int (*temp)(void *, int, unsigned int *) = nullptr;
	bool ok = false;
	static Nvml &get()
	{
		static Nvml n = [] {
			Nvml x;
			void *h = dlopen("libnvidia-ml.so.1", RTLD_LAZY);
			if (!h)
				return x;
			x.init = reinterpret_cast<int (*)()>(dlsym(h, "nvmlInit_v2"));
			x.handle = reinterpret_cast<int (*)(unsigned int, void **)>(
				dlsym(h, "nvmlDeviceGetHandleByIndex_v2"));
			x.memory = reinterpret_cast<int (*)(void *, Memory *)>(dlsym(h, "nvmlDeviceGetMemoryInfo"));
			x.util = reinterpret_cast<int (*)(void *, Util *)>(dlsym(h, "nvmlDeviceGetUtilizationRates"));
			x.power =
				reinterpret_cast<int (*)(void *, unsigned int *)>(dlsym(h, "nvmlDeviceGetPowerUsage"));
			x.temp = reinterpret_cast<int (*)(void *, int, unsigned int *)>(
				dlsym(h, "nvmlDeviceGetTemperature"));
			x.ok = x.init && x.handle && x.memory && x.util && x.power && x.temp && x.init() == 0;
			return x;
		}();
		return n;
	}
};

} // namespace

HwMonitor::HwMonitor(std::string path, int gpu, double interval_s)
    : path_(std::move(path)), gpu_(gpu), interval_(interval_s)
{
	if (gpu_ >= 0) {
		Nvml &n = Nvml::get();
		nvml_ok_ = n.ok && n.handle(unsigned(gpu_), &nvml_dev_) == 0;
	}
	t0_ = last_wall_ = wall_now();
	last_cpu_ = cpu_seconds();
	sample();
	th_ = std::thread([this] { run(); });
}

HwMonitor::~HwMonitor()
{
	stop();
}

void HwMonitor::stop()
{
	{
		std::lock_guard<std::mutex> lk(mu_);
		if (stop_)
			return;
		stop_ = true;
	}
	cv_.notify_all();
	if (th_.joinable())
		th_.join();
	sample();
	write();
}

void HwMonitor::run()
{
	int n = 0;
	std::unique_lock<std::mutex> lk(mu_);
	while (!cv_.wait_for(lk, std::chrono::duration<double>(interval_), [this] { return stop_; })) {
		lk.unlock();
		sample();
		if (++n % 10 == 0)
			write();
		lk.lock();
	}
}

void HwMonitor::sample()
{
	double w = wall_now(), c = cpu_seconds();
	double cpu = w > last_wall_ ? 100.0 * (c - last_cpu_) / (w - last_wall_) : 0.0;
	last_wall_ = w, last_cpu_ = c;
	nlohmann::json s = {{"timestamp", iso_time()}, {"elapsed_seconds", w - t0_}, {"rss_mb", rss_mb()},
			    {"cpu_percent", cpu},      {"memory_used", nullptr},     {"memory_total", nullptr},
			    {"utilization", nullptr},  {"power", nullptr},	     {"temperature", nullptr}};
	if (nvml_ok_) {
		Nvml &n = Nvml::get();
		Nvml::Memory m{};
		Nvml::Util u{};
		unsigned int p = 0, t = 0;
		if (n.memory(nvml_dev_, &m) == 0)
			s["memory_used"] = double(m.used) / (1024.0 * 1024.0),
			s["memory_total"] = double(m.total) / (1024.0 * 1024.0);
		if (n.util(nvml_dev_, &u) == 0)
			s["utilization"] = u.gpu;
		if (n.power(nvml_dev_, &p) == 0)
			s["power"] = double(p) / 1000.0;
		if (n.temp(nvml_dev_, 0, &t) == 0)
			s["temperature"] = t;
	}
	std::lock_guard<std::mutex> lk(mu_);
	samples_.push_back(std::move(s));
}

void HwMonitor::write() const
{
	nlohmann::json j;
	{
		std::lock_guard<std::mutex> lk(mu_);
		j = {{"interval_seconds", interval_}, {"nvml", nvml_ok_}, {"gpu", gpu_}, {"samples", samples_}};
	}
	try {
		write_file_atomic(path_, j.dump(1) + "\n");
	} catch (...) {
		// Statistics must never stop a run.
	}
}

nlohmann::json HwMonitor::summary() const
{
	std::lock_guard<std::mutex> lk(mu_);
	double rs = 0, rp = 0, cs = 0, gs = 0, gp = 0, us = 0;
	int64_t n = 0, g = 0;
	for (const auto &s : samples_) {
		n++;
		double r = s["rss_mb"].get<double>();
		rs += r, rp = std::max(rp, r), cs += s["cpu_percent"].get<double>();
		if (!s["memory_used"].is_null()) {
			g++;
			double m = s["memory_used"].get<double>();
			gs += m, gp = std::max(gp, m),
				 us += s["utilization"].is_null() ? 0.0 : s["utilization"].get<double>();
		}
	}
	nlohmann::json j = {{"samples", n},
			    {"rss_mean_mb", n ? rs / double(n) : 0.0},
			    {"rss_peak_mb", rp},
			    {"cpu_percent_mean", n ? cs / double(n) : 0.0}};
	if (g) {
		j["gpu_memory_mean_mb"] = gs / double(g);
		j["gpu_memory_peak_mb"] = gp;
		j["gpu_utilization_mean"] = us / double(g);
	}
	return j;
}

} // namespace knlp
