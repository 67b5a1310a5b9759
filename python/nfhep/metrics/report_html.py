"""``report.html``: a comparison report in one self-contained HTML file, to hand around.

One file, no external resources (no scripts, style sheets, fonts or image files: every figure is a PNG
embedded as a ``data:`` URI), readable in any browser and attachable to an e-mail or a logbook entry.
Sections, in order:

- **Run** (optional): key/value rows given by the caller (inputs, settings, figures such as test NLLs);
- **Metrics table**: the summary and per-feature tables of :meth:`ComparisonReport.to_markdown`, the
  same numbers formatted the same way, plus any extra tables given by the caller;
- **Training curve**: training/validation loss per epoch with the best epoch and the learning rate, when a
  training history is given (``nfhep train`` writes it as ``MODEL.history.json``);
- **Marginals**: per feature, normalised histograms of x and y with statistical bands and a ratio panel
  y / x whose error bars combine both samples' binomial errors of weighted histograms;
- **Corner plot**: 1-D histograms on the diagonal, 68% / 95% highest-density contours below.

Plots use mplhep's CMS style when mplhep is installed, axes are labelled with the branch names. Built with
the standard library and matplotlib only; written atomically (temporary name in the target directory,
then renamed).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import ComparisonReport, _fmt

__all__ = ["load_history", "render_html", "write_html"]

SECTIONS = {
    "run": "Run",
    "metrics": "Metrics table",
    "training": "Training curve",
    "marginals": "Marginals",
    "corner": "Corner plot",
}

_CSS = """\
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
.meta{color:#666;font-size:.9em}.note{color:#444;font-size:.9em}
figure{display:inline-block;margin:.4em;vertical-align:top}
figure img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#444;text-align:center}
nav a{margin-right:1em}
"""


def _e(s: Any) -> str:
    """Text escaped for element content and attribute values (``<``, ``>``, ``&``, quotes)."""
    return html.escape(str(s), quote=True)


def load_history(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training history: ``MODEL.history.json`` written by ``nfhep train`` (``{"history": ...,
    "summary": ..., "options": ...}``) or the bare ``nfhep.train.History.to_dict()`` / ``History.save``.

    Returns the history dict (``loss``, ``val_loss``, ``lr``, ``best_epoch``, ...). Raises
    ``FileNotFoundError`` or ``ValueError`` naming the file when it is missing or not a history.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training history {str(p)!r} does not exist")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"training history {str(p)!r} is not JSON: {err}") from None
    if isinstance(d, dict) and isinstance(d.get("history"), dict):
        d = d["history"]
    return _check_history(d, f"training history {str(p)!r}")


def _check_history(d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, Mapping) or not isinstance(d.get("loss"), list):
        raise ValueError(f"{what} has no 'loss' list (expected nfhep.train.History.to_dict() or the JSON "
                         "file `nfhep train` writes next to the model)")  # fmt: skip
    for key in ("loss", "val_loss", "lr"):
        v = d.get(key, [])
        if v is None:
            continue
        if not isinstance(v, list) or not all(u is None or isinstance(u, int | float) for u in v):
            raise ValueError(f"{what}: '{key}' must be a list of numbers (null for failed epochs)")
    return dict(d)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    attr = f' class="{_e(cls)}"' if cls else ""
    out = [f"<table{attr}>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>"]
    out.append("<tbody>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def summary_rows(rep: ComparisonReport) -> list[tuple[str, str, str]]:
    """(metric, value, optimal) rows of the summary table, as :meth:`ComparisonReport.to_markdown`."""
    s = rep.summary()
    b = rep.batched
    rows = [
        ("median KS p-value", _fmt(s["ks_pvalue"]["median"], s["ks_pvalue"]["std"]), "0.5"),
        ("mean KS p-value", _fmt(s["ks_pvalue"]["mean"]), "0.5"),
        ("median KS statistic", _fmt(s["ks_statistic"]["median"], s["ks_statistic"]["std"]), "0"),
        (
            f"sliced Wasserstein (W1, {b.directions.shape[0]} directions)",
            _fmt(s["swd"]["mean"], s["swd"]["std"]),
            "0",
        ),  # fmt: skip
        ("median 1-D Wasserstein", _fmt(s["w1"]["median"], s["w1"]["std"]), "0"),
        ("Frobenius norm ‖ΔC‖_F", _fmt(s["frobenius"]["mean"], s["frobenius"]["std"]), "0"),
    ]
    for i, p in enumerate(b.probs):
        h = s["hpdie"][f"{p:g}"]
        rows.append((f"median HPDIe {i + 1}σ ({p:g})", _fmt(h["median"], h["std"]), "0"))
    if rep.c2st is not None:
        c2 = rep.c2st
        rows.append((f"C2ST AUC ({c2.n_per_sample} events/sample)", _fmt(c2.auc, c2.auc_std), "0.5"))
    rows.append(("full-sample Frobenius (full / lower-triangle)",
                 f"{_fmt(rep.frobenius_full)} / {_fmt(rep.frobenius_lower)}", "0"))  # fmt: skip
    return rows


def feature_table(rep: ComparisonReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-feature table, as :meth:`ComparisonReport.to_markdown`."""
    probs = rep.batched.probs
    header = ["feature", "KS p (batches)", "KS D (full)", "W1", *(f"HPDIe {p:g}" for p in probs), "AD p",
              "Δmean/σ"]  # fmt: skip
    rows = []
    for r in rep.per_feature():
        adp = ("≤" if r["ad_pvalue"] <= 0.001 else "≥") if r["ad_pvalue_capped"] else ""
        rows.append([
            r["feature"], _fmt(r["ks_pvalue_mean"], r["ks_pvalue_std"]), _fmt(r["ks_statistic_full"]),
            _fmt(r["w1_mean"], r["w1_std"]), *(_fmt(r[f"hpdie_{p:g}"]) for p in probs),
            f"{adp}{_fmt(r['ad_pvalue'])}", _fmt(r["mean_diff_in_std"]),
        ])  # fmt: skip
    return header, rows


def _png(fig, plt, *, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(uri: str, alt: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{_e(alt)}">{cap}</figure>'


def render_html(
    rep: ComparisonReport,
    *,
    history: Mapping[str, Any] | None = None,
    title: str = "nfhep comparison report",
    run_info: Sequence[tuple[str, Any]] | None = None,
    extra_tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[Any]]]] = (),
    plots: bool = True,
    no_history_note: str = "no training history was given",
    bins: int = 50,
    corner_max_features: int = 8,
    dpi: int = 90,
) -> str:
    """The HTML text of the report (see the module docstring for its sections).

    Parameters
    ----------
    rep : ComparisonReport
        Result of :func:`nfhep.metrics.compare` (x = reference, y = sample under test).
    history : mapping, optional
        A training history (``History.to_dict()`` or :func:`load_history`); without one the training
        curve section holds ``no_history_note``.
    title : str
        Page title and heading.
    run_info : sequence of (key, value), optional
        Rows of the "Run" table (inputs, settings, headline figures).
    extra_tables : sequence of (caption, header, rows)
        Further tables shown after the metrics tables.
    plots : bool
        Draw the training curve, marginals and corner plot (the sections stay, with a note, if False).
    bins : int
        Bins of the marginal histograms.
    corner_max_features : int
        The corner plot shows the first ``corner_max_features`` features (a D x D grid of panels).
    dpi : int
        Resolution of the embedded PNGs.
    """
    if bins < 1:
        raise ValueError(f"argument 'bins' must be a positive number of bins, got {bins}")
    if corner_max_features < 1:
        raise ValueError(f"argument 'corner_max_features' must be positive, got {corner_max_features}")
    if history is not None:
        history = _check_history(history, "argument 'history'")
    from nfhep import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    weighted = " (weighted)" if rep.settings.get("weighted") else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">nfhep {_e(__version__)} · generated {_e(now)} · x (reference): {rep.n_x} events, '
        f"y (test): {rep.n_y} events{_e(weighted)} · {len(rep.features)} features</p>",
        "<nav>"
        + "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in SECTIONS.items() if k != "run" or run_info)
        + "</nav>",
    ]
    if run_info:
        parts += [
            f'<section id="run"><h2>{SECTIONS["run"]}</h2>',
            _table(["quantity", "value"], run_info),
            "</section>",
        ]

    s = rep.summary()
    parts += [
        f'<section id="metrics"><h2>{SECTIONS["metrics"]}</h2>',
        f'<p class="note">{s["n_iter"]} batches of {s["batch_sizes"][0]} / {s["batch_sizes"][1]} events '
        "(metrics per batch: mean ± std over batches; medians over features).</p>",
        _table(["metric", "value", "optimal"], summary_rows(rep), cls="summary"),
        "<h3>Per feature</h3>",
        _table(*feature_table(rep), cls="per-feature"),
        '<p class="note">KS: two-sided, scipy\'s rules for p-values (arXiv:2309.09743 summary: mean over '
        "batches, median over features). HPDIe: relative error of the highest-density interval endpoints. "
        "AD: Anderson-Darling k-sample p-value (interpolated, clipped to [0.001, 0.25]).</p>",
    ]
    for caption, header, rows in extra_tables:
        parts += [f"<h3>{_e(caption)}</h3>", _table(header, rows)]
    parts.append("</section>")

    from ._plots import corner_figure, hep_style, marginal_figure, training_figure

    skipped = '<p class="note">plots were not requested (--no-plots)</p>'
    with hep_style() as plt:
        parts.append(f'<section id="training"><h2>{SECTIONS["training"]}</h2>')
        if history is None:
            parts.append(f'<p class="note">{_e(no_history_note)}</p>')
        else:
            info = [("epochs run", len(history.get("loss") or []))]
            if history.get("best_epoch") is not None:
                info.append(("best epoch", history["best_epoch"]))
            if history.get("best_val_loss") is not None:
                info.append(("best validation loss", _fmt(float(history["best_val_loss"]))))
            if history.get("stop_reason"):
                info.append(("stopped by", history["stop_reason"]))
            if history.get("failures"):
                info.append(
                    ("failed epochs (non-finite loss, retried at a lower rate)", len(history["failures"]))
                )
            parts.append(_table(["quantity", "value"], info))
            if plots:
                fig = training_figure(history, plt)
                parts.append(
                    _figure(_png(fig, plt, dpi=dpi), "training curve", "loss per epoch; learning rate")
                )
            else:
                parts.append(skipped)
        parts.append("</section>")

        parts += [
            f'<section id="marginals"><h2>{SECTIONS["marginals"]}</h2>',
            '<p class="note">Normalised histograms with statistical bands; ratio panel y / x with error bars '
            "from both samples (binomial errors of weighted histograms: "
            "Var(p) = [(1 − p)² Σ<sub>bin</sub> w² + p² Σ<sub>other</sub> w²] / W², "
            "combined in quadrature).</p>",
        ]
        if plots:
            for d, name in enumerate(rep.features):
                fig = marginal_figure(rep, d, plt, bins=bins)
                parts.append(_figure(_png(fig, plt, dpi=dpi), f"marginal of {name}", name))
        else:
            parts.append(skipped)
        parts.append("</section>")

        parts.append(f'<section id="corner"><h2>{SECTIONS["corner"]}</h2>')
        k = min(len(rep.features), corner_max_features)
        if k < len(rep.features):
            parts.append(f'<p class="note">the first {k} of {len(rep.features)} features</p>')
        if plots:
            fig = corner_figure(rep, plt, features=range(k))
            parts.append(_figure(_png(fig, plt, dpi=dpi), "corner plot"))
        else:
            parts.append(skipped)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(rep: ComparisonReport, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write :func:`render_html` (same keyword options) to ``path`` atomically: a temporary name in the
    target directory, then renamed, so ``path`` is either the old file or the complete new one (parent
    directories are created; the file gets the usual 0666-minus-umask mode). Returns the path."""
    from ._plots import publish_mode

    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"HTML report path {str(p)!r} is a directory")
    text = render_html(rep, **options)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish_mode(tmp)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p
