r"""The layers a flow is stacked from; each maps data -> latent (``forward``) and back (``inverse``).

Every layer returns ``(output, logabsdet)`` with a per-row ``logabsdet`` of shape ``(N,)``:
``log|det ∂output/∂input|``.

- :class:`AutoregressiveLayer`: MADE conditioner + element-wise transformer (affine = MAF, spline = A-RQS).
  ``forward`` is one network pass; ``inverse`` needs ``D`` sequential passes.
- :class:`CouplingLayer`: the first ``D//2`` features pass unchanged and condition an MLP that gives the
  transformer parameters of the other ``D - D//2`` features (RealNVP, C-RQS). Both directions: one pass.
- :class:`Permutation`: fixed reordering of the features (buffers ``perm``, ``inverse_perm``).
- :class:`ActNorm`: element-wise affine with data-dependent initialisation (Glow, arXiv:1807.03039).

Transformers (element-wise, from :mod:`nfhep.bijectors`):

- ``"affine"``: :math:`z = x e^{s} + t` with a soft-clamped log-scale
  :math:`s = c \tanh(\tilde s / c)` (:math:`c` = ``log_scale_clamp``, default 3): smooth, identity near 0,
  and :math:`|s| < c` so one layer can neither blow up nor collapse a scale by more than :math:`e^{c}`.
  This keeps the training of MAF/RealNVP stable (the unbounded exp is the usual source of NaN).
- ``"rqs"``: rational-quadratic spline on :math:`[-B, B]` with ``K`` knots and identity tails.

References
----------
arXiv:1705.07057 (MAF), arXiv:1605.08803 (RealNVP), arXiv:1906.04032 (NSF: C-RQS, A-RQS),
arXiv:1502.03509 (MADE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import bijectors
from .nets import MADE, MLP

__all__ = ["ActNorm", "AutoregressiveLayer", "CouplingLayer", "Permutation", "Transformer"]


class Transformer:
    """Element-wise bijector settings (``"affine"`` or ``"rqs"``): parameter count, initial bias, call."""

    def __init__(
        self,
        kind: str,
        *,
        knots: int = 8,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        log_scale_clamp: float = 3.0,
    ):
        if kind not in ("affine", "rqs"):
            raise ValueError(f"transformer kind must be 'affine' or 'rqs', got {kind!r}")
        self.kind = kind
        self.knots = int(knots)
        self.bound = float(bound)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self.log_scale_clamp = float(log_scale_clamp)
        if kind == "rqs":
            if self.knots < 2:
                raise ValueError(f"knots must be >= 2, got {knots}")
            if not self.bound > 0:
                raise ValueError(f"range must be > 0, got {bound}")
            if not 0 <= self.min_derivative < 1:
                raise ValueError(f"min_derivative must be in [0, 1), got {min_derivative}")
        elif not self.log_scale_clamp > 0:
            raise ValueError(f"log_scale_clamp must be > 0, got {log_scale_clamp}")

    @property
    def num_params(self) -> int:
        return 2 if self.kind == "affine" else bijectors.rqs_num_params(self.knots)

    def initial_bias(self) -> torch.Tensor:
        """Last-layer bias that makes the transformer the identity (with zero last-layer weights)."""
        bias = torch.zeros(self.num_params)
        if self.kind == "rqs":
            # interior derivatives min_d + softplus(u) = 1  <=>  u = log(expm1(1 - min_d))
            bias[2 * self.knots :] = math.log(math.expm1(1.0 - self.min_derivative))
        return bias

    def __call__(
        self, x: torch.Tensor, params: torch.Tensor, *, inverse: bool, backend: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "affine":
            c = self.log_scale_clamp
            s = c * torch.tanh(params[..., 0] / c)
            return bijectors.affine(
                x, torch.stack([s, params[..., 1]], dim=-1), inverse=inverse, backend=backend
            )
        return bijectors.rqs(
            x,
            params,
            inverse=inverse,
            bound=self.bound,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
            backend=backend,
        )


class AutoregressiveLayer(nn.Module):
    r"""Autoregressive transform :math:`z_i = \tau(x_i; \theta_i(x_{<i}, c))` with a MADE conditioner.

    ``forward`` (data -> latent) costs one MADE pass. ``inverse`` (sampling) inverts the features one at
    a time, ``D`` MADE passes: at pass ``i`` the parameters of feature ``i`` depend only on features
    ``< i``, already final, so only that column is inverted and its log-determinant accumulated.
    """

    def __init__(
        self,
        features: int,
        context: int,
        transformer: Transformer,
        hidden: Sequence[int],
        *,
        activation: str,
        dropout: float,
        batch_norm: bool,
    ):
        super().__init__()
        self.features = features
        self.transformer = transformer
        self.backend = "auto"
        self.conditioner = MADE(
            features,
            context,
            transformer.num_params,
            hidden,
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            out_bias=transformer.initial_bias(),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.conditioner(x, context)
        z, ld = self.transformer(x, params, inverse=False, backend=self.backend)
        return z, ld.sum(-1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = z.shape
        x = torch.zeros_like(z)
        total = z.new_zeros(n)
        for i in range(d):
            params = self.conditioner(x, context)[:, i : i + 1]
            xi, ldi = self.transformer(z[:, i : i + 1], params, inverse=True, backend=self.backend)
            x = torch.cat([x[:, :i], xi, x[:, i + 1 :]], dim=1)
            total = total + ldi[:, 0]
        return x, total


class CouplingLayer(nn.Module):
    r"""Coupling transform: :math:`z_{1:d} = x_{1:d}`, :math:`z_{d+1:D} = \tau(x_{d+1:D}; \theta(x_{1:d}, c))`
    with :math:`d = \lfloor D/2 \rfloor` (arXiv:1605.08803). With ``D = 1`` the one feature is transformed
    with parameters from the context alone (a learned constant without context).
    """

    def __init__(
        self,
        features: int,
        context: int,
        transformer: Transformer,
        hidden: Sequence[int],
        *,
        activation: str,
        dropout: float,
        batch_norm: bool,
    ):
        super().__init__()
        self.features = features
        self.split = features // 2
        self.transformer = transformer
        self.backend = "auto"
        n_out = features - self.split
        p = transformer.num_params
        self.conditioner = MLP(
            self.split + context,
            n_out * p,
            hidden,
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            out_bias=transformer.initial_bias().repeat(n_out),
        )

    def _params(self, x1: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = x1 if context is None else torch.cat([x1, context], dim=-1)
        return self.conditioner(h).view(x1.shape[0], self.features - self.split, self.transformer.num_params)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(z, context, inverse=True)

    def _couple(self, x: torch.Tensor, context: torch.Tensor | None, *, inverse: bool):
        x1, x2 = x[:, : self.split], x[:, self.split :]
        params = self._params(x1, context)
        y2, ld = self.transformer(x2, params, inverse=inverse, backend=self.backend)
        return torch.cat([x1, y2], dim=1), ld.sum(-1)


class Permutation(nn.Module):
    """Fixed feature permutation ``z = x[:, perm]`` (buffers ``perm`` and ``inverse_perm``, int64)."""

    def __init__(self, perm: torch.Tensor):
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if not torch.equal(torch.sort(perm).values, torch.arange(len(perm))):
            raise ValueError(f"Permutation: {perm.tolist()} is not a permutation of 0..{len(perm) - 1}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        return z[:, self.inverse_perm], z.new_zeros(z.shape[0])


class ActNorm(nn.Module):
    r"""Element-wise affine :math:`z = x e^{s} + t` with learned ``s``, ``t`` (arXiv:1807.03039).

    Data-dependent initialisation: the first forward call in training mode sets ``s = -log std(x)``,
    ``t = -mean(x) e^{s}`` on that batch, so its output has zero mean and unit variance; the buffer
    ``initialized`` (0/1) records that it happened (and is saved, so a loaded model is not re-initialised).
    """

    def __init__(self, features: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.zeros(()))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        if self.training and not bool(self.initialized) and x.shape[0] > 1:
            with torch.no_grad():
                std = x.std(0).clamp_min(1e-6)
                self.log_scale.copy_(-torch.log(std))
                self.shift.copy_(-x.mean(0) / std)
                self.initialized.fill_(1)
        z = x * torch.exp(self.log_scale) + self.shift
        return z, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        x = (z - self.shift) * torch.exp(-self.log_scale)
        return x, (-self.log_scale.sum()).expand(z.shape[0])
