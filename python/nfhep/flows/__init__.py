"""Normalizing flows: MAF, RealNVP, C-RQS and A-RQS over shared pieces (MADE, coupling MLPs, permutations).

Each family is a short recipe over :mod:`nfhep.flows.transforms` (layers) and :mod:`nfhep.flows.nets`
(conditioners); all share :class:`Flow` (``log_prob``, ``sample``, ``sample_and_log_prob``,
``transform``, ``inverse``, ``config``) and :func:`build_flow`.

References
----------
arXiv:1705.07057 (MAF), arXiv:1605.08803 (RealNVP), arXiv:1906.04032 (C-RQS, A-RQS),
arXiv:1502.03509 (MADE).
"""

from __future__ import annotations

from .core import (
    FLOWS,
    MAF,
    MAX_MEMBERS,
    AutoregressiveRQS,
    CouplingRQS,
    Ensemble,
    Flow,
    RealNVP,
    build_flow,
    parse_hidden,
)
from .nets import ACTIVATIONS, MADE, MLP, MaskedLinear
from .transforms import ActNorm, AutoregressiveLayer, CouplingLayer, Permutation, Transformer

__all__ = [
    "ACTIVATIONS",
    "FLOWS",
    "MADE",
    "MAF",
    "MAX_MEMBERS",
    "MLP",
    "ActNorm",
    "AutoregressiveLayer",
    "AutoregressiveRQS",
    "CouplingLayer",
    "CouplingRQS",
    "Ensemble",
    "Flow",
    "MaskedLinear",
    "Permutation",
    "RealNVP",
    "Transformer",
    "build_flow",
    "parse_hidden",
]
