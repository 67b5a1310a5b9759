// Private: the per-ISA batch loops of the bijectors (defined in cpp/src/isa/bijectors_isa.cpp, compiled
// once per SIMD level into nfhep::detail::isa_<name>).
#pragma once
#include <cstddef>

#include "nfhep/bijectors.hpp"
#include "nfhep/isa.hpp"

// mode: 0 forward, 1 inverse. grad_out / grad_lad may be null.
#define NFHEP_BIJECTOR_ISA_DECLS(T)                                                                            \
  void rqs_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, int K,              \
               const ::nfhep::RqsOptions& opt, T* out, T* lad);                                                 \
  void rqs_grad(bool inverse, const T* in, const T* params, const T* gout, const T* glad, std::size_t begin,    \
                std::size_t end, int K, const ::nfhep::RqsOptions& opt, T* gin, T* gparams);                    \
  void affine_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, T* out, T* lad);  \
  void affine_grad(bool inverse, const T* in, const T* params, const T* gout, const T* glad, std::size_t begin, \
                   std::size_t end, T* gin, T* gparams);

#define NFHEP_BIJECTOR_ISA_NS(ns)  \
  namespace nfhep::detail::ns {     \
  NFHEP_BIJECTOR_ISA_DECLS(float)   \
  NFHEP_BIJECTOR_ISA_DECLS(double)  \
  }

NFHEP_BIJECTOR_ISA_NS(isa_generic)
#if defined(NFHEP_HAVE_ISA_AVX2)
NFHEP_BIJECTOR_ISA_NS(isa_avx2)
#endif
#if defined(NFHEP_HAVE_ISA_AVX512)
NFHEP_BIJECTOR_ISA_NS(isa_avx512)
#endif
