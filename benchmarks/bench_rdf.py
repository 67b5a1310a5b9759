"""The RDataFrame path (macros/eval_ntuple.C, macros/sample_tree.C) against the engine's raw throughput.

Setup (issue 13): A-RQS, 28 features, 5 bijectors, hidden 3x128, 8 knots, float32 (the model of
bench_engine.py); an ntuple of ``--n`` (default 10^6) events with 28 Float_t branches written by ROOT
(clusters of ROOT's default size, so that RDataFrame's implicit multi-threading has tasks to share).

- engine raw: ``nfhep.Engine.log_prob`` on the same events already in memory as one numpy array,
  ``nfhep.set_num_threads(T)``;
- eval_ntuple.C batched and per event: ``root -b -q macros/nfhep_setup.C 'macros/eval_ntuple.C(...)'``
  with ``ROOT::EnableImplicitMT(T)``; its rate is events / the macro's own wall time (reading the tree,
  the evaluation, the sequential Snapshot of the friend tree; ROOT's start-up, ~2-3 s, is not counted
  and is given apart);
- sample_tree.C against ``nfhep.Engine.sample`` (same threads), writing the TTree included.

    flock /tmp/nfhep-heavy.lock python benchmarks/bench_rdf.py --out benchmarks/results/rdf.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import nfhep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import D, _model  # noqa: E402

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
MACROS = REPO / "macros"

MAKE_NTUPLE = r"""
#include <TFile.h>
#include <TRandom3.h>
#include <TTree.h>
int make_bench_ntuple(const char* out, Long64_t n) {
  TFile f(out, "RECREATE");
  TTree t("events", "bench");
  Float_t x[%(D)d];
  for (int j = 0; j < %(D)d; ++j) t.Branch(Form("f%%d", j), &x[j], Form("f%%d/F", j));
  TRandom3 r(1);
  for (Long64_t i = 0; i < n; ++i) {
    for (int j = 0; j < %(D)d; ++j) x[j] = r.Gaus(0, 1);
    t.Fill();
  }
  t.Write();
  return 0;
}
"""


def _root() -> str:
    here = Path(sys.executable).parent / "root"
    return str(here) if here.exists() else "root"


def _run_root(*macros: str, cwd: Path) -> tuple[str, float]:
    env = dict(os.environ)
    env.setdefault("NFHEP_CONFIG", f"{sys.executable} -m nfhep config")
    t0 = time.perf_counter()
    r = subprocess.run([_root(), "-b", "-q", "-l", *macros], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"root {' '.join(macros)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout, wall


def _macro_rate(stdout: str) -> float:
    m = re.search(r"in ([0-9.]+) s \(([0-9]+) events/s\)", stdout)
    if not m:
        raise RuntimeError(f"no rate in the macro's output:\n{stdout[-1000:]}")
    return float(m.group(2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for everyone (default 2)")
    p.add_argument("--n", type=int, default=1_000_000, help="events in the ntuple (default 10^6)")
    p.add_argument("--sample-n", type=int, default=200_000, help="events to sample (default 2x10^5)")
    p.add_argument("--repeats", type=int, default=3, help="best of (default 3)")
    p.add_argument("--bijectors", type=int, default=5)
    p.add_argument("--out", type=Path, help="write the markdown report here as well")
    args = p.parse_args(argv)
    nfhep.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    setup = str(MACROS / "nfhep_setup.C")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model = tmp / "arqs.safetensors"
        nfhep.save(_model("arqs", args.bijectors), model)
        (tmp / "make_bench_ntuple.C").write_text(MAKE_NTUPLE % {"D": D})
        ntuple = tmp / "bench.root"
        _, t_make = _run_root(f'make_bench_ntuple.C("{ntuple}", {args.n})', cwd=tmp)
        print(f"ntuple: {args.n:,} events x {D} Float_t in {t_make:.1f} s", flush=True)
        _, t_start = _run_root(setup, cwd=tmp)  # ROOT start-up + nfhep_setup.C alone

        import uproot

        with uproot.open(ntuple) as f:
            cols = f["events"].arrays([f"f{j}" for j in range(D)], library="np")
        x = np.stack([cols[f"f{j}"] for j in range(D)], axis=1).astype(np.float32)
        eng = nfhep.Engine(model)
        eng.log_prob(x[:4096])
        raw = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            lp_raw = eng.log_prob(x)
            raw.append(args.n / (time.perf_counter() - t0))
        rates: dict[str, float] = {"engine": max(raw)}
        print(f"engine raw: {rates['engine']:,.0f} events/s", flush=True)
        for mode, flag in (("batched", "false"), ("per event", "true")):
            best = 0.0
            for _ in range(args.repeats if mode == "batched" else 1):
                out = tmp / "lp.root"
                call = (
                    f'{MACROS / "eval_ntuple.C"}("{model}", "{ntuple}", "events", "{out}", "log_prob", '
                    f"{args.threads}, {flag})"
                )
                stdout, _ = _run_root(setup, call, cwd=tmp)
                best = max(best, _macro_rate(stdout))
            rates[mode] = best
            with uproot.open(out) as f:
                lp = f["events"]["log_prob"].array(library="np")
            err = float(np.max(np.abs(lp - lp_raw) / np.maximum(1.0, np.abs(lp_raw))))
            print(
                f"eval_ntuple.C {mode}: {best:,.0f} events/s (max rel. diff. to the engine {err:.1e})",
                flush=True,
            )

        eng.sample(1000, seed=0)
        t0 = time.perf_counter()
        eng.sample(args.sample_n, seed=0, return_log_prob=True)
        rates["engine sample"] = args.sample_n / (time.perf_counter() - t0)
        gen = tmp / "gen.root"
        call = f'{MACROS / "sample_tree.C"}("{model}", {args.sample_n}, "{gen}", "events", 0, "", 0, '
        call += f"{args.threads})"
        stdout, _ = _run_root(setup, call, cwd=tmp)
        rates["sample_tree"] = _macro_rate(stdout)
        es, st = rates["engine sample"], rates["sample_tree"]
        print(f"sampling: engine {es:,.0f}, sample_tree.C {st:,.0f} events/s")

    e = rates["engine"]
    report = "\n".join(
        [
            "# RDataFrame path vs the engine's raw throughput",
            "",
            f"{platform.processor() or platform.machine()}, {args.threads} threads for both "
            f"(ROOT::EnableImplicitMT / nfhep.set_num_threads), SIMD {nfhep.build_info()['simd']}; "
            f"A-RQS, D = {D}, {args.bijectors} bijectors, hidden 3x128, 8 knots, float32; {args.n:,} "
            f"events; best of {args.repeats} (per event: 1 run). ROOT start-up + nfhep_setup.C: "
            f"{t_start:.1f} s, not counted. Load average (1 min) at the start {load0:.2f}, at the end "
            f"{os.getloadavg()[0]:.2f}.",
            "",
            "| path | events/s | / engine raw |",
            "|---|---|---|",
            f"| engine raw (`nfhep.Engine.log_prob`, numpy in memory) | {e:,.0f} | 1.00 |",
            f"| `eval_ntuple.C` batched (read + evaluate + friend tree) | {rates['batched']:,.0f} "
            f"| {rates['batched'] / e:.2f} |",
            f"| `eval_ntuple.C` per event (`FlowFunctorRVec` in `DefineSlot`) | {rates['per event']:,.0f} "
            f"| {rates['per event'] / e:.2f} |",
            f"| engine sample (`nfhep.Engine.sample`, with log p) | {rates['engine sample']:,.0f} | |",
            f"| `sample_tree.C` (sample + fill the TTree) | {rates['sample_tree']:,.0f} "
            f"| {rates['sample_tree'] / rates['engine sample']:.2f} of engine sample |",
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
