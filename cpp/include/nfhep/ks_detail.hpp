// nfhep/ks_detail.hpp: per-ISA kernels of the unweighted two-sample KS statistic (cpp/src/isa/ks_isa.cpp),
// used by metrics::ks_statistics in cpp/src/metrics.cpp. Not part of the public API.
//
// Both kernels work on rows [r0, r1) of a row-major (n, dim) sample, so every value is read where it lies
// (no column gather):
// - ks_minmax_rows: per-column minimum and maximum of the order-preserving keys (math::to_ordered),
//   folded into lo[d] / hi[d] (callers start from lo = all ones, hi = 0); used on a subsample of rows to
//   set the bucket ranges.
// - ks_bucket_rows: bucket index of the values in columns [0, n_cols) of x (x may point at a column
//   inside the row; rows are dim apart), written column-major as idx[d * ld + i] (uint16), with
//   b = trunc(clamp((u - vlo[d]) * scale[d], 0, last)) where u = double(v) (log_floor[d] < 0) or, with
//   f = log_floor[d] >= 0, u = sign(v) (bits(max(|v|, f)) - bits(f)), bits() the IEEE bit pattern of a
//   double read as an integer (~2^52 per binade: buckets roughly linear in log|v| for |v| > f).
//   NaN goes to 0 or the middle. Returns false if one of the values is NaN or infinite. Monotone in v
//   (every step rounds monotonically; +-inf clamp to the ends), so equal values share a bucket and
//   buckets are ordered like the values; the indices are the same on every ISA level (IEEE
//   operations, no contraction), though the KS result does not depend on them beyond monotonicity.
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/config.hpp"
#include "nfhep/isa.hpp"

namespace nfhep::detail {

/// The bucket map's argument u of a value v with log floor f (the formula above): v itself for f < 0,
/// else sign(v) (bits(max(|v|, f)) - bits(f)). Written branch-free (both candidates computed) so that the
/// per-ISA loops vectorise; shared by them and by the host code that chooses the map on a subsample.
NFHEP_FORCEINLINE double ks_map_arg(double v, double f) {
  auto bits = [](double a) {
    std::uint64_t b;
    __builtin_memcpy(&b, &a, sizeof b);
    return static_cast<double>(b);
  };
  const double a = v < 0.0 ? -v : v;
  const double am = a > f ? a : f;
  const double mag = bits(am) - bits(f);
  const double lg = v < 0.0 ? -mag : mag;
  return f >= 0.0 ? lg : v;
}

/// The bucket of map argument u: trunc(clamp((u - lo) * scale, 0, top)) (NaN goes to 0).
NFHEP_FORCEINLINE std::int32_t ks_bucket_index(double u, double lo, double scale, double top) {
  double t = (u - lo) * scale;
  t = t > 0.0 ? t : 0.0;
  t = t < top ? t : top;
  return static_cast<std::int32_t>(t);
}

}  // namespace nfhep::detail

NFHEP_DECLARE_ISA(void ks_minmax_rows(const double* x, std::size_t dim, std::size_t r0, std::size_t r1,
                                      std::uint64_t* lo, std::uint64_t* hi))
NFHEP_DECLARE_ISA(void ks_minmax_rows(const float* x, std::size_t dim, std::size_t r0, std::size_t r1,
                                      std::uint32_t* lo, std::uint32_t* hi))
NFHEP_DECLARE_ISA(bool ks_bucket_rows(const double* x, std::size_t dim, std::size_t n_cols, std::size_t r0,
                                      std::size_t r1, const double* vlo, const double* scale,
                                      const double* log_floor, std::uint32_t last, std::uint16_t* idx,
                                      std::size_t ld))
NFHEP_DECLARE_ISA(bool ks_bucket_rows(const float* x, std::size_t dim, std::size_t n_cols, std::size_t r0,
                                      std::size_t r1, const double* vlo, const double* scale,
                                      const double* log_floor, std::uint32_t last, std::uint16_t* idx,
                                      std::size_t ld))
