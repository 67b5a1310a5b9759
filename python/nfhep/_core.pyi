"""Type stubs of nfhep's private compiled module ``nfhep._core`` (users import :mod:`nfhep`).

Submodules are modelled as classes of static methods (a single-file stub cannot declare a submodule).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Engine",
    "bijectors",
    "buffer_cache",
    "build_info",
    "get_num_threads",
    "metrics",
    "set_num_threads",
    "set_simd",
]

_Float = np.float32 | np.float64
_Array = npt.NDArray[Any]

def build_info() -> dict[str, Any]:
    """How this copy of the core was built and what it runs with."""

def set_num_threads(n: int) -> None:
    """Set the core's thread count; n <= 0 restores the default (NFHEP_NUM_THREADS or the CPU count)."""

def get_num_threads() -> int:
    """The core's thread count."""

def set_simd(level: str) -> None:
    """Use SIMD level 'generic', 'avx2' or 'avx512' ('' = best available, capped by NFHEP_ISA)."""

def buffer_cache(limit_mib: float | None = None) -> dict[str, Any]:
    """The cache of freed large output buffers: set its limit (MiB; 0 disables and empties it) and/or read
    its state (dict: limit_mib, cached_mib, buffers, hits, misses)."""

class bijectors:
    """RQ-spline and affine bijector kernels (numpy in, numpy out; CUDA launchers in CUDA builds)."""

    @staticmethod
    def rqs_forward(
        x: _Array,
        params: _Array,
        *,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> tuple[_Array, _Array]: ...
    @staticmethod
    def rqs_inverse(
        y: _Array,
        params: _Array,
        *,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> tuple[_Array, _Array]: ...
    @staticmethod
    def rqs_backward(
        inputs: _Array,
        params: _Array,
        grad_output: _Array | None,
        grad_logabsdet: _Array | None,
        *,
        inverse: bool = False,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> tuple[_Array, _Array]: ...
    @staticmethod
    def affine_forward(x: _Array, params: _Array) -> tuple[_Array, _Array]: ...
    @staticmethod
    def affine_inverse(y: _Array, params: _Array) -> tuple[_Array, _Array]: ...
    @staticmethod
    def affine_backward(
        inputs: _Array,
        params: _Array,
        grad_output: _Array | None,
        grad_logabsdet: _Array | None,
        *,
        inverse: bool = False,
    ) -> tuple[_Array, _Array]: ...
    @staticmethod
    def cuda_available() -> bool: ...
    @staticmethod
    def _special(name: str, x: _Array) -> _Array: ...
    # Present only when cuda_available() is True. Pointers are device addresses (int), stream a cudaStream_t.
    @staticmethod
    def cuda_rqs_forward(
        x: int, params: int, n: int, num_bins: int, y: int, logabsdet: int, *, dtype: str,
        bound: float = 5.0, min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3, stream: int = 0,
    ) -> None: ...  # fmt: skip
    @staticmethod
    def cuda_rqs_inverse(
        y: int, params: int, n: int, num_bins: int, x: int, logabsdet: int, *, dtype: str,
        bound: float = 5.0, min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3, stream: int = 0,
    ) -> None: ...  # fmt: skip
    @staticmethod
    def cuda_rqs_backward(
        inputs: int, params: int, grad_output: int, grad_logabsdet: int, n: int, num_bins: int,
        grad_inputs: int, grad_params: int, *, dtype: str, inverse: bool = False, bound: float = 5.0,
        min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
        stream: int = 0,
    ) -> None: ...  # fmt: skip
    @staticmethod
    def cuda_affine_forward(
        x: int, params: int, n: int, y: int, logabsdet: int, *, dtype: str, stream: int = 0
    ) -> None: ...
    @staticmethod
    def cuda_affine_inverse(
        y: int, params: int, n: int, x: int, logabsdet: int, *, dtype: str, stream: int = 0
    ) -> None: ...
    @staticmethod
    def cuda_affine_backward(
        inputs: int, params: int, grad_output: int, grad_logabsdet: int, n: int, grad_inputs: int,
        grad_params: int, *, dtype: str, inverse: bool = False, stream: int = 0,
    ) -> None: ...  # fmt: skip

class metrics:
    """Two-sample metrics (statistics in C++; p-values and summaries in nfhep.metrics)."""

    @staticmethod
    def ks_statistics(
        x: _Array,
        y: _Array,
        *,
        weights_x: _Array | None = None,
        weights_y: _Array | None = None,
        check_finite: bool = True,
        device: str = "cpu",
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...  # (d_plus, d_minus) per dimension
    @staticmethod
    def wasserstein_per_dim(
        x: _Array,
        y: _Array,
        *,
        weights_x: _Array | None = None,
        weights_y: _Array | None = None,
        check_finite: bool = True,
    ) -> npt.NDArray[np.float64]: ...
    @staticmethod
    def sliced_wasserstein(
        x: _Array,
        y: _Array,
        directions: npt.NDArray[np.float64],
        *,
        weights_x: _Array | None = None,
        weights_y: _Array | None = None,
        check_finite: bool = True,
        device: str = "cpu",
        block_bytes: int = 0,
    ) -> npt.NDArray[np.float64]: ...  # W1 per direction
    @staticmethod
    def project(x: _Array, directions: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
    @staticmethod
    def hpdi(
        x: _Array, probs: npt.NDArray[np.float64], *, weights: _Array | None = None, check_finite: bool = True
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...  # (lo, hi), each (n_probs, D)
    @staticmethod
    def radix_sort(a: _Array) -> _Array: ...
    @staticmethod
    def kstwo_sf(d: npt.NDArray[np.float64], n: float) -> npt.NDArray[np.float64]: ...  # scipy.stats.kstwo.sf
    @staticmethod
    def smirnov_sf(d: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]: ...  # special.smirnov
    @staticmethod
    def ks_exact_equal_sf(h: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.float64]: ...  # D = h/n
    @staticmethod
    def sort(a: _Array) -> _Array: ...
    @staticmethod
    def cuda_compiled() -> bool: ...

class Engine:
    """A model file loaded by the C++ inference engine (nfhep::Flow); users use nfhep.Engine."""

    def __init__(self, path: str) -> None: ...
    @property
    def features(self) -> list[str]: ...
    @property
    def context_features(self) -> list[str]: ...
    @property
    def dtype(self) -> str: ...  # "float32" | "float64"
    @property
    def family(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def checksum(self) -> str: ...
    @property
    def metadata_json(self) -> str: ...
    @property
    def lower_bounds(self) -> list[float]: ...
    @property
    def upper_bounds(self) -> list[float]: ...
    def log_prob(self, x: _Array, context: _Array | None = None) -> _Array: ...  # (N,), x's dtype
    @property
    def members(self) -> int: ...  # flows averaged: an ensemble's, 1 for a single flow
    def log_prob_members(
        self, x: _Array, context: _Array | None = None
    ) -> tuple[_Array, _Array]: ...  # ((N, members) each member's log p, (N,) log p), x's dtype
    def in_support(self, x: _Array) -> npt.NDArray[np.bool_]: ...
    def sample(
        self, n: int, seed: int, first_index: int, context: _Array | None, dtype: str, with_log_prob: bool
    ) -> tuple[_Array, _Array | None]: ...
    def latent(self, n: int, seed: int, first_index: int) -> npt.NDArray[np.float64]: ...
