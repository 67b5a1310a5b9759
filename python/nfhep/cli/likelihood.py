"""``nfhep likelihood``: profiles, HPD intervals and marginals of a flow trained on parameter samples."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

COMMAND = "likelihood"
HELP = "profile likelihoods, HPD intervals/regions and marginals of a flow over parameters (NFlikelihood)"
DESCRIPTION = """\
For a flow trained on posterior or likelihood samples of parameters (arXiv:2309.09743), compute and plot:

  --profile P [P2]   the profile -2 log p minimised over all other parameters (L-BFGS in torch, warm-started
                     along the scan), 1-D with Wilks intervals (Delta = 1, 4, 9), 2-D contours at the chi2_2
                     quantiles; with --marginal also -2 log of the marginal density from sampled events
  --hpdi P [P2]      highest-density intervals (1-D, possibly disjoint) or regions (2-D) from sampled events
  --at NAME=V,...    log p and -2 log p at a point (through the C++ engine)

Each option may be repeated. Probabilities default to 68.27/95.45/99.73% (--probs). Scan ranges default
to the 0.05%..99.95% quantiles of the sampled events (--range NAME=LO:HI to set one). Writes PNGs,
CSV tables (every profile with its optima, the 1-D intervals, the 2-D contour lines) and a summary
likelihood.md to --output (a directory).

examples:
  nfhep likelihood model.safetensors --profile mu --hpdi mu -o out/
  nfhep likelihood model.safetensors --profile mu theta --marginal --points 25 -o out/
  nfhep likelihood model.safetensors --hpdi mu --hpdi mu theta --at mu=1,theta=0.2 -o out/
"""

__all__ = ["parse_point", "parse_range"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.safetensors) written by nfhep train")
    p.add_argument(
        "--profile",
        nargs="+",
        action="append",
        default=[],
        metavar="PARAM",
        help="profile -2 log p over the other parameters for a scan of 1 or 2 parameters (repeatable)",
    )
    p.add_argument(
        "--hpdi",
        nargs="+",
        action="append",
        default=[],
        metavar="PARAM",
        help="HPD intervals (1 parameter) or regions (2 parameters) from sampled events (repeatable)",
    )
    p.add_argument("--marginal", action="store_true", help="add the marginal -2 log density to profile plots")
    p.add_argument(
        "--at", action="append", default=[], metavar="NAME=V,...", help="log p at a point (every parameter)"
    )
    p.add_argument("-o", "--output", required=True, help="output directory (created if missing)")
    p.add_argument("--probs", default=None, help="comma-separated probabilities [0.6827,0.9545,0.9973]")
    p.add_argument("--points", type=int, default=None, help="scan points per parameter [41; 2-D: 21]")
    p.add_argument("--range", action="append", default=[], metavar="NAME=LO:HI", help="scan range of NAME")
    p.add_argument("-n", "--samples", type=float, default=200_000, help="sampled events for HPDI/marginals")
    p.add_argument("--restarts", type=int, default=0, help="random restarts per scan point [0]")
    p.add_argument("--method", choices=("kde", "shortest"), default="kde", help="1-D HPDI method [kde]")
    p.add_argument("--bandwidth", type=float, default=None, help="KDE bandwidth factor [Scott]")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def parse_point(text: str, names: list[str]) -> np.ndarray:
    """``"a=1,b=2"`` -> values in the model's order; every parameter required, unknown names refused."""
    vals: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--at: expected NAME=VALUE, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in names:
            raise ValueError(f"--at: {k!r} is not a parameter of the model; available: {', '.join(names)}")
        try:
            vals[k] = float(v)
        except ValueError:
            raise ValueError(f"--at: value of {k!r} is not a number: {v!r}") from None
    missing = [n for n in names if n not in vals]
    if missing:
        raise ValueError(f"--at: missing value(s) for {', '.join(missing)}")
    return np.array([vals[n] for n in names])


def parse_range(text: str, names: list[str]) -> tuple[str, float, float]:
    if "=" not in text or ":" not in text.split("=", 1)[1]:
        raise ValueError(f"--range: expected NAME=LO:HI, got {text!r}")
    k, v = text.split("=", 1)
    k = k.strip()
    if k not in names:
        raise ValueError(f"--range: {k!r} is not a parameter of the model; available: {', '.join(names)}")
    try:
        lo, hi = (float(s) for s in v.split(":", 1))
    except ValueError:
        raise ValueError(f"--range: bounds of {k!r} are not numbers: {v!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"--range: need finite LO < HI for {k!r}, got {lo}:{hi}")
    return k, lo, hi


def _check_names(opt: str, group: list[str], names: list[str]) -> None:
    if len(group) > 2:
        raise ValueError(f"{opt}: give 1 or 2 parameters, got {len(group)}: {' '.join(group)}")
    for g in group:
        if g not in names:
            raise ValueError(f"{opt}: {g!r} is not a parameter of the model; available: {', '.join(names)}")
    if len(set(group)) != len(group):
        raise ValueError(f"{opt}: the same parameter twice: {' '.join(group)}")


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "p"


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _csv(path: Path, header: list[str], rows) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow([f"{v:.10g}" if isinstance(v, float) else v for v in r])
    _write_text(path, buf.getvalue())


def _fmt_iv(ivs) -> str:
    return " ∪ ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in ivs) or "(empty)"


def run(args: argparse.Namespace, *, out=None) -> int:
    out = out if out is not None else sys.stdout
    from nfhep import likelihood as L
    from nfhep import modelfile
    from nfhep.engine import Engine

    engine = Engine(args.model)
    names = list(engine.features)
    if engine.context_features:
        raise ValueError(
            f"the model is conditional on {', '.join(engine.context_features)}; nfhep likelihood handles "
            "unconditional models (use nfhep.likelihood with context= from Python)"
        )
    for g in args.profile:
        _check_names("--profile", g, names)
    for g in args.hpdi:
        _check_names("--hpdi", g, names)
    ats = [parse_point(a, names) for a in args.at]
    ranges = {k: (lo, hi) for k, lo, hi in (parse_range(r, names) for r in args.range)}
    probs = L.SIGMA_PROBS
    if args.probs:
        try:
            probs = tuple(float(s) for s in args.probs.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--probs: not a comma-separated list of numbers: {args.probs!r}") from None
        L._check_probs("--probs", probs)
    if not (args.profile or args.hpdi or ats):
        raise ValueError("nothing to do: give --profile, --hpdi and/or --at")
    if args.points is not None and args.points < 3:
        raise ValueError(f"--points must be at least 3, got {args.points}")
    if args.samples != int(args.samples) or args.samples < 100:
        raise ValueError(f"-n/--samples must be an integer >= 100, got {args.samples}")
    if args.restarts < 0:
        raise ValueError(f"--restarts must be >= 0, got {args.restarts}")
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    col = {n: i for i, n in enumerate(names)}

    lines = [f"# nfhep likelihood: {os.path.basename(args.model)}", ""]
    lines += [f"Parameters: {', '.join(names)}. Probabilities: {', '.join(f'{p:.4g}' for p in probs)}.", ""]
    written: list[Path] = []

    xs = None
    if args.hpdi or args.marginal or any(n not in ranges for g in args.profile for n in g):
        xs = L.sample(engine, int(args.samples), seed=args.seed)

    def scan(n: str, k: int) -> np.ndarray:
        lo, hi = ranges.get(n) or tuple(np.quantile(xs[:, col[n]], [0.0005, 0.9995]))
        return np.linspace(lo, hi, k)

    if ats:
        lp = L.log_density(engine, np.stack(ats))
        lines += ["## log p at points", "", "| " + " | ".join(names) + " | log p | -2 log p |"]
        lines += ["|" + "---|" * (len(names) + 2)]
        for a, v in zip(ats, lp, strict=False):
            lines.append("| " + " | ".join(f"{x:.6g}" for x in a) + f" | {v:.6g} | {-2 * v:.6g} |")
        lines.append("")

    if args.hpdi:
        lines += ["## Highest-density regions (from sampled events)", ""]
        for g in args.hpdi:
            if len(g) == 1:
                h = L.hpdi_1d(
                    xs[:, col[g[0]]], probs, method=args.method, bandwidth=args.bandwidth, name=g[0]
                )
                lines += [f"### {g[0]} ({h.method}, {h.n} events, mode {h.mode:.4g})", ""]
                lines += ["| probability | interval(s) |", "|---|---|"]
                lines += [f"| {p:.4g} | {_fmt_iv(h.intervals[p])} |" for p in probs]
                written.append(
                    L.plot_hpdi_1d(h, outdir / f"hpdi_{_safe(g[0])}.png", samples=xs[:, col[g[0]]])
                )
                _csv(
                    outdir / f"hpdi_{_safe(g[0])}.csv",
                    ["probability", "low", "high"],
                    [(p, lo, hi) for p in probs for lo, hi in h.intervals[p]],
                )
            else:
                r = L.hpdi_2d(xs[:, [col[g[0]], col[g[1]]]], probs, bandwidth=args.bandwidth, names=tuple(g))
                stem = f"hpdi_{_safe(g[0])}_{_safe(g[1])}"
                written.append(
                    L.plot_hpdi_2d(r, outdir / f"{stem}.png", samples=xs[:, [col[g[0]], col[g[1]]]])
                )
                lines += [f"### {g[0]}, {g[1]} ({r.n} events)", "", "| probability | density threshold |"]
                lines += ["|---|---|"] + [f"| {p:.4g} | {r.thresholds[p]:.4g} |" for p in probs]
                _csv(
                    outdir / f"{stem}_contours.csv",
                    ["probability", "line", g[0], g[1]],
                    [
                        (p, k, float(a), float(b))
                        for p in probs
                        for k, line in enumerate(r.contours(p))
                        for a, b in line
                    ],
                )
            lines.append("")

    if args.profile:
        model = modelfile.load(args.model)
        lines += ["## Profiles of -2 log p", ""]
        for g in args.profile:
            k = args.points if args.points is not None else (41 if len(g) == 1 else 21)
            grids = [scan(n, k) for n in g]
            pr = L.profile(model, g, grids, restarts=args.restarts, seed=args.seed, progress=not args.quiet)
            stem = "profile_" + "_".join(_safe(n) for n in g)
            mc = None
            if args.marginal:
                mc = L.marginal_curve(xs[:, [col[n] for n in g]].squeeze(), names=g, bandwidth=args.bandwidth)
            written.append(L.plot_profile(pr, outdir / f"{stem}.png", marginal=mc, probs=probs))
            lines.append(
                f"### {', '.join(g)} (min -2 log p = {pr.minimum:.6g} at "
                + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, pr.best, strict=False))
                + ")"
            )
            lines.append("")
            if len(g) == 1:
                lines += ["| probability | Delta(-2 log p) | interval(s) |", "|---|---|---|"]
                for p in probs:
                    lines.append(
                        f"| {p:.4g} | {L.profile_threshold(p, 1):.4g} | {_fmt_iv(pr.intervals(p))} |"
                    )
                rows = [
                    (float(t), float(v), float(dv), *map(float, x))
                    for t, v, dv, x in zip(pr.grid[0], pr.values, pr.delta, pr.points, strict=False)
                ]
                _csv(outdir / f"{stem}.csv", [g[0], "m2logp", "delta", *[f"best_{n}" for n in names]], rows)
            else:
                rows = [
                    (
                        float(pr.grid[0][i]),
                        float(pr.grid[1][j]),
                        float(pr.values[i, j]),
                        float(pr.delta[i, j]),
                        *map(float, pr.points[i, j]),
                    )
                    for i in range(len(pr.grid[0]))
                    for j in range(len(pr.grid[1]))
                ]
                _csv(
                    outdir / f"{stem}.csv",
                    [g[0], g[1], "m2logp", "delta", *[f"best_{n}" for n in names]],
                    rows,
                )
            lines.append("")
    _write_text(outdir / "likelihood.md", "\n".join(lines))
    print("\n".join(lines), file=out)
    print(
        f"nfhep likelihood: wrote likelihood.md, {len(written)} plot(s) and CSV tables to {outdir}", file=out
    )
    return 0
