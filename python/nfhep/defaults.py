"""Training defaults that fit the data: ``nfhep train`` chooses them from the number of training events.

Small samples overfit a wide network: with 5,000 events of a 28-feature collider ntuple (ROOT's
``Higgs_data.root``, automatic preprocessing), an A-RQS of 2 bijectors reached a median per-feature KS
p-value of 0.30 and a sliced Wasserstein distance of 1.20x truth-vs-truth with a 2x32 conditioner, but only
0.06-0.19 and 1.4-1.7x with 2x64 and 3x128 (``benchmarks/quality/REAL.md`` has the study). Dropout 0.1 and
an L2 penalty of 1e-4 did not help there, so they stay off. Small samples also give few optimiser steps
per epoch, so the epoch cap grows (early stopping on the validation loss still ends the training).

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
from collections.abc import Collection, Mapping
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


def explicit_keys(given: Mapping[str, Any], config: Mapping[str, Any]) -> set[str]:
    """The option names set on the command line or in a config file."""
    return set(given) | set(config)
