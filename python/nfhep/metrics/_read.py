"""A small private ROOT reader for ``nfhep compare`` (uproot).

To be replaced by ``nfhep.io`` (issue 3) when it lands; kept private so nothing else depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["parse_spec", "read_tree"]


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"file.root:tree"`` (the tree may be a path inside the file, ``dir/tree``)."""
    if ":" not in spec:
        raise ValueError(f"input {spec!r} must be given as FILE.root:TREE")
    path, tree = spec.rsplit(":", 1)
    if not path or not tree:
        raise ValueError(f"input {spec!r} must be given as FILE.root:TREE")
    return path, tree


def read_tree(
    spec: str,
    branches: Sequence[str],
    *,
    weight: str | None = None,
    selection: str | None = None,
    max_events: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read flat numeric ``branches`` of ``FILE:TREE`` into a float64 (n, D) array (and the weights).

    ``selection`` is a cut in uproot's expression language (e.g. ``"px > 0"``); ``weight`` names a
    branch of per-event weights. Errors name the file, the tree and the branch; jagged (variable-length)
    branches are refused.
    """
    import uproot

    path, tree_name = parse_spec(spec)
    if not Path(path).is_file():
        raise FileNotFoundError(f"input file {path!r} does not exist")
    if not branches:
        raise ValueError("no features given (--features)")
    try:
        f = uproot.open(path)
    except Exception as err:  # uproot raises several types for a non-ROOT file
        raise ValueError(f"cannot open {path!r} as a ROOT file: {err}") from err
    with f:
        if tree_name not in f:
            have = sorted({k.split(";")[0] for k in f.keys()})
            raise ValueError(
                f"file {path!r} has no tree {tree_name!r} (it has: {', '.join(have) or 'nothing'})"
            )
        tree = f[tree_name]
        if not hasattr(tree, "arrays"):
            raise ValueError(f"{path}:{tree_name} is not a TTree")
        wanted = list(branches) + ([weight] if weight else [])
        for b in wanted:
            if b not in tree.keys():
                raise ValueError(
                    f"tree {tree_name!r} of {path!r} has no branch {b!r} (it has: {', '.join(tree.keys())})"
                )
        try:
            arrs = tree.arrays(wanted, cut=selection, library="np", entry_stop=max_events)
        except Exception as err:
            raise ValueError(
                f"{path}:{tree_name}: cannot read branches {wanted} with selection {selection!r}: {err}"
            ) from err
        cols = []
        for b in wanted:
            a = arrs[b]
            if a.dtype == object or a.ndim != 1:
                raise ValueError(f"branch {b!r} of {path}:{tree_name} is jagged or not a scalar per event")
            if a.dtype.kind not in "biuf":
                raise ValueError(f"branch {b!r} of {path}:{tree_name} is not numeric (dtype {a.dtype})")
            cols.append(a.astype(np.float64))
    n = cols[0].shape[0] if cols else 0
    if n == 0:
        raise ValueError(
            f"{path}:{tree_name}: no events" + (f" pass the selection {selection!r}" if selection else "")
        )
    data = np.stack(cols[: len(branches)], axis=1)
    w = cols[-1] if weight else None
    return np.ascontiguousarray(data), w
