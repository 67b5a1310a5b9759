"""The C++ inference engine against nfhep's own torch model and zuko, same run, same threads (issue 13).

Setup: A-RQS and MAF with 28 features, 2 and 5 bijectors, hidden 3x128, 8 knots (range 5), float32.
log_prob: events/s on ``--lp-n`` events (default 10^6) for the engine; the torch-based models are timed on
``--lp-n-torch`` events (rates, not totals: zuko's NSF at ~9k events/s would take minutes on 10^6).
sample: events/s for ``--sample-n`` events (engine), ``--sample-n-torch`` (torch models).

The models are not trained: weights are drawn around the identity with a fixed seed (the cost of a flow
does not depend on what it learned; the spline bins are then non-trivial, not all equal). zuko's flows
get the same architecture (``zuko.flows.NSF(28, transforms=B, bins=8, hidden_features=[128]*3)``,
``zuko.flows.MAF``) and their evaluation runs under ``torch.no_grad()``.

Every library runs with the same threads: ``torch.set_num_threads(T)`` and ``nfhep.set_num_threads(T)``
(``--threads``, default 1).

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_engine.py --out benchmarks/results/engine.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import nfhep
from nfhep.model import Model

__all__ = ["main"]

D = 28
HIDDEN = [128, 128, 128]


def _model(kind: str, bijectors: int) -> Model:
    torch.manual_seed(0)
    opts = {"bijectors": bijectors, "hidden": HIDDEN}
    if kind == "arqs":
        opts.update(knots=8, range=5.0)
    m = Model.create(kind, [f"f{j}" for j in range(D)], **opts)
    x = np.random.default_rng(1).normal(size=(20000, D))
    m.preprocessing.fit(x)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_((0.05 if name.endswith("weight") else 0.1) * torch.randn(p.shape, generator=g))
    return m.float().eval()


def _zuko(kind: str, bijectors: int):
    import zuko

    if kind == "arqs":
        return zuko.flows.NSF(D, transforms=bijectors, bins=8, hidden_features=HIDDEN)
    return zuko.flows.MAF(D, transforms=bijectors, hidden_features=HIDDEN)


def _rate(fn, n: int, repeats: int) -> float:
    fn(min(n, 2048))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def run(kind: str, bijectors: int, args) -> dict[str, float]:
    m = _model(kind, bijectors)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        nfhep.save(m, path)
        eng = nfhep.Engine(path)
        rng = np.random.default_rng(3)
        x = rng.normal(size=(args.lp_n, D)).astype(np.float32)
        out["engine_lp"] = _rate(lambda n: eng.log_prob(x[:n]), args.lp_n, args.repeats)
        out["engine_sample"] = _rate(lambda n: eng.sample(n, seed=1), args.sample_n, args.repeats)
    xt = torch.from_numpy(x[: args.lp_n_torch])
    with torch.no_grad():
        out["torch_lp"] = _rate(lambda n: m.log_prob(xt[:n]), args.lp_n_torch, args.repeats)
        out["torch_sample"] = _rate(lambda n: m.sample(n), args.sample_n_torch, 1)
        z = _zuko(kind, bijectors)
        out["zuko_lp"] = _rate(lambda n: z().log_prob(xt[:n]), args.lp_n_torch, args.repeats)
        out["zuko_sample"] = _rate(lambda n: z().sample((n,)), args.sample_n_zuko, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lp-n", type=int, default=1_000_000)
    p.add_argument("--lp-n-torch", type=int, default=50_000)
    p.add_argument("--sample-n", type=int, default=100_000)
    p.add_argument("--sample-n-torch", type=int, default=10_000)
    p.add_argument("--sample-n-zuko", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kinds", default="arqs,maf")
    p.add_argument("--bijectors", default="2,5")
    p.add_argument("--out", type=Path, help="write the markdown report here as well")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nfhep.set_num_threads(args.threads)
    rows = []
    for kind in args.kinds.split(","):
        for b in (int(v) for v in args.bijectors.split(",")):
            r = run(kind, b, args)
            rows.append((kind, b, r))
            print(kind, b, {k: round(v) for k, v in r.items()}, flush=True)
    lines = [
        "| flow | bijectors | engine log_prob [ev/s] | torch model | zuko | engine/torch | engine/zuko "
        "| engine sample [ev/s] | torch model | zuko | engine/torch | engine/zuko |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, b, r in rows:
        lines.append(
            f"| {kind} | {b} | {r['engine_lp']:,.0f} | {r['torch_lp']:,.0f} | {r['zuko_lp']:,.0f} "
            f"| {r['engine_lp'] / r['torch_lp']:.2f}x | {r['engine_lp'] / r['zuko_lp']:.2f}x "
            f"| {r['engine_sample']:,.0f} | {r['torch_sample']:,.0f} | {r['zuko_sample']:,.0f} "
            f"| {r['engine_sample'] / r['torch_sample']:.1f}x | {r['engine_sample'] / r['zuko_sample']:.1f}x |"
        )
    info = nfhep.build_info()
    report = "\n".join(
        [
            "# Inference engine benchmark: nfhep.Engine vs nfhep's torch model vs zuko",
            "",
            f"{platform.processor() or platform.machine()}, {args.threads} thread(s) for every library, "
            f"SIMD {info['simd']}, torch {torch.__version__}; D = {D}, hidden 3x128, 8 knots, float32; "
            f"engine log_prob on {args.lp_n:,} events, torch models on {args.lp_n_torch:,}; best of "
            f"{args.repeats}.",
            "",
            *lines,
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
