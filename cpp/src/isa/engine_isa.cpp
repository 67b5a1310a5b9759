// The inference engine's element-wise passes, compiled once per SIMD level (see cpp/src/engine_isa.hpp).
// Plain loops over contiguous rows that GCC vectorises; the soft clamp uses nfhep/math/affine.hpp.
#include <cstddef>

#include "../engine_isa.hpp"
#include "nfhep/math/affine.hpp"

#ifndef NFHEP_ISA_NS
#error "NFHEP_ISA_NS must be defined (this file is compiled once per SIMD level)"
#endif

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

template <class T>
void fill_rows_t(const T* NFHEP_RESTRICT b, std::size_t R, T* NFHEP_RESTRICT blk, int ldc, int n) {
  for (std::size_t r = 0; r < R; ++r) {
    T* NFHEP_RESTRICT row = blk + r * static_cast<std::size_t>(ldc);
    for (int o = 0; o < n; ++o) row[o] = b[o];
  }
}

template <class T>
void relu_t(std::size_t R, T* NFHEP_RESTRICT blk, int ldc, int n) {
  for (std::size_t r = 0; r < R; ++r) {
    T* NFHEP_RESTRICT row = blk + r * static_cast<std::size_t>(ldc);
    for (int o = 0; o < n; ++o) row[o] = row[o] > T(0) ? row[o] : T(0);
  }
}

template <class T>
void soft_clamp_t(T* NFHEP_RESTRICT p, std::size_t n, T c) {
  for (std::size_t e = 0; e < n; ++e) p[2 * e] = math::soft_clamp(p[2 * e], c);
}

}  // namespace

#define NFHEP_ENGINE_DEFS(T)                                                                                    \
  void engine_fill_rows(const T* b, std::size_t R, T* blk, int ldc, int n) { fill_rows_t<T>(b, R, blk, ldc, n); } \
  void engine_relu(std::size_t R, T* blk, int ldc, int n) { relu_t<T>(R, blk, ldc, n); }                          \
  void engine_soft_clamp(T* p, std::size_t n, T c) { soft_clamp_t<T>(p, n, c); }

NFHEP_ENGINE_DEFS(float)
NFHEP_ENGINE_DEFS(double)

}  // namespace nfhep::detail::NFHEP_ISA_NS
