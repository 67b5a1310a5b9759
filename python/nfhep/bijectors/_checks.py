"""Argument validation shared by the torch path and the C++ path of :mod:`nfhep.bijectors`.

Every error names the public function, the argument, what was expected and what was received. Checks
run in Python, before any kernel is called, so the C++ layer only ever sees well-formed input.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "check_affine_args",
    "check_rqs_args",
    "check_rqs_options",
    "rqs_num_bins",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(func: str, name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{func}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{func}: argument '{name}' must be a floating-point tensor "
            f"(float32 or float64; float16/bfloat16 on the torch path), got dtype {value.dtype}"
        )
    return value


def _check_pair(func: str, x: object, params: object, x_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = _check_tensor(func, x_name, x)
    params = _check_tensor(func, "params", params)
    if x.dtype != params.dtype:
        raise TypeError(
            f"{func}: argument 'params' must have the same dtype as '{x_name}' ({x.dtype}), "
            f"got {params.dtype}; nfhep never casts silently, convert one of them explicitly"
        )
    if x.device != params.device:
        raise ValueError(
            f"{func}: argument 'params' must be on the same device as '{x_name}' ({x.device}), "
            f"got {params.device}"
        )
    if params.dim() < 1:
        raise ValueError(
            f"{func}: argument 'params' must have at least one dimension (the parameter axis), got a scalar"
        )
    return x, params


def _check_broadcast(func: str, x: torch.Tensor, params: torch.Tensor, x_name: str, layout: str) -> None:
    batch = tuple(params.shape[:-1])
    try:
        target = torch.broadcast_shapes(batch, tuple(x.shape))
    except RuntimeError:
        target = None
    if target != tuple(x.shape):
        raise ValueError(
            f"{func}: argument 'params' must have shape {x_name}.shape + ({layout},) = "
            f"{tuple(x.shape) + (params.shape[-1],)} (or a shape broadcastable to it, without enlarging "
            f"{x_name}), got {tuple(params.shape)}"
        )


def rqs_num_bins(func: str, params: torch.Tensor) -> int:
    """Number of bins K from the parameter axis (P = 3K - 1, K >= 2); ValueError otherwise."""
    p = int(params.shape[-1])
    if p < 5 or (p + 1) % 3 != 0:
        raise ValueError(
            f"{func}: argument 'params' must have 3K-1 entries on its last axis (K widths, K heights, "
            f"K-1 derivatives, K >= 2: 5, 8, 11, ...), got {p}"
        )
    return (p + 1) // 3


def _check_real(func: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{func}: argument '{name}' must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{func}: argument '{name}' must be finite, got {v}")
    return v


def check_rqs_options(
    func: str,
    num_bins: int,
    bound: object,
    min_bin_width: object,
    min_bin_height: object,
    min_derivative: object,
) -> tuple[float, float, float, float]:
    """Validate the spline's configuration; returns the values as floats."""
    b = _check_real(func, "bound", bound)
    if b <= 0.0:
        raise ValueError(f"{func}: argument 'bound' must be > 0, got {b}")
    mins = []
    for name, value in (
        ("min_bin_width", min_bin_width),
        ("min_bin_height", min_bin_height),
        ("min_derivative", min_derivative),
    ):
        v = _check_real(func, name, value)
        if v < 0.0:
            raise ValueError(f"{func}: argument '{name}' must be >= 0, got {v}")
        mins.append(v)
    mw, mh, md = mins
    for name, v in (("min_bin_width", mw), ("min_bin_height", mh)):
        if not v * num_bins < 1.0:
            raise ValueError(
                f"{func}: argument '{name}' = {v} is too large for K = {num_bins} bins "
                f"({name} * K must be < 1, got {v * num_bins})"
            )
    return b, mw, mh, md


def check_rqs_args(
    func: str,
    x: object,
    params: object,
    *,
    x_name: str = "x",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate tensors for an RQ spline; returns (x, params, K)."""
    x, params = _check_pair(func, x, params, x_name)
    k = rqs_num_bins(func, params)
    _check_broadcast(func, x, params, x_name, "3K-1")
    return x, params, k


def check_affine_args(
    func: str,
    x: object,
    params: object,
    *,
    x_name: str = "x",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate tensors for the affine bijector; returns (x, params)."""
    x, params = _check_pair(func, x, params, x_name)
    if params.shape[-1] != 2:
        raise ValueError(
            f"{func}: argument 'params' must have 2 entries on its last axis (log-scale s, shift t), "
            f"got {params.shape[-1]}"
        )
    _check_broadcast(func, x, params, x_name, "2")
    return x, params
