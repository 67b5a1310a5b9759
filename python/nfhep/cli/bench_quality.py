"""``nfhep bench-quality``: the CMoG validation study (arXiv:2302.12024) with nfhep's defaults."""

from __future__ import annotations

import argparse
import shlex
import sys

COMMAND = "bench-quality"
HELP = "validation study: learn correlated mixtures of Gaussians (D = 4 ... 100) with all four flow families"
DESCRIPTION = """\
The CMoG benchmark of arXiv:2302.12024: for each dimension D, a mixture of 3 correlated multivariate
Gaussians with an exact log-density (nfhep.cmog.CMoG, seed 0) gives a training, a test and a second true
sample; each flow family (maf, realnvp, crqs, arqs) is built and trained as `nfhep train` does with
no option but the features (automatic preprocessing, data-size defaults), stopped at a time budget per
run (--max-minutes; the best weights kept), then sampled and evaluated with the C++ engine.
The papers' metrics compare the flow's sample with the test sample (median KS p-value, SWD, Frobenius
norm, HPDIe; C2ST AUC) beside the same metrics for two true samples (truth vs truth), with the test NLL
minus the true NLL (an estimate of KL(p||q)), training time and events/s of log p and sampling.
The median KS p-value and the SWD are computed twice: with the papers' protocol (their code splits the
samples into 100 batches of n/100 events: --paper-n-iter) and with a strict one (10 batches of n/10
events: --n-iter; larger batches see smaller differences, so its p-values are lower). The target and the
comparison with the papers use the papers' protocol; both are in the tables.

Writes into --out: RESULTS.md (tables, machine, settings, the target check: at D = 32 and 100 the best
family reaches median KS p >= 0.45 and SWD <= 2x truth vs truth), results.json, ks_vs_dim.png and
swd_ratio_vs_dim.png. See docs/quality.md.

The full study (6 dimensions x 4 families, 3 minutes of training each at most) takes about 40 minutes on
2 CPUs with --jobs 2 (two runs at a time; the committed run, --max-minutes 10, took 54 minutes);
--fast runs D = 4, 8 with 2e4 training events, 30 epochs at most and 0.5 min per run (a few minutes).
Explicit options override what --fast chooses.

examples:
  nfhep bench-quality --out quality/                       # the full study
  nfhep bench-quality --fast --out /tmp/q                  # a few minutes
  nfhep bench-quality --dims 32,100 --families arqs,maf --max-minutes 5 --out q32/
"""

__all__: list[str] = []

#: the options that set up a study (``--from-json`` refuses them)
_STUDY_OPTIONS = (
    "train_events",
    "test_events",
    "max_minutes",
    "max_epochs",
    "n_iter",
    "paper_n_iter",
    "seed",
    "jobs",
)


def _ints(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one dimension")
    return out


def _names(value: str) -> list[str]:
    out = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected at least one flow family")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", type=_ints, default=None, help="comma-separated dimensions [4,8,16,32,64,100]")
    p.add_argument(
        "--families", type=_names, default=None, help="comma-separated flow families [maf,realnvp,crqs,arqs]"
    )
    p.add_argument("--fast", action="store_true", help="a minutes-long subset (D = 4, 8; small samples)")
    p.add_argument("--out", default="bench-quality", help="output directory [./bench-quality]")
    p.add_argument(
        "--train-events", type=int, default=None, help="training events per D, 20%% held out [100000]"
    )
    p.add_argument(
        "--test-events", type=int, default=None, help="test events (and flow events) per D [100000]"
    )
    p.add_argument(
        "--max-minutes", type=float, default=None, help="training time budget per (D, family) run [3]"
    )
    p.add_argument("--max-epochs", type=int, default=None, help="epoch limit besides the time budget [200]")
    p.add_argument(
        "--n-iter", type=int, default=None, help="batches of the strict protocol (all metrics) [10]"
    )
    p.add_argument(
        "--paper-n-iter",
        type=int,
        default=None,
        help="batches of the papers' protocol (KS p-value, SWD; the target uses it) [100]",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the target, samples and training [0]")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at the same time, one process (one torch thread) each; results do not depend "
        "on it, the timing columns do [1]",
    )
    p.add_argument(
        "--from-json",
        metavar="RESULTS_JSON",
        default=None,
        help="train nothing: rewrite RESULTS.md and the plots in --out from a results.json of an earlier run",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-run lines")


def run(args: argparse.Namespace, *, out=None) -> int:
    out = out if out is not None else sys.stdout
    from nfhep import quality

    if args.from_json is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in _STUDY_OPTIONS + ("dims", "families")
            if getattr(args, name, None) is not None
        ] + (["--fast"] if args.fast else [])
        if given:
            raise ValueError(
                f"--from-json trains nothing, so {', '.join(given)} would be ignored: drop "
                f"{'it' if len(given) == 1 else 'them'} (the results.json keeps its own settings)"
            )
        result = quality.load_results(args.from_json)
        paths = quality.write_results(result, args.out)
        print(
            f"nfhep bench-quality: rewrote {', '.join(str(p) for p in paths)} from {args.from_json}", file=out
        )
        return 0

    for name in ("train_events", "test_events", "max_epochs", "n_iter", "paper_n_iter", "jobs"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    settings = quality.settings_from(
        fast=args.fast,
        dims=args.dims,
        families=args.families,
        train_events=args.train_events,
        test_events=args.test_events,
        max_minutes=args.max_minutes,
        max_epochs=args.max_epochs,
        n_iter=args.n_iter,
        paper_n_iter=args.paper_n_iter,
        seed=args.seed,
        jobs=args.jobs,
    )
    command = _reconstruct(args)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=out, flush=True)

    result = quality.run_study(
        settings,
        progress=not args.quiet,
        log=log,
        command=command,
        on_run=lambda partial: quality.write_results(
            partial, args.out
        ),  # an interrupted study keeps its runs
    )
    paths = quality.write_results(result, args.out)
    failed = [r for r in result.runs if r.error is not None]
    for c in quality.target_check(result):
        print(
            f"nfhep bench-quality: D={c['dim']}: best {quality.FAMILY_NAMES[c['family']]}, median KS p "
            f"{c['ks_p']:.3f} ({'met' if c['ks_ok'] else 'NOT met'}), SWD {c['swd_ratio']:.2f}x truth "
            f"({'met' if c['swd_ok'] else 'NOT met'}) with the {c['protocol']} protocol; strict: KS p "
            f"{c['ks_p_strict']:.3f}, SWD {c['swd_ratio_strict']:.2f}x",
            file=out,
        )
    print(
        f"nfhep bench-quality: {len(result.runs)} runs ({len(failed)} failed) in "
        f"{result.wall_seconds / 60:.1f} min; "
        f"wrote {', '.join(str(p) for p in paths)}",
        file=out,
    )
    return 1 if failed and len(failed) == len(result.runs) else 0


def _reconstruct(args: argparse.Namespace) -> str:
    parts = ["nfhep", "bench-quality"]
    if args.fast:
        parts.append("--fast")
    for name in ("dims", "families"):
        v = getattr(args, name)
        if v is not None:
            parts += [f"--{name}", ",".join(map(str, v))]
    for name in _STUDY_OPTIONS:
        v = getattr(args, name)
        if v is not None:
            parts += [f"--{name.replace('_', '-')}", f"{v:g}" if isinstance(v, float) else str(v)]
    parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)
