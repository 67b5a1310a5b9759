"""``nfhep.metrics.compare``: every metric of the NFlikelihood papers in one report (table + plots)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validate import as_pair, as_weights
from .batched import BatchedMetrics, batched_metrics
from .c2st import C2STResult, c2st
from .twosample import HPDI_PROBS, anderson_ksamp, frobenius_correlation, ks_2samp, mean_cov_difference

__all__ = ["ComparisonReport", "compare"]


def _atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt(v: float, s: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if s is None:
        return f"{v:.4g}"
    return f"{v:.4g} ± {s:.2g}"


@dataclass
class ComparisonReport:
    """Result of :func:`compare`: the papers' summary table, per-feature rows, C2ST, and plots.

    ``x`` is the reference ("true") sample and ``y`` the one under test. Serialise with
    :meth:`to_markdown` / :meth:`to_json`, draw with :meth:`plot`.
    """

    features: list[str]
    n_x: int
    n_y: int
    batched: BatchedMetrics
    ks_full: dict[str, np.ndarray]
    anderson: dict[str, np.ndarray]
    frobenius_full: float
    frobenius_lower: float
    moments: dict[str, Any]
    c2st: C2STResult | None
    settings: dict[str, Any]
    _x: np.ndarray = field(repr=False)
    _y: np.ndarray = field(repr=False)
    _wx: np.ndarray | None = field(repr=False)
    _wy: np.ndarray | None = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The headline numbers (see :meth:`BatchedMetrics.summary`) plus full-sample values and C2ST."""
        s = self.batched.summary()
        s["frobenius_full_sample"] = {"full": self.frobenius_full, "lower": self.frobenius_lower}
        s["ks_full_sample"] = {"median_pvalue": float(np.median(self.ks_full["pvalue"]))}
        if self.c2st is not None:
            s["c2st"] = {
                "auc": self.c2st.auc,
                "auc_std": self.c2st.auc_std,
                "accuracy": self.c2st.accuracy,
                "accuracy_std": self.c2st.accuracy_std,
                "n_per_sample": self.c2st.n_per_sample,
            }
        return s

    def per_feature(self) -> list[dict[str, Any]]:
        """One row per feature: KS (batched p-value, full-sample statistic/p), W1, HPDIe, AD, mean shift."""
        b = self.batched
        rows = []
        for d, name in enumerate(self.features):
            row: dict[str, Any] = {
                "feature": name,
                "ks_pvalue_mean": float(b.ks_pvalue[:, d].mean()),
                "ks_pvalue_std": float(b.ks_pvalue[:, d].std()),
                "ks_statistic_full": float(self.ks_full["statistic"][d]),
                "ks_pvalue_full": float(self.ks_full["pvalue"][d]),
                "w1_mean": float(b.w1[:, d].mean()),
                "w1_std": float(b.w1[:, d].std()),
                "ad_statistic": float(self.anderson["statistic"][d]),
                "ad_pvalue": float(self.anderson["pvalue"][d]),
                "ad_pvalue_capped": bool(self.anderson["capped"][d]),
                "mean_diff_in_std": float(self.moments["mean_diff_in_std"][d]),
            }
            for i, p in enumerate(b.probs):
                row[f"hpdie_{p:g}"] = float(b.hpdie[:, i, d].mean())
                row[f"hpdie_width_{p:g}"] = float(b.hpdie_width[:, i, d].mean())
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain Python types (what :meth:`to_json` writes)."""
        return {
            "nfhep_report": 1,
            "features": list(self.features),
            "n_x": self.n_x,
            "n_y": self.n_y,
            "settings": self.settings,
            "summary": self.summary(),
            "per_feature": self.per_feature(),
            "moments": {
                "mean_diff": self.moments["mean_diff"].tolist(),
                "cov_rel_frobenius": float(self.moments["cov_rel_frobenius"]),
            },
            "swd_directions_seed": self.settings.get("seed"),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        """JSON text of :meth:`to_dict` (NaN/inf written as null); also written atomically to ``path``."""

        def clean(o: Any) -> Any:
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, list | tuple):
                return [clean(v) for v in o]
            if isinstance(o, float) and not math.isfinite(o):
                return None
            return o

        text = json.dumps(clean(self.to_dict()), indent=indent, allow_nan=False)
        if path is not None:
            _atomic_write_text(Path(path), text + "\n")
        return text

    def to_markdown(self, path: str | os.PathLike[str] | None = None) -> str:
        """Markdown: the papers' summary table, then one row per feature; written atomically to ``path``."""
        s = self.summary()
        b = self.batched
        lines = [
            "# nfhep two-sample comparison",
            "",
            f"x (reference): {self.n_x} events, y (test): {self.n_y} events, {len(self.features)} features; "
            f"{s['n_iter']} batches of {s['batch_sizes'][0]} / {s['batch_sizes'][1]} events "
            "(metrics per batch: mean ± std over batches; medians over features).",
            "",
            "| metric | value | optimal |",
            "|---|---|---|",
            f"| median KS p-value | {_fmt(s['ks_pvalue']['median'], s['ks_pvalue']['std'])} | 0.5 |",
            f"| mean KS p-value | {_fmt(s['ks_pvalue']['mean'])} | 0.5 |",
            f"| median KS statistic | {_fmt(s['ks_statistic']['median'], s['ks_statistic']['std'])} | 0 |",
            f"| sliced Wasserstein (W1, {b.directions.shape[0]} directions) | "
            f"{_fmt(s['swd']['mean'], s['swd']['std'])} | 0 |",
            f"| median 1-D Wasserstein | {_fmt(s['w1']['median'], s['w1']['std'])} | 0 |",
            f"| Frobenius norm ‖ΔC‖_F | {_fmt(s['frobenius']['mean'], s['frobenius']['std'])} | 0 |",
        ]
        for i, p in enumerate(b.probs):
            h = s["hpdie"][f"{p:g}"]
            lines.append(f"| median HPDIe {i + 1}σ ({p:g}) | {_fmt(h['median'], h['std'])} | 0 |")
        if self.c2st is not None:
            lines.append(
                f"| C2ST AUC ({self.c2st.n_per_sample} events/sample) | "
                f"{_fmt(self.c2st.auc, self.c2st.auc_std)} | 0.5 |"
            )
        lines.append(
            f"| full-sample Frobenius (full / lower-triangle) | "
            f"{_fmt(self.frobenius_full)} / {_fmt(self.frobenius_lower)} | 0 |"
        )
        lines += ["", "## Per feature", ""]
        hp_cols = " | ".join(f"HPDIe {p:g}" for p in b.probs)
        lines.append(f"| feature | KS p (batches) | KS D (full) | W1 | {hp_cols} | AD p | Δmean/σ |")
        lines.append("|---" * (6 + len(b.probs)) + "|")
        for r in self.per_feature():
            hp = " | ".join(_fmt(r[f"hpdie_{p:g}"]) for p in b.probs)
            adp = ("≤" if r["ad_pvalue"] <= 0.001 else "≥") if r["ad_pvalue_capped"] else ""
            lines.append(
                f"| {r['feature']} | {_fmt(r['ks_pvalue_mean'], r['ks_pvalue_std'])} | "
                f"{_fmt(r['ks_statistic_full'])} | {_fmt(r['w1_mean'], r['w1_std'])} | {hp} | "
                f"{adp}{_fmt(r['ad_pvalue'])} | {_fmt(r['mean_diff_in_std'])} |"
            )
        lines += [
            "",
            "KS: two-sided, scipy's rules for p-values (arXiv:2309.09743 summary: mean over batches, median "
            "over features). HPDIe: relative error of the highest-density interval endpoints. AD: "
            "Anderson-Darling k-sample p-value (interpolated, clipped to [0.001, 0.25]).",
            "",
        ]
        text = "\n".join(lines)
        if path is not None:
            _atomic_write_text(Path(path), text)
        return text

    def plot(
        self,
        directory: str | os.PathLike[str],
        *,
        pairs: Sequence[tuple[str, str]] | None = None,
        bins: int = 50,
        max_pairs: int = 6,
    ) -> list[Path]:
        """Write PNGs to ``directory``: one marginal histogram with a ratio panel per feature, and 2-D
        correlation contours for ``pairs`` (default: the ``max_pairs`` most correlated pairs of x).

        Uses matplotlib with the Agg backend (no display), mplhep's CMS style if installed. Each file is
        written to a temporary name and renamed. Returns the paths written.
        """
        from ._plots import plot_report

        return plot_report(self, Path(directory), pairs=pairs, bins=bins, max_pairs=max_pairs)


def compare(
    x: Any,
    y: Any,
    *,
    features: Sequence[str] | None = None,
    weights_x: Any = None,
    weights_y: Any = None,
    n_iter: int = 10,
    seed: int = 0,
    n_directions: int | None = None,
    probs: Sequence[float] = HPDI_PROBS,
    run_c2st: bool = True,
    c2st_max_events: int = 5000,
    ad_max_events: int = 100000,
) -> ComparisonReport:
    """Compare a test sample ``y`` with a reference sample ``x`` (both (n, D)) with every metric of the
    NFlikelihood papers (arXiv:2309.09743, arXiv:2302.12024).

    Batched (``n_iter`` contiguous batches, remainder dropped; mean ± std over batches, median/mean over
    features): KS p-values and statistics, 1-D W1, sliced Wasserstein (2D directions by default, drawn
    from ``seed`` and shared by all batches), Frobenius norm of the correlation difference, HPDIe at
    ``probs`` (endpoint and width variants). Full sample: KS per feature, Frobenius norm (full and
    lower-triangle variants), mean/covariance differences; Anderson-Darling on the first
    ``ad_max_events`` events of each sample; a classifier two-sample test (``run_c2st``, AUC of an MLP,
    5-fold CV, on up to ``c2st_max_events`` events per sample; needs scikit-learn).

    Returns
    -------
    ComparisonReport
    """
    xa, ya = as_pair(x, y)
    dim = xa.shape[1]
    if features is None:
        names = [f"x{d}" for d in range(dim)]
    else:
        names = [str(f) for f in features]
        if len(names) != dim:
            raise ValueError(f"argument 'features' must name {dim} features, got {len(names)}")
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    bm = batched_metrics(
        xa, ya, n_iter=n_iter, weights_x=wx, weights_y=wy, n_directions=n_directions, seed=seed, probs=probs
    )
    ks = ks_2samp(xa, ya, weights_x=wx, weights_y=wy)
    na, nb = min(xa.shape[0], ad_max_events), min(ya.shape[0], ad_max_events)
    ad = anderson_ksamp(xa[:na], ya[:nb])
    c2 = c2st(xa, ya, weights_x=wx, weights_y=wy, max_events=c2st_max_events, seed=seed) if run_c2st else None
    return ComparisonReport(
        features=names,
        n_x=int(xa.shape[0]),
        n_y=int(ya.shape[0]),
        batched=bm,
        ks_full={"statistic": ks.statistic, "pvalue": ks.pvalue},
        anderson={"statistic": ad.statistic, "pvalue": ad.pvalue, "capped": ad.capped},
        frobenius_full=frobenius_correlation(xa, ya, weights_x=wx, weights_y=wy),
        frobenius_lower=frobenius_correlation(xa, ya, variant="lower", weights_x=wx, weights_y=wy),
        moments=mean_cov_difference(xa, ya, weights_x=wx, weights_y=wy),
        c2st=c2,
        settings={
            "n_iter": int(n_iter),
            "seed": seed,
            "n_directions": int(bm.directions.shape[0]),
            "probs": list(bm.probs),
            "weighted": wx is not None or wy is not None,
            "ad_max_events": int(ad_max_events),
            "c2st_max_events": int(c2st_max_events) if run_c2st else None,
        },
        _x=xa,
        _y=ya,
        _wx=wx,
        _wy=wy,
    )
