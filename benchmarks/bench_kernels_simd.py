"""Speed of the raw C++ bijector kernels per SIMD level and thread count (evidence of vectorisation).

Not a test. Runs nfhep._core.bijectors directly (no torch) on N x D float32/float64 elements, K bins,
for every SIMD level this CPU supports (generic = SSE2 baseline, avx2, avx512) and 1..n threads, and a
memory-copy floor of the affine kernel's traffic. Results are scaled to 28 M elements (1e6 x 28).

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_kernels_simd.py --rows 200000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import nfhep

__all__ = ["main"]


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dims", type=int, default=28)
    ap.add_argument("--bins", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    args = ap.parse_args(argv)
    core = nfhep._core
    b = core.bijectors
    n_el = args.rows * args.dims
    scale = 28e6 / n_el
    rng = np.random.default_rng(0)
    levels = core.build_info()["simd_available"]
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{args.rows} x {args.dims} elements, K = {args.bins}; seconds scaled to 28 M elements (1e6 x 28)")
    cols = ["rqs fwd", "rqs inv", "rqs f+b", "aff fwd", "copy"]
    print(f"{'dtype':8} {'simd':8} {'thr':>3} " + " ".join(f"{c:>8}" for c in cols))
    before = nfhep.get_num_threads()
    try:
        for dt in [np.dtype(d) for d in args.dtypes.split(",")]:
            x = (2 * rng.normal(size=(args.rows, args.dims))).astype(dt)
            p = rng.normal(size=(args.rows, args.dims, 3 * args.bins - 1)).astype(dt)
            ap_ = rng.normal(size=(args.rows, args.dims, 2)).astype(dt)
            g = np.ones_like(x)
            src = np.concatenate([x.ravel(), ap_.ravel()])  # affine traffic: read x, s, t
            dst = np.empty_like(src)
            for level in levels:
                core.set_simd(level)
                for th in threads:
                    nfhep.set_num_threads(th)
                    t_f = _best(lambda x=x, p=p: b.rqs_forward(x, p), args.reps)
                    t_i = _best(lambda x=x, p=p: b.rqs_inverse(x, p), args.reps)

                    def fb(x=x, p=p, g=g):
                        b.rqs_forward(x, p)
                        b.rqs_backward(x, p, g, g)

                    t_fb = _best(fb, args.reps)
                    t_a = _best(lambda x=x, q=ap_: b.affine_forward(x, q), args.reps)
                    t_c = _best(lambda d=dst, s=src: np.copyto(d, s), args.reps)
                    print(
                        f"{dt.name:8} {level:8} {th:>3} {t_f * scale:8.3f} {t_i * scale:8.3f} "
                        f"{t_fb * scale:8.3f} {t_a * scale:8.3f} {t_c * scale:8.3f}",
                        flush=True,
                    )
    finally:
        core.set_simd("")
        nfhep.set_num_threads(before)


if __name__ == "__main__":
    main()
