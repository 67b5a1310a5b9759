// Private: the per-ISA key sorts (defined in cpp/src/isa/sort_isa.cpp, compiled once per SIMD level into
// nfhep::detail::isa_<name>; dispatched by nfhep::detail::sort_keys_u64/u32 in cpp/src/sort.cpp).
//
// The keys are the order-preserving bit patterns of floats (nfhep/math/sort_keys.hpp), so sorting them as
// unsigned integers sorts the floats; NaN never gets here (callers reject it). Sorting is a total order on
// the keys, so every implementation gives the same output bits: the AVX-512 level uses a vectorised
// quicksort (in place, `scratch` unused), the other levels the MSD radix sort (which uses `scratch`, n keys).
#pragma once
#include <cstddef>
#include <cstdint>

#include "nfhep/isa.hpp"

// `scratch` holds `n_scratch` keys; a radix level given fewer than n allocates its own (so a set_isa()
// from another thread between sort_keys_scratch() and sort_keys() cannot make it overrun).
NFHEP_DECLARE_ISA(void sort_keys(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n_scratch,
                                 std::size_t n))
NFHEP_DECLARE_ISA(void sort_keys(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n_scratch,
                                 std::size_t n))
// Keys of scratch sort_keys of this level needs for n keys (n for the radix levels, 0 for AVX-512).
NFHEP_DECLARE_ISA(std::size_t sort_keys_scratch(std::size_t n))
