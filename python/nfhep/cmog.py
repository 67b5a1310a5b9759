r"""Correlated mixture of Gaussians (CMoG): a multimodal benchmark density with an exact log-density.

The benchmark target of the high-dimensional normalizing-flow study arXiv:2302.12024 (Coccaro, Letizia,
Reyes-Gonzalez, Torre): a mixture of ``n_components`` multivariate normal distributions in ``D``
dimensions,

.. math::

    p(x) = \sum_{k=1}^{K} w_k\, \mathcal{N}(x;\, \mu_k, \Sigma_k), \qquad
    \Sigma_k = \operatorname{diag}(\sigma_k)\, C_k\, \operatorname{diag}(\sigma_k),

    \log p(x) = \operatorname{logsumexp}_k \Big[\log w_k - \tfrac12 \|L_k^{-1}(x - \mu_k)\|^2
    - \textstyle\sum_i \log (L_k)_{ii} - \tfrac D2 \log 2\pi\Big],

with :math:`L_k` the Cholesky factor of :math:`\Sigma_k`. Everything is float64 and exact (no sampling
in :meth:`CMoG.log_prob`).

Parameters (drawn once, in this order, from ``numpy.random.default_rng(seed)``):

1. ``K`` uniform numbers :math:`u_k \sim U(0, 1)`: the weights :math:`w_k = u_k / \sum u` with
   ``weights="random"`` (the paper's choice), or :math:`1/K` with ``"equal"`` (the draw is made anyway, so
   both give the same means and covariances). Drawn first, the weights do not depend on ``D``: for
   ``seed=0``, ``K=3`` they are (0.6721, 0.2847, 0.0432);
2. means :math:`\mu_{k,i} \sim U(\text{box})`, default box ``(0, 10)`` (the paper's);
3. standard deviations :math:`\sigma_{k,i} \sim U(\text{std\_range})`, default ``(0.1, 1)`` (the paper's
   code draws from ``[0, 1)``; the lower bound keeps every component non-degenerate in float32);
4. per component a random correlation matrix :math:`C_k` (``covariance="correlated"``): a Haar-random
   orthogonal :math:`Q` (QR of a standard-normal matrix, signs fixed by ``diag(R) > 0``), eigenvalues
   :math:`\lambda_i \sim U(\text{eigen\_range})` (default ``(0.1, 1)``), :math:`A = Q \operatorname{diag}
   (\lambda) Q^T`, then :math:`C = A_{ij}/\sqrt{A_{ii}A_{jj}}`. With ``covariance="diagonal"``
   :math:`C_k = I`: the paper's code (``MixMultiNormal1``: ``MultivariateNormalDiag`` components), whose
   correlations come from the mixture alone.

The defaults (``seed=0``) are what ``nfhep bench-quality`` uses; :meth:`CMoG.params` returns all of it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CMoG"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_range(name: str, r: Any, *, positive: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"CMoG: argument {name!r} must be a pair (low, high), got {r!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"CMoG: argument {name!r} must have finite low < high, got {r!r}")
    if positive and lo <= 0:
        raise ValueError(f"CMoG: argument {name!r} must be positive, got {r!r}")
    return lo, hi


def _random_correlation(rng: np.random.Generator, d: int, eig: tuple[float, float]) -> np.ndarray:
    g = rng.standard_normal((d, d))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))  # Haar measure on O(d)
    lam = rng.uniform(eig[0], eig[1], d)
    a = (q * lam) @ q.T
    s = np.sqrt(np.diag(a))
    c = a / np.outer(s, s)
    c = 0.5 * (c + c.T)
    np.fill_diagonal(c, 1.0)
    return c


class CMoG:
    """Correlated mixture of Gaussians in ``dim`` dimensions (see the module documentation).

    Parameters
    ----------
    dim : int
        Dimension ``D`` (>= 1).
    n_components : int
        Number of components ``K`` (3 in arXiv:2302.12024).
    seed : int
        Seed of the parameters (not of the samples: :meth:`sample` takes its own generator).
    box : (float, float)
        Means uniform in this interval, per component and dimension.
    std_range : (float, float)
        Standard deviations uniform in this interval (positive).
    weights : {"random", "equal"}
        Mixture weights uniform in (0, 1) then normalised, or all ``1/K``.
    covariance : {"correlated", "diagonal"}
        Random correlation matrix per component, or none (the paper's code).
    eigen_range : (float, float)
        Eigenvalue range of the random correlation matrices before their diagonal is normalised
        (its ratio bounds how elongated a component is).

    Examples
    --------
    >>> import numpy as np
    >>> from nfhep.cmog import CMoG
    >>> target = CMoG(8, seed=0)
    >>> x = target.sample(1000, np.random.default_rng(1))
    >>> target.log_prob(x).shape
    (1000,)
    """

    def __init__(
        self,
        dim: int,
        n_components: int = 3,
        *,
        seed: int = 0,
        box: tuple[float, float] = (0.0, 10.0),
        std_range: tuple[float, float] = (0.1, 1.0),
        weights: str = "random",
        covariance: str = "correlated",
        eigen_range: tuple[float, float] = (0.1, 1.0),
    ) -> None:
        for name, v in (("dim", dim), ("n_components", n_components)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"CMoG: argument {name!r} must be a positive integer, got {v!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
            raise ValueError(f"CMoG: argument 'seed' must be a non-negative integer, got {seed!r}")
        if weights not in ("random", "equal"):
            raise ValueError(f"CMoG: argument 'weights' must be 'random' or 'equal', got {weights!r}")
        if covariance not in ("correlated", "diagonal"):
            raise ValueError(
                f"CMoG: argument 'covariance' must be 'correlated' or 'diagonal', got {covariance!r}"
            )
        self.dim = int(dim)
        self.n_components = int(n_components)
        self.seed = int(seed)
        self.box = _check_range("box", box)
        self.std_range = _check_range("std_range", std_range, positive=True)
        self.eigen_range = _check_range("eigen_range", eigen_range, positive=True)
        self.weights_mode = weights
        self.covariance_mode = covariance

        k, d = self.n_components, self.dim
        rng = np.random.default_rng(self.seed)
        w = rng.uniform(0.0, 1.0, k)  # drawn first (also for "equal"): the same weights for every D
        self.weights = w / w.sum() if weights == "random" else np.full(k, 1.0 / k)
        self.means = rng.uniform(self.box[0], self.box[1], (k, d))
        self.stds = rng.uniform(self.std_range[0], self.std_range[1], (k, d))
        if covariance == "correlated":
            self.correlations = np.stack([_random_correlation(rng, d, self.eigen_range) for _ in range(k)])
        else:
            self.correlations = np.broadcast_to(np.eye(d), (k, d, d)).copy()
        self.covariances = self.correlations * self.stds[:, :, None] * self.stds[:, None, :]
        self._chol = np.linalg.cholesky(self.covariances)  # (K, D, D), lower
        self._log_norm = (
            np.log(self.weights)
            - np.log(np.diagonal(self._chol, axis1=1, axis2=2)).sum(axis=1)
            - 0.5 * d * _LOG_2PI
        )

    def __repr__(self) -> str:
        return (
            f"CMoG(dim={self.dim}, n_components={self.n_components}, seed={self.seed}, "
            f"covariance={self.covariance_mode!r}, weights={self.weights_mode!r})"
        )

    # -- description ------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Everything that defines the density.

        Returns
        -------
        dict
            ``dim``, ``n_components``, ``seed``, ``box``, ``std_range``, ``eigen_range``, ``weights_mode``,
            ``covariance_mode`` (the settings) and the arrays ``weights`` ``(K,)``, ``means`` ``(K, D)``,
            ``stds`` ``(K, D)``, ``correlations`` and ``covariances`` ``(K, D, D)`` (copies).
        """
        return {
            "dim": self.dim,
            "n_components": self.n_components,
            "seed": self.seed,
            "box": self.box,
            "std_range": self.std_range,
            "eigen_range": self.eigen_range,
            "weights_mode": self.weights_mode,
            "covariance_mode": self.covariance_mode,
            "weights": self.weights.copy(),
            "means": self.means.copy(),
            "stds": self.stds.copy(),
            "correlations": self.correlations.copy(),
            "covariances": self.covariances.copy(),
        }

    def mean(self) -> np.ndarray:
        r"""Exact mean of the mixture, :math:`\sum_k w_k \mu_k`, shape ``(D,)``."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        r"""Exact mixture covariance, :math:`\sum_k w_k(\Sigma_k + \mu_k\mu_k^T) - \bar\mu\bar\mu^T`."""
        m = self.mean()
        second = np.einsum("k,kij->ij", self.weights, self.covariances)
        second += np.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - np.outer(m, m)

    # -- sampling and density ---------------------------------------------------------------------------
    def sample(
        self, n: int, rng: np.random.Generator | int | None = None, *, return_labels: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` events (float64, ``(n, D)``): a component per event, then its Gaussian.

        Parameters
        ----------
        n : int
            Number of events.
        rng : numpy.random.Generator or int, optional
            Generator (or seed of one) of the draws; the same generator state gives the same events.
        return_labels : bool
            Also return the ``(n,)`` component index of each event.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
            raise ValueError(f"CMoG.sample: argument 'n' must be a non-negative integer, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        n = int(n)
        labels = rng.choice(self.n_components, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dim))
        x = np.empty((n, self.dim))
        for k in range(self.n_components):
            sel = labels == k
            x[sel] = self.means[k] + z[sel] @ self._chol[k].T
        return (x, labels) if return_labels else x

    def component_log_prob(self, x: Any, *, chunk: int = 65536) -> np.ndarray:
        r""":math:`\log w_k + \log\mathcal{N}(x; \mu_k, \Sigma_k)` per event and component, ``(N, K)``."""
        from scipy.linalg import solve_triangular

        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != self.dim:
            raise ValueError(
                f"CMoG.log_prob: argument 'x' must have shape (N, {self.dim}), got {np.shape(x)}"
            )
        out = np.empty((xa.shape[0], self.n_components))
        for s in range(0, xa.shape[0], chunk):
            xb = xa[s : s + chunk]
            for k in range(self.n_components):
                y = solve_triangular(self._chol[k], (xb - self.means[k]).T, lower=True, check_finite=False)
                out[s : s + chunk, k] = self._log_norm[k] - 0.5 * np.einsum("ij,ij->j", y, y)
        return out

    def log_prob(self, x: Any) -> np.ndarray:
        r"""Exact log-density :math:`\log p(x)` (float64, ``(N,)``): logsumexp of the components'.

        NaN in a row gives NaN; an infinite value gives ``-inf``.
        """
        xa = np.asarray(x, dtype=np.float64)
        rows_nan = np.isnan(xa).any(axis=1) if xa.ndim == 2 else None
        rows_inf = np.isinf(xa).any(axis=1) if xa.ndim == 2 else None
        if rows_nan is not None and (rows_nan.any() or rows_inf.any()):
            xa = np.where(np.isfinite(xa), xa, 0.0)  # placeholders, overwritten below
        lc = self.component_log_prob(xa)
        m = lc.max(axis=1)
        out = m + np.log(np.exp(lc - m[:, None]).sum(axis=1))
        out[rows_inf] = -np.inf
        out[rows_nan] = np.nan
        return out
