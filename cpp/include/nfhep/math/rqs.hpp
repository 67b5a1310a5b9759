// nfhep/math/rqs.hpp: the rational-quadratic spline of Durkan et al. (arXiv:1906.04032), one definition
// for the CPU SIMD loops and the CUDA kernels.
//
// Parameterisation (nflows' `unconstrained_rational_quadratic_spline`, tails='linear'): per element
// P = 3K-1 unnormalised parameters [K width logits | K height logits | K-1 interior derivative logits].
//   widths  W_k = min_w + (1 - min_w K) softmax(w)_k        (softmax with the maximum subtracted)
//   knots   X_0 = -B, X_j = 2B sum_{k<j} W_k - B, X_K = +B   (same for heights -> Y_j)
//   derivs  d_0 = d_K = 1, d_j = min_d + softplus(u_{j-1})   (j = 1..K-1)
// Bin search: b = #{j in 0..K-1 : X_j <= x} - 1 (branch-free; x = +B lies in the last bin, as nflows'
// searchsorted with the last knot + eps). Inside test -B <= x <= B; outside (and NaN) the identity:
// those lanes are replaced by 0 BEFORE any arithmetic and selected back at the end, so nothing computed
// for them can reach the outputs or gradients.
//
// In bin b with theta = (x - X_b)/w, w = X_{b+1} - X_b, h = Y_{b+1} - Y_b, s = h/w, d0 = d_b, d1 = d_{b+1}:
//   y        = Y_b + h [s theta^2 + d0 theta(1-theta)] / Dn,   Dn = s + (d0 + d1 - 2s) theta(1-theta)
//   dy/dx    = s^2 M / Dn^2,   M = d1 theta^2 + 2 s theta(1-theta) + d0 (1-theta)^2
//   inverse  a = h(s - d0) + (y - Y_b)(d0 + d1 - 2s), b = h d0 - (y - Y_b)(d0 + d1 - 2s), c = -s (y - Y_b),
//            theta = 2c / (-b - sqrt(max(b^2 - 4ac, 0))) for b >= 0, (-b + sqrt(...)) / (2a) for b < 0
//            (the same root without cancellation), clamped to [0, 1].
//
// The block functions work on L lanes at once (the CPU instantiates L = 16 for float and double, and the
// compiler vectorises every `for (l < L)` loop; CUDA instantiates L = 1, one element per thread).
// Parameters are given as a structure-of-arrays block: parameter k of lane l at prm[k * L + l].
#pragma once
#include "nfhep/config.hpp"
#include "nfhep/math/special.hpp"

// The lane loops touch distinct per-lane arrays: tell GCC so (no alias versioning of every tiny loop).
// `unroll 1` keeps GCC's early complete unrolling (cunrolli) away from them: a 16/32-trip loop it unrolls
// before the loop vectoriser runs is left to the SLP vectoriser, which turned the softmax maximum into 16
// scalar compare-and-cmov chains per logit (measured: the two softmaxes 14.9 -> 7.1 ns per element, the
// whole forward 34 -> 26 ns per element, float32, AVX-512, one thread).
#if defined(__GNUC__) && !defined(__CUDACC__) && !defined(__clang__)
#define NFHEP_LANES _Pragma("GCC ivdep") _Pragma("GCC unroll 1")
#else
#define NFHEP_LANES
#endif

namespace nfhep::math {

/// Spline configuration in the working precision.
template <class T>
struct RqsConfig {
  int K;      ///< number of bins (>= 2)
  T bound;    ///< B: the spline lives on [-B, B]
  T min_w;    ///< minimum bin width (fraction of 2B)
  T min_h;    ///< minimum bin height (fraction of 2B)
  T min_d;    ///< minimum interior derivative
};

// ---------------------------------------------------------------------------------------------------
// Per-element formulas (scalar; inlined into the lane loops).
// ---------------------------------------------------------------------------------------------------

/// Forward map inside a bin: y and log|dy/dx| at theta.
template <class T>
NFHEP_MATH void rqs_bin_forward(T theta, T yl, T h, T s, T d0, T d1, T& y, T& lad) {
  const T omt = T(1) - theta;
  const T tomt = theta * omt;
  const T num = h * (s * (theta * theta) + d0 * tomt);
  const T den = s + ((d0 + d1) - T(2) * s) * tomt;
  y = yl + num / den;
  const T dnum = (s * s) * ((d1 * (theta * theta) + T(2) * s * tomt) + d0 * (omt * omt));
  lad = math::log(dnum / (den * den));  // log(s^2 M) - 2 log(Dn) with one log
}

/// Inverse map inside a bin: theta in [0, 1] for y (stable root, clamped discriminant and theta).
template <class T>
NFHEP_MATH T rqs_bin_inverse_theta(T y, T yl, T h, T s, T d0, T d1) {
  const T dy = y - yl;
  const T sd = (d0 + d1) - T(2) * s;
  const T a = h * (s - d0) + dy * sd;
  const T b = h * d0 - dy * sd;
  const T c = -s * dy;
  T disc = b * b - T(4) * a * c;
  disc = disc > T(0) ? disc : T(0);
  // The spline's root is theta = 2c / (-b - sqrt(disc)) = (-b + sqrt(disc)) / (2a). Each form cancels
  // catastrophically for one sign of b (float32 errors ~1e-4 near the top of a bin with a steep right
  // derivative), so take the cancellation-free one: the first for b >= 0, the second for b < 0. Both are
  // computed and one is selected (branch-free); a zero denominator in the unused form is harmless.
  const T sq = math::sqrt_(disc);
  const T q_pos = -b - sq;  // |q_pos| = |b| + sqrt(disc) when b >= 0
  const T q_neg = -b + sq;  // = |b| + sqrt(disc) when b < 0
  const T theta_pos = q_pos != T(0) ? (T(2) * c) / q_pos : T(0);
  const T theta_neg = a != T(0) ? q_neg / (T(2) * a) : T(0);
  T theta = b >= T(0) ? theta_pos : theta_neg;
  theta = theta > T(0) ? theta : T(0);  // also maps NaN to 0
  theta = theta < T(1) ? theta : T(1);
  return theta;
}

/// Partial derivatives of (y, lad) of one bin at theta, contracted with upstream (gy, gl):
/// g_theta = gy dy/dtheta + gl dlad/dtheta, and the same for s, h (at fixed s), d0, d1.
/// Also returns dy/dtheta and dlad/dtheta (for the implicit derivative of the inverse).
template <class T>
struct RqsBinGrad {
  T g_theta, g_s, g_h, g_d0, g_d1;
};

template <class T>
NFHEP_MATH void rqs_bin_partials(T theta, T h, T s, T d0, T d1, T& dy_dtheta, T& dlad_dtheta) {
  const T omt = T(1) - theta;
  const T tomt = theta * omt;
  const T sd = (d0 + d1) - T(2) * s;
  const T den = s + sd * tomt;
  const T M = (d1 * (theta * theta) + T(2) * s * tomt) + d0 * (omt * omt);
  const T one_m2t = T(1) - T(2) * theta;
  const T rden = T(1) / den;
  dy_dtheta = (h * s) * M * (rden * rden);
  const T M_t = (T(2) * d1 * theta + T(2) * s * one_m2t) - T(2) * d0 * omt;
  dlad_dtheta = M_t / M - T(2) * (sd * one_m2t) * rden;
}

template <class T>
NFHEP_MATH RqsBinGrad<T> rqs_bin_vjp(T theta, T h, T s, T d0, T d1, T gy, T gl) {
  const T omt = T(1) - theta;
  const T tomt = theta * omt;
  const T th2 = theta * theta;
  const T omt2 = omt * omt;
  const T sd = (d0 + d1) - T(2) * s;
  const T den = s + sd * tomt;
  const T N = s * th2 + d0 * tomt;
  const T M = (d1 * th2 + T(2) * s * tomt) + d0 * omt2;
  const T one_m2t = T(1) - T(2) * theta;
  const T one_m2tomt = T(1) - T(2) * tomt;
  // Two reciprocals instead of eleven divisions (the same operation sequence on every SIMD level).
  const T rden = T(1) / den;
  const T rden2 = rden * rden;
  const T rM = T(1) / M;
  RqsBinGrad<T> g;
  // y = Y_b + h N / Dn
  const T dy_dt = (h * s) * M * rden2;
  const T dy_ds = h * (th2 * den - N * one_m2tomt) * rden2;
  const T dy_dh = N * rden;
  const T dy_dd0 = h * tomt * (den - N) * rden2;
  const T dy_dd1 = -(h * tomt * N) * rden2;
  // lad = log(s^2 M) - 2 log Dn
  const T M_t = (T(2) * d1 * theta + T(2) * s * one_m2t) - T(2) * d0 * omt;
  const T tomt_rden = T(2) * tomt * rden;
  const T dl_dt = M_t * rM - T(2) * (sd * one_m2t) * rden;
  const T dl_ds = (T(2) / s + T(2) * tomt * rM) - T(2) * one_m2tomt * rden;
  const T dl_dd0 = omt2 * rM - tomt_rden;
  const T dl_dd1 = th2 * rM - tomt_rden;
  g.g_theta = gy * dy_dt + gl * dl_dt;
  g.g_s = gy * dy_ds + gl * dl_ds;
  g.g_h = gy * dy_dh;
  g.g_d0 = gy * dy_dd0 + gl * dl_dd0;
  g.g_d1 = gy * dy_dd1 + gl * dl_dd1;
  return g;
}

// ---------------------------------------------------------------------------------------------------
// Block stages over L lanes (parameter k of lane l at prm[k*L + l]).
// ---------------------------------------------------------------------------------------------------

/// Stable softmax numerators of K logits: e[k*L+l] = exp(logit_k - max_k logit), R[l] = 1 / sum_k e
/// (one division per lane; the probabilities are e * R everywhere, on every SIMD level and on CUDA).
template <class T, int L>
NFHEP_MATH void rqs_softmax_prep(int K, const T* logits, T* e, T* R) {
  T mx[L], S[L];
  NFHEP_LANES for (int l = 0; l < L; ++l) mx[l] = logits[l];
  for (int k = 1; k < K; ++k)
    NFHEP_LANES for (int l = 0; l < L; ++l) {
      const T v = logits[k * L + l];
      mx[l] = v > mx[l] ? v : mx[l];
    }
  NFHEP_LANES for (int l = 0; l < L; ++l) S[l] = T(0);
  for (int k = 0; k < K; ++k)
    NFHEP_LANES for (int l = 0; l < L; ++l) {
      const T v = math::exp_nonpos(logits[k * L + l] - mx[l]);
      e[k * L + l] = v;
      S[l] = S[l] + v;
    }
  NFHEP_LANES for (int l = 0; l < L; ++l) R[l] = T(1) / S[l];
}

/// Running state of the knot scan (rqs_locate): the cumulative sizes with their Kahan compensations and
/// the left knots of the current bin on both axes.
template <class T, int L>
struct RqsScan {
  T cw[L], ccw[L], ch[L], cch[L];
  T kxl[L], kyl[L];
};

/// One bin k of the knot scan. HasPrev = (k > 0): u_{k-1} exists; Last = (k == K - 1): u_k does not.
/// The flags are template arguments so that the lane loop holds no k-dependent selection (GCC turned
/// the clamped indices of a single loop into per-lane index vectors and emulated gathers).
template <class T, int L, bool Inverse, bool HasPrev, bool Last>
NFHEP_MATH void rqs_locate_bin(const RqsConfig<T>& cfg, int k, const T* ew, const T* rw, const T* eh, const T* rh,
                               const T* up, const T* uc, const T* v, RqsScan<T, L>& st, T* bin, T* xl, T* xr,
                               T* yl, T* yr, T* u0, T* u1) {
  const T bound = cfg.bound;
  const T lo = -bound;
  const T span = bound - lo;  // 2B
  const T minw = cfg.min_w;
  const T minh = cfg.min_h;
  const T scw = T(1) - minw * T(cfg.K);
  const T sch = T(1) - minh * T(cfg.K);
  const T kt = T(k);
  const T* ewk = ew + k * L;
  const T* ehk = eh + k * L;
  NFHEP_LANES for (int l = 0; l < L; ++l) {
    const T wk = minw + scw * (ewk[l] * rw[l]);
    const T ywk = wk - st.ccw[l];
    const T tw = st.cw[l] + ywk;
    st.ccw[l] = (tw - st.cw[l]) - ywk;
    st.cw[l] = tw;
    const T hk = minh + sch * (ehk[l] * rh[l]);
    const T yhk = hk - st.cch[l];
    const T th = st.ch[l] + yhk;
    st.cch[l] = (th - st.ch[l]) - yhk;
    st.ch[l] = th;
    const T kxr = Last ? bound : span * st.cw[l] + lo;
    const T kyr = Last ? bound : span * st.ch[l] + lo;
    const bool take = (Inverse ? st.kyl[l] : st.kxl[l]) <= v[l];
    bin[l] = take ? kt : bin[l];
    xl[l] = take ? st.kxl[l] : xl[l];
    xr[l] = take ? kxr : xr[l];
    yl[l] = take ? st.kyl[l] : yl[l];
    yr[l] = take ? kyr : yr[l];
    if (HasPrev) u0[l] = take ? up[l] : u0[l];  // else: bin 0 keeps u0 = 0
    u1[l] = take ? (Last ? T(0) : uc[l]) : u1[l];
    st.kxl[l] = kxr;
    st.kyl[l] = kyr;
  }
}

/// Knot scan of both axes at once (the cumulative sums are compensated, Kahan, so that float32 knots
/// are accurate to ~1 ulp for any K). Finds the bin of v on the searched axis (x for the forward, y for
/// the inverse: count of left knots <= v, minus 1) and returns the knots of that bin on both axes and the
/// interior-derivative logits at its two ends, u0 = u_{b-1}, u1 = u_b (0 where absent).
/// Knots X_j = 2B cumsum(W)_j - B, the first exactly -B and the last exactly +B; W_k = min + (1 - min K) p_k.
template <class T, int L, bool Inverse>
NFHEP_MATH void rqs_locate(const RqsConfig<T>& cfg, const T* ew, const T* rw, const T* eh, const T* rh, const T* u,
                           const T* v, T* bin, T* xl, T* xr, T* yl, T* yr, T* u0, T* u1) {
  const int K = cfg.K;
  const T bound = cfg.bound;
  const T lo = -bound;
  RqsScan<T, L> st;
  NFHEP_LANES for (int l = 0; l < L; ++l) {
    st.cw[l] = T(0);
    st.ccw[l] = T(0);
    st.ch[l] = T(0);
    st.cch[l] = T(0);
    st.kxl[l] = lo;
    st.kyl[l] = lo;
    bin[l] = T(0);
    xl[l] = lo;
    xr[l] = bound;
    yl[l] = lo;
    yr[l] = bound;
    u0[l] = T(0);
    u1[l] = T(0);
  }
  // K >= 2: bin 0 (no left logit), bins 1..K-2, bin K-1 (no right logit).
  rqs_locate_bin<T, L, Inverse, false, false>(cfg, 0, ew, rw, eh, rh, u, u, v, st, bin, xl, xr, yl, yr, u0, u1);
  for (int k = 1; k + 1 < K; ++k)
    rqs_locate_bin<T, L, Inverse, true, false>(cfg, k, ew, rw, eh, rh, u + (k - 1) * L, u + k * L, v, st, bin, xl,
                                               xr, yl, yr, u0, u1);
  rqs_locate_bin<T, L, Inverse, true, true>(cfg, K - 1, ew, rw, eh, rh, u + (K - 2) * L, u, v, st, bin, xl, xr, yl,
                                            yr, u0, u1);
}

/// Scratch needed by the block functions, in elements of T.
NFHEP_MATH int rqs_scratch_size(int K, int L) { return 2 * K * L; }

/// Forward (Inverse = false: in = x, out = y, lad = log|dy/dx|) or inverse (in = y, out = x,
/// lad = log|dx/dy|) of L lanes.
template <class T, int L, bool Inverse>
NFHEP_MATH void rqs_block(const RqsConfig<T>& cfg, const T* in, const T* prm, T* scratch, T* out, T* lad) {
  const int K = cfg.K;
  const T B = cfg.bound;
  T* ew = scratch;
  T* eh = scratch + K * L;
  T Sw[L], Sh[L], vs[L], bin[L], xl[L], xr[L], yl[L], yr[L], u0[L], u1[L];
  T inside[L];  // 1 inside [-B, B], 0 in the tails (and for NaN)
  NFHEP_LANES for (int l = 0; l < L; ++l) {
    const T v = in[l];
    inside[l] = ((v >= -B) && (v <= B)) ? T(1) : T(0);
    vs[l] = inside[l] != T(0) ? v : T(0);  // mask before any arithmetic
  }
  rqs_softmax_prep<T, L>(K, prm, ew, Sw);
  rqs_softmax_prep<T, L>(K, prm + K * L, eh, Sh);
  rqs_locate<T, L, Inverse>(cfg, ew, Sw, eh, Sh, prm + 2 * K * L, vs, bin, xl, xr, yl, yr, u0, u1);
  const T lastb = T(K - 1);
  NFHEP_LANES for (int l = 0; l < L; ++l) {
    const T sp0 = cfg.min_d + math::softplus(u0[l]);
    const T sp1 = cfg.min_d + math::softplus(u1[l]);
    const T d0 = bin[l] == T(0) ? T(1) : sp0;
    const T d1 = bin[l] == lastb ? T(1) : sp1;
    const T w = xr[l] - xl[l];
    const T h = yr[l] - yl[l];
    const T s = h / w;
    T o = T(0), ld = T(0);
    if (!Inverse) {
      const T theta = (vs[l] - xl[l]) / w;
      rqs_bin_forward(theta, yl[l], h, s, d0, d1, o, ld);
    } else {
      const T theta = rqs_bin_inverse_theta(vs[l], yl[l], h, s, d0, d1);
      T yy;
      rqs_bin_forward(theta, yl[l], h, s, d0, d1, yy, ld);
      (void)yy;
      o = theta * w + xl[l];
      ld = -ld;
    }
    out[l] = inside[l] != T(0) ? o : in[l];
    lad[l] = inside[l] != T(0) ? ld : T(0);
  }
}

/// Vector-Jacobian product of (out, lad) of rqs_block<Inverse> at `in`, with upstream gout and glad.
/// Writes gin[l] and gprm[k*L + l] (all P = 3K-1 parameters). Tails: gin = gout, gprm = 0.
template <class T, int L, bool Inverse>
NFHEP_MATH void rqs_block_vjp(const RqsConfig<T>& cfg, const T* in, const T* prm, const T* gout, const T* glad,
                            T* scratch, T* gin, T* gprm) {
  const int K = cfg.K;
  const T B = cfg.bound;
  T* ew = scratch;
  T* eh = scratch + K * L;
  T Sw[L], Sh[L], vs[L], bin[L], xl[L], xr[L], yl[L], yr[L], u0[L], u1[L];
  T gXb[L], gXb1[L], gYb[L], gYb1[L], gu0[L], gu1[L];
  T inside[L];  // 1 inside [-B, B], 0 in the tails (and for NaN)
  NFHEP_LANES for (int l = 0; l < L; ++l) {
    const T v = in[l];
    inside[l] = ((v >= -B) && (v <= B)) ? T(1) : T(0);
    vs[l] = inside[l] != T(0) ? v : T(0);
  }
  rqs_softmax_prep<T, L>(K, prm, ew, Sw);
  rqs_softmax_prep<T, L>(K, prm + K * L, eh, Sh);
  rqs_locate<T, L, Inverse>(cfg, ew, Sw, eh, Sh, prm + 2 * K * L, vs, bin, xl, xr, yl, yr, u0, u1);
  const T lastb = T(K - 1);
  NFHEP_LANES for (int l = 0; l < L; ++l) {
    const bool first = bin[l] == T(0);
    const bool lastbin = bin[l] == lastb;
    const T sp0 = cfg.min_d + math::softplus(u0[l]);
    const T sp1 = cfg.min_d + math::softplus(u1[l]);
    const T sg0 = math::sigmoid(u0[l]);
    const T sg1 = math::sigmoid(u1[l]);
    const T d0 = first ? T(1) : sp0;
    const T d1 = lastbin ? T(1) : sp1;
    const T w = xr[l] - xl[l];
    const T h = yr[l] - yl[l];
    const T s = h / w;
    const T go = inside[l] != T(0) ? gout[l] : T(0);
    const T gl = inside[l] != T(0) ? glad[l] : T(0);
    T theta = T(0), gy = T(0), glf = T(0), g_in = T(0);
    if (!Inverse) {
      theta = (vs[l] - xl[l]) / w;
      gy = go;
      glf = gl;
    } else {
      // x(y) solves f(x) = y: dx/dy = 1/f'(x), dx/dp = -(df/dp)/f'(x); lad_inv = -lad_f(x).
      theta = rqs_bin_inverse_theta(vs[l], yl[l], h, s, d0, d1);
      T dy_dt, dl_dt;
      rqs_bin_partials(theta, h, s, d0, d1, dy_dt, dl_dt);
      const T c = (go * w - gl * dl_dt) / dy_dt;  // dL/dy
      g_in = c;
      gy = -c;
      glf = -gl;
    }
    const RqsBinGrad<T> g = rqs_bin_vjp(theta, h, s, d0, d1, gy, glf);
    const T rw = T(1) / w;
    if (!Inverse) g_in = g.g_theta * rw;
    // theta = (x - X_b)/w, s = h/w, w = X_{b+1} - X_b, h = Y_{b+1} - Y_b.
    const T g_xl = -(g.g_theta * rw);
    const T g_w = -((g.g_theta * theta) * rw) - (g.g_s * s) * rw;
    const T g_h = g.g_h + g.g_s * rw;
    gXb[l] = g_xl - g_w;
    gXb1[l] = g_w;
    gYb[l] = gy - g_h;
    gYb1[l] = g_h;
    gu0[l] = first ? T(0) : g.g_d0 * sg0;
    gu1[l] = lastbin ? T(0) : g.g_d1 * sg1;
    gin[l] = inside[l] != T(0) ? g_in : gout[l];
  }
  // Knots -> normalised sizes -> softmax logits. X_j (1 <= j <= K-1) = 2B sum_{k<j} W_k - B, so
  // dL/dW_k = 2B (dL/dX_b [k < b] + dL/dX_{b+1} [k < b+1 <= K-1]); W = min + (1 - min K) p;
  // softmax VJP: dL/dlogit_k = p_k (dL/dp_k - sum_j p_j dL/dp_j).
  const T span = B - (-B);
  for (int axis = 0; axis < 2; ++axis) {
    const T* e = axis == 0 ? ew : eh;
    const T* S = axis == 0 ? Sw : Sh;  // reciprocal sums
    const T* ga = axis == 0 ? gXb : gYb;
    const T* gb = axis == 0 ? gXb1 : gYb1;
    const T scale = span * (T(1) - (axis == 0 ? cfg.min_w : cfg.min_h) * T(K));
    T* gout_axis = gprm + axis * K * L;
    T dot[L];
    NFHEP_LANES for (int l = 0; l < L; ++l) dot[l] = T(0);
    for (int k = 0; k < K; ++k) {
      const T kt = T(k);
      NFHEP_LANES for (int l = 0; l < L; ++l) {
        const T p = e[k * L + l] * S[l];
        const T gp = scale * ((kt < bin[l] ? ga[l] : T(0)) + ((kt < bin[l] + T(1) && bin[l] < lastb) ? gb[l] : T(0)));
        dot[l] = dot[l] + p * gp;
        gout_axis[k * L + l] = gp;
      }
    }
    for (int k = 0; k < K; ++k)
      NFHEP_LANES for (int l = 0; l < L; ++l) {
        const T p = e[k * L + l] * S[l];
        const T v = p * (gout_axis[k * L + l] - dot[l]);
        gout_axis[k * L + l] = inside[l] != T(0) ? v : T(0);
      }
  }
  T* gu = gprm + 2 * K * L;
  for (int k = 0; k + 1 < K; ++k) {
    const T kt = T(k);
    NFHEP_LANES for (int l = 0; l < L; ++l) {
      const T v = (kt + T(1) == bin[l] ? gu0[l] : T(0)) + (kt == bin[l] ? gu1[l] : T(0));
      gu[k * L + l] = inside[l] != T(0) ? v : T(0);
    }
  }
}

}  // namespace nfhep::math
