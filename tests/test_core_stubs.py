"""The .pyi stubs of nfhep._core list what the module exports (and nothing it lacks)."""

from __future__ import annotations

import ast
from pathlib import Path

import nfhep

STUB = Path(nfhep.__file__).with_name("_core.pyi")


def _stub_names():
    tree = ast.parse(STUB.read_text())
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    bij = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "bijectors")
    return top, {n.name for n in bij.body if isinstance(n, ast.FunctionDef)}


def test_stub_matches_module():
    top, bij = _stub_names()
    for name in ("build_info", "set_num_threads", "get_num_threads", "set_simd", "buffer_cache", "bijectors"):
        assert name in top and hasattr(nfhep._core, name)
    module_top = {n for n in dir(nfhep._core) if not n.startswith("_")}
    assert module_top <= top, f"missing from the stub: {module_top - top}"
    public = {n for n in dir(nfhep._core.bijectors) if not n.startswith("__")}
    assert public <= bij, f"missing from the stub: {public - bij}"
    cpu_only = {n for n in bij if not n.startswith("cuda_")} | {"cuda_available"}
    assert cpu_only <= public | {"cuda_available"}


def test_metrics_stub_matches_module():
    tree = ast.parse(STUB.read_text())
    met = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "metrics")
    stubbed = {n.name for n in met.body if isinstance(n, ast.FunctionDef)}
    public = {n for n in dir(nfhep._core.metrics) if not n.startswith("__")}
    assert public == stubbed, f"stub and module differ: {public ^ stubbed}"
