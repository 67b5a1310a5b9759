"""The C++ inference engine (nfhep.Engine / nfhep::Flow) against the torch model it was saved from.

Parity targets (issue 13): log_prob within 1e-5 relative in float32 and 1e-10 in float64 on every family,
with and without context; samples equal to the torch model's inverse of the same latent draws; identical
samples for the same seed across thread counts and splits of the stream; every flow option and
preprocessing kind of docs/model-format.md through both sides; bad input -> clear errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nfhep
from nfhep import modelfile
from nfhep.model import Model

from conftest import kernel_settings_restored

FAMILIES = ("maf", "realnvp", "crqs", "arqs")
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _make(
    family: str,
    *,
    d: int = 4,
    context: int = 0,
    dtype=torch.float64,
    key: int = 0,
    bounds: dict | None = None,
    log_features: tuple[str, ...] = (),
    standardize: bool = True,
    names: list[str] | None = None,
    data: np.ndarray | None = None,
    **flow_options,
):
    """A model with fitted preprocessing and weights moved well away from the identity (feature names
    x0.. unless given; preprocessing fitted to `data` when given, else to synthetic events)."""
    torch.manual_seed(key)
    names = [f"x{j}" for j in range(d)] if names is None else list(names)
    ctx = [f"c{j}" for j in range(context)]
    opts = {"bijectors": 2, "hidden": [16, 12]}
    if family in ("crqs", "arqs"):
        opts.update(knots=5, range=3.0)
    opts.update(flow_options)
    m = Model.create(
        family,
        names,
        context_features=ctx,
        bounds=bounds,
        log_features=log_features,
        standardize=standardize,
        **opts,
    )
    x = _data(400, d, bounds=bounds, log_features=log_features, seed=key + 1) if data is None else data
    c = np.random.default_rng(key + 2).normal(1.0, 2.0, size=(len(x), context)) if context else None
    m.preprocessing.fit(x, context=c)
    g = torch.Generator().manual_seed(key + 3)
    with torch.no_grad():
        for name, p in m.named_parameters():
            scale = 0.3 if name.endswith("weight") else 0.2
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return m.to(dtype).eval()


def _data(n, d, *, bounds=None, log_features=(), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.5, size=(n, d))
    for name, (lo, hi) in (bounds or {}).items():
        j = int(name[1:])
        if lo is not None and hi is not None:
            x[:, j] = rng.uniform(lo, hi, size=n)
        elif lo is not None:
            x[:, j] = lo + rng.exponential(2.0, size=n)
        else:
            x[:, j] = hi - rng.exponential(2.0, size=n)
    for name in log_features:
        x[:, int(name[1:])] = rng.lognormal(0.0, 0.7, size=n)
    return x


def _save(tmp_path, m, name="m.safetensors"):
    return modelfile.save(m, tmp_path / name)


def _torch_lp(m, x, c=None):
    dt = next(m.parameters()).dtype
    with torch.no_grad():
        ct = None if c is None else torch.as_tensor(c, dtype=dt)
        return m.log_prob(torch.as_tensor(x, dtype=dt), context=ct).double().numpy()


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def _check_parity(tmp_path, m, x, c=None, dtype=torch.float64):
    eng = nfhep.Engine(_save(tmp_path, m))
    npdt = np.float32 if dtype == torch.float32 else np.float64
    xe = np.ascontiguousarray(x, dtype=npdt)
    ce = None if c is None else np.ascontiguousarray(c, dtype=npdt)
    lp_e = eng.log_prob(xe, ce)
    lp_t = _torch_lp(m, xe, ce)
    assert lp_e.dtype == npdt and lp_e.shape == (len(x),)
    assert np.all(np.isfinite(lp_t))
    err = _rel_err(lp_e, lp_t)
    assert err <= TOL[dtype], f"engine vs torch log_prob: max relative error {err:.3g}"
    return eng


# ---------------------------------------------------------------------------------------------------------
# parity: every family, with and without context, both dtypes
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", [0, 3], ids=["plain", "context"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_log_prob_matches_torch(tmp_path, family, context, dtype):
    m = _make(family, d=5, context=context, dtype=dtype, key=11)
    x = _data(700, 5, seed=5)  # 700 = two full chunks of 256 and a partial one
    c = np.random.default_rng(9).normal(1.0, 2.0, size=(700, context)) if context else None
    _check_parity(tmp_path, m, x, c, dtype)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", [0, 2], ids=["plain", "context"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sample_is_the_torch_inverse_of_the_latent_draws(tmp_path, family, context, dtype):
    m = _make(family, d=4, context=context, dtype=dtype, key=3)
    eng = nfhep.Engine(_save(tmp_path, m))
    npdt = np.float32 if dtype == torch.float32 else np.float64
    n = 150
    c = np.random.default_rng(4).normal(1.0, 2.0, size=(n, context)).astype(npdt) if context else None
    x, lp = eng.sample(n, seed=17, first_index=5, context=c, return_log_prob=True)
    z = eng.latent(n, seed=17, first_index=5)
    assert x.dtype == npdt and x.shape == (n, 4) and np.all(np.isfinite(x)) and np.all(np.isfinite(lp))
    with torch.no_grad():
        ct = None if c is None else m.preprocessing.forward_context(torch.as_tensor(c))
        u, _ = m.flow.inverse(torch.as_tensor(z).to(dtype), ct)
        xt = m.preprocessing.inverse(u).double().numpy()
    scale = np.maximum(1.0, np.abs(xt))
    err = float(np.max(np.abs(x - xt) / scale))
    assert err <= (2e-4 if dtype == torch.float32 else 1e-9), f"sample vs torch inverse: {err:.3g}"
    # the log-density returned with the sample is the model's density of the sample
    lp_t = _torch_lp(m, x.astype(npdt), c)
    assert _rel_err(lp, lp_t) <= (5e-4 if dtype == torch.float32 else 1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_identical_across_threads_and_splits(tmp_path, family):
    m = _make(family, d=6, context=0, dtype=torch.float32, key=8)
    eng = nfhep.Engine(_save(tmp_path, m))
    with kernel_settings_restored():
        nfhep.set_num_threads(1)
        ref = eng.sample(333, seed=5)
        for threads in (2, 3):
            nfhep.set_num_threads(threads)
            assert np.array_equal(eng.sample(333, seed=5), ref)
        # the same stream cut into calls of other sizes, starting anywhere
        parts = [eng.sample(k, seed=5, first_index=b) for b, k in ((0, 1), (1, 63), (64, 65), (129, 204))]
        assert np.array_equal(np.concatenate(parts), ref)
        assert np.array_equal(eng.sample(10, seed=5, first_index=100), ref[100:110])
        assert not np.array_equal(eng.sample(10, seed=6, first_index=100), ref[100:110])


def test_log_prob_thread_independent(tmp_path):
    m = _make("arqs", d=5, dtype=torch.float32, key=2)
    eng = nfhep.Engine(_save(tmp_path, m))
    x = _data(2000, 5, seed=3).astype(np.float32)
    with kernel_settings_restored():
        nfhep.set_num_threads(1)
        a = eng.log_prob(x)
        nfhep.set_num_threads(2)
        b = eng.log_prob(x)
    assert np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------------------
# every flow option and preprocessing kind of docs/model-format.md, through both sides
# ---------------------------------------------------------------------------------------------------------
OPTION_CASES = {
    # flow options (section 3.1)
    "activation-tanh": dict(activation="tanh"),
    "activation-elu": dict(activation="elu"),
    "activation-gelu": dict(activation="gelu"),
    "activation-silu": dict(activation="silu"),
    "activation-leaky_relu": dict(activation="leaky_relu"),
    "activation-sigmoid": dict(activation="sigmoid"),
    "permutation-random": dict(permutation="random", seed=4, bijectors=3),
    "permutation-none": dict(permutation="none"),
    "dropout": dict(dropout=0.2),
    "batch_norm": dict(batch_norm=True),
    "actnorm": dict(actnorm=True, bijectors=3),
    "one-hidden-layer": dict(hidden=[24]),
    "deep-narrow": dict(hidden=[3, 3, 3, 3]),
    "five-bijectors": dict(bijectors=5),
    # preprocessing kinds (section 5)
    "bounds-two-sided": dict(bounds={"x0": (-2.0, 3.0)}),
    "bounds-lower": dict(bounds={"x1": (0.5, None)}),
    "bounds-upper": dict(bounds={"x2": (None, 4.0)}),
    "log": dict(log_features=("x3",)),
    "all-kinds": dict(bounds={"x0": (-2.0, 3.0), "x1": (0.5, None), "x2": (None, 4.0)}, log_features=("x3",)),
    "no-standardize": dict(standardize=False),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_option_and_preprocessing_kind(tmp_path, family, case):
    opts = dict(OPTION_CASES[case])
    m = _make(family, d=4, context=0, dtype=torch.float64, key=21, **opts)
    x = _data(300, 4, bounds=opts.get("bounds"), log_features=opts.get("log_features", ()), seed=22)
    eng = _check_parity(tmp_path, m, x)
    z = eng.latent(50, seed=1)
    with torch.no_grad():
        u, _ = m.flow.inverse(torch.as_tensor(z), None)
        xt = m.preprocessing.inverse(u).numpy()
    xs = eng.sample(50, seed=1)
    assert np.max(np.abs(xs - xt) / np.maximum(1.0, np.abs(xt))) <= 1e-9


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", [0, 2], ids=["plain", "context"])
def test_one_feature(tmp_path, family, context):
    # D = 1: coupling layers condition on the context only, or are a learned constant without context
    m = _make(family, d=1, context=context, dtype=torch.float64, key=31)
    x = _data(200, 1, seed=32)
    c = np.random.default_rng(33).normal(size=(200, context)) if context else None
    eng = _check_parity(tmp_path, m, x, c)
    assert eng.sample(20, seed=2, context=c[:20] if context else None).shape == (20, 1)


def test_float32_model_float64_input(tmp_path):
    m = _make("arqs", d=4, dtype=torch.float32, key=41)
    eng = nfhep.Engine(_save(tmp_path, m))
    x = _data(100, 4, seed=42)
    lp64 = eng.log_prob(x)  # converted to the model's float32; the result (summed in float64) as float64
    lp32 = eng.log_prob(x.astype(np.float32))
    assert lp64.dtype == np.float64
    np.testing.assert_allclose(lp64, lp32.astype(np.float64), rtol=2e-7)  # lp32: the same, rounded


def test_context_broadcast(tmp_path):
    m = _make("maf", d=3, context=2, dtype=torch.float64, key=51)
    eng = nfhep.Engine(_save(tmp_path, m))
    x = _data(40, 3, seed=52)
    c1 = np.array([0.3, -1.2])
    np.testing.assert_array_equal(eng.log_prob(x, c1), eng.log_prob(x, np.tile(c1, (40, 1))))
    s1 = eng.sample(30, seed=3, context=c1)
    sn = eng.sample(30, seed=3, context=np.tile(c1, (30, 1)))
    np.testing.assert_array_equal(s1, sn)


# ---------------------------------------------------------------------------------------------------------
# support, special values
# ---------------------------------------------------------------------------------------------------------
def test_support_and_special_values(tmp_path):
    bounds = {"x0": (-2.0, 3.0), "x1": (0.5, None), "x2": (None, 4.0)}
    m = _make("arqs", d=4, bounds=bounds, log_features=("x3",), key=61)
    eng = nfhep.Engine(_save(tmp_path, m))
    np.testing.assert_array_equal(eng.lower_bounds, [-2.0, 0.5, -math.inf, 0.0])
    np.testing.assert_array_equal(eng.upper_bounds, [3.0, math.inf, 4.0, math.inf])
    good = np.array([0.0, 1.0, 0.0, 1.0])
    rows = [good.copy() for _ in range(9)]
    rows[1][0] = 3.0  # at the (open) bound
    rows[2][0] = -2.5
    rows[3][1] = 0.5
    rows[4][2] = 4.0
    rows[5][3] = 0.0  # log feature must be > 0
    rows[6][3] = -1.0
    rows[7][1] = math.nan
    rows[8][0] = math.inf
    x = np.array(rows)
    lp = eng.log_prob(x)
    assert np.isfinite(lp[0])
    assert np.all(lp[1:7] == -math.inf)
    assert math.isnan(lp[7])
    assert lp[8] == -math.inf
    np.testing.assert_array_equal(eng.in_support(x), [True] + [False] * 8)
    s = eng.sample(2000, seed=9)
    assert np.all(np.isfinite(s))
    assert np.all((s[:, 0] >= -2.0) & (s[:, 0] <= 3.0))
    assert np.all(s[:, 1] >= 0.5) and np.all(s[:, 2] <= 4.0) and np.all(s[:, 3] >= 0.0)


def test_empty_input(tmp_path):
    m = _make("crqs", d=3, key=71)
    eng = nfhep.Engine(_save(tmp_path, m))
    assert eng.log_prob(np.empty((0, 3))).shape == (0,)
    assert eng.sample(0, seed=1).shape == (0, 3)


def test_tails_of_the_spline(tmp_path):
    # standardised values far outside [-B, B]: the spline is the identity there
    m = _make("arqs", d=3, key=81)
    x = np.array([[40.0, -35.0, 12.0], [1e3, -1e3, 0.0], [0.5, 0.5, 0.5]])
    _check_parity(tmp_path, m, x)


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------
def test_bad_arguments(tmp_path):
    m = _make("maf", d=3, context=2, key=91)
    eng = nfhep.Engine(_save(tmp_path, m))
    x = _data(5, 3)
    c = np.zeros((5, 2))
    with pytest.raises(ValueError, match="'context' is required"):
        eng.log_prob(x)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        eng.log_prob(np.zeros((5, 4)), c)
    with pytest.raises(TypeError, match="float32 or float64"):
        eng.log_prob(x.astype(np.int64), c)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        eng.log_prob(x.tolist(), c)
    with pytest.raises(TypeError, match="context"):
        eng.log_prob(x, c.astype(np.float32))
    with pytest.raises(ValueError, match="context"):
        eng.log_prob(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'context' is required"):
        eng.sample(3, seed=1)
    with pytest.raises(ValueError, match="context"):
        eng.sample(3, seed=1, context=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="seed"):
        eng.sample(3, seed=-1, context=c[0])
    with pytest.raises(TypeError, match="'n'"):
        eng.sample(2.5, seed=1, context=c[0])
    eng0 = nfhep.Engine(_save(tmp_path, _make("maf", d=3, key=92), "plain.safetensors"))
    with pytest.raises(ValueError, match="no context"):
        eng0.log_prob(x, c)
    # non-contiguous input is accepted (copied), with the same values
    xf = np.asfortranarray(x)
    np.testing.assert_array_equal(eng0.log_prob(xf), eng0.log_prob(x))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        nfhep.Engine(tmp_path / "missing.safetensors")
    m = _make("arqs", d=3, key=93)
    path = _save(tmp_path, m)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(nfhep.FormatError, match="checksum mismatch"):
        nfhep.Engine(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(nfhep.FormatError, match="truncated|trailing|starts at"):
        nfhep.Engine(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(nfhep.FormatError, match="too short"):
        nfhep.Engine(tiny)


def test_metadata_and_attributes(tmp_path):
    m = _make("crqs", d=3, context=1, dtype=torch.float32, key=94)
    path = _save(tmp_path, m)
    eng = nfhep.Engine(path)
    meta = modelfile.read_metadata(path)
    assert eng.features == ["x0", "x1", "x2"] and eng.context_features == ["c0"]
    assert eng.family == "crqs" and eng.dtype == "float32"
    assert eng.checksum == meta["checksum"]["value"]
    assert eng.metadata["flow"] == meta["flow"]
    assert "crqs" in repr(eng)


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_on_every_simd_level(tmp_path, family):
    # the engine and the torch model call the same per-ISA kernels: they agree on every level
    m = _make(family, d=5, context=2, dtype=torch.float64, key=101)
    path = _save(tmp_path, m)
    x = _data(300, 5, seed=102)
    c = np.random.default_rng(103).normal(size=(300, 2))
    levels = nfhep.build_info()["simd_available"]
    with kernel_settings_restored():
        for level in levels:
            nfhep._core.set_simd(level)
            eng = nfhep.Engine(path)
            err = _rel_err(eng.log_prob(x, c), _torch_lp(m, x, c))
            assert err <= 1e-10, f"{level}: {err:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_non_finite_context(tmp_path, dtype):
    """A NaN or infinite context value: log p is NaN, as for a NaN feature (and as the torch model gives);
    sampling refuses such a context, naming the context feature."""
    m = _make("arqs", d=3, context=2, dtype=dtype, key=1)
    eng = nfhep.Engine(_save(tmp_path, m))
    npdt = np.float32 if dtype == torch.float32 else np.float64
    x = np.zeros((4, 3), npdt)
    c = np.array([[0, 0], [np.nan, 0], [0, np.inf], [-np.inf, 1]], npdt)
    lp, ref = eng.log_prob(x, c), _torch_lp(m, x, c)
    assert np.isnan(lp[1:]).all() and np.isnan(ref[1:]).all()
    assert abs(lp[0] - ref[0]) <= TOL[dtype] * max(1.0, abs(ref[0]))
    with pytest.raises(ValueError, match=r"context row 0 has a NaN or infinite value \(c1\)"):
        eng.sample(3, seed=0, context=np.array([0.0, np.nan], npdt))
