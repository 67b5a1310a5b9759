"""Backward kernels reading broadcast (stride-0) upstream gradients in place.

``sum()``/``mean()`` hand their backward a gradient that is expanded with stride 0 (over everything, or
over the last axes). ``rqs_backward``/``affine_backward`` read such arrays without materialising them
(each stored value is the gradient of ``repeat`` consecutive elements). Every result must be bitwise that of
the plain call on the materialised, C-contiguous gradient -- at every SIMD level and thread count, with run
boundaries that do not line up with the kernels' chunks or SIMD lanes -- and None must mean zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nfhep
from conftest import kernel_settings_restored
from nfhep.bijectors import affine, rqs

core = nfhep._core
B_ = core.bijectors
LEVELS = core.build_info()["simd_available"]
K = 5
P = 3 * K - 1


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _inputs(shape, dtype, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-6, 6, size=shape).astype(dtype)
    x.reshape(-1)[:4] = [5.0, -5.0, 0.0, 7.5]  # the bounds and a tail
    p = (2 * rng.normal(size=shape + (P,))).astype(dtype)
    ap = rng.normal(size=shape + (2,)).astype(dtype)
    return x, p, ap


def _layouts(shape, dtype, seed=4):
    """(name, broadcast gradient) pairs of the layouts the kernels read in place."""
    rng = np.random.default_rng(seed)
    out = [("scalar", np.broadcast_to(np.asarray(rng.normal(), dtype=dtype), shape))]
    if len(shape) >= 2:
        lead = rng.normal(size=shape[:-1] + (1,)).astype(dtype)
        out.append(("per-row", np.broadcast_to(lead, shape)))  # the gradient of lad.sum(-1)
    if len(shape) >= 3:
        lead = rng.normal(size=shape[:1] + (1,) * (len(shape) - 1)).astype(dtype)
        out.append(("per-leading", np.broadcast_to(lead, shape)))
    out.append(("plain", rng.normal(size=shape).astype(dtype)))
    return out


def _backward(kind, x, p, ap, go, gl, inverse):
    if kind == "rqs":
        return B_.rqs_backward(x, p, go, gl, inverse=inverse)
    return B_.affine_backward(x, ap, go, gl, inverse=inverse)


def _dense(g, like):
    return np.zeros_like(like) if g is None else np.ascontiguousarray(g)


@pytest.mark.parametrize("kind", ["rqs", "affine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# 7 x 9 x 13 = 819 (runs of 9*13 and of 13 elements against lanes of 8/16 and chunks); 4099 x 29 crosses
# the affine chunk (32768) and the RQS chunk (2048) inside runs.
@pytest.mark.parametrize("shape", [(11,), (7, 9, 13), (4099, 29)])
def test_broadcast_gradients_bitwise_equal_materialised(kind, dtype, shape):
    x, p, ap = _inputs(shape, dtype)
    layouts = _layouts(shape, dtype) + [("none", None)]
    for inverse in (False, True):
        for _, go in layouts:
            for _, gl in layouts:
                got = _backward(kind, x, p, ap, go, gl, inverse)
                ref = _backward(kind, x, p, ap, _dense(go, x), _dense(gl, x), inverse)
                for a, b in zip(got, ref, strict=True):
                    np.testing.assert_array_equal(_bits(a), _bits(b))


@pytest.mark.parametrize("kind", ["rqs", "affine"])
def test_broadcast_gradients_every_level_and_thread_count(kind):
    shape = (40001, 7)  # runs of 7 across every chunk boundary; n not a multiple of a lane count
    x, p, ap = _inputs(shape, np.float64, seed=8)
    (_, scalar), (_, row) = _layouts(shape, np.float64)[:2]
    with kernel_settings_restored():
        for level in LEVELS:
            core.set_simd(level)
            ref = _backward(kind, x, p, ap, _dense(scalar, x), _dense(row, x), False)
            for threads in (1, 2, 3):
                nfhep.set_num_threads(threads)
                got = _backward(kind, x, p, ap, scalar, row, False)
                for a, b in zip(got, ref, strict=True):
                    np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=f"{level} {threads} threads")


@pytest.mark.parametrize("kind", ["rqs", "affine"])
def test_other_layouts_are_refused_with_the_argument_named(kind):
    x, p, ap = _inputs((6, 4), np.float64)
    g = np.ones((6, 4))
    bad = {
        "transposed": np.ones((4, 6)).T,
        "broadcast leading axis": np.broadcast_to(np.ones(4), (6, 4)),
        "every other element": np.ones((6, 8))[:, ::2],
    }
    for b in bad.values():
        with pytest.raises(ValueError, match="'grad_output'.*C-contiguous.*stride-0"):
            _backward(kind, x, p, ap, b, g, False)
        with pytest.raises(ValueError, match="'grad_logabsdet'.*C-contiguous"):
            _backward(kind, x, p, ap, g, b, False)
    with pytest.raises(ValueError, match="'grad_output'.*same shape"):
        _backward(kind, x, p, ap, np.broadcast_to(1.0, (6, 5)), g, False)
    with pytest.raises(TypeError, match="'grad_logabsdet'.*same dtype"):
        _backward(kind, x, p, ap, g, np.broadcast_to(np.float32(1.0), (6, 4)), False)
    with pytest.raises(TypeError, match="'grad_output'.*numpy.ndarray"):
        _backward(kind, x, p, ap, [1.0] * 24, g, False)


@pytest.mark.parametrize("kind", ["rqs", "affine"])
@pytest.mark.parametrize("inverse", [False, True])
def test_function_backward_of_sums_matches_materialised_gradients(kind, inverse):
    """Through the autograd Function, sum()/sum(-1)/mean() gradients (stride 0) give bitwise the result
    of the same backward fed with contiguous copies of those gradients."""
    torch.manual_seed(0)
    x = (4 * torch.rand(300, 6, dtype=torch.float64) - 2).requires_grad_()
    p = torch.randn(300, 6, P if kind == "rqs" else 2, dtype=torch.float64, requires_grad=True)

    def run(loss_fn, materialise):
        fn = rqs if kind == "rqs" else affine
        y, lad = fn(x, p, inverse=inverse, backend="cpp")
        gy, gl = torch.autograd.grad(loss_fn(y, lad), (y, lad), allow_unused=True)
        if materialise:
            gy = None if gy is None else gy.contiguous()
            gl = None if gl is None else gl.contiguous()
        # the Function's backward alone, fed with those upstream gradients (None = unused output)
        y2, lad2 = fn(x, p, inverse=inverse, backend="cpp")
        used = [(t, g) for t, g in zip((y2, lad2), (gy, gl), strict=True) if g is not None]
        return torch.autograd.grad([t for t, _ in used], (x, p), grad_outputs=[g for _, g in used])

    losses = {
        "sum": lambda y, lad: y.sum() + lad.sum(),
        "flow nll": lambda y, lad: -(-0.5 * (y**2).sum(-1) + lad.sum(-1)).mean(),
        "lad only": lambda y, lad: lad.sum(-1).mean(),
    }
    y, lad = (rqs if kind == "rqs" else affine)(x, p, inverse=inverse, backend="cpp")
    assert torch.autograd.grad(y.sum(), y)[0].stride() == (0, 0)  # the case this is about
    for name, loss in losses.items():
        got = run(loss, materialise=False)
        ref = run(loss, materialise=True)
        for a, b in zip(got, ref, strict=True):
            assert torch.equal(a, b), name
