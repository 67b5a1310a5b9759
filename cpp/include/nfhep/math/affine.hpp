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
