r"""Choose each feature's preprocessing from the training data (``nfhep train``'s automatic preprocessing).

:func:`analyze_features` classifies every column of the training data and returns a
:class:`FeatureAnalysis`: one :class:`FeatureDecision` per feature (class, transform, the reason, the
fitted constants) that :meth:`FeatureAnalysis.preprocessing_kwargs` turns into the arguments of
:class:`nfhep.preprocessing.Preprocessing` (and :meth:`nfhep.model.Model.create`'s ``preprocess``).

Classes, tested in this order (each feature, ``n`` finite training values):

``discrete``
    at most ``max_discrete`` (20) distinct values (tag working points, multiplicities, flags):
    dequantised, ``sample`` returns only the allowed values.
``mixed``
    one value holds at least ``spike_fraction`` (2%) of the rows and at least 10 rows, the rest is a
    continuum (zero-padded jets, a default value): the spike is a cell below the continuum, the
    continuum is classified on its own by the rules below.
``periodic``
    the name contains ``phi`` (case-insensitive) and the values fill :math:`[-\pi, \pi]` (range at least
    95% of the period): wrapped after a
    shift that puts the cut at the emptiest of 36 bins, then a logit on the period (a declared period
    works for any name). Two periodic features whose difference is concentrated (``phi_MET`` and
    ``phi_lepton``; mean resultant length of the difference >= 0.2) are learnt as the first angle and the
    wrapped difference (``relative_to``; unit Jacobian).
``bounded`` / ``lower edge`` / ``upper edge``
    a sharp edge at the minimum (maximum): at least 0.1% of the rows (and at least 8) within
    ``0.1 × IQR`` of it (a tail has one or two rows there at any sample size: a normal, Student-t or
    Laplace tail never passes, a normal cut at 2.3σ does from 5,000 rows on), and at least half as many
    as in the next window inwards less one Poisson standard deviation (a tail thins out towards its end,
    an edge does not). A positive feature whose lower edge lies within that window of 0 and whose density
    rises away from it (a mass, a lognormal) has its edge at 0: :math:`\log x`. Both edges: a logit on
    ``[min - m, max + m]``; one edge: :math:`\log(x - a)` with ``a = min - m`` (or :math:`\log(b - x)`). The
    margin ``m`` is five mean spacings of the ten values nearest the extreme (at least ``10⁻³ ×`` the
    range): new data from the same source reach beyond the training extreme by about one spacing, and
    values beyond a bound have zero density. Declare the physical bound (``--bounds``) when it is known.
``positive heavy-tailed``
    no edge, all values > 0, ``(q99.9 - q50)/IQR > 4`` (an exponential has 5.6, a Gaussian 2.3) and one
    mode (:func:`count_modes`; a far small component of a mixture is not a tail): :math:`\log x`.
``continuous``
    anything else: identity.

Then (``quantile=True``, the default) a monotone piecewise-linear map through the empirical quantiles
of each feature's mapped values onto a standard normal ("Gaussianised"; end knots at the sample's minimum
and maximum, at the normal quantiles of 1/(2N) and 1 - 1/(2N), linear beyond them), so
that even an affine flow starts from Gaussian marginals; not for a continuous feature with several
separated modes (:func:`count_modes`), whose Gaussianised components would be thin curved bands that an
affine flow learns far worse than the raw mixture (CMoG, D = 32, MAF of 2 bijectors 3x128 trained to
early stopping: median KS p 0.40 without the maps, 0.01 with them), unless declared
``quantile = true``. ``quantile="mixed"`` (the spline families' default in ``nfhep train``) maps only
the mixed features. Standardisation follows in every case.

Declared kinds (``declared={name: {...}}``: from ``--preprocess config.toml``, ``--periodic``,
``--discrete``, ``--bounds``, ``--log-features``) replace the automatic decision for that feature.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FeatureDecision",
    "FeatureAnalysis",
    "analyze_features",
    "count_modes",
    "DECLARABLE_KINDS",
    "QUANTILE_MODES",
]

#: ``analyze_features(quantile=...)``: every feature, none, or only the mixed (spike + continuum) ones.
QUANTILE_MODES = (True, False, "mixed")

#: The kinds a user can declare for a feature (``--preprocess`` TOML ``kind = ...``).
DECLARABLE_KINDS = (
    "auto",
    "continuous",
    "positive",
    "bounded",
    "lower",
    "upper",
    "periodic",
    "discrete",
    "mixed",
)

_PHI = re.compile("phi", re.IGNORECASE)


@dataclass
class FeatureDecision:
    """The preprocessing chosen for one feature."""

    name: str
    kind: str
    transform: str
    reason: str
    declared: bool = False
    log: bool = False
    bounds: tuple[float | None, float | None] = (None, None)
    special: dict[str, Any] | None = None
    data_range: tuple[float, float] = (0.0, 0.0)
    quantile: dict[str, list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "transform": self.transform,
            "reason": self.reason,
            "declared": self.declared,
        }


@dataclass
class FeatureAnalysis:
    """The per-feature decisions of :func:`analyze_features`."""

    decisions: list[FeatureDecision]
    n_rows: int

    @property
    def features(self) -> list[str]:
        return [d.name for d in self.decisions]

    def preprocessing_kwargs(self) -> dict[str, Any]:
        """``log``, ``bounds``, ``kinds``, ``data_range`` for :class:`~nfhep.preprocessing.Preprocessing`."""
        return {
            "log": [j for j, d in enumerate(self.decisions) if d.log],
            "bounds": [d.bounds for d in self.decisions],
            "kinds": [d.special for d in self.decisions],
            "data_range": [d.data_range for d in self.decisions],
            "quantile": [d.quantile for d in self.decisions],
        }

    def table(self) -> str:
        """The decisions as an aligned text table (printed by ``nfhep train``)."""
        rows = [("feature", "class", "transform", "why")]
        for d in self.decisions:
            t = d.transform + (f", Gaussianised ({len(d.quantile['v'])} knots)" if d.quantile else "")
            rows.append((d.name, d.kind + (" (declared)" if d.declared else ""), t, d.reason))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]
        lines.insert(1, "-" * (sum(w) + 6 + max(len(r[3]) for r in rows)))
        return "\n".join(lines)

    def to_list(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.decisions]


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _edges(c: np.ndarray) -> tuple[bool, bool, str, bool]:
    """``(lower edge, upper edge, why, rising from 0)``: the last is whether the minimum lies within the
    window of 0 (and above it) with fewer rows in the first window than in the next (a mass, a lognormal)."""
    n = c.size
    q25, q75 = np.quantile(c, [0.25, 0.75])
    iqr = q75 - q25
    win = 0.1 * float(iqr if iqr > 0 else np.std(c))
    if not win > 0:
        return False, False, "constant", False
    lo, hi = float(c.min()), float(c.max())
    n_lo = int(np.count_nonzero(c <= lo + win))
    n_hi = int(np.count_nonzero(c >= hi - win))
    # the next window inwards: at an edge the density does not fall towards the end (a tail does)
    n_lo2 = int(np.count_nonzero((c > lo + win) & (c <= lo + 2 * win)))
    n_hi2 = int(np.count_nonzero((c < hi - win) & (c >= hi - 2 * win)))
    # a tail has O(1) rows within the window of its extreme whatever n is; an edge has a fixed fraction
    need = max(8, math.ceil(0.001 * n))
    # "not thinning out": at least half the next window's count, less one Poisson standard deviation
    return (
        n_lo >= need and n_lo >= 0.5 * n_lo2 - math.sqrt(n_lo2),
        n_hi >= need and n_hi >= 0.5 * n_hi2 - math.sqrt(n_hi2),
        f"{100 * n_lo / n:.1f}% at the min, {100 * n_hi / n:.1f}% at the max",
        0 < lo <= win and n_lo < n_lo2,
    )


def _margin(c: np.ndarray, lo: float, hi: float, side: str) -> float:
    """How far beyond the sample's extreme a detected edge is put: five mean spacings of the ten values
    nearest that extreme (the true edge lies within one spacing or so of the sample extreme; a new sample
    would reach about that far), at least 10^-3 of the range."""
    k = min(10, c.size - 1)
    if side == "low":
        ext = np.partition(c, k)[: k + 1]
        spacing = (float(np.max(ext)) - lo) / k
    else:
        ext = np.partition(c, c.size - 1 - k)[c.size - 1 - k :]
        spacing = (hi - float(np.min(ext))) / k
    return max(5.0 * spacing, 1e-3 * (hi - lo), 1e-12 * max(1.0, abs(lo), abs(hi)))


def _heavy_upper(c: np.ndarray) -> tuple[bool, float]:
    q25, q50, q75, q999 = np.quantile(c, [0.25, 0.5, 0.75, 0.999])
    iqr = q75 - q25
    if not iqr > 0:
        return False, 0.0
    r = float((q999 - q50) / iqr)
    return r > 4.0, r


def count_modes(v: np.ndarray, *, bins: int = 256, min_dip: float = 0.3, z: float = 5.0) -> int:
    """The number of significant modes of a sample's density (1 for a unimodal one).

    A histogram of ``bins`` bins over the central 99.8% of ``v``, smoothed with a Gaussian kernel of
    Silverman's width from the robust scale (``0.9 min(sd, IQR/1.34) n^(-1/5)``, at least 1.5 bins). A
    local maximum counts when its prominence (its height above the higher of the two lowest points that
    separate it from a higher maximum, or from the ends) is at least ``min_dip`` of its height and ``z``
    Poisson standard deviations of the smoothed count there. A Gaussian, an exponential, a lognormal, a
    uniform: 1; a mixture of separated Gaussians: one per component that holds enough rows to be seen.
    """
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = v.size
    if n < 50:
        return 1
    lo, q25, q75, hi = np.quantile(v, [0.001, 0.25, 0.75, 0.999])
    if not hi > lo:
        return 1
    counts, _ = np.histogram(v, bins=bins, range=(lo, hi))
    width = (hi - lo) / bins
    scale = min(float(np.std(v)), float(q75 - q25) / 1.34) or float(np.std(v))
    h = max(0.9 * scale * n**-0.2, 1.5 * width)
    hb = h / width
    k = np.arange(-int(math.ceil(4 * hb)), int(math.ceil(4 * hb)) + 1)
    ker = np.exp(-0.5 * (k / hb) ** 2)
    ker /= ker.sum()
    f = np.convolve(np.pad(counts.astype(np.float64), len(k) // 2, mode="constant"), ker, mode="valid")
    # the smoothed count's Poisson variance: sum of ker^2 * counts ~ f * sum(ker^2)
    noise = np.sqrt(np.maximum(f, 1.0) * float(np.sum(ker**2)))
    peaks = [
        i for i in range(len(f)) if (i == 0 or f[i] > f[i - 1]) and (i == len(f) - 1 or f[i] >= f[i + 1])
    ]
    if len(peaks) <= 1:
        return 1
    modes = 0
    for i in peaks:
        left = f[: i + 1]
        right = f[i:]
        higher_l = np.nonzero(left > f[i])[0]
        higher_r = np.nonzero(right > f[i])[0]
        base_l = float(left[higher_l[-1] :].min()) if higher_l.size else float(left.min())
        base_r = float(right[: higher_r[0] + 1].min()) if higher_r.size else float(right.min())
        if not higher_l.size and not higher_r.size:  # the highest maximum
            modes += 1
            continue
        if higher_l.size and higher_r.size:
            base = max(base_l, base_r)
        else:
            base = base_l if higher_l.size else base_r
        prom = f[i] - base
        if prom >= min_dip * f[i] and prom >= z * noise[i]:
            modes += 1
    return max(modes, 1)


def _continuum(name: str, c: np.ndarray, decl: Mapping[str, Any] | None) -> FeatureDecision:
    """Classify a continuous column (no discrete/spike test)."""
    lo, hi = float(c.min()), float(c.max())
    rng = (lo, hi)
    kind = (decl or {}).get("kind", "auto")
    if kind in ("bounded", "lower", "upper") and decl is not None:
        a, b = decl.get("low"), decl.get("high")
        a = None if a is None or a == -math.inf else float(a)
        b = None if b is None or b == math.inf else float(b)
        if kind == "bounded" and (a is None or b is None):
            raise ValueError(f"feature {name!r}: kind 'bounded' needs low and high")
        if kind == "lower" and a is None:
            raise ValueError(f"feature {name!r}: kind 'lower' needs low")
        if kind == "upper" and b is None:
            raise ValueError(f"feature {name!r}: kind 'upper' needs high")
        if a is not None and b is not None and not a < b:
            raise ValueError(f"feature {name!r}: bounds need low < high, got ({a}, {b})")
        if (a is not None and lo <= a) or (b is not None and hi >= b):
            raise ValueError(
                f"feature {name!r}: declared bounds ({a}, {b}) do not contain the training data "
                f"[{_fmt(lo)}, {_fmt(hi)}] (open interval)"
            )
        if a is not None and b is not None:
            t = f"logit on ({_fmt(a)}, {_fmt(b)})"
        elif a is not None:
            t = f"log(x - {_fmt(a)})"
        else:
            t = f"log({_fmt(b)} - x)"
        return FeatureDecision(
            name,
            "bounded" if a is not None and b is not None else kind,
            t,
            "declared",
            True,
            False,
            (a, b),
            None,
            rng,
        )
    if kind == "positive":
        if not lo > 0:
            raise ValueError(
                f"feature {name!r}: declared 'positive' but its minimum is {_fmt(lo)} (must be > 0)"
            )
        return FeatureDecision(
            name, "positive heavy-tailed", "log(x)", "declared", True, True, (None, None), None, rng
        )
    if kind == "continuous":
        return FeatureDecision(
            name, "continuous", "identity", "declared", True, False, (None, None), None, rng
        )
    if kind not in ("auto",):
        raise ValueError(f"feature {name!r}: kind {kind!r} is not valid for a continuum")
    e_lo, e_hi, why, from_zero = _edges(c)
    if e_lo and not e_hi and from_zero:
        # a positive quantity rising from zero (a mass, a lognormal): the edge is at 0, where log x puts it
        # (one that is densest at 0, an exponential, keeps its edge at the minimum: log x would give it a
        # long tail towards log 0)
        heavy, r = _heavy_upper(c)
        return FeatureDecision(
            name,
            "positive heavy-tailed" if heavy else "lower edge",
            "log(x)" if heavy else "log(x - 0)",
            f"all > 0, the lower edge is at 0 ({why}), (q99.9 - q50)/IQR = {r:.1f}",
            False,
            heavy,
            (None, None) if heavy else (0.0, None),
            None,
            rng,
        )
    if why == "constant":
        return FeatureDecision(
            name, "continuous", "identity", "constant (centred only)", False, False, (None, None), None, rng
        )
    if e_lo and e_hi:
        a, b = lo - _margin(c, lo, hi, "low"), hi + _margin(c, lo, hi, "high")
        return FeatureDecision(
            name,
            "bounded",
            f"logit on ({_fmt(a)}, {_fmt(b)})",
            f"sharp edges: {why}",
            False,
            False,
            (a, b),
            None,
            rng,
        )
    if e_lo:
        a = lo - _margin(c, lo, hi, "low")
        return FeatureDecision(
            name,
            "lower edge",
            f"log(x - {_fmt(a)})",
            f"sharp lower edge: {why}",
            False,
            False,
            (a, None),
            None,
            rng,
        )
    if e_hi:
        b = hi + _margin(c, lo, hi, "high")
        return FeatureDecision(
            name,
            "upper edge",
            f"log({_fmt(b)} - x)",
            f"sharp upper edge: {why}",
            False,
            False,
            (None, b),
            None,
            rng,
        )
    heavy, r = _heavy_upper(c)
    modes = count_modes(c) if heavy and lo > 0 else 1
    if heavy and lo > 0 and modes == 1:
        return FeatureDecision(
            name,
            "positive heavy-tailed",
            "log(x)",
            f"all > 0, (q99.9 - q50)/IQR = {r:.1f} > 4",
            False,
            True,
            (None, None),
            None,
            rng,
        )
    return FeatureDecision(
        name,
        "continuous",
        "identity",
        f"no edge, (q99.9 - q50)/IQR = {r:.1f}"
        + (f" from {modes} separated modes, not a tail" if modes > 1 else ""),
        False,
        False,
        (None, None),
        None,
        rng,
    )


def _discrete(name: str, values: np.ndarray, rng, declared: bool, reason: str) -> FeatureDecision:
    vals = [float(v) for v in np.unique(values)]
    shown = ", ".join(_fmt(v) for v in vals[:6]) + (", ..." if len(vals) > 6 else "")
    return FeatureDecision(
        name,
        "discrete",
        f"dequantised over {len(vals)} values ({shown})",
        reason,
        declared,
        False,
        (None, None),
        {"kind": "discrete", "values": vals},
        rng,
    )


def _periodic(
    name: str,
    c: np.ndarray,
    period: tuple[float, float],
    declared: bool,
    reason: str,
    relative: tuple[int, str, str] | None = None,
):
    """A periodic decision; ``relative = (index, name, why)`` of the reference angle when ``c`` is the
    difference to it (``relative_to``)."""
    a, b = period
    lo, hi = float(c.min()), float(c.max())
    width = b - a
    # put the cut where the data are sparsest: the centre of the emptiest of 36 bins
    y = a + np.mod(c - a, width)
    counts, edges = np.histogram(y, bins=36, range=(a, b))
    i = int(np.argmin(counts))
    cut = 0.5 * (edges[i] + edges[i + 1])
    shift = float(np.mod(cut - a, width))  # wrap(x - shift) into [a, b) has its cut at x = cut
    if shift > 0.5 * width:
        shift -= width
    m = 1e-6 * width
    special: dict[str, Any] = {"kind": "periodic", "period": [a, b], "shift": shift}
    what, why = "", ""
    if relative is not None:
        special["relative_to"] = relative[0]
        what, why = f" (x - {relative[1]})", f"; relative to {relative[1]}: {relative[2]}"
    return FeatureDecision(
        name,
        "periodic",
        f"wrap{what} into [{_fmt(a)}, {_fmt(b)}) after a shift of {_fmt(shift)}, logit",
        reason + why + f"; cut at {_fmt(cut)} ({int(counts[i])} of {c.size} rows in its bin)",
        declared,
        False,
        (a - m, b + m),
        special,
        (lo, hi),
        extra={"why": reason},
    )


def _spike_cell(cont: FeatureDecision, c: np.ndarray) -> tuple[float, float, float]:
    """The spike's cell in the continuum's v units: below the continuum's smallest v."""
    if cont.log:
        v = np.log(c)
    else:
        a, b = cont.bounds
        if a is not None and b is not None:
            v = np.log(c - a) - np.log(b - c)
        elif a is not None:
            v = np.log(c - a)
        elif b is not None:
            v = np.log(b - c)
        else:
            v = c
    vmin = float(v.min())
    sd = float(np.std(v))
    w = 0.5 * sd if sd > 0 else 1.0
    c1 = vmin - 0.5 * w
    return c1 - w, c1, vmin - 0.25 * w


def analyze_features(
    x: np.ndarray,
    names: Sequence[str],
    *,
    declared: Mapping[str, Mapping[str, Any]] | None = None,
    max_discrete: int = 20,
    spike_fraction: float = 0.02,
    quantile: bool | str = True,
    knots: int | None = None,
    relative_angles: bool = True,
) -> FeatureAnalysis:
    """Classify each column of the training data ``x`` ``(N, D)`` and choose its preprocessing.

    Parameters
    ----------
    x : array (N, D)
        Training values (finite; rows with NaN/inf must be dropped first).
    names : sequence of str
        The feature names (``D``).
    declared : dict {name: {"kind": ..., ...}}, optional
        Declared kinds (see :data:`DECLARABLE_KINDS`): ``bounded``/``lower``/``upper`` with ``low``/
        ``high``; ``periodic`` with optional ``period = [a, b]`` (default ``[-pi, pi]``); ``discrete`` with
        optional ``values``; ``mixed`` with optional ``spike``; ``positive``; ``continuous``; ``auto``.
    max_discrete : int
        At most this many distinct values make a feature discrete.
    spike_fraction : float
        The smallest fraction of rows at one value that makes a spike.
    quantile : bool or "mixed"
        Follow each feature's map by a monotone piecewise-linear map onto a standard normal through its
        empirical quantiles (``knots`` of them, default ``clip(N / 50, 16, 128)``; a discrete feature's
        through its cell boundaries at the normal quantiles of the cumulative probabilities, the end cells
        closed where their mean is the normal's conditional mean), so every marginal the flow sees is
        close to Gaussian. ``"mixed"``: only for mixed (spike + continuum) features, whose spike cell below
        the continuum's smallest value otherwise leaves a gap that squeezes the continuum into a narrow
        band of the standardised variable (see :data:`QUANTILE_MODES`). Declare ``quantile = false`` for a
        feature to skip it, ``quantile = true`` to force it.
    relative_angles : bool
        Make a periodic feature relative to another where their difference is concentrated (see
        :func:`_relative_angles`); declared ``relative_to = "name"`` (or ``false``) per feature wins.
    """
    if quantile not in QUANTILE_MODES:
        raise ValueError(f"analyze_features: 'quantile' must be one of {QUANTILE_MODES}, got {quantile!r}")
    x = np.asarray(x, dtype=np.float64)
    names = [str(n) for n in names]
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"analyze_features: 'x' must have shape (N, {len(names)}), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"analyze_features: need at least 2 rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"analyze_features: {bad} row(s) hold NaN/inf (drop them first, e.g. --drop-bad)")
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise ValueError(f"preprocessing declared for {unknown}, which are not features ({names})")
    out = []
    n = x.shape[0]
    for j, name in enumerate(names):
        c = x[:, j]
        decl = declared.get(name)
        kind = (decl or {}).get("kind", "auto")
        if kind not in DECLARABLE_KINDS:
            raise ValueError(f"feature {name!r}: kind {kind!r} is not one of {DECLARABLE_KINDS}")
        rng = (float(c.min()), float(c.max()))
        uniq, counts = np.unique(c, return_counts=True)
        if kind == "discrete":
            vals = decl.get("values")
            if vals is not None:
                vals = np.unique(np.asarray(vals, dtype=np.float64))
                missing = np.setdiff1d(uniq, vals)
                if missing.size:
                    raise ValueError(
                        f"feature {name!r}: training values {missing[:5].tolist()} are not among the "
                        "declared "
                        f"discrete values {vals.tolist()}"
                    )
            else:
                vals = uniq
            out.append(_discrete(name, vals, rng, True, "declared"))
            continue
        if kind == "periodic":
            a, b = (float(t) for t in decl.get("period", (-math.pi, math.pi)))
            if not a < b:
                raise ValueError(f"feature {name!r}: period needs low < high, got ({a}, {b})")
            out.append(_periodic(name, c, (a, b), True, "declared"))
            continue
        if kind == "auto" and uniq.size <= max_discrete:
            out.append(_discrete(name, uniq, rng, False, f"{uniq.size} distinct values (<= {max_discrete})"))
            continue
        top = int(np.argmax(counts))
        if kind == "mixed" or (
            kind == "auto" and counts[top] >= max(10, spike_fraction * n) and uniq.size > max_discrete
        ):
            s = (
                float(decl["spike"])
                if kind == "mixed" and decl.get("spike") is not None
                else float(uniq[top])
            )
            is_s = np.abs(c - s) <= 1e-5 * max(1.0, abs(s))
            if not is_s.any() or is_s.all():
                raise ValueError(f"feature {name!r}: 'mixed' needs rows at the spike {s} and rows elsewhere")
            rest = c[~is_s]
            cont = _continuum(name, rest, None)
            c0, c1, split = _spike_cell(cont, rest)
            frac = float(is_s.mean())
            d = FeatureDecision(
                name,
                "mixed",
                f"spike at {_fmt(s)} -> cell below the continuum; continuum: {cont.transform}",
                ("declared" if kind == "mixed" else f"{100 * frac:.1f}% of rows at {_fmt(s)}")
                + f"; continuum {cont.kind}",
                kind == "mixed",
                cont.log,
                cont.bounds,
                {"kind": "spike", "value": s, "cell": [c0, c1], "split": split},
                rng,
            )
            out.append(d)
            continue
        if (
            kind == "auto"
            and _PHI.search(name)
            and rng[0] >= -math.pi - 1e-6
            and rng[1] <= math.pi + 1e-6
            and rng[1] - rng[0] >= 0.95 * 2 * math.pi
        ):
            out.append(
                _periodic(name, c, (-math.pi, math.pi), False, "name contains 'phi', values fill [-pi, pi]")
            )
            continue
        d = _continuum(name, c, decl)
        if kind == "auto" and _PHI.search(name):
            # an angle in other units (a scaled phi, as in the UCI HIGGS sample) or not an angle at all:
            # say how to declare it, since a periodic feature's cut and relative angles matter
            d.reason += (
                f"; name contains 'phi' but the values span [{_fmt(rng[0])}, {_fmt(rng[1])}], not "
                '[-pi, pi]: if it is an angle, declare kind = "periodic" with its period'
            )
        out.append(d)
    _relative_angles(x, out, declared, relative_angles)
    _add_quantile_maps(x, out, declared, knots, quantile)
    return FeatureAnalysis(out, n)


#: The smallest mean resultant length of an angle difference that makes one periodic feature relative to
#: another (``analyze_features(relative_angles=True)``); also at least ``5 / sqrt(n)`` (independent angles
#: have ``~1/sqrt(n)``) and above the feature's own concentration.
RELATIVE_MIN_R = 0.2


def _resultant(theta: np.ndarray) -> float:
    return float(abs(np.mean(np.exp(1j * theta))))


def _relative_angles(
    x: np.ndarray, decisions: list[FeatureDecision], declared: Mapping[str, Any], auto: bool
) -> None:
    """Make periodic features relative to another periodic feature of the same period: declared
    (``relative_to = "name"``), or (``auto``) where the difference of the two angles is concentrated
    (mean resultant length ``R`` of the difference at least :data:`RELATIVE_MIN_R` and ``5/sqrt(n)``, and
    above each angle's own ``R``): ``phi_MET`` against ``phi_lepton``, back-to-back jets. Storing
    ``wrap(x_j - x_r)`` instead of ``x_j`` is a shear of the torus with unit Jacobian; a fixed cut of the
    raw angle would instead split the band of correlated pairs at the cut, a bimodal conditional an
    affine flow cannot learn. Greedy by ``R``: a reference is never itself relative."""
    names = [d.name for d in decisions]
    per = [j for j, d in enumerate(decisions) if d.special is not None and d.special["kind"] == "periodic"]
    ref: dict[int, tuple[int, str]] = {}
    refs: set[int] = set()
    forbidden: set[int] = set()
    for j, name in enumerate(names):
        r = (declared.get(name) or {}).get("relative_to")
        if r is None:
            continue
        if j not in per:
            raise ValueError(f"feature {name!r}: relative_to is only for a periodic feature")
        if r is False:
            forbidden.add(j)
            continue
        if not isinstance(r, str) or r not in names:
            raise ValueError(f"feature {name!r}: relative_to = {r!r} is not a feature name ({names})")
        i = names.index(r)
        if i not in per or decisions[i].special["period"] != decisions[j].special["period"] or i == j:
            raise ValueError(
                f"feature {name!r}: relative_to = {r!r} needs another periodic feature with the same period"
            )
        ref[j] = (i, "declared")
        refs.add(i)
    if any(j in refs for j in ref):
        bad = sorted(names[j] for j in ref if j in refs)
        raise ValueError(f"features {bad} are relative to one feature and the reference of another")
    if auto and len(per) >= 2:
        n = x.shape[0]
        theta = {}
        for j in per:
            a, b = decisions[j].special["period"]
            theta[j] = 2 * math.pi * (x[:, j] - a) / (b - a)
        alone = {j: _resultant(theta[j]) for j in per}
        need = max(RELATIVE_MIN_R, 5.0 / math.sqrt(n))
        pairs = []
        for ii, i in enumerate(per):
            for j in per[ii + 1 :]:
                if decisions[i].special["period"] != decisions[j].special["period"]:
                    continue
                r_ij = _resultant(theta[j] - theta[i])
                if r_ij >= need and r_ij > max(alone[i], alone[j]):
                    pairs.append((r_ij, i, j))
        for r_ij, i, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            for a, b in ((i, j), (j, i)):  # (reference, relative): the earlier feature first
                if b in ref or b in refs or b in forbidden or a in ref:
                    continue
                why = f"R = {r_ij:.2f} of the difference ({alone[b]:.2f} alone)"
                ref[b] = (a, why)
                refs.add(a)
                break
    for j, (i, why) in ref.items():
        d = decisions[j]
        a, b = d.special["period"]
        new = _periodic(d.name, x[:, j] - x[:, i], (a, b), d.declared, d.extra["why"], (i, names[i], why))
        new.data_range = d.data_range  # the raw angle's range, not the difference's
        decisions[j] = new


def _declared_quantile(d: FeatureDecision, declared: Mapping[str, Any]) -> bool | None:
    """``quantile = true/false`` as declared for feature ``d``, or None."""
    return (declared.get(d.name) or {}).get("quantile")


def _wants_quantile(d: FeatureDecision, declared: Mapping[str, Any], mode: bool | str) -> bool:
    """Whether feature ``d`` gets a quantile map: declared ``quantile = true/false`` wins, else ``mode``."""
    decl = _declared_quantile(d, declared)
    if decl is not None:
        return bool(decl)
    if mode == "mixed":
        return d.special is not None and d.special["kind"] == "spike"
    return bool(mode)


def _add_quantile_maps(
    x: np.ndarray,
    decisions: list[FeatureDecision],
    declared: Mapping[str, Any],
    knots: int | None,
    mode: bool | str = True,
) -> None:
    """Per feature (those ``mode`` and the declarations select), the monotone piecewise-linear map of its
    ``v`` (after the kind's map) onto a standard normal through empirical quantiles (discrete: exactly
    through the cell boundaries)."""
    if not any(_wants_quantile(d, declared, mode) for d in decisions):
        return
    import torch
    from scipy.special import ndtri

    from .preprocessing import Preprocessing

    n = x.shape[0]
    k_int = int(knots) if knots is not None else int(min(128, max(16, n // 50)))
    pre = Preprocessing(
        standardize=False,
        features=len(decisions),
        log=[j for j, d in enumerate(decisions) if d.log],
        bounds=[d.bounds for d in decisions],
        kinds=[d.special for d in decisions],
    ).double()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20261207)
        v, _ = pre._to_v(torch.from_numpy(x), "analyze_features", noise=True)
    v = v.numpy()
    for j, d in enumerate(decisions):
        if not _wants_quantile(d, declared, mode):
            continue
        if d.special is None and _declared_quantile(d, declared) is None:
            modes = count_modes(v[:, j])
            if modes > 1:
                # a mixture of separated components: Gaussianising its marginal bends every component
                # into a thin curved band, which an affine flow learns far worse than the raw mixture
                d.reason += f"; {modes} modes: not Gaussianised"
                continue
        if d.special is not None and d.special["kind"] == "discrete":
            vals = np.asarray(d.special["values"])
            if len(vals) < 2:
                continue
            counts = np.array([np.count_nonzero(x[:, j] == t) for t in vals], dtype=np.float64)
            prob = np.maximum(counts, 0.5) / np.maximum(counts, 0.5).sum()
            # cell k <-> the standard normal's slice of probability prob[k]; the two end cells end where
            # their (uniform) mean is the normal's conditional mean of the slice (a compact support)
            b = np.empty(len(vals) + 1)
            b[1:-1] = ndtri(np.cumsum(prob)[:-1])
            phi = np.exp(-0.5 * b[1:-1] ** 2) / math.sqrt(2 * math.pi)
            b[0] = 2 * (-phi[0] / prob[0]) - b[1]
            b[-1] = 2 * (phi[-1] / prob[-1]) - b[-2]
            a = np.arange(len(vals) + 1, dtype=np.float64)
        else:
            probs = (np.arange(k_int) + 1.0) / (k_int + 1.0)
            # end knots at the sample's extremes, at the normal quantiles of 1/(2n) and 1 - 1/(2n): the
            # map is linear beyond them with a tail's gentle slope. Extrapolating an inner segment's slope
            # instead sends a long thin tail far out: HIGGS's m_lv (a sharp W peak with a low tail) had a
            # training value at u = -68 and a validation NLL 8 nats above the training NLL for MAF.
            lo, hi = float(v[:, j].min()), float(v[:, j].max())
            a = np.concatenate([[lo], np.quantile(v[:, j], probs), [hi]])
            b = np.concatenate([[ndtri(0.5 / n)], ndtri(probs), [ndtri(1.0 - 0.5 / n)]])
        # strictly increasing knots, in float32 as well
        keep = [0]
        for i in range(1, len(a)):
            if (
                a[i] > a[keep[-1]]
                and np.float32(a[i]) > np.float32(a[keep[-1]])
                and np.float32(b[i]) > np.float32(b[keep[-1]])
            ):
                keep.append(i)
        if len(keep) >= 2:
            d.quantile = {"v": [float(a[i]) for i in keep], "u": [float(b[i]) for i in keep]}


def load_preprocess_config(path: str) -> dict[str, dict[str, Any]]:
    """Read a ``--preprocess`` TOML file: ``[features.NAME]`` tables with ``kind`` and its parameters.

    Example::

        [features.lep_phi]
        kind = "periodic"            # period = [-3.14159, 3.14159] by default
        [features.met_phi]
        kind = "periodic"
        relative_to = "lep_phi"      # learn met_phi - lep_phi (wrapped); false: never relative
        [features.njets]
        kind = "discrete"            # values = [...] optional
        [features.lep_eta]
        kind = "bounded"
        low = -2.5
        high = 2.5
        [features.jet_pt]
        kind = "mixed"               # spike = 0.0 optional
    """
    import tomllib

    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"--preprocess: no such file {path!r}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--preprocess {path!r}: not valid TOML ({err})") from None
    feats = doc.get("features")
    if not isinstance(feats, dict) or not feats:
        raise ValueError(f"--preprocess {path!r}: expected [features.NAME] tables")
    unknown_top = sorted(set(doc) - {"features"})
    if unknown_top:
        raise ValueError(f"--preprocess {path!r}: unknown top-level key(s) {unknown_top}")
    allowed = {"kind", "low", "high", "period", "values", "spike", "quantile", "relative_to"}
    out: dict[str, dict[str, Any]] = {}
    for name, t in feats.items():
        if not isinstance(t, dict) or "kind" not in t:
            raise ValueError(f"--preprocess {path!r}: [features.{name}] needs a 'kind'")
        bad = sorted(set(t) - allowed)
        if bad:
            raise ValueError(f"--preprocess {path!r}: [features.{name}] has unknown key(s) {bad}")
        if t["kind"] not in DECLARABLE_KINDS:
            raise ValueError(
                f"--preprocess {path!r}: [features.{name}] kind {t['kind']!r} is not one of "
                f"{DECLARABLE_KINDS}"
            )
        r = t.get("relative_to")
        kind_ok = t["kind"] in ("periodic", "auto")
        if r is not None and (not kind_ok or not (r is False or isinstance(r, str))):
            raise ValueError(
                f"--preprocess {path!r}: [features.{name}] relative_to must be a feature name or false, for "
                "a periodic feature"
            )
        out[str(name)] = dict(t)
    return out
