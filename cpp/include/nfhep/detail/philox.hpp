// nfhep/detail/philox.hpp: the standard normals of nfhep::Flow::sample, from Philox4x32-10.
//
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11; the
// philox4x32 of Random123 with 10 rounds): a counter-based generator, so event ev of stream `seed` is a
// pure function of (seed, ev) and any range of events can be drawn in any order, on any thread.
//   round (x10):  (hi0, lo0) = 0xD2511F53 * c0,  (hi1, lo1) = 0xCD9E8D57 * c2   (32x32 -> 64 bits)
//                 c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0),  then k += (0x9E3779B9, 0xBB67AE85)
//   (bumping the key after the last round too is harmless: it is not used again).
// Stream layout, for the pair p = j / 2 of the d normals of one event:
//   counter = (ev lo, ev hi, p, 0),  key = (seed lo, seed hi)
//   u1 = ((w0:w1 >> 11) + 1) 2^-53  in (0, 1]  (never 0, so log(u1) is finite: |z| <= sqrt(106 ln 2) = 8.57)
//   u2 =  (w2:w3 >> 11)      2^-53  in [0, 1)
//   z_j = sqrt(-2 ln u1) cos(2 pi u2),  z_{j+1} = sqrt(-2 ln u1) sin(2 pi u2)   (Box-Muller)
// so out[j] depends only on (seed, ev, j): a draw of d values is a prefix of a draw of d + 1 (odd d drops
// the sine of the last pair). This layout is the sampling stream of the model format: changing any of it
// changes every sample nfhep has produced (docs/cpp.md, "Sampling is reproducible").
// Tested: cpp/tests/test_units.cpp (Random123 known answers of a reference Philox written from the paper,
// this function against Box-Muller of that reference, range, prefixes, moments), tests/test_cpp_units.py.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
namespace nfhep::detail {
/// Philox4x32-10 of counter c under key k, in place (see the file comment).
inline void philox4x32_10(std::uint32_t c[4], std::uint32_t k[2]) {
  for (int r = 0; r < 10; ++r) {
    const std::uint64_t p0 = 0xD2511F53ull * c[0], p1 = 0xCD9E8D57ull * c[2];
    const std::uint32_t n0 = (std::uint32_t)(p1 >> 32) ^ c[1] ^ k[0], n2 = (std::uint32_t)(p0 >> 32) ^ c[3] ^ k[1];
    c[0] = n0; c[1] = (std::uint32_t)p1; c[2] = n2; c[3] = (std::uint32_t)p0;
    k[0] += 0x9E3779B9u; k[1] += 0xBB67AE85u;
  }
}

/// d standard normals of event `ev` in stream `seed`, written to out[0..d) (see the file comment).
inline void standard_normals(std::uint64_t seed, std::uint64_t ev, std::size_t d, double* out) {
  for (std::size_t j = 0; j < d; j += 2) {
    std::uint32_t c[4] = {(std::uint32_t)ev, (std::uint32_t)(ev >> 32), (std::uint32_t)(j / 2), 0};
    std::uint32_t k[2] = {(std::uint32_t)seed, (std::uint32_t)(seed >> 32)};
    philox4x32_10(c, k);
    double u1 = ((((std::uint64_t)c[0] << 32 | c[1]) >> 11) + 1) * 0x1.0p-53, u2 = ((((std::uint64_t)c[2] << 32 | c[3]) >> 11)) * 0x1.0p-53;
    double r = std::sqrt(-2 * std::log(u1)); out[j] = r * std::cos(2 * M_PI * u2); if (j + 1 < d) out[j + 1] = r * std::sin(2 * M_PI * u2); }
}

/// The member (0 .. m-1) an ensemble draws event `ev` of stream `seed` from: counter (ev lo, ev hi, 0, 1)
/// (the normals' counters end in 0, so the streams never overlap), u = (w0:w1 >> 11) 2^-53 in [0, 1),
/// member floor(u m).
inline std::size_t member_index(std::uint64_t seed, std::uint64_t ev, std::size_t m) {
  std::uint32_t c[4] = {(std::uint32_t)ev, (std::uint32_t)(ev >> 32), 0, 1};
  std::uint32_t k[2] = {(std::uint32_t)seed, (std::uint32_t)(seed >> 32)};
  philox4x32_10(c, k);
  const double u = (((std::uint64_t)c[0] << 32 | c[1]) >> 11) * 0x1.0p-53;
  const std::size_t i = static_cast<std::size_t>(u * static_cast<double>(m));
  return i < m ? i : m - 1;
}
}
