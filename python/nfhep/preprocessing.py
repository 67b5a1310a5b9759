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


#: Relative tolerance of the match of a value to a discrete value or a spike:
#: ``|x - v| <= MATCH_TOL * max(1, |v|)`` (float32 data read back from ROOT match exactly).
MATCH_TOL = 1e-5

_KINDS = ("periodic", "discrete", "spike")
_KEYS = {
    "periodic": {"kind", "period", "shift", "relative_to"},
    "discrete": {"kind", "values"},
    "spike": {"kind", "value", "cell", "split"},
}


def _norm_kinds(kinds: Any, features: int | None) -> list[dict[str, Any] | None] | None:
    """Validate the per-feature special kinds (``None`` = the log/bound map of ``bounds``/``log``)."""
    if kinds is None:
        return None
    if isinstance(kinds, Mapping):
        if features is None:
            raise ValueError("Preprocessing: a dict of kinds needs 'features' (the number of features)")
        out: list[dict[str, Any] | None] = [None] * features
        for k, v in kinds.items():
            k = int(k)
            if not 0 <= k < features:
                raise ValueError(f"Preprocessing: kinds for feature {k}, but there are {features} features")
            out[k] = v
        kinds = out
    res: list[dict[str, Any] | None] = []
    for j, k in enumerate(kinds):
        if k is None:
            res.append(None)
            continue
        if not isinstance(k, Mapping) or k.get("kind") not in _KINDS:
            raise ValueError(
                f"Preprocessing: kinds[{j}] must be null or an object with kind in {_KINDS}, got {k!r}"
            )
        kind = k["kind"]
        unknown = sorted(set(k) - _KEYS[kind])
        if unknown:
            raise ValueError(
                f"Preprocessing: kinds[{j}] ({kind}) has unknown key(s) {unknown}; allowed: "
                f"{sorted(_KEYS[kind])}"
            )
        if kind == "periodic":
            a, b = (float(t) for t in k["period"])
            if not (math.isfinite(a) and math.isfinite(b) and a < b):
                raise ValueError(
                    f"Preprocessing: kinds[{j}].period = {k['period']!r} needs finite low < high"
                )
            shift = float(k.get("shift", 0.0))
            if not math.isfinite(shift):
                raise ValueError(f"Preprocessing: kinds[{j}].shift must be finite")
            entry: dict[str, Any] = {"kind": kind, "period": [a, b], "shift": shift}
            if k.get("relative_to") is not None:
                r = k["relative_to"]
                if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
                    raise ValueError(
                        f"Preprocessing: kinds[{j}].relative_to must be a feature index, got {r!r}"
                    )
                entry["relative_to"] = int(r)
            res.append(entry)
        elif kind == "discrete":
            vals = [float(t) for t in k["values"]]
            if (
                not vals
                or any(not math.isfinite(t) for t in vals)
                or any(not vals[i] < vals[i + 1] for i in range(len(vals) - 1))
            ):
                raise ValueError(
                    f"Preprocessing: kinds[{j}].values must be a non-empty increasing list of finite numbers"
                )
            res.append({"kind": kind, "values": vals})
        else:  # spike
            v = float(k["value"])
            c0, c1 = (float(t) for t in k["cell"])
            split = float(k["split"])
            if not all(math.isfinite(t) for t in (v, c0, c1, split)) or not c0 < c1 <= split:
                raise ValueError(
                    f"Preprocessing: kinds[{j}] (spike) needs finite value, cell [c0, c1] and split with "
                    f"c0 < c1 <= split, got {k!r}"
                )
            res.append({"kind": kind, "value": v, "cell": [c0, c1], "split": split})
    for j, k in enumerate(res):
        if k is None or k.get("relative_to") is None:
            continue
        r = k["relative_to"]
        ref = res[r] if 0 <= r < len(res) else None
        if (
            r == j
            or ref is None
            or ref["kind"] != "periodic"
            or ref.get("relative_to") is not None
            or ref["period"] != k["period"]
        ):
            raise ValueError(
                f"Preprocessing: kinds[{j}].relative_to = {r} must name another periodic feature with the "
                f"same period {k['period']} that is not itself relative to a feature"
            )
    return res


def _match(col: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest of the sorted ``values`` and whether ``col`` matches it (``MATCH_TOL``)."""
    idx = torch.searchsorted(values, col.contiguous()).clamp(0, values.numel() - 1)
    lower = (idx - 1).clamp_min(0)
    closer_low = (col - values[lower]).abs() < (values[idx] - col).abs()
    k = torch.where(closer_low, lower, idx)
    v = values[k]
    ok = (col - v).abs() <= MATCH_TOL * v.abs().clamp_min(1.0)
    return k, ok


def _norm_quantile(quantile: Any, features: int | None) -> list[dict[str, list[float]] | None] | None:
    """Validate the per-feature monotone piecewise-linear maps ``{"v": knots, "u": knots}``."""
    if quantile is None:
        return None
    if isinstance(quantile, Mapping):
        if features is None:
            raise ValueError("Preprocessing: a dict of quantile maps needs 'features'")
        out: list[Any] = [None] * features
        for k, v in quantile.items():
            out[int(k)] = v
        quantile = out
    res: list[dict[str, list[float]] | None] = []
    for j, q in enumerate(quantile):
        if q is None:
            res.append(None)
            continue
        a = [float(t) for t in q["v"]]
        b = [float(t) for t in q["u"]]
        ok = len(a) == len(b) >= 2 and all(math.isfinite(t) for t in a + b)
        ok = ok and all(a[i] < a[i + 1] and b[i] < b[i + 1] for i in range(len(a) - 1))
        # strictly increasing in float32 too (a float32 model rounds the knots)
        a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
        ok = ok and bool(np.all(np.diff(a32) > 0) and np.all(np.diff(b32) > 0))
        if not ok:
            raise ValueError(
                f"Preprocessing: quantile[{j}] needs lists 'v' and 'u' of the same length >= 2, finite and "
                "strictly increasing (also in float32)"
            )
        res.append({"v": a, "u": b})
    return res


def _pwl(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone piecewise-linear map through knots ``(a_i, b_i)``, linear beyond the ends: ``(w, log w')``."""
    i = (torch.searchsorted(a, v.contiguous(), right=True) - 1).clamp(0, a.numel() - 2)
    slope = (b[1:] - b[:-1]) / (a[1:] - a[:-1])
    s = slope[i]
    return b[i] + s * (v - a[i]), torch.log(s)


def _pwl_inv(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`_pwl`: ``(v, log w'(v))``."""
    i = (torch.searchsorted(b, w.contiguous(), right=True) - 1).clamp(0, b.numel() - 2)
    slope = (b[1:] - b[:-1]) / (a[1:] - a[:-1])
    s = slope[i]
    return a[i] + (w - b[i]) / s, torch.log(s)


class Preprocessing(nn.Module):
    """Per-feature maps (bounds / log, periodic, discrete, spike) and standardisation.

    Parameters
    ----------
    standardize : bool
        Standardise each (transformed) feature to zero mean, unit variance.
    log : sequence of int
        Indices of strictly positive features to take the log of.
    bounds : sequence of (low, high) or dict {index: (low, high)}, optional
        Physical bounds; ``None``/``±inf`` for an open side. A feature cannot be both ``log`` and bounded
        (``log`` is the bound ``(0, None)``).
    kinds : sequence or dict {index: dict}, optional
        Special per-feature maps (see ``docs/model-format.md`` section 5):
        ``{"kind": "periodic", "period": [a, b], "shift": s}`` (wrapped into ``[a, b)`` after a shift,
        then the two-sided map of ``bounds[j]``, which must contain ``[a, b]``); with
        ``"relative_to": r`` the angle relative to periodic feature ``r`` (``x_j - x_r - s``, wrapped: a
        shear of the torus with unit Jacobian; ``r`` must have the same period and not be relative);
        ``{"kind": "discrete", "values": [...]}`` (dequantised: the value's index plus a uniform in
        ``[0, 1)`` when training, the cell centre when evaluating; ``sample`` rounds back);
        ``{"kind": "spike", "value": s, "cell": [c0, c1], "split": t}`` (rows equal to ``s`` are spread
        over the cell, the others take the continuum map of ``bounds[j]``/``log``).
    data_range : sequence of (min, max), optional
        The training data's range per feature (for the out-of-range count of samples).
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
        kinds: Any = None,
        data_range: Any = None,
        quantile: Any = None,
        features: int | None = None,
        context: int = 0,
    ):
        super().__init__()
        self.standardize = bool(standardize)
        self.log = tuple(sorted(int(i) for i in log))
        self.bounds = _norm_bounds(bounds, features)
        if features is None and self.bounds is not None:
            features = len(self.bounds)
        self.kinds = _norm_kinds(kinds, features)
        if features is None and self.kinds is not None:
            features = len(self.kinds)
        self.quantile = _norm_quantile(quantile, features)
        if features is None and self.quantile is not None:
            features = len(self.quantile)
        self.data_range = None
        if data_range is not None:
            self.data_range = [(float(a), float(b)) for a, b in data_range]
            if any(not (math.isfinite(a) and math.isfinite(b) and a <= b) for a, b in self.data_range):
                raise ValueError(
                    "Preprocessing: data_range must hold finite (min, max) pairs with min <= max"
                )
        self.context = int(context)
        self.features: int | None = None
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.ones(0))
        self.register_buffer("context_mean", torch.zeros(self.context))
        self.register_buffer("context_std", torch.ones(self.context))
        self.register_buffer("fitted", torch.zeros(()))
        if features is not None:
            self._allocate(int(features))

    @property
    def extended(self) -> bool:
        """Whether this preprocessing uses the version-2 keys (``kinds``, ``data_range``)."""
        return (
            self.data_range is not None
            or (self.kinds is not None and any(k is not None for k in self.kinds))
            or (self.quantile is not None and any(q is not None for q in self.quantile))
        )

    @property
    def dequantized(self) -> bool:
        """Whether some feature is discrete or has a spike (``log_prob`` is then a mass times a density)."""
        return self.kinds is not None and any(k is not None and k["kind"] != "periodic" for k in self.kinds)

    def _allocate(self, features: int) -> None:
        if self.bounds is not None and len(self.bounds) != features:
            raise ValueError(f"Preprocessing: {len(self.bounds)} bounds given for {features} features")
        if self.bounds is None:
            self.bounds = [(None, None)] * features
        if self.kinds is not None and len(self.kinds) != features:
            raise ValueError(f"Preprocessing: {len(self.kinds)} kinds given for {features} features")
        if self.kinds is None:
            self.kinds = [None] * features
        if self.quantile is not None and len(self.quantile) != features:
            raise ValueError(
                f"Preprocessing: {len(self.quantile)} quantile maps given for {features} features"
            )
        if self.quantile is None:
            self.quantile = [None] * features
        if self.data_range is not None and len(self.data_range) != features:
            raise ValueError(
                f"Preprocessing: {len(self.data_range)} data_range pairs for {features} features"
            )
        bad = [i for i in self.log if not 0 <= i < features]
        if bad:
            raise ValueError(f"Preprocessing: log feature indices {bad} out of range for {features} features")
        both = [i for i in self.log if self.bounds[i] != (None, None)]
        if both:
            raise ValueError(f"Preprocessing: features {both} are both 'log' and bounded; choose one")
        for j, k in enumerate(self.kinds):
            if k is None:
                continue
            lo, hi = self.bounds[j]
            if k["kind"] == "periodic":
                a, b = k["period"]
                if j in self.log or lo is None or hi is None or not (lo <= a and b <= hi):
                    raise ValueError(
                        f"Preprocessing: periodic feature {j} needs two-sided bounds containing its period "
                        f"{k['period']}, got {self.bounds[j]}"
                    )
            elif k["kind"] == "discrete" and (j in self.log or (lo, hi) != (None, None)):
                raise ValueError(
                    f"Preprocessing: discrete feature {j} cannot also be log-transformed or bounded"
                )
        dtype = self.mean.dtype
        self.features = features
        self.mean = torch.zeros(features, dtype=dtype, device=self.mean.device)
        self.std = torch.ones(features, dtype=dtype, device=self.std.device)

    # -- the element-wise maps ----------------------------------------------------------------------
    def _continuum(self, j: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The log/bound map of feature ``j``: ``(v, log|dv/dx|, outside)`` (``v`` = 0 where outside)."""
        assert self.bounds is not None
        lo, hi = self.bounds[j]
        if j in self.log:
            ok = c > 0
        elif lo is not None and hi is not None:
            ok = (c > lo) & (c < hi)
        elif lo is not None:
            ok = c > lo
        elif hi is not None:
            ok = c < hi
        else:
            return c, torch.zeros_like(c), torch.zeros_like(c, dtype=torch.bool)
        if j in self.log:
            safe = torch.where(ok, c, torch.ones_like(c))
            v = torch.log(safe)
            ld = -v
        elif lo is not None and hi is not None:
            safe = torch.where(ok, c, torch.full_like(c, 0.5 * (lo + hi)))
            a, b = torch.log(safe - lo), torch.log(hi - safe)
            v = a - b
            ld = math.log(hi - lo) - a - b
        elif lo is not None:
            safe = torch.where(ok, c, torch.full_like(c, lo + 1.0))
            v = torch.log(safe - lo)
            ld = -v
        else:
            safe = torch.where(ok, c, torch.full_like(c, hi - 1.0))
            v = torch.log(hi - safe)
            ld = -v
        zero = torch.zeros_like(v)
        return torch.where(ok, v, zero), torch.where(ok, ld, zero), ~ok

    def _continuum_inv(self, j: int, c: torch.Tensor) -> torch.Tensor:
        assert self.bounds is not None
        lo, hi = self.bounds[j]
        if j in self.log:
            return torch.exp(c)
        if lo is not None and hi is not None:
            return (lo + (hi - lo) * torch.sigmoid(c)).clamp(lo, hi)
        if lo is not None:
            return (lo + torch.exp(c)).clamp_min(lo)
        if hi is not None:
            return (hi - torch.exp(c)).clamp_max(hi)
        return c

    def _ref(self, j: int) -> int | None:
        """The feature that periodic feature ``j`` is relative to (``None``: not relative)."""
        k = self.kinds[j] if self.kinds is not None else None
        return None if k is None else k.get("relative_to")

    def _col_to_v(
        self, j: int, x: torch.Tensor, noise: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature ``j``'s map of the raw rows ``x`` ``(N, D)`` to ``v``: ``(v, log|dv/dx_j|, outside
        the support)`` (all of ``x`` for a periodic feature relative to another)."""
        assert self.kinds is not None
        c = x[:, j]
        k = self.kinds[j]
        if k is None:
            return self._continuum(j, c)
        kind = k["kind"]
        if kind == "periodic":
            a, b = k["period"]
            r = k.get("relative_to")
            if r is not None:
                c = c - x[:, r]
            y = a + torch.remainder(c - k["shift"] - a, b - a)
            y = torch.where(y >= b, torch.full_like(y, a), y)  # round-off of remainder at the top
            return self._continuum(j, y)
        if kind == "discrete":
            values = torch.tensor(k["values"], dtype=c.dtype, device=c.device)
            idx, ok = _match(c, values)
            eps = torch.rand_like(c) if noise else torch.full_like(c, 0.5)
            return idx.to(c.dtype) + eps, torch.zeros_like(c), ~ok
        # spike
        s = torch.tensor([k["value"]], dtype=c.dtype, device=c.device)
        _, is_s = _match(c, s)
        c0, c1 = k["cell"]
        v_c, ld_c, out_c = self._continuum(j, torch.where(is_s, torch.zeros_like(c), c))
        eps = torch.rand_like(c) if noise else torch.full_like(c, 0.5)
        v = torch.where(is_s, c0 + (c1 - c0) * eps, v_c)
        ld = torch.where(is_s, torch.full_like(c, math.log(c1 - c0)), ld_c)
        return v, ld, out_c & ~is_s

    def _col_from_v(self, j: int, v: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """Feature ``j``'s map ``v -> x``; ``ref`` is the raw reference feature of a relative angle."""
        assert self.kinds is not None
        k = self.kinds[j]
        if k is None:
            return self._continuum_inv(j, v)
        kind = k["kind"]
        if kind == "periodic":
            a, b = k["period"]
            y = self._continuum_inv(j, v)
            if ref is not None:
                y = y + ref
            x = a + torch.remainder(y + k["shift"] - a, b - a)
            return torch.where(x >= b, torch.full_like(x, a), x)
        if kind == "discrete":
            values = torch.tensor(k["values"], dtype=v.dtype, device=v.device)
            idx = torch.floor(torch.nan_to_num(v, nan=0.0)).clamp(0, values.numel() - 1).long()
            return values[idx]
        return torch.where(v < k["split"], torch.full_like(v, k["value"]), self._continuum_inv(j, v))

    def _outside_message(self, func: str, j: int, nbad: int) -> str:
        assert self.kinds is not None and self.bounds is not None
        k = self.kinds[j]
        if k is not None and k["kind"] == "discrete":
            return (
                f"{func}: feature {j} is discrete with values {k['values']} but {nbad} value(s) are none of "
                "them (unseen values have zero probability under the model)"
            )
        extra = f" and not its spike value {k['value']}" if k is not None and k["kind"] == "spike" else ""
        if j in self.log:
            return (
                f"{func}: feature {j} is log-transformed but {nbad} value(s) are not strictly positive{extra}"
            )
        lo, hi = self.bounds[j]
        return (
            f"{func}: feature {j} has {nbad} value(s) outside its bounds ({lo}, {hi}){extra} "
            "(open interval; these have zero density under the model)"
        )

    def _to_v(
        self, x: torch.Tensor, func: str = "Preprocessing", noise: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cols, ld = [], x.new_zeros(x.shape[0])
        for j in range(x.shape[1]):
            v, ldj, out = self._col_to_v(j, x, noise)
            nbad = int(out.sum())
            if nbad:
                raise ValueError(self._outside_message(func, j, nbad))
            q = self.quantile[j] if self.quantile is not None else None
            if q is not None:
                v, lq = _pwl(*self._knots(j, v), v)
                ldj = ldj + lq
            cols.append(v)
            ld = ld + ldj
        return torch.stack(cols, dim=1), ld

    def _knots(self, j: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.quantile is not None
        q = self.quantile[j]
        assert q is not None
        return (
            torch.tensor(q["v"], dtype=like.dtype, device=like.device),
            torch.tensor(q["u"], dtype=like.dtype, device=like.device),
        )

    def _unquantile(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``w`` (after the quantile maps) -> ``v`` and the maps' per-row log-derivative at ``v``."""
        if self.quantile is None or all(q is None for q in self.quantile):
            return w, w.new_zeros(w.shape[0])
        cols, ld = [], w.new_zeros(w.shape[0])
        for j in range(w.shape[1]):
            c = w[:, j]
            if self.quantile[j] is not None:
                c, lq = _pwl_inv(*self._knots(j, c), c)
                ld = ld + lq
            cols.append(c)
        return torch.stack(cols, dim=1), ld

    def _from_v(self, w: torch.Tensor) -> torch.Tensor:
        v, _ = self._unquantile(w)
        return self._cols_from_v(v)

    def _cols_from_v(self, v: torch.Tensor) -> torch.Tensor:
        """All features ``v -> x``: the relative angles after the features they are relative to."""
        cols: list[torch.Tensor | None] = [None] * v.shape[1]
        order = sorted(range(v.shape[1]), key=lambda j: self._ref(j) is not None)
        for j in order:
            r = self._ref(j)
            cols[j] = self._col_from_v(j, v[:, j], None if r is None else cols[r])
        return torch.stack(cols, dim=1)  # type: ignore[arg-type]

    def support(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each row lies inside the support (bounds, log > 0, allowed discrete values), ``(N,)``."""
        self._check_x("Preprocessing.support", x)
        ok = torch.isfinite(x).all(dim=1)
        xs = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        for j in range(x.shape[1]):
            ok &= ~self._col_to_v(j, xs, False)[2]
        return ok

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
        """Accumulate one chunk of training rows (discrete and spike rows at their cell centres)."""
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
        v, _ = self._to_v(xt, func)
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
        r"""``x`` (N, D) -> ``(u, logabsdet)``, per-row :math:`\log|\det\partial u/\partial x|`.

        In training mode discrete and spike rows are dequantised with uniform noise (their log-density
        is then a lower bound of the log-mass); in evaluation mode they sit at their cell centres.
        """
        func = "Preprocessing.forward"
        self._check_x(func, x)
        if self.features is None:
            raise ValueError(f"{func}: the preprocessing is not fitted (call fit first)")
        v, ld = self._to_v(x, func, noise=self.training)
        u = (v - self.mean) / self.std
        return u, ld - torch.log(self.std).sum()

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` (N, D) -> ``x`` (clipped to the closed bounds, discrete values and spikes restored)."""
        self._check_x("Preprocessing.inverse", u)
        return self._from_v(u * self.std + self.mean)

    def inverse_and_log_det(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``u`` -> ``x`` and :math:`\log|\det\partial u/\partial x|` at ``x``, from ``v`` (stable at
        the edges: for the logit :math:`-\log(b-a) - \log\sigma(v) - \log\sigma(-v)`).

        For discrete and spike features this is the Jacobian of the dequantised density at the drawn
        ``v`` (discrete: 0, spike rows: ``log(c1 - c0)``); :meth:`nfhep.model.Model.sample_and_log_prob`
        evaluates such models' ``log_prob`` at the returned events instead.
        """
        self._check_x("Preprocessing.inverse_and_log_det", u)
        assert self.bounds is not None and self.kinds is not None
        w = u * self.std + self.mean
        v, lq = self._unquantile(w)
        ld = -torch.log(self.std).sum().expand(u.shape[0]) + lq
        for j in range(v.shape[1]):
            lo, hi = self.bounds[j]
            c = v[:, j]
            k = self.kinds[j]
            if k is not None and k["kind"] == "discrete":
                continue
            if lo is not None and hi is not None:
                lj = -math.log(hi - lo) - nn.functional.logsigmoid(c) - nn.functional.logsigmoid(-c)
            elif j in self.log or lo is not None or hi is not None:
                lj = -c
            else:
                lj = torch.zeros_like(c)
            if k is not None and k["kind"] == "spike":
                lj = torch.where(
                    c < k["split"], torch.full_like(c, math.log(k["cell"][1] - k["cell"][0])), lj
                )
            ld = ld + lj
        return self._cols_from_v(v), ld

    def outside_range(self, x: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
        """Rows beyond the training range by more than ``margin`` × its width in some feature, ``(N,)``.

        All ``False`` when the training range is not known (``data_range`` unset).
        """
        if self.data_range is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        lo = torch.tensor([a for a, _ in self.data_range], dtype=x.dtype, device=x.device)
        hi = torch.tensor([b for _, b in self.data_range], dtype=x.dtype, device=x.device)
        m = margin * (hi - lo)
        return ((x < lo - m) | (x > hi + m)).any(dim=1)

    def forward_context(self, context: torch.Tensor) -> torch.Tensor:
        """Standardise context features (any shape ``(..., C)``)."""
        return (context - self.context_mean) / self.context_std

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description including the fitted constants.

        ``kinds`` and ``data_range`` appear only when used (they make a version-2 model file).
        """
        d: dict[str, Any] = {
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
        if self.extended:
            d["kinds"] = None if self.kinds is None else [None if k is None else dict(k) for k in self.kinds]
            d["data_range"] = None if self.data_range is None else [list(r) for r in self.data_range]
            d["quantile"] = (
                None if self.quantile is None else [None if q is None else dict(q) for q in self.quantile]
            )
        return d

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
            kinds=d.get("kinds"),
            quantile=d.get("quantile"),
            data_range=d.get("data_range"),
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
        special = {} if self.kinds is None else {j: k["kind"] for j, k in enumerate(self.kinds) if k}
        return (
            f"features={self.features}, standardize={self.standardize}, log={list(self.log)}, "
            f"context={self.context}" + (f", kinds={special}" if special else "")
        )
