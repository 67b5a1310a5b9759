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
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "nfhep/ks_detail.hpp"
#include "nfhep/math/sort_keys.hpp"

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

constexpr std::size_t kTileRows = 32;  // 32 uint16 = one cache line per column of the output
constexpr std::size_t kTileCols = 32;  // columns per tile (wider samples: several column blocks)

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

/// Bucket indices of k consecutive values, parameters per value (lo, sc, floor): the map's argument u is
/// the value itself (floor[i] < 0) or its signed log-like magnitude (floor[i] = f >= 0),
/// u = sign(v) (bits(max(|v|, f)) - bits(f)), then b = trunc(clamp((u - lo) * sc, 0, top)). Both are
/// monotone (every step rounds monotonically; |v| <= f all give u = 0). Returns nonzero if one of the
/// values is NaN or infinite. The clamps are written so that NaN goes to 0 (max(NaN, 0) picks 0).
/// (AnyLog = false: no column of the call uses the log map, skip computing it.)
template <bool AnyLog, class T>
NFHEP_FORCEINLINE std::uint32_t tile_values(const T* NFHEP_RESTRICT src, const double* NFHEP_RESTRICT lo,
                                            const double* NFHEP_RESTRICT sc, const double* NFHEP_RESTRICT floor,
                                            double top, std::uint16_t* NFHEP_RESTRICT out, std::size_t k) {
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < k; ++i) {
    const double v = static_cast<double>(src[i]);
    bad |= (v - v == 0.0) ? 0u : 1u;  // inf - inf and NaN - NaN are NaN
    double u = v;
    if constexpr (AnyLog) u = ks_map_arg(v, floor[i]);
    out[i] = static_cast<std::uint16_t>(ks_bucket_index(u, lo[i], sc[i], top));
  }
  return bad;
}

// The tile of bucket indices, kTileRows rows x w <= kTileCols columns with row stride w, is written out
// column by column (kTileRows uint16 per column: one cache line). AVX-512: a 32 x 32 uint16 transpose
// in registers (5 stages of two-source word permutes, each swapping the off-diagonal b x b blocks of
// every 2b x 2b block, b = 16, 8, 4, 2, 1); other levels copy element by element.
#if defined(__AVX512BW__)
/// Word-permute indices of the 5 transpose stages (b = 16 >> s): perm[2s] keeps the low halves of the
/// 2b-blocks of rows i and i + b, perm[2s + 1] the high halves.
struct TransposePerm {
  alignas(64) std::uint16_t idx[10][32];
};
NFHEP_FORCEINLINE void init_perm(TransposePerm& t) {
  for (std::size_t s = 0, b = 16; s < 5; ++s, b /= 2)
    for (std::size_t p = 0; p < 32; ++p) {
      const std::size_t g = p & ~(2 * b - 1), off = p & (2 * b - 1);
      t.idx[2 * s][p] = static_cast<std::uint16_t>(off < b ? g + off : 32 + g + off - b);
      t.idx[2 * s + 1][p] = static_cast<std::uint16_t>(off < b ? g + b + off : 32 + g + off);
    }
}
NFHEP_FORCEINLINE void write_tile(const TransposePerm& t, const std::uint16_t* tile, std::size_t w, std::size_t m,
                                  std::uint16_t* out, std::size_t ld) {
  static_assert(kTileRows == 32 && kTileCols == 32, "the register transpose is 32 x 32");
  __m512i r[32];
  for (std::size_t i = 0; i < 32; ++i) r[i] = _mm512_loadu_si512(tile + i * w);
  for (std::size_t s = 0, b = 16; s < 5; ++s, b /= 2) {
    const __m512i lo = _mm512_load_si512(t.idx[2 * s]), hi = _mm512_load_si512(t.idx[2 * s + 1]);
    for (std::size_t i = 0; i < 32; ++i) {
      if (i & b) continue;
      const __m512i a = r[i], c = r[i + b];
      r[i] = _mm512_permutex2var_epi16(a, lo, c);
      r[i + b] = _mm512_permutex2var_epi16(a, hi, c);
    }
  }
  const __mmask32 mask = m >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((std::uint32_t{1} << m) - 1u);
  for (std::size_t j = 0; j < w; ++j) _mm512_mask_storeu_epi16(out + j * ld, mask, r[j]);
}
#else
struct TransposePerm {};
NFHEP_FORCEINLINE void init_perm(TransposePerm&) {}
NFHEP_FORCEINLINE void write_tile(const TransposePerm&, const std::uint16_t* NFHEP_RESTRICT tile, std::size_t w,
                                  std::size_t m, std::uint16_t* NFHEP_RESTRICT out, std::size_t ld) {
  for (std::size_t j = 0; j < w; ++j)
    for (std::size_t r = 0; r < m; ++r) out[j * ld + r] = tile[r * w + j];
}
#endif

template <bool AnyLog, class T>
NFHEP_FORCEINLINE bool bucket_impl(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t n_cols,
                                   std::size_t r0, std::size_t r1, const double* NFHEP_RESTRICT vlo,
                                   const double* NFHEP_RESTRICT scale, const double* NFHEP_RESTRICT log_floor,
                                   std::uint32_t last,
                                   std::uint16_t* NFHEP_RESTRICT idx, std::size_t ld) {
  alignas(64) std::uint16_t tile[kTileRows * kTileCols + kTileCols] = {};  // + padding for row loads
  const double top = static_cast<double>(last);
  TransposePerm perm;
  init_perm(perm);
  std::uint32_t bad = 0;
  if (n_cols == dim && dim <= kTileCols) {
    // Whole rows: a tile is contiguous in x, one flat, fully vectorised loop with per-value parameters
    // (the column parameters repeated row after row).
    alignas(64) double rlo[kTileRows * kTileCols];
    alignas(64) double rsc[kTileRows * kTileCols];
    alignas(64) double rfloor[kTileRows * kTileCols];
    for (std::size_t r = 0; r < kTileRows; ++r)
      for (std::size_t j = 0; j < dim; ++j) {
        rlo[r * dim + j] = vlo[j];
        rsc[r * dim + j] = scale[j];
        rfloor[r * dim + j] = log_floor[j];
      }
    for (std::size_t rb = r0; rb < r1; rb += kTileRows) {
      const std::size_t m = (r1 - rb < kTileRows) ? r1 - rb : kTileRows;
      bad |= tile_values<AnyLog>(x + rb * dim, rlo, rsc, rfloor, top, tile, m * dim);
      write_tile(perm, tile, dim, m, idx + rb, ld);
    }
    return bad == 0;
  }
  // Otherwise blocks of kTileCols columns inside each 32-row tile (the tile's rows stay in L1 while
  // every block is processed).
  for (std::size_t rb = r0; rb < r1; rb += kTileRows) {
    const std::size_t m = (r1 - rb < kTileRows) ? r1 - rb : kTileRows;
    for (std::size_t cb = 0; cb < n_cols; cb += kTileCols) {
      const std::size_t w = (n_cols - cb < kTileCols) ? n_cols - cb : kTileCols;
      for (std::size_t r = 0; r < m; ++r)
        bad |= tile_values<AnyLog>(x + (rb + r) * dim + cb, vlo + cb, scale + cb, log_floor + cb, top, tile + r * w,
                                   w);
      write_tile(perm, tile, w, m, idx + cb * ld + rb, ld);
    }
  }
  return bad == 0;
}

template <class T>
NFHEP_FORCEINLINE bool bucket_dispatch(const T* x, std::size_t dim, std::size_t n_cols, std::size_t r0,
                                       std::size_t r1, const double* vlo, const double* scale,
                                       const double* log_floor, std::uint32_t last, std::uint16_t* idx,
                                       std::size_t ld) {
  bool any_log = false;
  for (std::size_t j = 0; j < n_cols; ++j) any_log |= log_floor[j] >= 0.0;
  return any_log ? bucket_impl<true>(x, dim, n_cols, r0, r1, vlo, scale, log_floor, last, idx, ld)
                 : bucket_impl<false>(x, dim, n_cols, r0, r1, vlo, scale, log_floor, last, idx, ld);
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
bool ks_bucket_rows(const double* x, std::size_t dim, std::size_t n_cols, std::size_t r0, std::size_t r1,
                    const double* vlo, const double* scale, const double* log_floor, std::uint32_t last,
                    std::uint16_t* idx, std::size_t ld) {
  return bucket_dispatch(x, dim, n_cols, r0, r1, vlo, scale, log_floor, last, idx, ld);
}
bool ks_bucket_rows(const float* x, std::size_t dim, std::size_t n_cols, std::size_t r0, std::size_t r1,
                    const double* vlo, const double* scale, const double* log_floor, std::uint32_t last,
                    std::uint16_t* idx, std::size_t ld) {
  return bucket_dispatch(x, dim, n_cols, r0, r1, vlo, scale, log_floor, last, idx, ld);
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
