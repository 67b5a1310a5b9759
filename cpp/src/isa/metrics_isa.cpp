// Per-ISA kernel of the metrics: the projection x (n x dim) times directions^T (dim x n_dir), the matrix
// product behind the sliced Wasserstein distance. Compiled once per SIMD level (see nfhep/isa.hpp).
//
// Cache blocking: a block of kRows rows is transposed into a dim x kRows double tile (fits L1/L2); then
// register blocking: 4 directions x 8 rows of accumulators stay in registers while d runs over the tile
// (one load of the tile feeds 4 multiply-adds; the 8-row loops vectorise). The sum
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

constexpr std::size_t kLanes = 8;  // rows per register block (one AVX-512 vector of doubles)
constexpr std::size_t kDirs = 4;   // directions per register block

template <class Store, class T, class O>
void project_impl(const T* NFHEP_RESTRICT x, std::size_t dim, std::size_t r0, std::size_t r1,
                  const double* NFHEP_RESTRICT dirs, std::size_t n_dir, O* NFHEP_RESTRICT out, std::size_t ld) {
  std::vector<double> tile(dim * kRows);
  alignas(64) double acc[kDirs][kRows];
  for (std::size_t rb = r0; rb < r1; rb += kRows) {
    const std::size_t m = (r1 - rb < kRows) ? r1 - rb : kRows;
    const std::size_t mp = (m + kLanes - 1) / kLanes * kLanes;  // padded rows (zeros, never stored)
    double* NFHEP_RESTRICT t = tile.data();
    for (std::size_t i = 0; i < m; ++i) {
      const T* row = x + (rb + i) * dim;
      for (std::size_t d = 0; d < dim; ++d) t[d * kRows + i] = static_cast<double>(row[d]);
    }
    for (std::size_t d = 0; d < dim; ++d)
      for (std::size_t i = m; i < mp; ++i) t[d * kRows + i] = 0.0;
    std::size_t j = 0;
    // Register blocking: kDirs directions x kLanes rows of accumulators stay in registers over the d loop.
    for (; j + kDirs <= n_dir; j += kDirs) {
      const double* w0 = dirs + (j + 0) * dim;
      const double* w1 = dirs + (j + 1) * dim;
      const double* w2 = dirs + (j + 2) * dim;
      const double* w3 = dirs + (j + 3) * dim;
      for (std::size_t i0 = 0; i0 < mp; i0 += kLanes) {
        double a0[kLanes], a1[kLanes], a2[kLanes], a3[kLanes];
        const double* NFHEP_RESTRICT tc = t + i0;
        for (std::size_t l = 0; l < kLanes; ++l) {
          a0[l] = w0[0] * tc[l];
          a1[l] = w1[0] * tc[l];
          a2[l] = w2[0] * tc[l];
          a3[l] = w3[0] * tc[l];
        }
        for (std::size_t d = 1; d < dim; ++d) {
          const double* NFHEP_RESTRICT td = t + d * kRows + i0;
          const double c0 = w0[d], c1 = w1[d], c2 = w2[d], c3 = w3[d];
          for (std::size_t l = 0; l < kLanes; ++l) {
            a0[l] = a0[l] + c0 * td[l];
            a1[l] = a1[l] + c1 * td[l];
            a2[l] = a2[l] + c2 * td[l];
            a3[l] = a3[l] + c3 * td[l];
          }
        }
        for (std::size_t l = 0; l < kLanes; ++l) {
          acc[0][i0 + l] = a0[l];
          acc[1][i0 + l] = a1[l];
          acc[2][i0 + l] = a2[l];
          acc[3][i0 + l] = a3[l];
        }
      }
      for (std::size_t q = 0; q < kDirs; ++q) Store::store(out + (j + q) * ld + rb, acc[q], m);
    }
    for (; j < n_dir; ++j) {  // remaining directions, same operation order
      const double* w = dirs + j * dim;
      const double wf = w[0];
      for (std::size_t i = 0; i < mp; ++i) acc[0][i] = wf * t[i];
      for (std::size_t d = 1; d < dim; ++d) {
        const double wd = w[d];
        const double* NFHEP_RESTRICT td = t + d * kRows;
        for (std::size_t i = 0; i < mp; ++i) acc[0][i] = acc[0][i] + wd * td[i];
      }
      Store::store(out + j * ld + rb, acc[0], m);
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
