"""The unweighted W1 without full sorts (bucket sums; only buckets where the ECDFs cross are sorted).

``wasserstein_per_dim`` and ``sliced_wasserstein`` take that path when neither sample is weighted; with
unit weights they take the sorted merge. Both must equal ``scipy.stats.wasserstein_distance`` (an
independent implementation) on the same values, on data that exercises every branch: many crossings,
no crossing at all, identical samples (every bucket crosses), heavy ties, heavy tails (most values in a
few buckets), a value range that overflows (the full-sort fallback), a large common offset (cancellation),
unequal sizes, tiny samples, float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import nfhep
from conftest import kernel_settings_restored
from nfhep import _core
from nfhep import metrics as M

RTOL_SCIPY = 1e-11  # scipy sums in another order: rounding only
RTOL_SORTED = 1e-12


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _cases(rng):
    yield "normal", rng.normal(size=(30000, 3)), rng.normal(0.02, 1.0, size=(20000, 3))
    yield "shifted-far", rng.uniform(size=(5000, 2)), rng.uniform(5.0, 6.0, size=(4000, 2))
    yield (
        "ties",
        rng.integers(0, 5, size=(3000, 2)).astype(float),
        rng.integers(0, 6, size=(2500, 2)).astype(float),
    )
    yield "cauchy", rng.standard_cauchy(size=(6000, 2)), 1.1 * rng.standard_cauchy(size=(5000, 2))
    big = np.concatenate([rng.normal(size=(2000, 2)), np.full((5, 2), 1e308), np.full((5, 2), -1e308)])
    yield "overflowing-range", big, rng.normal(size=(1500, 2))
    yield "signed-zeros", np.array([[0.0], [-0.0], [1.0]]), np.array([[-0.0], [2.0]])
    yield "tiny", rng.normal(size=(1, 2)), rng.normal(size=(5, 2))
    yield (
        "float32",
        rng.normal(size=(4000, 2)).astype(np.float32),
        rng.normal(0.1, 1, size=(3000, 2)).astype(np.float32),
    )
    yield "skewed", rng.exponential(size=(50000, 1)) ** 3, rng.exponential(size=(40000, 1)) ** 3
    yield (
        "offset",
        1e4 + 1e-3 * rng.normal(size=(20000, 2)),
        1e4 + 1e-3 * rng.normal(0.01, 1, size=(20000, 2)),
    )
    x = rng.normal(size=(8000, 2))
    yield "one-point-differs", x, np.concatenate([x[1:], [[0.5, -0.5]]])


@pytest.mark.parametrize("case", list(range(11)))
def test_w1_per_dim_bucketed_matches_scipy_and_sorted_path(case):
    rng = np.random.default_rng(1000 + case)
    name, x, y = list(_cases(rng))[case]
    w = M.wasserstein_per_dim(x, y)
    ws = M.wasserstein_per_dim(x, y, weights_x=np.ones(len(x)), weights_y=np.ones(len(y)))
    for d in range(x.shape[1]):
        ref = stats.wasserstein_distance(x[:, d].astype(np.float64), y[:, d].astype(np.float64))
        assert _rel(w[d], ref) <= RTOL_SCIPY, (name, d, w[d], ref)
        assert _rel(w[d], ws[d]) <= RTOL_SORTED, (name, d, w[d], ws[d])


@pytest.mark.parametrize("case", [0, 1, 3, 8, 9, 10])
def test_swd_bucketed_matches_scipy_on_the_same_projections(case):
    rng = np.random.default_rng(2000 + case)
    name, x, y = list(_cases(rng))[case]
    if x.shape[1] == 1:
        x, y = np.hstack([x, x[::-1]]), np.hstack([y, y[::-1]])
    dirs = M.random_directions(6, x.shape[1], seed=case)
    r = M.sliced_wasserstein(x, y, directions=dirs)
    rs = M.sliced_wasserstein(x, y, directions=dirs, weights_x=np.ones(len(x)), weights_y=np.ones(len(y)))
    px, py = _core.metrics.project(x, dirs), _core.metrics.project(y, dirs)  # the projections it sorts
    for j in range(len(dirs)):
        ref = stats.wasserstein_distance(px[j], py[j])
        assert _rel(r.per_direction[j], ref) <= RTOL_SCIPY, (name, j)
        assert _rel(r.per_direction[j], rs.per_direction[j]) <= RTOL_SORTED, (name, j)


def test_identical_and_permuted_samples_give_exactly_zero():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20000, 3))
    assert np.all(M.wasserstein_per_dim(x, x) == 0.0)
    assert np.all(M.wasserstein_per_dim(x, x[rng.permutation(len(x))]) == 0.0)
    assert M.sliced_wasserstein(x, x[::-1], seed=1).mean == 0.0
    assert np.all(M.wasserstein_per_dim(np.full((10, 2), 7.0), np.full((3, 2), 7.0)) == 0.0)


def test_bucketed_w1_is_independent_of_thread_count():
    rng = np.random.default_rng(9)
    x = rng.standard_cauchy(size=(30000, 5))
    y = rng.standard_cauchy(size=(25000, 5)) + 0.01
    dirs = M.random_directions(7, 5, seed=2)
    out = []
    with kernel_settings_restored():
        for t in (1, 2, 3):
            nfhep.set_num_threads(t)
            out.append(
                (M.wasserstein_per_dim(x, y), M.sliced_wasserstein(x, y, directions=dirs).per_direction)
            )
    for a, b in out[1:]:
        np.testing.assert_array_equal(a, out[0][0])
        np.testing.assert_array_equal(b, out[0][1])


def test_large_sample_many_buckets_matches_sorted_path():
    # n large enough for the largest bucket count (2^15 buckets): H0, so the ECDFs cross many times
    rng = np.random.default_rng(11)
    x = rng.normal(size=(600_000, 1))
    y = rng.normal(size=(500_000, 1))
    w = M.wasserstein_per_dim(x, y)[0]
    ws = M.wasserstein_per_dim(x, y, weights_x=np.ones(len(x)), weights_y=np.ones(len(y)))[0]
    assert _rel(w, ws) <= RTOL_SORTED
    assert _rel(w, stats.wasserstein_distance(x[:, 0], y[:, 0])) <= RTOL_SCIPY


def test_swd_large_projection_buffers_match_sorted_path():
    # 4 directions x (300,000 + 250,000) keys = 17 MiB of projections, and one direction per block
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300_000, 3))
    y = rng.normal(0.01, 1.0, size=(250_000, 3))
    dirs = M.random_directions(4, 3, seed=4)
    r = M.sliced_wasserstein(x, y, directions=dirs).per_direction
    rs = M.sliced_wasserstein(x, y, directions=dirs, weights_x=np.ones(len(x)), weights_y=np.ones(len(y)))
    np.testing.assert_allclose(r, rs.per_direction, rtol=RTOL_SORTED, atol=0)
    blocks = _core.metrics.sliced_wasserstein(x, y, dirs, block_bytes=1)  # one direction per block
    np.testing.assert_array_equal(r, blocks)


def test_bucketed_w1_simd_levels():
    # Per-dimension W1: bitwise the same on every level (the levels differ only in how they select and
    # sum, not in what: the signed offset sums run in the same 8 lanes and 512-value chunks everywhere).
    # Sizes with a partial last chunk and a partial last vector; float64 and float32 (32-bit keys).
    # SWD: AVX2 and AVX-512 share the FMA projection, so they agree bitwise too.
    rng = np.random.default_rng(21)
    x = rng.normal(size=(40005, 3))
    y = rng.normal(0.01, 1.0, size=(29997, 3))
    dirs = M.random_directions(6, 3, seed=8)
    levels = nfhep.build_info()["simd_available"]
    w, w32, s = {}, {}, {}
    with kernel_settings_restored():
        for lv in levels:
            _core.set_simd(lv)
            w[lv] = M.wasserstein_per_dim(x, y)
            w32[lv] = M.wasserstein_per_dim(x.astype(np.float32), y.astype(np.float32))
            s[lv] = M.sliced_wasserstein(x, y, directions=dirs).per_direction
    ref = [stats.wasserstein_distance(x[:, d], y[:, d]) for d in range(3)]
    assert _rel(w[levels[0]], ref) <= RTOL_SCIPY
    for lv in levels:
        np.testing.assert_array_equal(w[lv], w[levels[0]], err_msg=lv)
        np.testing.assert_array_equal(w32[lv], w32[levels[0]], err_msg=lv)
        np.testing.assert_allclose(s[lv], s[levels[0]], rtol=1e-13, err_msg=lv)
    if "avx2" in s and "avx512" in s:
        np.testing.assert_array_equal(s["avx2"], s["avx512"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "y"])
def test_swd_names_a_nonfinite_value_found_through_the_projections(bad, where):
    # the samples are scanned only when a projection comes out non-finite: the error must still name them
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 4))
    y = rng.normal(size=(2000, 4))
    (x if where == "x" else y)[1234, 2] = bad
    with pytest.raises(
        ValueError, match=f"argument '{where}' contains a non-finite value .* at event 1234, dimension 2"
    ):
        M.sliced_wasserstein(x, y, seed=1)


def test_swd_overflowing_projection_of_finite_samples_is_not_an_error():
    # finite inputs whose projections overflow: no NaN/inf in the samples, so no error (the value is inf)
    x = np.full((50, 2), 1.5e308)
    y = np.zeros((40, 2))
    per = _core.metrics.sliced_wasserstein(x, y, np.array([[np.sqrt(0.5), np.sqrt(0.5)]]))
    assert np.isinf(per[0])


def test_swd_streamed_projections_match():
    # 2 directions x (3,000,000 + 1,500,000) keys = 72 MB of projections in one block: written with
    # non-temporal stores (>= 64 MiB); one direction per block (36 MB) uses ordinary stores: same bits.
    rng = np.random.default_rng(31)
    x = rng.normal(size=(3_000_000, 2))
    y = rng.normal(0.001, 1.0, size=(1_500_000, 2))
    dirs = M.random_directions(2, 2, seed=5)
    streamed = _core.metrics.sliced_wasserstein(x, y, dirs)
    plain = _core.metrics.sliced_wasserstein(x, y, dirs, block_bytes=1)
    np.testing.assert_array_equal(streamed, plain)
    px, py = _core.metrics.project(x, dirs), _core.metrics.project(y, dirs)
    for j in range(2):
        assert _rel(streamed[j], stats.wasserstein_distance(px[j], py[j])) <= RTOL_SCIPY
