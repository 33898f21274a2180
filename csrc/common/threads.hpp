// A small persistent thread pool for the data-parallel loops of the kernels.
// Fork-safe: a child process after fork() drops the parent's workers and starts its own on
// first use. Workers are joined at process exit.
#pragma once
#include <cstdint>
#include <functional>

namespace pyperfcore {

// Default: PYPERFCORE_NUM_THREADS, else OMP_NUM_THREADS, else the cores this process may use.
int get_num_threads();
// n >= 1; takes effect for the next parallel loop.
void set_num_threads(int n);
int default_num_threads();

// Calls fn(begin, end) over [0, n) split into chunks of at least `grain` items, on up to
// get_num_threads() threads (the caller included). Re-entrant calls and calls made while
// another thread is using the pool run serially on the calling thread, so it never deadlocks.
// fn must not throw.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace pyperfcore
