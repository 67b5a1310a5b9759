"""Per-feature preprocessing kinds (issue 15): periodic, discrete, spike + continuum, data range; the
automatic feature analysis; model file version 2 in Python and in the C++ engine; guarded sampling.

References are independent: numpy float64 formulas for the maps, torch autograd for the log-Jacobians,
exact counting for the discrete masses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nfhep
from nfhep.feature_analysis import analyze_features, load_preprocess_config
from nfhep.model import Model
from nfhep.preprocessing import MATCH_TOL, Preprocessing

PI = math.pi


def _collider(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Columns of every class: lower edge, bounded, periodic, discrete, spike + continuum, Gaussian, an
    angle relative to the first one."""
    rng = np.random.default_rng(seed)
    pt = 20 + rng.exponential(30, n)
    eta = rng.uniform(-2.5, 2.5, n)
    phi = rng.uniform(-PI, PI, n)
    btag = rng.choice([0.0, 1.5, 3.0], n, p=[0.6, 0.3, 0.1])
    jet = np.where(rng.random(n) < 0.3, 0.0, 25 + rng.exponential(40, n))
    g = rng.normal(0, 1, n)
    # an angle correlated with phi across the cut (the MET's phi against the lepton's): relative to phi
    met_phi = np.mod(phi + PI + rng.normal(0, 0.7, n) + PI, 2 * PI) - PI
    cols = [pt, eta, phi, btag, jet, g, met_phi]
    return np.stack(cols, 1), ["pt", "eta", "phi", "btag", "jet_pt", "g", "met_phi"]


def _perturbed(model: Model, scale: float = 0.05, seed: int = 1) -> Model:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


# -- feature analysis -------------------------------------------------------------------------------------
def test_analysis_classifies_constructed_columns():
    rng = np.random.default_rng(3)
    n = 5000
    wide = rng.normal(0, 1.1, 3 * n)
    cols = {
        "gauss": rng.normal(2, 3, n),
        "unif": rng.uniform(0, 1, n),
        "pt": 20 + rng.exponential(30, n),
        "mass": rng.lognormal(1.0, 0.8, n),
        "lep_phi": rng.uniform(-PI, PI, n),
        "angle": rng.uniform(-PI, PI, n),  # not named phi: bounded, not periodic
        "narrow_phi": rng.uniform(-1.7, 1.7, n),  # named phi but does not fill the period
        "btag": rng.choice([0.0, 0.5, 0.85], n),
        "njets": rng.poisson(3, n).astype(float),
        "jet_pt": np.where(rng.random(n) < 0.25, 0.0, 30 + rng.exponential(40, n)),
        "upper": 10 - rng.exponential(1, n),
        # detector acceptance: a normal of width 1.1 cut to |eta| < 2.5 (weak edges: 7% of the peak)
        "eta": wide[np.abs(wide) < 2.5][:n],
    }
    names = list(cols)
    a = analyze_features(np.stack(list(cols.values()), 1), names)
    kind = {d.name: d.kind for d in a.decisions}
    assert kind == {
        "gauss": "continuous",
        "unif": "bounded",
        "pt": "lower edge",
        "mass": "positive heavy-tailed",
        "lep_phi": "periodic",
        "angle": "bounded",
        "narrow_phi": "bounded",
        "btag": "discrete",
        "njets": "discrete",
        "jet_pt": "mixed",
        "upper": "upper edge",
        "eta": "bounded",
    }
    d = {x.name: x for x in a.decisions}
    lo, hi = d["unif"].bounds
    assert lo < cols["unif"].min() and hi > cols["unif"].max() and hi - lo < 1.01
    assert d["pt"].bounds[0] < cols["pt"].min() and d["pt"].bounds[1] is None
    assert d["mass"].log and d["mass"].bounds == (None, None)
    assert d["btag"].special == {"kind": "discrete", "values": [0.0, 0.5, 0.85]}
    assert d["jet_pt"].special["kind"] == "spike" and d["jet_pt"].special["value"] == 0.0
    assert d["jet_pt"].bounds[0] is not None and d["jet_pt"].bounds[0] < 30  # continuum: lower edge
    per = d["lep_phi"].special
    assert per["kind"] == "periodic" and per["period"] == [-PI, PI]
    # a phi in other units is bounded, and the table says how to declare it periodic
    assert "not [-pi, pi]: if it is an angle, declare kind = \"periodic\"" in d["narrow_phi"].reason
    assert "declare" not in d["angle"].reason
    table = a.table()
    for name in names:
        assert name in table
    assert "why" in table.splitlines()[0]


def test_analysis_declared_kinds_override_and_errors(tmp_path):
    x, names = _collider(2000)
    a = analyze_features(
        x,
        names,
        declared={
            "eta": {"kind": "bounded", "low": -2.5, "high": 2.5},
            "g": {"kind": "periodic", "period": [-10, 10]},
            "btag": {"kind": "discrete", "values": [0.0, 1.5, 3.0, 4.5]},
            "pt": {"kind": "continuous"},
        },
    )
    d = {x.name: x for x in a.decisions}
    assert d["eta"].bounds == (-2.5, 2.5) and d["eta"].declared
    assert d["g"].special["period"] == [-10.0, 10.0]
    assert d["btag"].special["values"] == [0.0, 1.5, 3.0, 4.5]
    assert d["pt"].kind == "continuous" and d["pt"].transform == "identity"
    with pytest.raises(ValueError, match="'eta'.*do not contain the training data"):
        analyze_features(x, names, declared={"eta": {"kind": "bounded", "low": -1, "high": 1}})
    with pytest.raises(ValueError, match="'btag'.*not among the"):
        analyze_features(x, names, declared={"btag": {"kind": "discrete", "values": [0.0, 1.5]}})
    with pytest.raises(ValueError, match="not features"):
        analyze_features(x, names, declared={"nope": {"kind": "continuous"}})
    with pytest.raises(ValueError, match="kind 'weird'"):
        analyze_features(x, names, declared={"g": {"kind": "weird"}})
    with pytest.raises(ValueError, match="NaN/inf"):
        bad = x.copy()
        bad[3, 1] = np.nan
        analyze_features(bad, names)
    # the TOML form
    cfg = tmp_path / "pre.toml"
    cfg.write_text(
        '[features.eta]\nkind = "bounded"\nlow = -2.5\nhigh = 2.5\n[features.btag]\nkind = "discrete"\n'
    )
    declared = load_preprocess_config(str(cfg))
    assert declared == {"eta": {"kind": "bounded", "low": -2.5, "high": 2.5}, "btag": {"kind": "discrete"}}
    cfg.write_text('[features.eta]\nkind = "bounded"\nlowest = 1\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lowest'\]"):
        load_preprocess_config(str(cfg))
    cfg.write_text("[features.eta\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_preprocess_config(str(cfg))


# -- the maps ------------------------------------------------------------------------------------------
def _pre_for(x: np.ndarray, names: list[str], quantile: bool = True) -> Preprocessing:
    a = analyze_features(x, names, quantile=quantile)
    p = Preprocessing(features=len(names), **a.preprocessing_kwargs()).double()
    p.fit(x)
    return p.eval()


def _np_pwl(a, b, v):
    a, b = np.asarray(a), np.asarray(b)
    slope = np.diff(b) / np.diff(a)
    i = np.clip(np.searchsorted(a, v, side="right") - 1, 0, len(a) - 2)
    return b[i] + slope[i] * (v - a[i]), np.log(slope[i])


@pytest.mark.parametrize("quantile", [False, True], ids=["maps", "maps+quantile"])
def test_maps_invert_and_match_numpy_reference(quantile):
    x, names = _collider(3000, seed=5)
    p = _pre_for(x, names, quantile)
    assert all((q is not None) == quantile for q in p.quantile)
    xt = torch.from_numpy(x)
    u, ld = p(xt)
    back = p.inverse(u).numpy()
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9)
    # independent float64 numpy reference of every column's map
    v = np.empty_like(x)
    ref_ld = np.zeros(len(x))
    k = p.kinds
    a0 = p.bounds[0][0]
    v[:, 0] = np.log(x[:, 0] - a0)
    ref_ld -= v[:, 0]
    lo, hi = p.bounds[1]
    v[:, 1] = np.log(x[:, 1] - lo) - np.log(hi - x[:, 1])
    ref_ld += np.log(hi - lo) - np.log(x[:, 1] - lo) - np.log(hi - x[:, 1])
    a, b = k[2]["period"]
    y = a + np.mod(x[:, 2] - k[2]["shift"] - a, b - a)
    lo, hi = p.bounds[2]
    v[:, 2] = np.log(y - lo) - np.log(hi - y)
    ref_ld += np.log(hi - lo) - np.log(y - lo) - np.log(hi - y)
    v[:, 3] = np.searchsorted(k[3]["values"], x[:, 3]) + 0.5
    s = x[:, 4] == 0.0
    c0, c1 = k[4]["cell"]
    lo4 = p.bounds[4][0]
    v[:, 4] = np.where(s, 0.5 * (c0 + c1), np.log(np.where(s, lo4 + 1, x[:, 4]) - lo4))
    ref_ld += np.where(s, np.log(c1 - c0), -v[:, 4])
    v[:, 5] = x[:, 5]
    # the relative angle: met_phi - phi, wrapped, then the logit of its period (unit shear Jacobian)
    assert k[6]["relative_to"] == 2
    a, b = k[6]["period"]
    y = a + np.mod(x[:, 6] - x[:, 2] - k[6]["shift"] - a, b - a)
    lo, hi = p.bounds[6]
    v[:, 6] = np.log(y - lo) - np.log(hi - y)
    ref_ld += np.log(hi - lo) - np.log(y - lo) - np.log(hi - y)
    if quantile:
        for j, q in enumerate(p.quantile):
            v[:, j], lq = _np_pwl(q["v"], q["u"], v[:, j])
            ref_ld += lq
        # the maps make the continuous marginals close to a standard normal; a dequantised discrete feature
        # (noise in its cells, as in training) is a histogram of one at the cell resolution
        cont = [0, 1, 2, 5, 6]
        np.testing.assert_allclose(v[:, cont].mean(0), 0.0, atol=0.03)
        np.testing.assert_allclose(v[:, cont].std(0), 1.0, atol=0.03)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            w, _ = p._to_v(xt, noise=True)
        assert abs(float(w[:, 3].mean())) < 0.15 and abs(float(w[:, 3].std()) - 1) < 0.25
    mean, std = p.mean.numpy(), p.std.numpy()
    np.testing.assert_allclose(u.numpy(), (v - mean) / std, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ld.numpy(), ref_ld - np.log(std).sum(), rtol=1e-10, atol=1e-9)


def test_log_jacobian_matches_autograd_for_continuous_kinds():
    x, names = _collider(2000, seed=6)
    p = _pre_for(x, names)
    # continuous columns: pt (lower), eta (bounded), phi (periodic), g, met_phi (relative to phi: the
    # Jacobian has an off-diagonal -1 there); discrete/spike rows have no Jacobian
    rows = x[x[:, 4] != 0.0][:40]
    for r in rows:
        xr = torch.tensor(r[None, :], requires_grad=True)
        u, ld = p(xr)
        jac = torch.autograd.functional.jacobian(lambda t: p(t)[0][0], xr)[:, 0, :]
        cont = [0, 1, 2, 4, 5, 6]
        sub = jac[cont][:, cont]
        ref = torch.logdet(sub).item() if torch.det(sub) > 0 else torch.slogdet(sub)[1].item()
        # discrete feature 3 (no Jacobian in x) contributes its cell's quantile-map slope and -log std
        k3 = p.kinds[3]["values"].index(r[3])
        q = p.quantile[3]
        _, lq = _np_pwl(q["v"], q["u"], np.array([k3 + 0.5]))
        assert abs(ld.item() - (ref + lq[0] - math.log(p.std[3].item()))) < 1e-9


def test_edge_values():
    x, names = _collider(3000, seed=7)
    p = _pre_for(x, names)
    # the period's ends are the same angle
    row = torch.from_numpy(x[:2].copy())
    row[0, 2], row[1, 2] = -PI, PI
    u, ld = p(row)
    assert torch.allclose(u[0, 2], u[1, 2], atol=1e-9)
    assert torch.isfinite(u).all() and torch.isfinite(ld).all()
    # a relative angle sees only the difference: turning both angles by a full period or by the same
    # amount changes nothing but the reference's own value
    turned = torch.from_numpy(x[:50].copy())
    turned[:, 6] += 2 * PI
    turned[:, 2] -= 2 * PI
    np.testing.assert_allclose(p(turned)[0].numpy(), p(torch.from_numpy(x[:50]))[0].numpy(), atol=1e-9)
    # an exact bound has zero density: refused naming the feature
    bad = torch.from_numpy(x[:3].copy())
    bad[1, 1] = p.bounds[1][0]
    with pytest.raises(ValueError, match="feature 1 has 1 value.*outside its bounds"):
        p(bad)
    # an unseen discrete value: zero probability, refused naming the feature
    bad = torch.from_numpy(x[:3].copy())
    bad[:2, 3] = 0.7
    with pytest.raises(ValueError, match=r"feature 3 is discrete with values \[0.0, 1.5, 3.0\] but 2 value"):
        p(bad)
    assert p.support(bad).tolist() == [False, False, True]
    # within the match tolerance is the same value
    near = torch.from_numpy(x[:1].copy())
    near[0, 3] = 1.5 * (1 + 0.5 * MATCH_TOL)
    exact = torch.from_numpy(x[:1].copy())
    exact[0, 3] = 1.5
    assert torch.equal(p(near)[0][0, 3], p(exact)[0][0, 3])
    # the spike (exact zero) and a continuum value below the training minimum
    z = torch.from_numpy(x[:2].copy())
    z[0, 4] = 0.0
    z[1, 4] = p.bounds[4][0] + 1e-3
    u, _ = p(z)
    assert torch.isfinite(u).all()
    # sampling: anything the flow produces maps into the support
    g = torch.Generator().manual_seed(0)
    uu = 4 * torch.randn(20000, 7, generator=g, dtype=torch.float64)
    uu[:5] = torch.tensor([30.0, -30.0, 1e6, -1e6, 0.0], dtype=torch.float64)[:, None]
    uu[2:4, [0, 4]] = 0.0  # exp of 1e6 overflows in the log maps: Model.sample redraws such rows
    xs = p.inverse(uu)
    assert torch.isfinite(xs).all()
    assert set(xs[:, 3].tolist()) <= {0.0, 1.5, 3.0}
    assert (xs[:, 2] >= -PI).all() and (xs[:, 2] < PI).all()
    assert (xs[:, 6] >= -PI).all() and (xs[:, 6] < PI).all()  # the relative angle, wrapped back
    lo, hi = p.bounds[1]
    assert (xs[:, 1] >= lo).all() and (xs[:, 1] <= hi).all()
    assert (xs[:, 0] >= p.bounds[0][0]).all()
    assert ((xs[:, 4] == 0) | (xs[:, 4] >= p.bounds[4][0])).all()


def test_training_noise_only_in_training_mode():
    x, names = _collider(200, seed=8)
    p = _pre_for(x, names)
    xt = torch.from_numpy(x)
    p.train()
    u1, _ = p(xt)
    u2, _ = p(xt)
    p.eval()
    u3, _ = p(xt)
    assert not torch.equal(u1[:, 3], u2[:, 3])  # dequantisation noise
    assert torch.equal(u1[:, 0], u3[:, 0])  # continuous columns unchanged
    # the noise stays inside the value's cell: rounding back restores the data
    np.testing.assert_array_equal(p.inverse(u1).numpy()[:, 3], x[:, 3])
    np.testing.assert_array_equal(p.inverse(u1).numpy()[:, 4] == 0, x[:, 4] == 0)


# -- models, the file, the engine ---------------------------------------------------------------------------
FAMILIES = ["maf", "realnvp", "crqs", "arqs"]


def _model(family: str, dtype: torch.dtype, context: int = 0) -> tuple[Model, np.ndarray, list[str]]:
    x, names = _collider(3000, seed=11)
    torch.manual_seed(123)
    a = analyze_features(x, names)
    ctx = [f"c{i}" for i in range(context)]
    opts = dict(bijectors=2, hidden=[12, 12], seed=2)
    if family in ("crqs", "arqs"):
        opts.update(knots=6, range=4.0)
    m = Model.create(family, names, context_features=ctx, preprocess=a, **opts).to(dtype)
    c = np.random.default_rng(2).normal(size=(len(x), context)) if context else None
    m.preprocessing.fit(x, context=c)
    return _perturbed(m), x, names


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_every_kind_round_trips_and_the_engine_agrees(tmp_path, family, dtype):
    m, x, _ = _model(family, dtype)
    path = nfhep.save(m, tmp_path / "m.safetensors")
    assert nfhep.modelfile.read_metadata(path)["version"] == 2
    m2 = nfhep.load(path)
    npdt = np.float32 if dtype == torch.float32 else np.float64
    xs = x[:800].astype(npdt)
    with torch.no_grad():
        lp1 = m.log_prob(torch.from_numpy(xs)).double().numpy()
        lp2 = m2.log_prob(torch.from_numpy(xs)).double().numpy()
    np.testing.assert_array_equal(lp1, lp2)
    eng = nfhep.Engine(path)
    lpe = eng.log_prob(xs).astype(np.float64)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert np.max(np.abs(lpe - lp1) / np.maximum(1.0, np.abs(lp1))) <= tol
    # the engine's support and log p outside it (unseen discrete value, below a bound)
    bad = xs[:4].copy()
    bad[0, 3] = 0.7
    bad[1, 1] = -3.0
    assert eng.in_support(bad).tolist() == [False, False, True, True]
    lpb = eng.log_prob(bad)
    assert lpb[0] == -np.inf and lpb[1] == -np.inf and np.isfinite(lpb[2:]).all()
    # engine samples: the torch model's inverse of the same latent draws, only allowed values
    n = 400
    s, lps = eng.sample(n, seed=5, return_log_prob=True)
    z = eng.latent(n, seed=5)
    with torch.no_grad():
        u, _ = m.flow.inverse(torch.as_tensor(z).to(dtype), None)
        xt = m.preprocessing.inverse(u).double().numpy()
    close = np.abs(s - xt) <= (2e-4 if dtype == torch.float32 else 1e-9) * np.maximum(1.0, np.abs(xt))
    # a draw exactly at a cell boundary may round to the neighbouring value in the other precision
    assert close.all(axis=1).mean() >= 0.995
    assert set(np.unique(s[:, 3]).tolist()) <= {0.0, 1.5, 3.0}
    assert ((s[:, 4] == 0) | (s[:, 4] > m.preprocessing.bounds[4][0])).all()
    assert (s[:, 2] >= -PI).all() and (s[:, 2] < PI).all()
    # log p returned with discrete samples is the mass-times-density at the events
    lp_at = eng.log_prob(s)
    np.testing.assert_array_equal(lps, lp_at)


def test_context_model_with_kinds_in_the_engine(tmp_path):
    m, x, _ = _model("arqs", torch.float64, context=2)
    path = nfhep.save(m, tmp_path / "m.safetensors")
    eng = nfhep.Engine(path)
    c = np.random.default_rng(4).normal(size=(300, 2))
    with torch.no_grad():
        ref = m.log_prob(torch.from_numpy(x[:300]), torch.from_numpy(c)).numpy()
    np.testing.assert_allclose(eng.log_prob(x[:300], context=c), ref, rtol=1e-10, atol=1e-10)
    s, lp = eng.sample(50, seed=1, context=c[0], return_log_prob=True)
    np.testing.assert_allclose(lp, eng.log_prob(s, context=np.repeat(c[:1], 50, 0)), rtol=0, atol=0)


def test_version_1_files_unchanged_and_engine_refuses_newer(tmp_path):
    m = Model.create("maf", ["a", "b"], bijectors=1, hidden=[4])
    m.preprocessing.fit(np.random.default_rng(0).normal(size=(100, 2)))
    path = nfhep.save(m, tmp_path / "v1.safetensors")
    assert nfhep.modelfile.read_metadata(path)["version"] == 1
    nfhep.Engine(path)  # the engine reads version 1 too


def test_torch_sample_and_log_prob_mass_convention():
    m, _, _ = _model("arqs", torch.float64)
    x, lp = m.sample_and_log_prob(300, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(lp.numpy(), m.log_prob(x).numpy(), rtol=1e-12)


def test_discrete_masses_are_learned():
    """A 1-D discrete feature: exp(log_prob) at each value approximates its probability (cell width 1)."""
    rng = np.random.default_rng(0)
    vals = np.array([0.0, 1.0, 2.0, 5.0])
    probs = np.array([0.5, 0.25, 0.15, 0.1])
    x = rng.choice(vals, size=(4000, 1), p=probs)
    a = analyze_features(x, ["n"])
    m = Model.create("arqs", ["n"], preprocess=a, bijectors=2, hidden=[16, 16], knots=8, range=4.0)
    nfhep.train.fit(m, x, epochs=40, patience=10, progress=False, seed=0)
    m.eval()
    with torch.no_grad():
        mass = torch.exp(m.log_prob(torch.from_numpy(vals[:, None]).float())).numpy()
    np.testing.assert_allclose(mass, probs, atol=0.04)
    assert abs(mass.sum() - 1.0) < 0.06
    s = m.sample(20000, generator=torch.Generator().manual_seed(1)).numpy()[:, 0]
    freq = np.array([(s == v).mean() for v in vals])
    assert freq.sum() == 1.0
    np.testing.assert_allclose(freq, probs, atol=0.03)


# -- guarded sampling ---------------------------------------------------------------------------------
def test_sample_redraws_non_finite_rows_and_counts_outside(monkeypatch):
    m, _, _ = _model("maf", torch.float64)
    orig = m.flow.sample_and_log_prob
    calls = {"n": 0}

    def broken(n, context=None, *, generator=None):
        u, lp = orig(n, context, generator=generator)
        calls["n"] += 1
        if calls["n"] == 1:
            u[:7, 1] = float("nan")
            u[7:9, 0] = float("inf")
        return u, lp

    monkeypatch.setattr(m.flow, "sample_and_log_prob", broken)
    x = m.sample(500, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and x.shape == (500, 7)
    assert m.last_sample_stats["redrawn_non_finite"] == 9 and calls["n"] == 2
    monkeypatch.setattr(m.flow, "sample_and_log_prob", orig)
    # outside the training range: counted; with reject_outside redrawn, none left (a narrowed range
    # stands in for a badly trained model)
    a5, b5 = m.preprocessing.data_range[5]
    m.preprocessing.data_range[5] = (a5 + 0.25 * (b5 - a5), b5 - 0.25 * (b5 - a5))
    x = m.sample(3000, generator=torch.Generator().manual_seed(1))
    n_out = m.last_sample_stats["outside_range"]
    assert n_out == int(m.preprocessing.outside_range(x).sum()) and n_out > 0
    x = m.sample(3000, generator=torch.Generator().manual_seed(1), reject_outside=True)
    assert int(m.preprocessing.outside_range(x).sum()) == 0
    assert m.last_sample_stats["redrawn_outside"] >= n_out


def test_sample_gives_up_with_a_clear_error(monkeypatch):
    m, _, _ = _model("maf", torch.float64)

    def nan_flow(n, context=None, *, generator=None):
        return torch.full((n, 7), float("nan"), dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

    monkeypatch.setattr(m.flow, "sample_and_log_prob", nan_flow)
    with pytest.raises(RuntimeError, match="still non-finite or outside the training range after 20 redraws"):
        m.sample(10)


# -- relative angles ------------------------------------------------------------------------------------
def _angles(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """lep_phi uniform; met_phi back to back with it (spread 0.9); jet_phi independent; a 4th angle
    following jet_phi closely."""
    rng = np.random.default_rng(seed)
    lep = rng.uniform(-PI, PI, n)
    wrap = lambda a: np.mod(a + PI, 2 * PI) - PI  # noqa: E731
    met = wrap(lep + PI + rng.normal(0, 0.9, n))
    jet = rng.uniform(-PI, PI, n)
    jet2_phi = wrap(jet + rng.normal(0, 0.3, n))
    return np.stack([lep, met, jet, jet2_phi], 1), ["lep_phi", "met_phi", "jet_phi", "jet2_phi"]


def test_analysis_finds_relative_angles_and_obeys_declarations(tmp_path):
    x, names = _angles(5000)
    a = analyze_features(x, names)
    k = {d.name: d.special for d in a.decisions}
    assert k["met_phi"]["relative_to"] == 0 and k["jet2_phi"]["relative_to"] == 2
    assert "relative_to" not in k["lep_phi"] and "relative_to" not in k["jet_phi"]
    d = {d.name: d for d in a.decisions}
    assert "relative to lep_phi: R = 0.6" in d["met_phi"].reason  # exp(-0.9^2 / 2) = 0.67
    assert "wrap (x - lep_phi)" in d["met_phi"].transform
    # the cut of the difference sits where the differences are sparse (near 0 for back-to-back angles)
    diff = np.mod(x[:, 1] - x[:, 0] - k["met_phi"]["shift"] + PI, 2 * PI) - PI
    assert np.mean(np.abs(np.abs(diff) - PI) < 0.3) < 0.02
    # independent angles stay absolute; switched off entirely
    rng = np.random.default_rng(1)
    indep = analyze_features(rng.uniform(-PI, PI, (5000, 2)), ["a_phi", "b_phi"])
    assert all("relative_to" not in d.special for d in indep.decisions)
    off = analyze_features(x, names, relative_angles=False)
    assert all("relative_to" not in d.special for d in off.decisions)
    # declared: false forbids, a name forces (even for independent angles)
    a2 = analyze_features(
        x,
        names,
        declared={
            "met_phi": {"kind": "periodic", "relative_to": False},
            "jet_phi": {"relative_to": "lep_phi"},
        },
    )
    k2 = {d.name: d.special for d in a2.decisions}
    assert "relative_to" not in k2["met_phi"] and k2["jet_phi"]["relative_to"] == 0
    assert "relative_to" not in k2["jet2_phi"]  # its partner jet_phi is relative now: chains are not allowed
    with pytest.raises(ValueError, match="relative_to = 'nope' is not a feature name"):
        analyze_features(x, names, declared={"met_phi": {"relative_to": "nope"}})
    with pytest.raises(ValueError, match="only for a periodic feature"):
        analyze_features(x, names, declared={"met_phi": {"kind": "continuous", "relative_to": "lep_phi"}})
    with pytest.raises(ValueError, match="needs another periodic feature"):
        analyze_features(
            x, names, declared={"met_phi": {"relative_to": "lep_phi"}, "lep_phi": {"kind": "continuous"}}
        )
    with pytest.raises(ValueError, match="relative to one feature and the reference of another"):
        analyze_features(
            x, names, declared={"met_phi": {"relative_to": "lep_phi"}, "lep_phi": {"relative_to": "jet_phi"}}
        )
    cfg = tmp_path / "pre.toml"
    cfg.write_text('[features.met_phi]\nkind = "periodic"\nrelative_to = "lep_phi"\n')
    assert load_preprocess_config(str(cfg)) == {"met_phi": {"kind": "periodic", "relative_to": "lep_phi"}}
    cfg.write_text('[features.met]\nkind = "positive"\nrelative_to = "lep_phi"\n')
    with pytest.raises(ValueError, match="relative_to must be a feature name or false, for a periodic"):
        load_preprocess_config(str(cfg))


def test_relative_angle_kinds_are_validated():
    per = {"kind": "periodic", "period": [-PI, PI], "shift": 0.0}
    b = [(-PI - 1e-6, PI + 1e-6)] * 3
    ok = Preprocessing(features=3, bounds=b, kinds=[per, {**per, "relative_to": 0}, None])
    assert ok.kinds[1]["relative_to"] == 0
    bad = {
        "self": [per, {**per, "relative_to": 1}, None],
        "not periodic": [per, {**per, "relative_to": 2}, None],
        "chain": [{**per, "relative_to": 1}, {**per, "relative_to": 2}, per],
        "other period": [{**per, "period": [-1.0, 1.0]}, {**per, "relative_to": 0}, None],
        "out of range": [per, {**per, "relative_to": 7}, None],
    }
    for _why, kinds in bad.items():
        with pytest.raises(ValueError, match="relative_to"):
            Preprocessing(features=3, bounds=b, kinds=kinds)
    with pytest.raises(ValueError, match="relative_to must be a feature index"):
        Preprocessing(features=3, bounds=b, kinds=[per, {**per, "relative_to": "a"}, None])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['wrap'\]"):
        Preprocessing(features=3, bounds=b, kinds=[per, {**per, "wrap": True}, None])


def test_engine_refuses_a_bad_relative_angle(tmp_path):
    from test_modelfile import _rewrite

    m, x, _ = _model("maf", torch.float64)
    path = nfhep.save(m, tmp_path / "m.safetensors")
    doc = nfhep.modelfile.read_metadata(path)
    assert doc["preprocessing"]["kinds"][6]["relative_to"] == 2

    def edit(value):
        def f(d):
            d["preprocessing"]["kinds"][6]["relative_to"] = value
            return d

        return f

    for value, match in (
        (3, "relative_to = 3 must name another periodic"),
        (6, "relative_to = 6"),
        ("phi", "relative_to. must be an integer"),
    ):
        bad = _rewrite(path, tmp_path / "bad.safetensors", meta=edit(value))
        with pytest.raises(nfhep.FormatError, match=match):
            nfhep.Engine(bad)
        with pytest.raises((ValueError, nfhep.FormatError), match="relative_to"):
            nfhep.load(bad)
