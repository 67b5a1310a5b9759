// CUDA kernels of the bijectors: grid-stride loops calling the per-element maths of nfhep/math/ with
// one lane per thread (L = 1). No formula is written here.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "nfhep/cuda/bijectors.hpp"
#include "nfhep/detail/cuda_runtime.hpp"
#include "nfhep/math/affine.hpp"
#include "nfhep/math/rqs.hpp"

namespace nfhep::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
math::RqsConfig<T> make_config(int K, const RqsOptions& o) {
  return math::RqsConfig<T>{K, static_cast<T>(o.bound), static_cast<T>(o.min_bin_width),
                            static_cast<T>(o.min_bin_height), static_cast<T>(o.min_derivative)};
}

template <class T, bool Inverse>
__global__ void rqs_kernel(const T* __restrict__ in, const T* __restrict__ params, std::size_t n,
                           math::RqsConfig<T> cfg, T* __restrict__ out, T* __restrict__ lad) {
  T scratch[2 * kCudaMaxBins];
  const std::size_t P = static_cast<std::size_t>(3 * cfg.K - 1);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(blockDim.x) * gridDim.x)
    math::rqs_block<T, 1, Inverse>(cfg, in + i, params + i * P, scratch, out + i, lad + i);
}

template <class T, bool Inverse>
__global__ void rqs_vjp_kernel(const T* __restrict__ in, const T* __restrict__ params, const T* __restrict__ gout,
                               const T* __restrict__ glad, std::size_t n, math::RqsConfig<T> cfg,
                               T* __restrict__ gin, T* __restrict__ gparams) {
  T scratch[2 * kCudaMaxBins];
  const std::size_t P = static_cast<std::size_t>(3 * cfg.K - 1);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(blockDim.x) * gridDim.x) {
    const T go = gout ? gout[i] : T(0);
    const T gl = glad ? glad[i] : T(0);
    math::rqs_block_vjp<T, 1, Inverse>(cfg, in + i, params + i * P, &go, &gl, scratch, gin + i,
                                       gparams + i * P);
  }
}

template <class T, bool Inverse>
__global__ void affine_kernel(const T* __restrict__ in, const T* __restrict__ params, std::size_t n,
                              T* __restrict__ out, T* __restrict__ lad) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(blockDim.x) * gridDim.x) {
    if (Inverse)
      math::affine_inverse(in[i], params[2 * i], params[2 * i + 1], out[i], lad[i]);
    else
      math::affine_forward(in[i], params[2 * i], params[2 * i + 1], out[i], lad[i]);
  }
}

template <class T, bool Inverse>
__global__ void affine_vjp_kernel(const T* __restrict__ in, const T* __restrict__ params,
                                  const T* __restrict__ gout, const T* __restrict__ glad, std::size_t n,
                                  T* __restrict__ gin, T* __restrict__ gparams) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(blockDim.x) * gridDim.x) {
    const T go = gout ? gout[i] : T(0);
    const T gl = glad ? glad[i] : T(0);
    if (Inverse)
      math::affine_inverse_vjp(in[i], params[2 * i], params[2 * i + 1], go, gl, gin[i], gparams[2 * i],
                               gparams[2 * i + 1]);
    else
      math::affine_forward_vjp(in[i], params[2 * i], go, gl, gin[i], gparams[2 * i], gparams[2 * i + 1]);
  }
}

unsigned grid_for(std::size_t n) {
  const std::size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<std::size_t>(std::max<std::size_t>(blocks, 1), 65535));
}

void check_rqs(const char* func, int K, const RqsOptions& opt) {
  try {
    validate_rqs(K, opt);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(func) + ": " + e.what());
  }
  if (K > kCudaMaxBins)
    throw std::invalid_argument(std::string(func) + ": num_bins must be <= " + std::to_string(kCudaMaxBins) +
                                " for the CUDA kernels, got " + std::to_string(K));
}

template <class T>
const T* cp(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <class T>
T* mp(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}
cudaStream_t st(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Clear an error left by an earlier call so that the check after our launch reports our own.
void clear_error() { (void)cudaGetLastError(); }

}  // namespace

bool compiled() { return true; }

template <class T>
void rqs_forward(std::uintptr_t x, std::uintptr_t params, std::size_t n, int K, const RqsOptions& opt,
                 std::uintptr_t y, std::uintptr_t lad, std::uintptr_t stream) {
  check_rqs("cuda_rqs_forward", K, opt);
  if (n == 0) return;
  clear_error();
  rqs_kernel<T, false><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(x), cp<T>(params), n,
                                                                  make_config<T>(K, opt), mp<T>(y), mp<T>(lad));
  detail::cuda_check("cuda_rqs_forward");
}

template <class T>
void rqs_inverse(std::uintptr_t y, std::uintptr_t params, std::size_t n, int K, const RqsOptions& opt,
                 std::uintptr_t x, std::uintptr_t lad, std::uintptr_t stream) {
  check_rqs("cuda_rqs_inverse", K, opt);
  if (n == 0) return;
  clear_error();
  rqs_kernel<T, true><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(y), cp<T>(params), n,
                                                                 make_config<T>(K, opt), mp<T>(x), mp<T>(lad));
  detail::cuda_check("cuda_rqs_inverse");
}

template <class T>
void rqs_backward(std::uintptr_t in, std::uintptr_t params, std::uintptr_t gout, std::uintptr_t glad,
                  std::size_t n, int K, const RqsOptions& opt, bool inverse, std::uintptr_t gin,
                  std::uintptr_t gparams, std::uintptr_t stream) {
  check_rqs("cuda_rqs_backward", K, opt);
  if (n == 0) return;
  clear_error();
  const auto cfg = make_config<T>(K, opt);
  if (inverse)
    rqs_vjp_kernel<T, true><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(in), cp<T>(params), cp<T>(gout),
                                                                       cp<T>(glad), n, cfg, mp<T>(gin),
                                                                       mp<T>(gparams));
  else
    rqs_vjp_kernel<T, false><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(in), cp<T>(params), cp<T>(gout),
                                                                        cp<T>(glad), n, cfg, mp<T>(gin),
                                                                        mp<T>(gparams));
  detail::cuda_check("cuda_rqs_backward");
}

template <class T>
void affine_forward(std::uintptr_t x, std::uintptr_t params, std::size_t n, std::uintptr_t y, std::uintptr_t lad,
                    std::uintptr_t stream) {
  if (n == 0) return;
  clear_error();
  affine_kernel<T, false><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(x), cp<T>(params), n, mp<T>(y),
                                                                     mp<T>(lad));
  detail::cuda_check("cuda_affine_forward");
}

template <class T>
void affine_inverse(std::uintptr_t y, std::uintptr_t params, std::size_t n, std::uintptr_t x, std::uintptr_t lad,
                    std::uintptr_t stream) {
  if (n == 0) return;
  clear_error();
  affine_kernel<T, true><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(y), cp<T>(params), n, mp<T>(x),
                                                                    mp<T>(lad));
  detail::cuda_check("cuda_affine_inverse");
}

template <class T>
void affine_backward(std::uintptr_t in, std::uintptr_t params, std::uintptr_t gout, std::uintptr_t glad,
                     std::size_t n, bool inverse, std::uintptr_t gin, std::uintptr_t gparams, std::uintptr_t stream) {
  if (n == 0) return;
  clear_error();
  if (inverse)
    affine_vjp_kernel<T, true><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(in), cp<T>(params), cp<T>(gout),
                                                                          cp<T>(glad), n, mp<T>(gin),
                                                                          mp<T>(gparams));
  else
    affine_vjp_kernel<T, false><<<grid_for(n), kThreads, 0, st(stream)>>>(cp<T>(in), cp<T>(params), cp<T>(gout),
                                                                           cp<T>(glad), n, mp<T>(gin),
                                                                           mp<T>(gparams));
  detail::cuda_check("cuda_affine_backward");
}

NFHEP_CUDA_BIJECTORS_INSTANTIATE(float)
NFHEP_CUDA_BIJECTORS_INSTANTIATE(double)

}  // namespace nfhep::cuda
