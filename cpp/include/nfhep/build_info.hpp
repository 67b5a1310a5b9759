// nfhep/build_info.hpp: how this copy of the core was built and what it runs with.
#pragma once
#include <string>
#include <vector>

#include "nfhep/config.hpp"

namespace nfhep {

struct BuildInfo {
  std::string version;                  ///< nfhep version of the core library
  std::string compiler;                 ///< compiler id and version
  std::vector<std::string> isas_compiled;   ///< SIMD levels compiled in (generic, avx2, avx512)
  std::vector<std::string> isas_available;  ///< of those, the ones this CPU supports
  std::string isa_active;               ///< the level the kernels use now
  int num_threads = 1;                  ///< threads the kernels use now
  bool cuda_compiled = false;           ///< built with NFHEP_CUDA=ON
  std::string cuda_architectures;       ///< the explicit architecture list of a CUDA build
  int cuda_devices = 0;                 ///< CUDA devices visible now (0 without a driver or device)
  std::string cuda_status;              ///< why there are no devices, if there are none
  std::string blas;                     ///< the BLAS of the inference engine's dense layers
};

/// Describe this build. Queries the CUDA runtime (never at import: only when called).
NFHEP_API BuildInfo build_info();

}  // namespace nfhep
