"""The CUDA build (NFHEP_CUDA=ON) compiles, and the module it makes imports on a machine without a GPU.

This machine and CI have nvcc but no GPU and no driver: CUDA kernels are compiled here, never run. The
parity tests of CUDA against CPU (tests/test_cuda_parity.py) run where a device exists.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require, require_executable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory):
    require((ROOT / "CMakeLists.txt").is_file(), "the source tree is needed to compile the CUDA build")
    nvcc = require_executable("nvcc")
    pybind11 = pytest.importorskip("pybind11")
    build = tmp_path_factory.mktemp("cuda-build")
    cfg = [
        "cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
        "-DNFHEP_PYTHON=ON", "-DNFHEP_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}",
    ]  # fmt: skip
    for cmd in (cfg, ["cmake", "--build", str(build), "--parallel", "2"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return build


def _run_in_build(build: Path, code: str) -> str:
    """Load the freshly built _core (with its libnfhep_core) in a child process and run `code`."""
    so = glob.glob(str(build / "_core*.so"))
    assert so, "the CUDA build produced no _core module"
    prog = (
        "import importlib.util, json\n"
        f"spec = importlib.util.spec_from_file_location('_core', {so[0]!r})\n"
        "core = importlib.util.module_from_spec(spec); spec.loader.exec_module(core)\n" + code
    )
    env = dict(os.environ, LD_LIBRARY_PATH=str(build))
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_cuda_build_imports_without_gpu(cuda_build):
    out = _run_in_build(cuda_build, "print(json.dumps(core.build_info()))")
    import json

    info = json.loads(out)
    assert info["cuda"] is True
    assert info["cuda_architectures"]
    if info["cuda_devices"] == 0:
        assert info["cuda_status"], "no device: build_info must say why"


def test_cuda_launchers_exist_and_fail_clearly_without_gpu(cuda_build):
    """The CUDA build exposes the cuda_* launchers; without a device a launch raises RuntimeError naming
    the CUDA error, and bad options raise ValueError before any CUDA call. The CPU kernels still work."""
    code = (
        "import numpy as np\n"
        "b = core.bijectors\n"
        "names = ['cuda_rqs_forward', 'cuda_rqs_inverse', 'cuda_rqs_backward', 'cuda_affine_forward',\n"
        "         'cuda_affine_inverse', 'cuda_affine_backward']\n"
        "out = {'available': b.cuda_available(), 'names': all(hasattr(b, n) for n in names)}\n"
        "out['devices'] = core.build_info()['cuda_devices']\n"
        "try:\n"
        "    b.cuda_rqs_forward(0, 0, 16, 8, 0, 0, dtype='float32')\n"
        "    out['launch'] = 'no error'\n"
        "except RuntimeError as e:\n"
        "    out['launch'] = 'RuntimeError: ' + str(e)\n"
        "try:\n"
        "    b.cuda_rqs_forward(0, 0, 16, 8, 0, 0, dtype='float32', bound=-1.0)\n"
        "except ValueError as e:\n"
        "    out['bad_bound'] = str(e)\n"
        "try:\n"
        "    b.cuda_affine_forward(0, 0, 16, 0, 0, dtype='float16')\n"
        "except TypeError as e:\n"
        "    out['bad_dtype'] = str(e)\n"
        "x = np.linspace(-6, 6, 7)\n"
        "out['cpu'] = bool(np.isfinite(b.rqs_forward(x, np.zeros((7, 23)))[0]).all())\n"
        "print(json.dumps(out))\n"
    )
    import json

    out = json.loads(_run_in_build(cuda_build, code))
    assert out["available"] is True and out["names"] is True
    assert out["cpu"] is True
    assert "cuda_rqs_forward" in out["bad_bound"] and "bound" in out["bad_bound"]
    assert "'dtype'" in out["bad_dtype"]
    if out["devices"] == 0:
        assert out["launch"].startswith("RuntimeError: cuda_rqs_forward: CUDA error cuda"), out["launch"]
