// The bijectors' batch loops, compiled once per SIMD level (namespace nfhep::detail::NFHEP_ISA_NS).
//
// RQS: elements are processed in blocks of L = 16 lanes. The block's parameters are transposed into a structure-of-arrays scratch (parameter k of
// lane l at k*L + l) so that every stage of nfhep/math/rqs.hpp is a `for (l < L)` loop over contiguous
// memory, which GCC vectorises (see -DNFHEP_VECTORIZE_REPORT=ON). Missing lanes of the last block are
// padded with x = 0 and zero logits and never stored.
#include <cstddef>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../bijectors_isa.hpp"
#include "nfhep/bijectors.hpp"
#include "nfhep/math/affine.hpp"
#include "nfhep/math/rqs.hpp"

#ifndef NFHEP_ISA_NS
#error "NFHEP_ISA_NS must be defined (this file is compiled once per SIMD level)"
#endif

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

// 16 lanes for both precisions: one (float) or two (double) AVX-512 registers. With 8 double lanes GCC
// gives up on the per-lane evaluation loop ("control flow in loop").
template <class T>
constexpr int lanes() {
  return kRqsLanes;
}

template <class T>
math::RqsConfig<T> make_config(int K, const RqsOptions& o) {
  return math::RqsConfig<T>{K, static_cast<T>(o.bound), static_cast<T>(o.min_bin_width),
                            static_cast<T>(o.min_bin_height), static_cast<T>(o.min_derivative)};
}

// Copy lanes [0, m) of an AoS block (P values per element) into SoA (k*L + l); pad the rest with zeros.
#if defined(__AVX512F__)
// Full 16-lane block on AVX-512: one gather per parameter (pure data movement, bitwise the same as the
// scalar transpose) instead of 16 P scalar load/store pairs.
inline bool load_soa_full(const float* src, int P, float* dst) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(P));
  for (int k = 0; k < P; ++k) _mm512_storeu_ps(dst + k * 16, _mm512_i32gather_ps(idx, src + k, 4));
  return true;
}
inline bool load_soa_full(const double* src, int P, double* dst) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(P));
  const double* src8 = src + 8 * static_cast<std::size_t>(P);
  for (int k = 0; k < P; ++k) {
    _mm512_storeu_pd(dst + k * 16, _mm512_i32gather_pd(idx, src + k, 8));
    _mm512_storeu_pd(dst + k * 16 + 8, _mm512_i32gather_pd(idx, src8 + k, 8));
  }
  return true;
}
#else
template <class T>
inline bool load_soa_full(const T*, int, T*) {
  return false;
}
#endif

template <class T, int L>
inline void load_soa(const T* src, std::size_t m, int P, T* dst) {
  if (L == 16 && m == static_cast<std::size_t>(L) && load_soa_full(src, P, dst)) return;
  for (std::size_t l = 0; l < m; ++l)
    for (int k = 0; k < P; ++k) dst[k * L + l] = src[l * P + k];
  for (std::size_t l = m; l < static_cast<std::size_t>(L); ++l)
    for (int k = 0; k < P; ++k) dst[k * L + l] = T(0);
}

template <class T, int L>
inline void store_aos(const T* src, std::size_t m, int P, T* dst) {
  for (std::size_t l = 0; l < m; ++l)
    for (int k = 0; k < P; ++k) dst[l * P + k] = src[k * L + l];
}

// Software prefetch of the parameters of the block `ahead` blocks further on (the kernels read ~100-200
// bytes of parameters per element: without it the gathers wait on memory). No effect on results.
template <class T, int L>
inline void prefetch_params(const T* params, std::size_t i, std::size_t end, int P, std::size_t ahead) {
  const std::size_t j = i + ahead * L;
  if (j + L > end) return;
  const char* p = reinterpret_cast<const char*>(params + j * P);
  const std::size_t bytes = static_cast<std::size_t>(L) * P * sizeof(T);
  for (std::size_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 3);
}

template <class T, int L>
inline void load_lanes(const T* src, std::size_t m, T* dst) {
  for (std::size_t l = 0; l < m; ++l) dst[l] = src ? src[l] : T(0);
  for (std::size_t l = m; l < static_cast<std::size_t>(L); ++l) dst[l] = T(0);
}

// One block of L lanes, kept out of line: inlined into the outer element loop GCC's if-conversion of the
// lane loops fails ("control flow in loop") and the block stays scalar.
template <class T, int L, bool Inverse>
__attribute__((noinline)) void rqs_block_ool(const math::RqsConfig<T>& cfg, const T* NFHEP_RESTRICT in,
                                             const T* NFHEP_RESTRICT prm, T* NFHEP_RESTRICT scr,
                                             T* NFHEP_RESTRICT out, T* NFHEP_RESTRICT lad) {
  math::rqs_block<T, L, Inverse>(cfg, in, prm, scr, out, lad);
}

template <class T, int L, bool Inverse>
__attribute__((noinline)) void rqs_block_vjp_ool(const math::RqsConfig<T>& cfg, const T* NFHEP_RESTRICT in,
                                                 const T* NFHEP_RESTRICT prm, const T* NFHEP_RESTRICT go,
                                                 const T* NFHEP_RESTRICT gl, T* NFHEP_RESTRICT scr,
                                                 T* NFHEP_RESTRICT gi, T* NFHEP_RESTRICT gp) {
  math::rqs_block_vjp<T, L, Inverse>(cfg, in, prm, go, gl, scr, gi, gp);
}

template <class T>
void rqs_run_t(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, int K,
               const RqsOptions& opt, T* out, T* lad, T* work) {
  constexpr int L = lanes<T>();
  const int P = 3 * K - 1;
  const math::RqsConfig<T> cfg = make_config<T>(K, opt);
  T* prm = work;
  T* scr = prm + static_cast<std::size_t>(P) * L;
  alignas(64) T xin[L], yo[L], lo[L];
  for (std::size_t i = begin; i < end; i += L) {
    const std::size_t m = end - i < static_cast<std::size_t>(L) ? end - i : static_cast<std::size_t>(L);
    load_lanes<T, L>(in + i, m, xin);
    prefetch_params<T, L>(params, i, end, P, 4);
    load_soa<T, L>(params + i * P, m, P, prm);
    if (mode == 0)
      rqs_block_ool<T, L, false>(cfg, xin, prm, scr, yo, lo);
    else
      rqs_block_ool<T, L, true>(cfg, xin, prm, scr, yo, lo);
    for (std::size_t l = 0; l < m; ++l) {
      out[i + l] = yo[l];
      lad[i + l] = lo[l];
    }
  }
}

template <class T>
void rqs_grad_t(bool inverse, const T* in, const T* params, const T* gout, const T* glad, std::size_t begin,
                std::size_t end, int K, const RqsOptions& opt, T* gin, T* gparams, T* work) {
  constexpr int L = lanes<T>();
  const int P = 3 * K - 1;
  const math::RqsConfig<T> cfg = make_config<T>(K, opt);
  T* prm = work;
  T* gp = prm + static_cast<std::size_t>(P) * L;
  T* scr = gp + static_cast<std::size_t>(P) * L;
  alignas(64) T xin[L], go[L], gl[L], gi[L];
  for (std::size_t i = begin; i < end; i += L) {
    const std::size_t m = end - i < static_cast<std::size_t>(L) ? end - i : static_cast<std::size_t>(L);
    load_lanes<T, L>(in + i, m, xin);
    load_lanes<T, L>(gout ? gout + i : nullptr, m, go);
    load_lanes<T, L>(glad ? glad + i : nullptr, m, gl);
    prefetch_params<T, L>(params, i, end, P, 4);
    load_soa<T, L>(params + i * P, m, P, prm);
    if (!inverse)
      rqs_block_vjp_ool<T, L, false>(cfg, xin, prm, go, gl, scr, gi, gp);
    else
      rqs_block_vjp_ool<T, L, true>(cfg, xin, prm, go, gl, scr, gi, gp);
    for (std::size_t l = 0; l < m; ++l) gin[i + l] = gi[l];
    store_aos<T, L>(gp, m, P, gparams + i * P);
  }
}

template <class T>
void affine_run_t(int mode, const T* NFHEP_RESTRICT in, const T* NFHEP_RESTRICT params, std::size_t begin,
                  std::size_t end, T* NFHEP_RESTRICT out, T* NFHEP_RESTRICT lad) {
  if (mode == 0) {
#pragma GCC ivdep
    for (std::size_t i = begin; i < end; ++i) math::affine_forward(in[i], params[2 * i], params[2 * i + 1], out[i], lad[i]);
  } else {
#pragma GCC ivdep
    for (std::size_t i = begin; i < end; ++i) math::affine_inverse(in[i], params[2 * i], params[2 * i + 1], out[i], lad[i]);
  }
}

template <class T, bool HasGo, bool HasGl>
void affine_grad_loop(bool inverse, const T* NFHEP_RESTRICT in, const T* NFHEP_RESTRICT params,
                      const T* NFHEP_RESTRICT gout, const T* NFHEP_RESTRICT glad, std::size_t begin,
                      std::size_t end, T* NFHEP_RESTRICT gin, T* NFHEP_RESTRICT gparams) {
  if (!inverse) {
#pragma GCC ivdep
    for (std::size_t i = begin; i < end; ++i)
      math::affine_forward_vjp(in[i], params[2 * i], HasGo ? gout[i] : T(0), HasGl ? glad[i] : T(0), gin[i],
                               gparams[2 * i], gparams[2 * i + 1]);
  } else {
#pragma GCC ivdep
    for (std::size_t i = begin; i < end; ++i)
      math::affine_inverse_vjp(in[i], params[2 * i], params[2 * i + 1], HasGo ? gout[i] : T(0),
                               HasGl ? glad[i] : T(0), gin[i], gparams[2 * i], gparams[2 * i + 1]);
  }
}

template <class T>
void affine_grad_t(bool inverse, const T* in, const T* params, const T* gout, const T* glad, std::size_t begin,
                   std::size_t end, T* gin, T* gparams) {
  // Null upstream gradients are zeros: choose the loop once, outside.
  if (gout && glad)
    affine_grad_loop<T, true, true>(inverse, in, params, gout, glad, begin, end, gin, gparams);
  else if (gout)
    affine_grad_loop<T, true, false>(inverse, in, params, gout, glad, begin, end, gin, gparams);
  else if (glad)
    affine_grad_loop<T, false, true>(inverse, in, params, gout, glad, begin, end, gin, gparams);
  else
    affine_grad_loop<T, false, false>(inverse, in, params, gout, glad, begin, end, gin, gparams);
}

template <class T>
void special_eval_t(int fn, const T* NFHEP_RESTRICT in, std::size_t n, T* NFHEP_RESTRICT out) {
  switch (fn) {
    case 0:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::exp(in[i]);
      break;
    case 1:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::log(in[i]);
      break;
    case 2:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::log1p(in[i]);
      break;
    case 3:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::softplus(in[i]);
      break;
    default:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::sigmoid(in[i]);
      break;
  }
}

}  // namespace

#define NFHEP_BIJ_DEFS(T)                                                                                       \
  void rqs_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, int K,               \
               const ::nfhep::RqsOptions& opt, T* out, T* lad, T* work) {                                       \
    rqs_run_t<T>(mode, in, params, begin, end, K, opt, out, lad, work);                                         \
  }                                                                                                            \
  void rqs_grad(bool inverse, const T* in, const T* params, const T* gout, const T* glad, std::size_t begin,     \
                std::size_t end, int K, const ::nfhep::RqsOptions& opt, T* gin, T* gparams, T* work) {           \
    rqs_grad_t<T>(inverse, in, params, gout, glad, begin, end, K, opt, gin, gparams, work);                     \
  }                                                                                                            \
  void affine_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, T* out, T* lad) { \
    affine_run_t<T>(mode, in, params, begin, end, out, lad);                                                    \
  }                                                                                                            \
  void affine_grad(bool inverse, const T* in, const T* params, const T* gout, const T* glad, std::size_t begin,  \
                   std::size_t end, T* gin, T* gparams) {                                                        \
    affine_grad_t<T>(inverse, in, params, gout, glad, begin, end, gin, gparams);                                \
  }                                                                                                            \
  void special_eval(int fn, const T* in, std::size_t n, T* out) { special_eval_t<T>(fn, in, n, out); }

NFHEP_BIJ_DEFS(float)
NFHEP_BIJ_DEFS(double)

}  // namespace nfhep::detail::NFHEP_ISA_NS
