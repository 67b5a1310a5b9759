"""nfhep.likelihood and ``nfhep likelihood``: HPDI, HPD regions, profiles and marginals against analytic
answers (multivariate normal), the profile of a real flow against a brute-force grid minimisation, and the
CLI end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2

import nfhep
import nfhep.likelihood as L
from nfhep.cli import main
from test_engine import _make

MU = np.array([1.0, -0.5, 2.0])
_A = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.3, -0.4, 0.5]])
SIGMA = _A @ _A.T  # correlations 0.6, 0.3 / -0.14, unit first variance
PREC = np.linalg.inv(SIGMA)


def _gauss_logp(x: torch.Tensor) -> torch.Tensor:
    d = x - torch.as_tensor(MU, dtype=x.dtype)
    q = torch.einsum("ni,ij,nj->n", d, torch.as_tensor(PREC, dtype=x.dtype), d)
    return -0.5 * q - 0.5 * math.log((2 * math.pi) ** 3 * np.linalg.det(SIGMA))


_gauss_logp.features = ["a", "b", "c"]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def gauss_samples():
    rng = np.random.default_rng(12345)
    return rng.multivariate_normal(MU, SIGMA, size=200_000), rng.multivariate_normal(MU, SIGMA, size=200_000)


def test_sigma_probs():
    assert L.SIGMA_PROBS == pytest.approx((0.6826894921, 0.9544997361, 0.9973002039), abs=1e-10)
    assert [L.profile_threshold(p, 1) for p in L.SIGMA_PROBS] == pytest.approx([1, 4, 9], abs=1e-9)
    assert [L.profile_threshold(p, 2) for p in L.SIGMA_PROBS] == pytest.approx(
        [2.2957, 6.1801, 11.8292], abs=1e-4
    )


# tolerances in units of sigma per probability: ~4 standard errors of a HPDI endpoint at n = 2e5
_TOL = {L.SIGMA_PROBS[0]: 0.015, L.SIGMA_PROBS[1]: 0.025, L.SIGMA_PROBS[2]: 0.06}


@pytest.mark.parametrize("method", ["kde", "shortest"])
@pytest.mark.parametrize("col", [0, 2])
def test_hpdi_1d_gaussian(gauss_samples, method, col):
    x = gauss_samples[0][:, col]
    s = math.sqrt(SIGMA[col, col])
    h = L.hpdi_1d(x, method=method, name="p")
    for z, p in zip((1, 2, 3), L.SIGMA_PROBS, strict=True):
        (iv,) = h.intervals[p]
        if method == "kde":
            assert iv[0] == pytest.approx(MU[col] - z * s, abs=_TOL[p] * s)
            assert iv[1] == pytest.approx(MU[col] + z * s, abs=_TOL[p] * s)
        else:  # the shortest window's width is sharp, its position along the flat top is not
            assert iv[1] - iv[0] == pytest.approx(2 * z * s, abs=_TOL[p] * s)
            assert 0.5 * (iv[0] + iv[1]) == pytest.approx(MU[col], abs=0.1 * s)
        # the interval holds the stated fraction of the samples it was made from
        assert h.contains(x, p).mean() == pytest.approx(p, abs=2.0 / len(x) + 1e-12)
    assert h.mode == pytest.approx(MU[col], abs=0.1 * s)  # a KDE mode is noisy: the top is flat


def test_hpdi_1d_bimodal_disjoint():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(-3, 0.5, 100_000), rng.normal(3, 0.5, 100_000)])
    h = L.hpdi_1d(x)
    for z, p in zip((1, 2), L.SIGMA_PROBS[:2], strict=True):
        ivs = h.intervals[p]
        assert len(ivs) == 2
        ref = [(-3 - 0.5 * z, -3 + 0.5 * z), (3 - 0.5 * z, 3 + 0.5 * z)]
        np.testing.assert_allclose(np.array(ivs), np.array(ref), atol=0.02)
    # at 3 sigma the two halves (each +-1.5 around +-3) still do not touch
    assert len(h.intervals[L.SIGMA_PROBS[2]]) == 2


def test_hpdi_2d_gaussian_region(gauss_samples):
    train, fresh = gauss_samples
    cols = [0, 2]
    r = L.hpdi_2d(train[:, cols], names=("a", "c"))
    prec2 = np.linalg.inv(SIGMA[np.ix_(cols, cols)])
    for p, tol in zip(L.SIGMA_PROBS, (0.06, 0.06, 0.10), strict=True):
        # coverage on fresh samples: binomial 4 sigma plus a small allowance for the grid
        cover = r.contains(fresh[:, cols], p).mean()
        assert abs(cover - p) < 4 * math.sqrt(p * (1 - p) / len(fresh)) + 0.002, (p, cover)
        # the boundary is the ellipse (x-mu)^T S^-1 (x-mu) = chi2_2 quantile
        lines = r.contours(p)
        assert len(lines) == 1
        d = lines[0] - MU[cols]
        m2 = np.einsum("ni,ij,nj->n", d, prec2, d)
        q = chi2.ppf(p, 2)
        assert np.all(np.abs(m2 / q - 1) < tol), (p, m2.min() / q, m2.max() / q)
        assert np.median(np.abs(m2 / q - 1)) < tol / 3


def test_profile_gaussian_exact_parabola():
    ga = np.linspace(-2.0, 4.0, 31)
    pr = L.profile(_gauss_logp, ["a"], [ga], start=MU + 0.3, progress=False)
    np.testing.assert_allclose(pr.delta, (ga - MU[0]) ** 2 / SIGMA[0, 0], atol=1e-8)
    assert pr.minimum == pytest.approx(-2 * float(_gauss_logp(torch.as_tensor(MU[None]))[0]), abs=1e-9)
    np.testing.assert_allclose(pr.best, MU, atol=1e-5)
    # the profiled nuisances follow the conditional mean mu_nu + S_nu,a / S_aa (a - mu_a)
    cond = MU[1:] + np.outer(ga - MU[0], SIGMA[1:, 0] / SIGMA[0, 0])
    np.testing.assert_allclose(pr.points[:, 1:], cond, atol=1e-5)
    for z, p in zip((1, 2, 3), L.SIGMA_PROBS, strict=True):
        (iv,) = pr.intervals(p)
        # linear interpolation of a parabola sampled every 0.2: error below h^2/8 * curvature / slope
        np.testing.assert_allclose(iv, (MU[0] - z, MU[0] + z), atol=0.01 / z)


def test_profile_gaussian_2d_and_restarts():
    gx, gy = np.linspace(-1.5, 3.5, 11), np.linspace(0.5, 3.5, 9)
    for restarts in (0, 2):
        f = _gauss_logp
        pr = L.profile(f, ["a", "c"], [gx, gy], start=MU, restarts=restarts, progress=False)
        X, Y = np.meshgrid(gx, gy, indexing="ij")
        d = np.stack([X - MU[0], Y - MU[2]], -1)
        ref = np.einsum("...i,ij,...j->...", d, np.linalg.inv(SIGMA[np.ix_([0, 2], [0, 2])]), d)
        np.testing.assert_allclose(pr.delta, ref, atol=1e-8)
        assert pr.values.shape == (11, 9) and pr.points.shape == (11, 9, 3)


class _Mixture(torch.nn.Module):
    """Two well-separated 2-D Gaussian modes in (a, b); the deeper one at large |b|. Can sample."""

    features = ["a", "b"]

    def forward(self, x):
        return self.log_prob(x)

    def log_prob(self, x, context=None):
        x = torch.as_tensor(x, dtype=torch.float64)
        m1 = -0.5 * ((x[:, 0]) ** 2 + (x[:, 1] - 4.0) ** 2 / 0.25) + math.log(0.3 / 0.5)
        m2 = -0.5 * ((x[:, 0]) ** 2 + (x[:, 1] + 4.0) ** 2 / 0.25) + math.log(0.7 / 0.5)
        return torch.logsumexp(torch.stack([m1, m2]), 0) - math.log(2 * math.pi)

    def sample(self, n, context=None, *, generator=None):
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        which = torch.rand(n, generator=generator, dtype=torch.float64) < 0.3
        return torch.stack([z[:, 0], 0.5 * z[:, 1] + torch.where(which, 4.0, -4.0)], 1)

    def parameters(self, recurse=True):
        yield torch.zeros(1, dtype=torch.float64)


def test_profile_restarts_escape_local_minimum():
    m = _Mixture()
    ga = np.linspace(-2, 2, 9)
    # a start in the shallow mode: warm starts stay there, restarts find the deeper one
    local = L.profile(m, ["a"], [ga], start=[0.0, 4.0], progress=False)
    glob = L.profile(m, ["a"], [ga], start=[0.0, 4.0], restarts=3, seed=1, progress=False)
    np.testing.assert_allclose(glob.points[:, 1], -4.0, atol=1e-4)
    assert np.all(glob.values < local.values - 1.0) or np.all(local.points[:, 1] < 0)
    np.testing.assert_allclose(glob.delta, ga**2, atol=1e-6)


@pytest.fixture(scope="module")
def flow_model():
    return _make("arqs", d=3, names=["a", "b", "c"], dtype=torch.float64, key=5)


def _brute_min(model, a: float, lo: np.ndarray, hi: np.ndarray) -> float:
    """min over (b, c) of -2 log p(a, b, c) by a grid and two zooms (no gradients)."""
    best = None
    for _ in range(4):
        gb, gc = np.linspace(lo[0], hi[0], 81), np.linspace(lo[1], hi[1], 81)
        B, C = np.meshgrid(gb, gc, indexing="ij")
        x = np.stack([np.full(B.size, a), B.ravel(), C.ravel()], 1)
        with torch.no_grad():
            v = -2 * model.log_prob(torch.as_tensor(x)).numpy()
        k = int(np.argmin(v))
        best = (v[k], x[k, 1:])
        span = (hi - lo) / 80 * 4
        lo, hi = best[1] - span, best[1] + span
    return float(best[0])


def test_profile_flow_matches_brute_force(flow_model):
    xs = L.sample(flow_model, 4000, seed=3)
    lo, hi = np.quantile(xs, 0.001, axis=0), np.quantile(xs, 0.999, axis=0)
    ga = np.linspace(np.quantile(xs[:, 0], 0.05), np.quantile(xs[:, 0], 0.95), 5)
    # this random-weight flow is multimodal: warm starts alone find local minima at some points, the restarts
    # from the most probable sampled nuisances (and random ones) find the global one
    pr = L.profile(flow_model, ["a"], [ga], restarts=10, progress=False)
    for a, v in zip(ga, pr.values, strict=True):
        ref = _brute_min(flow_model, float(a), lo[1:].copy(), hi[1:].copy())
        assert v <= ref + 1e-6  # the optimiser is at least as good as the search
        assert v == pytest.approx(ref, abs=1e-4)
    # the optimum is where the flow says: log p at the reported points reproduces the values
    np.testing.assert_allclose(-2 * L.log_density(flow_model, pr.points), pr.values, rtol=1e-12)


def test_log_density_torch_engine_path_agree(flow_model, tmp_path):
    path = tmp_path / "m.safetensors"
    nfhep.save(flow_model, path)
    pts = np.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])
    lt = L.log_density(flow_model, pts)
    le = L.log_density(nfhep.Engine(path), pts)
    lp = L.log_density(str(path), pts)
    np.testing.assert_allclose(le, lt, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(le, lp)
    ld = L.log_density(flow_model, {"a": [0.1, 1.0], "b": [0.2, -1.0], "c": [0.3, 0.5]})
    np.testing.assert_allclose(ld, lt, rtol=1e-12)
    with pytest.raises(ValueError, match="available: a, b, c"):
        L.log_density(flow_model, {"a": 1.0, "b": 2.0, "zz": 3.0})
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        L.log_density(flow_model, np.zeros((2, 4)))


def test_bad_inputs(flow_model):
    with pytest.raises(ValueError, match="'nope' is not a parameter of the model; available: a, b, c"):
        L.profile(flow_model, ["nope"], [np.linspace(0, 1, 5)], progress=False)
    with pytest.raises(ValueError, match="one or two parameters"):
        L.profile(flow_model, ["a", "b", "c"], [[0, 1]] * 3, progress=False)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        L.hpdi_1d(np.arange(100.0), probs=(0.5, 1.0))
    with pytest.raises(ValueError, match="NaN or inf"):
        L.hpdi_1d(np.r_[np.arange(100.0), np.nan])
    with pytest.raises(ValueError, match="all equal"):
        L.hpdi_1d(np.ones(100))
    with pytest.raises(ValueError, match="singular"):
        L.hpdi_2d(np.stack([np.arange(100.0), 2 * np.arange(100.0)], 1))
    with pytest.raises(TypeError, match="no gradients"):
        L.profile(type("Engine", (), {"_flow": None})(), ["a"], [[0, 1]], progress=False)


def test_marginal_curve_gaussian(gauss_samples):
    x = gauss_samples[0][:, 0]
    mc = L.marginal_curve(x)
    # KDE widening: curvature 1/(1 + h^2), h = n^-1/5; the noise of -2 log f grows in the tails
    h2 = len(x) ** (-0.4)
    for width, tol in ((1.5, 0.06), (2.5, 0.12)):
        m = np.abs(mc.grid - MU[0]) < width
        np.testing.assert_allclose(mc.delta[m], (mc.grid[m] - MU[0]) ** 2 / (1 + h2), atol=tol)
    mc2 = L.marginal_curve(gauss_samples[0][:, [0, 2]], names=("a", "c"))
    assert mc2.delta.shape == (200, 200) and mc2.names == ("a", "c")


def test_plots_written(gauss_samples, tmp_path):
    x = gauss_samples[0][:20000]
    h = L.hpdi_1d(x[:, 0], name="a")
    r = L.hpdi_2d(x[:, [0, 2]], names=("a", "c"))
    pr = L.profile(_gauss_logp, ["a"], [np.linspace(-2, 4, 7)], start=MU, progress=False)
    pr2 = L.profile(_gauss_logp, ["a", "c"], [np.linspace(-2, 4, 5)] * 2, start=MU, progress=False)
    outs = [
        L.plot_hpdi_1d(h, tmp_path / "h1.png", samples=x[:, 0]),
        L.plot_hpdi_2d(r, tmp_path / "h2.png", samples=x[:, [0, 2]]),
        L.plot_profile(pr, tmp_path / "p1.png", marginal=L.marginal_curve(x[:, 0])),
        L.plot_profile(pr2, tmp_path / "p2.png", marginal=L.marginal_curve(x[:, [0, 2]])),
    ]
    for o in outs:
        assert o.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h1.png", "h2.png", "p1.png", "p2.png"]


def test_cli_end_to_end(flow_model, tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    nfhep.save(flow_model, path)
    out = tmp_path / "out"
    rc = main(
        [
            "likelihood",
            str(path),
            "--profile",
            "a",
            "--profile",
            "a",
            "b",
            "--points",
            "7",
            "--marginal",
            "--hpdi",
            "b",
            "--hpdi",
            "a",
            "c",
            "--at",
            "a=0.1,b=0.2,c=0.3",
            "-n",
            "20000",
            "-q",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "likelihood.md",
            "hpdi_b.png",
            "hpdi_b.csv",
            "hpdi_a_c.png",
            "hpdi_a_c_contours.csv",
            "profile_a.png",
            "profile_a.csv",
            "profile_a_b.png",
            "profile_a_b.csv",
        ]
    )
    md = (out / "likelihood.md").read_text()
    lp = float(L.log_density(flow_model, np.array([0.1, 0.2, 0.3]))[0])
    assert f"{lp:.6g}" in md and "## Profiles" in md and "## Highest-density" in md
    rows = np.loadtxt(out / "profile_a.csv", delimiter=",", skiprows=1)
    assert rows.shape == (7, 6) and np.isfinite(rows).all() and rows[:, 2].min() >= -1e-9
    # the CSV's profile equals the library's on the same scan
    pr = L.profile(flow_model, ["a"], [rows[:, 0]], progress=False)
    np.testing.assert_allclose(rows[:, 1], pr.values, atol=1e-5)
    capsys.readouterr()
    rc = main(["likelihood", str(path), "--profile", "mu", "-o", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 1 and "'mu' is not a parameter of the model; available: a, b, c" in err
    rc = main(["likelihood", str(path), "--hpdi", "a", "b", "c", "-o", str(tmp_path / "bad")])
    assert rc == 1 and "1 or 2 parameters" in capsys.readouterr().err
    rc = main(["likelihood", str(path), "--at", "a=1,b=2", "-o", str(tmp_path / "bad")])
    assert rc == 1 and "missing value(s) for c" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["likelihood", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("--profile", "--hpdi", "--marginal", "--at", "Wilks", "examples"):
        assert word in text


def test_submodule_import():
    import importlib

    mod = importlib.import_module("nfhep.likelihood")
    from nfhep import likelihood

    assert likelihood is mod and "profile" in mod.__all__
