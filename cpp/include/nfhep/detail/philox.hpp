// nfhep/detail/philox.hpp (interim, header-only; replaced by the tested implementation in the same series).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
namespace nfhep::detail {
inline void standard_normals(std::uint64_t seed, std::uint64_t ev, std::size_t d, double* out) {
  for (std::size_t j = 0; j < d; j += 2) {
    std::uint32_t c[4] = {(std::uint32_t)ev, (std::uint32_t)(ev >> 32), (std::uint32_t)(j / 2), 0};
    std::uint32_t k[2] = {(std::uint32_t)seed, (std::uint32_t)(seed >> 32)};
    for (int r = 0; r < 10; ++r) { std::uint64_t p0 = 0xD2511F53ull * c[0], p1 = 0xCD9E8D57ull * c[2];
      std::uint32_t n0 = (std::uint32_t)(p1 >> 32) ^ c[1] ^ k[0], n2 = (std::uint32_t)(p0 >> 32) ^ c[3] ^ k[1];
      c[0] = n0; c[1] = (std::uint32_t)p1; c[2] = n2; c[3] = (std::uint32_t)p0; k[0] += 0x9E3779B9u; k[1] += 0xBB67AE85u; }
    double u1 = ((((std::uint64_t)c[0] << 32 | c[1]) >> 11) + 1) * 0x1.0p-53, u2 = ((((std::uint64_t)c[2] << 32 | c[3]) >> 11)) * 0x1.0p-53;
    double r = std::sqrt(-2 * std::log(u1)); out[j] = r * std::cos(2 * M_PI * u2); if (j + 1 < d) out[j + 1] = r * std::sin(2 * M_PI * u2); }
}
}
