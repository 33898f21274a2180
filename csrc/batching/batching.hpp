// Dynamic batching core: a request queue that forms batches for a model, usable from C++
// without Python. Requests are opaque 64-bit ids; the caller keeps the payloads.
//
// What must hold (the Python layer and its tests rely on it):
//  - a batch is formed only while fewer than max_concurrent_batches are in flight;
//  - a batch never mixes keys and never exceeds max_batch_size or max_batch_cost;
//  - the delay clock of a key is the age of its oldest queued request;
//  - an expired request is removed (and reported) while waiting, even if the model is busy;
//  - every pushed id leaves exactly once: in a batch, as expired, as dropped, or by cancel().
//
// Cost model: a request lives in a slab slot (no allocation per request once warm); ids reach
// their slot through a flat open-addressing index (no node per id); priority FIFOs hold
// (slot, generation) pairs so a cancelled or expired entry is recognised as stale without a
// lookup. Waiters are woken only when a batch can form (or a deadline/slot change needs them).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace pyperfcore {
namespace batching {

constexpr int64_t kNoDeadline = INT64_MAX;

struct Config {
  int64_t max_batch_size = 32;
  int64_t max_delay_ns = 5000000;
  std::vector<int64_t> preferred_batch_sizes;  // each in [1, max_batch_size]
  int64_t max_batch_cost = 0;                  // 0: no cost limit
  int64_t max_queue_size = 10000;              // 0: unbounded
  int64_t max_concurrent_batches = 1;
  int64_t starvation_ns = 0;  // > 0: a request waiting this long outranks every priority
};

// Empty string if cfg is valid, else what is wrong.
std::string validate(const Config& cfg);

enum class Push : int { ok = 0, full = 1, closed = 2, too_costly = 3, duplicate = 4 };
enum class Reason : int { none = 0, full = 1, preferred = 2, delay = 3, drain = 4 };

// Result of one poll()/wait().
struct Poll {
  std::vector<uint64_t> ids;  // the batch, in the order the model should see it; empty: none
  std::vector<uint64_t> tags;          // the tag pushed with each id of the batch
  int64_t key = 0;
  int64_t cost = 0;
  Reason reason = Reason::none;
  int64_t oldest_enqueue_ns = 0;       // enqueue time of the oldest request in the batch
  std::vector<uint64_t> expired;       // removed because their deadline passed
  std::vector<uint64_t> expired_tags;
  std::vector<uint64_t> dropped;       // removed by close(drain=false)
  std::vector<uint64_t> dropped_tags;
  int64_t next_wake_ns = kNoDeadline;  // when polling again may give something new
  bool finished = false;               // closed and nothing left to hand out
  int64_t queued = 0;                  // requests still queued after this poll
  bool slot_busy = false;              // every model slot was taken when polled (before this batch)
  void clear() {
    ids.clear();
    tags.clear();
    expired.clear();
    expired_tags.clear();
    dropped.clear();
    dropped_tags.clear();
    key = cost = oldest_enqueue_ns = 0;
    reason = Reason::none;
    next_wake_ns = kNoDeadline;
    finished = false;
    slot_busy = false;
  }
  bool has_work() const { return !ids.empty() || !expired.empty() || !dropped.empty() || finished; }
};

struct Counters {
  uint64_t pushed = 0, rejected_full = 0, rejected_closed = 0, rejected_cost = 0;
  uint64_t expired = 0, cancelled = 0, dropped = 0, batches = 0, batched_requests = 0;
  uint64_t by_reason[5] = {0, 0, 0, 0, 0};
};

class BatchQueue {
 public:
  explicit BatchQueue(const Config& cfg);  // throws std::invalid_argument
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Adds one request. deadline_ns is absolute on the same clock as now_ns (kNoDeadline: none).
  // tag is opaque caller data handed back with the id (Poll::tags / expired_tags / dropped_tags).
  Push push(uint64_t id, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns, int64_t now_ns,
            uint64_t tag = 0);
  // Adds ids first_id .. first_id+n-1 with the same attributes and tag; all or nothing, one lock.
  // wake=false: no waiter is notified (the caller polls itself, then calls wake_one() if it
  // could not take the batch).
  Push push_many(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns,
                 int64_t now_ns, uint64_t tag = 0, bool wake = true);
  // push_many without waking anyone (enqueued at enq_ns, default now_ns), then poll(now_ns, out),
  // under one lock (a caller-runs producer's first step, the asyncio driver's per-iteration
  // push). With an empty queue and a free slot, the part of the submission that is due at once
  // is handed out without being queued. out is cleared when the push fails.
  Push push_many_poll(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns,
                      int64_t now_ns, uint64_t tag, Poll& out, int64_t enq_ns = -1);
  // Wakes one waiter, if any, to look at the queue again.
  void wake_one();
  // Removes a queued request; false if it is not queued (already batched, expired or unknown).
  bool cancel(uint64_t id);
  // Non-blocking: removes expired requests and, if a model slot is free and a batch is due at
  // now_ns, takes it (the slot stays taken until batch_done()).
  void poll(int64_t now_ns, Poll& out);
  // Blocking on the steady clock (now_ns()): returns as soon as poll() has something to hand
  // out, or after timeout_ns.
  void wait(int64_t timeout_ns, Poll& out);
  // batch_done() then wait(), under one lock and without waking another waiter (this thread
  // polls at once): a worker's way back from running a batch.
  void done_and_wait(int64_t timeout_ns, Poll& out);
  // Frees the slot taken by a batch.
  void batch_done();
  // batch_done() then poll(now_ns, out) under one lock; a waiter is woken (as batch_done does)
  // only when this poll takes nothing.
  void done_and_poll(int64_t now_ns, Poll& out);
  // No more pushes. drain: queued requests are still sent (without waiting for the delay);
  // otherwise they are handed back as `dropped` by the next poll/wait.
  void close(bool drain);
  // Changes the size cap and the delay at run time (SLO-aware policy).
  void set_policy(int64_t max_batch_size, int64_t max_delay_ns);
  // Wakes every waiter (their wait() returns, possibly with nothing).
  void interrupt();

  size_t size() const;
  int64_t in_flight() const;
  bool closed() const;
  Counters counters() const;
  Config config() const;
  static int64_t now_ns();

 private:
  // Open-addressing id -> slot index (linear probing, backward-shift deletion): no allocation
  // per id, one or two cache lines per lookup.
  class IdIndex {
   public:
    IdIndex() { rehash(64); }
    // Inserts id -> slot; false (and nothing changed) if id is present.
    bool insert(uint64_t id, uint32_t slot);
    // Slot of id, or kNone.
    uint32_t find(uint64_t id) const;
    void erase(uint64_t id);
    size_t size() const { return size_; }
    void clear() { rehash(64); }
    static constexpr uint32_t kNone = UINT32_MAX;

   private:
    size_t home(uint64_t id) const { return static_cast<size_t>((id * 0x9E3779B97F4A7C15ull) >> shift_); }
    void rehash(size_t cap);
    std::vector<uint64_t> keys_;
    std::vector<uint32_t> vals_;  // kNone: empty
    size_t mask_ = 0, size_ = 0;
    int shift_ = 58;
  };
  struct Req {
    uint64_t id;
    uint64_t tag;
    int64_t key;
    int64_t cost;
    int64_t enq;
    int64_t deadline;
    int32_t priority;
    uint32_t gen;  // bumped when the slot is freed: stale FIFO/heap entries no longer match
    bool live;
  };
  // A FIFO entry: slot in the low 32 bits, the slot's generation in the high 32.
  static uint64_t ref(uint32_t slot, uint32_t gen) { return (uint64_t(gen) << 32) | slot; }
  bool ref_live(uint64_t r) const {
    const Req& q = slots_[static_cast<uint32_t>(r)];
    return q.live && q.gen == static_cast<uint32_t>(r >> 32);
  }
  struct Level {
    int32_t priority;
    std::deque<uint64_t> fifo;  // refs; stale ones are skipped lazily
  };
  struct KeyQueue {
    std::vector<Level> levels;  // sorted by priority, highest first; empty levels are kept
    int64_t count = 0;
    int64_t cost = 0;
  };

  Push check_push_locked(int64_t n, int64_t cost) const;
  Push push_many_locked(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost,
                        int64_t deadline_ns, int64_t now_ns, uint64_t tag, bool wake);
  uint32_t alloc_slot_locked();
  void free_slot_locked(uint32_t slot);
  KeyQueue& key_queue_locked(int64_t key);
  std::deque<uint64_t>& level_locked(KeyQueue& kq, int32_t priority);
  void insert_locked(uint32_t slot, uint64_t id, uint64_t tag, int64_t key, KeyQueue& kq, std::deque<uint64_t>& fifo,
                     int32_t priority, int64_t cost, int64_t deadline, int64_t now);
  // Removes a live request that is not being batched (cancel, expiry).
  void remove_live_locked(uint32_t slot);
  void poll_locked(int64_t now, Poll& out);
  // Drops stale refs at the fronts of a key's levels; false if every level is empty.
  bool clean_fronts_locked(KeyQueue& kq);
  int64_t oldest_locked(const KeyQueue& kq) const;
  void take_locked(KeyQueue& kq, int64_t limit, int64_t now, Poll& out);
  void compact_locked();
  void maybe_notify_locked(int64_t due_ns);
  void wait_locked(std::unique_lock<std::mutex>& lk, int64_t timeout_ns, Poll& out);
  void erase_key_if_idle_locked(std::unordered_map<int64_t, KeyQueue>::iterator kit);

  Config cfg_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::vector<Req> slots_;
  std::vector<uint32_t> free_;
  IdIndex index_;
  std::unordered_map<int64_t, KeyQueue> keys_;
  std::vector<std::pair<int64_t, uint64_t>> deadlines_;  // min-heap (deadline, ref); lazily cleaned
  std::vector<std::pair<uint64_t, uint64_t>> dropped_;   // (id, tag)
  int64_t stale_ = 0;                                    // refs left in FIFOs/heap after cancel/expiry
  int64_t live_count_ = 0;
  int64_t in_flight_ = 0;
  bool closed_ = false;
  bool drain_ = false;
  int waiters_ = 0;
  int64_t sleep_until_ = INT64_MIN;  // INT64_MIN: unknown, every push notifies a waiter
  uint64_t interrupts_ = 0;
  Counters counters_;
};

// Thread callers wait here for their request to be answered (the payload travels elsewhere).
class Completions {
 public:
  // Registers an id before it is pushed, so a completion can never be missed.
  void expect(uint64_t id);
  void complete(const uint64_t* ids, size_t n);
  // true when id was completed; false after timeout_ns (< 0: no timeout). The entry is
  // removed either way.
  bool wait(uint64_t id, int64_t timeout_ns);
  // Forgets an expected id that will never be waited on.
  void forget(uint64_t id);
  size_t size() const;

 private:
  static constexpr int kStripes = 64;
  struct Stripe {
    mutable std::mutex m;
    std::condition_variable cv;
    std::unordered_map<uint64_t, bool> state;  // id -> done
  };
  Stripe& stripe(uint64_t id) { return stripes_[(id * 0x9E3779B97F4A7C15ull) >> 58]; }
  Stripe stripes_[kStripes];
};

// Embedding API for C++ services: worker threads run `model` on each batch; producers submit
// and wait. model(ids, n, key) must answer every id (payloads live with the caller).
//
// Completion is tracked per submit() call (a group), not per id: the worker decrements the
// group's counter once per run of its ids in a batch and wakes its producer once, when the
// whole group is answered.
class Engine {
 public:
  using Model = std::function<void(const uint64_t* ids, size_t n, int64_t key)>;
  // caller_runs: a producer in wait() first runs any batch that is due itself (the batch may hold
  // other producers' requests; the slot rule still serialises model calls), and blocks only when
  // none is; the worker threads take what producers leave. Saves the two thread hand-offs of a
  // round trip when producers block; the model then also runs on producer threads.
  Engine(const Config& cfg, Model model, bool caller_runs = false);
  ~Engine();  // drains and joins
  // Returns the first id of n consecutive ids, or throws std::runtime_error (full/closed).
  uint64_t submit(int64_t n, int64_t key = 0, int32_t priority = 0, int64_t cost = 1,
                  int64_t deadline_ns = kNoDeadline);
  // Waits until the n ids returned by submit() (first, n) are answered (or expired); false on
  // timeout. Every submit() must be waited on once with its own (first, n).
  bool wait(uint64_t first, int64_t n, int64_t timeout_ns = -1);
  // Reserves n consecutive ids (returns the first) for call(): the caller can store each
  // request's payload under its id before the model can see it.
  uint64_t reserve_ids(int64_t n);
  // Pushes the reserved ids first .. first+n-1 and waits until every one is answered (or
  // expired), in one call: the completion group lives on this call's stack (no table entry)
  // and, with caller_runs, the push and the first poll share one lock, as do a batch's slot
  // release and the next poll. Throws as submit() (nothing is queued then).
  void call(uint64_t first, int64_t n, int64_t key = 0, int32_t priority = 0, int64_t cost = 1,
            int64_t deadline_ns = kNoDeadline);
  void close(bool drain = true);
  BatchQueue& queue() { return q_; }

 private:
  struct Group {
    std::atomic<int64_t> left{0};
    std::mutex m;
    std::condition_variable cv;
    bool done = false;       // guarded by m
    bool abandoned = false;  // guarded by m: the waiter timed out; the worker recycles it
    uint64_t first = 0;
    int64_t n = 0;
  };
  Group* new_group();
  void recycle(Group* g);
  void answer(const uint64_t* tags, size_t n);
  // Runs what one poll hands out; true if it ran a batch.
  bool serve(Poll& p);
  void run();
  bool caller_runs_ = false;
  BatchQueue q_;
  Model model_;
  std::vector<std::thread> workers_;
  std::mutex id_m_;
  std::atomic<uint64_t> next_id_{1};
  std::unordered_map<uint64_t, Group*> groups_;  // first id -> group (one entry per submit)
  std::vector<std::unique_ptr<Group>> pool_;     // owns every group
  std::vector<Group*> free_groups_;
};

}  // namespace batching
}  // namespace pyperfcore
