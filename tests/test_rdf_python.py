"""``nfhep.rdf``: log p of a model file as an RDataFrame column, in a local ``ROOT.RDataFrame`` (also under
implicit MT) and in a distributed one on a ``dask.distributed.LocalCluster`` of two worker processes.

The reference is :class:`nfhep.Engine` on the whole ntuple read with uproot (the per-event path agrees to
float rounding: the macro tests' tolerances). The distributed values must equal the local ones entry by
entry (bit for bit: the same one-event code path), the friend tree written by the distributed ``Snapshot``
must line up with the input chain when read back with uproot, and each worker process must load a model
file at most once. Marked ``root``: fails, not skips, under ``CI=true`` when ROOT or dask is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil

import numpy as np
import pytest
import torch
import uproot

import nfhep
from conftest import require
from test_engine import _make

pytestmark = pytest.mark.root

SIZES = (2500, 1800, 3100)  # three files, written in baskets of 500 entries (several clusters per file)
# one event at a time vs the engine's blocks of 256: float32 rounding differs by up to ~1e-5 relative on
# these models (as Engine.log_prob on 1..255 rows vs 256; torch float32 vs float64 differs as much)
TOL = {"float32": 2e-5, "float64": 1e-10}
BAD = 1234  # global index of the entry with a NaN feature


@pytest.fixture(scope="module")
def ROOT():
    require(
        importlib.util.find_spec("ROOT") is not None,
        "the ROOT pip build (`pip install root`) is not installed",
    )
    import nfhep.rdf

    root = nfhep.rdf._import_root()
    root.gROOT.SetBatch(True)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three ntuples (x0 float64, x1 float32, x2 int32, c0 float64, idx = global entry index) and two
    models: a conditional A-RQS in float32 and a MAF in float64."""
    d = tmp_path_factory.mktemp("rdf")
    files, parts = [], []
    start = 0
    for k, n in enumerate(SIZES):
        rng = np.random.default_rng(100 + k)
        a = {
            "x0": rng.normal(0.5, 1.5, n),
            "x1": rng.normal(0.5, 1.5, n).astype(np.float32),
            "x2": rng.integers(-2, 4, n).astype(np.int32),
            "c0": rng.normal(1.0, 2.0, n),
            "idx": np.arange(start, start + n, dtype=np.int64),
        }
        if start <= BAD < start + n:
            a["x0"][BAD - start] = np.nan
        p = d / f"in{k}.root"
        with uproot.recreate(p) as f:
            f.mktree("events", {b: v.dtype for b, v in a.items()})
            for i in range(0, n, 500):
                f["events"].extend({b: v[i : i + 500] for b, v in a.items()})
        files.append(str(p))
        parts.append(a)
        start += n
    arrays = {b: np.concatenate([p[b] for p in parts]) for b in parts[0]}
    models = {
        "arqs32": str(
            nfhep.save(_make("arqs", d=3, context=1, dtype=torch.float32, key=31), d / "a.safetensors")
        ),
        "maf64": str(nfhep.save(_make("maf", d=3, dtype=torch.float64, key=32), d / "m.safetensors")),
    }
    return {"dir": d, "files": files, "arrays": arrays, "models": models}


def _engine_lp(model: str, arrays: dict) -> np.ndarray:
    eng = nfhep.Engine(model)
    dt = np.dtype(eng.dtype)
    x = np.stack([arrays[f].astype(dt) for f in eng.features], axis=1)
    c = (
        np.stack([arrays[f].astype(dt) for f in eng.context_features], axis=1)
        if eng.context_features
        else None
    )
    return eng.log_prob(x, c)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(b)
    assert np.array_equal(np.isfinite(a), ok), "finite / non-finite entries differ"
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))))


def _sorted(cols: dict) -> dict:
    o = np.argsort(cols["idx"], kind="stable")
    return {k: np.asarray(v)[o] for k, v in cols.items()}


# ------------------------------------------------------------------------------------------------
# setup


def test_setup_is_idempotent_and_loads_the_engine(ROOT, data, tmp_path):
    import nfhep.rdf

    nfhep.rdf.setup()
    nfhep.rdf.setup()  # again: nothing happens
    flow = ROOT.nfhep.Flow.load(data["models"]["arqs32"])  # the C++ engine, from Python via cling
    assert flow.num_features() == 3 and flow.num_context() == 1 and flow.is_float32()
    assert "nfhep/root.hpp" in nfhep.rdf.declaration() and "#pragma cling load" in nfhep.rdf.declaration()
    other = tmp_path / "libnfhep_core.so"
    shutil.copy(nfhep.cli.config.library_path(), other)
    with pytest.raises(RuntimeError, match="already loaded nfhep from"):
        nfhep.rdf.setup(library=other)
    with pytest.raises(FileNotFoundError, match="holds no nfhep/root.hpp"):
        nfhep.rdf.setup(include_dir=tmp_path)


def test_setup_without_root_says_how_to_install_it(monkeypatch):
    import sys

    import nfhep.rdf

    monkeypatch.setattr(nfhep.rdf, "_declared", None)
    monkeypatch.setitem(sys.modules, "ROOT", None)  # `import ROOT` raises ImportError
    with pytest.raises(ImportError, match=r"nfhep.rdf needs ROOT's Python bindings .*pip install root"):
        nfhep.rdf.setup()


# ------------------------------------------------------------------------------------------------
# local RDataFrame


@pytest.mark.parametrize("which", ["arqs32", "maf64"])
def test_local_define_logp_matches_the_engine(ROOT, data, which):
    import nfhep.rdf

    model = data["models"][which]
    df = nfhep.rdf.define_logp(ROOT.RDataFrame("events", data["files"]), model)
    assert str(df.GetColumnType("nf_logp")) == ("float" if which == "arqs32" else "double")
    cols = df.AsNumpy(["idx", "nf_logp"])
    assert np.array_equal(cols["idx"], data["arrays"]["idx"])  # no IMT: entry order
    lp = cols["nf_logp"]
    ref = _engine_lp(model, data["arrays"])
    dtype = nfhep.Engine(model).dtype
    assert lp.dtype == np.dtype(dtype) and lp.shape == (sum(SIZES),)
    assert np.isnan(lp[BAD]) and np.isfinite(np.delete(lp, BAD)).all()
    assert _rel(lp, ref) <= TOL[dtype]


def test_local_columns_mapping_and_implicit_mt(ROOT, data):
    """Inputs from differently named columns (a sequence and a mapping give the same column), evaluated by
    two implicit-MT threads at once: the same numbers as without threads, entry by entry."""
    import nfhep.rdf

    model = data["models"]["arqs32"]
    base = ROOT.RDataFrame("events", data["files"])
    ref = nfhep.rdf.define_logp(base, model).AsNumpy(["nf_logp"])["nf_logp"]
    ROOT.EnableImplicitMT(2)
    try:
        df = ROOT.RDataFrame("events", data["files"])
        assert df.GetNSlots() == 2
        df = df.Define("a", "x0").Define("b", "x1").Define("ctx", "c0")
        df = nfhep.rdf.define_logp(df, model, ["a", "b", "x2", "ctx"], name="lp_seq")
        df = nfhep.rdf.define_logp(df, model, {"x0": "a", "x1": "b", "c0": "ctx"}, name="lp_map")
        cols = _sorted(df.AsNumpy(["idx", "lp_seq", "lp_map"]))
    finally:
        ROOT.DisableImplicitMT()
    assert np.array_equal(cols["idx"], data["arrays"]["idx"])
    assert np.array_equal(cols["lp_seq"], ref, equal_nan=True)
    assert np.array_equal(cols["lp_map"], ref, equal_nan=True)


def test_define_logp_refuses_bad_arguments(ROOT, data, tmp_path):
    import nfhep.rdf

    model = data["models"]["arqs32"]
    df = ROOT.RDataFrame("events", data["files"]).Define("v", "ROOT::RVecF{1.f, 2.f}")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        nfhep.rdf.define_logp(df, tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=r"takes 4 input columns \(x0, x1, x2, c0\), got 3"):
        nfhep.rdf.define_logp(df, model, ["x0", "x1", "x2"])
    with pytest.raises(ValueError, match=r"maps \['y'\], which are not inputs"):
        nfhep.rdf.define_logp(df, model, {"y": "x0"})
    with pytest.raises(ValueError, match="context feature 'c0' from column 'zz', which the data frame"):
        nfhep.rdf.define_logp(df, model, {"c0": "zz"})
    with pytest.raises(TypeError, match=r"column 'v' \(model input 'x0'\) has type ROOT::VecOps::RVec"):
        nfhep.rdf.define_logp(df, model, {"x0": "v"})
    with pytest.raises(ValueError, match="already has a column 'x1'"):
        nfhep.rdf.define_logp(df, model, name="x1")
    with pytest.raises(ValueError, match=r"must be a C\+\+ identifier"):
        nfhep.rdf.define_logp(df, model, name="nf logp")
    with pytest.raises(TypeError, match="sequence of column names or a mapping"):
        nfhep.rdf.define_logp(df, model, "x0")
    # a C++ expression as an input works (here: the RVec's first value instead of x0)
    one = nfhep.rdf.define_logp(df, model, {"x0": "v[0]"}).Range(3).AsNumpy(["nf_logp", "x1", "x2", "c0"])
    eng = nfhep.Engine(model)
    x = np.stack([np.ones(3), one["x1"], one["x2"]], axis=1).astype(np.float32)
    assert _rel(one["nf_logp"], eng.log_prob(x, one["c0"][:, None].astype(np.float32))) <= TOL["float32"]


def test_a_changed_model_file_is_an_error_at_event_loop_time(ROOT, data, tmp_path):
    """The column is defined with the model's checksum; a process that reads another file under that path
    refuses it (naming both checksums) instead of computing with another model."""
    import nfhep.rdf

    path = tmp_path / "changing.safetensors"
    shutil.copy(data["models"]["arqs32"], path)
    df = nfhep.rdf.define_logp(ROOT.RDataFrame("events", data["files"][0]), path)
    before = nfhep.Engine(path).checksum
    nfhep.save(_make("arqs", d=3, context=1, dtype=torch.float32, key=77), path)
    after = nfhep.Engine(path).checksum
    why = f"has tensor checksum {after}, but the column was defined with {before}"
    with pytest.raises(ROOT.std.runtime_error, match=re.escape(why)) as err:
        df.Sum("nf_logp").GetValue()
    assert str(path) in str(err.value)
    assert not any(r["path"] == str(path) for r in nfhep.rdf.loaded_models())  # the refused file is not kept


WORKER_WITHOUT_NFHEP = r"""
import sys, warnings
warnings.simplefilter("ignore")
import ROOT
code, fn, files = sys.argv[1], sys.argv[2], sys.argv[3:]
ROOT.gInterpreter.Declare(code)  # what distributed RDataFrame does at the start of each task
try:
    ROOT.RDataFrame("events", files).Define("lp", f"::nfhep_rdf::{fn}(x0, x1, x2)").Sum("lp").GetValue()
except Exception as err:
    print("ERROR", err)
"""


def test_a_process_without_the_installation_gets_a_clear_error(ROOT, data, tmp_path):
    """A worker that lacks nfhep under the client's paths compiles the distributed declarations anyway
    and its task fails with a message naming the paths (not an anonymous JIT error)."""
    import subprocess
    import sys

    import nfhep.cli.config as config
    import nfhep.rdf

    fake = tmp_path / "elsewhere"
    shutil.copytree(config.include_dir(), fake / "include")
    shutil.copytree(config.library_dir(), fake / "lib")
    lib = fake / "lib" / "libnfhep_core.so"
    decl = nfhep.rdf.declaration(include_dir=fake / "include", library=lib)
    model = data["models"]["maf64"]
    fn, code = nfhep.rdf._model_code(model, nfhep.Engine(model).checksum, "float64")
    shutil.rmtree(fake)  # the client had it, this "worker" does not
    script = tmp_path / "worker.py"
    script.write_text(WORKER_WITHOUT_NFHEP)
    r = subprocess.run(
        [sys.executable, str(script), decl + code, fn, *data["files"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"cannot use nfhep: {fake}/include/nfhep/root.hpp or {lib} does not exist there" in r.stdout, (
        r.stdout[-2000:] + r.stderr[-2000:]
    )


def test_a_model_is_loaded_once_per_process(ROOT, data):
    import nfhep.rdf

    model = data["models"]["maf64"]
    for _ in range(2):  # two more data frames and event loops over the same model file
        nfhep.rdf.define_logp(ROOT.RDataFrame("events", data["files"][1]), model).Sum("nf_logp").GetValue()
    loads = [r for r in nfhep.rdf.loaded_models() if r["path"] == model]
    assert len(loads) == 1 and loads[0]["pid"] == os.getpid() and loads[0]["dtype"] == "float64"


# ------------------------------------------------------------------------------------------------
# distributed RDataFrame (dask)


@pytest.fixture(scope="module")
def client(ROOT):
    require(
        importlib.util.find_spec("distributed") is not None,
        'dask.distributed (`pip install "dask[distributed]"`) is not installed',
    )
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_distributed_matches_local_entry_by_entry(ROOT, data, client, tmp_path):
    import nfhep.rdf

    a, m = data["models"]["arqs32"], data["models"]["maf64"]
    local = nfhep.rdf.define_logp(ROOT.RDataFrame("events", data["files"]), a, name="lp_a")
    local = nfhep.rdf.define_logp(local, m, name="lp_m").AsNumpy(["idx", "lp_a", "lp_m"])

    df = ROOT.RDataFrame("events", data["files"], executor=client, npartitions=2)  # 2 entry ranges
    assert nfhep.rdf.is_distributed(df)
    df = nfhep.rdf.define_logp(df, a, name="lp_a")
    df = nfhep.rdf.define_logp(df, m, name="lp_m").Define("llr", "double(lp_a) - lp_m")
    assert nfhep.rdf.is_distributed(df)
    dist = _sorted(df.AsNumpy(["idx", "lp_a", "lp_m", "llr"]))  # not in entry order
    assert np.array_equal(dist["idx"], data["arrays"]["idx"])
    for col in ("lp_a", "lp_m"):
        assert dist[col].dtype == local[col].dtype
        assert np.array_equal(dist[col], local[col], equal_nan=True), col
    assert _rel(dist["lp_a"], _engine_lp(a, data["arrays"])) <= TOL["float32"]
    assert _rel(dist["lp_m"], _engine_lp(m, data["arrays"])) <= TOL["float64"]
    assert np.array_equal(dist["llr"], local["lp_a"].astype(np.float64) - local["lp_m"], equal_nan=True)

    # a friend tree: one file per task (entry range), out_<k>.root; in the order of k they hold the entries
    # of the input chain in order (ranges are cut on cluster boundaries; here the first reads two files)
    df.Snapshot("events_nf", str(tmp_path / "out.root"), ["idx", "lp_a", "lp_m"])
    parts = sorted(tmp_path.glob("out_*.root"), key=lambda p: int(p.stem.split("_")[-1]))
    assert len(parts) >= 2, parts
    got = {}
    for p in parts:
        with uproot.open(p) as f:
            t = f["events_nf"].arrays(["idx", "lp_a", "lp_m"], library="np")
        for k, v in t.items():
            got.setdefault(k, []).append(v)
    got = {k: np.concatenate(v) for k, v in got.items()}
    assert np.array_equal(got["idx"], data["arrays"]["idx"])
    assert np.array_equal(got["lp_a"], local["lp_a"], equal_nan=True)
    assert np.array_equal(got["lp_m"], local["lp_m"], equal_nan=True)

    # every worker process loaded each model at most once (two event loops of two tasks ran on the cluster)
    per_worker = client.run(nfhep.rdf.loaded_models)
    assert len(per_worker) == 2
    for model in (a, m):
        counts = [sum(r["path"] == model for r in recs) for recs in per_worker.values()]
        assert max(counts) == 1 and sum(counts) >= 1, (model, per_worker)


def test_distributed_worker_refuses_a_different_model_file(ROOT, data, client, tmp_path):
    """A worker that reads another file under the model's path (here: replaced after define_logp) fails
    the run with the C++ message naming the file and both checksums, re-raised by distributed RDF."""
    import nfhep.rdf

    path = tmp_path / "swapped.safetensors"
    shutil.copy(data["models"]["maf64"], path)
    before = nfhep.Engine(path).checksum
    df = ROOT.RDataFrame("events", data["files"][0], executor=client, npartitions=2)
    df = nfhep.rdf.define_logp(df, path)
    nfhep.save(_make("maf", d=3, dtype=torch.float64, key=99), path)
    after = nfhep.Engine(path).checksum
    with pytest.raises(
        RuntimeError,
        match=re.escape(f"has tensor checksum {after}, but the column was defined with {before}"),
    ) as err:
        df.Sum("nf_logp").GetValue()
    assert str(path) in str(err.value) and "on host" in str(err.value)
