"""Distribution rounds end to end through the CLI, on small generated data.

A three-round chain: round 1 with a reserve, round 2 releasing it with appeals (reinstate,
correct, uphold), round 3 with redemptions and ``rounds.unclaimed = "expire"``. Every property
is recomputed here from the run directories' files and the input files: the totals of each
round to the cent, no claw-back, each top-up paid once under its round's key, the expired cents
back in the pool, each appeal applied as decided. Then each bad input (exit 2, nothing written)
and tampering with a chain (check-budget fails).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, rehash_outputs, strict_json
from typer.testing import Result

from allocator import names as N
from allocator.analysis.checks import CHECK_NAMES
from allocator.data.synthetic import generate

PROGRAMME = "together-initiative-vouchers-2025"
BUDGET_USD = 3_000_000
RESERVE_USD = 150_000
SCENARIO = f"""
# A small distribution in rounds: the budget scaled to the data, 5% held back in round 1.
name = "rounds"
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 0.5
[budget]
total_usd = {BUDGET_USD}
exhaust = true
reserve_usd = {RESERVE_USD}
"""


def allocate_with(scenario: object, data: object, *args: object) -> Result:
    """``allocator allocate --scenario SCENARIO --data DATA ARGS...``"""
    return invoke("allocate", "--scenario", scenario, "--data", data, *args)


def key(user_id: int, round_number: int) -> str:
    """The idempotency key of the run directory contract, written out here."""
    middle = "" if round_number == 1 else f"round-{round_number}:"
    return hashlib.sha256(f"{PROGRAMME}:{middle}{user_id}".encode()).hexdigest()[:32]


def allocations(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / N.ALLOCATIONS_FILE)


def payouts(run: Path) -> pl.DataFrame:
    frame = pl.read_csv(run / N.PAYOUTS_FILE, infer_schema=False)
    whole = frame[N.AMOUNT].str.split(".").list.get(0).cast(pl.Int64)
    cents = frame[N.AMOUNT].str.split(".").list.get(1).cast(pl.Int64)
    return frame.select(pl.col(N.USER_ID).cast(pl.Int64), pl.col(N.IDEMPOTENCY_KEY)).with_columns(
        (whole * 100 + cents).alias("cents")
    )


def manifest(run: Path) -> dict:
    return json.loads((run / N.MANIFEST_FILE).read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, users=3000, seed=5)
    return out


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scen") / "rounds.toml"
    path.write_text(SCENARIO)
    return path


def allocate(scenario: Path, data: Path, out: Path, *extra: object) -> None:
    result = invoke("allocate", "--scenario", scenario, "--data", data, "--out", out, "-q", *extra)
    assert result.exit_code == 0, result.output


def appeals_for(round1: Path, data: Path) -> pl.DataFrame:
    """Four appeals picked from round 1's files: a reinstatement of a user below the ratio
    rule, a correction of a paid user's net assets, a user missing from the snapshot given net
    assets, and an upheld exclusion."""
    excl = pl.read_parquet(round1 / N.EXCLUDED_FILE).sort(N.USER_ID)
    alloc = allocations(round1).filter(pl.col(N.BOUND) == N.BOUND_INTERIOR).sort(N.USER_ID)
    ratio = excl.filter(pl.col(N.REASON) == N.REASON_BELOW_LOSS_RATIO)[N.USER_ID]
    missing = excl.filter(pl.col(N.REASON) == N.REASON_NO_SNAPSHOT).row(0, named=True)
    paid = alloc.row(0, named=True)
    return pl.DataFrame(
        {
            N.USER_ID: [
                int(ratio[0]),
                int(paid[N.USER_ID]),
                int(missing[N.USER_ID]),
                int(ratio[1]),
            ],
            N.DECISION: ["reinstate", "correct", "correct", "uphold"],
            # net assets of half the loss: a loss ratio of 2, past the 30% rule
            N.NET_ASSETS_USD: [None, paid[N.LOSS_USD] / 2.0, missing[N.LOSS_USD] / 2.0, None],
            N.NOTE: [
                "loss ratio disputed",
                "snapshot disputed",
                "missing from the snapshot",
                "loss ratio disputed",
            ],
        }
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, scenario_file: Path) -> dict:
    """Round 1 (reserve), round 2 (appeals), round 3 (redemptions, unclaimed vouchers expire)."""
    root = tmp_path_factory.mktemp("chain")
    r1, r2, r3 = root / "round1", root / "round2", root / "round3"
    allocate(scenario_file, data_dir, r1)
    appeals = appeals_for(r1, data_dir)
    appeals_file = root / "appeals.csv"
    appeals.write_csv(appeals_file)
    allocate(scenario_file, data_dir, r2, "--previous", r1, "--appeals", appeals_file)
    # redemptions: the first 12 payouts of round 1 and 6 of round 2, every third one unclaimed
    p1, p2 = payouts(r1).head(12), payouts(r2).slice(20, 6)
    rows = pl.concat([p1, p2]).select(N.IDEMPOTENCY_KEY, N.USER_ID)
    redeemed = [i % 3 != 0 for i in range(rows.height)]
    redemptions = rows.with_columns(pl.Series(N.REDEEMED, redeemed))
    redemptions_file = root / "redemptions.csv"
    redemptions.write_csv(redemptions_file)
    allocate(
        scenario_file,
        data_dir,
        r3,
        "--previous",
        r2,
        "--redemptions",
        redemptions_file,
        "--set",
        "rounds.unclaimed=expire",
    )
    return {
        "root": root,
        "runs": [r1, r2, r3],
        "appeals": appeals,
        "appeals_file": appeals_file,
        "redemptions": redemptions,
        "redemptions_file": redemptions_file,
    }


# ------------------------------------------------------------------------------- the chain


def test_every_round_passes_check_budget_and_later_rounds_add_the_chain_checks(chain) -> None:
    for k, run in enumerate(chain["runs"], start=1):
        result = invoke("check-budget", run, "--json")
        assert result.exit_code == 0, result.output
        report = strict_json(result.stdout)
        names = [c["name"] for c in report["checks"]]
        assert names[: len(CHECK_NAMES)] == list(CHECK_NAMES)
        if k == 1:
            assert len(names) == len(CHECK_NAMES) == 30
        else:
            assert {"previous round", "no claw-back", "chain totals", "appeals applied"} <= set(
                names
            )


def test_each_round_pays_its_cumulative_total_to_the_cent(chain) -> None:
    r1, r2, r3 = chain["runs"]
    assert int(allocations(r1)[N.VOUCHER_CENTS].sum()) == (BUDGET_USD - RESERVE_USD) * 100
    for run in (r2, r3):  # the reserve is released from round 2 on
        assert int(allocations(run)[N.VOUCHER_CENTS].sum()) == BUDGET_USD * 100
    for run in chain["runs"]:
        money = manifest(run)["money"]
        assert money["paid_cents"] == int(allocations(run)[N.VOUCHER_CENTS].sum())
        assert money["budget_cents"] == money["paid_cents"]


def _expired(chain: dict, k: int) -> pl.DataFrame:
    """Per user, the cents round k's redemptions expired (round 3 expires unclaimed vouchers)."""
    if k != 3:
        return pl.DataFrame(schema={N.USER_ID: pl.Int64, "expired": pl.Int64})
    issued = pl.concat([payouts(run) for run in chain["runs"][:2]])
    gone = chain["redemptions"].filter(~pl.col(N.REDEEMED)).select(N.IDEMPOTENCY_KEY)
    return (
        issued.join(gone, on=N.IDEMPOTENCY_KEY)
        .group_by(N.USER_ID)
        .agg(pl.col("cents").sum().alias("expired"))
    )


@pytest.mark.parametrize("k", [2, 3])
def test_nobody_is_paid_less_than_they_held_and_the_round_pays_the_difference(chain, k) -> None:
    before, now = allocations(chain["runs"][k - 2]), allocations(chain["runs"][k - 1])
    held = (
        before.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("before"))
        .join(_expired(chain, k), on=N.USER_ID, how="left")
        .select(N.USER_ID, (pl.col("before") - pl.col("expired").fill_null(0)).alias("held"))
    )
    both = now.join(held, on=N.USER_ID, how="left").with_columns(pl.col("held").fill_null(0))
    assert (both[N.PAID_BEFORE_CENTS] == both["held"]).all()
    assert (both[N.VOUCHER_CENTS] >= both[N.PAID_BEFORE_CENTS]).all()
    assert (both[N.DELTA_CENTS] == both[N.VOUCHER_CENTS] - both[N.PAID_BEFORE_CENTS]).all()
    assert (both["lower_cents"] >= both["held"]).all()
    # everyone who held something is still paid (or forfeited with nothing left)
    holders = held.filter(pl.col("held") > 0)
    assert holders.join(now, on=N.USER_ID, how="anti").height == 0
    # payouts.csv: the positive top-ups, each under the round's own key
    paid = payouts(chain["runs"][k - 1])
    top = now.filter(pl.col(N.DELTA_CENTS) > 0).select(N.USER_ID, N.DELTA_CENTS)
    joined = top.join(paid, on=N.USER_ID, how="full", coalesce=True)
    assert joined.height == top.height == paid.height
    assert (joined[N.DELTA_CENTS] == joined["cents"]).all()
    assert paid[N.IDEMPOTENCY_KEY].to_list() == [key(u, k) for u in paid[N.USER_ID].to_list()]


def test_every_top_up_is_paid_once_and_expired_cents_return_to_the_pool(chain) -> None:
    issued = pl.concat([payouts(run) for run in chain["runs"]])
    assert issued[N.IDEMPOTENCY_KEY].n_unique() == issued.height
    expired = int(_expired(chain, 3)["expired"].sum())
    assert expired > 0
    final = allocations(chain["runs"][2])
    assert int(issued["cents"].sum()) - expired == int(final[N.VOUCHER_CENTS].sum())
    # the users whose voucher expired forfeit: paid nothing more, held where they are
    forfeit = _expired(chain, 3)[N.USER_ID]
    mine = final.filter(pl.col(N.USER_ID).is_in(forfeit.implode()))
    assert (mine[N.DELTA_CENTS] == 0).all()
    assert (mine["lower_cents"] == mine["upper_cents"]).all()
    gone = pl.read_parquet(chain["runs"][2] / N.EXCLUDED_FILE).filter(
        pl.col(N.REASON) == N.REASON_VOUCHER_EXPIRED
    )
    assert set(gone[N.USER_ID].to_list()) | set(mine[N.USER_ID].to_list()) == set(forfeit.to_list())


def test_each_appeal_is_applied_as_decided(chain, data_dir: Path) -> None:
    appeals = chain["appeals"]
    r1, r2 = chain["runs"][:2]
    alloc, excl = allocations(r2), pl.read_parquet(r2 / N.EXCLUDED_FILE)
    before = pl.read_parquet(r1 / N.EXCLUDED_FILE)
    record = pl.read_parquet(r2 / N.APPEALS_FILE)
    assert record[N.USER_ID].to_list() == sorted(appeals[N.USER_ID].to_list())
    for row in appeals.iter_rows(named=True):
        uid, decision = row[N.USER_ID], row[N.DECISION]
        mine = record.filter(pl.col(N.USER_ID) == uid).row(0, named=True)
        assert mine[N.DECISION] == decision and mine[N.NOTE] == row[N.NOTE]
        if decision == "reinstate":
            reason = before.filter(pl.col(N.USER_ID) == uid)[N.REASON][0]
            assert mine[N.WAIVED] == reason and mine[N.OUTCOME] == "eligible"
            assert alloc.filter(pl.col(N.USER_ID) == uid)[N.VOUCHER_CENTS][0] > 0
        elif decision == "correct":
            paid = alloc.filter(pl.col(N.USER_ID) == uid).row(0, named=True)
            ratio = paid[N.LOSS_USD] / row[N.NET_ASSETS_USD]
            assert paid[N.LOSS_RATIO] == pytest.approx(ratio, rel=1e-12)
        else:
            assert excl.filter(pl.col(N.USER_ID) == uid)[N.REASON][0] == N.REASON_BELOW_LOSS_RATIO
            assert mine[N.OUTCOME] == f"excluded:{N.REASON_BELOW_LOSS_RATIO}"
    sec = manifest(r2)["round"]
    assert (
        sec["appeals"]["sha256"] == hashlib.sha256(chain["appeals_file"].read_bytes()).hexdigest()
    )
    assert (
        sec["previous"]["manifest_sha256"]
        == hashlib.sha256((r1 / N.MANIFEST_FILE).read_bytes()).hexdigest()
    )


def test_a_later_round_reruns_byte_identical(chain, data_dir: Path, scenario_file: Path) -> None:
    r1, r2 = chain["runs"][:2]
    again = chain["root"] / "round2-again"
    allocate(scenario_file, data_dir, again, "--previous", r1, "--appeals", chain["appeals_file"])
    for name in (
        *(N.ALLOCATIONS_FILE, N.EXCLUDED_FILE, N.PAYOUTS_FILE),
        N.VOUCHERS_FILE,
        N.APPEALS_FILE,
    ):
        assert (again / name).read_bytes() == (r2 / name).read_bytes(), name


def test_explain_tells_the_rounds_in_words(chain) -> None:
    r1, r2, r3 = chain["runs"]
    uid = int(chain["appeals"].filter(pl.col(N.DECISION) == "correct")[N.USER_ID][0])
    result = invoke("explain", uid, "--run", r3, "--no-others")
    assert result.exit_code == 0, result.output
    first = allocations(r1).filter(pl.col(N.USER_ID) == uid)[N.VOUCHER_CENTS][0]
    second = allocations(r2).filter(pl.col(N.USER_ID) == uid)[N.DELTA_CENTS][0]
    words = f"USD {first // 100:,}.{first % 100:02d} in round 1, +{second // 100:,}.{second % 100:02d} in round 2 after appeal: snapshot disputed"
    assert words in result.stdout
    data = strict_json(invoke("explain", uid, "--run", r3, "--no-others", "--json").stdout)
    assert [s["round"] for s in data["rounds"]["steps"]] == [1, 2, 3]


def test_diff_and_report_understand_rounds(chain, tmp_path: Path) -> None:
    r1, r2, _ = chain["runs"]
    out = strict_json(invoke("diff", r1, r2, "--json").stdout)
    assert out["round_a"] == 1 and out["round_b"] == 2 and out["same_chain"] is True
    appealed = out["by_why"]["appeal"]["users"]
    assert appealed == 3  # the upheld user's amount does not move
    assert out["paid_b_cents"] - out["paid_a_cents"] == RESERVE_USD * 100
    report = tmp_path / "report.json"
    result = invoke("report", r2, "--format", "json", "--out", report, "--sweep-points", "0")
    assert result.exit_code == 0, result.output
    sections = {s["id"]: s for s in json.loads(report.read_text())["sections"]}
    rounds = sections["rounds"]["data"]["rounds"]
    assert [r["total_cents"] for r in rounds] == [
        int(allocations(run)[N.VOUCHER_CENTS].sum()) for run in (r1, r2)
    ]
    assert sections["axioms"]["data"]["skipped"]


# ------------------------------------------------------------------------------ bad input


def _refused(result, out: Path, *words: str) -> None:  # noqa: ANN001
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert not out.exists()


def next_round_with_appeals(
    scenario: object, data: object, previous: Path, appeals: Path, out: Path
) -> Result:
    """``allocate`` of the round after ``previous`` with ``appeals``, into ``out``."""
    return allocate_with(scenario, data, "--previous", previous, "--appeals", appeals, "--out", out)


def _appeal_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appeals.csv"
    path.write_text(text)
    return path


def test_an_appeal_for_an_unknown_user_is_refused(chain, data_dir, scenario_file, tmp_path):
    bad = _appeal_file(tmp_path, "user_id,decision,note\n99999999999,reinstate,who\n")
    out = tmp_path / "out"
    result = next_round_with_appeals(scenario_file, data_dir, chain["runs"][0], bad, out)
    _refused(result, out, str(bad), "99999999999", "liquidations")


def test_duplicate_appeals_are_refused(chain, data_dir, scenario_file, tmp_path):
    uid = int(chain["appeals"][N.USER_ID][0])
    bad = _appeal_file(tmp_path, f"user_id,decision\n{uid},reinstate\n{uid},uphold\n")
    out = tmp_path / "out"
    result = next_round_with_appeals(scenario_file, data_dir, chain["runs"][0], bad, out)
    _refused(result, out, str(bad), str(uid), "twice", "line 2", "line 3")


def test_an_appeal_for_a_user_paid_in_full_is_refused(chain, data_dir, scenario_file, tmp_path):
    capped = allocations(chain["runs"][0]).filter(pl.col(N.VOUCHER_CENTS) == 600_000)
    uid = int(capped[N.USER_ID][0])
    bad = _appeal_file(tmp_path, f"user_id,decision,note\n{uid},uphold,wants more\n")
    out = tmp_path / "out"
    result = next_round_with_appeals(scenario_file, data_dir, chain["runs"][0], bad, out)
    _refused(result, out, str(bad), str(uid), "paid in full")


def test_an_appeal_decided_in_an_earlier_round_is_refused(chain, data_dir, scenario_file, tmp_path):
    uid = int(chain["appeals"][N.USER_ID][0])
    bad = _appeal_file(tmp_path, f"user_id,decision\n{uid},uphold\n")
    out = tmp_path / "out"
    result = next_round_with_appeals(scenario_file, data_dir, chain["runs"][1], bad, out)
    _refused(result, out, str(bad), "decided in round 2")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("user_id,decision,net_asets_usd\n1,correct,5\n", ["net_asets_usd", "did you mean"]),
        ("user_id,decision\n1,approve\n", ["decision", "line 2", "reinstate"]),
        ("user_id,decision,net_assets_usd\n1,uphold,5\n", ["uphold", "correct"]),
        ("user_id,decision\n1,correct\n", ["correct", "corrected value"]),
        ("user_id,decision,net_assets_usd\n1,correct,nan\n", ["net_assets_usd", "finite"]),
    ],
    ids=["unknown-column", "unknown-decision", "uphold-corrects", "correct-nothing", "nan"],
)
def test_a_malformed_appeals_file_is_refused(chain, data_dir, scenario_file, tmp_path, text, words):
    bad = _appeal_file(tmp_path, text)
    out = tmp_path / "out"
    result = next_round_with_appeals(scenario_file, data_dir, chain["runs"][0], bad, out)
    _refused(result, out, str(bad), *words)


def test_appeals_without_a_previous_round_are_refused(data_dir, scenario_file, tmp_path):
    bad = _appeal_file(tmp_path, "user_id,decision\n1,uphold\n")
    out = tmp_path / "out"
    result = allocate_with(
        scenario_file,
        data_dir,
        "--appeals",
        bad,
        "--out",
        out,
    )
    _refused(result, out, "--appeals", "--previous")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (["--set", "bounds.cap_usd=1000"], ["claw back", "bounds.cap_usd"]),
        (["--set", "eligibility.min_loss_usd=20000"], ["claw back", "below_min_loss"]),
        (["--set", f"budget.total_usd={BUDGET_USD // 2}"], ["claw back", "already hold"]),
    ],
    ids=["cap-lowered", "threshold-raised", "budget-cut"],
)
def test_a_scenario_that_would_claw_back_is_refused(
    chain, data_dir, scenario_file, tmp_path, change, words
):
    out = tmp_path / "out"
    result = allocate_with(
        scenario_file,
        data_dir,
        "--previous",
        chain["runs"][0],
        "--out",
        out,
        *change,
    )
    _refused(result, out, *words)


def _copy_chain(
    chain: dict, tmp_path: Path, data_dir: Path, scenario_file: Path
) -> tuple[Path, Path]:
    """A fresh round 1 and round 2 of their own (a manifest records its previous run's path)."""
    r1, r2 = tmp_path / "round1", tmp_path / "round2"
    shutil.copytree(chain["runs"][0], r1)
    appeals = tmp_path / "appeals.csv"
    shutil.copy(chain["appeals_file"], appeals)
    allocate(scenario_file, data_dir, r2, "--previous", r1, "--appeals", appeals)
    return r1, r2


def _move_a_cent(run: Path) -> None:
    frame = allocations(run)
    interior = frame[N.BOUND] == N.BOUND_INTERIOR
    first, second = [int(i) for i in interior.arg_true()[:2]]
    cents = frame[N.VOUCHER_CENTS].to_list()
    cents[first] += 1
    cents[second] -= 1
    frame.with_columns(pl.Series(N.VOUCHER_CENTS, cents)).write_parquet(run / N.ALLOCATIONS_FILE)
    rehash_outputs(run)


def test_a_previous_run_that_fails_check_budget_is_refused(
    chain, data_dir, scenario_file, tmp_path
):
    r1 = tmp_path / "round1"
    shutil.copytree(chain["runs"][0], r1)
    _move_a_cent(r1)
    out = tmp_path / "out"
    result = allocate_with(
        scenario_file,
        data_dir,
        "--previous",
        r1,
        "--out",
        out,
    )
    _refused(result, out, "fails check-budget", str(r1))


def _failed(run: Path) -> set[str]:
    result = invoke("check-budget", run, "--json")
    assert result.exit_code == 1, result.output
    return {c["name"] for c in strict_json(result.stdout)["checks"] if not c["ok"]}


def test_check_budget_fails_a_chain_whose_previous_run_was_edited(
    chain, data_dir, scenario_file, tmp_path
):
    r1, r2 = _copy_chain(chain, tmp_path, data_dir, scenario_file)
    assert invoke("check-budget", r2).exit_code == 0
    _move_a_cent(r1)
    assert "previous round" in _failed(r2)


def test_check_budget_fails_a_chain_whose_appeals_file_was_edited(
    chain, data_dir, scenario_file, tmp_path
):
    r1, r2 = _copy_chain(chain, tmp_path, data_dir, scenario_file)
    appeals = tmp_path / "appeals.csv"
    appeals.write_text(appeals.read_text().replace("snapshot disputed", "snapshot disputed!"))
    assert "appeals applied" in _failed(r2)


def test_check_budget_fails_a_round_that_claws_back(chain, data_dir, scenario_file, tmp_path):
    r1, r2 = _copy_chain(chain, tmp_path, data_dir, scenario_file)
    frame = allocations(r2)
    ids = frame[N.USER_ID].to_list()
    held = frame.filter(pl.col(N.PAID_BEFORE_CENTS) > 0).row(0, named=True)
    other = frame.filter(
        (pl.col(N.USER_ID) != held[N.USER_ID]) & (pl.col(N.BOUND) == N.BOUND_INTERIOR)
    ).row(0, named=True)
    # a user who held a voucher is paid a cent less than they held, another user gets the
    # difference: the total stays the budget, every hash is rewritten
    i, j = ids.index(held[N.USER_ID]), ids.index(other[N.USER_ID])
    cents = frame[N.VOUCHER_CENTS].to_list()
    taken = cents[i] - (held[N.PAID_BEFORE_CENTS] - 1)
    cents[i] -= taken
    cents[j] += taken
    frame.with_columns(pl.Series(N.VOUCHER_CENTS, cents)).write_parquet(r2 / N.ALLOCATIONS_FILE)
    rehash_outputs(r2)
    assert "no claw-back" in _failed(r2)


def _redemptions_file(tmp_path: Path, rows: list[tuple[str, int, str]]) -> Path:
    path = tmp_path / "redemptions.csv"
    lines = ["idempotency_key,user_id,redeemed", *(f"{k},{u},{r}" for k, u, r in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_redemptions_are_refused(chain, data_dir, scenario_file, tmp_path) -> None:
    r1, r2, r3 = chain["runs"]
    paid = payouts(r1).row(0, named=True)
    uid, good = paid[N.USER_ID], paid[N.IDEMPOTENCY_KEY]
    expired = chain["redemptions"].filter(~pl.col(N.REDEEMED)).row(0, named=True)
    cases = [
        ([(key(uid, 9), uid, "true")], r1, ["not a voucher of rounds 1 to 1"]),
        ([(good, uid + 1, "true")], r1, [f"paid user {uid}"]),
        ([(good, uid, "true"), (good, uid, "false")], r1, ["appears twice"]),
        ([(good, uid, "perhaps")], r1, ["redeemed", "true or false"]),
        (
            [(expired[N.IDEMPOTENCY_KEY], expired[N.USER_ID], "true")],
            r3,
            ["already settled as expired in round 3"],
        ),
    ]
    for k, (rows, previous, words) in enumerate(cases):
        bad = _redemptions_file(tmp_path, rows)
        out = tmp_path / f"out{k}"
        result = allocate_with(
            scenario_file,
            data_dir,
            "--previous",
            previous,
            "--redemptions",
            bad,
            "--out",
            out,
        )
        _refused(result, out, str(bad), *words)


def test_check_budget_fails_a_chain_whose_redemptions_file_was_edited(
    chain, data_dir, scenario_file, tmp_path
):
    r1, r2 = _copy_chain(chain, tmp_path, data_dir, scenario_file)
    paid = payouts(r1).head(2)
    rows = [(k, u, "false") for k, u in zip(paid[N.IDEMPOTENCY_KEY], paid[N.USER_ID])]
    red = _redemptions_file(tmp_path, rows)
    r3 = tmp_path / "round3"
    allocate(
        scenario_file,
        data_dir,
        r3,
        "--previous",
        r2,
        "--redemptions",
        red,
        "--set",
        "rounds.unclaimed=expire",
    )
    assert invoke("check-budget", r3).exit_code == 0
    red.write_text(red.read_text().replace("false", "true", 1))
    failed = _failed(r3)
    assert {"redemptions file", "voucher ledger"} <= failed


def test_check_budget_fails_a_chain_whose_previous_run_moved(
    chain, data_dir, scenario_file, tmp_path
):
    r1, r2 = _copy_chain(chain, tmp_path, data_dir, scenario_file)
    r1.rename(tmp_path / "elsewhere")
    assert "previous round" in _failed(r2)


def test_check_budget_fails_an_edited_voucher_ledger(chain, data_dir, scenario_file, tmp_path):
    r1, r2 = _copy_chain(chain, tmp_path, data_dir, scenario_file)
    ledger = pl.read_parquet(r2 / N.VOUCHERS_FILE)
    first = pl.col(N.USER_ID) == ledger[N.USER_ID][0]
    ledger.with_columns(
        pl.when(first).then(pl.lit(N.VOUCHER_REDEEMED)).otherwise(pl.col(N.STATUS)).alias(N.STATUS)
    ).write_parquet(r2 / N.VOUCHERS_FILE)
    rehash_outputs(r2)
    assert "voucher ledger" in _failed(r2)


def test_a_reserve_round_one_keeps_its_thirty_checks_and_its_budget(chain, tmp_path) -> None:
    r1 = tmp_path / "round1"
    shutil.copytree(chain["runs"][0], r1)
    man = manifest(r1)
    assert "round" not in man and man["money"]["budget_cents"] == (BUDGET_USD - RESERVE_USD) * 100
    man["money"]["budget_cents"] = BUDGET_USD * 100
    man["money"]["unspent_cents"] = RESERVE_USD * 100
    (r1 / N.MANIFEST_FILE).write_text(json.dumps(man, sort_keys=True, indent=2) + "\n")
    assert "budget" in _failed(r1)


def test_allocate_help_documents_rounds() -> None:
    result = invoke("allocate", "--help")
    assert result.exit_code == 0
    for option in ("--previous", "--appeals", "--redemptions"):
        assert option in result.stdout


def test_a_reinstatement_in_a_round_without_new_money_is_infeasible(
    chain, data_dir, scenario_file, tmp_path
):
    out = tmp_path / "out"
    uid = int(chain["appeals"].filter(pl.col(N.DECISION) == "reinstate")[N.USER_ID][0])
    bad = _appeal_file(tmp_path, f"user_id,decision,note\n{uid},reinstate,late\n")
    result = allocate_with(
        scenario_file,
        data_dir,
        "--previous",
        chain["runs"][0],
        "--appeals",
        bad,
        "--set",
        "rounds.reserve_release_round=3",
        "--out",
        out,
    )
    assert result.exit_code == 3, result.output
    assert "already hold" in result.output and "short" in result.output
    assert not out.exists()


def test_a_round_cannot_replace_its_previous_run(chain, data_dir, scenario_file, tmp_path):
    r1 = tmp_path / "round1"
    shutil.copytree(chain["runs"][0], r1)
    before = (r1 / N.MANIFEST_FILE).read_bytes()
    result = allocate_with(
        scenario_file,
        data_dir,
        "--previous",
        r1,
        "--out",
        r1,
        "--force",
    )
    assert result.exit_code == 2 and "previous round" in result.output
    assert (r1 / N.MANIFEST_FILE).read_bytes() == before


def test_an_appeals_csv_with_spaces_around_its_values_passes_check_budget(
    chain, data_dir, scenario_file, tmp_path
):
    r1 = tmp_path / "round1"
    shutil.copytree(chain["runs"][0], r1)
    row = chain["appeals"].filter(pl.col(N.DECISION) == "uphold").row(0, named=True)
    spaced = _appeal_file(
        tmp_path, f"user_id, decision, note\n {row[N.USER_ID]} , Uphold ,  loss ratio disputed \n"
    )
    spaced.write_text(
        spaced.read_text().replace("user_id, decision, note", "user_id,decision,note")
    )
    r2 = tmp_path / "round2"
    allocate(scenario_file, data_dir, r2, "--previous", r1, "--appeals", spaced)
    assert invoke("check-budget", r2).exit_code == 0
    record = pl.read_parquet(r2 / N.APPEALS_FILE)
    assert record[N.NOTE].to_list() == ["loss ratio disputed"]
    assert record[N.DECISION].to_list() == ["uphold"]
