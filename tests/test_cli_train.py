"""``nfhep train`` / ``sample`` / ``info`` end to end on a tiny synthetic ROOT file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot

from nfhep import io as nio
from nfhep import modelfile
from nfhep.cli import main


@pytest.fixture(scope="module")
def ntuple(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    n = 1500
    mass = rng.uniform(1.0, 2.0, size=n)
    a = rng.normal(size=n) + mass
    b = 0.5 * a + rng.normal(scale=0.5, size=n)
    nj = rng.integers(0, 4, size=n).astype(np.int32)
    write = {"a": a, "b": b, "mass": mass, "njet": nj, "w": rng.uniform(0.5, 1.5, size=n)}
    nio.write_root(d / "data.root", "events", write)
    return d / "data.root"


TINY = [
    "--bijectors",
    "1",
    "--hidden",
    "1x8",
    "--knots",
    "4",
    "--epochs",
    "2",
    "--batch-size",
    "256",
    "--ensemble",
    "1",
    "-q",
]


def test_train_info_sample_end_to_end(ntuple, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    rc = main(
        [
            "train",
            f"{ntuple}:events",
            "--features",
            "a,b",
            "--selection",
            "njet >= 1 && a > -2",
            "--weights",
            "w",
            "--flow",
            "arqs",
            "--range",
            "4",
            "--seed",
            "1",
            *TINY,
            "-o",
            str(model),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "entries from 1 file(s)" in out and str(model) in out
    hist = json.loads((tmp_path / "m.history.json").read_text())
    assert len(hist["history"]["loss"]) == hist["summary"]["epochs_run"] <= 2
    assert np.isfinite(hist["summary"]["final_loss"])
    meta = modelfile.read_metadata(model)
    assert meta["flow"]["family"] == "arqs" and meta["features"] == ["a", "b"]
    prov = meta["provenance"]
    assert prov["data"]["selection"] == "njet >= 1 && a > -2" and prov["data"]["weights"] == "w"
    assert prov["data"]["files"][0]["sha256"] == nio.sha256_file(ntuple)
    assert prov["training"]["epochs"] == 2 and prov["history"]["epochs_run"] >= 1

    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    for word in ("nfhep-flow version 2", "arqs", "features     a, b", "parameters", "sha256", "created"):
        assert word in text, word
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    m = modelfile.load(model)
    assert info["n_parameters"] == sum(p.numel() for p in m.parameters()) > 0

    out_root = tmp_path / "gen.root"
    assert (
        main(
            [
                "sample",
                str(model),
                "-n",
                "3000",
                "-o",
                f"{out_root}:gen",
                "--seed",
                "5",
                "--log-prob",
                "--chunk-size",
                "1000",
                "-q",
            ]
        )
        == 0
    )
    with uproot.open(out_root) as f:
        assert f.classnames() == {"gen;1": "TTree"}
        assert str(f.file.compression) == "ZSTD(1)"
        arr = f["gen"].arrays(library="np")
    assert set(arr) == {"a", "b", "log_prob"} and len(arr["a"]) == 3000
    x = np.stack([arr["a"], arr["b"]], axis=1)
    with torch.no_grad():
        lp = m.log_prob(torch.as_tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(arr["log_prob"], lp, rtol=1e-4, atol=1e-4)
    # reproducible with the same seed
    again = tmp_path / "again.root"
    assert (
        main(
            [
                "sample",
                str(model),
                "-n",
                "3000",
                "-o",
                f"{again}:gen",
                "--seed",
                "5",
                "--chunk-size",
                "1000",
                "-q",
            ]
        )
        == 0
    )
    with uproot.open(again) as f:
        np.testing.assert_array_equal(f["gen"]["a"].array(library="np"), arr["a"])


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_config_file_and_override(ntuple, tmp_path, fmt):
    cfg = tmp_path / f"train.{fmt}"
    if fmt == "toml":
        cfg.write_text(
            f'data = ["{ntuple}:events"]\nfeatures = ["a", "b"]\nflow = "maf"\n'
            'hidden = "1x8"\nbijectors = 1\nepochs = 50\nbatch-size = 256\nquiet = true\n'
        )
    else:
        cfg.write_text(
            f"data: ['{ntuple}:events']\nfeatures: a,b\nflow: maf\nhidden: 1x8\nbijectors: 1\n"
            "epochs: 50\nbatch_size: 256\nquiet: true\n"
        )
    model = tmp_path / "m.safetensors"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "-o", str(model)]) == 0  # flag wins
    meta = modelfile.read_metadata(model)
    # below 20,000 events: an ensemble of 3 (a size default; the config file does not set it)
    assert meta["flow"]["family"] == "ensemble" and len(meta["flow"]["members"]) == 3
    assert all(m["family"] == "maf" and m["hidden"] == [8] for m in meta["flow"]["members"])
    assert meta["provenance"]["training"]["epochs"] == 1
    assert meta["provenance"]["training"]["batch_size"] == 256


def test_conditional_train_and_sample(ntuple, tmp_path):
    model = tmp_path / "c.safetensors"
    assert (
        main(
            [
                "train",
                str(ntuple),
                "--features",
                "a,b",
                "--context",
                "mass",
                "--flow",
                "realnvp",
                *TINY,
                "-o",
                str(model),
            ]
        )
        == 0
    )
    assert modelfile.read_metadata(model)["context"] == ["mass"]
    out = tmp_path / "c.root"
    assert main(["sample", str(model), "-n", "500", "--context", "mass=1.5", "-o", str(out), "-q"]) == 0
    with uproot.open(out) as f:
        arr = f["samples"].arrays(library="np")
    assert set(arr) == {"a", "b", "mass"}
    np.testing.assert_array_equal(arr["mass"], np.full(500, 1.5))
    # one event per context entry of another file
    out2 = tmp_path / "c2.root"
    assert main(["sample", str(model), "--context-from", f"{ntuple}:events", "-o", str(out2), "-q"]) == 0
    with uproot.open(out2) as f:
        np.testing.assert_array_equal(
            f["samples"]["mass"].array(library="np"),
            uproot.open(ntuple)["events"]["mass"].array(library="np"),
        )


def test_streamed_training(ntuple, tmp_path):
    model = tmp_path / "s.safetensors"
    assert (
        main(
            [
                "train",
                str(ntuple),
                "--features",
                "a,b",
                "--stream",
                "--step-size",
                "400",
                "--flow",
                "crqs",
                *TINY,
                "-o",
                str(model),
            ]
        )
        == 0
    )
    assert modelfile.read_metadata(model)["provenance"]["data"]["n_entries"] == 1500


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{f}", "-o", "{o}"], "--features is required"),
        (["train", "--features", "a", "-o", "{o}"], "no input data"),
        (["train", "{f}", "--features", "a"], "-o/--output is required"),
        (["train", "{f}", "--features", "a,zz", "-o", "{o}"], "feature branch 'zz' in tree 'events'"),
        (["train", "{f}", "--features", "a", "--selection", "a > 99", "-o", "{o}"], "keeps 0 of 1500"),
        (["train", "{d}/nothing*.root", "--features", "a", "-o", "{o}"], "matches no file"),
        (["train", "{f}", "--features", "a", "--epochs", "0", "-o", "{o}"], "--epochs must be a positive"),
        (["train", "{f}", "--features", "a", "--val-split", "1.5", "-o", "{o}"], "--val-split"),
        (["train", "{f}", "--features", "a", "--config", "{d}/x.ini", "-o", "{o}"], "does not exist"),
        (["sample", "{d}/none.safetensors", "-n", "5", "-o", "{d}/s.root"], "does not exist"),
        (["info", "{f}"], "not plausible|too short|truncated|JSON"),
    ],
)
def test_cli_errors_are_one_line(ntuple, tmp_path, capsys, argv, message):
    fill = {"f": str(ntuple), "o": str(tmp_path / "o.safetensors"), "d": str(tmp_path)}
    rc = main([a.format(**fill) for a in argv])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("nfhep ") and "error:" in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "o.safetensors").exists()


def test_config_file_errors(ntuple, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('featurez = ["a"]\n')
    assert main(["train", str(ntuple), "--config", str(cfg), "-o", str(tmp_path / "m.safetensors")]) == 1
    assert "unknown option 'featurez'" in capsys.readouterr().err
    cfg.write_text("features = [\n")
    assert main(["train", str(ntuple), "--config", str(cfg), "-o", str(tmp_path / "m.safetensors")]) == 1
    assert "invalid TOML" in capsys.readouterr().err


def test_sample_argument_errors(ntuple, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                str(ntuple),
                "--features",
                "a,b",
                "--context",
                "mass",
                "--flow",
                "maf",
                *TINY,
                "-o",
                str(model),
            ]
        )
        == 0
    )
    capsys.readouterr()
    cases = [
        (["-n", "5", "-o", str(tmp_path / "x.root")], "conditional on mass"),
        (["-n", "5", "--context", "energy=3", "-o", str(tmp_path / "x.root")], "'energy' is not a context"),
        (["-n", "5", "--context", "mass=abc", "-o", str(tmp_path / "x.root")], "not a number"),
        (["-n", "2.5", "--context", "mass=1", "-o", str(tmp_path / "x.root")], "positive integer"),
    ]
    for extra, msg in cases:
        assert main(["sample", str(model), *extra]) == 1
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.root").exists()


def test_help_mentions_paper_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for word in ("arXiv:2309.09743", "3x1024", "--knots", "--range", "--patience", "--l1", "--config"):
        assert word in text, word
