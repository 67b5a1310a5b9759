"""``nfhep eval`` end to end against the engine on arrays in memory and the pure-Python path (issue 14).

Setup: a ``--n``-event (default 2*10^6), 28-feature float32 ntuple written with uproot (ZSTD 1), the A-RQS
flow of ``bench_engine.py`` (5 bijectors, hidden 3x128, 8 knots, float32; untrained weights drawn around
the identity with a fixed seed).

Measured in the same run, events/s:

- ``engine``: ``nfhep.Engine.log_prob`` on the whole array already in memory (no I/O);
- ``eval``: :func:`nfhep.evaluate` (= ``nfhep eval``) file to file on the one ``--n``-event file: uproot
  reading (in a background thread), the engine, writing the friend (ZSTD 1) and linking it into place;
- ``torch path``: uproot ``iterate`` + nfhep's torch model (``torch.no_grad``) + uproot writing the friend,
  on the first ``--torch-n`` events (a rate; the torch model at ~10^4 events/s would take minutes on 2*10^6);
- ``dask 1 / 2 workers``: :func:`nfhep.evaluate` with ``executor="dask"`` on a ``LocalCluster`` of 1 or 2
  worker processes (1 thread each, 1 nfhep thread per task) over the same events split into ``--files``
  files; the workers are started and have imported nfhep before the clock, model loading (once per
  worker) is inside it.

engine, eval and the torch path use ``--threads`` threads (default 2: nfhep and torch alike).

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_eval.py --out benchmarks/results/eval.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import uproot

import nfhep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import D, _model  # noqa: E402

__all__ = ["main"]

CHUNK = 100_000


def _write(path: Path, x: np.ndarray) -> None:
    with uproot.recreate(path, compression=uproot.ZSTD(1)) as f:
        f.mktree("events", {f"f{j}": np.float32 for j in range(D)})
        for s in range(0, len(x), CHUNK):
            f["events"].extend({f"f{j}": x[s : s + CHUNK, j] for j in range(D)})


def _torch_path(model, inp: Path, out: Path) -> float:
    t0 = time.perf_counter()
    with uproot.recreate(out, compression=uproot.ZSTD(1)) as fo, uproot.open(inp) as fi:
        fo.mktree("events_nf", {"nf_logp": np.float32})
        names = [f"f{j}" for j in range(D)]
        for arrays in fi["events"].iterate(names, step_size=CHUNK, library="np"):
            x = torch.from_numpy(np.stack([arrays[n] for n in names], axis=1))
            with torch.no_grad():
                lp = model.log_prob(x).numpy()
            fo["events_nf"].extend({"nf_logp": lp})
    return time.perf_counter() - t0


def _dask_rate(models, files, out: Path, workers: int) -> float:
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        client.run(
            lambda: __import__("nfhep.evaluate") and __import__("uproot") and None
        )  # imports: not timed
        t0 = time.perf_counter()
        res = nfhep.evaluate(models, files, output=out, executor="dask", scheduler=client, threads=1)
        dt = time.perf_counter() - t0
    return sum(r.n_entries for r in res) / dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--torch-n", type=int, default=200_000)
    p.add_argument("--files", type=int, default=4, help="files the events are split into for dask")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the markdown report here as well")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nfhep.set_num_threads(args.threads)
    load0 = os.getloadavg()
    m = _model("arqs", 5)
    r: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("NFHEP_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        mp = tmp / "arqs.safetensors"
        nfhep.save(m, mp)
        x = np.random.default_rng(3).normal(size=(args.n, D)).astype(np.float32)
        _write(tmp / "big.root", x)
        _write(tmp / "small.root", x[: args.torch_n])
        per = -(-args.n // args.files)
        parts = []
        for k in range(args.files):
            parts.append(tmp / f"part{k}.root")
            _write(parts[-1], x[k * per : (k + 1) * per])
        print("ntuples written", flush=True)

        eng = nfhep.Engine(mp)
        eng.log_prob(x[:4096])
        t0 = time.perf_counter()
        ref = eng.log_prob(x)
        r["engine"] = args.n / (time.perf_counter() - t0)
        print(f"engine {r['engine']:,.0f} ev/s", flush=True)

        t0 = time.perf_counter()
        (res,) = nfhep.evaluate(mp, tmp / "big.root", output=tmp / "big_nf.root", executor="serial")
        r["eval"] = args.n / (time.perf_counter() - t0)
        got = uproot.open(res.output)["events_nf"]["nf_logp"].array(library="np")
        assert np.array_equal(got, ref), "nfhep eval's friend differs from Engine.log_prob"
        print(f"eval {r['eval']:,.0f} ev/s", flush=True)

        r["torch"] = args.torch_n / _torch_path(m, tmp / "small.root", tmp / "small_torch.root")
        tl = uproot.open(tmp / "small_torch.root")["events_nf"]["nf_logp"].array(library="np")
        err = float(np.max(np.abs(tl - ref[: args.torch_n]) / np.maximum(1.0, np.abs(tl))))
        print(f"torch path {r['torch']:,.0f} ev/s (max rel. difference to the engine {err:.1e})", flush=True)

        for w in (1, 2):
            (tmp / f"dask{w}").mkdir()
            r[f"dask{w}"] = _dask_rate(mp, parts, tmp / f"dask{w}", w)
            print(f"dask {w} worker(s) {r[f'dask{w}']:,.0f} ev/s", flush=True)
    load1 = os.getloadavg()
    info = nfhep.build_info()
    ok = lambda c: "met" if c else "**not met**"  # noqa: E731
    e_ratio, t_ratio, d_ratio = r["eval"] / r["engine"], r["eval"] / r["torch"], r["dask2"] / r["dask1"]
    report = "\n".join(
        [
            "# `nfhep eval` benchmark: file to file vs the engine in memory vs the torch path; dask scaling",
            "",
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared machine: load "
            f"average {load0[0]:.2f} before, {load1[0]:.2f} after), SIMD {info['simd']}, torch "
            f"{torch.__version__}; A-RQS, 5 bijectors, hidden 3x128, 8 knots, float32, D = {D}; "
            f"{args.n:,} events (torch path: first {args.torch_n:,}); {args.threads} threads for the "
            f"engine, eval and torch; dask: {args.files} files, 1 thread per worker.",
            "",
            "| path | events/s | ratio | target |",
            "|---|---|---|---|",
            f"| engine, arrays in memory | {r['engine']:,.0f} | 1 | |",
            f"| `nfhep eval` file to file | {r['eval']:,.0f} | {e_ratio:.2f} x engine | >= 0.70 "
            f"({ok(e_ratio >= 0.7)}) |",
            f"| uproot + torch model + uproot | {r['torch']:,.0f} | eval / torch = {t_ratio:.1f}x | >= 3x "
            f"({ok(t_ratio >= 3)}) |",
            f"| dask, 1 worker | {r['dask1']:,.0f} | 1 | |",
            f"| dask, 2 workers | {r['dask2']:,.0f} | {d_ratio:.2f} x 1 worker | >= 1.7 "
            f"({ok(d_ratio >= 1.7)}) |",
            "",
            "The friend written by `nfhep eval` equals `Engine.log_prob` on the whole array bit for bit; "
            f"the torch path differs from it by at most {err:.1e} (relative).",
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
