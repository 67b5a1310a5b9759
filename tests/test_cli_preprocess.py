"""``nfhep train``'s automatic preprocessing and data-size defaults, end to end (issue 15):
--explain-preprocessing, --preprocess TOML, --periodic/--discrete, --no-auto-preprocess,
--no-size-defaults, what ``nfhep info`` shows, ``nfhep sample --reject-outside``, and the engine on the
trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import uproot

import nfhep
from nfhep.cli import main
from nfhep.collider_toy import COLLIDER_FEATURES, collider_toy

FEATS = ",".join(COLLIDER_FEATURES)
FAST = ["--epochs", "2", "--patience", "2", "-q"]


@pytest.fixture(scope="module")
def ntuple(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.root"
    cols = collider_toy(3000, seed=4)
    with uproot.recreate(path) as f:
        f.mktree("events", {k: np.float64 for k in cols})
        f["events"].extend(cols)
    return path


def test_collider_toy_is_deterministic_and_has_every_kind():
    a, b = collider_toy(500, seed=2), collider_toy(500, seed=2)
    assert list(a) == list(COLLIDER_FEATURES)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(collider_toy(500, seed=3)["lep_pt"], a["lep_pt"])
    assert a["lep_pt"].min() > 25 and np.abs(a["lep_eta"]).max() < 2.5
    assert a["lep_phi"].min() >= -np.pi and a["lep_phi"].max() < np.pi
    assert set(np.unique(a["jet1_btag"])) <= {0.0, 0.6, 0.77, 0.85}
    assert set(np.unique(a["njets"])) <= set(map(float, range(1, 9)))
    assert ((a["jet2_pt"] == 0) == (a["njets"] == 1)).all() and (a["jet2_pt"] == 0).mean() > 0.1
    with pytest.raises(ValueError, match="'n' must be a non-negative integer"):
        collider_toy(-1)


def test_explain_preprocessing_prints_the_table_and_writes_nothing(ntuple, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"{ntuple}:events", "--features", FEATS, "--explain-preprocessing"]) == 0
    text = capsys.readouterr().out
    assert "preprocessing chosen from 3000 rows" in text
    expect = {
        "lep_pt": "lower edge",
        "lep_phi": "periodic",
        "met_phi": "periodic",
        "njets": "discrete",
        "jet1_btag": "discrete",
        "jet2_pt": "mixed",
        "mjj": "mixed",
    }
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    for name, kind in expect.items():
        assert kind in rows[name], rows[name]
    assert "Gaussianised" not in rows["lep_pt"]  # arqs: no quantile map by default
    assert "wrap (x - lep_phi)" in rows["met_phi"] and "relative to lep_phi: R = " in rows["met_phi"]
    assert list(tmp_path.iterdir()) == []
    # --no-relative-angles: every angle absolute
    assert (
        main(
            [
                "train",
                f"{ntuple}:events",
                "--features",
                FEATS,
                "--explain-preprocessing",
                "--no-relative-angles",
            ]
        )
        == 0
    )
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()}
    assert "periodic" in rows["met_phi"] and "relative to" not in rows["met_phi"]


def test_declared_kinds_and_flags(ntuple, tmp_path, capsys):
    cfg = tmp_path / "pre.toml"
    cfg.write_text('[features.lep_eta]\nkind = "bounded"\nlow = -2.5\nhigh = 2.5\n')
    args = ["train", f"{ntuple}:events", "--features", FEATS, "--explain-preprocessing"]
    assert main([*args, "--preprocess", str(cfg), "--discrete", "njets", "--periodic", "jet1_eta"]) == 0
    rows = {s.split()[0]: s for s in capsys.readouterr().out.splitlines() if s.split()}
    assert "bounded (declared)" in rows["lep_eta"] and "logit on (-2.5, 2.5)" in rows["lep_eta"]
    assert "discrete (declared)" in rows["njets"] and "periodic (declared)" in rows["jet1_eta"]
    assert main([*args, "--quantile"]) == 0
    assert "Gaussianised" in capsys.readouterr().out
    assert main([*args, "--flow", "maf"]) == 0  # the affine families get the quantile maps by default
    assert "Gaussianised" in capsys.readouterr().out
    cfg.write_text('[features.nope]\nkind = "bounded"\n')
    assert main([*args, "--preprocess", str(cfg)]) == 1
    assert "not among --features" in capsys.readouterr().err
    cfg.write_text('[features.lep_eta]\nkind = "bounded"\nlow = -1\nhigh = 1\n')
    assert main([*args, "--preprocess", str(cfg)]) == 1
    assert "do not contain the training data" in capsys.readouterr().err


def test_train_with_defaults_info_sample_and_engine(ntuple, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert main(["train", f"{ntuple}:events", "--features", FEATS, "-o", str(model), *FAST]) == 0
    log = capsys.readouterr().out
    assert "nfhep train: hidden 2x32: 2400 < 20,000 training events" in log
    assert "nfhep train: ensemble 3: 2400 < 20,000 training events" in log
    assert "ensemble member 3/3 (seed 2)" in log and "an ensemble of 3 flows" in log
    meta = nfhep.modelfile.read_metadata(model)
    assert meta["version"] == 3 and meta["flow"]["family"] == "ensemble"
    assert [m["seed"] for m in meta["flow"]["members"]] == [0, 1, 2]
    assert all(m["hidden"] == [32, 32] for m in meta["flow"]["members"])
    assert len(meta["provenance"]["history"]["members"]) == 3
    assert meta["provenance"]["preprocessing"][2]["kind"] == "periodic"
    assert main(["info", str(model)]) == 0
    info = capsys.readouterr().out
    assert "chosen from the data size" in info and "hidden 2x32" in info
    assert "ensemble of 3 arqs flows" in info and "seeds          [0, 1, 2]" in info
    assert "member 2: best_epoch=" in info
    assert "lep_phi" in info and "periodic: wrap into" in info
    assert "met_phi" in info and "periodic: wrap (x - lep_phi) into" in info
    assert meta["preprocessing"]["kinds"][COLLIDER_FEATURES.index("met_phi")]["relative_to"] == 2
    # the engine evaluates the trained model as the torch model does
    m = nfhep.load(model)
    x = np.stack(list(collider_toy(400, seed=9).values()), 1).astype(np.float32)
    with torch.no_grad():
        ref = m.log_prob(torch.from_numpy(x)).double().numpy()
    eng = nfhep.Engine(model).log_prob(x).astype(np.float64)
    assert np.max(np.abs(eng - ref) / np.maximum(1, np.abs(ref))) <= 1e-5
    # sampling: only allowed discrete values, counts reported; --reject-outside redraws
    out = tmp_path / "gen.root"
    assert main(["sample", str(model), "-n", "3000", "-o", f"{out}:gen", "-q", "--reject-outside"]) == 0
    text = capsys.readouterr().out
    assert "beyond the training range by more than 0.1 of its width" in text and "redrawn" in text
    with uproot.open(out) as f:
        g = f["gen"].arrays(library="np")
    assert np.isin(g["jet1_btag"], np.float32([0.0, 0.6, 0.77, 0.85])).all()
    assert np.isin(g["njets"], np.arange(1, 9)).all()
    assert all(np.isfinite(v).all() for v in g.values())
    lo, hi = m.preprocessing.data_range[0]
    assert (g["lep_pt"] >= lo - 0.1 * (hi - lo)).all() and (g["lep_pt"] <= hi + 0.1 * (hi - lo)).all()


def test_explicit_options_and_opt_outs(ntuple, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    args = ["train", f"{ntuple}:events", "--features", FEATS, "-o", str(model), *FAST]
    assert main([*args, "--hidden", "1x8"]) == 0
    log = capsys.readouterr().out
    flow = nfhep.modelfile.read_metadata(model)["flow"]
    assert "hidden 2x32" not in log and flow["family"] == "ensemble"  # the ensemble is still chosen
    assert all(m["hidden"] == [8] for m in flow["members"])
    model.unlink()
    assert main([*args, "--no-auto-preprocess", "--no-size-defaults"]) == 0
    log = capsys.readouterr().out
    meta = nfhep.modelfile.read_metadata(model)
    assert "preprocessing chosen" not in log and meta["version"] == 1
    assert meta["flow"]["hidden"] == [128, 128, 128] and "kinds" not in meta["preprocessing"]
    assert meta["flow"]["family"] == "arqs"  # one flow: no ensemble without the size defaults


def test_size_defaults_give_a_maf_depth():
    from nfhep.defaults import data_size_defaults

    chosen, why = data_size_defaults(4000, 12, flow="maf")
    assert chosen["bijectors"] == 8 and chosen["hidden"] == "2x32"
    assert any(w.startswith("bijectors 8:") for w in why)
    assert "bijectors" not in data_size_defaults(4000, 12, flow="arqs")[0]
    assert "bijectors" not in data_size_defaults(4000, 12)[0]
    assert "bijectors" not in data_size_defaults(4000, 12, flow="maf", explicit={"bijectors"})[0]
    assert chosen["ensemble"] == 3 and any(w.startswith("ensemble 3:") for w in why)
    assert data_size_defaults(30_000, 12)[0]["ensemble"] == 1
    assert "ensemble" not in data_size_defaults(4000, 12, explicit={"ensemble"})[0]
    big, _ = data_size_defaults(300_000, 12, flow="maf")
    assert "bijectors" not in big and big["hidden"] == "3x128"  # the papers' EW-fit network above 200k
