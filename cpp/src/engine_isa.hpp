// Private: the inference engine's element-wise loops, compiled once per SIMD level (defined in
// cpp/src/isa/engine_isa.cpp into nfhep::detail::isa_<name>); flow_eval.cpp calls them through
// NFHEP_DISPATCH. The GEMMs go to OpenBLAS; these are the passes between them.
#pragma once
#include <cstddef>

#include "nfhep/isa.hpp"

// fill_rows: blk[r, 0:n] = b[0:n] for r < R (row stride ldc): the bias, before a GEMM with beta = 1.
// relu: blk[r, 0:n] = max(blk, 0) in place (NaN -> 0, as torch's relu never sees one here).
// soft_clamp: p[2 e] = c tanh(p[2 e] / c) for e < n (the affine log-scales of [s, t] pairs).
#define NFHEP_ENGINE_ISA_DECLS(T)                                                                 \
  void engine_fill_rows(const T* b, std::size_t R, T* blk, int ldc, int n);                       \
  void engine_relu(std::size_t R, T* blk, int ldc, int n);                                        \
  void engine_soft_clamp(T* p, std::size_t n, T c);

#define NFHEP_ENGINE_ISA_NS(ns)   \
  namespace nfhep::detail::ns {   \
  NFHEP_ENGINE_ISA_DECLS(float)   \
  NFHEP_ENGINE_ISA_DECLS(double)  \
  }

NFHEP_ENGINE_ISA_NS(isa_generic)
#if defined(NFHEP_HAVE_ISA_AVX2)
NFHEP_ENGINE_ISA_NS(isa_avx2)
#endif
#if defined(NFHEP_HAVE_ISA_AVX512)
NFHEP_ENGINE_ISA_NS(isa_avx512)
#endif
