"""Learning test (issue 15): on the synthetic collider-like ntuple (``nfhep.collider_toy``: thresholds,
acceptance cuts, periodic angles, multiplicities, tag working points, zero-padded jets), ``nfhep train``
with its defaults and 5,000 training events beats plain standardisation (A-RQS: by far on the marginals,
clearly on the sliced Wasserstein distance; MAF: by far on both), and its
samples keep the data's structure (allowed discrete
values, the zero-padding spike's fraction, periods, bounds, never NaN/inf). Slow (a few CPU minutes),
still run in CI.

The issue's target (median KS p >= 0.2, SWD <= 1.3x truth-vs-truth) is NOT reached on the SWD by these
seeded runs (measured, mean of training seeds 0, 10, 20, each an ensemble of 3 flows by the size
defaults: A-RQS KS 0.259, SWD 1.45x; MAF KS 0.219, SWD 1.69x; single flows, seeds 0, 1, 2, before the
ensemble default: 0.215 / 1.61x and 0.234 / 1.94x; benchmarks/quality/REAL.md has the benchmark on
other samples), so this test asserts what the defaults achieve, not the target. Three training seeds
because one seed's figures scatter by +-0.08 in KS.

Scored as ``benchmarks/quality/real_ntuples.py`` does: samples in 5 batches of the test size, each
against the test sample; the median over features of the KS p-value and the sliced Wasserstein distance
over the truth-vs-truth value (an independent true sample of the test size), averaged over the batches.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import uproot

from nfhep import metrics
from nfhep.cli import train as train_cli
from nfhep.collider_toy import collider_toy

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST, BATCHES = 5000, 5000, 5
SEEDS = (0, 10, 20)  # apart: an ensemble of 3 takes the seeds s, s + 1, s + 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("collider")
    train = collider_toy(N_TRAIN, seed=101)
    path = d / "train.root"
    with uproot.recreate(path) as f:
        f.mktree("events", {k: np.float64 for k in train})
        f["events"].extend(train)
    test = np.stack(list(collider_toy(N_TEST, seed=202).values()), 1)
    truth = np.stack(list(collider_toy(N_TEST, seed=303).values()), 1)
    return d, path, list(train), test, truth


def _score(s, test, truth):
    # in float32, the models' precision (a sampled 0.6f must match the ntuple's 0.6 for the KS test)
    s, test, truth = (np.asarray(a, np.float32).astype(np.float64) for a in (s, test, truth))
    m, sd = test.mean(0), test.std(0)
    sw0 = metrics.sliced_wasserstein((truth - m) / sd, (test - m) / sd, seed=0).mean
    ks, ratio = [], []
    for b in range(BATCHES):
        sb = s[b * N_TEST : (b + 1) * N_TEST]
        ks.append(float(np.median(metrics.ks_2samp(sb, test).pvalue)))
        ratio.append(metrics.sliced_wasserstein((sb - m) / sd, (test - m) / sd, seed=0).mean / sw0)
    return float(np.mean(ks)), float(np.mean(ratio))


def _train(data, flow, seed=0, **extra):
    d, path, names, test, truth = data
    given = {
        "data": [f"{path}:events"],
        "features": names,
        "flow": flow,
        "quiet": True,
        "seed": seed,
        "output": str(d / f"{flow}{'-plain' if extra else ''}-{seed}.safetensors"),
        **extra,
    }
    res = train_cli.train_from_options(train_cli.resolve_options(given), out=io.StringIO())
    model = res["model_obj"].eval()
    s = model.sample(BATCHES * N_TEST, generator=torch.Generator().manual_seed(7)).double().numpy()
    assert np.isfinite(s).all()
    return s, _score(s, test, truth), model


def _fmt(runs) -> str:
    return ", ".join(f"{float(k):.3f}/{float(w):.2f}x" for k, w in (r[1] for r in runs))


@pytest.mark.parametrize("flow", ["arqs", "maf"])
def test_defaults_beat_plain_standardisation_and_keep_the_structure(data, flow):
    _, _, names, test, _ = data
    runs = [_train(data, flow, seed) for seed in SEEDS]
    plain = [_train(data, flow, seed, auto_preprocess=False, size_defaults=False) for seed in SEEDS]
    ks, swd = np.mean([r[1] for r in runs], axis=0)
    ks_plain, swd_plain = np.mean([r[1] for r in plain], axis=0)
    print(
        f"{flow}: defaults KS {ks:.3f} SWD x{swd:.2f} (seeds {_fmt(runs)}); "
        f"plain KS {ks_plain:.3f} SWD x{swd_plain:.2f} (seeds {_fmt(plain)})"
    )
    # measured here (seeds 0, 10, 20; ensembles of 3; float32 scoring): A-RQS KS 0.259 vs 0.000, SWD 1.45x
    # vs 3.08x (per seed 0.284/1.46x, 0.261/1.47x, 0.230/1.43x); MAF (8 bijectors) KS 0.219 vs 0.000, SWD
    # 1.69x vs 40x (per seed 0.206/1.75x, 0.228/1.65x, 0.223/1.68x; plain MAF reaches 86x on one seed)
    if flow == "arqs":
        assert ks >= 0.1 and ks > 5 * ks_plain, (ks, ks_plain)
        assert swd < 0.8 * swd_plain, (swd, swd_plain)
    else:
        assert ks >= 0.05 and ks > 5 * ks_plain and swd < 0.5 * swd_plain, (ks, ks_plain, swd, swd_plain)
    s, _, model = runs[0]
    # the MET's phi is learnt relative to the lepton's (their difference is concentrated)
    kinds = dict(zip(names, model.preprocessing.kinds, strict=True))
    assert kinds["met_phi"]["relative_to"] == names.index("lep_phi")
    assert "relative_to" not in kinds["lep_phi"]
    col = {n: s[:, j] for j, n in enumerate(names)}
    ref = {n: test[:, j] for j, n in enumerate(names)}
    assert np.isin(col["jet1_btag"], np.float32([0.0, 0.6, 0.77, 0.85]).astype(np.float64)).all()
    assert np.isin(col["njets"], np.arange(1, 9)).all()
    for phi in ("lep_phi", "met_phi"):
        assert (col[phi] >= -np.pi).all() and (col[phi] < np.pi).all()
    # the back-to-back correlation survives: the sampled difference is as concentrated as the data's
    r_data = abs(np.mean(np.exp(1j * (ref["met_phi"] - ref["lep_phi"]))))
    r_flow = abs(np.mean(np.exp(1j * (col["met_phi"] - col["lep_phi"]))))
    assert abs(r_flow - r_data) < 0.03, (r_flow, r_data)
    assert (col["lep_pt"] > 24.0).all()  # the trigger threshold (25 GeV) minus the detected-edge margin
    zero = (col["jet2_pt"] == 0).mean()
    assert abs(zero - (ref["jet2_pt"] == 0).mean()) < 0.03, zero
    assert ((col["jet2_pt"] == 0) | (col["jet2_pt"] > 29.0)).all()  # the spike or the continuum above 30
