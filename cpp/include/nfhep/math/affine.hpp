// nfhep/math/affine.hpp: the affine bijector y = x exp(s) + t of MAF / RealNVP (arXiv:1705.07057,
// arXiv:1605.08803), one definition for the CPU loops and the CUDA kernels.
//
//   forward  y = x exp(s) + t,        log|dy/dx| = s
//   inverse  x = (y - t) exp(-s),     log|dx/dy| = -s
// Gradients (vector-Jacobian products with upstream g_out, g_lad):
//   forward  dL/dx = g_out exp(s),   dL/ds = g_out x exp(s) + g_lad,        dL/dt = g_out
//   inverse  dL/dy = g_out exp(-s),  dL/ds = -g_out (y - t) exp(-s) - g_lad, dL/dt = -g_out exp(-s)
// NaN/inf propagate by IEEE arithmetic (no masking: there is no domain).
#pragma once
#include "nfhep/config.hpp"
#include "nfhep/math/special.hpp"

namespace nfhep::math {

/// Soft clamp of the affine log-scale of MAF / RealNVP, s = c tanh(u / c) (|s| < c; identity near 0),
/// through exp_nonpos: tanh(a) = sign(a) (1 - e) / (1 + e) with e = exp(-2|a|) in (0, 1], so nothing
/// overflows; absolute error a few ulp of 1 (the clamped log-scale enters only through exp(s) and as
/// log|det| itself, so an absolute error is what matters). NaN -> NaN.
template <class T>
NFHEP_MATH T soft_clamp(T u, T c) {
  const T a = u / c;
  const T aa = a < T(0) ? -a : a;
  const T e = math::exp_nonpos(T(-2) * aa);
  const T t = (T(1) - e) / (T(1) + e);
  return c * (a < T(0) ? -t : t);
}

template <class T>
NFHEP_MATH void affine_forward(T x, T s, T t, T& y, T& lad) {
  y = x * math::exp(s) + t;
  lad = s;
}

template <class T>
NFHEP_MATH void affine_inverse(T y, T s, T t, T& x, T& lad) {
  x = (y - t) * math::exp(-s);
  lad = -s;
}

template <class T>
NFHEP_MATH void affine_forward_vjp(T x, T s, T gout, T glad, T& gx, T& gs, T& gt) {
  const T es = math::exp(s);
  gx = gout * es;
  gs = gout * x * es + glad;
  gt = gout;
}

template <class T>
NFHEP_MATH void affine_inverse_vjp(T y, T s, T t, T gout, T glad, T& gy, T& gs, T& gt) {
  const T ens = math::exp(-s);
  gy = gout * ens;
  gs = -(gout * (y - t) * ens) - glad;
  gt = -(gout * ens);
}

}  // namespace nfhep::math
