// Per-ISA kernels of the unweighted KS statistic (see nfhep/ks_detail.hpp): per-column key extremes and
// per-value bucket indices, both streamed straight from the row-major sample. Compiled once per SIMD level.
//
// Both loops run along a row (contiguous values of consecutive columns), where the arithmetic vectorises
// without gathers; the bucket indices are produced for a tile of kTileRows rows x kTileCols columns in a
// small L1 buffer and then written column by column (kTileRows uint16 = one 64-byte line per column), so
// the transposition to column-major costs no extra pass over memory. Only fixed-size local arrays and
// force-inlined helpers: no weak symbols from this file.
#include <cstddef>
#include <cstdint>

#include "nfhep/ks_detail.hpp"
#include "nfhep/math/sort_keys.hpp"

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

constexpr std::size_t kTileRows = 32;  // 32 uint16 = one cache line per column of the output
constexpr std::size_t kTileCols = 64;

template <class T, class K>
NFHEP_FORCEINLINE void minmax_impl(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t r0, std::size_t r1,
                                   K* NFHEP_RESTRICT lo, K* NFHEP_RESTRICT hi) {
  for (std::size_t i = r0; i < r1; ++i) {
    const T* NFHEP_RESTRICT row = x + i * dim;
    for (std::size_t d = 0; d < dim; ++d) {
      const K k = ::nfhep::math::to_ordered(row[d]);
      lo[d] = k < lo[d] ? k : lo[d];
      hi[d] = k > hi[d] ? k : hi[d];
    }
  }
}

template <class T>
NFHEP_FORCEINLINE void bucket_impl(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t c0, std::size_t c1,
                                   std::size_t r0, std::size_t r1, const double* NFHEP_RESTRICT vlo,
                                   const double* NFHEP_RESTRICT scale, std::uint32_t last,
                                   std::uint16_t* NFHEP_RESTRICT idx, std::size_t ld) {
  alignas(64) std::uint16_t tile[kTileRows * kTileCols];
  for (std::size_t cb = c0; cb < c1; cb += kTileCols) {
    const std::size_t w = (c1 - cb < kTileCols) ? c1 - cb : kTileCols;
    const double* NFHEP_RESTRICT lo = vlo + cb;
    const double* NFHEP_RESTRICT sc = scale + cb;
    for (std::size_t rb = r0; rb < r1; rb += kTileRows) {
      const std::size_t m = (r1 - rb < kTileRows) ? r1 - rb : kTileRows;
      for (std::size_t r = 0; r < m; ++r) {
        const T* NFHEP_RESTRICT row = x + (rb + r) * dim + cb;
        std::uint16_t* NFHEP_RESTRICT t = tile + r * kTileCols;
        for (std::size_t j = 0; j < w; ++j) {
          // 0 <= (v - lo) * scale <= last + 1 (+ rounding) by the caller's contract: fits an int32.
          const std::int32_t b = static_cast<std::int32_t>((static_cast<double>(row[j]) - lo[j]) * sc[j]);
          const std::uint32_t u = static_cast<std::uint32_t>(b);
          t[j] = static_cast<std::uint16_t>(u < last ? u : last);
        }
      }
      for (std::size_t j = 0; j < w; ++j) {
        std::uint16_t* NFHEP_RESTRICT out = idx + (cb + j - c0) * ld + rb;
        for (std::size_t r = 0; r < m; ++r) out[r] = tile[r * kTileCols + j];
      }
    }
  }
}

}  // namespace

void ks_minmax_rows(const double* x, std::size_t dim, std::size_t r0, std::size_t r1, std::uint64_t* lo,
                    std::uint64_t* hi) {
  minmax_impl(x, dim, r0, r1, lo, hi);
}
void ks_minmax_rows(const float* x, std::size_t dim, std::size_t r0, std::size_t r1, std::uint32_t* lo,
                    std::uint32_t* hi) {
  minmax_impl(x, dim, r0, r1, lo, hi);
}
void ks_bucket_rows(const double* x, std::size_t dim, std::size_t c0, std::size_t c1, std::size_t r0,
                    std::size_t r1, const double* vlo, const double* scale, std::uint32_t last,
                    std::uint16_t* idx, std::size_t ld) {
  bucket_impl(x, dim, c0, c1, r0, r1, vlo, scale, last, idx, ld);
}
void ks_bucket_rows(const float* x, std::size_t dim, std::size_t c0, std::size_t c1, std::size_t r0,
                    std::size_t r1, const double* vlo, const double* scale, std::uint32_t last,
                    std::uint16_t* idx, std::size_t ld) {
  bucket_impl(x, dim, c0, c1, r0, r1, vlo, scale, last, idx, ld);
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
