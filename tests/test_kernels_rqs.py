"""RQ-spline kernels (``nfhep._core.bijectors.rqs_*``) against the independent float64 reference.

Tolerances (the reference is evaluated in float64 on the same inputs). Rounding the knots to the working
precision moves y by about eps * B * (1 + dy/dx), and x(y) by eps * B * (1 + dx/dy), so value tolerances
are element-wise c * eps * B * (1 + local slope): c = 1e4 * eps for float64 (~2e-12 B) and ~400 eps for
float32 (~5e-5 B; nflows in float32 has errors of the same size). log-determinants: 1e-10 (float64),
2e-3 (float32) absolute. Gradients: 1e-8 relative (float64). The inverse is compared with the reference
inverse (bisection) and through the forward map.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nfhep
import reference as R
from conftest import require_module

# Every test here runs once per SIMD level (generic, avx2, avx512), each against the reference.
pytestmark = pytest.mark.usefixtures("every_simd_level")

B_ = nfhep._core.bijectors
DTYPES = [np.float32, np.float64]
VAL_TOL = {np.float32: 5e-5, np.float64: 2e-12}
LAD_TOL = {np.float32: 2e-3, np.float64: 1e-10}


def lad_slope(v, p, bound=5.0, inverse=False):
    """|d lad / d v| of the float64 reference (central differences): amplifies input/knot rounding."""
    fn = R.rqs_inverse_np if inverse else R.rqs_forward_np
    h = 1e-6 * bound
    v = np.asarray(v, np.float64)
    lp = fn(v + h, p, **opts(bound))[1]
    lm = fn(v - h, p, **opts(bound))[1]
    return np.abs(lp - lm) / (2 * h) * bound


def assert_lad_close(lad, ref, dtype, slope):
    assert_close_scaled(lad, ref, LAD_TOL[dtype], (np.finfo(dtype).eps * 100 / LAD_TOL[dtype]) * slope)


def assert_close_scaled(got, ref, tol, slope=None):
    """|got - ref| <= tol * (1 + slope) element-wise (slope = local |derivative| amplifying rounding)."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    bound = tol * (1.0 + (0.0 if slope is None else np.asarray(slope, np.float64)))
    bad = ~(np.abs(got - ref) <= bound) & ~(np.isnan(got) & np.isnan(ref))
    assert not bad.any(), f"{bad.sum()} elements off, worst {np.max(np.abs(got - ref)[bad])}"


def make(shape, K, *, scale=1.0, bound=5.0, dtype=np.float64, seed=0, spread=1.2):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-spread * bound, spread * bound, size=shape).astype(dtype)
    p = (scale * rng.normal(size=shape + (3 * K - 1,))).astype(dtype)
    return x, p


def opts(bound=5.0):
    return dict(bound=bound, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)


# --------------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [2, 3, 5, 8, 16, 32])
@pytest.mark.parametrize("bound", [1e-3, 5.0, 1e3])
def test_forward_matches_reference(dtype, K, bound):
    x, p = make((300, 4), K, scale=2.0, bound=bound, dtype=dtype, seed=K)
    y, lad = B_.rqs_forward(x, p, **opts(bound))
    assert y.dtype == dtype and lad.dtype == dtype and y.shape == x.shape
    yr, lr = R.rqs_forward_np(x, p, **opts(bound))
    assert_close_scaled(y, yr, VAL_TOL[dtype] * bound, np.exp(lr))
    assert_lad_close(lad, lr, dtype, lad_slope(x, p, bound))
    outside = np.abs(x) > bound
    np.testing.assert_array_equal(y[outside], x[outside])
    np.testing.assert_array_equal(lad[outside], 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_on_knots_and_bounds(dtype):
    K = 6
    _, p = make((50,), K, scale=1.5, dtype=np.float64, seed=3)
    p = p.astype(dtype)
    xk, yk, _ = R.knots_np(p, **opts())
    xs = xk.astype(dtype)  # every knot of every element, including -B and +B
    pp = np.ascontiguousarray(np.broadcast_to(p[:, None, :], (50, K + 1, 3 * K - 1)))
    y, lad = B_.rqs_forward(np.ascontiguousarray(xs), pp, **opts())
    yr, lr = R.rqs_forward_np(xs, pp, **opts())
    assert_close_scaled(y, yr, VAL_TOL[dtype] * 5, np.exp(lr))
    assert_lad_close(lad, lr, dtype, lad_slope(xs, pp))
    # the knots map onto the height knots; the ends exactly onto -B and +B with log|det| = 0
    assert_close_scaled(y, yk, VAL_TOL[dtype] * 5, np.exp(lr))
    assert np.all(y[:, 0] == -5.0)
    np.testing.assert_allclose(y[:, -1], 5.0, rtol=0, atol=8 * np.finfo(dtype).eps)
    np.testing.assert_allclose(lad[:, [0, -1]], 0.0, atol=LAD_TOL[dtype])
    # inverse at the height knots
    xi, li = B_.rqs_inverse(np.ascontiguousarray(yk.astype(dtype)), pp, **opts())
    assert_close_scaled(xi, xk, VAL_TOL[dtype] * 5, np.exp(-lr))
    assert np.all(xi[:, 0] == -5.0)
    np.testing.assert_allclose(xi[:, -1], 5.0, rtol=0, atol=VAL_TOL[dtype] * 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits(dtype):
    K = 8
    rng = np.random.default_rng(7)
    x = rng.uniform(-6, 6, size=(400,)).astype(dtype)
    p = rng.choice([-50.0, 50.0, 80.0, -200.0, 0.0], size=(400, 3 * K - 1)).astype(dtype)
    y, lad = B_.rqs_forward(x, p)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(lad))
    yr, lr = R.rqs_forward_np(x, p)
    assert_close_scaled(y, yr, VAL_TOL[dtype] * 5, np.exp(lr))
    assert_lad_close(lad, lr, dtype, lad_slope(x, p))
    xi, li = B_.rqs_inverse(y, p)
    assert np.all(np.isfinite(xi)) and np.all(np.isfinite(li))
    gi, gp = B_.rqs_backward(x, p, np.ones_like(x), np.ones_like(x))
    assert np.all(np.isfinite(gi)) and np.all(np.isfinite(gp))
    gi, gp = B_.rqs_backward(y, p, np.ones_like(x), np.ones_like(x), inverse=True)
    assert np.all(np.isfinite(gi)) and np.all(np.isfinite(gp))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [2, 8, 32])
def test_inverse_matches_reference_and_roundtrip(dtype, K):
    x, p = make((500,), K, scale=1.0, dtype=dtype, seed=11 + K)
    y, lad = B_.rqs_forward(x, p)
    xi, li = B_.rqs_inverse(y, p)
    dxdy = np.exp(-lad.astype(np.float64))
    assert_close_scaled(xi, x, VAL_TOL[dtype] * 5 * 5, dxdy)
    assert_lad_close(li, -lad, dtype, lad_slope(x, p) * (1 + dxdy))
    # reference inverse (bisection, no quadratic formula), and through the forward map
    xr, lr = R.rqs_inverse_np(y, p)
    fx, _ = R.rqs_forward_np(xi, p)
    assert_close_scaled(fx, y, VAL_TOL[dtype] * 5 * 5, np.exp(-lr))
    assert_close_scaled(xi, xr, VAL_TOL[dtype] * 5 * 5, np.exp(lr))
    assert_lad_close(li, lr, dtype, lad_slope(y, p, inverse=True))


def test_logdet_matches_finite_differences():
    x, p = make((400,), 8, scale=1.0, spread=0.99, seed=5)
    eps = 1e-6
    yp, _ = B_.rqs_forward(x + eps, p)
    ym, _ = B_.rqs_forward(x - eps, p)
    _, lad = B_.rqs_forward(x, p)
    np.testing.assert_allclose(lad, np.log((yp - ym) / (2 * eps)), atol=1e-6, rtol=0)
    yy, _ = B_.rqs_forward(x, p)
    xp, _ = B_.rqs_inverse(yy + eps, p)
    xm, _ = B_.rqs_inverse(yy - eps, p)
    _, li = B_.rqs_inverse(yy, p)
    np.testing.assert_allclose(li, np.log((xp - xm) / (2 * eps)), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------------


def _torch_vjp(fn, v, p, gy, gl, bound=5.0):
    torch = pytest.importorskip("torch")
    vt = torch.tensor(v, dtype=torch.float64, requires_grad=True)
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    out, lad = fn(vt, pt, **opts(bound))
    (out * torch.tensor(gy) + lad * torch.tensor(gl)).sum().backward()
    return vt.grad.numpy(), pt.grad.numpy()


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("K", [2, 5, 8])
@pytest.mark.parametrize("bound", [1e-3, 5.0, 1e3])
def test_gradients_match_torch_autograd_of_reference(inverse, K, bound):
    x, p = make((200, 3), K, scale=1.0, bound=bound, seed=21 + K)
    rng = np.random.default_rng(1)
    gy, gl = rng.normal(size=x.shape), rng.normal(size=x.shape)
    inp = B_.rqs_forward(x, p, **opts(bound))[0] if inverse else x
    gi, gp = B_.rqs_backward(inp, p, gy, gl, inverse=inverse, **opts(bound))
    fn = R.rqs_inverse_torch if inverse else R.rqs_forward_torch
    ri, rp = _torch_vjp(fn, inp, p, gy, gl, bound)
    np.testing.assert_allclose(gi, ri, rtol=1e-8, atol=1e-9 * np.abs(ri).max())
    np.testing.assert_allclose(gp, rp, rtol=1e-8, atol=1e-9 * np.abs(rp).max())
    outside = np.abs(inp) > bound
    np.testing.assert_array_equal(gi[outside], gy[outside])
    np.testing.assert_array_equal(gp[outside], 0)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_finite_differences_of_reference(inverse):
    K = 4
    x, p = make((6,), K, scale=1.0, spread=0.9, seed=2)
    rng = np.random.default_rng(4)
    gy, gl = rng.normal(size=x.shape), rng.normal(size=x.shape)
    inp = R.rqs_forward_np(x, p)[0] if inverse else x
    fn = R.rqs_inverse_np if inverse else R.rqs_forward_np

    def loss(v, q):
        o, ld = fn(v, q)
        return np.sum(o * gy + ld * gl)

    eps = 1e-6
    gi, gp = B_.rqs_backward(inp, p, gy, gl, inverse=inverse)
    fd_i = np.array([(loss(inp + eps * e, p) - loss(inp - eps * e, p)) / (2 * eps) for e in np.eye(inp.size)])
    fd_p = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        d = np.zeros_like(p)
        d[idx] = eps
        fd_p[idx] = (loss(inp, p + d) - loss(inp, p - d)) / (2 * eps)
    np.testing.assert_allclose(gi, fd_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp, fd_p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_null_upstream_is_zero(dtype):
    x, p = make((64,), 5, dtype=dtype)
    z = np.zeros_like(x)
    gi, gp = B_.rqs_backward(x, p, z, z)
    inside = np.abs(x) <= 5
    np.testing.assert_array_equal(gi, 0)
    np.testing.assert_array_equal(gp, 0)
    assert inside.any()


# --------------------------------------------------------------------------------------------------
# nflows agreement
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inverse", [False, True])
def test_agrees_with_nflows(dtype, inverse):
    require_module("nflows")
    torch = require_module("torch")
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    K = 8
    x, p = make((500, 3), K, scale=1.5, dtype=dtype, seed=99)
    if inverse:
        x = B_.rqs_forward(x, p)[0]
    out, lad = (B_.rqs_inverse if inverse else B_.rqs_forward)(x, p)
    tp = torch.from_numpy(p)
    ro, rl = unconstrained_rational_quadratic_spline(
        torch.from_numpy(x), tp[..., :K], tp[..., K : 2 * K], tp[..., 2 * K :], inverse=inverse,
        tails="linear", tail_bound=5.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3,
    )  # fmt: skip
    if dtype == np.float64:
        np.testing.assert_allclose(out, ro.numpy(), atol=1e-9, rtol=0)
        np.testing.assert_allclose(lad, rl.numpy(), atol=1e-9, rtol=0)
    else:
        # float32: both against the float64 reference; nfhep must be about as accurate as nflows
        ref_o, ref_l = (R.rqs_inverse_np if inverse else R.rqs_forward_np)(x, p)
        for got, theirs, ref in ((out, ro.numpy(), ref_o), (lad, rl.numpy(), ref_l)):
            err_mine = np.abs(got.astype(np.float64) - ref)
            err_nflows = np.abs(theirs.astype(np.float64) - ref)
            assert err_mine.max() <= 4 * err_nflows.max() + 2e-4
            assert np.mean(err_mine) <= 2 * np.mean(err_nflows) + 1e-6


# --------------------------------------------------------------------------------------------------
# special inputs and shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_inputs(dtype):
    K = 4
    x = np.array([np.nan, np.inf, -np.inf, 1.0, 7.0], dtype=dtype)
    p = np.random.default_rng(0).normal(size=(5, 3 * K - 1)).astype(dtype)
    for fn in (B_.rqs_forward, B_.rqs_inverse):
        y, lad = fn(x, p)
        assert np.isnan(y[0]) and lad[0] == 0
        assert y[1] == np.inf and y[2] == -np.inf and lad[1] == 0 and lad[2] == 0
        assert np.isfinite(y[3]) and np.isfinite(lad[3]) and y[4] == 7.0
    g = np.ones_like(x)
    for inv in (False, True):
        gi, gp = B_.rqs_backward(x, p, g, g, inverse=inv)
        np.testing.assert_array_equal(gi[[0, 1, 2, 4]], 1.0)
        np.testing.assert_array_equal(gp[[0, 1, 2, 4]], 0.0)
        assert np.all(np.isfinite(gp))


def test_nan_params_do_not_leak_from_tails():
    x = np.array([6.0, -9.0])
    p = np.full((2, 11), np.nan)
    y, lad = B_.rqs_forward(x, p)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(lad, 0)
    gi, gp = B_.rqs_backward(x, p, np.ones(2), np.ones(2))
    np.testing.assert_array_equal(gi, 1)
    np.testing.assert_array_equal(gp, 0)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (1,), (7, 1), (2, 3, 5), (37,)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_shapes(shape, dtype):
    K = 3
    x, p = make(shape, K, dtype=dtype)
    y, lad = B_.rqs_forward(x, p)
    assert y.shape == shape and lad.shape == shape and y.dtype == dtype
    gi, gp = B_.rqs_backward(x, p, x, x)
    assert gi.shape == shape and gp.shape == shape + (3 * K - 1,)
    if x.size:
        yr, lr = R.rqs_forward_np(x, p)
        assert_close_scaled(y, yr, VAL_TOL[dtype] * 5, np.exp(lr))


@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(2, 12),
    scale=st.floats(0.0, 6.0),
    bound=st.sampled_from([0.5, 3.0, 5.0, 40.0]),
)
def test_property_monotone_and_invertible(seed, K, scale, bound):
    x, p = make((64,), K, scale=scale, bound=bound, seed=seed)
    x = np.sort(x)
    y, lad = B_.rqs_forward(x, p[:1].repeat(64, axis=0).copy(), **opts(bound))
    assert np.all(np.diff(y) >= 0)
    assert np.all(np.isfinite(lad))
    pp = p[:1].repeat(64, axis=0).copy()
    xi, li = B_.rqs_inverse(y, pp, **opts(bound))
    fx, _ = B_.rqs_forward(xi, pp, **opts(bound))
    np.testing.assert_allclose(fx, y, atol=1e-10 * bound, rtol=0)
    np.testing.assert_allclose(li, -lad, atol=1e-6, rtol=1e-9)


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------


def _good(K=3, dtype=np.float64):
    return make((4, 2), K, dtype=dtype)


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda x, p: (x.astype(np.int64), p), TypeError, "'x'"),
        (lambda x, p: (x, p.astype(np.float32)), TypeError, "'params'"),
        (lambda x, p: (x.astype(np.float16), p.astype(np.float16)), TypeError, "'x'"),
        (lambda x, p: (x.tolist(), p), TypeError, "'x'"),
        (lambda x, p: (x, p.tolist()), TypeError, "'params'"),
        (lambda x, p: (x[:, ::-1], p), ValueError, "'x'.*C-contiguous"),
        (lambda x, p: (x, np.asfortranarray(p)), ValueError, "'params'.*C-contiguous"),
        (lambda x, p: (x[:3], p), ValueError, "'params'.*shape"),
        (lambda x, p: (x, np.ascontiguousarray(p[..., :7])), ValueError, "'params'.*3K - 1"),
        (lambda x, p: (x, np.ascontiguousarray(p[..., :2])), ValueError, "'params'.*3K - 1"),
        (lambda x, p: (np.float64(1.0), p), TypeError, "'x'"),
        (lambda x, p: (np.array(1.0), p[0, 0]), ValueError, "'x'.*0-d"),
    ],
)
def test_bad_arrays(mutate, exc, match):
    x, p = _good()
    x2, p2 = mutate(x, p)
    with pytest.raises(exc, match=match):
        B_.rqs_forward(x2, p2)
    with pytest.raises(exc, match=match.replace("'x'", "'y'")):
        B_.rqs_inverse(x2, p2)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(bound=0.0), "bound"),
        (dict(bound=-1.0), "bound"),
        (dict(bound=float("nan")), "bound"),
        (dict(bound=float("inf")), "bound"),
        (dict(min_bin_width=-1e-3), "min_bin_width"),
        (dict(min_bin_height=-1e-3), "min_bin_height"),
        (dict(min_derivative=-1.0), "min_derivative"),
        (dict(min_derivative=float("nan")), "min_derivative"),
        (dict(min_bin_width=0.34), "min_bin_width \\* num_bins"),
        (dict(min_bin_height=0.5), "min_bin_height \\* num_bins"),
    ],
)
def test_bad_options(kw, match):
    x, p = _good(K=3)
    for fn in (B_.rqs_forward, B_.rqs_inverse):
        with pytest.raises(ValueError, match=match):
            fn(x, p, **kw)
    with pytest.raises(ValueError, match=match):
        B_.rqs_backward(x, p, x, x, **kw)


def test_bad_backward_arrays():
    x, p = _good()
    with pytest.raises(ValueError, match="'grad_output'.*same shape"):
        B_.rqs_backward(x, p, x[:2], x)
    with pytest.raises(TypeError, match="'grad_logabsdet'.*same dtype"):
        B_.rqs_backward(x, p, x, x.astype(np.float32))
    with pytest.raises(TypeError, match="'inputs'"):
        B_.rqs_backward(None, p, x, x)
    with pytest.raises(TypeError):
        B_.rqs_forward(x, p, 5.0)  # configuration is keyword-only


def test_options_change_the_map():
    x, p = make((100,), 4, scale=2.0, bound=2.0, seed=9)
    kw = dict(bound=2.0, min_bin_width=0.1, min_bin_height=0.05, min_derivative=0.5)
    y, lad = B_.rqs_forward(x, p, **kw)
    yr, lr = R.rqs_forward_np(x, p, **kw)
    np.testing.assert_allclose(y, yr, atol=1e-12, rtol=0)
    np.testing.assert_allclose(lad, lr, atol=1e-10, rtol=0)
