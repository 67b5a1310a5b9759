r"""Batch evaluation of ROOT ntuples with the C++ engine: one friend file per input.

:func:`evaluate` streams each input tree in chunks with uproot, evaluates one or several model files with
:class:`nfhep.Engine` (no torch in the loop) and writes, per input file, a ROOT file holding a tree with
the same entries in the same order:

- ``<prefix>logp`` (the model's :math:`\log p(x \mid c)`, in the model's dtype) and ``<prefix>in_support``
  (bool: the event lies inside the model's bounds, log features > 0, finite) for one model;
- with several models one pair per model, ``<prefix><name>_logp`` and ``<prefix><name>_in_support``
  (``name`` from ``names=`` or the model file's stem), and with ``llr=True``
  ``<prefix>llr = <prefix><first>_logp - <prefix><second>_logp`` (float64);
- with ``full_copy=True`` the input's (flat, numeric) branches as well, instead of a friend;
- the provenance of the models as a ``TObjString`` named ``nfhep_provenance`` (a JSON document), readable
  by ROOT (``f->Get<TObjString>("nfhep_provenance")->GetString()``) and uproot (``f["nfhep_provenance"]``).

Every output is written to an anonymous file (Linux ``O_TMPFILE``: it has no name, so a killed process
leaves nothing) that is linked into place once complete; see ``docs/eval.md`` for the exact guarantees,
the file layout and the executors (local processes, dask.distributed).

Branches the models need (features and context, by name) must be one number per entry; NaN or infinite
values are an error naming the file, tree, branch and count, or with ``allow_bad=True`` give
``logp = NaN`` and ``in_support = False`` for those rows (the count is reported).
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import re
import secrets
import socket
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["evaluate", "EvalResult", "PROVENANCE_KEY", "default_names", "cleanup_stale_temporaries"]

#: Name of the TObjString holding the provenance JSON in every output file.
PROVENANCE_KEY = "nfhep_provenance"
#: Version of the provenance document's layout.
PROVENANCE_FORMAT = 1
#: Events per block of the engine's log_prob (cpp/src/flow_eval.cpp ``kChunk``): chunks start at multiples
#: of it, so every event sits where it would in one ``Engine.log_prob`` call over the whole tree and the
#: values are bitwise those of that call, whatever the step size.
ENGINE_BLOCK = 256
#: Marker in the names of the fallback (named) temporary files.
TMP_MARK = ".nfhep-tmp."

ModelArg = str | os.PathLike
Inputs = str | os.PathLike | Iterable[str | os.PathLike]

_NAME_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# ------------------------------------------------------------------------------------------------
# results and task descriptions (plain data: pickled to worker processes / dask workers)


@dataclass
class EvalResult:
    """What one input file gave.

    Attributes
    ----------
    input : str
        The input file (absolute path).
    tree : str
        The input tree (path inside the file).
    output : str
        The file written.
    out_tree : str
        The tree written (the friend tree, or the full copy).
    n_entries : int
        Entries written (= entries of the input tree).
    n_bad : int
        Rows with a NaN/inf in a branch a model needs (``allow_bad=True``: flagged, else 0).
    branches : list of str
        Branches of the output tree.
    seconds : float
        Wall time of this file (read + evaluate + write).
    """

    input: str
    tree: str
    output: str
    out_tree: str
    n_entries: int
    n_bad: int
    branches: list[str]
    seconds: float


@dataclass(frozen=True)
class _ModelInfo:
    path: str  # absolute
    name: str
    sha256: str
    checksum: str
    family: str
    dtype: str
    features: tuple[str, ...]
    context_features: tuple[str, ...]
    logp_branch: str
    support_branch: str
    members: int = 1
    std_branch: str | None = None  # an ensemble's: the standard deviation of its members' log p

    def provenance(self) -> dict[str, Any]:
        return {
            "file": os.path.basename(self.path),
            "path": self.path,
            "name": self.name,
            "sha256": self.sha256,
            "checksum": self.checksum,
            "family": self.family,
            "dtype": self.dtype,
            "features": list(self.features),
            "context_features": list(self.context_features),
            "branches": {"logp": self.logp_branch, "in_support": self.support_branch}
            | ({"logp_std": self.std_branch} if self.std_branch else {}),
            "members": self.members,
        }


@dataclass(frozen=True)
class _Task:
    input: str  # absolute
    tree: str
    output: str  # absolute
    out_tree: str
    n_entries: int
    read_branches: tuple[str, ...]  # features + context of all models (+ copied branches), unique
    copy_branches: tuple[str, ...]  # --full-copy: input branches written as they are
    copy_types: tuple[str, ...]
    llr_branch: str | None
    step_size: int
    allow_bad: bool
    compression: str | None
    overwrite: bool
    prefix: str
    roles: dict = field(hash=False, compare=False)  # branch -> "feature"/"context" (for messages)


# ------------------------------------------------------------------------------------------------
# atomic output


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove named temporary files left by killed ``nfhep eval`` runs of this host in ``directory``.

    Only the fallback path (file systems without ``O_TMPFILE``) names its temporary files:
    ``.<output name>.nfhep-tmp.<host>.<pid>.<random>``. A file is removed when it was made on this host by
    a process that no longer exists; files of live processes and of other hosts are left alone.

    Returns
    -------
    list of str
        The files removed.
    """
    removed = []
    host = socket.gethostname()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(".") or TMP_MARK not in name:
            continue
        rest = name.split(TMP_MARK, 1)[1].split(".")
        if len(rest) < 3 or not rest[-2].isdigit():
            continue
        h, pid = ".".join(rest[:-2]), int(rest[-2])
        if h != host or _pid_alive(pid):
            continue
        p = os.path.join(directory, name)
        try:
            os.unlink(p)
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


class _AtomicOutput:
    """A file that appears at ``path`` complete or not at all.

    Linux: ``open(dir, O_TMPFILE)`` creates an inode without a name (a killed process leaves nothing, the
    kernel frees it); :meth:`commit` links it into place with ``linkat(/proc/self/fd/N)``. Without
    ``overwrite`` the link fails if ``path`` exists (no race with another writer); with it the file is
    linked under a temporary name and renamed over ``path`` (between those two system calls, a kill would
    leave the named temporary, which :func:`cleanup_stale_temporaries` removes on the next run).
    Elsewhere (or with ``NFHEP_EVAL_NO_TMPFILE=1``) a named temporary file is used, removed on any error.
    """

    def __init__(self, path: str, *, overwrite: bool):
        self.path = path
        self.dir = os.path.dirname(path) or "."
        self.overwrite = overwrite
        self._fd: int | None = None  # our own descriptor of the anonymous file
        self._named: str | None = None
        self.fileobj = None

    def _temp_name(self) -> str:
        base = os.path.basename(self.path)
        return os.path.join(
            self.dir, f".{base}{TMP_MARK}{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        )

    def open(self):
        if not os.path.isdir(self.dir):
            raise FileNotFoundError(f"output directory {self.dir!r} does not exist")
        if not os.environ.get("NFHEP_EVAL_NO_TMPFILE") and hasattr(os, "O_TMPFILE"):
            try:
                fd = os.open(self.dir, os.O_TMPFILE | os.O_RDWR, 0o666)
            except OSError:  # file system without O_TMPFILE (EOPNOTSUPP, EISDIR on old kernels...)
                fd = None
            if fd is not None:
                self._fd = os.dup(fd)  # uproot closes the file object it is given; keep one for linking
                self.fileobj = os.fdopen(fd, "w+b")
                return self.fileobj
        self._named = self._temp_name()
        self.fileobj = open(self._named, "x+b")
        return self.fileobj

    def commit(self) -> None:
        if self.fileobj is not None and not self.fileobj.closed:
            self.fileobj.close()
        if self._fd is not None:
            os.fsync(self._fd)
            proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                if self.overwrite:
                    tmp = self._temp_name()
                    os.link(str(self._fd), tmp, src_dir_fd=proc, follow_symlinks=True)
                    try:
                        os.replace(tmp, self.path)
                    except BaseException:
                        os.unlink(tmp)
                        raise
                else:
                    try:
                        os.link(str(self._fd), self.path, src_dir_fd=proc, follow_symlinks=True)
                    except FileExistsError:
                        raise FileExistsError(
                            f"output {self.path!r} appeared while it was being written (another run?); "
                            "nothing was overwritten (pass overwrite=True / --overwrite to replace it)"
                        ) from None
            finally:
                os.close(proc)
                os.close(self._fd)
                self._fd = None
            return
        assert self._named is not None
        if not self.overwrite and os.path.exists(self.path):
            self.abort()
            raise FileExistsError(f"output {self.path!r} appeared while it was being written (another run?)")
        os.replace(self._named, self.path)
        self._named = None

    def abort(self) -> None:
        if self.fileobj is not None and not self.fileobj.closed:
            try:
                self.fileobj.close()
            except Exception:
                pass
        if self._fd is not None:
            os.close(self._fd)  # the anonymous inode is freed with its last descriptor
            self._fd = None
        if self._named is not None:
            try:
                os.unlink(self._named)
            except FileNotFoundError:
                pass
            self._named = None


# ------------------------------------------------------------------------------------------------
# engines, loaded once per process


_ENGINES: dict[tuple[str, str], Any] = {}
_ENGINE_LOCK = threading.Lock()


def _engine(info: _ModelInfo):
    key = (info.path, info.sha256)
    with _ENGINE_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            from .engine import Engine
            from .io.inputs import sha256_file

            if not os.path.isfile(info.path):
                raise FileNotFoundError(
                    f"model file {info.path!r} is not readable on this worker ({socket.gethostname()}); "
                    "model files must be on a file system the workers share"
                )
            digest = sha256_file(info.path)
            if digest != info.sha256:
                raise ValueError(
                    f"model file {info.path!r} on {socket.gethostname()} has sha256 {digest}, not "
                    f"{info.sha256} as when the run was planned (the file changed, or workers see another "
                    "file)"
                )
            eng = Engine(info.path)
            _ENGINES[key] = eng
    return eng


# ------------------------------------------------------------------------------------------------
# one input file


def _rebuild_bad_values(message: str, counts: dict, n_bad_rows: int):
    from .io.errors import BadValuesError

    return BadValuesError(message, counts=counts, n_bad_rows=n_bad_rows)


def _bad_values_class():
    from .io.errors import BadValuesError

    class _BadValuesError(BadValuesError):
        """A BadValuesError that pickles (it crosses from worker processes): arrives as a BadValuesError."""

        def __reduce__(self):
            return (_rebuild_bad_values, (str(self), self.counts, self.n_bad_rows))

    return _BadValuesError


def _BadValuesError(message: str, *, counts: dict, n_bad_rows: int):
    return _bad_values_class()(message, counts=counts, n_bad_rows=n_bad_rows)


def _prefetch(iterator, depth: int = 2):
    """Run ``iterator`` in a background thread (uproot's decompression overlaps the engine's compute)."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as err:  # handed to the consumer
            q.put((False, err))

    t = threading.Thread(target=work, name="nfhep-eval-reader", daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        t.join()


def _nonfinite(arrays: dict[str, np.ndarray], names: Sequence[str], counts: dict[str, int]) -> dict:
    """``{branch: mask of NaN/inf rows}`` for the float branches of ``names`` that have any (counted)."""
    masks = {}
    for name in names:
        a = arrays[name]
        if a.dtype.kind != "f":
            continue
        fin = np.isfinite(a)
        if not fin.all():
            counts[name] = counts.get(name, 0) + int(fin.size - np.count_nonzero(fin))
            masks[name] = ~fin
    return masks


def _rows(masks: dict, names: Sequence[str]) -> np.ndarray | None:
    """Rows with a NaN/inf in any of ``names`` (None when there are none)."""
    bad = None
    for name in names:
        m = masks.get(name)
        if m is not None:
            bad = m if bad is None else (bad | m)
    return bad


def _columns(arrays: dict[str, np.ndarray], names: Sequence[str], dtype: np.dtype, n: int) -> np.ndarray:
    out = np.empty((n, len(names)), dtype=dtype)
    for j, name in enumerate(names):
        out[:, j] = arrays[name]
    return out


def _run_task(task: _Task, models: Sequence[_ModelInfo], report: Callable[[int], None] | None) -> EvalResult:
    import uproot

    from . import __version__
    from .io.writer import parse_compression

    t0 = time.perf_counter()
    engines = [_engine(m) for m in models]
    types_out: dict[str, Any] = {}
    for name, typ in zip(task.copy_branches, task.copy_types, strict=True):
        types_out[name] = np.dtype(typ)
    for m in models:
        types_out[m.logp_branch] = np.dtype(m.dtype)
        types_out[m.support_branch] = np.dtype(np.bool_)
        if m.std_branch:
            types_out[m.std_branch] = np.dtype(m.dtype)
    if task.llr_branch:
        types_out[task.llr_branch] = np.dtype(np.float64)

    needed = [list(m.features) + list(m.context_features) for m in models]
    needed_all = list(dict.fromkeys(b for names in needed for b in names))
    counts: dict[str, int] = {}
    n_bad = 0
    n_done = 0
    failed = False
    out = _AtomicOutput(task.output, overwrite=task.overwrite)
    fh = out.open()
    try:
        with uproot.open(task.input) as fin:
            tree = fin[task.tree]
            wfile = uproot.recreate(fh, compression=parse_compression(task.compression))
            wfile.mktree(task.out_tree, types_out, title=f"nfhep eval of {task.tree}")
            chunks = tree.iterate(list(task.read_branches), step_size=task.step_size, library="np")
            for arrays in _prefetch(chunks):
                n = len(arrays[task.read_branches[0]])
                masks = _nonfinite(arrays, needed_all, counts)
                bads = [_rows(masks, names) for names in needed]
                any_bad = None
                for b in bads:
                    if b is not None:
                        any_bad = b if any_bad is None else (any_bad | b)
                nb = 0 if any_bad is None else int(np.count_nonzero(any_bad))
                n_bad += nb
                if nb and not task.allow_bad:
                    failed = True
                if failed:  # keep scanning to report the full count, write nothing more
                    n_done += n
                    if report is not None:
                        report(n)
                    continue
                chunk: dict[str, np.ndarray] = {}
                for name in task.copy_branches:
                    chunk[name] = np.ascontiguousarray(arrays[name], dtype=types_out[name])
                lps = []
                for m, eng, bad in zip(models, engines, bads, strict=True):
                    dt = np.dtype(m.dtype)
                    x = _columns(arrays, m.features, dt, n)
                    c = _columns(arrays, m.context_features, dt, n) if m.context_features else None
                    if m.std_branch:  # one pass gives log p and every member's
                        each, lp = eng.log_prob_members(x, c, return_log_prob=True)
                        with np.errstate(invalid="ignore"):
                            sd = each.astype(np.float64).std(axis=1).astype(each.dtype)
                    else:
                        lp = eng.log_prob(x, c)
                    sup = eng.in_support(x)
                    if bad is not None:
                        lp[bad] = np.nan
                        sup[bad] = False
                    if m.std_branch:
                        sd[~np.isfinite(lp)] = np.nan
                        chunk[m.std_branch] = sd
                    chunk[m.logp_branch] = lp
                    chunk[m.support_branch] = sup
                    lps.append(lp)
                if task.llr_branch:
                    chunk[task.llr_branch] = lps[0].astype(np.float64) - lps[1].astype(np.float64)
                wfile[task.out_tree].extend(chunk)
                n_done += n
                if report is not None:
                    report(n)
            if n_done != task.n_entries:
                raise RuntimeError(
                    f"read {n_done} entries of tree {task.tree!r} in {task.input!r}, expected "
                    f"{task.n_entries}"
                )
            if failed:
                lines = [
                    f"  file {task.input!r}, tree {task.tree!r}, {task.roles.get(b, 'feature')} branch "
                    f"{b!r}: {c} entries are NaN or inf"
                    for b, c in sorted(counts.items())
                ]
                raise _BadValuesError(
                    f"{n_bad} of {task.n_entries} entries have NaN or infinite values:\n"
                    + "\n".join(lines)
                    + "\nno output was written; fix the input or pass allow_bad=True (CLI: --allow-bad) to "
                    "write logp = NaN and in_support = false for those entries",
                    counts={(task.input, task.tree, b): c for b, c in counts.items()},
                    n_bad_rows=n_bad,
                )
            prov = {
                "format": PROVENANCE_FORMAT,
                "nfhep_version": __version__,
                "input": {"file": task.input, "tree": task.tree, "n_entries": task.n_entries},
                "tree": task.out_tree,
                "kind": "full-copy" if task.copy_branches else "friend",
                "prefix": task.prefix,
                "models": [m.provenance() for m in models],
                "llr": (
                    {"branch": task.llr_branch, "numerator": models[0].name, "denominator": models[1].name}
                    if task.llr_branch
                    else None
                ),
                "n_bad": n_bad,
                "bad_values": "logp = NaN, in_support = false",
                "compression": task.compression,
                "step_size": task.step_size,
            }
            wfile[PROVENANCE_KEY] = json.dumps(prov, sort_keys=True, indent=1)
            wfile.close()
        out.commit()
    except BaseException:
        out.abort()
        raise
    return EvalResult(
        input=task.input,
        tree=task.tree,
        output=task.output,
        out_tree=task.out_tree,
        n_entries=n_done,
        n_bad=n_bad,
        branches=list(types_out),
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------------
# executors: worker-side entry points (module level, so they pickle by reference)

_WORKER: dict[str, Any] = {}


def _worker_init(models: Sequence[_ModelInfo], threads: int | None, progress_queue) -> None:
    from . import set_num_threads

    if threads is not None:
        set_num_threads(int(threads))
    for m in models:  # once per worker process
        _engine(m)
    _WORKER["queue"] = progress_queue


def _portable(err: BaseException) -> BaseException:
    """The exception itself if it survives pickling (to the parent process), else a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def _process_task(task: _Task, models: Sequence[_ModelInfo]) -> EvalResult:
    q = _WORKER.get("queue")
    try:
        return _run_task(task, models, (lambda n: q.put(n)) if q is not None else None)
    except BaseException as err:
        portable = _portable(err)
        if portable is err:
            raise
        raise portable from None


def _dask_task(
    task: _Task, models: Sequence[_ModelInfo], threads: int | None, abort: str | None = None
) -> EvalResult | None:
    from . import set_num_threads

    if abort is not None:
        import distributed

        if distributed.Event(abort).is_set():  # another task failed: do not start (no output)
            return None
    if threads is not None:
        set_num_threads(int(threads))
    try:
        return _run_task(task, models, None)
    except BaseException as err:
        portable = _portable(err)
        if portable is err:
            raise
        raise portable from None


# ------------------------------------------------------------------------------------------------
# planning


def default_names(paths: Sequence[str]) -> list[str]:
    """Branch-name parts of models: the file's stem with every character outside ``[A-Za-z0-9_]`` as
    ``_`` (and a leading ``_`` before a digit): ``sig-v2.safetensors`` -> ``sig_v2``."""
    out = []
    for p in paths:
        stem = Path(p).name.split(".")[0] or "model"
        s = re.sub(r"[^A-Za-z0-9_]", "_", stem)
        out.append("_" + s if s[0].isdigit() else s)
    return out


def _describe_type(branch) -> str:
    return str(getattr(branch, "typename", "?"))


def _copy_types(tree, path: str, tname: str, exclude: set[str]) -> tuple[list[str], list[str]]:
    """Branches of ``tree`` for a full copy: all top-level branches, each flat and numeric."""
    import uproot

    names, dtypes = [], []
    for name in tree.keys(recursive=False):
        branch = tree[name]
        where = f"branch {name!r} of tree {tname!r} in file {path!r}"
        try:
            interp = branch.interpretation
        except Exception:
            interp = None
        ok = isinstance(interp, uproot.interpretation.numerical.AsDtype) and not isinstance(
            interp, uproot.interpretation.jagged.AsJagged
        )
        if ok:
            dt = np.dtype(interp.to_dtype)
            ok = dt.shape == () and dt.kind in "biuf"
        if not ok:
            raise ValueError(
                f"full copy: {where} is not one number per entry (type {_describe_type(branch)}); "
                "--full-copy copies flat numeric branches only: write a friend tree instead (the default)"
            )
        if name in exclude:
            raise ValueError(f"full copy: {where} has the name of an output branch; choose another --prefix")
        names.append(name)
        dtypes.append(dt.newbyteorder("=").str)
    return names, dtypes


def _output_paths(specs, output, full_copy: bool) -> list[str]:
    stems = [
        Path(s.path).name.rsplit(".", 1)[0] if "." in Path(s.path).name else Path(s.path).name for s in specs
    ]
    names = [f"{stem}_nf.root" for stem in stems]
    if output is None:
        outs = [
            os.path.join(os.path.dirname(os.path.abspath(s.path)), n)
            for s, n in zip(specs, names, strict=True)
        ]
    else:
        o = os.fspath(output)
        is_dir = os.path.isdir(o) or o.endswith(os.sep) or not o.lower().endswith(".root")
        if is_dir:
            if not os.path.isdir(o):
                raise FileNotFoundError(
                    f"output directory {o!r} does not exist (an output FILE must end in .root)"
                )
            outs = [os.path.join(os.path.abspath(o), n) for n in names]
        else:
            if len(specs) != 1:
                raise ValueError(
                    f"output {o!r} is a file but there are {len(specs)} inputs; give a directory "
                    "(-o DIR) for several inputs"
                )
            outs = [os.path.abspath(o)]
    seen: dict[str, str] = {}
    for s, out in zip(specs, outs, strict=True):
        if out in seen:
            raise ValueError(
                f"inputs {seen[out]!r} and {s.path!r} would both be written to {out!r}; evaluate them into "
                "different output directories"
            )
        seen[out] = s.path
        if os.path.abspath(s.path) == out:
            raise ValueError(f"output {out!r} is the input file itself")
    return outs


def _check_branch_name(name: str, what: str) -> None:
    if not _NAME_OK.match(name):
        raise ValueError(
            f"{what} {name!r} is not a valid branch name (letters, digits, '_'; not a digit first)"
        )


def _plan(
    models: Sequence[ModelArg],
    inputs: Inputs,
    *,
    tree: str | None,
    output,
    out_tree: str | None,
    prefix: str,
    names: Sequence[str] | None,
    llr: bool,
    full_copy: bool,
    step_size: int,
    overwrite: bool,
    allow_bad: bool,
    compression: str | None,
) -> tuple[list[_ModelInfo], list[_Task], dict[tuple[str, str], Any]]:
    import uproot

    from .engine import Engine
    from .io.inputs import InputSpec, find_tree, resolve_inputs, sha256_file
    from .io.reader import _Plan
    from .io.writer import parse_compression

    if not isinstance(step_size, (int, np.integer)) or isinstance(step_size, bool) or step_size < 1:
        raise ValueError(f"step_size must be a positive int, got {step_size!r}")
    parse_compression(compression)  # validate early
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not models:
        raise ValueError("no model given")
    paths = [os.path.abspath(os.fspath(m)) for m in models]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"model file {p!r} does not exist")
    if len(set(paths)) != len(paths):
        raise ValueError("the same model file is given twice")
    named = names is not None
    if names is not None:
        if isinstance(names, str):
            names = [names]
        names = list(names)
        for n in names:
            if not isinstance(n, str) or not _NAME_OK.match(n):
                raise ValueError(f"model name {n!r} must be letters, digits and '_' (not a digit first)")
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} names given for {len(paths)} models")
    else:
        names = default_names(paths)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"models get the same branch name(s) {', '.join(dup)} (from their file names); name them with "
            "names=[...] (CLI: --name A --name B)"
        )
    if llr and len(paths) < 2:
        raise ValueError("llr needs two models (the log-likelihood ratio of the first over the second)")

    engines: dict[tuple[str, str], Any] = {}
    infos = []
    for p, name in zip(paths, names, strict=True):
        digest = sha256_file(p)
        eng = Engine(p)
        engines[(p, digest)] = eng
        if len(paths) == 1 and not named:
            logp, sup = f"{prefix}logp", f"{prefix}in_support"
        else:
            logp, sup = f"{prefix}{name}_logp", f"{prefix}{name}_in_support"
        infos.append(
            _ModelInfo(
                path=p,
                name=name,
                sha256=digest,
                checksum=eng.checksum,
                family=eng.family,
                dtype=eng.dtype,
                features=tuple(eng.features),
                context_features=tuple(eng.context_features),
                logp_branch=logp,
                support_branch=sup,
                members=eng.members,
                std_branch=f"{logp}_std" if eng.members > 1 else None,
            )
        )
    llr_branch = f"{prefix}llr" if llr else None
    out_names = [
        b for m in infos for b in (m.logp_branch, m.support_branch, m.std_branch) if b is not None
    ] + ([llr_branch] if llr else [])
    for b in out_names:
        _check_branch_name(b, "output branch")
    if len(set(out_names)) != len(out_names):
        raise ValueError(f"output branch names collide: {out_names}; choose other model names or --prefix")

    feats: list[str] = []
    ctx: list[str] = []
    for m in infos:
        feats += [f for f in m.features if f not in feats]
    for m in infos:
        ctx += [c for c in m.context_features if c not in feats and c not in ctx]
    roles = {f: "feature" for f in feats} | {c: "context" for c in ctx}

    specs = resolve_inputs(inputs)
    if tree is not None:
        specs = [InputSpec(s.path, s.tree or tree) for s in specs]
    outs = _output_paths(specs, output, full_copy)
    if not overwrite:
        for o in outs:
            if os.path.exists(o):
                raise FileExistsError(
                    f"output {o!r} exists; pass overwrite=True (CLI: --overwrite) to replace it"
                )
    for d in sorted({os.path.dirname(o) for o in outs}):
        cleanup_stale_temporaries(d)

    tasks = []
    for spec, out in zip(specs, outs, strict=True):
        with uproot.open(spec.path) as f:
            t, tname = find_tree(f, spec.path, spec.tree)
            n = int(t.num_entries)
            copy_names: list[str] = []
            copy_types: list[str] = []
            if full_copy:
                copy_names, copy_types = _copy_types(t, spec.path, tname, set(out_names))
        # branch validation (missing, jagged, non-numeric) with nfhep.io's messages
        _Plan(
            spec.path if spec.tree is None else f"{spec.path}:{tname}",
            feats,
            context=ctx or None,
            weights=None,
            selection=None,
            drop_bad=False,
            step_size=step_size,
            hash_files=False,
        )
        read = list(copy_names) + [b for b in feats + ctx if b not in copy_names]
        tasks.append(
            _Task(
                input=os.path.abspath(spec.path),
                tree=tname,
                output=out,
                out_tree=out_tree
                or (tname.rsplit("/", 1)[-1] if full_copy else f"{tname.rsplit('/', 1)[-1]}_nf"),
                n_entries=n,
                read_branches=tuple(read),
                copy_branches=tuple(copy_names),
                copy_types=tuple(copy_types),
                llr_branch=llr_branch,
                step_size=-(-int(step_size) // ENGINE_BLOCK) * ENGINE_BLOCK,
                allow_bad=bool(allow_bad),
                compression=compression,
                overwrite=bool(overwrite),
                prefix=prefix,
                roles=roles,
            )
        )
    if out_tree is not None:
        _check_branch_name(out_tree, "output tree")
    return infos, tasks, engines


# ------------------------------------------------------------------------------------------------
# the public function


def evaluate(
    models: ModelArg | Sequence[ModelArg],
    inputs: Inputs,
    *,
    tree: str | None = None,
    output: str | os.PathLike | None = None,
    out_tree: str | None = None,
    prefix: str = "nf_",
    names: Sequence[str] | None = None,
    llr: bool = False,
    full_copy: bool = False,
    step_size: int = 100_000,
    overwrite: bool = False,
    allow_bad: bool = False,
    compression: str | None = "zstd1",
    executor: str = "processes",
    workers: int | None = None,
    threads: int | None = None,
    scheduler: Any = None,
    progress: bool = False,
) -> list[EvalResult]:
    r"""Evaluate model files on ROOT ntuples and write one friend file per input.

    For each entry :math:`i` of each input tree the output tree holds :math:`\log p(x_i \mid c_i)` of every
    model (computed by :class:`nfhep.Engine` from the branches named like the model's features and context
    features) and whether :math:`x_i` lies in the model's support, in the input's entry order.

    Parameters
    ----------
    models : path or sequence of paths
        Model files (``.safetensors``). Several models give one pair of branches each.
    inputs : str, path or list of them
        ``file.root``, ``file.root:tree``, glob patterns (sorted); see :func:`nfhep.io.resolve_inputs`.
    tree : str, optional
        Tree for inputs that do not name one (default: the file's only TTree).
    output : path, optional
        A directory (one ``<input stem>_nf.root`` per input; must exist), or a ``.root`` file for a single
        input. Default: next to each input.
    out_tree : str, optional
        Output tree name; default ``<tree>_nf`` (friend) or ``<tree>`` (``full_copy``), ``<tree>`` without
        the directory part.
    prefix : str
        Prefix of the new branches (default ``"nf_"``).
    names : sequence of str, optional
        Names of the models in branch names; default: their file stems (see :func:`default_names`). With
        one model and no name: ``<prefix>logp`` and ``<prefix>in_support``; else
        ``<prefix><name>_logp`` and ``<prefix><name>_in_support``. Collisions are refused.
    llr : bool
        Also write ``<prefix>llr`` = logp of the first model minus logp of the second (float64).
    full_copy : bool
        Write the input's branches (flat, numeric) plus the new ones, instead of a friend.
    step_size : int
        Entries per chunk (memory is bounded by it), rounded up to a multiple of 256 (the engine's block,
        :data:`ENGINE_BLOCK`): the values are then bitwise those of one ``Engine.log_prob`` call over the
        whole tree, whatever the step size, executor, workers or threads.
    overwrite : bool
        Replace existing outputs (default: refuse before any work).
    allow_bad : bool
        Rows with a NaN/inf in a needed branch get ``logp = NaN`` and ``in_support = False`` (counted in
        :attr:`EvalResult.n_bad`) instead of an error.
    compression : str or None
        ``"zstd1"`` (default), see :func:`nfhep.io.parse_compression`.
    executor : {"processes", "serial", "dask"}
        ``"processes"``: a local pool of ``workers`` processes, one task per input file, each model loaded
        once per worker (``workers=1``: in this process, like ``"serial"``). ``"dask"``: tasks on a
        ``dask.distributed`` cluster (``scheduler``: an address like ``"tcp://host:8786"`` or a
        ``distributed.Client``); inputs, outputs and model files must be on a file system the workers share.
    workers : int, optional
        Processes of the local pool (default: ``min(#inputs, #CPUs)``).
    threads : int, optional
        nfhep threads per task (default: ``#CPUs // workers`` for processes; 1 on dask, whose workers
        run ``nthreads`` tasks each; the engine's default for serial).
    progress : bool
        A progress bar over events (events/s).

    Returns
    -------
    list of EvalResult
        One per input, in input order.

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is off (checked before any work).
    nfhep.io.RootInputError
        Missing file/tree/branch, a jagged or non-numeric branch, or NaN/inf values (``BadValuesError``,
        naming file, tree, branch and count); no output of that file is written.

    Notes
    -----
    Each output appears complete or not at all. If a file fails, the run stops, the outputs this run
    created are removed (outputs that replaced an existing file under ``overwrite`` are kept: they are
    complete), and the error is raised. See ``docs/eval.md``.
    """
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    models = list(models)
    if executor not in ("processes", "serial", "dask"):
        raise ValueError(f"executor must be 'processes', 'serial' or 'dask', got {executor!r}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if executor == "dask" and scheduler is None:
        raise ValueError(
            "executor 'dask' needs a scheduler: an address (tcp://host:8786) or a distributed.Client"
        )
    infos, tasks, engines = _plan(
        models,
        inputs,
        tree=tree,
        output=output,
        out_tree=out_tree,
        prefix=prefix,
        names=names,
        llr=llr,
        full_copy=full_copy,
        step_size=step_size,
        overwrite=overwrite,
        allow_bad=allow_bad,
        compression=compression,
    )
    existed = {t.output for t in tasks if os.path.exists(t.output)}
    total = sum(t.n_entries for t in tasks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="nfhep eval", unit="ev", unit_scale=True, disable=None)
    done: list[EvalResult | None] = [None] * len(tasks)
    try:
        if executor == "dask":
            _run_dask(tasks, infos, scheduler, threads, done, bar)
        else:
            ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            nw = 1 if executor == "serial" else (workers or min(len(tasks), ncpu))
            if nw <= 1 or len(tasks) == 1:
                _run_serial(tasks, infos, engines, threads, done, bar)
            else:
                _run_processes(tasks, infos, nw, threads or max(1, ncpu // nw), done, bar)
    except BaseException:
        for r in done:
            if r is not None and r.output not in existed:
                try:
                    os.unlink(r.output)
                except FileNotFoundError:
                    pass
        raise
    finally:
        if bar is not None:
            bar.close()
    return [r for r in done if r is not None]


def _run_serial(tasks, infos, engines, threads, done, bar) -> None:
    from . import get_num_threads, set_num_threads

    with _ENGINE_LOCK:
        _ENGINES.update(engines)  # loaded while planning: not again
    before = get_num_threads()
    if threads is not None:
        set_num_threads(threads)
    try:
        for i, task in enumerate(tasks):
            done[i] = _run_task(task, infos, bar.update if bar is not None else None)
    finally:
        set_num_threads(before)


def _run_processes(tasks, infos, nw, threads, done, bar) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # no fork of a process that runs threads (OpenBLAS, readers)
    q = ctx.Queue() if bar is not None else None
    with ProcessPoolExecutor(
        max_workers=nw, mp_context=ctx, initializer=_worker_init, initargs=(infos, threads, q)
    ) as pool:
        futs = {pool.submit(_process_task, t, infos): i for i, t in enumerate(tasks)}
        pending = set(futs)
        error = None
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            _drain(q, bar)
            for f in finished:
                err = f.exception()
                if err is not None:
                    error = error or err
                else:
                    done[futs[f]] = f.result()
            if error is not None:
                for f in pending:
                    f.cancel()
                for f in pending:  # let running ones end (their outputs are removed by the caller)
                    if not f.cancelled():
                        try:
                            done[futs[f]] = f.result()
                        except BaseException:
                            pass
                raise error
        _drain(q, bar)


def _drain(q, bar) -> None:
    if q is None or bar is None:
        return
    while True:
        try:
            bar.update(q.get_nowait())
        except queue.Empty:
            return


def _run_dask(tasks, infos, scheduler, threads, done, bar) -> None:
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            f"executor 'dask' needs dask.distributed ({err}); install it with "
            '`pip install "dask[distributed]"` (see docs/eval.md)'
        ) from None
    own = None
    if scheduler is None:
        raise ValueError(
            "executor 'dask' needs a scheduler: an address (tcp://host:8786) or a distributed.Client"
        )
    if isinstance(scheduler, distributed.Client):
        client = scheduler
    elif isinstance(scheduler, str):
        own = client = distributed.Client(scheduler)
    else:
        raise TypeError(
            f"scheduler must be an address (str) or a distributed.Client, got {type(scheduler).__name__}"
        )
    # A failure sets a cluster-wide Event that tasks check before they start, and the remaining
    # futures are waited for, not cancelled: cancelling cannot stop a task already running on a worker,
    # which would then link its output after this call had cleaned up. Every output a task did write is
    # recorded in ``done`` and removed by the caller.
    abort_name = f"nfhep-eval-abort-{uuid.uuid4().hex}"
    abort = distributed.Event(abort_name, client=client)
    try:
        futs = [
            client.submit(_dask_task, t, infos, threads if threads is not None else 1, abort_name, pure=False)
            for t in tasks
        ]
        index = {f.key: i for i, f in enumerate(futs)}
        error = None
        for f in distributed.as_completed(futs):
            try:
                r = f.result()
            except BaseException as err:
                if error is None:
                    error = err
                    abort.set()
                continue
            if r is None:
                continue
            done[index[f.key]] = r
            if bar is not None:
                bar.update(r.n_entries)
        if error is not None:
            raise error
    finally:
        try:
            abort.clear()  # frees the scheduler's state for this name
        except Exception:
            pass
        if own is not None:
            own.close()


class _CallableModule(types.ModuleType):
    """``nfhep.evaluate`` is both this module and the function: importing the module (as pickled task
    functions do on workers) replaces the package attribute, so the module forwards calls."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
