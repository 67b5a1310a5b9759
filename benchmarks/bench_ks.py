"""Focused timing of the unweighted two-sample KS statistic (``nfhep.metrics.ks_2samp``).

Times the whole public call (validation + statistic + asymptotic p-values) on independent N(0, 1)
samples, row-major float64 (or float32), best of ``--repeat`` runs: 1-thread CPU seconds
(``time.process_time``) and wall seconds at each thread count in ``--threads``. Optionally times
``scipy.stats.ks_2samp`` per dimension once for the ratio. The machine may be shared: report CPU time
and the load average printed at the start. Not part of the test suite.

    PYTHONPATH=python python benchmarks/bench_ks.py --cases 28x1000000,100x200000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import nfhep
from nfhep.metrics import ks_2samp

__all__ = ["main", "time_ks"]


def time_ks(
    x: np.ndarray, y: np.ndarray, *, threads: int, repeat: int, check_finite: bool
) -> tuple[float, float]:
    """Best-of-``repeat`` (wall seconds, CPU seconds) of ``ks_2samp(x, y)`` on ``threads`` threads."""
    nfhep.set_num_threads(threads)
    ks_2samp(x, y, check_finite=check_finite)  # warm-up (page faults of the scratch buffers)
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        ks_2samp(x, y, check_finite=check_finite)
        w1, c1 = time.perf_counter(), time.process_time()
        best_wall = min(best_wall, w1 - w0)
        best_cpu = min(best_cpu, c1 - c0)
    return best_wall, best_cpu


def main() -> None:
    """Parse the command line, run the cases, print one line per case and thread count."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="28x1000000,100x200000", help="DxN,DxN,...")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--no-check-finite", action="store_true")
    ap.add_argument("--scipy", action="store_true", help="also time scipy.stats.ks_2samp once")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()}, simd {nfhep.build_info()['simd']}")
    for case in args.cases.split(","):
        dim, n = (int(v) for v in case.split("x"))
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((n, dim)).astype(args.dtype)
        y = rng.standard_normal((n, dim)).astype(args.dtype)
        for t in (int(v) for v in args.threads.split(",")):
            wall, cpu = time_ks(x, y, threads=t, repeat=args.repeat, check_finite=not args.no_check_finite)
            ns = cpu / (2 * n * dim) * 1e9
            print(
                f"D={dim:4d} n={n:8d} threads={t}: wall {wall:.4f} s  cpu {cpu:.4f} s"
                f"  ({ns:.2f} ns/value cpu)"
            )
        if args.scipy:
            from scipy import stats

            t0 = time.perf_counter()
            for d in range(dim):
                stats.ks_2samp(x[:, d], y[:, d])
            print(f"D={dim:4d} n={n:8d} scipy: wall {time.perf_counter() - t0:.3f} s")
    nfhep.set_num_threads(0)


if __name__ == "__main__":
    main()
