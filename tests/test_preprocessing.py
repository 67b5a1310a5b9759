"""nfhep.preprocessing.Preprocessing and nfhep.model.Model (density in data units)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nfhep.flows import FLOWS
from nfhep.model import Model
from nfhep.preprocessing import Preprocessing


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small networks: torch's intra-op threads only add contention on the shared 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _x(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.normal(100.0, 20.0, n),  # plain
            rng.lognormal(1.0, 0.5, n),  # positive -> log
            rng.uniform(0.01, 0.99, n),  # in (0, 1) -> logit
            2.0 + rng.exponential(1.0, n),  # > 2 -> one-sided
        ],
        axis=1,
    )


def _pre(**kw):
    return Preprocessing(log=[1], bounds=[None, None, (0.0, 1.0), (2.0, None)], **kw)


def test_standardize_fit_matches_numpy():
    x = _x()
    p = Preprocessing().fit(x)
    np.testing.assert_allclose(p.mean.numpy(), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(p.std.numpy(), x.std(0), rtol=1e-6)
    u, ld = p(torch.tensor(x))
    np.testing.assert_allclose(u.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(ld.numpy(), -np.log(x.std(0)).sum(), rtol=1e-6)


def test_weighted_fit_and_streamed_fit():
    x = _x(1000)
    w = np.random.default_rng(2).uniform(0, 3, len(x))
    p = Preprocessing().fit(x, w)
    mean = np.average(x, axis=0, weights=w)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    np.testing.assert_allclose(p.mean.double().numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(p.std.double().numpy(), std, rtol=1e-6)
    q = Preprocessing().double()
    q.fit_begin(4)
    for s in range(0, 1000, 137):
        q.fit_update(x[s : s + 137], w[s : s + 137])
    q.fit_end()
    np.testing.assert_allclose(q.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(q.std.numpy(), std, rtol=1e-12)


def test_large_offset_is_stable():
    """Chunked merging of moments: a 1e8 offset with unit spread keeps the std exact (no cancellation)."""
    rng = np.random.default_rng(0)
    x = 1e8 + rng.normal(0, 1, (4000, 1))
    q = Preprocessing().double()
    q.fit_begin(1)
    for s in range(0, 4000, 500):
        q.fit_update(x[s : s + 500])
    q.fit_end()
    assert float(q.std[0]) == pytest.approx(float(np.std(x - 1e8)), rel=1e-9)


def test_round_trip_and_jacobian_float64():
    x = torch.tensor(_x(50))
    p = _pre().double().fit(x)
    u, ld = p(x)
    torch.testing.assert_close(p.inverse(u), x, rtol=1e-12, atol=1e-12)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: p(v[None])[0][0], x[i])
        assert torch.count_nonzero(jac - torch.diag(torch.diagonal(jac))) == 0
        assert float(ld[i]) == pytest.approx(float(torch.log(torch.diagonal(jac).abs()).sum()), abs=1e-10)
    xi, ldi = p.inverse_and_log_det(u)
    torch.testing.assert_close(xi, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ldi, ld, rtol=1e-10, atol=1e-10)


def test_domain_errors_name_the_feature():
    x = _x(100)
    bad = x.copy()
    bad[3, 1] = 0.0
    with pytest.raises(ValueError, match="feature 1 is log-transformed but 1 value"):
        _pre().fit(bad)
    bad = x.copy()
    bad[:2, 2] = 1.5
    with pytest.raises(ValueError, match=r"feature 2 has 2 value\(s\) outside its bounds \(0.0, 1.0\)"):
        _pre().fit(bad)
    p = _pre().double().fit(x)
    bad = x.copy()
    bad[0, 3] = 1.0
    with pytest.raises(ValueError, match="feature 3 has 1 value"):
        p(torch.tensor(bad))
    with pytest.raises(ValueError, match="both 'log' and bounded"):
        Preprocessing(log=[0], bounds=[(0, 1)], features=1)
    with pytest.raises(ValueError, match="low < high"):
        Preprocessing(bounds=[(1, 0)])
    with pytest.raises(ValueError, match="expected 4"):
        p(torch.zeros(3, 2, dtype=torch.float64))


def test_sampling_is_clipped_to_bounds():
    p = _pre().double().fit(_x(100))
    u = torch.tensor([[0.0, 0.0, 1e4, -1e4], [0.0, 0.0, -1e4, 1e4]], dtype=torch.float64)
    x = p.inverse(u)
    assert 0.0 <= float(x[0, 2]) <= 1.0 and 0.0 <= float(x[1, 2]) <= 1.0
    assert float(x[0, 3]) >= 2.0


def test_to_dict_from_dict_round_trip():
    p = _pre(context=2).double().fit(_x(200), context=np.random.default_rng(0).normal(5, 2, (200, 2)))
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    q = Preprocessing.from_dict(d, dtype=torch.float64)
    for name in ("mean", "std", "context_mean", "context_std"):
        torch.testing.assert_close(getattr(q, name), getattr(p, name))
    x = torch.tensor(_x(20, seed=5))
    torch.testing.assert_close(q(x)[0], p(x)[0])
    assert q.to_dict() == d
    # state_dict round trip into an unfitted preprocessing of the same shape
    r = Preprocessing(log=[1], bounds=[None, None, (0.0, 1.0), (2.0, None)], features=4, context=2).double()
    r.load_state_dict(p.state_dict())
    torch.testing.assert_close(r(x)[0], p(x)[0])


# -- Model ----------------------------------------------------------------------------------------------
def _perturbed(model: Model, scale=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize("family", sorted(FLOWS))
def test_model_density_integrates_to_one_on_bounded_feature(family):
    """1-D model on (0, 2) with the logit map: ∫ p(x) dx = 1 (independent check of the Jacobian)."""
    torch.manual_seed(0)
    m = Model.create(family, ["m"], bounds={"m": (0.0, 2.0)}, hidden=[8]).double()
    m.preprocessing.fit(np.random.default_rng(0).uniform(0.2, 1.9, (300, 1)))
    _perturbed(m, 0.5)
    grid = torch.linspace(1e-7, 2 - 1e-7, 400001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        p = torch.exp(m.log_prob(grid))
    integral = float(torch.trapezoid(p, grid[:, 0]))
    assert integral == pytest.approx(1.0, abs=2e-3)


def test_model_log_feature_density_integrates_to_one():
    torch.manual_seed(1)
    m = Model.create("arqs", ["e"], log_features=["e"], hidden=[8], knots=6).double()
    m.preprocessing.fit(np.random.default_rng(0).lognormal(0, 0.5, (300, 1)))
    _perturbed(m, 0.5)
    t = torch.linspace(-12, 8, 400001, dtype=torch.float64)  # x = e^t
    with torch.no_grad():
        p = torch.exp(m.log_prob(torch.exp(t)[:, None]))
    assert float(torch.trapezoid(p * torch.exp(t), t)) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("family", sorted(FLOWS))
def test_model_config_round_trip_and_consistency(family):
    torch.manual_seed(0)
    m = Model.create(
        family,
        ["a", "b", "c", "d"],
        context_features=["mass"],
        log_features=["b"],
        bounds={"c": (0.0, 1.0), "d": (2.0, None)},
        hidden="2x16",
        bijectors=2,
    ).double()
    rng = np.random.default_rng(0)
    m.preprocessing.fit(_x(300), context=rng.normal(125, 5, (300, 1)))
    _perturbed(m, 0.1)
    cfg = m.config()
    assert set(cfg) == {"flow", "preprocessing", "features", "context"}
    assert cfg["features"] == ["a", "b", "c", "d"] and cfg["context"] == ["mass"]
    assert json.loads(json.dumps(cfg)) == cfg
    m2 = Model.from_config(json.loads(json.dumps(cfg))).double()
    m2.load_state_dict(m.state_dict(), strict=True)
    m2.eval()
    x = torch.tensor(_x(40, seed=3))
    ctx = torch.full((40, 1), 125.0, dtype=torch.float64)
    torch.testing.assert_close(m2.log_prob(x, ctx), m.log_prob(x, ctx), rtol=0, atol=0)
    # log_prob = flow log_prob in preprocessed units + preprocessing Jacobian
    u, ld = m.preprocessing(x)
    ref = m.flow.log_prob(u, m.preprocessing.forward_context(ctx)) + ld
    torch.testing.assert_close(m.log_prob(x, ctx), ref)
    # numpy input is accepted; sample_and_log_prob consistent with log_prob; samples inside the bounds
    torch.testing.assert_close(m.log_prob(x.numpy(), ctx.numpy()), ref)
    s, lp = m.sample_and_log_prob(300, torch.tensor([125.0], dtype=torch.float64))
    assert s.shape == (300, 4)
    assert (
        bool(((s[:, 2] >= 0) & (s[:, 2] <= 1)).all())
        and bool((s[:, 3] >= 2).all())
        and bool((s[:, 1] > 0).all())
    )
    inside = (s[:, 2] > 0) & (s[:, 2] < 1) & (s[:, 3] > 2)
    torch.testing.assert_close(
        m.log_prob(s[inside], ctx[:1].expand(int(inside.sum()), 1)), lp[inside], rtol=1e-8, atol=1e-8
    )


def test_model_errors():
    with pytest.raises(ValueError, match="'family'"):
        Model.create("glow", ["a"])
    with pytest.raises(ValueError, match="'z' is not one of the features"):
        Model.create("maf", ["a", "b"], log_features=["z"])
    flow = FLOWS["maf"](2)
    pre = Preprocessing(features=2)
    with pytest.raises(ValueError, match="3 feature names"):
        Model(flow, pre, ["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        Model(flow, pre, ["a", "a"])
    with pytest.raises(TypeError, match="'flow'"):
        Model(object(), pre, ["a", "b"])  # type: ignore[arg-type]
    m = Model.create("maf", ["a", "b"], context_features=["c"])
    with pytest.raises(ValueError, match="'context' is required"):
        m.log_prob(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        m.log_prob(torch.zeros(3, 3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="no 'flow'"):
        Model.from_config({"preprocessing": {}, "features": []})


def test_model_dtype_conversion_moves_preprocessing():
    m = Model.create("crqs", ["a", "b"]).to(torch.float64)
    assert m.preprocessing.mean.dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in m.state_dict().values() if t.is_floating_point())
    lp = m.log_prob(torch.zeros(2, 2))  # float32 input converted explicitly to the model's dtype
    assert lp.dtype == torch.float64
    assert math.isfinite(float(lp[0].detach()))
