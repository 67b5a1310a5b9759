"""``nfhep config``: compile/link flags for C++ code (ROOT macros, frameworks) and build information."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMAND = "config"
HELP = "print compiler/linker flags or the CMake package dir for the C++ core, or how nfhep was built"
DESCRIPTION = """\
Print what C++ code needs to use nfhep's core library (libnfhep_core, shipped inside the Python package
with its headers and a CMake package; the BLAS it needs sits next to it and is found automatically).

examples:
  g++ my.cpp $(nfhep config --cflags --libs) -o my
  cmake -S . -B build -Dnfhep_DIR=$(nfhep config --cmakedir)
  cmake -S . -B build -DCMAKE_PREFIX_PATH=$(nfhep config --prefix)      # the same, found by prefix
  nfhep config --build-info      # SIMD level, threads, CUDA yes/no (JSON)

CMakeLists.txt of a program using the engine (nfhep::Flow):
  find_package(nfhep 0.1 CONFIG REQUIRED)
  add_executable(my my.cpp)
  target_link_libraries(my PRIVATE nfhep::core)   # headers, C++17, threads, libnfhep_core
"""

__all__ = ["prefix", "include_dir", "library_dir", "library_path", "cmake_dir"]


def prefix() -> Path:
    """The package's install prefix: the ``nfhep`` package directory holding ``include/`` and ``lib/``
    (for ``CMAKE_PREFIX_PATH``)."""
    return Path(__file__).resolve().parent.parent


def include_dir() -> Path:
    """Directory holding the C++ headers (``nfhep/...``) installed with the package."""
    return prefix() / "include"


def library_dir() -> Path:
    """Directory holding ``libnfhep_core.so``."""
    return prefix() / "lib"


def library_path() -> Path:
    """Full path of ``libnfhep_core.so`` (for ``R__LOAD_LIBRARY``)."""
    return library_dir() / "libnfhep_core.so"


def cmake_dir() -> Path:
    """Directory holding ``nfhepConfig.cmake`` (for ``-Dnfhep_DIR=...`` / ``find_package(nfhep CONFIG)``)."""
    return library_dir() / "cmake" / "nfhep"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cflags", action="store_true", help="print -I and -std flags")
    p.add_argument("--libs", action="store_true", help="print -L, -l and rpath flags")
    p.add_argument("--includedir", action="store_true", help="print the header directory")
    p.add_argument("--libdir", action="store_true", help="print the library directory")
    p.add_argument("--library", action="store_true", help="print the full path of libnfhep_core.so")
    p.add_argument("--cmakedir", action="store_true", help="print the directory holding nfhepConfig.cmake")
    p.add_argument("--prefix", action="store_true", help="print the install prefix (holds include/ and lib/)")
    p.add_argument("--build-info", action="store_true", help="print nfhep.build_info() as JSON")


def _missing(args: argparse.Namespace) -> list[str]:
    """What the requested flags rely on that is not on disk (a broken or partial install)."""
    needs: list[tuple[Path, str]] = []
    if args.cflags or args.includedir:
        needs.append((include_dir() / "nfhep" / "flow.hpp", "the C++ headers"))
    if args.libs or args.libdir or args.library:
        needs.append((library_path(), "the core library"))
    if args.cmakedir:
        needs.append((cmake_dir() / "nfhepConfig.cmake", "the CMake package configuration"))
    if args.prefix:
        needs.append((include_dir() / "nfhep" / "flow.hpp", "the C++ headers under the prefix"))
        needs.append((library_path(), "the core library under the prefix"))
    return [f"{what} ({path})" for path, what in needs if not path.is_file()]


def run(args: argparse.Namespace) -> int:
    missing = _missing(args)
    if missing:
        print(
            "nfhep config: error: missing from this nfhep installation: " + "; ".join(missing) + ". "
            "Reinstall nfhep (pip install --force-reinstall nfhep), or for an in-place development build "
            "configure CMake with -DNFHEP_PYTHON=ON -DNFHEP_INPLACE=ON and build it.",
            file=sys.stderr,
        )
        return 1
    out: list[str] = []
    if args.cflags:
        out.append(f"-std=c++17 -I{include_dir()}")
    if args.libs:
        out.append(f"-L{library_dir()} -Wl,-rpath,{library_dir()} -lnfhep_core -pthread")
    if args.includedir:
        out.append(str(include_dir()))
    if args.libdir:
        out.append(str(library_dir()))
    if args.library:
        out.append(str(library_path()))
    if args.cmakedir:
        out.append(str(cmake_dir()))
    if args.prefix:
        out.append(str(prefix()))
    if args.build_info or not out:
        import nfhep

        out.append(json.dumps(nfhep.build_info(), indent=2))
    print(" ".join(out) if not args.build_info else "\n".join(out))
    return 0
