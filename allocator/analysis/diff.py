"""What changed between two run directories, user by user, and why.

:func:`diff_runs` reads two run directories written by ``allocator allocate`` (verified by
:func:`allocator.runs.reader.load_run`, which refuses a damaged or changed one) and lists every
user of either run: each user allocated or excluded in run A or run B. Per user it gives the
paid cents in A (``old_cents``, 0 when A did not allocate the user) and in B (``new_cents``),
``delta_cents = new_cents - old_cents``, the user's status in each run and ``why`` the amount
changed. :func:`user_diff` does the same on the tables alone.

Status
------
``paid``
    The user has a row in the run's ``allocations.parquet`` (eligible and allocated; with a
    floor of 0 the amount may be 0).
``excluded:<reason>``
    The user has a row in ``excluded.parquet``, with its reason (e.g. ``excluded:below_min_loss``).
``absent``
    Neither file of the run names the user (the runs read different data).

Why (the first that applies, in this order)
-------------------------------------------
``eligibility``
    Paid in one run only: newly eligible (``new_status`` is ``paid``, ``old_status`` says what
    excluded the user before) or no longer eligible (``new_status`` gives the reason). This holds
    even when both amounts are 0 (an allocated user at a floor of 0).
``unchanged``
    The same cents in both runs: paid in both with equal amounts, or paid in neither (the
    exclusion reason may still differ; both statuses are listed).
``bound``
    Paid in both, and the bound that binds changed: the bound state differs (``floor``,
    ``interior``, ``cap``: e.g. ``interior -> cap``), or the user sits on the same bound in
    both runs and its cents moved (``lower_cents`` at the floor, ``upper_cents`` at the cap).
    A bound the user does not sit on in either run (an interior user's cap) is not a reason.
``rule``
    Paid in both, on the same bound (with the same cents), and the runs use different rules
    (``scenario.objective.rule`` in the manifests, e.g. ``alpha_fair`` and ``proportional``):
    a weight means different things under two rules, so it is not compared.
``weight``
    Paid in both, same rule, same bound, and the user's ``weight`` differs beyond float noise:
    ``|w_a - w_b| > 1e-12 * max(|w_a|, |w_b|)`` (:data:`WEIGHT_RTOL`). Loss, loss ratio, the
    feature coefficients, the exponents or a phase factor moved it.
``rule`` (again: the run-wide rule or its price)
    Paid in both, same rule, same bound, same weight: nothing about the user changed, so the
    change comes from what applies to everyone: the rule's parameters (``alpha``, a claims
    rule's base or threshold) or its price (the shadow price or the rule's root, moved by the
    budget, by other users entering or leaving, or by a segment's share). The manifests'
    prices are in :attr:`RunDiff.price_a` and :attr:`RunDiff.price_b`.

Rounds
------
When run B is a later round of a distribution (``allocate --previous``), two reasons come before
all others, for users whose cents or status changed:

``appeal``
    An appeal of the user was decided in one of B's rounds after A's (in any of B's rounds when
    A is not in B's chain): the detail gives the decision and its note.
``expired``
    A voucher of the user expired unredeemed in those rounds (``rounds.unclaimed = "expire"``):
    the user forfeited it.

The summary then also says which round each run is and whether A is an earlier round of B's
chain (:attr:`RunDiff.round_a`, :attr:`RunDiff.round_b`, :attr:`RunDiff.same_chain`).

Counts
------
Every user is in exactly one of: ``changed`` (paid in both, cents differ), ``unchanged`` (paid in
both, same cents), ``added`` (paid in B only), ``removed`` (paid in A only) and
``paid_in_neither``. ``moved`` is the total absolute change, ``sum |delta_cents|`` over every
user; ``paid_a + sum(delta) == paid_b`` to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from allocator import names as N
from allocator.analysis.sensitivity.moves import moves_format
from allocator.errors import InputError
from allocator.kernel.money import cents_to_usd, format_cents
from allocator.runs.contract import LOWER_CENTS, UPPER_CENTS, RunDir
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import read_manifest
from allocator.runs.reader import load_run, refuse_output_in_run
from allocator.runs.store import PARQUET_OPTIONS, atomic_write

WHY_ELIGIBILITY = "eligibility"
WHY_UNCHANGED = "unchanged"
WHY_BOUND = "bound"
WHY_WEIGHT = "weight"
WHY_RULE = "rule"
WHY_APPEAL = "appeal"
WHY_EXPIRED = "expired"
#: Every value of ``why``, in the order the summaries list them.
WHYS = (WHY_APPEAL, WHY_EXPIRED, WHY_ELIGIBILITY, WHY_BOUND, WHY_WEIGHT, WHY_RULE, WHY_UNCHANGED)
#: One line per ``why``, for readers of the summaries.
WHY_MEANING: dict[str, str] = {
    WHY_APPEAL: "a later round decided an appeal of the user",
    WHY_EXPIRED: "a later round expired a voucher the user did not redeem",
    WHY_ELIGIBILITY: "paid in one run only: newly eligible, or no longer eligible",
    WHY_BOUND: "the bound that binds changed (floor, interior, cap), or its cents did",
    WHY_WEIGHT: "same bound and rule, the user's weight changed",
    WHY_RULE: "same bound: the rule differs, or the same rule's parameters or price moved",
    WHY_UNCHANGED: "the same cents in both runs",
}

STATUS_PAID = "paid"
STATUS_ABSENT = "absent"
#: ``excluded:<reason>``
STATUS_EXCLUDED_PREFIX = "excluded:"

#: Two weights closer than this, relative to the larger, are the same weight (float noise).
WEIGHT_RTOL = 1e-12

OLD_CENTS = "old_cents"
NEW_CENTS = "new_cents"
DELTA_CENTS = "delta_cents"
OLD_STATUS = "old_status"
NEW_STATUS = "new_status"
WHY = "why"
#: Columns of the per-user file (``--out``), in order; rows sorted by ``user_id``.
DIFF_COLUMNS = (N.USER_ID, OLD_CENTS, NEW_CENTS, DELTA_CENTS, OLD_STATUS, NEW_STATUS, WHY)
#: The per-user detail :func:`user_diff` keeps beside :data:`DIFF_COLUMNS` (for the largest moves).
_DETAIL_FIELDS = (N.BOUND, LOWER_CENTS, UPPER_CENTS, N.WEIGHT)

#: Largest moves listed by default, and at most.
TOP_MOVES = 10
MAX_TOP_MOVES = 1_000_000


# --------------------------------------------------------------------------------------------
# the per-user table
# --------------------------------------------------------------------------------------------


def _side(allocations: pl.DataFrame, excluded: pl.DataFrame, label: str) -> pl.DataFrame:
    """One run's users: ``user_id``, status, paid cents and the detail fields, suffixed by label."""
    paid = allocations.select(
        pl.col(N.USER_ID).cast(pl.Int64),
        pl.lit(STATUS_PAID).alias("status"),
        pl.col(N.VOUCHER_CENTS).cast(pl.Int64).alias("cents"),
        pl.col(N.BOUND).cast(pl.String),
        pl.col(LOWER_CENTS).cast(pl.Int64),
        pl.col(UPPER_CENTS).cast(pl.Int64),
        pl.col(N.WEIGHT).cast(pl.Float64),
    )
    left_out = excluded.select(
        pl.col(N.USER_ID).cast(pl.Int64),
        (pl.lit(STATUS_EXCLUDED_PREFIX) + pl.col(N.REASON).cast(pl.String)).alias("status"),
        pl.lit(None, dtype=pl.Int64).alias("cents"),
        pl.lit(None, dtype=pl.String).alias(N.BOUND),
        pl.lit(None, dtype=pl.Int64).alias(LOWER_CENTS),
        pl.lit(None, dtype=pl.Int64).alias(UPPER_CENTS),
        pl.lit(None, dtype=pl.Float64).alias(N.WEIGHT),
    )
    both = paid.join(left_out.select(N.USER_ID), on=N.USER_ID, how="semi")
    if both.height:
        raise InputError(
            f"run {label.upper()}: {both.height:,} user(s) are both allocated and excluded, e.g. user "
            f"{both[N.USER_ID][0]}; a run pays or excludes each user once.",
            hint="allocator check-budget RUN_DIR lists every check.",
        )
    frame = pl.concat([paid, left_out], how="vertical")
    return frame.rename({c: f"{c}_{label}" for c in frame.columns if c != N.USER_ID})


def _why(*, rules_differ: bool) -> pl.Expr:
    """The ``why`` of each joined row; the precedence of the module docstring."""
    paid_a = pl.col("status_a") == STATUS_PAID
    paid_b = pl.col("status_b") == STATUS_PAID
    bound_a, bound_b = pl.col(f"{N.BOUND}_a"), pl.col(f"{N.BOUND}_b")
    bound_moved = (
        (bound_a != bound_b)
        | ((bound_a == N.BOUND_FLOOR) & (pl.col(f"{LOWER_CENTS}_a") != pl.col(f"{LOWER_CENTS}_b")))
        | ((bound_a == N.BOUND_CAP) & (pl.col(f"{UPPER_CENTS}_a") != pl.col(f"{UPPER_CENTS}_b")))
    )
    w_a, w_b = pl.col(f"{N.WEIGHT}_a"), pl.col(f"{N.WEIGHT}_b")
    same_weight = (w_a == w_b) | (
        (w_a - w_b).abs() <= WEIGHT_RTOL * pl.max_horizontal(w_a.abs(), w_b.abs())
    )
    return (
        pl.when(paid_a != paid_b)
        .then(pl.lit(WHY_ELIGIBILITY))
        .when(pl.col(OLD_CENTS) == pl.col(NEW_CENTS))
        .then(pl.lit(WHY_UNCHANGED))
        .when(bound_moved)
        .then(pl.lit(WHY_BOUND))
        .when(pl.lit(rules_differ) | same_weight)
        .then(pl.lit(WHY_RULE))
        .otherwise(pl.lit(WHY_WEIGHT))
        .alias(WHY)
    )


def user_diff(
    allocations_a: pl.DataFrame,
    excluded_a: pl.DataFrame,
    allocations_b: pl.DataFrame,
    excluded_b: pl.DataFrame,
    *,
    rules_differ: bool = False,
) -> pl.DataFrame:
    """Every user of two runs, with the old and new cents, their statuses and why they moved.

    Parameters
    ----------
    allocations_a, excluded_a
        Run A's ``allocations.parquet`` and ``excluded.parquet`` (the contract's columns:
        ``user_id``, ``voucher_cents``, ``lower_cents``, ``upper_cents``, ``weight``, ``bound``;
        ``user_id``, ``reason``).
    allocations_b, excluded_b
        The same for run B.
    rules_differ
        The two runs use different rules (``scenario.objective.rule``): a weight is then not
        compared, and a change on the same bound is ``"rule"``.

    Returns
    -------
    polars.DataFrame
        One row per user in any of the four tables, sorted by ``user_id``: the columns of
        :data:`DIFF_COLUMNS` (``old_cents``/``new_cents`` are 0 for a user the run did not
        allocate; ``why`` as in the module docstring), then each run's ``bound``,
        ``lower_cents``, ``upper_cents`` and ``weight`` suffixed ``_a`` and ``_b`` (null where the
        run did not allocate the user).

    Raises
    ------
    InputError
        A run both allocates and excludes a user.
    """
    a = _side(allocations_a, excluded_a, "a")
    b = _side(allocations_b, excluded_b, "b")
    joined = a.join(b, on=N.USER_ID, how="full", coalesce=True)
    joined = joined.with_columns(
        pl.col("status_a").fill_null(STATUS_ABSENT),
        pl.col("status_b").fill_null(STATUS_ABSENT),
        pl.col("cents_a").fill_null(0).alias(OLD_CENTS),
        pl.col("cents_b").fill_null(0).alias(NEW_CENTS),
    )
    joined = joined.with_columns(
        (pl.col(NEW_CENTS) - pl.col(OLD_CENTS)).alias(DELTA_CENTS),
        _why(rules_differ=rules_differ),
    )
    detail = [f"{c}_{s}" for s in ("a", "b") for c in _DETAIL_FIELDS]
    return joined.select(
        N.USER_ID,
        OLD_CENTS,
        NEW_CENTS,
        DELTA_CENTS,
        pl.col("status_a").alias(OLD_STATUS),
        pl.col("status_b").alias(NEW_STATUS),
        WHY,
        *detail,
    ).sort(N.USER_ID)


# --------------------------------------------------------------------------------------------
# the diff of two runs
# --------------------------------------------------------------------------------------------


def _price(run: RunDir) -> float | None:
    """The run's price: the rule's multiplier (the shadow price, or a claims rule's root)."""
    rule = run.manifest.get("rule")
    value = rule.get("multiplier") if isinstance(rule, Mapping) else None
    if value is None:
        value = run.manifest.get("shadow_price")
    return float(value) if isinstance(value, (int, float)) else None


def _input_hashes(run: RunDir) -> dict[str, Any]:
    inputs = run.manifest.get("inputs")
    if not isinstance(inputs, Mapping):
        return {}
    return {
        stem: meta.get("sha256") if isinstance(meta, Mapping) else None
        for stem, meta in inputs.items()
    }


def _bound_text(bound: str | None, lower: int | None, upper: int | None) -> str:
    if bound == N.BOUND_FLOOR and lower is not None:
        return f"floor {format_cents(lower, currency=True)}"
    if bound == N.BOUND_CAP and upper is not None:
        return f"cap {format_cents(upper, currency=True)}"
    return str(bound)


def _price_text(price_a: float | None, price_b: float | None) -> str:
    if price_a is None or price_b is None:
        return ""
    return f" (price {price_a:.6g} -> {price_b:.6g})"


def _detail(
    row: Mapping[str, Any],
    *,
    rule_a: str,
    rule_b: str,
    price_a: float | None = None,
    price_b: float | None = None,
) -> str:
    """One row's ``why`` in words (for the largest moves)."""
    why = row[WHY]
    if why == WHY_ELIGIBILITY:
        if row[NEW_STATUS] == STATUS_PAID:
            return f"newly eligible (in A: {row[OLD_STATUS]})"
        return f"no longer eligible (in B: {row[NEW_STATUS]})"
    if why == WHY_BOUND:
        old = _bound_text(row[f"{N.BOUND}_a"], row[f"{LOWER_CENTS}_a"], row[f"{UPPER_CENTS}_a"])
        new = _bound_text(row[f"{N.BOUND}_b"], row[f"{LOWER_CENTS}_b"], row[f"{UPPER_CENTS}_b"])
        return f"{old} -> {new}" if old != new else old
    if why == WHY_WEIGHT:
        return f"weight {row[f'{N.WEIGHT}_a']:,.6g} -> {row[f'{N.WEIGHT}_b']:,.6g}"
    if why in (WHY_APPEAL, WHY_EXPIRED):
        return str(row.get("_round_note") or why)
    if why == WHY_RULE:
        if rule_a != rule_b:
            return f"rule {rule_a} -> {rule_b}, same bound ({row[f'{N.BOUND}_b']})"
        return (
            f"same bound ({row[f'{N.BOUND}_b']}) and weight: the rule's parameters or its price "
            f"moved{_price_text(price_a, price_b)}"
        )
    return ""


@dataclass(frozen=True, eq=False)
class RunDiff:
    """Two runs compared user by user (:func:`diff_runs`).

    ``users`` is :func:`user_diff`'s frame; the counts and sums are exact integers of cents
    (``*_usd`` values are those cents / 100).
    """

    run_a: str
    run_b: str
    scenario_a: str
    scenario_b: str
    rule_a: str
    rule_b: str
    price_a: float | None
    price_b: float | None
    same_data: bool
    users: pl.DataFrame
    #: The rounds of the two runs (1 for a run made without --previous), and whether A is an
    #: earlier round of B's chain.
    round_a: int = 1
    round_b: int = 1
    same_chain: bool = False
    counts: dict[str, int] = field(init=False)
    totals: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        u = self.users
        paid_a = pl.col(OLD_STATUS) == STATUS_PAID
        paid_b = pl.col(NEW_STATUS) == STATUS_PAID
        same = pl.col(OLD_CENTS) == pl.col(NEW_CENTS)
        row = u.select(
            (paid_a & paid_b & ~same).sum().alias("changed"),
            (~paid_a & paid_b).sum().alias("added"),
            (paid_a & ~paid_b).sum().alias("removed"),
            (paid_a & paid_b & same).sum().alias("unchanged"),
            (~paid_a & ~paid_b).sum().alias("paid_in_neither"),
        ).row(0, named=True)
        counts = {"users": u.height, **{k: int(v) for k, v in row.items()}}
        sums = u.select(
            pl.col(OLD_CENTS).sum().alias("paid_a"),
            pl.col(NEW_CENTS).sum().alias("paid_b"),
            pl.col(DELTA_CENTS).sum().alias("net"),
            pl.col(DELTA_CENTS).abs().sum().alias("moved"),
        ).row(0, named=True)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "totals", {k: int(v or 0) for k, v in sums.items()})

    @property
    def rules_differ(self) -> bool:
        return self.rule_a != self.rule_b

    def by_why(self) -> dict[str, dict[str, Any]]:
        """Per ``why`` (every one of :data:`WHYS`, in order): users, net and absolute change."""
        grouped = self.users.group_by(WHY).agg(
            pl.len().alias("users"),
            pl.col(DELTA_CENTS).sum().alias("delta"),
            pl.col(DELTA_CENTS).abs().sum().alias("moved"),
        )
        found = {r[WHY]: r for r in grouped.iter_rows(named=True)}
        out: dict[str, dict[str, Any]] = {}
        for why in WHYS:
            r = found.get(why, {"users": 0, "delta": 0, "moved": 0})
            out[why] = {
                "users": int(r["users"]),
                "delta_cents": int(r["delta"]),
                "delta_usd": cents_to_usd(int(r["delta"])),
                "moved_cents": int(r["moved"]),
                "moved_usd": cents_to_usd(int(r["moved"])),
            }
        return out

    def largest(self, top: int = TOP_MOVES) -> list[dict[str, Any]]:
        """The ``top`` largest moves (``|delta_cents|``, then ``user_id``), users who did not
        move left out; each with the amounts, statuses, bounds, ``why`` and ``detail`` in words."""
        if not 0 <= top <= MAX_TOP_MOVES:
            raise InputError(f"top must be 0 to {MAX_TOP_MOVES:,} users, not {top}.")
        moved = (
            self.users.filter(pl.col(DELTA_CENTS) != 0)
            .with_columns(pl.col(DELTA_CENTS).abs().alias("_size"))
            .sort(["_size", N.USER_ID], descending=[True, False])
            .head(top)
        )
        rows = []
        for r in moved.iter_rows(named=True):
            rows.append(
                {
                    N.USER_ID: r[N.USER_ID],
                    OLD_CENTS: r[OLD_CENTS],
                    NEW_CENTS: r[NEW_CENTS],
                    DELTA_CENTS: r[DELTA_CENTS],
                    "old_usd": cents_to_usd(r[OLD_CENTS]),
                    "new_usd": cents_to_usd(r[NEW_CENTS]),
                    "delta_usd": cents_to_usd(r[DELTA_CENTS]),
                    OLD_STATUS: r[OLD_STATUS],
                    NEW_STATUS: r[NEW_STATUS],
                    "old_bound": r[f"{N.BOUND}_a"],
                    "new_bound": r[f"{N.BOUND}_b"],
                    WHY: r[WHY],
                    "detail": _detail(
                        r,
                        rule_a=self.rule_a,
                        rule_b=self.rule_b,
                        price_a=self.price_a,
                        price_b=self.price_b,
                    ),
                }
            )
        return rows

    def table(self) -> pl.DataFrame:
        """Every user's row of the per-user file: :data:`DIFF_COLUMNS`, sorted by ``user_id``."""
        return self.users.select(DIFF_COLUMNS)

    def to_dict(self, top: int = TOP_MOVES) -> dict[str, Any]:
        """The summary as strict-JSON-ready values (see the module docstring for each count)."""
        t = self.totals
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "scenario_a": self.scenario_a,
            "scenario_b": self.scenario_b,
            "rule_a": self.rule_a,
            "rule_b": self.rule_b,
            "price_a": self.price_a,
            "price_b": self.price_b,
            "same_data": self.same_data,
            "round_a": self.round_a,
            "round_b": self.round_b,
            "same_chain": self.same_chain,
            **self.counts,
            "paid_a_cents": t["paid_a"],
            "paid_b_cents": t["paid_b"],
            "delta_cents": t["net"],
            "moved_cents": t["moved"],
            "paid_a_usd": cents_to_usd(t["paid_a"]),
            "paid_b_usd": cents_to_usd(t["paid_b"]),
            "delta_usd": cents_to_usd(t["net"]),
            "moved_usd": cents_to_usd(t["moved"]),
            "by_why": self.by_why(),
            "largest": self.largest(top),
        }


def diff_runs(run_a: str | Path, run_b: str | Path) -> RunDiff:
    """Compare two run directories user by user.

    Both are read with :func:`allocator.runs.reader.load_run` (each data file's sha256 against
    its manifest, the contract's columns and types; the input data are not read). The runs may
    use different scenarios and different data (:attr:`RunDiff.same_data` says whether the input
    files' sha256 agree).

    Parameters
    ----------
    run_a, run_b
        Run directories written by ``allocator allocate``: A is "old", B is "new".

    Returns
    -------
    RunDiff
        Every user's old and new cents, statuses and ``why`` (precedence in the module
        docstring), with the counts and totals.

    Raises
    ------
    InputError
        A run directory is missing, damaged or changed since the run, is a loan-fund run, or
        both allocates and excludes a user.
    ScenarioError
        A manifest's scenario is not a valid scenario.
    """
    a = load_run(run_a)
    b = load_run(run_b)
    rule_a = str(a.scenario.objective.rule)
    rule_b = str(b.scenario.objective.rule)
    users = user_diff(
        a.allocations, a.excluded, b.allocations, b.excluded, rules_differ=rule_a != rule_b
    )
    chained = _in_chain(a, b)
    users = round_whys(users, b, after=a.round if chained else 0)
    return RunDiff(
        run_a=str(run_a),
        run_b=str(run_b),
        scenario_a=str(a.scenario.name),
        scenario_b=str(b.scenario.name),
        rule_a=rule_a,
        rule_b=rule_b,
        price_a=_price(a),
        price_b=_price(b),
        same_data=_input_hashes(a) == _input_hashes(b),
        users=users,
        round_a=a.round,
        round_b=b.round,
        same_chain=chained,
    )


def _in_chain(a: RunDir, b: RunDir) -> bool:
    """Whether run A is an earlier round of run B's chain (by the manifests' sha256 links)."""
    if b.round <= a.round:
        return False
    mine = sha256_file(Path(a.path) / N.MANIFEST_FILE)
    manifest: Mapping[str, Any] = b.manifest
    for _ in range(b.round - a.round):
        previous = manifest.get("round", {}).get("previous", {})
        if not isinstance(previous, Mapping) or not isinstance(previous.get("path"), str):
            return False
        if previous.get("manifest_sha256") == mine:
            return True
        try:
            manifest = read_manifest(Path(previous["path"]) / N.MANIFEST_FILE)
        except InputError:
            return False
    return False


def round_whys(users: pl.DataFrame, b: RunDir, *, after: int) -> pl.DataFrame:
    """``appeal`` and ``expired`` (module docstring, "Rounds") for the users of a later round B
    whose cents or status changed, from B's appeals and vouchers of the rounds after ``after``;
    the words go to the private ``_round_note`` column the largest moves read."""
    if b.round == 1 or b.appeals is None or b.vouchers is None:
        return users
    appealed = b.appeals.filter(pl.col(N.ROUND) > after).select(
        N.USER_ID,
        pl.format(
            "appeal in round {} ({}){}",
            N.ROUND,
            N.DECISION,
            pl.when(pl.col(N.NOTE) != "").then(pl.lit(": ") + pl.col(N.NOTE)).otherwise(pl.lit("")),
        ).alias("_appeal"),
    )
    expired = (
        b.vouchers.filter(
            (pl.col(N.STATUS) == N.VOUCHER_EXPIRED) & (pl.col(N.SETTLED_ROUND) > after)
        )
        .group_by(N.USER_ID)
        .agg(pl.col(N.CENTS).sum().alias("_expired"), pl.col(N.SETTLED_ROUND).max())
        .select(
            N.USER_ID,
            pl.format(
                "voucher(s) of {} expired unredeemed in round {}",
                cents_to_usd_text(pl.col("_expired")),
                N.SETTLED_ROUND,
            ).alias("_expired_note"),
        )
    )
    moved = (pl.col(OLD_CENTS) != pl.col(NEW_CENTS)) | (pl.col(OLD_STATUS) != pl.col(NEW_STATUS))
    out = (
        users.join(appealed, on=N.USER_ID, how="left")
        .join(expired, on=N.USER_ID, how="left")
        .with_columns(
            pl.when(moved & pl.col("_appeal").is_not_null())
            .then(pl.lit(WHY_APPEAL))
            .when(moved & pl.col("_expired_note").is_not_null())
            .then(pl.lit(WHY_EXPIRED))
            .otherwise(pl.col(WHY))
            .alias(WHY)
        )
    )
    return out.with_columns(
        pl.when(pl.col(WHY) == WHY_APPEAL)
        .then(pl.col("_appeal"))
        .when(pl.col(WHY) == WHY_EXPIRED)
        .then(pl.col("_expired_note"))
        .alias("_round_note")
    ).drop("_appeal", "_expired_note")


def cents_to_usd_text(cents: pl.Expr) -> pl.Expr:
    """``USD 1234.56``: text of whole cents, made without a float (for the notes)."""
    return pl.format("USD {}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2))


# --------------------------------------------------------------------------------------------
# the per-user file
# --------------------------------------------------------------------------------------------


def check_diff_out(path: str | Path, *, force: bool = False) -> None:
    """Refuse a per-user file path before any work: a wrong suffix, a path in a run directory,
    or an existing file without ``force`` (:class:`InputError`, exit 2, naming it)."""
    moves_format(path)
    refuse_output_in_run(path, "--out")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"--out {path} is a folder; give the path of a .parquet or .csv file.")
    if p.exists() and not force:
        raise InputError(
            f"--out {path} already exists; nothing was written.",
            hint="choose another path, or pass --force to replace it.",
        )


def write_diff(diff: RunDiff, path: str | Path, *, force: bool = False) -> Path:
    """Write every user's row (:meth:`RunDiff.table`) to ``path``, parquet or CSV by suffix.

    Atomic (a temporary file in the same folder, flushed, then renamed over the target), and the
    same diff always gives the same bytes (parquet with the run store's fixed options, no
    timestamps; CSV with ``\\n`` line ends, integer cents, never scientific notation).

    Raises
    ------
    InputError
        The suffix is neither ``.parquet`` nor ``.csv``, the path is in a run directory, it
        exists and ``force`` is false, or the folder cannot be written.
    """
    path = Path(path)
    check_diff_out(path, force=force)
    fmt = moves_format(path)
    frame = diff.table()

    def write(fh: IO[bytes]) -> None:
        if fmt == "parquet":
            frame.rechunk().write_parquet(fh, **PARQUET_OPTIONS)
        else:
            frame.write_csv(fh, line_terminator="\n")

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise InputError(f"cannot write the per-user file {path}: {exc.strerror or exc}.") from None
    return path
