"""nfhep's vectorisable exp/log/log1p/softplus/sigmoid (cpp/include/nfhep/math/special.hpp) vs numpy.

Evaluated through the test hook ``_core.bijectors._special`` with every SIMD level of this CPU. The
reference is numpy in long double (x87 80-bit on x86-64), rounded to the tested dtype. The bound
is 2 ulp of the reference over wide ranges, including subnormal arguments and results, overflow, NaN, inf.
"""

from __future__ import annotations

import numpy as np
import pytest

import nfhep

core = nfhep._core
SPECIAL = core.bijectors._special
# Every test here runs once per SIMD level (generic, avx2, avx512): conftest.every_simd_level.
pytestmark = pytest.mark.usefixtures("every_simd_level")


def _inputs(name: str, dtype) -> np.ndarray:
    rng = np.random.default_rng(123)
    fi = np.finfo(dtype)
    big = float(np.log(fi.max))
    tiny = float(np.log(fi.smallest_subnormal))
    if name == "exp":
        x = np.concatenate([rng.uniform(tiny - 20, big + 20, 60000), rng.uniform(-3, 3, 20000),
                            rng.uniform(tiny, np.log(fi.tiny), 20000)])  # fmt: skip
    elif name == "log":
        x = np.exp(rng.uniform(tiny, big, 80000))
        x = np.concatenate([x, rng.uniform(0.5, 2.0, 20000), [fi.smallest_subnormal, fi.tiny, fi.max]])
    elif name == "log1p":
        x = np.concatenate([rng.uniform(-1, 3, 30000), np.exp(rng.uniform(tiny, big, 40000)),
                            -np.exp(rng.uniform(tiny, -1e-3, 30000))])  # fmt: skip
    else:
        x = np.concatenate([rng.uniform(-120, 120, 60000), rng.uniform(-3, 3, 20000)])
    with np.errstate(over="ignore"):
        return x.astype(dtype)


REFS = {
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "softplus": lambda v: np.logaddexp(0.0, v),
    "sigmoid": lambda v: np.where(v >= 0, 1.0, np.exp(-np.abs(v))) / (1.0 + np.exp(-np.abs(v))),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["exp", "log", "log1p", "softplus", "sigmoid"])
def test_special_within_2ulp(name, dtype):
    x = _inputs(name, dtype)
    got = SPECIAL(name, x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ref = REFS[name](x.astype(np.longdouble)).astype(dtype)
    assert got.dtype == dtype
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(got[~fin], ref[~fin])
    nz = fin & (ref != 0)
    np.testing.assert_array_equal(got[fin & (ref == 0)], 0)
    err = np.abs(got[nz].astype(np.longdouble) - ref[nz]) / np.spacing(np.abs(ref[nz])).astype(np.longdouble)
    assert err.max() <= 2.0, (name, err.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    inf, nan = np.inf, np.nan
    x = np.array([nan, inf, -inf, 0.0, -0.0, -1.0, -2.0], dtype=dtype)
    with np.errstate(all="ignore"):
        for name in ["exp", "log", "log1p", "softplus", "sigmoid"]:
            ref = REFS[name](x.astype(np.float64)).astype(dtype)
            got = SPECIAL(name, x)
            fin = np.isfinite(ref) & (ref != 0)
            np.testing.assert_array_equal(got[~fin], ref[~fin], err_msg=name)
            tol = 2 * np.finfo(dtype).eps
            np.testing.assert_allclose(got[fin], ref[fin], rtol=tol, atol=0, err_msg=name)


def test_special_rejects_unknown_name():
    with pytest.raises(ValueError, match="'tanh'"):
        SPECIAL("tanh", np.zeros(3))
