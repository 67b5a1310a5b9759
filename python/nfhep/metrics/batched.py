"""The NFlikelihood papers' batched summaries (arXiv:2309.09743, arXiv:2302.12024).

Both samples are split into ``n_iter`` contiguous batches (each sample by its own batch size
``n // n_iter``; the remainder is dropped); every metric is computed per batch (and per dimension),
then summarised as mean +- std (ddof=0) over batches, and median / mean over dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import as_pair, as_weights
from .twosample import (
    HPDI_PROBS,
    frobenius_correlation,
    hpdie,
    ks_2samp,
    random_directions,
    sliced_wasserstein,
    wasserstein_per_dim,
)

__all__ = ["BatchedMetrics", "batched_metrics", "split_batches"]


def split_batches(n: int, n_iter: int) -> list[slice]:
    """``n_iter`` contiguous slices of ``n // n_iter`` events each; the remainder is dropped."""
    if int(n_iter) < 1:
        raise ValueError(f"argument 'n_iter' must be >= 1, got {n_iter}")
    size = n // int(n_iter)
    if size < 2:
        raise ValueError(f"argument 'n_iter' ({n_iter}) leaves fewer than 2 events per batch for {n} events")
    return [slice(i * size, (i + 1) * size) for i in range(int(n_iter))]


@dataclass(frozen=True)
class BatchedMetrics:
    """Per-batch values (first axis = batch) of every metric; see :func:`batched_metrics`."""

    ks_pvalue: np.ndarray  # (n_iter, D)
    ks_statistic: np.ndarray  # (n_iter, D)
    w1: np.ndarray  # (n_iter, D)
    swd: np.ndarray  # (n_iter,)
    frobenius: np.ndarray  # (n_iter,)
    hpdie: np.ndarray  # (n_iter, P, D)
    hpdie_width: np.ndarray  # (n_iter, P, D)
    probs: tuple[float, ...]
    directions: np.ndarray
    batch_sizes: tuple[int, int]

    @staticmethod
    def _ms(v: np.ndarray) -> tuple[float, float]:
        return float(np.mean(v)), float(np.std(v))

    def summary(self) -> dict[str, Any]:
        """Papers' numbers: over-dimension medians/means of batch means, each with its std over batches.

        For a per-dimension metric ``v[b, d]``: ``median`` = median_d(mean_b v), ``mean`` =
        mean_d(mean_b v), ``std`` = std_b(median_d v[b, :]) (the batch-to-batch spread of the summary).
        """
        out: dict[str, Any] = {}
        for name, v in (("ks_pvalue", self.ks_pvalue), ("ks_statistic", self.ks_statistic), ("w1", self.w1)):
            per_dim = v.mean(axis=0)
            out[name] = {
                "median": float(np.median(per_dim)),
                "mean": float(np.mean(per_dim)),
                "std": float(np.std(np.median(v, axis=1))),
            }
        for name, v in (("swd", self.swd), ("frobenius", self.frobenius)):
            m, s = self._ms(v)
            out[name] = {"mean": m, "std": s}
        for name, v in (("hpdie", self.hpdie), ("hpdie_width", self.hpdie_width)):
            per_dim = v.mean(axis=0)  # (P, D)
            out[name] = {
                f"{p:g}": {
                    "median": float(np.median(per_dim[i])),
                    "mean": float(np.mean(per_dim[i])),
                    "std": float(np.std(np.median(v[:, i, :], axis=1))),
                }
                for i, p in enumerate(self.probs)
            }
        out["n_iter"] = int(self.swd.size)
        out["batch_sizes"] = list(self.batch_sizes)
        return out


def batched_metrics(
    x: Any,
    y: Any,
    *,
    n_iter: int = 10,
    weights_x: Any = None,
    weights_y: Any = None,
    n_directions: int | None = None,
    seed: int | None = 0,
    probs: Any = HPDI_PROBS,
    ks_method: str = "auto",
) -> BatchedMetrics:
    """Compute KS (statistic, p-value), W1 per dimension, SWD, Frobenius norm and HPDIe per batch.

    ``x`` is the reference ("true") sample and ``y`` the one under test ("predicted"); HPDIe is relative
    to ``x``. The same SWD directions (``n_directions``, default 2D, drawn from ``seed``) serve every
    batch. Batches are contiguous: shuffle beforehand if the event order is not random.
    """
    xa, ya = as_pair(x, y)
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    bx = split_batches(xa.shape[0], n_iter)
    by = split_batches(ya.shape[0], n_iter)
    dim = xa.shape[1]
    dirs = random_directions(2 * dim if n_directions is None else int(n_directions), dim, seed=seed)
    pr = tuple(float(p) for p in np.atleast_1d(probs))
    ksp, kss, w1, swd, fro, hp, hpw = [], [], [], [], [], [], []
    for sx, sy in zip(bx, by, strict=True):
        xb, yb = xa[sx], ya[sy]
        wxb = None if wx is None else wx[sx]
        wyb = None if wy is None else wy[sy]
        ks = ks_2samp(xb, yb, weights_x=wxb, weights_y=wyb, method=ks_method)  # type: ignore[arg-type]
        ksp.append(ks.pvalue)
        kss.append(ks.statistic)
        w1.append(wasserstein_per_dim(xb, yb, weights_x=wxb, weights_y=wyb))
        swd.append(sliced_wasserstein(xb, yb, directions=dirs, weights_x=wxb, weights_y=wyb).mean)
        fro.append(frobenius_correlation(xb, yb, weights_x=wxb, weights_y=wyb))
        hp.append(hpdie(xb, yb, probs=pr, weights_true=wxb, weights_pred=wyb))
        hpw.append(hpdie(xb, yb, probs=pr, variant="width", weights_true=wxb, weights_pred=wyb))
    return BatchedMetrics(
        ks_pvalue=np.array(ksp),
        ks_statistic=np.array(kss),
        w1=np.array(w1),
        swd=np.array(swd),
        frobenius=np.array(fro),
        hpdie=np.array(hp),
        hpdie_width=np.array(hpw),
        probs=pr,
        directions=dirs,
        batch_sizes=(bx[0].stop - bx[0].start, by[0].stop - by[0].start),
    )
