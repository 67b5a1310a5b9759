// Output arrays of the bindings, and a bounded cache of freed large ones (nfhep._core.buffer_cache).
//
// Why: a kernel's outputs are fresh numpy arrays. Above glibc's mmap threshold (32 MiB) every such array
// is a new mapping whose pages the kernel faults in and zeroes on first write, and unmaps again when the
// array dies, so a loop over large batches (a flow evaluated on 10^6-event chunks, a backward pass writing
// an (N, D, 3K-1) parameter gradient) pays the page faults and the zeroing on every call: measured here
// ~18 ns per element of the RQS backward on top of its 37 ns of work. Arrays of >= 4 MiB therefore come
// from anonymous mappings (2 MiB aligned, transparent huge pages requested) that go back into a small
// cache when their array is freed, and the next request of a similar size (within +25%) reuses one.
//
// Bounded: the cache holds at most `limit` bytes of freed buffers (default a quarter of the physical
// memory, or NFHEP_BUFFER_CACHE_MB; 0 disables it) and at most 16 of them, evicting the oldest. It never
// holds memory that is still in use, and the contents of a reused buffer are unspecified, as for
// numpy.empty: every kernel writes all of its outputs.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <list>
#include <mutex>
#include <new>
#include <string>

#include "bind_common.hpp"

namespace pyb = pybind11;

namespace nfhep::py {
namespace {

constexpr std::size_t kMinCached = std::size_t{4} << 20;  // smaller arrays: numpy's own allocator
constexpr std::size_t kHuge = std::size_t{2} << 20;       // transparent huge page size (x86-64)
constexpr std::size_t kMaxEntries = 16;

struct Block {
  void* base;         // the mapping (munmap this)
  std::size_t mapped; // its length
  void* data;         // 2 MiB aligned start of the usable bytes
  std::size_t bytes;  // usable bytes from data
};

std::size_t default_limit() {
  if (const char* env = std::getenv("NFHEP_BUFFER_CACHE_MB")) {
    char* end = nullptr;
    const double mb = std::strtod(env, &end);
    if (end != env && mb >= 0) return static_cast<std::size_t>(mb * 1048576.0);
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return std::size_t{1} << 30;
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) / 4;
}

struct Cache {
  std::mutex m;
  std::list<Block> blocks;  // freed buffers, newest first
  std::size_t cached = 0;
  std::size_t limit = default_limit();
  std::uint64_t hits = 0, misses = 0;

  void unmap(const Block& b) { munmap(b.base, b.mapped); }
  void trim() {  // caller holds m
    while (!blocks.empty() && (cached > limit || blocks.size() > kMaxEntries)) {
      cached -= blocks.back().bytes;
      unmap(blocks.back());
      blocks.pop_back();
    }
  }
};

// Never destroyed: arrays may outlive the module's static destructors at interpreter exit.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

// A buffer of at least nbytes, or nullptr when the cache is disabled (limit 0: plain numpy arrays).
Block* acquire(std::size_t nbytes) {
  const std::size_t want = (nbytes + kHuge - 1) / kHuge * kHuge;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.m);
    if (c.limit == 0) return nullptr;
    auto best = c.blocks.end();
    for (auto it = c.blocks.begin(); it != c.blocks.end(); ++it)
      if (it->bytes >= want && it->bytes <= want + want / 4 && (best == c.blocks.end() || it->bytes < best->bytes))
        best = it;
    if (best != c.blocks.end()) {
      Block* b = new Block(*best);
      c.cached -= best->bytes;
      c.blocks.erase(best);
      ++c.hits;
      return b;
    }
    ++c.misses;
  }
  const std::size_t mapped = want + kHuge;
  void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  const std::uintptr_t a = (reinterpret_cast<std::uintptr_t>(base) + kHuge - 1) & ~static_cast<std::uintptr_t>(kHuge - 1);
  void* data = reinterpret_cast<void*>(a);
#if defined(MADV_HUGEPAGE)
  // A hint (as numpy gives for its large arrays): 512x fewer first-touch faults. Measured, 10^6 x 28
  // float32 fwd+bwd through the autograd Function: 0.98 s with it, 1.46 s without.
  madvise(data, want, MADV_HUGEPAGE);
#endif
  return new Block{base, mapped, data, want};
}

void release(Block* b) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.m);
    if (b->bytes <= c.limit) {
      c.blocks.push_front(*b);
      c.cached += b->bytes;
      c.trim();
      delete b;
      return;
    }
  }
  c.unmap(*b);
  delete b;
}

}  // namespace

pyb::array new_array(bool f32, const std::vector<pyb::ssize_t>& shape) {
  std::size_t n = 1;
  for (pyb::ssize_t s : shape) n *= static_cast<std::size_t>(s);
  const std::size_t nbytes = n * (f32 ? sizeof(float) : sizeof(double));
  Block* b = nbytes < kMinCached ? nullptr : acquire(nbytes);
  if (b == nullptr) {
    if (f32) return pyb::array_t<float>(shape);
    return pyb::array_t<double>(shape);
  }
  pyb::capsule owner(b, [](void* p) { release(static_cast<Block*>(p)); });
  if (f32) return pyb::array_t<float>(shape, static_cast<float*>(b->data), owner);
  return pyb::array_t<double>(shape, static_cast<double*>(b->data), owner);
}

}  // namespace nfhep::py

void bind_buffers(pyb::module_& m) {
  m.def(
      "buffer_cache",
      [](pyb::object limit_mib) {
        nfhep::py::Cache& c = nfhep::py::cache();
        std::lock_guard<std::mutex> lock(c.m);
        if (!limit_mib.is_none()) {
          if (!pyb::isinstance<pyb::int_>(limit_mib) && !pyb::isinstance<pyb::float_>(limit_mib))
            throw pyb::type_error("buffer_cache: argument 'limit_mib' must be a number or None, got " +
                                  std::string(pyb::str(pyb::type::of(limit_mib).attr("__name__"))));
          const double mib = limit_mib.cast<double>();
          if (!(mib >= 0) || mib > 1e12)
            throw pyb::value_error("buffer_cache: argument 'limit_mib' must be >= 0 (0 disables the cache), got " +
                                   std::string(pyb::str(limit_mib)));
          c.limit = static_cast<std::size_t>(mib * 1048576.0);
          c.trim();
        }
        pyb::dict d;
        d["limit_mib"] = static_cast<double>(c.limit) / 1048576.0;
        d["cached_mib"] = static_cast<double>(c.cached) / 1048576.0;
        d["buffers"] = c.blocks.size();
        d["hits"] = c.hits;
        d["misses"] = c.misses;
        return d;
      },
      pyb::arg("limit_mib") = pyb::none(),
      "The cache of freed large output buffers: set its limit (MiB; 0 disables and empties it) and/or read "
      "its state (dict: limit_mib, cached_mib, buffers, hits, misses).");
}
