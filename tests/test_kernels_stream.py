"""Parameter gradients written with non-temporal stores (large outputs) equal the ordinary stores bitwise.

The C++ core streams the (N, D, 3K-1) gradients of ``rqs_backward`` when they reach NFHEP_STREAM_BYTES
(default 128 MiB; read once at load). A child process with the threshold at 0 streams every full block
of small arrays; its results must be bitwise those of this process (threshold at its default), for both
dtypes, forward and inverse, K with P * lanes a multiple and not a multiple of 16, partial last blocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nfhep import _core

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nfhep import _core
    out = {}
    for dt in ("float32", "float64"):
        for k in (3, 8):
            for inv in (False, True):
                rng = np.random.default_rng(k)
                x = rng.uniform(-6, 6, size=(1237, 5)).astype(dt)
                p = rng.normal(0, 2, size=(1237, 5, 3 * k - 1)).astype(dt)
                g = rng.normal(size=(1237, 5)).astype(dt)
                h = rng.normal(size=(1237, 5)).astype(dt)
                gx, gp = _core.bijectors.rqs_backward(x, p, g, h, inverse=inv)
                out[f"{dt}_{k}_{int(inv)}_x"] = gx
                out[f"{dt}_{k}_{int(inv)}_p"] = gp
    np.savez(sys.argv[1], **out)
    """
)


def _run(tmp_path, name, env_bytes):
    env = dict(os.environ)
    if env_bytes is None:
        env.pop("NFHEP_STREAM_BYTES", None)
    else:
        env["NFHEP_STREAM_BYTES"] = str(env_bytes)
    path = tmp_path / f"{name}.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    subprocess.run([sys.executable, str(script), str(path)], check=True, env=env, timeout=300)
    return np.load(path)


def test_streamed_gradients_are_bitwise_the_ordinary_ones(tmp_path):
    streamed = _run(tmp_path, "streamed", 0)
    plain = _run(tmp_path, "plain", None)
    assert set(streamed.files) == set(plain.files) and len(plain.files) == 16
    for key in plain.files:
        np.testing.assert_array_equal(streamed[key], plain[key], err_msg=key)
        assert np.all(np.isfinite(plain[key])), key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_gradient_output_matches_sliced_computation(dtype):
    # 1.5e6 elements x 23 parameters: >= 128 MiB of float32 gradients, the streamed path by default;
    # slices of 100,000 rows stay below the threshold (ordinary stores): same bits.
    rng = np.random.default_rng(3)
    n, d, k = 300_000, 5, 8
    x = rng.uniform(-6, 6, size=(n, d)).astype(dtype)
    p = rng.normal(0, 2, size=(n, d, 3 * k - 1)).astype(dtype)
    g = rng.normal(size=(n, d)).astype(dtype)
    gx, gp = _core.bijectors.rqs_backward(x, p, g, g, inverse=False)
    for s in range(0, n, 100_000):
        sl = slice(s, s + 100_000)
        sx, sp = _core.bijectors.rqs_backward(x[sl], p[sl], g[sl], g[sl], inverse=False)
        np.testing.assert_array_equal(gx[sl], sx)
        np.testing.assert_array_equal(gp[sl], sp)
