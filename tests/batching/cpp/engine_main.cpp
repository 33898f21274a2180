// Drives the batching core from C++ alone: 8 producer threads through the Engine with a C++
// model that answers by writing into the callers' slots. Exits non-zero on any wrong answer.
#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "batching/batching.hpp"

using namespace pyperfcore::batching;

int main() {
  Config cfg;
  cfg.max_batch_size = 16;
  cfg.max_delay_ns = 200000;
  cfg.max_queue_size = 0;
  const int producers = 8;
  const int64_t per = 2000;
  std::vector<std::atomic<int64_t>> answers(1 << 20);
  std::atomic<int64_t> max_seen{0};
  Engine eng(cfg, [&](const uint64_t* ids, size_t n, int64_t key) {
    if (static_cast<int64_t>(n) > max_seen.load()) max_seen.store(static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) answers[ids[i] % answers.size()].store(static_cast<int64_t>(ids[i]) * 3 + key);
  });
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
  // Deadlines: a request that expires in the queue is answered (expired) without the model.
  BatchQueue q(cfg);
  q.push(1, 0, 0, 1, /*deadline=*/100, /*now=*/0);
  Poll poll;
  q.poll(200, poll);
  if (poll.expired.size() != 1 || !poll.ids.empty()) bad++;
  Counters c = eng.queue().counters();
  std::printf("requests %llu batches %llu max batch %lld bad %d\n", (unsigned long long)c.batched_requests,
              (unsigned long long)c.batches, (long long)max_seen.load(), bad.load());
  if (c.batched_requests != static_cast<uint64_t>(producers * per) || max_seen.load() > 16) bad++;
  return bad.load() == 0 ? 0 : 1;
}
