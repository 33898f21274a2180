#include "threads.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pyperfcore {

namespace {

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (end == v || n < 1) return 0;
  return static_cast<int>(std::min<long>(n, 1024));
}

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()); }

  // Runs chunks [0, nchunks) of job on the workers and the calling thread.
  void run(int64_t nchunks, const std::function<void(int64_t)>& job) {
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &job;
      nchunks_ = nchunks;
      next_.store(0);
      done_.store(0);
      ++gen_;
    }
    cv_.notify_all();
    work(job, nchunks);
    std::unique_lock<std::mutex> lk(m_);
    // Wait until every chunk finished and no worker still holds a reference to job.
    done_cv_.wait(lk, [&] { return done_.load() == nchunks_ && active_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(const std::function<void(int64_t)>& job, int64_t nchunks) {
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= nchunks) break;
      job(c);
      if (done_.fetch_add(1) + 1 == nchunks) {
        std::lock_guard<std::mutex> lk(m_);
        done_cv_.notify_all();
      }
    }
  }
  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || (gen_ != seen && job_ != nullptr); });
      if (stop_) return;
      seen = gen_;
      const auto* job = job_;
      int64_t n = nchunks_;
      ++active_;
      lk.unlock();
      work(*job, n);
      lk.lock();
      --active_;
      if (active_ == 0) done_cv_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t nchunks_ = 0;
  std::atomic<int64_t> next_{0}, done_{0};
  uint64_t gen_ = 0;
  int active_ = 0;
  bool stop_ = false;
};

std::mutex g_run_mutex;  // one parallel loop at a time uses the pool
std::atomic<int> g_num_threads{0};
// Owned by a unique_ptr so the workers are joined at exit. After fork() the child releases
// the pointer without destroying it (its threads do not exist there) and builds a new pool.
std::unique_ptr<Pool> g_pool;

void atfork_prepare() { g_run_mutex.lock(); }
void atfork_parent() { g_run_mutex.unlock(); }
void atfork_child() {
  (void)g_pool.release();  // leaked on purpose: its threads and mutexes are gone in the child
  new (&g_run_mutex) std::mutex();
}
struct AtForkRegistration {
  AtForkRegistration() { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
} g_atfork_registration;

thread_local bool t_in_parallel = false;

}  // namespace

int default_num_threads() {
  if (int n = env_int("PYPERFCORE_NUM_THREADS")) return n;
  if (int n = env_int("OMP_NUM_THREADS")) return n;
  return cores_available();
}

int get_num_threads() {
  int n = g_num_threads.load();
  if (n == 0) {
    n = default_num_threads();
    int expected = 0;
    g_num_threads.compare_exchange_strong(expected, n);
    n = g_num_threads.load();
  }
  return n;
}

void set_num_threads(int n) { g_num_threads.store(std::max(1, std::min(n, 1024))); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int threads = get_num_threads();
  int64_t max_chunks = (n + grain - 1) / grain;
  if (threads <= 1 || max_chunks <= 1 || t_in_parallel) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> lk(g_run_mutex, std::try_to_lock);
  if (!lk.owns_lock()) {  // another thread is using the pool: do the work here
    fn(0, n);
    return;
  }
  if (!g_pool || g_pool->size() != threads - 1) {
    g_pool.reset();
    g_pool.reset(new Pool(threads - 1));
  }
  // A few chunks per thread balance uneven work without much scheduling cost.
  int64_t nchunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(threads) * 4);
  int64_t per = (n + nchunks - 1) / nchunks;
  nchunks = (n + per - 1) / per;
  std::function<void(int64_t)> job = [&](int64_t c) {
    bool prev = t_in_parallel;
    t_in_parallel = true;
    int64_t b = c * per, e = std::min(n, b + per);
    fn(b, e);
    t_in_parallel = prev;
  };
  g_pool->run(nchunks, job);
}

}  // namespace pyperfcore
