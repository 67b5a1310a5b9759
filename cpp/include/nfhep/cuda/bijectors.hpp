// nfhep/cuda/bijectors.hpp: host launchers of the CUDA bijector kernels (built with NFHEP_CUDA=ON).
//
// The kernels (cpp/cuda/bijectors.cu) are grid-stride loops over elements that call the same per-element
// maths as the CPU (nfhep/math/rqs.hpp, nfhep/math/affine.hpp, with L = 1 lane per thread). All pointers
// are DEVICE pointers passed as integers (e.g. torch's tensor.data_ptr()), `stream` is a cudaStream_t as
// an integer (0 = the default stream); the launch is asynchronous on that stream. Launch errors (no
// device, no driver, bad configuration) are reported as std::runtime_error naming the CUDA error.
// Argument errors (spline options, K > kCudaMaxBins) are std::invalid_argument.
//
// In a build without CUDA these functions exist but throw std::runtime_error explaining how to rebuild;
// nfhep::cuda::compiled() tells which build this is. This machine has nvcc but no GPU: the kernels are
// compiled here and in CI but have not been run on a device by the nfhep developers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/bijectors.hpp"
#include "nfhep/config.hpp"

namespace nfhep::cuda {

/// Largest number of bins the CUDA kernels accept (per-thread scratch lives in registers/local memory).
constexpr int kCudaMaxBins = 64;

/// True if this build contains the CUDA kernels.
NFHEP_API bool compiled();

template <class T>
NFHEP_API void rqs_forward(std::uintptr_t x, std::uintptr_t params, std::size_t n, int num_bins,
                           const RqsOptions& opt, std::uintptr_t y, std::uintptr_t logabsdet, std::uintptr_t stream);
template <class T>
NFHEP_API void rqs_inverse(std::uintptr_t y, std::uintptr_t params, std::size_t n, int num_bins,
                           const RqsOptions& opt, std::uintptr_t x, std::uintptr_t logabsdet, std::uintptr_t stream);
/// grad_out / grad_logabsdet may be 0 (= zeros).
template <class T>
NFHEP_API void rqs_backward(std::uintptr_t inputs, std::uintptr_t params, std::uintptr_t grad_out,
                            std::uintptr_t grad_logabsdet, std::size_t n, int num_bins, const RqsOptions& opt,
                            bool inverse, std::uintptr_t grad_inputs, std::uintptr_t grad_params,
                            std::uintptr_t stream);
template <class T>
NFHEP_API void affine_forward(std::uintptr_t x, std::uintptr_t params, std::size_t n, std::uintptr_t y,
                              std::uintptr_t logabsdet, std::uintptr_t stream);
template <class T>
NFHEP_API void affine_inverse(std::uintptr_t y, std::uintptr_t params, std::size_t n, std::uintptr_t x,
                              std::uintptr_t logabsdet, std::uintptr_t stream);
template <class T>
NFHEP_API void affine_backward(std::uintptr_t inputs, std::uintptr_t params, std::uintptr_t grad_out,
                               std::uintptr_t grad_logabsdet, std::size_t n, bool inverse,
                               std::uintptr_t grad_inputs, std::uintptr_t grad_params, std::uintptr_t stream);

// Explicit instantiations for one element type: used by the CUDA build (cpp/cuda/bijectors.cu) and by the
// CPU-only build's throwing versions (cpp/src/bijectors_nocuda.cpp), so both export the same symbols.
#define NFHEP_CUDA_BIJECTORS_INSTANTIATE(T)                                                                    \
  template NFHEP_API void rqs_forward<T>(std::uintptr_t, std::uintptr_t, std::size_t, int, const RqsOptions&,   \
                                         std::uintptr_t, std::uintptr_t, std::uintptr_t);                       \
  template NFHEP_API void rqs_inverse<T>(std::uintptr_t, std::uintptr_t, std::size_t, int, const RqsOptions&,   \
                                         std::uintptr_t, std::uintptr_t, std::uintptr_t);                       \
  template NFHEP_API void rqs_backward<T>(std::uintptr_t, std::uintptr_t, std::uintptr_t, std::uintptr_t,       \
                                          std::size_t, int, const RqsOptions&, bool, std::uintptr_t,            \
                                          std::uintptr_t, std::uintptr_t);                                      \
  template NFHEP_API void affine_forward<T>(std::uintptr_t, std::uintptr_t, std::size_t, std::uintptr_t,        \
                                            std::uintptr_t, std::uintptr_t);                                    \
  template NFHEP_API void affine_inverse<T>(std::uintptr_t, std::uintptr_t, std::size_t, std::uintptr_t,        \
                                            std::uintptr_t, std::uintptr_t);                                    \
  template NFHEP_API void affine_backward<T>(std::uintptr_t, std::uintptr_t, std::uintptr_t, std::uintptr_t,    \
                                             std::size_t, bool, std::uintptr_t, std::uintptr_t, std::uintptr_t);

}  // namespace nfhep::cuda
