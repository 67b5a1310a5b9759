"""CPU vs CUDA parity of the bijector kernels (runs only where a CUDA device and a CUDA build exist).

The CUDA kernels call the same per-element maths (nfhep/math/) as the CPU loops and are compiled with
--fmad=false, so results agree to a few ulp (exp/log/sqrt/division are IEEE-exact or the same code; the
device may still differ in the last bit of library-free operations only through compiler choices).
On machines without a device (like the one nfhep is developed on) these tests are skipped with the reason:
that is not a missing tool, so they are skipped in CI too.
"""

from __future__ import annotations

import numpy as np
import pytest

import nfhep

B_ = nfhep._core.bijectors


def _device():
    if not B_.cuda_available():
        pytest.skip("this nfhep build has no CUDA kernels (rebuild with -DNFHEP_CUDA=ON)")
    info = nfhep._core.build_info()
    if info["cuda_devices"] == 0:
        pytest.skip(f"no CUDA device: {info['cuda_status']}")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA support here (needed to allocate device memory in the test)")
    return torch


def _dev(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inverse", [False, True])
def test_rqs_cpu_cuda_parity(dtype, inverse):
    torch = _device()
    rng = np.random.default_rng(0)
    n, K = 10007, 8
    x = rng.uniform(-6, 6, n).astype(dtype)
    p = rng.normal(size=(n, 3 * K - 1)).astype(dtype)
    g = rng.normal(size=n).astype(dtype)
    name = "float32" if dtype == np.float32 else "float64"
    cpu_o, cpu_l = (B_.rqs_inverse if inverse else B_.rqs_forward)(x, p)
    cpu_gi, cpu_gp = B_.rqs_backward(x, p, g, g, inverse=inverse)
    dx, dp, dg = _dev(torch, x), _dev(torch, p), _dev(torch, g)
    o, lad, gi, gp = (torch.empty_like(dx), torch.empty_like(dx), torch.empty_like(dx), torch.empty_like(dp))
    launch = B_.cuda_rqs_inverse if inverse else B_.cuda_rqs_forward
    launch(dx.data_ptr(), dp.data_ptr(), n, K, o.data_ptr(), lad.data_ptr(), dtype=name)
    B_.cuda_rqs_backward(dx.data_ptr(), dp.data_ptr(), dg.data_ptr(), dg.data_ptr(), n, K, gi.data_ptr(),
                         gp.data_ptr(), dtype=name, inverse=inverse)  # fmt: skip
    torch.cuda.synchronize()
    np.testing.assert_allclose(o.cpu().numpy(), cpu_o, **TOL[dtype])
    np.testing.assert_allclose(lad.cpu().numpy(), cpu_l, **TOL[dtype])
    np.testing.assert_allclose(gi.cpu().numpy(), cpu_gi, **TOL[dtype])
    np.testing.assert_allclose(gp.cpu().numpy(), cpu_gp, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_cpu_cuda_parity(dtype, inverse):
    torch = _device()
    rng = np.random.default_rng(1)
    n = 4099
    x = rng.normal(size=n).astype(dtype)
    p = rng.normal(size=(n, 2)).astype(dtype)
    g = rng.normal(size=n).astype(dtype)
    name = "float32" if dtype == np.float32 else "float64"
    cpu_o, cpu_l = (B_.affine_inverse if inverse else B_.affine_forward)(x, p)
    cpu_gi, cpu_gp = B_.affine_backward(x, p, g, g, inverse=inverse)
    dx, dp, dg = _dev(torch, x), _dev(torch, p), _dev(torch, g)
    o, lad, gi, gp = (torch.empty_like(dx), torch.empty_like(dx), torch.empty_like(dx), torch.empty_like(dp))
    launch = B_.cuda_affine_inverse if inverse else B_.cuda_affine_forward
    launch(dx.data_ptr(), dp.data_ptr(), n, o.data_ptr(), lad.data_ptr(), dtype=name)
    B_.cuda_affine_backward(dx.data_ptr(), dp.data_ptr(), dg.data_ptr(), dg.data_ptr(), n, gi.data_ptr(),
                            gp.data_ptr(), dtype=name, inverse=inverse)  # fmt: skip
    torch.cuda.synchronize()
    for got, ref in ((o, cpu_o), (lad, cpu_l), (gi, cpu_gi), (gp, cpu_gp)):
        np.testing.assert_allclose(got.cpu().numpy(), ref, **TOL[dtype])


def test_cpu_only_build_has_no_cuda_names():
    if B_.cuda_available():
        pytest.skip("this is a CUDA build")
    assert not any(name.startswith("cuda_rqs") or name.startswith("cuda_affine") for name in dir(B_))
