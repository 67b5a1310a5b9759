// nfhep/sort.hpp: sorts of float keys (the hot path of the two-sample metrics).
//
// `sort` / `detail::sort_keys_*` pick the fastest sort for this CPU at run time (nfhep/isa.hpp): on
// AVX-512 an in-place vectorised quicksort of the keys (cpp/src/isa/sort_isa.cpp), elsewhere the radix
// sort below. Both give the same bits (sorting is a total order on the keys). Stable payload sorts
// (`radix_sort_pairs`, the weighted metrics) always use the radix sort.
//
// Keys go through the order-preserving bit transform (nfhep/math/sort_keys.hpp) and are sorted by an
// MSD radix sort: one stable scatter per level (11-bit digits for large buckets, narrower digits for
// small ones), levels whose digit is constant are skipped, buckets of <= 32 keys finish by insertion
// sort. Only the first level streams through all memory; deeper levels work on buckets that fit in
// cache (measured ~2x faster than a 6-pass LSD radix sort on 10^6 doubles here). O(n * levels) time,
// n extra keys of scratch (plus n payload values for the pair variants). Single-threaded: callers
// parallelise across independent arrays (dimensions, directions). Keys must not be NaN (callers check).
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/config.hpp"

namespace nfhep {

/// Sort `data[0..n)` ascending in place (allocates 2n keys of scratch).
NFHEP_API void radix_sort(double* data, std::size_t n);
NFHEP_API void radix_sort(float* data, std::size_t n);

/// Sort `data[0..n)` ascending in place with the fastest sort for this CPU (AVX-512 vectorised quicksort or
/// the radix sort; identical output; allocates n keys). -0.0 comes out as +0.0. NaN not allowed.
NFHEP_API void sort(double* data, std::size_t n);
NFHEP_API void sort(float* data, std::size_t n);

/// Sort `keys` ascending in place and apply the same (stable) permutation to `values`.
NFHEP_API void radix_sort_pairs(double* keys, double* values, std::size_t n);
NFHEP_API void radix_sort_pairs(float* keys, double* values, std::size_t n);

namespace detail {
/// Sort order-preserving keys (nfhep/math/sort_keys.hpp) ascending in place with the fastest sort for this
/// CPU. `scratch` holds `n_scratch` keys; sort_keys_scratch(n) is what the active level uses (0 on
/// AVX-512, n for the radix sort, which allocates its own if given less).
NFHEP_API void sort_keys_u64(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n_scratch, std::size_t n);
NFHEP_API void sort_keys_u32(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n_scratch, std::size_t n);
NFHEP_API std::size_t sort_keys_scratch(std::size_t n);
/// Sort transformed keys; returns the buffer that holds the result (`keys` or `scratch`).
NFHEP_API std::uint64_t* radix_sort_u64(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n,
                                        double* values = nullptr, double* value_scratch = nullptr,
                                        double** values_out = nullptr);
NFHEP_API std::uint32_t* radix_sort_u32(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n,
                                        double* values = nullptr, double* value_scratch = nullptr,
                                        double** values_out = nullptr);
}  // namespace detail

}  // namespace nfhep
