"""The C++ model-file reader under AddressSanitizer + UndefinedBehaviorSanitizer: a short fuzz run.

Builds the core and the C++ test programs once (``-DNFHEP_TESTS=ON -DNFHEP_SANITIZE=ON``, in a temporary
directory), writes seed model files of every family (with and without context, float32 and float64,
batch norm, ActNorm, random permutations, bounds, log features, dropout, D = 1) with nfhep, and runs
``cpp/tests/fuzz_model.cpp`` on random mutations of them: every mutant must load or be refused with
``nfhep::FormatError``; loaded mutants are evaluated and sampled; any other exception, crash or sanitizer
report fails the test. The long campaign (>= 10^5 mutations) is run by hand:
``fuzz_model CORPUS 100000 SEED`` (see docs/cpp.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nfhep
from conftest import require

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


# One build per pytest session. tests/test_cpp_units.py imports this fixture, which registers it a second
# time (pytest keeps one cache per defining module), so the build itself is remembered here, per session.
_BUILDS: dict[Path, Path] = {}


@pytest.fixture(scope="session")
def sanitized_build(tmp_path_factory) -> Path:
    """The core and every C++ test program, built once with ASan + UBSan (targets fuzz_model, test_units)."""
    session = tmp_path_factory.getbasetemp()
    if session in _BUILDS:
        return _BUILDS[session]
    cmake, ninja = _tool("cmake"), _tool("ninja")
    require(cmake is not None and ninja is not None, "cmake and ninja are needed to build the C++ tests")
    require(shutil.which("g++") is not None or shutil.which("c++") is not None, "a C++ compiler")
    try:
        import scipy_openblas32
    except ImportError:  # pragma: no cover
        require(False, "scipy-openblas32 (the engine's BLAS) is needed to build the C++ tests")
    build = tmp_path_factory.mktemp("asan-build")
    cfg = [
        cmake, "-S", str(ROOT), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
        "-DNFHEP_PYTHON=OFF", "-DNFHEP_TESTS=ON", "-DNFHEP_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        f"-DNFHEP_BLAS_DIR={os.path.dirname(scipy_openblas32.__file__)}",
    ]  # fmt: skip
    for cmd in (cfg, [cmake, "--build", str(build), "--target", "fuzz_model", "test_units"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd[:3])} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    _BUILDS[session] = build
    return build


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from test_engine import _make

    out = tmp_path_factory.mktemp("corpus")
    i = 0
    for family in ("maf", "realnvp", "crqs", "arqs"):
        for context in (0, 2):
            for dtype in (torch.float32, torch.float64):
                opts: dict = {}
                if i % 3 == 1:
                    opts = dict(batch_norm=True, actnorm=True, permutation="random")
                elif i % 3 == 2:
                    opts = dict(
                        bounds={"x0": (-2.0, 3.0), "x1": (0.5, None)}, log_features=("x2",), dropout=0.1
                    )
                m = _make(family, d=3, context=context, dtype=dtype, key=i, hidden=[6, 5], **opts)
                nfhep.save(m, out / f"{family}_{context}_{i}.safetensors")
                i += 1
    nfhep.save(_make("crqs", d=1, key=99, hidden=[4]), out / "crqs_d1.safetensors")
    # version 2: every preprocessing kind (periodic, discrete, spike, bounds, data range)
    from test_preprocessing_kinds import _model

    for family, dtype in (("arqs", torch.float32), ("maf", torch.float64)):
        nfhep.save(_model(family, dtype)[0], out / f"{family}_kinds.safetensors")
    # version 3: ensembles (member tensors under flow.members.k.)
    from test_ensemble import _ensemble

    nfhep.save(_ensemble("maf", context=2, dtype=torch.float32, key=3), out / "maf_ensemble.safetensors")
    nfhep.save(_ensemble("crqs", members=2, key=4), out / "crqs_ensemble.safetensors")
    return out


def test_fuzz_model_file_reader(sanitized_build, corpus, tmp_path):
    exe = sanitized_build / "fuzz_model"
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    n = 3000
    r = subprocess.run(
        [str(exe), str(corpus), str(n), "20261205", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, (
        f"fuzz_model failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    )
    assert f"{n} passed, 0 failed" in r.stdout
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
    # the campaign reached the evaluation code, not only the container checks
    loaded = int(r.stdout.split(" loaded")[0].rsplit(" ", 1)[1])
    assert loaded > n // 50, r.stdout
