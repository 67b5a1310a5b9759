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
the validation loss ends the training). Any option given on the command line or in ``--config`` wins.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["data_size_defaults"]

_SMALL = 20_000
_MEDIUM = 200_000


def data_size_defaults(
    n_train: int, dim: int, *, batch_size: int = 512, explicit: Collection[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The options chosen for ``n_train`` training events of ``dim`` features, and one log line each.

    Options in ``explicit`` (given by the user) are not chosen.
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
    bs = int(batch_size)
    steps = max(1, math.ceil(n_train / bs))
    if "epochs" not in explicit:
        chosen["epochs"] = int(min(1000, max(200, math.ceil(5000 / steps))))
        why.append(
            f"epochs {chosen['epochs']} (a cap; early stopping decides): {steps} steps per epoch at "
            f"batch size {bs}"
        )
    return chosen, why
