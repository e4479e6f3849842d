// Multithreaded loops on libtorch's own OpenMP thread pool.
//
// at::parallel_for is a header template whose threading exists only when the including
// file is compiled with -fopenmp: knlp's files are not (clang would bring LLVM's OpenMP
// runtime beside the GNU one libtorch and OpenBLAS use, two pools of spinning threads),
// so there it silently runs on one thread. knlp::parallel_for calls the GNU runtime's
// entry point (GOMP_parallel, found at run time in the libgomp libtorch loaded) directly:
// the same threads libtorch uses, at::get_num_threads() of them, and BLAS calls inside a
// worker run on that worker alone, as inside libtorch's own parallel regions. Without
// libgomp (a libtorch built with another backend) it falls back to at::parallel_for.
//
// f(b, e) is called on contiguous sub-ranges that split [begin, end) the way
// at::parallel_for does (at most one per thread, none shorter than `grain` except the
// last), with at::get_thread_num() the worker's index; an exception in any worker is
// rethrown after all have finished.
#pragma once
#include <cstdint>
#include <functional>

namespace knlp {

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)> &f);

// f(i) for every i in [0, n) on the same threads, each item taken by whichever thread is
// free next: for items of uneven cost, or threads that run at different speeds (a VM's),
// where parallel_for's static split leaves one waiting. The order items run in is not
// fixed; results that must not depend on it are combined by item, not by thread.
void parallel_items(int64_t n, const std::function<void(int64_t)> &f);

// Threads parallel_for would use now (1 inside a parallel region).
int parallel_threads();

} // namespace knlp
