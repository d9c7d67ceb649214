"""Finance checks: a valid run passes, and each tampering is caught and named."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import names as N
from allocator.checks import CENT_TOLERANCE, CHECK_NAMES, MAX_CENTS, bounds_cents, check_run_dir
from allocator.rundir import write_run_dir

FLOOR, CAP, COVER = 4.0, 60.0, 0.5
ALLOCATED = {  # user_id: (loss_usd, voucher_cents, bound label written by hand)
    101: (30.0, 1500, N.BOUND_CAP),  # upper = 0.5 * 30 = 15.00
    102: (80.0, 4000, N.BOUND_CAP),  # upper = 40.00
    103: (150.0, 6000, N.BOUND_CAP),  # upper = cap 60.00
    104: (900.0, 5000, N.BOUND_INTERIOR),
    105: (2500.0, 4321, N.BOUND_INTERIOR),
    106: (12000.0, 6000, N.BOUND_CAP),
    107: (50.0, 2500, N.BOUND_CAP),  # upper = 25.00
    108: (400.0, 400, N.BOUND_FLOOR),
}
EXCLUDED = {109: N.REASON_BELOW_MIN_LOSS, 110: N.REASON_KYC}
BUDGET_CENTS = sum(v for _, v, _ in ALLOCATED.values())  # 29,721 cents


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def usd_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def write_liquidations(path: Path, users: list[int]) -> None:
    rows = [(uid, k) for uid in users for k in range(1 + uid % 3)]  # one to three events each
    frame = pl.DataFrame(
        {
            N.EVENT_ID: list(range(1, len(rows) + 1)),
            N.USER_ID: [u for u, _ in rows],
            N.REALISED_LOSS: [10.0 + k for _, k in rows],
        },
        schema={N.EVENT_ID: pl.Int64, N.USER_ID: pl.Int64, N.REALISED_LOSS: pl.Float64},
    )
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


def upper_cents(loss: float, cover: float = COVER) -> int:
    return min(int(CAP * 100), math.floor(round(cover * loss * 100, 6)))


def allocations_frame(alloc: dict[int, tuple[float, int, str]], *, cover: float = COVER) -> pl.DataFrame:
    uids = sorted(alloc)
    loss = [alloc[u][0] for u in uids]
    cents = [alloc[u][1] for u in uids]
    upper = [upper_cents(x, cover) for x in loss]
    return pl.DataFrame(
        {
            N.USER_ID: uids,
            N.VOUCHER_CENTS: cents,
            N.VOUCHER_USD: [c / 100 for c in cents],
            "lower_cents": [int(FLOOR * 100)] * len(uids),
            "upper_cents": upper,
            N.LOSS_USD: loss,
            N.LOSS_RATIO: [0.5] * len(uids),
            N.WEIGHT: loss,
            N.BOUND: [alloc[u][2] for u in uids],
            N.SEGMENT: [None] * len(uids),
        },
        schema_overrides={N.USER_ID: pl.Int64, N.VOUCHER_CENTS: pl.Int64, N.SEGMENT: pl.String},
    )


def excluded_frame(excl: dict[int, str]) -> pl.DataFrame:
    uids = sorted(excl)
    return pl.DataFrame(
        {
            N.USER_ID: uids,
            N.REASON: [excl[u] for u in uids],
            N.DETAIL: [f"rule {excl[u]}" for u in uids],
            N.LOSS_USD: [20.0] * len(uids),
        },
        schema_overrides={N.USER_ID: pl.Int64},
    )


def payouts_frame(alloc: dict[int, tuple[float, int, str]]) -> pl.DataFrame:
    uids = sorted(alloc)
    return pl.DataFrame(
        {
            N.USER_ID: uids,
            N.AMOUNT: [usd_text(alloc[u][1]) for u in uids],
            N.BATCH: [1 + i // 4 for i in range(len(uids))],
            N.IDEMPOTENCY_KEY: [f"tgi-2025-{u}" for u in uids],
        }
    )


def manifest_for(
    liq_path: Path,
    alloc: dict[int, tuple[float, int, str]],
    excl: dict[int, str],
    *,
    budget_cents: int = BUDGET_CENTS,
    exhaust: bool = True,
    cover: float = COVER,
) -> dict:
    paid = sum(v for _, v, _ in alloc.values())
    labels = [b for _, _, b in alloc.values()]
    reasons: dict[str, int] = {}
    for r in excl.values():
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "format": "allocator-run/1",
        "programme": "test-programme",
        "scenario": {
            "name": "test",
            "eligibility": {"min_loss_usd": 50.0, "min_loss_ratio": 0.3},
            "bounds": {"floor_usd": FLOOR, "cap_usd": CAP, "coverage_cap": cover},
            "budget": {"total_usd": budget_cents / 100, "exhaust": exhaust},
            "segments": [],
        },
        "inputs": {
            N.EVENTS_FILE: {"path": str(liq_path.resolve()), "sha256": sha256(liq_path), "rows": 0}
        },
        "versions": {},
        "solver": {"requested": "auto", "used": "fast", "status": "optimal"},
        "objective": 1.0,
        "shadow_price": 0.01,
        "certificate": {},
        "money": {
            "budget_cents": budget_cents,
            "paid_cents": paid,
            "unspent_cents": budget_cents - paid,
            "exhaust": exhaust,
        },
        "counts": {
            "liquidated": len(alloc) + len(excl),
            "eligible": len(alloc),
            "excluded": len(excl),
            "floor": labels.count(N.BOUND_FLOOR),
            "interior": labels.count(N.BOUND_INTERIOR),
            "cap": labels.count(N.BOUND_CAP),
            "excluded_by_reason": reasons,
        },
        "timings_s": {},
        "payout_batches": [],
    }


def write_run(
    run: Path,
    liq: Path,
    alloc: dict[int, tuple[float, int, str]] = ALLOCATED,
    excl: dict[int, str] = EXCLUDED,
    *,
    payouts: dict[int, tuple[float, int, str]] | None = None,
    **kw: object,
) -> Path:
    return write_run_dir(
        run,
        allocations=allocations_frame(alloc),
        excluded=excluded_frame(excl),
        payouts=payouts_frame(payouts if payouts is not None else alloc),
        manifest=manifest_for(liq, alloc, excl, **kw),
    )


@pytest.fixture
def liq(tmp_path: Path) -> Path:
    path = tmp_path / "data" / f"{N.EVENTS_FILE}.parquet"
    path.parent.mkdir()
    write_liquidations(path, sorted(ALLOCATED) + sorted(EXCLUDED))
    return path


@pytest.fixture
def run(tmp_path: Path, liq: Path) -> Path:
    return write_run(tmp_path / "run", liq)


def failed(path: Path) -> set[str]:
    return {c.name for c in check_run_dir(path).failures}


def moved_one_cent(src: int, dst: int) -> dict[int, tuple[float, int, str]]:
    alloc = dict(ALLOCATED)
    loss, cents, label = alloc[src]
    alloc[src] = (loss, cents - 1, label)
    loss, cents, label = alloc[dst]
    alloc[dst] = (loss, cents + 1, label)
    return alloc


# --- a valid run -----------------------------------------------------------------------------


def test_valid_run_passes_every_check(run: Path) -> None:
    report = check_run_dir(run)
    assert report.ok, "\n".join(report.lines())
    assert tuple(c.name for c in report.checks) == CHECK_NAMES
    assert report.lines()[-1].startswith("OK")
    as_json = json.loads(json.dumps(report.to_dict()))
    assert (
        as_json["ok"] is True and as_json["failed"] == [] and len(as_json["checks"]) == len(CHECK_NAMES)
    )


def test_liquidations_input_as_csv(tmp_path: Path) -> None:
    csv = tmp_path / f"{N.EVENTS_FILE}.csv"
    write_liquidations(csv, sorted(ALLOCATED) + sorted(EXCLUDED))
    assert check_run_dir(write_run(tmp_path / "run", csv)).ok


def test_non_exhaust_run_may_leave_money_unspent(tmp_path: Path, liq: Path) -> None:
    run = write_run(tmp_path / "r1", liq, budget_cents=BUDGET_CENTS + 12_345, exhaust=False)
    assert check_run_dir(run).ok
    run = write_run(tmp_path / "r2", liq, budget_cents=BUDGET_CENTS + 12_345, exhaust=True)
    assert failed(run) == {"budget"}
    run = write_run(tmp_path / "r3", liq, budget_cents=BUDGET_CENTS - 1, exhaust=False)
    assert failed(run) == {"budget"}


# --- tampering -------------------------------------------------------------------------------


def test_one_cent_moved_in_the_file_is_caught(run: Path) -> None:
    # Edit allocations.parquet in place: the total is unchanged, so only the hashes and the
    # payouts can tell.
    frame = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    delta = (
        pl.when(pl.col(N.USER_ID) == 104).then(-1).when(pl.col(N.USER_ID) == 105).then(1).otherwise(0)
    )
    frame = frame.with_columns(pl.col(N.VOUCHER_CENTS) + delta)
    frame = frame.with_columns(pl.Series(N.VOUCHER_USD, frame[N.VOUCHER_CENTS].to_numpy() / 100.0))
    frame.write_parquet(run / N.ALLOCATIONS_FILE)
    report = check_run_dir(run)
    bad = {c.name for c in report.failures}
    assert bad == {"output hashes", "payout amounts"}  # total unchanged: budget and paid pass
    detail = next(c.detail for c in report.failures if c.name == "payout amounts")
    assert "2 payout(s)" in detail and "user_id=104" in detail


def test_one_cent_moved_consistently_still_disagrees_with_payouts(tmp_path: Path, liq: Path) -> None:
    # Rewritten through the writer (hashes and totals all consistent) but payouts.csv not redone.
    run = write_run(tmp_path / "run", liq, moved_one_cent(104, 105), payouts=ALLOCATED)
    assert failed(run) == {"payout amounts"}


def test_duplicated_user_is_caught(tmp_path: Path, liq: Path) -> None:
    frame = allocations_frame(ALLOCATED)
    dup = pl.concat([frame, frame.filter(pl.col(N.USER_ID) == 108)]).sort(N.USER_ID)
    run = write_run_dir(
        tmp_path / "run",
        allocations=dup,
        excluded=excluded_frame(EXCLUDED),
        payouts=payouts_frame(ALLOCATED),
        manifest=manifest_for(liq, ALLOCATED, EXCLUDED),
    )
    report = check_run_dir(run)
    bad = {c.name for c in report.failures}
    assert "unique allocations" in bad
    assert {"budget", "paid", "counts"} <= bad  # 4.00 USD paid twice
    assert "user_id=108" in next(c.detail for c in report.failures if c.name == "unique allocations")


def test_dropped_row_is_caught(run: Path) -> None:
    frame = pl.read_parquet(run / N.ALLOCATIONS_FILE).filter(pl.col(N.USER_ID) != 103)
    frame.write_parquet(run / N.ALLOCATIONS_FILE)
    report = check_run_dir(run)
    bad = {c.name for c in report.failures}
    assert {"liquidated users", "payout rows", "budget", "paid", "counts", "output hashes"} <= bad
    assert "user_id=103" in next(c.detail for c in report.failures if c.name == "liquidated users")


def test_changed_input_file_is_caught(run: Path, liq: Path) -> None:
    users = sorted(ALLOCATED) + sorted(EXCLUDED)
    write_liquidations(liq, users + [users[0]])  # one more event for a known user: same users
    report = check_run_dir(run)
    assert {c.name for c in report.failures} == {"input hashes"}
    assert N.EVENTS_FILE in report.failures[0].detail


def test_new_liquidated_user_in_input_is_caught(run: Path, liq: Path) -> None:
    write_liquidations(liq, sorted(ALLOCATED) + sorted(EXCLUDED) + [999])
    assert failed(run) == {"input hashes", "liquidated users"}


def test_voucher_above_cap_is_caught(tmp_path: Path, liq: Path) -> None:
    # 103 sits on its 60.00 cap; one more cent, taken from 104, keeps the total and every hash.
    run = write_run(tmp_path / "run", liq, moved_one_cent(104, 103))
    report = check_run_dir(run)
    assert {c.name for c in report.failures} == {"within bounds"}
    assert "user_id=103, voucher_cents=6001" in report.failures[0].detail


def test_manifest_paid_cents_edited_is_caught(run: Path) -> None:
    path = run / N.MANIFEST_FILE
    man = json.loads(path.read_text())
    man["money"]["paid_cents"] += 100
    path.write_text(json.dumps(man, sort_keys=True, indent=2) + "\n")
    assert failed(run) == {"paid"}


def test_manifest_scenario_cap_edited_is_caught(run: Path) -> None:
    path = run / N.MANIFEST_FILE
    man = json.loads(path.read_text())
    man["scenario"]["bounds"]["cap_usd"] = 50.0
    path.write_text(json.dumps(man))
    assert failed(run) == {"bounds"}


def test_missing_payouts_file_is_a_failure_not_a_traceback(run: Path) -> None:
    (run / N.PAYOUTS_FILE).unlink()
    report = check_run_dir(run)
    bad = {c.name for c in report.failures}
    assert {"payouts file", "payout rows", "payout amounts", "payout keys", "output hashes"} == bad
    assert "not found" in next(c.detail for c in report.failures if c.name == "payouts file")


def test_missing_manifest_reports_every_dependent_check(run: Path) -> None:
    (run / N.MANIFEST_FILE).unlink()
    report = check_run_dir(run)
    assert not report.ok
    bad = {c.name for c in report.failures}
    assert {
        "manifest",
        "budget",
        "paid",
        "input hashes",
        "output hashes",
        "counts",
        "liquidated users",
    } <= bad
    # Checks on the data files alone still run and pass.
    assert {"within bounds", "payout amounts", "unique allocations"}.isdisjoint(bad)
    assert report.lines()[-1].startswith("FAILED")


def test_missing_directory_is_a_failure(tmp_path: Path) -> None:
    report = check_run_dir(tmp_path / "nowhere")
    assert not report.ok and len(report.failures) == len(CHECK_NAMES)


def test_garbled_files_are_reported(run: Path) -> None:
    (run / N.ALLOCATIONS_FILE).write_bytes(b"not parquet")
    (run / N.MANIFEST_FILE).write_text("{broken")
    report = check_run_dir(run)
    detail = {c.name: c.detail for c in report.failures}
    assert "not a readable parquet" in detail["allocations file"]
    assert "not valid JSON" in detail["manifest"]


def test_bad_payout_amount_text_is_caught(run: Path) -> None:
    text = (run / N.PAYOUTS_FILE).read_text().replace("43.21", "43.2")
    (run / N.PAYOUTS_FILE).write_text(text)
    detail = {c.name: c.detail for c in check_run_dir(run).failures}
    assert "two decimals" in detail["payouts file"] and "43.2" in detail["payouts file"]


def test_user_both_allocated_and_excluded(tmp_path: Path, liq: Path) -> None:
    run = write_run(tmp_path / "run", liq, excl={**EXCLUDED, 104: N.REASON_KYC})
    report = check_run_dir(run)
    assert "allocated or excluded" in {c.name for c in report.failures}


def test_unknown_reason_and_duplicate_payout_key(tmp_path: Path, liq: Path) -> None:
    run = write_run(tmp_path / "run", liq, excl={109: "felt_like_it", 110: N.REASON_KYC})
    assert "exclusion reasons" in failed(run)
    payouts = payouts_frame(ALLOCATED).with_columns(
        pl.when(pl.col(N.USER_ID) == 102)
        .then(pl.lit("tgi-2025-101"))
        .otherwise(pl.col(N.IDEMPOTENCY_KEY))
        .alias(N.IDEMPOTENCY_KEY)
    )
    run = write_run_dir(
        tmp_path / "run2",
        allocations=allocations_frame(ALLOCATED),
        excluded=excluded_frame(EXCLUDED),
        payouts=payouts,
        manifest=manifest_for(liq, ALLOCATED, EXCLUDED),
    )
    assert failed(run) == {"payout keys"}


def test_wrong_bound_label_is_caught(tmp_path: Path, liq: Path) -> None:
    alloc = dict(ALLOCATED)
    loss, cents, _ = alloc[104]
    alloc[104] = (loss, cents, N.BOUND_CAP)
    run = write_run(tmp_path / "run", liq, alloc)
    assert failed(run) == {"bound labels"}


def test_float_noise_in_bounds_is_snapped_but_a_cent_is_not(tmp_path: Path, liq: Path) -> None:
    # With coverage_cap 0.29 and a loss of 100 USD the cap is 28.999999999999996 USD in floats:
    # it stands for 29.00 USD, so 2,900 cents; 2,899 and 2,901 are not the scenario's bound.
    assert math.floor(0.29 * 100.0 * 100) == 2899
    alloc = {u: (100.0 if u == 104 else 12_000.0, 2000, N.BOUND_INTERIOR) for u in ALLOCATED}
    for upper, ok in ((2900, True), (2899, False), (2901, False)):
        frame = allocations_frame(alloc, cover=0.29).with_columns(
            pl.when(pl.col(N.USER_ID) == 104)
            .then(upper)
            .otherwise(pl.col("upper_cents"))
            .alias("upper_cents")
        )
        run = write_run_dir(
            tmp_path / f"run{upper}",
            allocations=frame,
            excluded=excluded_frame(EXCLUDED),
            payouts=payouts_frame(alloc),
            manifest=manifest_for(liq, alloc, EXCLUDED, budget_cents=2000 * len(alloc), cover=0.29),
        )
        assert failed(run) == (set() if ok else {"bounds"}), upper


def test_infinite_cap_round_trips_through_the_manifest(tmp_path: Path, liq: Path) -> None:
    # Strict JSON writes an infinite cap as "inf"; the coverage cap then sets every upper bound.
    alloc = {u: (1_000_000.0, 2000, N.BOUND_INTERIOR) for u in ALLOCATED}
    frame = allocations_frame(alloc).with_columns(pl.lit(50_000_000, pl.Int64).alias("upper_cents"))
    man = manifest_for(liq, alloc, EXCLUDED, budget_cents=2000 * len(alloc))
    man["scenario"]["bounds"]["cap_usd"] = math.inf
    run = write_run_dir(
        tmp_path / "run",
        allocations=frame,
        excluded=excluded_frame(EXCLUDED),
        payouts=payouts_frame(alloc),
        manifest=man,
    )
    assert json.loads((run / N.MANIFEST_FILE).read_text())["scenario"]["bounds"]["cap_usd"] == "inf"
    report = check_run_dir(run)
    assert report.ok, "\n".join(report.lines())


@given(
    floor=st.sampled_from([0.0, 0.01, 0.29, 1.1, 4.0, 4.07]),
    cap=st.sampled_from([0.29, 6000.0, 123.45, math.inf]),
    cover=st.one_of(st.none(), st.sampled_from([0.07, 0.29, 0.3, 0.5, 1.0, 1.1])),
    loss=st.lists(
        st.one_of(st.floats(0.0, 1e9, allow_nan=False), st.integers(0, 10**7).map(lambda c: c / 100)),
        min_size=1,
        max_size=40,
    ),
)
def test_bounds_recomputation_agrees_with_the_rounding_module(
    floor: float, cap: float, cover: float | None, loss: list[float]
) -> None:
    # The check writes the cent conventions out again instead of calling the code it audits;
    # every bound the pipeline can store must still pass it.
    from allocator import rounding
    from allocator.problem import ScalarBounds

    assert (CENT_TOLERANCE, MAX_CENTS) == (rounding.CENT_TOL, rounding.MAX_CENTS)
    arr = np.array(loss)
    lower, upper = ScalarBounds(floor=floor, cap=cap, coverage_cap=cover, loss=arr).arrays()
    lo_c, hi_c = bounds_cents(floor, cap, cover, arr)
    assert np.array_equal(lo_c, np.ceil(np.round(lower * 100, 6)))  # the decimal reading
    ok = lo_c <= hi_c  # bounds_to_cents rejects users without a whole cent between their bounds
    ref_lo, ref_hi = rounding.bounds_to_cents(lower[ok], upper[ok])
    assert np.array_equal(lo_c[ok], ref_lo) and np.array_equal(hi_c[ok], ref_hi)


def test_payout_plan_from_the_payouts_module(tmp_path: Path, liq: Path) -> None:
    # The run directory takes the payout plan object as allocate passes it.
    from allocator.config import PayoutSpec
    from allocator.payouts import plan_payouts

    uids = np.array(sorted(ALLOCATED), dtype=np.int64)
    cents = np.array([ALLOCATED[u][1] for u in uids], dtype=np.int64)
    plan = plan_payouts(uids, cents, PayoutSpec(batch_size=3), "test-programme")
    man = manifest_for(liq, ALLOCATED, EXCLUDED)
    man["payout_batches"] = plan.schedule_dicts()
    run = write_run_dir(
        tmp_path / "run",
        allocations=allocations_frame(ALLOCATED),
        excluded=excluded_frame(EXCLUDED),
        payouts=plan,
        manifest=man,
    )
    report = check_run_dir(run)
    assert report.ok, "\n".join(report.lines())


def test_zero_cent_vouchers_have_no_payout_row(tmp_path: Path, liq: Path) -> None:
    # A zero floor lets users 104 and 105 get nothing.
    alloc = {u: (v[0], 0 if u in (104, 105) else v[1], v[2]) for u, v in ALLOCATED.items()}
    frame = allocations_frame(alloc).with_columns(pl.lit(0, pl.Int64).alias("lower_cents"))
    frame = frame.with_columns(
        pl.when(pl.col(N.VOUCHER_CENTS) == 0)
        .then(pl.lit(N.BOUND_FLOOR))
        .when(pl.col(N.VOUCHER_CENTS) >= pl.col("upper_cents"))
        .then(pl.lit(N.BOUND_CAP))
        .otherwise(pl.lit(N.BOUND_INTERIOR))
        .alias(N.BOUND)
    )
    labels = dict(zip(frame[N.USER_ID].to_list(), frame[N.BOUND].to_list()))
    alloc = {u: (v[0], v[1], labels[u]) for u, v in alloc.items()}
    paid = {u: v for u, v in alloc.items() if v[1] > 0}
    total = sum(v[1] for v in alloc.values())

    def write(name: str, payouts: dict) -> Path:
        man = manifest_for(liq, alloc, EXCLUDED, budget_cents=total)
        man["scenario"]["bounds"]["floor_usd"] = 0.0
        return write_run_dir(
            tmp_path / name,
            allocations=frame,
            excluded=excluded_frame(EXCLUDED),
            payouts=payouts_frame(payouts),
            manifest=man,
        )

    report = check_run_dir(write("run", paid))
    assert report.ok, "\n".join(report.lines())
    assert failed(write("run0", alloc)) == {"payout rows"}  # a 0.00 payout row is not a payment


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=20)
@given(data=st.data())
def test_random_valid_runs_pass_and_a_moved_cent_is_caught(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    n = data.draw(st.integers(2, 30), label="n")
    losses = data.draw(
        st.lists(st.floats(1.0, 1e6, allow_nan=False), min_size=n, max_size=n), label="loss"
    )
    alloc: dict[int, tuple[float, int, str]] = {}
    for i, loss in enumerate(losses):
        hi = upper_cents(loss)
        lo = int(FLOOR * 100)
        if hi < lo:
            loss, hi = 1000.0, int(CAP * 100)
        v = data.draw(st.integers(lo, hi))
        label = N.BOUND_FLOOR if v <= lo else N.BOUND_CAP if v >= hi else N.BOUND_INTERIOR
        alloc[1000 + 7 * i] = (loss, v, label)
    excl = {5: N.REASON_BELOW_LOSS_RATIO}
    path = tmp / "liq.parquet"
    write_liquidations(path, sorted(alloc) + sorted(excl))
    budget = sum(v for _, v, _ in alloc.values())
    frame = allocations_frame(alloc)
    kw = dict(
        excluded=excluded_frame(excl), manifest=manifest_for(path, alloc, excl, budget_cents=budget)
    )
    run = write_run_dir(tmp / "run", allocations=frame, payouts=payouts_frame(alloc), **kw)
    report = check_run_dir(run)
    assert report.ok, "\n".join(report.lines())
    # Move one cent between two users in payouts.csv only.
    i, j = data.draw(st.lists(st.sampled_from(sorted(alloc)), min_size=2, max_size=2, unique=True))
    shifted = dict(alloc)
    shifted[i] = (alloc[i][0], alloc[i][1] - 1, alloc[i][2])
    shifted[j] = (alloc[j][0], alloc[j][1] + 1, alloc[j][2])
    run = write_run_dir(tmp / "run", allocations=frame, payouts=payouts_frame(shifted), **kw)
    assert failed(run) == {"payout amounts"}


def test_voucher_usd_off_by_a_cent_is_caught(tmp_path: Path, liq: Path) -> None:
    frame = allocations_frame(ALLOCATED).with_columns(
        pl.when(pl.col(N.USER_ID) == 105)
        .then(43.22)
        .otherwise(pl.col(N.VOUCHER_USD))
        .alias(N.VOUCHER_USD)
    )
    run = write_run_dir(
        tmp_path / "run",
        allocations=frame,
        excluded=excluded_frame(EXCLUDED),
        payouts=payouts_frame(ALLOCATED),
        manifest=manifest_for(liq, ALLOCATED, EXCLUDED),
    )
    report = check_run_dir(run)
    assert {c.name for c in report.failures} == {"voucher_usd"}
    assert "user_id=105" in report.failures[0].detail
