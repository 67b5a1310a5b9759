"""The C++ core as a C++ user gets it from the installed package (issue 13, "For C++ users").

Against whatever ``import nfhep`` resolves to (CI pip-installs the package): a small C++ program that
loads a model file with ``nfhep::Flow::load`` and prints ``log_prob`` of a few events is built

- with the compiler flags of ``nfhep config --cflags --libs`` (``g++ prog.cpp $(...)``), and
- with CMake, ``find_package(nfhep 0.1 CONFIG REQUIRED)`` + ``target_link_libraries(prog nfhep::core)``
  given ``-Dnfhep_DIR=$(nfhep config --cmakedir)`` (and, configure only, ``CMAKE_PREFIX_PATH``),

run, and its numbers compared with ``nfhep.Engine`` (the same library: identical) and with the torch model
(float32: 1e-5 relative). Neither build names the BLAS: libnfhep_core finds it next to itself through its
$ORIGIN runpath, at link time and at run time.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nfhep
from conftest import require
from test_engine import _data, _make, _rel_err, _torch_lp

PROGRAM = r"""
// Usage: prog MODEL EVENTS  (EVENTS: "n d" then n*d values); prints log p of each event, 17 digits.
#include <cstdio>
#include <fstream>
#include <vector>

#include <nfhep/flow.hpp>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  try {
    nfhep::Flow flow = nfhep::Flow::load(argv[1]);
    std::ifstream in(argv[2]);
    std::size_t n = 0, d = 0;
    in >> n >> d;
    if (!in || d != flow.num_features()) return 3;
    std::vector<double> x(n * d), lp(n);
    for (double& v : x) in >> v;
    if (!in) return 4;
    flow.log_prob(x.data(), n, lp.data());
    for (double v : lp) std::printf("%.17g\n", v);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
"""

CMAKELISTS = """\
cmake_minimum_required(VERSION 3.15)
project(nfhep_user LANGUAGES CXX)
find_package(nfhep {version} CONFIG REQUIRED)
message(STATUS "nfhep ${{nfhep_VERSION}} from ${{nfhep_DIR}}")
add_executable(prog prog.cpp)
target_link_libraries(prog PRIVATE nfhep::core)
"""


def _tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def _check(r: subprocess.CompletedProcess, what: str) -> str:
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def _config(*flags: str) -> str:
    """``nfhep config FLAGS`` of the installed package, through this interpreter."""
    r = _run([sys.executable, "-m", "nfhep", "config", *flags], cwd=Path(nfhep.__file__).parent.parent)
    return _check(r, f"nfhep config {' '.join(flags)}").strip()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One tiny float32 model file, a few events written to a text file, and the expected log p."""
    d = tmp_path_factory.mktemp("cpp-package")
    m = _make("crqs", d=3, dtype=torch.float32, key=13, hidden=[8, 6])
    model = nfhep.save(m, d / "model.safetensors")
    x = _data(7, 3, seed=21)
    events = d / "events.txt"
    rows = "\n".join(" ".join(repr(float(v)) for v in r) for r in x)  # repr: round-trips exactly
    events.write_text(f"{x.shape[0]} {x.shape[1]}\n{rows}\n")
    (d / "prog.cpp").write_text(PROGRAM)
    return {
        "dir": d,
        "model": model,
        "events": events,
        "engine": nfhep.Engine(model).log_prob(x),
        "torch": _torch_lp(m, x.astype(np.float32)),
    }


def _check_output(case, exe: Path) -> None:
    out = _check(_run([exe, case["model"], case["events"]]), str(exe))
    lp = np.array([float(v) for v in out.split()])
    assert lp.shape == case["engine"].shape
    np.testing.assert_array_equal(lp, case["engine"])  # %.17g round-trips: the same library, bit for bit
    err = _rel_err(lp, case["torch"])
    assert err <= 1e-5, f"C++ program vs torch log_prob (float32): max relative error {err:.3g}"


def test_gxx_with_config_flags(case, tmp_path):
    gxx = shutil.which("g++")
    require(gxx is not None, "g++ is needed to build a C++ program against nfhep")
    flags = shlex.split(_config("--cflags", "--libs"))
    exe = tmp_path / "prog"
    r = _run([gxx, case["dir"] / "prog.cpp", *flags, "-o", exe])
    _check(r, "g++ with `nfhep config --cflags --libs`")
    _check_output(case, exe)


def _cmake_tools():
    cmake, ninja = _tool("cmake"), _tool("ninja")
    require(cmake is not None and ninja is not None, "cmake and ninja are needed to build a CMake project")
    require(shutil.which("g++") is not None or shutil.which("c++") is not None, "a C++ compiler")
    return cmake, ninja


def _configure(tmp_path, version: str, *defines: str) -> subprocess.CompletedProcess:
    cmake, ninja = _cmake_tools()
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(CMAKELISTS.format(version=version))
    (src / "prog.cpp").write_text(PROGRAM)
    build = tmp_path / "build"
    return _run([cmake, "-S", src, "-B", build, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *defines])


def test_cmake_find_package(case, tmp_path):
    cmake_dir = _config("--cmakedir")
    out = _check(_configure(tmp_path, "0.1", f"-Dnfhep_DIR={cmake_dir}"), "CMake configure")
    assert f"nfhep {nfhep.__version__} from {cmake_dir}" in out
    _check(_run([_tool("cmake"), "--build", tmp_path / "build"]), "CMake build")
    _check_output(case, tmp_path / "build" / "prog")


def test_cmake_finds_the_package_by_prefix(tmp_path):
    out = _check(_configure(tmp_path, "", f"-DCMAKE_PREFIX_PATH={_config('--prefix')}"), "CMake configure")
    assert f"from {_config('--cmakedir')}" in out


def test_cmake_refuses_an_impossible_version(tmp_path):
    r = _configure(tmp_path, "99", f"-Dnfhep_DIR={_config('--cmakedir')}")
    assert r.returncode != 0
    assert 'requested version "99"' in " ".join((r.stdout + r.stderr).split())


def test_config_dirs_point_at_the_installed_files():
    from nfhep.cli import config

    pkg = Path(nfhep.__file__).resolve().parent
    prefix, cmake_dir = Path(_config("--prefix")), Path(_config("--cmakedir"))
    assert prefix == pkg == config.prefix()
    assert cmake_dir == config.cmake_dir()
    assert (cmake_dir / "nfhepConfig.cmake").is_file() and (cmake_dir / "nfhepConfigVersion.cmake").is_file()
    assert (prefix / "include" / "nfhep" / "flow.hpp").is_file()
    assert (prefix / "lib" / "libnfhep_core.so").is_file()
    assert Path(_config("--includedir")) == prefix / "include"
    assert Path(_config("--libdir")) == prefix / "lib"


def test_config_names_what_is_missing(tmp_path, monkeypatch, capsys):
    from nfhep.cli import config, main

    monkeypatch.setattr(config, "cmake_dir", lambda: tmp_path / "no-cmake")
    assert main(["config", "--cmakedir"]) != 0
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "CMake package configuration" in cap.err and str(tmp_path / "no-cmake") in cap.err
