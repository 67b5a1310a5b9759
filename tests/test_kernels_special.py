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


def test_float64_polynomials_match_the_fitting_tool():
    """special.hpp holds exactly the coefficients cpp/tools/fit_special_polys.py computes (documented)."""
    import importlib.util
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "fit_special_polys", root / "cpp/tools/fit_special_polys.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    header = (root / "cpp/include/nfhep/math/special.hpp").read_text()

    def header_coeffs(start: str, end: str) -> list[float]:
        block = header[header.index(start) : header.index(end, header.index(start))]
        found = re.findall(r"constexpr double c(\d+) = ([0-9.e+-]+);", block)
        assert [int(k) for k, _ in found] == list(range(len(found)))
        return [float(v) for _, v in found]

    exp_c, exp_err = tool.exp_poly()
    log_c, log_err = tool.log_poly()
    assert header_coeffs("namespace exp_poly {", "}  // namespace exp_poly") == exp_c
    assert header_coeffs("NFHEP_FORCEINLINE double log_tail(double z) {", "return") == log_c
    # The error bounds quoted in the header: exp's P within 2.6e-18, log's Q within 3.2e-16.
    assert exp_err < 3e-18
    assert log_err < 3.2e-16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_nonpos_and_log1p_unit_within_2ulp(dtype):
    """The kernels' restricted-range variants: exp on x <= 0 (softmax numerators), log1p on [0, 1]."""
    rng = np.random.default_rng(7)
    lo = -700.0 if dtype == np.float64 else -85.0
    x = np.concatenate([rng.uniform(lo, 0.0, 60000), rng.uniform(-1.0, 0.0, 20000), [0.0, -0.0, lo]]).astype(
        dtype
    )
    e = np.concatenate([rng.uniform(0.0, 1.0, 60000), np.exp(rng.uniform(-80, 0, 20000)), [0.0, 1.0]]).astype(
        dtype
    )
    for name, v, ref in (("exp_nonpos", x, np.exp), ("log1p_unit", e, np.log1p)):
        got = SPECIAL(name, v)
        r = ref(v.astype(np.longdouble)).astype(dtype)
        nz = r != 0
        ulps = np.abs(got[nz].astype(np.longdouble) - r[nz]) / np.spacing(np.abs(r[nz])).astype(np.longdouble)
        assert float(ulps.max()) <= 2.0, (name, float(ulps.max()))
        np.testing.assert_array_equal(got[~nz], r[~nz])
    assert np.isnan(SPECIAL("exp_nonpos", np.array([np.nan], dtype)))[0]
    assert np.isnan(SPECIAL("log1p_unit", np.array([np.nan], dtype)))[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_unit_reduction_is_logs(dtype, every_simd_level):
    """log1p_unit splits u = 1 + e in [1, 2] at 2 sqrt(1/2) by a comparison instead of log()'s exponent
    bits: where 1 + e == u exactly (no correction term) the result is log(u), bitwise on the generic level
    (no FMA contraction), within 1 ulp of it on the FMA levels -- on both sides of the split."""
    rng = np.random.default_rng(11)
    split = dtype(2) * dtype(np.sqrt(0.5))  # the first u of the upper half (2 sqrt(1/2) rounded, doubled)
    u = np.concatenate([rng.uniform(1.0, 2.0, 100000), [split, np.nextafter(split, dtype(0)), 2.0]])
    u = u.astype(dtype)
    e = u - dtype(1)  # exact for u in [1, 2] (Sterbenz), so 1 + e == u and the correction term is 0
    assert np.array_equal(dtype(1) + e, u)
    got, ref = SPECIAL("log1p_unit", e), SPECIAL("log", u)
    if every_simd_level == "generic":
        np.testing.assert_array_equal(got, ref)
    else:
        assert np.max(np.abs(got - ref) / np.spacing(ref)) <= 1.0
