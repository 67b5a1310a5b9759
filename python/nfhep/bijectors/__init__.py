r"""Element-wise bijectors given their parameters: rational-quadratic spline and affine (no ``nn.Module``).

The flows in :mod:`nfhep.flows` produce parameters with a conditioner network and call these functions.
Each returns ``(output, logabsdet)`` with a per-element ``logabsdet`` (sum it over the event dimensions).

Two interchangeable implementations:

- the C++ kernels (SIMD, multi-threaded; CUDA in a CUDA build) wrapped in ``torch.autograd.Function``\ s
  with an analytic, first-order backward (:mod:`nfhep.bijectors.ops`);
- a pure-torch path (:mod:`nfhep.bijectors.torch_impl`): any device and dtype, higher-order autograd.

``backend="auto"`` picks the kernels for float32/float64 tensors on the CPU (and on CUDA in a CUDA build
with a device), and the torch path otherwise (e.g. float16/bfloat16, other devices). ``backend="cpp"``
insists on the kernels and raises an error saying why when they cannot be used; ``backend="torch"``
forces the torch path.

Parameter layout (per element, last axis of ``params``):

- RQS: ``P = 3K - 1`` = ``K`` width logits, ``K`` height logits, ``K - 1`` interior derivative logits
  (:func:`rqs_num_params`); nflows' parameterisation, so nflows' ``unconstrained_rational_quadratic_spline``
  with ``tails="linear"`` gives the same spline for the same logits.
- affine: ``P = 2`` = log-scale ``s``, shift ``t``.

References
----------
arXiv:1906.04032 (Neural Spline Flows), arXiv:1705.07057 (MAF), arXiv:1605.08803 (RealNVP).
"""

from __future__ import annotations

import torch

from ._checks import check_affine_args, check_rqs_args, check_rqs_options
from .ops import AffineFunction, RQSFunction, cpp_support
from .torch_impl import _affine_torch_unchecked, _rqs_torch_unchecked, affine_torch, rqs_knots, rqs_torch

__all__ = [
    "AffineFunction",
    "RQSFunction",
    "affine",
    "affine_torch",
    "cpp_support",
    "rqs",
    "rqs_knots",
    "rqs_num_params",
    "rqs_torch",
]

_BACKENDS = ("auto", "cpp", "torch")


def rqs_num_params(num_bins: int) -> int:
    """Number of unnormalised parameters per element of a ``num_bins``-bin RQ spline: ``3K - 1``.

    Parameters
    ----------
    num_bins : int
        ``K >= 2``.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        raise TypeError(
            "nfhep.bijectors.rqs_num_params: argument 'num_bins' must be an int, "
            f"got {type(num_bins).__name__}"
        )
    if num_bins < 2:
        raise ValueError(f"nfhep.bijectors.rqs_num_params: argument 'num_bins' must be >= 2, got {num_bins}")
    return 3 * num_bins - 1


def _use_cpp(func: str, x: torch.Tensor, backend: str, kind: str) -> bool:
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"{func}: argument 'backend' must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    why = cpp_support(x, kind)
    if backend == "cpp" and why is not None:
        err = TypeError if x.dtype not in (torch.float32, torch.float64) else ValueError
        raise err(f"{func}: backend='cpp' cannot be used: {why}; use backend='auto' or 'torch'")
    return why is None


def rqs(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    inverse: bool = False,
    bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monotonic rational-quadratic spline on :math:`[-B, B]` with identity tails (Durkan et al. 2019).

    Knots: :math:`x_0 = -B`, :math:`x_K = B`, :math:`x_k = -B + 2B\sum_{j<k} w_j` with
    :math:`w = m_w + (1 - m_w K)\,\mathrm{softmax}(u^w)` (heights :math:`y_k` likewise from :math:`u^h`
    and :math:`m_h`); knot derivatives :math:`d_k = m_d + \mathrm{softplus}(u^d_k)` for
    :math:`0 < k < K` and :math:`d_0 = d_K = 1`. In bin ``k`` (:math:`x_k \le x < x_{k+1}`, and
    :math:`x = B` in the last bin) with :math:`s_k = h_k / w_k`, :math:`\xi = (x - x_k)/w_k`:

    .. math::

        y = y_k + \frac{h_k\,[s_k\xi^2 + d_k\xi(1-\xi)]}{s_k + (d_{k+1}+d_k-2s_k)\,\xi(1-\xi)},\qquad
        \log\left|\frac{dy}{dx}\right| = \log\frac{s_k^2\,[d_{k+1}\xi^2 + 2s_k\xi(1-\xi)
        + d_k(1-\xi)^2]}{[s_k + (d_{k+1}+d_k-2s_k)\,\xi(1-\xi)]^2}.

    The inverse takes the stable root :math:`\xi = 2c/(-b-\sqrt{b^2-4ac})` of the quadratic in
    :math:`\xi` (see :func:`rqs_torch`). Outside :math:`[-B, B]`: :math:`y = x`, ``logabsdet = 0``.

    Parameters
    ----------
    x : torch.Tensor
        Input of any shape ``S``, float32 or float64 (float16/bfloat16: torch path only).
    params : torch.Tensor
        Shape ``S + (3K-1,)`` or broadcastable to it (e.g. ``(D, 3K-1)`` for ``x`` of shape ``(N, D)``),
        same dtype and device as ``x``; ``K >= 2``. Layout: ``K`` width logits, ``K`` height logits,
        ``K-1`` interior derivative logits.
    inverse : bool
        If true, ``x`` is the spline's output and the inverse map is evaluated.
    bound : float
        ``B > 0`` (default 5).
    min_bin_width, min_bin_height : float
        Minimum bin width/height as a fraction of ``2B`` (default 1e-3; ``>= 0`` and ``min * K < 1``).
    min_derivative : float
        Minimum interior knot derivative (default 1e-3, ``>= 0``).
    backend : {"auto", "cpp", "torch"}
        Implementation; see the module documentation.

    Returns
    -------
    output, logabsdet : torch.Tensor
        Shape ``S`` each; ``logabsdet = log|dy/dx|`` forward, ``log|dx/dy|`` (= minus the forward's at
        the output) inverse.

    Raises
    ------
    TypeError
        ``x`` or ``params`` not a floating tensor, dtypes differ, or ``backend="cpp"`` with a dtype the
        kernels do not support.
    ValueError
        Bad shapes, ``K < 2``, ``bound <= 0``, negative minimums, ``min * K >= 1``, unknown ``backend``, or
        ``backend="cpp"`` on a device the kernels cannot use.

    Notes
    -----
    - NaN inputs are treated like the tails: NaN output, ``logabsdet = 0`` (the NaN still reaches a
      log-density through the output); ``±inf`` lies in the identity tails
      (output ``±inf``, ``logabsdet = 0``). Out-of-interval inputs never reach the spline arithmetic, so
      their gradients are exact (1 for ``x``, 0 for ``params``) and never NaN.
    - The C++ path's backward is first-order only; use ``backend="torch"`` for higher derivatives.

    References
    ----------
    arXiv:1906.04032 (C. Durkan et al., Neural Spline Flows).
    """
    func = "nfhep.bijectors.rqs"
    x, params, k = check_rqs_args(func, x, params, x_name="x")
    b, mw, mh, md = check_rqs_options(func, k, bound, min_bin_width, min_bin_height, min_derivative)
    inverse = bool(inverse)
    if not _use_cpp(func, x, backend, "rqs"):
        return _rqs_torch_unchecked(x, params, inverse, b, mw, mh, md)
    full = params.expand(tuple(x.shape) + (params.shape[-1],))
    return RQSFunction.apply(x, full, inverse, b, mw, mh, md)


def affine(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    inverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Element-wise affine bijector :math:`y = x\,e^{s} + t` (the MAF / RealNVP transformer).

    Parameters
    ----------
    x : torch.Tensor
        Input of any shape ``S`` (``y`` if ``inverse``), float32 or float64 (float16/bfloat16: torch
        path only).
    params : torch.Tensor
        Shape ``S + (2,)`` or broadcastable to it, same dtype and device as ``x``:
        ``params[..., 0] = s``, ``params[..., 1] = t``.
    inverse : bool
        Evaluate :math:`x = (y - t)\,e^{-s}`.
    backend : {"auto", "cpp", "torch"}
        Implementation; see the module documentation.

    Returns
    -------
    output, logabsdet : torch.Tensor
        Shape ``S`` each; ``logabsdet = s`` forward, ``-s`` inverse.

    Notes
    -----
    No clamping of ``s``: ``exp(s)`` overflows to inf beyond ~88 (float32) / ~709 (float64); NaN and inf
    propagate by IEEE arithmetic. The C++ path's backward is first-order only.

    References
    ----------
    arXiv:1705.07057 (MAF), arXiv:1605.08803 (RealNVP).
    """
    func = "nfhep.bijectors.affine"
    x, params = check_affine_args(func, x, params, x_name="x")
    inverse = bool(inverse)
    if not _use_cpp(func, x, backend, "affine"):
        return _affine_torch_unchecked(x, params, inverse)
    full = params.expand(tuple(x.shape) + (2,))
    return AffineFunction.apply(x, full, inverse)
