// Build information, threads and SIMD level.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "nfhep/build_info.hpp"
#include "nfhep/isa.hpp"
#include "nfhep/parallel.hpp"

namespace pyb = pybind11;

void bind_info(pyb::module_& m) {
  m.def(
      "build_info",
      [] {
        const nfhep::BuildInfo b = nfhep::build_info();
        pyb::dict d;
        d["version"] = b.version;
        d["compiler"] = b.compiler;
        d["simd_compiled"] = b.isas_compiled;
        d["simd_available"] = b.isas_available;
        d["simd"] = b.isa_active;
        d["num_threads"] = b.num_threads;
        d["cuda"] = b.cuda_compiled;
        d["cuda_architectures"] = b.cuda_architectures;
        d["cuda_devices"] = b.cuda_devices;
        d["cuda_status"] = b.cuda_status;
        d["blas"] = b.blas;
        return d;
      },
      "How this copy of the core was built and what it runs with (dict).");
  m.def("set_num_threads", &nfhep::set_num_threads, pyb::arg("n"),
        "Set the core's thread count; n <= 0 restores the default (NFHEP_NUM_THREADS or the CPU count).");
  m.def("get_num_threads", &nfhep::get_num_threads, "The core's thread count.");
  m.def("set_simd", &nfhep::set_isa, pyb::arg("level"),
        "Use SIMD level 'generic', 'avx2' or 'avx512' ('' = best available, capped by NFHEP_ISA).");
}
