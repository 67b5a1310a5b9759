r"""A trained density in data units: preprocessing + flow + feature names.

.. math::

    \log p(x \mid c) = \log p_{\text{flow}}(u(x) \mid \tilde c)
    + \log\left|\det\frac{\partial u}{\partial x}\right|,

with :math:`u` the :class:`~nfhep.preprocessing.Preprocessing` map and :math:`\tilde c` the standardised
context. ``state_dict()`` names: ``flow.<...>`` (see ``docs/flows.md``) and ``preprocessing.mean``,
``preprocessing.std``, ``preprocessing.context_mean``, ``preprocessing.context_std``,
``preprocessing.fitted``.

References
----------
arXiv:1912.02762 (normalizing flows review), arXiv:2309.09743 (NFlikelihoods).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .flows import FLOWS, Ensemble, Flow, build_flow
from .preprocessing import Preprocessing

__all__ = ["Model"]


class Model(nn.Module):
    """Preprocessing + flow + the names of the features (branches) and context features.

    Parameters
    ----------
    flow : nfhep.flows.Flow
        The flow in preprocessed units (``flow.features == len(features)``).
    preprocessing : nfhep.preprocessing.Preprocessing
        The data <-> flow map.
    features : list of str
        Feature names in column order (``D``).
    context_features : sequence of str
        Context names (``C == flow.context``).
    """

    def __init__(
        self,
        flow: Flow,
        preprocessing: Preprocessing,
        features: Sequence[str],
        context_features: Sequence[str] = (),
    ):
        super().__init__()
        if not isinstance(flow, Flow):
            raise TypeError(f"Model: argument 'flow' must be an nfhep.flows.Flow, got {type(flow).__name__}")
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(
                f"Model: argument 'preprocessing' must be a Preprocessing, got {type(preprocessing).__name__}"
            )
        features = [str(f) for f in features]
        context_features = [str(c) for c in context_features]
        if len(features) != flow.features:
            raise ValueError(f"Model: {len(features)} feature names for a flow with {flow.features} features")
        if len(context_features) != flow.context:
            raise ValueError(
                f"Model: {len(context_features)} context names for a flow with "
                f"{flow.context} context features"
            )
        if len(set(features + context_features)) != len(features) + len(context_features):
            raise ValueError("Model: feature and context names must be unique")
        if preprocessing.features is None:
            preprocessing._allocate(flow.features)
        if preprocessing.features != flow.features or preprocessing.context != flow.context:
            raise ValueError("Model: the preprocessing's feature/context counts do not match the flow's")
        self.flow = flow
        self.preprocessing = preprocessing
        self.features = features
        self.context_features = context_features

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        family: str,
        features: Sequence[str],
        *,
        context_features: Sequence[str] = (),
        standardize: bool = True,
        log_features: Sequence[str] = (),
        bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
        preprocess: Any = None,
        **flow_options: Any,
    ) -> Model:
        """Build a fresh model: ``family`` in :data:`nfhep.flows.FLOWS`, options as the flow class.

        Parameters
        ----------
        family : {"maf", "realnvp", "crqs", "arqs"}
        features, context_features : sequence of str
            Names.
        standardize : bool
            Standardise the features (and context).
        log_features : sequence of str
            Features to log-transform (strictly positive).
        bounds : dict {name: (low, high)}, optional
            Physical bounds per feature name (``None`` for an open side).
        preprocess : nfhep.feature_analysis.FeatureAnalysis, optional
            Per-feature preprocessing chosen from the data (:func:`nfhep.feature_analysis.analyze_features`;
            declare kinds there). Excludes ``log_features`` and ``bounds``.
        **flow_options
            ``bijectors``, ``hidden``, ``knots``, ``range``, ... (see the flow classes).
        """
        if family not in FLOWS:
            raise ValueError(
                f"Model.create: argument 'family' must be one of {sorted(FLOWS)}, got {family!r}"
            )
        features = list(features)
        context_features = list(context_features)
        idx = {n: i for i, n in enumerate(features)}
        for name in list(log_features) + list((bounds or {}).keys()):
            if name not in idx:
                raise ValueError(f"Model.create: {name!r} is not one of the features {features}")
        if preprocess is not None:
            if log_features or bounds:
                raise ValueError(
                    "Model.create: give either 'preprocess' (an analysis) or 'log_features'/'bounds', not "
                    "both "
                    "(declare them in the analysis)"
                )
            if list(preprocess.features) != features:
                raise ValueError(
                    f"Model.create: the preprocessing analysis is for {preprocess.features}, not {features}"
                )
            pre = Preprocessing(
                standardize=standardize,
                features=len(features),
                context=len(context_features),
                **preprocess.preprocessing_kwargs(),
            )
        else:
            pre = Preprocessing(
                standardize=standardize,
                log=[idx[n] for n in log_features],
                bounds=None if not bounds else {idx[n]: b for n, b in bounds.items()},
                features=len(features),
                context=len(context_features),
            )
        flow = FLOWS[family](len(features), context=len(context_features), **flow_options)
        return cls(flow, pre, features, context_features)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable ``{"flow", "preprocessing", "features", "context"}``."""
        return {
            "flow": self.flow.config,
            "preprocessing": self.preprocessing.to_dict(),
            "features": list(self.features),
            "context": list(self.context_features),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Model:
        """Rebuild from :meth:`config` (fresh flow weights; then ``load_state_dict``)."""
        for key in ("flow", "preprocessing", "features"):
            if key not in config:
                raise ValueError(f"Model.from_config: config has no {key!r}")
        flow = build_flow(config["flow"])
        pre = Preprocessing.from_dict(config["preprocessing"])
        return cls(flow, pre, config["features"], config.get("context", ()))

    # -- evaluation ---------------------------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return next(self.flow.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.flow.parameters()).device

    def _as_tensor(self, func: str, name: str, a: Any) -> torch.Tensor:
        if isinstance(a, np.ndarray):
            a = torch.from_numpy(a)
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{func}: argument {name!r} must be a tensor or ndarray, got {type(a).__name__}")
        if not a.is_floating_point():
            raise TypeError(f"{func}: argument {name!r} must be floating point, got {a.dtype}")
        return a.to(device=self._device(), dtype=self._dtype())

    def _context(self, func: str, context: Any) -> torch.Tensor | None:
        if context is None:
            if self.flow.context:
                raise ValueError(f"{func}: argument 'context' is required ({self.context_features})")
            return None
        return self.preprocessing.forward_context(self._as_tensor(func, "context", context))

    def log_prob(self, x: Any, context: Any = None) -> torch.Tensor:
        """Log-density in data units, shape ``(N,)`` (numpy inputs are converted to the model's dtype)."""
        func = "Model.log_prob"
        x = self._as_tensor(func, "x", x)
        if x.dim() != 2 or x.shape[1] != len(self.features):
            raise ValueError(
                f"{func}: argument 'x' must have shape (N, {len(self.features)}), got {tuple(x.shape)}"
            )
        u, ld = self.preprocessing(x)
        return self.flow.log_prob(u, self._context(func, context)) + ld

    @property
    def members(self) -> int:
        """The number of flows averaged (``nfhep train --ensemble``): 1 for a single flow."""
        return len(self.flow.members) if isinstance(self.flow, Ensemble) else 1

    def member_log_probs(self, x: Any, context: Any = None) -> torch.Tensor:
        """Each member flow's log-density in data units, shape ``(N, members)`` (``(N, 1)`` for a single
        flow). Their spread (e.g. the standard deviation over the members) estimates the model's
        uncertainty at ``x``; :meth:`log_prob` is their ``logsumexp`` minus ``log(members)``."""
        func = "Model.member_log_probs"
        x = self._as_tensor(func, "x", x)
        if x.dim() != 2 or x.shape[1] != len(self.features):
            raise ValueError(
                f"{func}: argument 'x' must have shape (N, {len(self.features)}), got {tuple(x.shape)}"
            )
        u, ld = self.preprocessing(x)
        c = self._context(func, context)
        if isinstance(self.flow, Ensemble):
            return self.flow.member_log_probs(u, c) + ld[:, None]
        return (self.flow.log_prob(u, c) + ld)[:, None]

    def sample(
        self,
        n: int,
        context: Any = None,
        *,
        generator: torch.Generator | None = None,
        reject_outside: bool = False,
        margin: float = 0.1,
    ) -> torch.Tensor:
        """``n`` events in data units, shape ``(n, D)``: never NaN/inf, inside any physical bounds.

        Rows whose flow output is not finite are redrawn (at most 20 rounds, then an error). Events beyond
        the training range (:attr:`Preprocessing.data_range`) by more than ``margin`` × its width in some
        feature are counted and, with ``reject_outside``, redrawn too. :attr:`last_sample_stats` holds
        the counts (``redrawn_non_finite``, ``outside_range``, ``redrawn_outside``).
        """
        x, _ = self._sample_guarded(
            "Model.sample", n, context, generator, reject_outside, margin, with_log_prob=False
        )
        return x

    def _sample_guarded(self, func, n, context, generator, reject_outside, margin, *, with_log_prob):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{func}: argument 'n' must be a non-negative integer, got {n!r}")
        ctx = self._context(func, context)
        if ctx is not None and ctx.dim() == 2 and ctx.shape[0] != n and ctx.shape[0] != 1:
            raise ValueError(f"{func}: argument 'context' has {ctx.shape[0]} rows for n = {n}")
        stats = {"redrawn_non_finite": 0, "outside_range": 0, "redrawn_outside": 0}
        D = len(self.features)
        x = torch.empty(n, D, dtype=self._dtype(), device=self._device())
        lp = torch.empty(n, dtype=self._dtype(), device=self._device())
        todo = torch.arange(n, device=self._device())
        first = True
        for _round in range(21):
            if todo.numel() == 0:
                break
            m = int(todo.numel())
            c = ctx
            if ctx is not None and ctx.dim() == 2 and ctx.shape[0] == n and m != n:
                c = ctx[todo]
            with torch.no_grad():
                u, lpu = self.flow.sample_and_log_prob(m, c, generator=generator)
                ok = torch.isfinite(u).all(dim=1) & torch.isfinite(lpu)
                u = torch.where(ok[:, None], u, torch.zeros_like(u))
                xs, ld = self.preprocessing.inverse_and_log_det(u)
                ok &= torch.isfinite(xs).all(dim=1)
                nonfinite = int((~ok).sum())
                stats["redrawn_non_finite"] += nonfinite
                out = self.preprocessing.outside_range(xs, margin) & ok
                if first:
                    stats["outside_range"] = int(out.sum())
                    first = False
                if reject_outside:
                    stats["redrawn_outside"] += int(out.sum())
                    ok &= ~out
            x[todo[ok]] = xs[ok]
            lp[todo[ok]] = (lpu + ld)[ok]
            todo = todo[~ok]
        if todo.numel():
            raise RuntimeError(
                f"{func}: {todo.numel()} event(s) still non-finite or outside the training range after "
                "20 redraws (the model is broken, or reject_outside cannot be satisfied)"
            )
        self.last_sample_stats = stats
        if with_log_prob and self.preprocessing.dequantized:
            with torch.no_grad():
                lp = self.log_prob(x, context)
        return x, lp

    def sample_and_log_prob(
        self,
        n: int,
        context: Any = None,
        *,
        generator: torch.Generator | None = None,
        reject_outside: bool = False,
        margin: float = 0.1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` events and their log-density in data units (guarded as :meth:`sample`).

        For models with discrete or spike features the log-density is :meth:`log_prob` at the returned
        events (the mass-times-density convention), not the dequantised density of the draw.
        """
        return self._sample_guarded(
            "Model.sample_and_log_prob", n, context, generator, reject_outside, margin, with_log_prob=True
        )
