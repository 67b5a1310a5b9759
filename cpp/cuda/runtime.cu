// CUDA runtime queries for build_info() and error reporting. Device code cannot throw: kernels write a
// status word and the host raises (DESIGN.md, convention 3).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "nfhep/detail/cuda_runtime.hpp"

namespace nfhep::detail {

int cuda_device_count(std::string* status) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (status) *status = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later queries start clean
    return 0;
  }
  if (n == 0 && status) *status = "no CUDA device found";
  return n;
}

void cuda_check(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": CUDA error " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
}

}  // namespace nfhep::detail
