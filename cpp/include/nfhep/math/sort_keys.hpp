// nfhep/math/sort_keys.hpp: the order-preserving bit transform of IEEE floats (per element, host+device).
//
// For finite floats and infinities, `a < b` (as numbers) if and only if `to_ordered(a) < to_ordered(b)`
// (as unsigned integers): flip every bit of a negative number, only the sign bit of a non-negative one.
// -0.0 is first mapped to +0.0 (x + 0.0), so numbers that compare equal get equal keys (ties stay ties).
// NaN has no place in an order; callers reject it before sorting. Force-inlined: the per-ISA kernels use
// them, and an out-of-line copy would be one weak symbol shared by all SIMD levels.
#pragma once
#include <cstdint>
#include <cstring>

#include "nfhep/config.hpp"

namespace nfhep::math {

NFHEP_FORCEINLINE std::uint64_t to_ordered(double v) {
  v = v + 0.0;  // -0.0 -> +0.0
  std::uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  const std::uint64_t mask = (std::uint64_t{0} - (u >> 63)) | (std::uint64_t{1} << 63);
  return u ^ mask;
}

NFHEP_FORCEINLINE double from_ordered(std::uint64_t k) {
  const std::uint64_t mask = ((k >> 63) - std::uint64_t{1}) | (std::uint64_t{1} << 63);
  const std::uint64_t u = k ^ mask;
  double v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

NFHEP_FORCEINLINE std::uint32_t to_ordered(float v) {
  v = v + 0.0f;
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const std::uint32_t mask = (std::uint32_t{0} - (u >> 31)) | (std::uint32_t{1} << 31);
  return u ^ mask;
}

NFHEP_FORCEINLINE float from_ordered(std::uint32_t k) {
  const std::uint32_t mask = ((k >> 31) - std::uint32_t{1}) | (std::uint32_t{1} << 31);
  const std::uint32_t u = k ^ mask;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace nfhep::math
