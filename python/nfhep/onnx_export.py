r"""Export a model's density :math:`\log p(x \mid c)` as a standard ONNX graph.

:func:`export_onnx` writes an ONNX model that evaluates, for raw feature values ``x`` (data units, as in
the ntuple) and, for a conditional flow, raw context values ``context``,

.. math::

    \log p(x \mid c) = \log \mathcal{N}(T^{-1}(u(x)); 0, I) + \log|\det J_{T^{-1}}(u(x))|
    + \log\left|\det \frac{\partial u}{\partial x}\right|,

i.e. exactly :meth:`nfhep.model.Model.log_prob` in evaluation mode: the preprocessing :math:`u` (bounds, log
transform, the version-2 periodic / discrete / spike kinds and quantile maps, standardisation;
:mod:`nfhep.preprocessing`, semantics of the C++ engine's ``to_v``/``quantile_map``), every flow layer in the
data -> latent direction (the evaluation order of ``docs/model-format.md`` section 4, the one the C++ engine
follows) and the standard normal base density.

The graph is built node by node from the model's weights with ``onnx.helper`` (the torch model calls
nfhep's C++ kernels, which ``torch.onnx.export`` cannot trace). It uses only operators of the default
``ai.onnx`` domain, listed in :data:`OPERATORS` (and in ``docs/onnx.md``), so ONNX-based inference tools
(onnxruntime, code generators in the style of TMVA SOFIE) can consume it:

- MADE masks are multiplied into the weight matrices (``Gemm``); hidden activations are the ONNX ones
  (GELU spelt out with ``Erf``); batch normalisation in evaluation mode is ``BatchNormalization``;
- the rational-quadratic spline (arXiv:1906.04032) computes its knot table with ``Softmax``, a stable
  softplus and one ``MatMul`` (the cumulative sums as a triangular matrix), finds each input's bin by
  counting the interior knots below it (``GreaterOrEqual``, ``Cast``, ``ReduceSum``) and reads the bin's
  knots with one ``GatherElements``; inputs outside :math:`[-B, B]` (and NaN) are masked with ``Where``
  before the arithmetic (identity tails);
- permutations are ``Gather``; coupling splits are ``Slice``/``Concat``;
- periodic features wrap with ``Mod`` (``fmod=1``, then the divisor's sign as ``torch.remainder``);
  discrete values and quantile knots are searched by counting (``Greater``/``GreaterOrEqual``,
  ``ReduceSum``) in padded per-feature tables read with ``Gather`` (see :func:`_preprocessing`).

Input outside the support gives :math:`-\infty`, a NaN feature or a non-finite context
value gives NaN, as :class:`nfhep.Engine` (where :meth:`Model.log_prob` raises a ``ValueError`` instead).

References
----------
arXiv:1906.04032 (RQ splines), arXiv:1705.07057 (MAF), arXiv:1605.08803 (RealNVP), arXiv:1502.03509
(MADE); the ONNX operator specification, https://onnx.ai/onnx/operators/.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "OPERATORS",
    "compare_onnxruntime",
    "export_onnx",
    "onnx_model",
    "operators_of",
]

#: The opset written by default (supported by onnxruntime >= 1.12 and by the common code generators).
DEFAULT_OPSET = 17
#: The oldest opset the graph can be written in (``Softmax`` along one axis, ``ReduceSum``/``Squeeze``/
#: ``Unsqueeze``/``Split`` with tensor inputs: all opset 13).
MIN_OPSET = 13

#: Every ONNX operator (default ``ai.onnx`` domain) an exported graph may contain; a given model uses a
#: subset (e.g. ``Softmax`` only for splines, ``Tanh`` for affine layers and tanh activations).
OPERATORS: tuple[str, ...] = (
    "Abs",
    "Add",
    "And",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Div",
    "Elu",
    "Erf",
    "Exp",
    "Expand",
    "Gather",
    "GatherElements",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "LessOrEqual",
    "Log",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sub",
    "Tanh",
    "Where",
)

_LOG_2PI = math.log(2.0 * math.pi)
_DTYPES = {"float32": np.float32, "float64": np.float64}


def _onnx():
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx is in the test extras
        raise ImportError(
            f"nfhep.onnx_export needs the 'onnx' package ({err}); install it with `pip install onnx`"
        ) from None
    return onnx


class _Graph:
    """A growing list of ONNX nodes and initializers with unique names (one exported graph)."""

    def __init__(self, dtype: type):
        onnx = _onnx()
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.dtype = np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.int64 = onnx.TensorProto.INT64
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self._scalars: dict[tuple[str, float | int], str] = {}

    def _unique(self, hint: str) -> str:
        name, k = hint, 1
        while name in self._names:
            k += 1
            name = f"{hint}_{k}"
        self._names.add(name)
        return name

    def const(self, value: Any, hint: str, dtype: Any = None) -> str:
        """An initializer (floating values in the graph's dtype unless ``dtype`` is given)."""
        arr = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self._unique(hint)
        self.initializers.append(
            self.numpy_helper.from_array(arr.copy(order="C"), name=name)
        )  # 0-d stays 0-d
        return name

    def scalar(self, value: float) -> str:
        """A 0-d floating constant, shared by every node that needs the same value."""
        v = float(self.dtype.type(value))
        key = ("f", v if not math.isnan(v) else "nan")  # type: ignore[assignment]
        if key not in self._scalars:
            self._scalars[key] = self.const(v, f"c_{v:g}".replace("-", "m").replace(".", "p"))
        return self._scalars[key]

    def ints(self, values: Sequence[int], hint: str) -> str:
        """A 1-d int64 constant (axes, shapes, pads, indices), shared when repeated."""
        key = ("i", tuple(int(v) for v in values))  # type: ignore[assignment]
        if key not in self._scalars:
            self._scalars[key] = self.const(np.asarray(values, dtype=np.int64), hint, dtype=np.int64)
        return self._scalars[key]

    def op(self, op_type: str, inputs: Sequence[str], hint: str, *, outputs: int = 1, **attrs: Any):
        """Append one node; returns its output name (or the list of names when ``outputs > 1``)."""
        names = [self._unique(hint if outputs == 1 else f"{hint}_{i}") for i in range(outputs)]
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), names, name=self._unique(f"n_{hint}"), **attrs)
        )
        return names[0] if outputs == 1 else names

    # -- small helpers over op() -----------------------------------------------------------------------
    def add(self, a: str, b: str, hint: str) -> str:
        return self.op("Add", [a, b], hint)

    def sub(self, a: str, b: str, hint: str) -> str:
        return self.op("Sub", [a, b], hint)

    def mul(self, a: str, b: str, hint: str) -> str:
        return self.op("Mul", [a, b], hint)

    def div(self, a: str, b: str, hint: str) -> str:
        return self.op("Div", [a, b], hint)

    def where(self, cond: str, a: str, b: str, hint: str) -> str:
        return self.op("Where", [cond, a, b], hint)

    def row_sum(self, x: str, hint: str) -> str:
        """``(N, M)`` -> ``(N,)``: the sum over axis 1."""
        return self.op("ReduceSum", [x, self.ints([1], "axis1")], hint, keepdims=0)

    def slice(self, x: str, start: int, end: int, axis: int, hint: str) -> str:
        return self.op(
            "Slice",
            [x, self.ints([start], "start"), self.ints([end], "end"), self.ints([axis], "axis")],
            hint,
        )

    def any_rows(self, mask: str, hint: str) -> str:
        """``(N, M)`` bool -> ``(N,)`` bool: true where any element of the row is true."""
        f = self.op("Cast", [mask], f"{hint}_f", to=self.elem)
        total = self.op("ReduceSum", [f, self.ints([1], "axis1")], f"{hint}_n", keepdims=0)
        return self.op("Greater", [total, self.scalar(0.0)], hint)


# ---------------------------------------------------------------------------------------------------
# the pieces of the graph
# ---------------------------------------------------------------------------------------------------
def _np(t: Any, dtype: np.dtype) -> np.ndarray:
    return t.detach().to("cpu").double().numpy().astype(dtype)


def _preprocessing(g: _Graph, pre: Any, x: str) -> tuple[str, str, str, str]:
    """Raw ``x`` -> standardised ``u``, per-row ``log|det du/dx|``, per-row NaN flag and per-row
    out-of-support flag (a bound or log-domain violation, an unseen discrete value, an infinite value).

    Element-wise on the ``(N, D)`` batch, every step with per-feature constants and ``Where`` masks:

    1. periodic features: ``y = a + remainder((x - shift) - a, b - a)`` (``Mod`` with ``fmod=1`` plus
       the divisor where negative: ``torch.remainder``), ``y >= b -> a``, with ``x - x_r`` in place of
       ``x`` for an angle relative to feature ``r`` (``Gather``); other features ``y = x``;
    2. the continuum map (bounds / log): ``A = sa y + oa`` is the argument of the first log and
       ``B = sb y + ob`` that of the second (two-sided bounds only): lower bound ``A = y - a``, upper bound
       ``A = b - y``, log ``A = y``, two-sided ``A = y - a``, ``B = b - y``; identity features get
       ``A = B = 1`` (``log = 0``). Then ``v = log A - log B`` (or ``y``) and
       ``log|dv/dy| = log(b - a) [two-sided] - log A - log B``;
    3. discrete features: the nearest allowed value (``torch.searchsorted`` as a count of the values
       below ``x``, ties as :func:`nfhep.preprocessing._match`), ``v = k + 0.5`` if ``x`` matches it
       (``|x - v_k| <= MATCH_TOL max(1, |v_k|)``), outside the support otherwise; log-det 0;
    4. spike features: a row matching the spike value gets ``v = c0 + (c1 - c0) / 2`` and log-det
       ``log(c1 - c0)`` (inside the support whatever the continuum map says);
    5. quantile maps: ``w = b_i + s_i (v - a_i)``, ``i`` the number of interior knots ``<= v`` (that is
       ``searchsorted(right) - 1`` clamped to ``[0, K - 2]``), log-det ``+ log s_i``; the knot tables of
       all features are padded to one width and read with ``Gather`` on flat indices;
    6. standardisation ``u = (w - mean) / std``.
    """
    from .preprocessing import MATCH_TOL

    d = int(pre.features)
    dt = g.dtype
    bounds = pre.bounds or [(None, None)] * d
    kinds = list(getattr(pre, "kinds", None) or [None] * d)
    quantile = list(getattr(pre, "quantile", None) or [None] * d)
    kind = [None if k is None else k["kind"] for k in kinds]
    periodic = np.array([k == "periodic" for k in kind])
    discrete = np.array([k == "discrete" for k in kind])
    spike = np.array([k == "spike" for k in kind])
    tol = dt.type(MATCH_TOL)
    one = dt.type(1.0)

    nan = g.any_rows(g.op("IsNaN", [x], "x_isnan"), "row_nan")
    ok = g.op("Not", [g.op("IsInf", [x], "x_isinf")], "x_finite")

    # 1. periodic wrap (constants in the model's precision: b - a as the engine's wrap_period)
    y = x
    if periodic.any():
        pa, pb, ps = np.zeros(d, dt), np.ones(d, dt), np.zeros(d, dt)
        for j in np.flatnonzero(periodic):
            pa[j], pb[j] = dt.type(kinds[j]["period"][0]), dt.type(kinds[j]["period"][1])
            ps[j] = dt.type(kinds[j]["shift"])
        width = (pb - pa).astype(dt)
        ca, cb, cw = g.const(pa, "per_a"), g.const(pb, "per_b"), g.const(width, "per_width")
        xp = x
        rel = [j for j in np.flatnonzero(periodic) if kinds[j].get("relative_to") is not None]
        if rel:
            # a relative angle: x_j - x_r first (x_r gathered; 0 for the other features)
            idx = np.arange(d, dtype=np.int64)
            for j in rel:
                idx[j] = int(kinds[j]["relative_to"])
            is_rel = np.zeros(d, dtype=bool)
            is_rel[rel] = True
            ref = g.op("Gather", [x, g.const(idx, "rel_index", dtype=np.int64)], "rel_gather", axis=1)
            ref = g.where(g.const(is_rel, "rel_mask", dtype=bool), ref, g.scalar(0.0), "rel_ref")
            xp = g.sub(x, ref, "rel_x")
        t = g.sub(g.sub(xp, g.const(ps, "per_shift"), "per_xs"), ca, "per_t")
        r = g.op("Mod", [t, cw], "per_fmod", fmod=1)
        r = g.where(g.op("Greater", [g.scalar(0.0), r], "per_neg"), g.add(r, cw, "per_rw"), r, "per_rem")
        wrapped = g.add(ca, r, "per_y")
        wrapped = g.where(g.op("GreaterOrEqual", [wrapped, cb], "per_top"), ca, wrapped, "per_wrapped")
        y = g.where(g.const(periodic, "per_mask", dtype=bool), wrapped, x, "pre_y")

    # 2. the continuum map
    sa, oa, sb, ob, cwid = np.zeros(d), np.ones(d), np.zeros(d), np.ones(d), np.zeros(d)
    ident = np.ones(d, dtype=bool)
    for j in range(d):
        lo, hi = bounds[j]
        if j in pre.log:
            sa[j], oa[j] = 1.0, 0.0
        elif lo is not None and hi is not None:
            sa[j], oa[j], sb[j], ob[j], cwid[j] = 1.0, -lo, -1.0, hi, math.log(hi - lo)
        elif lo is not None:
            sa[j], oa[j] = 1.0, -lo
        elif hi is not None:
            sa[j], oa[j] = -1.0, hi
        else:
            continue
        ident[j] = False
    ld_elem = None
    v = y
    if not ident.all():
        a = g.add(g.mul(y, g.const(sa, "pre_sa"), "pre_ax"), g.const(oa, "pre_oa"), "pre_a")
        ok = g.op("And", [ok, g.op("Greater", [a, g.scalar(0.0)], "pre_a_pos")], "pre_ok")
        log_a = g.op("Log", [g.where(ok, a, g.scalar(1.0), "pre_a_safe")], "pre_log_a")
        if (sb != 0).any():
            b = g.add(g.mul(y, g.const(sb, "pre_sb"), "pre_bx"), g.const(ob, "pre_ob"), "pre_b")
            ok = g.op("And", [ok, g.op("Greater", [b, g.scalar(0.0)], "pre_b_pos")], "pre_ok")
            log_b = g.op("Log", [g.where(ok, b, g.scalar(1.0), "pre_b_safe")], "pre_log_b")
            transformed = g.sub(log_a, log_b, "pre_logit")
            ld_elem = g.sub(g.sub(g.const(cwid, "pre_log_width"), log_a, "pre_lda"), log_b, "pre_ld")
        else:
            transformed = log_a
            ld_elem = g.op("Neg", [log_a], "pre_ld")
        y_safe = g.where(ok, y, g.scalar(0.0), "pre_y_safe")
        v = g.where(g.const(ident, "pre_identity", dtype=bool), y_safe, transformed, "pre_v")

    # 3. discrete features: nearest allowed value, matched within the tolerance
    if discrete.any():
        width = max(len(kinds[j]["values"]) for j in np.flatnonzero(discrete))
        table = np.full((d, width), np.inf)  # +inf pads count as "not below x"
        flat_v, flat_t = np.zeros(d * width, dt), np.zeros(d * width, dt)
        last = np.zeros(d)
        for j in np.flatnonzero(discrete):
            vals = np.asarray(kinds[j]["values"], dt)
            table[j, : len(vals) - 1] = vals[:-1]  # idx = #{values[:-1] < x} = searchsorted clamped
            flat_v[j * width : j * width + len(vals)] = vals
            flat_t[j * width : j * width + len(vals)] = tol * np.maximum(np.abs(vals), one)
            last[j] = len(vals) - 1
        offset = g.const(np.arange(d) * width, "disc_offset", dtype=np.int64)
        below = g.op(
            "Greater",
            [g.op("Reshape", [x, g.ints([0, d, 1], "shape_nd1")], "disc_x3"), g.const(table, "disc_table")],
            "disc_below",
        )
        idx = g.op(
            "ReduceSum",
            [g.op("Cast", [below], "disc_below_f", to=g.elem), g.ints([2], "axis2")],
            "disc_idx",
            keepdims=0,
        )
        lower = g.op("Relu", [g.sub(idx, g.scalar(1.0), "disc_idx_m1")], "disc_lower")

        def flat(k: str, hint: str) -> str:
            return g.add(g.op("Cast", [k], f"{hint}_i", to=g.int64), offset, hint)

        values = g.const(flat_v, "disc_values")
        v_idx = g.op("Gather", [values, flat(idx, "disc_fi")], "disc_v_idx")
        v_low = g.op("Gather", [values, flat(lower, "disc_fl")], "disc_v_low")
        closer = g.op(  # |x - v_low| < |v_idx - x|: the lower neighbour (ties go up)
            "Greater",
            [
                g.op("Abs", [g.sub(v_idx, x, "disc_du")], "disc_adu"),
                g.op("Abs", [g.sub(x, v_low, "disc_dl")], "disc_adl"),
            ],
            "disc_closer_low",
        )
        k = g.where(closer, lower, idx, "disc_k")
        fk = flat(k, "disc_fk")
        v_k = g.op("Gather", [values, fk], "disc_v_k")
        thr = g.op("Gather", [g.const(flat_t, "disc_tol"), fk], "disc_thr")
        matched = g.op("LessOrEqual", [g.op("Abs", [g.sub(x, v_k, "disc_d")], "disc_ad"), thr], "disc_match")
        dmask = g.const(discrete, "disc_mask", dtype=bool)
        # on a discrete column ok is "finite" (no bounds), which a match implies (bool Where: no ORT kernel)
        other = g.const(~discrete, "disc_other", dtype=bool)
        ok = g.op("And", [ok, g.op("Or", [matched, other], "disc_match_or")], "disc_ok")
        v = g.where(dmask, g.add(k, g.scalar(0.5), "disc_centre"), v, "disc_v")
        if ld_elem is not None:
            ld_elem = g.where(dmask, g.scalar(0.0), ld_elem, "disc_ld")

    # 4. spikes: a matching row sits at the cell centre, log-det log(c1 - c0)
    if spike.any():
        s_val, s_thr, s_mid, s_ld = np.zeros(d, dt), np.full(d, -1.0, dt), np.zeros(d, dt), np.zeros(d)
        for j in np.flatnonzero(spike):
            s_val[j] = dt.type(kinds[j]["value"])
            s_thr[j] = tol * max(abs(s_val[j]), one)
            c0, c1 = (dt.type(t) for t in kinds[j]["cell"])
            s_mid[j] = c0 + (c1 - c0) * dt.type(0.5)
            s_ld[j] = math.log(kinds[j]["cell"][1] - kinds[j]["cell"][0])
        dist = g.op("Abs", [g.sub(x, g.const(s_val, "spike_value"), "spike_d")], "spike_ad")
        is_s = g.op("LessOrEqual", [dist, g.const(s_thr, "spike_tol")], "spike_match")  # tol -1: never
        ok = g.op("Or", [ok, is_s], "spike_ok")
        v = g.where(is_s, g.const(s_mid, "spike_centre"), v, "spike_v")
        zero = g.const(np.zeros(d), "pre_ld_zero") if ld_elem is None else ld_elem
        ld_elem = g.where(is_s, g.const(s_ld, "spike_log_cell"), zero, "spike_ld")

    v = g.where(ok, v, g.scalar(0.0), "pre_v_safe")  # rows outside the support: 0, as the engine

    # 5. quantile maps
    qcols = [j for j in range(d) if quantile[j] is not None]
    if qcols:
        width = max(len(quantile[j]["v"]) for j in qcols)
        interior = np.full((d, max(width - 2, 1)), np.inf)
        fa, fb, fs, fl = (np.zeros(d * (width - 1), dt) for _ in range(4))
        fs[:] = 1
        for j in qcols:
            a_k, b_k = np.asarray(quantile[j]["v"], dt), np.asarray(quantile[j]["u"], dt)
            kk = len(a_k)
            interior[j, : kk - 2] = a_k[1:-1]
            s = ((b_k[1:] - b_k[:-1]) / (a_k[1:] - a_k[:-1])).astype(dt)  # as _pwl, in the precision
            o = j * (width - 1)
            fa[o : o + kk - 1], fb[o : o + kk - 1], fs[o : o + kk - 1] = a_k[:-1], b_k[:-1], s
            fl[o : o + kk - 1] = np.log(s.astype(np.float64)).astype(dt)
        v3 = g.op("Reshape", [v, g.ints([0, d, 1], "shape_nd1")], "q_v3")
        count = g.op(
            "Cast",
            [g.op("GreaterOrEqual", [v3, g.const(interior, "q_interior")], "q_ge")],
            "q_ge_f",
            to=g.elem,
        )
        seg = g.op("ReduceSum", [count, g.ints([2], "axis2")], "q_seg", keepdims=0)
        fi = g.add(
            g.op("Cast", [seg], "q_seg_i", to=g.int64),
            g.const(np.arange(d) * (width - 1), "q_offset", dtype=np.int64),
            "q_fi",
        )
        a_i = g.op("Gather", [g.const(fa, "q_a"), fi], "q_a_i")
        b_i = g.op("Gather", [g.const(fb, "q_b"), fi], "q_b_i")
        s_i = g.op("Gather", [g.const(fs, "q_s"), fi], "q_s_i")
        w = g.add(b_i, g.mul(s_i, g.sub(v, a_i, "q_dv"), "q_sdv"), "q_w")
        qmask = g.const(np.array([q is not None for q in quantile]), "q_mask", dtype=bool)
        v = g.where(qmask, w, v, "q_v")
        lq = g.op("Gather", [g.const(fl, "q_log_s"), fi], "q_log_s_i")
        lq = g.where(qmask, lq, g.scalar(0.0), "q_ld")
        ld_elem = lq if ld_elem is None else g.add(ld_elem, lq, "pre_ld_q")

    oos = g.any_rows(g.op("Not", [ok], "x_outside"), "row_outside")
    centred = g.sub(v, g.const(_np(pre.mean, g.dtype), "pre_mean"), "pre_centred")
    u = g.div(centred, g.const(_np(pre.std, g.dtype), "pre_std"), "u")
    # the constant  sum_j log std_j,  as the model computes it (in the graph's precision)
    std = pre.std.detach().cpu().to(_torch_dtype(g.dtype))
    sum_log_std = float(std.log().sum())
    if ld_elem is None:  # no bounds/log/kinds/quantiles: the log-determinant is the constant
        return u, g.const(-sum_log_std, "pre_logdet"), nan, oos
    return u, g.sub(g.row_sum(ld_elem, "pre_ld_sum"), g.scalar(sum_log_std), "pre_logdet"), nan, oos


def _torch_dtype(dtype: np.dtype) -> Any:
    import torch

    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def _activation(g: _Graph, module: Any, h: str, hint: str) -> str:
    from torch import nn

    simple = {nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid"}
    for cls, op in simple.items():
        if isinstance(module, cls):
            return g.op(op, [h], hint)
    # float64: Elu and LeakyRelu spelt out (onnxruntime has no float64 Elu, and the operators' alpha is a
    # float32 attribute, 0.01 rounded)
    wide = g.dtype == np.float64
    if isinstance(module, nn.ELU):
        if not wide:
            return g.op("Elu", [h], hint, alpha=float(module.alpha))
        em1 = g.sub(g.op("Exp", [h], f"{hint}_exp"), g.scalar(1.0), f"{hint}_em1")
        neg = g.mul(em1, g.scalar(module.alpha), f"{hint}_neg")
        return g.where(g.op("Greater", [h, g.scalar(0.0)], f"{hint}_pos"), h, neg, hint)
    if isinstance(module, nn.LeakyReLU):
        if not wide:
            return g.op("LeakyRelu", [h], hint, alpha=float(module.negative_slope))
        neg = g.mul(h, g.scalar(module.negative_slope), f"{hint}_neg")
        return g.where(g.op("GreaterOrEqual", [h, g.scalar(0.0)], f"{hint}_pos"), h, neg, hint)
    if isinstance(module, nn.SiLU):  # x sigmoid(x)
        return g.mul(h, g.op("Sigmoid", [h], f"{hint}_sig"), hint)
    if isinstance(module, nn.GELU):
        half = g.mul(h, g.scalar(0.5), f"{hint}_half")
        if module.approximate == "none":  # x/2 (1 + erf(x / sqrt 2)), exact as torch's default
            e = g.op("Erf", [g.mul(h, g.scalar(1.0 / math.sqrt(2.0)), f"{hint}_s")], f"{hint}_erf")
        else:  # tanh approximation: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = g.mul(g.mul(h, h, f"{hint}_x2"), h, f"{hint}_x3")
            inner = g.add(h, g.mul(cube, g.scalar(0.044715), f"{hint}_c"), f"{hint}_in")
            e = g.op("Tanh", [g.mul(inner, g.scalar(math.sqrt(2.0 / math.pi)), f"{hint}_a")], f"{hint}_t")
        return g.mul(half, g.add(e, g.scalar(1.0), f"{hint}_1p"), hint)
    raise ValueError(
        f"export_onnx: the conditioner layer {type(module).__name__} has no ONNX translation (supported: "
        "Linear, MaskedLinear, BatchNorm1d, Dropout and the activations of nfhep.flows.ACTIVATIONS)"
    )


def _network(g: _Graph, net: Any, h: str, hint: str) -> str:
    """An ``nn.Sequential`` conditioner in evaluation mode (MADE masks multiplied into the weights)."""
    import torch
    from torch import nn

    from .flows.nets import MaskedLinear

    for j, m in enumerate(net):
        name = f"{hint}_{j}"
        if isinstance(m, nn.Linear):
            w = m.weight * m.mask if isinstance(m, MaskedLinear) else m.weight
            weight = g.const(_np(w, g.dtype), f"{name}_weight")
            h = g.op("Gemm", [h, weight, g.const(_np(m.bias, g.dtype), f"{name}_bias")], name, transB=1)
        elif isinstance(m, nn.BatchNorm1d):  # evaluation mode: the running statistics
            if m.running_mean is None or m.running_var is None:
                raise ValueError(
                    f"export_onnx: BatchNorm1d {name} has no running statistics (track_running_stats=False)"
                )
            scale = m.weight if m.weight is not None else torch.ones_like(m.running_mean)
            shift = m.bias if m.bias is not None else torch.zeros_like(m.running_mean)
            stats = [(scale, "scale"), (shift, "bias"), (m.running_mean, "mean"), (m.running_var, "var")]
            consts = [g.const(_np(t, g.dtype), f"{name}_{what}") for t, what in stats]
            h = g.op("BatchNormalization", [h, *consts], name, epsilon=float(m.eps))
        elif isinstance(m, nn.Dropout):
            continue  # the identity in evaluation
        else:
            h = _activation(g, m, h, name)
    return h


def _affine(g: _Graph, tr: Any, x: str, params: str, hint: str) -> tuple[str, str]:
    """Soft-clamped affine ``z = x exp(s) + t``, ``s = c tanh(s~/c)``; ``x`` (N, M), ``params`` (N, M, 2)."""
    s_raw = g.op("Gather", [params, g.const(0, f"{hint}_i0", dtype=np.int64)], f"{hint}_s_raw", axis=2)
    t = g.op("Gather", [params, g.const(1, f"{hint}_i1", dtype=np.int64)], f"{hint}_t", axis=2)
    c = g.scalar(tr.log_scale_clamp)
    s = g.mul(g.op("Tanh", [g.div(s_raw, c, f"{hint}_sc")], f"{hint}_th"), c, f"{hint}_s")
    z = g.add(g.mul(x, g.op("Exp", [s], f"{hint}_es"), f"{hint}_xe"), t, f"{hint}_z")
    return z, s


def _rqs(g: _Graph, tr: Any, x: str, params: str, hint: str) -> tuple[str, str]:
    """Rational-quadratic spline with identity tails (docs/model-format.md 4.1), forward direction;
    ``x`` (N, M), ``params`` (N, M, 3K-1). Returns ``y`` and ``log dy/dx``, both (N, M).

    Internally one row per element (``R = N M`` rows): the knot table of every element is one ``Gemm``
    of its softmaxed width/height logits and derivatives, its bin one count of comparisons, and the
    bin's six knot values one ``GatherElements``."""
    k, bound = tr.knots, tr.bound
    ax1 = g.ints([1], "axis1")
    one, two, zero = g.scalar(1.0), g.scalar(2.0), g.scalar(0.0)
    p = g.op("Reshape", [params, g.ints([-1, 3 * k - 1], f"shape_r{3 * k - 1}")], f"{hint}_p")
    # softmax of the width and the height logits at once (R, 2, K)
    wh = g.op(
        "Reshape",
        [g.slice(p, 0, 2 * k, 1, f"{hint}_uwh"), g.ints([-1, 2, k], f"shape_2x{k}")],
        f"{hint}_uwh2",
    )
    sm = g.op(
        "Reshape",
        [g.op("Softmax", [wh], f"{hint}_sm2", axis=-1), g.ints([-1, 2 * k], f"shape_r{2 * k}")],
        f"{hint}_sm",
    )
    # softplus of the interior derivative logits: max(u, 0) + log(1 + exp(-|u|)) (stable; onnxruntime has
    # no float64 Softplus)
    ud = g.slice(p, 2 * k, 3 * k - 1, 1, f"{hint}_ud")
    e = g.op("Exp", [g.op("Neg", [g.op("Abs", [ud], f"{hint}_ud_abs")], f"{hint}_ud_neg")], f"{hint}_ud_exp")
    log1p = g.op("Log", [g.add(one, e, f"{hint}_ud_1p")], f"{hint}_ud_log")
    soft = g.add(g.op("Relu", [ud], f"{hint}_ud_pos"), log1p, f"{hint}_softplus")
    # the knot table [x_0..x_K, y_0..y_K, d_0..d_K] (R, 3K+3) as one Gemm of [softmax_w, softmax_h, softplus]
    mat, off = _knot_table(tr)
    feats = g.op("Concat", [sm, soft], f"{hint}_wd", axis=1)
    table = g.op("Gemm", [feats, g.const(mat, f"{hint}_kmat"), g.const(off, f"{hint}_koff")], f"{hint}_table")

    # inputs outside [-B, B] and NaN: identity tails; replaced by 0 before the arithmetic
    ge_lo = g.op("GreaterOrEqual", [x, g.scalar(-bound)], f"{hint}_ge_lo")
    le_hi = g.op("LessOrEqual", [x, g.scalar(bound)], f"{hint}_le_hi")
    inside = g.op("And", [ge_lo, le_hi], f"{hint}_inside")
    xs = g.op("Reshape", [g.where(inside, x, zero, f"{hint}_xs2"), g.ints([-1, 1], "shape_r1")], f"{hint}_xs")
    # bin = the number of interior knots <= input (x == B lies in the last bin)
    above = g.op("GreaterOrEqual", [xs, g.slice(table, 1, k, 1, f"{hint}_kx_inner")], f"{hint}_above")
    above_i = g.op("Cast", [above], f"{hint}_above_i", to=g.int64)
    idx = g.op("ReduceSum", [above_i, ax1], f"{hint}_bin", keepdims=1)
    # one GatherElements for the bin's (x, y, d) at its left and right knot
    offsets = g.ints([0, k + 1, 2 * k + 2, 1, k + 2, 2 * k + 3], f"knot_offsets_{k}")
    gidx = g.add(idx, offsets, f"{hint}_gidx")
    gathered = g.op("GatherElements", [table, gidx], f"{hint}_g", axis=1)
    split6 = g.ints([1] * 6, "split6")
    x0, y0, d0, x1, y1, d1 = g.op("Split", [gathered, split6], f"{hint}_k", outputs=6, axis=1)

    w = g.sub(x1, x0, f"{hint}_w")
    h = g.sub(y1, y0, f"{hint}_h")
    s = g.div(h, w, f"{hint}_s")
    two_s = g.mul(two, s, f"{hint}_2s")
    delta = g.sub(g.add(d0, d1, f"{hint}_dd"), two_s, f"{hint}_delta")
    xi_raw = g.div(g.sub(xs, x0, f"{hint}_dx"), w, f"{hint}_xi_raw")
    xi = g.op("Clip", [xi_raw, zero, one], f"{hint}_xi")
    one_minus = g.sub(one, xi, f"{hint}_1mxi")
    t = g.mul(xi, one_minus, f"{hint}_t")
    xi2 = g.mul(xi, xi, f"{hint}_xi2")
    den = g.add(s, g.mul(delta, t, f"{hint}_dt"), f"{hint}_den")
    # y = y_k + h [s xi^2 + d_k xi (1 - xi)] / den
    numer = g.add(g.mul(s, xi2, f"{hint}_sxi2"), g.mul(d0, t, f"{hint}_d0t"), f"{hint}_numer")
    y = g.add(y0, g.div(g.mul(h, numer, f"{hint}_hn"), den, f"{hint}_ratio"), f"{hint}_y")
    # log dy/dx = 2 (log s - log den) + log(d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2)
    dn = g.add(g.mul(d1, xi2, f"{hint}_d1xi2"), g.mul(two_s, t, f"{hint}_2st"), f"{hint}_dn")
    dn = g.add(dn, g.mul(d0, g.mul(one_minus, one_minus, f"{hint}_om2"), f"{hint}_d0om2"), f"{hint}_dnum")
    log_ratio = g.sub(g.op("Log", [s], f"{hint}_log_s"), g.op("Log", [den], f"{hint}_log_den"), f"{hint}_lr")
    lad = g.add(g.mul(two, log_ratio, f"{hint}_2lr"), g.op("Log", [dn], f"{hint}_log_dnum"), f"{hint}_lad3")

    shape = g.op("Shape", [x], f"{hint}_xshape")
    y2 = g.op("Reshape", [y, shape], f"{hint}_y2")
    lad2 = g.op("Reshape", [lad, shape], f"{hint}_lad2")
    return g.where(inside, y2, x, f"{hint}_out"), g.where(inside, lad2, zero, f"{hint}_lad")


def _knot_table(tr: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""``(M, c)`` with ``table = [softmax(u^w), softmax(u^h), softplus(u^d)] @ M + c`` (``M``: (3K-1, 3K+3)).

    The table is ``[x_0..x_K, y_0..y_K, d_0..d_K]`` (docs/model-format.md 4.1): with
    :math:`w_j = m_w + (1 - m_w K)\,\mathrm{softmax}(u^w)_j`,
    :math:`x_k = -B + 2B\sum_{j<k} w_j` is linear in the softmax; :math:`x_0 = -B` and :math:`x_K = B`
    exactly (constant columns), the same for ``y``; :math:`d_k = m_d + \mathrm{softplus}(u^d_{k-1})`,
    :math:`d_0 = d_K = 1`.
    """
    k, b = tr.knots, tr.bound
    m = np.zeros((3 * k - 1, 3 * (k + 1)))
    c = np.zeros(3 * (k + 1))
    for first, row0, minimum in ((0, 0, tr.min_bin_width), (k + 1, k, tr.min_bin_height)):
        c[first] = -b
        c[first + k] = b
        for col in range(1, k):  # x_col = -B + 2B sum_{j<col} (m + (1 - m K) softmax_j)
            m[row0 : row0 + col, first + col] = 2.0 * b * (1.0 - minimum * k)
            c[first + col] = -b + 2.0 * b * minimum * col
    d = 2 * (k + 1)
    c[d] = c[d + k] = 1.0
    for col in range(1, k):
        m[2 * k + col - 1, d + col] = 1.0
        c[d + col] = tr.min_derivative
    return m, c


def _transform(g: _Graph, tr: Any, x: str, params: str, hint: str) -> tuple[str, str]:
    if tr.kind == "affine":
        return _affine(g, tr, x, params, hint)
    if tr.kind == "rqs":
        return _rqs(g, tr, x, params, hint)
    raise ValueError(f"export_onnx: transformer kind {tr.kind!r} has no ONNX translation")  # pragma: no cover


def _layers(g: _Graph, flow: Any, u: str, ctx: str | None) -> tuple[str, str | None]:
    """The flow's layers, data -> latent (docs/model-format.md 4.2): the latent ``z`` and the per-row
    log-determinant (``None`` for a flow of permutations only)."""
    from .flows.transforms import ActNorm, AutoregressiveLayer, CouplingLayer, Permutation

    d = flow.features
    h, total = u, None

    def accumulate(ld: str) -> None:
        nonlocal total
        total = ld if total is None else g.add(total, ld, "flow_logdet")

    for i, layer in enumerate(flow.layers):
        hint = f"l{i}"
        if isinstance(layer, Permutation):
            perm = g.const(layer.perm.cpu().numpy(), f"{hint}_perm", dtype=np.int64)
            h = g.op("Gather", [h, perm], hint, axis=1)
        elif isinstance(layer, ActNorm):
            scale = g.const(_np(layer.log_scale.detach().exp(), g.dtype), f"{hint}_scale")
            shift = g.const(_np(layer.shift, g.dtype), f"{hint}_shift")
            h = g.add(g.mul(h, scale, f"{hint}_scaled"), shift, hint)
            accumulate(g.scalar(float(layer.log_scale.detach().sum())))
        elif isinstance(layer, AutoregressiveLayer):
            made = layer.conditioner
            inp = h if ctx is None else g.op("Concat", [h, ctx], f"{hint}_in", axis=1)
            flat = _network(g, made.net, inp, f"{hint}_net")
            shape = g.ints([0, d, made.params_per_feature], f"{hint}_shape")  # 0: keep N
            params = g.op("Reshape", [flat, shape], f"{hint}_params")
            h, lad = _transform(g, layer.transformer, h, params, hint)
            accumulate(g.row_sum(lad, f"{hint}_logdet"))
        elif isinstance(layer, CouplingLayer):
            sp, p = layer.split, layer.transformer.num_params
            n2 = d - sp
            x1 = g.slice(h, 0, sp, 1, f"{hint}_x1") if sp else None
            x2 = g.slice(h, sp, d, 1, f"{hint}_x2") if sp else h
            parts = [t for t in (x1, ctx) if t is not None]
            mlp = layer.conditioner
            if mlp.net is None:  # no input (D = 1, no context): a learned constant, broadcast to N rows
                n = g.slice(g.op("Shape", [h], f"{hint}_hshape"), 0, 1, 0, f"{hint}_n")
                shape = g.op("Concat", [n, g.ints([n2, p], f"{hint}_np")], f"{hint}_pshape", axis=0)
                const = g.const(_np(mlp.const, g.dtype).reshape(1, n2, p), f"{hint}_const")
                params = g.op("Expand", [const, shape], f"{hint}_params")
            else:
                inp = parts[0] if len(parts) == 1 else g.op("Concat", parts, f"{hint}_in", axis=1)
                flat = _network(g, mlp.net, inp, f"{hint}_net")
                params = g.op("Reshape", [flat, g.ints([0, n2, p], f"{hint}_shape")], f"{hint}_params")
            y2, lad = _transform(g, layer.transformer, x2, params, hint)
            h = g.op("Concat", [x1, y2], hint, axis=1) if sp else y2
            accumulate(g.row_sum(lad, f"{hint}_logdet"))
        else:
            raise ValueError(
                f"export_onnx: flow layer {i} ({type(layer).__name__}) has no ONNX translation "
                "(supported: Permutation, ActNorm, AutoregressiveLayer, CouplingLayer)"
            )
    return h, total


# ---------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------
def _resolve(model_or_path: Any) -> tuple[Any, dict[str, str]]:
    """The Model and its provenance entries (``source``, ``source_sha256`` for a file)."""
    from .model import Model

    if isinstance(model_or_path, Model):
        return model_or_path, {}
    if isinstance(model_or_path, (str, os.PathLike)):
        import hashlib

        from .modelfile import load

        path = os.fspath(model_or_path)
        model = load(path)  # FileNotFoundError / FormatError name the file
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        return model, {"source": os.path.basename(path), "source_sha256": digest}
    raise TypeError(
        "export_onnx: argument 'model_or_path' must be an nfhep.model.Model or the path of a model file, "
        f"got {type(model_or_path).__name__}"
    )


def _check_opset(opset: Any) -> int:
    onnx = _onnx()
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"export_onnx: argument 'opset' must be an int, got {type(opset).__name__}")
    if not MIN_OPSET <= int(opset) <= newest:
        raise ValueError(
            f"export_onnx: argument 'opset' must be in [{MIN_OPSET}, {newest}] (the newest this onnx "
            f"{onnx.__version__} knows), got {opset}"
        )
    return int(opset)


def onnx_model(model_or_path: Any, *, opset: int = DEFAULT_OPSET, dtype: str = "float32"):
    r"""Build (without writing) the ONNX model of ``log_prob``; see :func:`export_onnx`.

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model(full_check=True)``.

    Notes
    -----
    The graph has evaluation-mode semantics whatever ``model.training`` is: dropout is the identity and
    batch normalisation uses the running statistics.
    """
    import torch

    from . import __version__
    from .modelfile import tensor_checksum

    onnx = _onnx()
    helper = onnx.helper
    opset = _check_opset(opset)
    if dtype not in _DTYPES:
        raise ValueError(f"export_onnx: argument 'dtype' must be 'float32' or 'float64', got {dtype!r}")
    model, provenance = _resolve(model_or_path)
    from .flows import Ensemble

    flow, pre = model.flow, model.preprocessing
    if pre.features is None:  # pragma: no cover - Model allocates the buffers
        raise ValueError("export_onnx: the model's preprocessing has no features")
    d, c = flow.features, flow.context
    g = _Graph(_DTYPES[dtype])

    g._names.update({"x", "context", "log_prob"})
    u, ld_pre, row_nan, row_oos = _preprocessing(g, pre, "x")
    ctx = None
    if c:  # standardised context; a NaN/inf value (also after standardisation) gives log p = NaN
        centred = g.sub("context", g.const(_np(pre.context_mean, g.dtype), "context_mean"), "ctx_centred")
        ctx = g.div(centred, g.const(_np(pre.context_std, g.dtype), "context_std"), "ctx")
        bad_c = g.op("Or", [g.op("IsNaN", [ctx], "ctx_isnan"), g.op("IsInf", [ctx], "ctx_isinf")], "ctx_bad")
        row_nan = g.op("Or", [row_nan, g.any_rows(bad_c, "row_ctx_bad")], "row_nan_any")

    def flow_log_prob(member: Any) -> str:
        # base: -|z|^2 / 2 - (D/2) log 2 pi; then + flow log-det (Model.log_prob order)
        with torch.no_grad():
            z, ld_flow = _layers(g, member, u, ctx)
        sq = g.row_sum(g.mul(z, z, "z2"), "z2_sum")
        lp = g.sub(g.mul(g.scalar(-0.5), sq, "base_q"), g.scalar(0.5 * d * _LOG_2PI), "base_log_prob")
        return lp if ld_flow is None else g.add(lp, ld_flow, "flow_log_prob")

    if isinstance(flow, Ensemble):
        # log (1/M) sum_k p_k = max + log sum_k exp(lp_k - max) - log M (Max and Sum are variadic)
        lps = [flow_log_prob(member) for member in flow.members]
        mx = g.op("Max", lps, "members_max")
        terms = [g.op("Exp", [g.sub(lk, mx, "member_shifted")], "member_exp") for lk in lps]
        total = g.op("Log", [g.op("Sum", terms, "members_sum")], "members_log_sum")
        lp = g.sub(g.add(mx, total, "members_lse"), g.scalar(math.log(len(flow.members))), "mixture_log_prob")
        what = f"an ensemble of {len(flow.members)} flows of {len(flow.members[0].layers)} layers"
    else:
        lp = flow_log_prob(flow)
        what = f"{len(flow.layers)} flow layers"
    lp = g.add(lp, ld_pre, "model_log_prob")
    lp = g.where(row_oos, g.scalar(-math.inf), lp, "log_prob_support")
    final = helper.make_node("Where", [row_nan, g.scalar(math.nan), lp], ["log_prob"], name="n_log_prob")
    g.nodes.append(final)

    inputs = [helper.make_tensor_value_info("x", g.elem, ["N", d])]
    if c:
        inputs.append(helper.make_tensor_value_info("context", g.elem, ["N", c]))
    outputs = [helper.make_tensor_value_info("log_prob", g.elem, ["N"])]
    graph = helper.make_graph(
        g.nodes,
        f"nfhep_{flow.family}_log_prob",
        inputs,
        outputs,
        initializer=g.initializers,
        doc_string=(
            f"log p(x | context) of an nfhep {flow.family} model in data units (preprocessing, "
            f"{what}, standard normal base); x: (N, {d}) features {model.features}"
            + (f"; context: (N, {c}) {model.context_features}" if c else "")
        ),
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="nfhep",
        producer_version=__version__,
        doc_string="nfhep export-onnx: log_prob of a normalizing flow (docs/onnx.md)",
    )
    proto.ir_version = min(proto.ir_version, _ir_version_for(opset))
    state = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    meta = {
        "nfhep_version": __version__,
        "family": flow.family,
        "features": json.dumps(list(model.features)),
        "context": json.dumps(list(model.context_features)),
        "flow": json.dumps(flow.config, sort_keys=True),
        "preprocessing": json.dumps(
            {
                "standardize": pre.standardize,
                "log": list(pre.log),
                "bounds": [list(b) for b in pre.bounds],
                "kinds": [None if k is None else dict(k) for k in (pre.kinds or [None] * d)],
                "quantile": [None if q is None else dict(q) for q in (pre.quantile or [None] * d)],
            }
        ),
        "inputs": json.dumps(["x", "context"] if c else ["x"]),
        "checksum": tensor_checksum(state),
        "dtype": dtype,
        "model_dtype": str(next(flow.parameters()).dtype).replace("torch.", ""),
        "outside_support": (
            "-inf (bounds, log of <= 0, unseen discrete values, infinite values); NaN feature or context: NaN"
        ),
        **provenance,
    }
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _ir_version_for(opset: int) -> int:
    """The oldest IR version onnx lists with ``opset`` (runtimes refuse IR versions newer than theirs)."""
    onnx = _onnx()
    irs = [row[1] for row in onnx.helper.VERSION_TABLE if row[2] >= opset]
    return min(irs) if irs else onnx.IR_VERSION


def _link_new(tmp: str, out: Path) -> None:
    """Move ``tmp`` to ``out`` without replacing a file that appeared meanwhile (hard link, then unlink;
    a plain rename after a last check where the file system has no hard links)."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise FileExistsError(
            f"output {str(out)!r} appeared while it was being written; nothing was overwritten"
        ) from None
    except OSError:  # no hard links here
        if out.exists():
            raise FileExistsError(
                f"output {str(out)!r} appeared while it was being written; nothing was overwritten"
            ) from None
        os.replace(tmp, out)
        return
    os.unlink(tmp)


def export_onnx(
    model_or_path: Any,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    r"""Write the model's :math:`\log p(x \mid c)` as an ONNX model (standard ``ai.onnx`` operators only).

    The graph has the input ``x`` of shape ``(N, D)`` (raw features in the order of ``model.features``),
    for a conditional model the input ``context`` ``(N, C)`` (raw context values, ``model.context_features``),
    and the output ``log_prob`` ``(N,)``; ``N`` is dynamic. It evaluates :meth:`Model.log_prob`: the
    preprocessing (bounds, log, periodic / discrete / spike kinds, quantile maps, standardisation; discrete
    and spike values at their cell centres, as in evaluation mode), every flow layer and the base density
    (``docs/model-format.md`` sections 4 and 5).

    Parameters
    ----------
    model_or_path : nfhep.model.Model or str or os.PathLike
        A model, or the path of an nfhep model file (read with :func:`nfhep.load`).
    path : str or os.PathLike
        Output file (``.onnx``). Written to a temporary file in the same directory and renamed, so it is
        either complete or absent.
    opset : int
        ONNX opset (default 17; at least 13, at most the newest the installed ``onnx`` knows).
    dtype : {"float32", "float64"}
        Precision of inputs, weights and output (the model's weights are converted).
    overwrite : bool
        Replace an existing ``path`` (otherwise a ``FileExistsError``).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    FileNotFoundError
        The model file, or the output directory, does not exist.
    nfhep.FormatError
        The model file is not a valid nfhep model file (the message names it).
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    ValueError, TypeError
        Bad ``opset``/``dtype``, or a model part without an ONNX translation (named in the message).

    Notes
    -----
    Events outside the model's support (a bounded feature outside its open interval, a log feature ``<= 0``, a
    discrete feature at none of its values, a spike feature neither at its spike nor in its continuum's
    support, an infinite feature) give ``-inf``; a NaN feature or a NaN/infinite context value gives NaN. This
    is what :class:`nfhep.Engine` returns; :meth:`Model.log_prob` raises a ``ValueError`` for out-of-bounds
    values instead. The metadata (``metadata_props``) records the nfhep version, family, features, context,
    flow configuration, preprocessing (bounds, log, kinds, quantile knots), the tensor checksum (the model
    file's ``checksum``) and, for a file, its name and SHA-256.

    Examples
    --------
    >>> nfhep.onnx_export.export_onnx("model.safetensors", "model.onnx")  # doctest: +SKIP
    >>> import onnxruntime as ort  # doctest: +SKIP
    >>> sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])  # doctest: +SKIP
    >>> logp = sess.run(["log_prob"], {"x": x.astype("float32")})[0]  # doctest: +SKIP
    """
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"output {str(out)!r} is a directory, not an .onnx file path")
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(out)!r} exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    directory = out.resolve().parent
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {str(directory)!r} does not exist")
    blob = onnx_model(model_or_path, opset=opset, dtype=dtype).SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, out)
        else:
            _link_new(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return out


def operators_of(model: Any) -> list[str]:
    """The sorted operator types of an ONNX model (a ``ModelProto`` or the path of an ``.onnx`` file)."""
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    return sorted({n.op_type for n in model.graph.node})


def compare_onnxruntime(
    model_or_path: Any, onnx_path: str | os.PathLike, *, events: int = 2000, seed: int = 0
) -> dict[str, Any]:
    r"""Evaluate an exported graph with onnxruntime (one thread) against the torch model (converted to the
    graph's precision: a float64 graph of a float32 model is compared with the model in float64).

    Events are sampled from the model (``seed``); a conditional model gets context values drawn from
    :math:`\mathcal{N}(\mu_c, \sigma_c)` of its training context (the preprocessing constants).

    Parameters
    ----------
    model_or_path : nfhep.model.Model or str or os.PathLike
        The model the graph was exported from.
    onnx_path : str or os.PathLike
        The ``.onnx`` file.
    events : int
        Number of sampled events.
    seed : int
        Seed of the samples and context values.

    Returns
    -------
    dict
        ``events``; ``max_rel_diff`` and ``median_rel_diff`` of
        :math:`|\text{onnx} - \text{torch}| / \max(1, |\text{torch}|)` over the events inside the support
        (``inf`` if the graph gives a non-finite value there, or a finite one for a sample on the support's
        closed edge, where the model's density is 0); ``outside``, the number of such edge samples.
    """
    import torch

    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - onnxruntime is in the test extras
        raise ImportError(
            f"checking an ONNX export needs onnxruntime ({err}); install it with `pip install onnxruntime`"
        ) from None
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise ValueError(f"compare_onnxruntime: argument 'events' must be an int >= 1, got {events!r}")
    model, _ = _resolve(model_or_path)
    if model.training:  # the graph has evaluation semantics (dropout off, batch norm running statistics)
        model = copy.deepcopy(model).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.fspath(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    in_dtype = np.float64 if sess.get_inputs()[0].type == "tensor(double)" else np.float32
    dt = _torch_dtype(in_dtype)
    if next(model.flow.parameters()).dtype != dt:  # the torch model in the graph's precision
        model = copy.deepcopy(model).to(dt)
    pre = model.preprocessing
    gen = torch.Generator().manual_seed(int(seed))
    ctx = None
    with torch.no_grad():
        if model.flow.context:
            eps = torch.randn(events, model.flow.context, generator=gen, dtype=torch.float64)
            ctx = (pre.context_mean.double() + pre.context_std.double() * eps).to(dt)
        x = model.sample(events, ctx, generator=gen)
        xn = x.double().cpu().numpy()
        inside = pre.support(x).cpu().numpy()  # bounds, log > 0, allowed discrete values, spikes
        lp_t = np.full(events, -np.inf)
        if inside.any():
            rows = torch.from_numpy(np.flatnonzero(inside))
            lp_t[inside] = model.log_prob(x[rows], None if ctx is None else ctx[rows]).double().cpu().numpy()
    feeds = {"x": xn.astype(in_dtype)}
    if ctx is not None:
        feeds["context"] = ctx.double().cpu().numpy().astype(in_dtype)
    lp_o = np.asarray(sess.run(["log_prob"], feeds)[0], dtype=np.float64)
    rel = np.abs(lp_o[inside] - lp_t[inside]) / np.maximum(1.0, np.abs(lp_t[inside]))
    bad = (~np.isfinite(lp_o[inside])).any() or (lp_o[~inside] != -np.inf).any()
    return {
        "events": int(events),
        "max_rel_diff": float("inf") if bad else float(rel.max(initial=0.0)),
        "median_rel_diff": float(np.median(rel)) if rel.size else 0.0,
        "outside": int((~inside).sum()),
    }
