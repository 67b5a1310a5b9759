"""Affine kernels (``nfhep._core.bijectors.affine_*``): y = x exp(s) + t (arXiv:1705.07057).

Tolerances: float64 1e-14 relative, float32 4 ulp (2.4e-7 relative), against the float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import nfhep
import reference as R

# Every test here runs once per SIMD level (generic, avx2, avx512), each against the reference.
pytestmark = pytest.mark.usefixtures("every_simd_level")

B_ = nfhep._core.bijectors
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 4 * np.finfo(np.float32).eps, np.float64: 1e-14}


def make(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(dtype) * 3
    p = rng.normal(size=shape + (2,)).astype(dtype)
    return x, p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (5, 1), (333, 7), (2, 3, 4)])
def test_forward_inverse_match_reference(dtype, shape):
    x, p = make(shape, dtype)
    y, lad = B_.affine_forward(x, p)
    assert y.shape == shape and y.dtype == dtype
    yr, lr = R.affine_forward_np(x, p)
    np.testing.assert_allclose(y, yr, rtol=RTOL[dtype], atol=RTOL[dtype] * 3)
    np.testing.assert_array_equal(lad, p[..., 0])
    xi, li = B_.affine_inverse(y, p)
    xr, lir = R.affine_inverse_np(y, p)
    np.testing.assert_allclose(xi, xr, rtol=RTOL[dtype], atol=RTOL[dtype] * 3)
    np.testing.assert_allclose(xi, x, rtol=4 * RTOL[dtype], atol=RTOL[dtype] * 30)
    np.testing.assert_array_equal(li, -lad)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_torch_autograd(inverse):
    torch = pytest.importorskip("torch")
    x, p = make((50, 3), np.float64, seed=3)
    rng = np.random.default_rng(5)
    gy, gl = rng.normal(size=x.shape), rng.normal(size=x.shape)
    xt = torch.tensor(x, requires_grad=True)
    pt = torch.tensor(p, requires_grad=True)
    s, t = pt[..., 0], pt[..., 1]
    if inverse:
        out, lad = (xt - t) * torch.exp(-s), -s
    else:
        out, lad = xt * torch.exp(s) + t, s
    (out * torch.tensor(gy) + lad * torch.tensor(gl)).sum().backward()
    gi, gp = B_.affine_backward(x, p, gy, gl, inverse=inverse)
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gp, pt.grad.numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_finite_differences(inverse):
    x, p = make((4,), np.float64, seed=8)
    gy, gl = np.array([0.3, -1.0, 2.0, 0.5]), np.array([1.0, 0.2, -0.7, 0.0])
    fn = R.affine_inverse_np if inverse else R.affine_forward_np

    def loss(v, q):
        o, ld = fn(v, q)
        return np.sum(o * gy + ld * gl)

    eps = 1e-6
    gi, gp = B_.affine_backward(x, p, gy, gl, inverse=inverse)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        assert gi[idx] == pytest.approx((loss(x + e, p) - loss(x - e, p)) / (2 * eps), rel=1e-6, abs=1e-7)
    for idx in np.ndindex(p.shape):
        e = np.zeros_like(p)
        e[idx] = eps
        assert gp[idx] == pytest.approx((loss(x, p + e) - loss(x, p - e)) / (2 * eps), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_propagate(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=dtype)
    p = np.array([[0.5, 1.0]] * 4, dtype=dtype)
    y, lad = B_.affine_forward(x, p)
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf and np.isfinite(y[3])
    np.testing.assert_array_equal(lad, 0.5)


def test_bad_inputs_name_the_argument():
    x, p = make((4, 2), np.float64)
    with pytest.raises(TypeError, match="'params'.*same dtype"):
        B_.affine_forward(x, p.astype(np.float32))
    with pytest.raises(ValueError, match="'params'.*size 2"):
        B_.affine_forward(x, np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="'params'.*shape"):
        B_.affine_inverse(x, np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match="'y'.*C-contiguous"):
        B_.affine_inverse(x.T, np.zeros((2, 4, 2)))
    with pytest.raises(TypeError, match="'x'"):
        B_.affine_forward([1.0, 2.0], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="'grad_output'"):
        B_.affine_backward(x, p, x[:1], x)
    with pytest.raises(TypeError, match="'inputs'.*float32 or float64"):
        B_.affine_backward(x.astype(np.int32), p, x, x)
