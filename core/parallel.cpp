#include "core/parallel.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>

#include <ATen/Parallel.h>

namespace knlp {

namespace {

struct Gomp {
	void (*parallel)(void (*)(void *), void *, unsigned, unsigned) = nullptr;
	int (*thread_num)() = nullptr;
	int (*num_threads)() = nullptr;
	int (*in_parallel)() = nullptr;
	bool ok = false;
	Gomp()
	{
		parallel = reinterpret_cast<decltype(parallel)>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
		thread_num = reinterpret_cast<decltype(thread_num)>(dlsym(RTLD_DEFAULT, "omp_get_thread_num"));
		num_threads = reinterpret_cast<decltype(num_threads)>(dlsym(RTLD_DEFAULT, "omp_get_num_threads"));
		in_parallel = reinterpret_cast<decltype(in_parallel)>(dlsym(RTLD_DEFAULT, "omp_in_parallel"));
		ok = parallel && thread_num && num_threads && in_parallel;
	}
};

const Gomp &gomp()
{
	static Gomp g;
	return g;
}

struct Job {
	int64_t begin, end, grain;
	const std::function<void(int64_t, int64_t)> *f;
	std::exception_ptr error;
	std::mutex m;
};

void run_share(void *p)
{
	auto *job = static_cast<Job *>(p);
	const Gomp &g = gomp();
	int64_t n = g.num_threads(), tid = g.thread_num();
	const int64_t range = job->end - job->begin;
	if (job->grain > 0)
		n = std::min<int64_t>(n, (range + job->grain - 1) / job->grain);
	const int64_t chunk = (range + n - 1) / n;
	const int64_t b = job->begin + tid * chunk;
	if (tid >= n || b >= job->end)
		return;
	try {
		at::internal::ThreadIdGuard id(static_cast<int>(tid)); // at::get_thread_num() inside f
		(*job->f)(b, std::min(job->end, b + chunk));
	} catch (...) {
		std::lock_guard<std::mutex> lock(job->m);
		if (!job->error)
			job->error = std::current_exception();
	}
}

} // namespace

int parallel_threads()
{
	const Gomp &g = gomp();
	if (!g.ok || g.in_parallel())
		return 1;
	return std::max(1, at::get_num_threads());
}

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)> &f)
{
	if (begin >= end)
		return;
	const Gomp &g = gomp();
	if (!g.ok) {
		at::parallel_for(begin, end, grain, f);
		return;
	}
	const int threads = parallel_threads();
	if (threads <= 1 || (grain > 0 && end - begin <= grain)) {
		f(begin, end);
		return;
	}
	Job job{begin, end, grain, &f, nullptr, {}};
	g.parallel(run_share, &job, unsigned(threads), 0);
	if (job.error)
		std::rethrow_exception(job.error);
}

void parallel_items(int64_t n, const std::function<void(int64_t)> &f)
{
	std::atomic<int64_t> next{0};
	parallel_for(0, std::min<int64_t>(n, parallel_threads()), 1, [&](int64_t, int64_t) {
		for (int64_t i; (i = next.fetch_add(1)) < n;)
			f(i);
	});
}

} // namespace knlp
