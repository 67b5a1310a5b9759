// The inference engine's evaluation: log p(x | c) and sampling of a loaded flow (docs/model-format.md §4).
//
// Work is done per chunk of events with one workspace: preprocessing, then every layer on the whole chunk
// (dense layers as BLAS GEMMs over the chunk, the element-wise transformers through the bijector kernels'
// per-ISA batch loops, i.e. the same nfhep/math/ formulas as rqs_forward / affine_forward), then the base
// density. MADE layers skip their masked-out weight blocks (units sorted by degree, see flow_model.hpp);
// autoregressive sampling computes, at step i, only the hidden units of degree i and the P outputs of
// feature i, so inverting a MADE layer costs about one masked forward pass instead of D full passes.
//
// Determinism: log_prob splits a batch into chunks of kChunk events; sample() processes the stream in
// chunks of kSampleChunk events aligned on the global event index (a partly requested chunk is computed
// whole and only the requested rows are copied out), so every event always goes through the same GEMM
// shapes at the same row position: samples are bitwise identical for any thread count and any split of
// the stream into calls.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "bijectors_isa.hpp"
#include "engine_isa.hpp"
#include "flow_model.hpp"
#include "nfhep/detail/philox.hpp"
#include "nfhep/parallel.hpp"

namespace nfhep {
namespace detail {
namespace {

constexpr std::size_t kChunk = 256;        // log_prob: events per chunk (128..1024 measured within noise)
constexpr std::size_t kSampleChunk = 64;   // sample: events per chunk, aligned on the global index
constexpr double kLog2Pi = 1.8378770664093454835606594728112;

// NFHEP_DISPATCH returns from the calling function; this runs the dispatched call as a statement.
#define NFHEP_DISPATCH_VOID(fn, ...) [&] { NFHEP_DISPATCH(fn, __VA_ARGS__); }()

template <class T>
const Model<T>& model_of(const FlowImpl& f);
template <>
const Model<float>& model_of<float>(const FlowImpl& f) {
  return f.mf;
}
template <>
const Model<double>& model_of<double>(const FlowImpl& f) {
  return f.md;
}

template <class T>
std::vector<T>& buffer_of(WorkspaceImpl& ws);
template <>
std::vector<float>& buffer_of<float>(WorkspaceImpl& ws) {
  return ws.f;
}
template <>
std::vector<double>& buffer_of<double>(WorkspaceImpl& ws) {
  return ws.d;
}

template <class T>
std::vector<T*>& hid_of(WorkspaceImpl& ws);
template <>
std::vector<float*>& hid_of<float>(WorkspaceImpl& ws) {
  return ws.hid_f;
}
template <>
std::vector<double*>& hid_of<double>(WorkspaceImpl& ws) {
  return ws.hid_d;
}
template <class T>
Scratch<T>& scratch_of(WorkspaceImpl& ws);
template <>
Scratch<float>& scratch_of<float>(WorkspaceImpl& ws) {
  return ws.sf;
}
template <>
Scratch<double>& scratch_of<double>(WorkspaceImpl& ws) {
  return ws.sd;
}

template <class T>
std::size_t hidden_total(const Model<T>& m) {
  std::size_t s = 0;
  for (const auto& layer : m.layers)
    if (layer.kind == LayerKind::autoregressive || layer.kind == LayerKind::coupling) {
      std::size_t t = 0;
      for (std::size_t l = 0; l + 1 < layer.net.layers.size(); ++l) t += layer.net.layers[l].out;
      s = std::max(s, t);
    }
  return s;
}

template <class T>
std::size_t scratch_size(const Model<T>& top, std::size_t R) {
  const Model<T>& m = shape_model(top);
  const std::size_t D = m.D, C = m.C;
  std::size_t n = 0;
  n += 3 * R * D;                    // h, tmp, lad
  n += R * (C + D);                  // in
  n += R * C;                        // ctx
  n += R * static_cast<std::size_t>(m.max_params);
  n += 2 * R * D;                    // x2, y2
  n += 3 * R;                        // col
  n += (m.transformer == Transformer::rqs ? rqs_work_size(m.K, false) : 0) + 16;
  n += R * hidden_total(m);
  if (!top.members.empty()) n += R * D + R * C;  // u_out, ctx_all
  n += D;                                        // xrow
  // doubles and bytes, in units of T (rounded up)
  const std::size_t dbl = (4 * R + R * D) * sizeof(double) + R;
  n += (dbl + sizeof(T) - 1) / sizeof(T) + 16;
  return n;
}

// The workspace's scratch arrays (allocated and carved on first use, then reused: no allocation per call,
// which matters for one-event calls from RDataFrame). Returns a copy the caller may modify (swap h/tmp).
template <class T>
Scratch<T> carve(const Model<T>& top, WorkspaceImpl& ws) {
  if (ws.carved) return scratch_of<T>(ws);
  const Model<T>& m = shape_model(top);
  const std::size_t R = ws.rows, D = m.D, C = m.C;
  std::vector<T>& buf = buffer_of<T>(ws);
  buf.assign(scratch_size(top, R), T(0));
  T* p = buf.data();
  Scratch<T> s;
  auto take = [&](std::size_t k) {
    T* q = p;
    p += k;
    return q;
  };
  s.h = take(R * D);
  s.tmp = take(R * D);
  s.lad = take(R * D);
  s.in = take(R * (C + D));
  s.ctx = take(R * C);
  s.prm = take(R * m.max_params);
  s.x2 = take(R * D);
  s.y2 = take(R * D);
  s.col = take(3 * R);
  s.work = take((m.transformer == Transformer::rqs ? rqs_work_size(m.K, false) : 0) + 16);
  // one set of hidden buffers, shared by every layer (every conditioner has the same hidden widths)
  std::vector<T*>& hid = hid_of<T>(ws);
  hid.clear();
  const Layer<T>* net_layer = nullptr;
  for (const auto& layer : m.layers)
    if (layer.kind == LayerKind::autoregressive || layer.kind == LayerKind::coupling) net_layer = &layer;
  if (net_layer)
    for (std::size_t l = 0; l + 1 < net_layer->net.layers.size(); ++l) hid.push_back(take(R * net_layer->net.layers[l].out));
  s.hid = hid.data();
  if (!top.members.empty()) {
    s.u_out = take(R * D);
    s.ctx_all = take(R * C);
  }
  s.xrow = take(D);
  std::size_t addr = reinterpret_cast<std::size_t>(p);
  addr = (addr + 63) & ~static_cast<std::size_t>(63);
  double* dp = reinterpret_cast<double*>(addr);
  s.ld = dp;
  s.pre = dp + R;
  s.z = dp + 2 * R;
  s.acc = dp + 2 * R + R * D;
  s.bad = reinterpret_cast<unsigned char*>(dp + 4 * R + R * D);
  scratch_of<T>(ws) = s;
  ws.carved = true;
  return s;
}

// -- element-wise pieces ---------------------------------------------------------------------------------
template <class T>
inline T activate(Activation a, T x) {
  switch (a) {
    case Activation::relu:
      return x > T(0) ? x : (x == x ? T(0) : x);
    case Activation::tanh:
      return std::tanh(x);
    case Activation::elu:
      return x > T(0) ? x : std::expm1(x);
    case Activation::gelu:
      return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
    case Activation::silu:
      return x / (T(1) + std::exp(-x));
    case Activation::leaky_relu:
      return x > T(0) ? x : T(0.01) * x;
    case Activation::sigmoid:
      return T(1) / (T(1) + std::exp(-x));
  }
  return x;
}

// blk[r, 0:o_end-o_begin] = act(b + A[r, 0:k] W[o_begin:o_end, 0:k]^T), where blk points at the first
// output column of the block and has row stride ldc (the bias is written first, the GEMM accumulates).
template <class T>
void dense_part(const Dense<T>& L, std::size_t R, const T* A, int lda, int o_begin, int o_end, int k, T* blk,
                int ldc, bool activation, Activation a) {
  const int n = o_end - o_begin;
  if (n <= 0 || R == 0) return;
  const T* b = L.b.data() + o_begin;
  NFHEP_DISPATCH_VOID(engine_fill_rows, b, R, blk, ldc, n);
  if (k > 0 && R == 1)
    gemv_ab(n, k, L.W.data() + static_cast<std::size_t>(o_begin) * L.in, L.in, A, blk);
  else if (k > 0)
    gemm_abt(static_cast<int>(R), n, k, A, lda, L.W.data() + static_cast<std::size_t>(o_begin) * L.in, L.in, blk,
             ldc);
  if (!activation) return;
  if (a == Activation::relu) {
    NFHEP_DISPATCH_VOID(engine_relu, R, blk, ldc, n);
    return;
  }
  for (std::size_t r = 0; r < R; ++r) {
    T* row = blk + r * static_cast<std::size_t>(ldc);
    for (int o = 0; o < n; ++o) row[o] = activate(a, row[o]);
  }
}

template <class T>
void dense_forward(const Dense<T>& L, std::size_t R, const T* A, int lda, T* out, bool activation, Activation a) {
  for (const auto& blk : L.blocks)
    dense_part(L, R, A, lda, blk.o_begin, blk.o_end, blk.k_end, out + blk.o_begin, L.out, activation, a);
}

// Conditioner pass over R rows: input A (lda) -> params (R x out of the last layer).
template <class T>
void net_forward(const Net<T>& net, std::size_t R, const T* A, int lda, Scratch<T>& s, T* prm) {
  if (net.constant) {
    const std::size_t P = net.const_out.size();
    for (std::size_t r = 0; r < R; ++r) std::copy(net.const_out.begin(), net.const_out.end(), prm + r * P);
    return;
  }
  const T* a = A;
  int la = lda;
  const std::size_t nl = net.layers.size();
  for (std::size_t l = 0; l + 1 < nl; ++l) {
    dense_forward(net.layers[l], R, a, la, s.hid[l], true, net.act);
    a = s.hid[l];
    la = net.layers[l].out;
  }
  dense_forward(net.layers[nl - 1], R, a, la, prm, false, net.act);
}

// Element-wise transformer over n elements: mode 0 forward (data -> latent), 1 inverse. prm is AoS
// (P per element); affine parameters are soft-clamped in place first.
template <class T>
void transform(const Model<T>& m, int mode, const T* in, T* prm, std::size_t n, T* out, T* lad, T* work) {
  if (n == 0) return;
  if (m.transformer == Transformer::affine) {
    NFHEP_DISPATCH_VOID(engine_soft_clamp, prm, n, m.log_scale_clamp);
    NFHEP_DISPATCH(affine_run, mode, in, prm, 0, n, out, lad);
  } else {
    NFHEP_DISPATCH(rqs_run, mode, in, prm, 0, n, m.K, m.rqs, out, lad, work);
  }
}

// -- preprocessing -----------------------------------------------------------------------------------------
// Version-2 helpers (docs/model-format.md section 5), in the model's precision as nfhep.preprocessing.

// torch.remainder: the result has the sign of the divisor.
template <class T>
inline T remainder_t(T a, T w) {
  T r = std::fmod(a, w);
  if (r != T(0) && ((w < T(0)) != (r < T(0)))) r += w;
  return r;
}

template <class T>
inline T wrap_period(T x, T a, T b) {
  T y = a + remainder_t(x, b - a);
  return y >= b ? a : y;
}

template <class T>
inline bool matches(T x, T v) {
  return std::abs(x - v) <= static_cast<T>(kMatchTol) * std::max(T(1), std::abs(v));
}

// Index of the nearest allowed value (ties to the upper one, as torch.searchsorted + the comparison).
template <class T>
inline std::size_t nearest(const std::vector<T>& vals, T x) {
  std::size_t idx = static_cast<std::size_t>(std::lower_bound(vals.begin(), vals.end(), x) - vals.begin());
  if (idx >= vals.size()) idx = vals.size() - 1;
  const std::size_t lo = idx > 0 ? idx - 1 : 0;
  return std::abs(x - vals[lo]) < std::abs(vals[idx] - x) ? lo : idx;
}

// The log/bound map of feature j (PreKind): v -> u; false outside its support.
template <class T>
inline bool continuum(const Model<T>& m, std::size_t j, T v, T& u, double& ld) {
  switch (m.pre_kind[j]) {
    case PreKind::identity:
      u = v;
      return true;
    case PreKind::log:
      if (!(v > T(0))) return false;
      u = std::log(v);
      ld -= u;
      return true;
    case PreKind::two_sided: {
      if (!(v > m.lo_t[j] && v < m.hi_t[j])) return false;
      const T a = std::log(v - m.lo_t[j]);
      const T b = std::log(m.hi_t[j] - v);
      u = a - b;
      ld += static_cast<double>(m.log_width[j]) - a - b;
      return true;
    }
    case PreKind::lower:
      if (!(v > m.lo_t[j])) return false;
      u = std::log(v - m.lo_t[j]);
      ld -= u;
      return true;
    case PreKind::upper:
      if (!(v < m.hi_t[j])) return false;
      u = std::log(m.hi_t[j] - v);
      ld -= u;
      return true;
  }
  return false;
}

// One feature x -> v (before standardisation); false outside the support (v = 0, ld unchanged then).
// ref: the raw value of the feature a relative angle is relative to (0 otherwise).
template <class T>
inline bool to_v(const Model<T>& m, std::size_t j, T x, T ref, T& v, double& ld) {
  switch (m.special[j]) {
    case Special::none:
      break;
    case Special::periodic:
      if (m.relative_to[j] >= 0) x = x - ref;
      x = wrap_period((x - m.shift[j]) - m.period_a[j], m.period_a[j], m.period_b[j]);
      break;
    case Special::discrete: {
      const std::size_t k = nearest(m.values[j], x);
      if (!matches(x, m.values[j][k])) return false;
      v = static_cast<T>(k) + T(0.5);
      return true;
    }
    case Special::spike:
      if (matches(x, m.spike[j])) {
        v = m.cell0[j] + (m.cell1[j] - m.cell0[j]) * T(0.5);
        ld += m.log_cell[j];
        return true;
      }
      break;
  }
  double l = 0;
  if (!continuum(m, j, x, v, l)) return false;
  ld += l;
  return true;
}

// The quantile map (monotone piecewise linear, linear beyond the end knots) and its inverse.
template <class T>
inline T quantile_map(const Model<T>& m, std::size_t j, T v, double& ld) {
  const std::vector<T>& a = m.q_v[j];
  const std::size_t K = a.size();
  std::size_t i = static_cast<std::size_t>(std::upper_bound(a.begin(), a.end(), v) - a.begin());
  i = i == 0 ? 0 : std::min(i - 1, K - 2);
  const T sl = m.q_s[j][i];
  ld += static_cast<double>(std::log(sl));
  return m.q_u[j][i] + sl * (v - a[i]);
}

template <class T>
inline T quantile_inv(const Model<T>& m, std::size_t j, T w, double& ld) {
  const std::vector<T>& b = m.q_u[j];
  const std::size_t K = b.size();
  std::size_t i = static_cast<std::size_t>(std::upper_bound(b.begin(), b.end(), w) - b.begin());
  i = i == 0 ? 0 : std::min(i - 1, K - 2);
  const T sl = m.q_s[j][i];
  ld += static_cast<double>(std::log(sl));
  return m.q_v[j][i] + (w - b[i]) / sl;
}

// The raw reference value (in T) of feature j of a row when j is a relative angle, else 0.
template <class T, class In>
inline T ref_of(const Model<T>& m, const In* row, std::size_t j) {
  const int r = m.relative_to[j];
  return r >= 0 ? static_cast<T>(row[r]) : T(0);
}

template <class T, class In>
void preprocess(const Model<T>& m, const In* x, std::size_t R, Scratch<T>& s) {
  const std::size_t D = m.D;
  for (std::size_t r = 0; r < R; ++r) {
    unsigned char bad = 0;
    double ld = 0;
    for (std::size_t j = 0; j < D; ++j) {
      const T v = static_cast<T>(x[r * D + j]);
      T u = v;
      if (std::isnan(v)) {
        bad = 2;
        u = T(0);
      } else if (std::isinf(v)) {  // density 0 at infinity
        bad = bad ? bad : 1;
        u = T(0);
      } else if (!to_v(m, j, v, ref_of(m, x + r * D, j), u, ld)) {
        bad = bad ? bad : 1;
        u = T(0);
      } else if (!m.q_v[j].empty()) {
        u = quantile_map(m, j, u, ld);
      }
      s.h[r * D + j] = (u - m.mean[j]) / m.std_[j];
    }
    s.pre[r] = ld - static_cast<double>(m.sum_log_std);
    s.bad[r] = bad;
  }
}

template <class T, class In>
void standardise_context(const Model<T>& m, const In* c, std::size_t R, std::size_t rows, Scratch<T>& s) {
  const std::size_t C = m.C;
  for (std::size_t r = 0; r < R; ++r) {
    const In* row = c + (rows == 1 ? 0 : r) * C;
    for (std::size_t k = 0; k < C; ++k) s.ctx[r * C + k] = (static_cast<T>(row[k]) - m.cmean[k]) / m.cstd[k];
  }
}

// -- the layers, data -> latent ---------------------------------------------------------------------------
template <class T>
void forward_layers(const Model<T>& m, std::size_t R, Scratch<T>& s) {
  const std::size_t D = m.D, C = m.C;
  for (std::size_t r = 0; r < R; ++r) s.ld[r] = 0;
  for (const Layer<T>& layer : m.layers) {
    switch (layer.kind) {
      case LayerKind::permutation:
        for (std::size_t r = 0; r < R; ++r)
          for (std::size_t j = 0; j < D; ++j) s.tmp[r * D + j] = s.h[r * D + layer.perm[j]];
        std::swap(s.h, s.tmp);
        break;
      case LayerKind::actnorm:
        for (std::size_t r = 0; r < R; ++r) {
          for (std::size_t j = 0; j < D; ++j)
            s.h[r * D + j] = s.h[r * D + j] * std::exp(layer.log_scale[j]) + layer.shift[j];
          s.ld[r] += layer.sum_log_scale;
        }
        break;
      case LayerKind::autoregressive: {
        const T* A = s.h;
        int lda = static_cast<int>(D);
        if (C > 0) {
          for (std::size_t r = 0; r < R; ++r) {
            std::copy(s.ctx + r * C, s.ctx + (r + 1) * C, s.in + r * (C + D));
            std::copy(s.h + r * D, s.h + (r + 1) * D, s.in + r * (C + D) + C);
          }
          A = s.in;
          lda = static_cast<int>(C + D);
        }
        net_forward(layer.net, R, A, lda, s, s.prm);
        transform(m, 0, s.h, s.prm, R * D, s.tmp, s.lad, s.work);
        for (std::size_t r = 0; r < R; ++r) {
          double t = 0;
          for (std::size_t j = 0; j < D; ++j) t += s.lad[r * D + j];
          s.ld[r] += t;
        }
        std::swap(s.h, s.tmp);
        break;
      }
      case LayerKind::coupling: {
        const std::size_t sp = m.split, n2 = D - sp, w = sp + C;
        for (std::size_t r = 0; r < R; ++r) {
          std::copy(s.h + r * D, s.h + r * D + sp, s.in + r * w);
          std::copy(s.ctx + r * C, s.ctx + (r + 1) * C, s.in + r * w + sp);
          std::copy(s.h + r * D + sp, s.h + (r + 1) * D, s.x2 + r * n2);
        }
        net_forward(layer.net, R, s.in, static_cast<int>(w), s, s.prm);
        transform(m, 0, s.x2, s.prm, R * n2, s.y2, s.lad, s.work);
        for (std::size_t r = 0; r < R; ++r) {
          double t = 0;
          for (std::size_t j = 0; j < n2; ++j) {
            s.h[r * D + sp + j] = s.y2[r * n2 + j];
            t += s.lad[r * n2 + j];
          }
          s.ld[r] += t;
        }
        break;
      }
    }
  }
}

template <class T>
double base_log_prob(const T* z, std::size_t D) {
  double q = 0;
  for (std::size_t j = 0; j < D; ++j) q += static_cast<double>(z[j]) * static_cast<double>(z[j]);
  return -0.5 * q - 0.5 * static_cast<double>(D) * kLog2Pi;
}

// An ensemble's log p: log (1/M) sum_k p_k(u) + log|du/dx|, a running logsumexp over the members (u kept
// in s.z); `mo` (optional, R x M): each member's log p_k(x).
template <class T, class In>
void ensemble_log_prob(const Model<T>& m, std::size_t R, Scratch<T>& s, In* out, In* mo) {
  const std::size_t D = m.D, M = m.members.size();
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  for (std::size_t i = 0; i < R * D; ++i) s.z[i] = static_cast<double>(s.h[i]);
  double* mx = s.acc;
  double* sm = s.acc + R;
  for (std::size_t r = 0; r < R; ++r) {
    mx[r] = -inf;
    sm[r] = 0;
  }
  for (std::size_t k = 0; k < M; ++k) {
    for (std::size_t i = 0; i < R * D; ++i) s.h[i] = static_cast<T>(s.z[i]);
    forward_layers(m.members[k], R, s);
    for (std::size_t r = 0; r < R; ++r) {
      const double lk = base_log_prob(s.h + r * D, D) + s.ld[r];
      if (mo) mo[r * M + k] = static_cast<In>(s.bad[r] == 2 ? nan : s.bad[r] == 1 ? -inf : lk + s.pre[r]);
      if (std::isnan(lk) || std::isnan(mx[r])) {
        mx[r] = nan;
      } else if (lk > mx[r]) {
        sm[r] = sm[r] * std::exp(mx[r] - lk) + 1.0;  // (exp(-inf) = 0 before the first finite member)
        mx[r] = lk;
      } else if (lk > -inf) {
        sm[r] += std::exp(lk - mx[r]);
      }
    }
  }
  const double log_m = std::log(static_cast<double>(M));
  for (std::size_t r = 0; r < R; ++r) {
    double lp;
    if (s.bad[r] == 2 || std::isnan(mx[r]))
      lp = nan;
    else if (s.bad[r] == 1 || mx[r] == -inf)
      lp = -inf;
    else
      lp = mx[r] + std::log(sm[r]) - log_m + s.pre[r];
    out[r] = static_cast<In>(lp);
  }
}

template <class T, class In>
void log_prob_chunk(const Model<T>& m, WorkspaceImpl& ws, const In* x, std::size_t R, In* out, const In* ctx,
                    In* mo = nullptr) {
  Scratch<T> s = carve(m, ws);
  preprocess(m, x, R, s);
  if (m.C > 0) {
    standardise_context(m, ctx, R, R, s);
    // a NaN or infinite context value: no density is defined there (NaN, as for a NaN feature)
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t k = 0; k < static_cast<std::size_t>(m.C); ++k)
        if (!std::isfinite(s.ctx[r * m.C + k])) s.bad[r] = 2;  // (also: overflow to the model's dtype)
  }
  if (!m.members.empty()) {
    ensemble_log_prob(m, R, s, out, mo);
    return;
  }
  forward_layers(m, R, s);
  const std::size_t D = m.D;
  for (std::size_t r = 0; r < R; ++r) {
    double lp;
    if (s.bad[r] == 2)
      lp = std::numeric_limits<double>::quiet_NaN();
    else if (s.bad[r] == 1)
      lp = -std::numeric_limits<double>::infinity();
    else
      lp = base_log_prob(s.h + r * D, D) + s.ld[r] + s.pre[r];
    out[r] = static_cast<In>(lp);
    if (mo) mo[r] = out[r];
  }
}

// -- sampling: latent -> data ------------------------------------------------------------------------------
template <class T>
void inverse_autoregressive(const Model<T>& m, const Layer<T>& layer, std::size_t R, Scratch<T>& s) {
  const std::size_t D = m.D, C = m.C, P = m.P;
  const Net<T>& net = layer.net;
  const std::size_t nl = net.layers.size();
  const std::size_t w = C + D;
  // in = [context, x]: x starts at 0 and is filled feature by feature.
  for (std::size_t r = 0; r < R; ++r) {
    std::copy(s.ctx + r * C, s.ctx + (r + 1) * C, s.in + r * w);
    std::fill(s.in + r * w + C, s.in + (r + 1) * w, T(0));
  }
  T* cin = s.col;
  T* cout = s.col + R;
  T* clad = s.col + 2 * R;
  for (std::size_t i = 0; i < D; ++i) {
    // hidden units of degree i, from the inputs of degree <= i
    for (std::size_t l = 0; l + 1 < nl; ++l) {
      const Dense<T>& L = net.layers[l];
      const int b = net.deg_begin[l][i], e = net.deg_begin[l][i + 1];
      if (e == b) continue;
      const T* A = l == 0 ? s.in : s.hid[l - 1];
      const int lda = l == 0 ? static_cast<int>(w) : net.layers[l - 1].out;
      dense_part(L, R, A, lda, b, e, net.prefix[l][i], s.hid[l] + b, L.out, true, net.act);
    }
    // the P outputs of feature i, from the last hidden units of degree <= i
    const Dense<T>& O = net.layers[nl - 1];
    const T* A = nl > 1 ? s.hid[nl - 2] : s.in;
    const int lda = nl > 1 ? net.layers[nl - 2].out : static_cast<int>(w);
    dense_part(O, R, A, lda, static_cast<int>(i * P), static_cast<int>((i + 1) * P), net.prefix[nl - 1][i],
               s.prm, static_cast<int>(P), false, net.act);
    for (std::size_t r = 0; r < R; ++r) cin[r] = s.h[r * D + i];
    transform(m, 1, cin, s.prm, R, cout, clad, s.work);
    for (std::size_t r = 0; r < R; ++r) {
      s.in[r * w + C + i] = cout[r];
      s.ld[r] += clad[r];
    }
  }
  for (std::size_t r = 0; r < R; ++r) std::copy(s.in + r * w + C, s.in + (r + 1) * w, s.h + r * D);
}

template <class T>
void inverse_layers(const Model<T>& m, std::size_t R, Scratch<T>& s) {
  const std::size_t D = m.D, C = m.C;
  for (std::size_t r = 0; r < R; ++r) s.ld[r] = 0;
  for (auto it = m.layers.rbegin(); it != m.layers.rend(); ++it) {
    const Layer<T>& layer = *it;
    switch (layer.kind) {
      case LayerKind::permutation:
        for (std::size_t r = 0; r < R; ++r)
          for (std::size_t j = 0; j < D; ++j) s.tmp[r * D + j] = s.h[r * D + layer.inverse_perm[j]];
        std::swap(s.h, s.tmp);
        break;
      case LayerKind::actnorm:
        for (std::size_t r = 0; r < R; ++r) {
          for (std::size_t j = 0; j < D; ++j)
            s.h[r * D + j] = (s.h[r * D + j] - layer.shift[j]) * std::exp(-layer.log_scale[j]);
          s.ld[r] -= layer.sum_log_scale;
        }
        break;
      case LayerKind::autoregressive:
        inverse_autoregressive(m, layer, R, s);
        break;
      case LayerKind::coupling: {
        const std::size_t sp = m.split, n2 = D - sp, w = sp + C;
        for (std::size_t r = 0; r < R; ++r) {
          std::copy(s.h + r * D, s.h + r * D + sp, s.in + r * w);
          std::copy(s.ctx + r * C, s.ctx + (r + 1) * C, s.in + r * w + sp);
          std::copy(s.h + r * D + sp, s.h + (r + 1) * D, s.x2 + r * n2);
        }
        net_forward(layer.net, R, s.in, static_cast<int>(w), s, s.prm);
        transform(m, 1, s.x2, s.prm, R * n2, s.y2, s.lad, s.work);
        for (std::size_t r = 0; r < R; ++r) {
          double t = 0;
          for (std::size_t j = 0; j < n2; ++j) {
            s.h[r * D + sp + j] = s.y2[r * n2 + j];
            t += s.lad[r * n2 + j];
          }
          s.ld[r] += t;
        }
        break;
      }
    }
  }
}

template <class T>
inline T log_sigmoid(T v) {
  // log(1 / (1 + e^-v)), stable for both signs
  return v >= T(0) ? -std::log1p(std::exp(-v)) : v - std::log1p(std::exp(v));
}

// The log/bound map's inverse v -> x of feature j and its log|du/dx| contribution.
template <class T>
inline T continuum_inv(const Model<T>& m, std::size_t j, T v, double& ld) {
  switch (m.pre_kind[j]) {
    case PreKind::identity:
      return v;
    case PreKind::log:
      ld -= v;
      return std::exp(v);
    case PreKind::two_sided: {
      const T sg = T(1) / (T(1) + std::exp(-v));
      const T x = m.lo_t[j] + (m.hi_t[j] - m.lo_t[j]) * sg;
      ld += -static_cast<double>(m.log_width[j]) - log_sigmoid(v) - log_sigmoid(-v);
      return std::min(std::max(x, m.lo_t[j]), m.hi_t[j]);
    }
    case PreKind::lower:
      ld -= v;
      return std::max(m.lo_t[j] + std::exp(v), m.lo_t[j]);
    case PreKind::upper:
      ld -= v;
      return std::min(m.hi_t[j] - std::exp(v), m.hi_t[j]);
  }
  return v;
}

// u (in s.h) -> x (written to out as Out), s.pre = log|det du/dx| at x (for discrete and spike features:
// of the dequantised density at the draw; sample() re-evaluates log p of such models at the events).
template <class T, class Out>
void postprocess(const Model<T>& m, std::size_t R, Scratch<T>& s, std::size_t r0, std::size_t r1, Out* out) {
  const std::size_t D = m.D;
  T* xrow = s.xrow;
  for (std::size_t r = r0; r < r1; ++r) {
    double ld = -static_cast<double>(m.sum_log_std);
    for (std::size_t j = 0; j < D; ++j) {
      T v = s.h[r * D + j] * m.std_[j] + m.mean[j];
      if (!m.q_v[j].empty()) v = quantile_inv(m, j, v, ld);
      T x;
      switch (m.special[j]) {
        case Special::discrete: {
          const T fl = std::isnan(v) ? T(0) : std::floor(v);
          const T kmax = static_cast<T>(m.values[j].size() - 1);
          const T k = std::min(std::max(fl, T(0)), kmax);
          x = m.values[j][static_cast<std::size_t>(k)];
          break;
        }
        case Special::spike:
          if (v < m.spike_split[j]) {
            x = m.spike[j];
            ld += m.log_cell[j];
          } else {
            x = continuum_inv(m, j, v, ld);
          }
          break;
        case Special::periodic: {
          const T y = continuum_inv(m, j, v, ld);
          // a relative angle waits for its reference (below): keep y
          x = m.relative_to[j] >= 0 ? y
                                    : wrap_period((y + m.shift[j]) - m.period_a[j], m.period_a[j], m.period_b[j]);
          break;
        }
        default:
          x = continuum_inv(m, j, v, ld);
      }
      xrow[j] = x;
    }
    if (m.any_relative)
      for (std::size_t j = 0; j < D; ++j) {
        const int rf = m.relative_to[j];
        if (rf < 0) continue;
        const T y = xrow[j] + xrow[static_cast<std::size_t>(rf)];
        xrow[j] = wrap_period((y + m.shift[j]) - m.period_a[j], m.period_a[j], m.period_b[j]);
      }
    for (std::size_t j = 0; j < D; ++j) out[(r - r0) * D + j] = static_cast<Out>(xrow[j]);
    s.pre[r] = ld;
  }
  (void)R;
}

// An ensemble's draw: event g comes from member member_index(seed, g, M); each member inverts its rows
// (gathered to the front of the scratch), and the results are scattered back into s.h / s.ld.
template <class T>
void ensemble_inverse(const Model<T>& m, std::uint64_t seed, std::uint64_t g0, std::size_t R, Scratch<T>& s) {
  const std::size_t D = m.D, C = m.C, M = m.members.size();
  std::uint8_t member[kSampleChunk];
  std::size_t rows[kSampleChunk];
  for (std::size_t r = 0; r < R; ++r) member[r] = static_cast<std::uint8_t>(member_index(seed, g0 + r, M));
  if (C > 0) std::copy(s.ctx, s.ctx + R * C, s.ctx_all);
  double* ld = s.acc;
  for (std::size_t k = 0; k < M; ++k) {
    std::size_t nk = 0;
    for (std::size_t r = 0; r < R; ++r)
      if (member[r] == k) rows[nk++] = r;
    if (nk == 0) continue;
    for (std::size_t i = 0; i < nk; ++i) {
      const std::size_t r = rows[i];
      for (std::size_t j = 0; j < D; ++j) s.h[i * D + j] = static_cast<T>(s.z[r * D + j]);
      for (std::size_t c = 0; c < C; ++c) s.ctx[i * C + c] = s.ctx_all[r * C + c];
    }
    inverse_layers(m.members[k], nk, s);
    for (std::size_t i = 0; i < nk; ++i) {
      const std::size_t r = rows[i];
      std::copy(s.h + i * D, s.h + (i + 1) * D, s.u_out + r * D);
      ld[r] = s.ld[i];
    }
  }
  std::copy(s.u_out, s.u_out + R * D, s.h);
  std::copy(ld, ld + R, s.ld);
}

template <class T, class Out>
void sample_chunk(const Model<T>& m, WorkspaceImpl& ws, std::uint64_t seed, std::uint64_t g0, std::size_t r0,
                  std::size_t r1, Out* out, const Out* ctx, std::size_t ctx_rows, std::uint64_t first_index,
                  Out* logp) {
  const std::size_t R = ws.rows, D = m.D, C = m.C;
  Scratch<T> s = carve(m, ws);
  for (std::size_t r = 0; r < R; ++r) {
    standard_normals(seed, g0 + r, D, s.z + r * D);
    for (std::size_t j = 0; j < D; ++j) s.h[r * D + j] = static_cast<T>(s.z[r * D + j]);
  }
  if (C > 0) {
    if (ctx_rows == 1) {
      standardise_context(m, ctx, R, 1, s);
    } else {
      // rows outside [r0, r1) borrow the first requested row's context (their results are discarded;
      // rows never influence each other)
      for (std::size_t r = 0; r < R; ++r) {
        const std::size_t src = (r >= r0 && r < r1) ? r : r0;
        const Out* row = ctx + static_cast<std::size_t>(g0 + src - first_index) * C;
        for (std::size_t k = 0; k < C; ++k) s.ctx[r * C + k] = (static_cast<T>(row[k]) - m.cmean[k]) / m.cstd[k];
      }
    }
  }
  double base[kSampleChunk];
  for (std::size_t r = 0; r < R; ++r) base[r] = base_log_prob(s.h + r * D, D);
  if (m.members.empty())
    inverse_layers(m, R, s);
  else
    ensemble_inverse(m, seed, g0, R, s);
  postprocess(m, R, s, r0, r1, out);
  if (logp)
    for (std::size_t r = r0; r < r1; ++r) logp[r - r0] = static_cast<Out>(base[r] - s.ld[r] + s.pre[r]);
}

// -- workspaces ---------------------------------------------------------------------------------------------
struct PooledWorkspace {
  const FlowImpl& f;
  WorkspaceImpl* ws;
  PooledWorkspace(const FlowImpl& flow, std::size_t rows) : f(flow), ws(nullptr) {
    {
      std::lock_guard<std::mutex> lk(f.pool_mutex);
      for (std::size_t i = 0; i < f.pool.size(); ++i)
        if (f.pool[i]->rows == rows) {
          ws = f.pool[i];
          f.pool.erase(f.pool.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
    }
    if (!ws) {
      ws = new WorkspaceImpl;
      ws->owner = &f;
      ws->rows = rows;
    }
  }
  ~PooledWorkspace() {
    std::lock_guard<std::mutex> lk(f.pool_mutex);
    if (f.pool.size() < 64)
      f.pool.push_back(ws);
    else
      delete ws;
  }
  PooledWorkspace(const PooledWorkspace&) = delete;
  PooledWorkspace& operator=(const PooledWorkspace&) = delete;
};

void check_workspace(const FlowImpl& f, const std::unique_ptr<WorkspaceImpl>& impl, const char* func) {
  if (!impl) throw std::invalid_argument(std::string("nfhep::Flow::") + func + ": the workspace is empty (moved from?)");
  if (impl->owner != &f)
    throw std::invalid_argument(std::string("nfhep::Flow::") + func +
                                ": the workspace was made by another Flow (use flow.make_workspace())");
}

void require(bool ok, const char* func, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string("nfhep::Flow::") + func + ": " + what);
}

template <class T, class In>
void log_prob_serial(const FlowImpl& f, WorkspaceImpl& ws, const In* x, std::size_t n, In* out, const In* ctx) {
  const Model<T>& m = model_of<T>(f);
  for (std::size_t b = 0; b < n; b += ws.rows) {
    const std::size_t R = std::min(ws.rows, n - b);
    log_prob_chunk(m, ws, x + b * m.D, R, out + b, ctx ? ctx + b * m.C : nullptr);
  }
}

template <class T, class In>
void log_prob_parallel(const FlowImpl& f, const In* x, std::size_t n, In* out, const In* ctx, In* mo = nullptr) {
  const Model<T>& m = model_of<T>(f);
  const std::size_t M = std::max<std::size_t>(1, m.members.size());
  parallel_for(n, kChunk, [&](std::size_t b, std::size_t e) {
    PooledWorkspace pw(f, kChunk);
    log_prob_chunk(m, *pw.ws, x + b * m.D, e - b, out + b, ctx ? ctx + b * m.C : nullptr, mo ? mo + b * M : nullptr);
  });
}

template <class T, class Out>
void sample_parallel(const FlowImpl& f, std::size_t n, std::uint64_t seed, std::uint64_t first, Out* out,
                     const Out* ctx, std::size_t ctx_rows, Out* logp) {
  const Model<T>& m = model_of<T>(f);
  if (n == 0) return;
  const std::uint64_t last = first + (n - 1);
  const std::uint64_t c0 = first / kSampleChunk, c1 = last / kSampleChunk;
  const std::size_t nchunks = static_cast<std::size_t>(c1 - c0 + 1);
  parallel_for(nchunks, 1, [&](std::size_t b, std::size_t e) {
    PooledWorkspace pw(f, kSampleChunk);
    for (std::size_t c = b; c < e; ++c) {
      const std::uint64_t g0 = (c0 + c) * kSampleChunk;
      const std::uint64_t lo = std::max(g0, first), hi = std::min(g0 + kSampleChunk - 1, last);
      const std::size_t r0 = static_cast<std::size_t>(lo - g0), r1 = static_cast<std::size_t>(hi - g0 + 1);
      const std::size_t o = static_cast<std::size_t>(lo - first);
      sample_chunk(m, *pw.ws, seed, g0, r0, r1, out + o * m.D, ctx, ctx_rows, first, logp ? logp + o : nullptr);
    }
  });
}

// The same support test as preprocess() (in the model's precision), without the evaluation.
template <class T, class In>
void in_support_t(const Model<T>& m, const In* x, std::size_t n, std::uint8_t* out) {
  const std::size_t D = m.D;
  for (std::size_t r = 0; r < n; ++r) {
    bool ok = true;
    for (std::size_t j = 0; j < D && ok; ++j) {
      const T v = static_cast<T>(x[r * D + j]);
      if (!std::isfinite(v)) {
        ok = false;
        continue;
      }
      T u;
      double ld = 0;
      ok = to_v(m, j, v, ref_of(m, x + r * D, j), u, ld);
    }
    out[r] = ok ? 1 : 0;
  }
}

template <class In>
void in_support_impl(const FlowImpl& f, const In* x, std::size_t n, std::uint8_t* out) {
  if (f.f32)
    in_support_t(f.mf, x, n, out);
  else
    in_support_t(f.md, x, n, out);
}

}  // namespace

FlowImpl::~FlowImpl() {
  for (WorkspaceImpl* w : pool) delete w;
}

}  // namespace detail

// ===========================================================================================================
// Public API
// ===========================================================================================================
Workspace::Workspace() = default;
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

Flow::Flow(std::shared_ptr<const detail::FlowImpl> impl) : impl_(std::move(impl)) {}

Flow Flow::from_bytes(const void* data, std::size_t size, const std::string& name) {
  if (data == nullptr && size > 0) throw std::invalid_argument("nfhep::Flow::from_bytes: data is null");
  return Flow(detail::load_flow(static_cast<const unsigned char*>(data), size, name));
}

std::size_t Flow::num_features() const { return impl_->features.size(); }
std::size_t Flow::num_context() const { return impl_->context_features.size(); }
const std::vector<std::string>& Flow::features() const { return impl_->features; }
const std::vector<std::string>& Flow::context_features() const { return impl_->context_features; }
bool Flow::is_float32() const { return impl_->f32; }
const std::string& Flow::family() const { return impl_->family; }
std::size_t Flow::num_members() const {
  return std::max<std::size_t>(1, impl_->f32 ? impl_->mf.members.size() : impl_->md.members.size());
}
const std::string& Flow::path() const { return impl_->path; }
const std::string& Flow::checksum() const { return impl_->checksum; }
const std::string& Flow::metadata_json() const { return impl_->metadata_json; }
const std::vector<double>& Flow::lower_bounds() const { return impl_->lower; }
const std::vector<double>& Flow::upper_bounds() const { return impl_->upper; }

Workspace Flow::make_workspace(std::size_t max_batch) const {
  detail::require(max_batch >= 1 && max_batch <= (std::size_t{1} << 20), "make_workspace",
                  "max_batch must be in [1, 2^20], got " + std::to_string(max_batch));
  Workspace ws;
  ws.impl_ = std::make_unique<detail::WorkspaceImpl>();
  ws.impl_->owner = impl_.get();
  ws.impl_->rows = max_batch;
  return ws;
}

namespace {
template <class In>
void check_lp_args(const detail::FlowImpl& f, const In* x, std::size_t n, const In* out, const In* ctx) {
  detail::require(n == 0 || x != nullptr, "log_prob", "x is null");
  detail::require(n == 0 || out != nullptr, "log_prob", "out is null");
  if (f.context_features.empty())
    detail::require(ctx == nullptr, "log_prob", "context given but the model has no context features");
  else
    detail::require(n == 0 || ctx != nullptr, "log_prob",
                    "context is required: the model has " + std::to_string(f.context_features.size()) +
                        " context features");
}
}  // namespace

#define NFHEP_FLOW_LP(In)                                                                                      \
  void Flow::log_prob(const In* x, std::size_t n, In* out, const In* context) const {                        \
    check_lp_args(*impl_, x, n, out, context);                                                                \
    if (impl_->f32)                                                                                           \
      detail::log_prob_parallel<float>(*impl_, x, n, out, context);                                          \
    else                                                                                                      \
      detail::log_prob_parallel<double>(*impl_, x, n, out, context);                                         \
  }                                                                                                           \
  void Flow::log_prob(Workspace& ws, const In* x, std::size_t n, In* out, const In* context) const {         \
    detail::check_workspace(*impl_, ws.impl_, "log_prob");                                              \
    check_lp_args(*impl_, x, n, out, context);                                                                \
    if (impl_->f32)                                                                                           \
      detail::log_prob_serial<float>(*impl_, *ws.impl_, x, n, out, context);                                 \
    else                                                                                                      \
      detail::log_prob_serial<double>(*impl_, *ws.impl_, x, n, out, context);                                \
  }                                                                                                           \
  void Flow::log_prob_members(const In* x, std::size_t n, In* out, const In* context, In* logp) const {     \
    check_lp_args(*impl_, x, n, out, context);                                                                \
    std::vector<In> own;                                                                                      \
    if (!logp) {                                                                                              \
      own.resize(n);                                                                                          \
      logp = own.data();                                                                                      \
    }                                                                                                         \
    if (impl_->f32)                                                                                           \
      detail::log_prob_parallel<float>(*impl_, x, n, logp, context, out);                                    \
    else                                                                                                      \
      detail::log_prob_parallel<double>(*impl_, x, n, logp, context, out);                                   \
  }                                                                                                           \
  void Flow::in_support(const In* x, std::size_t n, std::uint8_t* out) const {                               \
    detail::require(n == 0 || (x != nullptr && out != nullptr), "in_support", "x or out is null");           \
    detail::in_support_impl(*impl_, x, n, out);                                                              \
  }                                                                                                           \
  void Flow::sample(std::size_t n, std::uint64_t seed, std::uint64_t first_index, In* out, const In* context, \
                    std::size_t context_rows, In* logp) const {                                               \
    detail::require(n == 0 || out != nullptr, "sample", "out is null");                                      \
    detail::require(first_index <= std::numeric_limits<std::uint64_t>::max() - n, "sample",                  \
                    "first_index + n overflows the event index");                                            \
    const std::size_t C = impl_->context_features.size();                                                    \
    if (C == 0) {                                                                                             \
      detail::require(context == nullptr, "sample", "context given but the model has no context features");  \
    } else {                                                                                                  \
      detail::require(context != nullptr, "sample",                                                           \
                      "context is required: the model has " + std::to_string(C) + " context features");      \
      detail::require(context_rows == 1 || context_rows == n, "sample",                                      \
                      "context_rows must be 1 or n = " + std::to_string(n) + ", got " +                     \
                          std::to_string(context_rows));                                                     \
      for (std::size_t i = 0; i < context_rows * C; ++i)                                                     \
        detail::require(std::isfinite(static_cast<double>(context[i])), "sample",                            \
                        "context row " + std::to_string(i / C) + " has a NaN or infinite value (" +           \
                            impl_->context_features[i % C] + ")");                                            \
    }                                                                                                         \
    if (impl_->f32)                                                                                           \
      detail::sample_parallel<float>(*impl_, n, seed, first_index, out, context, context_rows, logp);        \
    else                                                                                                      \
      detail::sample_parallel<double>(*impl_, n, seed, first_index, out, context, context_rows, logp);       \
    if (logp && n > 0 &&                                                                                    \
        (impl_->f32 ? impl_->mf.dequantized || !impl_->mf.members.empty()                                  \
                    : impl_->md.dequantized || !impl_->md.members.empty())) {                              \
      /* discrete / spike features: log p is the mass-times-density at the returned events; an ensemble:   \
         the mixture's density, not the drawing member's */                                                   \
      std::vector<In> ctx_full;                                                                                 \
      const In* cf = context;                                                                                   \
      if (C > 0 && context_rows == 1) {                                                                         \
        ctx_full.resize(n * C);                                                                                 \
        for (std::size_t r = 0; r < n; ++r)                                                                     \
          for (std::size_t k = 0; k < C; ++k) ctx_full[r * C + k] = context[k];                                 \
        cf = ctx_full.data();                                                                                   \
      }                                                                                                         \
      if (impl_->f32)                                                                                           \
        detail::log_prob_parallel<float>(*impl_, out, n, logp, cf);                                            \
      else                                                                                                      \
        detail::log_prob_parallel<double>(*impl_, out, n, logp, cf);                                           \
    }                                                                                                           \
  }

NFHEP_FLOW_LP(float)
NFHEP_FLOW_LP(double)
#undef NFHEP_FLOW_LP

void Flow::latent(std::size_t n, std::uint64_t seed, std::uint64_t first_index, double* out) const {
  detail::require(n == 0 || out != nullptr, "latent", "out is null");
  const std::size_t D = impl_->features.size();
  for (std::size_t i = 0; i < n; ++i) detail::standard_normals(seed, first_index + i, D, out + i * D);
}

Flow Flow::load(const std::string& path) {
  std::FILE* fh = std::fopen(path.c_str(), "rb");
  if (!fh) throw std::runtime_error("nfhep::Flow::load: cannot open model file '" + path + "'");
  std::vector<unsigned char> bytes;
  unsigned char buf[1 << 16];
  std::size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, fh)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  const bool err = std::ferror(fh) != 0;
  std::fclose(fh);
  if (err) throw std::runtime_error("nfhep::Flow::load: error reading model file '" + path + "'");
  return Flow(detail::load_flow(bytes.data(), bytes.size(), path));
}

}  // namespace nfhep
