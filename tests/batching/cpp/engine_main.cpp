// Drives the batching core from C++ alone: 8 producer threads through the Engine (worker-thread
// and caller-runs modes) with a C++ model that answers by writing into the callers' slots.
// Exits non-zero on any wrong answer.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>

#include "batching/batching.hpp"

using namespace pyperfcore::batching;

static int run_producers(bool caller_runs) {
  Config cfg;
  cfg.max_batch_size = 16;
  cfg.max_delay_ns = 200000;
  cfg.max_queue_size = 0;
  const int producers = 8;
  const int64_t per = 2000;
  std::vector<std::atomic<int64_t>> answers(1 << 20);
  std::atomic<int64_t> max_seen{0};
  std::atomic<int> in_model{0}, overlap{0};
  Engine eng(
      cfg,
      [&](const uint64_t* ids, size_t n, int64_t key) {
        if (in_model.fetch_add(1) != 0) overlap++;  // one model slot: calls never overlap
        if (static_cast<int64_t>(n) > max_seen.load()) max_seen.store(static_cast<int64_t>(n));
        for (size_t i = 0; i < n; ++i) answers[ids[i] % answers.size()].store(static_cast<int64_t>(ids[i]) * 3 + key);
        in_model.fetch_sub(1);
      },
      caller_runs);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p)
    ts.emplace_back([&, p] {
      for (int64_t i = 0; i < per; i += 4) {
        uint64_t first = eng.submit(4, /*key=*/p % 2);
        if (!eng.wait(first, 4, 5000000000LL)) bad++;
        for (uint64_t id = first; id < first + 4; ++id)
          if (answers[id % answers.size()].load() != static_cast<int64_t>(id) * 3 + p % 2) bad++;
      }
    });
  for (auto& t : ts) t.join();
  Counters c = eng.queue().counters();
  std::printf("caller_runs %d: requests %llu batches %llu max batch %lld overlap %d bad %d\n", int(caller_runs),
              (unsigned long long)c.batched_requests, (unsigned long long)c.batches, (long long)max_seen.load(),
              overlap.load(), bad.load());
  if (c.batched_requests != static_cast<uint64_t>(producers * per) || max_seen.load() > 16 || overlap.load()) bad++;
  return bad.load();
}

int main() {
  int bad = run_producers(false) + run_producers(true);
  // Deadlines: a request that expires in the queue is answered (expired) without the model.
  Config cfg;
  BatchQueue q(cfg);
  q.push(1, 0, 0, 1, /*deadline=*/100, /*now=*/0);
  Poll poll;
  q.poll(200, poll);
  if (poll.expired.size() != 1 || !poll.ids.empty()) bad++;
  // A waiter that times out while the model is busy: its group is recycled by the worker later.
  {
    Config c2;
    c2.max_delay_ns = 0;
    Engine slow(c2, [](const uint64_t*, size_t, int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(30)); });
    uint64_t a = slow.submit(1);
    if (slow.wait(a, 1, 1000000)) bad++;  // 1 ms: times out
    uint64_t b = slow.submit(2);
    if (!slow.wait(b, 2, 5000000000LL)) bad++;
    bool threw = false;
    try {
      slow.wait(b + 7, 3);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    if (!threw) bad++;
  }
  std::printf("bad %d\n", bad);
  return bad == 0 ? 0 : 1;
}
