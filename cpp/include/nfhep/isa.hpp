// nfhep/isa.hpp: runtime instruction-set dispatch.
//
// Every source in cpp/src/isa/ is compiled once per instruction set (generic; on x86-64 also AVX2 and
// AVX-512) into the namespace nfhep::detail::isa_<name>. active_isa() is the best level both compiled in
// and supported by this CPU, capped by the environment variable NFHEP_ISA (generic|avx2|avx512) or by
// set_isa(). The metrics give bitwise-identical results on all levels (no FMA contraction, same operation
// order), except the sliced-Wasserstein projection, which like the bijector kernels is contracted to FMA
// on AVX2 and AVX-512 (bitwise identical to each other, within rounding of the generic level). The tests
// check both.
#pragma once
#include <string>
#include <vector>

#include "nfhep/config.hpp"

namespace nfhep {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

/// Name of an instruction-set level: "generic", "avx2" or "avx512".
NFHEP_API const char* isa_name(Isa isa);
/// Levels compiled into this build and supported by the CPU it runs on, lowest first.
NFHEP_API std::vector<Isa> available_isas();
/// The level the kernels use now.
NFHEP_API Isa active_isa();
/// Use a given level (by name); throws std::invalid_argument if unknown or unavailable here.
/// An empty name restores the default (best available, capped by NFHEP_ISA).
NFHEP_API void set_isa(const std::string& name);

}  // namespace nfhep

// Call detail::isa_<active>::fn(args...). Use only in cpp/src (needs the declarations of every variant).
#if defined(NFHEP_HAVE_ISA_AVX512)
#define NFHEP_DISPATCH_AVX512(fn, ...) \
  case ::nfhep::Isa::avx512:           \
    return ::nfhep::detail::isa_avx512::fn(__VA_ARGS__);
#else
#define NFHEP_DISPATCH_AVX512(fn, ...)
#endif
#if defined(NFHEP_HAVE_ISA_AVX2)
#define NFHEP_DISPATCH_AVX2(fn, ...) \
  case ::nfhep::Isa::avx2:           \
    return ::nfhep::detail::isa_avx2::fn(__VA_ARGS__);
#else
#define NFHEP_DISPATCH_AVX2(fn, ...)
#endif
#define NFHEP_DISPATCH(fn, ...)                                  \
  switch (::nfhep::active_isa()) {                               \
    NFHEP_DISPATCH_AVX512(fn, __VA_ARGS__)                       \
    NFHEP_DISPATCH_AVX2(fn, __VA_ARGS__)                         \
    default:                                                     \
      return ::nfhep::detail::isa_generic::fn(__VA_ARGS__);      \
  }

// Declare a function in every compiled ISA namespace:  NFHEP_DECLARE_ISA(void f(int, double));
#define NFHEP_DECLARE_ISA_IN(ns, decl) \
  namespace nfhep::detail::ns {        \
  decl;                                \
  }
#if defined(NFHEP_HAVE_ISA_AVX512)
#define NFHEP_DECLARE_ISA_AVX512(decl) NFHEP_DECLARE_ISA_IN(isa_avx512, decl)
#else
#define NFHEP_DECLARE_ISA_AVX512(decl)
#endif
#if defined(NFHEP_HAVE_ISA_AVX2)
#define NFHEP_DECLARE_ISA_AVX2(decl) NFHEP_DECLARE_ISA_IN(isa_avx2, decl)
#else
#define NFHEP_DECLARE_ISA_AVX2(decl)
#endif
#define NFHEP_DECLARE_ISA(decl)             \
  NFHEP_DECLARE_ISA_IN(isa_generic, decl)   \
  NFHEP_DECLARE_ISA_AVX2(decl)              \
  NFHEP_DECLARE_ISA_AVX512(decl)
