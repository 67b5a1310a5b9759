"""``nfhep compare`` on ROOT files written by uproot inside the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_module
from nfhep.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    uproot = require_module("uproot")
    d = tmp_path_factory.mktemp("cmp")
    rng = np.random.default_rng(0)
    out = {}
    for name, shift in (("a", 0.0), ("b", 0.2)):
        n = 3000
        data = {
            "px": rng.normal(shift, 1.0, n),
            "py": rng.normal(0.0, 1.0, n),
            "w": rng.uniform(0.5, 1.5, n),
            "i": np.arange(n, dtype=np.int32),
        }
        p = d / f"{name}.root"
        with uproot.recreate(p) as f:
            f.mktree("events", {k: v.dtype for k, v in data.items()})
            f["events"].extend(data)
            f.mktree("jag", {"v": "var * float64"})
            import awkward as ak

            f["jag"].extend({"v": ak.Array([[1.0], [], [2.0, 3.0]])})
        out[name] = p
    return out


def test_cli_markdown_and_plots(files, tmp_path, capsys):
    rep = tmp_path / "out.md"
    rc = main([
        "compare", f"{files['a']}:events", f"{files['b']}:events", "--features", "px", "py",
        "--report", str(rep), "--plots", str(tmp_path / "plots"), "--no-c2st", "--n-iter", "3",
    ])  # fmt: skip
    assert rc == 0
    text = rep.read_text()
    assert "median KS p-value" in text and "| px |" in text
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3  # 2 marginals + 1 pair
    assert "report written" in capsys.readouterr().out


def test_cli_json_weights_selection(files, tmp_path):
    rep = tmp_path / "out.json"
    rc = main([
        "compare", f"{files['a']}:events", f"{files['b']}:events", "--features", "px", "py",
        "--weights", "w", "--selection", "py > 0", "--report", str(rep), "--no-c2st", "--n-iter", "2",
    ])  # fmt: skip
    assert rc == 0
    d = json.loads(rep.read_text())
    assert d["settings"]["weighted"] is True
    assert 1200 < d["n_x"] < 1800  # about half the events pass py > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["{a}:nope", "{b}:events", "--features", "px"], "tree 'nope' not found"),
        (["{a}:events", "{b}:events", "--features", "pz"], "branch 'pz' in tree 'events'"),
        (["{a}:jag", "{b}:jag", "--features", "v"], "jagged"),
        (["{a}", "{b}:events", "--features", "px"], "has 2 trees (events, jag)"),
        (["{a}:events", "{b}:events", "--features", "px", "--max-events", "0"], "--max-events must be"),
        (["/does/not/exist.root:events", "{b}:events", "--features", "px"], "does not exist"),
    ],
)
def test_cli_errors(files, args, message, capsys):
    """Bad inputs: exit code 1 and a message naming the file, tree or branch (read by nfhep.io)."""
    argv = ["compare"] + [a.format(a=files["a"], b=files["b"]) for a in args] + ["--no-c2st"]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_cli_on_real_root_tutorial_file(tmp_path):
    """hsimple.root from the ROOT pip build: px, py of the tree `ntuple` against themselves."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("ROOT")
    from conftest import require

    require(spec is not None and spec.origin is not None, "the ROOT pip build is not installed")
    path = Path(spec.origin).parent / "tutorials" / "hsimple.root"
    require(path.is_file(), f"{path} not found")
    rep = tmp_path / "h.json"
    rc = main([
        "compare", f"{path}:ntuple", f"{path}:ntuple", "--features", "px", "py", "--selection", "pz > 1",
        "--report", str(rep), "--no-c2st", "--n-iter", "4",
    ])  # fmt: skip
    assert rc == 0
    d = json.loads(rep.read_text())
    assert d["summary"]["swd"]["mean"] == 0.0  # identical samples
    assert d["summary"]["ks_pvalue"]["median"] == 1.0


def test_cli_max_events_uses_the_first_selected_events(files, tmp_path):
    rep = tmp_path / "r.json"
    rc = main([
        "compare", f"{files['a']}:events", f"{files['b']}:events", "--features", "px", "py",
        "--selection", "py > 0", "--max-events", "300", "--report", str(rep), "--no-c2st", "--n-iter", "2",
    ])  # fmt: skip
    assert rc == 0
    d = json.loads(rep.read_text())
    assert d["n_x"] == 300 and d["n_y"] == 300
