// CUDA path of the metrics: projection of both samples on a block of directions and a segmented
// device radix sort (CUB, shipped with the CUDA toolkit) of every projection, weights as payload. The
// W1 / KS merges of the sorted arrays then run on the host (cpp/src/metrics.cpp), shared with the CPU
// path. Compile-checked in CI (NFHEP_CUDA=ON); it has never run on a device during development (no GPU).
//
// The projection sums d = 0..dim-1 in double in the same order as the CPU kernel, and the build uses
// --fmad=false, so device projections are bitwise equal to the CPU ones.
#include <cuda_runtime.h>

#include <cub/device/device_segmented_radix_sort.cuh>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "nfhep/math/sort_keys.hpp"
#include "nfhep/metrics_detail.hpp"

namespace nfhep::detail {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("nfhep metrics (CUDA): ") + what + ": " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

/// out[j * n + i] = sum_d dirs[j * dim + d] * x[i * dim + d], grid-stride over (j, i).
__global__ void metrics_project(const double* __restrict__ x, std::size_t n, std::size_t dim,
                                const double* __restrict__ dirs, std::size_t n_dir, double* __restrict__ out) {
  const std::size_t total = n * n_dir;
  for (std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t j = t / n, i = t - j * n;
    const double* w = dirs + j * dim;
    const double* r = x + i * dim;
    double acc = w[0] * r[0];
    for (std::size_t d = 1; d < dim; ++d) acc = acc + w[d] * r[d];
    out[t] = acc;
  }
}

/// Replicate the weights for every direction (the sort payload is per segment).
__global__ void metrics_tile_weights(const double* __restrict__ w, std::size_t n, std::size_t n_dir,
                                     double* __restrict__ out) {
  const std::size_t total = n * n_dir;
  for (std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[t] = w[t % n];
}

__global__ void metrics_offsets(std::size_t n, std::size_t n_dir, long long* __restrict__ off) {
  const std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (t <= n_dir) off[t] = static_cast<long long>(t * n);
}

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  explicit DeviceBuffer(std::size_t count, const char* what) {
    if (count) check(cudaMalloc(&p, count * sizeof(T)), what);
  }
  ~DeviceBuffer() {
    if (p) cudaFree(p);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

int grid_for(std::size_t total) {
  const std::size_t blocks = (total + 255) / 256;
  return static_cast<int>(blocks < 65535 ? (blocks ? blocks : 1) : 65535);
}

/// Project one sample and sort each projection on the device; copy sorted keys (+ weights) back.
void project_sort_one(const double* x, std::size_t n, std::size_t dim, const double* w, const double* d_dirs,
                      std::size_t n_dir, std::uint64_t* keys_out, double* w_out) {
  const std::size_t total = n * n_dir;
  DeviceBuffer<double> d_x(n * dim, "cudaMalloc(x)");
  DeviceBuffer<double> d_in(total, "cudaMalloc(projections)");
  DeviceBuffer<double> d_out(total, "cudaMalloc(sorted projections)");
  DeviceBuffer<double> d_w(w ? n : 0, "cudaMalloc(weights)");
  DeviceBuffer<double> d_win(w ? total : 0, "cudaMalloc(weights payload)");
  DeviceBuffer<double> d_wout(w ? total : 0, "cudaMalloc(sorted weights)");
  DeviceBuffer<long long> d_off(n_dir + 1, "cudaMalloc(offsets)");
  check(cudaMemcpy(d_x.p, x, n * dim * sizeof(double), cudaMemcpyHostToDevice), "copy x to device");
  metrics_project<<<grid_for(total), 256>>>(d_x.p, n, dim, d_dirs, n_dir, d_in.p);
  check(cudaGetLastError(), "metrics_project launch");
  metrics_offsets<<<grid_for(n_dir + 1), 256>>>(n, n_dir, d_off.p);
  check(cudaGetLastError(), "metrics_offsets launch");
  std::size_t temp_bytes = 0;
  const auto num_items = static_cast<long long>(total);
  const auto num_segments = static_cast<long long>(n_dir);
  if (w) {
    check(cudaMemcpy(d_w.p, w, n * sizeof(double), cudaMemcpyHostToDevice), "copy weights to device");
    metrics_tile_weights<<<grid_for(total), 256>>>(d_w.p, n, n_dir, d_win.p);
    check(cudaGetLastError(), "metrics_tile_weights launch");
    check(cub::DeviceSegmentedRadixSort::SortPairs(nullptr, temp_bytes, d_in.p, d_out.p, d_win.p, d_wout.p,
                                                   num_items, num_segments, d_off.p, d_off.p + 1),
          "SortPairs (size query)");
    DeviceBuffer<unsigned char> temp(temp_bytes, "cudaMalloc(sort scratch)");
    check(cub::DeviceSegmentedRadixSort::SortPairs(temp.p, temp_bytes, d_in.p, d_out.p, d_win.p, d_wout.p,
                                                   num_items, num_segments, d_off.p, d_off.p + 1),
          "SortPairs");
    check(cudaMemcpy(w_out, d_wout.p, total * sizeof(double), cudaMemcpyDeviceToHost), "copy sorted weights");
  } else {
    check(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, temp_bytes, d_in.p, d_out.p, num_items, num_segments,
                                                  d_off.p, d_off.p + 1),
          "SortKeys (size query)");
    DeviceBuffer<unsigned char> temp(temp_bytes, "cudaMalloc(sort scratch)");
    check(cub::DeviceSegmentedRadixSort::SortKeys(temp.p, temp_bytes, d_in.p, d_out.p, num_items, num_segments,
                                                  d_off.p, d_off.p + 1),
          "SortKeys");
  }
  // Reuse the host key array as the landing buffer for the sorted doubles, then transform in place.
  std::vector<double> host(total);
  check(cudaMemcpy(host.data(), d_out.p, total * sizeof(double), cudaMemcpyDeviceToHost), "copy sorted keys");
  for (std::size_t t = 0; t < total; ++t) keys_out[t] = math::to_ordered(host[t]);
}

}  // namespace

void cuda_project_sort(const double* x, std::size_t nx, const double* y, std::size_t ny, std::size_t dim,
                       const double* wx, const double* wy, const double* dirs, std::size_t n_dir,
                       std::uint64_t* keys_x, double* sw_x, std::uint64_t* keys_y, double* sw_y) {
  int n_dev = 0;
  check(cudaGetDeviceCount(&n_dev), "no usable CUDA device (device='cuda')");
  if (n_dev == 0) throw std::runtime_error("nfhep metrics (CUDA): no CUDA device found (device='cuda')");
  DeviceBuffer<double> d_dirs(n_dir * dim, "cudaMalloc(directions)");
  check(cudaMemcpy(d_dirs.p, dirs, n_dir * dim * sizeof(double), cudaMemcpyHostToDevice), "copy directions");
  project_sort_one(x, nx, dim, wx, d_dirs.p, n_dir, keys_x, sw_x);
  project_sort_one(y, ny, dim, wy, d_dirs.p, n_dir, keys_y, sw_y);
  check(cudaDeviceSynchronize(), "synchronize");
}

}  // namespace nfhep::detail
