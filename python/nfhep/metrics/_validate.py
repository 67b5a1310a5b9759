"""Input conversion for nfhep.metrics (private).

The one documented place where inputs change type:

- samples ``x`` and ``y``: float32 and float64 arrays are passed to the C++ core as they are (made
  C-contiguous if needed, which copies but never changes values); a 1-D array is one dimension,
  ``(n,) -> (n, 1)``; other dtypes (integers, bools) are converted to float64; a float32/float64 pair of
  samples is compared in float64 (the float32 one is converted, exactly);
- weights: converted to float64 (exact for float32 and for integers below 2**53).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_sample", "as_pair", "as_weights"]


def as_sample(a: Any, name: str) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32/float64 array of shape (n, D) (see the module notes)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor: an explicit, documented conversion
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype.kind == "c":
        raise TypeError(f"argument {name!r} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"argument {name!r} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"argument {name!r} must have shape (n, D) or (n,), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"argument {name!r} is empty (no events)")
    if arr.shape[1] == 0:
        raise ValueError(f"argument {name!r} has no dimensions (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def as_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as arrays of one dtype and the same number of dimensions."""
    xa = as_sample(x, "x")
    ya = as_sample(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(
            f"argument 'y' must have the same number of dimensions as 'x' ({xa.shape[1]}), "
            f"got shape {ya.shape}"
        )
    if xa.dtype != ya.dtype:
        xa = xa.astype(np.float64)
        ya = ya.astype(np.float64)
    return xa, ya


def as_weights(w: Any, n: int, name: str) -> np.ndarray | None:
    """Weights as float64 of shape (n,), finite, non-negative, not all zero; None stays None."""
    if w is None:
        return None
    if hasattr(w, "detach") and hasattr(w, "cpu"):
        w = w.detach().cpu().numpy()
    arr = np.asarray(w)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"argument {name!r} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"argument {name!r} must have shape ({n},), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"argument {name!r} must have one weight per event ({n}), got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"argument {name!r} contains non-finite weights")
    if np.any(arr < 0):
        raise ValueError(f"argument {name!r} contains negative weights (min {arr.min()})")
    if not arr.sum() > 0:
        raise ValueError(f"argument {name!r} sums to zero (all weights are 0)")
    return arr
