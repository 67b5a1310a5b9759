// Private: per-ISA loops of the bucketed one-dimensional W1 (cpp/src/metrics.cpp, w1_bucketed), defined in
// cpp/src/isa/w1_isa.cpp and compiled once per SIMD level.
//
// The bucket of a value v is  b(v) = min(trunc((v - vlo) * scale), last)  (int64), non-decreasing in v;
// its nominal left edge is  c_b = vlo + b * width.  Every level evaluates these with the same IEEE
// operations (no FMA contraction in the metrics), so buckets, sums and results are bitwise identical on
// all levels. Keys are the order-preserving bit patterns of the values (nfhep/math/sort_keys.hpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/isa.hpp"

// Smallest and largest key of k[0..n), n >= 1.
NFHEP_DECLARE_ISA(void keys_minmax(const std::uint64_t* k, std::size_t n, std::uint64_t* lo, std::uint64_t* hi))
NFHEP_DECLARE_ISA(void keys_minmax(const std::uint32_t* k, std::size_t n, std::uint32_t* lo, std::uint32_t* hi))
// bins[2 b] += v - c_b and bins[2 b + 1] += 1 for every value, in input order.
NFHEP_DECLARE_ISA(void w1_fill(const std::uint64_t* k, std::size_t n, double vlo, double scale, double width,
                               std::int64_t last, double* bins))
NFHEP_DECLARE_ISA(void w1_fill(const std::uint32_t* k, std::size_t n, double vlo, double scale, double width,
                               std::int64_t last, double* bins))
// Copy the keys whose bucket is flagged (flag[b] = 1) to out, in input order; returns how many. `out` must
// have room for that count plus 8 (the copy is branch-free and writes whole vectors ahead), and `flag`
// 8 bytes of zero padding past the last bucket (read by the AVX-512 gather).
NFHEP_DECLARE_ISA(std::size_t w1_select(const std::uint64_t* k, std::size_t n, double vlo, double scale,
                                        std::int64_t last, const std::uint8_t* flag, std::uint64_t* out))
NFHEP_DECLARE_ISA(std::size_t w1_select(const std::uint32_t* k, std::size_t n, double vlo, double scale,
                                        std::int64_t last, const std::uint8_t* flag, std::uint32_t* out))
