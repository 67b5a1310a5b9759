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
namespace nfhep::detail {
// Bucket codes of w1_select_sum (one byte per bucket; 0: no value of either sample lies in the bucket).
// (Packed to 2 bits per bucket, a 16 KiB table, the pass was no faster.)
constexpr std::uint8_t kW1CodeNonneg = 1;  // G >= 0 over the bucket: its offsets are added
constexpr std::uint8_t kW1CodeNonpos = 2;  // G <= 0 over the bucket: its offsets are subtracted
constexpr std::uint8_t kW1CodeWalk = 4;    // G may change sign: the bucket's keys are selected
}  // namespace nfhep::detail

// ++counts[b] for every value.
NFHEP_DECLARE_ISA(void w1_count(const std::uint64_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
                                std::uint32_t* counts))
NFHEP_DECLARE_ISA(void w1_count(const std::uint32_t* k, std::size_t n, double vlo, double scale, std::int64_t last,
                                std::uint32_t* counts))
// One pass over the keys, by the code of each value's bucket: copies the keys of kW1CodeWalk buckets to out,
// in input order (their number to *count), and returns the sum of the offsets v - c_b of the values in
// kW1CodeNonneg buckets minus that of the values in kW1CodeNonpos buckets. The sum runs in 8 lanes (value
// i in lane i % 8), restarted per chunk of 512 values and added to lane totals, which are summed in a
// fixed order: the same additions on every level. `out` must have room for the count plus 8 (the copy is
// branch-free and writes whole vectors ahead), and `code` 8 bytes of zero padding past the last bucket
// (read by the AVX-512 gather).
NFHEP_DECLARE_ISA(double w1_select_sum(const std::uint64_t* k, std::size_t n, double vlo, double scale, double width,
                                       std::int64_t last, const std::uint8_t* code, std::uint64_t* out,
                                       std::size_t* count))
NFHEP_DECLARE_ISA(double w1_select_sum(const std::uint32_t* k, std::size_t n, double vlo, double scale, double width,
                                       std::int64_t last, const std::uint8_t* code, std::uint32_t* out,
                                       std::size_t* count))
