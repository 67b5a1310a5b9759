"""The CMoG generator (nfhep.cmog) and the validation study ``nfhep bench-quality`` (nfhep.quality).

- ``CMoG.log_prob`` against an independent mixture of ``scipy.stats.multivariate_normal`` log-densities;
- samples against the density: importance weights from a broad Gaussian ``q`` give
  :math:`E_q[p/q] = 1` (the density is normalised) and :math:`E_q[(p/q) f] = E_p[f]` estimated from the
  samples (the samples follow the density), plus per-component moments and label frequencies;
- ``nfhep bench-quality --fast`` end to end on a tiny configuration: its table holds finite numbers.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import nfhep
from nfhep.cli import main as nfhep_main
from nfhep.cmog import CMoG
from nfhep.quality import RunResult, StudyResult, StudySettings, TruthReference, target_check


def _scipy_log_prob(t: CMoG, x: np.ndarray) -> np.ndarray:
    p = t.params()
    comps = [
        np.log(p["weights"][k]) + multivariate_normal(p["means"][k], p["covariances"][k]).logpdf(x)
        for k in range(t.n_components)
    ]
    return logsumexp(np.stack(comps, axis=1), axis=1)


@pytest.mark.parametrize("dim", [2, 5, 16, 40])
@pytest.mark.parametrize("covariance", ["correlated", "diagonal"])
@pytest.mark.parametrize("weights", ["random", "equal"])
def test_log_prob_matches_scipy_mixture(dim, covariance, weights):
    t = CMoG(dim, 3, seed=7, covariance=covariance, weights=weights)
    rng = np.random.default_rng(1)
    x = np.concatenate([t.sample(500, rng), rng.uniform(-2.0, 12.0, (200, dim))])  # typical and far points
    got = t.log_prob(x)
    ref = _scipy_log_prob(t, x)
    assert got.dtype == np.float64 and got.shape == (700,)
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-9)


def test_parameters_as_documented():
    t = CMoG(6, 3, seed=0)
    p = t.params()
    np.testing.assert_allclose(p["weights"], [0.6721, 0.2847, 0.0432], atol=1e-4)  # the docstring's values
    np.testing.assert_allclose(CMoG(50, 3, seed=0).weights, t.weights)  # the same weights for every D
    assert np.all((p["means"] >= 0) & (p["means"] < 10))
    assert np.all((p["stds"] >= 0.1) & (p["stds"] < 1))
    for c in p["correlations"]:
        np.testing.assert_allclose(np.diag(c), 1.0)
        np.testing.assert_allclose(c, c.T)
        assert np.linalg.eigvalsh(c).min() > 0
        assert np.abs(c - np.eye(6)).max() > 0.05  # actually correlated
    np.testing.assert_allclose(
        p["covariances"], p["correlations"] * p["stds"][:, :, None] * p["stds"][:, None, :]
    )
    diag = CMoG(6, 3, seed=0, covariance="diagonal").params()
    np.testing.assert_array_equal(diag["means"], p["means"])  # same draws, identity correlations
    np.testing.assert_array_equal(diag["correlations"], np.broadcast_to(np.eye(6), (3, 6, 6)))
    eq = CMoG(6, 3, seed=0, weights="equal")
    np.testing.assert_allclose(eq.weights, 1 / 3)
    np.testing.assert_array_equal(eq.means, t.means)


def test_deterministic():
    a, b = CMoG(8, seed=3), CMoG(8, seed=3)
    np.testing.assert_array_equal(a.covariances, b.covariances)
    np.testing.assert_array_equal(a.sample(100, np.random.default_rng(5)), b.sample(100, 5))
    assert not np.array_equal(CMoG(8, seed=4).means, a.means)


@pytest.mark.parametrize("dim", [2, 3])
def test_samples_match_log_density_importance_weights(dim):
    """E_q[p/q] = 1 and E_q[(p/q) f] = mean of f over samples of p, q a broad Gaussian over all modes."""
    t = CMoG(dim, 3, seed=0)
    rng = np.random.default_rng(11)
    n = 400_000
    q = multivariate_normal(t.mean(), 4.0 * t.covariance())
    y = q.rvs(size=n, random_state=rng)
    w = np.exp(t.log_prob(y) - q.logpdf(y))
    se = w.std() / math.sqrt(n)
    assert abs(w.mean() - 1.0) < max(5 * se, 1e-3), (w.mean(), se)
    assert se < 0.02  # the check has power

    x = t.sample(n, rng)
    lp_x = t.log_prob(x)
    funcs = {
        "x0": lambda a: a[:, 0],
        "x_last^2": lambda a: a[:, -1] ** 2,
        "x0*x1": lambda a: a[:, 0] * a[:, 1],
        "x0 > 5": lambda a: (a[:, 0] > 5.0).astype(float),
        "sum < 10": lambda a: (a.sum(axis=1) < 10.0).astype(float),
    }
    for name, f in funcs.items():
        fx, fy = f(x), w * f(y)
        diff = fx.mean() - fy.mean()
        err = math.hypot(fx.std() / math.sqrt(n), fy.std() / math.sqrt(n))
        assert abs(diff) < 5 * err, (name, fx.mean(), fy.mean(), err)
    # the log-density itself: E_p[log p] from the samples (minus the entropy) vs importance weights
    is_est = (w * t.log_prob(y)).mean()
    err = math.hypot(lp_x.std() / math.sqrt(n), (w * t.log_prob(y)).std() / math.sqrt(n))
    assert abs(lp_x.mean() - is_est) < 5 * err


def test_sample_component_moments_and_labels():
    t = CMoG(5, 3, seed=2, weights="random")
    n = 200_000
    x, lab = t.sample(n, np.random.default_rng(3), return_labels=True)
    assert x.shape == (n, 5) and x.dtype == np.float64
    freq = np.bincount(lab, minlength=3) / n
    se = np.sqrt(t.weights * (1 - t.weights) / n)
    assert np.all(np.abs(freq - t.weights) < 5 * se)
    for k in range(3):
        xk = x[lab == k]
        np.testing.assert_allclose(xk.mean(0), t.means[k], atol=5 * t.stds[k].max() / math.sqrt(len(xk)))
        cov = np.cov(xk.T)
        sd = np.sqrt(np.outer(np.diag(t.covariances[k]), np.diag(t.covariances[k])) * 2 / len(xk))
        assert np.all(np.abs(cov - t.covariances[k]) < 6 * sd + 1e-12)
    np.testing.assert_allclose(x.mean(0), t.mean(), atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), t.covariance(), atol=0.15)


def test_log_prob_nonfinite_and_errors():
    t = CMoG(3, seed=0)
    x = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0]])
    lp = t.log_prob(x)
    assert np.isfinite(lp[0]) and np.isnan(lp[1]) and lp[2] == -np.inf
    with pytest.raises(ValueError, match=r"argument 'x' must have shape \(N, 3\)"):
        t.log_prob(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'dim'"):
        CMoG(0)
    with pytest.raises(ValueError, match="'weights'"):
        CMoG(3, weights="uniform")
    with pytest.raises(ValueError, match="'std_range'"):
        CMoG(3, std_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="'n'"):
        t.sample(-1)


def test_lazy_submodule():
    assert nfhep.cmog.CMoG is CMoG


def test_bench_quality_fast_end_to_end(tmp_path, capsys):
    out = tmp_path / "q"
    code = nfhep_main(
        [
            "bench-quality",
            "--fast",
            "--dims",
            "4",
            "--families",
            "maf,arqs",
            "--train-events",
            "4000",
            "--test-events",
            "4000",
            "--max-minutes",
            "0.25",  # ample for 3 epochs of 7 batches, even on a loaded machine: training ends at max_epochs
            "--max-epochs",
            "3",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 runs (0 failed)" in printed
    for name in ("RESULTS.md", "results.json", "ks_vs_dim.png", "swd_ratio_vs_dim.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] is True and data["settings"]["fast"] is True
    assert [(r["dim"], r["family"]) for r in data["runs"]] == [(4, "maf"), (4, "arqs")]
    for r in data["runs"]:
        assert r["error"] is None
        assert 1 <= r["epochs_run"] <= r["epochs_cap"] == 3
        for key in ("train_seconds", "c2st_auc", "test_nll", "true_nll", "delta_nll"):
            assert r[key] is not None and math.isfinite(r[key]), key
        assert r["logp_events_per_s"] > 0 and r["sample_events_per_s"] > 0
        # built as `nfhep train` builds it: 3,200 training events -> 2x32; a MAF gets 8 bijectors
        assert r["architecture"] == ("8 x 2x32" if r["family"] == "maf" else "2 x 2x32")
        assert "Gaussianised" in r["preprocessing"] and any("hidden 2x32" in t for t in r["size_defaults"])
        m = r["metrics"]
        assert 0.0 <= m["ks_pvalue"]["median"] <= 1.0
        assert m["swd"]["mean"] > 0 and math.isfinite(m["frobenius"]["mean"])
        pm = r["paper_metrics"]  # the papers' protocol: 100 batches of 40 events here
        assert 0.0 <= pm["ks_pvalue"]["median"] <= 1.0 and pm["swd"]["mean"] > 0
    assert data["settings"]["paper_n_iter"] == 100 and data["settings"]["n_iter"] == 10
    truth = data["truth"]["4"]
    assert 0.0 < truth["metrics"]["ks_pvalue"]["median"] <= 1.0
    assert 0.0 < truth["paper_metrics"]["ks_pvalue"]["median"] <= 1.0
    assert math.isfinite(truth["true_nll"])
    md = (out / "RESULTS.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith(("| MAF |", "| A-RQS |", "| truth vs truth |"))]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 16
        assert not any(c in ("nan", "inf", "-inf") or c.startswith("nan ") for c in cells), row
    assert "--fast" in md and "CPU:" in md
    assert "### The CMoG paper's own runs beside ours" in md
    assert "| 4 | A-RQS | 0.527 / 0.0218 / 0.0218 / 1617 (2 x 3x256, 8 knots) |" in md
    # re-rendered from results.json alone: the same report
    again = tmp_path / "again"
    assert nfhep_main(["bench-quality", "--from-json", str(out / "results.json"), "--out", str(again)]) == 0
    assert (again / "RESULTS.md").read_text() == md
    assert json.loads((again / "results.json").read_text()) == data
    assert (again / "ks_vs_dim.png").stat().st_size > 0


def test_bench_quality_jobs_give_the_serial_results(tmp_path):
    from nfhep import quality

    kw = dict(dims=(3,), families=("maf", "arqs"), train_events=2000, test_events=2000, max_minutes=1.0)
    kw.update(max_epochs=2, c2st_events=500, c2st_folds=2, n_iter=2)
    serial = quality.run_study(quality.StudySettings(**kw), progress=False, log=lambda m: None)
    par = quality.run_study(quality.StudySettings(**kw, jobs=2), progress=False, log=lambda m: None)
    assert [(r.dim, r.family) for r in par.runs] == [(3, "maf"), (3, "arqs")]
    for a, b in zip(serial.runs, par.runs, strict=True):
        assert a.error is None and b.error is None
        assert a.architecture == b.architecture and a.preprocessing == b.preprocessing
        assert a.epochs_run == b.epochs_run == 2
        assert b.test_nll == pytest.approx(a.test_nll, rel=1e-3)
    assert par.truth[3].metrics == serial.truth[3].metrics
    assert par.truth[3].paper_metrics == serial.truth[3].paper_metrics
    with pytest.raises(ValueError, match="'jobs' must be a positive integer"):
        quality.StudySettings(**kw, jobs=0).validate()


def test_load_results_errors(tmp_path):
    from nfhep.quality import load_results

    with pytest.raises(FileNotFoundError, match="no such file"):
        load_results(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"settings": {}}')
    with pytest.raises(ValueError, match="has no 'truth'"):
        load_results(tmp_path / "other.json")


def test_bench_quality_bad_options(tmp_path, capsys):
    assert nfhep_main(["bench-quality", "--families", "maf,glow", "--out", str(tmp_path)]) == 1
    assert "unknown flow family 'glow'" in capsys.readouterr().err
    assert nfhep_main(["bench-quality", "--dims", "1", "--out", str(tmp_path)]) == 1
    assert "integer >= 2" in capsys.readouterr().err
    assert nfhep_main(["bench-quality", "--max-minutes", "0", "--out", str(tmp_path)]) == 1
    assert "--max-minutes" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
    # --from-json trains nothing: study options given with it are refused, not ignored
    code = nfhep_main(["bench-quality", "--from-json", "r.json", "--max-minutes", "5", "--dims", "4"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--from-json trains nothing" in err and "--max-minutes" in err and "--dims" in err


def test_papers_protocol_is_their_batched_ks():
    """The papers' code (100 batches of n/100 events): per dimension the mean over batches of scipy's
    two-sample KS p-value, then the median over dimensions; checked here with 4 batches."""
    from scipy.stats import ks_2samp

    from nfhep.quality import _metrics_summary

    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 3))
    b = rng.normal(size=(400, 3)) * np.array([1.0, 1.1, 1.3])
    s = StudySettings(dims=(3,), test_events=400, n_iter=2, paper_n_iter=4, c2st_events=200, c2st_folds=2)
    strict, paper, _, _ = _metrics_summary(a, b, s)

    def ref(n_iter):
        m = len(a) // n_iter
        per_dim = [
            np.mean(
                [ks_2samp(a[k * m : (k + 1) * m, d], b[k * m : (k + 1) * m, d]).pvalue for k in range(n_iter)]
            )
            for d in range(a.shape[1])
        ]
        return np.median(per_dim)

    assert paper["ks_pvalue"]["median"] == pytest.approx(ref(4), rel=1e-9)
    assert strict["ks_pvalue"]["median"] == pytest.approx(ref(2), rel=1e-9)
    assert paper["ks_pvalue"]["median"] != pytest.approx(strict["ks_pvalue"]["median"])


def _m(ks, swd):
    return {"ks_pvalue": {"median": ks}, "swd": {"mean": swd}}


def _run(dim, family, ks, swd, paper=None):
    return RunResult(dim=dim, family=family, metrics=_m(ks, swd), paper_metrics=_m(*paper) if paper else {})


def test_target_check_picks_best_family():
    truth = {
        d: TruthReference(d, _m(0.5, 0.01), 0.5, 0.0, 1.0, {}, paper_metrics=_m(0.5, 0.02)) for d in (32, 100)
    }
    runs = [
        _run(32, "maf", 0.2, 0.05, (0.5, 0.03)),  # best by the papers' protocol, worse by the strict one
        _run(32, "arqs", 0.3, 0.015, (0.47, 0.02)),
        _run(100, "arqs", 0.1, 0.03, (0.44, 0.05)),
    ]
    res = StudyResult(StudySettings(dims=(32, 100)), truth, runs, {}, "", "", 0.0)
    checks = target_check(res)
    assert [(c["dim"], c["family"], c["protocol"], c["ks_ok"], c["swd_ok"]) for c in checks] == [
        (32, "maf", "papers", True, True),
        (100, "arqs", "papers", False, False),  # KS 0.44; SWD 2.5x truth
    ]
    assert checks[0]["ks_p_strict"] == 0.2 and checks[0]["swd_ratio_strict"] == pytest.approx(5.0)
    assert checks[1]["swd_ratio"] == pytest.approx(2.5)
    # a results.json from before the papers' protocol: the strict figures decide
    old = [_run(32, "maf", 0.2, 0.05), _run(32, "arqs", 0.47, 0.015), _run(100, "arqs", 0.46, 0.03)]
    old_truth = {d: TruthReference(d, _m(0.5, 0.01), 0.5, 0.0, 1.0, {}) for d in (32, 100)}
    checks = target_check(StudyResult(StudySettings(dims=(32, 100)), old_truth, old, {}, "", "", 0.0))
    assert [(c["dim"], c["family"], c["protocol"], c["ks_ok"], c["swd_ok"]) for c in checks] == [
        (32, "arqs", "strict", True, True),
        (100, "arqs", "strict", True, False),  # SWD 3x truth
    ]


def test_fit_with_deadline_stops_with_best_weights():
    """The time budget ends training like nfhep's own stops: best weights kept, no NaN epoch left behind."""
    import torch

    from nfhep.model import Model
    from nfhep.quality import _fit_with_deadline, _train_options

    x = CMoG(2, seed=1).sample(3000, np.random.default_rng(0))
    flow_kw, fit_kw, _, _, _ = _train_options("maf", x)
    torch.manual_seed(0)
    model = Model.create("maf", ["a", "b"], **{**flow_kw, "hidden": [16]})
    from nfhep.train import fit

    fit(copy.deepcopy(model), x, **{**fit_kw, "epochs": 1, "progress": False})  # one-off costs paid first
    hist, hit = _fit_with_deadline(model, x, {**fit_kw, "epochs": 100_000, "progress": False}, 2.0)
    assert hit and hist.stop_reason == "time_budget"
    assert len(hist.loss) >= 1 and all(math.isfinite(v) for v in hist.loss + hist.val_loss)
    assert len(hist.loss) == len(hist.val_loss) == len(hist.lr) == len(hist.seconds)
    assert hist.best_epoch is not None and hist.val_loss[hist.best_epoch] == min(hist.val_loss)
    assert "log_prob" not in vars(model)  # the method is back
    assert torch.isfinite(model.log_prob(x)).all()
