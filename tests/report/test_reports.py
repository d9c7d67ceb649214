"""``allocator report``: real runs from the CLI, every number re-derived from the run's files.

Two small runs (3,000 generated users, budget USD 3M) are written with ``allocator allocate``;
the report of the first, compared with the second, is rendered as HTML, JSON and Markdown through
the CLI, and its contents are checked against the run directory, ``check_run_dir`` and
independent recomputations (Lorenz curve, Gini, coverage medians, cliff counts, vouchers by
loss). The charts are checked on the Matplotlib figures the report draws: linear dollar axes
for amounts, dollar tick labels on the loss axis, no scientific notation and no variable name
in any text a reader sees.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import re
import shutil
from pathlib import Path

import clihelp
import numpy as np
import polars as pl
import pytest
from clihelp import strict_json
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import allocator.cli.cmd_report  # noqa: F401  (registers the report command)
from allocator import names as N
from allocator.analysis.checks import CHECK_NAMES, check_run_dir
from allocator.analysis.sweeps import run_sweep
from allocator.cli.app import app
from allocator.data.synthetic import generate
from allocator.errors import InputError
from allocator.report import MAX_SWEEP_POINTS, SECTION_IDS, build_report, charts, write_report
from allocator.report.cells import usd_cents
from allocator.report.inputs import load_report_run, open_session
from allocator.report.sections import linear_edges, loss_edges
from allocator.report.sweep_sections import POINT_METRICS, solve_points
from allocator.report.words import percent, plain_number, usd_amount
from allocator.settings.scenarios import with_overrides

runner = CliRunner()
SWEEP_POINTS = 3
#: Charts each section draws for a report of two runs: voucher against loss once per run.
CHARTS_PER_SECTION = {
    "voucher-histogram": 1,
    "voucher-vs-loss": 2,
    "lorenz": 1,
    "coverage": 1,
    "sweep": 1,
    "shadow-price": 1,
    "cliff": 1,
}
LABELS = ("small-baseline", "small-equal")
#: Machine names that must not reach a reader of the HTML report (the JSON keeps them).
MACHINE_NAMES = (
    "n_floor",
    "n_cap",
    "median_coverage",
    "shadow_price",
    "top_decile_share",
    "below_min_loss",
    "below_loss_ratio",
    "depeg_compensated",
    "kyc_not_verified",
    "rounding_tie",
    "alpha_fair",
    "loss_usd",
    "voucher_usd",
)
#: Scientific notation as Matplotlib or Python write it: 1e+03, 4.5e-10, 3x10^1, $10^{3}$.
SCIENTIFIC = re.compile(r"\d(\.\d+)?[eE][+-]?\d|×\s*10|\\times|10\^|\$")
#: A variable name: lower-case words joined by underscores.
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")

BASELINE = """
name = "small-baseline"
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 1.0
[budget]
total_usd = 3_000_000
"""
EQUAL = """
name = "small-equal"
[objective]
alpha = 1.0
loss_exponent = 0.0
ratio_exponent = 0.0
[budget]
total_usd = 3_000_000
"""


def invoke(*args: str):
    return clihelp.invoke(*args, catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    generate(data, users=3000, seed=5)
    out = {"root": root, "data": data}
    for name, text in (("base", BASELINE), ("equal", EQUAL)):
        scen = root / f"{name}.toml"
        scen.write_text(text)
        res = invoke("allocate", "--scenario", scen, "--data", data, "--out", root / name, "-q")
        assert res.exit_code == 0, res.output
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def rendered(runs) -> dict[str, object]:
    """The report of ``base`` compared with ``equal`` in every format (HTML twice)."""
    outdir = runs["root"] / "reports"
    texts: dict[str, object] = {}
    for fmt, name in (("html", "r.html"), ("json", "r.json"), ("md", "r.md")):
        res = invoke(
            "report",
            runs["base"],
            "--compare",
            runs["equal"],
            "--out",
            outdir / name,
            "--format",
            fmt,
            "--sweep-points",
            str(SWEEP_POINTS),
        )
        assert res.exit_code == 0, res.output
        texts[fmt] = (outdir / name).read_bytes()
    res = invoke(
        "report",
        runs["base"],
        "--compare",
        runs["equal"],
        "--out",
        outdir / "again.html",
        "--sweep-points",
        str(SWEEP_POINTS),
    )
    assert res.exit_code == 0, res.output
    texts["html_again"] = (outdir / "again.html").read_bytes()
    texts["outdir"] = outdir
    return texts


def html_text(rendered) -> str:
    return rendered["html"].decode("utf-8")


def section_html(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{re.escape(section_id)}"[^>]*>(.*?)</section>', html, re.DOTALL)
    assert m, f"section {section_id} missing"
    return m.group(1)


def report_json(rendered) -> dict:
    return strict_json(rendered["json"].decode("utf-8"))


def json_section(doc: dict, section_id: str) -> dict:
    return next(s for s in doc["sections"] if s["id"] == section_id)


def manifest(run: Path) -> dict:
    return json.loads((run / N.MANIFEST_FILE).read_text())


# ------------------------------------------------------------------------------------ HTML


def test_every_section_present_with_a_heading(rendered):
    html = html_text(rendered)
    for sid in SECTION_IDS:
        body = section_html(html, sid)
        assert re.search(r"<h2>[^<]+</h2>", body), sid
    assert html.count("<section ") == len(SECTION_IDS)


def test_every_chart_is_an_embedded_png(rendered):
    html = html_text(rendered)
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == html.count("<img") == sum(CHARTS_PER_SECTION.values())
    for b64 in uris:
        png = base64.b64decode(b64, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert b"Software" not in png  # no tool name or version: reruns stay identical
    for sid, n in CHARTS_PER_SECTION.items():
        assert section_html(html, sid).count("<img") == n, sid


def test_no_external_reference(rendered):
    html = html_text(rendered).lower()
    for bad in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert bad not in html, bad
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_reconciliation_rows_equal_check_run_dir(runs, rendered):
    # every check of the reported run, once; the compared run in one line
    body = section_html(html_text(rendered), "reconciliation")
    rows = re.findall(r'<tr><td class="(pass|fail)">(PASS|FAIL)</td><td>([^<]*)</td>', body)
    checks = check_run_dir(runs["base"]).checks
    expected = [("PASS" if c.ok else "FAIL", c.name) for c in checks]
    assert [(status, name.replace("&#x27;", "'")) for _, status, name in rows] == expected
    assert all(cls == status.lower() for cls, status, _ in rows)
    assert all(s == "PASS" for s, _ in expected) and len(expected) == len(CHECK_NAMES)
    compared = check_run_dir(runs["equal"])
    assert compared.ok
    line = re.findall(r"<tr><td>small-equal \([^<]*\)</td>(.*?)</tr>", body)
    assert line == [
        f'<td class="pass">PASS</td><td>all {len(compared.checks)} checks passed</td><td>-</td>'
    ]


def test_checks_table_appears_once(runs, rendered):
    html = html_text(rendered)
    assert html.count("<th>check</th>") == 1
    names = [c.name for c in check_run_dir(runs["base"]).checks]
    for name in names:
        cell = f"<td>{name}</td>".replace("'", "&#x27;")
        assert html.count(cell) == 1, name
    md = rendered["md"].decode("utf-8")
    assert md.count("| status | check | detail |") == 1
    assert md.count(f"| PASS | {names[0]} |") == 1


def test_summary_numbers_equal_the_manifest(runs, rendered):
    man = manifest(runs["base"])
    data = json_section(report_json(rendered), "summary")["data"]["run"]
    for key in ("liquidated", "eligible", "excluded", "floor", "interior", "cap"):
        assert data[key] == man["counts"][key], key
    for key in ("budget_cents", "paid_cents", "unspent_cents"):
        assert data[key] == man["money"][key], key
    assert data["shadow_price"] == man["shadow_price"]
    assert data["solver_used"] == man["solver"]["used"]
    assert data["certified"] is man["certificate"]["certified"] is True
    body = section_html(html_text(rendered), "summary")
    paid = man["money"]["paid_cents"]
    assert f"<td>{paid // 100:,}.{paid % 100:02d}</td>" in body
    assert f"<td>{man['counts']['eligible']:,}</td>" in body
    # the allocations themselves add up to what the manifest says was paid
    alloc = pl.read_parquet(runs["base"] / N.ALLOCATIONS_FILE)
    assert int(alloc[N.VOUCHER_CENTS].sum()) == data["paid_cents"]
    assert alloc.height == data["eligible"]


def test_rerun_is_byte_identical(rendered):
    assert rendered["html"] == rendered["html_again"]


def test_output_written_atomically(rendered):
    names = sorted(p.name for p in Path(rendered["outdir"]).iterdir())
    assert names == ["again.html", "r.html", "r.json", "r.md"]  # no temporary leftovers


def visible_text(html_fragment: str) -> str:
    """What a reader sees of an HTML fragment: no tags, no style, entities decoded (alt texts and
    image titles are seen too, by screen readers and on hover)."""
    shown = re.sub(r"<style>.*?</style>", " ", html_fragment, flags=re.DOTALL)
    attrs = " ".join(re.findall(r'(?:alt|title)="([^"]*)"', shown))
    shown = re.sub(r"<[^>]+>", " ", shown)
    return html_lib.unescape(shown + " " + attrs)


def without_checks(html: str) -> str:
    """The page without the finance checks, which are check-budget's own words (its check
    names, such as ``voucher_usd``, and details such as a difference of ``7.6e-06``)."""
    return re.sub(r'<section id="reconciliation".*?</section>', "", html, count=1, flags=re.DOTALL)


def test_no_variable_name_reaches_the_reader(rendered):
    html = html_text(rendered)
    seen = visible_text(without_checks(html))
    for name in MACHINE_NAMES:
        assert name not in seen, name
    # every section in words, but the finance checks (check-budget's own wording, with file
    # and column names) and the axioms (named as `allocator axioms` names them)
    for sid in SECTION_IDS:
        if sid in ("reconciliation", "axioms"):
            continue
        names = SNAKE.findall(visible_text(section_html(html, sid)))
        assert names == [], (sid, names)
    # the JSON keeps the machine names
    doc = report_json(rendered)
    assert "n_cap" in json_section(doc, "sweep")["data"]["points"][0]
    assert "shadow_price" in json_section(doc, "shadow-price")["data"]["points"][0]


def test_no_log_scale_or_scientific_text_in_the_html(rendered):
    html = html_text(rendered)
    assert "log scale" not in visible_text(html) and "logarithmic" not in visible_text(html)
    found = SCIENTIFIC.search(visible_text(without_checks(html)))
    assert found is None, found


def test_voucher_against_loss_for_every_run(runs, rendered):
    body = section_html(html_text(rendered), "voucher-vs-loss")
    alts = re.findall(r'<img src="[^"]*" alt="([^"]*)"', body)
    assert len(alts) == len(LABELS)
    for label, alt in zip(LABELS, alts):
        assert alt.startswith(f"{label}: median voucher"), alt
    data = json_section(report_json(rendered), "voucher-vs-loss")["data"]
    edges = np.asarray(data["loss_edges_usd"])
    assert [r["label"] for r in data["runs"]] == list(LABELS)
    for run, entry in zip((runs["base"], runs["equal"]), data["runs"]):
        alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
        loss = alloc[N.LOSS_USD].to_numpy()
        usd = alloc[N.VOUCHER_CENTS].to_numpy() / 100.0
        assert edges[0] <= loss.min() and edges[-1] > loss.max()
        assert sum(b["users"] for b in entry["bins"]) == entry["users"] == alloc.height
        for b in entry["bins"]:
            sel = (loss >= b["low_usd"]) & (loss < b["high_usd"])
            assert b["users"] == int(sel.sum())
            if sel.any():
                p10, med, p90 = np.percentile(usd[sel], [10, 50, 90])
                assert (b["p10_usd"], b["median_usd"], b["p90_usd"]) == pytest.approx(
                    (p10, med, p90), rel=1e-12
                )
            else:
                assert b["median_usd"] is None


def test_cliff_is_a_chart_and_a_short_table(rendered):
    body = section_html(html_text(rendered), "cliff")
    assert body.count("<img") == 1
    assert body.count("<table>") == 1
    assert len(re.findall(r"<tr><td>", body)) == 2  # the loss rule and the loss-share rule
    cliff = json_section(report_json(rendered), "cliff")
    assert len(cliff["tables"]) == 1
    # the bins behind the chart stay in the JSON report
    assert len(cliff["data"]["loss_hist"]["edges"]) == 21


def test_a_failing_compared_run_is_one_line_with_its_failures(runs, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(runs["equal"], bad)
    man = manifest(bad)
    man["money"]["paid_cents"] += 1
    (bad / N.MANIFEST_FILE).write_text(json.dumps(man))
    out = tmp_path / "r.html"
    res = invoke("report", runs["base"], "--compare", bad, "--out", out, "--sweep-points", "0")
    assert res.exit_code == 1
    html = out.read_text()
    body = section_html(html, "reconciliation")
    assert html.count("<th>check</th>") == 1
    main_rows = re.findall(r'<tr><td class="(?:pass|fail)">(PASS|FAIL)</td><td>', body)
    assert main_rows == ["PASS"] * len(check_run_dir(runs["base"]).checks)
    report = check_run_dir(bad)
    failed = [c.name for c in report.failures]
    assert "paid" in failed
    (line,) = re.findall(r"<tr><td>small-equal \([^<]*\)</td>(.*?)</tr>", body)
    assert line.startswith('<td class="fail">FAIL</td>')
    assert f"{len(failed)} of {len(report.checks)} checks FAILED" in line
    for name in failed:
        assert f"{name}: " in line
    assert 'class="banner fail"' in html


# ------------------------------------------------------------------------------------ charts


@pytest.fixture(scope="module")
def figures(runs):
    """Every Matplotlib figure of the report of ``base`` compared with ``equal``, with its
    chart's title and alt text, as drawn (tick labels are set when a figure is saved)."""
    drawn = []
    real = charts.to_chart

    def keep(fig, title, alt):
        chart = real(fig, title, alt)
        drawn.append((fig, title, alt))
        return chart

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(charts, "to_chart", keep)
        report = build_report(
            runs["base"], compare=[runs["equal"]], sweep_points=SWEEP_POINTS, axioms_sample=0
        )
    assert len(drawn) == report.n_charts == sum(CHARTS_PER_SECTION.values())
    return drawn


def figure_texts(fig) -> list[str]:
    """Every piece of text on a drawn figure: titles, axis labels, tick labels (major and minor),
    offset texts (where Matplotlib writes ``1e8``), legends and annotations."""
    out = [fig.get_suptitle(), *(t.get_text() for t in fig.texts)]
    for ax in fig.axes:
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
        for axis in (ax.xaxis, ax.yaxis):
            out += [t.get_text() for t in axis.get_ticklabels(which="both")]
            out.append(axis.get_offset_text().get_text())
        legend = ax.get_legend()
        if legend is not None:
            out += [legend.get_title().get_text(), *(t.get_text() for t in legend.get_texts())]
    return [t for t in out if t]


def shown_ticks(axis) -> list[str]:
    """The labels of the major ticks inside the axis's view."""
    lo, hi = sorted(axis.get_view_interval())
    return [
        t.get_text()
        for t, v in zip(axis.get_ticklabels(), axis.get_majorticklocs())
        if lo - 1e-9 * abs(lo) <= v <= hi + 1e-9 * abs(hi)
    ]


def figure_of(figures, title: str):
    found = [fig for fig, t, _ in figures if t.startswith(title)]
    assert found, title
    return found


def test_no_chart_text_is_scientific_or_a_variable_name(figures):
    for fig, title, alt in figures:
        texts = figure_texts(fig)
        assert texts, title
        for text in [*texts, title, alt]:
            assert not SCIENTIFIC.search(text), (title, text)
            assert not SNAKE.search(text), (title, text)
            assert "log scale" not in text and "logarithmic" not in text, (title, text)


def test_histogram_is_linear_in_dollars(figures):
    (fig,) = figure_of(figures, "How large the vouchers are")
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"
    ticks = shown_ticks(ax.xaxis)
    assert ticks[0] == "USD 0" and len(ticks) >= 4
    assert all(re.fullmatch(r"USD \d{1,3}(,\d{3})*", t) for t in ticks), ticks
    # the bars: equal widths from USD 0
    lefts = sorted({round(p.get_path().vertices[:, 0].min(), 6) for p in ax.patches})
    assert lefts[0] == 0
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*", t) for t in shown_ticks(ax.yaxis))
    assert ax.get_title().startswith("How large the vouchers are")


def test_voucher_against_loss_has_dollar_ticks_on_a_log_loss_axis(figures):
    found = figure_of(figures, "Voucher against loss")
    assert len(found) == len(LABELS)
    for fig, label in zip(found, LABELS):
        (ax,) = fig.axes
        assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
        ticks = shown_ticks(ax.xaxis)
        assert ticks and all(re.fullmatch(r"USD 1(0{0,2}|k|0k|00k|M|0M|00M)", t) for t in ticks)
        assert all(t.get_text() == "" for t in ax.xaxis.get_ticklabels(which="minor"))
        assert all(t.startswith("USD ") for t in shown_ticks(ax.yaxis))
        # a binned summary, not a point per user
        assert len(ax.collections) <= 2 and all(len(line.get_xdata()) <= 40 for line in ax.lines)
        assert label in ax.get_title()
    assert len({tuple(fig.axes[0].get_xlim()) for fig in found}) == 1  # same axes for every run


def test_amount_and_share_axes_are_linear(figures):
    (coverage,) = figure_of(figures, "Share of the loss repaid")
    assert coverage.axes[0].get_yscale() == "linear"
    assert all(t.endswith("%") for t in shown_ticks(coverage.axes[0].yaxis))
    (budget,) = figure_of(figures, "A bigger or smaller budget")
    for ax in budget.axes:
        assert ax.get_xscale() == ax.get_yscale() == "linear"
        assert all(re.fullmatch(r"USD \d+(\.\d+)?M", t) for t in shown_ticks(ax.xaxis))
    (cliff,) = figure_of(figures, "Who just misses out")
    loss_ax, ratio_ax = cliff.axes
    assert all(t.startswith("USD ") for t in shown_ticks(loss_ax.xaxis))
    assert all(t.endswith("%") for t in shown_ticks(ratio_ax.xaxis))


# ------------------------------------------------------------------------------------ JSON, MD


def test_json_is_strict_and_has_the_same_sections(runs, rendered):
    doc = report_json(rendered)
    assert [s["id"] for s in doc["sections"]] == list(SECTION_IDS)
    assert doc["ok"] is True and doc["failures"] == []
    assert "base64" not in rendered["json"].decode()
    recon = json_section(doc, "reconciliation")["data"]["runs"]
    assert [r["checks"] for r in recon] == [
        check_run_dir(run).to_dict()["checks"] for run in (runs["base"], runs["equal"])
    ]


def test_markdown_has_the_tables(runs, rendered):
    md = rendered["md"].decode("utf-8")
    assert "| status | check | detail |" in md
    for c in check_run_dir(runs["base"]).checks:
        assert f"| PASS | {c.name} |" in md
    doc = report_json(rendered)
    for s in doc["sections"]:
        assert f"## {s['title']}" in md
        assert f'<a id="{s["id"]}"></a>' in md
    assert "data:image" not in md
    assert md.count("chart(s) omitted") == len(CHARTS_PER_SECTION)


# ------------------------------------------------------------------------------------ numbers


def test_lorenz_and_gini_recomputed(runs, rendered):
    curves = json_section(report_json(rendered), "lorenz")["data"]["curves"]
    for run, curve in zip((runs["base"], runs["equal"]), curves):
        usd = np.sort(pl.read_parquet(run / N.ALLOCATIONS_FILE)[N.VOUCHER_CENTS].to_numpy() / 100.0)
        n = usd.size
        pairwise = np.abs(usd[:, None] - usd[None, :]).sum() / (2 * n * n * usd.mean())
        assert curve["gini"] == pytest.approx(pairwise, rel=1e-9, abs=1e-12)
        cum = np.concatenate(([0.0], np.cumsum(usd))) / usd.sum()
        for p, share in zip(curve["population"], curve["share"]):
            k = p * n  # linear between the points k/n
            lo = int(np.floor(k))
            hi = min(lo + 1, n)
            expected = cum[lo] + (k - lo) * (cum[hi] - cum[lo])
            assert share == pytest.approx(expected, abs=1e-9)
    assert curves[0]["gini"] != curves[1]["gini"]


def test_coverage_medians_recomputed(runs, rendered):
    for run, entry in zip(
        (runs["base"], runs["equal"]),
        json_section(report_json(rendered), "coverage")["data"]["runs"],
    ):
        alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
        loss = alloc[N.LOSS_USD].to_numpy()
        cov = alloc[N.VOUCHER_CENTS].to_numpy() / 100.0 / loss
        assert sum(b["count"] for b in entry["bands"]) == alloc.height
        for band in entry["bands"]:
            hi = np.inf if band["high_usd"] in ("inf", None) else band["high_usd"]
            sel = (loss >= band["low_usd"]) & (loss < hi)
            assert band["count"] == int(sel.sum())
            if sel.any():
                assert band["median"] == pytest.approx(float(np.median(cov[sel])), rel=1e-12)


def test_histogram_counts_every_voucher_in_equal_dollar_steps(runs, rendered):
    data = json_section(report_json(rendered), "voucher-histogram")["data"]
    alloc = pl.read_parquet(runs["base"] / N.ALLOCATIONS_FILE)
    usd = alloc[N.VOUCHER_CENTS].to_numpy() / 100.0
    edges = np.asarray(data["bin_edges_usd"])
    # linear bins from USD 0 in one round step (the old report used logarithmic bins)
    assert edges[0] == 0 and edges[-1] >= usd.max() > edges[-2]
    widths = np.diff(edges)
    assert np.allclose(widths, data["bin_width_usd"], rtol=0, atol=1e-9)
    assert data["bin_width_usd"] / 10 ** np.floor(np.log10(data["bin_width_usd"])) in (1, 2, 2.5, 5)
    assert 12 <= widths.size <= 25
    assert data["counts"] == np.histogram(usd, bins=edges)[0].tolist()
    assert sum(data["counts"]) == alloc.height
    bound = alloc[N.BOUND].to_numpy()
    for state, counts in data["counts_by_bound"].items():
        assert counts == np.histogram(usd[bound == state], bins=edges)[0].tolist(), state
    assert np.sum(list(data["counts_by_bound"].values()), axis=0).tolist() == data["counts"]


def test_shadow_price_sweep_meets_the_run_at_its_own_budget(runs, rendered):
    man = manifest(runs["base"])
    budget = man["money"]["budget_cents"] / 100
    points = json_section(report_json(rendered), "shadow-price")["data"]["points"]
    assert [p["budget_usd"] for p in points] == [
        round(f * budget, 2) for f in np.linspace(0.5, 1.5, SWEEP_POINTS)
    ]
    assert all(p["status"] == "ok" for p in points)
    own = next(p for p in points if p["budget_usd"] == budget)
    assert own["shadow_price"] == pytest.approx(man["shadow_price"], rel=1e-9)
    assert own["n_cap"] == man["counts"]["cap"]
    assert own["paid_cents"] == man["money"]["paid_cents"]
    prices = [p["shadow_price"] for p in points]
    caps = [p["n_cap"] for p in points]
    assert prices == sorted(prices, reverse=True)  # more money, cheaper fairness
    assert caps == sorted(caps)  # and weakly more users at their cap


def test_alpha_sweep_points(runs, rendered):
    data = json_section(report_json(rendered), "sweep")["data"]
    alphas = [p["alpha"] for p in data["points"]]
    assert len(alphas) == SWEEP_POINTS and alphas == sorted(alphas)
    assert data["alpha_of_run"] == manifest(runs["base"])["scenario"]["objective"]["alpha"]
    ginis = [p["gini"] for p in data["points"]]
    assert ginis == sorted(ginis, reverse=True)  # higher alpha, more equal vouchers
    assert all(0 <= p["median_coverage"] for p in data["points"])


def test_cliff_counts_recomputed(runs, rendered):
    data = json_section(report_json(rendered), "cliff")["data"]
    man = manifest(runs["base"])
    rules = man["scenario"]["eligibility"]
    exc = pl.read_parquet(runs["base"] / N.EXCLUDED_FILE)
    loss_rows = exc.filter(
        (pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS)
        & (pl.col(N.LOSS_USD) >= rules["min_loss_usd"] - 10)
    )
    ratio_rows = exc.filter(
        (pl.col(N.REASON) == N.REASON_BELOW_LOSS_RATIO)
        & (pl.col(N.LOSS_RATIO) >= rules["min_loss_ratio"] - 0.05)
    )
    assert data["source"] == "allocator.analysis.sensitivity.cliff_analysis"
    assert data["below_loss_users"] == loss_rows.height > 0
    assert data["below_ratio_users"] == ratio_rows.height > 0
    assert data["below_ratio_total_usd"] == pytest.approx(
        float(ratio_rows[N.LOSS_USD].sum()), rel=1e-12
    )


def test_fairness_section(runs, rendered):
    data = json_section(report_json(rendered), "fairness")["data"]["runs"]
    assert [d["label"] for d in data] == ["small-baseline", "small-equal"]
    for d in data:
        assert d["ok"] is True
        assert d["monotonicity"]["unexplained"] == 0
        assert d["monotonicity"]["raw"] == sum(d["monotonicity"]["by_factor"].values())
    body = section_html(html_text(rendered), "fairness")
    assert 'class="fail"' not in body


# ------------------------------------------------------------------------------------ failures


def test_tampered_run_renders_and_exits_1(runs, tmp_path):
    # the data files match their hashes, but the manifest (which no hash covers) was edited:
    # the report is written with every failure marked, and exits 1 like check-budget
    bad = tmp_path / "tampered"
    shutil.copytree(runs["base"], bad)
    man = manifest(bad)
    man["money"]["paid_cents"] += 1
    (bad / N.MANIFEST_FILE).write_text(json.dumps(man))
    out = tmp_path / "bad.html"
    res = invoke("report", bad, "--out", out, "--sweep-points", "0")
    assert res.exit_code == 1
    html = out.read_text()
    failed = {c.name for c in check_run_dir(bad).failures}
    assert "paid" in failed and "output hashes" not in failed
    body = section_html(html, "reconciliation")
    rows = re.findall(r'<tr><td class="(pass|fail)">(PASS|FAIL)</td><td>([^<]*)</td>', body)
    assert {name for _, status, name in rows if status == "FAIL"} == failed
    assert 'class="banner fail"' in html and "FINANCE RECONCILIATION FAILED" in html
    assert '<section id="reconciliation" class="failed">' in html
    for sid in SECTION_IDS:
        assert f'<section id="{sid}"' in html
    assert "sweeps turned off" in section_html(html, "sweep")
    # the JSON format says the same
    res = invoke(
        "report",
        bad,
        "--out",
        tmp_path / "bad.json",
        "--format",
        "json",
        "--sweep-points",
        "0",
    )
    assert res.exit_code == 1
    doc = strict_json((tmp_path / "bad.json").read_text())
    assert doc["ok"] is False
    assert {f.split(": ", 1)[1] for f in doc["failures"]} == failed


def test_missing_run_dir_is_a_usage_error(tmp_path):
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output and not out.exists()


def test_unknown_format_is_a_usage_error(runs, tmp_path):
    out = tmp_path / "r.pdf"
    res = runner.invoke(app, ["report", str(runs["base"]), "--out", str(out), "--format", "pdf"])
    assert res.exit_code == 2
    assert not out.exists()


def test_changed_input_data_is_refused(runs, tmp_path):
    # the run's manifest points at input files; once they change, nothing the report computes
    # from them (the finance checks, the sweeps) would be this run's: refused, nothing written
    run = tmp_path / "run"
    shutil.copytree(runs["base"], run)
    man = manifest(run)
    man["inputs"]["users"]["sha256"] = "0" * 64
    (run / N.MANIFEST_FILE).write_text(json.dumps(man))
    for args in ((run,), (runs["base"], "--compare", run)):
        out = tmp_path / "r.json"
        res = runner.invoke(app, ["report", *map(str, args), "--out", str(out), "--format", "json"])
        assert res.exit_code == 2 and not out.exists()
        assert "Traceback" not in res.output
        assert "users file" in res.output and "changed since the run" in res.output


def _rehash(run: Path) -> None:
    man = manifest(run)
    man["outputs"] = {
        name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in man["outputs"]
    }
    (run / N.MANIFEST_FILE).write_text(json.dumps(man))


def _edit_payouts(run: Path) -> None:
    payouts = run / N.PAYOUTS_FILE
    lines = payouts.read_text().splitlines()
    cells = lines[1].split(",")
    cents = int(cells[1].replace(".", "")) + 1
    cells[1] = f"{cents // 100}.{cents % 100:02d}"
    lines[1] = ",".join(cells)
    payouts.write_text("\n".join(lines) + "\n")


def _null_cents(run: Path) -> None:
    frame = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(None)
        .otherwise(pl.col(N.VOUCHER_CENTS))
        .alias(N.VOUCHER_CENTS)
    ).write_parquet(run / N.ALLOCATIONS_FILE)
    _rehash(run)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda r: (r / N.MANIFEST_FILE).write_bytes(b"\xff\xfe{}"), "not UTF-8"),
        (
            lambda r: (r / N.MANIFEST_FILE).write_bytes(b"[" * 100_000 + b"]" * 100_000),
            "nested too deeply",
        ),
        (_edit_payouts, "payouts.csv: its sha256"),
        (lambda r: (r / N.EXCLUDED_FILE).unlink(), "excluded.parquet: file not found"),
        (_null_cents, "column voucher_cents is empty"),
    ],
)
@pytest.mark.parametrize("compared", [False, True])
def test_damaged_run_is_refused(runs, tmp_path, damage, expected, compared):
    bad = tmp_path / "bad"
    shutil.copytree(runs["base"], bad)
    damage(bad)
    out = tmp_path / "r.md"
    args = [runs["equal"], "--compare", bad] if compared else [bad]
    res = runner.invoke(
        app, ["report", *map(str, args), "--out", str(out), "--format", "md", "--sweep-points", "0"]
    )
    assert res.exit_code == 2 and not out.exists()
    assert "Traceback" not in res.output
    assert expected in res.output and f"allocator check-budget {bad}" in res.output


def test_output_inside_a_run_directory_is_refused(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["base"], run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for out in (run / N.MANIFEST_FILE, run / "report.html", run / "sub" / "r.md", run):
        res = runner.invoke(app, ["report", str(run), "--out", str(out), "--sweep-points", "0"])
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert f"run directory {run}" in res.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert check_run_dir(run).ok
    res = runner.invoke(app, ["report", str(run), "--out", str(tmp_path), "--sweep-points", "0"])
    assert res.exit_code == 2 and "is a directory" in res.output


def test_sweep_points_are_bounded(runs, tmp_path):
    out = tmp_path / "r.md"
    for points in ("100000", str(MAX_SWEEP_POINTS + 1), "-1", "99999999999999999999"):
        res = runner.invoke(
            app, ["report", str(runs["base"]), "--out", str(out), "--sweep-points", points]
        )
        assert res.exit_code == 2 and not out.exists()
        assert f"0 (skip the sweeps) to {MAX_SWEEP_POINTS}" in res.output
    with pytest.raises(InputError, match=str(MAX_SWEEP_POINTS)):
        build_report(runs["base"], sweep_points=MAX_SWEEP_POINTS + 1)
    assert str(MAX_SWEEP_POINTS) in " ".join(
        runner.invoke(app, ["report", "--help"]).stdout.split()
    )


# ------------------------------------------------------------------------------------ properties


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_usd_cents_text_round_trips(cents):
    text = usd_cents(cents)
    sign = -1 if text.startswith("-") else 1
    whole, frac = text.lstrip("-").replace(",", "").split(".")
    assert len(frac) == 2
    assert sign * (int(whole) * 100 + int(frac)) == cents


@given(st.floats(min_value=0.01, max_value=1e9, allow_nan=False))
def test_linear_edges_are_round_steps_that_cover_the_top(top):
    edges = linear_edges(top)
    width = edges[1] - edges[0]
    assert edges[0] == 0 and edges[-1] >= top and edges[-2] < top
    assert np.allclose(np.diff(edges), width, rtol=1e-12, atol=0)
    assert edges.size - 1 <= 25
    mantissa = width / 10 ** np.floor(np.log10(width))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-9


@given(
    st.floats(min_value=0.01, max_value=1e9, allow_nan=False),
    st.floats(min_value=1, max_value=1e6, allow_nan=False),
)
def test_loss_edges_are_one_two_five_steps_around_the_losses(lo, spread):
    hi = lo * spread
    edges = loss_edges(lo, hi)
    assert edges[0] <= lo and edges[-1] > hi and edges.size >= 2
    assert edges[1] > lo and edges[-2] <= hi  # no empty bin at either end
    ratios = edges[1:] / edges[:-1]
    assert all(any(abs(r - q) < 1e-9 for q in (2.0, 2.5)) for r in ratios)


@pytest.mark.parametrize(
    ("amount", "short", "text"),
    [
        (0, False, "USD 0"),
        (4, False, "USD 4"),
        (18.93, False, "USD 18.93"),
        (250, False, "USD 250"),
        (1000, False, "USD 1,000"),
        (6000, False, "USD 6,000"),
        (10_000, False, "USD 10k"),
        (12_500, False, "USD 12.5k"),
        (1_000_000, False, "USD 1M"),
        (300_000_000, False, "USD 300M"),
        (1_500_000_000, False, "USD 1.5B"),
        (100, True, "USD 100"),
        (1000, True, "USD 1k"),
        (100_000, True, "USD 100k"),
        (-5, False, "-USD 5"),
    ],
)
def test_usd_amount_as_a_reader_says_it(amount, short, text):
    assert usd_amount(amount, short=short) == text


@given(st.floats(min_value=-1e15, max_value=1e15, allow_nan=False), st.booleans())
def test_usd_amount_is_never_scientific(amount, short):
    text = usd_amount(amount, short=short)
    assert re.fullmatch(r"-?USD \d{1,3}(,\d{3})*(\.\d{1,2})?[kMB]?", text), text
    assert not SCIENTIFIC.search(text)


@given(st.floats(min_value=1e-30, max_value=1e15, allow_nan=False))
def test_plain_number_is_positional(x):
    text = plain_number(x)
    assert not SCIENTIFIC.search(text) and "e" not in text
    assert float(text.replace(",", "")) == pytest.approx(x, rel=1e-3)
    assert percent(0.3) == "30%" and percent(0.255) == "25.5%"


def test_phase_in_cliff_sits_at_the_band_and_includes_its_lower_end(runs, tmp_path):
    # With a phase-in band the cliff moves to the band's lower end, which must be passed, not
    # reached: "just below" is [15, 25] USD, and a loss of exactly 25 is excluded.
    scen = tmp_path / "phase.toml"
    scen.write_text(BASELINE + "[eligibility]\nphase_in_loss_usd = 25.0\nphase_in_ratio = 0.2\n")
    run = tmp_path / "phase"
    res = invoke("allocate", "--scenario", scen, "--data", runs["data"], "--out", run, "-q")
    assert res.exit_code == 0, res.output
    out = tmp_path / "phase.json"
    res = invoke("report", run, "--format", "json", "--sweep-points", "0", "--out", out)
    assert res.exit_code == 0, res.output
    cliff = json_section(strict_json(out.read_text()), "cliff")
    rows = {r[0]: r for r in cliff["tables"][0]["rows"]}
    assert rows["loss of USD 25 or less"][1] == "loss from USD 15 up to and including USD 25"
    assert (
        rows["loss 20% of net assets or less"][1]
        == "loss from 15% up to and including 20% of net assets"
    )
    exc = pl.read_parquet(run / N.EXCLUDED_FILE)
    below = exc.filter(
        (pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS) & pl.col(N.LOSS_USD).is_between(15, 25)
    )
    assert cliff["data"]["below_loss_users"] == below.height > 0


# ------------------------------------------------------------------------------------ sweeps


def test_sweep_points_are_those_of_the_sweeps_library(runs, rendered):
    # the report re-solves through allocator.analysis.sweeps, as `allocator sweep` does
    main = load_report_run(runs["base"], set())
    session, why = open_session(main)
    assert session is not None, why
    points = json_section(report_json(rendered), "sweep")["data"]["points"]
    alphas = [p["alpha"] for p in points]
    scenarios = [with_overrides(main.scenario, {"objective.alpha": a}) for a in alphas]
    rows, _ = run_sweep(
        session,
        [{"objective.alpha": a} for a in alphas],
        scenarios,
        solver=None,
        moved_threshold=0.01,
        reuse=False,
    )
    for point, row in zip(points, rows):
        assert point["status"] == "ok" and row["status"] == "solved"
        assert {k: point[k] for k in POINT_METRICS} == {k: row[k] for k in POINT_METRICS}


def test_a_point_the_scenario_refuses_is_listed_not_raised(runs):
    main = load_report_run(runs["base"], set())
    session, _ = open_session(main)
    assert session is not None
    budget = float(main.scenario.budget.total_usd)
    # a negative budget is refused by the scenario, one above every cap cannot be paid in full
    refused, solved, infeasible = solve_points(
        session, "budget.total_usd", [-1.0, budget, 1e12], main.scenario
    )
    assert refused["status"].startswith("ScenarioError: ") and set(refused) == {"status"}
    assert infeasible["status"].startswith("infeasible: ") and set(infeasible) == {"status"}
    assert solved["status"] == "ok" and set(solved) == {"status", *POINT_METRICS}
    assert solved["paid_cents"] == manifest(runs["base"])["money"]["paid_cents"]


def test_write_report_refuses_a_run_directory(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["base"], run)
    report = build_report(run, sweep_points=0)
    with pytest.raises(InputError, match="run directory"):
        write_report(run / "report.md", report, "md")
    assert not (run / "report.md").exists()
    out = write_report(tmp_path / "deep" / "report.md", report, "md")
    assert out.read_text().startswith("# Allocation report: small-baseline\n")
    with pytest.raises(InputError, match="format"):
        write_report(tmp_path / "r.pdf", report, "pdf")
    assert not (tmp_path / "r.pdf").exists()


def test_missing_amount_is_a_dash():
    assert usd_cents(None) == "-"
