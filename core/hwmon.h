// Hardware statistics at 1 Hz on a background thread: process RSS and CPU utilisation, and
// for a GPU (through NVML, loaded with dlopen when libnvidia-ml is present) memory used and
// total, utilisation, power and temperature. Written to hw_stats.json (the original's
// gpu_stats fields: timestamp, memory_used, memory_total, utilization, power, temperature,
// elapsed_seconds, plus rss_mb and cpu_percent) every 10 s and when stopped.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

namespace knlp {

class HwMonitor {
public:
	// gpu: the CUDA device index to watch, or -1.
	HwMonitor(std::string path, int gpu, double interval_s = 1.0);
	~HwMonitor();
	void stop();
	// Mean and peak RSS and GPU memory (MiB), mean CPU and GPU utilisation, samples.
	nlohmann::json summary() const;
	bool nvml() const { return nvml_ok_; }

private:
	void run();
	void sample();
	void write() const;
	std::string path_;
	int gpu_;
	double interval_;
	bool nvml_ok_ = false;
	void *nvml_dev_ = nullptr;
	std::thread th_;
	mutable std::mutex mu_;
	std::condition_variable cv_;
	bool stop_ = false;
	nlohmann::json samples_ = nlohmann::json::array();
	double t0_ = 0, last_wall_ = 0, last_cpu_ = 0;
};

} // namespace knlp
