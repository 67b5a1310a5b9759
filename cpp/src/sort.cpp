// MSD radix sort on the order-preserving bit transform of floats (see nfhep/sort.hpp).
#include "nfhep/sort.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "nfhep/math/sort_keys.hpp"
#include "sort_isa.hpp"

namespace nfhep {
namespace {

constexpr std::size_t kRadix = std::size_t{1} << 11;

template <class K>
void insertion_sort(K* keys, double* values, std::size_t n) {
  for (std::size_t i = 1; i < n; ++i) {
    const K k = keys[i];
    const double v = values ? values[i] : 0.0;
    std::size_t j = i;
    while (j > 0 && keys[j - 1] > k) {
      keys[j] = keys[j - 1];
      if (values) values[j] = values[j - 1];
      --j;
    }
    keys[j] = k;
    if (values) values[j] = v;
  }
}

constexpr std::size_t kInsertion = 32;

/// MSD radix sort of keys[0..n) whose bits at and above `hi_bit` are all equal. One stable scatter
/// per level into `scratch`, copied back, then each bucket recursively. The first level touches all
/// memory; deeper levels work on buckets that fit in cache. The digit width adapts to the bucket size
/// (11 bits for large buckets, fewer for small ones so the histogram stays cheap); runs of equal digits
/// are skipped; buckets of <= 32 keys finish with insertion sort.
template <class K>
void msd_sort(K* keys, K* scratch, std::size_t n, int hi_bit, double* values, double* vscratch,
              std::size_t* hist) {
  while (true) {
    if (n <= kInsertion || hi_bit <= 0) {
      if (hi_bit > 0) insertion_sort(keys, values, n);
      return;
    }
    const int want = n > 65536 ? 11 : n > 4096 ? 8 : n > 512 ? 6 : 4;
    const int bits = want < hi_bit ? want : hi_bit;
    const int shift = hi_bit - bits;
    const std::size_t nb = std::size_t{1} << bits;
    const K mask = static_cast<K>(nb - 1);
    std::fill(hist, hist + nb, std::size_t{0});
    for (std::size_t i = 0; i < n; ++i) ++hist[(keys[i] >> shift) & mask];
    if (hist[(keys[0] >> shift) & mask] == n) {  // every key has the same digit: next digit
      hi_bit = shift;
      continue;
    }
    std::size_t starts[2049];
    std::size_t sum = 0;
    for (std::size_t b = 0; b < nb; ++b) {
      starts[b] = sum;
      sum += hist[b];
    }
    starts[nb] = n;
    std::size_t pos[2048];
    std::copy(starts, starts + nb, pos);
    if (values) {
      for (std::size_t i = 0; i < n; ++i) {
        const K k = keys[i];
        const std::size_t p = pos[(k >> shift) & mask]++;
        scratch[p] = k;
        vscratch[p] = values[i];
      }
      std::memcpy(values, vscratch, n * sizeof(double));
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        const K k = keys[i];
        scratch[pos[(k >> shift) & mask]++] = k;
      }
    }
    std::memcpy(keys, scratch, n * sizeof(K));
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t m = starts[b + 1] - starts[b];
      if (m > 1)
        msd_sort(keys + starts[b], scratch + starts[b], m, shift, values ? values + starts[b] : nullptr,
                 values ? vscratch + starts[b] : nullptr, hist);
    }
    return;
  }
}

template <class K>
K* radix_sort_impl(K* keys, K* scratch, std::size_t n, double* values, double* vscratch, double** values_out) {
  if (values_out) *values_out = values;
  if (n < 2) return keys;
  std::vector<std::size_t> hist(kRadix);
  msd_sort<K>(keys, scratch, n, static_cast<int>(sizeof(K) * 8), values, vscratch, hist.data());
  return keys;
}

template <class T, class K>
void sort_floats(T* data, std::size_t n, double* values) {
  std::vector<K> keys(n), scratch(n);
  std::vector<double> vscratch(values ? n : 0);
  for (std::size_t i = 0; i < n; ++i) keys[i] = math::to_ordered(data[i]);
  double* vout = values;
  const K* out = radix_sort_impl<K>(keys.data(), scratch.data(), n, values, values ? vscratch.data() : nullptr, &vout);
  for (std::size_t i = 0; i < n; ++i) data[i] = math::from_ordered(out[i]);
  if (values && vout != values) std::memcpy(values, vout, n * sizeof(double));
}

template <class T, class K>
void sort_dispatch(T* data, std::size_t n) {
  if (n < 2) return;
  const std::size_t n_scratch = detail::sort_keys_scratch(n);
  std::unique_ptr<K[]> keys(new K[n]), scratch(new K[n_scratch > 0 ? n_scratch : 1]);  // not zero-filled
  for (std::size_t i = 0; i < n; ++i) keys[i] = math::to_ordered(data[i]);
  if constexpr (sizeof(K) == 8)
    detail::sort_keys_u64(keys.get(), scratch.get(), n_scratch, n);
  else
    detail::sort_keys_u32(keys.get(), scratch.get(), n_scratch, n);
  for (std::size_t i = 0; i < n; ++i) data[i] = math::from_ordered(keys[i]);
}

}  // namespace

namespace detail {
void sort_keys_u64(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n_scratch, std::size_t n) {
  NFHEP_DISPATCH(sort_keys, keys, scratch, n_scratch, n);
}
void sort_keys_u32(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n_scratch, std::size_t n) {
  NFHEP_DISPATCH(sort_keys, keys, scratch, n_scratch, n);
}
std::size_t sort_keys_scratch(std::size_t n) { NFHEP_DISPATCH(sort_keys_scratch, n); }

std::uint64_t* radix_sort_u64(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n, double* values,
                              double* value_scratch, double** values_out) {
  return radix_sort_impl<std::uint64_t>(keys, scratch, n, values, value_scratch, values_out);
}
std::uint32_t* radix_sort_u32(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n, double* values,
                              double* value_scratch, double** values_out) {
  return radix_sort_impl<std::uint32_t>(keys, scratch, n, values, value_scratch, values_out);
}
}  // namespace detail

void sort(double* data, std::size_t n) { sort_dispatch<double, std::uint64_t>(data, n); }
void sort(float* data, std::size_t n) { sort_dispatch<float, std::uint32_t>(data, n); }
void radix_sort(double* data, std::size_t n) { sort_floats<double, std::uint64_t>(data, n, nullptr); }
void radix_sort(float* data, std::size_t n) { sort_floats<float, std::uint32_t>(data, n, nullptr); }
void radix_sort_pairs(double* keys, double* values, std::size_t n) {
  sort_floats<double, std::uint64_t>(keys, n, values);
}
void radix_sort_pairs(float* keys, double* values, std::size_t n) {
  sort_floats<float, std::uint32_t>(keys, n, values);
}

}  // namespace nfhep
