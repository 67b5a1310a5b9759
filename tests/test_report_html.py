"""report.html (nfhep.metrics.report_html) and the ratio-panel uncertainties of the marginal plots.

The HTML is parsed with the standard library's HTMLParser; its tables are compared cell by cell with the
markdown report and numerically with the JSON report; the binomial errors of weighted histograms and of
their ratio are checked against the spread over independent replicas.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import require_module
from nfhep import metrics as M
from nfhep.cli import main
from nfhep.metrics import report_html as RH
from nfhep.metrics._plots import hist_density, ratio_with_errors

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ODD = "m_{jj}<5&x"  # a branch name that must be escaped
QUOTED = 'a"b$c'  # a quote (attribute values) and a dollar (matplotlib mathtext)
SECTION_IDS = {"metrics": "Metrics table", "training": "Training curve", "marginals": "Marginals",
               "corner": "Corner plot"}  # fmt: skip


class _Page(HTMLParser):
    """Tags with attributes, section headings, images, and the text of every table cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self.h2: dict[str, str] = {}
        self._section: str | None = None
        self._cell: list[str] | None = None
        self._h2: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._h2 = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._h2 is not None:
            self.h2[self._section] = "".join(self._h2).strip()
            self._h2 = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._h2 is not None:
            self._h2.append(data)

    def images(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "img"]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _md_tables(md: str) -> list[list[list[str]]]:
    """Markdown tables as lists of rows of cells (separator rows dropped)."""
    tables, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r"-+", c) for c in cells):
                continue
            if cur is None:
                cur = []
                tables.append(cur)
            cur.append(cells)
        else:
            cur = None
    return tables


def _assert_self_contained(text: str, page: _Page) -> None:
    bare = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "DATA", text)  # base64 may hold "//"
    assert not re.search(r"https?:|file:|ftp:|//", bare, re.IGNORECASE)
    assert "url(" not in bare and "@import" not in bare
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag
        for key in ("src", "href", "srcset", "data"):
            v = attrs.get(key)
            if v is not None:
                assert v.startswith("data:image/png;base64,") or (key == "href" and v.startswith("#")), (
                    tag,
                    v,
                )
    imgs = page.images()
    assert imgs and all(a["src"].startswith("data:image/png;base64,") for a in imgs)


def _decode_pngs(page: _Page) -> list[bytes]:
    out = []
    for a in page.images():
        data = base64.b64decode(a["src"].split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        out.append(data)
    return out


# -- the uncertainties of the ratio panels ---------------------------------------------------------------
def test_hist_density_unit_weights_is_binomial():
    rng = np.random.default_rng(1)
    v = rng.normal(size=1000)
    edges = np.linspace(-2, 2, 9)
    h, e = hist_density(v, None, edges)
    counts, _ = np.histogram(v, bins=edges)
    p = counts / 1000  # the total includes the events outside the edges
    width = np.diff(edges)
    np.testing.assert_allclose(h, p / width, rtol=1e-14)
    np.testing.assert_allclose(e, np.sqrt(p * (1 - p) / 1000) / width, rtol=1e-12)
    # weights all equal to 3 give the same density and error
    h3, e3 = hist_density(v, np.full(1000, 3.0), edges)
    np.testing.assert_allclose(h3, h, rtol=1e-14)
    np.testing.assert_allclose(e3, e, rtol=1e-12)
    hz, ez = hist_density(v, np.zeros(1000), edges)
    assert np.isnan(hz).all() and np.isnan(ez).all()


def test_hist_density_and_ratio_errors_match_replicas():
    """The predicted errors equal the spread over 600 independent weighted samples (to ~10%)."""
    rng = np.random.default_rng(7)
    edges = np.linspace(-2.5, 2.5, 11)
    n, reps = 800, 600
    hx, ex, hy, ey, r, er = ([] for _ in range(6))
    for _ in range(reps):
        vx, wx = rng.normal(size=n), rng.exponential(1.0, size=n)  # strongly varying weights
        vy, wy = rng.normal(0.1, 1.1, size=n), rng.uniform(0.2, 1.8, size=n)
        a, da = hist_density(vx, wx, edges)
        b, db = hist_density(vy, wy, edges)
        q, dq = ratio_with_errors(b, db, a, da)
        for lst, val in zip((hx, ex, hy, ey, r, er), (a, da, b, db, q, dq), strict=True):
            lst.append(val)
    hx, ex, hy, ey, r, er = map(np.array, (hx, ex, hy, ey, r, er))
    # sampling error of a std from 600 replicas: ~3%; the delta method is first order
    np.testing.assert_allclose(hx.std(0), ex.mean(0), rtol=0.12)
    np.testing.assert_allclose(hy.std(0), ey.mean(0), rtol=0.12)
    central = slice(2, 8)  # bins with >= ~5% of the events: the ratio is nearly linear there
    np.testing.assert_allclose(r[:, central].std(0), er[:, central].mean(0), rtol=0.15)
    # the plain Poisson error sqrt(sum w^2) / W ignores the normalisation: too large in a big central bin
    v, w = rng.normal(size=n), rng.exponential(1.0, size=n)
    s2, _ = np.histogram(v, bins=edges, weights=w**2)
    poisson = np.sqrt(s2) / w.sum() / np.diff(edges)
    assert (hist_density(v, w, edges)[1][4:6] < 0.95 * poisson[4:6]).all()


def test_ratio_edge_cases():
    r, er = ratio_with_errors([0.0, 2.0, 1.0], [0.1, 0.2, 0.1], [1.0, 1.0, 0.0], [0.1, 0.1, 0.0])
    assert r[0] == 0.0 and er[0] == pytest.approx(0.1)  # empty numerator: finite error
    assert r[1] == 2.0 and er[1] == pytest.approx(np.hypot(0.2, 0.2))
    assert np.isnan(r[2]) and np.isnan(er[2])  # empty reference bin


# -- the HTML of a comparison report ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report():
    require_module("sklearn")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 3))
    x[:, 1] += 0.7 * x[:, 0]
    y = rng.normal(size=(2400, 3))
    y[:, 1] += 0.7 * y[:, 0]
    y[:, 2] += 0.2
    w = rng.uniform(0.5, 1.5, len(y))
    return M.compare(x, y, features=[ODD, QUOTED, "eta"], weights_y=w, n_iter=4, seed=2, c2st_max_events=400)


HISTORY = {
    "loss": [3.0, 2.5, None, 2.2, 2.1],
    "val_loss": [3.1, 2.6, None, 2.3, 2.35],
    "lr": [1e-3, 1e-3, 1e-3, 5e-4, 5e-4],
    "seconds": [0.1] * 5,
    "best_epoch": 3,
    "best_val_loss": 2.3,
    "stop_reason": "max_epochs",
    "failures": [{"epoch": 2, "batch": 1, "lr": 1e-3}],
}


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "sub" / "report.html"
    RH.write_html(report, path, history=HISTORY, run_info=[("input <a>", "x & y")], title="t <1>")
    text = path.read_text(encoding="utf-8")
    return path, text, _parse(text)


def test_html_is_self_contained_and_names_every_section(page, report):
    path, text, p = page
    _assert_self_contained(text, p)
    for sid, heading in SECTION_IDS.items():
        assert p.h2.get(sid) == heading, sid
    assert p.h2.get("run") == "Run"
    # images: training curve, one marginal per feature, the corner plot
    alts = [a["alt"] for a in p.images()]
    assert alts == ["training curve", *(f"marginal of {f}" for f in report.features), "corner plot"]
    for data in _decode_pngs(p):
        import io

        import matplotlib.image as mpimg

        img = mpimg.imread(io.BytesIO(data), format="png")
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
        assert img[..., :3].std() > 0.01  # not a blank canvas


def test_html_escapes_feature_names_and_text(page):
    _, text, p = page
    assert ODD not in text and "m_{jj}&lt;5&amp;x" in text
    assert "a&quot;b$c" in text and QUOTED not in text
    assert "<title>t &lt;1&gt;</title>" in text
    cells = [c for t in p.tables for row in t for c in row]
    assert ODD in cells and QUOTED in cells and "input <a>" in cells and "x & y" in cells
    assert f"marginal of {QUOTED}" in [a["alt"] for a in p.images()]


def test_html_tables_equal_markdown_and_json(page, report, tmp_path):
    _, _, p = page
    md = report.to_markdown(tmp_path / "r.md")
    d = json.loads(report.to_json(tmp_path / "r.json"))
    md_summary, md_features = _md_tables(md)
    html = {tuple(t[0]): t for t in p.tables}
    h_summary = html[("metric", "value", "optimal")]
    h_features = html[tuple(md_features[0])]
    assert h_summary == md_summary  # every row, cell for cell (C2ST included)
    assert h_features == md_features
    assert any(r[0].startswith("C2ST AUC") for r in h_summary)
    s = d["summary"]

    def value(metric: str) -> float:
        row = next(r for r in h_summary if r[0].startswith(metric))
        return float(row[1].split(" ± ")[0])

    expected = [
        ("median KS p-value", s["ks_pvalue"]["median"]),
        ("mean KS p-value", s["ks_pvalue"]["mean"]),
        ("sliced Wasserstein", s["swd"]["mean"]),
        ("median 1-D Wasserstein", s["w1"]["median"]),
        ("Frobenius norm", s["frobenius"]["mean"]),
        ("C2ST AUC", s["c2st"]["auc"]),
        ("median HPDIe 1σ", s["hpdie"]["0.68"]["median"]),
    ]
    for metric, ref in expected:
        assert value(metric) == pytest.approx(ref, rel=6e-4, abs=1e-12), metric
    for row, ref in zip(h_features[1:], d["per_feature"], strict=True):
        assert row[0] == ref["feature"]
        assert float(row[1].split(" ± ")[0]) == pytest.approx(ref["ks_pvalue_mean"], rel=6e-4)
        assert float(row[3].split(" ± ")[0]) == pytest.approx(ref["w1_mean"], rel=6e-4)
    run, training = [t for t in p.tables if t[0] == ["quantity", "value"]]
    assert run[1:] == [["input <a>", "x & y"]]
    assert training[1:] == [["epochs run", "5"], ["best epoch", "3"], ["best validation loss", "2.3"],
                            ["stopped by", "max_epochs"],
                            ["failed epochs (non-finite loss, retried at a lower rate)", "1"]]  # fmt: skip


def test_html_without_history_or_plots(report, tmp_path):
    path = RH.write_html(report, tmp_path / "a.html", no_history_note="no history <here>", plots=False)
    text = path.read_text(encoding="utf-8")
    p = _parse(text)
    assert not p.images() and "<img" not in text
    for sid, heading in SECTION_IDS.items():
        assert p.h2.get(sid) == heading
    assert "run" not in p.h2  # no run_info: no Run section, no link to it
    assert 'href="#run"' not in text
    assert "no history &lt;here&gt;" in text and text.count("plots were not requested") == 2
    with pytest.raises(ValueError, match="argument 'bins'"):
        RH.render_html(report, bins=0)
    with pytest.raises(ValueError, match="argument 'history' has no 'loss' list"):
        RH.render_html(report, history={"val_loss": [1.0]})
    with pytest.raises(ValueError, match="'lr' must be a list of numbers"):
        RH.render_html(report, history={"loss": [1.0], "lr": ["fast"]})


def test_corner_shows_the_first_features(tmp_path):
    rng = np.random.default_rng(0)
    rep = M.compare(rng.normal(size=(600, 5)), rng.normal(size=(600, 5)), n_iter=2, run_c2st=False)
    text = RH.render_html(rep, corner_max_features=3, bins=20)
    assert "the first 3 of 5 features" in text
    one = M.compare(rng.normal(size=(500, 1)), rng.normal(size=(500, 1)), n_iter=2, run_c2st=False)
    p = _parse(RH.render_html(one))
    assert [a["alt"] for a in p.images()] == ["marginal of x0", "corner plot"]
    _decode_pngs(p)


def test_plain_matplotlib_without_mplhep(report, monkeypatch):
    """mplhep is optional (not a dependency): without it the report is drawn in matplotlib's style."""
    import importlib.util
    import sys

    import matplotlib.pyplot as plt

    from nfhep.metrics import _plots

    if importlib.util.find_spec("mplhep") is not None:  # installed: its CMS style (ticks inside)
        with _plots.hep_style():
            assert plt.rcParams["xtick.direction"] == "in" and plt.rcParams["font.size"] == 13
    monkeypatch.setitem(sys.modules, "mplhep", None)  # import mplhep -> ImportError
    with _plots.hep_style():
        assert plt.rcParams["font.size"] == 13 and plt.rcParams["xtick.direction"] == "out"
    p = _parse(RH.render_html(report, history=HISTORY, bins=20))
    assert len(p.images()) == 2 + len(report.features)
    _decode_pngs(p)


def test_write_is_atomic(report, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")
    calls = []
    real_replace = os.replace

    def failing_replace(src, dst):
        calls.append((os.fspath(src), os.fspath(dst)))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        RH.write_html(report, path, plots=False)
    assert path.read_text(encoding="utf-8") == "old report"  # the old file is untouched
    assert sorted(q.name for q in tmp_path.iterdir()) == ["report.html"]  # no temporary left behind
    (src, dst), = calls  # fmt: skip
    assert os.path.dirname(src) == str(tmp_path) and dst == str(path) and src != dst
    monkeypatch.setattr(os, "replace", real_replace)
    old = os.umask(0o022)
    try:
        RH.write_html(report, path, plots=False)
    finally:
        os.umask(old)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # shareable, not mkstemp's 0600
    with pytest.raises(IsADirectoryError, match="is a directory"):
        RH.write_html(report, tmp_path, plots=False)


def test_load_history(tmp_path):
    f = tmp_path / "model.history.json"
    f.write_text(json.dumps({"history": HISTORY, "summary": {}, "options": {}}))
    assert RH.load_history(f) == HISTORY  # the file `nfhep train` writes
    g = tmp_path / "bare.json"
    g.write_text(json.dumps(HISTORY))
    assert RH.load_history(g) == HISTORY  # History.save
    with pytest.raises(FileNotFoundError, match="nope.json"):
        RH.load_history(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json' is not JSON"):
        RH.load_history(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"history": [1, 2]}))
    with pytest.raises(ValueError, match="other.json' has no 'loss' list"):
        RH.load_history(tmp_path / "other.json")


# -- the commands ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root_files(tmp_path_factory):
    require_module("uproot")
    from nfhep import io as nio

    d = tmp_path_factory.mktemp("cmp_html")
    rng = np.random.default_rng(5)
    out = {}
    for name, shift in (("a", 0.0), ("b", 0.15)):
        n = 2000
        branches = {
            ODD: rng.normal(shift, 1.0, n),
            "pt": rng.exponential(2.0, n),
            "w": rng.uniform(0.5, 1.5, n),
        }
        nio.write_root(d / f"{name}.root", "events", branches)
        out[name] = d / f"{name}.root"
    hist = d / "model.history.json"
    hist.write_text(json.dumps({"history": HISTORY, "summary": {}, "options": {}}))
    out["history"] = hist
    return out


def test_cli_compare_writes_report_html(root_files, tmp_path, capsys):
    md = tmp_path / "out.md"
    rc = main([
        "compare", f"{root_files['a']}:events", f"{root_files['b']}:events", "--features", ODD, "pt",
        "--weights", "w", "--report", str(md), "--history", str(root_files["history"]), "--no-c2st",
        "--n-iter", "3",
    ])  # fmt: skip
    assert rc == 0
    assert "HTML report written to" in capsys.readouterr().out
    html_path = tmp_path / "out.html"
    text = html_path.read_text(encoding="utf-8")
    p = _parse(text)
    _assert_self_contained(text, p)
    assert {k: p.h2[k] for k in SECTION_IDS} == SECTION_IDS
    assert [a["alt"] for a in p.images()] == [
        "training curve",
        f"marginal of {ODD}",
        "marginal of pt",
        "corner plot",
    ]
    _decode_pngs(p)
    md_tables = _md_tables(md.read_text(encoding="utf-8"))
    assert md_tables[0] in p.tables and md_tables[1] in p.tables  # same numbers as the markdown
    assert "m_{jj}&lt;5&amp;x" in text and ODD not in text
    run = next(t for t in p.tables if t[0] == ["quantity", "value"])
    assert ["weights (reference / test)", "w / w"] in run and ["events used (x / y)", "2000 / 2000"] in run
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out.html", "out.md"]


def test_cli_compare_html_options(root_files, tmp_path, capsys):
    a, b = f"{root_files['a']}:events", f"{root_files['b']}:events"
    base = ["compare", a, b, "--features", "pt", "--no-c2st", "--n-iter", "2"]
    assert main([*base, "--report", str(tmp_path / "r.json"), "--no-html"]) == 0
    assert sorted(q.name for q in tmp_path.iterdir()) == ["r.json"]
    assert main([*base, "--report", str(tmp_path / "only.html")]) == 0  # a .html report is the HTML one
    assert (tmp_path / "only.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main([*base, "--html", str(tmp_path / "h" / "x.html")]) == 0  # no --report: markdown on stdout
    assert "median KS p-value" in capsys.readouterr().out and (tmp_path / "h" / "x.html").is_file()
    for extra, message in [
        (["--html", str(tmp_path / "y.html"), "--no-html"], "--html and --no-html contradict"),
        (["--history", str(root_files["history"])], "--history is drawn in the HTML report only"),
        (["--html", str(tmp_path / "z.html"), "--history", str(tmp_path / "missing.json")], "missing.json"),
    ]:
        assert main([*base, *extra]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "y.html").exists() and not (tmp_path / "z.html").exists()


def test_demo_writes_report_html(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--events", "1200", "--epochs", "2", "--dims", "3",
               "--hidden", "1x8", "--bijectors", "1", "--no-c2st", "-q"])  # fmt: skip
    assert rc == 0
    assert "report.html" in capsys.readouterr().out
    text = (out / "report.html").read_text(encoding="utf-8")
    p = _parse(text)
    _assert_self_contained(text, p)
    assert {k: p.h2[k] for k in SECTION_IDS} == SECTION_IDS
    assert [a["alt"] for a in p.images()] == ["training curve", "marginal of x0", "marginal of x1",
                                              "marginal of x2", "corner plot"]  # fmt: skip
    _decode_pngs(p)
    md_tables = _md_tables((out / "metrics.md").read_text(encoding="utf-8"))
    assert md_tables[0] in p.tables and md_tables[1] in p.tables
    hist = json.loads((out / "model.history.json").read_text())["history"]
    assert any(["epochs run", str(len(hist["loss"]))] in t for t in p.tables)
    run = next(t for t in p.tables if t[0] == ["quantity", "value"])
    assert any(r[0] == "test NLL, flow (nats/event)" and np.isfinite(float(r[1])) for r in run[1:])
    moments = next(t for t in p.tables if t[0][:2] == ["feature", "mean (test)"])
    assert [r[0] for r in moments[1:]] == ["x0", "x1", "x2"]
    assert not [q.name for q in out.iterdir() if q.name.startswith(".")]  # no temporaries left


def test_demo_no_plots_still_writes_the_tables(tmp_path):
    import argparse
    import io

    from nfhep.cli.demo import run_demo

    args = argparse.Namespace(out=str(tmp_path), events=600, test_events=200, dims=2, epochs=1, patience=1,
                              flow="maf", hidden="1x8", bijectors=1, knots=4, range=5.0, seed=1, quiet=True,
                              no_c2st=True, no_plots=True)  # fmt: skip
    run_demo(args, out=io.StringIO())
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    p = _parse(text)
    assert not p.images() and {k: p.h2[k] for k in SECTION_IDS} == SECTION_IDS
    assert _md_tables((tmp_path / "metrics.md").read_text(encoding="utf-8"))[0] in p.tables
