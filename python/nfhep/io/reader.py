"""Reading features from ROOT ntuples (uproot), in memory or streamed in chunks."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import (
    BadValuesError,
    EmptySelectionError,
    JaggedBranchError,
    MissingBranchError,
    NonNumericBranchError,
    SelectionError,
)
from .inputs import InputSpec, absolute, find_tree, resolve_inputs, sha256_file
from .selection import translate_selection

__all__ = ["Sample", "SourceFile", "RootSource", "read_features", "DEFAULT_STEP_SIZE"]

#: Entries read per chunk (per file). 100k entries x 30 doubles = 24 MB per chunk.
DEFAULT_STEP_SIZE = 100_000

Inputs = str | os.PathLike | Iterable[str | os.PathLike]


@dataclass
class SourceFile:
    """One input file as read: where, which tree, its hash and how many entries went where."""

    path: str
    tree: str
    sha256: str | None
    n_entries: int  # entries in the tree
    n_selected: int = 0  # entries passing the selection
    n_dropped: int = 0  # of those, rows dropped for NaN/inf (drop_bad=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "tree": self.tree,
            "sha256": self.sha256,
            "n_entries": self.n_entries,
            "n_selected": self.n_selected,
            "n_dropped": self.n_dropped,
        }


def _names(arg: str | Sequence[str] | None, what: str) -> tuple[str, ...]:
    if arg is None:
        return ()
    if isinstance(arg, str):
        arg = [s.strip() for s in arg.split(",") if s.strip()]
    names = tuple(arg)
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"{what} must be branch names (non-empty str), got {n!r}")
    return names


class _Plan:
    """Validated inputs + branch roles, shared by :func:`read_features` and :class:`RootSource`."""

    def __init__(
        self,
        inputs: Inputs,
        features: str | Sequence[str],
        *,
        context: str | Sequence[str] | None,
        weights: str | None,
        selection: str | None,
        drop_bad: bool,
        step_size: int,
        hash_files: bool,
    ):
        import uproot  # noqa: F401  (fail early with a clear ImportError if missing)

        self.features = _names(features, "features")
        if not self.features:
            raise ValueError("features: at least one feature branch is required")
        self.context = _names(context, "context")
        if weights is not None and (not isinstance(weights, str) or not weights):
            raise TypeError(f"weights must be a branch name (str), got {weights!r}")
        self.weights = weights
        everything = list(self.features) + list(self.context) + ([weights] if weights else [])
        dupes = sorted({n for n in everything if everything.count(n) > 1})
        if dupes:
            raise ValueError(
                f"branch(es) {', '.join(dupes)} requested twice (features, context and weights must differ)"
            )
        self.branches = everything
        self.role = {n: "feature" for n in self.features}
        self.role.update({n: "context" for n in self.context})
        if weights:
            self.role[weights] = "weight"
        self.selection = selection
        self.cut = translate_selection(selection) if selection is not None else None
        if not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.drop_bad = bool(drop_bad)
        self.specs: list[InputSpec] = resolve_inputs(inputs)
        self.sources: list[SourceFile] = []
        self.chunks: list[tuple[int, int, int]] = []  # (source index, entry_start, entry_stop)

        for spec in self.specs:
            with uproot.open(spec.path) as f:
                tree, tname = find_tree(f, spec.path, spec.tree)
                self._check_branches(tree, spec.path, tname)
                n = int(tree.num_entries)
            i = len(self.sources)
            self.sources.append(
                SourceFile(
                    path=absolute(spec.path),
                    tree=tname,
                    sha256=sha256_file(spec.path) if hash_files else None,
                    n_entries=n,
                )
            )
            for start in range(0, n, self.step_size):
                self.chunks.append((i, start, min(n, start + self.step_size)))

    # -- validation -------------------------------------------------------------------------------
    def _check_branches(self, tree, path: str, tname: str) -> None:
        import uproot

        keys = set(tree.keys(recursive=True, full_paths=True)) | set(tree.keys(recursive=True))
        for name in self.branches:
            role = self.role[name]
            where = f"{role} branch {name!r} in tree {tname!r} of file {path!r}"
            if name not in keys:
                avail = sorted(tree.keys())
                shown = ", ".join(avail[:30]) + (", ..." if len(avail) > 30 else "")
                raise MissingBranchError(f"{where} does not exist (branches: {shown})")
            branch = tree[name]
            try:
                interp = branch.interpretation
            except Exception as err:  # uproot cannot interpret it at all
                raise NonNumericBranchError(
                    f"{where} cannot be read as numbers ({branch.typename}: {err})"
                ) from None
            if isinstance(interp, uproot.interpretation.jagged.AsJagged) or (
                isinstance(interp, uproot.interpretation.objects.AsObjects)
                and "vector" in str(branch.typename)
            ):
                raise JaggedBranchError(
                    f"{where} is jagged (variable length per entry, type {branch.typename}); nfhep needs "
                    "one number per entry: select an element or a summary (e.g. write a flat branch "
                    "'jet_pt0') first"
                )
            if not isinstance(interp, uproot.interpretation.numerical.Numerical):
                raise NonNumericBranchError(
                    f"{where} is not numeric (type {branch.typename}); features, context and weights "
                    "must be numbers"
                )
            dtype = np.dtype(interp.to_dtype)
            if dtype.shape != ():
                raise JaggedBranchError(
                    f"{where} is a fixed-size array {dtype.shape} per entry (type {branch.typename}); "
                    "nfhep needs one number per entry per feature"
                )
            if dtype.kind not in "biuf":
                raise NonNumericBranchError(f"{where} has dtype {dtype} ({branch.typename}), not a number")

    # -- reading ----------------------------------------------------------------------------------
    def read_chunk(self, k: int) -> tuple[dict[str, np.ndarray], int]:
        """Arrays (float64) of chunk ``k`` after the selection, and the index of its source."""
        import uproot

        i, start, stop = self.chunks[k]
        src = self.sources[i]
        with uproot.open(src.path) as f:
            tree = f[src.tree]
            try:
                arrays = tree.arrays(
                    self.branches, cut=self.cut, entry_start=start, entry_stop=stop, library="np"
                )
            except Exception as err:
                if self.cut is None:
                    raise
                raise SelectionError(
                    f"selection {self.selection!r} (evaluated as {self.cut!r}) failed on tree "
                    f"{src.tree!r} of file {src.path!r}: {type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}"
                ) from None
        out = {n: np.asarray(arrays[n], dtype=np.float64) for n in self.branches}
        return out, i

    def assemble(
        self, arrays: dict[str, np.ndarray], i: int, bad: dict[tuple[str, str, str], int]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """Stack one chunk into (x, context, weights) and count non-finite values per branch."""
        src = self.sources[i]
        n = len(arrays[self.branches[0]]) if self.branches else 0
        ok = np.ones(n, dtype=bool)
        for name in self.branches:
            finite = np.isfinite(arrays[name])
            nb = int(n - np.count_nonzero(finite))
            if nb:
                key = (src.path, src.tree, name)
                bad[key] = bad.get(key, 0) + nb
                ok &= finite
        x = np.empty((n, len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            x[:, j] = arrays[name]
        c = None
        if self.context:
            c = np.empty((n, len(self.context)), dtype=np.float64)
            for j, name in enumerate(self.context):
                c[:, j] = arrays[name]
        w = arrays[self.weights] if self.weights else None
        return x, c, w, ok

    def scan(self, progress: bool, label: str):
        """Read every chunk once, counting selected and bad (NaN/inf) rows per source file.

        Yields ``(x, context, weights, ok)`` per chunk (``ok`` marks the finite rows). After the last
        chunk raises :class:`BadValuesError` if rows were bad and ``drop_bad`` is off, then
        :class:`EmptySelectionError` if no row is left.
        """
        bad: dict = {}
        n_bad_rows = 0
        for k in _progress(range(len(self.chunks)), progress, label):
            arrays, i = self.read_chunk(k)
            x, c, w, ok = self.assemble(arrays, i, bad)
            src = self.sources[i]
            src.n_selected += len(ok)
            nb = int(len(ok) - np.count_nonzero(ok))
            n_bad_rows += nb
            if self.drop_bad:
                src.n_dropped += nb
            yield x, c, w, ok
        if n_bad_rows and not self.drop_bad:
            raise self.bad_error(bad, n_bad_rows)
        if sum(s.n_selected - s.n_dropped for s in self.sources) == 0:
            raise self.empty_error()

    def bad_error(self, bad: dict, n_bad_rows: int) -> BadValuesError:
        lines = [
            f"  file {p!r}, tree {t!r}, {self.role[b]} branch {b!r}: {c} entries are NaN or inf"
            for (p, t, b), c in sorted(bad.items())
        ]
        return BadValuesError(
            f"{n_bad_rows} rows have NaN or infinite values:\n"
            + "\n".join(lines)
            + "\nfix the input, tighten the selection, or pass drop_bad=True (CLI: --drop-bad) to drop "
            "those rows",
            counts=bad,
            n_bad_rows=n_bad_rows,
        )

    def empty_error(self) -> EmptySelectionError:
        total = sum(s.n_entries for s in self.sources)
        sel = sum(s.n_selected for s in self.sources)
        files = ", ".join(f"{s.path}:{s.tree}" for s in self.sources)
        if total == 0:
            why = "the tree(s) have no entries"
        elif sel == 0:
            why = f"the selection {self.selection!r} keeps 0 of {total} entries"
        else:
            why = f"all {sel} selected entries have NaN/inf values and were dropped"
        return EmptySelectionError(f"no entries to read from {files}: {why}")


@dataclass
class Sample:
    """Features (and optional context and weights) read from ROOT files.

    Attributes
    ----------
    x : ndarray, shape (n, D), float64
        Feature values, columns in the order of ``features``.
    context : ndarray, shape (n, C), float64, or None
    weights : ndarray, shape (n,), float64, or None
    features, context_features : tuple of str
    weight_branch, selection : str or None
    sources : list of SourceFile
        Files read with their SHA-256 and entry counts (read, selected, dropped).
    """

    x: np.ndarray
    context: np.ndarray | None
    weights: np.ndarray | None
    features: tuple[str, ...]
    context_features: tuple[str, ...] = ()
    weight_branch: str | None = None
    selection: str | None = None
    sources: list[SourceFile] = field(default_factory=list)

    @property
    def n_entries(self) -> int:
        """Number of rows kept (same protocol as :class:`RootSource`)."""
        return int(self.x.shape[0])

    @property
    def n_read(self) -> int:
        """Entries passing the selection, before dropping bad rows."""
        return sum(s.n_selected for s in self.sources)

    @property
    def n_dropped(self) -> int:
        """Rows dropped because of NaN/inf values (``drop_bad=True``)."""
        return sum(s.n_dropped for s in self.sources)

    def iter_chunks(
        self, shuffle_seed: int | None = None, *, chunk_size: int = DEFAULT_STEP_SIZE
    ) -> Iterator[dict[str, np.ndarray | None]]:
        """Yield ``{"x", "context", "weights"}`` chunks (rows permuted when ``shuffle_seed`` is set)."""
        n = self.n_entries
        order = np.random.default_rng(shuffle_seed).permutation(n) if shuffle_seed is not None else None
        for start in range(0, n, chunk_size):
            idx = order[start : start + chunk_size] if order is not None else slice(start, start + chunk_size)
            yield {
                "x": self.x[idx],
                "context": None if self.context is None else self.context[idx],
                "weights": None if self.weights is None else self.weights[idx],
            }

    def provenance(self) -> dict[str, Any]:
        """What was read, for the model file's provenance block (JSON-serialisable)."""
        return _provenance(self.sources, self.selection, self.weight_branch, self.n_entries)


def _provenance(sources, selection, weight_branch, n) -> dict[str, Any]:
    return {
        "files": [s.to_dict() for s in sources],
        "selection": selection,
        "weights": weight_branch,
        "n_entries": int(n),
        "n_dropped": int(sum(s.n_dropped for s in sources)),
    }


def _filter(x, c, w, ok):
    if ok.all():
        return x, c, w
    return x[ok], None if c is None else c[ok], None if w is None else w[ok]


def read_features(
    inputs: Inputs,
    features: str | Sequence[str],
    *,
    context: str | Sequence[str] | None = None,
    weights: str | None = None,
    selection: str | None = None,
    drop_bad: bool = False,
    step_size: int = DEFAULT_STEP_SIZE,
    hash_files: bool = True,
    progress: bool = False,
) -> Sample:
    """Read feature (and context/weight) branches from ROOT ntuples into float64 arrays.

    Parameters
    ----------
    inputs : str, path or list of them
        ``file.root`` (the tree is auto-detected when the file holds exactly one TTree),
        ``file.root:tree``, glob patterns (``data/*.root:events``) or a list of these. Files are read
        in the given order (patterns sorted).
    features : str or sequence of str
        Branch names (a comma-separated string is split), one number per entry each; integer and bool
        branches are converted to float64.
    context : str or sequence of str, optional
        Branches to condition on (conditional flows).
    weights : str, optional
        Branch of per-event weights (weighted maximum likelihood).
    selection : str, optional
        Cut expression, ROOT style (``"px > 0 && abs(py) < 2"``) or uproot style; see
        :func:`nfhep.io.selection.translate_selection`.
    drop_bad : bool
        Drop rows where any requested branch is NaN or inf (counted in ``Sample.n_dropped``) instead of
        raising :class:`BadValuesError`.
    step_size : int
        Entries read per chunk; memory for intermediate arrays is bounded by it.
    hash_files : bool
        Compute the SHA-256 of every input file (provenance of trained models).
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    Sample

    Raises
    ------
    MissingFileError, MissingTreeError, MissingBranchError, JaggedBranchError, NonNumericBranchError,
    BadValuesError, EmptySelectionError, SelectionError
        All :class:`ValueError` subclasses naming the file, tree and branch (see :mod:`nfhep.io.errors`).
    """
    plan = _Plan(
        inputs,
        features,
        context=context,
        weights=weights,
        selection=selection,
        drop_bad=drop_bad,
        step_size=step_size,
        hash_files=hash_files,
    )
    xs, cs, ws = [], [], []
    any_bad = False
    for x, c, w, ok in plan.scan(progress, "reading"):
        if plan.drop_bad:
            x, c, w = _filter(x, c, w, ok)
        elif any_bad or not ok.all():
            any_bad = True
            continue  # keep scanning to report the full count, but stop collecting
        xs.append(x)
        cs.append(c)
        ws.append(w)
    return Sample(
        x=np.concatenate(xs, axis=0),
        context=np.concatenate(cs, axis=0) if plan.context else None,
        weights=np.concatenate(ws, axis=0) if plan.weights else None,
        features=plan.features,
        context_features=plan.context,
        weight_branch=plan.weights,
        selection=plan.selection,
        sources=plan.sources,
    )


class RootSource:
    """A streamed training source over ROOT files, for inputs larger than memory.

    Implements the protocol :func:`nfhep.train.fit` accepts: ``n_entries`` and
    ``iter_chunks(shuffle_seed)`` yielding ``{"x": (m, D), "context": (m, C) or None, "weights": (m,) or
    None}`` float64 chunks. At construction every file is opened, branches are validated and one
    streaming pass counts the entries that pass the selection (and checks for NaN/inf), so errors
    surface before training starts and ``n_entries`` is exact; memory stays bounded by ``step_size``.

    Parameters are those of :func:`read_features`.

    Notes
    -----
    With a ``shuffle_seed`` the order of the chunks and the rows inside each chunk are permuted (a
    reproducible, bounded-memory approximation of a global shuffle); with ``None`` the order is the
    files' order.
    """

    def __init__(
        self,
        inputs: Inputs,
        features: str | Sequence[str],
        *,
        context: str | Sequence[str] | None = None,
        weights: str | None = None,
        selection: str | None = None,
        drop_bad: bool = False,
        step_size: int = DEFAULT_STEP_SIZE,
        hash_files: bool = True,
        progress: bool = False,
    ):
        self._plan = _Plan(
            inputs,
            features,
            context=context,
            weights=weights,
            selection=selection,
            drop_bad=drop_bad,
            step_size=step_size,
            hash_files=hash_files,
        )
        for _ in self._plan.scan(progress, "scanning"):
            pass
        self._n = sum(s.n_selected - s.n_dropped for s in self._plan.sources)

    @property
    def n_entries(self) -> int:
        """Rows the source yields per pass (after selection and dropping bad rows)."""
        return self._n

    @property
    def features(self) -> tuple[str, ...]:
        return self._plan.features

    @property
    def context_features(self) -> tuple[str, ...]:
        return self._plan.context

    @property
    def weight_branch(self) -> str | None:
        return self._plan.weights

    @property
    def sources(self) -> list[SourceFile]:
        return self._plan.sources

    @property
    def n_dropped(self) -> int:
        return sum(s.n_dropped for s in self._plan.sources)

    def iter_chunks(self, shuffle_seed: int | None = None) -> Iterator[dict[str, np.ndarray | None]]:
        """Yield the data once, chunk by chunk (see the class notes on shuffling)."""
        plan = self._plan
        order = np.arange(len(plan.chunks))
        rng = None
        if shuffle_seed is not None:
            rng = np.random.default_rng(shuffle_seed)
            order = rng.permutation(order)
        bad: dict = {}
        for k in order:
            arrays, i = plan.read_chunk(int(k))
            x, c, w, ok = plan.assemble(arrays, i, bad)
            x, c, w = _filter(x, c, w, ok)
            if len(x) == 0:
                continue
            if rng is not None:
                p = rng.permutation(len(x))
                x, c, w = x[p], None if c is None else c[p], None if w is None else w[p]
            yield {"x": x, "context": c, "weights": w}

    def read(self) -> Sample:
        """Everything in memory as a :class:`Sample` (file order)."""
        parts = list(self.iter_chunks(None))
        p = self._plan
        return Sample(
            x=np.concatenate([q["x"] for q in parts]),
            context=np.concatenate([q["context"] for q in parts]) if p.context else None,
            weights=np.concatenate([q["weights"] for q in parts]) if p.weights else None,
            features=p.features,
            context_features=p.context,
            weight_branch=p.weights,
            selection=p.selection,
            sources=p.sources,
        )

    def provenance(self) -> dict[str, Any]:
        return _provenance(self._plan.sources, self._plan.selection, self._plan.weights, self._n)

    def __repr__(self) -> str:
        return (
            f"RootSource({len(self._plan.sources)} file(s), {self._n} entries, "
            f"features={list(self._plan.features)})"
        )


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="chunk", leave=False, disable=None)
