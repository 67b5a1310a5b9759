"""Classifier two-sample test (C2ST): how well a small classifier separates two samples.

Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", arXiv:1610.06545; the MLP recipe follows
sbibm (Lueckmann et al., arXiv:2101.04653). AUC = 0.5 means indistinguishable samples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import as_pair, as_weights

__all__ = ["C2STResult", "c2st"]


@dataclass(frozen=True)
class C2STResult:
    """Cross-validated ROC AUC (and accuracy) of the classifier: mean, std over folds, per fold."""

    auc: float
    auc_std: float
    accuracy: float
    accuracy_std: float
    auc_per_fold: np.ndarray
    n_per_sample: int


def c2st(
    x: Any,
    y: Any,
    *,
    weights_x: Any = None,
    weights_y: Any = None,
    n_folds: int = 5,
    max_events: int = 5000,
    hidden: tuple[int, ...] = (64, 64),
    seed: int = 0,
) -> C2STResult:
    r"""Classifier two-sample test: cross-validated AUC of an MLP separating ``x`` from ``y``.

    ``min(n_x, n_y, max_events)`` events are drawn from each sample (without replacement, or — with
    weights — with replacement and probability proportional to the weight, so the classifier sees the
    weighted distributions), standardised with the statistics of the training folds, and an MLP
    (``hidden`` layers, ReLU, Adam, early stopping; sbibm's recipe) is trained on ``n_folds`` stratified
    folds. Returns the ROC AUC and accuracy on the held-out folds, mean and std over folds. AUC 0.5 is
    ideal; under H0 its spread is about :math:`1/\sqrt{12 n}` per fold. Needs scikit-learn.
    """
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.metrics import accuracy_score, roc_auc_score
        from sklearn.model_selection import StratifiedKFold
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as err:  # pragma: no cover
        raise ImportError("nfhep.metrics.c2st needs scikit-learn: pip install scikit-learn") from err
    if int(n_folds) < 2:
        raise ValueError(f"argument 'n_folds' must be >= 2, got {n_folds}")
    xa, ya = as_pair(x, y)
    wx = as_weights(weights_x, xa.shape[0], "weights_x")
    wy = as_weights(weights_y, ya.shape[0], "weights_y")
    m = int(min(xa.shape[0], ya.shape[0], max_events))
    if m < 2 * n_folds:
        raise ValueError(f"c2st needs at least {2 * n_folds} events per sample, got {m}")
    rng = np.random.default_rng(seed)

    def draw(a: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        if w is None:
            return a[rng.choice(a.shape[0], m, replace=False)]
        return a[rng.choice(a.shape[0], m, replace=True, p=w / w.sum())]

    data = np.concatenate([draw(xa, wx), draw(ya, wy)]).astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise ValueError("arguments 'x' and 'y' must not contain NaN or inf")
    label = np.concatenate([np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64)])
    folds = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    aucs, accs = [], []
    for k, (tr, te) in enumerate(folds.split(data, label)):
        clf = make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=hidden, max_iter=200, early_stopping=True, random_state=seed + k
            ),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(data[tr], label[tr])
        prob = clf.predict_proba(data[te])[:, 1]
        aucs.append(roc_auc_score(label[te], prob))
        accs.append(accuracy_score(label[te], prob > 0.5))
    a = np.array(aucs)
    return C2STResult(
        auc=float(a.mean()),
        auc_std=float(a.std()),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        auc_per_fold=a,
        n_per_sample=m,
    )
