r"""Pure-torch rational-quadratic spline and affine bijectors (the reference path).

The same maths as nfhep's C++ kernels, written with plain torch operations so that it runs on any device
and dtype torch supports and differentiates with ordinary autograd (also to higher orders). It serves as
the fallback for devices without an nfhep kernel and as the reference the kernels are tested against.

Element-wise bijectors: ``x`` has any shape ``S`` and ``params`` has shape ``S + (P,)`` (or a shape that
broadcasts to it). Both functions return ``(output, logabsdet)`` with ``logabsdet`` per element (shape
``S``): ``log|dy/dx|`` in the forward direction and ``log|dx/dy|`` in the inverse direction.

References
----------
C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, *Neural Spline Flows*, arXiv:1906.04032.
G. Papamakarios, T. Pavlakou, I. Murray, *Masked Autoregressive Flow for Density Estimation*,
arXiv:1705.07057.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_affine_args, check_rqs_args, check_rqs_options

__all__ = ["affine_torch", "rqs_torch", "rqs_knots"]


def rqs_knots(
    params: torch.Tensor,
    *,
    bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Knot positions and derivatives of the RQ spline from its unnormalised parameters.

    Parameters
    ----------
    params : torch.Tensor
        Shape ``(..., 3K-1)``: ``K`` width logits, ``K`` height logits, ``K-1`` interior derivative logits.
    bound, min_bin_width, min_bin_height, min_derivative : float
        See :func:`rqs_torch`.

    Returns
    -------
    knots_x, knots_y, derivatives : torch.Tensor
        Each of shape ``(..., K+1)``. With :math:`w_k = m_w + (1 - m_w K)\,\mathrm{softmax}(u^w)_k`,
        :math:`x_k = -B + 2B\sum_{j<k} w_j` with the end knots set exactly to :math:`\mp B` (same for
        :math:`y_k` from the height logits), and :math:`d_k = m_d + \mathrm{softplus}(u^d_k)` for the
        interior knots, :math:`d_0 = d_K = 1` exactly (the spline joins the identity tails smoothly).
    """
    k = (int(params.shape[-1]) + 1) // 3
    uw, uh, ud = params.split([k, k, k - 1], dim=-1)  # backward: one cat, no zero-filled buffers

    def knots(logits: torch.Tensor, minimum: float) -> torch.Tensor:
        frac = minimum + (1.0 - minimum * k) * torch.softmax(logits, dim=-1)
        inner = 2.0 * bound * torch.cumsum(frac[..., :-1], dim=-1) - bound
        lo = torch.full_like(logits[..., :1], -bound)
        return torch.cat([lo, inner, -lo], dim=-1)

    ones = torch.ones_like(ud[..., :1])
    derivatives = torch.cat([ones, min_derivative + F.softplus(ud), ones], dim=-1)
    return knots(uw, min_bin_width), knots(uh, min_bin_height), derivatives


def _log_derivative(
    xi: torch.Tensor, s: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor, den: torch.Tensor
) -> torch.Tensor:
    # log( s^2 [d1 xi^2 + 2 s xi(1-xi) + d0 (1-xi)^2] / den^2 )
    one_minus = 1.0 - xi
    num = d1 * xi * xi + 2.0 * s * xi * one_minus + d0 * one_minus * one_minus
    return 2.0 * torch.log(s) + torch.log(num) - 2.0 * torch.log(den)


def rqs_torch(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    inverse: bool = False,
    bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monotonic rational-quadratic spline with identity tails, in plain torch.

    On :math:`[-B, B]` the spline has ``K`` bins with knots :math:`(x_k, y_k)` and knot derivatives
    :math:`d_k` (see :func:`rqs_knots`; nflows' parameterisation). In bin ``k``
    (:math:`x_k \le x < x_{k+1}`; :math:`x = B` lies in the last bin), with :math:`w_k = x_{k+1}-x_k`,
    :math:`h_k = y_{k+1}-y_k`, :math:`s_k = h_k/w_k`, :math:`\xi = (x-x_k)/w_k`:

    .. math::

        y = y_k + \frac{h_k\,[s_k\xi^2 + d_k\xi(1-\xi)]}{s_k + (d_{k+1}+d_k-2s_k)\,\xi(1-\xi)}, \qquad
        \frac{dy}{dx} = \frac{s_k^2\,[d_{k+1}\xi^2 + 2s_k\xi(1-\xi) + d_k(1-\xi)^2]}
                             {[s_k + (d_{k+1}+d_k-2s_k)\,\xi(1-\xi)]^2}.

    The inverse solves :math:`a\xi^2 + b\xi + c = 0` with :math:`\delta = d_{k+1}+d_k-2s_k`,
    :math:`a = h_k(s_k-d_k) + (y-y_k)\delta`, :math:`b = h_k d_k - (y-y_k)\delta`,
    :math:`c = -s_k(y-y_k)`; its root in :math:`[0, 1]` is :math:`\xi = 2c/(-b-\sqrt{b^2-4ac})`
    :math:`= (-b+\sqrt{b^2-4ac})/(2a)`, evaluated in the form without cancellation (the first for
    :math:`b \ge 0`, the second for :math:`b < 0`).
    Outside :math:`[-B, B]` the map is the identity (``logabsdet = 0``).

    Parameters
    ----------
    x : torch.Tensor
        Input of any shape ``S`` (the spline's input ``x``, or ``y`` if ``inverse``).
    params : torch.Tensor
        Shape ``S + (3K-1,)`` or broadcastable to it, same dtype and device as ``x``: ``K`` width logits,
        ``K`` height logits, ``K-1`` interior derivative logits (``K >= 2``).
    inverse : bool
        Evaluate the inverse map.
    bound : float
        Half-width ``B > 0`` of the spline's interval (domain and codomain).
    min_bin_width, min_bin_height, min_derivative : float
        Minimum bin width and height (as fractions of ``2B``; ``min * K < 1``) and minimum interior
        derivative (all ``>= 0``).

    Returns
    -------
    output, logabsdet : torch.Tensor
        Both of shape ``S``; ``logabsdet`` is ``log|dy/dx|`` (forward) or ``log|dx/dy|`` (inverse).

    Notes
    -----
    Numerically safe in float32: inputs outside the interval (and NaN) are replaced by 0 before any
    spline arithmetic (``torch.where``), so no NaN or inf reaches the values or the gradients; the bin
    coordinate is clamped to :math:`[0, 1]` and the discriminant to a positive floor. NaN inputs are
    treated like the tails, as in the C++ kernels: NaN output, ``logabsdet = 0``; ``±inf`` is in the
    identity tails (output ``±inf``, ``logabsdet = 0``). float16/bfloat16 are computed in that
    precision (inaccurate; prefer float32).

    References
    ----------
    arXiv:1906.04032 (Durkan et al., Neural Spline Flows).
    """
    func = "nfhep.bijectors.rqs_torch"
    x, params, k = check_rqs_args(func, x, params, x_name="x")
    bound, mw, mh, md = check_rqs_options(func, k, bound, min_bin_width, min_bin_height, min_derivative)
    return _rqs_torch_unchecked(x, params, bool(inverse), bound, mw, mh, md)


def _rqs_torch_unchecked(
    x: torch.Tensor,
    params: torch.Tensor,
    inverse: bool,
    bound: float,
    mw: float,
    mh: float,
    md: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    k = (int(params.shape[-1]) + 1) // 3
    params = params.expand(tuple(x.shape) + (params.shape[-1],))
    kx, ky, kd = rqs_knots(params, bound=bound, min_bin_width=mw, min_bin_height=mh, min_derivative=md)

    inside = (x >= -bound) & (x <= bound)  # False for NaN
    xs = torch.where(inside, x, torch.zeros_like(x))  # safe input: no NaN/inf reaches the arithmetic

    # bin search: the number of interior knots <= input (x == B lies in the last bin)
    search = ky if inverse else kx
    idx = (xs.unsqueeze(-1) >= search[..., 1:k]).sum(dim=-1, keepdim=True)
    idx1 = idx + 1

    # one gather for the left knot and one for the right knot of each input's bin: (x, y, d) stacked
    table = torch.stack([kx, ky, kd], dim=-1)  # (..., K+1, 3)
    left = torch.gather(table, -2, idx.unsqueeze(-1).expand(*idx.shape, 3)).squeeze(-2)
    right = torch.gather(table, -2, idx1.unsqueeze(-1).expand(*idx1.shape, 3)).squeeze(-2)
    x0, y0, d0 = left.unbind(-1)
    x1, y1, d1 = right.unbind(-1)
    w = x1 - x0
    h = y1 - y0
    s = h / w
    delta = d0 + d1 - 2.0 * s

    if not inverse:
        xi = ((xs - x0) / w).clamp(0.0, 1.0)
        t = xi * (1.0 - xi)
        den = s + delta * t
        out = y0 + h * (s * xi * xi + d0 * t) / den
        lad = _log_derivative(xi, s, d0, d1, den)
    else:
        dy = (xs - y0).clamp(min=0.0)
        a = h * (s - d0) + dy * delta
        b = h * d0 - dy * delta
        c = -s * dy
        tiny = torch.finfo(x.dtype).tiny
        sq = torch.sqrt((b * b - 4.0 * a * c).clamp(min=tiny))
        # The root in [0, 1] is 2c / (-b - sq) = (-b + sq) / (2a). The first form cancels when b < 0
        # (steep bin ends: d_k + d_{k+1} >> s_k near the top of a bin), the second when b > 0: pick the
        # cancellation-free one by the sign of b (then a >= |b| > 0). Both branches are evaluated on safe
        # values, so torch.where passes no NaN/inf into the gradients.
        pos = b >= 0
        q_pos = torch.where(pos, -b - sq, -torch.ones_like(b)).clamp(max=-tiny)
        a_neg = torch.where(pos, torch.ones_like(a), a).clamp(min=tiny)
        xi = torch.where(pos, 2.0 * c / q_pos, (sq - b) / (2.0 * a_neg)).clamp(0.0, 1.0)
        out = x0 + xi * w
        t = xi * (1.0 - xi)
        den = s + delta * t
        lad = -_log_derivative(xi, s, d0, d1, den)

    out = torch.where(inside, out, x)
    lad = torch.where(inside, lad, torch.zeros_like(lad))
    return out, lad


def affine_torch(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Element-wise affine bijector :math:`y = x\,e^{s} + t` in plain torch (MAF/RealNVP transformer).

    Parameters
    ----------
    x : torch.Tensor
        Input of any shape ``S`` (``y`` if ``inverse``).
    params : torch.Tensor
        Shape ``S + (2,)`` or broadcastable to it, same dtype and device as ``x``:
        ``params[..., 0] = s`` (log-scale), ``params[..., 1] = t`` (shift).
    inverse : bool
        Evaluate the inverse :math:`x = (y - t)\,e^{-s}`.

    Returns
    -------
    output, logabsdet : torch.Tensor
        Both of shape ``S``; ``logabsdet = s`` forward and ``-s`` inverse.

    Notes
    -----
    No clamping: ``exp(s)`` overflows to inf for ``s`` above ~88 (float32) or ~709 (float64); NaN and inf
    propagate as IEEE arithmetic dictates.

    References
    ----------
    arXiv:1705.07057 (Papamakarios et al., Masked Autoregressive Flow), arXiv:1605.08803 (RealNVP).
    """
    func = "nfhep.bijectors.affine_torch"
    x, params = check_affine_args(func, x, params, x_name="x")
    return _affine_torch_unchecked(x, params, bool(inverse))


def _affine_torch_unchecked(
    x: torch.Tensor, params: torch.Tensor, inverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    params = params.expand(tuple(x.shape) + (2,))
    s, t = params[..., 0], params[..., 1]
    if inverse:
        return (x - t) * torch.exp(-s), -s
    return x * torch.exp(s) + t, s.clone()
