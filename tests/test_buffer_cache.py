"""The cache of freed large output buffers (nfhep.buffer_cache, cpp/bindings/bind_buffers.cpp)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import nfhep

B_ = nfhep._core.bijectors
K = 8
MIN_CACHED = 4 << 20  # outputs from 4 MiB up use the cache


@pytest.fixture
def cache():
    before = nfhep.buffer_cache()["limit_mib"]
    nfhep.buffer_cache(0)  # start empty
    nfhep.buffer_cache(256)
    yield
    nfhep.buffer_cache(0)
    nfhep.buffer_cache(before)


def _inputs(n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = (2 * rng.normal(size=n)).astype(dtype)
    p = rng.normal(size=(n, 3 * K - 1)).astype(dtype)
    return x, p


def test_large_outputs_are_reused_after_free(cache):
    x, p = _inputs(120_000)  # grad params: 120000 * 23 * 4 B = 10.5 MiB
    g = np.ones_like(x)
    gi, gp = B_.rqs_backward(x, p, g, g)
    assert gp.nbytes >= MIN_CACHED
    assert gp.flags.c_contiguous and gp.flags.writeable and gp.dtype == np.float32 and gp.shape == p.shape
    first = gp.ctypes.data
    ref = gp.copy()
    del gi, gp
    gc.collect()
    state = nfhep.buffer_cache()
    assert state["buffers"] >= 1 and state["cached_mib"] > 0
    gi2, gp2 = B_.rqs_backward(x, p, g, g)
    assert gp2.ctypes.data == first  # the freed buffer came back ...
    assert nfhep.buffer_cache()["hits"] > state["hits"]
    np.testing.assert_array_equal(gp2, ref)  # ... fully overwritten with the same result


def test_results_identical_with_and_without_cache(cache):
    x, p = _inputs(200_000, np.float64)
    g = np.linspace(-1, 1, x.size)
    with_cache = [*B_.rqs_forward(x, p), *B_.rqs_backward(x, p, g, g)]
    # fill the cached buffers with garbage, then compute again into them
    for a in with_cache:
        a.fill(np.nan)
    del with_cache
    again = [*B_.rqs_forward(x, p), *B_.rqs_backward(x, p, g, g)]
    nfhep.buffer_cache(0)
    without = [*B_.rqs_forward(x, p), *B_.rqs_backward(x, p, g, g)]
    for a, b in zip(again, without, strict=True):
        np.testing.assert_array_equal(a, b)


def test_live_arrays_are_never_handed_out_twice(cache):
    x, p = _inputs(1_200_000)  # y and logabsdet: 4.6 MiB each
    outs = [B_.rqs_forward(x, p) for _ in range(3)]
    ptrs = {a.ctypes.data for pair in outs for a in pair if a.nbytes >= MIN_CACHED}
    assert len(ptrs) == sum(1 for pair in outs for a in pair if a.nbytes >= MIN_CACHED)
    y0 = outs[0][0].copy()
    nfhep.buffer_cache(0)  # lowering the limit must not touch live arrays
    np.testing.assert_array_equal(outs[0][0], y0)


def test_torch_keeps_the_buffer_alive(cache):
    x, p = _inputs(1_200_000)
    y, _ = B_.rqs_forward(x, p)
    t = torch.from_numpy(y)
    expected = t.clone()
    del y, _
    gc.collect()
    B_.rqs_forward(*_inputs(1_200_000, seed=1))  # would reuse the buffer if it had been released
    assert torch.equal(t, expected)


def test_limit_zero_disables_and_empties(cache):
    x, p = _inputs(150_000)
    g = np.ones_like(x)
    B_.rqs_backward(x, p, g, g)  # grad params: 13 MiB
    gc.collect()
    assert nfhep.buffer_cache()["cached_mib"] > 0
    state = nfhep.buffer_cache(0)
    assert state["cached_mib"] == 0 and state["buffers"] == 0 and state["limit_mib"] == 0
    B_.rqs_backward(x, p, g, g)
    gc.collect()
    assert nfhep.buffer_cache()["cached_mib"] == 0


def test_small_outputs_bypass_the_cache(cache):
    x, p = _inputs(1000)
    before = nfhep.buffer_cache()
    B_.rqs_backward(x, p, np.ones_like(x), np.ones_like(x))
    after = nfhep.buffer_cache()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])


BAD_LIMITS = [(-1, ValueError, "limit_mib"), ("1", TypeError, "limit_mib"), (True, TypeError, "limit_mib")]


@pytest.mark.parametrize(("value", "exc", "match"), BAD_LIMITS)
def test_bad_limit(value, exc, match):
    with pytest.raises(exc, match=match):
        nfhep.buffer_cache(value)
    with pytest.raises((TypeError, ValueError), match=match):
        nfhep._core.buffer_cache(-5.0 if exc is ValueError else "x")
