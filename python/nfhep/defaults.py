"""Training defaults that fit the data: ``nfhep train`` chooses them from the number of training events.

Small samples overfit a wide network. During development, on 5,000 events of ROOT's 28-feature HIGGS
tutorial sample with the automatic preprocessing, an A-RQS of 2 bijectors reached (single runs, one sample
of 5,000 events each) a median per-feature KS p-value of 0.41 and a sliced Wasserstein distance of 1.25x
truth-vs-truth with a 2x32 conditioner, 0.19 and 1.39x with 2x64, 0.07 and 1.60x with the papers' 3x128;
dropout 0.1 (0.14) and an L2 penalty of 1e-4 (0.19) did not beat 2x32, so they stay off
(``benchmarks/quality/REAL.md`` has the benchmark, averaged over sample batches). Small samples also give
few optimiser steps per epoch, so the epoch cap grows (early stopping on the validation loss still ends
the training).

The rules, for ``n`` training events (after the validation split):

=================  ===========  ===========================================
``n``              ``hidden``   note
=================  ===========  ===========================================
< 20,000           2x32         small data: a narrow conditioner
< 200,000          3x64         the LHC-like toy of the NFlikelihood papers
>= 200,000         3x128        the EW fit of the NFlikelihood papers
=================  ===========  ===========================================

``epochs = clip(ceil(5000 / steps per epoch), 200, 1000)`` (a cap: early stopping with patience 20 on
the validation loss ends the training). A MAF (``flow="maf"``) gets 8 bijectors below 200,000 events:
its affine transformers bend a marginal little each (on 5,000 events of ``nfhep.collider_toy``, single
runs scored against 5,000 test events: median KS p 0.06 and SWD 1.94x truth-vs-truth with 2 bijectors,
0.18 and 1.40x with 5, 0.25 and 1.17x with 8); at and above 200,000 the papers' 2 stay. Below 20,000 events
``nfhep train`` trains an ensemble of 3
flows (``--ensemble``: seeds ``seed..seed+2``, each with its own validation split, one preprocessing)
and saves their equal-weight mixture: each flow carries the fluctuations of the rows it was trained on,
and the average of the densities carries less of them. Measured on 5,000 training events, three MAF
flows' single scores against their mixture's (median KS p, SWD / truth-vs-truth): collider toy
0.28-0.33 / 1.36-1.43x vs 0.34 / 1.31x, HIGGS 0.06-0.10 / 1.40-1.51x vs 0.10 / 1.41x, TMVA (3,000
events) 0.35-0.58 / 1.10-1.56x vs 0.58 / 1.23x; five members (0.37 / 1.33x on the collider toy) were
no better than three. Any option given on the command line or in ``--config`` wins.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["data_size_defaults"]

_SMALL = 20_000
_MEDIUM = 200_000
#: bijectors of a MAF below _MEDIUM events (affine transformers: one bijector bends a marginal little)
_MAF_BIJECTORS = 8
#: flows averaged (nfhep train --ensemble) below _SMALL events
_SMALL_ENSEMBLE = 3


def data_size_defaults(
    n_train: int,
    dim: int,
    *,
    batch_size: int = 512,
    explicit: Collection[str] = (),
    flow: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The options chosen for ``n_train`` training events of ``dim`` features, and one log line each.

    Options in ``explicit`` (given by the user) are not chosen. ``flow`` (the family) adds the number of
    bijectors of a MAF below 200,000 events.
    """
    if n_train < 1:
        raise ValueError(f"data_size_defaults: need at least one training event, got {n_train}")
    chosen: dict[str, Any] = {}
    why: list[str] = []
    if "hidden" not in explicit:
        if n_train < _SMALL:
            chosen["hidden"] = "2x32"
            reason = f"{n_train} < {_SMALL:,} training events: a narrow conditioner (small data overfit)"
        elif n_train < _MEDIUM:
            chosen["hidden"] = "3x64"
            reason = f"{n_train} < {_MEDIUM:,} training events"
        else:
            chosen["hidden"] = "3x128"
            reason = f"{n_train} >= {_MEDIUM:,} training events (the papers' EW-fit network)"
        why.append(f"hidden {chosen['hidden']}: {reason}")
    if flow == "maf" and "bijectors" not in explicit and n_train < _MEDIUM:
        chosen["bijectors"] = _MAF_BIJECTORS
        why.append(
            f"bijectors {_MAF_BIJECTORS}: a MAF's affine transformers need depth ({n_train} < {_MEDIUM:,} "
            "training events; the papers' 2 above)"
        )
    if "ensemble" not in explicit:
        chosen["ensemble"] = _SMALL_ENSEMBLE if n_train < _SMALL else 1
        if n_train < _SMALL:
            why.append(
                f"ensemble {_SMALL_ENSEMBLE}: {n_train} < {_SMALL:,} training events, the average of "
                f"{_SMALL_ENSEMBLE} flows' densities (each flow carries its sample's fluctuations)"
            )
    bs = int(batch_size)
    steps = max(1, math.ceil(n_train / bs))
    if "epochs" not in explicit:
        chosen["epochs"] = int(min(1000, max(200, math.ceil(5000 / steps))))
        why.append(
            f"epochs {chosen['epochs']} (a cap; early stopping decides): {steps} steps per epoch at "
            f"batch size {bs}"
        )
    return chosen, why
