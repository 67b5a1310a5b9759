"""The C++ unit tests of cpp/tests/test_units.cpp, under AddressSanitizer + UndefinedBehaviorSanitizer.

``test_units`` checks the engine's building blocks against independent references: Philox4x32-10
(Random123 known answers) and the normals derived from it, SHA-256 (FIPS 180-4 vectors, incremental
updates across block boundaries), the strict JSON reader of the model-file header (valid documents, every
refusal, and the refusals as ``nfhep::FormatError`` through ``Flow::from_bytes``), and the ``math/``
headers (ulp errors vs long double, the affine and RQS bijectors). It uses the same sanitized build as
tests/test_engine_fuzz.py (one build per session).
"""

from __future__ import annotations

import os
import re
import subprocess

from test_engine_fuzz import sanitized_build  # noqa: F401  (the shared, memoised session build)


def test_cpp_unit_tests(sanitized_build):  # noqa: F811
    exe = sanitized_build / "test_units"
    assert exe.exists(), f"{exe} was not built"
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=600)
    report = f"test_units failed (exit {r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    assert r.returncode == 0, report
    m = re.search(r"^test_units: (\d+) checks, (\d+) failed$", r.stdout, re.MULTILINE)
    assert m is not None, report
    assert int(m.group(2)) == 0, report
    assert int(m.group(1)) > 3000, report  # every section ran (3175 checks when written)
    assert "FAIL " not in r.stdout, report
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, report
