"""Figures of a ComparisonReport (private; see ComparisonReport.plot and nfhep.metrics.report_html).

Every figure is built by one function returning a matplotlib ``Figure`` so that the PNG files of
:func:`plot_report` and the images embedded in the HTML report are the same drawings.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .report import ComparisonReport

__all__ = [
    "corner_figure",
    "hist_density",
    "marginal_figure",
    "pair_figure",
    "plot_report",
    "ratio_with_errors",
    "training_figure",
]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "feature"


def _tex(name: str) -> str:
    """A branch name as matplotlib text: '$' escaped so that no name switches on mathtext."""
    return str(name).replace("$", r"\$")


def _umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def publish_mode(tmp: str | os.PathLike[str]) -> None:
    """Give a temporary file (``mkstemp`` makes it 0600) the mode an ordinary ``open`` would have
    (0666 minus the umask) before it is renamed into place: reports are meant to be shared."""
    os.chmod(tmp, 0o666 & ~_umask())


def _save(fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# mplhep's CMS style sizes text for 10 x 10 inch figures; ours are about 6 x 5.5 inches
_SIZES = {
    "font.size": 13,
    "axes.labelsize": 14,
    "axes.titlesize": 12,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 11,
    "savefig.bbox": "tight",
}


@contextlib.contextmanager
def hep_style() -> Iterator[Any]:
    """matplotlib's pyplot (Agg backend) inside mplhep's CMS style when mplhep is installed."""
    plt = _pyplot()
    try:  # optional HEP style
        import mplhep

        style: Any = mplhep.style.CMS
    except ImportError:
        style = "default"
    with plt.style.context(style), plt.rc_context(_SIZES):
        yield plt


def hist_density(v: np.ndarray, w: np.ndarray | None, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (weighted) histogram density and its statistical error per bin.

    With bin sum ``S = sum_bin w``, total ``W = sum_all w`` (events outside ``edges`` included) and the
    bin fraction ``p = S / W``, the delta method over i.i.d. weighted events gives

        Var(p) = [(1 - p)^2 sum_bin w^2 + p^2 sum_other w^2] / W^2,

    the binomial error ``p (1 - p) / N`` for unit weights; the plain Poisson ``sqrt(sum_bin w^2) / W``
    overestimates it by ``1 / sqrt(1 - p)`` because it ignores the normalisation. The density is
    ``p / bin width``, its error ``sqrt(Var(p)) / bin width``.
    """
    v = np.asarray(v, dtype=np.float64)
    ww = np.ones_like(v) if w is None else np.asarray(w, dtype=np.float64)
    s, _ = np.histogram(v, bins=edges, weights=ww)
    s2, _ = np.histogram(v, bins=edges, weights=ww**2)
    total, total2 = float(ww.sum()), float((ww**2).sum())
    width = np.diff(edges)
    if not total > 0:
        nan = np.full(len(width), np.nan)
        return nan, nan.copy()
    p = s / total
    var = ((1.0 - p) ** 2 * s2 + p**2 * np.maximum(total2 - s2, 0.0)) / total**2
    return p / width, np.sqrt(var) / width


def ratio_with_errors(
    num: np.ndarray, num_err: np.ndarray, den: np.ndarray, den_err: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``r = num / den`` of two independent histograms and its first-order error,
    ``sigma_r^2 = (sigma_num / den)^2 + (num sigma_den / den^2)^2`` (finite where ``num == 0``);
    NaN where ``den == 0``."""
    num, num_err, den, den_err = (np.asarray(a, dtype=np.float64) for a in (num, num_err, den, den_err))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = den > 0
        r = np.where(ok, num / den, np.nan)
        er = np.where(ok, np.hypot(num_err / den, num * den_err / den**2), np.nan)
    return r, er


def _marginal_edges(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = np.quantile(np.concatenate([a, b]), [0.001, 0.999])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _data(rep: ComparisonReport) -> tuple[np.ndarray, np.ndarray]:
    return rep._x.astype(np.float64, copy=False), rep._y.astype(np.float64, copy=False)


def marginal_figure(rep: ComparisonReport, d: int, plt, *, bins: int = 50):
    """Feature ``d``: normalised histograms of x and y (statistical bands) over a ratio panel y / x
    whose error bars combine both samples' binomial errors (:func:`hist_density`)."""
    x, y = _data(rep)
    name = rep.features[d]
    edges = _marginal_edges(x[:, d], y[:, d], bins)
    cx = 0.5 * (edges[1:] + edges[:-1])
    hx, ex = hist_density(x[:, d], rep._wx, edges)
    hy, ey = hist_density(y[:, d], rep._wy, edges)
    fig, (ax, axr) = plt.subplots(
        2, 1, sharex=True, figsize=(6, 5.5), gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05}
    )
    ax.stairs(hx, edges, label=f"x (reference, n={rep.n_x})", color="black")
    ax.stairs(hy, edges, label=f"y (test, n={rep.n_y})", color="tab:red")
    ax.fill_between(cx, hx - ex, hx + ex, step="mid", color="black", alpha=0.15, lw=0)
    ax.fill_between(cx, hy - ey, hy + ey, step="mid", color="tab:red", alpha=0.15, lw=0)
    ax.set_ylabel("density")
    ks_p = rep.batched.ks_pvalue[:, d].mean()
    ax.set_title(f"{_tex(name)}: KS p = {ks_p:.3g}, W1 = {rep.batched.w1[:, d].mean():.3g}", fontsize=10)
    ax.legend(fontsize=9)
    r, er = ratio_with_errors(hy, ey, hx, ex)
    axr.errorbar(cx, r, yerr=er, fmt=".", color="tab:red", ms=3)
    axr.axhline(1.0, color="black", lw=0.8)
    lo, hi = 0.5, 1.5  # widened (up to [0, 2]) to show most error bars
    if np.isfinite(r).any():
        lo = min(lo, float(np.nanpercentile(r - er, 5)))
        hi = max(hi, float(np.nanpercentile(r + er, 95)))
    axr.set_ylim(max(lo, 0.0), min(hi, 2.0))
    axr.set_ylabel("y / x")
    axr.set_xlabel(_tex(name))
    return fig


def pair_figure(rep: ComparisonReport, i: int, j: int, plt):
    """68% / 95% / 99.7% highest-density contours of x (solid) and y (dashed) in the plane (i, j)."""
    x, y = _data(rep)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ci, cj, hx2, hy2 = _hist2d(x, y, rep._wx, rep._wy, i, j, 25)
    levels = _levels(hx2)
    if levels is not None:
        ax.contour(ci, cj, hx2.T, levels=levels, colors="black", linewidths=1.2)
        ax.contour(ci, cj, hy2.T, levels=levels, colors="tab:red", linewidths=1.2, linestyles="--")
    ax.plot([], [], color="black", label="x (reference)")
    ax.plot([], [], color="tab:red", ls="--", label="y (test)")
    ax.set_xlabel(_tex(rep.features[i]))
    ax.set_ylabel(_tex(rep.features[j]))
    ax.set_title("68% / 95% / 99.7% density contours", fontsize=10)
    ax.legend(fontsize=9)
    return fig


def _hist2d(x, y, wx, wy, i: int, j: int, bins: int):
    qi = np.quantile(x[:, i], [0.002, 0.998])
    qj = np.quantile(x[:, j], [0.002, 0.998])
    ei = np.linspace(qi[0], qi[1], bins + 1) if qi[1] > qi[0] else bins
    ej = np.linspace(qj[0], qj[1], bins + 1) if qj[1] > qj[0] else bins
    hx2, bi, bj = np.histogram2d(x[:, i], x[:, j], bins=[ei, ej], weights=wx, density=True)
    hy2, _, _ = np.histogram2d(y[:, i], y[:, j], bins=[bi, bj], weights=wy, density=True)
    return 0.5 * (bi[1:] + bi[:-1]), 0.5 * (bj[1:] + bj[:-1]), hx2, hy2


_CORNER_RC = {
    "font.size": 9,
    "axes.labelsize": 10,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 9,
    "xtick.major.size": 4,
    "ytick.major.size": 4,
    "xtick.minor.size": 2,
    "ytick.minor.size": 2,
}


def corner_figure(rep: ComparisonReport, plt, *, features: Sequence[int] | None = None, bins: int = 30):
    """Corner plot: 1-D normalised histograms of x and y on the diagonal, 68% / 95% highest-density
    contours of x (solid) and y (dashed) below it; ``features`` are indices (default: all)."""
    x, y = _data(rep)
    idx = list(range(len(rep.features))) if features is None else [int(k) for k in features]
    k = len(idx)
    if k == 0:
        raise ValueError("corner_figure: argument 'features' is empty")
    cell = 2.1 if k > 2 else 2.8
    edges = {i: _marginal_edges(x[:, i], y[:, i], bins) for i in idx}  # shared by a column and its row
    with plt.rc_context(_CORNER_RC):
        fig, axes = plt.subplots(k, k, figsize=(cell * k + 0.6, cell * k + 0.4), squeeze=False)
        for r, i in enumerate(idx):
            for c, j in enumerate(idx):
                ax = axes[r, c]
                if c > r:
                    ax.set_axis_off()
                    continue
                if r == c:
                    hx, _ = hist_density(x[:, i], rep._wx, edges[i])
                    hy, _ = hist_density(y[:, i], rep._wy, edges[i])
                    ax.stairs(hx, edges[i], color="black")
                    ax.stairs(hy, edges[i], color="tab:red")
                    ax.set_yticks([])
                else:
                    ej = np.linspace(edges[j][0], edges[j][-1], 21)
                    ei = np.linspace(edges[i][0], edges[i][-1], 21)
                    hx2, _, _ = np.histogram2d(x[:, j], x[:, i], bins=[ej, ei], weights=rep._wx, density=True)
                    hy2, _, _ = np.histogram2d(y[:, j], y[:, i], bins=[ej, ei], weights=rep._wy, density=True)
                    cj, ci = 0.5 * (ej[1:] + ej[:-1]), 0.5 * (ei[1:] + ei[:-1])
                    levels = _levels(hx2, probs=(0.95, 0.68))
                    if levels is not None:
                        ax.contour(cj, ci, hx2.T, levels=levels, colors="black", linewidths=1.0)
                        ax.contour(cj, ci, hy2.T, levels=levels, colors="tab:red", linewidths=1.0,
                                   linestyles="--")  # fmt: skip
                    ax.set_ylim(edges[i][0], edges[i][-1])
                    if c == 0:
                        ax.set_ylabel(_tex(rep.features[i]))
                    else:
                        ax.set_yticklabels([])
                ax.set_xlim(edges[j][0], edges[j][-1])
                if r == k - 1:
                    ax.set_xlabel(_tex(rep.features[j]))
                else:
                    ax.set_xticklabels([])
        handles = [
            plt.Line2D([], [], color="black", label="x (reference)"),
            plt.Line2D([], [], color="tab:red", ls="--", label="y (test)"),
        ]
        fig.legend(handles=handles, loc="upper right", frameon=False, title="68% / 95% contours")
        fig.subplots_adjust(left=0.1, bottom=0.1, right=0.98, top=0.98, wspace=0.08, hspace=0.08)
    return fig


def _series(h: Mapping[str, Any], key: str) -> np.ndarray:
    v = h.get(key) or []
    return np.array([math.nan if u is None else float(u) for u in v], dtype=np.float64)


def training_figure(history: Mapping[str, Any], plt):
    """Training curve: training and validation loss (NLL per event) per epoch, the best epoch marked,
    and the learning rate (log scale) below. ``history`` is a ``nfhep.train.History.to_dict()``."""
    loss, val, lr = _series(history, "loss"), _series(history, "val_loss"), _series(history, "lr")
    epochs = np.arange(len(loss))
    fig, (ax, axl) = plt.subplots(
        2, 1, sharex=True, figsize=(6.5, 5.5), gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05}
    )
    ax.plot(epochs, loss, ".-", color="tab:blue", label="training")
    if val.size and np.isfinite(val).any():
        ax.plot(np.arange(len(val)), val, ".-", color="tab:orange", label="validation")
    best = history.get("best_epoch")
    if best is not None:
        ax.axvline(int(best), color="gray", ls="--", lw=1, label=f"best epoch ({int(best)})")
    ax.set_ylabel("loss (NLL / event)")
    ax.legend(fontsize=9)
    good = lr[np.isfinite(lr)]
    if good.size and (good > 0).all():
        axl.plot(np.arange(len(lr)), lr, ".-", color="black")
        axl.set_yscale("log")
        lo, hi = math.floor(math.log10(good.min())), math.ceil(math.log10(good.max()))
        axl.set_ylim(10.0**lo, 10.0 ** max(hi, lo + 1))  # whole decades: labelled major ticks only
        from matplotlib.ticker import NullFormatter

        axl.yaxis.set_minor_formatter(NullFormatter())
    from matplotlib.ticker import MaxNLocator

    axl.xaxis.set_major_locator(MaxNLocator(integer=True))
    axl.set_ylabel("learning rate")
    axl.set_xlabel("epoch")
    return fig


def plot_report(
    rep: ComparisonReport,
    directory: Path,
    *,
    pairs: Sequence[tuple[str, str]] | None,
    bins: int,
    max_pairs: int,
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with hep_style() as plt:
        for d, name in enumerate(rep.features):
            fig = marginal_figure(rep, d, plt, bins=bins)
            p = directory / f"marginal_{d:03d}_{_safe(name)}.png"
            _save(fig, p)
            plt.close(fig)
            written.append(p)
        for i, j in pair_indices(rep, pairs, max_pairs):
            fig = pair_figure(rep, i, j, plt)
            p = directory / f"pair_{_safe(rep.features[i])}_{_safe(rep.features[j])}.png"
            _save(fig, p)
            plt.close(fig)
            written.append(p)
    return written


def pair_indices(
    rep: ComparisonReport, pairs: Sequence[tuple[str, str]] | None, max_pairs: int
) -> list[tuple[int, int]]:
    """``pairs`` as index pairs, or by default the ``max_pairs`` most correlated pairs of x."""
    dim = len(rep.features)
    if pairs is None:
        if dim < 2:
            return []
        from .twosample import correlation

        c = np.abs(correlation(rep._x.astype(np.float64, copy=False), weights=rep._wx))
        iu = np.triu_indices(dim, 1)
        order = np.argsort(-np.nan_to_num(c[iu]))[:max_pairs]
        return [(int(iu[0][k]), int(iu[1][k])) for k in order]
    idx = {n: i for i, n in enumerate(rep.features)}
    out = []
    for a, b in pairs:
        if a not in idx or b not in idx:
            raise ValueError(f"argument 'pairs': unknown feature in ({a!r}, {b!r}); have {rep.features}")
        out.append((idx[a], idx[b]))
    return out


def _levels(h: np.ndarray, probs: Sequence[float] = (0.997, 0.95, 0.68)) -> list[float] | None:
    """Density levels enclosing the ``probs`` of the histogram's mass (increasing)."""
    flat = np.sort(h.ravel())[::-1]
    if flat.sum() <= 0:
        return None
    cum = np.cumsum(flat) / flat.sum()
    lv = sorted({float(flat[min(np.searchsorted(cum, q), flat.size - 1)]) for q in probs})
    lv = [v for v in lv if v > 0]
    return lv or None
