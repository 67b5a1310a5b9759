"""Property tests of the unweighted W1 (the bucketed path behind ``wasserstein_per_dim`` and the SWD).

Random sizes (partial chunks and vectors), value kinds that exercise every branch of the bucket pass
(ties, heavy tails, shifted and identical samples, tiny and huge scales, a large common offset) and every
SIMD level: the result must equal scipy's ``wasserstein_distance`` up to rounding, be bitwise the same
on every level, and be symmetric.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import nfhep
from conftest import kernel_settings_restored
from nfhep import _core
from nfhep import metrics as M

KINDS = ["normal", "shifted", "ties", "cauchy", "identical", "offset", "constant-runs"]


def _sample(kind: str, na: int, nb: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x, y = rng.normal(size=(na, 2)), rng.normal(size=(nb, 2))
    elif kind == "shifted":
        x, y = rng.normal(size=(na, 2)), rng.normal(0.3, 1.2, size=(nb, 2))
    elif kind == "ties":
        x = rng.integers(0, 7, size=(na, 2)).astype(float)
        y = rng.integers(0, 8, size=(nb, 2)).astype(float)
    elif kind == "cauchy":
        x, y = rng.standard_cauchy(size=(na, 2)), 1.1 * rng.standard_cauchy(size=(nb, 2))
    elif kind == "identical":
        x = rng.normal(size=(na, 2))
        y = x[rng.permutation(na)][: max(1, min(na, nb))]
    elif kind == "offset":  # a large common offset: the offsets from the bucket edges must not cancel
        x, y = 1e4 + 1e-3 * rng.normal(size=(na, 2)), 1e4 + 1e-3 * rng.normal(0.01, 1, size=(nb, 2))
    else:  # long runs of one value in both samples, plus a spread
        x = np.where(rng.random((na, 2)) < 0.6, 0.5, rng.normal(size=(na, 2)))
        y = np.where(rng.random((nb, 2)) < 0.5, 0.5, rng.normal(size=(nb, 2)))
    return x * scale, y * scale


@given(
    kind=st.sampled_from(KINDS),
    na=st.integers(1, 2500),
    nb=st.integers(1, 2500),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_w1_matches_scipy_on_every_level_and_is_symmetric(kind, na, nb, scale, seed):
    x, y = _sample(kind, na, nb, scale, seed)
    ref = np.array([stats.wasserstein_distance(x[:, d], y[:, d]) for d in range(2)])
    # Rounding: another summation order (relative), and a value that rounding puts into a neighbouring
    # bucket (about an ulp of the value range, times 1/n).
    span = np.maximum(np.ptp(np.concatenate([x, y]), axis=0), np.abs(np.concatenate([x, y])).max(axis=0))
    tol = 1e-11 * np.abs(ref) + 1e-14 * span
    levels = nfhep.build_info()["simd_available"]
    got = {}
    with kernel_settings_restored():
        for lv in levels:
            _core.set_simd(lv)
            got[lv] = M.wasserstein_per_dim(x, y)
            back = M.wasserstein_per_dim(y, x)
            assert np.all(np.abs(got[lv] - ref) <= tol), (lv, got[lv], ref)
            assert np.all(np.abs(back - got[lv]) <= 1e-13 * np.abs(got[lv]) + 1e-15 * span), (lv, back)
    for lv in levels:
        np.testing.assert_array_equal(got[lv], got[levels[0]], err_msg=lv)
