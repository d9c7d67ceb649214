r"""The chain of a distribution in rounds, checked from the files of every round.

A run of round :math:`k \ge 2` (``allocate --previous``) records in its manifest's ``round``
section the previous run's directory and the sha256 of its ``manifest.json``. These checks,
run only on such runs (a round-1 run has exactly the checks it always had), read the previous
run again and verify:

``previous round``
    The previous run is where the manifest says, its manifest has the recorded sha256 (so no
    file of it changed: its manifest hashes them all), it is round :math:`k - 1` of the same
    programme on the same input files, and it passes every check itself, its own chain included.
``paid before``
    Each user's ``paid_before_cents`` is what they held after the previous round less what this
    round's redemptions file expired: :math:`H_i = v^{(k-1)}_i - E_i`.
``no claw-back``
    Nobody is paid less than they held, :math:`v_i \ge H_i`; ``delta_cents`` is
    :math:`v_i - H_i`; everyone who held something is still allocated; a user who forfeited is
    paid nothing more.
``chain totals``
    Over rounds 1 to :math:`k`, the payouts issued less the vouchers expired equal what users
    hold now, :math:`\sum_r \sum_i \delta^{(r)}_i - \sum E = \sum_i v_i`, every idempotency key
    of the chain is used once, and every voucher of the ledger is one payout of its round.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import polars as pl

from allocator import names as N
from allocator.analysis.checks.runfiles import Result, RunFiles, Unavailable, examples
from allocator.kernel.money import format_cents
from allocator.runs.contract import AMOUNT_CENTS
from allocator.runs.hashing import sha256_file

#: The previous run of each run checked (one RunFiles each, so its files are read once).
_PREVIOUS: weakref.WeakKeyDictionary[RunFiles, RunFiles] = weakref.WeakKeyDictionary()


def previous_path(r: RunFiles) -> Path:
    """Where the manifest says the previous round's run directory is."""
    sec = r.section("round", "previous")
    path = sec.get("path") if isinstance(sec, dict) else None
    if not isinstance(path, str) or not path:
        raise Unavailable(f"{N.MANIFEST_FILE} round.previous has no path")
    return Path(path)


def previous(r: RunFiles) -> RunFiles:
    """The previous round's files (:class:`Unavailable` when its directory is gone)."""
    if r not in _PREVIOUS:
        path = previous_path(r)
        if not path.is_dir():
            raise Unavailable(
                f"the previous round's run directory {path} is not there (the directories of a "
                "chain must stay where they were made)"
            )
        _PREVIOUS[r] = RunFiles(path)
    return _PREVIOUS[r]


def previous_ledger(r: RunFiles) -> pl.DataFrame:
    """The ledger as the previous round left it: its vouchers.parquet, or round 1's payouts as
    outstanding vouchers."""
    prev = previous(r)
    if prev.later_round:
        return prev.vouchers
    p = prev.payouts
    return pl.DataFrame(
        {
            N.USER_ID: p[N.USER_ID].cast(pl.Int64),
            N.ROUND: pl.Series([1] * p.height, dtype=pl.Int64),
            N.IDEMPOTENCY_KEY: p[N.IDEMPOTENCY_KEY].cast(pl.String),
            N.CENTS: p[AMOUNT_CENTS].cast(pl.Int64),
            N.STATUS: pl.Series([N.VOUCHER_OUTSTANDING] * p.height, dtype=pl.String),
            N.SETTLED_ROUND: pl.Series([None] * p.height, dtype=pl.Int64),
        }
    )


def check_previous_round(r: RunFiles) -> Result:
    # the runner runs this check; imported here because the runner lists it
    from allocator.analysis.checks.runner import check_run_dir

    sec = r.section("round", "previous")
    path = previous_path(r)
    prev = previous(r)
    recorded = sec.get("manifest_sha256")
    actual = sha256_file(path / N.MANIFEST_FILE)
    problems = []
    if actual != recorded:
        problems.append(
            f"{path / N.MANIFEST_FILE} has sha256 {actual[:12]}..., round {r.round} recorded "
            f"{str(recorded)[:12]}...: the previous run changed after this round was made"
        )
    if prev.round != r.round - 1 or sec.get("round") != r.round - 1:
        problems.append(
            f"the previous run is round {prev.round} (recorded {sec.get('round')!r}), not "
            f"round {r.round - 1}"
        )
    if prev.manifest.get("programme") != r.manifest.get("programme"):
        problems.append(
            f"the previous run is of programme {prev.manifest.get('programme')!r}, this one of "
            f"{r.manifest.get('programme')!r}"
        )
    mine, theirs = r.section("inputs"), prev.section("inputs")
    for stem in sorted(mine):
        a, b = mine.get(stem), theirs.get(stem)
        if not (isinstance(a, dict) and isinstance(b, dict) and a.get("sha256") == b.get("sha256")):
            problems.append(f"the {stem} input differs from the previous round's")
    report = check_run_dir(path)
    if not report.ok:
        names = ", ".join(c.name for c in report.failures)
        problems.append(
            f"the previous round fails {len(report.failures)} of {len(report.checks)} checks "
            f"({names})"
        )
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"round {prev.round} at {path}: its manifest as recorded, same programme and inputs, "
        f"all {len(report.checks)} of its checks pass"
    )


def _expected_held(r: RunFiles) -> pl.DataFrame:
    """``user_id`` and the cents each held before this round: the previous round's cumulative
    vouchers less what this round's redemptions expired (from the ledger, itself checked)."""
    prev = previous(r).allocations.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("_before"))
    v = r.vouchers
    expired = (
        v.filter((pl.col(N.STATUS) == N.VOUCHER_EXPIRED) & (pl.col(N.SETTLED_ROUND) == r.round))
        .group_by(N.USER_ID)
        .agg(pl.col(N.CENTS).sum().alias("_expired"))
    )
    return (
        prev.join(expired, on=N.USER_ID, how="full", coalesce=True)
        .fill_null(0)
        .select(N.USER_ID, (pl.col("_before") - pl.col("_expired")).alias("expected"))
    )


def check_paid_before(r: RunFiles) -> Result:
    a = r.allocations.select(N.USER_ID, N.PAID_BEFORE_CENTS)
    want = _expected_held(r)
    both = a.join(want, on=N.USER_ID, how="left").with_columns(pl.col("expected").fill_null(0))
    off = both.filter(pl.col(N.PAID_BEFORE_CENTS) != pl.col("expected"))
    problems = []
    if off.height:
        problems.append(
            f"{off.height:,} user(s) whose paid_before_cents is not what they held after round "
            f"{r.round - 1} less what expired, " + examples(off)
        )
    gone = want.filter(pl.col("expected") > 0).join(a, on=N.USER_ID, how="anti")
    if gone.height:
        problems.append(
            f"{gone.height:,} user(s) who held a voucher are not allocated, " + examples(gone)
        )
    if problems:
        return False, "; ".join(problems)
    total = int(a[N.PAID_BEFORE_CENTS].sum())
    return True, (
        f"paid_before_cents of every user is what they held after round {r.round - 1} less "
        f"what expired (USD {format_cents(total)} in all)"
    )


def check_no_claw_back(r: RunFiles) -> Result:
    a = r.allocations
    v, before, delta = pl.col(N.VOUCHER_CENTS), pl.col(N.PAID_BEFORE_CENTS), pl.col(N.DELTA_CENTS)
    problems = []
    less = a.filter(v < before)
    if less.height:
        problems.append(
            f"{less.height:,} user(s) paid less than they held (a claw-back), "
            + examples(less.select(N.USER_ID, N.PAID_BEFORE_CENTS, N.VOUCHER_CENTS))
        )
    wrong = a.filter(delta != v - before)
    if wrong.height:
        problems.append(
            f"{wrong.height:,} delta_cents that are not voucher_cents - paid_before_cents, "
            + examples(wrong.select(N.USER_ID, N.PAID_BEFORE_CENTS, N.VOUCHER_CENTS, N.DELTA_CENTS))
        )
    more = a.filter(pl.col(N.USER_ID).is_in(r.forfeited().implode()) & (delta != 0))
    if more.height:
        problems.append(
            f"{more.height:,} user(s) who forfeited an expired voucher are paid more, "
            + examples(more.select(N.USER_ID, N.DELTA_CENTS))
        )
    if problems:
        return False, "; ".join(problems)
    held = a.filter(before > 0).height
    topped = a.filter(delta > 0).height
    return True, (
        f"no user paid less than they held ({held:,} held a voucher); {topped:,} topped up by "
        f"USD {format_cents(int(a[N.DELTA_CENTS].sum()))} in all"
    )


def chain(r: RunFiles) -> list[RunFiles]:
    """The runs of the chain, round 1 first, ending with ``r``."""
    out = [r]
    while out[-1].later_round:
        out.append(previous(out[-1]))
        if len(out) > r.round:  # rounds count down by one, so this cannot loop
            raise Unavailable("the chain of previous rounds does not end in round 1")
    return out[::-1]


def check_chain_totals(r: RunFiles) -> Result:
    runs = chain(r)
    keys = pl.concat(
        [
            run.payouts.select(
                N.USER_ID,
                N.IDEMPOTENCY_KEY,
                AMOUNT_CENTS,
                pl.lit(run.round, dtype=pl.Int64).alias(N.ROUND),
            )
            for run in runs
        ]
    )
    problems = []
    again = keys.filter(pl.col(N.IDEMPOTENCY_KEY).is_duplicated())
    if again.height:
        problems.append(
            f"{again.height:,} payout(s) whose idempotency key another payout of the chain uses, "
            + examples(again.sort(N.IDEMPOTENCY_KEY))
        )
    ledger = r.vouchers.select(N.USER_ID, N.ROUND, N.IDEMPOTENCY_KEY, N.CENTS, N.STATUS)
    paired = ledger.join(keys, on=[N.USER_ID, N.ROUND, N.IDEMPOTENCY_KEY], how="full")
    unpaired = paired.filter(
        pl.col(N.CENTS).is_null()
        | pl.col(AMOUNT_CENTS).is_null()
        | (pl.col(N.CENTS) != pl.col(AMOUNT_CENTS))
    )
    if unpaired.height:
        problems.append(
            f"{unpaired.height:,} voucher(s) of the ledger and payouts of the chain that do not "
            "pair up one to one with the same cents, " + examples(unpaired)
        )
    issued = int(keys[AMOUNT_CENTS].sum())
    expired = int(ledger.filter(pl.col(N.STATUS) == N.VOUCHER_EXPIRED)[N.CENTS].sum())
    held = r.paid_cents
    if issued - expired != held:
        problems.append(
            f"rounds 1 to {r.round} paid out USD {format_cents(issued)}, USD "
            f"{format_cents(expired)} expired, which leaves USD {format_cents(issued - expired)}, "
            f"but the users hold USD {format_cents(held)}"
        )
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"rounds 1 to {r.round}: USD {format_cents(issued)} paid out in {keys.height:,} "
        f"payouts, each key once; USD {format_cents(expired)} expired; users hold USD "
        f"{format_cents(held)}"
    )
