// Per-ISA kernel of the metrics: the projection x (n x dim) times directions^T (dim x n_dir), the matrix
// product behind the sliced Wasserstein distance. Compiled once per SIMD level (see nfhep/isa.hpp).
//
// Cache blocking: a block of kRows rows is transposed into a dim x kRows double tile (fits L1/L2), then
// every direction streams over that tile; the inner loop over rows is unit-stride and vectorises. The sum
// over d runs in the fixed order 0..dim-1 in double, with no FMA contraction (-ffp-contract=off): every
// ISA level and every thread count gives the same bits.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nfhep/math/sort_keys.hpp"
#include "nfhep/metrics_detail.hpp"

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

constexpr std::size_t kRows = 128;

struct StoreF64 {
  static void store(double* NFHEP_RESTRICT out, const double* NFHEP_RESTRICT acc, std::size_t m) {
    for (std::size_t i = 0; i < m; ++i) out[i] = acc[i];
  }
};
struct StoreKeys {
  static void store(std::uint64_t* NFHEP_RESTRICT out, const double* NFHEP_RESTRICT acc, std::size_t m) {
    for (std::size_t i = 0; i < m; ++i) out[i] = ::nfhep::math::to_ordered(acc[i]);
  }
};

template <class Store, class T, class O>
void project_impl(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t r0, std::size_t r1,
                  const double* NFHEP_RESTRICT dirs, std::size_t n_dir, O* NFHEP_RESTRICT out, std::size_t ld) {
  std::vector<double> tile(dim * kRows);
  alignas(64) double acc[kRows];
  for (std::size_t rb = r0; rb < r1; rb += kRows) {
    const std::size_t m = (r1 - rb < kRows) ? r1 - rb : kRows;
    double* NFHEP_RESTRICT t = tile.data();
    for (std::size_t i = 0; i < m; ++i) {
      const T* row = x + (rb + i) * dim;
      for (std::size_t d = 0; d < dim; ++d) t[d * kRows + i] = static_cast<double>(row[d]);
    }
    for (std::size_t j = 0; j < n_dir; ++j) {
      const double* w = dirs + j * dim;
      const double w0 = w[0];
      for (std::size_t i = 0; i < m; ++i) acc[i] = w0 * t[i];
      for (std::size_t d = 1; d < dim; ++d) {
        const double wd = w[d];
        const double* NFHEP_RESTRICT td = t + d * kRows;
        for (std::size_t i = 0; i < m; ++i) acc[i] = acc[i] + wd * td[i];
      }
      Store::store(out + j * ld + rb, acc, m);
    }
  }
}

}  // namespace

void project_rows_f64(const double* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                      std::size_t n_dir, double* out, std::size_t ld) {
  project_impl<StoreF64>(x, dim, r0, r1, dirs, n_dir, out, ld);
}
void project_rows_f64(const float* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                      std::size_t n_dir, double* out, std::size_t ld) {
  project_impl<StoreF64>(x, dim, r0, r1, dirs, n_dir, out, ld);
}
void project_rows_keys(const double* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                       std::size_t n_dir, std::uint64_t* out, std::size_t ld) {
  project_impl<StoreKeys>(x, dim, r0, r1, dirs, n_dir, out, ld);
}
void project_rows_keys(const float* x, std::size_t dim, std::size_t r0, std::size_t r1, const double* dirs,
                       std::size_t n_dir, std::uint64_t* out, std::size_t ld) {
  project_impl<StoreKeys>(x, dim, r0, r1, dirs, n_dir, out, ld);
}

}  // namespace nfhep::detail::NFHEP_ISA_NS
