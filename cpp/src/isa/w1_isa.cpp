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

typedef double V2 __attribute__((vector_size(16)));

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
NFHEP_FORCEINLINE void fill_impl(const K* __restrict__ k, std::size_t n, double vlo, double scale, double width,
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
    scalar_loop_prefetching(k, n, i0, m, [&](std::size_t u) {
      V2* q = reinterpret_cast<V2*>(bins) + b[u];
      const V2 add = {d[u], 1.0};
      *q = *q + add;
    });
  }
}

template <class K>
NFHEP_FORCEINLINE std::size_t select_impl(const K* __restrict__ k, std::size_t n, double vlo, double scale,
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
    scalar_loop_prefetching(k, n, i0, m, [&](std::size_t u) {
      out[p] = kk[u];
      p += flag[b[u]];
    });
  }
  return p;
}

#if defined(__AVX512F__)
// AVX-512 selection of 64-bit keys: 8 bucket indices per vector, their flags fetched with one gather (8
// bytes read at flag + b: the flag array has 7 bytes of padding), the selected keys compressed in a
// register and stored as a whole vector (out needs 8 slots of room past the count).
NFHEP_FORCEINLINE std::size_t select_avx512(const std::uint64_t* __restrict__ k, std::size_t n, double vlo, double scale,
                                      std::int64_t last, const std::uint8_t* __restrict__ flag,
                                      std::uint64_t* __restrict__ out) {
  const __m512i sign = _mm512_set1_epi64(static_cast<long long>(std::uint64_t{1} << 63));
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i lastv = _mm512_set1_epi64(last);
  const __m512i low = _mm512_set1_epi64(0xFF);
  const __m512d vlov = _mm512_set1_pd(vlo);
  const __m512d scalev = _mm512_set1_pd(scale);
  std::size_t p = 0, i = 0;
  constexpr std::size_t kAhead = 256;  // keys (2 KiB) prefetched ahead: the loads were the stall (perf)
  for (; i + 8 <= n; i += 8) {
    if (i + kAhead < n) __builtin_prefetch(k + i + kAhead, 0, 3);
    const __m512i kk = _mm512_loadu_si512(reinterpret_cast<const void*>(k + i));
    // value bits: k ^ (((k >> 63) - 1) | sign), as value_of()
    const __m512i mask = _mm512_or_si512(_mm512_sub_epi64(_mm512_srli_epi64(kk, 63), one), sign);
    const __m512d v = _mm512_castsi512_pd(_mm512_xor_si512(kk, mask));
    __m512i b = _mm512_cvttpd_epi64(_mm512_mul_pd(_mm512_sub_pd(v, vlov), scalev));
    b = _mm512_min_epi64(b, lastv);
    const __m512i f = _mm512_and_si512(_mm512_i64gather_epi64(b, reinterpret_cast<const void*>(flag), 1), low);
    const __mmask8 m = _mm512_test_epi64_mask(f, f);
    _mm512_storeu_si512(reinterpret_cast<void*>(out + p), _mm512_maskz_compress_epi64(m, kk));
    p += static_cast<std::size_t>(__builtin_popcount(static_cast<unsigned>(m)));
  }
  for (; i < n; ++i) {
    std::int64_t bi = static_cast<std::int64_t>((value_of(k[i]) - vlo) * scale);
    bi = bi < last ? bi : last;
    out[p] = k[i];
    p += flag[bi];
  }
  return p;
}
#endif

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
#if defined(__AVX512F__)
  return select_avx512(k, n, vlo, scale, last, flag, out);
#else
  return select_impl(k, n, vlo, scale, last, flag, out);
#endif
}
std::size_t w1_select(const std::uint32_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
                      const std::uint8_t* flag, std::uint32_t* out) {
  return select_impl(k, n, vlo, scale, last, flag, out);
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
