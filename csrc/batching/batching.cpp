#include "batching.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>

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

Push BatchQueue::check_push_locked(int64_t n, int64_t cost, uint64_t first_id) const {
  if (closed_) return Push::closed;
  if (cfg_.max_batch_cost > 0 && cost > cfg_.max_batch_cost) return Push::too_costly;
  if (cfg_.max_queue_size > 0 && static_cast<int64_t>(live_.size()) + n > cfg_.max_queue_size) return Push::full;
  (void)first_id;
  return Push::ok;
}

void BatchQueue::insert_locked(uint64_t id, int64_t key, int32_t priority, int64_t cost, int64_t deadline,
                               int64_t now) {
  live_.emplace(id, Req{key, cost, now, deadline, priority});
  KeyQueue& kq = keys_[key];
  kq.levels[priority].push_back(id);
  kq.count += 1;
  kq.cost += cost;
  if (deadline != kNoDeadline) {
    deadlines_.emplace_back(deadline, id);
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

Push BatchQueue::push(uint64_t id, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns, int64_t now_ns) {
  std::lock_guard<std::mutex> lk(m_);
  Push st = check_push_locked(1, cost, id);
  if (st == Push::ok && live_.count(id)) st = Push::duplicate;
  if (st != Push::ok) {
    if (st == Push::full) counters_.rejected_full++;
    if (st == Push::closed) counters_.rejected_closed++;
    if (st == Push::too_costly) counters_.rejected_cost++;
    return st;
  }
  insert_locked(id, key, priority, cost, deadline_ns, now_ns);
  counters_.pushed++;
  const KeyQueue& kq = keys_[key];
  int64_t due = kq.count == 1 ? sat_add(now_ns, cfg_.max_delay_ns) : kNoDeadline;
  if (kq.count >= cfg_.max_batch_size || (cfg_.max_batch_cost > 0 && kq.cost >= cfg_.max_batch_cost) ||
      std::binary_search(cfg_.preferred_batch_sizes.begin(), cfg_.preferred_batch_sizes.end(), kq.count))
    due = now_ns;
  if (in_flight_ >= cfg_.max_concurrent_batches) due = kNoDeadline;  // batch_done() will wake
  maybe_notify_locked(std::min(due, deadline_ns));
  return Push::ok;
}

Push BatchQueue::push_many(uint64_t first_id, int64_t n, int64_t key, int32_t priority, int64_t cost,
                           int64_t deadline_ns, int64_t now_ns) {
  if (n <= 0) return Push::ok;
  std::lock_guard<std::mutex> lk(m_);
  Push st = check_push_locked(n, cost, first_id);
  if (st == Push::ok)
    for (int64_t i = 0; i < n; ++i)
      if (live_.count(first_id + static_cast<uint64_t>(i))) st = Push::duplicate;
  if (st != Push::ok) {
    if (st == Push::full) counters_.rejected_full += static_cast<uint64_t>(n);
    if (st == Push::closed) counters_.rejected_closed += static_cast<uint64_t>(n);
    if (st == Push::too_costly) counters_.rejected_cost += static_cast<uint64_t>(n);
    return st;
  }
  for (int64_t i = 0; i < n; ++i) insert_locked(first_id + static_cast<uint64_t>(i), key, priority, cost, deadline_ns, now_ns);
  counters_.pushed += static_cast<uint64_t>(n);
  maybe_notify_locked(in_flight_ >= cfg_.max_concurrent_batches ? deadline_ns : now_ns);
  return Push::ok;
}

void BatchQueue::remove_live_locked(std::unordered_map<uint64_t, Req>::iterator it) {
  auto kit = keys_.find(it->second.key);
  if (kit != keys_.end()) {
    kit->second.count -= 1;
    kit->second.cost -= it->second.cost;
    if (kit->second.count == 0) {
      // Every id left in its deques is stale: drop the whole key.
      // (the removed id itself is still in a deque but was never counted as stale)
      for (auto& lv : kit->second.levels) stale_ -= static_cast<int64_t>(lv.second.size());
      stale_ += 1;
      keys_.erase(kit);
    } else {
      stale_ += 1;
    }
  }
  live_.erase(it);
}

bool BatchQueue::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lk(m_);
  auto it = live_.find(id);
  if (it == live_.end()) return false;
  remove_live_locked(it);
  counters_.cancelled++;
  compact_locked();
  return true;
}

bool BatchQueue::clean_fronts_locked(KeyQueue& kq) {
  for (auto lit = kq.levels.begin(); lit != kq.levels.end();) {
    auto& dq = lit->second;
    while (!dq.empty() && !live_.count(dq.front())) {
      dq.pop_front();
      stale_ -= 1;
    }
    if (dq.empty())
      lit = kq.levels.erase(lit);
    else
      ++lit;
  }
  return !kq.levels.empty();
}

int64_t BatchQueue::oldest_locked(KeyQueue& kq) {
  int64_t oldest = INT64_MAX;
  for (auto& lv : kq.levels) oldest = std::min(oldest, live_.find(lv.second.front())->second.enq);
  return oldest;
}

void BatchQueue::compact_locked() {
  if (stale_ <= static_cast<int64_t>(live_.size()) + 1024) return;
  for (auto& kv : keys_)
    for (auto& lv : kv.second.levels) {
      auto& dq = lv.second;
      dq.erase(std::remove_if(dq.begin(), dq.end(), [&](uint64_t id) { return !live_.count(id); }), dq.end());
    }
  stale_ = 0;
  std::vector<Entry> keep;
  for (auto& e : deadlines_)
    if (live_.count(e.second)) keep.push_back(e);
  std::make_heap(keep.begin(), keep.end(), HeapGreater());
  deadlines_.swap(keep);
}

void BatchQueue::take_locked(int64_t key, KeyQueue& kq, int64_t limit, int64_t now, Poll& out) {
  int64_t cost = 0;
  int64_t oldest = INT64_MAX;
  while (static_cast<int64_t>(out.ids.size()) < limit && clean_fronts_locked(kq)) {
    // Highest priority first; a front that has starved longer than starvation_ns goes first.
    auto pick = kq.levels.begin();
    if (cfg_.starvation_ns > 0) {
      int64_t best_enq = INT64_MAX;
      for (auto lit = kq.levels.begin(); lit != kq.levels.end(); ++lit) {
        int64_t enq = live_.find(lit->second.front())->second.enq;
        if (now - enq >= cfg_.starvation_ns && enq < best_enq) {
          best_enq = enq;
          pick = lit;
        }
      }
    }
    uint64_t id = pick->second.front();
    auto it = live_.find(id);
    if (cfg_.max_batch_cost > 0 && !out.ids.empty() && cost + it->second.cost > cfg_.max_batch_cost) break;
    pick->second.pop_front();
    cost += it->second.cost;
    oldest = std::min(oldest, it->second.enq);
    out.ids.push_back(id);
    kq.count -= 1;
    kq.cost -= it->second.cost;
    live_.erase(it);
  }
  out.key = key;
  out.cost = cost;
  out.oldest_enqueue_ns = oldest;
  if (kq.count == 0) {
    for (auto& lv : kq.levels) stale_ -= static_cast<int64_t>(lv.second.size());
    keys_.erase(key);
  }
}

void BatchQueue::poll_locked(int64_t now, Poll& out) {
  out.clear();
  if (!dropped_.empty()) out.dropped.swap(dropped_);
  // Expired requests leave first, whether or not a model slot is free.
  while (!deadlines_.empty() && deadlines_.front().first <= now) {
    uint64_t id = deadlines_.front().second;
    std::pop_heap(deadlines_.begin(), deadlines_.end(), HeapGreater());
    deadlines_.pop_back();
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    remove_live_locked(it);
    counters_.expired++;
    out.expired.push_back(id);
  }
  // Drop heap entries of requests that already left, so next_wake is a live deadline.
  while (!deadlines_.empty() && !live_.count(deadlines_.front().second)) {
    std::pop_heap(deadlines_.begin(), deadlines_.end(), HeapGreater());
    deadlines_.pop_back();
  }
  int64_t wake = deadlines_.empty() ? kNoDeadline : deadlines_.front().first;

  if (in_flight_ < cfg_.max_concurrent_batches && !keys_.empty()) {
    // Among keys with a batch due now, the one whose best request ranks highest goes first.
    int64_t best_key = 0, best_limit = 0, best_enq = INT64_MAX;
    int64_t best_rank = INT64_MIN;
    Reason best_reason = Reason::none;
    for (auto kit = keys_.begin(); kit != keys_.end();) {
      KeyQueue& kq = kit->second;
      if (!clean_fronts_locked(kq)) {  // defensive: counts said non-empty
        kit = keys_.erase(kit);
        continue;
      }
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
        int64_t rank = kq.levels.begin()->first;
        if (cfg_.starvation_ns > 0 && now - oldest >= cfg_.starvation_ns) rank = INT64_MAX;
        if (rank > best_rank || (rank == best_rank && oldest < best_enq)) {
          best_rank = rank;
          best_enq = oldest;
          best_key = kit->first;
          best_limit = limit;
          best_reason = r;
        }
      }
      ++kit;
    }
    if (best_reason != Reason::none) {
      take_locked(best_key, keys_[best_key], best_limit, now, out);
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
  out.finished = closed_ && live_.empty() && out.ids.empty();
  compact_locked();
}

void BatchQueue::poll(int64_t now_ns, Poll& out) {
  std::lock_guard<std::mutex> lk(m_);
  poll_locked(now_ns, out);
}

void BatchQueue::wait(int64_t timeout_ns, Poll& out) {
  std::unique_lock<std::mutex> lk(m_);
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
  if (waiters_ > 0) cv_.notify_one();
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
    for (auto& kv : live_) dropped_.push_back(kv.first);
    counters_.dropped += live_.size();
    live_.clear();
    keys_.clear();
    deadlines_.clear();
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
  cfg_ = c;
  if (waiters_ > 0) cv_.notify_all();
}

void BatchQueue::interrupt() {
  std::lock_guard<std::mutex> lk(m_);
  interrupts_++;
  cv_.notify_all();
}

size_t BatchQueue::size() const {
  std::lock_guard<std::mutex> lk(m_);
  return live_.size();
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
  std::lock_guard<std::mutex> lk(m_);
  state_[id] = false;
}

void Completions::complete(const uint64_t* ids, size_t n) {
  uint64_t touched = 0;
  {
    std::lock_guard<std::mutex> lk(m_);
    for (size_t i = 0; i < n; ++i) {
      auto it = state_.find(ids[i]);
      if (it == state_.end()) continue;  // nobody waits (timed out, or not a thread caller)
      it->second = true;
      touched |= uint64_t(1) << (ids[i] % kStripes);
    }
  }
  for (int s = 0; s < kStripes; ++s)
    if (touched & (uint64_t(1) << s)) cv_[s].notify_all();
}

bool Completions::wait(uint64_t id, int64_t timeout_ns) {
  std::unique_lock<std::mutex> lk(m_);
  auto it = state_.find(id);
  if (it == state_.end()) return false;
  auto& cv = cv_[id % kStripes];
  auto done = [&] { return state_.find(id)->second; };
  bool ok;
  if (timeout_ns < 0) {
    cv.wait(lk, done);
    ok = true;
  } else {
    auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
    ok = cv.wait_until(lk, until, done);
  }
  state_.erase(id);
  return ok;
}

void Completions::forget(uint64_t id) {
  std::lock_guard<std::mutex> lk(m_);
  state_.erase(id);
}

size_t Completions::size() const {
  std::lock_guard<std::mutex> lk(m_);
  return state_.size();
}

// ------------------------------------------------------------------ Engine

Engine::Engine(const Config& cfg, Model model) : q_(cfg), model_(std::move(model)) {
  if (!model_) throw std::invalid_argument("Engine: model must be callable");
  for (int64_t i = 0; i < cfg.max_concurrent_batches; ++i) workers_.emplace_back([this] { run(); });
}

Engine::~Engine() {
  close(true);
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

uint64_t Engine::submit(int64_t n, int64_t key, int32_t priority, int64_t cost, int64_t deadline_ns) {
  if (n < 1) throw std::invalid_argument("Engine::submit: n must be >= 1");
  uint64_t first;
  {
    std::lock_guard<std::mutex> lk(id_m_);
    first = next_id_;
    next_id_ += static_cast<uint64_t>(n);
  }
  for (int64_t i = 0; i < n; ++i) done_.expect(first + static_cast<uint64_t>(i));
  Push st = q_.push_many(first, n, key, priority, cost, deadline_ns, BatchQueue::now_ns());
  if (st != Push::ok) {
    for (int64_t i = 0; i < n; ++i) done_.forget(first + static_cast<uint64_t>(i));
    throw std::runtime_error(st == Push::full ? "queue full" : st == Push::closed ? "closed" : "rejected");
  }
  return first;
}

bool Engine::wait(uint64_t first, int64_t n, int64_t timeout_ns) {
  const int64_t end = timeout_ns < 0 ? kNoDeadline : sat_add(BatchQueue::now_ns(), timeout_ns);
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {
    int64_t left = end == kNoDeadline ? -1 : std::max<int64_t>(0, end - BatchQueue::now_ns());
    ok = done_.wait(first + static_cast<uint64_t>(i), left) && ok;
  }
  return ok;
}

void Engine::close(bool drain) { q_.close(drain); }

void Engine::run() {
  Poll p;
  for (;;) {
    q_.wait(-1, p);
    if (!p.expired.empty()) done_.complete(p.expired.data(), p.expired.size());
    if (!p.dropped.empty()) done_.complete(p.dropped.data(), p.dropped.size());
    if (!p.ids.empty()) {
      model_(p.ids.data(), p.ids.size(), p.key);
      done_.complete(p.ids.data(), p.ids.size());
      q_.batch_done();
    }
    if (p.finished) return;
  }
}

}  // namespace batching
}  // namespace pyperfcore
