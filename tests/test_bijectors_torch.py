"""nfhep.bijectors: the torch ops over the C++ kernels and the pure-torch path.

Covers: gradcheck (float64) of both paths in both directions, C++ vs torch agreement on random and edge
inputs, log|det| vs autograd's derivative, inverse(forward(x)) == x, the anchors (nflows, zuko), argument
errors, NaN/inf behaviour, and an end-to-end gradient through a loss.

Reference of last resort: ``_scalar_rqs`` below, a plain-Python float64 per-element spline written from
REFERENCE.md §1 that shares no code with nfhep.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nfhep
from conftest import require, require_module
from nfhep.bijectors import (
    affine,
    affine_torch,
    cpp_support,
    rqs,
    rqs_knots,
    rqs_num_params,
    rqs_torch,
)

B = 5.0
PATHS = ("cpp", "torch")


def need(backend: str, dtype: torch.dtype = torch.float64, kind: str = "rqs") -> None:
    """Skip locally / fail in CI when the C++ kernels are missing from this build."""
    if backend == "cpp":
        why = cpp_support(torch.zeros(1, dtype=dtype), kind)
        require(why is None, f"C++ kernels unavailable: {why}")


def rand_params(shape, k, *, scale=2.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, 3 * k - 1, generator=g, dtype=torch.float64) * scale).to(dtype)


def rand_x(shape, *, scale=3.5, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# --- an independent float64 reference (plain Python, REFERENCE.md §1) ------------------------------------


def _softmax(v):
    m = max(v)
    e = [math.exp(t - m) for t in v]
    s = sum(e)
    return [t / s for t in e]


def _softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _scalar_knots(p, k, mw, mh, md, bound):
    def knots(logits, m):
        frac = [m + (1 - m * k) * f for f in _softmax(logits)]
        out, acc = [-bound], 0.0
        for f in frac[:-1]:
            acc += f
            out.append(-bound + 2 * bound * acc)
        out.append(bound)
        return out

    d = [1.0] + [md + _softplus(u) for u in p[2 * k :]] + [1.0]
    return knots(p[:k], mw), knots(p[k : 2 * k], mh), d


def _scalar_rqs(x, p, *, inverse=False, bound=B, mw=1e-3, mh=1e-3, md=1e-3):
    k = (len(p) + 1) // 3
    if not (-bound <= x <= bound):  # tails, and NaN (treated as a tail)
        return x, 0.0
    kx, ky, kd = _scalar_knots(p, k, mw, mh, md, bound)
    search = ky if inverse else kx
    i = max(j for j in range(k) if search[j] <= x)
    w, h = kx[i + 1] - kx[i], ky[i + 1] - ky[i]
    s, d0, d1 = h / w, kd[i], kd[i + 1]
    if inverse:
        dy = x - ky[i]
        a = h * (s - d0) + dy * (d0 + d1 - 2 * s)
        b = h * d0 - dy * (d0 + d1 - 2 * s)
        c = -s * dy
        xi = min(max(2 * c / (-b - math.sqrt(max(b * b - 4 * a * c, 0.0))), 0.0), 1.0)
    else:
        xi = (x - kx[i]) / w
    t = xi * (1 - xi)
    den = s + (d0 + d1 - 2 * s) * t
    lad = math.log(s * s * (d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2) / den**2)
    if inverse:
        return kx[i] + xi * w, -lad
    return ky[i] + h * (s * xi * xi + d0 * t) / den, lad


def scalar_reference(x, params, **kw):
    xs = x.detach().double().reshape(-1).tolist()
    ps = params.detach().double().reshape(len(xs), -1).tolist()
    out = [_scalar_rqs(a, p, **kw) for a, p in zip(xs, ps, strict=True)]
    y = torch.tensor([o[0] for o in out], dtype=torch.float64).reshape(x.shape)
    lad = torch.tensor([o[1] for o in out], dtype=torch.float64).reshape(x.shape)
    return y, lad


def edge_inputs(params, *, inverse=False, bound=B):
    """Knots, ±B, just inside/outside ±B and far tails for every row of ``params`` (shape (n, P))."""
    kx, ky, _ = rqs_knots(params, bound=bound)
    knots = ky if inverse else kx  # (n, K+1)
    n = params.shape[0]
    extra = torch.tensor([-1e6, -bound * (1 + 1e-9), bound * (1 + 1e-9), 7.5, 1e6], dtype=params.dtype)
    cols = torch.cat([knots, extra.expand(n, -1)], dim=1)
    x = cols.reshape(-1)
    p = params.repeat_interleave(cols.shape[1], dim=0)
    return x, p


# --- the reference itself --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 8])
def test_torch_path_matches_scalar_reference(k):
    x = rand_x((300,), seed=k)
    p = rand_params((300,), k, seed=10 + k)
    xe, pe = edge_inputs(rand_params((6,), k, seed=20 + k))
    x, p = torch.cat([x, xe]), torch.cat([p, pe])
    for inverse in (False, True):
        y, lad = rqs_torch(x, p, inverse=inverse)
        yr, ladr = scalar_reference(x, p, inverse=inverse)
        torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lad, ladr, rtol=1e-10, atol=1e-10)


# --- gradcheck (float64) ---------------------------------------------------------------------------------


def _gradcheck_inputs(k, seed):
    # both tails, both sides, interior; kept 1e-3 away from ±B where log|det| has a kink
    x = torch.tensor([-9.0, -5.3, -4.7, -2.2, -0.4, 0.3, 1.9, 3.1, 4.6, 5.2, 12.0, 0.05], dtype=torch.float64)
    x = x.reshape(3, 4)
    p = rand_params((3, 4), k, scale=1.5, seed=seed)
    return x.requires_grad_(), p.requires_grad_()


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [2, 6])
def test_gradcheck_rqs(backend, inverse, k):
    need(backend)
    x, p = _gradcheck_inputs(k, seed=3 + k)

    def f(x, p):
        return rqs(x, p, inverse=inverse, backend=backend)

    assert torch.autograd.gradcheck(f, (x, p), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck_rqs_broadcast_params(backend, inverse):
    need(backend)
    x = torch.tensor([[-6.0, -1.3, 0.7], [2.4, 4.4, 8.0]], dtype=torch.float64, requires_grad=True)
    p = rand_params((3,), 4, seed=5).requires_grad_()  # shared by both rows

    def f(x, p):
        return rqs(x, p, inverse=inverse, backend=backend)

    assert torch.autograd.gradcheck(f, (x, p), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck_affine(backend, inverse):
    need(backend, kind="affine")
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(3, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    p = torch.randn(3, 5, 2, generator=g, dtype=torch.float64).requires_grad_()

    def f(x, p):
        return affine(x, p, inverse=inverse, backend=backend)

    assert torch.autograd.gradcheck(f, (x, p), eps=1e-6, atol=1e-8, rtol=1e-7)


def test_cpp_backward_is_first_order_only():
    need("cpp")
    x, p = _gradcheck_inputs(3, seed=1)
    y, lad = rqs(x, p, backend="cpp")
    (gx,) = torch.autograd.grad((y + lad).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


def test_torch_path_second_order():
    x, p = _gradcheck_inputs(3, seed=2)
    assert torch.autograd.gradgradcheck(lambda x, p: rqs(x, p, backend="torch"), (x, p), eps=1e-6, atol=1e-5)


# --- C++ vs torch ----------------------------------------------------------------------------------------

# tolerances: float64 tight, float32 loose (float32 arithmetic in both paths, different operation order),
# in units of the spline's scale, plus the conditioning of the problem: a rounding of the input or of a
# knot position (~eps*B) may move the output and log|det| by as much as the exact (float64) functions vary
# over an input interval of that size. Near a knot with a small derivative log|det| is very steep on one
# side (one-sided slopes differ by orders of magnitude), hence a two-sided variation, not a derivative.
TOL = {torch.float64: 1e-11, torch.float32: 2e-5}


def variation(x, p, inverse, dtype):
    """max over s = ±1 of |f64(x + s*delta) - f64(x)| for the output and log|det|, delta = 8 eps(dtype) B."""
    delta = 8 * torch.finfo(dtype).eps * B
    x64, p64 = x.double(), p.double()
    out0, lad0 = rqs(x64, p64, inverse=inverse, backend="torch")
    var_o = torch.zeros_like(out0)
    var_l = torch.zeros_like(lad0)
    for sign in (-1.0, 1.0):
        o, l_ = rqs(x64 + sign * delta, p64, inverse=inverse, backend="torch")
        var_o = torch.maximum(var_o, (o - out0).abs())
        var_l = torch.maximum(var_l, (l_ - lad0).abs())
    return var_o, var_l, lad0


def assert_agree(yc, lc, yt, lt, x, p, inverse, tol):
    var_o, var_l, lad64 = variation(x, p, inverse, yc.dtype)
    err_y = (yc.double() - yt.double()).abs() - 2 * var_o
    err_l = (lc.double() - lt.double()).abs() - 2 * var_l
    assert (err_y / B).max().item() <= tol, f"max |dy| beyond conditioning {err_y.max().item():.3g}"
    assert (err_l / (1 + lad64.abs())).max().item() <= 4 * tol, (
        f"max |dlad| beyond cond. {err_l.max().item():.3g}"
    )


def _agreement_case(k, dtype, seed, scale):
    x = rand_x((400,), seed=seed)
    p = rand_params((400,), k, scale=scale, seed=seed + 1)
    pe = rand_params((5,), k, scale=scale, seed=seed + 2)
    return x, p, pe


# Known kernel issue (reported to the lead, kernels branch a427c94): the C++ inverse always evaluates the
# root as 2c / (-b - sqrt(b^2 - 4ac)), which cancels when b < 0 (near the top of a bin whose end derivative
# exceeds ~2x its mean slope). In float32 that costs up to ~1e-4 absolute in x (hundreds of ulp); the
# torch path picks the cancellation-free form by the sign of b. strict: these start failing (XPASS) once
# the kernel is fixed, so the markers get removed then.
KERNEL_CANCELS = pytest.mark.xfail(
    strict=True,
    reason="C++ rqs_inverse root cancels for b < 0 (float32 error ~1e-4 near bin tops); "
    "kernels-branch fix pending",
)


def _agreement_params():
    out = []
    for dtype in (torch.float64, torch.float32):
        for k in (2, 3, 8, 16):
            for scale in (1.0, 4.0):
                for inverse in (False, True):
                    known = dtype == torch.float32 and inverse and (k, scale) == (2, 4.0)
                    out.append(
                        pytest.param(dtype, k, scale, inverse, marks=[KERNEL_CANCELS] if known else [])
                    )
    return out


@pytest.mark.parametrize(("dtype", "k", "scale", "inverse"), _agreement_params())
def test_cpp_matches_torch(dtype, k, scale, inverse):
    need("cpp", dtype)
    x, p, pe = _agreement_case(k, dtype, seed=7 * k, scale=scale)
    xe, pe = edge_inputs(pe, inverse=inverse)
    x, p = torch.cat([x, xe]).to(dtype), torch.cat([p, pe]).to(dtype)
    yc, lc = rqs(x, p, inverse=inverse, backend="cpp")
    yt, lt = rqs(x, p, inverse=inverse, backend="torch")
    assert yc.dtype == dtype and lc.dtype == dtype and yc.shape == x.shape and lc.shape == x.shape
    assert_agree(yc, lc, yt, lt, x, p, inverse, TOL[dtype])


@pytest.mark.parametrize(
    ("dtype", "inverse"),
    [
        (torch.float64, False),
        (torch.float64, True),
        (torch.float32, False),
        pytest.param(torch.float32, True, marks=KERNEL_CANCELS),
    ],
)
def test_cpp_matches_torch_extreme_logits(dtype, inverse):
    need("cpp", dtype)
    k = 6
    g = torch.Generator().manual_seed(11)
    p = torch.randint(0, 3, (50, 3 * k - 1), generator=g).double() * 50 - 50  # entries in {-50, 0, 50}
    x = torch.linspace(-5.5, 5.5, 50, dtype=torch.float64)
    xe, pe = edge_inputs(p, inverse=inverse)
    x, p = torch.cat([x, xe]).to(dtype), torch.cat([p, pe]).to(dtype)
    yc, lc = rqs(x, p, inverse=inverse, backend="cpp")
    yt, lt = rqs(x, p, inverse=inverse, backend="torch")
    assert torch.isfinite(yc).all() and torch.isfinite(lc).all()
    assert torch.isfinite(yt).all() and torch.isfinite(lt).all()
    assert_agree(yc, lc, yt, lt, x, p, inverse, 10 * TOL[dtype])


@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=KERNEL_CANCELS), "torch"])
def test_inverse_root_without_cancellation_float32(backend):
    """y = B at the top of a flat bin with end derivative 1 > 2 s (b < 0): x must be B, logabsdet 0."""
    need(backend, torch.float32)
    p = torch.tensor([[-2.2028568, 2.4382887, 8.357077, -0.10108279, -1.5019885]], dtype=torch.float32)
    y = torch.tensor([5.0, 4.9999, 4.999], dtype=torch.float32)
    p = p.expand(3, -1)
    x, lad = rqs(y, p, inverse=True, backend=backend)
    x64, lad64 = rqs(y.double(), p.double(), inverse=True, backend="torch")
    assert abs(x[0].item() - B) <= 4 * torch.finfo(torch.float32).eps * B and abs(lad[0].item()) <= 1e-5
    assert ((x.double() - x64).abs() <= 4 * torch.finfo(torch.float32).eps * B).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inverse", [False, True])
def test_cpp_gradients_match_torch(dtype, inverse):
    need("cpp", dtype)
    k = 5
    x = rand_x((60, 3), seed=21).to(dtype)
    p = rand_params((60, 3), k, scale=1.0, seed=22).to(dtype)
    g = torch.Generator().manual_seed(23)
    wy = torch.randn(60, 3, generator=g).to(dtype)
    wl = torch.randn(60, 3, generator=g).to(dtype)
    grads = {}
    for backend in PATHS:
        xx, pp = x.clone().requires_grad_(), p.clone().requires_grad_()
        y, lad = rqs(xx, pp, inverse=inverse, backend=backend)
        ((y * wy).sum() + (lad * wl).sum()).backward()
        grads[backend] = (xx.grad, pp.grad)
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    torch.testing.assert_close(grads["cpp"][0], grads["torch"][0], rtol=tol, atol=tol)
    torch.testing.assert_close(grads["cpp"][1], grads["torch"][1], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_empty_input(backend, dtype):
    need(backend, dtype)
    for inverse in (False, True):
        x = torch.zeros(0, 4, dtype=dtype, requires_grad=True)
        p = torch.zeros(0, 4, rqs_num_params(3), dtype=dtype, requires_grad=True)
        y, lad = rqs(x, p, inverse=inverse, backend=backend)
        assert y.shape == (0, 4) and lad.shape == (0, 4) and y.dtype == dtype
        (y.sum() + lad.sum()).backward()
        assert x.grad.shape == x.shape and p.grad.shape == p.shape
        ya, la = affine(x.detach(), torch.zeros(0, 4, 2, dtype=dtype), inverse=inverse, backend=backend)
        assert ya.shape == (0, 4) and la.shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_cpp_matches_torch(dtype, inverse):
    need("cpp", dtype, kind="affine")
    g = torch.Generator().manual_seed(31)
    x = (torch.randn(200, 7, generator=g, dtype=torch.float64) * 4).to(dtype)
    p = (torch.randn(200, 7, 2, generator=g, dtype=torch.float64) * 2).to(dtype)
    yc, lc = affine(x, p, inverse=inverse, backend="cpp")
    yt, lt = affine(x, p, inverse=inverse, backend="torch")
    rtol = 1e-14 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(yc, yt, rtol=rtol, atol=rtol)
    torch.testing.assert_close(lc, lt, rtol=0, atol=0)


# --- log|det| vs autograd, round trips -------------------------------------------------------------------


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [2, 8])
def test_logabsdet_is_log_derivative(backend, inverse, k):
    need(backend)
    x = rand_x((500,), seed=40 + k).requires_grad_()
    p = rand_params((500,), k, seed=41 + k)
    y, lad = rqs(x, p, inverse=inverse, backend=backend)
    (dydx,) = torch.autograd.grad(y.sum(), x)  # the Jacobian is diagonal
    torch.testing.assert_close(torch.log(dydx), lad.detach(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_logabsdet_is_log_derivative(backend, inverse):
    need(backend, kind="affine")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(100, generator=g, dtype=torch.float64).requires_grad_()
    p = torch.randn(100, 2, generator=g, dtype=torch.float64)
    y, lad = affine(x, p, inverse=inverse, backend=backend)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(torch.log(dydx), lad, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [2, 8, 16])
def test_roundtrip(backend, dtype, k):
    need(backend, dtype)
    x = rand_x((2000,), seed=50 + k).to(dtype)
    p = rand_params((2000,), k, seed=51 + k).to(dtype)
    y, lad = rqs(x, p, backend=backend)
    x2, lad2 = rqs(y, p, inverse=True, backend=backend)
    eps = torch.finfo(dtype).eps
    # error propagation: y carries ~eps*(|y|+B) rounding, the inverse amplifies it by dx/dy, and the
    # log-derivative moves by |d lad/dx| times that (slopes from the float64 torch path's autograd)
    x64 = x.double().requires_grad_()
    _, lad64 = rqs(x64, p.double(), backend="torch")
    (dlad_dx,) = torch.autograd.grad(lad64.sum(), x64)
    dx = 32 * eps * (y.double().abs() + B) * torch.exp(-lad.double()).clamp(min=1.0)
    assert ((x2.double() - x.double()).abs() <= dx).all()
    err_lad = (lad2.double() + lad.double()).abs()
    assert (err_lad <= dx * dlad_dx.abs() + 64 * eps * (1 + lad.double().abs())).all()


@pytest.mark.parametrize("backend", PATHS)
def test_affine_roundtrip(backend):
    need(backend, kind="affine")
    g = torch.Generator().manual_seed(9)
    x = torch.randn(300, generator=g, dtype=torch.float64) * 3
    p = torch.randn(300, 2, generator=g, dtype=torch.float64)
    y, lad = affine(x, p, backend=backend)
    x2, lad2 = affine(y, p, inverse=True, backend=backend)
    torch.testing.assert_close(x2, x, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(lad2, -lad, rtol=0, atol=0)
    torch.testing.assert_close(lad, p[:, 0], rtol=0, atol=0)


@given(
    k=st.integers(2, 12),
    xs=st.lists(st.floats(-7.0, 7.0), min_size=1, max_size=20),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.0, 6.0),
)
def test_property_roundtrip_and_monotone(k, xs, seed, scale):
    for backend in PATHS:
        if backend == "cpp" and cpp_support(torch.zeros(1, dtype=torch.float64)) is not None:
            continue
        x = torch.tensor(sorted(xs), dtype=torch.float64)
        p = rand_params((1,), k, scale=scale, seed=seed).expand(len(xs), -1)
        y, lad = rqs(x, p, backend=backend)
        assert torch.all(y[1:] >= y[:-1])  # monotone
        x2, _ = rqs(y, p, inverse=True, backend=backend)
        slope_inv = torch.exp(-lad).clamp(min=1.0)
        assert ((x2 - x).abs() <= 1e-13 * (y.abs() + B) * slope_inv).all()


# --- anchors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [2, 8])
def test_matches_nflows(backend, inverse, k):
    """nflows' unconstrained spline with linear tails is the same parameterisation: same logits, same map."""
    need(backend)
    require_module("nflows")
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    x = rand_x((1000,), seed=60 + k)
    p = rand_params((1000,), k, seed=61 + k)
    y, lad = rqs(x, p, inverse=inverse, backend=backend)
    yn, ladn = unconstrained_rational_quadratic_spline(
        x, p[:, :k], p[:, k : 2 * k], p[:, 2 * k :], inverse=inverse, tails="linear", tail_bound=B
    )
    cond = torch.exp(lad).clamp(min=1.0) if inverse else torch.ones_like(lad)
    assert ((y - yn).abs() / cond).max() <= 1e-11
    assert ((lad - ladn).abs() / cond).max() <= 1e-10


@pytest.mark.parametrize("inverse", [False, True])
def test_matches_zuko(inverse):
    """zuko's MonotonicRQSTransform maps onto ours with zero minimums.

    zuko soft-clamps its logits (u / (1 + |2u / log slope|) for widths and heights, u / (1 + |u / log slope|)
    for derivatives), uses a plain softmax (no minimum bin size) and derivatives exp(u'). With
    min_bin_width = min_bin_height = min_derivative = 0 ours equals zuko's after mapping the logits:
    widths/heights -> the soft-clamped logits, derivatives -> softplus^{-1}(exp(u')) = log(expm1(exp(u'))).
    """
    zuko = require_module("zuko")
    k = 6
    g = torch.Generator().manual_seed(70)
    x = torch.randn(800, generator=g, dtype=torch.float64) * 3.5
    uw, uh, ud = (torch.randn(800, n, generator=g, dtype=torch.float64) * 2 for n in (k, k, k - 1))
    t = zuko.transforms.MonotonicRQSTransform(uw, uh, ud, bound=B)
    ls = math.log(1e-3)
    mapped = torch.cat(
        [
            uw / (1 + (2 * uw / ls).abs()),
            uh / (1 + (2 * uh / ls).abs()),
            torch.log(torch.expm1(torch.exp(ud / (1 + (ud / ls).abs())))),
        ],
        dim=-1,
    )
    opts = {"min_bin_width": 0.0, "min_bin_height": 0.0, "min_derivative": 0.0}
    backends = [b for b in PATHS if b == "torch" or cpp_support(x) is None]
    for backend in backends:
        if inverse:
            y, lad = rqs(x, mapped, inverse=True, backend=backend, **opts)
            yz = t.inv(x)
            _, ladz_fwd = t.call_and_ladj(yz)
            ladz = -ladz_fwd
        else:
            y, lad = rqs(x, mapped, backend=backend, **opts)
            yz, ladz = t.call_and_ladj(x)
        cond = torch.exp(lad).clamp(min=1.0) if inverse else 1.0
        assert ((y - yz).abs() / cond).max() <= 1e-10, backend
        assert ((lad - ladz).abs() / cond).max() <= 1e-9, backend


# --- NaN / inf -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("inverse", [False, True])
def test_nan_inf_behaviour(backend, inverse):
    need(backend)
    x = torch.tensor([math.nan, math.inf, -math.inf, 1e30, 0.5], dtype=torch.float64, requires_grad=True)
    p = rand_params((5,), 4, seed=80)
    y, lad = rqs(x, p, inverse=inverse, backend=backend)
    yv, lv = y.detach().tolist(), lad.detach().tolist()
    assert math.isnan(yv[0]) and lv[0] == 0.0  # NaN is treated as a tail
    assert yv[1:4] == [math.inf, -math.inf, 1e30]
    assert lv[1:4] == [0.0, 0.0, 0.0]
    assert math.isfinite(yv[4]) and math.isfinite(lv[4])
    (y[3:].sum() + lad[1:].sum()).backward()
    assert torch.isfinite(x.grad[1:]).all()
    assert x.grad[3].item() == 1.0


@pytest.mark.parametrize("backend", PATHS)
def test_tails_give_exact_identity_and_zero_param_grads(backend):
    need(backend)
    x = torch.tensor([-1e4, -5.0001, 5.0001, 40.0], dtype=torch.float64, requires_grad=True)
    p = (rand_params((4,), 8, seed=81) * 20).requires_grad_()  # large logits must not matter in the tails
    y, lad = rqs(x, p, backend=backend)
    assert torch.equal(y.detach(), x.detach()) and torch.equal(
        lad.detach(), torch.zeros(4, dtype=torch.float64)
    )
    (y.sum() + lad.sum()).backward()
    assert torch.equal(x.grad, torch.ones(4, dtype=torch.float64))
    assert torch.equal(p.grad, torch.zeros_like(p))


def test_float32_stability_no_nan_in_gradients():
    """float32 with extreme logits: values and gradients of both paths stay finite."""
    k = 8
    g = torch.Generator().manual_seed(90)
    p = (torch.randint(0, 3, (2000, 3 * k - 1), generator=g).float() * 50 - 50).requires_grad_()
    x = (torch.rand(2000, generator=g) * 11 - 5.5).requires_grad_()
    for backend in PATHS:
        if backend == "cpp" and cpp_support(x) is not None:
            continue
        for inverse in (False, True):
            x.grad = p.grad = None
            y, lad = rqs(x, p, inverse=inverse, backend=backend)
            (y.sum() + lad.sum()).backward()
            for t in (y, lad, x.grad, p.grad):
                assert torch.isfinite(t).all(), (backend, inverse)


# --- end to end ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_end_to_end_loss_gradients_agree(dtype):
    """A parameter tensor requiring grad, a loss through both directions: identical .grad from both paths."""
    need("cpp", dtype)
    g = torch.Generator().manual_seed(100)
    x = (torch.randn(256, 6, generator=g, dtype=torch.float64) * 2.5).to(dtype)
    theta0 = (torch.randn(6, rqs_num_params(8), generator=g, dtype=torch.float64)).to(dtype)
    affine0 = (torch.randn(6, 2, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    grads = {}
    for backend in PATHS:
        theta = theta0.clone().requires_grad_()
        aff = affine0.clone().requires_grad_()
        z, lad1 = rqs(x, theta, backend=backend)
        z, lad2 = affine(z, aff, backend=backend)
        xr, _ = rqs(z, theta, inverse=True, backend=backend)
        nll = 0.5 * (z**2).sum(-1) - (lad1 + lad2).sum(-1)
        loss = nll.mean() + 1e-2 * (xr**2).mean()
        loss.backward()
        grads[backend] = (loss.detach(), theta.grad, aff.grad)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for a, b in zip(grads["cpp"], grads["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# --- dispatch and errors ---------------------------------------------------------------------------------


def test_auto_uses_cpp_on_cpu_float():
    need("cpp")
    x = rand_x((4,))
    p = rand_params((4,), 3).requires_grad_()
    y, _ = rqs(x, p)
    assert type(y.grad_fn).__name__.startswith("RQSFunction")
    y, _ = rqs(x, p, backend="torch")
    assert not type(y.grad_fn).__name__.startswith("RQSFunction")


def test_half_precision_uses_torch_path():
    x = torch.linspace(-6, 6, 13, dtype=torch.float64)
    p = rand_params((13,), 4, scale=1.0)
    y64, _ = rqs(x, p, backend="torch")
    for dt in (torch.float16, torch.bfloat16):
        y, lad = rqs(x.to(dt), p.to(dt))  # auto -> torch path
        assert y.dtype == dt and lad.dtype == dt
        torch.testing.assert_close(y.double(), y64, rtol=0, atol=0.1)
        with pytest.raises(TypeError, match=r"backend='cpp'.*float32 and float64"):
            rqs(x.to(dt), p.to(dt), backend="cpp")
        with pytest.raises(TypeError, match=r"backend='cpp'.*float32 and float64"):
            affine(x.to(dt), torch.zeros(13, 2, dtype=dt), backend="cpp")


def test_cpp_on_unsupported_device_raises():
    x = torch.zeros(3, device="meta")
    p = torch.zeros(3, 5, device="meta")
    with pytest.raises(ValueError, match=r"backend='cpp'.*device type 'meta'"):
        rqs(x, p, backend="cpp")


def test_cuda_request_without_cuda_build_says_how_to_rebuild():
    need("cpp")
    if nfhep.build_info()["cuda"]:
        pytest.skip("this build has CUDA; the message is for CPU-only builds")

    class CudaLike:  # no CUDA tensor can be made on a machine without a GPU; only dtype/device are read
        dtype = torch.float32
        device = torch.device("cuda")

    for kind in ("rqs", "affine"):
        msg = cpp_support(CudaLike(), kind)  # type: ignore[arg-type]
        assert msg is not None and "NFHEP_CUDA=ON" in msg


@pytest.mark.parametrize("fn", [rqs, affine, rqs_torch, affine_torch])
def test_dtype_mismatch_is_type_error(fn):
    p_len = 5 if fn in (rqs, rqs_torch) else 2
    with pytest.raises(TypeError, match=r"'params' must have the same dtype as 'x'"):
        fn(torch.zeros(3, dtype=torch.float32), torch.zeros(3, p_len, dtype=torch.float64))


@pytest.mark.parametrize(
    ("x", "p", "kw", "exc", "pattern"),
    [
        (torch.zeros(3), torch.zeros(3, 4), {}, ValueError, r"'params' must have 3K-1 entries.*got 4"),
        (torch.zeros(3), torch.zeros(3, 2), {}, ValueError, r"'params' must have 3K-1 entries.*got 2"),
        (torch.zeros(3), torch.zeros(4, 5), {}, ValueError, r"'params' must have shape"),
        (torch.zeros(3), torch.zeros(2, 3, 5), {}, ValueError, r"'params' must have shape"),
        (torch.zeros(3), torch.zeros(()), {}, ValueError, r"'params' must have at least one dimension"),
        (torch.zeros(3, dtype=torch.int64), torch.zeros(3, 5), {}, TypeError, r"'x' must be a floating"),
        ([0.0], torch.zeros(1, 5), {}, TypeError, r"'x' must be a torch.Tensor"),
        (torch.zeros(3), torch.zeros(3, 5), {"bound": 0.0}, ValueError, r"'bound' must be > 0"),
        (torch.zeros(3), torch.zeros(3, 5), {"bound": -1.0}, ValueError, r"'bound' must be > 0"),
        (torch.zeros(3), torch.zeros(3, 5), {"bound": math.inf}, ValueError, r"'bound' must be finite"),
        (
            torch.zeros(3),
            torch.zeros(3, 5),
            {"min_bin_width": -1e-3},
            ValueError,
            r"'min_bin_width' must be >= 0",
        ),
        (
            torch.zeros(3),
            torch.zeros(3, 5),
            {"min_derivative": -1.0},
            ValueError,
            r"'min_derivative' must be >= 0",
        ),
        (
            torch.zeros(3),
            torch.zeros(3, 5),
            {"min_bin_height": 0.6},
            ValueError,
            r"'min_bin_height' = 0.6 is too large",
        ),
        (
            torch.zeros(3),
            torch.zeros(3, 5),
            {"min_bin_width": "x"},
            TypeError,
            r"'min_bin_width' must be a real",
        ),
        (torch.zeros(3), torch.zeros(3, 5), {"backend": "numpy"}, ValueError, r"'backend' must be one of"),
    ],
)
def test_rqs_bad_arguments(x, p, kw, exc, pattern):
    for backend in ("auto", "torch", "cpp"):
        kw2 = {"backend": backend, **kw}
        with pytest.raises(exc, match=pattern):
            rqs(x, p, **kw2)
    if "backend" not in kw:
        with pytest.raises(exc, match=pattern.replace("'backend'", "")):
            rqs_torch(x, p, **kw)


def test_affine_bad_arguments():
    with pytest.raises(ValueError, match=r"'params' must have 2 entries"):
        affine(torch.zeros(3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"'params' must have shape"):
        affine(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"'backend' must be one of"):
        affine(torch.zeros(3), torch.zeros(3, 2), backend="gpu")


def test_rqs_num_params():
    assert [rqs_num_params(k) for k in (2, 3, 8)] == [5, 8, 23]
    with pytest.raises(ValueError, match="'num_bins' must be >= 2"):
        rqs_num_params(1)
    with pytest.raises(TypeError, match="'num_bins' must be an int"):
        rqs_num_params(2.0)  # type: ignore[arg-type]


def test_non_contiguous_and_broadcast_inputs():
    """Non-contiguous x and broadcast params work and equal the contiguous, explicit computation."""
    k = 4
    x = rand_x((6, 5), seed=3).t()  # (5, 6), non-contiguous
    p_row = rand_params((6,), k, seed=4)  # broadcast over the 5 rows
    full = p_row.expand(5, 6, -1).contiguous()
    for backend in [b for b in PATHS if b == "torch" or cpp_support(x) is None]:
        y, lad = rqs(x, p_row, backend=backend)
        y2, lad2 = rqs(x.contiguous(), full, backend=backend)
        assert torch.equal(y, y2) and torch.equal(lad, lad2)
        ya, la = affine(x, torch.tensor([0.3, -1.0], dtype=torch.float64), backend=backend)
        torch.testing.assert_close(ya, x * math.exp(0.3) - 1.0, rtol=1e-15, atol=1e-15)
        assert torch.equal(la, torch.full_like(x, 0.3))


@pytest.mark.parametrize("backend", PATHS)
def test_zero_dimensional_input(backend):
    need(backend)
    x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    p = rand_params((), 3, seed=5).requires_grad_()
    y, lad = rqs(x, p, backend=backend)
    yr, ladr = rqs(x.detach().reshape(1), p.detach().reshape(1, -1), backend="torch")
    assert y.shape == () and lad.shape == ()
    torch.testing.assert_close(y.detach(), yr[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(lad.detach(), ladr[0], rtol=1e-12, atol=1e-12)
    (y + lad).backward()
    assert x.grad.shape == () and p.grad.shape == p.shape


def test_numpy_not_touched_by_torch_path():
    """The torch path accepts tensors only (numpy arrays are refused with a clear message)."""
    with pytest.raises(TypeError, match="'x' must be a torch.Tensor, got ndarray"):
        rqs(np.zeros(3), torch.zeros(3, 5))  # type: ignore[arg-type]


# --- CUDA parity (runs only where a CUDA device exists; none on the development machines or CI) -----


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inverse", [False, True])
def test_cuda_matches_cpu(dtype, inverse):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch (the development machines and CI have none)")
    k = 8
    x = rand_x((300, 7), seed=110).to(dtype)
    p = rand_params((300, 7), k, seed=111).to(dtype)
    y_cpu, lad_cpu = rqs(x, p, inverse=inverse)
    xc = x.cuda().requires_grad_()
    pc = p.cuda().requires_grad_()
    y, lad = rqs(xc, pc, inverse=inverse)  # CUDA kernels in a CUDA build, else the torch path
    (y.sum() + lad.sum()).backward()
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    cond = torch.exp(lad_cpu.double()).clamp(min=1.0) if inverse else 1.0
    assert ((y.detach().cpu().double() - y_cpu.double()).abs() / cond).max() <= tol
    assert ((lad.detach().cpu().double() - lad_cpu.double()).abs() / cond).max() <= 10 * tol
    xg, pg = x.clone().requires_grad_(), p.clone().requires_grad_()
    y2, lad2 = rqs(xg, pg, inverse=inverse, backend="torch")
    (y2.sum() + lad2.sum()).backward()
    torch.testing.assert_close(xc.grad.cpu(), xg.grad, rtol=10 * tol, atol=10 * tol)
    torch.testing.assert_close(pc.grad.cpu(), pg.grad, rtol=10 * tol, atol=10 * tol)
