// Per-ISA loops of the bucketed W1 (see ../w1_isa.hpp and w1_bucketed in ../metrics.cpp).
//
// Each pass works on chunks of kChunk keys: a vectorisable loop turns the keys into values and bucket
// indices (and, for the fill, offsets from the bucket's nominal edge) in small stack buffers, then a
// scalar loop does the indexed updates. ODR: everything lives in the per-ISA namespace and is force-inlined
// or non-template; no std:: templates (they would be weak symbols shared between the SIMD levels).
#include <cstddef>
#include <cstdint>

#include "../w1_isa.hpp"

#define NFHEP_W1_FI inline __attribute__((always_inline))

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

constexpr std::size_t kChunk = 512;

NFHEP_W1_FI double value_of(std::uint64_t k) {
  const std::uint64_t mask = ((k >> 63) - std::uint64_t{1}) | (std::uint64_t{1} << 63);
  const std::uint64_t u = k ^ mask;
  double v;
  __builtin_memcpy(&v, &u, sizeof v);
  return v;
}
NFHEP_W1_FI double value_of(std::uint32_t k) {
  const std::uint32_t mask = ((k >> 31) - std::uint32_t{1}) | (std::uint32_t{1} << 31);
  const std::uint32_t u = k ^ mask;
  float v;
  __builtin_memcpy(&v, &u, sizeof v);
  return static_cast<double>(v);
}

template <class K>
NFHEP_W1_FI void minmax_impl(const K* __restrict__ k, std::size_t n, K* lo, K* hi) {
  K l = k[0], h = k[0];
  for (std::size_t i = 0; i < n; ++i) {
    l = k[i] < l ? k[i] : l;
    h = k[i] > h ? k[i] : h;
  }
  *lo = l;
  *hi = h;
}

typedef double V2 __attribute__((vector_size(16)));

template <class K>
NFHEP_W1_FI void fill_impl(const K* __restrict__ k, std::size_t n, double vlo, double scale, double width,
                           std::int64_t last, double* __restrict__ bins) {
  alignas(64) std::int64_t b[kChunk];
  alignas(64) double d[kChunk];
  for (std::size_t i0 = 0; i0 < n; i0 += kChunk) {
    const std::size_t m = n - i0 < kChunk ? n - i0 : kChunk;
    const K* __restrict__ kk = k + i0;
    for (std::size_t i = 0; i < m; ++i) {
      const double v = value_of(kk[i]);
      std::int64_t bi = static_cast<std::int64_t>((v - vlo) * scale);
      bi = bi < last ? bi : last;
      b[i] = bi;
      d[i] = v - (vlo + static_cast<double>(bi) * width);
    }
    for (std::size_t i = 0; i < m; ++i) {
      V2* q = reinterpret_cast<V2*>(bins) + b[i];
      const V2 add = {d[i], 1.0};
      *q = *q + add;
    }
  }
}

template <class K>
NFHEP_W1_FI std::size_t select_impl(const K* __restrict__ k, std::size_t n, double vlo, double scale,
                                    std::int64_t last, const std::uint8_t* __restrict__ flag,
                                    K* __restrict__ out) {
  alignas(64) std::int64_t b[kChunk];
  std::size_t p = 0;
  for (std::size_t i0 = 0; i0 < n; i0 += kChunk) {
    const std::size_t m = n - i0 < kChunk ? n - i0 : kChunk;
    const K* __restrict__ kk = k + i0;
    for (std::size_t i = 0; i < m; ++i) {
      std::int64_t bi = static_cast<std::int64_t>((value_of(kk[i]) - vlo) * scale);
      b[i] = bi < last ? bi : last;
    }
    for (std::size_t i = 0; i < m; ++i) {
      out[p] = kk[i];
      p += flag[b[i]];
    }
  }
  return p;
}

}  // namespace

void keys_minmax(const std::uint64_t* k, std::size_t n, std::uint64_t* lo, std::uint64_t* hi) {
  minmax_impl(k, n, lo, hi);
}
void keys_minmax(const std::uint32_t* k, std::size_t n, std::uint32_t* lo, std::uint32_t* hi) {
  minmax_impl(k, n, lo, hi);
}
void w1_fill(const std::uint64_t* k, std::size_t n, double vlo, double scale, double width, std::int64_t last,
             double* bins) {
  fill_impl(k, n, vlo, scale, width, last, bins);
}
void w1_fill(const std::uint32_t* k, std::size_t n, double vlo, double scale, double width, std::int64_t last,
             double* bins) {
  fill_impl(k, n, vlo, scale, width, last, bins);
}
std::size_t w1_select(const std::uint64_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
                      const std::uint8_t* flag, std::uint64_t* out) {
  return select_impl(k, n, vlo, scale, last, flag, out);
}
std::size_t w1_select(const std::uint32_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
                      const std::uint8_t* flag, std::uint32_t* out) {
  return select_impl(k, n, vlo, scale, last, flag, out);
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
