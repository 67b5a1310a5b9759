"""Independent float64 reference of the bijectors (no nfhep import, no code shared with the kernels).

Written from the formulas of Durkan et al., "Neural Spline Flows" (arXiv:1906.04032), in nflows'
parameterisation (``unconstrained_rational_quadratic_spline``, tails='linear'), and of the affine bijector
``y = x exp(s) + t`` (arXiv:1705.07057). Two implementations of the spline:

- numpy (``rqs_forward_np``, ``rqs_inverse_np``): explicit knot tables and ``searchsorted``; the inverse is
  found by bisection of the forward map (it does not use the quadratic-root formula at all);
- torch (``rqs_forward_torch``, ``rqs_inverse_torch``): float64 autograd-able version for gradient tests,
  using gathers and the closed-form root.

Conventions: params[..., :K] width logits, [K:2K] height logits, [2K:] the K-1 interior derivative logits.
Inputs outside [-B, B] (and NaN) pass through unchanged with log|det| = 0.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "affine_forward_np",
    "affine_inverse_np",
    "knots_np",
    "rqs_forward_np",
    "rqs_forward_torch",
    "rqs_inverse_np",
    "rqs_inverse_torch",
]


def knots_np(params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Knot tables (xk, yk, dk), each of shape S + (K+1,), from unnormalised params S + (3K-1,)."""
    p = np.asarray(params, dtype=np.float64)
    K = (p.shape[-1] + 1) // 3

    def sizes(logits, minimum):
        z = logits - logits.max(axis=-1, keepdims=True)
        soft = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        return minimum + (1.0 - minimum * K) * soft

    def knots(size):
        c = np.concatenate([np.zeros(size.shape[:-1] + (1,)), np.cumsum(size, axis=-1)], axis=-1)
        k = -bound + 2.0 * bound * c
        k[..., 0] = -bound
        k[..., -1] = bound
        return k

    xk = knots(sizes(p[..., :K], min_bin_width))
    yk = knots(sizes(p[..., K : 2 * K], min_bin_height))
    u = p[..., 2 * K :]
    # softplus(u) = log(1 + e^u), written stably
    inner = min_derivative + np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))
    ones = np.ones(p.shape[:-1] + (1,))
    dk = np.concatenate([ones, inner, ones], axis=-1)
    return xk, yk, dk


def _bin_quantities(v, xk, yk, dk, on_y):
    """For each element: the bin holding v (v on the x axis, or on the y axis if on_y)."""
    K = xk.shape[-1] - 1
    table = yk if on_y else xk
    # number of left knots <= v, minus one (v == B belongs to the last bin)
    b = (table[..., :K] <= v[..., None]).sum(axis=-1) - 1
    b = np.clip(b, 0, K - 1)[..., None]
    g = lambda a, off=0: np.take_along_axis(a, b + off, axis=-1)[..., 0]  # noqa: E731
    return g(xk), g(xk, 1), g(yk), g(yk, 1), g(dk), g(dk, 1)


def _rq_map(theta, x0, x1, y0, y1, d0, d1):
    w = x1 - x0
    h = y1 - y0
    s = h / w
    tt = theta * (1.0 - theta)
    den = s + (d0 + d1 - 2.0 * s) * tt
    y = y0 + h * (s * theta**2 + d0 * tt) / den
    dydx = s**2 * (d1 * theta**2 + 2.0 * s * tt + d0 * (1.0 - theta) ** 2) / den**2
    return y, np.log(dydx)


def rqs_forward_np(x, params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Forward spline in float64: returns (y, log|dy/dx|)."""
    x = np.asarray(x, dtype=np.float64)
    xk, yk, dk = knots_np(
        params, bound=bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )  # fmt: skip
    inside = (x >= -bound) & (x <= bound)
    xs = np.where(inside, x, 0.0)
    x0, x1, y0, y1, d0, d1 = _bin_quantities(xs, xk, yk, dk, on_y=False)
    y, lad = _rq_map((xs - x0) / (x1 - x0), x0, x1, y0, y1, d0, d1)
    return np.where(inside, y, x), np.where(inside, lad, 0.0)


def rqs_inverse_np(y, params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Inverse spline by bisection of the forward map within the bin: returns (x, log|dx/dy|)."""
    y = np.asarray(y, dtype=np.float64)
    xk, yk, dk = knots_np(
        params, bound=bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )  # fmt: skip
    inside = (y >= -bound) & (y <= bound)
    ys = np.where(inside, y, 0.0)
    x0, x1, y0, y1, d0, d1 = _bin_quantities(ys, xk, yk, dk, on_y=True)
    lo = np.zeros_like(ys)
    hi = np.ones_like(ys)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        fm, _ = _rq_map(mid, x0, x1, y0, y1, d0, d1)
        below = fm < ys
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
        if np.all(hi - lo <= 0):
            break
    theta = 0.5 * (lo + hi)
    _, lad = _rq_map(theta, x0, x1, y0, y1, d0, d1)
    x = x0 + theta * (x1 - x0)
    return np.where(inside, x, y), np.where(inside, -lad, 0.0)


def affine_forward_np(x, params):
    """y = x exp(s) + t, log|dy/dx| = s."""
    p = np.asarray(params, dtype=np.float64)
    return np.asarray(x, np.float64) * np.exp(p[..., 0]) + p[..., 1], p[..., 0].copy()


def affine_inverse_np(y, params):
    """x = (y - t) exp(-s), log|dx/dy| = -s."""
    p = np.asarray(params, dtype=np.float64)
    return (np.asarray(y, np.float64) - p[..., 1]) * np.exp(-p[..., 0]), -p[..., 0]


# --------------------------------------------------------------------------------------------------
# torch float64 version (autograd), independent of nfhep
# --------------------------------------------------------------------------------------------------


def _torch_tables(params, bound, min_w, min_h, min_d):
    import torch

    K = (params.shape[-1] + 1) // 3

    def knots(logits, minimum):
        size = minimum + (1.0 - minimum * K) * torch.softmax(logits, dim=-1)
        c = torch.cumsum(size, dim=-1)
        inner = -bound + 2.0 * bound * c[..., :-1]
        lo = torch.full_like(c[..., :1], -bound)
        hi = torch.full_like(c[..., :1], bound)
        return torch.cat([lo, inner, hi], dim=-1)

    xk = knots(params[..., :K], min_w)
    yk = knots(params[..., K : 2 * K], min_h)
    one = torch.ones_like(params[..., :1])
    dk = torch.cat([one, min_d + torch.nn.functional.softplus(params[..., 2 * K :]), one], dim=-1)
    return K, xk, yk, dk


def _torch_gather(K, xk, yk, dk, v, table):
    import torch

    b = ((table[..., :K] <= v[..., None]).sum(dim=-1) - 1).clamp(0, K - 1)[..., None]

    def g(a, off=0):
        return torch.gather(a, -1, b + off)[..., 0]

    return g(xk), g(xk, 1), g(yk), g(yk, 1), g(dk), g(dk, 1)


def rqs_forward_torch(x, params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Differentiable float64 forward spline (torch): returns (y, log|dy/dx|)."""
    import torch

    K, xk, yk, dk = _torch_tables(params, bound, min_bin_width, min_bin_height, min_derivative)
    inside = (x >= -bound) & (x <= bound)
    xs = torch.where(inside, x, torch.zeros_like(x))
    x0, x1, y0, y1, d0, d1 = _torch_gather(K, xk, yk, dk, xs, xk)
    w, h = x1 - x0, y1 - y0
    s = h / w
    th = (xs - x0) / w
    tt = th * (1 - th)
    den = s + (d0 + d1 - 2 * s) * tt
    y = y0 + h * (s * th**2 + d0 * tt) / den
    lad = torch.log(s**2 * (d1 * th**2 + 2 * s * tt + d0 * (1 - th) ** 2)) - 2 * torch.log(den)
    return torch.where(inside, y, x), torch.where(inside, lad, torch.zeros_like(lad))


def rqs_inverse_torch(y, params, *, bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Differentiable float64 inverse spline (torch, closed-form root): returns (x, log|dx/dy|)."""
    import torch

    K, xk, yk, dk = _torch_tables(params, bound, min_bin_width, min_bin_height, min_derivative)
    inside = (y >= -bound) & (y <= bound)
    ys = torch.where(inside, y, torch.zeros_like(y))
    x0, x1, y0, y1, d0, d1 = _torch_gather(K, xk, yk, dk, ys, yk)
    w, h = x1 - x0, y1 - y0
    s = h / w
    r = ys - y0
    sd = d0 + d1 - 2 * s
    a = h * (s - d0) + r * sd
    b = h * d0 - r * sd
    c = -s * r
    disc = (b**2 - 4 * a * c).clamp_min(0.0)
    th = (2 * c / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)
    x = x0 + th * w
    tt = th * (1 - th)
    den = s + sd * tt
    lad = torch.log(s**2 * (d1 * th**2 + 2 * s * tt + d0 * (1 - th) ** 2)) - 2 * torch.log(den)
    return torch.where(inside, x, y), torch.where(inside, -lad, torch.zeros_like(lad))
