"""The package imports, says how it was built, and has one threading knob."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import nfhep


def test_build_info_fields():
    info = nfhep.build_info()
    assert info["version"] == nfhep.__version__
    assert info["simd"] in info["simd_available"]
    assert set(info["simd_available"]) <= set(info["simd_compiled"])
    assert "generic" in info["simd_compiled"]
    assert info["num_threads"] >= 1
    assert isinstance(info["cuda"], bool)
    if not info["cuda"]:
        assert "NFHEP_CUDA=ON" in info["cuda_status"]
        assert info["cuda_devices"] == 0


def test_set_num_threads_roundtrip():
    before = nfhep.get_num_threads()
    try:
        nfhep.set_num_threads(1)
        assert nfhep.get_num_threads() == 1
        assert nfhep.build_info()["num_threads"] == 1
        nfhep.set_num_threads(3)
        assert nfhep.get_num_threads() == 3
    finally:
        nfhep.set_num_threads(before)
    assert nfhep.get_num_threads() == before


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError, match="n must be an int"):
        nfhep.set_num_threads(1.5)  # type: ignore[arg-type]


def _child(code: str, **env: str) -> str:
    e = dict(os.environ)
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_env_num_threads_default():
    out = _child("import nfhep; print(nfhep.get_num_threads())", NFHEP_NUM_THREADS="5")
    assert out == "5"


def test_env_isa_cap():
    out = _child("import nfhep; print(nfhep.build_info()['simd'])", NFHEP_ISA="generic")
    assert out == "generic"


def test_set_simd_errors_name_the_level():
    with pytest.raises(ValueError, match="'sse9'"):
        nfhep._core.set_simd("sse9")
    nfhep._core.set_simd("generic")
    assert nfhep.build_info()["simd"] == "generic"
    nfhep._core.set_simd("")
    assert nfhep.build_info()["simd"] == nfhep.build_info()["simd_available"][-1]


def test_import_does_not_import_torch_or_probe_cuda():
    out = _child("import sys, nfhep; print('torch' in sys.modules)")
    assert out == "False"


def test_config_flags_point_at_installed_files():
    from nfhep.cli import config

    assert (config.include_dir() / "nfhep" / "config.hpp").is_file()
    assert config.library_path().is_file()


def test_cli_help_lists_commands(capsys):
    from nfhep.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "config" in capsys.readouterr().out
