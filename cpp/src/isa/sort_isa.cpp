// Per-ISA sort of order-preserving float keys (see cpp/src/sort_isa.hpp). Compiled once per SIMD level.
//
// AVX-512 level: an in-place vectorised quicksort of unsigned keys (uint64 = keys of doubles, 8 lanes;
// uint32 = keys of floats, 16 lanes). Sorting the order-preserving keys (nfhep/math/sort_keys.hpp) as
// unsigned integers is sorting the floats; -0.0 and +0.0 have the same key, infinities and subnormals are
// ordinary keys, NaN never arrives (callers reject it).
//  - Partition (two-ended, in place, no scratch): one batch of 64 keys is held in registers from each end;
//    then batches are read from whichever end has less free room (one unpredictable branch per batch,
//    not per vector), each vector is compared with the pivot (one mask), the keys below it are
//    compressed (vpcompress into a register) and stored at the left write position, the others at the
//    right one. Reading from the tighter end keeps >= one batch of free room on both sides, so the left
//    store can write a full vector (its tail lands in free room); the right store is masked.
//    Always compress into a register, never vpcompress to memory: that form is microcoded on AMD Zen 4
//    (llvm/llvm-project#133568); on this Xeon it would be ~7% faster (measured), not worth the risk.
//  - Pivot: the median of 2 (ranges <= 64 vectors) or 4 vectors of keys sampled at equal strides (sorted
//    by the network below).
//  - Ties: the partition is [< pivot | >= pivot]. If the left side comes out empty the pivot is the
//    minimum, and a second partition [<= pivot | > pivot] splits off every key equal to it (done); so
//    all-equal and heavily tied inputs cost O(n) per distinct value instead of degrading.
//  - Small ranges (<= 16 vectors: 128 doubles / 256 floats) are sorted in registers: loaded with the
//    maximum key as padding, each vector sorted by a bitonic network (lane shuffle + min + max + blend
//    per stage), then bitonic merges of 1, 2, 4, 8 vectors (reverse-compare, half cleaners across vectors,
//    then in-vector cleaners).
//  - Depth limit 2 log2(n) + 4 partitions; beyond it heapsort (O(n log n) whatever the input).
// The sort's output is unique (a total order on keys), so it is bit-identical to the radix sort that the
// other levels keep (cpp/src/sort.cpp), whatever the input and thread count.
//
// ODR: everything here lives in the per-ISA namespace (anonymous inside it); no std:: templates are
// instantiated (they would become weak symbols shared by all SIMD levels).
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../sort_isa.hpp"
#include "nfhep/sort.hpp"

#define NFHEP_SORT_FI inline __attribute__((always_inline))

namespace nfhep::detail::NFHEP_ISA_NS {
namespace {

#if defined(__AVX512F__)

/// Operations on one zmm register of 8 uint64 keys.
struct U64 {
  using key = std::uint64_t;
  using vec = __m512i;
  using mask = __mmask8;
  static constexpr int L = 8;
  static constexpr key kMax = ~key{0};
  static NFHEP_SORT_FI vec set1(key k) { return _mm512_set1_epi64(static_cast<long long>(k)); }
  static NFHEP_SORT_FI vec loadu(const key* p) { return _mm512_loadu_si512(p); }
  static NFHEP_SORT_FI void storeu(key* p, vec v) { _mm512_storeu_si512(p, v); }
  static NFHEP_SORT_FI mask first(int m) { return static_cast<mask>((1u << m) - 1u); }  // m in [0, L]
  static NFHEP_SORT_FI vec load_pad(const key* p, mask m) { return _mm512_mask_loadu_epi64(set1(kMax), m, p); }
  static NFHEP_SORT_FI void store_m(key* p, mask m, vec v) { _mm512_mask_storeu_epi64(p, m, v); }
  static NFHEP_SORT_FI vec min(vec a, vec b) { return _mm512_min_epu64(a, b); }
  static NFHEP_SORT_FI vec max(vec a, vec b) { return _mm512_max_epu64(a, b); }
  static NFHEP_SORT_FI mask lt(vec a, vec b) { return _mm512_cmplt_epu64_mask(a, b); }
  static NFHEP_SORT_FI mask le(vec a, vec b) { return _mm512_cmple_epu64_mask(a, b); }
  // Merge-masked into v itself (lanes past the count keep v's keys, never stored): no false dependency
  // on the destination register, which zero-masked compress has on AMD Zen 4/5.
  static NFHEP_SORT_FI vec compress(mask m, vec v) { return _mm512_mask_compress_epi64(v, m, v); }
  static NFHEP_SORT_FI vec blend(mask m, vec a, vec b) { return _mm512_mask_blend_epi64(m, a, b); }
  static NFHEP_SORT_FI vec permute(vec idx, vec v) { return _mm512_permutexvar_epi64(idx, v); }
  static NFHEP_SORT_FI int count(mask m) { return __builtin_popcount(static_cast<unsigned>(m)); }
  /// Lane i takes lane i ^ J (immediate shuffles: no index register, vpshufd has 1-cycle latency).
  template <int J>
  static NFHEP_SORT_FI vec swap(vec v) {
    if constexpr (J == 1) return _mm512_shuffle_epi32(v, _MM_PERM_BADC);
    if constexpr (J == 2) return _mm512_permutex_epi64(v, 0x4E);
    if constexpr (J == 4) return _mm512_shuffle_i64x2(v, v, 0x4E);
  }
};

/// Operations on one zmm register of 16 uint32 keys.
struct U32 {
  using key = std::uint32_t;
  using vec = __m512i;
  using mask = __mmask16;
  static constexpr int L = 16;
  static constexpr key kMax = ~key{0};
  static NFHEP_SORT_FI vec set1(key k) { return _mm512_set1_epi32(static_cast<int>(k)); }
  static NFHEP_SORT_FI vec loadu(const key* p) { return _mm512_loadu_si512(p); }
  static NFHEP_SORT_FI void storeu(key* p, vec v) { _mm512_storeu_si512(p, v); }
  static NFHEP_SORT_FI mask first(int m) { return static_cast<mask>((1u << m) - 1u); }
  static NFHEP_SORT_FI vec load_pad(const key* p, mask m) { return _mm512_mask_loadu_epi32(set1(kMax), m, p); }
  static NFHEP_SORT_FI void store_m(key* p, mask m, vec v) { _mm512_mask_storeu_epi32(p, m, v); }
  static NFHEP_SORT_FI vec min(vec a, vec b) { return _mm512_min_epu32(a, b); }
  static NFHEP_SORT_FI vec max(vec a, vec b) { return _mm512_max_epu32(a, b); }
  static NFHEP_SORT_FI mask lt(vec a, vec b) { return _mm512_cmplt_epu32_mask(a, b); }
  static NFHEP_SORT_FI mask le(vec a, vec b) { return _mm512_cmple_epu32_mask(a, b); }
  static NFHEP_SORT_FI vec compress(mask m, vec v) { return _mm512_mask_compress_epi32(v, m, v); }
  static NFHEP_SORT_FI vec blend(mask m, vec a, vec b) { return _mm512_mask_blend_epi32(m, a, b); }
  static NFHEP_SORT_FI vec permute(vec idx, vec v) { return _mm512_permutexvar_epi32(idx, v); }
  static NFHEP_SORT_FI int count(mask m) { return __builtin_popcount(static_cast<unsigned>(m)); }
  template <int J>
  static NFHEP_SORT_FI vec swap(vec v) {
    if constexpr (J == 1) return _mm512_shuffle_epi32(v, _MM_PERM_CDAB);
    if constexpr (J == 2) return _mm512_shuffle_epi32(v, _MM_PERM_BADC);
    if constexpr (J == 4) return _mm512_shuffle_i32x4(v, v, 0xB1);
    if constexpr (J == 8) return _mm512_shuffle_i32x4(v, v, 0x4E);
  }
};

/// A lane table (permutation indices) built at compile time.
template <class T>
struct LaneTable {
  alignas(64) typename T::key v[T::L];
};

/// Compare-exchange of lane i with lane i ^ J. K > 0: stage of a bitonic sort (the block of K lanes that
/// holds i is ascending if (i & K) == 0, else descending); K == 0: every pair ascending (merge cleaner).
template <class T, int J, int K>
struct LaneStage {
  // Lanes that keep the max: the upper lane of an ascending pair or the lower lane of a descending one.
  static constexpr unsigned max_lanes() {
    unsigned m = 0;
    for (int i = 0; i < T::L; ++i) {
      const bool ascending = K == 0 || (i & K) == 0;
      const bool upper = (i & J) != 0;
      if (ascending == upper) m |= 1u << i;
    }
    return m;
  }
};

template <class T>
struct Reverse {
  static constexpr LaneTable<T> table() {
    LaneTable<T> t{};
    for (int i = 0; i < T::L; ++i) t.v[i] = static_cast<typename T::key>(T::L - 1 - i);
    return t;
  }
  static constexpr LaneTable<T> kTable = table();
};

template <class T, int J, int K>
NFHEP_SORT_FI typename T::vec cx_lanes(typename T::vec v) {
  using S = LaneStage<T, J, K>;
  const typename T::vec w = T::template swap<J>(v);
  return T::blend(static_cast<typename T::mask>(S::max_lanes()), T::min(v, w), T::max(v, w));
}

template <class T>
NFHEP_SORT_FI typename T::vec reverse(typename T::vec v) {
  return T::permute(T::loadu(Reverse<T>::kTable.v), v);
}

/// Bitonic sort of the lanes of one vector: stages (K, J) = (2, 1), (4, 2), (4, 1), ..., (L, 1).
template <class T, int K, int J>
NFHEP_SORT_FI typename T::vec sort_lanes_from(typename T::vec v) {
  v = cx_lanes<T, J, K>(v);
  if constexpr (J > 1)
    return sort_lanes_from<T, K, J / 2>(v);
  else if constexpr (K < T::L)
    return sort_lanes_from<T, 2 * K, K>(v);
  else
    return v;
}

/// Bitonic cleaner inside one vector (a bitonic vector becomes ascending): J = L/2, ..., 1.
template <class T, int J>
NFHEP_SORT_FI typename T::vec clean_lanes(typename T::vec v) {
  v = cx_lanes<T, J, 0>(v);
  if constexpr (J > 1)
    return clean_lanes<T, J / 2>(v);
  else
    return v;
}

template <class T>
NFHEP_SORT_FI void cx_vecs(typename T::vec& a, typename T::vec& b) {
  const typename T::vec lo = T::min(a, b);
  b = T::max(a, b);
  a = lo;
}

/// Half cleaners across vectors: distance D vectors inside blocks of 2D, for D, D/2, ..., 1.
template <class T, int N, int D>
NFHEP_SORT_FI void clean_vecs(typename T::vec* v) {
  if constexpr (D >= 1) {
#pragma GCC unroll 16
    for (int b = 0; b < N; b += 2 * D) {
#pragma GCC unroll 16
      for (int i = 0; i < D; ++i) cx_vecs<T>(v[b + i], v[b + i + D]);
    }
    clean_vecs<T, N, D / 2>(v);
  }
}

/// Merge sorted blocks of W vectors pairwise into sorted blocks of 2W, then W -> 2W until N.
template <class T, int N, int W>
NFHEP_SORT_FI void merge_vecs(typename T::vec* v) {
  if constexpr (W < N) {
#pragma GCC unroll 16
    for (int b = 0; b < N; b += 2 * W) {
      // Bitonic merge: element t of the first block against element t of the reversed second block; the
      // minima (first block) and the maxima (second block, same element order t) are bitonic sequences.
      typename T::vec r[W];
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) r[i] = reverse<T>(v[b + 2 * W - 1 - i]);
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) {
        v[b + W + i] = T::max(v[b + i], r[i]);
        v[b + i] = T::min(v[b + i], r[i]);
      }
    }
    clean_vecs<T, N, W / 2>(v);
#pragma GCC unroll 16
    for (int i = 0; i < N; ++i) v[i] = clean_lanes<T, T::L / 2>(v[i]);
    merge_vecs<T, N, 2 * W>(v);
  }
}

/// Sort N vectors (N a power of two) held in registers into one ascending sequence of N * L keys.
template <class T, int N>
NFHEP_SORT_FI void sort_vecs(typename T::vec* v) {
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) v[i] = sort_lanes_from<T, 2, 1>(v[i]);
  merge_vecs<T, N, 1>(v);
}

/// Sort a[0..n), n <= N * L, in registers (missing keys padded with the maximum key, never stored).
template <class T, int N>
NFHEP_SORT_FI void sort_block(typename T::key* a, std::size_t n) {
  typename T::vec v[N];
  typename T::mask m[N];
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) {
    const std::ptrdiff_t rem = static_cast<std::ptrdiff_t>(n) - static_cast<std::ptrdiff_t>(i) * T::L;
    m[i] = T::first(rem >= T::L ? T::L : rem > 0 ? static_cast<int>(rem) : 0);
    v[i] = T::load_pad(rem > 0 ? a + i * T::L : a, m[i]);
  }
  sort_vecs<T, N>(v);
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) {
    const std::ptrdiff_t rem = static_cast<std::ptrdiff_t>(n) - static_cast<std::ptrdiff_t>(i) * T::L;
    if (rem > 0) T::store_m(a + i * T::L, m[i], v[i]);
  }
}

template <class T>
constexpr std::size_t kSmall = 16 * T::L;  // ranges sorted in registers (>= 2 partition batches)

template <class T>
void small_sort(typename T::key* a, std::size_t n) {
  const std::size_t nv = (n + T::L - 1) / T::L;
  if (nv <= 1)
    sort_block<T, 1>(a, n);
  else if (nv <= 2)
    sort_block<T, 2>(a, n);
  else if (nv <= 4)
    sort_block<T, 4>(a, n);
  else if (nv <= 8)
    sort_block<T, 8>(a, n);
  else
    sort_block<T, 16>(a, n);
}

/// In-place heapsort: the O(n log n) fallback when the quicksort recursion gets too deep.
template <class K>
void heap_sort(K* a, std::size_t n) {
  if (n < 2) return;
  auto sift_down = [a](std::size_t i, std::size_t m) {
    const K x = a[i];
    while (true) {
      std::size_t c = 2 * i + 1;
      if (c >= m) break;
      if (c + 1 < m && a[c + 1] > a[c]) ++c;
      if (!(a[c] > x)) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = x;
  };
  for (std::size_t i = n / 2; i-- > 0;) sift_down(i, n);
  for (std::size_t m = n - 1; m > 0; --m) {
    const K top = a[0];
    a[0] = a[m];
    a[m] = top;
    sift_down(0, m);
  }
}

/// Median of kVecs vectors of keys sampled at equal strides (n > kSmall, so the stride is >= 2).
template <class T, int kVecs>
typename T::key sample_median(const typename T::key* a, std::size_t n) {
  constexpr std::size_t m = static_cast<std::size_t>(kVecs) * T::L;
  alignas(64) typename T::key s[m];
  const std::size_t step = n / m;
  for (std::size_t i = 0; i < m; ++i) s[i] = a[i * step + step / 2];
  typename T::vec v[kVecs];
#pragma GCC unroll 16
  for (int i = 0; i < kVecs; ++i) v[i] = T::loadu(s + i * T::L);
  sort_vecs<T, kVecs>(v);
#pragma GCC unroll 16
  for (int i = 0; i < kVecs; ++i) T::storeu(s + i * T::L, v[i]);
  return s[m / 2];
}

/// Pivot: median of 2 vectors of samples for small ranges (cheap), of 4 for large ones (better split).
template <class T>
typename T::key choose_pivot(const typename T::key* a, std::size_t n) {
  return n <= 64 * T::L ? sample_median<T, 2>(a, n) : sample_median<T, 4>(a, n);
}

/// Vectors read per step of the partition (one side decision per 64 keys: the choice of side is an
/// unpredictable branch, so it is taken once per batch, not once per vector).
template <class T>
constexpr int kBatch = 64 / T::L;

/// Partition a[0..n) (n >= 2 * kBatch * L) in place into [keys below | the rest], "below" meaning < pivot
/// (LessEq false) or <= pivot (LessEq true); returns the size of the first part.
template <class T, bool LessEq>
std::size_t partition(typename T::key* a, std::size_t n, typename T::key pivot) {
  using key = typename T::key;
  using vec = typename T::vec;
  using mask = typename T::mask;
  constexpr int L = T::L;
  constexpr int U = kBatch<T>;
  constexpr std::ptrdiff_t B = static_cast<std::ptrdiff_t>(U) * L;  // keys per batch
  const vec pv = T::set1(pivot);
  auto below_of = [&](vec v) -> mask { return LessEq ? T::le(v, pv) : T::lt(v, pv); };
  // One batch from each end is held in registers (or the stack); that is the free room the stores use.
  vec held[2 * U];
#pragma GCC unroll 16
  for (int i = 0; i < U; ++i) {
    held[i] = T::loadu(a + i * L);
    held[U + i] = T::loadu(a + n - B + i * L);
  }
  key* lw = a;      // next left write
  key* rw = a + n;  // one past the free room on the right
  key* lr = a + B;  // unread keys: [lr, rr)
  key* rr = a + n - B;
  // One vector: keys below the pivot to the left (full store: the lanes past nb land in free room, which
  // is >= one batch on both sides after a read), the others to the right (masked store).
  auto put = [&](vec v) {
    const mask below = below_of(v);
    const int nb = T::count(below);
    T::storeu(lw, T::compress(below, v));
    lw += nb;
    rw -= L - nb;
    T::store_m(rw, static_cast<mask>(T::first(L) >> nb), T::compress(static_cast<mask>(~below), v));
  };
  while (rr - lr >= B) {
    // Read a batch from the side with less free room: before the read the free room is 2B in total, so
    // after it both sides have >= B, enough for the B keys this batch writes however they split.
    const key* src;
    if (lr - lw <= rw - rr) {
      src = lr;
      lr += B;
    } else {
      rr -= B;
      src = rr;
    }
    vec v[U];
#pragma GCC unroll 16
    for (int i = 0; i < U; ++i) v[i] = T::loadu(src + i * L);
#pragma GCC unroll 16
    for (int i = 0; i < U; ++i) put(v[i]);
  }
  while (rr - lr >= L) {  // whole vectors left over (same rule; free room >= L on both sides after a read)
    vec v;
    if (lr - lw <= rw - rr) {
      v = T::loadu(lr);
      lr += L;
    } else {
      rr -= L;
      v = T::loadu(rr);
    }
    put(v);
  }
  // The last < L unread keys and the held batches: exact (masked) stores.
  auto flush = [&](vec v, mask valid) {
    const mask below = static_cast<mask>(below_of(v) & valid);
    const mask above = static_cast<mask>(~below & valid);
    const int nb = T::count(below), na = T::count(above);
    T::store_m(lw, T::first(nb), T::compress(below, v));
    lw += nb;
    rw -= na;
    T::store_m(rw, T::first(na), T::compress(above, v));
  };
  const int rest = static_cast<int>(rr - lr);
  flush(T::load_pad(lr, T::first(rest)), T::first(rest));
  // The free room is now [lw, rw), exactly the 2U held vectors: put() is exact here too (the tail of its
  // full left store is overwritten by its right store when the room is down to one vector).
#pragma GCC unroll 16
  for (int i = 0; i < 2 * U; ++i) put(held[i]);
  return static_cast<std::size_t>(lw - a);
}

template <class T>
void quick_sort(typename T::key* a, std::size_t n, int depth) {
  while (n > kSmall<T>) {
    if (--depth < 0) {
      heap_sort(a, n);
      return;
    }
    const typename T::key pivot = choose_pivot<T>(a, n);
    const std::size_t nl = partition<T, false>(a, n, pivot);
    if (nl == 0) {  // the pivot is the minimum: split off all keys equal to it, they are in place
      const std::size_t ne = partition<T, true>(a, n, pivot);
      a += ne;
      n -= ne;
      continue;
    }
    if (nl < n - nl) {  // recurse into the smaller part, loop on the larger (stack depth O(log n))
      quick_sort<T>(a, nl, depth);
      a += nl;
      n -= nl;
    } else {
      quick_sort<T>(a + nl, n - nl, depth);
      n = nl;
    }
  }
  small_sort<T>(a, n);
}

template <class T>
void vector_sort(typename T::key* a, std::size_t n) {
  int lg = 0;
  while ((std::size_t{1} << lg) < n && lg < 63) ++lg;
  quick_sort<T>(a, n, 2 * lg + 4);
}

#endif  // __AVX512F__

}  // namespace

#if defined(__AVX512F__)
void sort_keys(std::uint64_t* keys, std::uint64_t* /*scratch*/, std::size_t /*n_scratch*/, std::size_t n) {
  vector_sort<U64>(keys, n);
}
void sort_keys(std::uint32_t* keys, std::uint32_t* /*scratch*/, std::size_t /*n_scratch*/, std::size_t n) {
  vector_sort<U32>(keys, n);
}
std::size_t sort_keys_scratch(std::size_t /*n*/) { return 0; }
#else
namespace {
/// Scratch for the radix sort: the caller's if large enough, else owned here (plain new[]: no std::
/// templates in the per-ISA sources).
template <class K>
class Scratch {
 public:
  Scratch(K* given, std::size_t n_given, std::size_t n) : owned_(n_given < n ? new K[n] : nullptr) {
    ptr_ = owned_ ? owned_ : given;
  }
  ~Scratch() { delete[] owned_; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  K* get() const { return ptr_; }

 private:
  K* owned_;
  K* ptr_;
};
}  // namespace

void sort_keys(std::uint64_t* keys, std::uint64_t* scratch, std::size_t n_scratch, std::size_t n) {
  const Scratch<std::uint64_t> s(scratch, n_scratch, n);
  const std::uint64_t* out = ::nfhep::detail::radix_sort_u64(keys, s.get(), n);
  if (out != keys) std::memcpy(keys, out, n * sizeof(std::uint64_t));
}
void sort_keys(std::uint32_t* keys, std::uint32_t* scratch, std::size_t n_scratch, std::size_t n) {
  const Scratch<std::uint32_t> s(scratch, n_scratch, n);
  const std::uint32_t* out = ::nfhep::detail::radix_sort_u32(keys, s.get(), n);
  if (out != keys) std::memcpy(keys, out, n * sizeof(std::uint32_t));
}
std::size_t sort_keys_scratch(std::size_t n) { return n; }
#endif

}  // namespace nfhep::detail::NFHEP_ISA_NS
