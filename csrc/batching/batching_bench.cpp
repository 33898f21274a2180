#include "batching_bench.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "batching.hpp"

namespace pyperfcore {
namespace batching {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

std::pair<double, double> bench_engine(int producers, int64_t in_flight, int64_t per_producer,
                                       int64_t max_batch_size, int64_t max_delay_ns, bool caller_runs,
                                       bool use_call) {
  Config cfg;
  cfg.max_batch_size = max_batch_size;
  cfg.max_delay_ns = max_delay_ns;
  cfg.max_queue_size = 0;
  std::atomic<uint64_t> answered{0};
  Engine eng(
      cfg, [&](const uint64_t*, size_t n, int64_t) { answered.fetch_add(n, std::memory_order_relaxed); },
      caller_runs);
  if (in_flight < 1) in_flight = 1;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p)
    ts.emplace_back([&] {
      int64_t left = per_producer;
      while (left > 0) {
        int64_t n = std::min(left, in_flight);
        if (use_call) {
          eng.call(eng.reserve_ids(n), n);
        } else {
          uint64_t first = eng.submit(n);
          eng.wait(first, n);
        }
        left -= n;
      }
    });
  for (auto& t : ts) t.join();
  double secs = seconds_since(t0);
  Counters c = eng.queue().counters();
  double mean = c.batches ? double(c.batched_requests) / double(c.batches) : 0.0;
  return {double(answered.load()) / secs, mean};
}

double bench_mutex_queue(int producers, int64_t per_producer, int64_t max_batch_size) {
  struct Slot {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  };
  std::mutex m;
  std::condition_variable cv;
  std::deque<Slot*> q;
  bool stop = false;
  std::thread consumer([&] {
    std::vector<Slot*> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [&] { return stop || !q.empty(); });
        if (q.empty() && stop) return;
        while (!q.empty() && static_cast<int64_t>(batch.size()) < max_batch_size) {
          batch.push_back(q.front());
          q.pop_front();
        }
      }
      for (Slot* s : batch) {
        std::lock_guard<std::mutex> lk(s->m);
        s->done = true;
        s->cv.notify_one();
      }
      batch.clear();
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p)
    ts.emplace_back([&] {
      for (int64_t i = 0; i < per_producer; ++i) {
        Slot s;
        {
          std::lock_guard<std::mutex> lk(m);
          q.push_back(&s);
        }
        cv.notify_one();
        std::unique_lock<std::mutex> lk(s.m);
        s.cv.wait(lk, [&] { return s.done; });
      }
    });
  for (auto& t : ts) t.join();
  double secs = seconds_since(t0);
  {
    std::lock_guard<std::mutex> lk(m);
    stop = true;
  }
  cv.notify_all();
  consumer.join();
  return double(producers) * double(per_producer) / secs;
}

}  // namespace batching
}  // namespace pyperfcore
