"""ONNX export of log_prob (``nfhep.onnx_export``, ``nfhep export-onnx``) against the torch model.

onnxruntime (one thread) evaluates the exported graph; the references are :meth:`Model.log_prob` of the
same weights (float32: within 1e-5 of ``|Δ| / max(1, |log p|)``; float64: 1e-10) and, for the values
``Model.log_prob`` does not define (outside the support, NaN, infinities), :class:`nfhep.Engine`. Every
family with and without context; points in the spline tails, exactly at knots and at ``±B``; bounds and
log preprocessing; the version-2 kinds (periodic, discrete, spike) and quantile maps, also of a model
trained by ``nfhep train`` with its defaults; every activation, batch norm, ActNorm, dropout; opsets;
metadata; the CLI; errors.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import nfhep
from conftest import require_module
from nfhep import modelfile
from nfhep.bijectors.torch_impl import rqs_knots
from nfhep.model import Model
from nfhep.onnx_export import (
    DEFAULT_OPSET,
    MIN_OPSET,
    OPERATORS,
    compare_onnxruntime,
    export_onnx,
    onnx_model,
    operators_of,
)
from nfhep.preprocessing import MATCH_TOL
from test_engine import _data

onnx = require_module("onnx")
ort = require_module("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("maf", "realnvp", "crqs", "arqs")
TOL32, TOL64 = 1e-5, 1e-10


def _model(
    family: str,
    *,
    d: int = 4,
    context: int = 0,
    key: int = 0,
    scale: float = 0.15,
    dtype=torch.float32,
    bounds: dict | None = None,
    log_features: tuple[str, ...] = (),
    standardize: bool = True,
    **flow_options,
) -> Model:
    """A small model (2 bijectors, hidden 16-12, 5 knots on [-3, 3]) with fitted preprocessing and every
    weight perturbed by ``scale`` x N(0, 1) (biases by 2/3 of that): far from the identity, yet smooth
    enough that float32 rounding is not amplified beyond 1e-5 (the stressed case has its own test)."""
    torch.manual_seed(key)
    opts = {"bijectors": 2, "hidden": [16, 12]}
    if family in ("crqs", "arqs"):
        opts.update(knots=5, range=3.0)
    opts.update(flow_options)
    m = Model.create(
        family,
        [f"x{j}" for j in range(d)],
        context_features=[f"c{j}" for j in range(context)],
        bounds=bounds,
        log_features=log_features,
        standardize=standardize,
        **opts,
    )
    x = _data(400, d, bounds=bounds, log_features=log_features, seed=key + 1)
    c = np.random.default_rng(key + 2).normal(1.0, 2.0, size=(400, context)) if context else None
    m.preprocessing.fit(x, context=c)
    g = torch.Generator().manual_seed(key + 3)
    with torch.no_grad():
        for name, p in m.named_parameters():
            s = scale if name.endswith("weight") else scale * 2 / 3
            p.add_(s * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return m.to(dtype).eval()


def _session(model_or_proto):
    blob = (
        model_or_proto.SerializeToString() if hasattr(model_or_proto, "SerializeToString") else model_or_proto
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])


def _run(sess, x, c=None) -> np.ndarray:
    feeds = {"x": x} if c is None else {"x": x, "context": c}
    out = sess.run(["log_prob"], feeds)[0]
    assert out.shape == (len(x),) and out.dtype == x.dtype
    return out


def _torch_lp(m: Model, x, c=None) -> np.ndarray:
    dt = next(m.parameters()).dtype
    with torch.no_grad():
        ct = None if c is None else torch.as_tensor(c, dtype=dt)
        return m.log_prob(torch.as_tensor(x, dtype=dt), ct).double().numpy()


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def _context(n: int, c: int, seed: int, dtype=np.float32):
    return np.random.default_rng(seed).normal(1.0, 2.0, size=(n, c)).astype(dtype) if c else None


def _tail_rows(m: Model, n_per: int = 8) -> np.ndarray:
    """Raw rows whose standardised values lie beyond the spline range (|u| up to 4 B + 1) and far out."""
    pre = m.preprocessing
    mean, std = pre.mean.double().numpy(), pre.std.double().numpy()
    bound = float(m.flow.config.get("range", 3.0))
    rng = np.random.default_rng(5)
    u = rng.normal(size=(4 * n_per, len(mean)))
    u[:n_per, 0] = bound + 0.5 + 3 * rng.random(n_per)  # the first layer's first column in the right tail
    u[n_per : 2 * n_per, -1] = -bound - 0.5 - 3 * rng.random(n_per)
    u[2 * n_per : 3 * n_per] *= 4 * bound  # many columns far out
    u[3 * n_per :, :] = np.where(rng.random((n_per, len(mean))) < 0.5, -1, 1) * (bound + 1)
    return mean + std * u


def _flow_moves(m: Model, x: np.ndarray, c=None) -> float:
    """Spread of the flow's log-determinant over events (0 for an identity flow)."""
    dt = next(m.parameters()).dtype
    with torch.no_grad():
        ct = None if c is None else m.preprocessing.forward_context(torch.as_tensor(c, dtype=dt))
        u, _ = m.preprocessing(torch.as_tensor(x, dtype=dt))
        _, ld = m.flow.transform(u, ct)
    return float(ld.std())


# -- parity: every family, with and without context -------------------------------------------------------
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_float32_parity_with_tails(family, context):
    m = _model(family, d=4, context=context, key=11)
    proto = onnx_model(m)
    assert set(operators_of(proto)) <= set(OPERATORS)
    assert [i.name for i in proto.graph.input] == (["x", "context"] if context else ["x"])
    assert [o.name for o in proto.graph.output] == ["log_prob"]
    sess = _session(proto)
    x = np.concatenate([_data(600, 4, seed=21), _tail_rows(m)]).astype(np.float32)
    c = _context(len(x), context, seed=22)
    assert _flow_moves(m, x, c) > 0.1  # not the identity
    lp_t = _torch_lp(m, x, c)
    assert np.isfinite(lp_t).all()
    lp_o = _run(sess, x, c)
    err = _rel_err(lp_o, lp_t)
    assert err <= TOL32, f"{family} context={context}: onnxruntime vs torch max relative error {err:.3g}"


@pytest.mark.parametrize("context", [0, 1])
@pytest.mark.parametrize("family", ["crqs", "arqs"])
def test_inputs_exactly_at_knots_and_bounds(family, context):
    """No standardisation, so the first layer's spline input is the raw value: rows placed exactly on the
    knots of that layer's first transformed column (interior knots, -B and +B) and just beside them."""
    d, k = 3, 5
    m = _model(family, d=d, context=context, key=12, standardize=False)
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, size=(6 * (k + 1), d)).astype(np.float32)
    c = _context(len(x), context, seed=4)
    layer = m.flow.layers[0]
    col = 0 if family == "arqs" else layer.split
    with torch.no_grad():
        xt = torch.from_numpy(x)
        ct = None if c is None else m.preprocessing.forward_context(torch.from_numpy(c))
        if family == "arqs":
            params = layer.conditioner(xt, ct)[:, col]  # feature 0 depends on the context only
        else:
            params = layer._params(xt[:, : layer.split], ct)[:, 0]  # depends on x[:, :split] only
        kx, _, _ = rqs_knots(params, bound=3.0)
    rows = np.arange(len(x))
    knot = kx.numpy()[rows, rows % (k + 1)]
    nudge = np.array([0.0, 0.0, np.float32(1e-6), -np.float32(1e-6), 0.0, 0.0], np.float32)[rows // (k + 1)]
    x[:, col] = knot + nudge
    assert np.any(x[:, col] == np.float32(3.0)) and np.any(x[:, col] == np.float32(-3.0))
    lp_t = _torch_lp(m, x, c)
    lp_o = _run(_session(onnx_model(m)), x, c)
    assert np.isfinite(lp_t).all()
    assert _rel_err(lp_o, lp_t) <= TOL32


@pytest.mark.parametrize("family", FAMILIES)
def test_float64_export_matches_float64_model(family):
    m = _model(family, d=4, context=1, key=13, scale=0.3, dtype=torch.float64)
    x = np.concatenate([_data(400, 4, seed=31), _tail_rows(m)])
    c = _context(len(x), 1, seed=32, dtype=np.float64)
    lp_o = _run(_session(onnx_model(m, dtype="float64")), x, c)
    assert _rel_err(lp_o, _torch_lp(m, x, c)) <= TOL64


@pytest.mark.parametrize("family", ["crqs", "arqs"])
def test_float32_as_accurate_as_torch_float32_on_a_stressed_model(family):
    """Strongly perturbed splines (steep bins) amplify float32 rounding: there both float32 evaluations
    are compared with the float64 model, and the ONNX graph must be about as close as torch's own."""
    m32 = _model(family, d=4, context=2, key=14, scale=0.3)
    m64 = copy.deepcopy(m32).double()
    x = np.concatenate([_data(2000, 4, seed=41), _tail_rows(m32)]).astype(np.float32)
    c = _context(len(x), 2, seed=42)
    exact = _torch_lp(m64, x.astype(np.float64), c.astype(np.float64))
    err_torch = _rel_err(_torch_lp(m32, x, c), exact)
    err_onnx = _rel_err(_run(_session(onnx_model(m32)), x, c), exact)
    assert err_onnx <= max(TOL32, 3.0 * err_torch), (err_onnx, err_torch)


# -- preprocessing and values outside the support ------------------------------------------------------------
BOUNDS = {"x0": (-2.0, 3.0), "x2": (-1.0, None), "x3": (None, 4.0)}


@pytest.mark.parametrize("family", ["maf", "arqs"])
def test_bounds_and_log_preprocessing(family):
    m = _model(family, d=5, context=1, key=15, bounds=BOUNDS, log_features=("x1",))
    x = _data(500, 5, bounds=BOUNDS, log_features=("x1",), seed=51).astype(np.float32)
    c = _context(len(x), 1, seed=52)
    lp_o = _run(_session(onnx_model(m)), x, c)
    assert _rel_err(lp_o, _torch_lp(m, x, c)) <= TOL32


@pytest.mark.parametrize("family", FAMILIES)
def test_outside_support_nan_and_inf_match_the_engine(tmp_path, family):
    """Model.log_prob raises for values outside the support; the graph gives what nfhep.Engine gives:
    -inf outside (bounds, log of <= 0, infinite values), NaN for a NaN feature or context value."""
    m = _model(family, d=5, context=1, key=16, bounds=BOUNDS, log_features=("x1",))
    ok = _data(1, 5, bounds=BOUNDS, log_features=("x1",), seed=61)[0]
    cases = {  # column: value
        "two-sided low edge": (0, -2.0),
        "two-sided above": (0, 3.5),
        "log of 0": (1, 0.0),
        "log of negative": (1, -1.0),
        "lower bound edge": (2, -1.0),
        "upper bound above": (3, 5.0),
        "+inf unbounded": (4, math.inf),
        "-inf unbounded": (4, -math.inf),
        "+inf lower-bounded": (2, math.inf),
        "NaN unbounded": (4, math.nan),
        "NaN bounded": (0, math.nan),
    }
    x = np.tile(ok, (len(cases) + 3, 1))
    for r, (col, value) in enumerate(cases.values()):
        x[r, col] = value
    x[-3, 1], x[-3, 4] = -1.0, math.nan  # NaN wins over outside
    c = np.ones((len(x), 1))
    c[-2, 0], c[-1, 0] = math.nan, math.inf  # a NaN or infinite context value: NaN
    x32, c32 = x.astype(np.float32), c.astype(np.float32)
    lp_o = _run(_session(onnx_model(m)), x32, c32)
    lp_e = nfhep.Engine(modelfile.save(m, tmp_path / "m.safetensors")).log_prob(x32, c32)
    np.testing.assert_array_equal(np.isnan(lp_o), np.isnan(lp_e))
    np.testing.assert_array_equal(np.isneginf(lp_o), np.isneginf(lp_e))
    assert np.isneginf(lp_o[:9]).all() and np.isnan(lp_o[9:]).all()
    refused = ("two-sided low edge", "two-sided above", "log of 0", "log of negative", "lower bound edge")
    for r, (name, (col, _)) in enumerate(cases.items()):
        if name in refused + ("upper bound above", "NaN bounded"):  # Model.log_prob refuses the row
            with pytest.raises(ValueError, match=f"feature {col}"):
                _torch_lp(m, x32[r : r + 1], c32[r : r + 1])
    # the good row among bad ones is untouched
    x32[0] = ok
    assert np.isfinite(_run(_session(onnx_model(m)), x32, c32)[0])


def test_batch_sizes_are_dynamic():
    m = _model("arqs", d=3, context=1, key=17)
    sess = _session(onnx_model(m))
    assert sess.get_inputs()[0].shape == ["N", 3]
    x = _data(257, 3, seed=71).astype(np.float32)
    c = _context(257, 1, seed=72)
    full = _run(sess, x, c)
    for n in (0, 1, 5):
        np.testing.assert_allclose(_run(sess, x[:n], c[:n]), full[:n], rtol=1e-6, atol=1e-6)


# -- every option of the flows -------------------------------------------------------------------------------
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu", "sigmoid")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("family", ["maf", "crqs"])
def test_activations_batch_norm_actnorm_dropout(tmp_path, family, activation):
    opts = dict(activation=activation, batch_norm=True, actnorm=True, dropout=0.1, permutation="random")
    m = _model(family, d=4, context=1, key=18, **opts)
    x = _data(400, 4, seed=81).astype(np.float32)
    c = _context(len(x), 1, seed=82)
    assert _rel_err(_run(_session(onnx_model(m)), x, c), _torch_lp(m, x, c)) <= TOL32
    # a model left in training mode exports (and is checked) with evaluation semantics
    m.train()
    path = export_onnx(m, tmp_path / "m.onnx")
    assert m.training and compare_onnxruntime(m, path, events=300)["max_rel_diff"] <= TOL32
    m.eval()
    if activation == "gelu":
        return  # onnxruntime has no float64 Erf kernel (the float64 graph is valid ONNX; docs/onnx.md)
    m64 = m.double()
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    assert (
        _rel_err(_run(_session(onnx_model(m64, dtype="float64")), x64, c64), _torch_lp(m64, x64, c64))
        <= TOL64
    )


@pytest.mark.parametrize("context", [0, 1])
@pytest.mark.parametrize("family", ["realnvp", "crqs", "maf", "arqs"])
def test_one_feature(family, context):
    """D = 1: coupling layers transform the one feature with parameters from the context only, or a
    learned constant without context."""
    m = _model(family, d=1, context=context, key=19, permutation="none")
    x = np.concatenate([_data(200, 1, seed=91), _tail_rows(m, 4)]).astype(np.float32)
    c = _context(len(x), context, seed=92)
    assert _rel_err(_run(_session(onnx_model(m)), x, c), _torch_lp(m, x, c)) <= TOL32


@pytest.mark.parametrize("opset", [MIN_OPSET, DEFAULT_OPSET, None])
def test_opsets(opset):
    opset = onnx.defs.onnx_opset_version() if opset is None else opset
    m = _model("arqs", d=3, context=1, key=20)
    proto = onnx_model(m, opset=opset)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    x = _data(100, 3, seed=93).astype(np.float32)
    c = _context(100, 1, seed=94)
    assert _rel_err(_run(_session(proto), x, c), _torch_lp(m, x, c)) <= TOL32


# -- the file: metadata, atomic writes, errors ---------------------------------------------------------------
def test_file_export_and_metadata(tmp_path):
    m = _model("crqs", d=3, context=2, key=21, bounds={"x1": (0.0, None)})
    src = modelfile.save(m, tmp_path / "sig.safetensors")
    out = export_onnx(src, tmp_path / "sig.onnx")
    assert out == tmp_path / "sig.onnx"
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.producer_name == "nfhep" and proto.producer_version == nfhep.__version__
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["features"]) == ["x0", "x1", "x2"]
    assert json.loads(meta["context"]) == ["c0", "c1"]
    assert json.loads(meta["flow"]) == m.flow.config
    assert json.loads(meta["preprocessing"])["bounds"][1] == [0.0, None]
    assert meta["family"] == "crqs" and meta["dtype"] == "float32" and meta["source"] == "sig.safetensors"
    assert meta["checksum"] == modelfile.read_metadata(src)["checksum"]["value"]
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    # the metadata reaches onnxruntime; the file evaluates as the loaded model
    sess = _session(str(out))
    assert sess.get_modelmeta().custom_metadata_map["family"] == "crqs"
    loaded = nfhep.load(src)
    x = _data(200, 3, bounds={"x1": (0.0, None)}, seed=95).astype(np.float32)
    c = _context(200, 2, seed=96)
    assert _rel_err(_run(sess, x, c), _torch_lp(loaded, x, c)) <= TOL32
    assert sorted(os.listdir(tmp_path)) == ["sig.onnx", "sig.safetensors"]


def test_refuses_to_overwrite_and_writes_atomically(tmp_path, monkeypatch):
    m = _model("maf", d=2, key=22)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(m, out)
    assert out.read_bytes() == b"keep"
    export_onnx(m, out, overwrite=True)
    assert onnx.load(str(out)).producer_name == "nfhep"
    # a failure while writing leaves neither the output nor a temporary file
    fresh = tmp_path / "fresh.onnx"

    def broken_fsync(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated"):
        export_onnx(m, fresh)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_errors_name_the_input(tmp_path):
    m = _model("arqs", d=2, key=23)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        export_onnx(missing, tmp_path / "a.onnx")
    junk = tmp_path / "junk.safetensors"
    junk.write_text("this is not a model file, just text\n")
    with pytest.raises(nfhep.FormatError, match="junk.safetensors"):
        export_onnx(junk, tmp_path / "a.onnx")
    with pytest.raises(TypeError, match="model_or_path"):
        export_onnx(42, tmp_path / "a.onnx")
    with pytest.raises(FileNotFoundError, match="directory"):
        export_onnx(m, tmp_path / "no" / "dir" / "a.onnx")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        export_onnx(m, tmp_path, overwrite=True)
    with pytest.raises(ValueError, match="opset"):
        onnx_model(m, opset=MIN_OPSET - 1)
    with pytest.raises(ValueError, match="dtype"):
        onnx_model(m, dtype="float16")
    odd = copy.deepcopy(m)
    odd.flow.layers[0].conditioner.net[1] = torch.nn.Softsign()
    with pytest.raises(ValueError, match="Softsign"):
        onnx_model(odd)
    assert sorted(os.listdir(tmp_path)) == ["junk.safetensors"]


# -- the command line ----------------------------------------------------------------------------------------
def test_cli_end_to_end(tmp_path, capsys):
    from nfhep.cli import main

    m = _model("arqs", d=3, context=1, key=24, bounds={"x0": (-4.0, 5.0)})
    src = modelfile.save(m, tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(src), "-o", str(out), "--check", "--check-events", "500"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "opset 17" in text
    diff = float(re.search(r"max \|onnx - torch\| / max\(1, \|torch\|\) = (\S+) ", text).group(1))
    assert diff <= TOL32 and ": ok" in text
    sess = _session(str(out))
    x = _data(50, 3, bounds={"x0": (-4.0, 5.0)}, seed=97).astype(np.float32)
    c = _context(50, 1, seed=98)
    assert _rel_err(_run(sess, x, c), _torch_lp(m, x, c)) <= TOL32
    # refuses to overwrite; --overwrite with another dtype and opset
    assert main(["export-onnx", str(src), "-o", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    args = ["export-onnx", str(src), "-o", str(out), "--overwrite", "--dtype", "float64", "--opset", "20"]
    assert main([*args, "--check", "--check-events", "300", "-q"]) == 0
    text = capsys.readouterr().out
    assert "wrote" not in text and ": ok" in text
    assert _session(str(out)).get_inputs()[0].type == "tensor(double)"
    # an impossible tolerance fails the check (exit code 1)
    assert main([*args, "--check", "--check-tol", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out
    # errors: a missing model file, a bad opset
    assert main(["export-onnx", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "x.onnx")]) == 1
    assert "none.safetensors" in capsys.readouterr().err
    assert main(["export-onnx", str(src), "-o", str(tmp_path / "y.onnx"), "--opset", "9"]) == 1
    assert "opset" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.safetensors"]


def test_cli_help(capsys):
    from nfhep.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["export-onnx", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("log_prob", "--opset", "--check", "--overwrite", "onnxruntime", "SOFIE", "-inf"):
        assert word in text


def test_docs_list_exactly_the_operators():
    doc = (REPO / "docs" / "onnx.md").read_text()
    section = doc.split("## Operators", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))
    assert listed == set(OPERATORS)


@pytest.mark.parametrize("family", ["arqs", "realnvp"])
def test_trained_model(tmp_path, family):
    """A flow trained for a few epochs (by nfhep.train.fit, float32) on a correlated, bounded sample with
    context, saved and exported from the file: the realistic path."""
    from nfhep.train import fit

    rng = np.random.default_rng(7)
    n = 3000
    c = rng.normal(size=(n, 1))
    x = np.stack([np.exp(0.5 * rng.normal(size=n) + 0.3 * c[:, 0]), rng.normal(size=n)], axis=1)
    x = np.concatenate([x, (x[:, :1] + 0.5 * rng.normal(size=(n, 1)))], axis=1)
    torch.manual_seed(0)
    opts = {"knots": 6, "range": 4.0} if family == "arqs" else {}
    m = Model.create(
        family, ["a", "b", "s"], context_features=["c"], log_features=("a",), hidden=[32, 32], **opts
    )
    fit(
        m.float(),
        x.astype(np.float32),
        context=c.astype(np.float32),
        epochs=4,
        batch_size=256,
        progress=False,
    )
    m.eval()
    src = modelfile.save(m, tmp_path / "trained.safetensors")
    out = export_onnx(src, tmp_path / "trained.onnx")
    xt, ct = x[:1000].astype(np.float32), c[:1000].astype(np.float32)
    lp_t = _torch_lp(nfhep.load(src), xt, ct)
    assert _rel_err(_run(_session(str(out)), xt, ct), lp_t) <= TOL32
    assert compare_onnxruntime(src, out, events=500)["max_rel_diff"] <= TOL32


# -- version-2 preprocessing: periodic, discrete, spike features and quantile maps ---------------------------
def _kinds_model(family: str, dtype: torch.dtype, context: int = 0):
    """The model of tests/test_preprocessing_kinds.py: columns pt (lower edge), eta (bounded), phi
    (periodic), btag (discrete 0, 1.5, 3), jet_pt (spike at 0 + lower-edge continuum), g (Gaussian),
    met_phi (periodic, relative to phi), every one with a quantile map (chosen by nfhep.feature_analysis)."""
    from test_preprocessing_kinds import _model as kinds_model

    m, x, names = kinds_model(family, dtype, context)
    kinds = [None if k is None else k["kind"] for k in m.preprocessing.kinds]
    assert kinds == [None, None, "periodic", "discrete", "spike", None, "periodic"]
    assert m.preprocessing.kinds[6]["relative_to"] == 2
    assert all(q is not None for q in m.preprocessing.quantile)
    return m, x


def _edge_rows(m: Model, x: np.ndarray, npdt) -> np.ndarray:
    """Rows inside the support that hit every special case: the spike exactly, every discrete value,
    phi at +-pi and beyond the period, v exactly at every quantile knot and beyond the end knots."""
    pre = m.preprocessing
    base = x[:1].astype(npdt)
    rows = []

    def put(col: int, values) -> None:
        for value in values:
            r = base.copy()
            r[0, col] = value
            rows.append(r)

    put(4, [0.0, -0.0])  # the spike exactly
    put(3, [0.0, 1.5, 3.0, 1.5 * (1 + 0.5 * MATCH_TOL)])  # allowed values (the last within the tolerance)
    pi = npdt(math.pi)
    put(2, [pi, -pi, np.nextafter(pi, npdt(0)), npdt(3 * math.pi + 0.1), npdt(-7.5), npdt(0.0)])
    put(6, [pi, -pi, npdt(base[0, 2]), npdt(base[0, 2] + math.pi), npdt(5 * math.pi)])  # the relative angle
    # g is an identity column: v = x, so x at the knots is v at the knots (in the model's precision)
    knots = np.asarray(pre.quantile[5]["v"], npdt)
    put(5, list(knots) + [knots[0] - 1, knots[0] - 40, knots[-1] + 1, knots[-1] + 40])
    # pt: v = log(x - lo) beyond both end knots (x just above the lower edge, and far out)
    lo = pre.bounds[0][0]
    a = pre.quantile[0]["v"]
    put(0, [npdt(lo + math.exp(a[0] - 2.0)), npdt(lo + math.exp(a[-1] + 1.5))])
    # jet_pt continuum beyond its end knots, and btag's v = k + 0.5 against its 4 knots
    lo4 = pre.bounds[4][0]
    a4 = pre.quantile[4]["v"]
    put(4, [npdt(lo4 + math.exp(a4[0] - 1.0)), npdt(lo4 + math.exp(a4[-1] + 1.0))])
    return np.concatenate(rows)


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_every_preprocessing_kind_matches_the_model(family, dtype, context):
    """Every kind and the quantile maps, all families: sample rows and the edge rows of _edge_rows
    against Model.log_prob in evaluation mode (float32 <= 1e-5, float64 <= 1e-10), with and without
    context."""
    m, x = _kinds_model(family, dtype, context)
    npdt, name, tol = (
        (np.float32, "float32", TOL32) if dtype == torch.float32 else (np.float64, "float64", TOL64)
    )
    xs = np.concatenate([x[:600].astype(npdt), _edge_rows(m, x, npdt)])
    proto = onnx_model(m, dtype=name)
    ops = operators_of(proto)
    assert set(ops) <= set(OPERATORS) and "Mod" in ops
    c = _context(len(xs), context, seed=53, dtype=npdt)
    lp_o = _run(_session(proto), xs, c)
    lp_t = _torch_lp(m, xs, c)
    assert np.isfinite(lp_t).all()
    err = _rel_err(lp_o, lp_t)
    print(f"{family} {name} context {context}: max rel diff {err:.3g}")
    assert err <= tol
    meta = {p.key: p.value for p in proto.metadata_props}
    pre = json.loads(meta["preprocessing"])
    kinds = [None if k is None else k["kind"] for k in pre["kinds"]]
    assert kinds == [None, None, "periodic", "discrete", "spike", None, "periodic"]
    assert pre["quantile"][5]["v"] == m.preprocessing.quantile[5]["v"]


@pytest.mark.parametrize("family", ["maf", "arqs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_kinds_outside_support_match_the_engine(tmp_path, family, dtype):
    """Unseen discrete values, values neither the spike nor in its continuum, bounds, infinities and NaN
    (also in the periodic column): the graph gives what nfhep.Engine gives, and the rows torch accepts
    agree with it; one bad event does not change the others."""
    m, x = _kinds_model(family, dtype)
    npdt, name, tol = (
        (np.float32, "float32", TOL32) if dtype == torch.float32 else (np.float64, "float64", TOL64)
    )
    ok = x[0].astype(npdt)
    lo4 = m.preprocessing.bounds[4][0]
    cases = {  # column: value, and whether the row is inside the support
        "unseen discrete value": (3, 0.7, False),
        "discrete tie between two values": (3, 0.75, False),
        "discrete just beyond the tolerance": (3, 1.5 * (1 + 3 * MATCH_TOL), False),
        "discrete below all values": (3, -2.0, False),
        "discrete above all values": (3, 4.0, False),
        "discrete +inf": (3, math.inf, False),
        "spike value within the tolerance": (4, 0.5 * MATCH_TOL, True),
        "neither spike nor continuum": (4, lo4 - 1.0, False),
        "just beyond the spike tolerance": (4, 3 * MATCH_TOL, False),
        "spike column -inf": (4, -math.inf, False),
        "periodic +inf": (2, math.inf, False),
        "periodic far away": (2, 1e4, True),
        "relative angle +inf": (6, math.inf, False),
        "relative angle far away": (6, -1e4, True),
        "relative angle NaN": (6, math.nan, None),
        "below the lower edge": (0, m.preprocessing.bounds[0][0] - 1.0, False),
        "bounded column outside": (1, 3.0, False),
        "periodic NaN": (2, math.nan, None),
        "discrete NaN": (3, math.nan, None),
        "spike NaN": (4, math.nan, None),
    }
    xb = np.tile(ok, (len(cases) + 1, 1))
    for r, (col, value, _) in enumerate(cases.values()):
        xb[r, col] = value
    inside = np.array([c[2] is True for c in cases.values()] + [True])
    lp_o = _run(_session(onnx_model(m, dtype=name)), xb)
    eng = nfhep.Engine(modelfile.save(m, tmp_path / "m.safetensors"))
    lp_e = np.asarray(eng.log_prob(xb), np.float64)
    np.testing.assert_array_equal(np.isnan(lp_o), np.isnan(lp_e))
    np.testing.assert_array_equal(np.isneginf(lp_o), np.isneginf(lp_e))
    expect_nan = np.array([c[2] is None for c in cases.values()] + [False])
    np.testing.assert_array_equal(np.isnan(lp_o), expect_nan)
    np.testing.assert_array_equal(np.isneginf(lp_o), ~inside & ~expect_nan)
    assert _rel_err(lp_o[inside], _torch_lp(m, xb[inside])) <= tol
    assert _rel_err(lp_o[inside], lp_e[inside]) <= tol
    np.testing.assert_array_equal(eng.in_support(xb).astype(bool), inside)


@pytest.mark.parametrize("flow", [None, "maf"], ids=["default-flow", "maf"])
def test_cli_export_of_a_model_trained_with_defaults(tmp_path, capsys, flow):
    """`nfhep train` with its default preprocessing (the feature analysis: every kind; quantile maps, at
    least for the affine families) on a collider-like ROOT file, then `nfhep export-onnx --check`: the
    exported graph evaluates the file."""
    from nfhep import io as nio
    from nfhep.cli import main
    from test_preprocessing_kinds import _collider

    x, names = _collider(1500, seed=4)
    nio.write_root(tmp_path / "d.root", "events", {n: x[:, j] for j, n in enumerate(names)})
    src = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    argv = ["train", f"{tmp_path / 'd.root'}:events", "--features", ",".join(names), "--epochs", "2"]
    argv += ["--bijectors", "1", "--hidden", "1x8", "--batch-size", "256", "--seed", "1", "-q"]
    argv += ["-o", str(src)] + ([] if flow is None else ["--flow", flow])
    assert main(argv) == 0
    meta = modelfile.read_metadata(src)
    assert meta["version"] == 3 and len(meta["flow"]["members"]) == 3  # 1,200 events: an ensemble of 3
    kinds = [None if k is None else k["kind"] for k in meta["preprocessing"]["kinds"]]
    assert kinds == [None, None, "periodic", "discrete", "spike", None, "periodic"]
    assert meta["preprocessing"]["kinds"][6]["relative_to"] == 2
    quantile = meta["preprocessing"].get("quantile") or [None] * len(names)
    if flow == "maf":
        assert all(q is not None for q in quantile)
    capsys.readouterr()
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(src), "-o", str(out), "--check", "--check-events", "500"]) == 0
    text = capsys.readouterr().out
    diff = float(re.search(r"max \|onnx - torch\| / max\(1, \|torch\|\) = (\S+) ", text).group(1))
    print(f"nfhep train defaults ({flow or 'default flow'}): export-onnx --check {diff:.3g}")
    assert diff <= TOL32 and ": ok" in text
    xt = x[:500].astype(np.float32)
    assert _rel_err(_run(_session(str(out)), xt), _torch_lp(nfhep.load(src), xt)) <= TOL32


def _hand_built_kinds_model(family: str, dtype: torch.dtype) -> tuple[Model, np.ndarray]:
    """Kinds the feature analysis does not pick for the collider sample: an asymmetric period with a
    shift, a discrete feature with one value and one with four (5 quantile knots), a spike on a log
    feature (2 quantile knots), a spike on an upper-bounded feature and columns without quantile maps."""
    from nfhep.flows import FLOWS
    from nfhep.preprocessing import Preprocessing

    pre = Preprocessing(
        log=[2],
        bounds={0: (0.45, 2.35), 3: (None, 3.0)},
        kinds={
            0: {"kind": "periodic", "period": [0.5, 2.3], "shift": 0.4},
            1: {"kind": "discrete", "values": [2.0]},
            2: {"kind": "spike", "value": 1.0, "cell": [-5.0, -4.5], "split": -4.4},
            3: {"kind": "spike", "value": -1.0, "cell": [-7.0, -6.0], "split": -5.9},
            4: {"kind": "discrete", "values": [-1.0, 0.0, 2.0, 7.0]},
        },
        quantile={
            2: {"v": [-2.0, 3.0], "u": [-1.5, 2.0]},
            4: {"v": [0.0, 1.0, 2.0, 3.0, 4.0], "u": [-1.5, -0.6, 0.0, 0.8, 1.7]},
            5: {"v": [-1.0, 0.0, 1.5], "u": [-1.2, 0.1, 1.3]},
        },
        features=6,
    )
    rng = np.random.default_rng(31)
    n = 800
    x = np.stack(
        [
            rng.uniform(0.5, 2.3, n),
            np.full(n, 2.0),
            np.where(rng.random(n) < 0.3, 1.0, rng.lognormal(0.5, 0.7, n)),
            np.where(rng.random(n) < 0.2, -1.0, 3.0 - rng.exponential(1.0, n)),
            rng.choice([-1.0, 0.0, 2.0, 7.0], n),
            rng.normal(0.2, 1.0, n),
        ],
        axis=1,
    )
    pre.fit(x)
    opts = {"bijectors": 2, "hidden": [12, 12]}
    if family in ("crqs", "arqs"):
        opts.update(knots=6, range=4.0)
    torch.manual_seed(7)
    m = Model(FLOWS[family](6, **opts), pre, [f"x{j}" for j in range(6)]).to(dtype)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in m.flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.eval(), x


@pytest.mark.parametrize("family", ["maf", "crqs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_hand_built_kinds_and_their_edges(tmp_path, family, dtype):
    m, x = _hand_built_kinds_model(family, dtype)
    npdt, name, tol = (
        (np.float32, "float32", TOL32) if dtype == torch.float32 else (np.float64, "float64", TOL64)
    )
    base = x[:1].astype(npdt)
    good = {  # column: values inside the support
        0: [0.5, 2.3, 0.9, 0.9 + 1.8 * 3, -4.0, 1e3, np.nextafter(npdt(2.3), npdt(0))],  # period ends, wraps
        1: [2.0, 2.0 * (1 + 0.5 * MATCH_TOL)],
        2: [1.0, 1e-6, 0.05, 60.0],  # the spike, and the log continuum beyond both end knots
        3: [-1.0, 2.999, -30.0],
        4: [-1.0, 0.0, 2.0, 7.0],  # v = k + 0.5 between the 5 knots
        5: [-1.0, 0.0, 1.5, -4.0, 6.0],  # exactly at the knots and beyond the ends
    }
    bad = {  # column: values outside the support
        1: [1.9, 2.0 * (1 + 3 * MATCH_TOL), math.inf],
        2: [0.0, -0.5, -math.inf],
        3: [3.0, 3.5],
        4: [1.0, 0.5, 7.1, -1.5],
    }
    rows, inside = [], []
    for table, flag in ((good, True), (bad, False)):
        for col, values in table.items():
            for value in values:
                r = base.copy()
                r[0, col] = value
                rows.append(r)
                inside.append(flag)
    xs = np.concatenate([x[:300].astype(npdt), *rows])
    inside = np.array([True] * 300 + inside)
    lp_o = _run(_session(onnx_model(m, dtype=name)), xs)
    lp_t = _torch_lp(m, xs[inside])
    err = _rel_err(lp_o[inside], lp_t)
    print(f"hand-built {family} {name}: max rel diff {err:.3g}")
    assert err <= tol
    assert np.isneginf(lp_o[~inside]).all()
    eng = nfhep.Engine(modelfile.save(m, tmp_path / "m.safetensors"))
    lp_e = np.asarray(eng.log_prob(xs), np.float64)
    np.testing.assert_array_equal(np.isneginf(lp_e), ~inside)
    assert _rel_err(lp_o[inside], lp_e[inside]) <= tol
