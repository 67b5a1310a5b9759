#include "nfhep/build_info.hpp"

#include "flow_model.hpp"
#include "nfhep/isa.hpp"
#include "nfhep/parallel.hpp"
#if defined(NFHEP_WITH_CUDA)
#include "nfhep/detail/cuda_runtime.hpp"
#endif

#ifndef NFHEP_VERSION_STRING
#define NFHEP_VERSION_STRING "unknown"
#endif
#ifndef NFHEP_COMPILER_STRING
#define NFHEP_COMPILER_STRING "unknown"
#endif
#ifndef NFHEP_CUDA_ARCHS_STRING
#define NFHEP_CUDA_ARCHS_STRING ""
#endif

namespace nfhep {

BuildInfo build_info() {
  BuildInfo b;
  b.version = NFHEP_VERSION_STRING;
  b.compiler = NFHEP_COMPILER_STRING;
  b.isas_compiled.push_back("generic");
#if defined(NFHEP_HAVE_ISA_AVX2)
  b.isas_compiled.push_back("avx2");
#endif
#if defined(NFHEP_HAVE_ISA_AVX512)
  b.isas_compiled.push_back("avx512");
#endif
  for (Isa i : available_isas()) b.isas_available.push_back(isa_name(i));
  b.isa_active = isa_name(active_isa());
  b.num_threads = get_num_threads();
#if defined(NFHEP_WITH_CUDA)
  b.cuda_compiled = true;
  b.cuda_architectures = NFHEP_CUDA_ARCHS_STRING;
  b.cuda_devices = detail::cuda_device_count(&b.cuda_status);
#else
  b.cuda_compiled = false;
  b.cuda_status = "built without CUDA (rebuild with -DNFHEP_CUDA=ON, see README)";
#endif
  b.blas = detail::blas_name();
  return b;
}

}  // namespace nfhep
