"""The nfhep model file: one ``.safetensors`` file holding a trained flow.

A model file is **data, never code**: it is read with a small validating parser written here (no pickle,
no ``torch.load``), so a file received from someone else cannot execute anything. Every size, offset,
dtype and shape is checked before use and a checksum over the tensor bytes detects corruption.

Layout (the full specification is ``docs/model-format.md``)::

    [8 bytes]  N = header length, unsigned 64-bit little-endian
    [N bytes]  JSON header (UTF-8): {"__metadata__": {"nfhep": "<JSON string>"},
                                      "<tensor name>": {"dtype": "F32", "shape": [..],
                                                        "data_offsets": [begin, end]}, ...}
    [rest]     tensor data, little-endian, C order; offsets relative to the start of this section

The tensors are the model's ``state_dict()`` (weights and buffers: masks, permutations, preprocessing
constants) under their stable names; the ``"nfhep"`` metadata entry is a JSON document with the format
name (``"nfhep-flow"``), its version (``1``; ``2`` when the preprocessing uses ``kinds`` or
``data_range``; ``3`` when the flow is an ensemble), the model configuration (flow family and every
hyperparameter, features, context, preprocessing), the floating dtype, the checksum and provenance.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FormatError",
    "save",
    "load",
    "read_header",
    "read_metadata",
    "tensor_checksum",
]

#: The value of the ``"format"`` key of every nfhep model file.
FORMAT_NAME = "nfhep-flow"
#: The newest version this nfhep writes: 3 for an ensemble of flows, else 2, or 1 when the model uses no
#: version-2 key (preprocessing ``kinds``/``data_range``); :func:`load` reads exactly the versions in
#: ``_READABLE_VERSIONS``.
FORMAT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)

#: Largest JSON header accepted (as the safetensors reference implementation: 100 MB).
MAX_HEADER_BYTES = 100_000_000

#: Metadata keys owned by the file format; every other top-level key is the model configuration.
_RESERVED = ("format", "version", "dtype", "checksum", "permutations", "provenance")

# safetensors dtype code -> numpy dtype (little-endian); the codes a model file may contain.
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class FormatError(ValueError):
    """A file is not a valid nfhep model file (unknown format/version, truncated, corrupted, or its
    tensors do not match the model its configuration describes)."""


# ---------------------------------------------------------------------------------------------------
# reading the container (pure Python + numpy; no torch needed)
# ---------------------------------------------------------------------------------------------------
def _read_bytes(path: str | os.PathLike) -> bytes:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"model file {p!r} does not exist")
    if os.path.isdir(p):
        raise FormatError(f"{p!r} is a directory, not a model file")
    with open(p, "rb") as fh:
        return fh.read()


def _parse(raw: bytes, where: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], memoryview]:
    """Validate the safetensors container; return (metadata dict, tensor table, data section)."""
    if len(raw) < 8:
        raise FormatError(f"{where}: file is {len(raw)} bytes long, too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise FormatError(f"{where}: header length {n} is not plausible (not a safetensors file?)")
    if 8 + n > len(raw):
        raise FormatError(
            f"{where}: truncated: the header needs {n} bytes but only {len(raw) - 8} follow the length"
        )
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"{where}: the header is not valid UTF-8 JSON ({err})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where}: the header is not a JSON object")
    data = memoryview(raw)[8 + n :]
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise FormatError(
            f"{where}: no string-to-string '__metadata__' in the header: not an nfhep model file"
        )
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: tensor {name!r}: header entry must have dtype, shape, data_offsets")
        dt, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dt not in _DTYPES:
            raise FormatError(
                f"{where}: tensor {name!r} has dtype {dt!r}; model files hold {', '.join(_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise FormatError(f"{where}: tensor {name!r}: shape {shape!r} is not a list of sizes")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or not 0 <= offs[0] <= offs[1]
        ):
            raise FormatError(f"{where}: tensor {name!r}: data_offsets {offs!r} invalid")
        nbytes = math.prod(shape) * _DTYPES[dt].itemsize
        if offs[1] - offs[0] != nbytes:
            raise FormatError(
                f"{where}: tensor {name!r}: {dt} {shape} needs {nbytes} bytes, "
                f"offsets span {offs[1] - offs[0]}"
            )
        if offs[1] > len(data):
            raise FormatError(
                f"{where}: truncated: tensor {name!r} ends at byte {offs[1]} of the data section, "
                f"which has {len(data)} bytes"
            )
        spans.append((offs[0], offs[1], name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise FormatError(
                f"{where}: tensor {name!r} starts at {begin}, expected {pos} (overlapping or gapped data)"
            )
        pos = end
    if pos != len(data):
        raise FormatError(
            f"{where}: {len(data) - pos} unexpected trailing bytes after the last tensor (corrupted?)"
        )
    return meta, header, data


def _nfhep_metadata(meta: Mapping[str, str], where: str) -> dict[str, Any]:
    if "nfhep" not in meta:
        raise FormatError(f"{where}: no 'nfhep' metadata: a safetensors file, but not an nfhep model file")
    try:
        doc = json.loads(meta["nfhep"])
    except json.JSONDecodeError as err:
        raise FormatError(f"{where}: the 'nfhep' metadata is not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: the 'nfhep' metadata is not a JSON object")
    if doc.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: format {doc.get('format')!r} is not {FORMAT_NAME!r}")
    version = doc.get("version")
    if version not in _READABLE_VERSIONS or isinstance(version, bool):
        raise FormatError(
            f"{where}: model-file version {version!r} is not supported by this nfhep, which reads "
            f"version(s) {', '.join(map(str, _READABLE_VERSIONS))}"
            + ("; upgrade nfhep to read it" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    pre = doc.get("preprocessing")
    if version == 1 and isinstance(pre, dict):
        newer = sorted(k for k in ("kinds", "data_range") if k in pre)
        if newer:
            raise FormatError(
                f"{where}: a version 1 file cannot hold the version-2 preprocessing key(s) "
                + ", ".join(repr(k) for k in newer)
            )
    for key in ("flow", "features", "dtype", "checksum"):
        if key not in doc:
            raise FormatError(f"{where}: the 'nfhep' metadata lacks the required key {key!r}")
    ensemble = isinstance(doc["flow"], dict) and doc["flow"].get("family") == "ensemble"
    if ensemble != (version == 3):
        raise FormatError(
            f"{where}: "
            + (
                "an ensemble of flows needs model-file version 3"
                if ensemble
                else "a version 3 file holds an ensemble of flows"
            )
            + f", this one is version {version} with flow family {doc['flow'].get('family')!r}"
        )
    if doc["dtype"] not in ("float32", "float64"):
        raise FormatError(f"{where}: dtype {doc['dtype']!r} is not float32 or float64")
    return doc


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The validated ``"nfhep"`` metadata of a model file (format, version, configuration, provenance).

    Reads and validates the whole container (offsets, sizes), but does not build the model.
    """
    return read_header(path)["nfhep"]


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Validated header of a model file: ``{"nfhep": metadata, "tensors": {name: {dtype, shape}}}``."""
    where = os.fspath(path)
    meta, table, _ = _parse(_read_bytes(path), where)
    doc = _nfhep_metadata(meta, where)
    return {
        "nfhep": doc,
        "tensors": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in sorted(table.items())},
    }


def _arrays(table, data: memoryview) -> dict[str, np.ndarray]:
    out = {}
    for name, entry in table.items():
        dt = _DTYPES[entry["dtype"]]
        b, e = entry["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=dt).reshape(entry["shape"])
        out[name] = arr.astype(dt.newbyteorder("="), copy=True)
    return out


def tensor_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the tensors, in sorted name order: for each, the UTF-8 name, a NUL byte, the dtype
    code, a NUL byte, the shape as little-endian u64s, then the little-endian C-order bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        code = _dtype_code(a.dtype)
        h.update(name.encode("utf-8") + b"\0" + code.encode() + b"\0")
        h.update(struct.pack(f"<{a.ndim}Q", *a.shape))
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _dtype_code(dt: np.dtype) -> str:
    for code, d in _DTYPES.items():
        if np.dtype(dt).newbyteorder("<") == d.newbyteorder("<") or (code == "BOOL" and dt == np.bool_):
            return code
    raise ValueError(f"dtype {dt} cannot be stored in a model file")


# ---------------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------------
def _jsonable(obj: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not JSON-serialisable ({err})") from None


def save(model, path: str | os.PathLike, *, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (an :class:`nfhep.model.Model`) to ``path`` as an nfhep model file.

    Parameters
    ----------
    model : nfhep.model.Model
        The trained flow. Its ``config()`` becomes the metadata, its ``state_dict()`` the tensors.
    path : str or path
        Output file (``.safetensors`` recommended). Written to a temporary name in the same directory
        and renamed, so an interrupted save never leaves a half-written model.
    provenance : mapping, optional
        Extra JSON-serialisable provenance (training files and their SHA-256, final losses, history
        summary, ...). ``nfhep_version``, ``torch_version``, ``python_version`` and ``created`` (UTC,
        ISO 8601) are added automatically.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If a weight is NaN/inf (a diverged model is never saved), a tensor has an unsupported dtype, or
        the configuration/provenance is not JSON-serialisable.
    """
    import torch
    from safetensors.torch import save as st_save

    from nfhep import __version__

    config = _jsonable(model.config(), "model.config()")
    clash = sorted(set(config) & set(_RESERVED))
    if clash:
        raise ValueError(f"model.config() uses reserved key(s) {clash}")
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    arrays: dict[str, np.ndarray] = {}
    float_dtypes = set()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} is not a tensor ({type(t).__name__})")
        t = t.detach().to("cpu").contiguous().clone()
        if t.dtype.is_floating_point:
            if t.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"tensor {name!r} has dtype {t.dtype}; model files hold float32/float64")
            float_dtypes.add(t.dtype)
            if not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"tensor {name!r} holds NaN or inf values: refusing to save a diverged model"
                )
        tensors[name] = t
        arrays[name] = t.numpy()
        _dtype_code(arrays[name].dtype)  # raises for unsupported dtypes
    if len(float_dtypes) > 1:
        raise ValueError(f"the model mixes floating dtypes {sorted(map(str, float_dtypes))}")
    dtype = "float64" if torch.float64 in float_dtypes else "float32"
    prov = {
        "nfhep_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if provenance:
        prov.update(_jsonable(dict(provenance), "provenance"))
    doc = {
        "format": FORMAT_NAME,
        "version": 3
        if config["flow"].get("family") == "ensemble"
        else 2
        if ("kinds" in config["preprocessing"] or "data_range" in config["preprocessing"])
        else 1,
        **config,
        "dtype": dtype,
        "checksum": {"algorithm": "sha256", "value": tensor_checksum(arrays)},
        "permutations": _permutations(arrays),
        "provenance": prov,
    }
    blob = st_save(tensors, metadata={"nfhep": json.dumps(doc, sort_keys=True)})
    out = Path(path)
    directory = out.resolve().parent
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {str(directory)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return out


def _permutations(arrays: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    """The feature permutations (tensors named ``*.perm``), repeated in the metadata for readers."""
    return {k: [int(i) for i in v.reshape(-1)] for k, v in sorted(arrays.items()) if k.endswith(".perm")}


def load(path: str | os.PathLike, *, device: Any = None):
    """Read a model file and return the :class:`nfhep.model.Model` it describes (in eval mode).

    Parameters
    ----------
    path : str or path
    device : torch.device or str, optional
        Where to put the model (default CPU).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    FormatError
        If the file is not an nfhep model file, has an unsupported version, is truncated or corrupted
        (bad sizes/offsets, checksum mismatch, NaN/inf weights), or its tensors do not match the model
        its configuration describes (missing, extra or mis-shaped tensors, wrong dtypes).
    """
    where = os.fspath(path)
    meta, table, data = _parse(_read_bytes(path), where)
    doc = _nfhep_metadata(meta, where)
    arrays = _arrays(table, data)
    checksum = doc["checksum"]
    if not isinstance(checksum, dict) or checksum.get("algorithm") != "sha256":
        raise FormatError(f"{where}: checksum entry {checksum!r} is not a sha256 checksum")
    if tensor_checksum(arrays) != checksum.get("value"):
        raise FormatError(f"{where}: checksum mismatch: the tensor data is corrupted")
    import torch

    from nfhep.model import Model

    if "permutations" in doc and doc["permutations"] != _permutations(arrays):
        raise FormatError(f"{where}: the permutations in the metadata differ from the 'perm' tensors")
    config = {k: v for k, v in doc.items() if k not in _RESERVED}
    try:
        model = Model.from_config(config)
    except (KeyError, TypeError, ValueError) as err:
        raise FormatError(f"{where}: invalid model configuration: {type(err).__name__}: {err}") from None
    fdtype = torch.float64 if doc["dtype"] == "float64" else torch.float32
    model = model.to(fdtype)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise FormatError(
            f"{where}: tensors do not match the {doc['flow'].get('family', '?')!r} model of the "
            f"configuration: missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    tensors = {}
    for name, ref in expected.items():
        arr = arrays[name]
        if tuple(arr.shape) != tuple(ref.shape):
            raise FormatError(
                f"{where}: tensor {name!r} has shape {list(arr.shape)}, the configuration needs "
                f"{list(ref.shape)}"
            )
        t = torch.from_numpy(arr)
        if t.dtype != ref.dtype:
            raise FormatError(f"{where}: tensor {name!r} has dtype {t.dtype}, the model needs {ref.dtype}")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise FormatError(f"{where}: tensor {name!r} holds NaN or inf values")
        tensors[name] = t
    model.load_state_dict(tensors, strict=True)
    model.eval()
    if device is not None:
        model = model.to(device)
    return model
