// The CUDA host launchers in a build without CUDA (NFHEP_CUDA=OFF): they exist so that C++ users link
// either way, and tell how to rebuild. The Python module does not expose them in such a build
// (nfhep._core.bijectors.cuda_available() is False).
#if !defined(NFHEP_WITH_CUDA)
#include <stdexcept>
#include <string>

#include "nfhep/cuda/bijectors.hpp"

namespace nfhep::cuda {
namespace {
[[noreturn]] void no_cuda(const char* func) {
  throw std::runtime_error(std::string(func) +
                           ": this build of nfhep has no CUDA kernels; rebuild with "
                           "`cmake -DNFHEP_CUDA=ON` (or `pip install . -Ccmake.define.NFHEP_CUDA=ON`)");
}
}  // namespace

bool compiled() { return false; }

template <class T>
void rqs_forward(std::uintptr_t, std::uintptr_t, std::size_t, int, const RqsOptions&, std::uintptr_t,
                 std::uintptr_t, std::uintptr_t) {
  no_cuda("cuda_rqs_forward");
}
template <class T>
void rqs_inverse(std::uintptr_t, std::uintptr_t, std::size_t, int, const RqsOptions&, std::uintptr_t,
                 std::uintptr_t, std::uintptr_t) {
  no_cuda("cuda_rqs_inverse");
}
template <class T>
void rqs_backward(std::uintptr_t, std::uintptr_t, std::uintptr_t, std::uintptr_t, std::size_t, int,
                  const RqsOptions&, bool, std::uintptr_t, std::uintptr_t, std::uintptr_t) {
  no_cuda("cuda_rqs_backward");
}
template <class T>
void affine_forward(std::uintptr_t, std::uintptr_t, std::size_t, std::uintptr_t, std::uintptr_t, std::uintptr_t) {
  no_cuda("cuda_affine_forward");
}
template <class T>
void affine_inverse(std::uintptr_t, std::uintptr_t, std::size_t, std::uintptr_t, std::uintptr_t, std::uintptr_t) {
  no_cuda("cuda_affine_inverse");
}
template <class T>
void affine_backward(std::uintptr_t, std::uintptr_t, std::uintptr_t, std::uintptr_t, std::size_t, bool,
                     std::uintptr_t, std::uintptr_t, std::uintptr_t) {
  no_cuda("cuda_affine_backward");
}

NFHEP_CUDA_BIJECTORS_INSTANTIATE(float)
NFHEP_CUDA_BIJECTORS_INSTANTIATE(double)

}  // namespace nfhep::cuda
#endif
