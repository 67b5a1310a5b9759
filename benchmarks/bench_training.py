"""Training / log_prob / sample speed of nfhep's A-RQS and MAF against zuko (NSF, MAF), same run.

Setup (issue 3): 28 features, 2 and 5 bijectors, hidden 3x128, 8 knots (range 5), 200,000 events,
batch 512. Seconds per epoch = measured seconds per optimiser step (forward + backward + Adam) on
batches of 512, times the number of batches in an epoch of 200,000 events (391); the first steps are a
warm-up. log_prob: events/s on 20,000 events without gradient. sample: events/s for ``--sample-n``.

Both libraries run with the same threads: ``torch.set_num_threads(T)`` and ``nfhep.set_num_threads(T)``
(``--threads``, default 1: the machine is shared, and torch's intra-op threads on small matrices only
add contention there).

Run under the heavy-work lock:

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_training.py --out benchmarks/results/training.md
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

import nfhep
from nfhep.flows import MAF, AutoregressiveRQS

__all__ = ["main"]

D = 28
HIDDEN = [128, 128, 128]
N_EVENTS = 200_000
BATCH = 512


def nfhep_flow(kind: str, bijectors: int):
    if kind == "arqs":
        return AutoregressiveRQS(D, bijectors=bijectors, hidden=HIDDEN, knots=8, range=5.0)
    return MAF(D, bijectors=bijectors, hidden=HIDDEN)


def zuko_flow(kind: str, bijectors: int):
    import zuko

    if kind == "arqs":
        return zuko.flows.NSF(D, transforms=bijectors, bins=8, hidden_features=HIDDEN, passes=None)
    return zuko.flows.MAF(D, transforms=bijectors, hidden_features=HIDDEN)


def _log_prob_fn(lib: str, flow):
    if lib == "nfhep":
        return flow.log_prob
    return lambda x: flow().log_prob(x)


def _sample_fn(lib: str, flow):
    if lib == "nfhep":
        return lambda n: flow.sample(n)
    return lambda n: flow().sample((n,))


def measure(lib: str, kind: str, bijectors: int, *, steps: int, warmup: int, sample_n: int) -> dict:
    torch.manual_seed(0)
    flow = nfhep_flow(kind, bijectors) if lib == "nfhep" else zuko_flow(kind, bijectors)
    lp = _log_prob_fn(lib, flow)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(BATCH, D, generator=g) for _ in range(steps + warmup)]
    for i, xb in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = -lp(xb).mean()
        loss.backward()
        opt.step()
    step = (time.perf_counter() - t0) / steps
    epoch = step * math.ceil(N_EVENTS / BATCH)
    x = torch.randn(20_000, D, generator=g)
    with torch.no_grad():
        lp(x[:1000])
        t0 = time.perf_counter()
        lp(x)
        lp_rate = len(x) / (time.perf_counter() - t0)
        smp = _sample_fn(lib, flow)
        smp(10)
        t0 = time.perf_counter()
        smp(sample_n)
        s_rate = sample_n / (time.perf_counter() - t0)
    return {"epoch_s": epoch, "train_ev_s": BATCH / step, "log_prob_ev_s": lp_rate, "sample_ev_s": s_rate}


def profile_step(kind: str, bijectors: int) -> str:
    """Where the time of one nfhep training step goes (torch profiler, top operators)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    flow = nfhep_flow(kind, bijectors)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    x = torch.randn(BATCH, D)
    for _ in range(3):
        opt.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            opt.zero_grad()
            (-flow.log_prob(x).mean()).backward()
            opt.step()
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    top = sorted(rows, key=lambda r: r.self_cpu_time_total, reverse=True)[:8]
    lines = ["| operator | self CPU share |", "|---|---|"]
    for r in top:
        lines.append(f"| `{r.key}` | {100 * r.self_cpu_time_total / total:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per contender")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sample-n", type=int, default=2000)
    ap.add_argument("--out", default=None, help="write the markdown report here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    nfhep.set_num_threads(args.threads)
    info = nfhep.build_info()
    rows = []
    results = {}
    for kind in ("arqs", "maf"):
        for b in (2, 5):
            for lib in ("nfhep", "zuko"):
                r = measure(lib, kind, b, steps=args.steps, warmup=args.warmup, sample_n=args.sample_n)
                results[(kind, b, lib)] = r
                print(f"{lib:6s} {kind:5s} {b} bijectors: {r}", flush=True)
    anchor = {"arqs": "zuko NSF (passes=None)", "maf": "zuko MAF"}
    head = (
        "| flow | bijectors | library | s / epoch | train ev/s | log_prob ev/s | sample ev/s | "
        "train ratio | log_prob ratio | sample ratio |"
    )
    rows = [head, "|" + "---|" * 10]
    for kind in ("arqs", "maf"):
        for b in (2, 5):
            z = results[(kind, b, "zuko")]
            for lib in ("nfhep", "zuko"):
                r = results[(kind, b, lib)]
                name = ("nfhep " + kind.upper().replace("ARQS", "A-RQS")) if lib == "nfhep" else anchor[kind]
                ratio = (
                    f"{z['epoch_s'] / r['epoch_s']:.2f}x | {r['log_prob_ev_s'] / z['log_prob_ev_s']:.2f}x | "
                    f"{r['sample_ev_s'] / z['sample_ev_s']:.2f}x"
                    if lib == "nfhep"
                    else "1 | 1 | 1"
                )
                rows.append(
                    f"| {kind} | {b} | {name} | {r['epoch_s']:.1f} | {r['train_ev_s']:,.0f} | "
                    f"{r['log_prob_ev_s']:,.0f} | {r['sample_ev_s']:,.0f} | {ratio} |"
                )
    table = "\n".join(rows)
    prof = profile_step("arqs", 5)
    report = f"""# Training benchmark: nfhep vs zuko

Generated by `benchmarks/bench_training.py`
(`--threads {args.threads} --steps {args.steps} --sample-n {args.sample_n}`).
Machine: {platform.processor() or platform.machine()}, {info.get("num_threads")} nfhep threads,
torch {torch.__version__},
SIMD {info.get("simd")}; a shared 2-core machine (other jobs ran at the same time: read the absolute
figures as orders of magnitude, the ratios measured back to back are the result).

28 features, hidden 3x128, 8 knots (range 5), batch 512; s/epoch = 391 batches (200,000 events) from
{args.steps} timed optimiser steps. Ratios are nfhep over zuko (train ratio = zuko s/epoch / nfhep s/epoch).

{table}

Where an nfhep A-RQS (5 bijectors) training step spends its time (torch profiler, self CPU):

{prof}
"""
    print(report)
    if args.out:
        import os

        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(report)
        os.replace(tmp, args.out)
    return report


if __name__ == "__main__":
    main()
