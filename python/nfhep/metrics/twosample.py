"""Two-sample statistics per dimension and along random directions, computed by nfhep's C++ core.

The validation toolkit of the NFlikelihood papers (Reyes-Gonzalez & Torre, arXiv:2309.09743; Coccaro et
al., arXiv:2302.12024): Kolmogorov-Smirnov tests per dimension, sliced Wasserstein distance, 1-D
Wasserstein distances, Frobenius norm of the correlation difference, Anderson-Darling k-sample test,
highest-density intervals (HPDI) and their relative error (HPDIe), mean and covariance differences.

Sorting (of the order-preserving bit patterns of the floats: an AVX-512 vectorised quicksort where the
CPU has it, else an MSD radix sort; same output bits), the ECDF merges and the projections run in C++
on nfhep's threads (``nfhep.set_num_threads``); results do not depend on the thread count. Type policy:
see ``nfhep.metrics._validate`` (float32/float64 as given; other dtypes and mixed pairs converted to
float64; weights converted to float64).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .. import _core
from ._validate import as_pair, as_sample, as_weights

__all__ = [
    "KSResult",
    "SlicedWassersteinResult",
    "AndersonResult",
    "ks_2samp",
    "ks_pvalue",
    "random_directions",
    "sliced_wasserstein",
    "wasserstein_per_dim",
    "frobenius_correlation",
    "correlation",
    "anderson_ksamp",
    "hpdi",
    "hpdie",
    "mean_cov_difference",
    "HPDI_PROBS",
]

#: The probabilities of the papers' HPDIe columns (1, 2 and 3 sigma).
HPDI_PROBS: tuple[float, float, float] = (0.68, 0.954, 0.997)

_MAX_AUTO_N = 10000  # scipy.stats.ks_2samp: method='auto' is exact up to this max(n1, n2)


@dataclass(frozen=True)
class KSResult:
    """Per-dimension Kolmogorov-Smirnov test: arrays of shape (D,)."""

    statistic: np.ndarray
    pvalue: np.ndarray
    d_plus: np.ndarray
    d_minus: np.ndarray
    method: list[str]
    alternative: str


@dataclass(frozen=True)
class SlicedWassersteinResult:
    """Sliced Wasserstein distance: mean and std (ddof=0) of the per-direction W1 values."""

    mean: float
    std: float
    per_direction: np.ndarray
    directions: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class AndersonResult:
    """Per-dimension Anderson-Darling k-sample test (k = 2): arrays of shape (D,).

    ``capped`` marks p-values outside scipy's interpolation table ([0.001, 0.25]), clipped to its ends.
    """

    statistic: np.ndarray
    pvalue: np.ndarray
    capped: np.ndarray


def _kish(w: np.ndarray | None, n: int) -> float:
    if w is None:
        return float(n)
    return float(w.sum() ** 2 / np.dot(w, w))


def ks_pvalue(
    d: float,
    n1: int,
    n2: int,
    *,
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
    method: Literal["auto", "exact", "asymp"] = "auto",
) -> tuple[float, float, str]:
    """p-value of a two-sample KS statistic with the rules of ``scipy.stats.ks_2samp``.

    ``method='auto'`` is exact when ``max(n1, n2) <= 10000`` and asymptotic otherwise. The exact path
    counts lattice paths (Hodges 1957) with scipy's implementation and, like scipy, reports the statistic
    rounded to the lattice, ``h / lcm(n1, n2)``; if it fails numerically it warns and falls back to the
    asymptotic one. Asymptotic two-sided: the finite-n Kolmogorov distribution
    ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``, evaluated in nfhep's C++ core with scipy's regimes
    (Simard & L'Ecuyer, J. Stat. Softw. 39(11), 2011; ``_core.metrics.kstwo_sf``, equal to scipy's to
    ~1e-12 relative); one-sided: Hodges' approximation (his eq. 5.3).

    Returns
    -------
    (statistic, pvalue, method_used)
    """
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(
            f"argument 'alternative' must be 'two-sided', 'less' or 'greater', got {alternative!r}"
        )
    if method not in ("auto", "exact", "asymp"):
        raise ValueError(f"argument 'method' must be 'auto', 'exact' or 'asymp', got {method!r}")
    n1, n2 = int(n1), int(n2)
    g = math.gcd(n1, n2)
    n1g, n2g = n1 // g, n2 // g
    mode = method
    if mode == "auto":
        mode = "exact" if max(n1, n2) <= _MAX_AUTO_N else "asymp"
    elif mode == "exact" and n1g >= np.iinfo(np.int32).max / n2g:
        warnings.warn(
            f"ks_2samp: exact calculation not possible with sample sizes {n1} and {n2}; using 'asymp'",
            RuntimeWarning,
            stacklevel=3,
        )
        mode = "asymp"
    prob = math.nan
    if mode == "exact":
        from scipy.stats._stats_py import _attempt_exact_2kssamp  # scipy's exact path counting

        ok, d, prob = _attempt_exact_2kssamp(n1, n2, g, d, alternative)
        if not ok:
            warnings.warn(
                "ks_2samp: exact calculation unsuccessful; switching to method='asymp'",
                RuntimeWarning,
                stacklevel=3,
            )
            mode = "asymp"
    if mode == "asymp":
        prob = float(_asymp_pvalues(np.array([d], dtype=np.float64), float(n1), float(n2), alternative)[0])
    return float(d), float(np.clip(prob, 0.0, 1.0)), mode


def _asymp_pvalues(
    stat: np.ndarray, n1: float, n2: float, alternative: str, *, at_least_one: bool = False
) -> np.ndarray:
    r"""Asymptotic p-values of KS statistics ``stat`` (any shape), as ``scipy.stats.ks_2samp``'s.

    Two-sided: :math:`P(D_{n} \ge d)` of the one-sample Kolmogorov distribution with
    :math:`n = \mathrm{round}(n_1 n_2 / (n_1 + n_2))` (``scipy.stats.kstwo.sf``), computed by
    ``_core.metrics.kstwo_sf`` in parallel with the GIL released. One-sided: Hodges' approximation
    :math:`\exp(-2z^2 - 2z(m + 2n)/\sqrt{mn(m+n)}/3)`, :math:`z = \sqrt{mn/(m+n)}\,d`, :math:`m \ge n`.
    ``at_least_one`` raises the rounded size to 1 (effective sizes of weighted samples). Clipped to [0, 1].
    """
    m, n = max(float(n1), float(n2)), min(float(n1), float(n2))
    en = m * n / (m + n)
    d = np.ascontiguousarray(stat, dtype=np.float64)
    if alternative == "two-sided":
        ne = float(np.round(en))
        if at_least_one:
            ne = max(1.0, ne)
        prob = _core.metrics.kstwo_sf(d.ravel(), ne).reshape(d.shape)
    else:
        z = np.sqrt(en) * d
        prob = np.exp(-2 * z**2 - 2 * z * (m + 2 * n) / np.sqrt(m * n * (m + n)) / 3.0)
    return np.clip(prob, 0.0, 1.0)


def ks_2samp(
    x: Any,
    y: Any,
    *,
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
    method: Literal["auto", "exact", "asymp"] = "auto",
    weights_x: Any = None,
    weights_y: Any = None,
    device: Literal["cpu", "cuda"] = "cpu",
    check_finite: bool = True,
) -> KSResult:
    r"""Two-sample Kolmogorov-Smirnov test for every dimension of ``x`` (n1, D) and ``y`` (n2, D).

    With right-continuous empirical CDFs evaluated at every pooled value (ties are exact),

    .. math:: D^+ = \max_t [F_x(t) - F_y(t)],\quad D^- = \max_t [F_y(t) - F_x(t)]_+,\quad
              D = \max(D^+, D^-),

    and ``alternative='greater'`` uses :math:`D^+`, ``'less'`` :math:`D^-`, as ``scipy.stats.ks_2samp``.
    With weights the ECDFs are weighted, :math:`F_x(t) = \sum_{x_i \le t} w_i / \sum_i w_i`, and the
    p-value is asymptotic with Kish's effective sizes :math:`n_{\rm eff} = (\sum w)^2 / \sum w^2`
    (no exact null distribution exists for weighted ECDFs; ``method='exact'`` is then an error).

    The statistics are computed in C++, per dimension and in parallel: without weights by an exact
    bucket bound (one pass over the row-major input computes every value's bucket; counts, bounds and
    the selection then work on those 2-byte indices; only the few buckets that could hold the supremum
    are sorted; bit-identical to a full sort), with weights by key sort + merge. p-values follow
    scipy's rules (see :func:`ks_pvalue`): the asymptotic ones come from the C++ core too (all columns in
    one parallel call), the exact ones (``max(n1, n2) <= 10000`` with ``method='auto'``) from the C++ core
    for two-sided tests with ``n1 == n2`` and from scipy's path counting otherwise. Under H0 the p-values
    are U(0, 1): the papers' summary (arXiv:2309.09743) takes their mean over batches and the median over
    dimensions, ideally 0.5.

    Parameters
    ----------
    x, y : array_like, shapes (n1, D) and (n2, D) (or 1-D)
    alternative : {'two-sided', 'less', 'greater'}
    method : {'auto', 'exact', 'asymp'}
    weights_x, weights_y : array_like, optional
        Non-negative per-event weights.
    device : {'cpu', 'cuda'}
        'cuda' sorts the columns on a GPU (needs a ``NFHEP_CUDA=ON`` build; compile-checked only, no GPU
        was available to run it during development).
    check_finite : bool
        Raise ValueError on NaN/inf (default). If False, non-finite values give undefined results.

    Returns
    -------
    KSResult
        ``statistic``, ``pvalue``, ``d_plus``, ``d_minus`` (shape (D,)) and the method used per dimension.
    """
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(
            f"argument 'alternative' must be 'two-sided', 'less' or 'greater', got {alternative!r}"
        )
    if method not in ("auto", "exact", "asymp"):
        raise ValueError(f"argument 'method' must be 'auto', 'exact' or 'asymp', got {method!r}")
    xa, ya = as_pair(x, y)
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    weighted = wx is not None or wy is not None
    if weighted and method == "exact":
        raise ValueError("argument 'method': 'exact' p-values are not available with weights; use 'asymp'")
    dp, dm = _core.metrics.ks_statistics(
        xa, ya, weights_x=wx, weights_y=wy, check_finite=check_finite, device=device
    )
    if alternative == "two-sided":
        stat = np.where(dm > dp, dm, dp)
    elif alternative == "greater":
        stat = dp.copy()
    else:
        stat = dm.copy()
    pval = np.empty_like(stat)
    used: list[str] = []
    n1, n2 = xa.shape[0], ya.shape[0]
    if weighted:
        n1e, n2e = _kish(wx, n1), _kish(wy, n2)
        pval = _asymp_pvalues(stat, n1e, n2e, alternative, at_least_one=True)
        used = ["asymp"] * stat.size
    elif method == "asymp" or (method == "auto" and max(n1, n2) > _MAX_AUTO_N):
        # All columns share (n1, n2): one call into the core, no per-column Python.
        pval = _asymp_pvalues(stat, n1, n2, alternative)
        used = ["asymp"] * stat.size
    elif n1 == n2 and alternative == "two-sided":
        # Exact with equal sizes: scipy's lattice rounding h = round(D n), D = h/n, and its Gnedenko-Korolyuk
        # series (_compute_prob_outside_square) evaluated in C++ for all columns at once (same doubles).
        h = np.round(stat * n1).astype(np.int64)
        stat = h * 1.0 / n1
        pval = np.ones_like(stat)
        pos = h > 0
        if np.any(pos):
            pval[pos] = np.clip(_core.metrics.ks_exact_equal_sf(np.ascontiguousarray(h[pos]), n1), 0.0, 1.0)
        used = ["exact"] * stat.size
    else:
        for d in range(stat.size):
            stat[d], pval[d], mode = ks_pvalue(
                float(stat[d]), xa.shape[0], ya.shape[0], alternative=alternative, method=method
            )
            used.append(mode)
    return KSResult(statistic=stat, pvalue=pval, d_plus=dp, d_minus=dm, method=used, alternative=alternative)


def random_directions(
    n_directions: int, dim: int, *, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """``n_directions`` unit vectors uniform on the sphere S^{dim-1}: normalised standard normals.

    Reproducible: the same ``seed`` (an int, or a ``numpy.random.Generator``) gives the same directions.
    Returns a C-contiguous float64 array of shape (n_directions, dim).
    """
    if int(n_directions) < 1:
        raise ValueError(f"argument 'n_directions' must be >= 1, got {n_directions}")
    if int(dim) < 1:
        raise ValueError(f"argument 'dim' must be >= 1, got {dim}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    g = rng.standard_normal((int(n_directions), int(dim)))
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    while np.any(norm == 0):  # probability zero, but never divide by it
        bad = norm[:, 0] == 0
        g[bad] = rng.standard_normal((int(bad.sum()), int(dim)))
        norm = np.linalg.norm(g, axis=1, keepdims=True)
    return np.ascontiguousarray(g / norm)


def sliced_wasserstein(
    x: Any,
    y: Any,
    *,
    n_directions: int | None = None,
    directions: Any = None,
    seed: int | np.random.Generator | None = None,
    weights_x: Any = None,
    weights_y: Any = None,
    device: Literal["cpu", "cuda"] = "cpu",
    check_finite: bool = True,
) -> SlicedWassersteinResult:
    r"""Sliced Wasserstein-1 distance between ``x`` (n1, D) and ``y`` (n2, D).

    For unit directions :math:`u_1..u_{N_d}` (default :math:`N_d = 2D`, uniform on the sphere, see
    :func:`random_directions`), project both samples and take the 1-D Wasserstein-1 distance
    :math:`W_j = \int |F_{x\cdot u_j}(t) - F_{y\cdot u_j}(t)|\,dt`, computed exactly by merging the
    sorted projections (unequal sizes and weights allowed; equals ``scipy.stats.wasserstein_distance``).
    Returns the mean and the standard deviation (ddof=0) over directions, the per-direction values and the
    directions (pass them back as ``directions=`` to reuse them). With p = 1 and the same directions this
    equals POT's ``ot.sliced_wasserstein_distance(..., p=1)`` (whose default p = 2 differs).
    References: arXiv:2309.09743 (validation of NF likelihoods), Bonneel et al. 2015 (sliced distances).

    The projection (a blocked, vectorised matrix product accumulated in float64) and the key sorts run
    in C++; directions are processed in blocks so the projections take at most ~512 MiB. ``device='cuda'``
    runs projection and sorts on a GPU when nfhep was built with ``NFHEP_CUDA=ON`` (compile-checked only:
    no GPU was available to run it during development).
    """
    xa, ya = as_pair(x, y)
    dim = xa.shape[1]
    if directions is not None:
        if n_directions is not None or seed is not None:
            raise ValueError("pass either 'directions' or 'n_directions'/'seed', not both")
        dirs = np.asarray(directions)
        if dirs.dtype.kind not in "fiu":
            raise TypeError(f"argument 'directions' must be numeric, got dtype {dirs.dtype}")
        dirs = np.ascontiguousarray(dirs, dtype=np.float64)
        if dirs.ndim == 1:
            dirs = dirs[None, :]
        if dirs.ndim != 2 or dirs.shape[1] != dim:
            raise ValueError(f"argument 'directions' must have shape (n_directions, {dim}), got {dirs.shape}")
    else:
        nd = 2 * dim if n_directions is None else int(n_directions)
        dirs = random_directions(nd, dim, seed=seed)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"argument 'device' must be 'cpu' or 'cuda', got {device!r}")
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    per = _core.metrics.sliced_wasserstein(
        xa, ya, dirs, weights_x=wx, weights_y=wy, check_finite=check_finite, device=device
    )
    return SlicedWassersteinResult(
        mean=float(per.mean()), std=float(per.std()), per_direction=per, directions=dirs
    )


def wasserstein_per_dim(
    x: Any, y: Any, *, weights_x: Any = None, weights_y: Any = None, check_finite: bool = True
) -> np.ndarray:
    r"""1-D Wasserstein-1 distance of every marginal, :math:`\int |F_x - F_y|\,dt` (shape (D,)).

    The papers' "median W-distance" is the median of this array (arXiv:2309.09743). Equals
    ``scipy.stats.wasserstein_distance`` per column (with ``u_weights``/``v_weights``).
    """
    xa, ya = as_pair(x, y)
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    return _core.metrics.wasserstein_per_dim(xa, ya, weights_x=wx, weights_y=wy, check_finite=check_finite)


def correlation(x: Any, *, weights: Any = None) -> np.ndarray:
    """Pearson correlation matrix (D, D) of a sample, optionally weighted, computed in float64."""
    xa = as_sample(x, "x").astype(np.float64, copy=False)
    w = as_weights(weights, xa.shape[0], "weights")
    if not np.all(np.isfinite(xa)):
        raise ValueError("argument 'x' contains NaN or inf")
    if xa.shape[0] < 2:
        raise ValueError("argument 'x' needs at least 2 events for a correlation matrix")
    c = np.atleast_2d(np.cov(xa, rowvar=False, aweights=w))
    sd = np.sqrt(np.diag(c))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = c / np.outer(sd, sd)
    r = np.clip(r, -1.0, 1.0)
    np.fill_diagonal(r, 1.0)
    return r


def frobenius_correlation(
    x: Any,
    y: Any,
    *,
    variant: Literal["full", "lower"] = "full",
    weights_x: Any = None,
    weights_y: Any = None,
) -> float:
    r"""Frobenius norm of the difference of the correlation matrices, :math:`\|C_x - C_y\|_F`.

    ``variant='full'`` (default) sums over the whole matrix; ``'lower'`` over the strict lower triangle,
    i.e. :math:`\|C_x - C_y\|_F / \sqrt 2` (the older NFlikelihood code, arXiv:2309.09743). A constant
    column has an undefined correlation (NaN), which propagates.
    """
    if variant not in ("full", "lower"):
        raise ValueError(f"argument 'variant' must be 'full' or 'lower', got {variant!r}")
    xa, ya = as_pair(x, y)
    diff = correlation(xa, weights=weights_x) - correlation(ya, weights=weights_y)
    f = float(np.sqrt(np.sum(diff**2)))
    return f / math.sqrt(2.0) if variant == "lower" else f


def _ad_midrank_2(a: np.ndarray, b: np.ndarray) -> float:
    """A2akN of Scholz & Stephens (1987), eq. 7 (midranks, ties allowed), for k = 2 samples."""
    z = np.sort(np.concatenate([a, b]))
    n_tot = z.size
    zstar = np.unique(z)
    left = np.searchsorted(z, zstar, "left")
    lj = np.searchsorted(z, zstar, "right") - left
    bj = left + lj / 2.0
    total = 0.0
    for s in (np.sort(a), np.sort(b)):
        right = np.searchsorted(s, zstar, "right")
        fij = right - np.searchsorted(s, zstar, "left")
        mij = right - fij / 2.0
        inner = lj / float(n_tot) * (n_tot * mij - bj * s.size) ** 2 / (bj * (n_tot - bj) - n_tot * lj / 4.0)
        total += inner.sum() / s.size
    return total * (n_tot - 1.0) / n_tot


def _ad_standardise(a2kn: float, sizes: tuple[int, ...]) -> tuple[float, float, bool]:
    """Standardised statistic and scipy's interpolated p-value (Scholz & Stephens 1987, Table 2)."""
    k = len(sizes)
    n = np.asarray(sizes, dtype=float)
    n_tot = int(n.sum())
    hs = np.cumsum(1.0 / np.arange(n_tot - 1, 1, -1))
    h = hs[-1] + 1
    g = (hs / np.arange(2, n_tot)).sum()
    big_h = (1.0 / n).sum()
    a = (4 * g - 6) * (k - 1) + (10 - 6 * g) * big_h
    b = (2 * g - 4) * k**2 + 8 * h * k + (2 * g - 14 * h - 4) * big_h - 8 * h + 4 * g - 6
    c = (6 * h + 2 * g - 2) * k**2 + (4 * h - 4 * g + 6) * k + (2 * h - 6) * big_h + 4 * h
    d = (2 * h + 6) * k**2 - 4 * h * k
    nn = float(n_tot)
    sigmasq = (a * nn**3 + b * nn**2 + c * nn + d) / ((nn - 1.0) * (nn - 2.0) * (nn - 3.0))
    m = k - 1
    a2 = (a2kn - m) / math.sqrt(sigmasq)
    b0 = np.array([0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085])
    b1 = np.array([-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615])
    b2 = np.array([-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154])
    critical = b0 + b1 / math.sqrt(m) + b2 / m
    sig = np.array([0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001])
    if a2 < critical.min():
        return float(a2), float(sig.max()), True
    if a2 > critical.max():
        return float(a2), float(sig.min()), True
    pf = np.polyfit(critical, np.log(sig), 2)
    return float(a2), float(math.exp(np.polyval(pf, a2))), False


def anderson_ksamp(x: Any, y: Any, *, check_finite: bool = True) -> AndersonResult:
    r"""Anderson-Darling k-sample test (k = 2) for every dimension, midrank variant (ties allowed).

    Statistic: Scholz & Stephens (1987), eq. 7, standardised as :math:`(A^2_{akN} - (k-1))/\sigma_N`;
    p-value: scipy's quadratic interpolation of log(significance) in the critical values of their
    Table 2, valid in [0.001, 0.25]; outside it is clipped and flagged in ``capped`` (scipy warns
    instead). Agrees with ``scipy.stats.anderson_ksamp([x[:, d], y[:, d]], variant='midrank')``.
    Computed with numpy (O(N log N) per dimension); at least 4 events in total and two distinct values
    per dimension are required.
    """
    xa, ya = as_pair(x, y)
    xa = xa.astype(np.float64, copy=False)
    ya = ya.astype(np.float64, copy=False)
    if check_finite and not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("arguments 'x' and 'y' must not contain NaN or inf")
    if xa.shape[0] + ya.shape[0] < 4:
        raise ValueError("anderson_ksamp needs at least 4 events in total")
    dim = xa.shape[1]
    stat, pval, capped = np.empty(dim), np.empty(dim), np.zeros(dim, dtype=bool)
    for d in range(dim):
        a, b = xa[:, d], ya[:, d]
        if np.unique(np.concatenate([a, b])).size < 2:
            raise ValueError(f"anderson_ksamp: dimension {d} has a single distinct value in both samples")
        stat[d], pval[d], capped[d] = _ad_standardise(_ad_midrank_2(a, b), (a.size, b.size))
    return AndersonResult(statistic=stat, pvalue=pval, capped=capped)


def hpdi(
    x: Any, *, probs: Any = HPDI_PROBS, weights: Any = None, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    r"""Highest-density intervals of every 1-D marginal: ``(lo, hi)``, each of shape (len(probs), D).

    Unweighted: the shortest interval :math:`[s_i, s_{i+k-1}]` of the sorted values holding
    :math:`k = \lfloor p n \rfloor` points (first one on ties), as the NFlikelihood reference code
    (arXiv:2309.09743). Weighted: the shortest interval of sorted points whose weight is at least
    :math:`p \sum w`. Sorting runs in C++.
    """
    xa = as_sample(x, "x")
    pr = np.ascontiguousarray(np.atleast_1d(np.asarray(probs, dtype=np.float64)))
    w = as_weights(weights, xa.shape[0], "weights")
    return _core.metrics.hpdi(xa, pr, weights=w, check_finite=check_finite)


def hpdie(
    x_true: Any,
    x_pred: Any,
    *,
    probs: Any = HPDI_PROBS,
    variant: Literal["endpoints", "width"] = "endpoints",
    weights_true: Any = None,
    weights_pred: Any = None,
) -> np.ndarray:
    r"""Relative error of the HPDIs of a predicted sample w.r.t. a true one, shape (len(probs), D).

    ``variant='endpoints'`` (default, the reference code of arXiv:2309.09743):
    :math:`\tfrac12(|\Delta lo / lo_{true}| + |\Delta hi / hi_{true}|)` — not translation invariant, and
    infinite when a true endpoint is 0. ``'width'``: :math:`|\Delta w / w_{true}|` with
    :math:`w = hi - lo` (translation invariant). The papers report the median over dimensions.
    """
    if variant not in ("endpoints", "width"):
        raise ValueError(f"argument 'variant' must be 'endpoints' or 'width', got {variant!r}")
    xt, xp = as_pair(x_true, x_pred)
    lo_t, hi_t = hpdi(xt, probs=probs, weights=weights_true)
    lo_p, hi_p = hpdi(xp, probs=probs, weights=weights_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        if variant == "endpoints":
            return 0.5 * (np.abs((lo_p - lo_t) / lo_t) + np.abs((hi_p - hi_t) / hi_t))
        wt = hi_t - lo_t
        return np.abs(((hi_p - lo_p) - wt) / wt)


def mean_cov_difference(
    x: Any, y: Any, *, weights_x: Any = None, weights_y: Any = None
) -> dict[str, np.ndarray]:
    """Differences of the (weighted) means and covariance matrices, ``y - x``, in float64.

    Returns ``mean_diff`` (D,), ``mean_diff_in_std`` (D,) (in units of x's standard deviation),
    ``cov_diff`` (D, D) and ``cov_rel_frobenius`` = ||cov_y - cov_x||_F / ||cov_x||_F.
    """
    xa, ya = as_pair(x, y)
    xa = xa.astype(np.float64, copy=False)
    ya = ya.astype(np.float64, copy=False)
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    if xa.shape[0] < 2 or ya.shape[0] < 2:
        raise ValueError("mean_cov_difference needs at least 2 events per sample")
    mx = np.average(xa, axis=0, weights=wx)
    my = np.average(ya, axis=0, weights=wy)
    cx = np.atleast_2d(np.cov(xa, rowvar=False, aweights=wx))
    cy = np.atleast_2d(np.cov(ya, rowvar=False, aweights=wy))
    with np.errstate(divide="ignore", invalid="ignore"):
        in_std = (my - mx) / np.sqrt(np.diag(cx))
        rel = np.linalg.norm(cy - cx) / np.linalg.norm(cx)
    return {"mean_diff": my - mx, "mean_diff_in_std": in_std, "cov_diff": cy - cx, "cov_rel_frobenius": rel}
