#include "batching.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>

namespace pyperfcore {
namespace batching {

namespace {
using Entry = std::pair<int64_t, uint64_t>;
struct HeapGreater {
  bool operator()(const Entry& a, const Entry& b) const { return a > b; }
};
int64_t sat_add(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  return a + b;
}
}  // namespace

std::string validate(const Config& c) {
  if (c.max_batch_size < 1) return "max_batch_size must be >= 1";
  if (c.max_delay_ns < 0) return "max_delay must be >= 0";
  if (c.max_batch_cost < 0) return "max_batch_cost must be >= 0 (0: no cost limit)";
  if (c.max_queue_size < 0) return "max_queue_size must be >= 0 (0: unbounded)";
  if (c.max_concurrent_batches < 1) return "max_concurrent_batches must be >= 1";
  if (c.starvation_ns < 0) return "starvation delay must be >= 0 (0: strict priority)";
  for (int64_t p : c.preferred_batch_sizes)
    if (p < 1 || p > c.max_batch_size) return "preferred_batch_sizes must lie in [1, max_batch_size]";
  return "";
}

int64_t BatchQueue::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

BatchQueue::BatchQueue(const Config& cfg) : cfg_(cfg) {
  std::string err = validate(cfg_);
  if (!err.empty()) throw std::invalid_argument(err);
  std::sort(cfg_.preferred_batch_sizes.begin(), cfg_.preferred_batch_sizes.end());
  cfg_.preferred_batch_sizes.erase(std::unique(cfg_.preferred_batch_sizes.begin(), cfg_.preferred_batch_sizes.end()),
                                   cfg_.preferred_batch_sizes.end());
}

// ------------------------------------------------------------------ IdIndex

void BatchQueue::IdIndex::rehash(size_t cap) {
  std::vector<uint64_t> ok;
  std::vector<uint32_t> ov;
  ok.swap(keys_);
  ov.swap(vals_);
  keys_.assign(cap, 0);
  vals_.assign(cap, kNone);
  mask_ = cap - 1;
  shift_ = 64;
  for (size_t c = cap; c > 1; c >>= 1) --shift_;
  size_ = 0;
  for (size_t i = 0; i < ov.size(); ++i)
    if (ov[i] != kNone) insert(ok[i], ov[i]);
}

bool BatchQueue::IdIndex::insert(uint64_t id, uint32_t slot) {
  if ((size_ + 1) * 2 > keys_.size()) rehash(keys_.size() * 2);
  for (size_t i = home(id);; i = (i + 1) & mask_) {
    if (vals_[i] == kNone) {
      keys_[i] = id;
      vals_[i] = slot;
      ++size_;
      return true;
    }
    if (keys_[i] == id) return false;
  }
}

uint32_t BatchQueue::IdIndex::find(uint64_t id) const {
  for (size_t i = home(id);; i = (i + 1) & mask_) {
    if (vals_[i] == kNone) return kNone;
    if (keys_[i] == id) return vals_[i];
  }
}

void BatchQueue::IdIndex::erase(uint64_t id) {
  size_t i = home(id);
  for (;; i = (i + 1) & mask_) {
    if (vals_[i] == kNone) return;
    if (keys_[i] == id) break;
  }
  // Backward-shift deletion keeps every probe chain unbroken without tombstones.
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask_;
    if (vals_[j] == kNone) break;
    size_t h = home(keys_[j]);
    // Move j back to i if its home does not lie cyclically in (i, j].
    bool between = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (!between) {
      keys_[i] = keys_[j];
      vals_[i] = vals_[j];
      i = j;
    }
  }
  vals_[i] = kNone;
  --size_;
}

// ------------------------------------------------------------------ BatchQueue

Push BatchQueue::check_push_locked(int64_t n, int64_t cost) const {
  if (closed_) return Push::closed;
  if (cfg_.max_batch_cost > 0 && cost > cfg_.max_batch_cost) return Push::too_costly;
  if (cfg_.max_queue_size > 0 && live_count_ + n > cfg_.max_queue_size) return Push::full;
  return Push::ok;
}

uint32_t BatchQueue::alloc_slot_locked() {
  if (!free_.empty()) {
    uint32_t s = free_.back();
    free_.pop_back();
    return s;
  }
  if (slots_.size() >= IdIndex::kNone - 1) throw std::length_error("batching: too many queued requests");
  slots_.push_back(Req{0, 0, 0, 0, 0, 0, 0, 0, false});
  return static_cast<uint32_t>(slots_.size() - 1);
}

void BatchQueue::free_slot_locked(uint32_t slot) {
  Req& r = slots_[slot];
  index_.erase(r.id);
  r.live = false;
  r.gen += 1;
  free_.push_back(slot);
  live_count_ -= 1;
}

BatchQueue::KeyQueue& BatchQueue::key_queue_locked(int64_t key) { return keys_[key]; }

std::deque<uint64_t>& BatchQueue::level_locked(KeyQueue& kq, int32_t priority) {
  auto it = kq.levels.begin();
  while (it != kq.levels.end() && it->priority > priority) ++it;
  if (it != kq.levels.end() && it->priority == priority) return it->fifo;
  return kq.levels.insert(it, Level{priority, {}})->fifo;
}

void BatchQueue::insert_locked(uint32_t slot, uint64_t id, uint64_t tag, int64_t key, KeyQueue& kq,
                               std::deque<uint64_t>& fifo, int32_t priority, int64_t cost, int64_t deadline,
                               int64_t now) {
  Req& r = slots_[slot];
  r.id = id;
  r.tag = tag;
  r.key = key;
  r.cost = cost;
  r.enq = now;
  r.deadline = deadline;
  r.priority = priority;
  r.live = true;
  live_count_ += 1;
  fifo.push_back(ref(slot, r.gen));
  kq.count += 1;
  kq.cost += cost;
  if (deadline != kNoDeadline) {
    deadlines_.emplace_back(deadline, ref(slot, r.gen));
    std::push_heap(deadlines_.begin(), deadlines_.end(), HeapGreater());
  }
}

void BatchQueue::maybe_notify_locked(int64_t due_ns) {
  if (waiters_ == 0) return;
  if (sleep_until_ == INT64_MIN || due_ns < sleep_until_) {
    sleep_until_ = INT64_MIN;
    cv_.notify_one();
  }
}

Push BatchQueue::push(uint64_t id, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns, int64_t now_ns,
                      uint64_t tag) {
  std::lock_guard<std::mutex> lk(m_);
  Push st = check_push_locked(1, cost);
  if (st == Push::ok && index_.find(id) != IdIndex::kNone) st = Push::duplicate;
  if (st != Push::ok) {
    if (st == Push::full) counters_.rejected_full++;
    if (st == Push::closed) counters_.rejected_closed++;
    if (st == Push::too_costly) counters_.rejected_cost++;
    return st;
  }
  uint32_t slot = alloc_slot_locked();
  index_.insert(id, slot);
  KeyQueue& kq = key_queue_locked(key);
  insert_locked(slot, id, tag, key, kq, level_locked(kq, priority), priority, cost, deadline_ns, now_ns);
  counters_.pushed++;
  int64_t due = kq.count == 1 ? sat_add(now_ns, cfg_.max_delay_ns) : kNoDeadline;
  if (kq.count >= cfg_.max_batch_size || (cfg_.max_batch_cost > 0 && kq.cost >= cfg_.max_batch_cost) ||
      std::binary_search(cfg_.preferred_batch_sizes.begin(), cfg_.preferred_batch_sizes.end(), kq.count))
    due = now_ns;
  if (in_flight_ >= cfg_.max_concurrent_batches) due = kNoDeadline;  // batch_done() will wake
  maybe_notify_locked(std::min(due, deadline_ns));
  return Push::ok;
}

void BatchQueue::wake_one() {
  std::lock_guard<std::mutex> lk(m_);
  if (waiters_ > 0) {
    sleep_until_ = INT64_MIN;
    cv_.notify_one();
  }
}

Push BatchQueue::push_many(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost,
                           int64_t deadline_ns, int64_t now_ns, uint64_t tag, bool wake) {
  if (n <= 0) return Push::ok;
  std::lock_guard<std::mutex> lk(m_);
  return push_many_locked(first_id, n, key, priority, cost, deadline_ns, now_ns, tag, wake);
}

Push BatchQueue::push_many_poll(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost,
                                int64_t deadline_ns, int64_t now_ns, uint64_t tag, Poll& out, int64_t enq_ns) {
  if (enq_ns < 0 || enq_ns > now_ns) enq_ns = now_ns;
  std::lock_guard<std::mutex> lk(m_);
  // Direct hand-out: with nothing queued (nothing to rank against, nothing expired or dropped)
  // and a model slot free, the oldest max_batch_size of a submission that is due right now (a
  // full batch, an exact preferred size, or max_delay elapsed since enq_ns) go straight to the
  // caller without entering the slab, index and FIFO; the rest is queued as usual. Counted as
  // if pushed and polled.
  if (n > 0 && live_count_ == 0 && dropped_.empty() && in_flight_ < cfg_.max_concurrent_batches &&
      deadline_ns > now_ns && check_push_locked(n, cost) == Push::ok &&
      (cfg_.max_batch_cost == 0 || std::min(n, cfg_.max_batch_size) * cost <= cfg_.max_batch_cost)) {
    Reason r = Reason::none;
    int64_t take = std::min(n, cfg_.max_batch_size);
    int64_t pref = 0;
    for (int64_t q : cfg_.preferred_batch_sizes)
      if (q <= n) pref = std::max(pref, q);
    if (n >= cfg_.max_batch_size || (cfg_.max_batch_cost > 0 && take * cost >= cfg_.max_batch_cost))
      r = Reason::full;
    else if (pref > 0)
      r = pref == n ? Reason::preferred : Reason::none;  // a smaller preferred size would split it
    else if (now_ns - enq_ns >= cfg_.max_delay_ns)
      r = Reason::delay;
    if (r != Reason::none) {
      out.clear();
      out.ids.resize(static_cast<size_t>(take));
      for (int64_t i = 0; i < take; ++i) out.ids[static_cast<size_t>(i)] = first_id + static_cast<uint64_t>(i);
      out.tags.assign(static_cast<size_t>(take), tag);
      out.key = key;
      out.cost = take * cost;
      out.reason = r;
      out.oldest_enqueue_ns = enq_ns;
      counters_.pushed += static_cast<uint64_t>(take);
      counters_.batches++;
      counters_.batched_requests += static_cast<uint64_t>(take);
      counters_.by_reason[static_cast<int>(r)]++;
      in_flight_ += 1;
      if (n > take)
        push_many_locked(first_id + static_cast<uint64_t>(take), n - take, key, priority, cost, deadline_ns, enq_ns,
                         tag, false);
      out.next_wake_ns = now_ns;  // more may be due right away
      out.queued = live_count_;
      return Push::ok;
    }
  }
  Push st =
      n <= 0 ? Push::ok : push_many_locked(first_id, n, key, priority, cost, deadline_ns, enq_ns, tag, false);
  if (st == Push::ok)
    poll_locked(now_ns, out);
  else
    out.clear();
  return st;
}

Push BatchQueue::push_many_locked(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost,
                                  int64_t deadline_ns, int64_t now_ns, uint64_t tag, bool wake) {
  Push st = check_push_locked(n, cost);
  if (st == Push::ok)
    for (int64_t i = 0; i < n; ++i)
      if (index_.find(first_id + static_cast<uint64_t>(i)) != IdIndex::kNone) {
        st = Push::duplicate;
        break;
      }
  if (st != Push::ok) {
    if (st == Push::full) counters_.rejected_full += static_cast<uint64_t>(n);
    if (st == Push::closed) counters_.rejected_closed += static_cast<uint64_t>(n);
    if (st == Push::too_costly) counters_.rejected_cost += static_cast<uint64_t>(n);
    return st;
  }
  KeyQueue& kq = key_queue_locked(key);
  std::deque<uint64_t>& fifo = level_locked(kq, priority);
  const int64_t before = kq.count;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t id = first_id + static_cast<uint64_t>(i);
    uint32_t slot = alloc_slot_locked();
    index_.insert(id, slot);
    insert_locked(slot, id, tag, key, kq, fifo, priority, cost, deadline_ns, now_ns);
  }
  counters_.pushed += static_cast<uint64_t>(n);
  // Wake a waiter only if this push makes a batch due sooner than it planned to look.
  int64_t due = before == 0 ? sat_add(now_ns, cfg_.max_delay_ns) : kNoDeadline;
  bool pref = false;
  for (int64_t p : cfg_.preferred_batch_sizes)
    if (p > before && p <= kq.count) pref = true;
  if (kq.count >= cfg_.max_batch_size || (cfg_.max_batch_cost > 0 && kq.cost >= cfg_.max_batch_cost) || pref)
    due = now_ns;
  if (in_flight_ >= cfg_.max_concurrent_batches) due = kNoDeadline;
  if (wake) maybe_notify_locked(std::min(due, deadline_ns));
  return Push::ok;
}

void BatchQueue::remove_live_locked(uint32_t slot) {
  Req& r = slots_[slot];
  const int64_t key = r.key;
  auto kit = keys_.find(key);
  if (kit != keys_.end()) {
    kit->second.count -= 1;
    kit->second.cost -= r.cost;
  }
  stale_ += 1;  // its FIFO ref stays until skipped or compacted
  free_slot_locked(slot);
  if (kit != keys_.end()) erase_key_if_idle_locked(kit);
}

void BatchQueue::erase_key_if_idle_locked(std::unordered_map<int64_t, KeyQueue>::iterator kit) {
  // Empty key queues are kept (no allocation per batch for a steady set of keys) unless many
  // distinct keys are in use.
  if (kit->second.count != 0 || keys_.size() <= 64) return;
  for (Level& lv : kit->second.levels)
    for (uint64_t r : lv.fifo)
      if (!ref_live(r)) stale_ -= 1;
  keys_.erase(kit);
  if (stale_ < 0) stale_ = 0;
}

bool BatchQueue::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lk(m_);
  uint32_t slot = index_.find(id);
  if (slot == IdIndex::kNone) return false;
  if (slots_[slot].deadline != kNoDeadline) stale_ += 1;  // its heap entry
  remove_live_locked(slot);
  counters_.cancelled++;
  compact_locked();
  return true;
}

bool BatchQueue::clean_fronts_locked(KeyQueue& kq) {
  bool any = false;
  for (Level& lv : kq.levels) {
    auto& dq = lv.fifo;
    while (!dq.empty() && !ref_live(dq.front())) {
      dq.pop_front();
      stale_ -= 1;
    }
    any = any || !dq.empty();
  }
  return any;
}

int64_t BatchQueue::oldest_locked(const KeyQueue& kq) const {
  int64_t oldest = INT64_MAX;
  for (const Level& lv : kq.levels)
    if (!lv.fifo.empty()) oldest = std::min(oldest, slots_[static_cast<uint32_t>(lv.fifo.front())].enq);
  return oldest;
}

void BatchQueue::compact_locked() {
  if (stale_ <= live_count_ + 1024) return;
  for (auto& kv : keys_)
    for (Level& lv : kv.second.levels) {
      auto& dq = lv.fifo;
      dq.erase(std::remove_if(dq.begin(), dq.end(), [&](uint64_t r) { return !ref_live(r); }), dq.end());
    }
  std::vector<Entry> keep;
  for (auto& e : deadlines_)
    if (ref_live(e.second)) keep.push_back(e);
  std::make_heap(keep.begin(), keep.end(), HeapGreater());
  deadlines_.swap(keep);
  stale_ = 0;
}

void BatchQueue::take_locked(KeyQueue& kq, int64_t limit, int64_t now, Poll& out) {
  int64_t cost = 0;
  int64_t oldest = INT64_MAX;
  while (static_cast<int64_t>(out.ids.size()) < limit && clean_fronts_locked(kq)) {
    // Highest priority first; a front that has starved longer than starvation_ns goes first.
    Level* pick = nullptr;
    for (Level& lv : kq.levels)
      if (!lv.fifo.empty()) {
        pick = &lv;
        break;
      }
    if (cfg_.starvation_ns > 0) {
      int64_t best_enq = INT64_MAX;
      for (Level& lv : kq.levels) {
        if (lv.fifo.empty()) continue;
        int64_t enq = slots_[static_cast<uint32_t>(lv.fifo.front())].enq;
        if (now - enq >= cfg_.starvation_ns && enq < best_enq) {
          best_enq = enq;
          pick = &lv;
        }
      }
    }
    uint32_t slot = static_cast<uint32_t>(pick->fifo.front());
    Req& r = slots_[slot];
    if (cfg_.max_batch_cost > 0 && !out.ids.empty() && cost + r.cost > cfg_.max_batch_cost) break;
    pick->fifo.pop_front();
    cost += r.cost;
    oldest = std::min(oldest, r.enq);
    out.ids.push_back(r.id);
    out.tags.push_back(r.tag);
    kq.count -= 1;
    kq.cost -= r.cost;
    if (r.deadline != kNoDeadline) stale_ += 1;  // its heap entry is now stale
    free_slot_locked(slot);
  }
  out.cost = cost;
  out.oldest_enqueue_ns = oldest;
}

void BatchQueue::poll_locked(int64_t now, Poll& out) {
  out.clear();
  if (!dropped_.empty()) {
    for (auto& d : dropped_) {
      out.dropped.push_back(d.first);
      out.dropped_tags.push_back(d.second);
    }
    dropped_.clear();
  }
  // Expired requests leave first, whether or not a model slot is free.
  while (!deadlines_.empty() && deadlines_.front().first <= now) {
    uint64_t r = deadlines_.front().second;
    std::pop_heap(deadlines_.begin(), deadlines_.end(), HeapGreater());
    deadlines_.pop_back();
    if (!ref_live(r)) {
      stale_ -= 1;
      continue;
    }
    uint32_t slot = static_cast<uint32_t>(r);
    out.expired.push_back(slots_[slot].id);
    out.expired_tags.push_back(slots_[slot].tag);
    remove_live_locked(slot);
    counters_.expired++;
  }
  // Drop heap entries of requests that already left, so next_wake is a live deadline.
  while (!deadlines_.empty() && !ref_live(deadlines_.front().second)) {
    std::pop_heap(deadlines_.begin(), deadlines_.end(), HeapGreater());
    deadlines_.pop_back();
    stale_ -= 1;
  }
  int64_t wake = deadlines_.empty() ? kNoDeadline : deadlines_.front().first;

  out.slot_busy = in_flight_ >= cfg_.max_concurrent_batches;
  if (!out.slot_busy && live_count_ > 0) {
    // Among keys with a batch due now, the one whose best request ranks highest goes first.
    int64_t best_limit = 0, best_enq = INT64_MAX;
    int64_t best_rank = INT64_MIN;
    KeyQueue* best = nullptr;
    int64_t best_key = 0;
    Reason best_reason = Reason::none;
    for (auto& kv : keys_) {
      KeyQueue& kq = kv.second;
      if (kq.count == 0 || !clean_fronts_locked(kq)) continue;
      int64_t oldest = oldest_locked(kq);
      Reason r = Reason::none;
      int64_t limit = cfg_.max_batch_size;
      if (kq.count >= cfg_.max_batch_size || (cfg_.max_batch_cost > 0 && kq.cost >= cfg_.max_batch_cost)) {
        r = Reason::full;
      } else {
        for (auto p = cfg_.preferred_batch_sizes.rbegin(); p != cfg_.preferred_batch_sizes.rend(); ++p)
          if (*p <= kq.count) {
            r = Reason::preferred;
            limit = *p;
            break;
          }
        if (r == Reason::none) {
          if (closed_ && drain_)
            r = Reason::drain;
          else if (now - oldest >= cfg_.max_delay_ns)
            r = Reason::delay;
          else
            wake = std::min(wake, sat_add(oldest, cfg_.max_delay_ns));
        }
      }
      if (r != Reason::none) {
        int64_t rank = INT64_MIN;
        for (const Level& lv : kq.levels)
          if (!lv.fifo.empty()) {
            rank = lv.priority;
            break;
          }
        if (cfg_.starvation_ns > 0 && now - oldest >= cfg_.starvation_ns) rank = INT64_MAX;
        if (rank > best_rank || (rank == best_rank && oldest < best_enq)) {
          best_rank = rank;
          best_enq = oldest;
          best = &kq;
          best_key = kv.first;
          best_limit = limit;
          best_reason = r;
        }
      }
    }
    if (best != nullptr) {
      take_locked(*best, best_limit, now, out);
      erase_key_if_idle_locked(keys_.find(best_key));
      out.key = best_key;
      out.reason = best_reason;
      in_flight_ += 1;
      counters_.batches++;
      counters_.batched_requests += out.ids.size();
      counters_.by_reason[static_cast<int>(best_reason)]++;
      // More may be due right away (another key, or a second slot).
      wake = now;
    }
  }
  out.next_wake_ns = wake;
  out.finished = closed_ && live_count_ == 0 && out.ids.empty();
  out.queued = live_count_;
  compact_locked();
}

void BatchQueue::poll(int64_t now_ns, Poll& out) {
  std::lock_guard<std::mutex> lk(m_);
  poll_locked(now_ns, out);
}

void BatchQueue::wait(int64_t timeout_ns, Poll& out) {
  std::unique_lock<std::mutex> lk(m_);
  wait_locked(lk, timeout_ns, out);
}

void BatchQueue::done_and_wait(int64_t timeout_ns, Poll& out) {
  std::unique_lock<std::mutex> lk(m_);
  if (in_flight_ > 0) in_flight_ -= 1;
  wait_locked(lk, timeout_ns, out);
}

void BatchQueue::wait_locked(std::unique_lock<std::mutex>& lk, int64_t timeout_ns, Poll& out) {
  const int64_t start = now_ns();
  const int64_t end = timeout_ns < 0 ? kNoDeadline : sat_add(start, timeout_ns);
  const uint64_t seen_interrupts = interrupts_;
  for (;;) {
    const int64_t now = now_ns();
    poll_locked(now, out);
    if (out.has_work() || now >= end || interrupts_ != seen_interrupts) return;
    int64_t wake = std::min(out.next_wake_ns, end);
    ++waiters_;
    sleep_until_ = sleep_until_ == INT64_MIN ? wake : std::min(sleep_until_, wake);
    if (wake == kNoDeadline) {
      cv_.wait(lk);
    } else {
      cv_.wait_until(lk, std::chrono::steady_clock::time_point(std::chrono::nanoseconds(wake)));
    }
    --waiters_;
    // The earliest sleeper is no longer known: later pushes notify until someone sleeps again.
    sleep_until_ = INT64_MIN;
  }
}

void BatchQueue::batch_done() {
  std::lock_guard<std::mutex> lk(m_);
  if (in_flight_ > 0) in_flight_ -= 1;
  // Only a waiter with something queued can use the freed slot (deadlines wake it anyway).
  if (waiters_ > 0 && live_count_ > 0) {
    sleep_until_ = INT64_MIN;
    cv_.notify_one();
  }
}

void BatchQueue::done_and_poll(int64_t now_ns, Poll& out) {
  std::lock_guard<std::mutex> lk(m_);
  if (in_flight_ > 0) in_flight_ -= 1;
  poll_locked(now_ns, out);
  if (out.ids.empty() && waiters_ > 0 && live_count_ > 0) {
    sleep_until_ = INT64_MIN;
    cv_.notify_one();
  }
}

void BatchQueue::close(bool drain) {
  std::lock_guard<std::mutex> lk(m_);
  if (!closed_) {
    closed_ = true;
    drain_ = drain;
  } else if (!drain) {
    drain_ = false;  // close(drain=False) after close(drain=True) stops the drain
  }
  if (!drain_) {
    for (Req& r : slots_)
      if (r.live) dropped_.emplace_back(r.id, r.tag);
    counters_.dropped += static_cast<uint64_t>(live_count_);
    slots_.clear();
    free_.clear();
    index_.clear();
    keys_.clear();
    deadlines_.clear();
    live_count_ = 0;
    stale_ = 0;
  }
  cv_.notify_all();
}

void BatchQueue::set_policy(int64_t max_batch_size, int64_t max_delay_ns) {
  std::lock_guard<std::mutex> lk(m_);
  Config c = cfg_;
  c.max_batch_size = max_batch_size;
  c.max_delay_ns = max_delay_ns;
  for (auto& p : c.preferred_batch_sizes) p = std::min(p, max_batch_size);
  std::string err = validate(c);
  if (!err.empty()) throw std::invalid_argument(err);
  bool changed = c.max_batch_size != cfg_.max_batch_size || c.max_delay_ns != cfg_.max_delay_ns;
  cfg_ = c;
  if (changed && waiters_ > 0) cv_.notify_all();
}

void BatchQueue::interrupt() {
  std::lock_guard<std::mutex> lk(m_);
  interrupts_++;
  cv_.notify_all();
}

size_t BatchQueue::size() const {
  std::lock_guard<std::mutex> lk(m_);
  return static_cast<size_t>(live_count_);
}
int64_t BatchQueue::in_flight() const {
  std::lock_guard<std::mutex> lk(m_);
  return in_flight_;
}
bool BatchQueue::closed() const {
  std::lock_guard<std::mutex> lk(m_);
  return closed_;
}
Counters BatchQueue::counters() const {
  std::lock_guard<std::mutex> lk(m_);
  return counters_;
}
Config BatchQueue::config() const {
  std::lock_guard<std::mutex> lk(m_);
  return cfg_;
}

// ------------------------------------------------------------------ Completions

void Completions::expect(uint64_t id) {
  Stripe& s = stripe(id);
  std::lock_guard<std::mutex> lk(s.m);
  s.state[id] = false;
}

void Completions::complete(const uint64_t* ids, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    Stripe& s = stripe(ids[i]);
    bool hit = false;
    {
      std::lock_guard<std::mutex> lk(s.m);
      auto it = s.state.find(ids[i]);
      if (it != s.state.end()) {  // else nobody waits (timed out, or not a thread caller)
        it->second = true;
        hit = true;
      }
    }
    if (hit) s.cv.notify_all();
  }
}

bool Completions::wait(uint64_t id, int64_t timeout_ns) {
  Stripe& s = stripe(id);
  std::unique_lock<std::mutex> lk(s.m);
  auto it = s.state.find(id);
  if (it == s.state.end()) return false;
  auto done = [&] { return s.state.find(id)->second; };
  bool ok;
  if (timeout_ns < 0) {
    s.cv.wait(lk, done);
    ok = true;
  } else {
    auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
    ok = s.cv.wait_until(lk, until, done);
  }
  s.state.erase(id);
  return ok;
}

void Completions::forget(uint64_t id) {
  Stripe& s = stripe(id);
  std::lock_guard<std::mutex> lk(s.m);
  s.state.erase(id);
}

size_t Completions::size() const {
  size_t n = 0;
  for (auto& s : stripes_) {
    std::lock_guard<std::mutex> lk(s.m);
    n += s.state.size();
  }
  return n;
}

// ------------------------------------------------------------------ Engine

Engine::Engine(const Config& cfg, Model model, bool caller_runs)
    : caller_runs_(caller_runs), q_(cfg), model_(std::move(model)) {
  if (!model_) throw std::invalid_argument("Engine: model must be callable");
  for (int64_t i = 0; i < cfg.max_concurrent_batches; ++i) workers_.emplace_back([this] { run(); });
}

Engine::~Engine() {
  close(true);
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

Engine::Group* Engine::new_group() {
  // Called with id_m_ held.
  if (free_groups_.empty()) {
    pool_.push_back(std::make_unique<Group>());
    return pool_.back().get();
  }
  Group* g = free_groups_.back();
  free_groups_.pop_back();
  return g;
}

void Engine::recycle(Group* g) {
  std::lock_guard<std::mutex> lk(id_m_);
  groups_.erase(g->first);
  free_groups_.push_back(g);
}

uint64_t Engine::submit(int64_t n, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns) {
  if (n < 1) throw std::invalid_argument("Engine::submit: n must be >= 1");
  uint64_t first;
  Group* g;
  {
    std::lock_guard<std::mutex> lk(id_m_);
    first = next_id_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    g = new_group();
    g->first = first;
    g->n = n;
    g->done = false;
    g->abandoned = false;
    g->left.store(n, std::memory_order_relaxed);
    groups_.emplace(first, g);
  }
  Push st = q_.push_many(first, n, key, priority, cost, deadline_ns, BatchQueue::now_ns(),
                         reinterpret_cast<uint64_t>(g), /*wake=*/!caller_runs_);
  if (st != Push::ok) {
    recycle(g);
    throw std::runtime_error(st == Push::full ? "queue full" : st == Push::closed ? "closed" : "rejected");
  }
  return first;
}

namespace {
// A Poll for a producer that runs batches itself, reused across calls on this thread (no
// allocation per round trip) but one per nesting level: a model that itself calls into another
// Engine on the same thread (a pipeline of batchers) gets its own.
class PollLease {
 public:
  PollLease() {
    if (depth_ == pool_.size()) pool_.push_back(std::make_unique<Poll>());
    p_ = pool_[depth_++].get();
  }
  ~PollLease() { --depth_; }
  PollLease(const PollLease&) = delete;
  PollLease& operator=(const PollLease&) = delete;
  Poll& get() { return *p_; }

 private:
  static thread_local std::vector<std::unique_ptr<Poll>> pool_;
  static thread_local size_t depth_;
  Poll* p_;
};
thread_local std::vector<std::unique_ptr<Poll>> PollLease::pool_;
thread_local size_t PollLease::depth_ = 0;
}  // namespace

bool Engine::wait(uint64_t first, int64_t n, int64_t timeout_ns) {
  Group* g;
  {
    std::lock_guard<std::mutex> lk(id_m_);
    auto it = groups_.find(first);
    if (it == groups_.end() || it->second->n != n)
      throw std::invalid_argument("Engine::wait: (first, n) must be exactly what one submit() returned");
    g = it->second;
  }
  if (caller_runs_) {
    // Run due batches here until ours is answered or none is due; then let a worker look.
    PollLease lease;
    Poll& p = lease.get();
    while (g->left.load(std::memory_order_acquire) != 0) {
      q_.poll(BatchQueue::now_ns(), p);
      if (!serve(p)) {
        q_.wake_one();
        break;
      }
    }
  }
  // No spinning before blocking: on a machine with fewer cores than producers (measured on a
  // 2-core VM) yielding spinners take the worker's CPU and lose more than a futex sleep costs.
  bool ok;
  {
    std::unique_lock<std::mutex> lk(g->m);
    if (timeout_ns < 0) {
      g->cv.wait(lk, [&] { return g->done; });
      ok = true;
    } else {
      ok = g->cv.wait_for(lk, std::chrono::nanoseconds(timeout_ns), [&] { return g->done; });
    }
    if (!ok) {
      g->abandoned = true;  // queued ids still point at g: the worker recycles it when done
      return false;
    }
  }
  recycle(g);
  return true;
}

// Engine::call with caller_runs: re-polls (after a yield) while another producer's batch holds
// the model slot, before sleeping. 0-8 measured on the 2-core VM (8 producers, no-op model): 0
// made batches of 1.5 (sleepers to wake) and ran at half the rate of 2; beyond 2 no steady gain.
constexpr int kCallSpins = 2;

uint64_t Engine::reserve_ids(int64_t n) {
  if (n < 1) throw std::invalid_argument("Engine::reserve_ids: n must be >= 1");
  return next_id_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
}

void Engine::call(uint64_t first, int64_t n, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns) {
  if (n < 1) throw std::invalid_argument("Engine::call: n must be >= 1");
  Group g;  // answered before this returns: nobody refers to it afterwards
  g.n = n;
  g.left.store(n, std::memory_order_relaxed);
  g.first = first;
  const uint64_t tag = reinterpret_cast<uint64_t>(&g);
  Push st;
  if (caller_runs_) {
    PollLease lease;
    Poll& p = lease.get();
    int spins = 0;
    st = q_.push_many_poll(g.first, n, key, priority, cost, deadline_ns, BatchQueue::now_ns(), tag, p);
    if (st == Push::ok) {
      for (;;) {
        if (!p.expired_tags.empty()) answer(p.expired_tags.data(), p.expired_tags.size());
        if (!p.dropped_tags.empty()) answer(p.dropped_tags.data(), p.dropped_tags.size());
        if (p.ids.empty() && p.slot_busy && spins < kCallSpins && g.left.load(std::memory_order_acquire) != 0) {
          // Another producer is running a batch (often ours with it): let it finish rather
          // than sleep at once (a futex sleep and wake cost more than a no-op batch).
          ++spins;
          std::this_thread::yield();
          q_.poll(BatchQueue::now_ns(), p);
          continue;
        }
        if (p.ids.empty()) {  // nothing due here: a worker takes what becomes due
          if (g.left.load(std::memory_order_acquire) != 0 && !p.slot_busy) q_.wake_one();
          break;
        }
        model_(p.ids.data(), p.ids.size(), p.key);
        answer(p.tags.data(), p.tags.size());
        if (g.left.load(std::memory_order_acquire) == 0) {
          q_.batch_done();
          break;
        }
        q_.done_and_poll(BatchQueue::now_ns(), p);
      }
    }
  } else {
    st = q_.push_many(g.first, n, key, priority, cost, deadline_ns, BatchQueue::now_ns(), tag, true);
  }
  if (st != Push::ok)
    throw std::runtime_error(st == Push::full        ? "queue full"
                             : st == Push::closed    ? "closed"
                             : st == Push::duplicate ? "ids already queued (reserve_ids() them)"
                                                     : "rejected");
  std::unique_lock<std::mutex> lk(g.m);
  g.cv.wait(lk, [&] { return g.done; });
}

void Engine::answer(const uint64_t* tags, size_t n) {
  // Consecutive ids of one batch usually share a group: one decrement per run.
  size_t i = 0;
  while (i < n) {
    size_t j = i + 1;
    while (j < n && tags[j] == tags[i]) ++j;
    Group* g = reinterpret_cast<Group*>(tags[i]);
    int64_t run = static_cast<int64_t>(j - i);
    if (g->left.fetch_sub(run, std::memory_order_acq_rel) == run) {
      bool recycle_it;
      {
        std::lock_guard<std::mutex> lk(g->m);
        g->done = true;
        recycle_it = g->abandoned;
        if (!recycle_it) g->cv.notify_one();
      }
      if (recycle_it) recycle(g);
    }
    i = j;
  }
}

void Engine::close(bool drain) { q_.close(drain); }

bool Engine::serve(Poll& p) {
  if (!p.expired_tags.empty()) answer(p.expired_tags.data(), p.expired_tags.size());
  if (!p.dropped_tags.empty()) answer(p.dropped_tags.data(), p.dropped_tags.size());
  if (p.ids.empty()) return false;
  model_(p.ids.data(), p.ids.size(), p.key);
  answer(p.tags.data(), p.tags.size());
  q_.batch_done();
  return true;
}

void Engine::run() {
  Poll p;
  for (;;) {
    q_.wait(-1, p);
    serve(p);
    if (p.finished) {
      q_.interrupt();  // sibling workers see it too
      return;
    }
  }
}

}  // namespace batching
}  // namespace pyperfcore
