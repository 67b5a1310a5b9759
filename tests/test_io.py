"""nfhep.io: ROOT input (uproot) and atomic TTree output."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import nfhep.io as nio
from conftest import require
from nfhep.io import (
    BadValuesError,
    EmptySelectionError,
    JaggedBranchError,
    MissingBranchError,
    MissingFileError,
    MissingTreeError,
    NonNumericBranchError,
    RootSource,
    SelectionError,
    read_features,
    translate_selection,
    write_friend,
    write_root,
)


def _data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a": rng.normal(size=n),
        "b": rng.normal(size=n).astype(np.float32),
        "k": np.arange(n, dtype=np.int64) + 1000 * seed,
        "flag": (np.arange(n) % 3 == 0),
        "w": rng.uniform(0.5, 2.0, size=n),
    }


@pytest.fixture
def two_files(tmp_path: Path):
    d0, d1 = _data(700, 0), _data(500, 1)
    write_root(tmp_path / "run0.root", "events", d0)
    write_root(tmp_path / "run1.root", "events", d1)
    return tmp_path, d0, d1


# -- writing ------------------------------------------------------------------------------------------
def test_write_root_writes_a_zstd_ttree_readable_by_uproot(tmp_path):
    d = _data(1000, 3)
    n = write_root(tmp_path / "out.root", "t", d)
    assert n == 1000
    with uproot.open(tmp_path / "out.root") as f:
        assert f.classnames() == {"t;1": "TTree"}  # a TTree, not an RNTuple
        assert str(f.file.compression) == "ZSTD(1)"
        got = f["t"].arrays(library="np")
        for k, v in d.items():
            assert got[k].dtype == v.dtype
            np.testing.assert_array_equal(got[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["out.root"]  # no temporary left


def test_write_root_in_chunks_and_other_codecs(tmp_path):
    d = _data(900, 4)
    chunks = ({k: v[i : i + 250] for k, v in d.items()} for i in range(0, 900, 250))
    assert write_root(tmp_path / "c.root", "t", chunks, compression="zlib4") == 900
    with uproot.open(tmp_path / "c.root") as f:
        assert str(f.file.compression) == "ZLIB(4)"
        np.testing.assert_array_equal(f["t"]["a"].array(library="np"), d["a"])
    write_root(tmp_path / "n.root", "t", {"x": np.arange(5.0)}, compression=None)
    with uproot.open(tmp_path / "n.root") as f:
        np.testing.assert_array_equal(f["t"]["x"].array(library="np"), np.arange(5.0))


def test_interrupted_write_leaves_no_file(tmp_path):
    d = _data(300, 5)

    def chunks():
        yield {k: v[:100] for k, v in d.items()}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_root(tmp_path / "out.root", "t", chunks())
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    write_root(tmp_path / "out.root", "t", {"x": np.arange(3.0)})
    before = (tmp_path / "out.root").read_bytes()

    def chunks():
        yield {"x": np.arange(10.0)}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_root(tmp_path / "out.root", "t", chunks())
    assert (tmp_path / "out.root").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.root"]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((3, 2))}, "1-D"),
        ({"x": np.array(["a", "b"])}, "numeric"),
        ({"x": np.zeros(3), "y": np.zeros(4)}, "length"),
    ],
)
def test_write_root_rejects_bad_arrays_and_leaves_nothing(tmp_path, arrays, match):
    with pytest.raises(ValueError, match=match):
        write_root(tmp_path / "bad.root", "t", arrays)
    assert list(tmp_path.iterdir()) == []


def test_parse_compression():
    assert str(nio.parse_compression("zstd1")) == "ZSTD(1)"
    assert str(nio.parse_compression("LZ4")) == "LZ4(1)"
    assert nio.parse_compression("none") is None
    with pytest.raises(ValueError, match="unknown"):
        nio.parse_compression("gzip9")
    with pytest.raises(ValueError, match="level"):
        nio.parse_compression("zlib12")
    assert nio.split_output_spec("o.root:gen", "samples") == ("o.root", "gen")
    assert nio.split_output_spec("o.root", "samples") == ("o.root", "samples")


def test_write_friend_checks_entries(two_files):
    path, d0, _ = two_files
    like = f"{path / 'run0.root'}:events"
    n = write_friend(path / "f.root", "friend", {"score": d0["a"] * 2}, like=like)
    assert n == 700
    with uproot.open(path / "f.root") as f:
        np.testing.assert_array_equal(f["friend"]["score"].array(library="np"), d0["a"] * 2)
    with pytest.raises(ValueError, match="same entries"):
        write_friend(path / "g.root", "friend", {"score": np.zeros(10)}, like=like)
    with pytest.raises(ValueError, match="more entries"):
        write_friend(path / "g.root", "friend", {"score": np.zeros(701)}, like=like)
    assert not (path / "g.root").exists()


# -- reading ------------------------------------------------------------------------------------------
def test_round_trip_glob_context_weights(two_files):
    path, d0, d1 = two_files
    s = read_features(
        str(path / "run*.root:events"), ["a", "b"], context=["k", "flag"], weights="w", step_size=128
    )
    assert s.x.dtype == np.float64 and s.x.shape == (1200, 2)
    np.testing.assert_array_equal(s.x[:, 0], np.concatenate([d0["a"], d1["a"]]))
    np.testing.assert_array_equal(s.x[:, 1], np.concatenate([d0["b"], d1["b"]]).astype(np.float64))
    np.testing.assert_array_equal(s.context[:, 0], np.concatenate([d0["k"], d1["k"]]))
    np.testing.assert_array_equal(s.context[:, 1], np.concatenate([d0["flag"], d1["flag"]]))
    np.testing.assert_array_equal(s.weights, np.concatenate([d0["w"], d1["w"]]))
    assert s.features == ("a", "b") and s.context_features == ("k", "flag") and s.weight_branch == "w"
    assert [Path(src.path).name for src in s.sources] == ["run0.root", "run1.root"]
    assert [src.n_entries for src in s.sources] == [700, 500]
    assert s.sources[0].sha256 == nio.sha256_file(path / "run0.root")
    assert len(s.sources[0].sha256) == 64
    prov = s.provenance()
    assert prov["n_entries"] == 1200 and prov["files"][1]["tree"] == "events"


def test_list_inputs_auto_tree_and_comma_features(two_files):
    path, d0, d1 = two_files
    s = read_features([path / "run1.root", str(path / "run0.root")], "a, b", hash_files=False)
    np.testing.assert_array_equal(s.x[:, 0], np.concatenate([d1["a"], d0["a"]]))
    assert s.sources[0].sha256 is None


def test_selection_root_style_matches_numpy(two_files):
    path, d0, _ = two_files
    f = path / "run0.root"
    s = read_features(f, ["a"], context="k", selection="a > 0 && abs(b) < 1 || !(k < 690)", step_size=100)
    keep = ((d0["a"] > 0) & (np.abs(d0["b"]) < 1)) | ~(d0["k"] < 690)
    np.testing.assert_array_equal(s.x[:, 0], d0["a"][keep])
    assert s.n_read == keep.sum() and s.sources[0].n_selected == keep.sum()
    s2 = read_features(f, ["a"], selection="-0.5 < a <= 0.5")
    np.testing.assert_array_equal(s2.x[:, 0], d0["a"][(d0["a"] > -0.5) & (d0["a"] <= 0.5)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("px > 0 && py < 1", "(px > 0) & (py < 1)"),
        ("px > 0 || !(py < 1)", "(px > 0) | (~(py < 1))"),
        ("a != 1 and b == 2", "(a != 1) & (b == 2)"),
        ("0 < x < 1", "(0 < x) & (x < 1)"),
        ("(a > 1) & (b > 2)", "(a > 1) & (b > 2)"),
        ("sqrt(px**2 + py**2) > 2", "sqrt(px ** 2 + py ** 2) > 2"),
    ],
)
def test_translate_selection(text, expected):
    assert translate_selection(text) == expected


def test_streamed_source_matches_in_memory(two_files):
    path, d0, d1 = two_files
    kw = dict(context="k", weights="w", selection="a > -1", step_size=90)
    s = read_features(str(path / "run*.root"), ["a", "b"], **kw)
    src = RootSource(str(path / "run*.root"), ["a", "b"], **kw)
    assert src.n_entries == s.n_entries
    plain = list(src.iter_chunks(None))
    assert max(len(c["x"]) for c in plain) <= 90
    np.testing.assert_array_equal(np.concatenate([c["x"] for c in plain]), s.x)
    np.testing.assert_array_equal(np.concatenate([c["weights"] for c in plain]), s.weights)
    shuffled = list(src.iter_chunks(7))
    xs = np.concatenate([c["x"] for c in shuffled])
    ks = np.concatenate([c["context"] for c in shuffled])[:, 0]
    assert not np.array_equal(xs, s.x)
    order = np.argsort(ks)
    np.testing.assert_array_equal(xs[order], s.x[np.argsort(s.context[:, 0])])  # same rows, permuted
    again = np.concatenate([c["x"] for c in src.iter_chunks(7)])
    np.testing.assert_array_equal(again, xs)  # reproducible
    np.testing.assert_array_equal(src.read().x, s.x)
    # the in-memory Sample speaks the same protocol
    assert sum(len(c["x"]) for c in s.iter_chunks(3, chunk_size=100)) == s.n_entries


# -- bad inputs -------------------------------------------------------------------------------------
def test_missing_file_and_pattern(tmp_path):
    with pytest.raises(MissingFileError, match="nope.root"):
        read_features(tmp_path / "nope.root", ["a"])
    with pytest.raises(MissingFileError, match="matches no file"):
        read_features(str(tmp_path / "*.root:events"), ["a"])
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, ValueError)


def test_missing_tree_and_ambiguous_tree(tmp_path):
    p = tmp_path / "two.root"
    with uproot.recreate(p) as f:
        f.mktree("t1", {"a": "f8"})
        f.mktree("t2", {"a": "f8"})
        f["t1"].extend({"a": np.zeros(3)})
        f["t2"].extend({"a": np.zeros(3)})
    with pytest.raises(MissingTreeError, match=r"2 trees \(t1, t2\)") as e:
        read_features(p, ["a"])
    assert str(p) in str(e.value)
    with pytest.raises(MissingTreeError, match="'nope' not found.*t1, t2"):
        read_features(f"{p}:nope", ["a"])
    h = tmp_path / "hist.root"
    with uproot.recreate(h) as f:
        f["h"] = np.histogram(np.arange(10.0))
    with pytest.raises(MissingTreeError, match="no TTree"):
        read_features(h, ["a"])
    with pytest.raises(MissingTreeError, match="TH1D, not a TTree"):
        read_features(f"{h}:h", ["a"])
    assert issubclass(MissingTreeError, KeyError)
    np.testing.assert_array_equal(read_features(f"{p}:t2", "a").x, np.zeros((3, 1)))


def test_missing_branch_names_role_tree_file(two_files):
    path, *_ = two_files
    f = path / "run0.root"
    with pytest.raises(MissingBranchError, match=r"context branch 'zz' in tree 'events' of file .*run0") as e:
        read_features(f, ["a"], context=["zz"])
    assert "branches: a, b, flag, k, w" in str(e.value)
    with pytest.raises(MissingBranchError, match="weight branch 'ww'"):
        read_features(f, ["a"], weights="ww")


def test_jagged_and_array_branches(tmp_path):
    p = tmp_path / "jag.root"
    with uproot.recreate(p) as f:
        f.mktree("t", {"x": "f8", "jets": "var * float64", "v3": ("f8", (3,))})
        f["t"].extend(
            {"x": np.arange(4.0), "jets": ak.Array([[1.0], [], [2.0, 3.0], [4.0]]), "v3": np.ones((4, 3))}
        )
    with pytest.raises(JaggedBranchError, match="feature branch 'jets' in tree 't'.*jagged"):
        read_features(p, ["x", "jets"])
    with pytest.raises(JaggedBranchError, match=r"fixed-size array \(3,\)"):
        read_features(p, ["x", "v3"])


@pytest.mark.root
def test_non_numeric_branch(tmp_path):
    ROOT = _import_root()
    path = str(tmp_path / "str.root")
    f = ROOT.TFile(path, "RECREATE")
    t = ROOT.TTree("t", "t")
    x = np.zeros(1)
    s = ROOT.std.string("hello")
    t.Branch("x", x, "x/D")
    t.Branch("s", s)
    for i in range(3):
        x[0] = i
        t.Fill()
    t.Write()
    f.Close()
    with pytest.raises(NonNumericBranchError, match="feature branch 's'.*not numeric.*std::string"):
        read_features(path, ["x", "s"])
    np.testing.assert_array_equal(read_features(path, "x").x[:, 0], [0.0, 1.0, 2.0])


def _bad_file(tmp_path):
    n = 1000
    a = np.linspace(-1, 1, n)
    b = np.ones(n)
    a[[3, 500, 999]] = [np.nan, np.inf, -np.inf]
    b[[3, 10]] = np.nan
    w = np.ones(n)
    w[20] = np.inf
    p = tmp_path / "bad.root"
    write_root(p, "t", {"a": a, "b": b, "w": w})
    return p, a, b, w


def test_nan_inf_error_counts(tmp_path):
    p, *_ = _bad_file(tmp_path)
    with pytest.raises(BadValuesError) as e:
        read_features(p, ["a", "b"], weights="w", step_size=64)
    msg = str(e.value)
    assert "5 rows have NaN or infinite values" in msg
    assert "feature branch 'a': 3 entries" in msg and "feature branch 'b': 2 entries" in msg
    assert "weight branch 'w': 1 entries" in msg and "tree 't'" in msg and "bad.root" in msg
    assert "drop_bad=True" in msg
    assert e.value.n_bad_rows == 5
    assert e.value.counts[(str(p.resolve()), "t", "a")] == 3
    with pytest.raises(BadValuesError):
        RootSource(p, ["a", "b"], weights="w", step_size=64)


def test_drop_bad_drops_and_reports(tmp_path):
    p, a, b, w = _bad_file(tmp_path)
    s = read_features(p, ["a", "b"], weights="w", drop_bad=True, step_size=64)
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(w)
    assert s.n_dropped == 5 and s.n_entries == 995 and s.n_read == 1000
    np.testing.assert_array_equal(s.x[:, 0], a[ok])
    src = RootSource(p, ["a", "b"], weights="w", drop_bad=True, step_size=64)
    assert src.n_entries == 995 and src.n_dropped == 5
    np.testing.assert_array_equal(np.concatenate([c["x"] for c in src.iter_chunks()]), s.x)
    # a selection that avoids the bad rows needs no dropping
    s2 = read_features(p, ["a"], selection="(a > -0.9) & (a < 0.9)")
    assert np.isfinite(s2.x).all()


def test_empty_selection_and_empty_tree(tmp_path, two_files):
    path, *_ = two_files
    with pytest.raises(EmptySelectionError, match=r"selection 'a > 100' keeps 0 of 700 entries"):
        read_features(path / "run0.root", ["a"], selection="a > 100")
    with pytest.raises(EmptySelectionError):
        RootSource(path / "run0.root", ["a"], selection="a > 100")
    e = tmp_path / "empty.root"
    with uproot.recreate(e) as f:
        f.mktree("t", {"a": "f8"})
    with pytest.raises(EmptySelectionError, match="no entries"):
        read_features(e, ["a"])
    p = tmp_path / "allbad.root"
    write_root(p, "t", {"a": np.full(5, np.nan)})
    with pytest.raises(EmptySelectionError, match="all 5 selected entries have NaN"):
        read_features(p, ["a"], drop_bad=True)


def test_bad_selection_and_arguments(two_files):
    path, *_ = two_files
    f = path / "run0.root"
    with pytest.raises(SelectionError, match="not a valid expression"):
        read_features(f, ["a"], selection="a >")
    with pytest.raises(SelectionError, match="'nobranch'"):
        read_features(f, ["a"], selection="nobranch > 1")
    with pytest.raises(ValueError, match="requested twice"):
        read_features(f, ["a"], context=["a"])
    with pytest.raises(ValueError, match="at least one feature"):
        read_features(f, [])
    with pytest.raises(ValueError, match="step_size"):
        read_features(f, ["a"], step_size=0)


# -- a real ROOT file -------------------------------------------------------------------------------
def _hsimple() -> str:
    spec = importlib.util.find_spec("ROOT")
    require(spec is not None and spec.submodule_search_locations, "the ROOT pip package is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "tutorials", "hsimple.root")
    require(os.path.isfile(path), f"hsimple.root not found at {path}")
    return path


def _import_root():
    require(importlib.util.find_spec("ROOT") is not None, "the ROOT pip package is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pip build warns that it is an alpha release
        import ROOT

    ROOT.gROOT.SetBatch(True)
    return ROOT


@pytest.mark.root
def test_hsimple_from_the_root_package():
    path = _hsimple()
    s = read_features(path, ["px", "py", "pz"], context="random", selection="px > 0 && py > 0")
    assert s.sources[0].tree == "ntuple" and s.sources[0].n_entries == 25000
    all_ = read_features(f"{path}:ntuple", ["px", "py", "pz", "random"], step_size=4096)
    keep = (all_.x[:, 0] > 0) & (all_.x[:, 1] > 0)
    np.testing.assert_array_equal(s.x, all_.x[keep, :3])
    # pz = px^2 + py^2 in hsimple.C (float32 arithmetic)
    np.testing.assert_allclose(all_.x[:, 2], all_.x[:, 0] ** 2 + all_.x[:, 1] ** 2, rtol=1e-6)
    # independent reader: ROOT itself
    ROOT = _import_root()
    cols = ROOT.RDataFrame("ntuple", path).AsNumpy(["px", "pz"])
    np.testing.assert_array_equal(all_.x[:, 0], cols["px"].astype(np.float64))
    np.testing.assert_array_equal(all_.x[:, 2], cols["pz"].astype(np.float64))


@pytest.mark.root
def test_root_reads_what_we_write(tmp_path):
    d = _data(200, 9)
    write_root(tmp_path / "o.root", "events", d)
    ROOT = _import_root()
    cols = ROOT.RDataFrame("events", str(tmp_path / "o.root")).AsNumpy(["a", "k"])
    np.testing.assert_array_equal(cols["a"], d["a"])
    np.testing.assert_array_equal(cols["k"], d["k"])
