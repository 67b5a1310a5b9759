// The bijectors' batch loops, compiled once per SIMD level (namespace nfhep::detail::NFHEP_ISA_NS).
//
// RQS: elements are processed in blocks of L lanes (16; 32 for float on AVX-512). The block's parameters
// are transposed into a structure-of-arrays scratch (parameter k of lane l at k*L + l) so that every stage of nfhep/math/rqs.hpp is a `for (l < L)` loop over contiguous
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

// float lanes per block: two AVX-512 registers (more independent work for the out-of-order core: the
// forward 19.9 -> 19.3, the VJP 27.5 -> 25.2 ns/element measured on one core), one elsewhere.
#ifndef NFHEP_F32_LANES
#if defined(__AVX512F__)
#define NFHEP_F32_LANES 32
#else
#define NFHEP_F32_LANES 16
#endif
#endif

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

// 16 double lanes (two AVX-512 registers; with 8 GCC gives up on the per-lane evaluation loop, "control
// flow in loop"), NFHEP_F32_LANES float lanes.
template <class T>
constexpr int lanes() {
  return sizeof(T) == 4 ? NFHEP_F32_LANES : 16;
}

// The work buffer aligned to 64 bytes (rqs_work_size leaves room for it).
template <class T>
inline T* align64(T* p) {
  const std::size_t a = reinterpret_cast<std::size_t>(p);
  return reinterpret_cast<T*>((a + 63) & ~static_cast<std::size_t>(63));
}

template <class T>
math::RqsConfig<T> make_config(int K, const RqsOptions& o) {
  return math::RqsConfig<T>{K, static_cast<T>(o.bound), static_cast<T>(o.min_bin_width),
                            static_cast<T>(o.min_bin_height), static_cast<T>(o.min_derivative)};
}

// Copy lanes [0, m) of an AoS block (P values per element) into SoA (k*L + l); pad the rest with zeros.
#if defined(__AVX512F__)
// Full 16-lane blocks on AVX-512 move through registers: tiles of 16 (float) or 8 (double) parameters of
// 16 (8) elements are loaded with masked row loads, transposed with shuffles and stored as SoA rows (and
// the reverse for the gradients). Pure data movement, bitwise the same as the scalar copy; measured
// (float32, K = 8, one thread) 8.5 -> ~1 ns per element for the gradient store, which was a 368-element
// scalar copy per block, and faster than one gather per parameter for the load.

// 16x16 float transpose: r[i][j] -> r[j][i] (unpack, in-lane shuffle, two 128-bit lane shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int p = 0; p < 8; ++p) {
    t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
  }
  // u[4g + c], 128-bit lane q: column 4q + c of rows 4g .. 4g+3
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 b0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 b1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    const __m512 b2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 b3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(b0, b2, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(b1, b3, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(b0, b2, 0xDD);
    r[12 + c] = _mm512_shuffle_f32x4(b1, b3, 0xDD);
  }
}

// 8x8 double transpose (same scheme, 2 doubles per 128-bit lane).
inline void transpose8(__m512d r[8]) {
  __m512d a[8];
  for (int p = 0; p < 4; ++p) {
    a[2 * p] = _mm512_unpacklo_pd(r[2 * p], r[2 * p + 1]);      // lane q: column 2q of rows 2p, 2p+1
    a[2 * p + 1] = _mm512_unpackhi_pd(r[2 * p], r[2 * p + 1]);  // lane q: column 2q+1
  }
  for (int c = 0; c < 2; ++c) {
    const __m512d b0 = _mm512_shuffle_f64x2(a[c], a[2 + c], 0x88);
    const __m512d b1 = _mm512_shuffle_f64x2(a[c], a[2 + c], 0xDD);
    const __m512d b2 = _mm512_shuffle_f64x2(a[4 + c], a[6 + c], 0x88);
    const __m512d b3 = _mm512_shuffle_f64x2(a[4 + c], a[6 + c], 0xDD);
    r[c] = _mm512_shuffle_f64x2(b0, b2, 0x88);
    r[2 + c] = _mm512_shuffle_f64x2(b1, b3, 0x88);
    r[4 + c] = _mm512_shuffle_f64x2(b0, b2, 0xDD);
    r[6 + c] = _mm512_shuffle_f64x2(b1, b3, 0xDD);
  }
}

// One register tile per precision: W elements per register, its masked/unmasked loads and stores and
// its W x W transpose.
template <class T>
struct Tile;
template <>
struct Tile<float> {
  using V = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static V load(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(M m, float* p, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static void transpose(V* r) { transpose16(r); }
};
template <>
struct Tile<double> {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int W = 8;
  static V load(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(M m, double* p, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static void transpose(V* r) { transpose8(r); }
};

// AoS -> SoA (load) or SoA -> AoS (store) of L elements with P parameters each, tile by tile: lane group
// g (W elements) x parameter range [kt, kt + W).
template <int L, bool ToSoa, class T>
inline bool transpose_block(const T* src, int P, T* dst) {
  using Tl = Tile<T>;
  constexpr int W = Tl::W;
  const typename Tl::M all = static_cast<typename Tl::M>((1u << W) - 1u);
  for (int g = 0; g < L; g += W)
    for (int kt = 0; kt < P; kt += W) {
      const int cnt = P - kt < W ? P - kt : W;
      const typename Tl::M mk = static_cast<typename Tl::M>((1u << cnt) - 1u);
      typename Tl::V r[W];
      for (int i = 0; i < W; ++i) {
        if (ToSoa)  // row i = element g + i, parameters kt .. kt + cnt
          r[i] = Tl::load(mk, src + static_cast<std::size_t>(g + i) * P + kt);
        else  // row i = parameter kt + i of the W elements (zeros past P)
          r[i] = Tl::load(i < cnt ? all : typename Tl::M(0), src + (kt + (i < cnt ? i : 0)) * L + g);
      }
      Tl::transpose(r);
      for (int i = 0; i < W; ++i) {
        if (ToSoa) {
          if (i < cnt) Tl::store(all, dst + (kt + i) * L + g, r[i]);
        } else {
          Tl::store(mk, dst + static_cast<std::size_t>(g + i) * P + kt, r[i]);
        }
      }
    }
  return true;
}
template <int L, class T>
inline bool load_soa_full(const T* src, int P, T* dst) {
  return transpose_block<L, true>(src, P, dst);
}
template <int L, class T>
inline bool store_aos_full(const T* src, int P, T* dst) {
  return transpose_block<L, false>(src, P, dst);
}
// The same into the 64-byte aligned L1 buffer `buf` (L x P values), then copied to dst with
// non-temporal stores (dst must be 64-byte aligned; L * P * sizeof(T) is a multiple of 64 for the lane
// counts used here). The caller ends with a store fence.
template <int L, class T>
inline bool store_aos_stream(const T* src, int P, T* dst, T* buf) {
  const std::size_t bytes = static_cast<std::size_t>(L) * static_cast<std::size_t>(P) * sizeof(T);
  if ((reinterpret_cast<std::size_t>(dst) & 63) != 0 || (bytes & 63) != 0) return false;
  transpose_block<L, false>(src, P, buf);
  const char* s = reinterpret_cast<const char*>(buf);
  char* d = reinterpret_cast<char*>(dst);
  for (std::size_t c = 0; c < bytes; c += 64)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + c), _mm512_load_si512(reinterpret_cast<const void*>(s + c)));
  return true;
}
inline void stream_fence() { _mm_sfence(); }
#else
template <int L, class T>
inline bool load_soa_full(const T*, int, T*) {
  return false;
}
template <int L, class T>
inline bool store_aos_full(const T*, int, T*) {
  return false;
}
template <int L, class T>
inline bool store_aos_stream(const T*, int, T*, T*) {
  return false;
}
inline void stream_fence() {}
#endif

template <class T, int L>
inline void load_soa(const T* src, std::size_t m, int P, T* dst) {
  if (L % 16 == 0 && m == static_cast<std::size_t>(L) && load_soa_full<L>(src, P, dst)) return;
  for (std::size_t l = 0; l < m; ++l)
    for (int k = 0; k < P; ++k) dst[k * L + l] = src[l * P + k];
  for (std::size_t l = m; l < static_cast<std::size_t>(L); ++l)
    for (int k = 0; k < P; ++k) dst[k * L + l] = T(0);
}

template <class T, int L>
inline void store_aos(const T* src, std::size_t m, int P, T* dst) {
  if (L % 16 == 0 && m == static_cast<std::size_t>(L) && store_aos_full<L>(src, P, dst)) return;
  for (std::size_t l = 0; l < m; ++l)
    for (int k = 0; k < P; ++k) dst[l * P + k] = src[k * L + l];
}

// Software prefetch of the parameters of the block `ahead` blocks further on (the kernels read ~100-200
// bytes of parameters per element: without it the gathers wait on memory), in `parts` slices: the loops
// issue the first half of the lines before the current block's transposed load and the second half after
// it, 2 blocks ahead. Measured (5e5 x 28, K = 8, 2 threads, against all lines 4 blocks ahead before the
// load): float64 forward 0.307 -> 0.27-0.28 s, backward 0.421 -> 0.38 s; float32 forward 0.147 -> 0.13 s,
// backward 0.212 -> 0.19 s (a burst of ~46 line requests stalls on the L1 miss buffers, and delays the
// current block's own loads). No effect on results.
constexpr std::size_t kPrefetchBlocks = 2;
template <class T, int L>
inline void prefetch_params(const T* params, std::size_t i, std::size_t end, int P, std::size_t ahead,
                            int part = 0, int parts = 1) {
  const std::size_t j = i + ahead * L;
  if (j + L > end) return;
  const char* p = reinterpret_cast<const char*>(params + j * P);
  const std::size_t lines = (static_cast<std::size_t>(L) * P * sizeof(T) + 63) / 64;
  const std::size_t b0 = lines * part / parts, b1 = lines * (part + 1) / parts;
  for (std::size_t b = b0; b < b1; ++b) __builtin_prefetch(p + 64 * b, 0, 3);
}

template <class T, int L>
inline void load_lanes(const T* src, std::size_t m, T* dst) {
  for (std::size_t l = 0; l < m; ++l) dst[l] = src ? src[l] : T(0);
  for (std::size_t l = m; l < static_cast<std::size_t>(L); ++l) dst[l] = T(0);
}
// Lanes i .. i+m-1 of an upstream gradient that holds one value per `repeat` consecutive elements
// (repeat = 1: an ordinary array; null: zeros).
template <class T, int L>
inline void load_grad_lanes(const T* g, std::size_t repeat, std::size_t i, std::size_t m, T* dst) {
  if (g == nullptr || repeat == 1) {
    load_lanes<T, L>(g ? g + i : nullptr, m, dst);
    return;
  }
  std::size_t q = i / repeat, r = i % repeat;
  for (std::size_t l = 0; l < m; ++l) {
    dst[l] = g[q];
    if (++r == repeat) r = 0, ++q;
  }
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
  T* prm = align64(work);
  T* scr = prm + static_cast<std::size_t>(P) * L;
  alignas(64) T xin[L], yo[L], lo[L];
  for (std::size_t i = begin; i < end; i += L) {
    const std::size_t m = end - i < static_cast<std::size_t>(L) ? end - i : static_cast<std::size_t>(L);
    load_lanes<T, L>(in + i, m, xin);
    prefetch_params<T, L>(params, i, end, P, kPrefetchBlocks, 0, 2);
    load_soa<T, L>(params + i * P, m, P, prm);
    prefetch_params<T, L>(params, i, end, P, kPrefetchBlocks, 1, 2);
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
void rqs_grad_t(bool inverse, const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad,
                std::size_t rgl, std::size_t begin, std::size_t end, int K, const RqsOptions& opt, T* gin,
                T* gparams, T* work, bool stream) {
  constexpr int L = lanes<T>();
  const int P = 3 * K - 1;
  const math::RqsConfig<T> cfg = make_config<T>(K, opt);
  T* prm = align64(work);
  T* gp = prm + static_cast<std::size_t>(P) * L;
  T* scr = gp + static_cast<std::size_t>(P) * L;
  T* aos = scr + static_cast<std::size_t>(2 * K) * L;  // AoS staging for the non-temporal stores
  alignas(64) T xin[L], go[L], gl[L], gi[L];
  for (std::size_t i = begin; i < end; i += L) {
    const std::size_t m = end - i < static_cast<std::size_t>(L) ? end - i : static_cast<std::size_t>(L);
    load_lanes<T, L>(in + i, m, xin);
    load_grad_lanes<T, L>(gout, rgo, i, m, go);
    load_grad_lanes<T, L>(glad, rgl, i, m, gl);
    prefetch_params<T, L>(params, i, end, P, kPrefetchBlocks, 0, 2);
    load_soa<T, L>(params + i * P, m, P, prm);
    prefetch_params<T, L>(params, i, end, P, kPrefetchBlocks, 1, 2);
    if (!inverse)
      rqs_block_vjp_ool<T, L, false>(cfg, xin, prm, go, gl, scr, gi, gp);
    else
      rqs_block_vjp_ool<T, L, true>(cfg, xin, prm, go, gl, scr, gi, gp);
    for (std::size_t l = 0; l < m; ++l) gin[i + l] = gi[l];
    if (!(stream && m == static_cast<std::size_t>(L) && store_aos_stream<L>(gp, P, gparams + i * P, aos)))
      store_aos<T, L>(gp, m, P, gparams + i * P);
  }
  if (stream) stream_fence();
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

// Upstream gradient access in the affine loops: 0 = zeros (null), 1 = one value per element,
// 2 = one value (`c`) for the whole loop.
template <int Mode, class T>
NFHEP_FORCEINLINE T grad_at(const T* NFHEP_RESTRICT g, T c, std::size_t i) {
  if constexpr (Mode == 0) return T(0);
  else if constexpr (Mode == 1) return g[i];
  else return c;
}

template <class T, int Go, int Gl>
void affine_grad_loop(bool inverse, const T* NFHEP_RESTRICT in, const T* NFHEP_RESTRICT params,
                      const T* NFHEP_RESTRICT gout, T cgo, const T* NFHEP_RESTRICT glad, T cgl,
                      std::size_t begin, std::size_t end, T* NFHEP_RESTRICT gin, T* NFHEP_RESTRICT gparams) {
  if (!inverse) {
#pragma GCC ivdep
    for (std::size_t i = begin; i < end; ++i)
      math::affine_forward_vjp(in[i], params[2 * i], grad_at<Go>(gout, cgo, i), grad_at<Gl>(glad, cgl, i), gin[i],
                               gparams[2 * i], gparams[2 * i + 1]);
  } else {
#pragma GCC ivdep
    for (std::size_t i = begin; i < end; ++i)
      math::affine_inverse_vjp(in[i], params[2 * i], params[2 * i + 1], grad_at<Go>(gout, cgo, i),
                               grad_at<Gl>(glad, cgl, i), gin[i], gparams[2 * i], gparams[2 * i + 1]);
  }
}

template <class T, int Go>
void affine_grad_gl(int gl_mode, bool inverse, const T* in, const T* params, const T* gout, T cgo, const T* glad,
                    T cgl, std::size_t begin, std::size_t end, T* gin, T* gparams) {
  if (gl_mode == 0)
    affine_grad_loop<T, Go, 0>(inverse, in, params, gout, cgo, glad, cgl, begin, end, gin, gparams);
  else if (gl_mode == 1)
    affine_grad_loop<T, Go, 1>(inverse, in, params, gout, cgo, glad, cgl, begin, end, gin, gparams);
  else
    affine_grad_loop<T, Go, 2>(inverse, in, params, gout, cgo, glad, cgl, begin, end, gin, gparams);
}

template <class T>
void affine_grad_t(bool inverse, const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad,
                   std::size_t rgl, std::size_t begin, std::size_t end, T* gin, T* gparams) {
  // The loop variant is chosen outside the element loop. A gradient with repeat > 1 (one value per run of
  // `repeat` elements, e.g. a sum's broadcast gradient) is constant on each run: cut [begin, end) at the
  // run boundaries and pass the run's value as a scalar.
  const int go_mode = gout == nullptr ? 0 : (rgo == 1 ? 1 : 2);
  const int gl_mode = glad == nullptr ? 0 : (rgl == 1 ? 1 : 2);
  std::size_t pos = begin;
  while (pos < end) {
    std::size_t stop = end;
    // The value of the run of `repeat` elements holding pos; stop no later than that run's end.
    auto run_value = [&](const T* g, std::size_t repeat) {
      const std::size_t run_end = (pos / repeat + 1) * repeat;
      if (run_end < stop) stop = run_end;
      return g[pos / repeat];
    };
    const T cgo = go_mode == 2 ? run_value(gout, rgo) : T(0);
    const T cgl = gl_mode == 2 ? run_value(glad, rgl) : T(0);
    if (go_mode == 0)
      affine_grad_gl<T, 0>(gl_mode, inverse, in, params, gout, cgo, glad, cgl, pos, stop, gin, gparams);
    else if (go_mode == 1)
      affine_grad_gl<T, 1>(gl_mode, inverse, in, params, gout, cgo, glad, cgl, pos, stop, gin, gparams);
    else
      affine_grad_gl<T, 2>(gl_mode, inverse, in, params, gout, cgo, glad, cgl, pos, stop, gin, gparams);
    pos = stop;
  }
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
    case 4:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::sigmoid(in[i]);
      break;
    case 5:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::exp_nonpos(in[i]);
      break;
    default:
      for (std::size_t i = 0; i < n; ++i) out[i] = math::log1p_unit(in[i]);
      break;
  }
}

}  // namespace

#define NFHEP_BIJ_DEFS(T)                                                                                       \
  void rqs_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, int K,               \
               const ::nfhep::RqsOptions& opt, T* out, T* lad, T* work) {                                       \
    rqs_run_t<T>(mode, in, params, begin, end, K, opt, out, lad, work);                                         \
  }                                                                                                            \
  void rqs_grad(bool inverse, const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad,     \
                std::size_t rgl, std::size_t begin, std::size_t end, int K, const ::nfhep::RqsOptions& opt,     \
                T* gin, T* gparams, T* work, bool stream) {                                                    \
    rqs_grad_t<T>(inverse, in, params, gout, rgo, glad, rgl, begin, end, K, opt, gin, gparams, work, stream);   \
  }                                                                                                            \
  void affine_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, T* out, T* lad) { \
    affine_run_t<T>(mode, in, params, begin, end, out, lad);                                                    \
  }                                                                                                            \
  void affine_grad(bool inverse, const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad,  \
                   std::size_t rgl, std::size_t begin, std::size_t end, T* gin, T* gparams) {                    \
    affine_grad_t<T>(inverse, in, params, gout, rgo, glad, rgl, begin, end, gin, gparams);                      \
  }                                                                                                            \
  void special_eval(int fn, const T* in, std::size_t n, T* out) { special_eval_t<T>(fn, in, n, out); }

NFHEP_BIJ_DEFS(float)
NFHEP_BIJ_DEFS(double)

}  // namespace nfhep::detail::NFHEP_ISA_NS
