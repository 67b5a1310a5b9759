// nfhep/parallel.hpp: the one threading knob of the core and a fixed-chunk parallel loop.
//
// The number of threads comes from nfhep::set_num_threads(n) or, at first use, the environment variable
// NFHEP_NUM_THREADS, else the CPUs this process may run on. Work is cut into chunks whose boundaries depend
// only on the problem size (never on the thread count), so per-chunk float64 partial sums combined in
// chunk order give results that do not depend on how many threads ran.
//
// The calling thread works too. A parallel_for issued while the pool is busy (a nested call, or a second
// Python thread with the GIL released) runs serially on its caller: never a deadlock, never oversubscription.
// After fork() the child gets a fresh pool.
#pragma once
#include <cstddef>
#include <functional>

#include "nfhep/config.hpp"

namespace nfhep {

/// Set the number of threads used by the core's kernels. n <= 0 restores the default
/// (NFHEP_NUM_THREADS if set, else the number of CPUs available to this process).
NFHEP_API void set_num_threads(int n);
/// The number of threads the core's kernels use.
NFHEP_API int get_num_threads();

namespace detail {
/// Run body(chunk) for every chunk in [0, n_chunks) on the pool; blocks; rethrows the first exception.
NFHEP_API void run_chunks(std::size_t n_chunks, const std::function<void(std::size_t)>& body);
}  // namespace detail

/// Call body(begin, end) over [0, n) in chunks of `chunk` items (the last one shorter), in parallel.
/// Runs inline when there is a single chunk or a single thread.
template <class Body>
void parallel_for(std::size_t n, std::size_t chunk, Body&& body) {
  if (n == 0) return;
  if (chunk == 0) chunk = 1;
  const std::size_t n_chunks = (n + chunk - 1) / chunk;
  if (n_chunks == 1 || get_num_threads() == 1) {
    for (std::size_t c = 0; c < n_chunks; ++c) {
      const std::size_t b = c * chunk;
      body(b, b + chunk < n ? b + chunk : n);
    }
    return;
  }
  detail::run_chunks(n_chunks, [&](std::size_t c) {
    const std::size_t b = c * chunk;
    body(b, b + chunk < n ? b + chunk : n);
  });
}

}  // namespace nfhep
