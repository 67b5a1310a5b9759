#!/usr/bin/env python
r"""Benchmark of nfhep's bijector kernels against the anchors (not a test).

RQ spline (K bins on [-B, B], identity tails), N rows x D dims, float32 and float64, three operations:

- ``forward``: output and log|det| of the forward map;
- ``inverse``: output and log|det| of the inverse map;
- ``fwd+bwd``: forward, then backward of ``sum(y) + sum(logabsdet)`` with respect to x and the parameters.

Contenders: nfhep through its ``torch.autograd.Function`` (what flows use), nfhep's raw ``_core`` call
(numpy in/out, the kernel alone), nfhep's pure-torch path, zuko's ``MonotonicRQSTransform`` (bound=B)
and nflows' ``unconstrained_rational_quadratic_spline(tails="linear", tail_bound=B)``; for the affine
bijector ``y = x exp(s) + t``: nfhep (Function, raw) and the torch path against a memory-bandwidth floor.

The floor is a torch copy moving the same number of bytes as the kernel must (it reads R and writes W
bytes; the copy reads and writes (R + W)/2 bytes each): measured into a preallocated destination (the
strict floor) and into a fresh tensor (which, like the kernels' fresh outputs, also pays for page faults).

Every contender runs in a fresh subprocess (``--worker``), so that its peak resident memory (``ru_maxrss``
of that child) is its own; all use the same thread count (``torch.set_num_threads`` and
``nfhep.set_num_threads``). Every contender first makes one untimed call on the full problem (its
steady state: lazy initialisation, thread pools, allocator caches and the first touch of fresh pages,
which on some virtual machines costs over 100 µs per page), then the timed repetitions: the best of a
few (one when a call takes > 5 s). ``--warmup small`` warms up on 1,000 rows only (the older protocol).

Memory: ``peak`` is the child's ``ru_maxrss``; ``extra`` is that peak minus the resident memory after
the inputs were made, i.e. what the operation itself needs (its outputs included).

The anchors need far more memory than nfhep (zuko's forward+backward at 10^6 x 28 in float32 needs
~18 GiB): each anchor's memory per element is calibrated on a small run, and anchors that would exceed
``--mem-budget-gib`` run at fewer rows. nfhep is then measured at those row counts too, so every ratio
compares equal problem sizes; the table says which rows each line used.

Run the full benchmark under the shared lock on the development machines::

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_bijectors.py --save benchmarks/results/bijectors.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["main"]

RQS_CONTENDERS = ("nfhep", "nfhep-raw", "torch-path", "zuko", "nflows")
AFFINE_CONTENDERS = ("nfhep", "nfhep-raw", "torch-path")
ANCHORS = ("torch-path", "zuko", "nflows")  # memory-hungry: calibrated and capped
OPS = ("forward", "inverse", "fwd+bwd")
GIB = 1024.0**3


# ----------------------------------------------------------------------------------------------------------
# worker side (one contender, one operation, one size, in a fresh process)
# ----------------------------------------------------------------------------------------------------------


def _traffic_elements(bijector: str, op: str, n: int, d: int, p: int) -> int:
    """Elements the fused kernel must read + write (x, params, outputs; cotangents and gradients)."""
    nd = n * d
    if op in ("forward", "inverse"):
        return nd * (1 + p) + 2 * nd
    return (nd * (1 + p) + 2 * nd) + (nd * (1 + p) + 2 * nd + nd * (1 + p))  # fwd, then bwd reads+writes


def _make_inputs(torch: Any, n: int, d: int, p: int, dtype: Any, seed: int) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, d, dtype=dtype)
    x.normal_(0.0, 2.5, generator=g)  # in place: no temporaries, mostly inside [-5, 5]
    params = torch.empty(n, d, p, dtype=dtype)
    params.normal_(0.0, 1.0, generator=g)
    return x, params


def _time_reps(fn: Any, reps: int, cleanup: Any = None) -> dict[str, list[float]]:
    """Wall-clock and process CPU times (all threads) of each repetition."""
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(max(1, reps)):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if cleanup is not None:
            cleanup()
        if times[-1] > 5.0:
            break
    return {"times": times, "cpu": cpu}


def run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    import nfhep
    from nfhep import _core
    from nfhep.bijectors import affine, rqs

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    nfhep.set_num_threads(threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
    n, d, k, bound = int(cfg["rows"]), int(cfg["dims"]), int(cfg["bins"]), float(cfg["bound"])
    bij, who, op, reps = cfg["bijector"], cfg["contender"], cfg["op"], int(cfg["reps"])
    p = 3 * k - 1 if bij == "rqs" else 2
    inverse = op == "inverse"
    state: dict[str, Any] = {}

    if who.startswith("copy"):
        elems = _traffic_elements(bij, op, n, d, p)
        src = torch.empty((elems + 1) // 2, dtype=dtype)
        src.normal_()
        base_gib = _maxrss_gib()
        if who == "copy-prealloc":
            dst = torch.empty_like(src)
            dst.copy_(src)  # touch the pages once (the warm-up)
            out = _time_reps(lambda: dst.copy_(src), reps)
        else:

            def fresh() -> None:
                state["out"] = src.clone()

            fresh()  # warm-up
            state.clear()
            out = _time_reps(fresh, reps, lambda: state.clear())
        out["base_gib"] = base_gib
        return out

    x_full, params_full = _make_inputs(torch, n, d, p, dtype, seed=1234)
    base_gib = _maxrss_gib()
    grad = op == "fwd+bwd"

    def make_call(x: Any, params: Any) -> Any:
        """The timed operation on (x, params); returns a callable."""
        if who == "nfhep-raw":
            core = _core.bijectors
            xn, pn = x.numpy(), params.numpy()
            ones = torch.ones(x.shape, dtype=dtype).numpy() if grad else None
            if bij == "rqs":
                opts = {"bound": bound, "min_bin_width": 1e-3, "min_bin_height": 1e-3, "min_derivative": 1e-3}
                if not grad:
                    f = core.rqs_inverse if inverse else core.rqs_forward
                    return lambda: state.__setitem__("out", f(xn, pn, **opts))

                def raw_rqs_grad() -> None:
                    state["out"] = core.rqs_forward(xn, pn, **opts)
                    state["grad"] = core.rqs_backward(xn, pn, ones, ones, inverse=False, **opts)

                return raw_rqs_grad
            if not grad:
                f = core.affine_inverse if inverse else core.affine_forward
                return lambda: state.__setitem__("out", f(xn, pn))

            def raw_affine_grad() -> None:
                state["out"] = core.affine_forward(xn, pn)
                state["grad"] = core.affine_backward(xn, pn, ones, ones, inverse=False)

            return raw_affine_grad

        if grad:
            x.requires_grad_(True)
            params.requires_grad_(True)
        if who in ("nfhep", "torch-path"):
            backend = "cpp" if who == "nfhep" else "torch"
            if bij == "rqs":
                fn = lambda: rqs(x, params, inverse=inverse, bound=bound, backend=backend)  # noqa: E731
            else:
                fn = lambda: affine(x, params, inverse=inverse, backend=backend)  # noqa: E731
        elif who == "zuko":
            from zuko.transforms import MonotonicRQSTransform

            def fn() -> tuple[Any, Any]:
                t = MonotonicRQSTransform(
                    params[..., :k], params[..., k : 2 * k], params[..., 2 * k :], bound=bound
                )
                return t.inv.call_and_ladj(x) if inverse else t.call_and_ladj(x)

        elif who == "nflows":
            from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

            def fn() -> tuple[Any, Any]:
                return unconstrained_rational_quadratic_spline(
                    x,
                    params[..., :k],
                    params[..., k : 2 * k],
                    params[..., 2 * k :],
                    inverse=inverse,
                    tails="linear",
                    tail_bound=bound,
                )

        else:
            raise ValueError(f"unknown contender {who!r}")

        if grad:

            def fwd_bwd() -> None:
                y, lad = fn()
                (y.sum() + lad.sum()).backward()
                state["grad"] = (x.grad, params.grad)
                x.grad = None
                params.grad = None

            return fwd_bwd

        def fwd() -> None:
            with torch.no_grad():
                state["out"] = fn()

        return fwd

    # warm-up: one untimed call (on the full problem by default), then the timed runs on the full size
    if cfg.get("warmup", "full") == "full":
        call = make_call(x_full, params_full)
        call()
        state.clear()
    else:
        m = min(n, 1000)
        make_call(x_full[:m].clone(), params_full[:m].clone())()
        state.clear()
        call = make_call(x_full, params_full)
    out = _time_reps(call, reps, lambda: state.clear())
    out["base_gib"] = base_gib
    return out


def _maxrss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB


# ----------------------------------------------------------------------------------------------------------
# parent side
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    bijector: str
    dtype: str
    op: str
    contender: str
    rows: int
    seconds: float | None
    peak_gib: float | None
    note: str = ""
    times: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None
    base_gib: float | None = None

    @property
    def extra_gib(self) -> float | None:
        if self.peak_gib is None or self.base_gib is None:
            return None
        return max(0.0, self.peak_gib - self.base_gib)


def spawn(cfg: dict[str, Any], timeout: float) -> tuple[dict[str, Any] | None, float, str]:
    """Run one worker; returns (its JSON, its peak RSS in GiB, error text)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    try:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            json.dumps(cfg),
            "--worker-out",
            out_path,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return None, ru.ru_maxrss * 1024 / GIB, f"timed out after {timeout:.0f} s"
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        peak = ru.ru_maxrss * 1024 / GIB  # Linux: KiB
        if proc.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
            return None, peak, last
        with open(out_path) as fh:
            return json.load(fh), peak, ""
    finally:
        if os.path.exists(out_path):
            os.unlink(out_path)


def mem_available_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return float("nan")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", os.path.dirname(os.path.abspath(__file__)), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()[:80]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def fmt_s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def fmt_ratio(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:.0f}×" if v >= 10 else f"{v:.2g}×"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--rows", type=float, default=1e6, help="rows N (default 1e6)")
    ap.add_argument("--dims", type=int, default=28, help="dimensions D (default 28)")
    ap.add_argument("--bins", type=int, default=8, help="spline bins K (default 8)")
    ap.add_argument("--bound", type=float, default=5.0, help="spline bound B (default 5)")
    ap.add_argument(
        "--threads", type=int, default=default_threads(), help="threads for everyone (default: all)"
    )
    ap.add_argument(
        "--ops", default=",".join(OPS), help="comma-separated operations (default forward,inverse,fwd+bwd)"
    )
    ap.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, best taken (default 3)")
    ap.add_argument(
        "--mem-budget-gib",
        type=float,
        default=None,
        help="cap on a worker's predicted peak memory (default: min(14, 0.75 x MemAvailable))",
    )
    ap.add_argument(
        "--warmup",
        choices=("full", "small"),
        default="full",
        help="untimed warm-up call per contender: on the full problem (default; steady state) or 1,000 rows",
    )
    ap.add_argument("--quick", action="store_true", help="1e5 rows, 1 repetition, small calibration")
    ap.add_argument("--skip", default="", help="comma-separated contenders to leave out (e.g. zuko,nflows)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker (default 1800)")
    ap.add_argument("--save", default=None, help="write the table (markdown) to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        result = run_worker(json.loads(args.worker))
        with open(args.worker_out, "w") as fh:
            json.dump(result, fh)
        return 0

    import nfhep

    rows = int(1e5 if args.quick and args.rows == 1e6 else args.rows)
    reps = 1 if args.quick else args.reps
    budget = args.mem_budget_gib
    if budget is None:
        budget = min(14.0, 0.75 * mem_available_gib())
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    dtypes = [s.strip() for s in args.dtypes.split(",") if s.strip()]
    ops = [s.strip() for s in args.ops.split(",") if s.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad:
        ap.error(f"--ops: unknown operation(s) {bad}; choose from {', '.join(OPS)}")
    info = nfhep.build_info()
    started = _dt.datetime.now(_dt.timezone.utc)
    load_start = os.getloadavg()[0]

    def versions() -> str:
        out = [f"torch {info.get('torch')}", f"nfhep {info['version']}"]
        for mod in ("zuko", "nflows"):
            try:
                out.append(f"{mod} {importlib.metadata.version(mod)}")
            except importlib.metadata.PackageNotFoundError:
                out.append(f"{mod} missing")
        return ", ".join(out)

    base = {
        "dims": args.dims,
        "bins": args.bins,
        "bound": args.bound,
        "threads": args.threads,
        "warmup": args.warmup,
    }
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"rows={rows} dims={args.dims} bins={args.bins} threads={args.threads} budget={budget:.1f} GiB")

    # 1. calibrate the anchors' memory per element (peak RSS at two small sizes -> slope)
    cal_rows = (5_000, 25_000) if args.quick else (10_000, 50_000)
    per_elem: dict[tuple[str, str, str], float] = {}
    for dt in dtypes:
        for who in ANCHORS:
            if who in skip:
                continue
            for op in ops:
                peaks = []
                for r in cal_rows:
                    cfg = dict(base, bijector="rqs", dtype=dt, op=op, contender=who, rows=r, reps=1)
                    res, peak, err = spawn(cfg, args.timeout)
                    if res is None:
                        log(f"calibration {who} {dt} {op} failed: {err}")
                        break
                    peaks.append(peak)
                if len(peaks) == 2:
                    slope = (peaks[1] - peaks[0]) * GIB / ((cal_rows[1] - cal_rows[0]) * args.dims)
                    per_elem[(who, dt, op)] = max(slope, 1.0)
                    log(f"calibrated {who:10s} {dt} {op:8s}: {slope:.0f} B/element")

    def capped_rows(who: str, dt: str, op: str) -> int:
        key = (who, dt, op)
        if key not in per_elem:
            return rows
        fits = int((budget - 0.6) * GIB / (per_elem[key] * args.dims))  # 0.6 GiB: interpreter + torch
        if fits >= rows:
            return rows
        return max(1000, (fits // 10_000) * 10_000 if fits > 10_000 else fits)

    results: list[Result] = []

    def measure(bij: str, dt: str, op: str, who: str, n: int, note: str = "") -> Result:
        cfg = dict(base, bijector=bij, dtype=dt, op=op, contender=who, rows=n, reps=reps)
        res, peak, err = spawn(cfg, args.timeout)
        r = Result(
            bij,
            dt,
            op,
            who,
            n,
            min(res["times"]) if res else None,
            peak,
            note or err,
            res["times"] if res else [],
            min(res["cpu"]) if res else None,
            res.get("base_gib") if res else None,
        )
        log(
            f"{bij:6s} {dt} {op:8s} {who:14s} rows={n:>8d} s={fmt_s(r.seconds):>7s} "
            f"cpu={fmt_s(r.cpu_seconds)} "
            f"peak={peak:.2f} GiB {r.note}"
        )
        results.append(r)
        return r

    # 2. measure
    for dt in dtypes:
        for op in ops:
            sizes = {rows}
            for who in ANCHORS:
                if who not in skip:
                    sizes.add(capped_rows(who, dt, op))
            for n in sorted(sizes, reverse=True):
                for who in ("nfhep", "nfhep-raw"):
                    if who not in skip:
                        measure("rqs", dt, op, who, n)
            for who in ANCHORS:
                if who in skip:
                    continue
                n = capped_rows(who, dt, op)
                note = ""
                if n < rows:
                    need = per_elem[(who, dt, op)] * rows * args.dims / GIB + 0.6
                    note = f"fewer rows: needs ~{need:.0f} GiB at {rows:,} rows (budget {budget:.0f} GiB)"
                measure("rqs", dt, op, who, n, note)
            for who in ("copy-prealloc", "copy-fresh"):
                measure("rqs", dt, op, who, rows)
        for op in ops:
            for who in (*AFFINE_CONTENDERS, "copy-prealloc", "copy-fresh"):
                if who not in skip:
                    measure("affine", dt, op, who, rows)

    # 3. report
    def find(bij: str, dt: str, op: str, who: str, n: int) -> Result | None:
        for r in results:
            if (r.bijector, r.dtype, r.op, r.contender, r.rows) == (bij, dt, op, who, n) and r.seconds:
                return r
        return None

    lines: list[str] = []
    add = lines.append
    add("# nfhep bijector benchmark")
    add("")
    add(f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}")
    add(
        f"- source: git {git_head()}; load average (1 min) at start {load_start:.1f}, at end "
        f"{os.getloadavg()[0]:.1f} (a shared machine: other jobs inflate wall-clock times; 'CPU s' is the "
        "process CPU time of the best repetition, all threads, less sensitive to that)"
    )
    add(
        f"- SIMD level: {info['simd']} (compiled: {', '.join(info['simd_compiled'])}); "
        f"CUDA compiled: {info['cuda']}"
    )
    add(f"- threads: {args.threads} for every contender (torch and nfhep set_num_threads)")
    add(
        f"- problem: N = {rows:,} rows × D = {args.dims}, K = {args.bins} bins, B = {args.bound:g}; "
        f"{versions()}"
    )
    add(
        f"- times: one untimed warm-up call ({'full problem' if args.warmup == 'full' else '1,000 rows'}), "
        f"then best of {reps} (one repetition when a call takes > 5 s); peak = ru_maxrss of the "
        "contender's own process (includes its inputs: x and params are "
        f"{rows * args.dims * (3 * args.bins) * 4 / GIB:.2f} GiB in float32 at N rows); extra = peak minus "
        "the resident memory once the inputs exist (what the operation needs, its outputs included)"
    )
    add(
        f"- memory budget per process {budget:.1f} GiB: anchors that need more ran at fewer rows (column "
        "'rows'); every ratio compares nfhep and the anchor at the same rows"
    )
    add(
        "- copy floor: a torch copy whose read + write traffic equals the bytes the fused kernel must read "
        "and write (prealloc = into an existing tensor; fresh = into a new one, page faults included)"
    )
    add("")
    for bij in ("rqs", "affine"):
        add(f"## {'RQ spline' if bij == 'rqs' else 'affine'}")
        add("")
        if bij == "rqs":
            add(
                "| dtype | op | contender | rows | seconds | CPU s | peak GiB | extra GiB | vs zuko "
                "| vs nflows | vs torch path | note |"
            )
            add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        else:
            add(
                "| dtype | op | contender | rows | seconds | CPU s | peak GiB | extra GiB "
                "| × copy (prealloc) | × copy (fresh) | note |"
            )
            add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for dt in dtypes:
            for op in ops:
                for r in [r for r in results if r.bijector == bij and r.dtype == dt and r.op == op]:
                    peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "—"
                    peak += f" | {r.extra_gib:.2f}" if r.extra_gib is not None else " | —"
                    if bij == "rqs":
                        ratios = []
                        for anchor in ("zuko", "nflows", "torch-path"):
                            ratio = None
                            if r.contender in ("nfhep", "nfhep-raw") and r.seconds:
                                a = next(
                                    (
                                        q
                                        for q in results
                                        if (q.bijector, q.dtype, q.op, q.contender) == (bij, dt, op, anchor)
                                        and q.seconds
                                    ),
                                    None,
                                )
                                if a is not None and a.rows == r.rows:
                                    ratio = a.seconds / r.seconds
                            ratios.append(fmt_ratio(ratio))
                        add(
                            f"| {dt} | {op} | {r.contender} | {r.rows:,} | {fmt_s(r.seconds)} | "
                            f"{fmt_s(r.cpu_seconds)} | {peak} | " + " | ".join(ratios) + f" | {r.note} |"
                        )
                    else:
                        fl = find(bij, dt, op, "copy-prealloc", r.rows)
                        ff = find(bij, dt, op, "copy-fresh", r.rows)
                        x1 = fmt_ratio(r.seconds / fl.seconds) if (fl and r.seconds) else "—"
                        x2 = fmt_ratio(r.seconds / ff.seconds) if (ff and r.seconds) else "—"
                        if r.contender.startswith("copy"):
                            x1 = x2 = ""
                        add(
                            f"| {dt} | {op} | {r.contender} | {r.rows:,} | {fmt_s(r.seconds)} | "
                            f"{fmt_s(r.cpu_seconds)} | {peak} | "
                            f"{x1} | {x2} | {r.note} |"
                        )
        add("")
    # peak memory vs zuko at equal rows
    add("## memory, nfhep (autograd Function) vs zuko at equal rows")
    add("")
    add(
        "inputs = x and the (N, D, 3K−1) parameters; required outputs = y and log|det| (forward, inverse), "
        "plus the gradients of x and of the parameters (fwd+bwd): the bytes any implementation must hold."
    )
    add("")
    add(
        "| dtype | op | rows | inputs GiB | required outputs GiB | nfhep peak | zuko peak | peak ratio "
        "| nfhep extra | zuko extra | extra ratio | nfhep extra beyond required outputs "
        "| zuko extra beyond required outputs |"
    )
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dt in dtypes:
        isz = 4 if dt == "float32" else 8
        for op in ops:
            z = next(
                (q for q in results if (q.bijector, q.dtype, q.op, q.contender) == ("rqs", dt, op, "zuko")),
                None,
            )
            if z is None or not z.seconds:
                continue
            f = find("rqs", dt, op, "nfhep", z.rows)
            if f is None or f.peak_gib is None or z.peak_gib is None:
                continue
            p_ = 3 * args.bins - 1
            inputs = z.rows * args.dims * (1 + p_) * isz / GIB
            outs = z.rows * args.dims * (2 + (1 + p_ if op == "fwd+bwd" else 0)) * isz / GIB
            fe, ze = f.extra_gib, z.extra_gib
            if fe is None or ze is None:
                extra = "— | — | — | — | —"
            else:
                beyond_f, beyond_z = max(0.0, fe - outs), max(0.0, ze - outs)
                extra = f"{fe:.2f} | {ze:.2f} | {fe / ze:.3f} | {beyond_f:.2f} | {beyond_z:.2f}"
            add(
                f"| {dt} | {op} | {z.rows:,} | {inputs:.2f} | {outs:.2f} | {f.peak_gib:.2f} | "
                f"{z.peak_gib:.2f} | {f.peak_gib / z.peak_gib:.3f} | {extra} |"
            )
    add("")
    text = "\n".join(lines)
    print(text)
    if args.save:
        tmp = args.save + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
