"""nfhep.metrics: parity with scipy and POT (float64, rel. diff <= 1e-10), properties, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nfhep
from conftest import kernel_settings_restored, require_module
from nfhep import _core
from nfhep import metrics as M

RTOL = 1e-10


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ----------------------------------------------------------------------------------------------- sort
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 1000, 200_003])
def test_radix_sort_matches_numpy(dtype, n, rng):
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(dtype)
    if n > 10:
        a[:5] = [0.0, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny]
        a[5:10] = a[0]  # ties
    np.testing.assert_array_equal(_core.metrics.radix_sort(a), np.sort(a))


def test_radix_sort_all_equal_and_subnormal():
    a = np.full(5000, 3.25)
    np.testing.assert_array_equal(_core.metrics.radix_sort(a), a)
    b = np.array([5e-324, -5e-324, 0.0, 1e-310, -1e-310] * 30)
    np.testing.assert_array_equal(_core.metrics.radix_sort(b), np.sort(b))


# ------------------------------------------------------------------------------------------------- KS
def _ks_cases(rng):
    yield rng.normal(size=(400, 3)), rng.normal(0.1, 1.0, size=(350, 3))  # unequal n
    yield np.round(rng.normal(size=(300, 2)), 1), np.round(rng.normal(size=(300, 2)), 1)  # ties, equal n
    yield rng.integers(0, 5, (200, 2)).astype(float), rng.integers(0, 6, (170, 2)).astype(float)  # heavy ties
    yield rng.normal(size=(12000, 2)), rng.standard_t(5, size=(15000, 2))  # auto -> asymp


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize("method", ["auto", "exact", "asymp"])
def test_ks_matches_scipy(alternative, method, rng):
    require_module("scipy")
    from scipy import stats as st

    for x, y in _ks_cases(rng):
        if method == "exact" and max(len(x), len(y)) > 10000:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exact -> asymp fallbacks warn in both
            r = M.ks_2samp(x, y, alternative=alternative, method=method)
            for d in range(x.shape[1]):
                s = st.ks_2samp(x[:, d], y[:, d], alternative=alternative, method=method)
                assert r.statistic[d] == pytest.approx(s.statistic, rel=RTOL, abs=1e-15)
                assert r.pvalue[d] == pytest.approx(s.pvalue, rel=RTOL, abs=1e-300)


def test_ks_float32_matches_scipy_on_same_values(rng):
    from scipy import stats as st

    x = rng.normal(size=(3000, 2)).astype(np.float32)
    y = rng.normal(size=(2000, 2)).astype(np.float32)
    r = M.ks_2samp(x, y, method="asymp")
    for d in range(2):
        s = st.ks_2samp(x[:, d].astype(np.float64), y[:, d].astype(np.float64), method="asymp")
        assert r.statistic[d] == pytest.approx(s.statistic, rel=RTOL)


def _weighted_ecdf_ks(x, wx, y, wy):
    """Independent float64 reference: weighted right-continuous ECDFs at all pooled values."""
    t = np.concatenate([x, y])
    fx = np.array([wx[x <= v].sum() for v in t]) / wx.sum()
    fy = np.array([wy[y <= v].sum() for v in t]) / wy.sum()
    return max(np.max(fx - fy), 0), max(np.max(fy - fx), 0)


def test_ks_weighted_matches_reference_and_replication(rng):
    x = np.round(rng.normal(size=(300, 2)), 1)
    y = np.round(rng.normal(0.2, size=(250, 2)), 1)
    wx = rng.uniform(0, 2, 300)
    wy = rng.uniform(0, 2, 250)
    r = M.ks_2samp(x, y, weights_x=wx, weights_y=wy)
    for d in range(2):
        dp, dm = _weighted_ecdf_ks(x[:, d], wx, y[:, d], wy)
        assert r.d_plus[d] == pytest.approx(dp, abs=1e-12)
        assert r.d_minus[d] == pytest.approx(dm, abs=1e-12)
    # integer weights == replicated events
    ix = rng.integers(0, 4, 300).astype(float)
    ix[0] = 1
    r1 = M.ks_2samp(x, y, weights_x=ix)
    r2 = M.ks_2samp(np.repeat(x, ix.astype(int), axis=0), y)
    np.testing.assert_allclose(r1.statistic, r2.statistic, rtol=1e-12)


def test_ks_weighted_exact_is_an_error(rng):
    x = rng.normal(size=(10, 1))
    with pytest.raises(ValueError, match="exact"):
        M.ks_2samp(x, x, method="exact", weights_x=np.ones(10))


def test_ks_monotone_invariance_and_symmetry(rng):
    x = rng.normal(size=(500, 3))
    y = rng.normal(0.2, size=(400, 3))
    r = M.ks_2samp(x, y)
    r_t = M.ks_2samp(np.exp(x) * 3 + 1, np.exp(y) * 3 + 1)
    np.testing.assert_array_equal(r.statistic, r_t.statistic)
    r_s = M.ks_2samp(y, x)
    np.testing.assert_array_equal(r.statistic, r_s.statistic)
    np.testing.assert_array_equal(r.d_plus, r_s.d_minus)
    z = M.ks_2samp(x, x)
    np.testing.assert_array_equal(z.statistic, 0.0)
    np.testing.assert_array_equal(z.pvalue, 1.0)


def test_ks_pvalues_uniform_under_h0():
    from scipy import stats as st

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 400))
    y = rng.normal(size=(250, 400))
    p = M.ks_2samp(x, y).pvalue
    # discrete-ish null distribution: KS test of the p-values against U(0,1) at a loose level
    assert st.kstest(p, "uniform").pvalue > 1e-3
    assert 0.4 < np.mean(p) < 0.6


# ---------------------------------------------------------------------------------------- Wasserstein
def test_w1_per_dim_matches_scipy(rng):
    from scipy import stats as st

    x = rng.normal(size=(700, 3))
    y = np.round(rng.normal(0.3, 1.4, size=(450, 3)), 2)
    wx = rng.uniform(0, 1, 700)
    wy = rng.uniform(0, 3, 450)
    w = M.wasserstein_per_dim(x, y)
    ww = M.wasserstein_per_dim(x, y, weights_x=wx, weights_y=wy)
    for d in range(3):
        assert _rel(w[d], st.wasserstein_distance(x[:, d], y[:, d])) <= RTOL
        assert _rel(ww[d], st.wasserstein_distance(x[:, d], y[:, d], wx, wy)) <= RTOL


@pytest.mark.parametrize("weighted", [False, True])
def test_swd_matches_scipy_per_direction(weighted, rng):
    from scipy import stats as st

    x = rng.normal(size=(900, 5))
    y = rng.normal(0.2, 1.1, size=(800, 5))
    wx = rng.uniform(0, 1, 900) if weighted else None
    wy = rng.uniform(0, 1, 800) if weighted else None
    r = M.sliced_wasserstein(x, y, seed=3, weights_x=wx, weights_y=wy)
    assert r.directions.shape == (10, 5)
    np.testing.assert_allclose(np.linalg.norm(r.directions, axis=1), 1.0, rtol=1e-14)
    for j, u in enumerate(r.directions):
        ref = st.wasserstein_distance(x @ u, y @ u, wx, wy)
        assert _rel(r.per_direction[j], ref) <= RTOL
    assert r.mean == pytest.approx(r.per_direction.mean(), rel=1e-15)
    assert r.std == pytest.approx(r.per_direction.std(), rel=1e-15)


def test_swd_matches_pot_p1(rng):
    ot = require_module("ot")
    x = rng.normal(size=(1000, 6))
    y = rng.normal(0.1, 1.2, size=(1000, 6))
    dirs = M.random_directions(12, 6, seed=1)
    r = M.sliced_wasserstein(x, y, directions=dirs)
    # POT takes projections as a (D, n_projections) matrix and returns (mean W_p^p)^(1/p)
    pot = ot.sliced_wasserstein_distance(x, y, projections=dirs.T.copy(), p=1)
    assert _rel(r.mean, float(pot)) <= RTOL


def test_swd_reproducible_and_directions_roundtrip(rng):
    x = rng.normal(size=(300, 4))
    y = rng.normal(size=(200, 4))
    a = M.sliced_wasserstein(x, y, seed=11)
    b = M.sliced_wasserstein(x, y, seed=11)
    c = M.sliced_wasserstein(x, y, directions=a.directions)
    np.testing.assert_array_equal(a.directions, b.directions)
    np.testing.assert_array_equal(a.per_direction, c.per_direction)
    np.testing.assert_array_equal(M.random_directions(5, 3, seed=2), M.random_directions(5, 3, seed=2))


def test_swd_properties(rng):
    x = rng.normal(size=(500, 3))
    y = rng.normal(0.5, size=(400, 3))
    dirs = M.random_directions(6, 3, seed=0)
    r = M.sliced_wasserstein(x, y, directions=dirs)
    assert M.sliced_wasserstein(x, x, directions=dirs).mean == 0.0
    assert M.sliced_wasserstein(y, x, directions=dirs).mean == pytest.approx(r.mean, rel=1e-12)
    shift = np.array([3.0, -1.0, 0.5])
    rt = M.sliced_wasserstein(x + shift, y + shift, directions=dirs)
    np.testing.assert_allclose(rt.per_direction, r.per_direction, rtol=1e-9)


def test_projection_and_threads_bitwise(rng):
    x = rng.normal(size=(20000, 7))
    y = rng.normal(size=(15000, 7))
    dirs = M.random_directions(14, 7, seed=5)
    np.testing.assert_allclose(_core.metrics.project(x, dirs), dirs @ x.T, rtol=1e-12, atol=1e-12)
    res = []
    with kernel_settings_restored():
        for t in (1, 2, 3):
            nfhep.set_num_threads(t)
            res.append(
                (
                    _core.metrics.project(x, dirs),
                    M.sliced_wasserstein(x, y, directions=dirs).per_direction,
                    M.ks_2samp(x, y).statistic,
                    M.wasserstein_per_dim(x, y),
                )
            )
    for r in res[1:]:
        for a, b in zip(r, res[0], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "n_dir,dim,dtype",
    [
        (5, 9, np.float32), (8, 9, np.float32), (13, 9, np.float32), (56, 9, np.float32),
        (56, 28, np.float64), (28, 28, np.float32), (7, 1, np.float64), (11, 8, np.float64),
        (3, 16, np.float32), (66, 33, np.float64),
    ],
)  # fmt: skip
def test_simd_levels_projection(n_dir, dim, dtype, rng):
    # AVX2 and AVX-512 contract the projection's multiply-adds into FMAs: bitwise identical to each other
    # (register blocks of 4 and 8 directions with remainders of 4, 2, 1; AVX-512 transposes full 32-row
    # tiles in registers, 8 columns at a time with a masked tail); the generic level multiplies and adds
    # and differs by rounding only. 5000 rows: full tiles and a partial one.
    x = rng.normal(size=(5000, dim)).astype(dtype)
    dirs = M.random_directions(n_dir, dim, seed=1)
    ref = dirs @ x.astype(np.float64).T
    levels = nfhep.build_info()["simd_available"]
    out = {}
    with kernel_settings_restored():
        for lv in levels:
            _core.set_simd(lv)
            out[lv] = _core.metrics.project(x, dirs)
    for lv, o in out.items():
        np.testing.assert_allclose(o, ref, rtol=1e-13, atol=1e-14, err_msg=lv)
    if "avx2" in out and "avx512" in out:
        np.testing.assert_array_equal(out["avx2"], out["avx512"])


def test_small_block_gives_same_result(rng):
    x = rng.normal(size=(3000, 4))
    y = rng.normal(size=(2000, 4))
    dirs = M.random_directions(9, 4, seed=0)
    a = _core.metrics.sliced_wasserstein(x, y, dirs)
    b = _core.metrics.sliced_wasserstein(x, y, dirs, block_bytes=1)  # one direction per block
    np.testing.assert_array_equal(a, b)


def test_float32_inputs_supported(rng):
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = rng.normal(size=(300, 3)).astype(np.float32)
    r32 = M.wasserstein_per_dim(x, y)
    r64 = M.wasserstein_per_dim(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(r32, r64, rtol=1e-6)
    dirs = M.random_directions(4, 3, seed=0)
    s32 = M.sliced_wasserstein(x, y, directions=dirs).per_direction
    s64 = M.sliced_wasserstein(x.astype(np.float64), y.astype(np.float64), directions=dirs).per_direction
    np.testing.assert_array_equal(s32, s64)  # float32 widened exactly, same float64 accumulation


# ------------------------------------------------------------------------------- other statistics
def test_anderson_matches_scipy(rng):
    from scipy import stats as st

    x = np.round(rng.normal(size=(300, 3)), 1)
    y = np.round(rng.normal(0.15, size=(200, 3)), 1)
    r = M.anderson_ksamp(x, y)
    for d in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scipy's capped p-value warning
            s = st.anderson_ksamp([x[:, d], y[:, d]], variant="midrank")
        assert _rel(r.statistic[d], s.statistic) <= 1e-10
        assert _rel(r.pvalue[d], s.pvalue) <= 1e-10


def test_frobenius_variants(rng):
    x = rng.normal(size=(2000, 3))
    y = rng.normal(size=(2000, 3))
    y[:, 1] += 0.5 * y[:, 0]
    full = M.frobenius_correlation(x, y)
    lower = M.frobenius_correlation(x, y, variant="lower")
    ref = np.linalg.norm(np.corrcoef(x, rowvar=False) - np.corrcoef(y, rowvar=False))
    assert full == pytest.approx(ref, rel=1e-12)
    assert lower == pytest.approx(ref / np.sqrt(2), rel=1e-12)
    assert M.frobenius_correlation(x, x) == 0.0


def _hpdi_ref(v, p):
    s = np.sort(v)
    k = int(np.floor(p * len(s)))
    widths = s[k - 1 :] - s[: len(s) - k + 1]
    i = int(np.argmin(widths))
    return s[i], s[i + k - 1]


def test_hpdi_matches_reference(rng):
    x = rng.gamma(2.0, size=(1001, 2))
    lo, hi = M.hpdi(x)
    for i, p in enumerate(M.HPDI_PROBS):
        for d in range(2):
            assert (lo[i, d], hi[i, d]) == _hpdi_ref(x[:, d], p)
    # integer weights == replication (weighted rule: weight >= p * total)
    w = rng.integers(1, 3, 1001).astype(float)
    lw, hw = M.hpdi(x, weights=w, probs=[0.5])
    xr = np.repeat(x, w.astype(int), axis=0)
    n = len(xr)
    s = np.sort(xr[:, 0])
    k = int(np.ceil(0.5 * w.sum()))
    widths = s[k - 1 :] - s[: n - k + 1]
    assert hw[0, 0] - lw[0, 0] == pytest.approx(widths.min(), rel=1e-12)


def test_hpdie_variants(rng):
    x = rng.normal(size=(5000, 2))
    e = M.hpdie(x, x)
    np.testing.assert_array_equal(e, 0.0)
    ew = M.hpdie(x, x * 1.1, variant="width")
    np.testing.assert_allclose(ew, 0.1, rtol=1e-9)


def test_mean_cov_difference(rng):
    x = rng.normal(size=(1000, 2))
    r = M.mean_cov_difference(x, x + 1.0)
    np.testing.assert_allclose(r["mean_diff"], 1.0)
    np.testing.assert_allclose(r["cov_diff"], 0.0, atol=1e-12)


def test_batched_summary(rng):
    x = rng.normal(size=(1003, 3))
    y = rng.normal(size=(998, 3))
    b = M.batched_metrics(x, y, n_iter=4)
    assert b.ks_pvalue.shape == (4, 3) and b.swd.shape == (4,) and b.hpdie.shape == (4, 3, 3)
    assert b.batch_sizes == (250, 249)
    # batch 0 equals the metric on the first contiguous batch
    np.testing.assert_array_equal(b.w1[0], M.wasserstein_per_dim(x[:250], y[:249]))
    s = b.summary()
    assert s["ks_pvalue"]["median"] == pytest.approx(np.median(b.ks_pvalue.mean(axis=0)))
    assert s["swd"]["std"] == pytest.approx(np.std(b.swd))
    with pytest.raises(ValueError, match="n_iter"):
        M.batched_metrics(x[:5], y[:5], n_iter=4)


# --------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y, **k: M.ks_2samp(x, y, **k),
        lambda x, y, **k: M.wasserstein_per_dim(x, y, **k),
        lambda x, y, **k: M.sliced_wasserstein(x, y, seed=0, **k),
    ],
)
def test_bad_inputs(fn, rng):
    x = rng.normal(size=(50, 3))
    y = rng.normal(size=(40, 3))
    with pytest.raises(ValueError, match="'y'.*dimensions"):
        fn(x, y[:, :2])
    with pytest.raises(ValueError, match="'x'.*empty"):
        fn(x[:0], y)
    with pytest.raises(ValueError, match="'y'.*empty"):
        fn(x, y[:0])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="'x'.*non-finite.*event 3, dimension 1"):
        fn(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="'x'.*non-finite"):
        fn(bad, y)
    with pytest.raises(ValueError, match="'y'.*non-finite"):
        fn(x, bad[:40])
    with pytest.raises(ValueError, match="weights_x.*negative"):
        fn(x, y, weights_x=-np.ones(50))
    with pytest.raises(ValueError, match="weights_y.*zero"):
        fn(x, y, weights_y=np.zeros(40))
    with pytest.raises(ValueError, match="weights_x.*one weight per event"):
        fn(x, y, weights_x=np.ones(49))
    with pytest.raises(ValueError, match="weights_y.*non-finite"):
        fn(x, y, weights_y=np.full(40, np.nan))


def test_core_rejects_without_python_layer(rng):
    x = rng.normal(size=(10, 2))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="ks_statistics: argument 'x'"):
        _core.metrics.ks_statistics(bad, x)
    with pytest.raises(TypeError, match="'y' must have the same dtype"):
        _core.metrics.ks_statistics(x, x.astype(np.float32))
    with pytest.raises(TypeError, match="'weights_x' must have dtype float64"):
        _core.metrics.ks_statistics(x, x, weights_x=np.ones(10, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.metrics.ks_statistics(np.asfortranarray(x), x)
    with pytest.raises(ValueError, match="'directions'"):
        _core.metrics.sliced_wasserstein(x, x, np.ones((3, 5)))
    with pytest.raises(ValueError, match="device"):
        _core.metrics.sliced_wasserstein(x, x, np.ones((3, 2)), device="tpu")


def test_cuda_request_without_cuda_build(rng):
    x = rng.normal(size=(10, 2))
    if _core.metrics.cuda_compiled():
        pytest.skip("this build has CUDA")
    with pytest.raises(ValueError, match="NFHEP_CUDA=ON"):
        M.sliced_wasserstein(x, x, seed=0, device="cuda")


def test_check_finite_false_skips_the_scan(rng):
    x = rng.normal(size=(30, 2))
    r = M.ks_2samp(x, x, check_finite=False)
    np.testing.assert_array_equal(r.statistic, 0.0)


def test_hpdi_bad_probs(rng):
    x = rng.normal(size=(10, 1))
    with pytest.raises(ValueError, match="probs"):
        M.hpdi(x, probs=[1.5])
    with pytest.raises(ValueError, match="probs"):
        M.hpdi(x, probs=[0.05])


def test_ks_cuda_request_without_cuda_build(rng):
    x = rng.normal(size=(10, 2))
    if _core.metrics.cuda_compiled():
        pytest.skip("this build has CUDA")
    with pytest.raises(ValueError, match="NFHEP_CUDA=ON"):
        M.ks_2samp(x, x, device="cuda")


def test_w1_equal_sizes_fast_path_matches_scipy(rng):
    from scipy import stats as st

    x = rng.normal(size=(1500, 2))
    y = np.round(rng.standard_t(3, size=(1500, 2)), 1)  # ties in y
    w = M.wasserstein_per_dim(x, y)
    dirs = M.random_directions(3, 2, seed=0)
    s = M.sliced_wasserstein(x, y, directions=dirs).per_direction
    for d in range(2):
        assert _rel(w[d], st.wasserstein_distance(x[:, d], y[:, d])) <= RTOL
    for j, u in enumerate(dirs):
        assert _rel(s[j], st.wasserstein_distance(x @ u, y @ u)) <= RTOL


def test_frechet_distance_matches_gaussian_formula(rng):
    from scipy import linalg

    x = rng.normal(size=(3000, 3)) @ np.array([[1.0, 0.3, 0], [0, 1.0, 0.2], [0, 0, 0.5]])
    y = rng.normal(0.2, 1.3, size=(2500, 3))
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx + cy - 2 * linalg.sqrtm(cx @ cy).real)
    assert M.frechet_distance(x, y) == pytest.approx(ref, rel=1e-8)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10)


def test_fpd_kpd(rng):
    x = rng.normal(size=(4000, 2))
    same = rng.normal(size=(4000, 2))
    diff = rng.normal(0.5, 1.0, size=(4000, 2))
    f0 = M.fpd(x, same, min_samples=500, max_samples=4000, num_batches=3, num_points=4)
    f1 = M.fpd(x, diff, min_samples=500, max_samples=4000, num_batches=3, num_points=4)
    assert abs(f0.value) < 5 * f0.error + 0.01
    assert f1.value == pytest.approx(0.5, rel=0.2)  # |Δμ|² = 2 * 0.25
    k0 = M.kpd(x, same, batch_size=500, num_batches=4)
    k1 = M.kpd(x, diff, batch_size=500, num_batches=4)
    assert abs(k0.value) < 0.05 < k1.value
    # unbiased MMD² against a direct double loop on a tiny sample
    a, b = x[:7], diff[:7]  # batch of all 7 events: a permutation, same MMD
    k = lambda u, v: (u @ v / 2 + 1.0) ** 4  # noqa: E731
    ref = (
        sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / 42
        + sum(k(b[i], b[j]) for i in range(7) for j in range(7) if i != j) / 42
        - 2 * sum(k(a[i], b[j]) for i in range(7) for j in range(7)) / 49
    )
    assert M.kpd(a, b, batch_size=7, num_batches=1).value == pytest.approx(ref, rel=1e-12)


# --- the unweighted KS statistic without full sorts (metrics.cpp: ks_bucketed) ----------------------
# It must give the same bits as the sort-and-merge path, which unit weights select (their cumulative sums
# are exact integers, so F = count / n either way), and as scipy, on data made to stress its bounds:
# heavy ties, heavy tails, a value range near overflow, a single repeated value, float32, tiny samples.
def _ks_stress_cases(rng):
    yield rng.normal(size=(30000, 3)), rng.normal(0.02, 1.0, size=(20000, 3))
    yield rng.integers(0, 5, size=(3000, 2)).astype(float), rng.integers(0, 6, size=(2500, 2)).astype(float)
    yield rng.standard_cauchy(size=(6000, 2)), 1.1 * rng.standard_cauchy(size=(5000, 2))
    big = np.concatenate([rng.normal(size=(2000, 2)), np.full((5, 2), 1e308), np.full((5, 2), -1e308)])
    yield big, rng.normal(size=(1500, 2))
    yield np.full((50, 2), 3.0), np.full((70, 2), 3.0)
    yield np.array([[0.0], [-0.0], [1.0]]), np.array([[-0.0], [2.0]])
    yield rng.normal(size=(1, 2)), rng.normal(size=(5, 2))
    yield rng.normal(size=(4000, 2)).astype(np.float32), rng.normal(0.1, 1, size=(3000, 2)).astype(np.float32)
    yield rng.exponential(size=(50000, 1)) ** 3, rng.exponential(size=(40000, 1)) ** 3


def test_ks_without_full_sort_matches_sorted_path_and_scipy():
    from scipy import stats

    rng = np.random.default_rng(77)
    for x, y in _ks_stress_cases(rng):
        dp, dm = _core.metrics.ks_statistics(x, y)
        wdp, wdm = _core.metrics.ks_statistics(x, y, weights_x=np.ones(len(x)), weights_y=np.ones(len(y)))
        np.testing.assert_array_equal(dp, wdp)
        np.testing.assert_array_equal(dm, wdm)
        for d in range(x.shape[1]):
            g = stats.ks_2samp(x[:, d], y[:, d], alternative="greater", method="asymp").statistic
            le = stats.ks_2samp(x[:, d], y[:, d], alternative="less", method="asymp").statistic
            assert dp[d] == g and dm[d] == le, (x.shape, y.shape, d)


# --- the streamed bucket path of the unweighted KS statistic (metrics.cpp: ks_unweighted, isa/ks_isa.cpp) --
# The bucket indices are computed along the rows from a value range set by a subsample of rows
# (n // 16384 apart, plus the last row); values outside it are clamped into the end buckets. Every case
# is checked bit for bit against an independent numpy evaluation of the right-continuous ECDFs at every
# pooled value and against the sort-and-merge path (selected by unit weights).
def _ks_reference(x, y):
    """float64 (d_plus, d_minus) per column from numpy sorts: F = count(<= t) / n at every pooled t."""
    dp, dm = [], []
    for d in range(x.shape[1]):
        a, b = np.sort(x[:, d]), np.sort(y[:, d])
        t = np.concatenate([a, b])
        diff = np.searchsorted(a, t, side="right") / len(a) - np.searchsorted(b, t, side="right") / len(b)
        dp.append(diff.max())
        dm.append(min(max(0.0 - diff.min(), 0.0), 1.0))
    return np.array(dp), np.array(dm)


def _assert_ks_exact(x, y, *, check_finite=True):
    dp, dm = _core.metrics.ks_statistics(x, y, check_finite=check_finite)
    wdp, wdm = _core.metrics.ks_statistics(
        x, y, weights_x=np.ones(len(x)), weights_y=np.ones(len(y)), check_finite=check_finite
    )
    np.testing.assert_array_equal(dp, wdp)
    np.testing.assert_array_equal(dm, wdm)
    rdp, rdm = _ks_reference(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_array_equal(dp, rdp)
    np.testing.assert_array_equal(dm, rdm)
    return dp, dm


def test_ks_values_outside_the_range_subsample_are_exact():
    rng = np.random.default_rng(3)
    n = 40_000  # the range subsample takes the even rows and the last one: put outliers on odd rows
    x = rng.normal(size=(n, 3))
    y = rng.normal(0.01, 1.0, size=(n - 1001, 3))
    odd = np.arange(1, n - 2, 2)
    pick = rng.choice(odd, size=300, replace=False)
    x[pick[:100], 0] = 1e300
    x[pick[100:200], 0] = -1e300
    x[pick[200:], 1] = rng.normal(0.0, 1e6, size=100)  # far tails, same sign mix
    y[1:200:2, 2] = 50.0  # a tie block beyond the range, in one sample only
    _assert_ks_exact(x, y)
    # infinities outside the subsample (check_finite=False) land in the end buckets
    xi = x.copy()
    xi[pick[:50], 1] = np.inf
    xi[pick[50:90], 1] = -np.inf
    _assert_ks_exact(xi, y, check_finite=False)


def test_ks_non_finite_outside_the_range_subsample_is_reported():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40_000, 3))
    y = rng.normal(size=(33_000, 3))
    bad_y = y.copy()
    bad_y[12_345, 1] = np.nan
    with pytest.raises(ValueError, match="'y'.*non-finite.*event 12345, dimension 1"):
        M.ks_2samp(x, bad_y)
    bad_x = x.copy()
    bad_x[20_001, 2] = -np.inf
    with pytest.raises(ValueError, match="'x'.*non-finite.*event 20001, dimension 2"):
        M.ks_2samp(bad_x, bad_y)  # x is reported first, as validate_sample orders it
    bad_x32 = bad_x.astype(np.float32)
    with pytest.raises(ValueError, match="'x'.*non-finite.*event 20001, dimension 2"):
        M.ks_2samp(bad_x32, y.astype(np.float32))
    # check_finite=False with NaN: results are undefined but stay statistics in [0, 1] (no crash)
    dp, dm = _core.metrics.ks_statistics(x, bad_y, check_finite=False)
    assert np.all((dp >= 0) & (dp <= 1) & (dm >= 0) & (dm <= 1))


def test_ks_every_bucket_a_candidate():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50_000, 2))
    # identical samples: D = 0 at every bucket end and every bucket's bound exceeds it (a full sort)
    dp, dm = _assert_ks_exact(x, x[rng.permutation(len(x))])
    np.testing.assert_array_equal(dp, 0.0)
    np.testing.assert_array_equal(dm, 0.0)
    # heavy ties inside every bucket, samples slightly different
    a = rng.integers(0, 30_000, size=(60_000, 2)).astype(float)
    b = rng.integers(0, 30_001, size=(45_000, 2)).astype(float)
    _assert_ks_exact(a, b)
    # range subsamples (even rows and the last one) that see a single value: scale 0, all in bucket 0
    c = np.zeros((40_000, 1))
    c[1:-1:2, 0] = rng.normal(size=19_999)
    e = np.zeros((36_000, 1))
    e[1:-1:2, 0] = rng.normal(0.05, 1.0, size=17_999)
    _assert_ks_exact(c, e)


@pytest.mark.parametrize(
    "n1,n2",
    [
        (1, 1),
        (3, 700),
        (1_000, 1_100),
        (20_000, 13_000),
        (150_000, 140_000),
        (400_000, 380_000),
        (1_100_000, 1_150_000),
    ],
)
def test_ks_bucket_count_branches(n1, n2):
    # 2 (n1 + n2)^(2/3) buckets as a power of two in [2^8, 2^16]: 256, 256, 512, 4096, 16384, 32768 and the
    # 2^16 cap for the largest (one column for the large cases, to stay fast)
    rng = np.random.default_rng(n1)
    dim = 1 if n1 > 100_000 else 3
    x = rng.normal(size=(n1, dim))
    y = rng.normal(0.002, 1.0, size=(n2, dim))
    _assert_ks_exact(x, y)


@pytest.mark.parametrize("dim", [1, 5, 31, 32, 33, 64, 70])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ks_column_blocks_and_partial_tiles(dim, dtype):
    # dim <= 32: tiles of whole rows (one flat loop); wider: blocks of 32 columns and a remainder;
    # row counts that leave partial 32-row tiles at the end of the parallel chunks and of the sample
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(8192 + 45, dim)).astype(dtype)
    y = rng.standard_t(5, size=(3001, dim)).astype(dtype)
    _assert_ks_exact(x, y)


def test_ks_bits_independent_of_simd_level_and_threads():
    rng = np.random.default_rng(6)
    cases = [
        (rng.normal(size=(30_000, 37)), rng.normal(0.01, 1.0, size=(20_011, 37))),
        (rng.normal(size=(9_000, 5)).astype(np.float32), rng.normal(size=(9_100, 5)).astype(np.float32)),
    ]
    ref = [_ks_reference(x.astype(np.float64), y.astype(np.float64)) for x, y in cases]
    with kernel_settings_restored():
        for lv in nfhep.build_info()["simd_available"]:
            _core.set_simd(lv)
            for t in (1, 2, 3):
                nfhep.set_num_threads(t)
                for (x, y), (rdp, rdm) in zip(cases, ref, strict=True):
                    dp, dm = _core.metrics.ks_statistics(x, y)
                    np.testing.assert_array_equal(dp, rdp, err_msg=f"{lv}, {t} threads")
                    np.testing.assert_array_equal(dm, rdm, err_msg=f"{lv}, {t} threads")


def test_ks_log_bucket_map_for_heavy_tails():
    # Heavy-tailed columns choose buckets linear in a signed log-like magnitude (sign(v) times the bit
    # pattern of max(|v|, f)); at D=28, n=10^6 this made exp(1)^3, lognormal(0, 2) and Cauchy columns ~8x
    # faster. Mixed with normal columns (value-linear) in one tile of whole rows (D <= 32) and across column
    # blocks (D > 32), float32 too; symmetric tails with many values inside the floor f (they share a
    # bucket), ties, signed zeros, and a column whose floor is 0 (more than 1/256 of it is zero).
    rng = np.random.default_rng(8)
    for dim, dtype in [(6, np.float64), (6, np.float32), (40, np.float64)]:
        n1, n2 = 30_000, 21_000
        x = rng.normal(size=(n1, dim))
        y = rng.normal(0.01, 1.0, size=(n2, dim))
        k0, k1, k2 = len(range(0, dim, 3)), len(range(1, dim, 3)), len(range(2, dim, 3))
        x[:, 0::3] = rng.exponential(size=(n1, k0)) ** 3
        y[:, 0::3] = 1.01 * rng.exponential(size=(n2, k0)) ** 3
        x[:, 1::3] = -rng.lognormal(0.0, 2.0, size=(n1, k1))
        y[:, 1::3] = -rng.lognormal(0.02, 2.0, size=(n2, k1))
        x[:, 2::6] = rng.standard_cauchy(size=(n1, len(range(2, dim, 6))))
        y[:, 2::6] = 1.02 * rng.standard_cauchy(size=(n2, len(range(2, dim, 6))))
        assert k2 >= 1
        _assert_ks_exact(x.astype(dtype), y.astype(dtype))
    a = np.round(rng.standard_cauchy(size=(20_000, 3)), 2)
    b = np.round(1.05 * rng.standard_cauchy(size=(17_000, 3)), 2)
    a[::7, 1] = -0.0
    b[::5, 1] = 0.0
    a[: 20_000 // 2, 2] = 0.0  # half zeros: floor 0
    b[: 17_000 // 3, 2] = -0.0
    _assert_ks_exact(a, b)
