// Thread pool behind nfhep::parallel_for (see nfhep/parallel.hpp for the contract).
#include "nfhep/parallel.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#include <unistd.h>
#endif

namespace nfhep {
namespace {

int default_num_threads() {
  if (const char* env = std::getenv("NFHEP_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= 4096) return static_cast<int>(v);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}

class Pool {
 public:
  explicit Pool(int n_threads) : n_threads_(n_threads) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  // The pool is never destroyed while a job may run (see pool()); joining here is for set_num_threads.
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return n_threads_; }

  // Returns false if the pool is busy (caller then runs serially).
  bool try_run(std::size_t n_chunks, const std::function<void(std::size_t)>& body) {
    std::unique_lock<std::mutex> submit(submit_m_, std::try_to_lock);
    if (!submit.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lk(m_);
      body_ = &body;
      n_chunks_ = n_chunks;
      next_.store(0, std::memory_order_relaxed);
      error_ = nullptr;
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    cv_work_.notify_all();
    work(true);
    std::unique_lock<std::mutex> lk(m_);
    cv_done_.wait(lk, [this] { return active_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void work(bool caller) {
    (void)caller;
    for (;;) {
      const std::size_t c = next_.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks_) break;
      try {
        (*body_)(c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_chunks_, std::memory_order_relaxed);  // stop handing out chunks
      }
    }
  }
  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work(false);
      {
        std::lock_guard<std::mutex> lk(m_);
        if (--active_ == 0) cv_done_.notify_one();
      }
    }
  }

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex submit_m_;
  std::mutex m_;
  std::condition_variable cv_work_, cv_done_;
  bool stop_ = false;
  std::uint64_t generation_ = 0;
  const std::function<void(std::size_t)>* body_ = nullptr;
  std::size_t n_chunks_ = 0;
  std::atomic<std::size_t> next_{0};
  int active_ = 0;
  std::exception_ptr error_;
};

std::mutex g_config_m;
std::atomic<int> g_threads{0};  // 0 = not yet decided
// Never destroyed at exit (a caller may still be inside); a pool replaced by set_num_threads is joined
// when its last user lets go of it.
std::shared_ptr<Pool>& g_pool = *new std::shared_ptr<Pool>();
#if defined(__linux__)
pid_t g_pool_pid = 0;
#endif

int threads_now() {
  int n = g_threads.load(std::memory_order_acquire);
  if (n == 0) {
    std::lock_guard<std::mutex> lk(g_config_m);
    n = g_threads.load(std::memory_order_relaxed);
    if (n == 0) {
      n = default_num_threads();
      g_threads.store(n, std::memory_order_release);
    }
  }
  return n;
}

std::shared_ptr<Pool> pool_for(int n) {
  std::lock_guard<std::mutex> lk(g_config_m);
#if defined(__linux__)
  if (g_pool && g_pool_pid != getpid()) {
    // Forked child: the parent's worker threads do not exist here, so the old pool can be neither used
    // nor joined. Leak it and start afresh.
    new std::shared_ptr<Pool>(std::move(g_pool));
    g_pool.reset();
  }
#endif
  if (!g_pool || g_pool->size() != n) {
    g_pool = std::make_shared<Pool>(n);
#if defined(__linux__)
    g_pool_pid = getpid();
#endif
  }
  return g_pool;
}

}  // namespace

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_config_m);
  g_threads.store(n > 0 ? n : default_num_threads(), std::memory_order_release);
}

int get_num_threads() { return threads_now(); }

namespace detail {
void run_chunks(std::size_t n_chunks, const std::function<void(std::size_t)>& body) {
  const int n = threads_now();
  if (n > 1 && n_chunks > 1) {
    if (pool_for(n)->try_run(n_chunks, body)) return;
  }
  for (std::size_t c = 0; c < n_chunks; ++c) body(c);
}
}  // namespace detail

}  // namespace nfhep
