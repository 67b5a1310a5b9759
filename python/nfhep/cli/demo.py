"""``nfhep demo``: the main job end to end on a built-in synthetic ntuple (no file of yours needed)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COMMAND = "demo"
HELP = "generate a synthetic ntuple, train an A-RQS flow on it, sample it and compare (about a minute)"
DESCRIPTION = """\
Run nfhep's main job on a built-in default, without any input of yours:

  1. generate a deterministic correlated mixture of Gaussians (CMoG, the test density of
     arXiv:2302.12024) in D dimensions and write it as ROOT ntuples (data.root, test.root; tree "events");
  2. train an A-RQS flow on data.root exactly as `nfhep train` does (progress bar), save model.safetensors
     and model.history.json;
  3. sample the flow into samples.root exactly as `nfhep sample` does;
  4. compare: the exact test negative log-likelihood of the true density vs the flow's (their difference
     estimates KL(true || flow) >= 0), per-feature means/stds, and, when nfhep.metrics is available, the
     two-sample metrics table (metrics.md), plots (plots/) and report.html: one self-contained file with
     the tables, the training curve, marginals with ratio panels and a corner plot, to hand around.

Everything goes to --out (default ./nfhep-demo/). Defaults take about a minute on two CPU cores.
"""

__all__ = ["CMoG", "make_cmog", "run_demo"]


@dataclass(frozen=True)
class CMoG:
    """A correlated mixture of Gaussians with an exact density.

    ``p(x) = sum_k w_k N(x; mu_k, Sigma_k)``, ``Sigma_k = L_k L_k^T`` with random lower-triangular
    ``L_k`` (positive diagonal), all drawn from a seeded generator.
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    chols: np.ndarray  # (K, D, D) lower triangular

    @property
    def dims(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, *, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        z = rng.standard_normal((n, self.dims))
        return self.means[comp] + np.einsum("nij,nj->ni", self.chols[comp], z)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact ``log p(x)`` in float64 (Cholesky solve per component, log-sum-exp over components)."""
        from scipy.linalg import solve_triangular
        from scipy.special import logsumexp

        x = np.asarray(x, dtype=np.float64)
        d = self.dims
        terms = []
        for w, mu, L in zip(self.weights, self.means, self.chols, strict=True):
            r = solve_triangular(L, (x - mu).T, lower=True)
            maha = np.sum(r * r, axis=0)
            logdet = 2.0 * np.sum(np.log(np.diag(L)))
            terms.append(np.log(w) - 0.5 * (maha + logdet + d * np.log(2 * np.pi)))
        return logsumexp(np.stack(terms), axis=0)


def make_cmog(dims: int = 4, *, components: int = 3, seed: int = 0) -> CMoG:
    """The demo's density: ``components`` Gaussians in ``dims`` dimensions with random correlations."""
    if dims < 1 or components < 1:
        raise ValueError(f"dims and components must be positive, got {dims}, {components}")
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, size=components)
    w /= w.sum()
    means = rng.uniform(-3.0, 3.0, size=(components, dims))
    chols = np.zeros((components, dims, dims))
    for k in range(components):
        a = rng.normal(scale=0.4, size=(dims, dims))
        L = np.tril(a, -1) + np.diag(rng.uniform(0.4, 1.0, size=dims))
        chols[k] = L
    return CMoG(w, means, chols)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="nfhep-demo", help="output directory [./nfhep-demo]")
    p.add_argument("--events", type=int, default=20_000, help="training events [20000]")
    p.add_argument("--test-events", type=int, default=None, help="test events [events/4]")
    p.add_argument("--dims", type=int, default=4, help="dimensions of the synthetic density [4]")
    p.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="maximum training epochs (early stopping may end sooner) [100]",
    )
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience [10]")
    p.add_argument(
        "--flow", choices=("maf", "realnvp", "crqs", "arqs"), default="arqs", help="flow family [arqs]"
    )
    p.add_argument("--hidden", default="3x64", help="conditioner layers [3x64]")
    p.add_argument("--bijectors", type=int, default=2, help="flow layers [2]")
    p.add_argument("--knots", type=int, default=8, help="spline bins [8]")
    p.add_argument("--range", type=float, default=5.0, help="spline range B [5]")
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="flows averaged, as nfhep train --ensemble (which chooses 3 below 20,000 training events); "
        "the demo trains one to stay quick [1]",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and sampling [0]")
    p.add_argument("--no-c2st", action="store_true", help="skip the classifier two-sample test (faster)")
    p.add_argument(
        "--no-plots", action="store_true",
        help="skip the comparison plots, also in report.html (faster; its tables are still written)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_demo(args: argparse.Namespace, *, out=None) -> dict[str, Any]:
    """Run the demo; returns the paths written and the figures printed."""
    out = out if out is not None else sys.stdout
    import torch

    from nfhep import io as nio
    from nfhep import modelfile
    from nfhep.cli import sample as sample_cli
    from nfhep.cli import train as train_cli

    t_start = time.perf_counter()
    if args.events < 10:
        raise ValueError(f"--events must be at least 10, got {args.events}")
    n_test = args.test_events if args.test_events is not None else max(args.events // 4, 10)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    features = [f"x{j}" for j in range(args.dims)]
    truth = make_cmog(args.dims, seed=args.seed)

    def log(msg: str) -> None:
        print(f"[demo {time.perf_counter() - t_start:6.1f}s] {msg}", file=out, flush=True)

    # 1. the ntuples
    x_train = truth.sample(args.events, seed=args.seed + 1)
    x_test = truth.sample(n_test, seed=args.seed + 2)
    data_path, test_path = outdir / "data.root", outdir / "test.root"
    nio.write_root(data_path, "events", {f: x_train[:, j] for j, f in enumerate(features)})
    nio.write_root(test_path, "events", {f: x_test[:, j] for j, f in enumerate(features)})
    log(
        f"wrote {args.events} + {n_test} events of a {args.dims}-D correlated mixture of "
        f"{len(truth.weights)} Gaussians to {data_path} and {test_path} (tree 'events')"
    )

    # 2. train, exactly as `nfhep train` would
    model_path = outdir / "model.safetensors"
    opts = train_cli.resolve_options(
        {
            "data": [f"{data_path}:events"],
            "features": features,
            "flow": args.flow,
            "bijectors": args.bijectors,
            "hidden": args.hidden,
            "knots": args.knots,
            "range": args.range,
            "epochs": args.epochs,
            "patience": args.patience,
            "lr_patience": max(1, args.patience // 2),
            "seed": args.seed,
            "ensemble": getattr(args, "ensemble", 1),
            "output": str(model_path),
            "quiet": args.quiet,
        }
    )
    log(
        f"training {args.flow} ({args.bijectors} bijectors, hidden {args.hidden}"
        + (f", an ensemble of {args.ensemble}" if getattr(args, "ensemble", 1) > 1 else "")
        + ") "
        f"for up to {args.epochs} epochs"
    )
    result = train_cli.train_from_options(opts, out=out)

    # 3. sample, exactly as `nfhep sample` would
    samples_path = outdir / "samples.root"
    sargs = argparse.Namespace(
        model=str(model_path),
        events=float(n_test),
        output=f"{samples_path}:events",
        context=None,
        context_from=None,
        seed=args.seed + 3,
        chunk_size=100_000,
        log_prob=False,
        compression="zstd1",
        quiet=args.quiet,
    )
    sample_cli.run(sargs, out=out)

    # 4. compare
    model = modelfile.load(model_path)  # what a user would get back from the file
    test = nio.read_features(f"{test_path}:events", features, hash_files=False).x
    gen = nio.read_features(f"{samples_path}:events", features, hash_files=False).x
    dtype = next(p.dtype for p in model.parameters())
    with torch.no_grad():
        lp_model = model.log_prob(torch.as_tensor(test, dtype=dtype)).double().numpy()
    nll_true = float(-truth.log_prob(test).mean())
    nll_model = float(-lp_model.mean())
    se = float(np.std(lp_model - truth.log_prob(test), ddof=1) / np.sqrt(len(test)))
    lines = [
        "",
        f"test NLL (nats/event, {len(test)} events):  true density {nll_true:.4f}   flow {nll_model:.4f}   "
        f"difference {nll_model - nll_true:+.4f} ± {se:.4f}  (≈ KL(true‖flow), 0 is perfect)",
        "",
        "| feature | mean (test) | mean (flow) | std (test) | std (flow) |",
        "|---|---|---|---|---|",
    ]
    for j, f in enumerate(features):
        lines.append(
            f"| {f} | {test[:, j].mean():.4f} | {gen[:, j].mean():.4f} | {test[:, j].std():.4f} | "
            f"{gen[:, j].std():.4f} |"
        )
    print("\n".join(lines), file=out)
    run_info = [
        ("density", f"{args.dims}-D correlated mixture of {len(truth.weights)} Gaussians (seed {args.seed})"),
        ("events (train / test / sampled)", f"{args.events} / {n_test} / {n_test}"),
        ("flow", args.flow),
        ("bijectors / hidden / knots / range",
         f"{args.bijectors} / {args.hidden} / {args.knots} / {args.range:g}"),
        ("test NLL, true density (nats/event)", f"{nll_true:.4f}"),
        ("test NLL, flow (nats/event)", f"{nll_model:.4f}"),
        ("NLL difference ≈ KL(true‖flow)", f"{nll_model - nll_true:+.4f} ± {se:.4f}"),
    ]  # fmt: skip
    moments = (
        "means and standard deviations (x = test sample, y = flow sample)",
        ["feature", "mean (test)", "mean (flow)", "std (test)", "std (flow)"],
        [[f, f"{test[:, j].mean():.4f}", f"{gen[:, j].mean():.4f}", f"{test[:, j].std():.4f}",
          f"{gen[:, j].std():.4f}"] for j, f in enumerate(features)],
    )  # fmt: skip
    metrics_note = _metrics_report(
        test,
        gen,
        outdir,
        features,
        seed=args.seed,
        c2st=not getattr(args, "no_c2st", False),
        plots=not getattr(args, "no_plots", False),
        out=out,
        history_file=Path(result["history"]),
        run_info=run_info,
        extra_tables=[moments],
    )
    log(
        f"done: {outdir}/ holds data.root, test.root, model.safetensors, model.history.json, samples.root"
        + ("" if metrics_note.startswith("two-sample metrics skipped") else ", metrics.md, report.html")
    )
    return {
        "out": str(outdir),
        "model": str(model_path),
        "samples": str(samples_path),
        "nll_true": nll_true,
        "nll_model": nll_model,
        "nll_se": se,
        "history": result["summary"],
        "metrics": metrics_note,
    }


def _metrics_report(
    test, gen, outdir: Path, features, *, seed: int, c2st: bool, plots: bool, out, history_file: Path,
    run_info, extra_tables,
) -> str:  # fmt: skip
    """Two-sample metrics through nfhep.metrics.compare when that module is available: metrics.md,
    plots/ and report.html."""
    try:
        from nfhep.metrics import compare
        from nfhep.metrics.report_html import load_history, write_html
    except ImportError as err:
        note = f"two-sample metrics skipped: nfhep.metrics.compare is not available in this build ({err})"
        print(note, file=out)
        return note
    report = compare(test, gen, features=list(features), seed=seed, run_c2st=c2st)
    table = report.to_markdown(outdir / "metrics.md")
    written = report.plot(outdir / "plots") if plots else []
    html_path = write_html(
        report, outdir / "report.html", history=load_history(history_file), title="nfhep demo",
        run_info=run_info, extra_tables=extra_tables, plots=plots,
    )  # fmt: skip
    print(
        "\ntwo-sample metrics (x = test sample from the true density, y = flow sample):\n" + table,
        file=out,
    )
    print(
        f"metrics table: {outdir / 'metrics.md'}"
        + (f"; {len(written)} plots in {outdir / 'plots'}" if plots else "")
        + f"; report to hand around: {html_path}",
        file=out,
    )
    return "metrics computed with nfhep.metrics.compare"


def run(args: argparse.Namespace) -> int:
    run_demo(args)
    return 0
