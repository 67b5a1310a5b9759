"""``nfhep config``: compile/link flags for C++ code (ROOT macros, frameworks) and build information."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COMMAND = "config"
HELP = "print compiler/linker flags for the C++ core, or how nfhep was built"
DESCRIPTION = """\
Print what C++ code needs to use nfhep's core library (libnfhep_core, shipped inside the Python package).

examples:
  g++ -std=c++17 my.cpp $(nfhep config --cflags --libs)
  nfhep config --build-info      # SIMD level, threads, CUDA yes/no (JSON)
"""

__all__ = ["include_dir", "library_dir", "library_path"]


def include_dir() -> Path:
    """Directory holding the C++ headers (``nfhep/...``) installed with the package."""
    return Path(__file__).resolve().parent.parent / "include"


def library_dir() -> Path:
    """Directory holding ``libnfhep_core.so``."""
    return Path(__file__).resolve().parent.parent / "lib"


def library_path() -> Path:
    """Full path of ``libnfhep_core.so`` (for ``R__LOAD_LIBRARY``)."""
    return library_dir() / "libnfhep_core.so"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cflags", action="store_true", help="print -I and -std flags")
    p.add_argument("--libs", action="store_true", help="print -L, -l and rpath flags")
    p.add_argument("--includedir", action="store_true", help="print the header directory")
    p.add_argument("--libdir", action="store_true", help="print the library directory")
    p.add_argument("--library", action="store_true", help="print the full path of libnfhep_core.so")
    p.add_argument("--build-info", action="store_true", help="print nfhep.build_info() as JSON")


def run(args: argparse.Namespace) -> int:
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
    if args.build_info or not out:
        import nfhep

        out.append(json.dumps(nfhep.build_info(), indent=2))
    print(" ".join(out) if not args.build_info else "\n".join(out))
    return 0
