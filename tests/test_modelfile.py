"""The nfhep model file: save -> load round trips and every malformed-file case -> FormatError."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nfhep import modelfile
from nfhep.modelfile import FormatError

FAMILIES = ("maf", "realnvp", "crqs", "arqs")


def _model(family: str, *, context: bool, dtype=torch.float32, seed: int = 0):
    from nfhep.model import Model

    torch.manual_seed(seed)
    kw = {"context_features": ("c0", "c1")} if context else {}
    m = Model.create(family, ["x0", "x1", "x2"], **kw, **_small_options(family))
    # fitted preprocessing constants and weights moved away from their initial values, so a fresh model
    # built from the configuration alone would differ
    g = torch.Generator().manual_seed(7)
    xfit = 2.0 + 3.0 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    cfit = -1.0 + 0.5 * torch.randn(200, 2, generator=g, dtype=torch.float64) if context else None
    m.preprocessing.fit(xfit, context=cfit)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.to(dtype).eval()


def _small_options(family: str) -> dict:
    from nfhep.cli.train import TRAIN_DEFAULTS, flow_options

    opts = {
        **TRAIN_DEFAULTS,
        "flow": family,
        "bijectors": 2,
        "hidden": "2x16",
        "knots": 5,
        "range": 4.0,
        "activation": "relu",
        "permutation": "reverse",
        "log_features": None,
    }
    return flow_options(opts)


def _inputs(n: int = 64, *, context: bool, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    c = torch.randn(n, 2, generator=g, dtype=torch.float64).to(dtype) if context else None
    return x, c


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved model file (A-RQS, conditional) shared by the corruption tests."""
    path = tmp_path_factory.mktemp("mf") / "model.safetensors"
    m = _model("arqs", context=True)
    modelfile.save(m, path, provenance={"note": "test"})
    return path, m


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", [False, True], ids=["plain", "context"])
def test_round_trip_identical_log_prob(tmp_path, family, context):
    m = _model(family, context=context)
    path = modelfile.save(m, tmp_path / "m.safetensors")
    m2 = modelfile.load(path)
    x, c = _inputs(context=context)
    with torch.no_grad():
        lp1 = m.log_prob(x, context=c)
        lp2 = m2.log_prob(x, context=c)
    assert torch.isfinite(lp1).all()
    assert torch.equal(lp1, lp2)  # bitwise identical
    assert list(m2.features) == ["x0", "x1", "x2"]
    assert tuple(m2.context_features) == (("c0", "c1") if context else ())
    # the same model written twice gives byte-identical tensors and the same checksum
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    # sampling from the loaded model works and is reproducible
    torch.manual_seed(3)
    with torch.no_grad():
        s1 = m.sample(5, context=None if c is None else c[:5])
    torch.manual_seed(3)
    with torch.no_grad():
        s2 = m2.sample(5, context=None if c is None else c[:5])
    assert torch.equal(s1, s2)


def test_float64_round_trip(tmp_path):
    m = _model("crqs", context=False, dtype=torch.float64)
    path = modelfile.save(m, tmp_path / "m.safetensors")
    meta = modelfile.read_metadata(path)
    assert meta["dtype"] == "float64"
    header = modelfile.read_header(path)
    assert {v["dtype"] for v in header["tensors"].values()} >= {"F64"}
    assert "F32" not in {v["dtype"] for v in header["tensors"].values()}
    m2 = modelfile.load(path)
    x, _ = _inputs(context=False, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(m.log_prob(x), m2.log_prob(x))


def test_metadata_content(saved):
    path, m = saved
    meta = modelfile.read_metadata(path)
    assert meta["format"] == "nfhep-flow" and meta["version"] == 1
    assert meta["features"] == ["x0", "x1", "x2"] and meta["context"] == ["c0", "c1"]
    assert meta["flow"]["family"] == "arqs"
    assert meta["flow"] == json.loads(json.dumps(m.config()["flow"]))
    assert meta["preprocessing"] == json.loads(json.dumps(m.config()["preprocessing"]))
    prov = meta["provenance"]
    assert prov["note"] == "test" and prov["nfhep_version"] and prov["created"].endswith("+00:00")
    # tensors are exactly the state_dict, readable by the reference safetensors library too
    ref = load_file(str(path))
    sd = m.state_dict()
    assert set(ref) == set(sd)
    for k, t in sd.items():
        assert torch.equal(ref[k], t), k
    assert meta["checksum"]["value"] == modelfile.tensor_checksum({k: v.numpy() for k, v in ref.items()})


def test_save_is_atomic_and_refuses_nan(tmp_path):
    m = _model("maf", context=False)
    with torch.no_grad():
        next(iter(m.parameters())).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf.*diverged"):
        modelfile.save(m, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        modelfile.save(_model("maf", context=False), tmp_path / "no" / "m.safetensors")


# -- malformed files -------------------------------------------------------------------------------
def _rewrite(src: Path, dst: Path, *, meta=None, tensors=None) -> Path:
    """Write a safetensors file with edited metadata/tensors (recomputing nothing else)."""
    t = load_file(str(src)) if tensors is None else tensors
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    doc = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["nfhep"])
    if meta is not None:
        doc = meta(doc)
    save_file(t, str(dst), metadata={"nfhep": json.dumps(doc)})
    return dst


def _fix_checksum(doc_tensors):
    def edit(doc):
        doc["checksum"]["value"] = modelfile.tensor_checksum({k: v.numpy() for k, v in doc_tensors.items()})
        return doc

    return edit


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        modelfile.load(tmp_path / "nope.safetensors")
    with pytest.raises(FormatError, match="directory"):
        modelfile.load(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -1, -100])
def test_truncated(saved, tmp_path, keep):
    path, _ = saved
    raw = path.read_bytes()
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(raw[:keep])
    with pytest.raises(FormatError, match="too short|truncated|not plausible|trailing|JSON"):
        modelfile.load(bad)


def test_not_a_model_file(tmp_path, saved):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"ROOT\0\0\0\0" + bytes(100))
    with pytest.raises(FormatError):
        modelfile.load(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(FormatError, match="not an nfhep model file"):
        modelfile.load(plain)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"nfhep": "{not json"})
    with pytest.raises(FormatError, match="not valid JSON"):
        modelfile.load(other)


def test_corrupted_data_byte(saved, tmp_path):
    path, _ = saved
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40  # flip a bit in the last tensor's data
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="checksum mismatch"):
        modelfile.load(bad)


def test_corrupted_header(saved, tmp_path):
    path, _ = saved
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].decode()
    i = header.index('"data_offsets":[') + len('"data_offsets":[')
    j = header.index("]", i)
    first, second = header[i:j].split(",")
    edited = header[:i] + f"{first},{int(second) + 4}" + header[j:]
    edited = edited[:n].ljust(n)
    bad = tmp_path / "h.safetensors"
    bad.write_bytes(bytes(raw[:8]) + edited.encode() + bytes(raw[8 + n :]))
    with pytest.raises(FormatError, match="offsets span|needs .* bytes|overlapping|truncated"):
        modelfile.load(bad)
    # header length pointing past the end of the file
    big = bytearray(raw)
    big[:8] = struct.pack("<Q", len(raw) * 2)
    bad.write_bytes(bytes(big))
    with pytest.raises(FormatError, match="truncated"):
        modelfile.load(bad)
    # absurd header length
    big[:8] = struct.pack("<Q", 2**62)
    bad.write_bytes(bytes(big))
    with pytest.raises(FormatError, match="not plausible"):
        modelfile.load(bad)
    # trailing garbage after the data
    bad.write_bytes(bytes(raw) + b"extra")
    with pytest.raises(FormatError, match="trailing"):
        modelfile.load(bad)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: {**d, "version": 4}, "version 4 is not supported.*upgrade nfhep"),
        (
            lambda d: {**d, "preprocessing": {**d["preprocessing"], "kinds": None}},
            "version 1.*'kinds'",
        ),
        (lambda d: {**d, "version": "1"}, "version '1' is not supported"),
        (lambda d: {**d, "version": 0}, "version 0 is not supported"),
        (lambda d: {**d, "format": "other-flow"}, "format 'other-flow'"),
        (lambda d: {k: v for k, v in d.items() if k != "flow"}, "lacks the required key 'flow'"),
        (lambda d: {**d, "dtype": "float16"}, "dtype 'float16'"),
        (lambda d: {**d, "flow": {**d["flow"], "family": "glow"}}, "invalid model configuration"),
        (lambda d: {**d, "checksum": {"algorithm": "md5", "value": "x"}}, "not a sha256 checksum"),
    ],
)
def test_bad_metadata(saved, tmp_path, edit, match):
    path, _ = saved
    bad = _rewrite(path, tmp_path / "m.safetensors", meta=edit)
    with pytest.raises(FormatError, match=match):
        modelfile.load(bad)


def test_missing_extra_misshaped_wrong_dtype_tensors(saved, tmp_path):
    path, _ = saved
    tensors = load_file(str(path))
    name = sorted(k for k, v in tensors.items() if v.dtype.is_floating_point and v.ndim == 2)[0]

    t = dict(tensors)
    del t[name]
    bad = _rewrite(path, tmp_path / "a.safetensors", tensors=t, meta=_fix_checksum(t))
    with pytest.raises(FormatError, match=f"missing \\['{name}'\\]"):
        modelfile.load(bad)

    t = dict(tensors, surplus=torch.zeros(3))
    bad = _rewrite(path, tmp_path / "b.safetensors", tensors=t, meta=_fix_checksum(t))
    with pytest.raises(FormatError, match="unexpected \\['surplus'\\]"):
        modelfile.load(bad)

    t = dict(tensors)
    t[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)
    bad = _rewrite(path, tmp_path / "c.safetensors", tensors=t, meta=_fix_checksum(t))
    with pytest.raises(FormatError, match=f"tensor '{name}' has shape"):
        modelfile.load(bad)

    t = dict(tensors)
    t[name] = tensors[name].double()
    bad = _rewrite(path, tmp_path / "d.safetensors", tensors=t, meta=_fix_checksum(t))
    with pytest.raises(FormatError, match=f"tensor '{name}' has dtype torch.float64"):
        modelfile.load(bad)

    t = dict(tensors)
    t[name] = tensors[name].clone()
    t[name].view(-1)[0] = float("inf")
    bad = _rewrite(path, tmp_path / "e.safetensors", tensors=t, meta=_fix_checksum(t))
    with pytest.raises(FormatError, match="NaN or inf"):
        modelfile.load(bad)

    t = dict(tensors, half=torch.zeros(2, dtype=torch.float16))
    bad = _rewrite(path, tmp_path / "f.safetensors", tensors=t)
    with pytest.raises(FormatError, match="dtype 'F16'"):
        modelfile.load(bad)


def test_no_pickle_no_torch_load(monkeypatch, saved):
    """Loading never goes through pickle or torch.load (model files are data, never code)."""
    import pickle

    path, m = saved

    def forbidden(*a, **k):
        raise AssertionError("pickle/torch.load used while reading a model file")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    m2 = modelfile.load(path)
    x, c = _inputs(context=True)
    with torch.no_grad():
        assert torch.equal(m.log_prob(x, context=c), m2.log_prob(x, context=c))


def test_checksum_definition():
    a = {"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), dtype=np.float64)}
    import hashlib

    h = hashlib.sha256()
    for name in ("a", "b"):
        arr = a[name]
        code = {"float64": "F64", "float32": "F32"}[str(arr.dtype)]
        h.update(name.encode() + b"\0" + code.encode() + b"\0")
        h.update(struct.pack(f"<{arr.ndim}Q", *arr.shape))
        h.update(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    assert modelfile.tensor_checksum(a) == h.hexdigest()
    assert modelfile.tensor_checksum({"b": a["b"], "a": a["a"]}) == h.hexdigest()


def test_top_level_aliases():
    import nfhep

    assert nfhep.load is modelfile.load and nfhep.save is modelfile.save
    assert nfhep.FormatError is FormatError and issubclass(FormatError, ValueError)


@pytest.mark.parametrize("family", ["arqs", "realnvp"])
def test_round_trip_with_every_option(tmp_path, family):
    """ActNorm, batch norm (running statistics, int64 counter), dropout, random permutations, bounds and
    log features all survive the file."""
    from nfhep.cli.train import TRAIN_DEFAULTS, flow_options
    from nfhep.model import Model

    opts = {
        **TRAIN_DEFAULTS,
        "flow": family,
        "bijectors": 3,
        "hidden": "2x8",
        "knots": 4,
        "range": 3.0,
        "permutation": "random",
        "seed": 5,
        "dropout": 0.1,
        "batch_norm": True,
        "actnorm": True,
        "log_features": ["x1"],
        "bounds": "x2=0:1",
        "auto_preprocess": False,  # the declared log/bounds, not nfhep train's automatic analysis
    }
    torch.manual_seed(0)
    m = Model.create(family, ["x0", "x1", "x2"], **flow_options(opts))
    g = torch.Generator().manual_seed(2)
    x = torch.stack(
        [
            torch.randn(300, generator=g, dtype=torch.float64),
            torch.rand(300, generator=g, dtype=torch.float64) * 5 + 0.1,
            torch.rand(300, generator=g, dtype=torch.float64) * 0.98 + 0.01,
        ],
        dim=1,
    )
    m.preprocessing.fit(x)
    m.train()
    with torch.no_grad():
        m.log_prob(x.float())  # initialises ActNorm and the batch-norm running statistics
    m.eval()
    path = modelfile.save(m, tmp_path / "m.safetensors")
    header = modelfile.read_header(path)
    assert any(
        k.endswith("num_batches_tracked") and v["dtype"] == "I64" for k, v in header["tensors"].items()
    )
    assert any(k.endswith("running_var") for k in header["tensors"])
    perms = header["nfhep"]["permutations"]
    assert len(perms) == 2 and all(sorted(p) == [0, 1, 2] for p in perms.values())
    m2 = modelfile.load(path)
    with torch.no_grad():
        assert torch.equal(m.log_prob(x.float()), m2.log_prob(x.float()))
    meta = header["nfhep"]
    assert meta["preprocessing"]["log"] == [1] and meta["preprocessing"]["bounds"][2] == [0.0, 1.0]


def test_permutation_metadata_must_match_tensors(saved, tmp_path):
    path, _ = saved

    def edit(doc):
        key = next(iter(doc["permutations"]))
        doc["permutations"][key] = doc["permutations"][key][::-1][1:] + doc["permutations"][key][::-1][:1]
        return doc

    bad = _rewrite(path, tmp_path / "p.safetensors", meta=edit)
    with pytest.raises(FormatError, match="permutations in the metadata differ"):
        modelfile.load(bad)
