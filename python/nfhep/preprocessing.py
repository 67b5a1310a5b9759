r"""Preprocessing that travels with a model: physical bounds, log transform, standardisation.

Per feature ``j`` the map :math:`x_j \mapsto u_j` is, in this order,

1. a bound map (if ``bounds[j]`` is given):

   - two-sided :math:`(a, b)`: logit :math:`v = \log(x-a) - \log(b-x)`,
     :math:`\log|dv/dx| = \log(b-a) - \log(x-a) - \log(b-x)`; inverse :math:`x = a + (b-a)\,\sigma(v)`;
   - lower only :math:`(a, \infty)`: :math:`v = \log(x - a)`; upper only :math:`(-\infty, b)`:
     :math:`v = \log(b - x)`;

   or a log transform :math:`v = \log x` (``log`` features; strictly positive values), or the identity;
2. standardisation :math:`u = (v - \mu)/\sigma` with the (weighted) mean and standard deviation of
   :math:`v` on the training data (``standardize=True``).

``forward`` returns ``u`` and the per-row :math:`\log|\det \partial u/\partial x|`, so a model's density in
data units is :math:`\log p_x(x) = \log p_u(u) + \log|\det \partial u / \partial x|`.

Values outside the bounds (or non-positive values of a log feature) have zero density under such a
model: :meth:`Preprocessing.fit` and :meth:`Preprocessing.forward` raise a ``ValueError`` naming the
feature and the number of bad rows. :meth:`Preprocessing.inverse` (sampling) clips its output to the
closed bounds, so round-off at the edges can never produce an out-of-bounds sample.

Context features (if any) are standardised too (no Jacobian: the density is conditional on them).

The fitted constants are persistent buffers (``mean``, ``std``, ``context_mean``, ``context_std``, and
``fitted``), so they are in a model's ``state_dict``; :meth:`to_dict` holds them as well.

References
----------
Physical-bound handling as in the NFlikelihood code (arXiv:2309.09743), here as an exact bijection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Preprocessing", "RunningMoments"]


class RunningMoments:
    """Weighted mean and variance accumulated over chunks (Chan et al. pairwise merge, float64)."""

    def __init__(self, dim: int):
        self.w = 0.0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def update(self, v: np.ndarray, weights: np.ndarray | None = None) -> None:
        v = np.asarray(v, dtype=np.float64)
        if v.shape[0] == 0:
            return
        w = np.ones(v.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        wb = float(w.sum())
        if wb <= 0:
            return
        mb = (w[:, None] * v).sum(0) / wb
        m2b = (w[:, None] * (v - mb) ** 2).sum(0)
        tot = self.w + wb
        delta = mb - self.mean
        self.mean = self.mean + delta * (wb / tot)
        self.m2 = self.m2 + m2b + delta**2 * (self.w * wb / tot)
        self.w = tot

    @property
    def std(self) -> np.ndarray:
        if self.w <= 0:
            raise ValueError("no data (or zero total weight) to fit the preprocessing on")
        return np.sqrt(self.m2 / self.w)


def _norm_bounds(bounds: Any, features: int | None) -> list[tuple[float | None, float | None]] | None:
    if bounds is None:
        return None
    if isinstance(bounds, Mapping):
        if features is None:
            raise ValueError("Preprocessing: a dict of bounds needs 'features' (the number of features)")
        out: list[tuple[float | None, float | None]] = [(None, None)] * features
        for k, v in bounds.items():
            k = int(k)
            if not 0 <= k < features:
                raise ValueError(f"Preprocessing: bounds for feature {k}, but there are {features} features")
            out[k] = tuple(v)  # type: ignore[assignment]
        bounds = out
    res = []
    for j, b in enumerate(bounds):
        if b is None:
            res.append((None, None))
            continue
        if len(b) != 2:
            raise ValueError(f"Preprocessing: bounds[{j}] must be (low, high), got {b!r}")
        lo = None if b[0] is None or b[0] == -math.inf else float(b[0])
        hi = None if b[1] is None or b[1] == math.inf else float(b[1])
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"Preprocessing: bounds[{j}] = {b!r} needs low < high")
        res.append((lo, hi))
    return res


class Preprocessing(nn.Module):
    """Per-feature bounds / log transform and standardisation, fitted on training data only.

    Parameters
    ----------
    standardize : bool
        Standardise each (transformed) feature to zero mean, unit variance.
    log : sequence of int
        Indices of strictly positive features to take the log of.
    bounds : sequence of (low, high) or dict {index: (low, high)}, optional
        Physical bounds; ``None``/``±inf`` for an open side. A feature cannot be both ``log`` and bounded
        (``log`` is the bound ``(0, None)``).
    features : int, optional
        Number of features ``D``; allocates the buffers now (needed to load a ``state_dict`` before
        fitting). Otherwise set by :meth:`fit`.
    context : int
        Number of context features ``C`` to standardise.

    Notes
    -----
    Zero-variance features get ``std = 1`` (they are only centred).
    """

    def __init__(
        self,
        *,
        standardize: bool = True,
        log: Sequence[int] = (),
        bounds: Any = None,
        features: int | None = None,
        context: int = 0,
    ):
        super().__init__()
        self.standardize = bool(standardize)
        self.log = tuple(sorted(int(i) for i in log))
        self.bounds = _norm_bounds(bounds, features)
        if features is None and self.bounds is not None:
            features = len(self.bounds)
        self.context = int(context)
        self.features: int | None = None
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.ones(0))
        self.register_buffer("context_mean", torch.zeros(self.context))
        self.register_buffer("context_std", torch.ones(self.context))
        self.register_buffer("fitted", torch.zeros(()))
        if features is not None:
            self._allocate(int(features))

    def _allocate(self, features: int) -> None:
        if self.bounds is not None and len(self.bounds) != features:
            raise ValueError(f"Preprocessing: {len(self.bounds)} bounds given for {features} features")
        if self.bounds is None:
            self.bounds = [(None, None)] * features
        bad = [i for i in self.log if not 0 <= i < features]
        if bad:
            raise ValueError(f"Preprocessing: log feature indices {bad} out of range for {features} features")
        both = [i for i in self.log if self.bounds[i] != (None, None)]
        if both:
            raise ValueError(f"Preprocessing: features {both} are both 'log' and bounded; choose one")
        dtype = self.mean.dtype
        self.features = features
        self.mean = torch.zeros(features, dtype=dtype, device=self.mean.device)
        self.std = torch.ones(features, dtype=dtype, device=self.std.device)

    # -- the element-wise maps ----------------------------------------------------------------------
    def _check_domain(self, func: str, x: torch.Tensor) -> None:
        assert self.bounds is not None
        for j in range(x.shape[1]):
            col = x[:, j]
            lo, hi = self.bounds[j]
            if j in self.log:
                nbad = int((~(col > 0)).sum())
                if nbad:
                    raise ValueError(
                        f"{func}: feature {j} is log-transformed but {nbad} value(s) are not "
                        "strictly positive"
                    )
            if lo is not None or hi is not None:
                ok = torch.ones_like(col, dtype=torch.bool)
                if lo is not None:
                    ok &= col > lo
                if hi is not None:
                    ok &= col < hi
                nbad = int((~ok).sum())
                if nbad:
                    raise ValueError(
                        f"{func}: feature {j} has {nbad} value(s) outside its bounds ({lo}, {hi}) "
                        "(open interval; these have zero density under the model)"
                    )

    def _to_v(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.bounds is not None
        cols, ld = [], x.new_zeros(x.shape[0])
        for j in range(x.shape[1]):
            c = x[:, j]
            lo, hi = self.bounds[j]
            if j in self.log:
                v = torch.log(c)
                ld = ld - v
            elif lo is not None and hi is not None:
                a, b = torch.log(c - lo), torch.log(hi - c)
                v = a - b
                ld = ld + math.log(hi - lo) - a - b
            elif lo is not None:
                v = torch.log(c - lo)
                ld = ld - v
            elif hi is not None:
                v = torch.log(hi - c)
                ld = ld - v
            else:
                v = c
            cols.append(v)
        return torch.stack(cols, dim=1), ld

    def _from_v(self, v: torch.Tensor) -> torch.Tensor:
        assert self.bounds is not None
        cols = []
        for j in range(v.shape[1]):
            c = v[:, j]
            lo, hi = self.bounds[j]
            if j in self.log:
                x = torch.exp(c)
            elif lo is not None and hi is not None:
                x = (lo + (hi - lo) * torch.sigmoid(c)).clamp(lo, hi)
            elif lo is not None:
                x = (lo + torch.exp(c)).clamp_min(lo)
            elif hi is not None:
                x = (hi - torch.exp(c)).clamp_max(hi)
            else:
                x = c
            cols.append(x)
        return torch.stack(cols, dim=1)

    def _check_x(self, func: str, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{func}: argument 'x' must be a floating torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{func}: argument 'x' must be 2-D (N, D), got shape {tuple(x.shape)}")
        if self.features is not None and x.shape[1] != self.features:
            raise ValueError(f"{func}: argument 'x' has {x.shape[1]} features, expected {self.features}")

    # -- public API ------------------------------------------------------------------------------------
    def fit(
        self,
        x: torch.Tensor | np.ndarray,
        weights: torch.Tensor | np.ndarray | None = None,
        *,
        context: torch.Tensor | np.ndarray | None = None,
    ) -> Preprocessing:
        """Fit the standardisation on training data ``x`` (N, D) (optionally weighted; and the context)."""
        self.fit_begin(int(np.shape(x)[1]) if np.ndim(x) == 2 else -1)
        self.fit_update(x, weights, context=context)
        return self.fit_end()

    def fit_begin(self, features: int) -> None:
        """Start a streamed fit (then :meth:`fit_update` per chunk, then :meth:`fit_end`)."""
        if features < 1:
            raise ValueError("Preprocessing.fit: argument 'x' must be 2-D (N, D)")
        if self.features is None:
            self._allocate(features)
        elif features != self.features:
            raise ValueError(
                f"Preprocessing.fit: argument 'x' has {features} features, expected {self.features}"
            )
        self._acc = RunningMoments(features)
        self._acc_c = RunningMoments(self.context) if self.context else None

    def fit_update(self, x, weights=None, *, context=None) -> None:
        """Accumulate one chunk of training rows."""
        func = "Preprocessing.fit"
        xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float64)
        self._check_x(func, xt)
        w = None
        if weights is not None:
            w = np.asarray(
                weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, np.float64
            )
            if w.shape != (xt.shape[0],):
                raise ValueError(
                    f"{func}: argument 'weights' must have shape ({xt.shape[0]},), got {w.shape}"
                )
        self._check_domain(func, xt)
        v, _ = self._to_v(xt)
        self._acc.update(v.numpy(), w)
        if self.context:
            if context is None:
                raise ValueError(f"{func}: argument 'context' is required ({self.context} context features)")
            c = np.asarray(
                context.detach().cpu() if isinstance(context, torch.Tensor) else context, np.float64
            )
            if c.ndim != 2 or c.shape != (xt.shape[0], self.context):
                raise ValueError(
                    f"{func}: argument 'context' must have shape ({xt.shape[0]}, {self.context}), "
                    f"got {c.shape}"
                )
            self._acc_c.update(c, w)  # type: ignore[union-attr]

    def fit_end(self) -> Preprocessing:
        """Finish a streamed fit: set the buffers."""
        acc = self._acc
        if self.standardize:
            std = acc.std
            std = np.where(std > 0, std, 1.0)
            self.mean.copy_(torch.from_numpy(acc.mean))
            self.std.copy_(torch.from_numpy(std))
        if self._acc_c is not None:
            cstd = self._acc_c.std
            self.context_mean.copy_(torch.from_numpy(self._acc_c.mean))
            self.context_std.copy_(torch.from_numpy(np.where(cstd > 0, cstd, 1.0)))
        self.fitted.fill_(1)
        del self._acc, self._acc_c
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``x`` (N, D) -> ``(u, logabsdet)``, per-row :math:`\log|\det\partial u/\partial x|`."""
        func = "Preprocessing.forward"
        self._check_x(func, x)
        if self.features is None:
            raise ValueError(f"{func}: the preprocessing is not fitted (call fit first)")
        self._check_domain(func, x)
        v, ld = self._to_v(x)
        u = (v - self.mean) / self.std
        return u, ld - torch.log(self.std).sum()

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` (N, D) -> ``x`` (clipped to the closed bounds)."""
        self._check_x("Preprocessing.inverse", u)
        return self._from_v(u * self.std + self.mean)

    def inverse_and_log_det(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``u`` -> ``x`` and :math:`\log|\det\partial u/\partial x|` at ``x``, from ``v`` (stable at
        the edges: for the logit :math:`-\log(b-a) - \log\sigma(v) - \log\sigma(-v)`)."""
        self._check_x("Preprocessing.inverse_and_log_det", u)
        assert self.bounds is not None
        v = u * self.std + self.mean
        ld = -torch.log(self.std).sum().expand(u.shape[0])
        for j in range(v.shape[1]):
            lo, hi = self.bounds[j]
            c = v[:, j]
            if lo is not None and hi is not None:
                ld = ld - math.log(hi - lo) - nn.functional.logsigmoid(c) - nn.functional.logsigmoid(-c)
            elif j in self.log or lo is not None or hi is not None:
                ld = ld - c
        return self._from_v(v), ld

    def forward_context(self, context: torch.Tensor) -> torch.Tensor:
        """Standardise context features (any shape ``(..., C)``)."""
        return (context - self.context_mean) / self.context_std

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description including the fitted constants."""
        return {
            "standardize": self.standardize,
            "log": list(self.log),
            "bounds": None if self.bounds is None else [list(b) for b in self.bounds],
            "features": self.features,
            "context": self.context,
            "fitted": bool(self.fitted),
            "mean": [float(v) for v in self.mean.tolist()],
            "std": [float(v) for v in self.std.tolist()],
            "context_mean": [float(v) for v in self.context_mean.tolist()],
            "context_std": [float(v) for v in self.context_std.tolist()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, dtype: torch.dtype | None = None) -> Preprocessing:
        """Inverse of :meth:`to_dict` (constants included), buffers in ``dtype`` (default: torch's default).

        The constants of ``to_dict`` are float64; in a float32 model they are rounded (a model file's
        tensors, loaded with ``load_state_dict``, carry them exactly in the model's dtype).
        """
        p = cls(
            standardize=d.get("standardize", True),
            log=d.get("log", ()),
            bounds=d.get("bounds"),
            features=d.get("features"),
            context=d.get("context", 0),
        )
        if dtype is not None:
            p.to(dtype)
        with torch.no_grad():
            for name in ("mean", "std", "context_mean", "context_std"):
                if d.get(name) is not None and len(d[name]) == getattr(p, name).numel():
                    getattr(p, name).copy_(torch.tensor(d[name], dtype=torch.float64))
            p.fitted.fill_(1 if d.get("fitted") else 0)
        return p

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, standardize={self.standardize}, log={list(self.log)}, "
            f"context={self.context}"
        )
