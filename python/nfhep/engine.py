r"""The C++ inference engine from Python: evaluate and sample a model file with no torch in the loop.

:class:`Engine` loads an nfhep model file with the C++ reader (``nfhep::Flow``, written from
``docs/model-format.md``) and evaluates

.. math::

    \log p(x \mid c) = \log \mathcal{N}(T^{-1}(u(x)); 0, I) + \log|\det J_{T^{-1}}(u(x))|
    + \log\left|\det \frac{\partial u}{\partial x}\right|

on numpy arrays of raw branch values (the model's preprocessing :math:`u` is applied inside), with nfhep's
threads and the GIL released. Results agree with the torch model (:func:`nfhep.load`) to rounding: the
same spline and affine kernels, dense layers through OpenBLAS (measured: see ``tests/test_engine.py``).

Sampling uses a counter-based generator (Philox-4x32-10, keyed on ``seed`` and the event index): event
``i`` of ``sample(n, seed=s, first_index=k)`` is event ``k + i`` of stream ``s`` bit for bit, whatever the
thread count or how a stream is split into calls, so jobs of a batch farm can each draw their own slice.

Support: events outside the model's support (a bounded feature outside its open interval, a
log-transformed feature <= 0, an infinite value) get :math:`\log p = -\infty`; an event with a NaN feature
gets NaN. :meth:`Engine.in_support` tells which events are inside.

References
----------
arXiv:1912.02762 (normalizing flows), arXiv:1906.04032 (RQ splines), arXiv:1705.07057 (MAF),
Salmon et al., SC'11 (Philox counter-based random numbers).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import _core

__all__ = ["Engine"]


def _events(func: str, name: str, a: Any, d: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{func}: argument {name!r} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{func}: argument {name!r} must have dtype float32 or float64, got {a.dtype} "
            "(convert it explicitly, e.g. x.astype(np.float64))"
        )
    if a.ndim != 2 or a.shape[1] != d:
        raise ValueError(f"{func}: argument {name!r} must have shape (N, {d}), got {a.shape}")
    return np.ascontiguousarray(a)


class Engine:
    """A model file loaded by nfhep's C++ inference engine.

    Parameters
    ----------
    path : str or os.PathLike
        An nfhep model file (``.safetensors``) written by :func:`nfhep.save` or ``nfhep train``.

    Attributes
    ----------
    path : str
    features, context_features : list of str
        Input columns (branch names) and context names, in order.
    dtype : {"float32", "float64"}
        The model's precision (inputs of the other precision are converted to it).
    family : {"maf", "realnvp", "crqs", "arqs", "ensemble"}
    members : int
        The number of flows averaged (an ensemble's, ``nfhep train --ensemble``); 1 for a single flow.
    checksum : str
        SHA-256 of the tensors (as stored in, and checked against, the file).
    metadata : dict
        The file's ``nfhep`` metadata document (configuration and provenance).
    lower_bounds, upper_bounds : numpy.ndarray
        The support per feature (``-inf``/``inf`` where open; log features have lower bound 0).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    nfhep.FormatError
        If the file is not a valid model file or holds a model this engine cannot evaluate (the message
        names the problem; never silently wrong numbers).

    Notes
    -----
    An Engine is immutable and may be used from several Python threads at once (the GIL is released while
    it computes; nfhep's own threads are set with :func:`nfhep.set_num_threads`).
    """

    def __init__(self, path: str | os.PathLike):
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(f"model file {p!r} does not exist")
        if os.path.isdir(p):
            raise FileNotFoundError(f"{p!r} is a directory, not a model file")
        self._flow = _core.Engine(p)
        self.path = p
        self.features = list(self._flow.features)
        self.context_features = list(self._flow.context_features)
        self.dtype = str(self._flow.dtype)
        self.family = str(self._flow.family)
        self.members = int(self._flow.members)
        self.checksum = str(self._flow.checksum)
        self.lower_bounds = np.asarray(self._flow.lower_bounds, dtype=np.float64)
        self.upper_bounds = np.asarray(self._flow.upper_bounds, dtype=np.float64)

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``nfhep`` metadata document of the file (a fresh dict each time)."""
        return json.loads(self._flow.metadata_json)

    def __repr__(self) -> str:
        ctx = f", context={self.context_features}" if self.context_features else ""
        ens = f", members={self.members}" if self.members > 1 else ""
        return (
            f"Engine({self.path!r}, family={self.family!r}{ens}, features={self.features}{ctx}, "
            f"dtype={self.dtype})"
        )

    def _context(self, func: str, context: Any, dtype: np.dtype) -> np.ndarray | None:
        if context is None:
            return None
        if not isinstance(context, np.ndarray):
            raise TypeError(
                f"{func}: argument 'context' must be a numpy.ndarray, got {type(context).__name__}"
            )
        if context.dtype != dtype:
            raise TypeError(
                f"{func}: argument 'context' has dtype {context.dtype}, expected {dtype} (the dtype of the events)"
            )
        return np.ascontiguousarray(context)

    def log_prob(self, x: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        r"""Log-density :math:`\log p(x \mid c)` of each event, in data units.

        Parameters
        ----------
        x : numpy.ndarray
            ``(N, D)`` float32 or float64, raw feature values in the order of :attr:`features`.
        context : numpy.ndarray, optional
            Required for conditional flows: ``(N, C)`` (one row per event) or ``(C,)`` (the same for
            all), of ``x``'s dtype.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` of ``x``'s dtype; ``-inf`` outside the support, NaN for rows with a NaN.
        """
        func = "Engine.log_prob"
        x = _events(func, "x", x, len(self.features))
        return self._flow.log_prob(x, self._context(func, context, x.dtype))

    def log_prob_members(
        self, x: np.ndarray, context: np.ndarray | None = None, *, return_log_prob: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        r"""Each member flow's log-density :math:`\log p_k(x \mid c)`, ``(N, members)`` of ``x``'s dtype.

        :meth:`log_prob` is :math:`\log \frac1M \sum_k p_k`; the spread over the members (e.g. their
        standard deviation) estimates the model's uncertainty at each event. For a single flow the one
        column equals :meth:`log_prob`. Arguments as :meth:`log_prob`; with ``return_log_prob`` also
        :meth:`log_prob` of the events (bit for bit, from the same pass).
        """
        func = "Engine.log_prob_members"
        x = _events(func, "x", x, len(self.features))
        members, lp = self._flow.log_prob_members(x, self._context(func, context, x.dtype))
        return (members, lp) if return_log_prob else members

    def in_support(self, x: np.ndarray) -> np.ndarray:
        """Whether each event lies inside the model's support (bounds, log features > 0, finite), ``(N,)`` bool."""
        x = _events("Engine.in_support", "x", x, len(self.features))
        return self._flow.in_support(x)

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        first_index: int = 0,
        context: np.ndarray | None = None,
        dtype: str | None = None,
        return_log_prob: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw events ``first_index .. first_index + n - 1`` of the stream ``seed``.

        Parameters
        ----------
        n : int
            Number of events.
        seed : int
            Stream (0 <= seed < 2**64).
        first_index : int
            Index of the first event in the stream (jobs can draw disjoint slices of one stream).
        context : numpy.ndarray, optional
            Conditional flows: ``(C,)`` for every event or ``(n, C)`` one row per event (of the output dtype).
        dtype : {"float32", "float64"}, optional
            Output dtype (default: the model's).
        return_log_prob : bool
            Also return the model's log-density of each event drawn.

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, numpy.ndarray)
            ``(n, D)`` events in data units (clipped to closed bounds), and with ``return_log_prob`` their
            ``(n,)`` log-densities.
        """
        func = "Engine.sample"
        out_dtype = np.dtype(dtype if dtype is not None else self.dtype)
        if dtype is not None and dtype not in ("float32", "float64"):
            raise ValueError(f"{func}: argument 'dtype' must be 'float32' or 'float64', got {dtype!r}")
        ctx = self._context(func, context, out_dtype)
        x, lp = self._flow.sample(
            n, seed, first_index, ctx, "" if dtype is None else dtype, bool(return_log_prob)
        )
        return (x, lp) if return_log_prob else x

    def latent(self, n: int, *, seed: int = 0, first_index: int = 0) -> np.ndarray:
        """The standard-normal draws behind :meth:`sample` (``(n, D)`` float64, before the flow)."""
        return self._flow.latent(n, seed, first_index)
