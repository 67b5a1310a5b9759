"""nfhep: normalizing flows for high-energy physics, with a C++ core.

Learn densities from ROOT ntuples (MAF, RealNVP, coupling and autoregressive rational-quadratic
splines), publish them as documented model files, evaluate them from Python, ROOT macros or C++, and
check what they learned with two-sample statistics (Kolmogorov-Smirnov, sliced Wasserstein, ...).

Submodules are imported on first use, so ``import nfhep`` stays light (torch is loaded only by the parts
that need it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

try:
    from . import _core
except ImportError as _err:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "nfhep's compiled extension nfhep._core could not be imported "
        f"({_err}). Build and install the package with `pip install .` from the source tree "
        "(needs a C++17 compiler, CMake >= 3.26 and pybind11), or for development "
        "`cmake -S . -B build -G Ninja -DNFHEP_PYTHON=ON -DNFHEP_INPLACE=ON && cmake --build build` "
        "and put python/ on PYTHONPATH."
    ) from _err

__all__ = [
    "__version__",
    "buffer_cache",
    "build_info",
    "get_num_threads",
    "set_num_threads",
    "load",
    "save",
    "FormatError",
    "Engine",
    "evaluate",
]

_SUBMODULES = {
    "bijectors",
    "flows",
    "metrics",
    "io",
    "train",
    "cli",
    "model",
    "modelfile",
    "preprocessing",
    "engine",
    "likelihood",
    "rdf",
    "cmog",
}
# nfhep.load / nfhep.save / nfhep.FormatError: the model file (nfhep.modelfile), imported on first use
_MODELFILE = {"load", "save", "FormatError"}


def build_info() -> dict[str, Any]:
    """Describe how nfhep was built and what it runs with.

    Returns
    -------
    dict
        ``version``, ``compiler``, ``simd`` (the SIMD level the kernels use now), ``simd_compiled``,
        ``simd_available``, ``num_threads``, ``cuda`` (compiled with CUDA), ``cuda_architectures``,
        ``cuda_devices`` (visible now) and ``cuda_status`` (why there are none, if none), ``blas`` (the
        BLAS of the inference engine's dense layers: OpenBLAS from scipy-openblas32), plus ``torch``
        (its version, or None if torch is not installed).

    Notes
    -----
    The CUDA runtime is queried here, never at import. The machines nfhep is developed on have no GPU:
    the CUDA kernels are compiled in CI but have not run on a device there.
    """
    info = dict(_core.build_info())
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        info["torch"] = None
    return info


def set_num_threads(n: int) -> None:
    """Set the number of threads of nfhep's C++ kernels (the one threading knob).

    ``n <= 0`` restores the default: the environment variable ``NFHEP_NUM_THREADS`` if set, else the
    number of CPUs this process may use. torch's own thread count is left alone: nfhep's kernels run
    while torch waits for them, so the two pools do not compete.
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads nfhep's C++ kernels use."""
    return int(_core.get_num_threads())


def buffer_cache(limit_mib: float | None = None) -> dict[str, Any]:
    """Read, and optionally set, the cache of freed large output arrays of nfhep's C++ kernels.

    Outputs of 4 MiB and more (e.g. the ``(N, D, 3K-1)`` parameter gradient of a spline's backward pass)
    live in memory mappings that return to a bounded cache when their array is freed; the next output of a
    similar size (within +25%) reuses one instead of faulting in and zeroing fresh pages again (measured
    here: about a third of the cost of an RQS backward pass over 10^6 x 28 elements). The cache never holds
    memory that is still in use; a reused buffer's old contents are always overwritten by the kernel.

    Parameters
    ----------
    limit_mib : float, optional
        New limit in MiB on the freed buffers kept (at most 16 of them, oldest evicted first); ``0``
        disables the cache and empties it. Default limit: a quarter of the physical memory, or the
        environment variable ``NFHEP_BUFFER_CACHE_MB``.

    Returns
    -------
    dict
        ``limit_mib``, ``cached_mib`` (freed memory held now), ``buffers``, ``hits``, ``misses``.
    """
    if limit_mib is not None and (isinstance(limit_mib, bool) or not isinstance(limit_mib, (int, float))):
        raise TypeError(f"buffer_cache: limit_mib must be a number or None, got {type(limit_mib).__name__}")
    return dict(_core.buffer_cache(limit_mib))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _MODELFILE:
        return getattr(importlib.import_module(".modelfile", __name__), name)
    if name == "Engine":
        return importlib.import_module(".engine", __name__).Engine
    if name == "evaluate":  # nfhep.evaluate(models, inputs, ...): batch evaluation into friend trees
        globals()["evaluate"] = importlib.import_module(".evaluate", __name__).evaluate
        return globals()["evaluate"]
    raise AttributeError(f"module 'nfhep' has no attribute {name!r}")
