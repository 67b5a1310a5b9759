"""``nfhep demo`` with a tiny setting, and its synthetic density."""

from __future__ import annotations

import argparse

import numpy as np
import uproot
from scipy.stats import multivariate_normal

from nfhep import modelfile
from nfhep.cli import main
from nfhep.cli.demo import make_cmog


def test_cmog_density_is_exact_and_deterministic():
    cm = make_cmog(3, seed=4)
    x = cm.sample(200, seed=1)
    np.testing.assert_array_equal(x, make_cmog(3, seed=4).sample(200, seed=1))
    comps = list(zip(cm.weights, cm.means, cm.chols, strict=True))
    ref = np.log(sum(w * multivariate_normal(mu, L @ L.T).pdf(x) for w, mu, L in comps))
    np.testing.assert_allclose(cm.log_prob(x), ref, rtol=1e-12, atol=1e-12)
    # the sampler follows the density: sample mean/cov agree with the mixture's moments
    big = cm.sample(200_000, seed=2)
    mean = (cm.weights[:, None] * cm.means).sum(0)
    np.testing.assert_allclose(big.mean(0), mean, atol=0.03)
    cov = sum(w * (L @ L.T + np.outer(mu - mean, mu - mean)) for w, mu, L in comps)
    np.testing.assert_allclose(np.cov(big.T), cov, atol=0.05)


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--events",
            "1500",
            "--epochs",
            "2",
            "--dims",
            "3",
            "--hidden",
            "1x16",
            "--bijectors",
            "1",
            "-q",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("data.root", "test.root", "model.safetensors", "model.history.json", "samples.root"):
        assert (out / name).is_file(), name
    assert "test NLL" in text and "true density" in text and "| x2 |" in text
    assert "two-sample metrics" in text
    if "metrics skipped" not in text:  # nfhep.metrics present: its table and plots are written
        assert (out / "metrics.md").is_file() and "median KS p-value" in text
        assert any((out / "plots").iterdir())
    with uproot.open(out / "samples.root") as f:
        assert f["events"].num_entries == 375
        assert set(f["events"].keys()) == {"x0", "x1", "x2"}
    assert modelfile.read_metadata(out / "model.safetensors")["flow"]["family"] == "arqs"


def test_run_demo_returns_figures(tmp_path):
    from nfhep.cli.demo import run_demo

    args = argparse.Namespace(
        out=str(tmp_path),
        events=1000,
        test_events=200,
        dims=2,
        epochs=1,
        patience=1,
        flow="maf",
        hidden="1x8",
        bijectors=1,
        knots=4,
        range=5.0,
        seed=1,
        quiet=True,
        no_c2st=True,
        no_plots=True,
    )
    import io

    res = run_demo(args, out=io.StringIO())
    assert np.isfinite(res["nll_model"]) and np.isfinite(res["nll_true"])
    # the truth's NLL on its own test sample: entropy of the mixture, sane scale for 2-D
    assert 1.0 < res["nll_true"] < 6.0
