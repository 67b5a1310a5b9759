// Two-sample metrics (see nfhep/metrics.hpp): per-column radix sorts, ECDF merges, W1, projections.
#include "nfhep/metrics.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "nfhep/ks_detail.hpp"
#include "nfhep/math/sort_keys.hpp"
#include "nfhep/metrics_detail.hpp"
#include "nfhep/parallel.hpp"
#include "nfhep/sort.hpp"
#include "w1_isa.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nfhep {
namespace detail {
namespace {

template <class T>
using KeyOf = std::conditional_t<std::is_same<T, float>::value, std::uint32_t, std::uint64_t>;

/// Sort keys[0..n); with a payload (`vals`, the weights) the stable radix sort, so tied keys keep their
/// weights in input order on every SIMD level; without one the fastest key sort for this CPU (AVX-512
/// vectorised quicksort or the radix sort; same bits). `scratch` is resized to what the sort needs.
template <class K>
K* sort_keys(K* keys, std::vector<K>& scratch, std::size_t n, double* vals, double* vscratch, double** vals_out) {
  if (!vals) {
    const std::size_t need = sort_keys_scratch(n);
    if (scratch.size() < need) scratch.resize(need);
    if (vals_out) *vals_out = nullptr;
    if constexpr (std::is_same<K, std::uint32_t>::value)
      sort_keys_u32(keys, scratch.data(), scratch.size(), n);
    else
      sort_keys_u64(keys, scratch.data(), scratch.size(), n);
    return keys;
  }
  if (scratch.size() < n) scratch.resize(n);
  if constexpr (std::is_same<K, std::uint32_t>::value)
    return radix_sort_u32(keys, scratch.data(), n, vals, vscratch, vals_out);
  else
    return radix_sort_u64(keys, scratch.data(), n, vals, vscratch, vals_out);
}

/// Per-thread scratch, taken from and returned to a pool for the duration of one chunk.
template <class K>
struct Work {
  std::vector<K> kx, sx, ky, sy, ky2;
  std::vector<double> wx, swx, wy, swy;
  std::vector<std::uint8_t> cand;   // buckets walked point by point (ks); bucket codes (w1_bucketed)
  std::vector<std::uint32_t> w1counts;  // per-bucket counts of both samples (w1_bucketed)
  std::vector<std::size_t> w1walk;  // per walked bucket: b, I, J (the counts of earlier buckets) (w1_bucketed)
};

constexpr std::size_t kW1MaxBuckets = std::size_t{1} << 16;  // w1_bucketed: 2^16 counts of 4 B per sample fit L2
constexpr std::size_t kW1PerBucket = 16;                       // target values per bucket

/// Scratch objects of type W handed to parallel tasks: taken for one task, given back for the next.
template <class W>
class ScratchPool {
 public:
  std::unique_ptr<W> take() {
    std::lock_guard<std::mutex> lk(m_);
    if (free_.empty()) return std::make_unique<W>();
    auto w = std::move(free_.back());
    free_.pop_back();
    return w;
  }
  void give(std::unique_ptr<W> w) {
    std::lock_guard<std::mutex> lk(m_);
    free_.push_back(std::move(w));
  }

 private:
  std::mutex m_;
  std::vector<std::unique_ptr<W>> free_;
};
template <class K>
using WorkPool = ScratchPool<Work<K>>;

/// A sorted column: keys and (if weighted) the weights in the same order.
template <class K>
struct Sorted {
  const K* keys;
  const double* w;
  std::size_t n;
};

/// Gather column `col` of a sample into keys (+ weights payload) and sort; buffers from `k`, `s`, `w`, `sw`.
template <class T, class K>
Sorted<K> sort_column(const metrics::Sample<T>& x, std::size_t col, std::vector<K>& k, std::vector<K>& s,
                      std::vector<double>& w, std::vector<double>& sw) {
  const std::size_t n = x.n, D = x.dim;
  if (k.size() < n) k.resize(n);
  const T* src = x.data + col;
  K* kd = k.data();
  for (std::size_t i = 0; i < n; ++i) kd[i] = math::to_ordered(src[i * D]);
  double* vals = nullptr;
  double* vs = nullptr;
  if (x.weights) {
    if (w.size() < n) w.resize(n);
    if (sw.size() < n) sw.resize(n);
    std::memcpy(w.data(), x.weights, n * sizeof(double));
    vals = w.data();
    vs = sw.data();
  }
  double* vout = nullptr;
  K* out = sort_keys<K>(kd, s, n, vals, vs, &vout);
  return {out, vout, n};
}

/// Same for keys already in k[0..n) (projections): sort in place using scratch buffers.
template <class K>
Sorted<K> sort_keys_with_weights(K* keys, std::size_t n, const double* weights, std::vector<K>& s,
                                 std::vector<double>& w, std::vector<double>& sw) {
  double* vals = nullptr;
  double* vs = nullptr;
  if (weights) {
    if (w.size() < n) w.resize(n);
    if (sw.size() < n) sw.resize(n);
    std::memcpy(w.data(), weights, n * sizeof(double));
    vals = w.data();
    vs = sw.data();
  }
  double* vout = nullptr;
  K* out = sort_keys<K>(keys, s, n, vals, vs, &vout);
  return {out, vout, n};
}

constexpr std::size_t kColumnBlock = 8;  // columns gathered per pass over the rows (one cache line of doubles)

/// For every dimension d: gather column d of x and of y as order-preserving keys and call
/// body(d, keys_x, keys_y, work) (keys_x: x.n unsorted keys in work, likewise keys_y). Columns are gathered
/// kColumnBlock at a time in one pass over the rows, so the row-major input is streamed once per block
/// instead of once per column; blocks run in parallel.
template <class T, class K, class Body>
void for_each_column_pair(const metrics::Sample<T>& x, const metrics::Sample<T>& y, Body&& body) {
  const std::size_t D = x.dim;
  // Block width <= kColumnBlock, chosen so the number of blocks is a multiple of the thread count where
  // that costs nothing (D = 28 on 2 threads: 4 blocks of 7 columns, not 8+8+8+4, which left one thread
  // with 16 columns and the other with 12). Each column's result depends only on that column, so the
  // blocking (and the thread count) does not change any bit of the output.
  const std::size_t n_threads = static_cast<std::size_t>(std::max(1, get_num_threads()));
  std::size_t n_blocks = (D + kColumnBlock - 1) / kColumnBlock;
  n_blocks = (n_blocks + n_threads - 1) / n_threads * n_threads;
  const std::size_t width = std::max<std::size_t>(1, (D + n_blocks - 1) / n_blocks);
  n_blocks = (D + width - 1) / width;
  WorkPool<K> pool;
  parallel_for(n_blocks, 1, [&](std::size_t b0, std::size_t b1) {
    auto wk = pool.take();
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t d0 = blk * width;
      const std::size_t nb = std::min(width, D - d0);
      auto gather = [&](const metrics::Sample<T>& s, std::vector<K>& g) {
        if (g.size() < nb * s.n) g.resize(nb * s.n);
        K* gd = g.data();
        for (std::size_t i = 0; i < s.n; ++i) {
          const T* row = s.data + i * D + d0;
          for (std::size_t c = 0; c < nb; ++c) gd[c * s.n + i] = math::to_ordered(row[c]);
        }
      };
      gather(x, wk->kx);
      gather(y, wk->ky);
      for (std::size_t c = 0; c < nb; ++c) body(d0 + c, wk->kx.data() + c * x.n, wk->ky.data() + c * y.n, *wk);
    }
    pool.give(std::move(wk));
  });
}

/// For every dimension d: sort column d of x and of y (with weights as payload) and call
/// body(d, sorted_x, sorted_y).
template <class T, class K, class Body>
void for_each_sorted_column_pair(const metrics::Sample<T>& x, const metrics::Sample<T>& y, Body&& body) {
  for_each_column_pair<T, K>(x, y, [&](std::size_t d, K* kx, K* ky, Work<K>& wk) {
    const auto sa = sort_keys_with_weights<K>(kx, x.n, x.weights, wk.sx, wk.wx, wk.swx);
    const auto sb = sort_keys_with_weights<K>(ky, y.n, y.weights, wk.sy, wk.wy, wk.swy);
    body(d, sa, sb);
  });
}

/// Total weight in sorted order (the same order the ECDF accumulates in, so the ECDF ends at exactly 1).
inline double total_weight(const double* w, std::size_t n) {
  double t = 0.0;
  for (std::size_t i = 0; i < n; ++i) t += w[i];
  return t;
}

/// KS: walk the distinct pooled values; the ECDFs are right-continuous (all points <= v counted).
template <class K>
void ks_merge(const Sorted<K>& a, const Sorted<K>& b, double& d_plus, double& d_minus) {
  const double wa_tot = a.w ? total_weight(a.w, a.n) : 0.0;
  const double wb_tot = b.w ? total_weight(b.w, b.n) : 0.0;
  const double na = static_cast<double>(a.n), nb = static_cast<double>(b.n);
  std::size_t i = 0, j = 0;
  double ca = 0.0, cb = 0.0;
  double dmax = -std::numeric_limits<double>::infinity();
  double dmin = std::numeric_limits<double>::infinity();
  if (!a.w && !b.w && a.n > 1 && b.n > 1) {
    // Unweighted: one pooled element per step without data-dependent branches; the ECDF difference is
    // taken into the extrema only where the next pooled value differs from the current one (the end of
    // a run of ties), which is exactly the set of points the loop below evaluates, with the same
    // arithmetic. Stops while both arrays still have an element ahead; the loop below finishes.
    const K* ak = a.keys;
    const K* bk = b.keys;
    const std::size_t ia = a.n - 1, jb = b.n - 1;
    const double inf = std::numeric_limits<double>::infinity();
    while (i < ia && j < jb) {
      const K ka = ak[i], kb = bk[j];
      const bool ta = ka <= kb;
      const K v = ta ? ka : kb;
      i += ta;
      j += !ta;
      const K na2 = ak[i], nb2 = bk[j];
      const K next = na2 <= nb2 ? na2 : nb2;
      const double d = static_cast<double>(i) / na - static_cast<double>(j) / nb;
      const bool end = next != v;
      const double dp = end ? d : -inf;
      const double dm = end ? d : inf;
      dmax = dp > dmax ? dp : dmax;
      dmin = dm < dmin ? dm : dmin;
    }
    // (i, j) may sit inside a run of ties of value v: the loop below consumes the rest of the run first.
  }
  while (i < a.n || j < b.n) {
    const K v = (j >= b.n || (i < a.n && a.keys[i] <= b.keys[j])) ? a.keys[i] : b.keys[j];
    if (a.w) {
      while (i < a.n && a.keys[i] == v) ca += a.w[i++];
    } else {
      while (i < a.n && a.keys[i] == v) ++i;
    }
    if (b.w) {
      while (j < b.n && b.keys[j] == v) cb += b.w[j++];
    } else {
      while (j < b.n && b.keys[j] == v) ++j;
    }
    const double fa = a.w ? ca / wa_tot : static_cast<double>(i) / na;
    const double fb = b.w ? cb / wb_tot : static_cast<double>(j) / nb;
    const double d = fa - fb;
    if (d > dmax) dmax = d;
    if (d < dmin) dmin = d;
  }
  d_plus = dmax;
  d_minus = std::min(std::max(0.0 - dmin, 0.0), 1.0);  // 0.0 - 0.0 is +0.0: no "-0" in results
}

/// The next value of the pooled sorted runs a[i, ea) and b[j, eb) (not both empty): returns it and moves
/// i and j past every copy of it, so a run of ties is one step (right-continuous ECDFs).
template <class K>
inline K next_pooled_value(const K* a, std::size_t& i, std::size_t ea, const K* b, std::size_t& j, std::size_t eb) {
  const K v = (j >= eb || (i < ea && a[i] <= b[j])) ? a[i] : b[j];
  while (i < ea && a[i] == v) ++i;
  while (j < eb && b[j] == v) ++j;
  return v;
}

/// Unweighted KS statistics without sorting whole columns: an exact branch-and-bound over value buckets.
///
/// Every value gets a bucket index that is non-decreasing in the value (see KsColumnMap), so a run of ties
/// never spans two buckets. With the counts of both samples per bucket (B = 2^8 .. 2^16 buckets), the ECDF
/// difference at the end of every non-empty bucket is one of the points ks_merge evaluates (the next pooled
/// value lies in a later bucket), computed with the same expression i / na - j / nb. Inside bucket b the
/// counts run over [I_b, I_{b+1}] x [J_b, J_{b+1}] and the expression is monotone in each (rounding is
/// monotone), so no point inside can beat I_{b+1}/na - J_b/nb (nor go below I_b/na - J_{b+1}/nb). Only the
/// buckets whose bound beats the extrema found so far are sorted and walked point by point, as ks_merge
/// does. The result is bit-identical to sorting everything (tested) for ANY monotone bucket map, so the
/// map below only decides the speed: under H0 with n = 10^6 (2^15 buckets) a few hundred buckets survive,
/// holding ~1-2% of the values; heavy ties make more survive (at worst all: a full sort).
///
/// Passes (ks_unweighted): (1) the value range of every column from a fixed subsample of rows (values
/// outside it are clamped into the end buckets: still monotone, so still exact) and, on a smaller
/// subsample, the choice between buckets linear in the value or in log|v| (KsColumnMap), (2) the bucket
/// index of every value as uint16, computed along the rows and written column-major (per ISA; this pass
/// also checks finiteness), (3) per column: counts from the indices, bounds, selection of the candidate
/// buckets' rows from the indices, their values fetched from the rows, sorted and walked. The input is
/// read once, and the indices (2 bytes per value) twice.
///
/// The bucket map of one column: b = trunc(clamp((u - lo) * scale, 0, nbk - 1)) with u the value itself
/// (floor < 0) or a signed log-like magnitude (floor = f >= 0): u = sign(v) (bits(max(|v|, f)) - bits(f)),
/// bits() the IEEE pattern read as an integer (see nfhep/ks_detail.hpp). Both are monotone (every step
/// rounds monotonically; equal values, equal buckets; -inf/+inf land in the end buckets). Linear in the
/// value suits most data; the log map balances heavy-tailed columns (energies, momenta, impact
/// parameters) far better, and it is the only choice when the value range overflows (values near
/// +-DBL_MAX, or infinities/NaN in the subsample with check_finite=False). lo/scale come from the value
/// range [vmin, vmax] of the range subsample.
struct KsColumnMap {
  double floor = -1.0;
  double lo = 0.0, scale = 0.0;
};

/// The map with argument floor `floor` (< 0: linear in the value) spanning [vmin, vmax] with nbk buckets;
/// `finite` tells whether the span of u is finite (always true for the log map).
inline KsColumnMap ks_make_map(double floor, double vmin, double vmax, std::size_t nbk, bool& finite) {
  KsColumnMap m;
  m.floor = floor;
  m.lo = ks_map_arg(vmin, floor);
  const double range = ks_map_arg(vmax, floor) - m.lo;
  finite = std::isfinite(range);
  m.scale = finite && range > 0.0 ? static_cast<double>(nbk) / range : 0.0;
  return m;
}

/// The kernel's bucket formula, for one value (used to choose the map on a subsample).
inline std::size_t ks_bucket_of(const KsColumnMap& m, double v, double top) {
  return static_cast<std::size_t>(ks_bucket_index(ks_map_arg(v, m.floor), m.lo, m.scale, top));
}

constexpr std::size_t kKsChoiceRows = 1024;  // rows of each sample that choose between the two maps

/// Per column: the value map, unless the log map puts at most half as many pairs of subsample values into
/// a common bucket (the candidate buckets' work grows with the squared bucket counts), or the value range
/// overflows. The subsample: up to kKsChoiceRows evenly spaced rows of x and of y; the log map's floor f is the
/// (m/256)-th smallest |v| among its m values (values below it share the middle bucket).
template <class T, class K>
void ks_choose_maps(const metrics::Sample<T>& x, const metrics::Sample<T>& y, const K* klo, const K* khi,
                    std::size_t nbk, KsColumnMap* maps) {
  const std::size_t D = x.dim;
  const double top = static_cast<double>(nbk - 1);
  // Subsample rows (every step-th), gathered column-major; each row is read whole, once.
  // (small samples use fewer rows, so that the choice stays cheap next to the statistic itself)
  auto rows_of = [](std::size_t n) { return std::min({n, kKsChoiceRows, std::max<std::size_t>(128, n / 16)}); };
  const std::size_t mx = rows_of(x.n), sx = x.n / mx;
  const std::size_t my = rows_of(y.n), sy = y.n / my;
  const std::size_t m = mx + my;
  std::vector<double> vals(m * D), mags(m);
  for (std::size_t i = 0; i < mx; ++i)
    for (std::size_t d = 0; d < D; ++d) vals[d * m + i] = static_cast<double>(x.data[i * sx * D + d]);
  for (std::size_t i = 0; i < my; ++i)
    for (std::size_t d = 0; d < D; ++d) vals[d * m + mx + i] = static_cast<double>(y.data[i * sy * D + d]);
  std::vector<std::uint32_t> cnt(nbk, 0u);
  std::vector<std::uint32_t> bk(m);
  auto pairs = [&](const KsColumnMap& map, const double* v) {
    std::size_t p = 0;
    for (std::size_t i = 0; i < m; ++i) {
      bk[i] = static_cast<std::uint32_t>(ks_bucket_of(map, v[i], top));
      p += cnt[bk[i]]++;
    }
    for (std::size_t i = 0; i < m; ++i) cnt[bk[i]] = 0;  // clear only what was touched
    return p;
  };
  for (std::size_t d = 0; d < D; ++d) {
    const double vmin = static_cast<double>(math::from_ordered(klo[d]));
    const double vmax = static_cast<double>(math::from_ordered(khi[d]));
    const double* v = vals.data() + d * m;
    for (std::size_t i = 0; i < m; ++i) mags[i] = std::fabs(v[i]);
    const std::size_t q = m / 256;
    std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(q), mags.end(),
                     [](double a, double b) { return a < b || (b != b && a == a); });  // NaN last
    const double f = std::isfinite(mags[q]) ? mags[q] : 0.0;
    bool finite_v = false, finite_l = false;
    const KsColumnMap vm = ks_make_map(-1.0, vmin, vmax, nbk, finite_v);
    const KsColumnMap lm = ks_make_map(f, vmin, vmax, nbk, finite_l);
    maps[d] = (!finite_v || 2 * pairs(lm, v) <= pairs(vm, v)) ? lm : vm;
  }
}

/// Per-thread scratch of ks_column.
template <class K>
struct KsWork {
  std::vector<std::uint32_t> cnt;  // bucket counts [a | b]
  std::vector<std::uint8_t> cand;  // candidate buckets
  std::vector<std::size_t> rows;   // rows of the selected values
  std::vector<K> sa, sb, scratch;  // selected keys (then sorted), sort scratch
};

/// Rows i (ascending) whose bucket idx[i] is flagged in cand, written branch-free to rows[0..count);
/// rows needs count + 1 entries. Returns count.
inline std::size_t ks_select_rows(const std::uint16_t* idx, std::size_t n, const std::uint8_t* cand,
                                  std::size_t* rows) {
  std::size_t p = 0;
  for (std::size_t i = 0; i < n; ++i) {
    rows[p] = i;
    p += cand[idx[i]];
  }
  return p;
}

/// KS statistics of column d from the bucket indices of its values (ix: x.n, iy: y.n) and the map.
template <class T, class K>
void ks_column(const metrics::Sample<T>& x, const metrics::Sample<T>& y, std::size_t d, const std::uint16_t* ix,
               const std::uint16_t* iy, std::size_t nbk, KsWork<K>& wk, double& d_plus, double& d_minus) {
  const std::size_t na_ = x.n, nb_ = y.n, D = x.dim;
  std::vector<std::uint32_t>& cnt = wk.cnt;
  cnt.assign(2 * nbk, 0u);
  std::uint32_t* ca = cnt.data();
  std::uint32_t* cb = ca + nbk;
  for (std::size_t i = 0; i < na_; ++i) ++ca[ix[i]];
  for (std::size_t j = 0; j < nb_; ++j) ++cb[iy[j]];
  const double na = static_cast<double>(na_), nb = static_cast<double>(nb_);
  double dmax = -std::numeric_limits<double>::infinity();
  double dmin = std::numeric_limits<double>::infinity();
  std::size_t I = 0, J = 0;
  for (std::size_t b = 0; b < nbk; ++b) {  // bucket ends: evaluation points
    if (ca[b] == 0 && cb[b] == 0) continue;
    I += ca[b];
    J += cb[b];
    const double dd = static_cast<double>(I) / na - static_cast<double>(J) / nb;
    dmax = dd > dmax ? dd : dmax;
    dmin = dd < dmin ? dd : dmin;
  }
  // Buckets that may hold a better point: flag them.
  std::vector<std::uint8_t>& cand = wk.cand;
  cand.assign(nbk, 0u);
  std::size_t n_cand = 0, sel_a = 0, sel_b = 0;
  I = 0;
  J = 0;
  for (std::size_t b = 0; b < nbk; ++b) {
    const std::size_t I1 = I + ca[b], J1 = J + cb[b];
    if (ca[b] + cb[b] > 1) {  // a single point is its own bucket end
      const double ub = static_cast<double>(I1) / na - static_cast<double>(J) / nb;
      const double lb = static_cast<double>(I) / na - static_cast<double>(J1) / nb;
      if (ub > dmax || lb < dmin) {
        cand[b] = 1;
        ++n_cand;
        sel_a += ca[b];
        sel_b += cb[b];
      }
    }
    I = I1;
    J = J1;
  }
  if (n_cand > 0) {
    // Keys of the candidate buckets' values (rows in ascending order, values fetched from the rows), sorted.
    auto select = [&](const metrics::Sample<T>& s, const std::uint16_t* idx, std::size_t sel, std::vector<K>& out) {
      if (wk.rows.size() < sel + 1) wk.rows.resize(sel + 1);
      if (out.size() < sel) out.resize(sel);
      const std::size_t got = ks_select_rows(idx, s.n, cand.data(), wk.rows.data());
      if (got != sel) throw std::logic_error("ks_column: bucket selection disagrees with the bucket counts");
      const T* col = s.data + d;
      for (std::size_t q = 0; q < sel; ++q) out[q] = math::to_ordered(col[wk.rows[q] * D]);
      sort_keys<K>(out.data(), wk.scratch, sel, nullptr, nullptr, nullptr);  // without payload: in place
    };
    select(x, ix, sel_a, wk.sa);
    select(y, iy, sel_b, wk.sb);
    const K* sa = wk.sa.data();
    const K* sb = wk.sb.data();
    // Walk each candidate bucket with the counts of all earlier buckets as offsets (ks_merge's loop).
    std::size_t pa = 0, pb = 0;
    I = 0;
    J = 0;
    for (std::size_t b = 0; b < nbk; ++b) {
      if (cand[b]) {
        const std::size_t ea = pa + ca[b], eb = pb + cb[b];
        std::size_t i = pa, j = pb;
        while (i < ea || j < eb) {
          next_pooled_value(sa, i, ea, sb, j, eb);
          const double dd = static_cast<double>(I + (i - pa)) / na - static_cast<double>(J + (j - pb)) / nb;
          dmax = dd > dmax ? dd : dmax;
          dmin = dd < dmin ? dd : dmin;
        }
        pa = ea;
        pb = eb;
      }
      I += ca[b];
      J += cb[b];
    }
  }
  d_plus = dmax;
  d_minus = std::min(std::max(0.0 - dmin, 0.0), 1.0);  // 0.0 - 0.0 is +0.0: no "-0" in results
}

constexpr std::size_t kKsRowChunk = 8192;  // rows per parallel task (a multiple of the kernels' 32-row tiles)
constexpr std::size_t kKsIndexBytes = std::size_t{256} << 20;  // bucket indices held at once (column groups)
constexpr std::size_t kKsRangeRows = 16384;  // rows of each sample that set the bucket ranges

/// Fold the key extremes of a fixed subsample of the rows of s (all rows if n <= kKsRangeRows, else rows
/// i * floor(n / kKsRangeRows) and the last row) into lo[d], hi[d].
template <class T, class K>
void ks_range_sample(const metrics::Sample<T>& s, K* lo, K* hi) {
  auto fold = [&](std::size_t r0, std::size_t r1) { NFHEP_DISPATCH(ks_minmax_rows, s.data, s.dim, r0, r1, lo, hi); };
  if (s.n <= kKsRangeRows) {
    fold(0, s.n);
    return;
  }
  const std::size_t step = s.n / kKsRangeRows;
  for (std::size_t i = 0; i < kKsRangeRows; ++i) fold(i * step, i * step + 1);
  fold(s.n - 1, s.n);
}

/// Uninitialised, 64-byte aligned scratch of n values of T (the KS bucket indices, the SWD projections:
/// every element is written before it is read). On Linux, 8 MiB or more come from an anonymous mapping
/// whose pages are faulted in up front by all threads with MADV_POPULATE_WRITE (Linux >= 5.14; 448 MiB:
/// 0.07 s instead of 0.10 s for first touches by two threads, as the kernel needs no trap per 4 KiB page;
/// where that is refused the pages fault in on first touch); smaller buffers from aligned_alloc. Plain
/// pages: transparent huge pages made first calls slower here (SWD: 0.9-1.7 s of system time; KS: 0.3-0.4
/// s on the first call of a process). In this VM, populating 448 MiB of huge pages took 0.03 s when the
/// memory had been used by the guest before and 0.56-1.26 s otherwise (first touches that the hypervisor
/// backs), against a steady 0.055 s for 4 KiB pages. On release, all threads return the pages before the
/// unmap (see the destructor).
template <class T>
class ScratchPages {
 public:
  explicit ScratchPages(std::size_t n) {
    const std::size_t bytes = std::max<std::size_t>(1, n) * sizeof(T);
#if defined(__linux__)
    constexpr std::size_t kMin = std::size_t{8} << 20;
    if (bytes >= kMin) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p != MAP_FAILED) {
        map_ = p;
        bytes_ = bytes;
        data_ = static_cast<T*>(p);
        constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE (linux/mman.h)
        char* base = static_cast<char*>(p);
        parallel_for(bytes, kPiece, [&](std::size_t b, std::size_t e) {
          madvise(base + b, e - b, kPopulateWrite);  // failure is harmless: pages fault in on first touch
        });
        return;
      }
    }
#endif
    owned_.reset(static_cast<T*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));  // size: a multiple of 64
    if (!owned_) throw std::bad_alloc();
    data_ = owned_.get();
  }
  ~ScratchPages() {
#if defined(__linux__)
    if (map_) {
      // The pages are released by all threads first (MADV_DONTNEED holds the mmap lock shared; munmap
      // holds it exclusively and would free them from one thread: 448 MiB, 12 -> 6.5 ms), then unmapped.
      char* base = static_cast<char*>(map_);
      try {
        parallel_for(bytes_, kPiece, [&](std::size_t b, std::size_t e) { madvise(base + b, e - b, MADV_DONTNEED); });
      } catch (...) {  // nothing released early: munmap releases everything
      }
      munmap(map_, bytes_);
    }
#endif
  }
  ScratchPages(const ScratchPages&) = delete;
  ScratchPages& operator=(const ScratchPages&) = delete;
  T* data() const { return data_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  static constexpr std::size_t kPiece = std::size_t{16} << 20;  // populated / released per task (page multiple)
  T* data_ = nullptr;
  std::unique_ptr<T, Free> owned_;
  void* map_ = nullptr;
  std::size_t bytes_ = 0;
};

/// Unweighted KS statistics of every column (x, y already checked for size and dimensions).
template <class T, class K>
void ks_unweighted(const metrics::Sample<T>& x, const metrics::Sample<T>& y, double* d_plus, double* d_minus,
                   bool check_finite) {
  const std::size_t D = x.dim, na = x.n, nb = y.n;
  std::vector<K> lo(D, ~K{0}), hi(D, K{0});
  ks_range_sample<T, K>(x, lo.data(), hi.data());
  ks_range_sample<T, K>(y, lo.data(), hi.data());
  // Bucket count: the scan costs ~nbk, the counting ~n (more once the counts outgrow the L2 cache), and
  // under H0 the values in candidate buckets grow like (n / nbk)^2; nbk ~ 2 n^(2/3) (power of two in
  // [2^8, 2^16]) balanced them best here (D = 28, n = 10^6: 2^15; D = 100, n = 2 10^5: 2^14).
  const double target = 2.0 * std::cbrt(static_cast<double>(na + nb) * static_cast<double>(na + nb));
  std::size_t nbk = 256;
  while (nbk < 65536 && static_cast<double>(nbk) < target) nbk *= 2;
  std::vector<KsColumnMap> maps(D);
  ks_choose_maps<T, K>(x, y, lo.data(), hi.data(), nbk, maps.data());
  std::vector<double> vlo(D), scale(D), log_floor(D);
  for (std::size_t d = 0; d < D; ++d) {
    vlo[d] = maps[d].lo;
    scale[d] = maps[d].scale;
    log_floor[d] = maps[d].floor;
  }
  const std::uint32_t last = static_cast<std::uint32_t>(nbk - 1);
  // Columns in groups whose indices fit kKsIndexBytes (D = 28, n = 10^6: one group of 112 MB).
  const std::size_t per_col = (na + nb) * sizeof(std::uint16_t);
  const std::size_t group = std::max<std::size_t>(1, std::min<std::size_t>(D, kKsIndexBytes / per_col));
  const ScratchPages<std::uint16_t> ix(group * na), iy(group * nb);
  ScratchPool<KsWork<K>> pool;
  for (std::size_t g0 = 0; g0 < D; g0 += group) {
    const std::size_t g1 = std::min(D, g0 + group);
    // Bucket indices of columns [g0, g1) of s; false if a value is NaN or infinite.
    auto bucket_rows = [&](const metrics::Sample<T>& s, std::uint16_t* idx) -> bool {
      std::atomic<bool> finite{true};
      parallel_for(s.n, kKsRowChunk, [&](std::size_t b, std::size_t e) {
        const bool ok = [&]() -> bool {
          NFHEP_DISPATCH(ks_bucket_rows, s.data + g0, D, g1 - g0, b, e, vlo.data() + g0, scale.data() + g0,
                         log_floor.data() + g0, last, idx, s.n);
        }();
        if (!ok) finite.store(false, std::memory_order_relaxed);
      });
      return finite.load();
    };
    const bool finite_x = bucket_rows(x, ix.data());
    const bool finite_y = bucket_rows(y, iy.data());
    if (check_finite && !(finite_x && finite_y)) {
      metrics::validate_sample(x, "x", "weights_x", true);  // throws, naming the first bad event
      metrics::validate_sample(y, "y", "weights_y", true);
      throw std::logic_error("ks_statistics: a non-finite value escaped validate_sample");
    }
    parallel_for(g1 - g0, 1, [&](std::size_t c0, std::size_t c1) {
      auto wk = pool.take();
      for (std::size_t c = c0; c < c1; ++c)
        ks_column<T, K>(x, y, g0 + c, ix.data() + c * na, iy.data() + c * nb, nbk, *wk, d_plus[g0 + c],
                        d_minus[g0 + c]);
      pool.give(std::move(wk));
    });
  }
}

template <class K>
double key_value(K k) {
  return static_cast<double>(math::from_ordered(k));
}

/// W1 = sum over consecutive distinct pooled values t_k < t_{k+1} of |F_a(t_k) - F_b(t_k)| (t_{k+1} - t_k).
template <class K>
double w1_merge(const Sorted<K>& a, const Sorted<K>& b) {
  if (!a.w && !b.w && a.n == b.n) {
    // Equal sizes, no weights: W1 = mean_i |a_(i) - b_(i)| (the same integral, in one vectorisable loop).
    double sum = 0.0;
    for (std::size_t i = 0; i < a.n; ++i) sum += std::fabs(key_value(a.keys[i]) - key_value(b.keys[i]));
    return sum / static_cast<double>(a.n);
  }
  const double wa_tot = a.w ? total_weight(a.w, a.n) : 0.0;
  const double wb_tot = b.w ? total_weight(b.w, b.n) : 0.0;
  const double na = static_cast<double>(a.n), nb = static_cast<double>(b.n);
  std::size_t i = 0, j = 0;
  double ca = 0.0, cb = 0.0, sum = 0.0;
  K v = (a.keys[0] <= b.keys[0]) ? a.keys[0] : b.keys[0];
  while (true) {
    if (a.w) {
      while (i < a.n && a.keys[i] == v) ca += a.w[i++];
    } else {
      while (i < a.n && a.keys[i] == v) ++i;
    }
    if (b.w) {
      while (j < b.n && b.keys[j] == v) cb += b.w[j++];
    } else {
      while (j < b.n && b.keys[j] == v) ++j;
    }
    if (i >= a.n && j >= b.n) break;
    const K next = (j >= b.n || (i < a.n && a.keys[i] <= b.keys[j])) ? a.keys[i] : b.keys[j];
    const double fa = a.w ? ca / wa_tot : static_cast<double>(i) / na;
    const double fb = b.w ? cb / wb_tot : static_cast<double>(j) / nb;
    sum += std::fabs(fa - fb) * (key_value(next) - key_value(v));
    v = next;
  }
  return sum;
}

template <class K>
void keys_minmax_dispatch(const K* k, std::size_t n, K* lo, K* hi) {
  NFHEP_DISPATCH(keys_minmax, k, n, lo, hi);
}
template <class K>
void w1_count_dispatch(const K* k, std::size_t n, double vlo, double scale, std::int64_t last,
                       std::uint32_t* counts) {
  NFHEP_DISPATCH(w1_count, k, n, vlo, scale, last, counts);
}
template <class K>
double w1_select_sum_dispatch(const K* k, std::size_t n, double vlo, double scale, double width, std::int64_t last,
                              const std::uint8_t* code, K* out, std::size_t* count) {
  NFHEP_DISPATCH(w1_select_sum, k, n, vlo, scale, width, last, code, out, count);
}

/// Unweighted W1 of one pair of columns (or projections) without sorting them whole.
///
/// W1 = integral of |G(t)|, G = F_a - F_b (right-continuous ECDFs). The value range [v_lo, v_hi] is cut
/// into nbk buckets with nominal edges c_k = v_lo + k w (w = range / nbk); a value's bucket is
/// min(trunc((v - v_lo) / w'), nbk - 1) (see w1_isa.hpp), non-decreasing in the value. A first pass per
/// sample counts the values per bucket. With I, J the counts of earlier buckets, G moves inside bucket k
/// between I/na - J_1/nb and I_1/na - J/nb (counts are monotone): where that range does not straddle 0,
/// G keeps its sign s_k over the bucket and the integral of |G| there is s_k times
///   integral of G = G(c_k) L + (n_a,k L - sum_a,k) / na - (n_b,k L - sum_b,k) / nb,
/// (L = c_{k+1} - c_k, sum_a,k the sum of the offsets v - c_k of the bucket's values: small numbers, no
/// cancellation against large values). Everything but the offset sums comes from the counts; the offset
/// sums enter only as  sum over such buckets of s_k sum_a,k,  which a second pass accumulates in one go,
/// value by value with the sign of its bucket, while it copies out the keys of the few buckets where the
/// ECDFs cross; those are sorted and walked point by point (w1_merge's sum). (A first pass that also
/// summed the offsets per bucket took ~1.5 ns per value for its random 16-byte read-modify-writes; the
/// counts alone ~0.9 ns.) Same value as the full sort up to rounding (other summation order; a value
/// that rounding puts in a neighbouring bucket moves the result by ~1 ulp of the range times 1/n);
/// tested against scipy and the sorted path. Non-finite ranges (check_finite=False with infinities) and
/// samples of 2^32 values or more take the full sort.
template <class K>
double w1_bucketed(K* ka, std::size_t na_, K* kb, std::size_t nb_, Work<K>& wk, const K* range_lo = nullptr,
                   const K* range_hi = nullptr) {
  K lo, hi;
  if (range_lo && range_hi) {  // the smallest and largest key of both, already known (projections)
    lo = *range_lo;
    hi = *range_hi;
  } else {
    K lo2, hi2;
    keys_minmax_dispatch<K>(ka, na_, &lo, &hi);
    keys_minmax_dispatch<K>(kb, nb_, &lo2, &hi2);
    lo = lo2 < lo ? lo2 : lo;
    hi = hi2 > hi ? hi2 : hi;
  }
  const double vlo = key_value(lo);
  const double vrange = key_value(hi) - vlo;
  constexpr std::size_t kMaxCount = std::numeric_limits<std::uint32_t>::max();
  if (!std::isfinite(vlo) || !std::isfinite(vrange) || na_ > kMaxCount || nb_ > kMaxCount) {
    const auto sa = sort_keys_with_weights<K>(ka, na_, nullptr, wk.sx, wk.wx, wk.swx);
    const auto sb = sort_keys_with_weights<K>(kb, nb_, nullptr, wk.sy, wk.wy, wk.swy);
    return w1_merge<K>(sa, sb);
  }
  if (!(vrange > 0.0)) return 0.0;  // every value equal: F_a == F_b everywhere
  std::size_t nbk = 256;
  while (nbk < kW1MaxBuckets && nbk * kW1PerBucket < na_ + nb_) nbk *= 2;
  const double scale = static_cast<double>(nbk) / vrange;
  const double width = vrange / static_cast<double>(nbk);
  const std::int64_t last = static_cast<std::int64_t>(nbk) - 1;
  auto edge = [&](std::size_t k) { return vlo + static_cast<double>(k) * width; };
  std::vector<std::uint32_t>& counts = wk.w1counts;  // [a: count per bucket | b: same]
  counts.assign(2 * nbk, 0u);
  std::uint32_t* const cnt_a = counts.data();
  std::uint32_t* const cnt_b = cnt_a + nbk;
  w1_count_dispatch<K>(ka, na_, vlo, scale, last, cnt_a);
  w1_count_dispatch<K>(kb, nb_, vlo, scale, last, cnt_b);
  const double na = static_cast<double>(na_), nb = static_cast<double>(nb_);
  std::vector<std::uint8_t>& code = wk.cand;
  code.assign(nbk + 8, 0u);  // + 8: padding read by the vectorised selection
  std::vector<std::size_t>& walk = wk.w1walk;
  walk.clear();
  std::size_t sel_a = 0, sel_b = 0;
  std::size_t I = 0, J = 0;
  double sum = 0.0;
  double c0 = edge(0);
  const double ina = 1.0 / na, inb = 1.0 / nb;  // W1 is not required bitwise: multiply, don't divide
  using U128 = unsigned __int128;
  for (std::size_t b = 0; b < nbk; ++b) {
    const double c1 = edge(b + 1);
    const double len = c1 - c0;
    const std::size_t ca = cnt_a[b], cb = cnt_b[b];
    const double g0 = static_cast<double>(I) * ina - static_cast<double>(J) * inb;
    if (ca + cb == 0) {
      sum += std::fabs(g0) * len;
    } else {
      const std::size_t I1 = I + ca, J1 = J + cb;
      // Sign of G over the bucket, exactly in integers: I/na - J1/nb >= 0  <=>  I nb >= J1 na.
      const bool nonneg = static_cast<U128>(I) * nb_ >= static_cast<U128>(J1) * na_;
      const bool nonpos = static_cast<U128>(I1) * nb_ <= static_cast<U128>(J) * na_;
      if (nonneg || nonpos) {
        // The integral of G over the bucket but the offset sums (added after the second pass).
        const double part = g0 * len + (static_cast<double>(ca) * ina - static_cast<double>(cb) * inb) * len;
        sum += nonneg ? part : -part;
        code[b] = nonneg ? kW1CodeNonneg : kW1CodeNonpos;
      } else {
        code[b] = kW1CodeWalk;
        walk.insert(walk.end(), {b, I, J});
        sel_a += ca;
        sel_b += cb;
      }
      I = I1;
      J = J1;
    }
    c0 = c1;
  }
  std::vector<K>& sa = wk.sx;  // the walked buckets' keys, then sorted (bucket order = key order)
  std::vector<K>& sb = wk.sy;
  if (sa.size() < sel_a + 8) sa.resize(sel_a + 8);  // + 8: room for the selection's vector stores
  if (sb.size() < sel_b + 8) sb.resize(sel_b + 8);
  std::size_t got_a = 0, got_b = 0;  // offset sums: + over the buckets where G >= 0, - where G <= 0
  const double off_a = w1_select_sum_dispatch<K>(ka, na_, vlo, scale, width, last, code.data(), sa.data(), &got_a);
  const double off_b = w1_select_sum_dispatch<K>(kb, nb_, vlo, scale, width, last, code.data(), sb.data(), &got_b);
  if (got_a != sel_a || got_b != sel_b) throw std::logic_error("w1_bucketed: the selection disagrees with the counts");
  sum += off_b * inb - off_a * ina;
  if (sel_a + sel_b > 0) {
    sort_keys<K>(sa.data(), wk.ky2, sel_a, nullptr, nullptr, nullptr);  // without payload: in place
    sort_keys<K>(sb.data(), wk.ky2, sel_b, nullptr, nullptr, nullptr);
    std::size_t pa = 0, pb = 0;
    for (std::size_t w = 0; w < walk.size(); w += 3) {  // the walked buckets only, in bucket order
      const std::size_t b = walk[w], Ib = walk[w + 1], Jb = walk[w + 2];
      const std::size_t ea = pa + cnt_a[b], eb = pb + cnt_b[b];
      // One pooled value per step, without data-dependent branches: the segment [t, next value) at the
      // current G, then the value is counted. Within a run of ties the segments have length exactly 0 and
      // add exactly 0, so this is the sum over distinct values (ks_merge's walk), bit for bit.
      const K* sorted_a = sa.data();
      const K* sorted_b = sb.data();
      std::size_t i = pa, j = pb;
      double t = edge(b);
      double g = static_cast<double>(Ib) * ina - static_cast<double>(Jb) * inb;
      auto step = [&](K v) {
        const double tv = key_value(v);
        sum += std::fabs(g) * (tv - t);
        t = tv;
        g = static_cast<double>(Ib + (i - pa)) * ina - static_cast<double>(Jb + (j - pb)) * inb;
      };
      while (i < ea && j < eb) {
        const K va = sorted_a[i], vb = sorted_b[j];
        const bool take_a = va <= vb;
        i += take_a;
        j += !take_a;
        step(take_a ? va : vb);
      }
      while (i < ea) {
        ++i;
        step(sorted_a[i - 1]);
      }
      while (j < eb) {
        ++j;
        step(sorted_b[j - 1]);
      }
      sum += std::fabs(g) * (edge(b + 1) - t);
      pa = ea;
      pb = eb;
    }
  }
  return sum;
}

template <class T>
void check_pair(const metrics::Sample<T>& x, const metrics::Sample<T>& y, bool check_finite) {
  metrics::validate_sample(x, "x", "weights_x", check_finite);
  metrics::validate_sample(y, "y", "weights_y", check_finite);
  if (x.dim != y.dim)
    throw std::invalid_argument("argument 'y' must have the same number of dimensions as 'x' (" +
                                std::to_string(x.dim) + "), got " + std::to_string(y.dim));
}

/// KS on the GPU: columns sorted on the device as projections on the unit vectors e_d (x . e_d == x_d
/// exactly: the other terms are signed zeros), then merged on the host.
template <class T>
void ks_cuda(const metrics::Sample<T>& x, const metrics::Sample<T>& y, double* d_plus, double* d_minus) {
#if defined(NFHEP_WITH_CUDA)
  const std::size_t D = x.dim;
  std::vector<double> xd(x.data, x.data + x.n * D), yd(y.data, y.data + y.n * D);
  const std::size_t per_dir = (x.n + y.n) * sizeof(std::uint64_t);
  const std::size_t block = std::max<std::size_t>(1, std::min<std::size_t>(D, (std::size_t{256} << 20) / per_dir));
  std::vector<std::uint64_t> kx(block * x.n), ky(block * y.n);
  std::vector<double> swx(x.weights ? block * x.n : 0), swy(y.weights ? block * y.n : 0);
  for (std::size_t d0 = 0; d0 < D; d0 += block) {
    const std::size_t nb = std::min(block, D - d0);
    std::vector<double> eye(nb * D, 0.0);
    for (std::size_t j = 0; j < nb; ++j) eye[j * D + d0 + j] = 1.0;
    cuda_project_sort(xd.data(), x.n, yd.data(), y.n, D, x.weights, y.weights, eye.data(), nb, kx.data(),
                      x.weights ? swx.data() : nullptr, ky.data(), y.weights ? swy.data() : nullptr);
    parallel_for(nb, 1, [&](std::size_t b, std::size_t e) {
      for (std::size_t j = b; j < e; ++j) {
        const Sorted<std::uint64_t> sa{kx.data() + j * x.n, x.weights ? swx.data() + j * x.n : nullptr, x.n};
        const Sorted<std::uint64_t> sb{ky.data() + j * y.n, y.weights ? swy.data() + j * y.n : nullptr, y.n};
        ks_merge<std::uint64_t>(sa, sb, d_plus[d0 + j], d_minus[d0 + j]);
      }
    });
  }
#else
  (void)x;
  (void)y;
  (void)d_plus;
  (void)d_minus;
  throw std::invalid_argument(
      "argument 'device': 'cuda' was requested but this nfhep core was built without CUDA; rebuild with "
      "-DNFHEP_CUDA=ON (e.g. pip install . -Ccmake.define.NFHEP_CUDA=ON) on a machine with nvcc");
#endif
}

}  // namespace

double w1_sorted_keys(const std::uint64_t* a, const double* wa, std::size_t na, const std::uint64_t* b,
                      const double* wb, std::size_t nb) {
  return w1_merge<std::uint64_t>({a, wa, na}, {b, wb, nb});
}

}  // namespace detail

namespace metrics {

template <class T>
void validate_sample(const Sample<T>& s, const char* name, const char* weights_name, bool check_finite) {
  if (s.n == 0) throw std::invalid_argument(std::string("argument '") + name + "' is empty (no events)");
  if (s.dim == 0) throw std::invalid_argument(std::string("argument '") + name + "' has no dimensions");
  if (!s.data) throw std::invalid_argument(std::string("argument '") + name + "' has no data");
  if (check_finite) {
    const std::size_t total = s.n * s.dim;
    const std::size_t chunk = std::size_t{1} << 20;
    const std::size_t n_chunks = (total + chunk - 1) / chunk;
    std::vector<std::size_t> first_bad(n_chunks, total);
    parallel_for(total, chunk, [&](std::size_t b, std::size_t e) {
      const T* p = s.data;
      bool bad = false;
      for (std::size_t i = b; i < e; ++i) bad |= !std::isfinite(p[i]);
      if (!bad) return;
      for (std::size_t i = b; i < e; ++i)
        if (!std::isfinite(p[i])) {
          first_bad[b / chunk] = i;
          break;
        }
    });
    for (std::size_t c = 0; c < n_chunks; ++c)
      if (first_bad[c] < total) {
        const std::size_t i = first_bad[c];
        throw std::invalid_argument(std::string("argument '") + name + "' contains a non-finite value (" +
                                    std::to_string(static_cast<double>(s.data[i])) + ") at event " +
                                    std::to_string(i / s.dim) + ", dimension " + std::to_string(i % s.dim) +
                                    "; remove or fix NaN/inf before comparing samples");
      }
  }
  if (s.weights) {
    double tot = 0.0;
    for (std::size_t i = 0; i < s.n; ++i) {
      const double w = s.weights[i];
      if (!(w >= 0.0) || !std::isfinite(w))
        throw std::invalid_argument(std::string("argument '") + weights_name +
                                    "' must hold finite non-negative weights, got " + std::to_string(w) +
                                    " at event " + std::to_string(i));
      tot += w;
    }
    if (!(tot > 0.0))
      throw std::invalid_argument(std::string("argument '") + weights_name + "' sums to zero (all weights are 0)");
  }
}

template <class T>
void ks_statistics(const Sample<T>& x, const Sample<T>& y, double* d_plus, double* d_minus, bool check_finite,
                   Device device) {
  using K = detail::KeyOf<T>;
  constexpr std::size_t kMaxCount = std::numeric_limits<std::uint32_t>::max();  // bucket counts are uint32
  if (device == Device::cpu && !x.weights && !y.weights && x.n <= kMaxCount && y.n <= kMaxCount) {
    // Unweighted: exact statistics without sorting whole columns; the finiteness check rides on the
    // first pass over the data (ks_unweighted).
    detail::check_pair(x, y, false);
    detail::ks_unweighted<T, K>(x, y, d_plus, d_minus, check_finite);
    return;
  }
  detail::check_pair(x, y, check_finite);
  if (device == Device::cuda) {
    detail::ks_cuda(x, y, d_plus, d_minus);
    return;
  }
  detail::for_each_sorted_column_pair<T, K>(x, y, [&](std::size_t d, const auto& sa, const auto& sb) {
    detail::ks_merge<K>(sa, sb, d_plus[d], d_minus[d]);
  });
}

template <class T>
void wasserstein_per_dim(const Sample<T>& x, const Sample<T>& y, double* out, bool check_finite) {
  detail::check_pair(x, y, check_finite);
  using K = detail::KeyOf<T>;
  if (!x.weights && !y.weights) {  // unweighted: bucket sums, sorting only where the ECDFs cross
    detail::for_each_column_pair<T, K>(x, y, [&](std::size_t d, K* kx, K* ky, detail::Work<K>& wk) {
      out[d] = detail::w1_bucketed<K>(kx, x.n, ky, y.n, wk);
    });
    return;
  }
  detail::for_each_sorted_column_pair<T, K>(
      x, y, [&](std::size_t d, const auto& sa, const auto& sb) { out[d] = detail::w1_merge<K>(sa, sb); });
}

namespace {
constexpr std::size_t kProjectChunk = 4096;  // rows per parallel task: fixed, independent of thread count

void check_directions(const double* directions, std::size_t n_dir, std::size_t dim) {
  if (n_dir == 0) throw std::invalid_argument("argument 'directions' must hold at least one direction");
  if (!directions) throw std::invalid_argument("argument 'directions' has no data");
  for (std::size_t i = 0; i < n_dir * dim; ++i)
    if (!std::isfinite(directions[i]))
      throw std::invalid_argument("argument 'directions' contains a non-finite value at direction " +
                                  std::to_string(i / dim) + ", dimension " + std::to_string(i % dim));
}

// The projection kernel is dispatched like the other per-ISA kernels. (Its AVX-512 build used to run
// ~15x slower than AVX2 -- GCC turned the scalar lane loops into permute-heavy code at
// -mprefer-vector-width=512 --; the kernel is now written with explicit native vectors, see
// cpp/src/isa/metrics_isa.cpp.) All levels give bitwise-identical results.
#define NFHEP_PROJECT_DISPATCH(fn, ...) NFHEP_DISPATCH(fn, __VA_ARGS__)

/// Keys of the projections (out[j * ld + i]) and, in range[2 j], range[2 j + 1], the smallest and largest
/// key of each direction (per-chunk extremes from the projection kernel, combined here).
template <class T>
void project_keys(const Sample<T>& x, const double* dirs, std::size_t n_dir, std::uint64_t* out, std::size_t ld,
                  std::uint64_t* range, bool stream) {
  const std::size_t n_chunks = (x.n + kProjectChunk - 1) / kProjectChunk;
  std::vector<std::uint64_t> mm(n_chunks * 2 * n_dir);
  parallel_for(x.n, kProjectChunk, [&](std::size_t b, std::size_t e) {
    NFHEP_PROJECT_DISPATCH(project_rows_keys, x.data, x.dim, b, e, dirs, n_dir, out, ld,
                           mm.data() + (b / kProjectChunk) * 2 * n_dir, stream);
  });
  for (std::size_t j = 0; j < n_dir; ++j) {
    std::uint64_t lo = ~std::uint64_t{0}, hi = 0;
    for (std::size_t c = 0; c < n_chunks; ++c) {
      const std::uint64_t* m = mm.data() + c * 2 * n_dir + 2 * j;
      lo = m[0] < lo ? m[0] : lo;
      hi = m[1] > hi ? m[1] : hi;
    }
    range[2 * j] = lo;
    range[2 * j + 1] = hi;
  }
}
}  // namespace

template <class T>
void project(const Sample<T>& x, const double* directions, std::size_t n_dir, double* out) {
  validate_sample(x, "x", "weights_x", false);
  check_directions(directions, n_dir, x.dim);
  parallel_for(x.n, kProjectChunk, [&](std::size_t b, std::size_t e) {
    NFHEP_PROJECT_DISPATCH(project_rows_f64, x.data, x.dim, b, e, directions, n_dir, out, x.n);
  });
}

bool cuda_compiled() {
#if defined(NFHEP_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

template <class T>
void sliced_wasserstein(const Sample<T>& x, const Sample<T>& y, const double* directions, std::size_t n_dir,
                        double* out, bool check_finite, Device device, std::size_t block_bytes) {
  // On the CPU the samples are not scanned for NaN/inf up front: a non-finite value makes the projections
  // non-finite, which their key ranges show; only then are the samples scanned, to name the value (or,
  // if they are finite and a projection overflowed, to go on as with check_finite=false).
  const bool scan_on_demand = check_finite && device == Device::cpu;
  detail::check_pair(x, y, check_finite && !scan_on_demand);
  check_directions(directions, n_dir, x.dim);
  if (block_bytes == 0) block_bytes = std::size_t{512} << 20;
  const std::size_t per_dir = (x.n + y.n) * sizeof(std::uint64_t);
  // Directions per block: as many as fit in block_bytes (every block re-reads and re-transposes the
  // samples in the projection, so fewer blocks are faster), spread evenly over the blocks (56 = 28 + 28,
  // not 32 + 24), so that the buffers are no larger than needed.
  std::size_t block = std::max<std::size_t>(1, std::min<std::size_t>(n_dir, block_bytes / per_dir));
  block = (n_dir + (n_dir + block - 1) / block - 1) / ((n_dir + block - 1) / block);
  if (device == Device::cuda) {
#if defined(NFHEP_WITH_CUDA)
    std::vector<double> xd, yd;
    const double *xp, *yp;
    if constexpr (std::is_same<T, float>::value) {  // the CUDA path projects doubles: widen on the host
      xd.assign(x.data, x.data + x.n * x.dim);
      yd.assign(y.data, y.data + y.n * y.dim);
      xp = xd.data();
      yp = yd.data();
    } else {
      xp = x.data;
      yp = y.data;
    }
    std::vector<std::uint64_t> kx(block * x.n), ky(block * y.n);
    std::vector<double> swx(x.weights ? block * x.n : 0), swy(y.weights ? block * y.n : 0);
    for (std::size_t j0 = 0; j0 < n_dir; j0 += block) {
      const std::size_t nb = std::min(block, n_dir - j0);
      detail::cuda_project_sort(xp, x.n, yp, y.n, x.dim, x.weights, y.weights, directions + j0 * x.dim, nb,
                                kx.data(), x.weights ? swx.data() : nullptr, ky.data(),
                                y.weights ? swy.data() : nullptr);
      parallel_for(nb, 1, [&](std::size_t b, std::size_t e) {
        for (std::size_t j = b; j < e; ++j)
          out[j0 + j] = detail::w1_sorted_keys(kx.data() + j * x.n, x.weights ? swx.data() + j * x.n : nullptr,
                                               x.n, ky.data() + j * y.n,
                                               y.weights ? swy.data() + j * y.n : nullptr, y.n);
      });
    }
    return;
#else
    throw std::invalid_argument(
        "argument 'device': 'cuda' was requested but this nfhep core was built without CUDA; rebuild with "
        "-DNFHEP_CUDA=ON (e.g. pip install . -Ccmake.define.NFHEP_CUDA=ON) on a machine with nvcc");
#endif
  }
  using K = std::uint64_t;
  // Uninitialised (the projection writes every key before it is read): no memset of up to 512 MiB.
  const detail::ScratchPages<K> proj(block * x.n + block * y.n);
  K* const pxd = proj.data();
  K* const pyd = pxd + block * x.n;
  // Projections far larger than the caches are written with non-temporal stores (no read-for-ownership
  // of every line; they are read back only by the W1 that follows, from memory anyway).
  const bool stream = (block * x.n + block * y.n) * sizeof(K) >= (std::size_t{64} << 20);
  std::vector<K> rx(2 * block), ry(2 * block);  // key range of each projection in the block
  detail::WorkPool<K> pool;
  for (std::size_t j0 = 0; j0 < n_dir; j0 += block) {
    const std::size_t nb = std::min(block, n_dir - j0);
    const double* dirs = directions + j0 * x.dim;
    project_keys(x, dirs, nb, pxd, x.n, rx.data(), stream);
    project_keys(y, dirs, nb, pyd, y.n, ry.data(), stream);
    if (scan_on_demand) {
      bool finite = true;
      for (std::size_t j = 0; j < 2 * nb; ++j)
        finite = finite && std::isfinite(detail::key_value(rx[j])) && std::isfinite(detail::key_value(ry[j]));
      if (!finite) {  // throws, naming the value, if a sample holds NaN/inf
        validate_sample(x, "x", "weights_x", true);
        validate_sample(y, "y", "weights_y", true);
      }
    }
    parallel_for(nb, 1, [&](std::size_t b, std::size_t e) {
      auto wk = pool.take();
      for (std::size_t j = b; j < e; ++j) {
        if (!x.weights && !y.weights) {
          const K lo = std::min(rx[2 * j], ry[2 * j]), hi = std::max(rx[2 * j + 1], ry[2 * j + 1]);
          out[j0 + j] = detail::w1_bucketed<K>(pxd + j * x.n, x.n, pyd + j * y.n, y.n, *wk, &lo, &hi);
          continue;
        }
        const auto sa = detail::sort_keys_with_weights<K>(pxd + j * x.n, x.n, x.weights, wk->sx, wk->wx,
                                                          wk->swx);
        const auto sb = detail::sort_keys_with_weights<K>(pyd + j * y.n, y.n, y.weights, wk->sy, wk->wy,
                                                          wk->swy);
        out[j0 + j] = detail::w1_merge<K>(sa, sb);
      }
      pool.give(std::move(wk));
    });
  }
}

template <class T>
void hpdi(const Sample<T>& x, const double* probs, std::size_t n_probs, double* lo, double* hi,
          bool check_finite) {
  validate_sample(x, "x", "weights_x", check_finite);
  for (std::size_t p = 0; p < n_probs; ++p) {
    if (!(probs[p] > 0.0 && probs[p] <= 1.0))
      throw std::invalid_argument("argument 'probs' must lie in (0, 1], got " + std::to_string(probs[p]));
    if (!x.weights && static_cast<std::size_t>(std::floor(probs[p] * static_cast<double>(x.n))) < 1)
      throw std::invalid_argument("argument 'probs': " + std::to_string(probs[p]) + " of " +
                                  std::to_string(x.n) + " events is less than one event");
  }
  using K = detail::KeyOf<T>;
  detail::WorkPool<K> pool;
  parallel_for(x.dim, 1, [&](std::size_t b, std::size_t e) {
    auto wk = pool.take();
    for (std::size_t d = b; d < e; ++d) {
      const auto s = detail::sort_column<T, K>(x, d, wk->kx, wk->sx, wk->wx, wk->swx);
      const std::size_t n = s.n;
      for (std::size_t p = 0; p < n_probs; ++p) {
        std::size_t best_i = 0, best_j = n - 1;
        double best = std::numeric_limits<double>::infinity();
        if (!s.w) {
          const std::size_t k = static_cast<std::size_t>(std::floor(probs[p] * static_cast<double>(n)));
          for (std::size_t i = 0; i + k <= n; ++i) {
            const double width = detail::key_value(s.keys[i + k - 1]) - detail::key_value(s.keys[i]);
            if (width < best) {
              best = width;
              best_i = i;
              best_j = i + k - 1;
            }
          }
        } else {
          // Two pointers: for each start i the smallest end j with weight(i..j) >= p * total.
          const double need = probs[p] * detail::total_weight(s.w, n);
          double acc = 0.0;
          std::size_t j = 0;  // window [i, j)
          for (std::size_t i = 0; i < n; ++i) {
            while (j < n && acc < need) acc += s.w[j++];
            if (acc < need) break;
            const double width = detail::key_value(s.keys[j - 1]) - detail::key_value(s.keys[i]);
            if (width < best) {
              best = width;
              best_i = i;
              best_j = j - 1;
            }
            acc -= s.w[i];
          }
        }
        lo[p * x.dim + d] = detail::key_value(s.keys[best_i]);
        hi[p * x.dim + d] = detail::key_value(s.keys[best_j]);
      }
    }
    pool.give(std::move(wk));
  });
}

#define NFHEP_METRICS_INSTANTIATE(T)                                                                        \
  template NFHEP_API void validate_sample<T>(const Sample<T>&, const char*, const char*, bool);              \
  template NFHEP_API void ks_statistics<T>(const Sample<T>&, const Sample<T>&, double*, double*, bool, Device); \
  template NFHEP_API void wasserstein_per_dim<T>(const Sample<T>&, const Sample<T>&, double*, bool);         \
  template NFHEP_API void project<T>(const Sample<T>&, const double*, std::size_t, double*);                 \
  template NFHEP_API void sliced_wasserstein<T>(const Sample<T>&, const Sample<T>&, const double*,           \
                                                std::size_t, double*, bool, Device, std::size_t);           \
  template NFHEP_API void hpdi<T>(const Sample<T>&, const double*, std::size_t, double*, double*, bool);
NFHEP_METRICS_INSTANTIATE(float)
NFHEP_METRICS_INSTANTIATE(double)
#undef NFHEP_METRICS_INSTANTIATE

}  // namespace metrics
}  // namespace nfhep
