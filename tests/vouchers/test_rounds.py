"""Invariants of a distribution in rounds, for any rule, reserve, appeals and redemptions.

Hypothesis draws a scenario (the rule, alpha, the reserve and the round that releases it, the
policy for unclaimed vouchers), a set of valid appeals and a redemptions file, runs three rounds
through the library and checks, from the written files alone: nobody is ever paid less than they
hold, every round's total is its target to the cent, the vouchers issued less those expired are
what users hold, every run of the chain passes check-budget, and round 2 written twice is the
same bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import names as N
from allocator.analysis.checks import check_run_dir
from allocator.data.synthetic import generate
from allocator.settings.scenarios import parse_scenario
from allocator.vouchers.pipeline import DataSession, allocate, write_run
from allocator.vouchers.rounds import allocate_round, write_round

BUDGET_USD = 1_500_000
ROUND_FILES = (
    N.ALLOCATIONS_FILE,
    N.EXCLUDED_FILE,
    N.PAYOUTS_FILE,
    N.VOUCHERS_FILE,
    N.APPEALS_FILE,
)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> DataSession:
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, users=1500, seed=3)
    return DataSession.open(out)


@st.composite
def distributions(draw: st.DrawFn) -> dict:
    rule = draw(
        st.sampled_from(
            ["alpha_fair", "proportional", "constrained_equal_awards", "talmud", "max_min"]
        )
    )
    objective: dict = {"rule": rule}
    if rule == "alpha_fair":
        objective["alpha"] = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    reserve = draw(st.integers(0, 20)) * BUDGET_USD // 100
    return {
        "scenario": {
            "name": "drawn",
            "objective": objective,
            "budget": {"total_usd": float(BUDGET_USD), "reserve_usd": float(reserve)},
            "rounds": {
                "unclaimed": draw(st.sampled_from(["keep", "expire"])),
                "reserve_release_round": draw(st.sampled_from([2, 3])),
            },
        },
        "appeals": draw(st.integers(0, 6)),
        "unclaimed_share": draw(st.floats(0.0, 1.0)),
        "redeemed_share": draw(st.floats(0.0, 1.0)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _appeals(
    run: Path, n: int, rng: np.random.Generator, cap_usd: float, *, new_money: bool
) -> pl.DataFrame:
    """Up to ``n`` valid appeals: reinstatements of users out for a rule (with a loss and a
    snapshot; only in a round with new money to pay their floors), corrections of paid users'
    net assets, and upheld exclusions."""
    excl = pl.read_parquet(run / N.EXCLUDED_FILE)
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    out_for_a_rule = excl.filter(
        pl.col(N.REASON).is_in([N.REASON_BELOW_LOSS_RATIO, N.REASON_KYC, N.REASON_DEPEG])
        & (pl.col(N.LOSS_USD) > 0)
        & pl.col(N.NET_ASSETS_USD).is_not_null()
    )[N.USER_ID].to_numpy()
    most = np.floor(np.minimum(cap_usd, alloc[N.LOSS_USD].to_numpy()) * 100)
    open_to_more = alloc.filter(pl.Series(alloc[N.VOUCHER_CENTS].to_numpy() < most - 1))
    rows = []
    picked: set[int] = set()
    for _ in range(n):
        kind = rng.integers(3)
        if kind == 0 and out_for_a_rule.size and new_money:
            uid, decision, net = int(rng.choice(out_for_a_rule)), "reinstate", None
        elif kind == 1 and open_to_more.height:
            row = open_to_more.row(int(rng.integers(open_to_more.height)), named=True)
            uid, decision, net = int(row[N.USER_ID]), "correct", row[N.LOSS_USD] / 2.0
        elif out_for_a_rule.size:
            uid, decision, net = int(rng.choice(out_for_a_rule)), "uphold", None
        else:
            continue
        if uid not in picked:
            picked.add(uid)
            rows.append((uid, decision, net, f"appeal {len(rows)}"))
    return pl.DataFrame(
        rows,
        schema={
            N.USER_ID: pl.Int64,
            N.DECISION: pl.String,
            N.NET_ASSETS_USD: pl.Float64,
            N.NOTE: pl.String,
        },
        orient="row",
    )


def _redemptions(runs: list[Path], case: dict, rng: np.random.Generator) -> pl.DataFrame:
    """Some of the vouchers issued so far, each redeemed or not."""
    issued = pl.concat([pl.read_csv(r / N.PAYOUTS_FILE, infer_schema=False) for r in runs]).select(
        N.IDEMPOTENCY_KEY, pl.col(N.USER_ID).cast(pl.Int64)
    )
    pick = rng.random(issued.height) < case["unclaimed_share"] * 0.05
    chosen = issued.filter(pl.Series(pick))
    redeemed = rng.random(chosen.height) < case["redeemed_share"]
    return chosen.with_columns(pl.Series(N.REDEEMED, redeemed))


def _cents(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / N.ALLOCATIONS_FILE)


@settings(max_examples=12)
@given(case=distributions())
def test_rounds_never_claw_back_and_pay_their_totals_exactly(session: DataSession, case) -> None:
    _check_a_chain(session, case)


def test_one_drawn_chain_holds_the_invariants(session: DataSession) -> None:
    """The same checks on one chain, in the quick suite."""
    case = {
        "scenario": {
            "name": "drawn",
            "budget": {"total_usd": float(BUDGET_USD), "reserve_usd": 75_000.0},
            "rounds": {"unclaimed": "expire", "reserve_release_round": 3},
        },
        "appeals": 5,
        "unclaimed_share": 1.0,
        "redeemed_share": 0.5,
        "seed": 7,
    }
    _check_a_chain(session, case)


def _check_a_chain(session: DataSession, case: dict) -> None:
    scenario = parse_scenario(case["scenario"], file="drawn")
    rng = np.random.default_rng(case["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        r1, r2, r3 = root / "r1", root / "r2", root / "r3"
        write_run(r1, session, allocate(session, scenario), solver_requested="auto")
        appeals = root / "appeals.csv"
        new_money = scenario.budget.reserve_usd > 0 and scenario.rounds.reserve_release_round == 2
        _appeals(
            r1, case["appeals"], rng, float(scenario.bounds.cap_usd), new_money=new_money
        ).write_csv(appeals)
        round2 = allocate_round(session, scenario, r1, appeals=appeals)
        write_round(r2, session, round2, solver_requested="auto")
        again = root / "r2-again"
        write_round(
            again,
            session,
            allocate_round(session, scenario, r1, appeals=appeals),
            solver_requested="auto",
        )
        for name in ROUND_FILES:
            assert (again / name).read_bytes() == (r2 / name).read_bytes(), name
        redemptions = root / "redemptions.csv"
        red = _redemptions([r1, r2], case, rng)
        red.write_csv(redemptions)
        write_round(
            r3,
            session,
            allocate_round(session, scenario, r2, redemptions=redemptions),
            solver_requested="auto",
        )

        total = BUDGET_USD * 100
        reserve = round(scenario.budget.reserve_usd * 100)
        release = scenario.rounds.reserve_release_round
        for k, run in enumerate((r1, r2, r3), start=1):
            target = total - (reserve if k < release else 0)
            assert int(_cents(run)[N.VOUCHER_CENTS].sum()) == target  # exhaust: to the cent
        expired_keys = (
            red.filter(~pl.col(N.REDEEMED))[N.IDEMPOTENCY_KEY]
            if scenario.rounds.unclaimed == "expire"
            else pl.Series([], dtype=pl.String)
        )
        issued = []
        for k, (before, now) in enumerate(((r1, r2), (r2, r3)), start=2):
            paid = pl.read_csv(now / N.PAYOUTS_FILE, infer_schema=False)
            issued.append(paid)
            old = _cents(before).select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("old"))
            new = _cents(now)
            both = new.join(old, on=N.USER_ID, how="left").with_columns(pl.col("old").fill_null(0))
            # no claw-back: at least what they held, which is at most what they had
            assert (both[N.VOUCHER_CENTS] >= both[N.PAID_BEFORE_CENTS]).all()
            assert (both[N.PAID_BEFORE_CENTS] <= both["old"]).all()
            if k == 2 or expired_keys.len() == 0:
                assert (both[N.PAID_BEFORE_CENTS] == both["old"]).all()
            assert (both[N.DELTA_CENTS] == both[N.VOUCHER_CENTS] - both[N.PAID_BEFORE_CENTS]).all()
            gone = old.filter(pl.col("old") > 0).join(new, on=N.USER_ID, how="anti")
            excluded = pl.read_parquet(now / N.EXCLUDED_FILE).filter(
                pl.col(N.REASON) == N.REASON_VOUCHER_EXPIRED
            )
            assert set(gone[N.USER_ID].to_list()) <= set(excluded[N.USER_ID].to_list())
        first = pl.read_csv(r1 / N.PAYOUTS_FILE, infer_schema=False)
        every = pl.concat([first, *issued])
        assert every[N.IDEMPOTENCY_KEY].n_unique() == every.height

        def cents(text: pl.Series) -> int:
            parts = text.str.split(".")
            return int(
                (parts.list.get(0).cast(pl.Int64) * 100 + parts.list.get(1).cast(pl.Int64)).sum()
            )

        expired = cents(
            every.filter(pl.col(N.IDEMPOTENCY_KEY).is_in(expired_keys.implode()))[N.AMOUNT]
        )
        assert cents(every[N.AMOUNT]) - expired == int(_cents(r3)[N.VOUCHER_CENTS].sum())
        report = check_run_dir(r3)
        assert report.ok, [f"{c.name}: {c.detail}" for c in report.failures]
