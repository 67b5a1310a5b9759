// LSD radix sort on the order-preserving bit transform of floats (see nfhep/sort.hpp).
#include "nfhep/sort.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "nfhep/math/sort_keys.hpp"

namespace nfhep {
namespace {

constexpr int kBits = 11;
constexpr std::size_t kRadix = std::size_t{1} << kBits;
constexpr std::size_t kMask = kRadix - 1;

template <class K>
K* radix_sort_impl(K* keys, K* scratch, std::size_t n, double* values, double* vscratch, double** values_out) {
  constexpr int n_pass = (static_cast<int>(sizeof(K)) * 8 + kBits - 1) / kBits;
  if (values_out) *values_out = values;
  if (n < 2) return keys;
  if (n <= 64) {  // insertion sort: stable, no histogram overhead for tiny inputs
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
    return keys;
  }
  std::vector<std::size_t> hist(static_cast<std::size_t>(n_pass) * kRadix, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const K k = keys[i];
    for (int p = 0; p < n_pass; ++p) ++hist[p * kRadix + ((k >> (p * kBits)) & kMask)];
  }
  K* src = keys;
  K* dst = scratch;
  double* vsrc = values;
  double* vdst = vscratch;
  for (int p = 0; p < n_pass; ++p) {
    std::size_t* h = &hist[p * kRadix];
    const int shift = p * kBits;
    // Skip a pass whose digit is constant (every key lands in one bucket).
    if (h[(src[0] >> shift) & kMask] == n) continue;
    std::size_t sum = 0;
    for (std::size_t b = 0; b < kRadix; ++b) {
      const std::size_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    if (values) {
      for (std::size_t i = 0; i < n; ++i) {
        const K k = src[i];
        const std::size_t pos = h[(k >> shift) & kMask]++;
        dst[pos] = k;
        vdst[pos] = vsrc[i];
      }
      std::swap(vsrc, vdst);
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        const K k = src[i];
        dst[h[(k >> shift) & kMask]++] = k;
      }
    }
    std::swap(src, dst);
  }
  if (values_out) *values_out = vsrc;
  return src;
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

}  // namespace

namespace detail {
std::uint64_t* radix_sort_u64(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n, double* values,
                              double* value_scratch, double** values_out) {
  return radix_sort_impl<std::uint64_t>(keys, scratch, n, values, value_scratch, values_out);
}
std::uint32_t* radix_sort_u32(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n, double* values,
                              double* value_scratch, double** values_out) {
  return radix_sort_impl<std::uint32_t>(keys, scratch, n, values, value_scratch, values_out);
}
}  // namespace detail

void radix_sort(double* data, std::size_t n) { sort_floats<double, std::uint64_t>(data, n, nullptr); }
void radix_sort(float* data, std::size_t n) { sort_floats<float, std::uint32_t>(data, n, nullptr); }
void radix_sort_pairs(double* keys, double* values, std::size_t n) {
  sort_floats<double, std::uint64_t>(keys, n, values);
}
void radix_sort_pairs(float* keys, double* values, std::size_t n) {
  sort_floats<float, std::uint32_t>(keys, n, values);
}

}  // namespace nfhep
