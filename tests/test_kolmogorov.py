"""KS null distributions in C++ (_core.metrics.kstwo_sf / smirnov_sf) vs scipy, and their use in ks_2samp.

Parity: relative difference <= 1e-10 wherever scipy's value is >= 1e-300. Below 1e-300 (deep tails, where
scipy itself returns subnormals or exact zeros from its underflow cuts) we require our value to be below
1e-300 as well, and exactly 0 where scipy returns exactly 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

import nfhep
from conftest import kernel_settings_restored
from nfhep import _core
from nfhep.metrics import ks_2samp, ks_pvalue

TINY = 1e-300
RTOL = 1e-10


def _assert_parity(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape
    assert np.array_equal(np.isnan(got), np.isnan(ref)), what
    ok = ~np.isnan(ref)
    big = ok & (ref >= TINY)
    rel = np.abs(got[big] - ref[big]) / ref[big]
    worst = f"max rel {rel.max():.3g} at sf={ref[big][rel.argmax()]:.6g}" if rel.size else ""
    assert rel.size == 0 or rel.max() <= RTOL, f"{what}: {worst}"
    small = ok & (ref < TINY)
    assert np.all((got[small] >= 0) & (got[small] < TINY)), what


def _grid(n: int, k: int) -> np.ndarray:
    """d from 1e-6 to 1 plus every point where scipy switches regime for this n (and its neighbours)."""
    marks = [0.0, 1.0, 0.5, 0.5 / n, 1.0 / n, 1.0 - 1.0 / n, (1.4 / n) ** (2 / 3)]
    marks += [np.sqrt(c / n) for c in (0.754693, 2.2, 4.0, 18.0, 370.0, 372.6)]
    marks = [m for m in marks if 0.0 <= m <= 1.0]
    near = [np.nextafter(m, s) for m in marks for s in (0.0, 2.0)]
    d = np.concatenate([np.logspace(-6, 0, k), marks, near])
    return np.unique(np.clip(d, 0.0, 1.0))


# The regime boundaries of scipy's _kolmogn / smirnov: n = 140|141 (exact methods), 1e4 (our quadrature),
# 1e5 (Durbin matrix), 1e6 (smirnov's closed form).
SMALL_N = [1, 2, 3, 4, 7, 10, 31, 64, 100, 139, 140, 141, 142, 500, 2000]
LARGE_N = [9999, 10000, 10001, 99999, 100000, 100001, 500000, 1000000, 1000001, 4999999, 10000000]


@pytest.mark.parametrize("n", SMALL_N)
def test_kstwo_sf_small_n(n):
    d = _grid(n, 120)
    _assert_parity(_core.metrics.kstwo_sf(d, float(n)), stats.kstwo.sf(d, n), f"kstwo n={n}")


# scipy's smirnov sum costs ~1 us per unit of n per value (~1 s at n = 1e6) where 2.2 <= n d^2 < 370:
# there the grid keeps only a few points (an offline sweep of 300 d per n, n up to 1e7, gave <= 1.6e-12).
EXPENSIVE = {99999: 4, 100000: 4, 100001: 4, 500000: 1, 1000000: 1}


@pytest.mark.parametrize("n", LARGE_N)
def test_kstwo_sf_large_n(n):
    d = _grid(n, 40)
    nd2 = n * d * d
    costly = (nd2 >= 2.2) & (nd2 < 370.0) & (n <= 1000000) & (d < 0.5)
    keep = EXPENSIVE.get(n)
    if keep is not None:
        idx = np.flatnonzero(costly)
        picked = idx[np.linspace(0, idx.size - 1, keep).round().astype(int)]
        d = np.concatenate([d[~costly], d[picked]])
    _assert_parity(_core.metrics.kstwo_sf(d, float(n)), stats.kstwo.sf(d, n), f"kstwo n={n}")


def test_kstwo_sf_zero_branches():
    """scipy's exact zeros by branch (n > 140 and n d^2 >= 370; d >= 1) are exact zeros here too."""
    for n in (141, 5000, 10**6):
        d = np.array([np.sqrt(370.0 / n), np.sqrt(400.0 / n), 1.0])
        assert np.all(_core.metrics.kstwo_sf(d, float(n)) == 0.0)
        assert np.all(stats.kstwo.sf(d, n) == 0.0)


@pytest.mark.parametrize("n", [1, 2, 5, 30, 141, 3000, 10001, 30000, 1000001, 10000000])
def test_smirnov_sf(n):
    d = _grid(n, 25)
    if 10000 < n <= 1000000:  # O(n) per value in scipy: a handful (both of our methods: n d^2 below/above 2)
        d = np.concatenate([d[(n * d * d >= 2.0) & (d < 0.5)][::3], d[n * d * d < 2.0][::8], [0.6, 1.0]])
    _assert_parity(_core.metrics.smirnov_sf(d, n), special.smirnov(n, d), f"smirnov n={n}")


def test_kstwo_sf_edges():
    f = _core.metrics.kstwo_sf
    d = np.array([0.0, -1.0, 1.0, 2.0, np.inf, -np.inf, np.nan, 0.3])
    _assert_parity(f(d, 10.0), stats.kstwo.sf(d, 10), "edges")
    for bad in (0.0, -3.0, 2.5, np.nan):  # n must be an integer >= 1, as scipy's argcheck
        assert np.all(np.isnan(f(np.array([0.1, 0.5]), bad)))
        with np.errstate(divide="ignore", invalid="ignore"):
            assert np.all(np.isnan(stats.kstwo.sf(np.array([0.1, 0.5]), bad)))
    assert np.all(np.isnan(_core.metrics.smirnov_sf(np.array([-0.1, 1.1, np.nan]), 10)))
    assert np.all(np.isnan(_core.metrics.smirnov_sf(np.array([0.1]), 0)))
    assert f(np.empty(0), 5.0).shape == (0,)


def test_bad_arguments_name_d():
    with pytest.raises(TypeError, match="kstwo_sf: argument 'd' must have dtype float64"):
        _core.metrics.kstwo_sf(np.array([0.1], dtype=np.float32), 5.0)
    with pytest.raises(ValueError, match="argument 'd'"):
        _core.metrics.kstwo_sf(np.zeros((2, 2)), 5.0)
    with pytest.raises(ValueError, match="argument 'd'"):
        _core.metrics.smirnov_sf(np.zeros(6)[::2], 5)


def test_thread_count_independent():
    rng = np.random.default_rng(3)
    d = np.concatenate([rng.uniform(0, 0.01, 64), rng.uniform(0, 1, 16)])
    out = []
    with kernel_settings_restored():
        for t in (1, 2, 3):
            nfhep.set_num_threads(t)
            out.append((_core.metrics.kstwo_sf(d, 500000.0), _core.metrics.smirnov_sf(d, 20000)))
    for a, b in out[1:]:
        assert np.array_equal(a, out[0][0]) and np.array_equal(b, out[0][1])


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_ks_2samp_asymp_matches_scipy(alternative):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(12000, 4))
    y = rng.normal(size=(15000, 4)) * np.array([1.0, 1.02, 1.0, 1.0]) + np.array([0.0, 0.0, 0.03, 0.2])
    res = ks_2samp(x, y, alternative=alternative)
    assert res.method == ["asymp"] * 4
    for j in range(4):
        ref = stats.ks_2samp(x[:, j], y[:, j], alternative=alternative, method="asymp")
        assert res.statistic[j] == ref.statistic
        assert res.pvalue[j] == pytest.approx(ref.pvalue, rel=RTOL, abs=TINY)
    # the scalar helper takes the same route
    d, p, mode = ks_pvalue(float(res.statistic[2]), 12000, 15000, alternative=alternative)
    assert mode == "asymp" and p == res.pvalue[2]


def test_ks_2samp_method_asymp_small_samples():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(37, 3)), rng.normal(0.5, 1.0, size=(53, 3))
    res = ks_2samp(x, y, method="asymp")
    for j in range(3):
        ref = stats.ks_2samp(x[:, j], y[:, j], method="asymp")
        assert res.pvalue[j] == pytest.approx(ref.pvalue, rel=RTOL, abs=TINY)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 2500, 10000])
@pytest.mark.parametrize("method", ["auto", "exact"])
def test_ks_2samp_exact_equal_sizes_matches_scipy(n, method):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 4))
    y = rng.normal(0.05, 1.0, size=(n, 4))
    x[:, 2], y[:, 2] = np.round(x[:, 2], 1), np.round(y[:, 2], 1)  # ties
    y[:, 3] = x[:, 3]  # identical columns: D = 0, p = 1
    res = ks_2samp(x, y, method=method)
    assert res.method == ["exact"] * 4
    for j in range(4):
        ref = stats.ks_2samp(x[:, j], y[:, j], method=method)
        assert res.statistic[j] == ref.statistic
        assert res.pvalue[j] == pytest.approx(ref.pvalue, rel=RTOL, abs=TINY)
    assert res.pvalue[3] == 1.0


def test_ks_exact_equal_sf_arguments():
    f = _core.metrics.ks_exact_equal_sf
    assert np.all(np.isnan(f(np.array([0, -1], dtype=np.int64), 10)))
    assert np.all(np.isnan(f(np.array([1], dtype=np.int64), 0)))
    assert f(np.array([10], dtype=np.int64), 10)[0] == pytest.approx(2.0 / 184756)  # 2 / C(20, 10)
    with pytest.raises(TypeError, match="argument 'h' must have dtype int64"):
        f(np.array([1.0]), 10)


def test_kstwo_sf_beyond_int32_n():
    """scipy returns NaN here (n overflows a C int in smirnov); we return twice its closed form."""
    n, d = 3.0e9, 3.0e-5
    want = 2 * np.exp(-((6.0 * n * d + 1.0) ** 2) / 18.0 / n)
    assert _core.metrics.kstwo_sf(np.array([d]), n)[0] == pytest.approx(want, rel=1e-14)
