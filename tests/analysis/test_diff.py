"""``allocator diff``: two written runs user by user, checked against a join of their files.

Small runs (2,000 generated users, budget USD 2M) are written with ``allocator allocate``: the
baseline, the same scenario again, and one change each (alpha, the minimum loss, the cap, a
claims rule, a feature coefficient). Every diff is checked against a full join of the two runs'
``allocations.parquet`` and ``excluded.parquet`` computed here: the counts, the totals, every
user's cents and statuses, and each ``why`` from the precedence in
:mod:`allocator.analysis.diff`. A hypothesis property checks that diff(A, B) and diff(B, A) are
mirror images on random tables.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, strict_json
from hypothesis import given
from hypothesis import strategies as st

import allocator.cli.cmd_diff  # noqa: F401  (registers the diff command)
from allocator import names as N
from allocator.analysis.diff import (
    DIFF_COLUMNS,
    WHYS,
    diff_runs,
    user_diff,
)
from allocator.data.synthetic import generate
from allocator.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
#: The runs written once for the module: name -> extra --set assignments.
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "again": (),
    "alpha2": ("objective.alpha=2",),
    "minloss": ("eligibility.min_loss_usd=100",),
    "cap": ("bounds.cap_usd=2000",),
    "cea": ("objective.rule=cea",),
    "vip": ("objective.features.vip_tier=0.2",),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diff")
    data = root / "data"
    generate(data, users=2000, seed=3)
    out = {}
    for name, sets in VARIANTS.items():
        run = root / "runs" / name
        extra = [a for s in sets for a in ("--set", s)]
        r = invoke(
            "allocate",
            "--scenario",
            ROOT / "scenarios" / "baseline.toml",
            "--data",
            data,
            "--out",
            run,
            "-q",
            "--set",
            "budget.total_usd=2e6",  # the 2,000-user data set's scale
            *extra,
        )
        assert r.exit_code == 0, r.output
        out[name] = run
    return out


def _diff_json(a: Path, b: Path, *extra: object) -> dict:
    r = invoke("diff", a, b, "--json", *extra)
    assert r.exit_code == 0, r.output
    return strict_json(r.stdout)


def _reference(a: Path, b: Path) -> pl.DataFrame:
    """A full join of the two runs' files, computed directly: cents, statuses, bounds, weights."""

    def side(run: Path, s: str) -> pl.DataFrame:
        paid = pl.read_parquet(run / N.ALLOCATIONS_FILE).select(
            N.USER_ID,
            pl.col(N.VOUCHER_CENTS).alias(f"cents_{s}"),
            pl.lit("paid").alias(f"status_{s}"),
            pl.col(N.BOUND).alias(f"bound_{s}"),
            pl.col("lower_cents").alias(f"lower_{s}"),
            pl.col("upper_cents").alias(f"upper_{s}"),
            pl.col(N.WEIGHT).alias(f"weight_{s}"),
        )
        excluded = pl.read_parquet(run / N.EXCLUDED_FILE).select(
            N.USER_ID, ("excluded:" + pl.col(N.REASON)).alias(f"status_{s}")
        )
        return pl.concat([paid, excluded], how="diagonal")

    j = side(a, "a").join(side(b, "b"), on=N.USER_ID, how="full", coalesce=True)
    return j.with_columns(
        pl.col("cents_a").fill_null(0),
        pl.col("cents_b").fill_null(0),
        pl.col("status_a").fill_null("absent"),
        pl.col("status_b").fill_null("absent"),
    ).sort(N.USER_ID)


def _out_table(a: Path, b: Path, tmp: Path) -> pl.DataFrame:
    file = tmp / f"{a.name}-{b.name}.parquet"
    r = invoke("diff", a, b, "--out", file, "--force")
    assert r.exit_code == 0, r.output
    return pl.read_parquet(file)


@pytest.mark.parametrize("variant", ["again", "alpha2", "minloss", "cap", "cea", "vip"])
def test_diff_matches_a_direct_join_of_the_files(
    runs: dict[str, Path], variant: str, tmp_path: Path
) -> None:
    a, b = runs["base"], runs[variant]
    ref = _reference(a, b)
    out = _diff_json(a, b, "--top", "25")
    table = _out_table(a, b, tmp_path)

    # every user of either run, once, in user order, with the joined cents and statuses
    assert table.columns == list(DIFF_COLUMNS)
    assert table[N.USER_ID].to_list() == ref[N.USER_ID].to_list()
    assert table["old_cents"].to_list() == ref["cents_a"].to_list()
    assert table["new_cents"].to_list() == ref["cents_b"].to_list()
    assert (table["delta_cents"] == ref["cents_b"] - ref["cents_a"]).all()
    assert table["old_status"].to_list() == ref["status_a"].to_list()
    assert table["new_status"].to_list() == ref["status_b"].to_list()

    paid_a = ref["status_a"] == "paid"
    paid_b = ref["status_b"] == "paid"
    same = ref["cents_a"] == ref["cents_b"]
    assert out["users"] == ref.height
    assert out["changed"] == int((paid_a & paid_b & ~same).sum())
    assert out["unchanged"] == int((paid_a & paid_b & same).sum())
    assert out["added"] == int((~paid_a & paid_b).sum())
    assert out["removed"] == int((paid_a & ~paid_b).sum())
    assert out["paid_in_neither"] == int((~paid_a & ~paid_b).sum())
    assert (
        out["changed"] + out["unchanged"] + out["added"] + out["removed"] + out["paid_in_neither"]
        == ref.height
    )

    # money, to the cent: the totals, the moves, and paid A + every delta = paid B
    delta = ref["cents_b"] - ref["cents_a"]
    alloc_a = pl.read_parquet(a / N.ALLOCATIONS_FILE)
    alloc_b = pl.read_parquet(b / N.ALLOCATIONS_FILE)
    assert out["paid_a_cents"] == int(alloc_a[N.VOUCHER_CENTS].sum())
    assert out["paid_b_cents"] == int(alloc_b[N.VOUCHER_CENTS].sum())
    assert out["paid_a_cents"] + int(table["delta_cents"].sum()) == out["paid_b_cents"]
    assert out["delta_cents"] == int(delta.sum())
    assert out["moved_cents"] == int(delta.abs().sum())
    assert out["moved_usd"] == pytest.approx(int(delta.abs().sum()) / 100, abs=1e-9)
    assert out["paid_a_usd"] == pytest.approx(out["paid_a_cents"] / 100, abs=1e-9)
    assert out["paid_b_usd"] == pytest.approx(out["paid_b_cents"] / 100, abs=1e-9)

    # why: eligibility exactly for users paid in one run, unchanged exactly for equal cents
    why = table["why"]
    assert ((why == "eligibility") == (paid_a != paid_b)).all()
    assert ((why == "unchanged") == ((paid_a == paid_b) & same)).all()
    assert set(why.unique().to_list()) <= set(WHYS)
    assert list(out["by_why"]) == list(WHYS)
    assert sum(v["users"] for v in out["by_why"].values()) == ref.height
    assert sum(v["delta_cents"] for v in out["by_why"].values()) == out["delta_cents"]
    assert sum(v["moved_cents"] for v in out["by_why"].values()) == out["moved_cents"]
    for name, v in out["by_why"].items():
        rows = why == name
        assert v["users"] == int(rows.sum())
        assert v["delta_cents"] == int(delta.filter(rows).sum())

    # the largest moves: the top |delta| (ties by user id), matching the table's rows
    largest = out["largest"]
    moved = table.filter(pl.col("delta_cents") != 0).sort(
        [pl.col("delta_cents").abs(), pl.col(N.USER_ID)], descending=[True, False]
    )
    assert [r["user_id"] for r in largest] == moved[N.USER_ID].head(25).to_list()
    for r in largest:
        row = table.filter(pl.col(N.USER_ID) == r["user_id"]).row(0, named=True)
        assert {k: r[k] for k in DIFF_COLUMNS} == row
        assert r["delta_usd"] == pytest.approx(r["delta_cents"] / 100, abs=1e-9)


def _why_expected(ref: pl.DataFrame, *, rules_differ: bool) -> pl.Series:
    """``why`` from the joined files, the precedence written out row by row."""
    out = []
    for r in ref.iter_rows(named=True):
        pa, pb = r["status_a"] == "paid", r["status_b"] == "paid"
        if pa != pb:
            out.append("eligibility")
        elif r["cents_a"] == r["cents_b"]:
            out.append("unchanged")
        elif (
            r["bound_a"] != r["bound_b"]
            or (r["bound_a"] == "floor" and r["lower_a"] != r["lower_b"])
            or (r["bound_a"] == "cap" and r["upper_a"] != r["upper_b"])
        ):
            out.append("bound")
        elif rules_differ:
            out.append("rule")
        elif abs(r["weight_a"] - r["weight_b"]) > 1e-12 * max(
            abs(r["weight_a"]), abs(r["weight_b"])
        ):
            out.append("weight")
        else:
            out.append("rule")
    return pl.Series("why", out)


@pytest.mark.parametrize("variant", ["alpha2", "minloss", "cap", "cea", "vip"])
def test_why_follows_the_documented_precedence(
    runs: dict[str, Path], variant: str, tmp_path: Path
) -> None:
    a, b = runs["base"], runs[variant]
    table = _out_table(a, b, tmp_path)
    expected = _why_expected(_reference(a, b), rules_differ=variant == "cea")
    assert table["why"].to_list() == expected.to_list()


def test_a_higher_minimum_loss_removes_users_for_eligibility(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    table = _out_table(runs["base"], runs["minloss"], tmp_path)
    removed = table.filter(pl.col("why") == "eligibility")
    assert removed.height > 0
    # paid before, excluded now for the new minimum; nobody newly paid
    assert (removed["old_status"] == "paid").all()
    assert (removed["new_status"] == "excluded:below_min_loss").all()
    assert (removed["new_cents"] == 0).all() and (removed["delta_cents"] < 0).all()
    # the other way round, they are newly eligible
    back = _out_table(runs["minloss"], runs["base"], tmp_path)
    added = back.filter(pl.col("why") == "eligibility")
    assert added[N.USER_ID].to_list() == removed[N.USER_ID].to_list()
    assert (added["new_status"] == "paid").all()
    out = _diff_json(runs["minloss"], runs["base"])
    assert out["added"] == removed.height and out["removed"] == 0
    assert out["by_why"]["eligibility"]["users"] == removed.height
    assert out["largest"][0]["detail"].startswith("newly eligible (in A: excluded:below_min_loss")


def test_a_lower_cap_is_the_reason_for_capped_users(runs: dict[str, Path], tmp_path: Path) -> None:
    table = _out_table(runs["base"], runs["cap"], tmp_path)
    old = pl.read_parquet(runs["base"] / N.ALLOCATIONS_FILE).select(
        N.USER_ID, pl.col(N.BOUND).alias("bound_a")
    )
    new = pl.read_parquet(runs["cap"] / N.ALLOCATIONS_FILE).select(
        N.USER_ID, pl.col(N.BOUND).alias("bound_b"), pl.col(N.WEIGHT).alias("w_b")
    )
    joined = table.join(old, on=N.USER_ID).join(new, on=N.USER_ID)
    capped_now = joined.filter(pl.col("bound_b") == "cap")
    assert capped_now.height > 0
    # at USD 6,000 before and USD 2,000 now, or newly at the cap: the cap is the reason
    assert (capped_now.filter(pl.col("delta_cents") != 0)["why"] == "bound").all()
    assert (capped_now.filter(pl.col("bound_a") == "cap")["new_cents"] == 200_000).all()
    # the weights did not move; everyone else moved with the price
    assert set(table["why"].unique().to_list()) <= {"bound", "rule", "unchanged"}
    out = _diff_json(runs["base"], runs["cap"], "--top", "1000000")
    assert out["by_why"]["bound"]["users"] > 0 and out["by_why"]["weight"]["users"] == 0
    assert out["rule_a"] == out["rule_b"] == "alpha_fair"
    was_capped = [r for r in out["largest"] if r["old_bound"] == r["new_bound"] == "cap"]
    assert was_capped
    assert {r["detail"] for r in was_capped} == {"cap USD 6,000.00 -> cap USD 2,000.00"}


def test_a_feature_coefficient_is_a_weight_change(runs: dict[str, Path], tmp_path: Path) -> None:
    table = _out_table(runs["base"], runs["vip"], tmp_path)
    weights = (
        pl.read_parquet(runs["base"] / N.ALLOCATIONS_FILE)
        .select(N.USER_ID, pl.col(N.WEIGHT).alias("w_a"), pl.col(N.BOUND).alias("b_a"))
        .join(
            pl.read_parquet(runs["vip"] / N.ALLOCATIONS_FILE).select(
                N.USER_ID, pl.col(N.WEIGHT).alias("w_b"), pl.col(N.BOUND).alias("b_b")
            ),
            on=N.USER_ID,
        )
    )
    joined = table.join(weights, on=N.USER_ID)
    interior = joined.filter(
        (pl.col("b_a") == "interior") & (pl.col("b_b") == "interior") & (pl.col("delta_cents") != 0)
    )
    heavier = interior.filter(pl.col("w_b") > pl.col("w_a") * (1 + 1e-9))
    same = interior.filter(pl.col("w_b") == pl.col("w_a"))
    assert heavier.height > 0 and same.height > 0  # vip tiers above 0, and tier 0
    assert (heavier["why"] == "weight").all()
    assert (same["why"] == "rule").all()  # their weight did not move: the price did
    out = _diff_json(runs["base"], runs["vip"])
    assert out["by_why"]["weight"]["users"] == int((table["why"] == "weight").sum()) > 0
    row = next(r for r in out["largest"] if r["why"] == "weight")
    assert row["detail"].startswith("weight ")


def test_a_different_rule_is_named_and_weights_are_not_compared(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = _diff_json(runs["base"], runs["cea"], "--top", "1000000")
    assert (out["rule_a"], out["rule_b"]) == ("alpha_fair", "constrained_equal_awards")
    assert out["by_why"]["weight"]["users"] == 0
    assert out["by_why"]["rule"]["users"] > 0
    table = _out_table(runs["base"], runs["cea"], tmp_path)
    assert set(table["why"].unique().to_list()) <= {"bound", "rule", "unchanged"}
    row = next(r for r in out["largest"] if r["why"] == "rule")
    assert row["detail"].startswith("rule alpha_fair -> constrained_equal_awards")


def test_alpha_moves_nothing_user_specific(runs: dict[str, Path]) -> None:
    out = _diff_json(runs["base"], runs["alpha2"])
    assert out["changed"] > 0 and out["added"] == out["removed"] == 0
    assert out["by_why"]["weight"]["users"] == 0  # alpha is not in the weight
    assert out["by_why"]["eligibility"]["users"] == 0
    assert out["price_a"] != out["price_b"]


@pytest.mark.parametrize("other", ["base", "again"])
def test_a_run_against_itself_or_its_rerun_changes_nothing(
    runs: dict[str, Path], other: str
) -> None:
    out = _diff_json(runs["base"], runs[other])
    assert out["changed"] == out["added"] == out["removed"] == 0
    assert out["moved_cents"] == 0 and out["moved_usd"] == 0
    assert out["paid_a_cents"] == out["paid_b_cents"]
    assert out["same_data"] is True
    assert out["largest"] == []
    assert out["by_why"]["unchanged"]["users"] == out["users"]


def test_the_python_api_agrees_with_the_command(runs: dict[str, Path]) -> None:
    diff = diff_runs(runs["base"], runs["vip"])
    out = _diff_json(runs["base"], runs["vip"], "--top", "5")
    got = diff.to_dict(5)
    for key in ("run_a", "run_b"):
        got.pop(key)
        out.pop(key)
    out.pop("out")
    assert got == out


# --------------------------------------------------------------------------------------------
# the human table, --top and --out
# --------------------------------------------------------------------------------------------


def test_plain_output_is_a_table_in_words(runs: dict[str, Path]) -> None:
    r = invoke("diff", runs["base"], runs["minloss"], "--top", "3")
    assert r.exit_code == 0, r.output
    text = r.stdout
    for words in (
        "what changed from run A to run B",
        "paid in both, amount changed",
        "no longer paid (in run A only)",
        "why the amounts changed",
        "eligibility",
        "the 3 largest moves",
        "no longer eligible (in B: excluded:below_min_loss",
    ):
        assert words in text, words
    assert not text.lstrip().startswith("{")
    assert not re.search(r"\d[eE][+-]\d", text)  # no scientific notation


def test_top_limits_the_list_and_is_checked(runs: dict[str, Path]) -> None:
    assert _diff_json(runs["base"], runs["cap"], "--top", "0")["largest"] == []
    three = _diff_json(runs["base"], runs["cap"], "--top", "3")["largest"]
    assert len(three) == 3
    sizes = [abs(r["delta_cents"]) for r in three]
    assert sizes == sorted(sizes, reverse=True)
    for bad in ("-1", "1000001"):
        r = invoke("diff", runs["base"], runs["cap"], "--top", bad)
        assert r.exit_code == 2 and "--top must be 0 to 1,000,000" in r.stderr


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_out_is_sorted_deterministic_and_refuses_an_existing_file(
    runs: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    first = tmp_path / f"one{suffix}"
    second = tmp_path / "sub" / f"two{suffix}"
    for file in (first, second):
        r = invoke("diff", runs["base"], runs["cap"], "--out", file, "--json")
        assert r.exit_code == 0, r.output
        assert strict_json(r.stdout)["out"] == str(file)
    assert first.read_bytes() == second.read_bytes()
    frame = pl.read_parquet(first) if suffix == ".parquet" else pl.read_csv(first)
    assert frame.columns == list(DIFF_COLUMNS)
    assert frame[N.USER_ID].is_sorted() and frame[N.USER_ID].n_unique() == frame.height
    if suffix == ".csv":
        text = first.read_text()
        assert not re.search(r"\d[eE][+-]?\d", text)
        assert "\r" not in text
        assert frame.schema["old_cents"] == pl.Int64 and frame.schema["delta_cents"] == pl.Int64

    # an existing file is refused (exit 2, naming it, untouched); --force replaces it
    first.write_bytes(b"keep me")
    r = invoke("diff", runs["base"], runs["cap"], "--out", first)
    assert r.exit_code == 2
    assert str(first) in r.stderr and "--force" in r.stderr
    assert first.read_bytes() == b"keep me"
    r = invoke("diff", runs["base"], runs["cap"], "--out", first, "--force")
    assert r.exit_code == 0, r.output
    assert first.read_bytes() == second.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_out_is_refused_before_any_work_when_it_cannot_be_right(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    r = invoke("diff", runs["base"], runs["cap"], "--out", tmp_path / "moves.xlsx")
    assert r.exit_code == 2 and ".parquet or .csv" in r.stderr
    inside = runs["base"] / "diff.csv"
    r = invoke("diff", runs["base"], runs["cap"], "--out", inside)
    assert r.exit_code == 2 and "run directory" in r.stderr
    assert not inside.exists()
    r = invoke("diff", runs["base"], runs["cap"], "--out", tmp_path)
    assert r.exit_code == 2
    assert not list(tmp_path.iterdir())


def test_damaged_or_missing_runs_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("diff", runs["base"], tmp_path / "nowhere", "--json")
    assert r.exit_code == 2 and "does not exist" in r.stderr and r.stdout == ""
    copy = tmp_path / "copy"
    shutil.copytree(runs["cap"], copy)
    frame = pl.read_parquet(copy / N.ALLOCATIONS_FILE)
    frame.with_columns(pl.col(N.VOUCHER_CENTS) + 1).write_parquet(copy / N.ALLOCATIONS_FILE)
    out = tmp_path / "d.csv"
    r = invoke("diff", runs["base"], copy, "--json", "--out", out)
    assert r.exit_code == 2
    assert "damaged or was changed" in r.stderr and "check-budget" in r.stderr
    assert r.stdout == "" and not out.exists()


# --------------------------------------------------------------------------------------------
# the table function on random runs
# --------------------------------------------------------------------------------------------

BOUNDS = st.sampled_from(N.BOUND_STATES)


@st.composite
def _run_tables(draw: st.DrawFn, ids: list[int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A random run over some of ``ids``: each user paid, excluded or absent."""
    rows, excluded = [], []
    for uid in ids:
        kind = draw(st.sampled_from(("paid", "excluded", "absent")))
        if kind == "paid":
            rows.append(
                {
                    N.USER_ID: uid,
                    N.VOUCHER_CENTS: draw(st.integers(0, 5)),
                    "lower_cents": draw(st.sampled_from((0, 400))),
                    "upper_cents": draw(st.sampled_from((200_000, 600_000))),
                    N.WEIGHT: draw(st.sampled_from((1.0, 1.0 + 1e-15, 2.0, 0.0))),
                    N.BOUND: draw(BOUNDS),
                }
            )
        elif kind == "excluded":
            excluded.append({N.USER_ID: uid, N.REASON: draw(st.sampled_from(N.REASONS))})
    alloc_schema = {
        N.USER_ID: pl.Int64,
        N.VOUCHER_CENTS: pl.Int64,
        "lower_cents": pl.Int64,
        "upper_cents": pl.Int64,
        N.WEIGHT: pl.Float64,
        N.BOUND: pl.String,
    }
    return (
        pl.DataFrame(rows, schema=alloc_schema),
        pl.DataFrame(excluded, schema={N.USER_ID: pl.Int64, N.REASON: pl.String}),
    )


@st.composite
def _two_runs(draw: st.DrawFn) -> tuple[tuple[pl.DataFrame, pl.DataFrame], ...]:
    ids = draw(st.lists(st.integers(-5, 40), unique=True, max_size=25))
    return draw(_run_tables(ids)), draw(_run_tables(ids))


@given(_two_runs(), st.booleans())
def test_diff_a_b_and_diff_b_a_are_mirror_images(
    tables: tuple[tuple[pl.DataFrame, pl.DataFrame], ...], rules_differ: bool
) -> None:
    (alloc_a, excl_a), (alloc_b, excl_b) = tables
    ab = user_diff(alloc_a, excl_a, alloc_b, excl_b, rules_differ=rules_differ)
    ba = user_diff(alloc_b, excl_b, alloc_a, excl_a, rules_differ=rules_differ)
    assert ab[N.USER_ID].to_list() == ba[N.USER_ID].to_list()
    assert ab[N.USER_ID].is_sorted()
    assert ab["old_cents"].to_list() == ba["new_cents"].to_list()
    assert ab["new_cents"].to_list() == ba["old_cents"].to_list()
    assert (ab["delta_cents"] == -ba["delta_cents"]).all()
    assert ab["old_status"].to_list() == ba["new_status"].to_list()
    assert ab["why"].to_list() == ba["why"].to_list()
    # every user of the four tables, once; the money adds up to the cent
    users = set(alloc_a[N.USER_ID]) | set(excl_a[N.USER_ID])
    users |= set(alloc_b[N.USER_ID]) | set(excl_b[N.USER_ID])
    assert set(ab[N.USER_ID]) == users and ab.height == len(users)
    assert int(alloc_a[N.VOUCHER_CENTS].sum()) + int(ab["delta_cents"].sum()) == int(
        alloc_b[N.VOUCHER_CENTS].sum()
    )
    paid_a = ab["old_status"] == "paid"
    paid_b = ab["new_status"] == "paid"
    assert ((ab["why"] == "eligibility") == (paid_a != paid_b)).all()
    if rules_differ:
        assert not (ab["why"] == "weight").any()
    # 1 and 1 + 1e-15 are the same weight: float noise is never a reason
    noise = ab.filter(
        (pl.col("why") == "weight") & (pl.col("weight_a") - pl.col("weight_b")).abs().lt(1e-12)
    )
    assert noise.height == 0


def test_a_user_both_allocated_and_excluded_is_refused() -> None:
    alloc = pl.DataFrame(
        {
            N.USER_ID: [1],
            N.VOUCHER_CENTS: [400],
            "lower_cents": [400],
            "upper_cents": [600_000],
            N.WEIGHT: [1.0],
            N.BOUND: ["floor"],
        }
    )
    excl = pl.DataFrame({N.USER_ID: [1], N.REASON: [N.REASON_KYC]})
    with pytest.raises(InputError, match="both allocated and excluded"):
        user_diff(alloc, excl, alloc, excl.clear())
