r"""The flow base class, the four families (MAF, RealNVP, C-RQS, A-RQS) and their configuration.

A flow maps data :math:`x` to latent :math:`z = T^{-1}(x)` through a stack of layers
(``bijector_0, permutation_0, bijector_1, ..., bijector_{B-1}``) and evaluates

.. math::

    \log p(x \mid c) = \log \mathcal{N}(z; 0, I) + \sum_\ell \log\left|\det \frac{\partial h_\ell}
    {\partial h_{\ell-1}}\right|.

Sampling draws :math:`z \sim \mathcal{N}(0, I)` and runs the layers backwards.

References
----------
arXiv:1705.07057 (MAF), arXiv:1605.08803 (RealNVP), arXiv:1906.04032 (C-RQS, A-RQS),
arXiv:1502.03509 (MADE), arXiv:1912.02762 (review: G. Papamakarios et al.).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .nets import ACTIVATIONS
from .transforms import ActNorm, AutoregressiveLayer, CouplingLayer, Permutation, Transformer

__all__ = [
    "FLOWS",
    "MAF",
    "MAX_MEMBERS",
    "AutoregressiveRQS",
    "CouplingRQS",
    "Ensemble",
    "Flow",
    "RealNVP",
    "build_flow",
    "parse_hidden",
]

_PERMUTATIONS = ("reverse", "random", "none")
_LOG_2PI = math.log(2.0 * math.pi)


def parse_hidden(spec: str | int | Sequence[int]) -> list[int]:
    """Hidden layer widths from a physicist's spelling: ``"3x128"`` -> ``[128, 128, 128]``.

    Also accepts ``"128,64"``, ``"3×128"``, a single int (one layer) and a sequence of ints.

    Raises
    ------
    ValueError
        Unparseable text or a width < 1.
    """
    if isinstance(spec, bool):
        raise TypeError("parse_hidden: argument 'spec' must be a str, int or sequence of int, got bool")
    if isinstance(spec, int):
        out = [spec]
    elif isinstance(spec, str):
        text = spec.strip().lower().replace("×", "x").replace(" ", "")
        m = re.fullmatch(r"(\d+)x(\d+)", text)
        if m:
            out = [int(m.group(2))] * int(m.group(1))
        elif re.fullmatch(r"\d+(,\d+)*", text):
            out = [int(t) for t in text.split(",")]
        else:
            raise ValueError(
                f"parse_hidden: cannot parse hidden layers {spec!r}; expected e.g. '3x128' or '128,64'"
            )
    else:
        out = [int(h) for h in spec]
        if any(isinstance(h, bool) or int(h) != h for h in spec):
            raise ValueError(f"parse_hidden: widths must be integers, got {list(spec)!r}")
    if not out or any(h < 1 for h in out):
        raise ValueError(f"parse_hidden: need at least one layer and widths >= 1, got {spec!r}")
    return out


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"argument {name!r} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"argument {name!r} must be >= {minimum}, got {value}")
    return value


class Flow(nn.Module):
    r"""Base class of the nfhep flows: a stack of bijective layers over a standard normal base.

    Subclasses build ``self.layers`` (an :class:`torch.nn.ModuleList`, data -> latent order) and fill
    ``self._config``. Shapes: ``x`` is ``(N, D)``; ``context`` is ``None``, ``(C,)`` (broadcast to every
    row) or ``(N, C)``; log-densities are ``(N,)``. Tensors must have the flow's dtype and device.

    Attributes
    ----------
    backend : {"auto", "cpp", "torch"}
        Which implementation of the element-wise bijectors the layers call (not part of the config).
    """

    family: str = ""

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        bijectors: int = 2,
        hidden: str | int | Sequence[int] = (64, 64, 64),
        activation: str = "relu",
        permutation: str = "reverse",
        seed: int = 0,
        dropout: float = 0.0,
        batch_norm: bool = False,
        actnorm: bool = False,
        transformer: Transformer,
        coupling: bool,
        extra_config: Mapping[str, Any],
        backend: str = "auto",
    ):
        super().__init__()
        self.features = _check_int("features", features, 1)
        self.context = _check_int("context", context, 0)
        bijectors = _check_int("bijectors", bijectors, 1)
        seed = _check_int("seed", seed, 0)
        hidden = parse_hidden(hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"argument 'activation' must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        if permutation not in _PERMUTATIONS:
            raise ValueError(f"argument 'permutation' must be one of {_PERMUTATIONS}, got {permutation!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"argument 'dropout' must be in [0, 1), got {dropout}")
        layer_cls = CouplingLayer if coupling else AutoregressiveLayer
        layers: list[nn.Module] = []
        gen = torch.Generator().manual_seed(seed)
        for i in range(bijectors):
            if i > 0 and permutation != "none":
                if permutation == "reverse":
                    perm = torch.arange(features - 1, -1, -1)
                else:
                    perm = torch.randperm(features, generator=gen)
                layers.append(Permutation(perm))
            if actnorm:
                layers.append(ActNorm(features))
            layers.append(
                layer_cls(
                    features,
                    self.context,
                    transformer,
                    hidden,
                    activation=activation,
                    dropout=float(dropout),
                    batch_norm=bool(batch_norm),
                )
            )
        self.layers = nn.ModuleList(layers)
        self._config: dict[str, Any] = {
            "family": self.family,
            "features": self.features,
            "context": self.context,
            "bijectors": bijectors,
            "hidden": hidden,
            "activation": activation,
            "permutation": permutation,
            "seed": seed,
            "dropout": float(dropout),
            "batch_norm": bool(batch_norm),
            "actnorm": bool(actnorm),
            **dict(extra_config),
        }
        self.backend = backend

    # -- configuration -------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration; :func:`build_flow` of it rebuilds this flow (fresh weights)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in ("auto", "cpp", "torch"):
            raise ValueError(f"backend must be 'auto', 'cpp' or 'torch', got {value!r}")
        self._backend = value
        for child in self._backend_children():
            child.backend = value

    def _backend_children(self) -> list[nn.Module]:
        """The modules that take the backend setting (the layers with element-wise bijectors)."""
        return [layer for layer in self.layers if hasattr(layer, "backend")]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items() if k != "family")

    # -- argument checks ------------------------------------------------------------------------------
    def _ref(self) -> torch.Tensor:
        for t in self.parameters():
            return t
        for t in self.buffers():  # pragma: no cover - every flow has parameters
            return t
        raise RuntimeError("flow has no tensors")  # pragma: no cover

    def _check_x(self, func: str, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{func}: argument {name!r} must be a torch.Tensor, got {type(x).__name__}")
        ref = self._ref()
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(
                f"{func}: argument {name!r} must have shape (N, {self.features}), got {tuple(x.shape)}"
            )
        if x.dtype != ref.dtype:
            raise TypeError(
                f"{func}: argument {name!r} has dtype {x.dtype}, the flow's is {ref.dtype} "
                "(convert the input or the flow with .to(dtype))"
            )
        if x.device != ref.device:
            raise ValueError(f"{func}: argument {name!r} is on {x.device}, the flow on {ref.device}")
        return x

    def _check_context(self, func: str, context: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.context == 0:
            if context is not None:
                raise ValueError(f"{func}: argument 'context' given but the flow has no context features")
            return None
        if context is None:
            raise ValueError(
                f"{func}: argument 'context' is required (the flow has {self.context} context features)"
            )
        if not isinstance(context, torch.Tensor):
            raise TypeError(
                f"{func}: argument 'context' must be a torch.Tensor, got {type(context).__name__}"
            )
        ref = self._ref()
        if context.dtype != ref.dtype:
            raise TypeError(
                f"{func}: argument 'context' has dtype {context.dtype}, the flow's is {ref.dtype}"
            )
        if context.dim() == 1 and context.shape[0] == self.context:
            return context.expand(n, self.context)
        if context.dim() == 2 and context.shape == (n, self.context):
            return context
        raise ValueError(
            f"{func}: argument 'context' must have shape ({self.context},) or ({n}, {self.context}), "
            f"got {tuple(context.shape)}"
        )

    # -- the maps ---------------------------------------------------------------------------------------
    def transform(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Data -> latent: :math:`z = T^{-1}(x)` and :math:`\log|\det \partial z/\partial x|` (``(N,)``)."""
        x = self._check_x("Flow.transform", x)
        context = self._check_context("Flow.transform", context, x.shape[0])
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x, context)
            total = total + ld
        return x, total

    def inverse(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Latent -> data: :math:`x = T(z)` and :math:`\log|\det \partial x/\partial z|`, shape ``(N,)``.

        Autoregressive layers need ``D`` sequential network passes each.
        """
        z = self._check_x("Flow.inverse", z, "z")
        context = self._check_context("Flow.inverse", context, z.shape[0])
        total = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z, context)
            total = total + ld
        return z, total

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r"""Standard normal :math:`\log\mathcal{N}(z; 0, I) = -\tfrac12\|z\|^2 - \tfrac D2 \log 2\pi`."""
        return -0.5 * (z * z).sum(-1) - 0.5 * self.features * _LOG_2PI

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\log p(x \mid c)`, shape ``(N,)`` (change of variables, see the module doc)."""
        z, ld = self.transform(x, context)
        return self.base_log_prob(z) + ld

    def _draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        n = _check_int("n", n, 0)
        ref = self._ref()
        return torch.randn(n, self.features, dtype=ref.dtype, device=ref.device, generator=generator)

    def sample(
        self, n: int, context: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` events, shape ``(n, D)`` (no gradient; :meth:`inverse` gives reparameterised draws)."""
        with torch.no_grad():
            z = self._draw(n, generator)
            return self.inverse(z, context)[0]

    def sample_and_log_prob(
        self, n: int, context: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Draw ``n`` events and :math:`\log p = \log\mathcal{N}(z) - \log|\det\partial x/\partial z|`."""
        with torch.no_grad():
            z = self._draw(n, generator)
            x, ld = self.inverse(z, context)
            return x, self.base_log_prob(z) - ld

    def conditioner_weights(self) -> list[nn.Parameter]:
        """The weight matrices of the conditioner networks (what L1/L2 regularisation acts on)."""
        out = []
        for layer in self.layers:
            cond = getattr(layer, "conditioner", None)
            if cond is None:
                continue
            for m in cond.modules():
                if isinstance(m, nn.Linear):
                    out.append(m.weight)
        return out


def _spline_options(knots, range_, bound, min_bin_width, min_bin_height, min_derivative):
    if bound is not None:
        if range_ is not None and float(range_) != float(bound):
            raise ValueError(f"give 'range' or its alias 'bound', not both ({range_} != {bound})")
        range_ = bound
    range_ = 5.0 if range_ is None else float(range_)
    knots = _check_int("knots", knots, 2)
    tr = Transformer(
        "rqs",
        knots=knots,
        bound=range_,
        min_bin_width=min_bin_width,
        min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )
    extra = {
        "knots": knots,
        "range": range_,
        "min_bin_width": float(min_bin_width),
        "min_bin_height": float(min_bin_height),
        "min_derivative": float(min_derivative),
    }
    return tr, extra


class MAF(Flow):
    r"""Masked Autoregressive Flow (arXiv:1705.07057): MADE-conditioned affine layers.

    :math:`z_i = x_i e^{s_i} + t_i`, :math:`(s_i, t_i) = \mathrm{MADE}(x_{<i}, c)`, with the soft-clamped
    log-scale :math:`s = c_s\tanh(\tilde s/c_s)`, :math:`c_s` = ``log_scale_clamp`` (default 3). Density:
    one pass; sampling: ``D`` passes per layer.

    Parameters
    ----------
    features : int
        ``D``.
    context : int
        Number of context features ``C`` (0: unconditional).
    bijectors : int
        Number of autoregressive layers (default 2, as in arXiv:2309.09743).
    hidden : str, int or sequence of int
        Conditioner hidden layers (``"3x64"`` or ``[64, 64, 64]``; default 3x64).
    activation : str
        ``relu`` (default), ``tanh``, ``elu``, ``gelu``, ``silu``, ``leaky_relu``, ``sigmoid``.
    permutation : {"reverse", "random", "none"}
        Feature order between layers (``random``: seeded by ``seed``).
    seed : int
        Seed of the random permutations (weights are initialised from torch's global RNG).
    dropout : float
        Dropout in the conditioners' hidden layers.
    batch_norm : bool
        Batch normalisation in the conditioners' hidden layers.
    actnorm : bool
        An :class:`~nfhep.flows.transforms.ActNorm` before every bijector.
    log_scale_clamp : float
        Soft bound of the affine log-scale.
    backend : {"auto", "cpp", "torch"}
        Implementation of the element-wise bijectors (runtime choice, not saved in the config).
    """

    family = "maf"

    def __init__(self, features: int, *, log_scale_clamp: float = 3.0, **kwargs: Any):
        tr = Transformer("affine", log_scale_clamp=log_scale_clamp)
        super().__init__(
            features,
            transformer=tr,
            coupling=False,
            extra_config={"log_scale_clamp": float(log_scale_clamp)},
            **kwargs,
        )


class RealNVP(Flow):
    r"""RealNVP (arXiv:1605.08803): affine coupling layers.

    :math:`z_{1:d} = x_{1:d}`, :math:`z_{d+1:D} = x_{d+1:D} e^{s} + t`,
    :math:`(s, t) = \mathrm{MLP}(x_{1:d}, c)`,
    :math:`d = \lfloor D/2\rfloor`; soft-clamped log-scale as in :class:`MAF`. Both directions: one pass.
    Parameters as :class:`MAF`.
    """

    family = "realnvp"

    def __init__(self, features: int, *, log_scale_clamp: float = 3.0, **kwargs: Any):
        tr = Transformer("affine", log_scale_clamp=log_scale_clamp)
        super().__init__(
            features,
            transformer=tr,
            coupling=True,
            extra_config={"log_scale_clamp": float(log_scale_clamp)},
            **kwargs,
        )


class CouplingRQS(Flow):
    r"""Coupling rational-quadratic spline flow, C-RQS (arXiv:1906.04032).

    Coupling layers as in :class:`RealNVP` whose transformer is a monotonic RQ spline on
    :math:`[-B, B]` with ``knots`` bins and identity tails (:func:`nfhep.bijectors.rqs`).

    Parameters
    ----------
    knots : int
        Number of spline bins ``K`` (default 8).
    range : float
        Spline half-width ``B`` (default 5); ``bound`` is accepted as an alias.
    min_bin_width, min_bin_height, min_derivative : float
        Spline minimums (default 1e-3 each).
    **kwargs
        As :class:`MAF` (features, context, bijectors, hidden, activation, permutation, seed, dropout,
        batch_norm, actnorm, backend).
    """

    family = "crqs"

    def __init__(
        self,
        features: int,
        *,
        knots: int = 8,
        range: float | None = None,  # noqa: A002 - the physicists' name of the option
        bound: float | None = None,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        **kwargs: Any,
    ):
        tr, extra = _spline_options(knots, range, bound, min_bin_width, min_bin_height, min_derivative)
        super().__init__(features, transformer=tr, coupling=True, extra_config=extra, **kwargs)


class AutoregressiveRQS(Flow):
    r"""Autoregressive rational-quadratic spline flow, A-RQS (arXiv:1906.04032).

    MADE-conditioned (as :class:`MAF`) RQ splines, the flow of the NFlikelihood papers
    (arXiv:2309.09743). Parameters as :class:`CouplingRQS`.
    """

    family = "arqs"

    def __init__(
        self,
        features: int,
        *,
        knots: int = 8,
        range: float | None = None,  # noqa: A002
        bound: float | None = None,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        **kwargs: Any,
    ):
        tr, extra = _spline_options(knots, range, bound, min_bin_width, min_bin_height, min_derivative)
        super().__init__(features, transformer=tr, coupling=False, extra_config=extra, **kwargs)


#: The flow families by their short names (CLI ``--flow``).
FLOWS: dict[str, type[Flow]] = {
    "maf": MAF,
    "realnvp": RealNVP,
    "crqs": CouplingRQS,
    "arqs": AutoregressiveRQS,
}


def build_flow(config: Mapping[str, Any]) -> Flow:
    """Build a flow (fresh weights) from its :attr:`Flow.config`; then ``load_state_dict`` the weights.

    ``family = "ensemble"`` builds an :class:`Ensemble` of its ``members`` (each a flow config).

    Raises
    ------
    ValueError
        Unknown family, missing ``features``, or an option the family does not take.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"build_flow: argument 'config' must be a mapping, got {type(config).__name__}")
    cfg = dict(config)
    family = cfg.pop("family", None)
    if family == Ensemble.family:
        return Ensemble.from_config(config)
    if family not in FLOWS:
        raise ValueError(
            f"build_flow: config['family'] must be one of {sorted(FLOWS) + ['ensemble']}, got {family!r}"
        )
    if "features" not in cfg:
        raise ValueError("build_flow: config has no 'features'")
    features = cfg.pop("features")
    try:
        return FLOWS[family](features, **cfg)
    except TypeError as err:
        raise ValueError(f"build_flow: invalid option for family {family!r}: {err}") from None


#: The most members an ensemble may have (the C++ engine's limit too).
MAX_MEMBERS = 64


class Ensemble(Flow):
    r"""An equal-weight mixture of ``M`` flows: :math:`p(u) = \frac1M \sum_k p_k(u)`.

    What ``nfhep train --ensemble M`` builds: ``M`` flows of one configuration (differing only in their
    ``seed`` and trained weights) over one shared preprocessing. The density is the average of the
    members' densities (a ``logsumexp``); a sample draws each event's member uniformly at random, then
    the event from that member. :meth:`member_log_probs` gives every member's log-density, whose spread
    over the members is an estimate of the model's (training) uncertainty at each point.

    A mixture is not a bijection: :meth:`transform` and :meth:`inverse` raise ``TypeError``.
    ``state_dict`` names are ``members.{k}.<the member's names>``; ``config`` is
    ``{"family": "ensemble", "features": D, "context": C, "members": [config_0, ...]}``.
    """

    family = "ensemble"

    def __init__(self, members: Sequence[Flow]):
        nn.Module.__init__(self)
        members = list(members)
        if not 2 <= len(members) <= MAX_MEMBERS:
            raise ValueError(f"Ensemble: needs 2 to {MAX_MEMBERS} member flows, got {len(members)}")
        for k, m in enumerate(members):
            if not isinstance(m, Flow) or isinstance(m, Ensemble):
                raise TypeError(
                    f"Ensemble: member {k} must be an nfhep flow (not an ensemble), got {type(m).__name__}"
                )
        ref = {k: v for k, v in members[0].config.items() if k != "seed"}
        for k, m in enumerate(members[1:], 1):
            cfg = {a: b for a, b in m.config.items() if a != "seed"}
            if cfg != ref:
                diff = sorted(a for a in set(cfg) | set(ref) if cfg.get(a) != ref.get(a))
                raise ValueError(
                    f"Ensemble: member {k} differs from member 0 in {diff}; the members must share one "
                    "configuration except 'seed'"
                )
        dtypes = {next(m.parameters()).dtype for m in members}
        if len(dtypes) > 1:
            raise ValueError(f"Ensemble: the members mix dtypes {sorted(map(str, dtypes))}")
        self.members = nn.ModuleList(members)
        self.features = members[0].features
        self.context = members[0].context
        self._config = {"family": self.family, "features": self.features, "context": self.context}
        self._backend = members[0].backend

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Ensemble:
        """Rebuild from :attr:`config` (fresh weights)."""
        extra = sorted(set(config) - {"family", "features", "context", "members"})
        if extra:
            raise ValueError(f"build_flow: unknown key(s) {extra} in an ensemble configuration")
        members = config.get("members")
        if not isinstance(members, (list, tuple)):
            raise ValueError("build_flow: an ensemble configuration needs 'members', a list of flow configs")
        flows = []
        for k, m in enumerate(members):
            if not isinstance(m, Mapping) or m.get("family") == cls.family:
                raise ValueError(
                    f"build_flow: ensemble member {k} must be a flow configuration (not an ensemble)"
                )
            flows.append(build_flow(m))
        ens = cls(flows)
        for key in ("features", "context"):
            if key in config and config[key] != getattr(ens, key):
                raise ValueError(
                    f"build_flow: the ensemble's {key!r} = {config[key]!r} differs from its members' "
                    f"({getattr(ens, key)})"
                )
        return ens

    @property
    def config(self) -> dict[str, Any]:
        return {**self._config, "members": [m.config for m in self.members]}

    def _backend_children(self) -> list[nn.Module]:
        return list(self.members)

    def extra_repr(self) -> str:
        return f"members={len(self.members)}"

    def transform(self, x, context=None):
        raise TypeError("Ensemble.transform: a mixture of flows is not a bijection (use a member's)")

    def inverse(self, z, context=None):
        raise TypeError("Ensemble.inverse: a mixture of flows is not a bijection (use a member's)")

    def member_log_probs(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Every member's log-density, shape ``(N, M)``."""
        x = self._check_x("Ensemble.member_log_probs", x)
        context = self._check_context("Ensemble.member_log_probs", context, x.shape[0])
        return torch.stack([m.log_prob(x, context) for m in self.members], dim=1)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\log \frac1M \sum_k p_k(x \mid c)`, shape ``(N,)``."""
        lp = self.member_log_probs(x, context)
        return torch.logsumexp(lp, dim=1) - math.log(len(self.members))

    def _draw_members(self, n: int, context, generator):
        n = _check_int("n", n, 0)
        context = self._check_context("Ensemble.sample", context, n)
        ref = self._ref()
        k = torch.randint(len(self.members), (n,), generator=generator)
        x = torch.empty(n, self.features, dtype=ref.dtype, device=ref.device)
        for j, m in enumerate(self.members):
            rows = (k == j).nonzero(as_tuple=True)[0]
            if rows.numel():
                c = None if context is None else context[rows.to(context.device)]
                x[rows.to(ref.device)] = m.sample(int(rows.numel()), c, generator=generator)
        return x, context

    def sample(self, n, context=None, *, generator=None):
        """``n`` events of the mixture: each event's member drawn uniformly, then the event from it."""
        with torch.no_grad():
            return self._draw_members(n, context, generator)[0]

    def sample_and_log_prob(self, n, context=None, *, generator=None):
        """``n`` events and the mixture's log-density at them (not the drawing member's)."""
        with torch.no_grad():
            x, context = self._draw_members(n, context, generator)
            return x, self.log_prob(x, context)

    def conditioner_weights(self) -> list[nn.Parameter]:
        return [w for m in self.members for w in m.conditioner_weights()]
