"""Benchmark of nfhep.metrics against the anchors: scipy ks_2samp (per dimension), POT's sliced
Wasserstein (p=1, same 2D directions) and numpy sort-based sliced Wasserstein.

Every contender runs in a fresh subprocess (same seeded data); we report wall time of the metric alone,
the process's peak RSS (ru_maxrss, includes the input samples) and the RSS added on top of the inputs,
and check that the results agree. POT needs ~12 GB at D=28, n=1e6: run the whole script under
``flock /tmp/nfhep-heavy.lock`` on shared machines.

    PYTHONPATH=python flock /tmp/nfhep-heavy.lock python benchmarks/bench_metrics.py \
        --out benchmarks/results/metrics.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CONTENDERS = ["nfhep_ks", "scipy_ks", "nfhep_swd", "pot_swd", "numpy_swd", "numpy_swd_rows"]


def _rss_now() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2  # GiB
    return float("nan")


def child(name: str, n: int, dim: int, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    y = rng.standard_normal((n, dim))  # H0: the regime a good flow is validated in (p ~ U(0, 1))
    dirs = np.random.default_rng(seed + 1).standard_normal((2 * dim, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # import everything before timing (import time is not the metric's)
    if name.startswith("nfhep"):
        import scipy.stats  # noqa: F401  (p-values)

        from nfhep import metrics as M
    elif name == "scipy_ks":
        from scipy import stats
    elif name == "pot_swd":
        import ot
    base = _rss_now()
    t0 = time.perf_counter()
    if name == "nfhep_ks":
        r = M.ks_2samp(x, y)
        val = [r.statistic.tolist(), r.pvalue.tolist()]
    elif name == "scipy_ks":
        rs = [stats.ks_2samp(x[:, d], y[:, d]) for d in range(dim)]
        val = [[float(r.statistic) for r in rs], [float(r.pvalue) for r in rs]]
    elif name == "nfhep_swd":
        val = M.sliced_wasserstein(x, y, directions=dirs).per_direction.mean()
    elif name == "pot_swd":
        val = float(ot.sliced_wasserstein_distance(x, y, projections=dirs.T.copy(), p=1))
    elif name == "numpy_swd":  # the textbook version (as POT): (n, N_d) projections sorted along axis 0
        px = np.sort(x @ dirs.T, axis=0)
        py = np.sort(y @ dirs.T, axis=0)
        val = float(np.mean(np.abs(px - py)))
    elif name == "numpy_swd_rows":  # a tuned numpy version: (N_d, n) projections, contiguous sorts
        px = dirs @ x.T
        px.sort(axis=1)
        py = dirs @ y.T
        py.sort(axis=1)
        val = float(np.mean(np.abs(px - py)))
    else:
        raise SystemExit(f"unknown contender {name}")
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"time": dt, "peak_gib": peak, "base_gib": base, "value": val}))


def _ok(res: dict, k: str) -> bool:
    return k in res and "error" not in res[k]


def run_one(name: str, n: int, dim: int, seed: int, threads: int) -> dict:
    env = dict(os.environ, NFHEP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", name, "--n", str(n), "--dim", str(dim), "--seed", str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", default=None)
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--dim", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="nfhep threads (0 = all CPUs)")
    p.add_argument("--cases", default="28x1000000,100x200000", help="DxN,DxN,...")
    p.add_argument("--skip", nargs="*", default=[], help="contenders to skip")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.child:
        child(a.child, a.n, a.dim, a.seed)
        return
    import numpy as np

    threads = a.threads or len(os.sched_getaffinity(0))
    lines = [
        "# nfhep.metrics benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs; "
        f"nfhep threads: {threads}; numpy {np.__version__}. "
        "float64, x and y independent N(0, 1) samples (H0); "
        "SWD with 2D directions (same for all contenders). Time = the metric only (data generation "
        "excluded); peak = ru_maxrss of a fresh process (includes the two input arrays); "
        "extra = peak minus the RSS after generating the inputs.",
        "",
    ]
    for case in a.cases.split(","):
        dim, n = (int(v) for v in case.split("x"))
        res = {}
        for name in CONTENDERS:
            if name in a.skip:
                continue
            print(f"D={dim} n={n}: {name} ...", file=sys.stderr, flush=True)
            res[name] = run_one(name, n, dim, a.seed, threads)
            shown = res[name] if "error" in res[name] else {k: res[name][k] for k in ("time", "peak_gib")}
            print(f"   {shown}", file=sys.stderr, flush=True)
        lines += [
            f"## D = {dim}, n1 = n2 = {n:,}",
            "",
            "| contender | time [s] | peak RSS [GiB] | extra [GiB] | result |",
            "|---|---|---|---|---|",
        ]
        for name, r in res.items():
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error']} | | | |")
                continue
            v = r["value"]
            shown = (
                f"median p = {np.median(v[1]):.6g}, max D = {max(v[0]):.6g}"
                if name.endswith("ks")
                else f"{v:.12g}"
            )
            extra = r["peak_gib"] - r["base_gib"]
            lines.append(f"| {name} | {r['time']:.3f} | {r['peak_gib']:.2f} | {extra:.2f} | {shown} |")
        lines.append("")
        if _ok(res, "nfhep_ks") and _ok(res, "scipy_ks"):
            s1, p1 = (np.array(v) for v in res["nfhep_ks"]["value"])
            s2, p2 = (np.array(v) for v in res["scipy_ks"]["value"])
            lines.append(
                f"- KS: nfhep is **{res['scipy_ks']['time'] / res['nfhep_ks']['time']:.1f}x** faster than "
                "scipy; "
                f"max |Δstatistic| = {np.max(np.abs(s1 - s2)):.2e}, max rel. Δp = "
                f"{np.max(np.abs(p1 - p2) / np.maximum(p2, 1e-300)):.2e}"
            )
        for other in ("pot_swd", "numpy_swd", "numpy_swd_rows"):
            if _ok(res, "nfhep_swd") and _ok(res, other):
                v1, v2 = res["nfhep_swd"]["value"], res[other]["value"]
                lines.append(
                    f"- SWD: nfhep is **{res[other]['time'] / res['nfhep_swd']['time']:.1f}x** faster than "
                    f"{other}; rel. difference {abs(v1 - v2) / abs(v2):.2e}"
                )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.out:
        tmp = a.out.with_name(f".{a.out.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
