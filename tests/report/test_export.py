"""``allocator export``: finance's sign-off workbook, every number re-derived from the run's files.

One small run (2,000 generated users, budget USD 2M) is written with ``allocator allocate`` and
exported through the CLI; the workbook is opened with openpyxl and each sheet is checked against
the run directory, its manifest and its input data: payouts to the cent (numbers, not text; ids
never floats), batches against the manifest's schedule and paid cents, exclusions against a
direct group-by of ``excluded.parquet``, regions against a direct join of the allocations with
the users table, and the summary against the manifest and ``check_run_dir``. Two exports of one
run are byte-identical; a changed run is refused; csv amounts never use scientific notation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import polars as pl
import pytest
from clihelp import invoke

import allocator.cli.cmd_export  # noqa: F401  (registers the export command)
from allocator import names as N
from allocator.analysis.checks import CHECK_NAMES
from allocator.data.synthetic import generate
from allocator.report import export as E

ROOT = Path(__file__).resolve().parents[2]
CHECKS_LINE = "Finance checks (allocator check-budget)"
SCIENTIFIC = re.compile(r"^-?\d+(\.\d*)?[eE][+-]?\d+$")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "data"
    generate(data, users=2000, seed=3)
    out = tmp / "run"
    r = invoke(
        "allocate",
        "--scenario",
        ROOT / "scenarios" / "baseline.toml",
        "--data",
        data,
        "--out",
        out,
        "-q",
        "--set",
        "budget.total_usd=2e6",
    )
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def xlsx(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signoff") / "signoff.xlsx"
    r = invoke("export", run, "--format", "xlsx", "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def book(xlsx: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(xlsx)


def _manifest(run: Path) -> dict:
    return json.loads((run / N.MANIFEST_FILE).read_text(encoding="utf-8"))


def _payouts_text(run: Path) -> pl.DataFrame:
    return pl.read_csv(run / N.PAYOUTS_FILE, infer_schema=False)


def _cents(text: str) -> int:
    whole, frac = text.split(".")
    return int(whole) * 100 + int(frac)


def _rows(ws) -> list[list]:
    return [[c.value for c in row] for row in ws.iter_rows(min_row=2)]


def _summary(book: openpyxl.Workbook) -> dict[str, openpyxl.cell.Cell]:
    ws = book["Summary"]
    return {row[0].value: row[1] for row in ws.iter_rows(min_row=2)}


# --------------------------------------------------------------------------------------------
# the workbook
# --------------------------------------------------------------------------------------------


def test_sheets_headers_frozen_and_bold(book: openpyxl.Workbook) -> None:
    assert book.sheetnames == list(E.SHEETS)
    for ws in book.worksheets:
        assert ws.freeze_panes == "A2", ws.title
        header = next(ws.iter_rows(max_row=1))
        assert all(c.font.b for c in header), ws.title
        assert all(isinstance(c.value, str) and c.value for c in header), ws.title
        assert ws.column_dimensions["A"].width > 8
    assert [c.value for c in book["Payouts"][1]] == list(E.PAYOUT_COLUMNS)


def test_payouts_are_the_files_cents_as_numbers(book: openpyxl.Workbook, run: Path) -> None:
    csv = _payouts_text(run)
    ws = book["Payouts"]
    rows = list(ws.iter_rows(min_row=2))
    assert len(rows) == csv.height > 0
    for (uid, amount, batch, key), expected in zip(rows, csv.iter_rows(named=True)):
        # ids are whole numbers shown with format 0: never floats, never scientific notation
        assert type(uid.value) is int and uid.value == int(expected[N.USER_ID])
        assert uid.number_format == E.ID_FORMAT
        cents = _cents(expected[N.AMOUNT])
        assert isinstance(amount.value, (int, float)) and not isinstance(amount.value, bool)
        assert amount.value == cents / 100
        assert round(amount.value * 100) == cents
        assert amount.number_format == E.USD_FORMAT
        assert batch.value == int(expected[N.BATCH])
        assert key.value == expected[N.IDEMPOTENCY_KEY]


def test_batches_total_is_paid_and_schedule_is_the_manifests(
    book: openpyxl.Workbook, run: Path
) -> None:
    man = _manifest(run)
    rows = _rows(book["Batches"])
    *batches, total = rows
    assert total[0] == "Total"
    assert round(total[2] * 100) == man["money"]["paid_cents"]
    assert total[1] == sum(b["users"] for b in man["payout_batches"])
    schedule = {b["number"]: b for b in man["payout_batches"]}
    assert [r[0] for r in batches] == sorted(schedule)
    for number, users, usd, scheduled, due in batches:
        entry = schedule[number]
        assert users == entry["users"]
        assert round(usd * 100) == entry["cents"]
        for cell, key in ((scheduled, "scheduled_at"), (due, "due_at")):
            want = datetime.fromisoformat(entry[key].replace("Z", "+00:00")).astimezone(UTC)
            assert cell == want.replace(tzinfo=None)
    cells = list(book["Batches"].iter_rows(min_row=2))
    assert all(r[2].number_format == E.USD_FORMAT for r in cells)
    assert cells[-1][0].font.b


def test_exclusions_equal_a_direct_group_by(book: openpyxl.Workbook, run: Path) -> None:
    excluded = pl.read_parquet(run / N.EXCLUDED_FILE)
    direct = {
        r: (n, loss)
        for r, n, loss in excluded.group_by(N.REASON)
        .agg(pl.len(), pl.col(N.LOSS_USD).sum())
        .iter_rows()
    }
    *rows, total = _rows(book["Exclusions"])
    assert [r[1] for r in rows][: len(N.REASONS)] == list(N.REASONS)
    shown = {code: (n, loss) for _, code, n, loss in rows if n}
    assert shown.keys() == direct.keys()
    for code, (n, loss) in direct.items():
        assert shown[code][0] == n
        assert shown[code][1] == pytest.approx(loss, rel=1e-12, abs=1e-6)
    # reasons in words, not machine codes
    assert all(" " in words for words, code, n, _ in rows if code != N.REASON_NO_USER_RECORD)
    man = _manifest(run)
    assert total[0] == "Total"
    assert total[2] == sum(r[2] for r in rows) == excluded.height == man["counts"]["excluded"]
    assert total[3] == pytest.approx(float(excluded[N.LOSS_USD].sum()), rel=1e-12)


def test_regions_equal_a_direct_join_with_the_users_table(
    book: openpyxl.Workbook, run: Path
) -> None:
    man = _manifest(run)
    users = pl.read_parquet(man["inputs"][N.USERS_FILE]["path"]).select(N.USER_ID, N.REGION)
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    direct = {
        region: (n, cents)
        for region, n, cents in alloc.join(users, on=N.USER_ID, how="left")
        .group_by(N.REGION)
        .agg(pl.len(), pl.col(N.VOUCHER_CENTS).sum())
        .iter_rows()
    }
    *rows, total = _rows(book["By region"])
    assert {r[0]: (r[1], round(r[3] * 100)) for r in rows} == direct
    assert [r[0] for r in rows] == sorted(direct)
    assert total[0] == "Total" and total[1] == alloc.height
    assert round(total[3] * 100) == int(alloc[N.VOUCHER_CENTS].sum()) == man["money"]["paid_cents"]


def test_summary_states_the_run_and_that_every_check_passed(
    book: openpyxl.Workbook, run: Path
) -> None:
    man = _manifest(run)
    s = _summary(book)
    assert s[CHECKS_LINE].value == f"all {len(CHECK_NAMES)} checks passed"
    assert s["Programme"].value == man["programme"]
    assert s["Scenario"].value == man["scenario"]["name"] == "baseline"
    assert s["Run directory"].value == os.path.abspath(run)
    money = man["money"]
    for label, key in (("Budget (USD)", "budget_cents"), ("Paid (USD)", "paid_cents")):
        assert isinstance(s[label].value, (int, float))
        assert round(s[label].value * 100) == money[key]
        assert s[label].number_format == E.USD_FORMAT
    assert round(s["Unspent (USD)"].value * 100) == money["unspent_cents"]
    counts = man["counts"]
    for label, key in (
        ("Eligible users", "eligible"),
        ("Excluded users", "excluded"),
        ("Liquidated users", "liquidated"),
        ("Users at the floor", "floor"),
        ("Users at the cap", "cap"),
    ):
        assert type(s[label].value) is int and s[label].value == counts[key], label
        assert s[label].number_format == E.COUNT_FORMAT
    manifest_hash = hashlib.sha256((run / N.MANIFEST_FILE).read_bytes()).hexdigest()
    assert s["manifest.json sha256"].value == manifest_hash
    for stem in N.INPUT_TABLES:
        assert s[f"Input {stem}: sha256"].value == man["inputs"][stem]["sha256"]
    for name in (N.ALLOCATIONS_FILE, N.EXCLUDED_FILE, N.PAYOUTS_FILE):
        assert s[f"{name} sha256"].value == man["outputs"][name]
    if man.get("created_at"):
        assert s["Created"].value == man["created_at"]
    assert not any(str(k).startswith("Failed check") for k in s)


# --------------------------------------------------------------------------------------------
# determinism and writing
# --------------------------------------------------------------------------------------------


def _expected_created(man: dict) -> datetime:
    stamp = man.get("created_at") or man["scenario"]["payouts"]["announced_at"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def test_two_exports_are_byte_identical_and_dated_by_the_manifest(
    run: Path, xlsx: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again.xlsx"
    r = invoke("export", run, "--out", again)  # --format from the suffix
    assert r.exit_code == 0, r.output
    assert again.read_bytes() == xlsx.read_bytes()
    created = openpyxl.load_workbook(again, read_only=True).properties.created
    assert created == _expected_created(_manifest(run)).replace(tzinfo=None)


def test_without_created_at_the_announcement_dates_the_workbook(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    man = _manifest(copy)
    man.pop("created_at", None)
    man.pop("operator", None)
    (copy / N.MANIFEST_FILE).write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    outs = [tmp_path / "a.xlsx", tmp_path / "b.xlsx"]
    for out in outs:
        r = invoke("export", copy, "--out", out)
        assert r.exit_code == 0, r.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    wb = openpyxl.load_workbook(outs[0])
    assert wb.properties.created == _expected_created(man).replace(tzinfo=None)
    assert _summary(wb)["Created"].value == "not recorded in the manifest"


def test_an_existing_file_is_replaced_only_with_force(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "signoff.xlsx"
    out.write_bytes(b"earlier")
    r = invoke("export", run, "--out", out)
    assert r.exit_code == 2
    assert str(out) in r.stderr and "--force" in r.stderr
    assert out.read_bytes() == b"earlier"
    r = invoke("export", run, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert openpyxl.load_workbook(out).sheetnames == list(E.SHEETS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signoff.xlsx"]  # no temp left


def test_bad_destinations_are_refused_before_any_work(run: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "signoff.xlsx"
    r = invoke("export", run, "--out", missing)
    assert r.exit_code == 2 and "does not exist" in r.stderr
    assert not missing.parent.exists()
    r = invoke("export", run, "--out", run / "signoff.xlsx")
    assert r.exit_code == 2 and "run directory" in r.stderr
    assert not (run / "signoff.xlsx").exists()
    r = invoke("export", run, "--out", tmp_path)
    assert r.exit_code == 2
    r = invoke("export", run, "--format", "pdf", "--out", tmp_path / "x.pdf")
    assert r.exit_code == 2 and "xlsx" in r.stderr
    r = invoke("export", run, "--format", "csv", "--out", tmp_path / "x.xlsx")
    assert r.exit_code == 2
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# a changed run
# --------------------------------------------------------------------------------------------


def test_a_tampered_run_is_refused(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    payouts = copy / N.PAYOUTS_FILE
    lines = payouts.read_text().splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[1] = f"{float(fields[1]) + 1:.2f}"  # one user paid a dollar more
    lines[1] = ",".join(fields)
    payouts.write_text("".join(lines))
    out = tmp_path / "signoff.xlsx"
    r = invoke("export", copy, "--out", out)
    assert r.exit_code == 2
    assert N.PAYOUTS_FILE in r.stderr and "check-budget" in r.stderr
    assert not out.exists()


def test_a_failed_check_is_stated_and_exits_1(run: Path, tmp_path: Path) -> None:
    # a hand-edited manifest passes the reader (the manifest holds the hashes, it is not
    # hashed itself) but not finance's checks: the workbook says so, and the exit code is 1
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    man = _manifest(copy)
    man["counts"]["cap"] += 1
    (copy / N.MANIFEST_FILE).write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    out = tmp_path / "signoff.xlsx"
    r = invoke("export", copy, "--out", out)
    assert r.exit_code == 1, r.output
    assert "counts" in r.stderr
    s = _summary(openpyxl.load_workbook(out))
    assert s[CHECKS_LINE].value == f"1 of {len(CHECK_NAMES)} checks FAILED: counts"
    assert "Failed check: counts" in s


# --------------------------------------------------------------------------------------------
# csv
# --------------------------------------------------------------------------------------------


def test_csv_payouts_and_tables_with_exact_two_decimal_amounts(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "signoff.csv"
    r = invoke("export", run, "--format", "csv", "--out", out)
    assert r.exit_code == 0, r.output
    paths = E.output_paths(out, "csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    assert [p.name for p in paths[1:]] == [f"signoff.{part}.csv" for part in E.CSV_PARTS]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert "\r" not in text
        assert "e+" not in text.lower(), path.name
        fields = [f for line in text.splitlines() for f in line.split(",")]
        assert not [f for f in fields if SCIENTIFIC.match(f)], path.name
    exported = pl.read_csv(out, infer_schema=False)
    original = _payouts_text(run)
    assert exported.columns == list(E.PAYOUT_COLUMNS)
    assert exported["amount_usd"].str.contains(r"^\d+\.\d{2}$").all()
    assert exported["amount_usd"].to_list() == original[N.AMOUNT].to_list()
    assert exported[N.USER_ID].to_list() == original[N.USER_ID].to_list()
    assert exported[N.IDEMPOTENCY_KEY].to_list() == original[N.IDEMPOTENCY_KEY].to_list()
    summary = dict(pl.read_csv(paths[1], infer_schema=False).iter_rows())
    man = _manifest(run)
    assert summary[CHECKS_LINE] == f"all {len(CHECK_NAMES)} checks passed"
    assert _cents(summary["Paid (USD)"]) == man["money"]["paid_cents"]
    assert summary["Eligible users"] == str(man["counts"]["eligible"])
    batches = pl.read_csv(paths[2], infer_schema=False)
    assert batches.row(-1)[0] == "Total"
    assert _cents(batches.row(-1)[2]) == man["money"]["paid_cents"]
    exclusions = pl.read_csv(paths[3], infer_schema=False)
    assert exclusions["Loss (USD)"].str.contains(r"^\d+\.\d{2}$").all()
    assert int(exclusions.row(-1)[2]) == man["counts"]["excluded"]
    # written again: refused without --force (naming the first file), replaced with it
    r = invoke("export", run, "--out", out)
    assert r.exit_code == 2 and str(out) in r.stderr
    before = [p.read_bytes() for p in paths]
    r = invoke("export", run, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert [p.read_bytes() for p in paths] == before


def test_csv_sibling_names() -> None:
    assert E.output_paths("a/b.xlsx", "xlsx") == (Path("a/b.xlsx"),)
    assert E.output_paths("a/pay.csv", "csv")[1] == Path("a/pay.summary.csv")
    assert E.output_paths("a/pay", "csv")[4] == Path("a/pay.regions.csv")


# --------------------------------------------------------------------------------------------
# large and unusual payouts
# --------------------------------------------------------------------------------------------


def _write(signoff: E.Signoff) -> openpyxl.Workbook:
    buffer = io.BytesIO()
    E.write_xlsx(signoff, buffer)
    buffer.seek(0)
    return openpyxl.load_workbook(buffer)


def test_payouts_beyond_one_sheet_go_on_in_the_next(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signoff = E.build_signoff(run)
    rows_per_sheet = 400
    monkeypatch.setattr(E, "SHEET_ROWS", rows_per_sheet + 1)
    wb = _write(signoff)
    n = signoff.payouts.height
    parts = math.ceil(n / rows_per_sheet)
    names = ["Payouts"] + [f"Payouts {i}" for i in range(2, parts + 1)]
    assert wb.sheetnames == ["Summary", *names, "Batches", "Exclusions", "By region"]
    ids = [row[0] for name in names for row in _rows(wb[name])]
    assert ids == signoff.payouts[N.USER_ID].to_list()
    assert all(wb[name].max_row <= rows_per_sheet + 1 for name in names)


def test_ids_excel_cannot_show_exactly_are_text(run: Path) -> None:
    signoff = E.build_signoff(run)
    big = signoff.payouts.with_columns(pl.col(N.USER_ID) + 9_000_000_000_000_000)
    wb = _write(dataclasses.replace(signoff, payouts=big))
    ids = [row[0] for row in _rows(wb["Payouts"])]
    assert ids == [str(i) for i in big[N.USER_ID].to_list()]
    assert all(isinstance(i, str) for i in ids)
