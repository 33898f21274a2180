// Self-contained throughput probes of the batching core, for benchmarks (no Python involved).
#pragma once
#include <cstdint>
#include <utility>

namespace pyperfcore {
namespace batching {

// `producers` threads each submit `per_producer` requests through an Engine with a no-op C++
// model, keeping up to `in_flight` outstanding (1: blocking producers). Returns
// (round trips per second, mean batch size). caller_runs: see Engine. use_call: each round trip
// is one Engine::call(n) instead of submit(n) + wait(first, n).
std::pair<double, double> bench_engine(int producers, int64_t in_flight, int64_t per_producer,
                                       int64_t max_batch_size, int64_t max_delay_ns, bool caller_runs,
                                       bool use_call = false);

// Baseline: blocking producers through a plain std::mutex + std::condition_variable queue with
// one consumer taking up to max_batch_size requests at a time. Returns round trips per second.
double bench_mutex_queue(int producers, int64_t per_producer, int64_t max_batch_size);

}  // namespace batching
}  // namespace pyperfcore
