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

// Engine::call: each producer reserves ids, stores its inputs under them, then calls (push and
// wait in one); the model reads the inputs by id and writes the outputs by id.
static int run_calls(bool caller_runs, int64_t max_delay_ns) {
  Config cfg;
  cfg.max_batch_size = 8;
  cfg.max_delay_ns = max_delay_ns;
  cfg.max_queue_size = 0;
  const int producers = 8;
  const int64_t per = 1500;
  const size_t cap = 1 << 18;
  std::vector<std::atomic<int64_t>> in(cap), out(cap);
  std::atomic<int> in_model{0}, overlap{0};
  std::atomic<int64_t> max_seen{0};
  Engine eng(
      cfg,
      [&](const uint64_t* ids, size_t n, int64_t key) {
        if (in_model.fetch_add(1) != 0) overlap++;
        if (static_cast<int64_t>(n) > max_seen.load()) max_seen.store(static_cast<int64_t>(n));
        for (size_t i = 0; i < n; ++i) out[ids[i] % cap].store(in[ids[i] % cap].load() * 7 + key);
        in_model.fetch_sub(1);
      },
      caller_runs);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p)
    ts.emplace_back([&, p] {
      for (int64_t i = 0; i < per;) {
        const int64_t n = 1 + (i + p) % 3;  // 1, 2 or 3 requests per call
        uint64_t first = eng.reserve_ids(n);
        for (int64_t k = 0; k < n; ++k) in[(first + k) % cap].store(p * 100000 + i + k);
        eng.call(first, n, /*key=*/p % 2);
        for (int64_t k = 0; k < n; ++k)
          if (out[(first + k) % cap].load() != (p * 100000 + i + k) * 7 + p % 2) bad++;
        i += n;
      }
    });
  for (auto& t : ts) t.join();
  // Pushing ids twice is refused and queues nothing.
  uint64_t first = eng.reserve_ids(2);
  eng.call(first, 2);
  bool threw = false;
  try {
    eng.call(first, 2);
  } catch (const std::runtime_error&) {
    threw = true;
  }
  if (threw) bad++;  // already answered ids are free again: a second call is a new round trip
  eng.close(true);
  threw = false;
  try {
    eng.call(eng.reserve_ids(1), 1);
  } catch (const std::runtime_error&) {
    threw = true;
  }
  if (!threw) bad++;  // closed
  for (int64_t n : {0, -3}) {  // bad sizes: invalid_argument, nothing reserved or queued
    bool a = false, b = false;
    try {
      eng.reserve_ids(n);
    } catch (const std::invalid_argument&) {
      a = true;
    }
    try {
      eng.call(1, n);
    } catch (const std::invalid_argument&) {
      b = true;
    }
    if (!a || !b) bad++;
  }
  Counters c = eng.queue().counters();
  std::printf("call caller_runs %d delay %lld: requests %llu batches %llu max batch %lld overlap %d bad %d\n",
              int(caller_runs), (long long)max_delay_ns, (unsigned long long)c.batched_requests, (unsigned long long)c.batches, (long long)max_seen.load(),
              overlap.load(), bad.load());
  if (max_seen.load() > 8 || overlap.load()) bad++;
  return bad.load();
}

// BatchQueue::push_many_poll: the direct hand-out (empty queue, free slot, due at once) and the
// cases that must take the normal push + poll.
static int check_push_many_poll() {
  int bad = 0;
  Config cfg;
  cfg.max_batch_size = 4;
  cfg.max_delay_ns = 0;
  cfg.max_queue_size = 3;
  BatchQueue q(cfg);
  Poll p;
  if (q.push_many_poll(1, 2, 0, 0, 1, kNoDeadline, 100, 7, p) != Push::ok) bad++;
  if (p.ids != std::vector<uint64_t>{1, 2} || p.tags != std::vector<uint64_t>{7, 7} || p.reason != Reason::delay) bad++;
  if (q.in_flight() != 1 || q.size() != 0) bad++;
  // The slot is busy: queued, nothing handed out.
  if (q.push_many_poll(10, 1, 0, 0, 1, kNoDeadline, 101, 8, p) != Push::ok) bad++;
  if (!p.ids.empty() || !p.slot_busy || p.queued != 1) bad++;
  // Full queue (max_queue_size 3, one queued): refused, nothing queued.
  if (q.push_many_poll(20, 3, 0, 0, 1, kNoDeadline, 102, 9, p) != Push::full || !p.ids.empty()) bad++;
  q.done_and_poll(103, p);  // frees the slot and takes the queued request
  if (p.ids != std::vector<uint64_t>{10} || q.in_flight() != 1) bad++;
  q.batch_done();
  Counters c = q.counters();
  if (c.pushed != 3 || c.batches != 2 || c.batched_requests != 3 || c.rejected_full != 3) bad++;
  // A preferred size smaller than the submission: split by the normal poll, not handed out whole.
  Config c2;
  c2.max_batch_size = 8;
  c2.max_delay_ns = 1000000000;
  c2.preferred_batch_sizes = {2};
  BatchQueue q2(c2);
  if (q2.push_many_poll(30, 3, 0, 0, 1, kNoDeadline, 0, 1, p) != Push::ok) bad++;
  if (p.ids != std::vector<uint64_t>{30, 31} || p.reason != Reason::preferred || q2.size() != 1) bad++;
  q2.batch_done();
  // Exactly a preferred size: handed out directly.
  BatchQueue q3(c2);
  if (q3.push_many_poll(40, 2, 0, 0, 1, kNoDeadline, 0, 1, p) != Push::ok) bad++;
  if (p.ids != std::vector<uint64_t>{40, 41} || p.reason != Reason::preferred) bad++;
  q3.batch_done();
  // Not due yet (delay pending): queued, next_wake at the delay.
  if (q3.push_many_poll(50, 1, 0, 0, 1, kNoDeadline, 1000, 1, p) != Push::ok) bad++;
  if (!p.ids.empty() || p.next_wake_ns != 1000 + 1000000000 || q3.size() != 1) bad++;
  q3.close(false);
  if (q3.push_many_poll(60, 1, 0, 0, 1, kNoDeadline, 2000, 1, p) != Push::closed) bad++;
  // More than a batch: the oldest max_batch_size come back directly, the rest is queued.
  Config c4;
  c4.max_batch_size = 4;
  c4.max_delay_ns = 1000000000;
  BatchQueue q4(c4);
  if (q4.push_many_poll(100, 10, 0, 0, 1, kNoDeadline, 5, 3, p) != Push::ok) bad++;
  if (p.ids != std::vector<uint64_t>{100, 101, 102, 103} || p.reason != Reason::full || q4.size() != 6) bad++;
  q4.done_and_poll(6, p);
  if (p.ids != std::vector<uint64_t>{104, 105, 106, 107} || p.tags != std::vector<uint64_t>{3, 3, 3, 3}) bad++;
  q4.done_and_poll(7, p);
  if (!p.ids.empty() || q4.size() != 2 || q4.in_flight() != 0) bad++;  // 2 left, inside their delay
  // Enqueued long enough ago (enq_ns): due by delay at once.
  BatchQueue q5(c4);
  if (q5.push_many_poll(200, 2, 0, 0, 1, kNoDeadline, 2000000000, 1, p, /*enq_ns=*/0) != Push::ok) bad++;
  if (p.ids != std::vector<uint64_t>{200, 201} || p.reason != Reason::delay || p.oldest_enqueue_ns != 0) bad++;
  Counters c5 = q5.counters();
  if (c5.pushed != 2 || c5.batches != 1 || c5.by_reason[static_cast<int>(Reason::delay)] != 1) bad++;
  std::printf("push_many_poll bad %d\n", bad);
  return bad;
}

// A pipeline: engine A's model calls engine B for each of its requests, on the same thread when
// both run batches on their callers (nested caller-runs loops must not share state).
static int run_pipeline(bool cr_a, bool cr_b) {
  Config cfg;
  cfg.max_batch_size = 4;
  cfg.max_delay_ns = 0;
  cfg.max_queue_size = 0;
  const size_t cap = 1 << 16;
  std::vector<std::atomic<int64_t>> in_a(cap), out_a(cap), in_b(cap), out_b(cap);
  Engine b(
      cfg,
      [&](const uint64_t* ids, size_t n, int64_t) {
        for (size_t i = 0; i < n; ++i) out_b[ids[i] % cap].store(in_b[ids[i] % cap].load() + 1);
      },
      cr_b);
  Engine a(
      cfg,
      [&](const uint64_t* ids, size_t n, int64_t) {
        for (size_t i = 0; i < n; ++i) {
          uint64_t id = b.reserve_ids(1);
          in_b[id % cap].store(in_a[ids[i] % cap].load() * 2);
          b.call(id, 1);
          out_a[ids[i] % cap].store(out_b[id % cap].load());
        }
      },
      cr_a);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int p = 0; p < 4; ++p)
    ts.emplace_back([&, p] {
      for (int64_t i = 0; i < 500; ++i) {
        uint64_t id = a.reserve_ids(1);
        in_a[id % cap].store(p * 10000 + i);
        a.call(id, 1);
        if (out_a[id % cap].load() != (p * 10000 + i) * 2 + 1) bad++;
      }
    });
  for (auto& t : ts) t.join();
  std::printf("pipeline caller_runs %d/%d: bad %d\n", int(cr_a), int(cr_b), bad.load());
  return bad.load();
}

int main() {
  int bad = run_producers(false) + run_producers(true) + run_calls(false, 100000) + run_calls(true, 100000) +
            run_calls(false, 0) + run_calls(true, 0) + check_push_many_poll() + run_pipeline(true, true) +
            run_pipeline(true, false) + run_pipeline(false, true);
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
