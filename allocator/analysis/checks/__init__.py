r"""Finance's reconciliation of a run directory from its files alone (``allocator check-budget``).

:func:`check_run_dir` reads the four files of a run directory (see :mod:`allocator.runs.contract` for
the contract) and the liquidations input the manifest names, and runs every check below; each
check reports on its own, so one broken file yields every failure it causes rather than a
traceback or the first failure only. A check whose inputs cannot be read fails with
"not checked: ...".

Checks, by name:

``manifest``
    manifest.json is readable strict JSON in format ``allocator-run/1`` with every section.
``allocations file``, ``excluded file``, ``payouts file``
    Each file is present and readable, with the contract's columns and types, no missing key
    values, sorted by user id (payouts.csv: every amount is USD with exactly two decimals).
``budget``
    The manifest's budget in cents and exhaust flag are the scenario's; the vouchers add up to
    the budget exactly (exhaust) or to at most the budget.
``paid``, ``unspent``
    The manifest's ``paid_cents`` is the sum of the vouchers; ``unspent_cents`` is budget - paid.
``within bounds``
    Every voucher lies within its ``[lower_cents, upper_cents]``.
``bounds``
    ``lower_cents`` is the scenario floor rounded up to the cent and ``upper_cents`` is
    ``min(cap, coverage_cap * loss)`` rounded down, a float within 1e-6 cent of a whole cent
    counting as that cent (see :func:`bounds_cents`).
``voucher_usd``, ``bound labels``
    ``voucher_usd == voucher_cents / 100``; ``bound`` is ``floor`` when the voucher is at or below
    its lower bound, else ``cap`` when at or above its upper bound, else ``interior``.
``unique allocations``, ``unique exclusions``, ``allocated or excluded``
    No user appears twice in a file, nor in both.
``exclusion reasons``
    Every reason is one of :data:`allocator.names.REASONS`.
``liquidated users``
    The distinct users of the liquidations input are exactly the allocated plus the excluded.
``payout rows``, ``payout amounts``, ``payout keys``
    payouts.csv has one row per allocated user with a positive voucher and nobody else (a
    zero-cent voucher, possible only with a zero floor, is not a payment), pays each the
    allocation to the cent, and every row has a batch and an idempotency key unique across rows.
``input hashes``, ``output hashes``
    Every input file's SHA-256 equals the manifest's, and the three data files' hashes equal
    ``manifest["outputs"]``.
``counts``
    The manifest's counts (liquidated, eligible, excluded, floor, interior, cap, excluded by
    reason) are those of the files.

The checks below do not lean on the stored hashes: someone who edits the files together and
then rewrites ``manifest["outputs"]`` still has to satisfy them.

``idempotency keys``
    Every key is ``sha256(f"{programme}:{user_id}")``, first 32 hex characters, with the
    manifest's programme (see :func:`payout_key`).
``payout batches``
    The manifest's ``payout_batches`` are numbered 1, 2, ..., none larger than the scenario's
    ``payouts.batch_size``; every payout is in one of them, and each batch holds the number of
    payouts and the cents its schedule entry states.
``payout schedule``
    No batch is scheduled before ``payouts.announced_at``, the first starts by
    ``announced_at + start_within_hours``, each is due after it is scheduled and by
    ``announced_at + finish_within_hours``.
``optimality``
    The manifest's prices are valid multipliers (non-negative; a segment price only for a
    share the segment has) and every paid voucher lies within a cent of its best response at
    them (see :func:`best_response_usd` and :data:`BEST_RESPONSE_TOL_USD`).
``objective``
    The manifest's ``objective_rounded`` is :math:`\sum_i w_i u_\alpha(v_i)` of the paid
    vouchers, to the float error of the sum (see :func:`objective_tolerance`).
``eligibility recomputed``
    From the four input tables the manifest names and its resolved scenario, every liquidated
    user's counted loss, loss ratio and decision (eligible, or the first failing rule) are
    recomputed without the allocating code: the allocated users are exactly the eligible, each
    excluded user has the recomputed reason, and the losses, ratios (and phase factors) in the
    files are the recomputed ones (see :mod:`~allocator.analysis.checks.recompute`).
``weights recomputed``
    Every allocated user's weight is the one the scenario's objective gives from the recomputed
    features (alpha-fair weight, a claims rule's claim, or the max-min scale), to 1e-9 relative.

Modules, by concern: :mod:`~allocator.analysis.checks.runfiles` (lazy reads of the run
directory), :mod:`~allocator.analysis.checks.contract` (manifest, file contract, membership,
counts, hashes), :mod:`~allocator.analysis.checks.amounts` (budget, bounds, segment shares),
:mod:`~allocator.analysis.checks.payouts` (rows, keys, batches, schedule),
:mod:`~allocator.analysis.checks.optimality` (best responses and the objective),
:mod:`~allocator.analysis.checks.recompute` (eligibility and weights from the inputs) and
:mod:`~allocator.analysis.checks.runner` (the table of checks and :func:`check_run_dir`). None of
them imports the allocating path (the voucher programme, the solvers): the checks recompute what
they need from the files and the documented conventions.
"""

from __future__ import annotations

from allocator.analysis.checks.amounts import CENT_TOLERANCE, MAX_CENTS, bounds_cents
from allocator.analysis.checks.contract import COUNT_KEYS, MANIFEST_SECTIONS, MONEY_KEYS
from allocator.analysis.checks.optimality import (
    BEST_RESPONSE_TOL_USD,
    OBJECTIVE_RTOL,
    PRICE_SIGN_TOL,
    TIE_RTOL,
    best_response_usd,
    objective_terms,
    objective_tolerance,
)
from allocator.analysis.checks.payouts import BATCH_KEYS, KEY_HEX_CHARS, payout_key
from allocator.analysis.checks.runner import CHECK_NAMES, CHECKS, Check, CheckReport, check_run_dir

__all__ = [
    "BATCH_KEYS",
    "BEST_RESPONSE_TOL_USD",
    "CENT_TOLERANCE",
    "CHECKS",
    "CHECK_NAMES",
    "COUNT_KEYS",
    "KEY_HEX_CHARS",
    "MANIFEST_SECTIONS",
    "MAX_CENTS",
    "MONEY_KEYS",
    "OBJECTIVE_RTOL",
    "PRICE_SIGN_TOL",
    "TIE_RTOL",
    "Check",
    "CheckReport",
    "best_response_usd",
    "bounds_cents",
    "check_run_dir",
    "objective_terms",
    "objective_tolerance",
    "payout_key",
]
