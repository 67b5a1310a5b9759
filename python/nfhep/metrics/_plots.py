"""Plots of a ComparisonReport (private; see ComparisonReport.plot)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .report import ComparisonReport

__all__ = ["plot_report"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "feature"


def _save(fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _hist(v: np.ndarray, w: np.ndarray | None, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised density and its statistical error per bin (sqrt of the sum of squared weights)."""
    ww = np.ones_like(v) if w is None else w
    h, _ = np.histogram(v, bins=edges, weights=ww)
    e2, _ = np.histogram(v, bins=edges, weights=ww**2)
    norm = ww.sum() * np.diff(edges)
    return h / norm, np.sqrt(e2) / norm


def plot_report(
    rep: ComparisonReport,
    directory: Path,
    *,
    pairs: Sequence[tuple[str, str]] | None,
    bins: int,
    max_pairs: int,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    try:  # optional HEP style
        import mplhep

        style = mplhep.style.CMS
    except ImportError:
        style = "default"
    directory.mkdir(parents=True, exist_ok=True)
    x = rep._x.astype(np.float64, copy=False)
    y = rep._y.astype(np.float64, copy=False)
    wx, wy = rep._wx, rep._wy
    written: list[Path] = []
    with plt.style.context(style):
        for d, name in enumerate(rep.features):
            lo, hi = np.quantile(np.concatenate([x[:, d], y[:, d]]), [0.001, 0.999])
            if not hi > lo:
                lo, hi = lo - 0.5, hi + 0.5
            edges = np.linspace(lo, hi, bins + 1)
            cx = 0.5 * (edges[1:] + edges[:-1])
            hx, ex = _hist(x[:, d], wx, edges)
            hy, ey = _hist(y[:, d], wy, edges)
            fig, (ax, axr) = plt.subplots(
                2, 1, sharex=True, figsize=(6, 5.5), gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05}
            )
            ax.stairs(hx, edges, label=f"x (reference, n={rep.n_x})", color="black")
            ax.stairs(hy, edges, label=f"y (test, n={rep.n_y})", color="tab:red")
            ax.fill_between(cx, hx - ex, hx + ex, step="mid", color="black", alpha=0.15, lw=0)
            ax.set_ylabel("density")
            ks_p = rep.batched.ks_pvalue[:, d].mean()
            ax.set_title(f"{name}: KS p = {ks_p:.3g}, W1 = {rep.batched.w1[:, d].mean():.3g}", fontsize=10)
            ax.legend(fontsize=9)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = hy / hx
                er = r * np.sqrt((ey / hy) ** 2 + (ex / hx) ** 2)
            axr.errorbar(cx, r, yerr=er, fmt=".", color="tab:red", ms=3)
            axr.axhline(1.0, color="black", lw=0.8)
            axr.set_ylim(0.5, 1.5)
            axr.set_ylabel("y / x")
            axr.set_xlabel(name)
            p = directory / f"marginal_{d:03d}_{_safe(name)}.png"
            _save(fig, p)
            plt.close(fig)
            written.append(p)
        dim = len(rep.features)
        if pairs is None and dim >= 2:
            from .twosample import correlation

            c = np.abs(correlation(x, weights=wx))
            iu = np.triu_indices(dim, 1)
            order = np.argsort(-np.nan_to_num(c[iu]))[:max_pairs]
            pair_idx = [(int(iu[0][k]), int(iu[1][k])) for k in order]
        else:
            idx = {n: i for i, n in enumerate(rep.features)}
            pair_idx = []
            for a, b in pairs or []:
                if a not in idx or b not in idx:
                    raise ValueError(
                        f"argument 'pairs': unknown feature in ({a!r}, {b!r}); have {rep.features}"
                    )
                pair_idx.append((idx[a], idx[b]))
        for i, j in pair_idx:
            fig, ax = plt.subplots(figsize=(5.5, 5))
            qi = np.quantile(x[:, i], [0.002, 0.998])
            qj = np.quantile(x[:, j], [0.002, 0.998])
            ei = np.linspace(qi[0], qi[1], 26) if qi[1] > qi[0] else 25
            ej = np.linspace(qj[0], qj[1], 26) if qj[1] > qj[0] else 25
            hx2, bi, bj = np.histogram2d(x[:, i], x[:, j], bins=[ei, ej], weights=wx, density=True)
            hy2, _, _ = np.histogram2d(y[:, i], y[:, j], bins=[bi, bj], weights=wy, density=True)
            ci, cj = 0.5 * (bi[1:] + bi[:-1]), 0.5 * (bj[1:] + bj[:-1])
            levels = _levels(hx2)
            if levels is not None:
                ax.contour(ci, cj, hx2.T, levels=levels, colors="black", linewidths=1.2)
                ax.contour(ci, cj, hy2.T, levels=levels, colors="tab:red", linewidths=1.2, linestyles="--")
            ax.plot([], [], color="black", label="x (reference)")
            ax.plot([], [], color="tab:red", ls="--", label="y (test)")
            ax.set_xlabel(rep.features[i])
            ax.set_ylabel(rep.features[j])
            ax.set_title("68% / 95% / 99.7% density contours", fontsize=10)
            ax.legend(fontsize=9)
            p = directory / f"pair_{_safe(rep.features[i])}_{_safe(rep.features[j])}.png"
            _save(fig, p)
            plt.close(fig)
            written.append(p)
    return written


def _levels(h: np.ndarray) -> list[float] | None:
    """Density levels enclosing 99.7%, 95% and 68% of the histogram's mass (increasing)."""
    flat = np.sort(h.ravel())[::-1]
    if flat.sum() <= 0:
        return None
    cum = np.cumsum(flat) / flat.sum()
    lv = sorted({float(flat[min(np.searchsorted(cum, q), flat.size - 1)]) for q in (0.997, 0.95, 0.68)})
    lv = [v for v in lv if v > 0]
    return lv or None
