// Per-ISA loops of the bucketed W1 (see ../w1_isa.hpp and w1_bucketed in ../metrics.cpp).
//
// Each pass works on chunks of kChunk keys: a vectorisable loop turns the keys into values and bucket
// indices (and, for the fill, offsets from the bucket's nominal edge) in small stack buffers, then a
// scalar loop does the indexed updates. ODR: everything lives in the per-ISA namespace and is force-inlined
// or non-template; no std:: templates (they would be weak symbols shared between the SIMD levels).
#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../w1_isa.hpp"
#include "nfhep/math/sort_keys.hpp"

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

constexpr std::size_t kChunk = 512;

template <class K>
NFHEP_FORCEINLINE double value_of(K k) {
  return static_cast<double>(::nfhep::math::from_ordered(k));
}

// The bucket of a value (w1_isa.hpp): the one formula of the counting and the selection passes, whose
// buckets must agree exactly (w1_bucketed checks the selected count against the counts). The AVX-512
// selection evaluates the same operations in vector form.
NFHEP_FORCEINLINE std::int64_t bucket_of(double v, double vlo, double scale, std::int64_t last) {
  const std::int64_t bi = static_cast<std::int64_t>((v - vlo) * scale);
  return bi < last ? bi : last;
}

template <class K>
NFHEP_FORCEINLINE void minmax_impl(const K* __restrict__ k, std::size_t n, K* lo, K* hi) {
  K l = k[0], h = k[0];
  for (std::size_t i = 0; i < n; ++i) {
    l = k[i] < l ? k[i] : l;
    h = k[i] > h ? k[i] : h;
  }
  *lo = l;
  *hi = h;
}

// The scalar second loop of a chunk (k[i0, i0 + m), m <= kChunk): body(u) for u = 0..m-1, prefetching the
// next chunk's keys meanwhile, one line per line's worth of updates. That loop issues no loads of k, so
// without this the hardware prefetcher stops and the next chunk's vector loop stalls on memory (perf:
// ~30% of the fill's samples on its key loads).
template <class K, class Body>
NFHEP_FORCEINLINE void scalar_loop_prefetching(const K* __restrict__ k, std::size_t n, std::size_t i0, std::size_t m,
                                               Body&& body) {
  const std::size_t ahead = i0 + kChunk < n ? (n - i0 - kChunk < kChunk ? n - i0 - kChunk : kChunk) : 0;
  const char* next = reinterpret_cast<const char*>(k + i0 + kChunk);
  constexpr std::size_t kLine = 64 / sizeof(K);  // keys per cache line
  for (std::size_t i = 0; i < m; i += kLine) {
    if (i < ahead) __builtin_prefetch(next + i * sizeof(K), 0, 3);
    const std::size_t e = i + kLine < m ? i + kLine : m;
    for (std::size_t u = i; u < e; ++u) body(u);
  }
}

template <class K>
NFHEP_FORCEINLINE void count_impl(const K* __restrict__ k, std::size_t n, double vlo, double scale, std::int64_t last,
                                  std::uint32_t* __restrict__ counts) {
  alignas(64) std::int64_t b[kChunk];
  for (std::size_t i0 = 0; i0 < n; i0 += kChunk) {
    const std::size_t m = n - i0 < kChunk ? n - i0 : kChunk;
    const K* __restrict__ kk = k + i0;
    for (std::size_t i = 0; i < m; ++i) {
      b[i] = bucket_of(value_of(kk[i]), vlo, scale, last);
    }
    scalar_loop_prefetching(k, n, i0, m, [&](std::size_t u) { ++counts[b[u]]; });
  }
}

// The fixed-order sum of the 8 lane totals (the same on every level).
NFHEP_FORCEINLINE double reduce8(const double* t) {
  return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

// The factor of a value's offset by its bucket's code (0: empty or walked bucket).
alignas(64) constexpr double kSign[8] = {0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0};
static_assert(kW1CodeNonneg == 1 && kW1CodeNonpos == 2 && kW1CodeWalk == 4, "kSign is indexed by the codes");

// Selection and signed offset sums, portable: value i of a chunk adds +d, -d or +-0.0 (the same as no
// addition: a lane sum starts at +0.0 and never becomes -0.0, as x + (-x) rounds to +0.0) to lane i % 8
// of the chunk's sums, which are added to the lane totals at the end of the chunk (as the AVX-512 loop
// below, which adds under masks; chunks start at multiples of kChunk, a multiple of 8).

template <class K>
NFHEP_FORCEINLINE double select_sum_impl(const K* __restrict__ k, std::size_t n, double vlo, double scale,
                                         double width, std::int64_t last, const std::uint8_t* __restrict__ code,
                                         K* __restrict__ out, std::size_t* count) {
  alignas(64) std::int64_t b[kChunk];
  alignas(64) double d[kChunk + 8];
  alignas(64) double tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t p = 0;
  for (std::size_t i0 = 0; i0 < n; i0 += kChunk) {
    const std::size_t m = n - i0 < kChunk ? n - i0 : kChunk;
    const K* __restrict__ kk = k + i0;
    for (std::size_t i = 0; i < m; ++i) {
      const double v = value_of(kk[i]);
      const std::int64_t bi = bucket_of(v, vlo, scale, last);
      b[i] = bi;
      d[i] = v - (vlo + static_cast<double>(bi) * width);
    }
    scalar_loop_prefetching(k, n, i0, m, [&](std::size_t u) {
      const std::uint8_t cu = code[b[u]];
      d[u] *= kSign[cu];  // a multiplication, not a branch: the codes of consecutive values are random
      out[p] = kk[u];
      p += cu >> 2;
    });
    for (std::size_t u = m; u < m + 8; ++u) d[u] = 0.0;  // the last vector's missing values
    alignas(64) double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (std::size_t u = 0; u < m; u += 8)
      for (std::size_t l = 0; l < 8; ++l) acc[l] += d[u + l];
    for (std::size_t l = 0; l < 8; ++l) tot[l] += acc[l];
  }
  *count = p;
  return reduce8(tot);
}

#if defined(__AVX512F__)
// AVX-512 selection and sums for 64-bit keys: 8 bucket indices per vector, their codes fetched with one
// gather (8 bytes read at code + b: the code array has 7 bytes of padding), the selected keys compressed
// in a register and stored as a whole vector (out needs 8 slots of room past the count), the offsets
// added to the lane sums under masks.
NFHEP_FORCEINLINE double select_sum_avx512(const std::uint64_t* __restrict__ k, std::size_t n, double vlo,
                                           double scale, double width, std::int64_t last,
                                           const std::uint8_t* __restrict__ code, std::uint64_t* __restrict__ out,
                                           std::size_t* count) {
  const __m512i sign = _mm512_set1_epi64(static_cast<long long>(std::uint64_t{1} << 63));
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i lastv = _mm512_set1_epi64(last);
  const __m512i low = _mm512_set1_epi64(0xFF);
  const __m512i nonneg = _mm512_set1_epi64(kW1CodeNonneg);
  const __m512i nonpos = _mm512_set1_epi64(kW1CodeNonpos);
  const __m512i selbit = _mm512_set1_epi64(kW1CodeWalk);
  const __m512d vlov = _mm512_set1_pd(vlo);
  const __m512d scalev = _mm512_set1_pd(scale);
  const __m512d widthv = _mm512_set1_pd(width);
  __m512d tot = _mm512_setzero_pd();
  std::size_t p = 0;
  constexpr std::size_t kAhead = 256;  // keys (2 KiB) prefetched ahead: the loads were the stall (perf)
  for (std::size_t i0 = 0; i0 < n; i0 += kChunk) {
    const std::size_t e = n - i0 < kChunk ? n : i0 + kChunk;
    __m512d acc = _mm512_setzero_pd();
    for (std::size_t i = i0; i < e; i += 8) {
      if (i + kAhead < n) __builtin_prefetch(k + i + kAhead, 0, 3);
      const __mmask8 valid = e - i >= 8 ? __mmask8(0xFF) : static_cast<__mmask8>((1u << (e - i)) - 1u);
      const __m512i kk = _mm512_maskz_loadu_epi64(valid, reinterpret_cast<const void*>(k + i));
      // value bits: k ^ (((k >> 63) - 1) | sign), as value_of()
      const __m512i mask = _mm512_or_si512(_mm512_sub_epi64(_mm512_srli_epi64(kk, 63), one), sign);
      const __m512d v = _mm512_castsi512_pd(_mm512_xor_si512(kk, mask));
      __m512i b = _mm512_cvttpd_epi64(_mm512_mul_pd(_mm512_sub_pd(v, vlov), scalev));
      b = _mm512_min_epi64(b, lastv);
      const __m512d d = _mm512_sub_pd(v, _mm512_add_pd(vlov, _mm512_mul_pd(_mm512_cvtepi64_pd(b), widthv)));
      const __m512i f =
          _mm512_and_si512(_mm512_mask_i64gather_epi64(_mm512_setzero_si512(), valid, b, code, 1), low);
      const __mmask8 ms = _mm512_test_epi64_mask(f, selbit);
      const __mmask8 mp = _mm512_cmpeq_epi64_mask(f, nonneg), mn = _mm512_cmpeq_epi64_mask(f, nonpos);
      const __m512d sd = _mm512_mask_sub_pd(d, mn, _mm512_setzero_pd(), d);  // -d where G <= 0 (0 - d: exact)
      acc = _mm512_mask_add_pd(acc, mp | mn, acc, sd);
      _mm512_storeu_si512(reinterpret_cast<void*>(out + p), _mm512_maskz_compress_epi64(ms, kk));
      p += static_cast<std::size_t>(__builtin_popcount(static_cast<unsigned>(ms)));
    }
    tot = _mm512_add_pd(tot, acc);
  }
  alignas(64) double t[8];
  _mm512_store_pd(t, tot);
  *count = p;
  return reduce8(t);
}
#endif

}  // namespace

void keys_minmax(const std::uint64_t* k, std::size_t n, std::uint64_t* lo, std::uint64_t* hi) {
  minmax_impl(k, n, lo, hi);
}
void keys_minmax(const std::uint32_t* k, std::size_t n, std::uint32_t* lo, std::uint32_t* hi) {
  minmax_impl(k, n, lo, hi);
}
void w1_count(const std::uint64_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
              std::uint32_t* counts) {
  count_impl(k, n, vlo, scale, last, counts);
}
void w1_count(const std::uint32_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
              std::uint32_t* counts) {
  count_impl(k, n, vlo, scale, last, counts);
}
double w1_select_sum(const std::uint64_t* k, std::size_t n, double vlo, double scale, double width, std::int64_t last,
                     const std::uint8_t* code, std::uint64_t* out, std::size_t* count) {
#if defined(__AVX512F__)
  return select_sum_avx512(k, n, vlo, scale, width, last, code, out, count);
#else
  return select_sum_impl(k, n, vlo, scale, width, last, code, out, count);
#endif
}
double w1_select_sum(const std::uint32_t* k, std::size_t n, double vlo, double scale, double width, std::int64_t last,
                     const std::uint8_t* code, std::uint32_t* out, std::size_t* count) {
  return select_sum_impl(k, n, vlo, scale, width, last, code, out, count);
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
