"""Two-sample metrics: is a sample (e.g. drawn from a normalizing flow) distributed like a reference?

The validation toolkit of the NFlikelihood papers (arXiv:2309.09743, arXiv:2302.12024), with the heavy
parts (sorting, ECDF merges, projections) in nfhep's C++ core:

- :func:`ks_2samp` — Kolmogorov-Smirnov per dimension (scipy's semantics, weights allowed);
- :func:`sliced_wasserstein`, :func:`wasserstein_per_dim`, :func:`random_directions`;
- :func:`frobenius_correlation`, :func:`anderson_ksamp`, :func:`hpdi`, :func:`hpdie`,
  :func:`mean_cov_difference`, :func:`c2st` (classifier two-sample test), :func:`fpd` and :func:`kpd`
  (Fréchet / kernel physics distances, arXiv:2211.10295);
- :func:`batched_metrics` (the papers' batched summaries) and :func:`compare` (everything, as a
  report with markdown/JSON output and plots); on the command line: ``nfhep compare``.
"""

from __future__ import annotations

from .batched import BatchedMetrics, batched_metrics, split_batches
from .c2st import C2STResult, c2st
from .physics import DistanceEstimate, fpd, frechet_distance, kpd
from .report import ComparisonReport, compare
from .twosample import (
    HPDI_PROBS,
    AndersonResult,
    KSResult,
    SlicedWassersteinResult,
    anderson_ksamp,
    correlation,
    frobenius_correlation,
    hpdi,
    hpdie,
    ks_2samp,
    ks_pvalue,
    mean_cov_difference,
    random_directions,
    sliced_wasserstein,
    wasserstein_per_dim,
)

__all__ = [
    "HPDI_PROBS",
    "AndersonResult",
    "BatchedMetrics",
    "C2STResult",
    "ComparisonReport",
    "DistanceEstimate",
    "KSResult",
    "SlicedWassersteinResult",
    "anderson_ksamp",
    "batched_metrics",
    "c2st",
    "compare",
    "fpd",
    "frechet_distance",
    "kpd",
    "correlation",
    "frobenius_correlation",
    "hpdi",
    "hpdie",
    "ks_2samp",
    "ks_pvalue",
    "mean_cov_difference",
    "random_directions",
    "sliced_wasserstein",
    "split_batches",
    "wasserstein_per_dim",
]
