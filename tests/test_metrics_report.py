"""nfhep.metrics.compare: the report object (markdown, JSON, plots) and the classifier two-sample test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_module
from nfhep import metrics as M


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 3))
    x[:, 1] += 0.8 * x[:, 0]
    y = rng.normal(size=(3000, 3))
    y[:, 1] += 0.8 * y[:, 0]
    y[:, 2] += 0.3  # a visible shift in one feature
    return x, y


@pytest.fixture(scope="module")
def report(samples):
    require_module("sklearn")
    x, y = samples
    return M.compare(x, y, features=["a", "b", "c"], n_iter=5, seed=1, c2st_max_events=400)


def test_report_numbers(report, samples):
    x, y = samples
    s = report.summary()
    b = report.batched
    assert s["swd"]["mean"] == pytest.approx(b.swd.mean())
    assert s["n_iter"] == 5 and s["batch_sizes"] == [800, 600]
    rows = {r["feature"]: r for r in report.per_feature()}
    assert rows["c"]["ks_pvalue_mean"] < 1e-3 < rows["a"]["ks_pvalue_mean"]
    assert rows["c"]["mean_diff_in_std"] == pytest.approx(0.3, abs=0.08)
    assert report.frobenius_lower == pytest.approx(report.frobenius_full / np.sqrt(2))
    assert 0.5 < report.c2st.auc <= 1.0 and report.c2st.auc_std >= 0


def test_markdown_and_json(report, tmp_path):
    md = report.to_markdown(tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == md
    for key in ("median KS p-value", "sliced Wasserstein", "median 1-D Wasserstein", "Frobenius", "HPDIe 1σ",
                "C2ST AUC", "| c |"):  # fmt: skip
        assert key in md
    text = report.to_json(tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d == json.loads(text)
    assert d["features"] == ["a", "b", "c"] and len(d["per_feature"]) == 3
    assert d["summary"]["ks_pvalue"]["median"] == pytest.approx(report.summary()["ks_pvalue"]["median"])
    assert not list(tmp_path.glob(".*tmp"))  # no leftover temporary files


def test_plots(report, tmp_path):
    files = report.plot(tmp_path / "plots", pairs=[("a", "b")])
    names = sorted(p.name for p in files)
    assert names == ["marginal_000_a.png", "marginal_001_b.png", "marginal_002_c.png", "pair_a_b.png"]
    for p in files:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    with pytest.raises(ValueError, match="pairs"):
        report.plot(tmp_path / "p2", pairs=[("a", "zz")])


def test_compare_weighted_and_no_c2st(samples):
    x, y = samples
    w = np.random.default_rng(0).uniform(0.5, 1.5, len(y))
    r = M.compare(x, y, weights_y=w, n_iter=2, run_c2st=False)
    assert r.c2st is None and r.settings["weighted"]
    assert "C2ST" not in r.to_markdown()
    with pytest.raises(ValueError, match="features"):
        M.compare(x, y, features=["a"], run_c2st=False)


def test_c2st_same_and_different():
    require_module("sklearn")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    same = M.c2st(x, rng.normal(size=(600, 2)), max_events=600, seed=0)
    diff = M.c2st(x, rng.normal(1.0, size=(600, 2)), max_events=600, seed=0)
    assert abs(same.auc - 0.5) < 4 / np.sqrt(12 * 120)  # ~4 sigma of a 120-event-per-class fold
    assert diff.auc > 0.7
    assert same.auc_per_fold.shape == (5,)
    with pytest.raises(ValueError, match="n_folds"):
        M.c2st(x, x, n_folds=1)
