"""The ROOT macros and nfhep/root.hpp, run for real with the ROOT pip build (``root -b -q``).

Every macro of ``macros/`` is run as a user would run it (``root -b -q macros/nfhep_setup.C 'macro(...)'``)
against the installed nfhep package (found by nfhep_setup.C through ``python -m nfhep config``), and its
output read back with uproot and checked against ``nfhep.Engine`` and the torch model. The test ntuple is
written by ROOT itself with small clusters, so RDataFrame under ``ROOT::EnableImplicitMT(2)`` runs many
tasks whose boundaries cut the evaluator's 256-entry blocks. Marked ``root``: fails, not skips, under
``CI=true`` when ROOT is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nfhep
from conftest import require
from test_engine import _make, _torch_lp

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[1]
MACROS = REPO / "macros"
TEST_MACROS = REPO / "tests" / "macros"
N_EVENTS = 30000
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def _root_exe() -> str | None:
    here = Path(sys.executable).parent / "root"
    return str(here) if here.exists() else shutil.which("root")


@pytest.fixture(scope="session")
def root_exe() -> str:
    exe = _root_exe()
    require(exe is not None, "the ROOT pip build (`pip install root`, part of nfhep[test]) is not installed")
    return exe  # type: ignore[return-value]


def _q(s: str | Path) -> str:
    """A C++ string literal for a macro argument."""
    s = str(s)
    assert '"' not in s and "\\" not in s, s
    return f'"{s}"'


def run_root(root_exe: str, *macros: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # the installed package's headers and library (a developer may point NFHEP_CONFIG elsewhere)
    env.setdefault("NFHEP_CONFIG", f"{sys.executable} -m nfhep config")
    r = subprocess.run(
        [root_exe, "-b", "-q", "-l", *macros], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if check:
        assert r.returncode == 0, (
            f"root {' '.join(macros)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    return r


def setup_macro() -> str:
    return str(MACROS / "nfhep_setup.C")


def eval_ntuple(root_exe, cwd, model, inp, out, *extra, check=True):
    args = ",".join([_q(model), _q(inp), _q("events"), _q(out), *extra])
    return run_root(root_exe, setup_macro(), f"{MACROS / 'eval_ntuple.C'}({args})", cwd=cwd, check=check)


@pytest.fixture(scope="session")
def ntuple(root_exe, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    import uproot

    d = tmp_path_factory.mktemp("ntuple")
    path = d / "in.root"
    run_root(root_exe, f"{TEST_MACROS / 'make_ntuple.C'}({_q(path)}, {N_EVENTS}, 1, 777)", cwd=d)
    with uproot.open(path) as f:
        arrays = f["events"].arrays(library="np")
    assert len(arrays["x0"]) == N_EVENTS and np.isnan(arrays["x0"][5])
    return path, arrays


def _read(path: Path, column: str, tree: str = "events") -> np.ndarray:
    import uproot

    with uproot.open(path) as f:
        return f[tree][column].array(library="np")


def _inputs(eng: nfhep.Engine, arrays, dtype):
    x = np.stack([arrays[n].astype(dtype) for n in eng.features], axis=1)
    c = (
        np.stack([arrays[n].astype(dtype) for n in eng.context_features], axis=1)
        if eng.context_features
        else None
    )
    return x, c


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(b)
    assert np.array_equal(np.isfinite(a), ok), "finite / non-finite entries differ"
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))))


MODELS = [
    ("arqs", 4, 0, torch.float32),
    ("maf", 3, 2, torch.float64),
    ("realnvp", 4, 2, torch.float32),
    ("crqs", 4, 0, torch.float64),
]


@pytest.mark.parametrize(("family", "d", "context", "dtype"), MODELS, ids=[f"{m[0]}-c{m[2]}" for m in MODELS])
def test_eval_ntuple_matches_engine_and_torch(root_exe, ntuple, tmp_path, family, d, context, dtype):
    inp, arrays = ntuple
    m = _make(family, d=d, context=context, dtype=dtype, key=21, hidden=[16, 12])
    model = nfhep.save(m, tmp_path / "m.safetensors")
    eng = nfhep.Engine(model)
    npdt = np.float32 if dtype == torch.float32 else np.float64

    r1 = eval_ntuple(root_exe, tmp_path, model, inp, tmp_path / "lp1.root", _q("log_prob"), "1")
    r2 = eval_ntuple(root_exe, tmp_path, model, inp, tmp_path / "lp2.root", _q("log_prob"), "2")
    assert "batched, 1 thread)" in r1.stdout and "batched, 2 threads)" in r2.stdout
    lp1, lp2 = _read(tmp_path / "lp1.root", "log_prob"), _read(tmp_path / "lp2.root", "log_prob")
    assert lp1.dtype == npdt and lp1.shape == (N_EVENTS,)
    # IMT with 1 and 2 threads: identical columns, bit for bit (NaN where the input has a NaN)
    assert np.array_equal(lp1.view(np.uint8), lp2.view(np.uint8))
    assert np.isnan(lp1[5]) and np.isfinite(np.delete(lp1, 5)).all()

    x, c = _inputs(eng, arrays, npdt)
    assert _rel(lp1, eng.log_prob(x, c)) <= TOL[npdt]
    keep = ~np.isnan(x).any(axis=1)
    assert _rel(lp1[keep], _torch_lp(m, x[keep], None if c is None else c[keep])) <= TOL[npdt]


def test_eval_ntuple_per_event_functor_path(root_exe, ntuple, tmp_path):
    inp, arrays = ntuple
    m = _make("arqs", d=4, context=2, dtype=torch.float32, key=5, hidden=[16, 12])
    model = nfhep.save(m, tmp_path / "m.safetensors")
    r = eval_ntuple(root_exe, tmp_path, model, inp, tmp_path / "pe.root", _q("lp"), "2", "true", _q("nf"))
    assert "per event, 2 threads" in r.stdout
    lp = _read(tmp_path / "pe.root", "lp", tree="nf")
    eng = nfhep.Engine(model)
    x, c = _inputs(eng, arrays, np.float32)
    assert _rel(lp, eng.log_prob(x, c)) <= 1e-5
    # one event at a time is deterministic too: the same column again with one thread
    eval_ntuple(root_exe, tmp_path, model, inp, tmp_path / "pe1.root", _q("lp"), "1", "true", _q("nf"))
    assert np.array_equal(lp.view(np.uint8), _read(tmp_path / "pe1.root", "lp", tree="nf").view(np.uint8))


def test_eval_ntuple_friend_tree_on_the_tutorial_ntuple(root_exe, tmp_path):
    """hsimple.root (shipped with ROOT: a TNtuple px, py, pz, ...): the friend tree lines up by entry."""
    import uproot

    hs = Path(sys.executable).parents[1].glob("lib/python*/site-packages/ROOT/tutorials/hsimple.root")
    hs = next(iter(hs), None)
    require(hs is not None, "hsimple.root from the ROOT pip build")
    with uproot.open(hs) as f:
        t = f["ntuple"].arrays(["px", "py", "pz"], library="np")
    x = np.stack([t["px"], t["py"], t["pz"]], axis=1).astype(np.float32)
    m = _make("arqs", d=3, names=["px", "py", "pz"], data=x.astype(np.float64), dtype=torch.float32, key=8)
    model = nfhep.save(m, tmp_path / "hs.safetensors")
    args = ",".join([_q(model), _q(hs), _q("ntuple"), _q(tmp_path / "hs_lp.root"), _q("log_prob"), "2"])
    run_root(root_exe, setup_macro(), f"{MACROS / 'eval_ntuple.C'}({args})", cwd=tmp_path)
    lp = _read(tmp_path / "hs_lp.root", "log_prob", tree="ntuple")
    assert lp.shape == (len(x),)
    assert _rel(lp, nfhep.Engine(model).log_prob(x)) <= 1e-5
    assert _rel(lp, _torch_lp(m, x)) <= 1e-5
    # ROOT itself sees it as a friend: log_prob and px of the same entry, as drawn by TTree::Scan
    macro = tmp_path / "friend_check.C"
    macro.write_text(
        "int friend_check() {\n"
        f'  TFile f("{hs}"); auto t = f.Get<TTree>("ntuple");\n'
        f'  t->AddFriend("ntuple", "{tmp_path / "hs_lp.root"}");\n'
        '  float px, lp; t->SetBranchAddress("px", &px); t->SetBranchAddress("log_prob", &lp);\n'
        "  for (Long64_t i : {0LL, 1LL, 12345LL, t->GetEntries() - 1}) {\n"
        '    t->GetEntry(i); printf("E %lld %a %a\\n", i, px, lp);\n  }\n'
        "  return 0;\n}\n"
    )
    r = run_root(root_exe, str(macro), cwd=tmp_path)
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("E ")]
    assert len(rows) == 4
    for _, i, px, lpv in rows:
        assert float.fromhex(px) == x[int(i), 0] and float.fromhex(lpv) == lp[int(i)]


def test_eval_ntuple_errors_leave_no_output(root_exe, ntuple, tmp_path):
    inp, _ = ntuple
    m = _make("maf", d=5, dtype=torch.float32, key=2, hidden=[8])  # x4 is not a branch of the ntuple
    model = nfhep.save(m, tmp_path / "m.safetensors")
    out = tmp_path / "out.root"
    r = eval_ntuple(root_exe, tmp_path, model, inp, out, check=False)
    assert r.returncode != 0 and "needs the input 'x4', which is not a branch" in r.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(Path(model).read_bytes()[:200])
    r = eval_ntuple(root_exe, tmp_path, bad, inp, out, check=False)
    assert r.returncode != 0 and "bad.safetensors" in r.stderr
    r = eval_ntuple(root_exe, tmp_path, model, inp, inp, check=False)
    assert r.returncode != 0 and "is the input file" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_sample_tree_matches_engine_sample(root_exe, tmp_path):
    m = _make("arqs", d=4, dtype=torch.float32, key=4, hidden=[16, 12])
    model = nfhep.save(m, tmp_path / "a.safetensors")
    out = tmp_path / "gen.root"
    macro = MACROS / "sample_tree.C"
    r = run_root(root_exe, setup_macro(), f"{macro}({_q(model)}, 70000, {_q(out)})", cwd=tmp_path)
    assert "70000 events" in r.stdout
    eng = nfhep.Engine(model)
    x, lp = eng.sample(70000, seed=0, return_log_prob=True)
    for j, name in enumerate(eng.features):
        got = _read(out, name)
        assert got.dtype == np.float32 and np.array_equal(got, x[:, j])
    assert np.array_equal(_read(out, "log_prob"), lp)
    # a later part of the same stream, with one thread: the same events as Python's
    run_root(
        root_exe,
        setup_macro(),
        f'{macro}({_q(model)}, 1000, {_q(out)}, "gen", 0, "", 69000, 1)',
        cwd=tmp_path,
    )
    assert np.array_equal(_read(out, "x2", tree="gen"), x[69000:, 2])


def test_sample_tree_conditional_and_errors(root_exe, tmp_path):
    m = _make("maf", d=3, context=2, dtype=torch.float64, key=6, hidden=[16, 12])
    model = nfhep.save(m, tmp_path / "c.safetensors")
    out = tmp_path / "gen.root"
    macro = MACROS / "sample_tree.C"
    run_root(
        root_exe,
        setup_macro(),
        f'{macro}({_q(model)}, 5000, {_q(out)}, "t", 11, "c1 = -0.5, c0=2.25")',
        cwd=tmp_path,
    )
    eng = nfhep.Engine(model)
    x = eng.sample(5000, seed=11, context=np.array([2.25, -0.5]))
    for j, name in enumerate(eng.features):
        assert np.array_equal(_read(out, name, tree="t"), x[:, j])
    assert np.all(_read(out, "c0", tree="t") == 2.25) and np.all(_read(out, "c1", tree="t") == -0.5)
    # positional context gives the same events; wrong contexts are refused with the reason
    run_root(
        root_exe, setup_macro(), f'{macro}({_q(model)}, 5000, {_q(out)}, "t", 11, "2.25,-0.5")', cwd=tmp_path
    )
    assert np.array_equal(_read(out, "x0", tree="t"), x[:, 0])
    out.unlink()
    refusals = [
        ("", "the model is conditional"),
        ("c0=1", "no value for 'c1'"),
        ("c0=1,c7=2", "no context feature 'c7'"),
        ("c0=1,c1=abc", "not a finite number"),
        ("1,2,3", "more than the model's 2 values"),
    ]
    for ctx, why in refusals:
        r = run_root(
            root_exe,
            setup_macro(),
            f'{macro}({_q(model)}, 10, {_q(out)}, "t", 0, "{ctx}")',
            cwd=tmp_path,
            check=False,
        )
        assert r.returncode != 0 and why in r.stderr, (ctx, r.stderr[-500:])
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


@pytest.fixture(scope="module")
def functor_runs(root_exe, ntuple, tmp_path_factory):
    inp, arrays = ntuple
    d = tmp_path_factory.mktemp("functors")
    m = _make("arqs", d=4, dtype=torch.float32, key=13, hidden=[16, 12])
    model = nfhep.save(m, d / "f.safetensors")
    runs = {}
    for nt in (1, 2):
        out = d / f"f{nt}.txt"
        run_root(
            root_exe,
            setup_macro(),
            f"{TEST_MACROS / 'check_functors.C'}({_q(model)}, {_q(inp)}, {_q(out)}, {nt})",
            cwd=d,
        )
        runs[nt] = out.read_text().splitlines()
    return model, arrays, runs


def test_functors_match_the_engine_on_every_slot(functor_runs):
    model, arrays, runs = functor_runs
    eng = nfhep.Engine(model)
    x, _ = _inputs(eng, arrays, np.float32)
    ref = eng.log_prob(x)
    rows = {nt: [line.split() for line in lines if not line.startswith("ERR")] for nt, lines in runs.items()}
    assert rows[1] == rows[2]  # the same numbers with 1 and 2 threads
    vals = np.array([[float.fromhex(v) for v in r[1:]] for r in rows[2]])
    assert [int(r[0]) for r in rows[2]] == list(range(N_EVENTS))
    a, b, c, r = vals.T
    # FlowFunctor<4,float>, Compute<4,float>(RReader) and RReader::Compute are the same one-event path;
    # FlowFunctorRVec<double> on a float32 model goes through the engine's double-input path (inputs
    # converted to float32, the result accumulated in double): the same to float32 precision
    assert np.array_equal(a, c, equal_nan=True) and np.array_equal(a, r, equal_nan=True)
    assert _rel(a, ref) <= 1e-5 and _rel(b, ref) <= 1e-5


def test_functor_errors_are_clear(functor_runs):
    _, _, runs = functor_runs
    errs = {line.split(":")[0][4:]: line for line in runs[2] if line.startswith("ERR")}
    assert set(errs) == {"arity", "rvec", "compute", "reader", "slot", "model"}, errs
    assert "takes 4 input columns (features: x0, x1, x2, x3; context: none), not 3" in errs["arity"]
    assert "an event has 2 values" in errs["rvec"] and "takes 4" in errs["rvec"]
    assert "Compute<5>" in errs["compute"] and "got 3 values" in errs["reader"]
    assert "slot 1000 but only 2 slots" in errs["slot"]
    assert "(no exception)" not in errs["model"] and "in.root" in errs["model"]


@pytest.mark.parametrize("per_event", [False, True], ids=["batched", "per-event"])
def test_eval_ntuple_of_an_ensemble(root_exe, ntuple, tmp_path, per_event):
    # the macro's Workspace paths (batched per RDataFrame slot, and one event at a time) on a mixture
    from test_ensemble import _ensemble

    inp, arrays = ntuple
    m = _ensemble("maf", d=3, context=2, dtype=torch.float32, key=8)
    model = nfhep.save(m, tmp_path / "e.safetensors")
    eng = nfhep.Engine(model)
    assert eng.members == 3
    extra = ("true", _q("nf")) if per_event else ()
    r = eval_ntuple(root_exe, tmp_path, model, inp, tmp_path / "e.root", _q("lp"), "2", *extra)
    assert ("per event" if per_event else "batched") in r.stdout
    lp = _read(tmp_path / "e.root", "lp", tree="nf" if per_event else "events")
    x, c = _inputs(eng, arrays, np.float32)
    assert _rel(lp, eng.log_prob(x, c)) <= 1e-5
