"""Generic contract tests over the four flow families, with and without context (nfhep.flows)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nfhep import bijectors
from nfhep.flows import (
    FLOWS,
    MADE,
    AutoregressiveLayer,
    CouplingLayer,
    Flow,
    Permutation,
    build_flow,
    parse_hidden,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small networks: torch's intra-op threads only add contention on the shared 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAMILIES = sorted(FLOWS)
D = 3
CASES = [(f, c) for f in FAMILIES for c in (0, 2)]


def _cpp_available() -> bool:
    return (
        bijectors.cpp_support(torch.zeros(1), "rqs") is None
        and bijectors.cpp_support(torch.zeros(1), "affine") is None
    )


def make_flow(family: str, context: int = 0, *, dtype=torch.float64, seed: int = 0, **kw) -> Flow:
    """A small flow with weights moved away from the (near-identity) initialisation."""
    torch.manual_seed(seed)
    opts = dict(bijectors=2, hidden="2x16")
    if family in ("crqs", "arqs"):
        opts.update(knots=5, range=3.0)
    opts.update(kw)
    flow = FLOWS[family](D, context=context, **opts).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow.eval()


def data(n: int, context: int, dtype=torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    c = torch.randn(n, context, generator=g, dtype=torch.float64) if context else None
    return x.to(dtype), None if c is None else c.to(dtype)


@pytest.mark.parametrize(("family", "context"), CASES)
def test_invertibility(family, context):
    flow = make_flow(family, context)
    x, c = data(64, context)
    z, ld = flow.transform(x, c)
    xr, ld_inv = flow.inverse(z, c)
    torch.testing.assert_close(xr, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(ld_inv, -ld, rtol=0, atol=1e-10)
    assert z.shape == x.shape and ld.shape == (64,)
    assert not torch.allclose(z, x)  # a non-trivial map


@pytest.mark.parametrize(("family", "context"), CASES)
def test_log_prob_is_change_of_variables(family, context):
    """log p(x) = log N(z) + log|det dz/dx| with the Jacobian from autograd (float64, independent)."""
    flow = make_flow(family, context)
    x, c = data(6, context)
    lp = flow.log_prob(x, c).detach()
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, ci=ci: flow.transform(v[None], ci)[0][0], x[i])
        z = flow.transform(x[i : i + 1], ci)[0][0].detach()
        ref = (
            -0.5 * float((z * z).sum())
            - 0.5 * D * math.log(2 * math.pi)
            + float(torch.linalg.slogdet(jac.detach())[1])
        )
        assert float(lp[i]) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize(("family", "context"), CASES)
def test_sample_and_log_prob_matches_log_prob(family, context):
    flow = make_flow(family, context)
    c = torch.randn(context, dtype=torch.float64) if context else None
    g = torch.Generator().manual_seed(3)
    x, lp = flow.sample_and_log_prob(200, c, generator=g)
    assert x.shape == (200, D) and lp.shape == (200,)
    torch.testing.assert_close(flow.log_prob(x, c), lp, rtol=0, atol=1e-9)
    # same generator state -> same sample
    x2 = flow.sample(200, c, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x2, x, rtol=0, atol=0)


@pytest.mark.parametrize(("family", "context"), CASES)
def test_config_round_trip(family, context):
    flow = make_flow(family, context, permutation="random", seed=0)
    cfg = flow.config
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["family"] == family and cfg["features"] == D and cfg["context"] == context
    assert cfg["hidden"] == [16, 16] and cfg["permutation"] == "random"
    other = build_flow(cfg).to(torch.float64)
    x, c = data(50, context)
    assert not torch.allclose(other.log_prob(x, c), flow.log_prob(x, c))  # fresh weights
    other.load_state_dict(flow.state_dict(), strict=True)
    other.eval()
    torch.testing.assert_close(other.log_prob(x, c), flow.log_prob(x, c), rtol=0, atol=0)
    assert other.config == cfg


@pytest.mark.parametrize("family", ["maf", "arqs"])
def test_autoregressive_jacobian_is_triangular(family):
    """Every autoregressive layer: dz_i/dx_j = 0 for j > i (the MADE property); the diagonal is non-zero."""
    flow = make_flow(family, 2)
    x, c = data(4, 2)
    layers = [m for m in flow.layers if isinstance(m, AutoregressiveLayer)]
    assert len(layers) == 2
    for layer in layers:
        for i in range(4):
            jac = torch.autograd.functional.jacobian(
                lambda v, layer=layer, ci=c[i : i + 1]: layer(v[None], ci)[0][0], x[i]
            )
            assert torch.all(torch.triu(jac, diagonal=1) == 0), jac
            assert torch.all(torch.diagonal(jac) != 0)
            assert torch.any(torch.tril(jac, diagonal=-1) != 0)  # it does depend on earlier features
    # the whole flow is triangular under the composed order: reverse permutation in between
    perm = [m for m in flow.layers if isinstance(m, Permutation)]
    assert len(perm) == 1 and perm[0].perm.tolist() == [2, 1, 0]


def test_made_masks_connectivity():
    """MADE output d depends on inputs < d only, and on every input < d (dense enough hidden layers)."""
    torch.manual_seed(0)
    made = MADE(5, 2, 3, [20, 20], activation="tanh").double()
    with torch.no_grad():
        for p in made.parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(5, dtype=torch.float64)
    c = torch.randn(1, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None], c)[0], x)  # (5, 3, 5)
    dep = jac.abs().sum(1) != 0
    expected = torch.tril(torch.ones(5, 5, dtype=torch.bool), diagonal=-1)
    assert torch.equal(dep, expected)
    jc = torch.autograd.functional.jacobian(lambda v: made(x[None], v)[0], c)  # context reaches every output
    assert torch.all(jc.abs().sum((1, 2, 3)) != 0)


@pytest.mark.parametrize("family", ["realnvp", "crqs"])
def test_coupling_structure(family):
    flow = make_flow(family, 0)
    layer = [m for m in flow.layers if isinstance(m, CouplingLayer)][0]
    x, _ = data(1, 0)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None], None)[0][0], x[0])
    d = D // 2
    torch.testing.assert_close(jac[:d, :d], torch.eye(d, dtype=torch.float64))
    assert torch.all(jac[:d, d:] == 0)
    assert torch.all(torch.triu(jac[d:, d:], diagonal=1) == 0)  # element-wise on the transformed part


@pytest.mark.parametrize(("family", "context"), CASES)
def test_gradcheck(family, context):
    """Analytic gradients (C++ backward when available) vs finite differences, float64."""
    flow = make_flow(family, context)
    x, c = data(3, context)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: flow.log_prob(v, c), (x,), eps=1e-6, atol=1e-6)
    # gradients with respect to the weights are finite and non-zero
    flow.zero_grad()
    flow.log_prob(x.detach(), c).sum().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(("family", "context"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_and_torch_backends_agree(family, context, dtype):
    if not _cpp_available():
        pytest.skip("this build has no C++ bijector kernels")
    flow = make_flow(family, context, dtype=dtype)
    x, c = data(300, context, dtype=dtype)
    flow.backend = "cpp"
    lp_cpp = flow.log_prob(x, c)
    s_cpp = flow.sample(50, c[:50] if c is not None else None, generator=torch.Generator().manual_seed(0))
    flow.backend = "torch"
    lp_torch = flow.log_prob(x, c)
    s_torch = flow.sample(50, c[:50] if c is not None else None, generator=torch.Generator().manual_seed(0))
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(lp_cpp, lp_torch, rtol=tol, atol=tol)
    torch.testing.assert_close(s_cpp, s_torch, rtol=tol, atol=tol)


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_flow_is_identity(family):
    """Zero-initialised last layers (and identity spline biases): a fresh flow maps x to x."""
    torch.manual_seed(0)
    flow = FLOWS[family](4, context=1, bijectors=3, hidden=[8], permutation="none").double()
    x = torch.randn(20, 4, dtype=torch.float64)
    z, ld = flow.transform(x, torch.randn(20, 1, dtype=torch.float64))
    # exact up to the float32 rounding of the initial spline-derivative bias
    torch.testing.assert_close(z, x, rtol=0, atol=1e-7)
    torch.testing.assert_close(ld, torch.zeros(20, dtype=torch.float64), rtol=0, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_context_broadcast_and_effect(family):
    flow = make_flow(family, 2)
    x, _ = data(10, 0)
    c1 = torch.tensor([0.3, -1.0], dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(x, c1), flow.log_prob(x, c1.expand(10, 2)), rtol=0, atol=0)
    assert not torch.allclose(flow.log_prob(x, c1), flow.log_prob(x, -c1))
    s = flow.sample(7, c1)
    assert s.shape == (7, D)
    with pytest.raises(ValueError, match="'context' is required"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match="'context' must have shape"):
        flow.log_prob(x, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="'context' has dtype"):
        flow.log_prob(x, c1.float())
    plain = make_flow(family, 0)
    with pytest.raises(ValueError, match="no context features"):
        plain.log_prob(x, c1)


def test_input_errors():
    flow = make_flow("arqs", 0)
    with pytest.raises(ValueError, match=r"'x' must have shape \(N, 3\)"):
        flow.log_prob(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="'x' has dtype"):
        flow.log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        flow.log_prob([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="'activation'"):
        FLOWS["maf"](3, activation="swish2")
    with pytest.raises(ValueError, match="'permutation'"):
        FLOWS["maf"](3, permutation="shuffle")
    with pytest.raises(ValueError, match="'bijectors'"):
        FLOWS["maf"](3, bijectors=0)
    with pytest.raises(ValueError, match="'knots'"):
        FLOWS["arqs"](3, knots=1)
    with pytest.raises(ValueError, match="not both"):
        FLOWS["crqs"](3, range=4.0, bound=5.0)
    with pytest.raises(ValueError, match="family"):
        build_flow({"family": "glow", "features": 3})
    with pytest.raises(ValueError, match="invalid option"):
        build_flow({"family": "maf", "features": 3, "knots": 8})


def test_bound_alias_and_config_keys():
    f = FLOWS["arqs"](3, bound=6.0, knots=4)
    assert f.config["range"] == 6.0 and f.config["knots"] == 4
    assert set(f.config) >= {
        "family",
        "features",
        "context",
        "bijectors",
        "hidden",
        "activation",
        "knots",
        "range",
        "dropout",
        "batch_norm",
        "actnorm",
        "permutation",
        "seed",
        "min_bin_width",
        "min_bin_height",
        "min_derivative",
    }


def test_parse_hidden():
    assert parse_hidden("3x128") == [128, 128, 128]
    assert parse_hidden("3×64") == [64, 64, 64]
    assert parse_hidden("128,64") == [128, 64]
    assert parse_hidden(32) == [32]
    assert parse_hidden([8, 4]) == [8, 4]
    for bad in ("3x", "abc", "0x5", "", "3x0"):
        with pytest.raises(ValueError, match="parse_hidden"):
            parse_hidden(bad)


def test_state_dict_names_and_buffers():
    flow = FLOWS["arqs"](3, context=1, bijectors=2, hidden="2x8", actnorm=True)
    names = list(flow.state_dict())
    assert names[:3] == ["layers.0.log_scale", "layers.0.shift", "layers.0.initialized"]
    assert "layers.1.conditioner.net.0.mask" in names
    assert "layers.2.perm" in names and "layers.2.inverse_perm" in names
    mask = flow.state_dict()["layers.1.conditioner.net.0.mask"]
    assert mask.shape == (8, 4)


def test_random_permutation_is_seeded():
    a = FLOWS["maf"](6, bijectors=3, permutation="random", seed=5)
    b = FLOWS["maf"](6, bijectors=3, permutation="random", seed=5)
    c = FLOWS["maf"](6, bijectors=3, permutation="random", seed=6)
    pa = [m.perm.tolist() for m in a.layers if isinstance(m, Permutation)]
    pb = [m.perm.tolist() for m in b.layers if isinstance(m, Permutation)]
    pc = [m.perm.tolist() for m in c.layers if isinstance(m, Permutation)]
    assert pa == pb and pa != pc and len(pa) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_options_dropout_batchnorm_actnorm_float32(family):
    """Optional pieces build, run in train and eval mode, and stay invertible in eval mode (float32)."""
    torch.manual_seed(0)
    flow = FLOWS[family](
        D, context=1, hidden=[16], dropout=0.1, batch_norm=True, actnorm=True, activation="tanh"
    )
    x = torch.randn(64, D) * 2 + 1
    c = torch.randn(64, 1)
    flow.train()
    lp = flow.log_prob(x, c)
    lp.mean().backward()
    assert torch.isfinite(lp).all()
    act = flow.layers[0]
    assert bool(act.initialized)  # ActNorm's data-dependent initialisation happened
    flow.eval()
    z, ld = flow.transform(x, c)
    xr, ldi = flow.inverse(z, c)
    torch.testing.assert_close(xr, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ldi, -ld, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", [0, 1])
def test_one_feature(family, context):
    """D = 1: coupling layers condition on the context only (or a learned constant); MADE likewise."""
    torch.manual_seed(0)
    flow = FLOWS[family](1, context=context, hidden=[8]).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(10, 1, dtype=torch.float64)
    c = torch.randn(10, 1, dtype=torch.float64) if context else None
    z, ld = flow.transform(x, c)
    xr, _ = flow.inverse(z, c)
    torch.testing.assert_close(xr, x, rtol=0, atol=1e-10)
    assert not torch.allclose(z, x)
