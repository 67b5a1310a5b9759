"""Resolving ``file.root:tree`` specifications, glob patterns and lists into (file, tree) pairs."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingFileError, MissingTreeError

__all__ = ["InputSpec", "resolve_inputs", "sha256_file", "TREE_CLASSES"]

#: ROOT classes read as trees (a TNtuple is a TTree of floats).
TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD")

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputSpec:
    """One input file and the tree to read from it (``tree=None``: auto-detect)."""

    path: str
    tree: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.tree}" if self.tree else self.path


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``'a.root:dir/tree'`` -> ``('a.root', 'dir/tree')``; a plain path -> ``(path, None)``."""
    if os.path.exists(spec):
        return spec, None
    low = spec.lower()
    idx = low.rfind(".root:")
    if idx >= 0:
        return spec[: idx + 5], spec[idx + 6 :] or None
    if ":" in spec:
        left, _, right = spec.rpartition(":")
        if left:
            return left, right or None
    return spec, None


def _is_glob(s: str) -> bool:
    return any(c in _GLOB_CHARS for c in s)


def resolve_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[InputSpec]:
    """Expand input specifications into a list of :class:`InputSpec`.

    Parameters
    ----------
    inputs : str, path or iterable of them
        Each item is ``file.root``, ``file.root:tree`` (a tree in a directory: ``file.root:dir/tree``)
        or a glob pattern of files, optionally with ``:tree`` (``data/*.root:events``). Patterns are
        expanded in sorted order so the row order is reproducible.

    Raises
    ------
    MissingFileError
        If a file does not exist or a pattern matches nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        items = [inputs]
    else:
        items = list(inputs)
    if not items:
        raise MissingFileError("no input files given")
    out: list[InputSpec] = []
    for item in items:
        spec = os.fspath(item)
        if not isinstance(spec, str):
            raise TypeError(f"input must be a str or path, got {type(item).__name__}")
        path, tree = _split_spec(spec)
        if _is_glob(path) and not os.path.exists(path):
            matches = sorted(glob.glob(path, recursive=True))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise MissingFileError(f"input pattern {path!r} matches no file")
            out.extend(InputSpec(m, tree) for m in matches)
        else:
            if not os.path.isfile(path):
                raise MissingFileError(f"input file {path!r} does not exist")
            out.append(InputSpec(path, tree))
    return out


def find_tree(file, path: str, tree: str | None):
    """Return the uproot TTree ``tree`` from an open file (auto-detected when ``tree`` is None)."""
    if tree is None:
        names = sorted(
            name for name, cls in file.classnames(cycle=False, recursive=True).items() if cls in TREE_CLASSES
        )
        if len(names) != 1:
            what = "no TTree" if not names else f"{len(names)} trees ({', '.join(names)})"
            raise MissingTreeError(f"file {path!r} has {what}; name the tree as '{path}:TREE'")
        tree = names[0]
    try:
        obj = file[tree]
    except KeyError:
        names = sorted(
            name for name, cls in file.classnames(cycle=False, recursive=True).items() if cls in TREE_CLASSES
        )
        raise MissingTreeError(
            f"tree {tree!r} not found in file {path!r} (trees in the file: {', '.join(names) or 'none'})"
        ) from None
    if getattr(obj, "classname", None) not in TREE_CLASSES:
        raise MissingTreeError(
            f"object {tree!r} in file {path!r} is a {getattr(obj, 'classname', type(obj).__name__)}, "
            "not a TTree"
        )
    return obj, tree


def sha256_file(path: str | os.PathLike, *, block: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def absolute(path: str) -> str:
    return str(Path(path).resolve())
