"""``allocator report``: real runs from the CLI, every number re-derived from the run's files.

Two small runs (3,000 generated users, budget USD 3M) are written with ``allocator allocate``;
the report of the first, compared with the second, is rendered as HTML, JSON and Markdown through
the CLI, and its contents are checked against the run directory, ``check_run_dir`` and
independent recomputations (Lorenz curve, Gini, coverage medians, cliff counts).
"""

from __future__ import annotations

import base64
import hashlib
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
from allocator.analysis.checks import check_run_dir
from allocator.analysis.sweeps import run_sweep
from allocator.cli.app import app
from allocator.data.synthetic import generate
from allocator.errors import InputError
from allocator.report import MAX_SWEEP_POINTS, SECTION_IDS, build_report, write_report
from allocator.report.cells import usd_cents
from allocator.report.inputs import load_report_run, open_session
from allocator.report.model import SCATTER_MAX_POINTS
from allocator.report.sections import subsample
from allocator.report.sweep_sections import POINT_METRICS, solve_points
from allocator.settings.scenarios import with_overrides

runner = CliRunner()
SWEEP_POINTS = 3
#: Sections that draw exactly one chart.
CHART_SECTIONS = (
    "voucher-histogram",
    "voucher-vs-loss",
    "lorenz",
    "coverage",
    "sweep",
    "shadow-price",
    "cliff",
)

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
    assert len(uris) == html.count("<img") == len(CHART_SECTIONS)
    for b64 in uris:
        png = base64.b64decode(b64, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert b"Software" not in png  # no tool name or version: reruns stay identical
    for sid in CHART_SECTIONS:
        assert section_html(html, sid).count("<img") == 1, sid


def test_no_external_reference(rendered):
    html = html_text(rendered).lower()
    for bad in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert bad not in html, bad
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_reconciliation_rows_equal_check_run_dir(runs, rendered):
    body = section_html(html_text(rendered), "reconciliation")
    rows = re.findall(r'<tr><td class="(pass|fail)">(PASS|FAIL)</td><td>([^<]*)</td>', body)
    expected = []
    for run in (runs["base"], runs["equal"]):
        expected += [("PASS" if c.ok else "FAIL", c.name) for c in check_run_dir(run).checks]
    assert [(status, name.replace("&#x27;", "'")) for _, status, name in rows] == expected
    assert all(cls == status.lower() for cls, status, _ in rows)
    assert all(s == "PASS" for s, _ in expected)


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
    assert md.count("chart(s) omitted") == len(CHART_SECTIONS)


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


def test_histogram_counts_every_voucher(runs, rendered):
    data = json_section(report_json(rendered), "voucher-histogram")["data"]
    alloc = pl.read_parquet(runs["base"] / N.ALLOCATIONS_FILE)
    usd = alloc[N.VOUCHER_CENTS].to_numpy() / 100.0
    assert sum(data["counts"]) + data["zero_vouchers"] == alloc.height
    assert data["bin_edges_usd"][0] == pytest.approx(usd[usd > 0].min())
    assert data["bin_edges_usd"][-1] == pytest.approx(usd.max())


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


def test_scatter_subsample_is_fixed():
    small = subsample(10)
    assert small.tolist() == list(range(10))
    big = subsample(SCATTER_MAX_POINTS * 3)
    assert big.size == SCATTER_MAX_POINTS == np.unique(big).size
    assert np.array_equal(big, np.sort(big)) and np.array_equal(
        big, subsample(SCATTER_MAX_POINTS * 3)
    )


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
    assert rows[N.REASON_BELOW_MIN_LOSS][1] == "loss in [15, 25] USD"
    assert rows[N.REASON_BELOW_LOSS_RATIO][1] == "ratio in [0.15, 0.2]"
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
