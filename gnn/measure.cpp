#include "gnn/measure.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include "gnn/pagestore.h"

namespace knlp {

nlohmann::json EpochIo::to_json(const PageGeometry &g) const
{
	double nb = double(std::max<int64_t>(1, batches));
	return {{"batches", batches},
		{"ra_fetch", ra_fetch(g)},
		{"ra_signal", ra_signal(g)},
		{"pages_per_batch", double(pages) / nb},
		{"loaded_per_batch", double(loaded) / nb},
		{"supervised_per_batch", double(supervised) / nb},
		{"bytes_per_batch", double(io_bytes) / nb},
		{"reads_per_batch", double(io_reads) / nb},
		{"fetch_ms_per_batch", 1000 * io_seconds / nb},
		{"sampler_batches_per_second", sample_seconds > 0 ? double(batches) / sample_seconds : 0.0},
		{"wall_batches_per_second", wall_seconds > 0 ? double(batches) / wall_seconds : 0.0}};
}

EpochIo sample_epoch(const Graph &g, const Csr &adj, const Layout &l, const PageGeometry &geo, const SamplerOptions &o,
		     const std::string &store_path, int threads, int64_t epoch, int64_t max_batches)
{
	std::unique_ptr<PageStore> store;
	if (!store_path.empty())
		store = std::make_unique<PageStore>(store_path, g, l, geo);
	Sampler s(g, adj, l, geo, o);
	s.prepare_epoch(epoch);
	int64_t nb = s.batches();
	if (max_batches > 0)
		nb = std::min(nb, max_batches);
	EpochIo r;
	std::mutex mu;
	std::atomic<int64_t> next{0};
	auto t0 = std::chrono::steady_clock::now();
	auto work = [&] {
		std::vector<float> x;
		for (int64_t b; (b = next++) < nb;) {
			auto s0 = std::chrono::steady_clock::now();
			GnnBatch bt = s.make(b);
			double ss = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
			FetchStats fs;
			if (store) {
				x.resize(bt.nodes.size() * size_t(g.features));
				fs = store->fetch(bt.nodes, x.data());
			}
			std::lock_guard<std::mutex> lk(mu);
			r.batches++, r.pages += bt.pages_touched, r.loaded += int64_t(bt.nodes.size());
			r.supervised += int64_t(bt.supervised.size()), r.edges += int64_t(bt.esrc.size());
			r.io_bytes += fs.bytes, r.io_pages += fs.pages, r.io_reads += fs.reads,
				r.io_seconds += fs.seconds;
			r.sample_seconds += ss;
		}
	};
	std::vector<std::thread> pool;
	for (int t = 0; t < std::max(1, threads); t++)
		pool.emplace_back(work);
	for (auto &t : pool)
		t.join();
	r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	if (store) {
		store.reset();
		std::filesystem::remove(store_path);
	}
	return r;
}

} // namespace knlp
