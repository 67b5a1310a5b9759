// nfhep/metrics.hpp: two-sample metrics over (n, D) samples (row-major), the C++ side of nfhep.metrics.
//
// Kolmogorov-Smirnov statistics per dimension (right-continuous, optionally weighted ECDFs over the
// pooled values, so ties are exact), 1-D Wasserstein-1 distances per dimension and along projection
// directions (sliced Wasserstein), and highest-density intervals. References: the NFlikelihood papers,
// arXiv:2309.09743 and arXiv:2302.12024 (their validation toolkit); Kolmogorov-Smirnov two-sample
// statistic as in scipy.stats.ks_2samp; W1 as in scipy.stats.wasserstein_distance.
//
// Inputs are float or double; every reduction runs in double. Each dimension or direction is handled by
// one thread from start to end, and the projection is element-wise in a fixed operation order, so
// results are bitwise identical for any thread count and any SIMD level. Errors are
// std::invalid_argument naming the argument ("x", "y", "weights_x", "weights_y", "directions", "probs").
#pragma once
#include <cstddef>
#include <string>

#include "nfhep/config.hpp"

namespace nfhep::metrics {

/// A sample of n events in `dim` dimensions, row-major (event i, dimension d at data[i * dim + d]),
/// with optional non-negative per-event weights (nullptr = all 1).
template <class T>
struct Sample {
  const T* data = nullptr;
  std::size_t n = 0;
  std::size_t dim = 0;
  const double* weights = nullptr;
};


/// Where the sliced-Wasserstein projection and sorts run. Device::cuda needs a NFHEP_CUDA=ON build and a
/// CUDA device (the CUDA path is compile-checked in CI but has never run on a device in development).
enum class Device { cpu, cuda };

/// Throws std::invalid_argument naming `name` if the sample is empty, if a value is NaN or infinite (when
/// check_finite), or if a weight is negative / not finite or all weights are zero.
template <class T>
NFHEP_API void validate_sample(const Sample<T>& s, const char* name, const char* weights_name, bool check_finite);

/// Per-dimension KS statistics. d_plus[d] = max_x (F_x(x) - F_y(x)) (scipy's alternative='greater'),
/// d_minus[d] = max(0, max_x (F_y(x) - F_x(x))) ('less'); two-sided D = max(d_plus, d_minus). Both
/// arrays have x.dim entries. Device::cuda sorts the columns on the GPU (as projections on the unit
/// vectors, which reproduce every value exactly) and merges on the host.
template <class T>
NFHEP_API void ks_statistics(const Sample<T>& x, const Sample<T>& y, double* d_plus, double* d_minus,
                             bool check_finite = true, Device device = Device::cpu);

/// Per-dimension W1 = integral |F_x - F_y| dt (merged sorted supports; weights allowed). out: x.dim values.
template <class T>
NFHEP_API void wasserstein_per_dim(const Sample<T>& x, const Sample<T>& y, double* out, bool check_finite = true);

/// Project a sample on n_dir directions (row-major (n_dir, dim) doubles): out[j * x.n + i] = <x_i, u_j>,
/// accumulated in double in the order d = 0..dim-1.
template <class T>
NFHEP_API void project(const Sample<T>& x, const double* directions, std::size_t n_dir, double* out);

/// W1 between the projections of x and y on each direction: out[j] for j < n_dir (sliced Wasserstein
/// is their mean). Directions are processed in blocks so the projections never need more than about
/// `block_bytes` of memory (0 = 512 MiB).
template <class T>
NFHEP_API void sliced_wasserstein(const Sample<T>& x, const Sample<T>& y, const double* directions,
                                  std::size_t n_dir, double* out, bool check_finite = true,
                                  Device device = Device::cpu, std::size_t block_bytes = 0);

/// Highest-density (shortest) intervals per dimension at probabilities probs[0..n_probs): unweighted,
/// the shortest [s_i, s_{i+k-1}] of the sorted values holding k = floor(p n) points (k >= 1 required);
/// weighted, the shortest interval whose weight is at least p * (total weight). lo/hi: (n_probs, dim).
template <class T>
NFHEP_API void hpdi(const Sample<T>& x, const double* probs, std::size_t n_probs, double* lo, double* hi,
                    bool check_finite = true);

/// True if the core was built with the CUDA metrics kernels.
NFHEP_API bool cuda_compiled();

}  // namespace nfhep::metrics
