"""Run directory: round trip, byte-identical rewrites, and atomic replacement under crashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import names as N
from allocator.analysis.checks import check_run_dir as _check_run_dir
from allocator.analysis.checks.runner import CheckReport
from allocator.errors import InputError
from allocator.runs import contract, manifest, reader, store, writer
from allocator.runs.contract import ALLOCATIONS_SCHEMA, AMOUNT_CENTS, OUTPUT_FILES, RUN_FILES
from allocator.runs.manifest import dumps_manifest, versions
from allocator.runs.reader import read_payouts_csv, read_run_dir
from allocator.runs.writer import write_run_dir
from allocator.vouchers.payouts import idempotency_key

USERS = [3, 1, 2]  # deliberately unsorted
CENTS = {1: 400, 2: 1234, 3: 600_000}
LOSS = {1: 60.0, 2: 5_000.0, 3: 90_000.0}


#: The checks that recompute eligibility and weights from the full input tables: the hand-made
#: runs here have a one-column liquidations table, so those two are left to test_recompute.py
#: (which also tampers with real runs) and every other check is asserted as before.
RECOMPUTED = frozenset({"eligibility recomputed", "weights recomputed"})


def check_run_dir(path: Path) -> CheckReport:
    report = _check_run_dir(path)
    kept = tuple(c for c in report.checks if c.name not in RECOMPUTED)
    return dataclasses.replace(report, checks=kept)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def hidden_siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


@pytest.fixture
def liq(tmp_path: Path) -> Path:
    path = tmp_path / f"{N.EVENTS_FILE}.parquet"
    pl.DataFrame({N.USER_ID: [1, 2, 3, 4, 4]}, schema={N.USER_ID: pl.Int64}).write_parquet(path)
    return path


def parts(liq: Path, *, bump: int = 0) -> dict:
    """A valid run (floor 4, cap 6000, no coverage cap) whose user 2 gets ``bump`` more cents."""
    cents = dict(CENTS)
    cents[2] += bump
    labels = {1: N.BOUND_FLOOR, 2: N.BOUND_INTERIOR, 3: N.BOUND_CAP}
    allocations = pl.DataFrame(
        {
            N.USER_ID: USERS,
            N.VOUCHER_CENTS: [cents[u] for u in USERS],
            N.VOUCHER_USD: [cents[u] / 100 for u in USERS],
            "lower_cents": [400] * 3,
            "upper_cents": [600_000] * 3,
            N.LOSS_USD: [LOSS[u] for u in USERS],
            N.LOSS_RATIO: [0.4, math.inf, 0.9],
            N.WEIGHT: [6000.0, 2.0, 12.34],  # optimal at shadow price 1 (alpha 1): w = v inside
            N.BOUND: [labels[u] for u in USERS],
            N.SEGMENT: [None, "small", None],
        },
        schema_overrides={N.USER_ID: pl.Int64, N.VOUCHER_CENTS: pl.Int64},
    )
    excluded = pl.DataFrame(
        {N.USER_ID: [4], N.REASON: [N.REASON_KYC], N.DETAIL: ["kyc pending"], N.N_EVENTS: [2]},
        schema_overrides={N.USER_ID: pl.Int64},
    )
    payouts = pl.DataFrame(
        {
            N.USER_ID: USERS,
            AMOUNT_CENTS: [cents[u] for u in USERS],
            N.BATCH: [1, 1, 1],
            N.IDEMPOTENCY_KEY: [idempotency_key("test", u) for u in USERS],
        }
    )
    total = sum(cents.values())
    manifest = {
        "programme": "test",
        "scenario": {
            "eligibility": {"min_loss_usd": 50.0, "min_loss_ratio": 0.3},
            "bounds": {"floor_usd": 4.0, "cap_usd": 6000.0, "coverage_cap": None},
            "budget": {"total_usd": total / 100, "exhaust": True},
            "segments": [],
            "objective": {"alpha": 1.0},
            "payouts": {
                "batch_size": 50_000,
                "announced_at": "2025-10-14T00:00:00+00:00",
                "start_within_hours": 24.0,
                "finish_within_hours": 96.0,
            },
        },
        "inputs": {N.EVENTS_FILE: {"path": str(liq), "sha256": sha(liq), "rows": 5}},
        "money": {"budget_cents": total, "paid_cents": total, "unspent_cents": 0, "exhaust": True},
        "counts": {
            "liquidated": 4,
            "eligible": 3,
            "excluded": 1,
            "floor": 1,
            "interior": 1,
            "cap": 1,
            "excluded_by_reason": {N.REASON_KYC: 1, N.REASON_DEPEG: 0},
        },
        "shadow_price": 1.0,
        "segment_prices": {},
        "objective": float("nan"),
        "objective_rounded": 6000.0 * math.log(6000.0)
        + 2.0 * math.log(4.0)
        + 12.34 * math.log(cents[2] / 100),
        "certificate": {"duality_gap": float("inf")},
        "payout_batches": [
            {
                "number": 1,
                "users": 3,
                "cents": total,
                "scheduled_at": "2025-10-15T00:00:00+00:00",
                "due_at": "2025-10-18T00:00:00+00:00",
            }
        ],
        "versions": versions(),
    }
    return {
        "allocations": allocations,
        "excluded": excluded,
        "payouts": payouts,
        "manifest": manifest,
    }


# --- round trip and format -------------------------------------------------------------------


def test_round_trip(tmp_path: Path, liq: Path) -> None:
    p = parts(liq)
    out = write_run_dir(tmp_path / "runs" / "r", **p)
    assert sorted(os.listdir(out)) == sorted(RUN_FILES)
    run = read_run_dir(out)
    assert run.allocations[N.USER_ID].to_list() == [1, 2, 3]
    assert dict(run.allocations.schema) == ALLOCATIONS_SCHEMA
    assert run.allocations[N.VOUCHER_CENTS].to_list() == [CENTS[u] for u in (1, 2, 3)]
    # payouts.csv keeps the payout plan's row order.
    assert run.payouts[N.USER_ID].to_list() == USERS
    assert run.payouts[AMOUNT_CENTS].to_list() == [CENTS[u] for u in USERS]
    assert run.payouts[N.AMOUNT].to_list() == ["6000.00", "4.00", "12.34"]
    assert run.excluded.columns[:3] == [N.USER_ID, N.REASON, N.DETAIL]
    assert run.manifest["format"] == contract.RUN_FORMAT
    assert run.manifest["outputs"] == {name: sha(out / name) for name in OUTPUT_FILES}
    # Strict JSON: no NaN/Infinity tokens; sorted keys, indent 2, trailing newline.
    text = (out / N.MANIFEST_FILE).read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert run.manifest["certificate"]["duality_gap"] == "inf" and run.manifest["objective"] is None
    assert "outputs" not in p["manifest"]  # the caller's manifest is not modified
    report = check_run_dir(out)
    assert report.ok, "\n".join(report.lines())


def test_rewrite_is_byte_identical(tmp_path: Path, liq: Path) -> None:
    out = write_run_dir(tmp_path / "a", **parts(liq))
    first = snapshot(out)
    write_run_dir(out, **parts(liq))
    assert snapshot(out) == first
    # Same content laid out in different chunks and row orders gives the same bytes elsewhere too.
    p = parts(liq)
    a = p["allocations"]
    p["allocations"] = pl.concat([a[2:], a[:2]], rechunk=False)
    other = write_run_dir(tmp_path / "b", **p)
    assert snapshot(other) == first
    assert hidden_siblings(out) == [] and hidden_siblings(other) == []


def test_payouts_from_a_writer_callable(tmp_path: Path, liq: Path) -> None:
    p = parts(liq)
    frame = p.pop("payouts")
    calls: list[Path] = []

    def writer(path: Path) -> None:
        calls.append(path)
        contract.write_payouts_frame(frame, path)

    out = write_run_dir(tmp_path / "r", payouts=writer, **p)
    assert len(calls) == 1 and calls[0].name == N.PAYOUTS_FILE and calls[0].parent != out
    assert check_run_dir(out).ok


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path, liq: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="thesis.tex"):
        write_run_dir(home, **parts(liq))
    assert (home / "thesis.tex").read_text() == "precious" and sorted(os.listdir(home)) == [
        "thesis.tex"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_run_dir(write_run_dir(empty, **parts(liq))).ok


def test_read_errors_name_the_file(tmp_path: Path, liq: Path) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    (out / N.EXCLUDED_FILE).unlink()
    with pytest.raises(InputError, match=N.EXCLUDED_FILE):
        read_run_dir(out)
    with pytest.raises(InputError, match="not found"):
        read_run_dir(tmp_path / "nothing")


def test_payouts_amount_parsing_is_strict(tmp_path: Path) -> None:
    path = tmp_path / N.PAYOUTS_FILE
    for bad in ("12.3", "12", "1e3", "-4.00", '"4,00"', " 4.00", "4.001"):
        path.write_text(f"user_id,amount,batch,idempotency_key\n1,4.00,1,a\n2,{bad},1,b\n")
        with pytest.raises(InputError, match=r"payouts.csv.*amount.*two decimals") as err:
            read_payouts_csv(path)
        assert "'user_id': '2'" in str(err.value)
    path.write_text("user_id,amount,batch\n1,4.00,1\n")
    with pytest.raises(InputError, match="idempotency_key"):
        read_payouts_csv(path)


@given(st.lists(st.integers(0, 10**15), min_size=1, max_size=50))
def test_payouts_cents_round_trip_exactly(
    tmp_path_factory: pytest.TempPathFactory, cents: list[int]
) -> None:
    path = tmp_path_factory.mktemp("pay") / N.PAYOUTS_FILE
    frame = pl.DataFrame(
        {
            N.USER_ID: range(len(cents)),
            AMOUNT_CENTS: cents,
            N.BATCH: [0] * len(cents),
            N.IDEMPOTENCY_KEY: [str(i) for i in range(len(cents))],
        },
        schema_overrides={AMOUNT_CENTS: pl.Int64},
    )
    contract.write_payouts_frame(frame, path)
    back = read_payouts_csv(path)
    assert back[AMOUNT_CENTS].to_list() == cents
    assert back[N.AMOUNT].to_list() == [f"{c // 100}.{c % 100:02d}" for c in cents]


def test_manifest_text_is_canonical() -> None:
    import numpy as np

    text = dumps_manifest(
        {"b": np.int64(3), "a": (1.5, float("-inf")), "c": {"z": np.float64("nan")}}
    )
    assert (
        text
        == '{\n  "a": [\n    1.5,\n    "-inf"\n  ],\n  "b": 3,\n  "c": {\n    "z": null\n  }\n}\n'
    )


def test_versions_names_the_stack() -> None:
    v = versions()
    assert {"allocator", "python", "numpy", "polars", "cvxpy", "clarabel"} <= set(v)
    assert all(isinstance(x, str) for k, x in v.items() if k in ("allocator", "python", "polars"))


# --- atomicity -------------------------------------------------------------------------------


def test_crash_while_writing_keeps_the_old_run(tmp_path: Path, liq: Path) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = snapshot(out)
    p = parts(liq, bump=1)
    seen: dict[str, object] = {}

    def crashing_writer(path: Path) -> None:
        # Mid-write: the old run is still in place and accepted; the half-written one is not.
        seen["old_ok"] = check_run_dir(out).ok
        seen["staging"] = path.parent
        seen["staging_ok"] = check_run_dir(path.parent).ok
        seen["staging_files"] = sorted(os.listdir(path.parent))
        raise RuntimeError("disk full")

    p["payouts"] = crashing_writer
    with pytest.raises(RuntimeError, match="disk full"):
        write_run_dir(out, **p)
    assert seen["old_ok"] is True and seen["staging_ok"] is False
    assert N.MANIFEST_FILE not in seen["staging_files"]
    assert snapshot(out) == before
    assert hidden_siblings(out) == []  # the staging directory was removed


def test_crash_in_a_parquet_write_keeps_the_old_run(
    tmp_path: Path, liq: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = snapshot(out)
    real = writer.write_parquet

    def failing(frame: pl.DataFrame, path: Path) -> None:
        if path.name == N.EXCLUDED_FILE:
            raise OSError("I/O error")
        real(frame, path)

    monkeypatch.setattr(writer, "write_parquet", failing)
    # the typed error names the run directory and keeps the OS's words
    with pytest.raises(InputError, match=r"cannot write the run directory .*I/O error"):
        write_run_dir(out, **parts(liq, bump=1))
    assert snapshot(out) == before and hidden_siblings(out) == []


def test_hard_crash_leaves_only_an_unacceptable_hidden_directory(
    tmp_path: Path, liq: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kill cannot clean up: simulate it by disabling the cleanup.
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = snapshot(out)
    p = parts(liq, bump=1)

    def killed(path: Path) -> None:
        raise KeyboardInterrupt

    p["payouts"] = killed
    monkeypatch.setattr(store.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        write_run_dir(out, **p)
    monkeypatch.undo()
    leftovers = hidden_siblings(out)
    assert len(leftovers) == 1 and ".new-" in leftovers[0]
    assert not check_run_dir(out.parent / leftovers[0]).ok
    assert snapshot(out) == before and check_run_dir(out).ok
    # The next write is not disturbed by the leftover.
    write_run_dir(out, **parts(liq, bump=1))
    assert check_run_dir(out).ok and snapshot(out) != before


def test_swap_never_shows_an_incomplete_run(
    tmp_path: Path, liq: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = snapshot(out)
    real_rename = os.rename
    states: list[tuple[str, str, bool]] = []

    def watching_rename(src: os.PathLike, dst: os.PathLike) -> None:
        # Whatever is at out_dir at each step must be a complete, accepted run or nothing.
        states.append(
            (Path(src).name, Path(dst).name, check_run_dir(out).ok if out.exists() else None)
        )
        real_rename(src, dst)

    monkeypatch.setattr(store.os, "rename", watching_rename)
    write_run_dir(out, **parts(liq, bump=1))
    monkeypatch.undo()
    assert [s[2] for s in states] == [True, None]  # old run accepted, then nothing, then new
    assert states[0][0] == "r" and ".old-" in states[0][1]
    assert ".new-" in states[1][0] and states[1][1] == "r"
    assert check_run_dir(out).ok and snapshot(out) != before and hidden_siblings(out) == []


def test_failed_swap_puts_the_old_run_back(
    tmp_path: Path, liq: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = snapshot(out)
    real_rename = os.rename

    def second_rename_fails(src: os.PathLike, dst: os.PathLike) -> None:
        if ".new-" in Path(src).name:
            raise PermissionError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(store.os, "rename", second_rename_fails)
    with pytest.raises(InputError, match="rename refused"):
        write_run_dir(out, **parts(liq, bump=1))
    monkeypatch.undo()
    assert snapshot(out) == before and check_run_dir(out).ok and hidden_siblings(out) == []


# --- verified reading: load_run ---------------------------------------------------------------


def with_inputs(liq: Path) -> dict:
    """parts() whose manifest names all four input tables, in the liquidations file's folder."""
    p = parts(liq)
    inputs = {N.EVENTS_FILE: {"path": str(liq), "sha256": sha(liq), "rows": 5}}
    for stem in (N.PRICES_FILE, N.SNAPSHOT_FILE, N.USERS_FILE):
        path = liq.parent / f"{stem}.parquet"
        path.write_bytes(f"{stem} table".encode())
        inputs[stem] = {"path": str(path), "sha256": sha(path), "rows": 1}
    p["manifest"]["inputs"] = inputs
    return p


def rehash(run: Path) -> None:
    """Record the data files' current sha256 in the manifest: a tamper that hides itself."""
    manifest = json.loads((run / N.MANIFEST_FILE).read_text())
    manifest["outputs"] = {name: sha(run / name) for name in OUTPUT_FILES}
    (run / N.MANIFEST_FILE).write_text(json.dumps(manifest))


def refused(run: Path, *, inputs: bool = False) -> str:
    with pytest.raises(InputError) as err:
        reader.load_run(run, inputs=inputs)
    return str(err.value)


def test_load_run_reads_a_fresh_run_and_its_scenario(tmp_path: Path, liq: Path) -> None:
    out = write_run_dir(tmp_path / "r", **with_inputs(liq))
    run = reader.load_run(out, inputs=True)
    assert run.allocations.equals(read_run_dir(out).allocations)
    assert run.scenario.bounds.floor_usd == 4.0 and run.scenario.budget.exhaust is True
    assert run.data_dir == liq.parent
    assert reader.load_run(out).data_dir is None  # inputs are only checked when asked


def _write_manifest_bytes(run: Path, data: bytes) -> None:
    (run / N.MANIFEST_FILE).write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda m: b"\xff\xfe" + m, "not UTF-8"),
        (lambda m: b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (lambda m: b'{"a":' * 40 + b"1" + b"}" * 40, "nested more than 32 levels"),
        (
            lambda m: m.replace(b'"shadow_price": 1.0', b'"shadow_price": NaN'),
            "NaN is not strict JSON",
        ),
        (
            lambda m: m.replace(b"allocator-run/1", b"allocator-run/0"),
            "format is 'allocator-run/0'",
        ),
        (lambda m: m.replace(b'"outputs"', b'"outputz"'), "'outputs' does not record"),
        (lambda m: b"[1, 2]", "expected a JSON object"),
    ],
)
def test_load_run_refuses_a_damaged_manifest(
    tmp_path: Path, liq: Path, damage, expected: str
) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = (out / N.MANIFEST_FILE).read_bytes()
    _write_manifest_bytes(out, damage(before))
    assert (out / N.MANIFEST_FILE).read_bytes() != before
    message = refused(out)
    assert expected in message and str(out / N.MANIFEST_FILE) in message
    assert f"allocator check-budget {out}" in message
    # finance's checks read the same file without a traceback either
    assert not check_run_dir(out).ok


@pytest.mark.parametrize("name", OUTPUT_FILES)
def test_load_run_refuses_a_missing_garbage_or_edited_file(
    tmp_path: Path, liq: Path, name: str
) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    (out / name).unlink()
    assert "file not found" in refused(out) and name in refused(out)
    out = write_run_dir(tmp_path / "r", **parts(liq))
    (out / name).write_bytes(b"garbage")
    message = refused(out)
    assert f"{out / name}: its sha256" in message and "check-budget" in message
    # a well-formed file with other contents is refused the same way: the hash is the judge
    out = write_run_dir(tmp_path / "r", **parts(liq))
    other = write_run_dir(tmp_path / "other", **parts(liq, bump=1))
    (out / name).write_bytes((other / name).read_bytes())
    if name != N.EXCLUDED_FILE:  # bump changes allocations and payouts only
        assert f"{out / name}: its sha256" in refused(out)


def _tamper_allocations(run: Path, change) -> None:
    change(pl.read_parquet(run / N.ALLOCATIONS_FILE)).write_parquet(run / N.ALLOCATIONS_FILE)
    rehash(run)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda a: a.with_columns(pl.lit(-5, pl.Int64).alias(N.VOUCHER_CENTS)),
            "column voucher_cents is negative",
        ),
        (
            lambda a: a.with_columns(pl.lit(None, pl.Int64).alias(N.VOUCHER_CENTS)),
            "column voucher_cents is empty",
        ),
        (lambda a: a.drop(N.WEIGHT), "column weight is missing"),
        (
            lambda a: a.with_columns(pl.col(N.VOUCHER_CENTS).cast(pl.Float64)),
            "column voucher_cents is Float64, the contract says Int64",
        ),
        (lambda a: pl.concat([a, a.head(1)]).sort(N.USER_ID), "user 1 appears twice"),
        (lambda a: a.reverse(), "out of order"),
        (lambda a: a.with_columns(pl.lit(float("nan")).alias(N.WEIGHT)), "column weight is NaN"),
    ],
)
def test_load_run_refuses_broken_columns_even_with_matching_hashes(
    tmp_path: Path, liq: Path, change, expected: str
) -> None:
    out = write_run_dir(tmp_path / "r", **parts(liq))
    _tamper_allocations(out, change)
    message = refused(out)
    assert f"{out / N.ALLOCATIONS_FILE}: " in message and expected in message


def test_load_run_checks_inputs_only_when_asked(tmp_path: Path, liq: Path) -> None:
    p = with_inputs(liq)
    out = write_run_dir(tmp_path / "r", **p)
    users = liq.parent / f"{N.USERS_FILE}.parquet"
    users.write_bytes(b"regenerated")
    reader.load_run(out)  # audit reads no input: still fine
    message = refused(out, inputs=True)
    assert f"the run's users file {users} changed since the run" in message
    users.unlink()
    assert "no longer exists" in refused(out, inputs=True)
    # a manifest naming only some tables cannot be verified for a reader of the inputs
    out = write_run_dir(tmp_path / "partial", **parts(liq))
    assert "inputs.prices lacks the path and sha256" in refused(out, inputs=True)


def test_read_manifest_never_raises_anything_but_input_errors(tmp_path: Path) -> None:
    file = tmp_path / N.MANIFEST_FILE
    for raw in (b"\xff", b"[" * 100_000, b"{", b"", b'"text"'):
        file.write_bytes(raw)
        with pytest.raises(InputError, match="manifest.json"):
            manifest.read_manifest(file)
    file.write_text('{"x": NaN}')
    assert math.isnan(manifest.read_manifest(file)["x"])  # lenient unless strict
    with pytest.raises(InputError, match="NaN is not strict JSON"):
        manifest.read_manifest(file, strict=True)


# --- other commands' outputs stay out of run directories --------------------------------------


def test_outputs_inside_a_run_directory_are_refused(tmp_path: Path, liq: Path) -> None:
    out = write_run_dir(tmp_path / "runs" / "r", **parts(liq))
    for inside in (out, out / N.MANIFEST_FILE, out / N.ALLOCATIONS_FILE, out / "sub" / "x.html"):
        assert reader.run_dir_holding(inside) == out
        with pytest.raises(InputError, match=f"run directory {out}"):
            reader.refuse_output_in_run(inside, "--out")
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(InputError, match="--users-out"):
        reader.refuse_output_in_run(link / "moves.parquet", "--users-out")
    with pytest.raises(InputError, match="--out is empty"):
        reader.refuse_output_in_run("", "--out")
    # beside a run, and in a folder holding runs, is fine
    for outside in (tmp_path / "runs" / "report.html", tmp_path / "runs", tmp_path / "new" / "dir"):
        assert reader.run_dir_holding(outside) is None
        reader.refuse_output_in_run(outside, "--out")
    # a run with a damaged manifest is still a run
    (out / N.MANIFEST_FILE).write_bytes(b"\xff")
    assert reader.is_run_dir(out)
    # a folder with some other manifest.json is not
    other = tmp_path / "npm"
    other.mkdir()
    (other / N.MANIFEST_FILE).write_text('{"format": "something else"}')
    assert not reader.is_run_dir(other)


def test_eligibility_refuses_to_write_into_a_run_directory(tmp_path: Path, liq: Path) -> None:
    """`eligibility --out RUN` used to replace the run's excluded.parquet and exit 0."""
    from typer.testing import CliRunner

    from allocator.cli import app
    from allocator.data.synthetic import generate

    data = tmp_path / "data"
    generate(data, users=300, seed=3)
    out = write_run_dir(tmp_path / "r", **parts(liq))
    before = snapshot(out)
    runner = CliRunner()
    for target in (str(out), str(out / "eligibility"), ""):
        result = runner.invoke(app, ["eligibility", "--data", str(data), "--out", target, "-q"])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "error:" in result.output
        assert snapshot(out) == before
    assert "--out is empty" in result.output
    assert not (Path.cwd() / N.EXCLUDED_FILE).exists()
    ok = runner.invoke(
        app, ["eligibility", "--data", str(data), "--out", str(tmp_path / "e"), "-q"]
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "e" / N.EXCLUDED_FILE).is_file()


# --- the run store: atomic files and directories, hashing, manifests ---------------------------


def test_atomic_write_replaces_whole_files_with_shared_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    store.atomic_write_text(target, "one\n")
    store.atomic_write_bytes(target, b"two\r\n")
    assert target.read_bytes() == b"two\r\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]

    def broken(fh: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.atomic_write(target, broken)
    assert target.read_bytes() == b"two\r\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_directory_swaps_in_or_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "d"
    with store.atomic_directory(target) as staging:
        (staging / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError), store.atomic_directory(target) as staging:
        (staging / "a").write_text("2")
        raise RuntimeError("failed half way")
    assert (target / "a").read_text() == "1" and hidden_siblings(target) == []
    with pytest.raises(FileExistsError), store.atomic_directory(target, replace=False):
        pass
    with store.atomic_directory(target) as staging:
        (staging / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"] and hidden_siblings(target) == []


def test_one_sha256_and_one_versions_list(tmp_path: Path) -> None:
    from allocator.runs import hashing, manifest
    from allocator.runs.hashing import sha256_file as file_sha256

    data = os.urandom(3 << 20)
    f = tmp_path / "blob"
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert hashing.sha256_file(f) == hashing.sha256_bytes(data) == file_sha256(f) == want
    assert hashing.sha256_file(f, chunk_bytes=4096) == want
    got = manifest.versions()
    assert set(got) == {"allocator", "python", *manifest.VERSIONED_PACKAGES}
    assert versions() == got
    out = manifest.write_manifest(tmp_path, {"b": float("nan"), "a": 1})
    assert out.read_text() == dumps_manifest({"a": 1, "b": None})
    assert manifest.read_manifest(tmp_path, strict=True) == {"a": 1, "b": None}
