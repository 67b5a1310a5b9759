"""Shared test configuration.

- ``CI=true``: tests that need an optional tool (ROOT, nvcc, an anchor library) fail instead of skipping.
- Hypothesis: no deadline (the machine is shared and noisy); derandomised in CI so runs are repeatable.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

settings.register_profile(
    "nfhep",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=IN_CI,
    max_examples=60,
)
settings.load_profile("nfhep")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when an optional requirement is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


def require_module(name: str):
    """Import an optional module (anchor libraries, ROOT); skip locally / fail in CI when missing."""
    try:
        return __import__(name)
    except ImportError as err:  # pragma: no cover
        require(False, f"python module {name!r} is not installed ({err})")


def require_executable(name: str) -> str:
    path = shutil.which(name) or (f"/usr/local/cuda/bin/{name}" if name == "nvcc" else None)
    require(path is not None and os.path.exists(path), f"executable {name!r} not found")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def in_ci() -> bool:
    return IN_CI


def _simd_levels() -> list[str]:
    try:
        import nfhep

        return list(nfhep._core.build_info()["simd_available"])
    except Exception:  # _core missing: the tests that need it fail with the import's own message
        return ["generic"]


@contextlib.contextmanager
def kernel_settings_restored():
    """Give the block a free hand with ``nfhep.set_num_threads`` and ``nfhep._core.set_simd``; afterwards
    (also on failure) the thread count is what it was and the SIMD level is automatic again."""
    import nfhep

    before = nfhep.get_num_threads()
    try:
        yield
    finally:
        nfhep.set_num_threads(before)
        nfhep._core.set_simd("")


@pytest.fixture(scope="module", params=_simd_levels())
def every_simd_level(request):
    """Run a whole test module once per SIMD level this CPU supports (generic, avx2, avx512).

    The levels are not bitwise identical to each other (the AVX2/AVX-512 builds contract a*b+c into FMA,
    the generic build cannot), so each one is checked against the independent reference on its own.
    """
    import nfhep

    nfhep._core.set_simd(request.param)
    yield request.param
    nfhep._core.set_simd("")
