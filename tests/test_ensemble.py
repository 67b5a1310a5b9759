"""Ensembles of flows (``nfhep train --ensemble``): the mixture density, its model file (version 3), the C++
engine (log p, each member's log p, sampling) and the ONNX export, against float64 references."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
import uproot
from safetensors.numpy import load_file, save_file
from scipy.special import logsumexp

import nfhep
from nfhep import modelfile
from nfhep.flows import MAX_MEMBERS, Ensemble, build_flow
from nfhep.model import Model
from nfhep.modelfile import FormatError

FAMILIES = ["maf", "realnvp", "crqs", "arqs"]


def _ensemble(family, *, d=3, context=0, members=3, dtype=torch.float64, key=0, names=None):
    """An ensemble of `members` flows with weights moved well away from the identity, each differently."""
    torch.manual_seed(key)
    names = [f"x{j}" for j in range(d)] if names is None else names
    ctx = [f"c{j}" for j in range(context)]
    opts = {"bijectors": 2, "hidden": [12, 10]}
    if family in ("crqs", "arqs"):
        opts.update(knots=5, range=3.0)
    flows = []
    for k in range(members):
        m = Model.create(family, names, context_features=ctx, seed=k, **opts)
        g = torch.Generator().manual_seed(100 * key + k)
        with torch.no_grad():
            for name, p in m.flow.named_parameters():
                p.add_((0.3 if name.endswith("weight") else 0.2) * torch.randn(p.shape, generator=g))
        flows.append(m.flow)
    pre = Model.create(family, names, context_features=ctx, **opts).preprocessing
    rng = np.random.default_rng(key)
    x = rng.normal(0.5, 1.5, size=(400, d))
    c = rng.normal(1.0, 2.0, size=(400, context)) if context else None
    pre.fit(x, context=c)
    return Model(Ensemble(flows), pre, names, ctx).to(dtype).eval()


def _events(n, d, context, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 2.0, size=(n, d))
    c = rng.normal(1.0, 2.0, size=(n, context)) if context else None
    return x, c


def _members_reference(m, x, c=None):
    """Each member's log p in data units from the members as single-flow Models (float64)."""
    out = []
    for f in m.flow.members:
        single = Model(f, m.preprocessing, m.features, m.context_features).double()
        with torch.no_grad():
            ct = None if c is None else torch.as_tensor(c, dtype=torch.float64)
            out.append(single.log_prob(torch.as_tensor(x, dtype=torch.float64), ct).numpy())
    return np.stack(out, 1)


# -- the Python mixture -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_is_the_average_of_the_member_densities(family):
    m = _ensemble(family, context=2)
    x, c = _events(300, 3, 2)
    each = _members_reference(m, x, c)
    ref = logsumexp(each, axis=1) - math.log(3)
    with torch.no_grad():
        lp = m.log_prob(torch.from_numpy(x), torch.from_numpy(c)).numpy()
        got = m.member_log_probs(x, c).numpy()
    np.testing.assert_allclose(lp, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, each, rtol=1e-12, atol=1e-12)
    assert m.members == 3 and got.shape == (300, 3)
    # the members really differ (else the test shows nothing)
    assert np.std(each, axis=1).mean() > 0.05


def test_single_flow_member_log_probs_is_its_log_prob():
    m = Model.create("maf", ["a", "b"], bijectors=1, hidden=[8]).double().eval()
    m.preprocessing.fit(np.random.default_rng(0).normal(size=(50, 2)))
    x = np.random.default_rng(1).normal(size=(20, 2))
    with torch.no_grad():
        np.testing.assert_array_equal(m.member_log_probs(x)[:, 0].numpy(), m.log_prob(x).numpy())
    assert m.members == 1


def test_sample_and_log_prob_is_the_mixture_density():
    m = _ensemble("arqs")
    x, lp = m.sample_and_log_prob(500, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(lp.numpy(), m.log_prob(x).numpy(), rtol=1e-10, atol=1e-10)
    assert torch.isfinite(x).all()


def test_mixture_draws_each_member_equally_often():
    # members moved far apart by their last layer's bias: each event is attributable to its member
    m = _ensemble("maf", d=1, members=4)
    for k, f in enumerate(m.flow.members):
        with torch.no_grad():
            for p in f.parameters():
                p.zero_()
            f.layers[-1].conditioner.net[-1].bias[1] = -8.0 * k  # the shift t: u = z - t
    x = m.sample(40_000, generator=torch.Generator().manual_seed(1)).numpy()[:, 0]
    sd = m.preprocessing.std.item()
    centre = m.preprocessing.mean.item() + 8.0 * sd * np.arange(4)
    k = np.argmin(np.abs(x[:, None] - centre[None, :]), axis=1)
    counts = np.bincount(k, minlength=4)
    assert np.all(np.abs(counts - 10_000) < 5 * math.sqrt(40_000 * 0.25 * 0.75)), counts


def test_ensemble_refuses_bad_members():
    a = build_flow(Model.create("maf", ["a", "b"], hidden=[8]).flow.config)
    b = build_flow({**a.config, "hidden": [9]})
    with pytest.raises(ValueError, match="member 1 differs from member 0 in \\['hidden'\\]"):
        Ensemble([a, b])
    with pytest.raises(ValueError, match="needs 2 to 64 member flows, got 1"):
        Ensemble([a])
    with pytest.raises(TypeError, match="not an ensemble"):
        Ensemble([a, Ensemble([a, a])])
    with pytest.raises(TypeError, match="not a bijection"):
        Ensemble([a, a]).transform(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="unknown key"):
        build_flow({"family": "ensemble", "members": [a.config, a.config], "weights": [0.5, 0.5]})
    with pytest.raises(ValueError, match="'features' = 3 differs"):
        build_flow({"family": "ensemble", "features": 3, "members": [a.config, a.config]})
    assert MAX_MEMBERS == 64


def test_config_round_trip_and_tensor_names():
    m = _ensemble("crqs", context=1)
    cfg = m.config()
    assert cfg["flow"]["family"] == "ensemble" and len(cfg["flow"]["members"]) == 3
    assert [f["seed"] for f in cfg["flow"]["members"]] == [0, 1, 2]
    again = Model.from_config(json.loads(json.dumps(cfg)))
    assert set(again.state_dict()) == set(m.state_dict())
    assert any(k.startswith("flow.members.2.layers.") for k in m.state_dict())


# -- the model file ------------------------------------------------------------------------------------
def test_model_file_round_trip_is_version_3(tmp_path):
    m = _ensemble("arqs", context=2, dtype=torch.float32)
    path = modelfile.save(m, tmp_path / "e.safetensors")
    meta = modelfile.read_metadata(path)
    assert meta["version"] == 3 and meta["flow"]["family"] == "ensemble"
    back = modelfile.load(path)
    x, c = _events(100, 3, 2)
    with torch.no_grad():
        a = m.log_prob(torch.tensor(x, dtype=torch.float32), torch.tensor(c, dtype=torch.float32))
        b = back.log_prob(torch.tensor(x, dtype=torch.float32), torch.tensor(c, dtype=torch.float32))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    # a single flow stays version 2 (or 1)
    single = Model(m.flow.members[0], m.preprocessing, m.features, m.context_features)
    assert modelfile.read_metadata(modelfile.save(single, tmp_path / "s.safetensors"))["version"] in (1, 2)


def _rewrite(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    doc = edit(json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["nfhep"]))
    save_file(load_file(str(src)), str(dst), metadata={"nfhep": json.dumps(doc)})
    return dst


def _set(doc, **kw):
    doc.update(kw)
    return doc


def _member_option(doc, key, value):
    doc["flow"]["members"][1][key] = value
    return doc


@pytest.mark.parametrize(
    "edit, python_msg, engine_msg",
    [
        (lambda d: _set(d, version=2), "needs model-file version 3", "needs model-file version 3"),
        (
            lambda d: _member_option(d, "activation", "tanh"),
            "member 1 differs from member 0",
            "flow.members\\[1\\] differs from flow.members\\[0\\]",
        ),
        (
            lambda d: _set(d, flow={**d["flow"], "members": d["flow"]["members"][:1]}),
            "needs 2 to 64",
            "list of 2 to 64",
        ),
        (
            lambda d: _set(d, flow={**d["flow"], "mixing": [1, 2, 3]}),
            "unknown key",
            "has the key 'mixing'",
        ),
        (
            lambda d: _member_option(d, "family", "ensemble"),
            "not an ensemble",
            "is not supported",
        ),
    ],
    ids=["version", "member-differs", "one-member", "unknown-key", "nested"],
)
def test_bad_ensemble_files_are_refused_by_both_readers(tmp_path, edit, python_msg, engine_msg):
    src = modelfile.save(_ensemble("maf"), tmp_path / "e.safetensors")
    bad = _rewrite(src, tmp_path / "bad.safetensors", edit)
    with pytest.raises(FormatError, match=python_msg):
        modelfile.load(bad)
    with pytest.raises(FormatError, match=engine_msg):
        nfhep.Engine(bad)


def test_a_version_3_file_must_hold_an_ensemble(tmp_path):
    m = _ensemble("maf")
    single = Model(m.flow.members[0], m.preprocessing, m.features)
    src = modelfile.save(single, tmp_path / "s.safetensors")
    bad = _rewrite(src, tmp_path / "bad.safetensors", lambda d: _set(d, version=3))
    with pytest.raises(FormatError, match="a version 3 file holds an ensemble"):
        modelfile.load(bad)
    with pytest.raises(FormatError, match="a version 3 file holds an ensemble"):
        nfhep.Engine(bad)


# -- the C++ engine --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", [0, 2], ids=["plain", "context"])
def test_engine_log_prob_and_members_match_torch(tmp_path, family, context):
    m = _ensemble(family, context=context)
    eng = nfhep.Engine(modelfile.save(m, tmp_path / "e.safetensors"))
    assert eng.family == "ensemble" and eng.members == 3
    x, c = _events(700, 3, context)  # 700: several engine chunks
    each = _members_reference(m, x, c)
    ref = logsumexp(each, axis=1) - math.log(3)
    lp = eng.log_prob(x, c)
    np.testing.assert_allclose(lp, ref, rtol=1e-10, atol=1e-10)
    got, lp2 = eng.log_prob_members(x, c, return_log_prob=True)
    assert got.shape == (700, 3)
    np.testing.assert_allclose(got, each, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(lp2, lp)
    # float32 model
    m32 = m.float()
    e32 = nfhep.Engine(modelfile.save(m32, tmp_path / "e32.safetensors"))
    np.testing.assert_allclose(
        e32.log_prob(x.astype(np.float32), None if c is None else c.astype(np.float32)),
        ref,
        rtol=2e-5,
        atol=2e-5,
    )


def test_engine_support_and_nan_rows(tmp_path):
    m = _ensemble("arqs")
    eng = nfhep.Engine(modelfile.save(m, tmp_path / "e.safetensors"))
    x = np.array([[0.1, 0.2, 0.3], [np.nan, 0.0, 0.0]])
    lp = eng.log_prob(x)
    each = eng.log_prob_members(x)
    assert np.isfinite(lp[0]) and np.isnan(lp[1]) and np.isnan(each[1]).all() and np.isfinite(each[0]).all()
    assert eng.log_prob(np.empty((0, 3))).shape == (0,)
    assert eng.log_prob_members(np.empty((0, 3))).shape == (0, 3)


def test_single_flow_engine_members_is_one_column(tmp_path):
    m = _ensemble("maf")
    single = Model(m.flow.members[0], m.preprocessing, m.features)
    eng = nfhep.Engine(modelfile.save(single, tmp_path / "s.safetensors"))
    x, _ = _events(50, 3, 0)
    assert eng.members == 1
    np.testing.assert_array_equal(eng.log_prob_members(x)[:, 0], eng.log_prob(x))


@pytest.mark.parametrize("family", ["maf", "crqs"])
def test_engine_sampling(tmp_path, family):
    m = _ensemble(family, context=1)
    eng = nfhep.Engine(modelfile.save(m, tmp_path / "e.safetensors"))
    ctx = np.array([0.5])
    s, lp = eng.sample(3000, seed=3, context=ctx, return_log_prob=True)
    assert np.isfinite(s).all()
    # the log-density returned is the mixture's at the events
    np.testing.assert_allclose(lp, eng.log_prob(s, ctx), rtol=1e-12, atol=1e-12)
    # reproducible whatever the split into calls
    a = eng.sample(300, seed=9, context=ctx)
    b = np.concatenate(
        [eng.sample(77, seed=9, context=ctx), eng.sample(223, seed=9, first_index=77, context=ctx)]
    )
    np.testing.assert_array_equal(a, b)
    # the same distribution as the torch mixture (two-sample KS per feature)
    from scipy.stats import ks_2samp

    with torch.no_grad():
        t = m.sample(3000, torch.tensor(ctx), generator=torch.Generator().manual_seed(4)).numpy()
    assert min(ks_2samp(s[:, j], t[:, j]).pvalue for j in range(3)) > 1e-3


def test_engine_draws_each_member_equally_often(tmp_path):
    m = _ensemble("maf", d=1, members=5)
    for k, f in enumerate(m.flow.members):
        with torch.no_grad():
            for p in f.parameters():
                p.zero_()
            f.layers[-1].conditioner.net[-1].bias[1] = -8.0 * k
    eng = nfhep.Engine(modelfile.save(m, tmp_path / "e.safetensors"))
    n = 50_000
    x = eng.sample(n, seed=11)[:, 0]
    sd = m.preprocessing.std.item()
    centre = m.preprocessing.mean.item() + 8.0 * sd * np.arange(5)
    k = np.argmin(np.abs(x[:, None] - centre[None, :]), axis=1)
    counts = np.bincount(k, minlength=5)
    assert np.all(np.abs(counts - n / 5) < 5 * math.sqrt(n * 0.2 * 0.8)), counts
    # the member choice is independent of the normals: within a member the draws are standard normal
    z = (x[k == 2] - centre[2]) / sd
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


# -- ONNX -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["maf", "arqs"])
def test_onnx_export_of_an_ensemble(tmp_path, family):
    pytest.importorskip("onnxruntime")
    from nfhep import onnx_export as ox

    m = _ensemble(family, context=2)
    path = modelfile.save(m, tmp_path / "e.safetensors")
    ox.export_onnx(path, tmp_path / "e.onnx", dtype="float64")
    res = ox.compare_onnxruntime(path, tmp_path / "e.onnx", events=800)
    assert res["max_rel_diff"] <= 1e-9, res


# -- nfhep train / eval --------------------------------------------------------------------------------
def test_train_ensemble_option_and_eval_std(tmp_path, capsys):
    from nfhep.cli import main

    rng = np.random.default_rng(0)
    f = tmp_path / "d.root"
    with uproot.recreate(f) as out:
        out.mktree("t", {"a": np.float64, "b": np.float64})
        out["t"].extend({"a": rng.normal(size=1500), "b": rng.exponential(size=1500)})
    fast = ["--epochs", "2", "-q", "--bijectors", "1"]
    one = tmp_path / "one.safetensors"
    assert main(["train", f"{f}:t", "--features", "a,b", "--ensemble", "1", "-o", str(one), *fast]) == 0
    assert nfhep.Engine(one).members == 1 and modelfile.read_metadata(one)["version"] == 2
    two = tmp_path / "two.safetensors"
    assert (
        main(
            ["train", f"{f}:t", "--features", "a,b", "--ensemble", "2", "--seed", "5", "-o", str(two), *fast]
        )
        == 0
    )
    meta = modelfile.read_metadata(two)
    assert [m["seed"] for m in meta["flow"]["members"]] == [5, 6]
    hist = json.loads((tmp_path / "two.history.json").read_text())
    assert len(hist["members"]) == 2 and len(hist["summary"]["members"]) == 2
    capsys.readouterr()
    for bad, msg in (("0", "must be a positive integer"), ("65", "at most 64")):
        assert main(["train", f"{f}:t", "--features", "a,b", "--ensemble", bad, "-o", str(two), *fast]) == 1
        assert msg in capsys.readouterr().err
    # nfhep eval: an ensemble gets <prefix>logp_std, the spread of its members' log p
    assert main(["eval", str(two), f"{f}:t", "-o", str(tmp_path / "nf.root"), "-q"]) == 0
    with uproot.open(tmp_path / "nf.root") as fo:
        got = fo["t_nf"].arrays(library="np")
    with uproot.open(f) as fi:
        x = np.stack([fi["t"]["a"].array(library="np"), fi["t"]["b"].array(library="np")], 1)
    each = nfhep.load(two).member_log_probs(x.astype(np.float32)).detach().double().numpy()
    np.testing.assert_allclose(got["nf_logp_std"], each.std(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["nf_logp"], nfhep.Engine(two).log_prob(x.astype(np.float32)))
    # a single flow has no _std branch
    assert main(["eval", str(one), f"{f}:t", "-o", str(tmp_path / "nf1.root"), "-q"]) == 0
    with uproot.open(tmp_path / "nf1.root") as fo:
        assert "nf_logp_std" not in fo["t_nf"].keys()


def test_backend_reaches_every_member():
    m = _ensemble("arqs")
    m.flow.backend = "torch"
    assert all(f.backend == "torch" for f in m.flow.members)
    assert all(layer.backend == "torch" for f in m.flow.members for layer in f._backend_children())
    x, _ = _events(50, 3, 0)
    with torch.no_grad():
        a = m.log_prob(torch.from_numpy(x)).numpy()
        m.flow.backend = "cpp"
        b = m.log_prob(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="backend must be"):
        m.flow.backend = "gpu"
