// nfhep/metrics_detail.hpp: internals of the metrics shared by cpp/src/metrics.cpp, the per-ISA kernels
// (cpp/src/isa/metrics_isa.cpp) and the CUDA path (cpp/cuda/metrics.cu). Not part of the public API.
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/isa.hpp"

// Projection of rows [r0, r1) of x (row-major, dim columns) on n_dir directions, accumulated in double in
// the fixed order d = 0..dim-1, independent of the thread count (one FMA per step on AVX2 and AVX-512,
// which agree bitwise; the generic level multiplies and adds and differs by rounding).
// `_f64` writes out[j * ld + i] as doubles, `_keys` writes the order-preserving keys of those doubles and,
// if `minmax` is not null, the smallest and largest key of each direction j over these rows to
// minmax[2 j] and minmax[2 j + 1]; `stream`: non-temporal key stores where the level has them (for
// projections far larger than the caches; same values).
NFHEP_DECLARE_ISA(void project_rows_f64(const double* x, std::size_t dim, std::size_t r0, std::size_t r1,
                                        const double* dirs, std::size_t n_dir, double* out, std::size_t ld))
NFHEP_DECLARE_ISA(void project_rows_f64(const float* x, std::size_t dim, std::size_t r0, std::size_t r1,
                                        const double* dirs, std::size_t n_dir, double* out, std::size_t ld))
NFHEP_DECLARE_ISA(void project_rows_keys(const double* x, std::size_t dim, std::size_t r0, std::size_t r1,
                                         const double* dirs, std::size_t n_dir, std::uint64_t* out,
                                         std::size_t ld, std::uint64_t* minmax, bool stream))
NFHEP_DECLARE_ISA(void project_rows_keys(const float* x, std::size_t dim, std::size_t r0, std::size_t r1,
                                         const double* dirs, std::size_t n_dir, std::uint64_t* out,
                                         std::size_t ld, std::uint64_t* minmax, bool stream))

namespace nfhep::detail {

/// W1 between two sorted key arrays (keys of doubles), optionally weighted (weights in sorted order).
double w1_sorted_keys(const std::uint64_t* a, const double* wa, std::size_t na, const std::uint64_t* b,
                      const double* wb, std::size_t nb);

#if defined(NFHEP_WITH_CUDA)
/// CUDA: project x and y on n_dir directions and sort every projection on the device (CUB segmented
/// radix sort; weights as payload); results copied to the host: keys_x (n_dir, nx) doubles as keys, and
/// sorted weights if given. Defined in cpp/cuda/metrics.cu.
void cuda_project_sort(const double* x, std::size_t nx, const double* y, std::size_t ny, std::size_t dim,
                       const double* wx, const double* wy, const double* dirs, std::size_t n_dir,
                       std::uint64_t* keys_x, double* sw_x, std::uint64_t* keys_y, double* sw_y);
#endif

}  // namespace nfhep::detail
