r"""Data-parallel training over ``torch.distributed``: process launch, rank/world helpers, data sharding.

:func:`nfhep.train.fit` with ``distributed=True`` trains one replica of the model per process ("rank");
every rank sees only its share of the data and the gradients are summed over the ranks before each
optimiser step, so the replicas stay identical. The loss of a step is normalised by the *global* weight
sum of the step's batch:

.. math::

    \nabla L = \sum_r \nabla\Bigl(-\frac{\sum_{i \in B_r} w_i \log p(x_i)}{\sum_{r'} \sum_{i \in B_{r'}} w_i}
    \Bigr) = \nabla\Bigl(-\frac{\sum_{i \in B} w_i \log p(x_i)}{\sum_{i \in B} w_i}\Bigr),
    \qquad B = \bigcup_r B_r,

which is exactly the single-process gradient of the concatenated batch :math:`B` (up to the order of the
floating-point sums), with or without event weights. (Averaging per-rank gradients, as
``DistributedDataParallel`` does, would instead weight each rank equally whatever its weight sum.)

Launch: ``nfhep train --nproc N`` starts N local worker processes itself (:func:`launch`, one free TCP
port on 127.0.0.1), or run under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT`` from the environment, read by :func:`env_world`). Backend: ``gloo`` on
CPU; ``nccl`` is selected for CUDA devices, which is untested here (no GPU on the development machine).
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT",
    "World",
    "env_world",
    "init_from_env",
    "launch",
    "free_port",
    "shard_rows",
    "iter_chunk_shard",
    "Comm",
]

#: Seconds a collective may wait for the other ranks before failing (env ``NFHEP_DIST_TIMEOUT``).
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` in ``0..size-1``, ``local_rank`` on this node."""

    rank: int
    size: int
    local_rank: int


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    v = env.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def env_world(env: Mapping[str, str] | None = None) -> World | None:
    """The ``World`` described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun), or None if unset.

    Raises ``ValueError`` for inconsistent values (e.g. ``RANK`` without ``WORLD_SIZE``, a rank outside
    ``0..WORLD_SIZE-1``).
    """
    env = os.environ if env is None else env
    rank, size, local = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"), _env_int(env, "LOCAL_RANK")
    if rank is None and size is None:
        return None
    if rank is None or size is None:
        raise ValueError("distributed launch: RANK and WORLD_SIZE must both be set (as torchrun does)")
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"distributed launch: RANK={rank} must be in 0..WORLD_SIZE-1 (WORLD_SIZE={size})")
    return World(rank, size, rank if local is None else local)


def _timeout(timeout: float | None) -> datetime.timedelta:
    if timeout is None:
        timeout = float(os.environ.get("NFHEP_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if not timeout > 0:
        raise ValueError(f"distributed timeout must be > 0 seconds, got {timeout}")
    return datetime.timedelta(seconds=float(timeout))


def init_from_env(*, backend: str | None = None, timeout: float | None = None) -> World:
    """Join the process group described by the environment (``env://`` rendezvous).

    ``backend`` defaults to ``gloo`` (CPU). ``timeout`` (seconds; default ``NFHEP_DIST_TIMEOUT`` or
    :data:`DEFAULT_TIMEOUT`) bounds every collective, so a rank that died does not hang the others.
    """
    w = env_world()
    if w is None:
        raise ValueError("distributed launch: RANK/WORLD_SIZE are not set (use --nproc N or torchrun)")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(f"distributed launch: environment variable {name} is not set")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend or "gloo", rank=w.rank, world_size=w.size, timeout=_timeout(timeout)
        )
    return w


def leave(*, ok: bool = True) -> None:
    """Leave the process group: every rank first meets at a barrier (when ``ok``), then destroys it.

    Without the barrier a rank that finished first tears down its end of the gloo connections (and rank 0
    the rendezvous store) while a slower rank is still inside its last collective or its own teardown.
    After a failure (``ok=False``) there is no barrier, as the other ranks may be gone; the group is
    only destroyed. A no-op when no process group is initialised.
    """
    if not dist.is_initialized():
        return
    try:
        if ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    nproc: int,
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    poll: float = 0.05,
    err=None,
) -> int:
    """Run ``command`` as ``nproc`` local ranks (``RANK``, ``WORLD_SIZE``, ``MASTER_*`` set); return a code.

    Threads are split between the ranks (``OMP_NUM_THREADS``/``NFHEP_NUM_THREADS`` = cores // nproc,
    at least 1, unless already set). When a rank exits with a non-zero code the other ranks are
    terminated (SIGTERM, then SIGKILL after 5 s), a message naming the rank is printed to ``err``
    (stderr) and that code is returned; 0 when every rank succeeded.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be a positive integer, got {nproc!r}")
    err = sys.stderr if err is None else err
    base = dict(os.environ if env is None else env)
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc))
    base["LOCAL_WORLD_SIZE"] = str(nproc)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    base.setdefault("OMP_NUM_THREADS", threads)
    base.setdefault("NFHEP_NUM_THREADS", threads)
    # the children import the same nfhep as this process
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in [base.get("PYTHONPATH", "")] if p])
    procs: list[subprocess.Popen] = []
    try:
        for r in range(nproc):
            e = dict(base, RANK=str(r), LOCAL_RANK=str(r))
            procs.append(subprocess.Popen(list(command), env=e))
        while True:
            codes = [p.poll() for p in procs]
            bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                r, c = bad[0]
                print(
                    f"nfhep: rank {r} of {nproc} failed (exit code {c}); stopping the other ranks",
                    file=err,
                )
                return int(c) if c > 0 else 128 - int(c)
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll)
    finally:
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for p in alive:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- sharding -------------------------------------------------------------------------------------------
def shard_rows(n: int, rank: int, size: int) -> slice:
    """Rows ``[start, stop)`` of rank ``rank``: contiguous blocks, sizes differing by at most one
    (the first ``n % size`` ranks get one more row), the same as ``np.array_split``."""
    if not 0 <= rank < size:
        raise ValueError(f"shard_rows: rank {rank} outside 0..{size - 1}")
    q, m = divmod(int(n), int(size))
    start = rank * q + min(rank, m)
    return slice(start, start + q + (1 if rank < m else 0))


def iter_chunk_shard(source: Any, rank: int, size: int) -> Iterator[tuple[int, dict]]:
    """Yield ``(k, chunk)`` for the chunks ``k`` with ``k % size == rank`` of a streamed source.

    For an :class:`nfhep.io.RootSource` only those chunks are read from disk (``k`` counts the read
    plan's chunks, empty chunks after the selection included); for any other source with
    ``iter_chunks`` all chunks are iterated and the others skipped (``k`` counts yielded chunks).
    """
    from .io.reader import RootSource, _filter

    if isinstance(source, RootSource):
        plan = source._plan
        bad: dict = {}
        for k in range(rank, len(plan.chunks), size):
            arrays, i = plan.read_chunk(k)
            x, c, w, ok = plan.assemble(arrays, i, bad)
            x, c, w = _filter(x, c, w, ok)
            yield k, {"x": x, "context": c, "weights": w}
        return
    for k, ch in enumerate(source.iter_chunks(None)):
        if k % size == rank:
            yield k, ch


# -- collectives used by the training loop ----------------------------------------------------------------
class Comm:
    """The collectives :func:`nfhep.train.fit` needs, over the default process group."""

    def __init__(self) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                "nfhep.train.fit: distributed=True needs an initialised torch.distributed process group "
                "(nfhep.distributed.init_from_env(), nfhep train --nproc N, or torchrun)"
            )
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the ranks (float64)."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t]

    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Replace every ``p.grad`` by its sum over the ranks (missing grads count as zero)."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        o = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[o : o + n].view_as(p))
            o += n

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Parameters and buffers of rank 0 on every rank."""
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """In-place mean over the ranks (floating tensors; e.g. batch-norm running statistics)."""
        with torch.no_grad():
            for t in tensors:
                if t.is_floating_point():
                    dist.all_reduce(t, op=dist.ReduceOp.SUM)
                    t.div_(self.size)

    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def merge_moments(self, acc: Any) -> None:
        """Merge a :class:`~nfhep.preprocessing.RunningMoments` over the ranks, in rank order (Chan)."""
        parts = self.gather_objects((float(acc.w), np.asarray(acc.mean), np.asarray(acc.m2)))
        w, mean, m2 = 0.0, np.zeros_like(np.asarray(acc.mean)), np.zeros_like(np.asarray(acc.m2))
        for wb, mb, m2b in parts:
            if wb <= 0:
                continue
            tot = w + wb
            delta = mb - mean
            mean = mean + delta * (wb / tot)
            m2 = m2 + m2b + delta**2 * (w * wb / tot)
            w = tot
        acc.w, acc.mean, acc.m2 = w, mean, m2
