// nfhep._core: the private extension module. Users import `nfhep`; see python/nfhep/_core.pyi.
#include <pybind11/pybind11.h>

namespace pyb = pybind11;

void bind_info(pyb::module_& m);
void bind_buffers(pyb::module_& m);
void bind_bijectors(pyb::module_& m);
void bind_metrics(pyb::module_& m);
void bind_engine(pyb::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "nfhep C++ core (private; import nfhep instead)";
  bind_info(m);
  bind_buffers(m);
  auto bij = m.def_submodule("bijectors", "RQ-spline and affine bijector kernels (CPU; CUDA when built in)");
  bind_bijectors(bij);
  auto met = m.def_submodule("metrics", "Two-sample metrics (KS, sliced Wasserstein, ...)");
  bind_metrics(met);
  bind_engine(m);
}
