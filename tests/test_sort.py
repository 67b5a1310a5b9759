"""The metrics' key sort (``_core.metrics.sort``): AVX-512 vectorised quicksort or the radix sort.

Every SIMD level this CPU supports is checked against ``np.sort`` on random, tied, sorted, reversed,
all-equal, signed-zero, infinite and subnormal inputs, sizes 0..300 exhaustively (every size of the
in-register sorting networks and of the partition's tail handling) and 10^5 / 10^6; and the metrics built
on the sort must give the same bits on every level (the sort's output is unique for a total order).
"""

from __future__ import annotations

import numpy as np
import pytest

import nfhep
from conftest import kernel_settings_restored
from nfhep import _core
from nfhep import metrics as M

LEVELS = _core.build_info()["simd_available"]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture(params=LEVELS)
def level(request):
    _core.set_simd(request.param)
    yield request.param
    _core.set_simd("")


def _patterns(rng, n, dtype):
    """Named inputs of length n that stress pivots, ties and the special values."""
    fi = np.finfo(dtype)
    normal = rng.standard_normal(n).astype(dtype)
    yield "normal", normal
    yield "sorted", np.sort(normal)
    yield "reversed", np.sort(normal)[::-1].copy()
    yield "all_equal", np.full(n, 1.5, dtype=dtype)
    yield "two_values", rng.integers(0, 2, n).astype(dtype)
    yield "few_ties", rng.integers(-3, 4, n).astype(dtype)
    yield "rounded", np.round(normal, 1)
    yield "organ_pipe", np.concatenate([np.arange(n // 2), np.arange(n - n // 2)[::-1]]).astype(dtype)
    yield "sawtooth", (np.arange(n) % 17).astype(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, fi.tiny, -fi.tiny, fi.smallest_subnormal,
                        -fi.smallest_subnormal, fi.max, -fi.max], dtype=dtype)  # fmt: skip
    yield "special", special[rng.integers(0, len(special), n)]
    wide = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(dtype)
    yield "wide", wide


def _check(a):
    got = _core.metrics.sort(a)
    assert got.dtype == a.dtype and got.shape == a.shape
    want = np.sort(a)
    np.testing.assert_array_equal(got, want)  # -0.0 == +0.0 here; the sort emits +0.0 for both
    assert not np.signbit(got[got == 0]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sort_small_sizes_exhaustive(dtype, level, rng):
    for n in range(301):
        for _name, a in _patterns(rng, n, dtype):
            _check(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1000, 4099, 100_003])
def test_sort_medium_and_large(dtype, n, level, rng):
    for _name, a in _patterns(rng, n, dtype):
        _check(a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sort_million(dtype, level, rng):
    n = 1_000_000
    _check(rng.standard_normal(n).astype(dtype))
    _check(rng.integers(0, 5, n).astype(dtype))  # heavy ties (as in the KS tests)
    _check(np.sort(rng.standard_normal(n)).astype(dtype)[::-1].copy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_sort_pivot_adversary(dtype, level):
    # The smallest keys sit exactly where the pivot sampler looks (equal strides), so many partitions put
    # nothing below the pivot; the tie split / depth limit (heapsort) must keep it correct.
    n = 50_000
    a = np.arange(n, 2 * n, dtype=np.float64)
    m = 32  # samples per pivot (4 vectors of 8 doubles; floats take 64)
    for k in (m, 2 * m):
        step = n // k
        pos = np.arange(k) * step + step // 2
        a[pos] = np.arange(k)
    _check(a.astype(dtype))


def test_sort_matches_radix_sort(rng):
    for dtype in DTYPES:
        a = np.round(rng.standard_normal(70_001) * 50).astype(dtype)
        np.testing.assert_array_equal(_core.metrics.sort(a), _core.metrics.radix_sort(a))


def test_sort_bad_input():
    with pytest.raises(TypeError, match="sort"):
        _core.metrics.sort(np.arange(5, dtype=np.int64))
    with pytest.raises(ValueError, match="'a'"):
        _core.metrics.sort(np.zeros((2, 2)))


def _metrics(x, y, w):
    dirs = M.random_directions(12, x.shape[1], seed=3)
    return [
        _core.metrics.sliced_wasserstein(x, y, dirs),
        M.ks_2samp(x, y).statistic,
        M.wasserstein_per_dim(x, y),
        M.ks_2samp(x, y, weights_x=w).statistic,
        M.wasserstein_per_dim(x, y, weights_x=w),
        *_core.metrics.hpdi(x, np.array([0.68, 0.954])),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_metrics_bitwise_identical_across_simd_levels_and_threads(dtype, rng):
    x = np.round(rng.normal(size=(6000, 5)), 1).astype(dtype)  # many ties
    y = rng.normal(0.05, 1.0, size=(5000, 5)).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=len(x))
    results = {}
    with kernel_settings_restored():
        for lv in LEVELS:
            _core.set_simd(lv)
            for t in (1, 2, 3):
                nfhep.set_num_threads(t)
                results[(lv, t)] = _metrics(x, y, w)
    # Every metric is bitwise independent of the thread count on each level, and bitwise the same on all
    # levels -- except the sliced Wasserstein distance (metric 0), whose projection uses FMA on AVX2 and
    # AVX-512 (bitwise equal to each other) and multiply-then-add on the generic level (rounding only).
    fma_levels = [lv for lv in LEVELS if lv != "generic"]
    for key, res in results.items():
        lv = key[0]
        for i, (a, b) in enumerate(zip(results[(lv, 1)], res, strict=True)):
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"metric {i} differs at {key} (threads)"
        ref = results[(LEVELS[0], 1)]
        for i, (a, b) in enumerate(zip(ref, res, strict=True)):
            if i == 0 and lv != LEVELS[0] and (LEVELS[0] == "generic" or lv == "generic"):
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, err_msg=str(key))
            else:
                assert np.array_equal(np.asarray(a), np.asarray(b)), f"metric {i} differs at {key}"
    if len(fma_levels) > 1:
        assert np.array_equal(results[(fma_levels[0], 1)][0], results[(fma_levels[-1], 1)][0])
