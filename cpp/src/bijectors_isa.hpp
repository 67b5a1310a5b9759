// Private: the per-ISA batch loops of the bijectors (defined in cpp/src/isa/bijectors_isa.cpp, compiled
// once per SIMD level into nfhep::detail::isa_<name>).
#pragma once
#include <cstddef>

#include "nfhep/bijectors.hpp"
#include "nfhep/isa.hpp"

namespace nfhep::detail {
/// Most lanes of an RQS block (the work buffer is sized for it).
constexpr int kRqsLanes = 32;
/// Work memory (elements of T) the RQS loops need per call; the caller allocates it (no std:: templates
/// are instantiated in the per-ISA sources: a weak symbol compiled for AVX-512 could be shared by all).
inline std::size_t rqs_work_size(int K, bool grad) {
  const std::size_t P = static_cast<std::size_t>(3 * K - 1);
  return ((grad ? 3 : 1) * P + 2 * static_cast<std::size_t>(K)) * kRqsLanes + 16;  // + 64 bytes to align
}
}  // namespace nfhep::detail

// mode: 0 forward, 1 inverse. grad_out / grad_lad may be null; rgo / rgl (>= 1): each of their values is
// the gradient of `rgo` / `rgl` consecutive elements (1: an ordinary array).
// `work` holds rqs_work_size(K, grad) values.
// stream: write the parameter gradients with non-temporal stores where the level can (outputs far larger
// than the caches: no read-for-ownership of every destination line; same values).
#define NFHEP_BIJECTOR_ISA_DECLS(T)                                                                            \
  void rqs_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, int K,              \
               const ::nfhep::RqsOptions& opt, T* out, T* lad, T* work);                                       \
  void rqs_grad(bool inverse, const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad,     \
                std::size_t rgl, std::size_t begin, std::size_t end, int K, const ::nfhep::RqsOptions& opt,    \
                T* gin, T* gparams, T* work, bool stream);                                                     \
  void affine_run(int mode, const T* in, const T* params, std::size_t begin, std::size_t end, T* out, T* lad); \
  void affine_grad(bool inverse, const T* in, const T* params, const T* gout, std::size_t rgo, const T* glad,  \
                   std::size_t rgl, std::size_t begin, std::size_t end, T* gin, T* gparams);                   \
  void special_eval(int fn, const T* in, std::size_t n, T* out);

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
