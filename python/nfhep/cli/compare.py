"""``nfhep compare``: two-sample comparison of ROOT trees (KS, sliced Wasserstein, HPDIe, C2ST, plots)."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "compare"
HELP = "compare two samples (ROOT trees) with the NFlikelihood papers' two-sample metrics"
DESCRIPTION = """\
Compare a test sample B with a reference sample A, feature by feature and jointly: Kolmogorov-Smirnov
p-values, 1-D and sliced Wasserstein distances, Frobenius norm of the correlation difference, HPDIe,
Anderson-Darling, and a classifier two-sample test (arXiv:2309.09743). Writes a markdown (or JSON)
report and, optionally, plots (marginals with ratio panels, 2-D contours).

With --report or --html, a self-contained HTML report is written as well: one file with every plot
embedded (metrics tables, the training curve when --history is given, marginals with ratio panels and
their statistical uncertainties, a corner plot), to hand around. It goes next to the report with the
suffix .html (out.md -> out.html; a --report ending in .html is the HTML report itself) unless --html
names the file; --no-html skips it. Without --report and --html the markdown goes to stdout and no file
is written.

examples:
  nfhep compare truth.root:events flow.root:events --features x1 x2 x3 --report out.md --plots plots/
  nfhep compare a.root:t b.root:t --features px py --weights w --selection "px > 0" --report out.json
  nfhep compare truth.root flow.root --features x1 x2 --html report.html --history model.history.json
"""

__all__: list[str] = []


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "reference", metavar="A.root[:tree]",
        help="reference sample (x); the tree may be omitted when the file holds exactly one",
    )  # fmt: skip
    p.add_argument("test", metavar="B.root[:tree]", help="sample under test (y)")
    p.add_argument("--features", nargs="+", required=True, help="branches to compare")
    p.add_argument(
        "--weights", nargs="+", metavar="BRANCH", default=None,
        help="weight branch (one name for both inputs, or two: reference then test)",
    )  # fmt: skip
    p.add_argument(
        "--selection",
        default=None,
        help='cut applied to both inputs, ROOT or uproot style (e.g. "px > 0 && abs(py) < 2")',
    )
    p.add_argument(
        "--max-events", type=int, default=None,
        help="use the first N selected events of each input (after the selection)",
    )  # fmt: skip
    p.add_argument("--n-iter", type=int, default=10, help="number of batches (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SWD directions and the C2ST")
    p.add_argument("--no-c2st", action="store_true", help="skip the classifier two-sample test")
    p.add_argument("--report", type=Path, default=None, help="write the report (.md markdown, .json JSON)")
    p.add_argument(
        "--html", type=Path, default=None, metavar="PATH",
        help="write the self-contained HTML report to PATH [default: the --report path with suffix .html]",
    )  # fmt: skip
    p.add_argument("--no-html", action="store_true", help="do not write the HTML report")
    p.add_argument(
        "--history", type=Path, default=None, metavar="MODEL.history.json",
        help="training history of the flow that produced the test sample (written by `nfhep train`); "
        "its training curve goes into the HTML report",
    )  # fmt: skip
    p.add_argument("--plots", type=Path, default=None, help="directory for the plots")
    p.add_argument(
        "--pairs", nargs="+", default=None, metavar="A,B",
        help="feature pairs for 2-D contour plots (default: the most correlated pairs)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from nfhep.io import read_features
    from nfhep.metrics import compare

    wa = wb = None
    if args.weights:
        if len(args.weights) > 2:
            raise ValueError("--weights takes one branch name (both inputs) or two (reference, test)")
        wa, wb = args.weights[0], args.weights[-1]
    pairs = None
    if args.pairs:
        pairs = []
        for s in args.pairs:
            parts = s.split(",")
            if len(parts) != 2:
                raise ValueError(f"--pairs entries must be A,B, got {s!r}")
            pairs.append((parts[0], parts[1]))
    if args.max_events is not None and args.max_events <= 0:
        raise ValueError(f"--max-events must be a positive number of events, got {args.max_events}")
    html_path = html_output(args.report, args.html, no_html=args.no_html)
    history = None
    if args.history is not None:
        if html_path is None:
            raise ValueError(
                "--history is drawn in the HTML report only: give --report or --html (no --no-html)"
            )
        from nfhep.metrics.report_html import load_history

        history = load_history(args.history)  # checked before the (long) comparison
    samples = []
    for spec, w in ((args.reference, wa), (args.test, wb)):
        s = read_features(spec, args.features, weights=w, selection=args.selection, hash_files=False)
        stop = args.max_events
        samples.append((s.x[:stop], None if s.weights is None else s.weights[:stop]))
    (x, w_x), (y, w_y) = samples
    rep = compare(
        x, y, features=args.features, weights_x=w_x, weights_y=w_y, n_iter=args.n_iter, seed=args.seed,
        run_c2st=not args.no_c2st,
    )  # fmt: skip
    if args.report is not None and args.report != html_path:
        if args.report.suffix.lower() == ".json":
            rep.to_json(args.report)
        else:
            rep.to_markdown(args.report)
        print(f"nfhep compare: report written to {args.report}")
    elif args.report is None:
        print(rep.to_markdown())
    if args.plots is not None:
        files = rep.plot(args.plots, pairs=pairs)
        print(f"nfhep compare: {len(files)} plots written to {args.plots}")
    if html_path is not None:
        from nfhep.metrics.report_html import write_html

        run_info = [
            ("reference (x)", args.reference),
            ("test (y)", args.test),
            ("features", " ".join(args.features)),
            ("selection", args.selection or "none"),
            ("weights (reference / test)", f"{wa} / {wb}" if args.weights else "none"),
            ("events used (x / y)", f"{rep.n_x} / {rep.n_y}"),
            ("batches, seed", f"{args.n_iter}, {args.seed}"),
        ]
        if args.history is not None:
            run_info.append(("training history", str(args.history)))
        write_html(
            rep, html_path, history=history, title="nfhep compare", run_info=run_info,
            no_history_note="no training history was given (pass --history MODEL.history.json to draw it)",
        )  # fmt: skip
        print(f"nfhep compare: HTML report written to {html_path}")
    return 0


def html_output(report: Path | None, html: Path | None, *, no_html: bool) -> Path | None:
    """Where the HTML report goes: ``--html``, else ``--report`` with the suffix ``.html``, else nowhere
    (the markdown goes to stdout and no file is written unasked); ``None`` with ``--no-html``."""
    if no_html:
        if html is not None:
            raise ValueError("--html and --no-html contradict each other: give one of them")
        return None
    if html is not None:
        return html
    if report is not None:
        return report.with_suffix(".html")
    return None
