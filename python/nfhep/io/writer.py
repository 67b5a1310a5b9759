"""Writing TTrees atomically (uproot ``mktree`` + ``extend``, ZSTD level 1 by default)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["RootWriter", "write_root", "write_friend", "parse_compression", "split_output_spec"]


def parse_compression(compression: Any):
    """Turn ``"zstd1"``, ``"zlib4"``, ``"lz4"``, ``"lzma9"``, ``None``/``"none"`` into an uproot codec.

    The default of nfhep is ZSTD level 1: about 10x faster to write than uproot's ZLIB-1 at a similar
    size (REFERENCE.md §5). An uproot compression object is passed through.
    """
    import uproot

    if compression is None:
        return None
    if not isinstance(compression, str):
        if isinstance(compression, uproot.compression.Compression):
            return compression
        raise TypeError(f"compression must be a str like 'zstd1' or None, got {compression!r}")
    s = compression.strip().lower()
    if s in ("", "none", "0"):
        return None
    algos = {"zstd": uproot.ZSTD, "zlib": uproot.ZLIB, "lz4": uproot.LZ4, "lzma": uproot.LZMA}
    name = next((a for a in algos if s.startswith(a)), None)
    digits = s[len(name) :] if name else ""
    if name is None or (digits and not digits.isdigit()):
        raise ValueError(
            f"compression {compression!r} unknown; use zstd/zlib/lz4/lzma followed by a level "
            "(e.g. 'zstd1'), or 'none'"
        )
    level = int(digits) if digits else 1
    if not 1 <= level <= 9 and not (name == "zstd" and 1 <= level <= 19):
        raise ValueError(f"compression {compression!r}: level {level} out of range")
    return algos[name](level)


def split_output_spec(spec: str, default_tree: str) -> tuple[str, str]:
    """``'out.root:tree'`` -> ``('out.root', 'tree')``; ``'out.root'`` -> ``('out.root', default_tree)``."""
    low = spec.lower()
    idx = low.rfind(".root:")
    if idx >= 0:
        tree = spec[idx + 6 :]
        return spec[: idx + 5], tree or default_tree
    return spec, default_tree


def _branch_types(arrays: Mapping[str, Any]) -> dict[str, np.dtype]:
    types = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"branch names must be non-empty str, got {name!r}")
        arr = np.asarray(a)
        if arr.ndim != 1:
            raise ValueError(f"branch {name!r}: expected a 1-D array, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"branch {name!r}: expected a numeric array, got dtype {arr.dtype}")
        types[name] = arr.dtype.newbyteorder("=")
    return types


class RootWriter:
    """Write one TTree chunk by chunk to a temporary file, renamed into place on success.

    Use as a context manager: on normal exit the file is closed and atomically renamed to ``path``; if
    an exception leaves the block (or :meth:`abort` is called) the temporary file is removed and no
    output appears (an existing file at ``path`` is left untouched).

    Parameters
    ----------
    path : str or path
        Output ROOT file.
    tree : str
        Tree name.
    branches : mapping name -> dtype, optional
        Branch types; if omitted they are taken from the first chunk written.
    compression : str or None
        ``"zstd1"`` (default), see :func:`parse_compression`.
    title : str
        Tree title.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tree: str,
        *,
        branches: Mapping[str, Any] | None = None,
        compression: Any = "zstd1",
        title: str = "",
    ):
        if not isinstance(tree, str) or not tree:
            raise ValueError(f"tree must be a non-empty name, got {tree!r}")
        self.path = os.fspath(path)
        self.tree = tree
        self.title = title
        self._codec = parse_compression(compression)
        self._types = {k: np.dtype(v) for k, v in branches.items()} if branches else None
        self._file = None
        self._tmp: str | None = None
        self.n_entries = 0

    def __enter__(self) -> RootWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def open(self) -> None:
        import uproot

        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"output directory {directory!r} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory)
        os.close(fd)
        self._tmp = tmp
        try:
            self._file = uproot.recreate(tmp, compression=self._codec)
            if self._types is not None:
                self._mktree()
        except BaseException:
            self.abort()
            raise

    def _mktree(self) -> None:
        self._file.mktree(self.tree, {k: v for k, v in self._types.items()}, title=self.title)

    def write(self, arrays: Mapping[str, Any]) -> None:
        """Append one chunk (a dict of equally long 1-D numeric arrays)."""
        if self._file is None:
            raise RuntimeError("RootWriter.write called outside of an open writer")
        types = _branch_types(arrays)
        if self._types is None:
            self._types = types
            self._mktree()
        elif set(types) != set(self._types):
            raise ValueError(f"chunk branches {sorted(types)} differ from the tree's {sorted(self._types)}")
        lengths = {len(np.asarray(a)) for a in arrays.values()}
        if len(lengths) > 1:
            raise ValueError(f"branches of one chunk differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if n == 0:
            return
        self._file[self.tree].extend(
            {k: np.ascontiguousarray(arrays[k], dtype=self._types[k]) for k in self._types}
        )
        self.n_entries += n

    def commit(self) -> None:
        """Close the file and rename it to ``path`` (atomic on POSIX)."""
        if self._file is None:
            return
        try:
            if self._types is None:
                raise ValueError(f"no data written to tree {self.tree!r}: branch types are unknown")
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard the temporary file."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None


def _chunks(arrays) -> Iterable[Mapping[str, Any]]:
    if isinstance(arrays, Mapping):
        return [arrays]
    return arrays


def write_root(
    path: str | os.PathLike,
    tree: str,
    arrays: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    *,
    compression: Any = "zstd1",
    title: str = "",
    progress: bool = False,
) -> int:
    """Write a TTree (not an RNTuple) atomically and return the number of entries written.

    Parameters
    ----------
    path : str or path
        Output file, replaced atomically (temporary name in the same directory, then renamed).
    tree : str
        Tree name.
    arrays : dict of 1-D arrays, or an iterable of such dicts (chunks)
        Branch name -> values. Chunks let large outputs be written without holding them in memory.
    compression : str or None
        Default ``"zstd1"`` (ZSTD level 1).
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    int
        Entries written.

    Notes
    -----
    Uses uproot's ``mktree`` + ``extend``: assigning a dict (``f[name] = {...}``) would write an RNTuple
    in current uproot. If anything raises before the end (including a chunk iterator), no file appears
    at ``path``.
    """
    chunks = _chunks(arrays)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(
            chunks,
            desc=f"writing {os.path.basename(os.fspath(path))}",
            unit="chunk",
            leave=False,
            disable=None,
        )
    with RootWriter(path, tree, compression=compression, title=title) as w:
        for chunk in chunks:
            w.write(chunk)
        n = w.n_entries
    return n


def write_friend(
    path: str | os.PathLike,
    tree: str,
    arrays: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    *,
    like: str,
    compression: Any = "zstd1",
    progress: bool = False,
) -> int:
    """Write a friend tree: new branches for every entry of an existing tree, in the same order.

    uproot cannot add branches to an existing TTree; a friend file with the same number of entries in
    the same order is the clean way (``main.AddFriend(tree, path)`` in ROOT). The number of entries is
    checked against ``like`` (``file.root:tree``) before the file is renamed into place: a mismatch
    raises ``ValueError`` and leaves no file.
    """
    import uproot

    from .inputs import find_tree, resolve_inputs

    (spec,) = resolve_inputs(like)
    with uproot.open(spec.path) as f:
        ref, _ = find_tree(f, spec.path, spec.tree)
        expected = int(ref.num_entries)
    chunks = _chunks(arrays)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="writing friend", unit="chunk", leave=False, disable=None)
    with RootWriter(path, tree, compression=compression) as w:
        for chunk in chunks:
            w.write(chunk)
            if w.n_entries > expected:
                raise ValueError(f"friend tree {tree!r} would have more entries than {like!r} ({expected})")
        if w.n_entries != expected:
            raise ValueError(
                f"friend tree {tree!r} has {w.n_entries} entries but {like!r} has {expected}: "
                "a friend must have the same entries in the same order"
            )
        n = w.n_entries
    return n
