"""log_prob through the ONNX export (onnxruntime) against nfhep.Engine and the torch model, one thread each.

Setup (issue 14 item 4): A-RQS, 28 features, 5 bijectors, hidden 3x128, 8 knots on [-5, 5], float32,
``--n`` events (default 10^5) evaluated in chunks of ``--chunk`` rows (default 10^4; the same chunks for
every contender). The model is not trained: weights are drawn around the identity with a fixed seed (the
cost of a flow does not depend on what it learned), as in ``bench_engine.py``.

Contenders, all on one thread:

- ``onnxruntime``: the graph of :func:`nfhep.onnx_export.export_onnx` in an ``InferenceSession``
  (``intra_op_num_threads = inter_op_num_threads = 1``, sequential execution, all graph optimisations);
- ``nfhep.Engine``: the C++ inference engine on the model file (``nfhep.set_num_threads(1)``);
- ``torch``: ``Model.log_prob`` under ``torch.no_grad()`` (``torch.set_num_threads(1)``; its bijectors
  call nfhep's C++ kernels, also on one thread).

Times are the best of ``--reps`` (default 3) after one warm-up pass; the table gives events/s, the ratio
to onnxruntime, and each contender's largest ``|Δ| / max(1, |log p|)`` to the torch model. The header
records the load average: the development machines are shared, so read the numbers as orders of magnitude.

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_onnx.py --save benchmarks/results/onnx.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import nfhep
from nfhep.model import Model
from nfhep.onnx_export import export_onnx

__all__ = ["main"]

D = 28


def _model(bijectors: int, hidden: list[int], knots: int) -> Model:
    torch.manual_seed(0)
    m = Model.create(
        "arqs", [f"f{j}" for j in range(D)], bijectors=bijectors, hidden=hidden, knots=knots, range=5.0
    )
    m.preprocessing.fit(np.random.default_rng(1).normal(size=(20000, D)))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_((0.05 if name.endswith("weight") else 0.1) * torch.randn(p.shape, generator=g))
    return m.float().eval()


def _best(fn, chunks: list[np.ndarray], reps: int) -> tuple[float, np.ndarray]:
    fn(chunks[0])  # warm-up
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = np.concatenate([fn(c) for c in chunks])
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="events [1e5]")
    ap.add_argument("--chunk", type=int, default=10_000, help="rows per call [1e4]")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, best taken [3]")
    ap.add_argument("--bijectors", type=int, default=5)
    ap.add_argument("--hidden", default="3x128")
    ap.add_argument("--knots", type=int, default=8)
    ap.add_argument("--save", default=None, help="write the table as markdown here")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    torch.set_num_threads(1)
    nfhep.set_num_threads(1)
    hidden = nfhep.flows.parse_hidden(args.hidden)
    m = _model(args.bijectors, hidden, args.knots)
    x = m.sample(args.n, generator=torch.Generator().manual_seed(3)).numpy().astype(np.float32)
    chunks = [x[i : i + args.chunk] for i in range(0, len(x), args.chunk)]
    load0 = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        path = nfhep.save(m, Path(tmp) / "m.safetensors")
        t0 = time.perf_counter()
        onnx_path = export_onnx(path, Path(tmp) / "m.onnx")
        t_export = time.perf_counter() - t0
        size_mb = onnx_path.stat().st_size / 1e6
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        n_nodes = len(__import__("onnx").load(str(onnx_path)).graph.node)
        eng = nfhep.Engine(path)

        def run_torch(c):
            with torch.no_grad():
                return m.log_prob(torch.from_numpy(c)).numpy()

        results = {
            "onnxruntime": _best(lambda c: sess.run(["log_prob"], {"x": c})[0], chunks, args.reps),
            "nfhep.Engine": _best(eng.log_prob, chunks, args.reps),
            "torch (Model.log_prob)": _best(run_torch, chunks, args.reps),
        }
    load1 = os.getloadavg()
    ref = results["torch (Model.log_prob)"][1].astype(np.float64)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"# ONNX export: log_prob events/s, one thread (nfhep {nfhep.__version__}, git {rev or '?'})",
        "",
        f"A-RQS, {D} features, {args.bijectors} bijectors, hidden {args.hidden}, {args.knots} knots, "
        "float32; "
        f"{args.n} events in chunks of {args.chunk}; best of {args.reps}. onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"load average {load0[0]:.2f} -> {load1[0]:.2f} (shared machine). ONNX graph: {n_nodes} nodes, "
        f"{size_mb:.1f} MB, exported in {t_export:.2f} s.",
        "",
        "| contender | seconds | events/s | relative to onnxruntime | max rel. diff to torch |",
        "|---|---|---|---|---|",
    ]
    t_ort = results["onnxruntime"][0]
    for name, (t, lp) in results.items():
        diff = float(np.max(np.abs(lp - ref) / np.maximum(1.0, np.abs(ref))))
        lines.append(f"| {name} | {t:.3f} | {args.n / t:,.0f} | {t_ort / t:.2f}x | {diff:.2e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        Path(args.save).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
