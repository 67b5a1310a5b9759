"""Bitwise reproducibility of the bijector kernels across thread counts and SIMD levels.

The kernels are element-wise and cut into fixed chunks, so at every SIMD level every thread count
(1, 2, 3) must give bit-identical outputs and gradients. The AVX2 and AVX-512 builds contract a*b+c into
FMA in the same places (the contraction is decided before vectorisation), so they are bit-identical to each
other too; the generic build has no FMA and differs from them by rounding (each level is checked against
the float64 reference on its own in test_kernels_rqs.py / test_kernels_affine.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import nfhep
from conftest import kernel_settings_restored

core = nfhep._core
B_ = core.bijectors
LEVELS = core.build_info()["simd_available"]


def _workload(dtype, K=8):
    rng = np.random.default_rng(2024)
    n = 5003  # not a multiple of any lane count or chunk size
    x = rng.uniform(-6, 6, size=n).astype(dtype)
    x[:5] = [np.nan, np.inf, -5.0, 5.0, 0.0]
    p = (2 * rng.normal(size=(n, 3 * K - 1))).astype(dtype)
    p[7] = 50.0
    ap = rng.normal(size=(n, 2)).astype(dtype)
    g = rng.normal(size=n).astype(dtype)
    return x, p, ap, g


def _run_all(dtype, K=8):
    x, p, ap, g = _workload(dtype, K)
    y, lad = B_.rqs_forward(x, p)
    out = [y, lad, *B_.rqs_inverse(x, p), *B_.rqs_backward(x, p, g, g)]
    out += [*B_.rqs_backward(y, p, g, g, inverse=True)]
    out += [*B_.affine_forward(x, ap), *B_.affine_inverse(x, ap), *B_.affine_backward(x, ap, g, g),
            *B_.affine_backward(x, ap, g, g, inverse=True)]  # fmt: skip
    return [o.view(np.uint32 if dtype == np.float32 else np.uint64) for o in out]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# K = 2, 8, 17: P = 5, 23, 50 parameters, i.e. one, two and four register tiles of the AVX-512 transposes
@pytest.mark.parametrize("K", [2, 8, 17])
def test_bitwise_identical_across_threads_and_fma_levels(dtype, K):
    before = nfhep.get_num_threads()
    results = {}
    with kernel_settings_restored():
        for level in LEVELS:
            core.set_simd(level)
            for threads in (1, 2, 3):
                nfhep.set_num_threads(threads)
                results[(level, threads)] = _run_all(dtype, K)
    for key, res in results.items():
        ref_key = (key[0], 1)  # threads: bitwise at every level
        for i, (a, b) in enumerate(zip(results[ref_key], res, strict=True)):
            assert np.array_equal(a, b), f"output {i} differs between {ref_key} and {key}"
    if "avx2" in LEVELS and "avx512" in LEVELS:  # the two FMA levels: bitwise
        for i, (a, b) in enumerate(zip(results[("avx2", 1)], results[("avx512", 1)], strict=True)):
            assert np.array_equal(a, b), f"output {i} differs between avx2 and avx512"
    assert nfhep.get_num_threads() == before


def test_levels_available_include_generic():
    assert "generic" in LEVELS
