// Per-ISA kernel of the metrics: the projection x (n x dim) times directions^T (dim x n_dir), the matrix
// product behind the sliced Wasserstein distance. Compiled once per SIMD level (see nfhep/isa.hpp).
//
// Cache blocking: a block of kRows = 32 rows is transposed into a dim x 32 double tile (D = 100: 25 KiB,
// stays in L1 while every direction sweeps it; 128 rows spilled to L2 and measured ~20% slower SWD at
// D = 100; on AVX-512 with 8 x 8 register transposes); then register blocking: kDirs directions x kLanes rows of accumulators stay in registers while
// d runs over the tile (one load of the tile feeds kDirs multiply-adds; explicit native vectors). The sum
// over d runs in the fixed order 0..dim-1 in double: every thread count gives the same bits. On the FMA
// levels (AVX2, AVX-512) this file is compiled with -ffp-contract=fast, so every step is one
// fma(w_d, x_d, acc) on both (bitwise identical to each other: tested); the generic level multiplies and
// adds (differs by rounding, ~1e-16 relative).
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "nfhep/math/sort_keys.hpp"
#include "nfhep/metrics_detail.hpp"

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

constexpr std::size_t kRows = 32;

struct StoreF64 {
  static void store(double* NFHEP_RESTRICT out, const double* NFHEP_RESTRICT acc, std::size_t m) {
    for (std::size_t i = 0; i < m; ++i) out[i] = acc[i];
  }
};
struct StoreKeys {
  static void store(std::uint64_t* NFHEP_RESTRICT out, const double* NFHEP_RESTRICT acc, std::size_t m) {
    for (std::size_t i = 0; i < m; ++i) out[i] = ::nfhep::math::to_ordered(acc[i]);
  }
};


// Native vectors of doubles (GCC/Clang vector extension): zmm under AVX-512, ymm under AVX2, xmm in
// the generic build; a register block holds kLanes / kW of them per direction. Written with explicit
// vectors because GCC's auto-vectorisation of scalar lane loops at -mprefer-vector-width=512 produced
// permute-heavy code (~2000 vpermt2pd) that ran ~15x slower than AVX2. Lane-wise multiply-add (one FMA on
// the FMA levels, contracted by the compiler exactly as in the scalar remainder loop).
// Register block: kDirs directions x kLanes rows of accumulators. AVX-512 (32 registers) holds 8 x 16
// (16 independent add chains: enough to cover the add latency on both FP ports, and one tile load feeds
// 8 multiplies); AVX2 and generic keep 4 x 8. The blocking does not change the order of any sum.
#if defined(__AVX512F__)
constexpr std::size_t kW = 8;
constexpr std::size_t kLanes = 16;
constexpr std::size_t kDirs = 8;
#elif defined(__AVX__)
constexpr std::size_t kW = 4;
constexpr std::size_t kLanes = 8;
constexpr std::size_t kDirs = 4;
#else
constexpr std::size_t kW = 2;
constexpr std::size_t kLanes = 8;
constexpr std::size_t kDirs = 4;
#endif
constexpr std::size_t kV = kLanes / kW;  // native vectors per direction in a register block
typedef double VN __attribute__((vector_size(kW * sizeof(double))));
inline __attribute__((always_inline)) VN loadv(const double* p) {
  VN v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void storev(double* p, VN v) { __builtin_memcpy(p, &v, sizeof v); }

// Smallest and largest of the m keys just stored, folded into mm[0], mm[1].
inline __attribute__((always_inline)) void fold_minmax(const std::uint64_t* NFHEP_RESTRICT k, std::size_t m,
                                                       std::uint64_t* NFHEP_RESTRICT mm) {
  std::uint64_t lo = mm[0], hi = mm[1];
  for (std::size_t i = 0; i < m; ++i) {
    lo = k[i] < lo ? k[i] : lo;
    hi = k[i] > hi ? k[i] : hi;
  }
  mm[0] = lo;
  mm[1] = hi;
}
inline __attribute__((always_inline)) void fold_minmax(const double*, std::size_t, std::uint64_t*) {}

// Keys of kRows = 32 projections streamed to a 64-byte aligned `out` with non-temporal stores (the
// projections of a block are far larger than the caches and are read back only later), their range folded
// lane-wise into the vectors at mmv (mmv[0..8): smallest, mmv[8..16): largest keys seen per lane; 64-byte
// aligned; reduced once per task by reduce_minmax). Returns false (nothing done) where that does not apply.
inline __attribute__((always_inline)) bool stream_keys(std::uint64_t* NFHEP_RESTRICT out,
                                                       const double* NFHEP_RESTRICT acc, std::size_t m,
                                                       std::uint64_t* NFHEP_RESTRICT mmv) {
#if defined(__AVX512F__)
  if (m != kRows || (reinterpret_cast<std::size_t>(out) & 63) != 0) return false;
  const __m512i sign = _mm512_set1_epi64(static_cast<long long>(std::uint64_t{1} << 63));
  const __m512d zero = _mm512_setzero_pd();
  __m512i lo = _mm512_load_si512(mmv), hi = _mm512_load_si512(mmv + 8);
  for (std::size_t v = 0; v < kRows; v += 8) {
    // to_ordered: -0.0 -> +0.0, then flip all bits of negatives, only the sign bit of the rest
    const __m512i u = _mm512_castpd_si512(_mm512_add_pd(_mm512_load_pd(acc + v), zero));
    const __m512i neg = _mm512_srai_epi64(u, 63);
    const __m512i key = _mm512_xor_si512(u, _mm512_or_si512(neg, sign));
    lo = _mm512_min_epu64(lo, key);
    hi = _mm512_max_epu64(hi, key);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(out + v), key);
  }
  _mm512_store_si512(mmv, lo);
  _mm512_store_si512(mmv + 8, hi);
  return true;
#else
  (void)out;
  (void)acc;
  (void)m;
  (void)mmv;
  return false;
#endif
}
// Fresh lane-wise range vectors for n directions (see stream_keys), and their reduction into mm.
inline __attribute__((always_inline)) void init_minmax(std::uint64_t* NFHEP_RESTRICT mmv, std::size_t n) {
#if defined(__AVX512F__)
  for (std::size_t j = 0; j < n; ++j) {
    _mm512_store_si512(mmv + 16 * j, _mm512_set1_epi64(-1));
    _mm512_store_si512(mmv + 16 * j + 8, _mm512_setzero_si512());
  }
#else
  (void)mmv;
  (void)n;
#endif
}
inline __attribute__((always_inline)) void reduce_minmax(const std::uint64_t* NFHEP_RESTRICT mmv, std::size_t n,
                                                         std::uint64_t* NFHEP_RESTRICT mm) {
#if defined(__AVX512F__)
  for (std::size_t j = 0; j < n; ++j) {
    const std::uint64_t l = _mm512_reduce_min_epu64(_mm512_load_si512(mmv + 16 * j));
    const std::uint64_t h = _mm512_reduce_max_epu64(_mm512_load_si512(mmv + 16 * j + 8));
    mm[2 * j] = l < mm[2 * j] ? l : mm[2 * j];
    mm[2 * j + 1] = h > mm[2 * j + 1] ? h : mm[2 * j + 1];
  }
#else
  (void)mmv;
  (void)n;
  (void)mm;
#endif
}
inline __attribute__((always_inline)) bool stream_keys(double*, const double*, std::size_t, std::uint64_t*) {
  return false;
}
inline __attribute__((always_inline)) void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

#if defined(__AVX512F__)
// Eight values of a row (columns d0 .. d0 + 7, masked past the end) as doubles.
inline __attribute__((always_inline)) __m512d load_row8(const double* p, __mmask8 k) {
  return _mm512_maskz_loadu_pd(k, p);
}
inline __attribute__((always_inline)) __m512d load_row8(const float* p, __mmask8 k) {
  return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, p));
}
#endif

// The kRows x dim block of rows at x (row-major) into the tile t (dim x kRows) with 8 x 8 register
// transposes (AVX-512; a full block of kRows rows only). Returns false where that does not apply (the
// caller copies element by element; same values either way).
template <class T>
inline __attribute__((always_inline)) bool transpose_tile(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t m,
                                                          double* NFHEP_RESTRICT t) {
#if defined(__AVX512F__)
  if (m != kRows) return false;
  // permutex2var index vectors (element 0 first): lo2 = (a0 a1 b0 b1 a2 a3 b2 b3), hi2 = (a4 a5 b4 b5 a6 a7
  // b6 b7), lo4 = (a0 a1 a2 a3 b0 b1 b2 b3), hi4 = (a4 a5 a6 a7 b4 b5 b6 b7); b = index + 8.
  const __m512i lo2 = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i hi2 = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  const __m512i lo4 = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
  const __m512i hi4 = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
  for (std::size_t d0 = 0; d0 < dim; d0 += 8) {
    const std::size_t nd = dim - d0 < 8 ? dim - d0 : 8;
    const __mmask8 k = static_cast<__mmask8>((1u << nd) - 1u);
    for (std::size_t i0 = 0; i0 < kRows; i0 += 8) {
      __m512d r[8];
      for (std::size_t q = 0; q < 8; ++q) r[q] = load_row8(x + (i0 + q) * dim + d0, k);
      // r[q][c] = x[i0 + q][d0 + c] (rows q, columns c). Pairs of rows interleaved per 128-bit lane:
      // u[q] = (q c0, q+1 c0, q c2, q+1 c2, ..c4.., ..c6..), u[q+1] the same for c1, c3, c5, c7.
      __m512d u[8];
      for (std::size_t q = 0; q < 8; q += 2) {
        u[q] = _mm512_unpacklo_pd(r[q], r[q + 1]);
        u[q + 1] = _mm512_unpackhi_pd(r[q], r[q + 1]);
      }
      // Rows q..q+3: v[q] = (c0 | c2), v[q+1] = (c1 | c3), v[q+2] = (c4 | c6), v[q+3] = (c5 | c7), each half
      // the four rows in order.
      __m512d v[8];
      for (std::size_t q = 0; q < 8; q += 4)
        for (std::size_t h = 0; h < 2; ++h) {
          v[q + h] = _mm512_permutex2var_pd(u[q + h], lo2, u[q + 2 + h]);
          v[q + 2 + h] = _mm512_permutex2var_pd(u[q + h], hi2, u[q + 2 + h]);
        }
      // Rows 0-3 with rows 4-7: whole columns, c[j] = column kCol[j] of the eight rows.
      __m512d c[8];
      for (std::size_t h = 0; h < 4; ++h) {
        c[h] = _mm512_permutex2var_pd(v[h], lo4, v[4 + h]);
        c[4 + h] = _mm512_permutex2var_pd(v[h], hi4, v[4 + h]);
      }
      constexpr std::size_t kCol[8] = {0, 1, 4, 5, 2, 3, 6, 7};
      for (std::size_t j = 0; j < 8; ++j)
        if (kCol[j] < nd) _mm512_storeu_pd(t + (d0 + kCol[j]) * kRows + i0, c[j]);
    }
  }
  return true;
#else
  (void)x;
  (void)dim;
  (void)m;
  (void)t;
  return false;
#endif
}

// Prefetches of the next tile's rows, spread over the register blocks of the current one (a burst of
// ~100 line requests would wait for free miss buffers).
struct PrefetchCursor {
  const char* p;
  const char* end;
  inline __attribute__((always_inline)) void issue(std::size_t lines) {
    // to L2 (T1): measured ~4% faster than into L1 here, which competes with the tile and the keys'
    // write-combining for the L1 miss buffers
    for (std::size_t k = 0; k < lines && p < end; ++k, p += 64) __builtin_prefetch(p, 0, 2);
  }
};

// KD directions (w: their rows of `dirs`) against the transposed tile t (dim x kRows, rows padded with zeros
// to mp): KD x kLanes accumulators in registers over the d loop, the sum in the fixed order d = 0..dim-1
// (w_0 t_0, then + w_d t_d: one FMA per step on the FMA levels), whatever KD is. The m projections of
// each direction go to out[q * ld]; their key range is folded into mm[2 q], mm[2 q + 1], or, for keys
// streamed by stream_keys, lane-wise into mmv[16 q ..] (reduced by the caller). Issues 16 of the next
// tile's prefetches (pf) per register block.
template <std::size_t KD, class Store, class O>
inline __attribute__((always_inline)) void project_block(const double* NFHEP_RESTRICT t, std::size_t dim,
                                                         std::size_t m, std::size_t mp,
                                                         const double* NFHEP_RESTRICT w0,
                                                         double (*NFHEP_RESTRICT acc)[kRows], O* NFHEP_RESTRICT out,
                                                         std::size_t ld, std::uint64_t* NFHEP_RESTRICT mm,
                                                         std::uint64_t* NFHEP_RESTRICT mmv, bool stream,
                                                         PrefetchCursor& pf) {
  const double* w[KD];
  for (std::size_t q = 0; q < KD; ++q) w[q] = w0 + q * dim;
  for (std::size_t i0 = 0; i0 < mp; i0 += kLanes) {
    pf.issue(16);
    VN a[KD][kV];
    for (std::size_t v = 0; v < kV; ++v) {
      const VN t0 = loadv(t + i0 + v * kW);
      for (std::size_t q = 0; q < KD; ++q) a[q][v] = w[q][0] * t0;
    }
    for (std::size_t d = 1; d < dim; ++d) {
      for (std::size_t v = 0; v < kV; ++v) {
        const VN td = loadv(t + d * kRows + i0 + v * kW);
        for (std::size_t q = 0; q < KD; ++q) a[q][v] = a[q][v] + w[q][d] * td;
      }
    }
    for (std::size_t v = 0; v < kV; ++v)
      for (std::size_t q = 0; q < KD; ++q) storev(&acc[q][i0 + v * kW], a[q][v]);
  }
  for (std::size_t q = 0; q < KD; ++q) {
    if (stream && mm && stream_keys(out + q * ld, acc[q], m, mmv + 16 * q)) continue;
    Store::store(out + q * ld, acc[q], m);
    if (mm) fold_minmax(out + q * ld, m, mm + 2 * q);
  }
}

// `mm` (keys only, may be null): mm[2 j], mm[2 j + 1] = smallest and largest key of direction j over rows
// [r0, r1), so that the W1 that follows needs no extra pass over the projections for its value range.
// `stream` (keys with mm only): non-temporal stores where the level has them (see stream_keys).
template <class Store, class T, class O>
void project_impl(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t r0, std::size_t r1,
                  const double* NFHEP_RESTRICT dirs, std::size_t n_dir, O* NFHEP_RESTRICT out, std::size_t ld,
                  std::uint64_t* NFHEP_RESTRICT mm, bool stream = false) {
  if (mm)
    for (std::size_t j = 0; j < n_dir; ++j) {
      mm[2 * j] = ~std::uint64_t{0};
      mm[2 * j + 1] = 0;
    }
  // The tile, 64-byte aligned (whole-line vector accesses), then (streamed keys) the lane-wise key ranges.
  const std::size_t nmm = (stream && mm) ? 16 * n_dir : 0;
  std::vector<double> tile_store(dim * kRows + nmm + 8);
  double* const tile_base =
      reinterpret_cast<double*>((reinterpret_cast<std::uintptr_t>(tile_store.data()) + 63) & ~std::uintptr_t{63});
  std::uint64_t* const mmv = reinterpret_cast<std::uint64_t*>(tile_base + dim * kRows);  // accessed as vectors only
  if (nmm) init_minmax(mmv, n_dir);
  alignas(64) double acc[kDirs][kRows];
  for (std::size_t rb = r0; rb < r1; rb += kRows) {
    const std::size_t m = (r1 - rb < kRows) ? r1 - rb : kRows;
    const std::size_t mp = (m + kLanes - 1) / kLanes * kLanes;  // padded rows (zeros, never stored)
    double* NFHEP_RESTRICT t = tile_base;
    // The next tile's rows are requested during this one's arithmetic (16 lines per register block, the
    // rest at the end): its transposes come in one burst after ~1.5 us of arithmetic, too late for the
    // hardware prefetcher alone.
    PrefetchCursor pf{nullptr, nullptr};
    if (rb + kRows < r1) {
      pf.p = reinterpret_cast<const char*>(x + (rb + kRows) * dim);
      pf.end = pf.p + ((r1 - rb - kRows < kRows) ? r1 - rb - kRows : kRows) * dim * sizeof(T);
    }
    if (!transpose_tile(x + rb * dim, dim, m, t))
      for (std::size_t i = 0; i < m; ++i) {
        const T* row = x + (rb + i) * dim;
        for (std::size_t d = 0; d < dim; ++d) t[d * kRows + i] = static_cast<double>(row[d]);
      }
    for (std::size_t d = 0; d < dim; ++d)
      for (std::size_t i = m; i < mp; ++i) t[d * kRows + i] = 0.0;
    // Register blocking: kDirs directions x kLanes rows of accumulators stay in registers over the d loop;
    // the directions left over (n_dir not a multiple of kDirs, e.g. 28 = 3 x 8 + 4) in blocks of 4, 2, 1.
    std::size_t j = 0;
    for (; j + kDirs <= n_dir; j += kDirs)
      project_block<kDirs, Store>(t, dim, m, mp, dirs + j * dim, acc, out + j * ld + rb, ld, mm ? mm + 2 * j : nullptr,
                                  mmv + 16 * j, stream, pf);
    for (std::size_t kd = kDirs / 2; kd >= 1; kd /= 2) {
      if (j + kd > n_dir) continue;
      O* const o = out + j * ld + rb;
      std::uint64_t* const mj = mm ? mm + 2 * j : nullptr;
      std::uint64_t* const mv = mmv + 16 * j;
      if (kd == 4) project_block<4, Store>(t, dim, m, mp, dirs + j * dim, acc, o, ld, mj, mv, stream, pf);
      else if (kd == 2) project_block<2, Store>(t, dim, m, mp, dirs + j * dim, acc, o, ld, mj, mv, stream, pf);
      else project_block<1, Store>(t, dim, m, mp, dirs + j * dim, acc, o, ld, mj, mv, stream, pf);
      j += kd;
    }
    pf.issue(~std::size_t{0});
  }
  if (nmm) reduce_minmax(mmv, n_dir, mm);
}

}  // namespace

void project_rows_f64(const double* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                      std::size_t n_dir, double* out, std::size_t ld) {
  project_impl<StoreF64>(x, dim, r0, r1, dirs, n_dir, out, ld, nullptr);
}
void project_rows_f64(const float* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                      std::size_t n_dir, double* out, std::size_t ld) {
  project_impl<StoreF64>(x, dim, r0, r1, dirs, n_dir, out, ld, nullptr);
}
void project_rows_keys(const double* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                       std::size_t n_dir, std::uint64_t* out, std::size_t ld, std::uint64_t* minmax, bool stream) {
  project_impl<StoreKeys>(x, dim, r0, r1, dirs, n_dir, out, ld, minmax, stream);
  if (stream) stream_fence();
}
void project_rows_keys(const float* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                       std::size_t n_dir, std::uint64_t* out, std::size_t ld, std::uint64_t* minmax, bool stream) {
  project_impl<StoreKeys>(x, dim, r0, r1, dirs, n_dir, out, ld, minmax, stream);
  if (stream) stream_fence();
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
