r"""Conditioner networks: a plain MLP (coupling flows) and MADE (autoregressive flows).

Both end in a linear layer initialised to zero weights and a chosen bias, so a fresh flow starts at (or
next to) the identity map.

References
----------
arXiv:1502.03509 (M. Germain et al., MADE: Masked Autoencoder for Distribution Estimation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "MADE", "MLP", "MaskedLinear", "made_degrees"]

#: Activation names accepted by the flows (``activation=``).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _hidden_block(
    layers: list[nn.Module], width: int, activation: str, dropout: float, batch_norm: bool
) -> None:
    if batch_norm:
        layers.append(nn.BatchNorm1d(width))
    layers.append(_activation(activation))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))


class MLP(nn.Module):
    """Fully connected network ``in -> hidden... -> out``; last layer zero weights, bias ``out_bias``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes (``in_features`` may be 0: the output is then the last layer's bias, a learned constant).
    hidden : sequence of int
        Hidden layer widths.
    activation : str
        A key of :data:`ACTIVATIONS`.
    dropout : float
        Dropout probability after each hidden activation (0 = none).
    batch_norm : bool
        Batch normalisation before each hidden activation.
    out_bias : torch.Tensor, optional
        Initial bias of the last layer (shape ``(out_features,)``); zeros if omitted.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        out_bias: torch.Tensor | None = None,
    ):
        super().__init__()
        if in_features == 0:
            # nothing to condition on: the output is a learned constant (parameter ``const``)
            self.net = None
            self.const = nn.Parameter(out_bias.clone() if out_bias is not None else torch.zeros(out_features))
            return
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            _hidden_block(layers, h, activation, dropout, batch_norm)
            width = h
        last = nn.Linear(width, out_features)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(out_bias if out_bias is not None else torch.zeros(out_features))
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            return self.const.expand(x.shape[0], -1)
        return self.net(x)


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)^T + b`` with a fixed binary mask ``M`` (persistent buffer ``mask``)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(
                f"MaskedLinear: mask has shape {tuple(mask.shape)}, expected {(out_features, in_features)}"
            )
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(features: int, hidden: Sequence[int], context: int = 0) -> list[torch.Tensor]:
    r"""MADE degrees: inputs ``1..D``; hidden unit ``k`` of every layer ``(k mod (D-1)) + 1``.

    A hidden unit of degree :math:`m` sees inputs of degree :math:`\le m`; the output of input ``d``
    (degree :math:`d`) sees hidden units of degree :math:`< d`. So output ``d`` depends on inputs
    ``1..d-1`` only (the autoregressive property; arXiv:1502.03509, eq. 12-13). Context inputs get
    degree 0 (seen by every unit). With context (``context > 0``) hidden degrees are ``k mod D`` instead,
    so that some units (degree 0) see the context only and feed the first feature's parameters, which
    must depend on the context too. Without context and with ``D = 1`` every hidden unit has degree 0.
    """
    degrees = [torch.arange(1, features + 1)]
    for h in hidden:
        if context > 0:
            degrees.append(torch.arange(h) % features)
        elif features > 1:
            degrees.append(torch.arange(h) % (features - 1) + 1)
        else:
            degrees.append(torch.zeros(h, dtype=torch.long))
    return degrees


class MADE(nn.Module):
    r"""Masked autoencoder: ``P`` outputs per feature, output ``d`` depends on features ``< d`` only.

    Output shape ``(N, D, P)``; features in the order given (permute before calling for other orders).
    Context features (``C``) are concatenated to the input with degree 0.

    Parameters
    ----------
    features : int
        ``D``.
    context : int
        ``C`` (0 = unconditional).
    params_per_feature : int
        ``P``.
    hidden, activation, dropout, batch_norm
        As in :class:`MLP`.
    out_bias : torch.Tensor, optional
        Initial bias per feature parameter, shape ``(P,)`` (repeated over features).

    References
    ----------
    arXiv:1502.03509.
    """

    def __init__(
        self,
        features: int,
        context: int,
        params_per_feature: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        out_bias: torch.Tensor | None = None,
    ):
        super().__init__()
        self.features = features
        self.context = context
        self.params_per_feature = params_per_feature
        degrees = made_degrees(features, hidden, context)
        in_deg = torch.cat([degrees[0], torch.zeros(context, dtype=torch.long)])
        layers: list[nn.Module] = []
        prev = in_deg
        for deg in degrees[1:]:
            mask = (deg[:, None] >= prev[None, :]).to(torch.float32)
            layers.append(MaskedLinear(len(prev), len(deg), mask))
            _hidden_block(layers, len(deg), activation, dropout, batch_norm)
            prev = deg
        out_deg = degrees[0].repeat_interleave(params_per_feature)  # output j -> feature j // P
        mask = (out_deg[:, None] > prev[None, :]).to(torch.float32)
        last = MaskedLinear(len(prev), features * params_per_feature, mask)
        with torch.no_grad():
            last.weight.zero_()
            if out_bias is None:
                last.bias.zero_()
            else:
                last.bias.copy_(out_bias.repeat(features))
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x if context is None else torch.cat([x, context], dim=-1)
        return self.net(h).view(x.shape[0], self.features, self.params_per_feature)
