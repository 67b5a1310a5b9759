"""``nfhep eval`` / :func:`nfhep.evaluate`: friend files aligned with their inputs, read back by uproot and
ROOT, provenance, multi-model branches and the LLR, full copies, every bad-input case, the atomic output
(SIGKILL mid-run leaves nothing), and the executors (local processes, a dask ``LocalCluster``) bitwise
equal to the serial run.

The reference for every value is :class:`nfhep.Engine` itself, called once on the whole tree read with
uproot (the friend must hold exactly those numbers), and the torch model within float tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot

import nfhep
from conftest import require, require_module
from nfhep.evaluate import PROVENANCE_KEY, cleanup_stale_temporaries
from nfhep.io import BadValuesError, JaggedBranchError, MissingBranchError, MissingTreeError
from test_engine import _make, _torch_lp

REPO = Path(__file__).resolve().parents[1]


def _write_tree(path: Path, arrays: dict, tree: str = "events") -> None:
    with uproot.recreate(path) as f:
        f.mktree(tree, {k: np.dtype((np.asarray(v).dtype, np.shape(v)[1:])) for k, v in arrays.items()})
        f[tree].extend({k: np.asarray(v) for k, v in arrays.items()})


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x0": rng.normal(0.5, 1.5, n),
        "x1": rng.normal(0.5, 1.5, n).astype(np.float32),
        "x2": rng.integers(-2, 4, n).astype(np.int32),  # an integer branch is read as numbers
        "c0": rng.normal(1.0, 2.0, n),
        "other": rng.normal(size=n),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three input files (several baskets each), a conditional A-RQS float32 model and a MAF float64 one."""
    d = tmp_path_factory.mktemp("eval")
    cond = _make("arqs", d=3, context=1, dtype=torch.float32, key=1)
    maf = _make("maf", d=3, dtype=torch.float64, key=2)
    nfhep.save(cond, d / "sig.safetensors")
    nfhep.save(maf, d / "bkg-v2.safetensors")
    files = []
    for k, n in enumerate((3000, 1777, 2561)):
        p = d / f"in{k}.root"
        _write_tree(p, _inputs(n, 10 + k))
        files.append(p)
    return {"dir": d, "files": files, "cond": cond, "maf": maf}


def _reference(model_path: Path, inp: Path, tree: str = "events"):
    """Engine values over the whole tree in one call (the friend must hold exactly these)."""
    eng = nfhep.Engine(model_path)
    arrays = uproot.open(inp)[tree].arrays(eng.features + eng.context_features, library="np")
    dt = np.dtype(eng.dtype)
    x = np.stack([arrays[f].astype(dt) for f in eng.features], axis=1)
    c = (
        np.stack([arrays[f].astype(dt) for f in eng.context_features], axis=1)
        if eng.context_features
        else None
    )
    return eng.log_prob(x, c), eng.in_support(x), x, c


def _friend(path: Path, tree: str = "events_nf") -> dict[str, np.ndarray]:
    return uproot.open(path)[tree].arrays(library="np")


def _listing(d: Path) -> set[str]:
    return set(os.listdir(d))


# ------------------------------------------------------------------------------------------------
# values, alignment, provenance


@pytest.mark.parametrize("step", [1, 300, 4096, 100_000])
def test_friend_values_align_for_every_step_size(setup, tmp_path, step):
    """One model: nf_logp / nf_in_support equal the engine's values on the whole tree, bit for bit, over
    several files and chunk sizes (chunks not aligned to the engine's blocks are rounded up)."""
    d = setup["dir"]
    res = nfhep.evaluate(
        d / "sig.safetensors", setup["files"], output=tmp_path, step_size=step, executor="serial"
    )
    assert [r.output for r in res] == [str(tmp_path / f"in{k}_nf.root") for k in range(3)]
    for r, inp in zip(res, setup["files"], strict=True):
        lp, sup, x, c = _reference(d / "sig.safetensors", inp)
        f = _friend(Path(r.output))
        assert set(f) == {"nf_logp", "nf_in_support"}
        assert r.n_entries == len(lp) == len(f["nf_logp"]) and r.n_bad == 0
        assert f["nf_logp"].dtype == np.float32 and f["nf_in_support"].dtype == np.bool_
        assert np.array_equal(f["nf_logp"], lp)
        assert np.array_equal(f["nf_in_support"], sup)
        # and the torch model, within float32 tolerance (an independent path)
        tl = _torch_lp(setup["cond"], x, c)
        np.testing.assert_allclose(f["nf_logp"], tl, rtol=2e-5, atol=2e-5)


def test_two_models_llr_and_provenance(setup, tmp_path):
    d = setup["dir"]
    models = [d / "sig.safetensors", d / "bkg-v2.safetensors"]
    res = nfhep.evaluate(
        models, setup["files"][:2], output=tmp_path, llr=True, step_size=700, executor="serial"
    )
    for r, inp in zip(res, setup["files"][:2], strict=True):
        f = _friend(Path(r.output))
        assert list(f) == [
            "nf_sig_logp",
            "nf_sig_in_support",
            "nf_bkg_v2_logp",
            "nf_bkg_v2_in_support",
            "nf_llr",
        ]
        lp1, s1, _, _ = _reference(models[0], inp)
        lp2, s2, x, _ = _reference(models[1], inp)
        assert np.array_equal(f["nf_sig_logp"], lp1) and np.array_equal(f["nf_sig_in_support"], s1)
        assert np.array_equal(f["nf_bkg_v2_logp"], lp2) and np.array_equal(f["nf_bkg_v2_in_support"], s2)
        assert f["nf_bkg_v2_logp"].dtype == np.float64
        np.testing.assert_allclose(
            f["nf_bkg_v2_logp"], _torch_lp(setup["maf"], x, None), rtol=1e-10, atol=1e-10
        )
        assert f["nf_llr"].dtype == np.float64
        assert np.array_equal(f["nf_llr"], lp1.astype(np.float64) - lp2)
        prov = json.loads(uproot.open(r.output)[PROVENANCE_KEY])
        assert prov["nfhep_version"] == nfhep.__version__
        assert prov["input"] == {"file": str(inp), "tree": "events", "n_entries": len(lp1)}
        assert prov["kind"] == "friend" and prov["tree"] == "events_nf" and prov["n_bad"] == 0
        assert prov["llr"] == {"branch": "nf_llr", "numerator": "sig", "denominator": "bkg_v2"}
        for m, p in zip(prov["models"], models, strict=True):
            eng = nfhep.Engine(p)
            assert m["file"] == p.name and m["path"] == str(p)
            assert m["sha256"] == nfhep.io.sha256_file(p)
            assert m["checksum"] == eng.checksum
            assert m["features"] == eng.features and m["context_features"] == eng.context_features
            assert m["family"] == eng.family and m["dtype"] == eng.dtype


def test_names_prefix_out_tree_and_collisions(setup, tmp_path):
    d = setup["dir"]
    models = [d / "sig.safetensors", d / "bkg-v2.safetensors"]
    (r,) = nfhep.evaluate(
        models, setup["files"][0], output=tmp_path / "o.root", names=["s", "b"], prefix="w_", out_tree="fr"
    )
    assert list(_friend(tmp_path / "o.root", "fr")) == [
        "w_s_logp",
        "w_s_in_support",
        "w_b_logp",
        "w_b_in_support",
    ]
    # a single named model gets its name too
    (r,) = nfhep.evaluate(models[0], setup["files"][0], output=tmp_path / "p.root", names=["sig"])
    assert list(_friend(tmp_path / "p.root")) == ["nf_sig_logp", "nf_sig_in_support"]
    with pytest.raises(ValueError, match="same branch name"):
        nfhep.evaluate(models, setup["files"][0], output=tmp_path / "q.root", names=["a", "a"])
    with pytest.raises(ValueError, match="llr needs two models"):
        nfhep.evaluate(models[0], setup["files"][0], output=tmp_path / "q.root", llr=True)
    with pytest.raises(ValueError, match="not a valid branch name"):
        nfhep.evaluate(models[0], setup["files"][0], output=tmp_path / "q.root", prefix="nf-")
    with pytest.raises(ValueError, match="same model file"):
        nfhep.evaluate([models[0], models[0]], setup["files"][0], output=tmp_path / "q.root")
    assert not (tmp_path / "q.root").exists()


def test_output_naming_and_overwrite(setup, tmp_path):
    d = setup["dir"]
    m = d / "sig.safetensors"
    with pytest.raises(ValueError, match="is a file but there are 3 inputs"):
        nfhep.evaluate(m, setup["files"], output=tmp_path / "one.root")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nfhep.evaluate(m, setup["files"], output=tmp_path / "nodir")
    other = tmp_path / "sub"
    other.mkdir()
    _write_tree(other / "in0.root", _inputs(10, 0))
    with pytest.raises(ValueError, match="would both be written"):
        nfhep.evaluate(m, [setup["files"][0], other / "in0.root"], output=tmp_path)
    # default: next to the input
    (r,) = nfhep.evaluate(m, other / "in0.root")
    assert r.output == str(other / "in0_nf.root")
    before = (other / "in0_nf.root").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite"):
        nfhep.evaluate(m, other / "in0.root")
    assert (other / "in0_nf.root").stat().st_mtime_ns == before
    time.sleep(0.01)
    nfhep.evaluate(m, other / "in0.root", overwrite=True)
    assert (other / "in0_nf.root").stat().st_mtime_ns != before
    assert _listing(other) == {"in0.root", "in0_nf.root"}


def test_full_copy(setup, tmp_path):
    d = setup["dir"]
    inp = setup["files"][1]
    (r,) = nfhep.evaluate(
        d / "sig.safetensors", inp, output=tmp_path / "full.root", full_copy=True, step_size=500
    )
    assert r.out_tree == "events"
    src = uproot.open(inp)["events"].arrays(library="np")
    out = uproot.open(tmp_path / "full.root")["events"].arrays(library="np")
    assert list(out) == list(src) + ["nf_logp", "nf_in_support"]
    for k, v in src.items():
        assert out[k].dtype == v.dtype and np.array_equal(out[k], v), k
    lp, sup, _, _ = _reference(d / "sig.safetensors", inp)
    assert np.array_equal(out["nf_logp"], lp) and np.array_equal(out["nf_in_support"], sup)
    assert json.loads(uproot.open(tmp_path / "full.root")[PROVENANCE_KEY])["kind"] == "full-copy"


def test_support_flag_and_tree_in_directory(tmp_path):
    """in_support false (logp = -inf) for events outside a bounded / log feature; a tree in a TDirectory."""
    m = _make("crqs", d=3, bounds={"x0": (0.0, 1.0)}, log_features=("x1",), key=5)
    nfhep.save(m, tmp_path / "b.safetensors")
    rng = np.random.default_rng(3)
    n = 900
    a = {"x0": rng.uniform(-0.2, 1.2, n), "x1": rng.normal(1.0, 1.0, n), "x2": rng.normal(size=n)}
    with uproot.recreate(tmp_path / "d.root") as f:
        f.mktree("dir/t", {k: v.dtype for k, v in a.items()})
        f["dir/t"].extend(a)
    (r,) = nfhep.evaluate(
        tmp_path / "b.safetensors", str(tmp_path / "d.root") + ":dir/t", output=tmp_path / "o.root"
    )
    assert r.out_tree == "t_nf"
    f = _friend(tmp_path / "o.root", "t_nf")
    inside = (a["x0"] > 0) & (a["x0"] < 1) & (a["x1"] > 0)
    assert 0 < inside.sum() < n
    assert np.array_equal(f["nf_in_support"], inside)
    assert np.all(np.isneginf(f["nf_logp"][~inside])) and np.all(np.isfinite(f["nf_logp"][inside]))


# ------------------------------------------------------------------------------------------------
# bad inputs


def _bad_file(tmp_path, name, **changes):
    sizes = {len(v) for v in changes.values() if v is not None}
    a = _inputs(sizes.pop() if sizes else 2000, 7)
    a.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del a[k]
    p = tmp_path / name
    _write_tree(p, a)
    return p


def test_missing_branch_names_file_tree_branch(setup, tmp_path):
    p = _bad_file(tmp_path, "nox1.root", x1=None)
    with pytest.raises(
        MissingBranchError, match=r"feature branch 'x1' in tree 'events' of file .*nox1\.root"
    ):
        nfhep.evaluate(setup["dir"] / "sig.safetensors", p, output=tmp_path)
    p = _bad_file(tmp_path, "noc0.root", c0=None)
    with pytest.raises(MissingBranchError, match=r"context branch 'c0' in tree 'events'"):
        nfhep.evaluate(setup["dir"] / "sig.safetensors", p, output=tmp_path)
    with pytest.raises(MissingTreeError, match="tree 'nope' not found"):
        nfhep.evaluate(setup["dir"] / "sig.safetensors", f"{p}:nope", output=tmp_path)
    assert not any("_nf" in n or "nfhep-tmp" in n for n in _listing(tmp_path))


def test_jagged_and_array_branches_refused(setup, tmp_path):
    ak = require_module("awkward")
    a = _inputs(50, 1)
    with uproot.recreate(tmp_path / "j.root") as f:
        jag = ak.Array([[1.0] * (i % 3) for i in range(50)])
        f.mktree("events", {"x0": "f8", "x1": ak.type(jag), "x2": "f8", "c0": "f8"})
        f["events"].extend({"x0": a["x0"], "x1": jag, "x2": a["x0"], "c0": a["c0"]})
    with pytest.raises(
        JaggedBranchError, match=r"branch 'x1' in tree 'events' of file .*j\.root.* is jagged"
    ):
        nfhep.evaluate(setup["dir"] / "sig.safetensors", tmp_path / "j.root", output=tmp_path)
    p = _bad_file(tmp_path, "arr.root", x2=np.zeros((2000, 2)))
    with pytest.raises(JaggedBranchError, match="'x2'.*fixed-size array"):
        nfhep.evaluate(setup["dir"] / "sig.safetensors", p, output=tmp_path)
    # --full-copy refuses an input branch it cannot copy faithfully
    with pytest.raises(ValueError, match=r"full copy: branch 'x1'.*not one number per entry"):
        nfhep.evaluate(
            setup["dir"] / "bkg-v2.safetensors", tmp_path / "j.root", output=tmp_path, full_copy=True
        )
    assert not any("_nf" in n or "nfhep-tmp" in n for n in _listing(tmp_path))


def _with_bad_values():
    a = _inputs(5000, 9)
    x0, x1, c0 = a["x0"].copy(), a["x1"].copy(), a["c0"].copy()
    x0[[5, 4000]] = np.nan
    x1[[6, 4999]] = np.inf
    c0[[5, 17, 2500]] = [np.nan, -np.inf, np.nan]
    return {"x0": x0, "x1": x1, "c0": c0}


def test_bad_values_error_counts_and_no_output(setup, tmp_path):
    p = _bad_file(tmp_path, "nan.root", **_with_bad_values())
    with pytest.raises(BadValuesError) as ei:
        nfhep.evaluate(setup["dir"] / "sig.safetensors", p, output=tmp_path, step_size=512)
    msg = str(ei.value)
    assert "6 of 5000 entries" in msg  # rows 5, 6, 17, 2500, 4000, 4999
    assert f"file {str(p)!r}, tree 'events', feature branch 'x0': 2 entries" in msg
    assert "feature branch 'x1': 2 entries" in msg and "context branch 'c0': 3 entries" in msg
    assert ei.value.n_bad_rows == 6
    assert _listing(tmp_path) == {"nan.root"}
    # a multi-file run failing on its second file leaves none of its outputs
    with pytest.raises(BadValuesError):
        nfhep.evaluate(setup["dir"] / "sig.safetensors", [setup["files"][0], p], output=tmp_path)
    assert _listing(tmp_path) == {"nan.root"}


def test_allow_bad_flags_rows(setup, tmp_path):
    p = _bad_file(tmp_path, "nan.root", **_with_bad_values())
    models = [setup["dir"] / "sig.safetensors", setup["dir"] / "bkg-v2.safetensors"]
    (r,) = nfhep.evaluate(models, p, output=tmp_path, allow_bad=True, step_size=512, llr=True)
    assert r.n_bad == 6
    f = _friend(Path(r.output))
    bad_sig = np.zeros(5000, bool)
    bad_sig[[5, 6, 17, 2500, 4000, 4999]] = True
    bad_bkg = np.zeros(5000, bool)  # the MAF has no context: c0 does not concern it
    bad_bkg[[5, 6, 4000, 4999]] = True
    for name, bad, model in (("sig", bad_sig, models[0]), ("bkg_v2", bad_bkg, models[1])):
        lp, sup, _, _ = _reference(model, p)
        assert np.all(np.isnan(f[f"nf_{name}_logp"][bad])) and not f[f"nf_{name}_in_support"][bad].any()
        assert np.array_equal(f[f"nf_{name}_logp"][~bad], lp[~bad])
        assert np.array_equal(f[f"nf_{name}_in_support"][~bad], sup[~bad])
    assert np.all(np.isnan(f["nf_llr"][bad_sig])) and np.all(np.isfinite(f["nf_llr"][~bad_sig]))
    assert json.loads(uproot.open(r.output)[PROVENANCE_KEY])["n_bad"] == 6


# ------------------------------------------------------------------------------------------------
# atomic output: SIGKILL mid-run


def _cli(*args, env=None) -> subprocess.Popen:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "nfhep", "eval", *args], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _writing(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` holds an output file open in ``directory`` (anonymous or named temporary)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        targets = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(t.startswith(str(directory) + "/") and ("(deleted)" in t or "nfhep-tmp" in t) for t in targets)


@pytest.fixture(scope="module")
def big_input(setup):
    p = setup["dir"] / "big.root"
    _write_tree(p, _inputs(600_000, 4))
    return p


def _kill_mid_run(model, inp, out_dir, env=None):
    proc = _cli(
        str(model), str(inp), "-o", str(out_dir), "--step-size", "1024", "--threads", "1", "-q", env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not _writing(proc.pid, out_dir):
            assert proc.poll() is None, f"eval ended before it was killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "eval never started writing"
            time.sleep(0.01)
        time.sleep(0.2)  # some chunks written
        assert proc.poll() is None, "eval finished before it was killed: make the input bigger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_sigkill_mid_run_leaves_nothing(setup, big_input, tmp_path):
    require(hasattr(os, "O_TMPFILE"), "O_TMPFILE (Linux) is needed for the kill guarantee")
    _kill_mid_run(setup["dir"] / "sig.safetensors", big_input, tmp_path)
    assert _listing(tmp_path) == set()


def test_sigkill_fallback_temporary_is_cleaned_by_the_next_run(setup, tmp_path):
    """Without O_TMPFILE a killed run leaves one recognisable named temporary; the next run into that
    directory removes it (its process is dead) and writes its output."""
    inp = setup["dir"] / "big.root"
    if not inp.exists():
        _write_tree(inp, _inputs(600_000, 4))
    _kill_mid_run(setup["dir"] / "sig.safetensors", inp, tmp_path, env={"NFHEP_EVAL_NO_TMPFILE": "1"})
    left = _listing(tmp_path)
    assert len(left) == 1 and next(iter(left)).startswith(".big_nf.root.nfhep-tmp."), left
    # a live process's temporary is not touched
    live = tmp_path / f".x.root.nfhep-tmp.{os.uname().nodename}.{os.getpid()}.abcd"
    live.touch()
    assert cleanup_stale_temporaries(tmp_path) == [str(tmp_path / next(iter(left)))]
    assert _listing(tmp_path) == {live.name}
    live.unlink()


# ------------------------------------------------------------------------------------------------
# executors: bitwise equal to the serial run


def _contents(results) -> list:
    out = []
    for r in results:
        f = uproot.open(r.output)
        out.append(
            ({k: v.tobytes() for k, v in f[r.out_tree].arrays(library="np").items()}, f[PROVENANCE_KEY])
        )
    return out


@pytest.fixture(scope="module")
def serial(setup, tmp_path_factory):
    d = tmp_path_factory.mktemp("serial")
    models = [setup["dir"] / "sig.safetensors", setup["dir"] / "bkg-v2.safetensors"]
    res = nfhep.evaluate(
        models, setup["files"], output=d, llr=True, step_size=1000, executor="serial", threads=2
    )
    return models, _contents(res)


def test_process_pool_equals_serial(setup, serial, tmp_path):
    models, ref = serial
    res = nfhep.evaluate(
        models, setup["files"], output=tmp_path, llr=True, step_size=1000, workers=2, progress=True
    )
    assert [Path(r.output).parent for r in res] == [tmp_path] * 3
    assert _contents(res) == ref


def test_dask_local_cluster_equals_serial(setup, serial, tmp_path):
    distributed = require_module("distributed")
    models, ref = serial
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = nfhep.evaluate(
            models,
            setup["files"],
            output=tmp_path,
            llr=True,
            step_size=1000,
            executor="dask",
            scheduler=client,
        )
        assert _contents(res) == ref
        # a failing task: no outputs left
        bad = tmp_path / "bad"
        bad.mkdir()
        p = _bad_file(bad, "nan.root", **_with_bad_values())
        with pytest.raises(BadValuesError, match="6 of 5000"):
            nfhep.evaluate(models, [*setup["files"], p], output=bad, executor="dask", scheduler=client)
        assert _listing(bad) == {"nan.root"}
    with pytest.raises(ValueError, match="needs a scheduler"):
        nfhep.evaluate(models, setup["files"], output=tmp_path / "x", executor="dask")


# ------------------------------------------------------------------------------------------------
# ROOT reads the friend


ROOT_READER = r"""
import json, sys
import numpy as np
import ROOT
out = {}
inputs, friends = sys.argv[1].split(","), sys.argv[2].split(",")
for k, (inp, fr) in enumerate(zip(inputs, friends)):
    f = ROOT.TFile.Open(inp)
    t = f.Get("events")
    t.AddFriend("events_nf", fr)
    n = t.GetEntries()
    lp = np.empty(n); sup = np.empty(n, bool); x0 = np.empty(n)
    for i in range(n):  # entry by entry through the friend
        t.GetEntry(i)
        lp[i] = t.nf_logp
        sup[i] = bool(t.nf_in_support)
        x0[i] = t.x0
    out[f"lp{k}"], out[f"sup{k}"], out[f"x0{k}"] = lp, sup, x0
    df = ROOT.RDataFrame(t)
    cols = df.Define("w", "events_nf.nf_logp * 2").AsNumpy(["x0", "nf_logp", "w"])
    out[f"rdf_lp{k}"], out[f"rdf_w{k}"], out[f"rdf_x0{k}"] = cols["nf_logp"], cols["w"], cols["x0"]
    g = ROOT.TFile.Open(fr)
    out[f"prov{k}"] = np.array(json.loads(str(g.Get("nfhep_provenance").GetString()))["models"][0]["sha256"])
np.savez(sys.argv[3], **out)
"""


@pytest.mark.root
def test_root_addfriend_and_rdataframe_read_the_engine_values(setup, tmp_path):
    # ROOT is imported in a subprocess only (importing it here would warn and outlive the test)
    require(
        importlib.util.find_spec("ROOT") is not None,
        "the ROOT pip build (`pip install root`) is not installed",
    )
    d = setup["dir"]
    files = setup["files"]
    res = nfhep.evaluate(d / "sig.safetensors", files, output=tmp_path, step_size=777)
    script = tmp_path / "read.py"
    script.write_text(ROOT_READER)
    r = subprocess.run(
        [
            sys.executable,
            str(script),
            ",".join(map(str, files)),
            ",".join(x.output for x in res),
            str(tmp_path / "o.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "o.npz")
    sha = nfhep.io.sha256_file(d / "sig.safetensors")
    for k, inp in enumerate(files):
        lp, sup, _, _ = _reference(d / "sig.safetensors", inp)
        x0 = uproot.open(inp)["events"]["x0"].array(library="np")
        assert np.array_equal(got[f"x0{k}"], x0) and np.array_equal(got[f"rdf_x0{k}"], x0)
        assert np.array_equal(got[f"lp{k}"], lp.astype(np.float64))
        assert np.array_equal(got[f"sup{k}"], sup)
        assert np.array_equal(got[f"rdf_lp{k}"], lp)
        assert np.array_equal(got[f"rdf_w{k}"], lp * np.float32(2))
        assert str(got[f"prov{k}"]) == sha


# ------------------------------------------------------------------------------------------------
# command line and API surface


def test_cli(setup, tmp_path, capsys):
    from nfhep.cli import main

    d = setup["dir"]
    rc = main(
        ["eval", "--model", str(d / "sig.safetensors"), "--model", str(d / "bkg-v2.safetensors"),
         "--name", "s", "--name", "b", "--llr", str(setup["files"][0]), "-o", str(tmp_path),
         "--step-size", "600", "-q"]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "3000 entries of 1 file(s) evaluated with 2 model(s)" in out
    assert list(_friend(tmp_path / "in0_nf.root")) == [
        "nf_s_logp",
        "nf_s_in_support",
        "nf_b_logp",
        "nf_b_in_support",
        "nf_llr",
    ]
    p = _bad_file(tmp_path, "nan.root", **_with_bad_values())
    assert main(["eval", str(d / "sig.safetensors"), str(p), "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "nfhep eval: error: 6 of 5000 entries have NaN or infinite values" in err and "'c0'" in err
    assert main(["eval", str(d / "sig.safetensors"), str(p), "-o", str(tmp_path), "--allow-bad"]) == 0
    assert "6 entries with NaN/inf inputs flagged" in capsys.readouterr().out
    assert main(["eval", str(d / "sig.safetensors"), str(p), "-o", str(tmp_path)]) == 1
    assert "exists; pass overwrite=True (CLI: --overwrite)" in capsys.readouterr().err
    assert main(["eval", str(d / "sig.safetensors")]) == 1
    assert main(["eval", str(d / "sig.safetensors"), str(p), "--executor", "dask"]) == 1
    assert "--scheduler" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    helptext = capsys.readouterr().out
    for word in ("--model", "--llr", "--full-copy", "--allow-bad", "--executor", "--scheduler", "AddFriend"):
        assert word in helptext


def test_public_api():
    import nfhep.evaluate as module

    assert "evaluate" in nfhep.__all__
    assert callable(nfhep.evaluate) and callable(module)
    assert module.evaluate.__doc__.startswith("Evaluate model files")
