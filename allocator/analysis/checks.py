r"""Finance's reconciliation of a run directory from its files alone (``allocator check-budget``).

:func:`check_run_dir` reads the four files of a run directory (see :mod:`allocator.runs.rundir` for
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
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.inputs import file_sha256
from allocator.errors import InputError
from allocator.runs.rundir import (
    ALLOCATIONS_SCHEMA,
    AMOUNT_CENTS,
    EXCLUDED_KEY_COLUMNS,
    LOWER_CENTS,
    OUTPUT_FILES,
    RUN_FORMAT,
    UPPER_CENTS,
    read_manifest,
    read_parquet_file,
    read_payouts_csv,
)

#: Sections every manifest must have for the checks to run.
MANIFEST_SECTIONS = (
    "format",
    "programme",
    "scenario",
    "inputs",
    "money",
    "counts",
    "outputs",
    "shadow_price",
    "segment_prices",
    "objective_rounded",
    "payout_batches",
)
#: Keys of one entry of ``manifest["payout_batches"]`` (:meth:`allocator.vouchers.payouts.Batch.to_dict`).
BATCH_KEYS = ("number", "users", "cents", "scheduled_at", "due_at")
#: USD: how far a paid voucher may lie from its best response at the manifest's prices. One
#: cent of rounding plus the solver's 1e-3 USD: the rule allocate's own certificate applies
#: before it writes a run (``certify(..., rounded=True)``), so every run it writes passes and a
#: tighter rule would reject runs that allocate stands behind.
BEST_RESPONSE_TOL_USD = 0.01 + 1e-3
#: Relative tolerance on the signs of the multipliers (the certificate's default tolerance).
PRICE_SIGN_TOL = 1e-6
#: Relative distance between weight and price within which a user of a linear (alpha = 0)
#: objective is on a tie: the price of a linear problem is the weight of its fractional users,
#: so an exact float comparison would misjudge them for a last-bit difference (the
#: certificate's default tolerance).
TIE_RTOL = 1e-6
#: Relative floor of the objective tolerance, for the per-term error of the utility (see
#: :func:`objective_tolerance`).
OBJECTIVE_RTOL = 1e-12
#: Hex characters of an idempotency key (128 bits of the SHA-256).
KEY_HEX_CHARS = 32
MONEY_KEYS = ("budget_cents", "paid_cents", "unspent_cents", "exhaust")
COUNT_KEYS = (
    "liquidated",
    "eligible",
    "excluded",
    "floor",
    "interior",
    "cap",
    "excluded_by_reason",
)
#: Cents: a float within this distance of a whole cent is that cent (the project's convention,
#: :data:`allocator.kernel.rounding.CENT_TOL`).
CENT_TOLERANCE = 1e-6
#: Largest cap in cents (:data:`allocator.kernel.rounding.MAX_CENTS`); an infinite cap is read as this.
MAX_CENTS = 10**12
_EPS = float(np.finfo(np.float64).eps)
_EXAMPLES = 3


@dataclass(frozen=True)
class Check:
    """One named check, whether it holds, and what was found."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class CheckReport:
    """Every check run on one run directory; ``ok`` only when all of them hold."""

    path: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.path,
            "ok": self.ok,
            "n_checks": len(self.checks),
            "n_failed": len(self.failures),
            "failed": [c.name for c in self.failures],
            "checks": [c.to_dict() for c in self.checks],
        }

    def lines(self) -> list[str]:
        """One line per check, then a verdict line."""
        width = max((len(c.name) for c in self.checks), default=0)
        out = [f"{'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        if self.ok:
            out.append(f"OK: all {len(self.checks)} checks passed for {self.path}")
        else:
            names = ", ".join(c.name for c in self.failures)
            out.append(
                f"FAILED: {len(self.failures)} of {len(self.checks)} checks failed "
                f"for {self.path}: {names}"
            )
        return out


class _Unavailable(Exception):
    """Something a check needs could not be read; the check fails as 'not checked'."""


def _usd(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    c = abs(int(cents))
    return f"{sign}{c // 100:,}.{c % 100:02d}"


def _examples(frame: pl.DataFrame, k: int = _EXAMPLES) -> str:
    rows = frame.head(k).to_dicts()
    text = "; ".join(", ".join(f"{key}={val}" for key, val in row.items()) for row in rows)
    return f"e.g. {text}" + (" ..." if frame.height > k else "")


class _RunFiles:
    """Lazy, cached access to a run directory's contents; failures become _Unavailable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self, loader: Callable[[], Any]) -> Any:
        try:
            return loader()
        except InputError as exc:
            return _Unavailable(exc.message)

    @staticmethod
    def _get(value: Any) -> Any:
        if isinstance(value, _Unavailable):
            raise value
        return value

    @cached_property
    def _manifest(self) -> Any:
        return self._load(lambda: read_manifest(self.path / N.MANIFEST_FILE))

    @cached_property
    def _allocations(self) -> Any:
        return self._load(lambda: read_parquet_file(self.path / N.ALLOCATIONS_FILE))

    @cached_property
    def _excluded(self) -> Any:
        return self._load(lambda: read_parquet_file(self.path / N.EXCLUDED_FILE))

    @cached_property
    def _payouts(self) -> Any:
        return self._load(lambda: read_payouts_csv(self.path / N.PAYOUTS_FILE))

    @property
    def manifest(self) -> dict[str, Any]:
        return self._get(self._manifest)

    @property
    def allocations(self) -> pl.DataFrame:
        return self._get(self._allocations)

    @property
    def excluded(self) -> pl.DataFrame:
        return self._get(self._excluded)

    @property
    def payouts(self) -> pl.DataFrame:
        return self._get(self._payouts)

    def section(self, *keys: str) -> Any:
        """``manifest[k1][k2]...``; _Unavailable naming the missing key."""
        node: Any = self.manifest
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[: depth + 1])
                raise _Unavailable(f"{N.MANIFEST_FILE} has no {where}")
            node = node[key]
        return node

    def money(self, key: str) -> int:
        value = self.section("money", key)
        if key == "exhaust":
            if not isinstance(value, bool):
                raise _Unavailable(f"{N.MANIFEST_FILE} money.exhaust is not true/false: {value!r}")
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Unavailable(
                f"{N.MANIFEST_FILE} money.{key} is not a whole number of cents: {value!r}"
            )
        return value

    @cached_property
    def paid_cents(self) -> int:
        return int(self.allocations[N.VOUCHER_CENTS].sum())

    @cached_property
    def _liquidated(self) -> Any:
        try:
            meta = self.section("inputs", N.EVENTS_FILE)
            path = Path(meta["path"]) if isinstance(meta, dict) and "path" in meta else None
            if path is None:
                raise _Unavailable(f"{N.MANIFEST_FILE} inputs.{N.EVENTS_FILE} has no path")
            if not path.is_file():
                raise _Unavailable(f"liquidations input {path} not found")
            if path.suffix == ".parquet":
                scan = pl.scan_parquet(path)
            elif path.suffix == ".csv":
                scan = pl.scan_csv(path, infer_schema=False)
            else:
                raise _Unavailable(f"liquidations input {path} is neither .parquet nor .csv")
            users = scan.select(pl.col(N.USER_ID).cast(pl.Int64, strict=True)).unique().collect()
            return users[N.USER_ID]
        except _Unavailable as exc:
            return exc
        except Exception as exc:  # a damaged input file is a finding, not a crash
            return _Unavailable(f"liquidations input unreadable ({type(exc).__name__}: {exc})")

    @property
    def liquidated(self) -> pl.Series:
        return self._get(self._liquidated)


# --------------------------------------------------------------------------------------------
# the checks: each returns (ok, detail) or raises _Unavailable
# --------------------------------------------------------------------------------------------

Result = tuple[bool, str]


def _check_manifest(r: _RunFiles) -> Result:
    m = r.manifest
    problems = [f"no {k}" for k in MANIFEST_SECTIONS if k not in m]
    if m.get("format") not in (None, RUN_FORMAT):
        problems.append(f"format {m.get('format')!r}, expected {RUN_FORMAT!r}")
    money = m.get("money") if isinstance(m.get("money"), dict) else {}
    problems += [f"no money.{k}" for k in MONEY_KEYS if "money" in m and k not in money]
    counts = m.get("counts") if isinstance(m.get("counts"), dict) else {}
    problems += [f"no counts.{k}" for k in COUNT_KEYS if "counts" in m and k not in counts]
    if problems:
        return False, f"{N.MANIFEST_FILE}: " + "; ".join(problems)
    return True, f"{N.MANIFEST_FILE} in format {RUN_FORMAT} with every section"


def _schema_problems(
    frame: pl.DataFrame, schema: dict[str, pl.DataType], required: tuple[str, ...]
) -> list[str]:
    problems = []
    for col, dtype in schema.items():
        if col not in frame.columns:
            problems.append(f"missing column {col}")
        elif frame.schema[col] != dtype:
            problems.append(f"column {col} is {frame.schema[col]}, expected {dtype}")
    for col in required:
        if col in frame.columns and frame[col].null_count():
            problems.append(f"column {col} has {frame[col].null_count()} null(s)")
    if N.USER_ID in frame.columns and not frame[N.USER_ID].is_sorted():
        problems.append(f"rows not sorted by {N.USER_ID}")
    return problems


def _check_allocations_file(r: _RunFiles) -> Result:
    a = r.allocations
    required = tuple(c for c in ALLOCATIONS_SCHEMA if c != N.SEGMENT)
    problems = _schema_problems(a, ALLOCATIONS_SCHEMA, required)
    if N.BOUND in a.columns and a.schema[N.BOUND] == pl.String:
        bad = a.filter(~pl.col(N.BOUND).is_in(list(N.BOUND_STATES)))
        if bad.height:
            problems.append(f"{bad.height} bound label(s) not in {N.BOUND_STATES}")
    if problems:
        return False, f"{N.ALLOCATIONS_FILE}: " + "; ".join(problems)
    return True, f"{N.ALLOCATIONS_FILE}: {a.height:,} rows, contract columns and types, sorted"


def _check_excluded_file(r: _RunFiles) -> Result:
    e = r.excluded
    problems = _schema_problems(e, EXCLUDED_KEY_COLUMNS, (N.USER_ID, N.REASON))
    if problems:
        return False, f"{N.EXCLUDED_FILE}: " + "; ".join(problems)
    return True, f"{N.EXCLUDED_FILE}: {e.height:,} rows, contract columns and types, sorted"


def _check_payouts_file(r: _RunFiles) -> Result:
    p = r.payouts
    return True, f"{N.PAYOUTS_FILE}: {p.height:,} rows, every amount in exact cents"


def _scenario_budget_cents(r: _RunFiles) -> set[int]:
    total = r.section("scenario", "budget", "total_usd")
    if not isinstance(total, (int, float)) or isinstance(total, bool) or not math.isfinite(total):
        raise _Unavailable(
            f"{N.MANIFEST_FILE} scenario.budget.total_usd is not a number: {total!r}"
        )
    exact = Decimal(repr(total)) * 100  # repr is the shortest decimal that reads back as the float
    return {
        int(exact.to_integral_value(rounding="ROUND_FLOOR")),
        int(exact.to_integral_value(rounding="ROUND_CEILING")),
    }


def _check_budget(r: _RunFiles) -> Result:
    budget = r.money("budget_cents")
    exhaust = r.money("exhaust")
    problems = []
    allowed = _scenario_budget_cents(r)
    if budget not in allowed:
        total = r.section("scenario", "budget", "total_usd")
        problems.append(f"manifest budget {_usd(budget)} USD is not the scenario's {total} USD")
    scen_exhaust = r.section("scenario", "budget", "exhaust")
    if scen_exhaust != exhaust:
        problems.append(f"money.exhaust={exhaust} but scenario budget.exhaust={scen_exhaust}")
    paid = r.paid_cents
    if exhaust and paid != budget:
        problems.append(
            f"paid {_usd(paid)} USD != budget {_usd(budget)} USD (difference {paid - budget:+,} cents)"
        )
    if not exhaust and paid > budget:
        problems.append(
            f"paid {_usd(paid)} USD exceeds budget {_usd(budget)} USD by {paid - budget:,} cents"
        )
    if problems:
        return False, "; ".join(problems)
    rel = "==" if paid == budget else "<="
    return (
        True,
        f"paid {_usd(paid)} {rel} budget {_usd(budget)} USD ({'exhaust' if exhaust else 'cap only'})",
    )


def _check_paid(r: _RunFiles) -> Result:
    stated = r.money("paid_cents")
    paid = r.paid_cents
    if stated != paid:
        return (
            False,
            f"manifest paid_cents {stated:,} but the vouchers add up to {paid:,} "
            f"(difference {stated - paid:+,})",
        )
    return True, f"manifest paid_cents {stated:,} == sum of vouchers"


def _check_unspent(r: _RunFiles) -> Result:
    budget, unspent = r.money("budget_cents"), r.money("unspent_cents")
    paid = r.paid_cents
    if unspent != budget - paid:
        return False, f"manifest unspent_cents {unspent:,} but budget - paid = {budget - paid:,}"
    return True, f"unspent {_usd(unspent)} USD == budget - paid"


def _check_within_bounds(r: _RunFiles) -> Result:
    a = r.allocations
    v, lo, hi = pl.col(N.VOUCHER_CENTS), pl.col(LOWER_CENTS), pl.col(UPPER_CENTS)
    bad = a.filter((v < lo) | (v > hi)).select(N.USER_ID, N.VOUCHER_CENTS, LOWER_CENTS, UPPER_CENTS)
    if bad.height:
        below = a.filter(v < lo).height
        return False, (
            f"{bad.height:,} voucher(s) outside their bounds "
            f"({below:,} below, {bad.height - below:,} above), " + _examples(bad)
        )
    return True, f"all {a.height:,} vouchers within [lower_cents, upper_cents]"


def bounds_cents(
    floor_usd: float,
    cap_usd: float,
    coverage_cap: float | None,
    loss_usd: np.ndarray,
    phase_factor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Each user's bounds in whole cents, recomputed from the scenario's knobs.

    .. math::

        h_i = \min(\text{cap}, \kappa L_i),\qquad
        \underline c_i = \lceil 100 f - \tau \rceil,\qquad
        \overline c_i = \lfloor \min(100 h_i, M) + \tau \rfloor,\qquad
        \tau = 10^{-6} + 4 \epsilon |x|

    where :math:`x` is the amount in cents being rounded: a float within :math:`\tau` of a whole
    cent is that cent (``0.29 * 100`` is 29 cents), and :math:`M` bounds an infinite cap. These
    are the conventions of :func:`allocator.kernel.rounding.bounds_to_cents`, written out again here so
    that the check does not run the code it audits. With a phase-in band the cap is scaled by the
    user's phase factor :math:`\varphi_i` and the floor never exceeds the phased cap.
    """
    loss = np.asarray(loss_usd, dtype=np.float64)
    lower = np.full(loss.shape[0], float(floor_usd)) * 100.0
    upper = np.full(loss.shape[0], float(cap_usd))
    if coverage_cap is not None:
        upper = np.minimum(upper, float(coverage_cap) * loss)
    if phase_factor is not None:
        upper = np.minimum(upper, float(cap_usd) * np.asarray(phase_factor, dtype=np.float64))
    upper = np.minimum(upper * 100.0, float(MAX_CENTS))
    lo = np.ceil(lower - (CENT_TOLERANCE + 4.0 * _EPS * np.abs(lower)))
    hi = np.floor(upper + (CENT_TOLERANCE + 4.0 * _EPS * np.abs(upper)))
    if phase_factor is not None:
        lo = np.minimum(lo, hi)
    return lo, hi


def _ramp(x: np.ndarray, low: float | None, high: float) -> np.ndarray:
    if low is None:
        return np.ones_like(x)
    with np.errstate(invalid="ignore"):
        ramp = np.clip((x - low) / (high - low), 0.0, 1.0)
    return np.where(x >= high, 1.0, ramp)


def _phase_factor(r: _RunFiles) -> np.ndarray | None:
    """Each user's phase-in factor recomputed from loss, loss ratio and the scenario's bands, or
    None without a band (the file's ``phase_factor`` column must then match it)."""
    rules = r.section("scenario", "eligibility")
    p_loss, p_ratio = rules.get("phase_in_loss_usd"), rules.get("phase_in_ratio")
    if p_loss is None and p_ratio is None:
        return None
    a = r.allocations
    loss, ratio = a[N.LOSS_USD].to_numpy(), a[N.LOSS_RATIO].to_numpy()
    return _ramp(loss, p_loss, float(rules["min_loss_usd"])) * _ramp(
        ratio, p_ratio, float(rules["min_loss_ratio"])
    )


def _knob(r: _RunFiles, key: str, *, optional: bool = False) -> float | None:
    value = r.section("scenario", "bounds", key)
    if value is None and optional:
        return None
    # The manifest writes an infinite cap as the string "inf" (strict JSON has no Infinity).
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Unavailable(f"{N.MANIFEST_FILE} scenario.bounds.{key} is not a number: {value!r}")
    return float(value)


def _check_bounds(r: _RunFiles) -> Result:
    floor, cap = _knob(r, "floor_usd"), _knob(r, "cap_usd")
    cover = _knob(r, "coverage_cap", optional=True)
    a = r.allocations
    phase = _phase_factor(r)
    if phase is not None:
        stored = a[N.PHASE_FACTOR].to_numpy() if N.PHASE_FACTOR in a.columns else None
        if stored is None or not np.allclose(stored, phase, rtol=0.0, atol=1e-12):
            return False, (
                f"the scenario has a phase-in band but {N.ALLOCATIONS_FILE} "
                + (
                    "has no phase_factor column"
                    if stored is None
                    else "has phase factors that do not follow from the users' loss and loss ratio"
                )
            )
    exp_lo, exp_hi = bounds_cents(floor, cap, cover, a[N.LOSS_USD].to_numpy(), phase)
    bad_lo = a[LOWER_CENTS].to_numpy() != exp_lo
    bad_hi = a[UPPER_CENTS].to_numpy() != exp_hi
    bad = bad_lo | bad_hi
    knobs = f"floor {floor:g}, cap {cap:g}, coverage_cap {cover if cover is None else f'{cover:g}'}"
    if bad.any():
        rows = a.filter(pl.Series(bad)).select(N.USER_ID, N.LOSS_USD, LOWER_CENTS, UPPER_CENTS)
        rows = rows.with_columns(
            pl.Series("expected_lower", exp_lo[bad].astype(np.int64)),
            pl.Series("expected_upper", exp_hi[bad].astype(np.int64)),
        )
        return False, (
            f"{int(bad.sum()):,} user(s) with bounds that are not the scenario's ({knobs}): "
            f"{int(bad_lo.sum()):,} lower, {int(bad_hi.sum()):,} upper, " + _examples(rows)
        )
    return True, f"every user's bounds are the scenario's ({knobs}) in cents"


def _check_voucher_usd(r: _RunFiles) -> Result:
    a = r.allocations
    # numpy divides exactly (IEEE); Polars multiplies by the reciprocal and is off by an ulp at
    # about one value in eight, so the expression is not the reference here.
    exact = a[N.VOUCHER_CENTS].to_numpy() / 100.0
    bad = a.filter(pl.Series(a[N.VOUCHER_USD].to_numpy() != exact))
    if bad.height:
        return (
            False,
            f"{bad.height:,} row(s) with voucher_usd != voucher_cents / 100, "
            + _examples(bad.select(N.USER_ID, N.VOUCHER_CENTS, N.VOUCHER_USD)),
        )
    return True, "voucher_usd == voucher_cents / 100 on every row"


def _check_bound_labels(r: _RunFiles) -> Result:
    a = r.allocations
    v, lo, hi = pl.col(N.VOUCHER_CENTS), pl.col(LOWER_CENTS), pl.col(UPPER_CENTS)
    expected = (
        pl.when(v <= lo)
        .then(pl.lit(N.BOUND_FLOOR))
        .when(v >= hi)
        .then(pl.lit(N.BOUND_CAP))
        .otherwise(pl.lit(N.BOUND_INTERIOR))
    )
    bad = a.with_columns(expected.alias("expected")).filter(pl.col(N.BOUND) != pl.col("expected"))
    if bad.height:
        return False, f"{bad.height:,} bound label(s) disagree with the cents, " + _examples(
            bad.select(N.USER_ID, N.VOUCHER_CENTS, LOWER_CENTS, UPPER_CENTS, N.BOUND, "expected")
        )
    return True, "every bound label matches the voucher's position in its bounds"


def _duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(N.USER_ID).len().filter(pl.col("len") > 1).sort(N.USER_ID)


def _check_unique_allocations(r: _RunFiles) -> Result:
    dup = _duplicates(r.allocations)
    if dup.height:
        return (
            False,
            f"{dup.height:,} user(s) allocated more than once in {N.ALLOCATIONS_FILE}, "
            + _examples(dup),
        )
    return True, "no user allocated twice"


def _check_unique_exclusions(r: _RunFiles) -> Result:
    dup = _duplicates(r.excluded)
    if dup.height:
        return (
            False,
            f"{dup.height:,} user(s) excluded more than once in {N.EXCLUDED_FILE}, "
            + _examples(dup),
        )
    return True, "no user excluded twice"


def _check_disjoint(r: _RunFiles) -> Result:
    both = (
        r.allocations.select(N.USER_ID)
        .unique()
        .join(r.excluded.select(N.USER_ID).unique(), on=N.USER_ID)
    )
    if both.height:
        return False, f"{both.height:,} user(s) both allocated and excluded, " + _examples(
            both.sort(N.USER_ID)
        )
    return True, "no user both allocated and excluded"


def _check_reasons(r: _RunFiles) -> Result:
    e = r.excluded
    bad = e.filter(~pl.col(N.REASON).is_in(list(N.REASONS)) | pl.col(N.REASON).is_null())
    if bad.height:
        return False, f"{bad.height:,} exclusion(s) with an unknown reason, " + _examples(
            bad.select(N.USER_ID, N.REASON)
        )
    return True, "every exclusion has a known reason"


def _check_liquidated(r: _RunFiles) -> Result:
    liq = r.liquidated.to_frame()
    accounted = pl.concat([r.allocations.select(N.USER_ID), r.excluded.select(N.USER_ID)]).unique()
    missing = liq.join(accounted, on=N.USER_ID, how="anti").sort(N.USER_ID)
    extra = accounted.join(liq, on=N.USER_ID, how="anti").sort(N.USER_ID)
    problems = []
    if missing.height:
        problems.append(
            f"{missing.height:,} liquidated user(s) neither allocated nor excluded, "
            + _examples(missing)
        )
    if extra.height:
        problems.append(
            f"{extra.height:,} user(s) in the run who were not liquidated, " + _examples(extra)
        )
    if problems:
        return False, "; ".join(problems)
    return True, f"all {liq.height:,} liquidated users allocated or excluded, nobody else"


def _check_payout_rows(r: _RunFiles) -> Result:
    p, a = r.payouts, r.allocations
    dup = _duplicates(p)
    users = a.filter(pl.col(N.VOUCHER_CENTS) > 0).select(N.USER_ID).unique()
    paid_users = p.select(N.USER_ID).unique()
    unpaid = users.join(paid_users, on=N.USER_ID, how="anti").sort(N.USER_ID)
    stray = paid_users.join(users, on=N.USER_ID, how="anti").sort(N.USER_ID)
    problems = []
    if dup.height:
        problems.append(f"{dup.height:,} user(s) with more than one payout row, " + _examples(dup))
    if unpaid.height:
        problems.append(
            f"{unpaid.height:,} allocated user(s) without a payout row, " + _examples(unpaid)
        )
    if stray.height:
        problems.append(
            f"{stray.height:,} payout row(s) for users not allocated a positive voucher, "
            + _examples(stray)
        )
    if problems:
        return False, "; ".join(problems)
    return True, f"one payout row per allocated user with a positive voucher ({p.height:,})"


def _check_payout_amounts(r: _RunFiles) -> Result:
    p = r.payouts.select(N.USER_ID, AMOUNT_CENTS)
    a = r.allocations.select(N.USER_ID, N.VOUCHER_CENTS)
    joined = a.join(p, on=N.USER_ID, how="inner")
    bad = joined.filter(pl.col(AMOUNT_CENTS) != pl.col(N.VOUCHER_CENTS)).sort(N.USER_ID)
    paid_total = int(r.payouts[AMOUNT_CENTS].sum())
    problems = []
    if bad.height:
        problems.append(f"{bad.height:,} payout(s) differ from the allocation, " + _examples(bad))
    if paid_total != r.paid_cents:
        problems.append(
            f"payouts add up to {_usd(paid_total)} USD, allocations to {_usd(r.paid_cents)} USD"
        )
    if problems:
        return False, "; ".join(problems)
    return True, f"every payout equals its allocation to the cent (total {_usd(paid_total)} USD)"


def _check_payout_keys(r: _RunFiles) -> Result:
    p = r.payouts
    problems = []
    for col in (N.BATCH, N.IDEMPOTENCY_KEY):
        empty = p.filter(
            pl.col(col).is_null() | (pl.col(col).cast(pl.String).str.strip_chars() == "")
        )
        if empty.height:
            problems.append(
                f"{empty.height:,} row(s) without a {col}, "
                + _examples(empty.select(N.USER_ID, col))
            )
    keys = p.filter(pl.col(N.IDEMPOTENCY_KEY).is_not_null())
    dup = keys.group_by(N.IDEMPOTENCY_KEY).len().filter(pl.col("len") > 1).sort(N.IDEMPOTENCY_KEY)
    if dup.height:
        problems.append(f"{dup.height:,} idempotency key(s) used more than once, " + _examples(dup))
    if problems:
        return False, "; ".join(problems)
    n_batches = p[N.BATCH].n_unique()
    return True, f"every payout has a batch ({n_batches:,} batches) and a unique idempotency key"


def _check_input_hashes(r: _RunFiles) -> Result:
    inputs = r.section("inputs")
    if not isinstance(inputs, dict) or N.EVENTS_FILE not in inputs:
        return False, f"{N.MANIFEST_FILE} inputs does not list the {N.EVENTS_FILE} file"
    problems, checked = [], 0
    for stem, meta in sorted(inputs.items()):
        if not isinstance(meta, dict) or "path" not in meta or "sha256" not in meta:
            problems.append(f"{stem}: no path/sha256 in the manifest")
            continue
        path = Path(meta["path"])
        if not path.is_file():
            problems.append(f"{stem}: {path} not found")
            continue
        actual = file_sha256(path)
        if actual != meta["sha256"]:
            problems.append(
                f"{stem}: {path} has sha256 {actual[:12]}..., "
                f"manifest says {str(meta['sha256'])[:12]}..."
            )
        checked += 1
    if problems:
        return False, "input files differ from the manifest: " + "; ".join(problems)
    return True, f"all {checked} input files have the manifest's sha256"


def _check_output_hashes(r: _RunFiles) -> Result:
    outputs = r.section("outputs")
    if not isinstance(outputs, dict):
        return False, f"{N.MANIFEST_FILE} outputs is not an object"
    problems = []
    for name in sorted(set(outputs) - set(OUTPUT_FILES)):
        problems.append(f"unexpected output {name!r} in the manifest")
    for name in OUTPUT_FILES:
        path = r.path / name
        if name not in outputs:
            problems.append(f"{name}: no hash in the manifest")
        elif not path.is_file():
            problems.append(f"{name}: file not found")
        elif file_sha256(path) != outputs[name]:
            problems.append(
                f"{name}: sha256 differs from the manifest (file changed after the run)"
            )
    if problems:
        return False, "; ".join(problems)
    return True, "allocations, excluded and payouts files have the manifest's sha256"


def _check_counts(r: _RunFiles) -> Result:
    counts = r.section("counts")
    a, e = r.allocations, r.excluded
    labels = a[N.BOUND].value_counts()
    by_label = dict(zip(labels[N.BOUND].to_list(), labels["count"].to_list()))
    reasons = e[N.REASON].value_counts()
    by_reason = dict(zip(reasons[N.REASON].to_list(), reasons["count"].to_list()))
    actual: dict[str, Any] = {
        "liquidated": pl.concat([a.select(N.USER_ID), e.select(N.USER_ID)]).n_unique(),
        "eligible": a.height,
        "excluded": e.height,
        N.BOUND_FLOOR: by_label.get(N.BOUND_FLOOR, 0),
        N.BOUND_INTERIOR: by_label.get(N.BOUND_INTERIOR, 0),
        N.BOUND_CAP: by_label.get(N.BOUND_CAP, 0),
    }
    problems = []
    for key, value in actual.items():
        if counts.get(key) != value:
            problems.append(f"{key}: manifest {counts.get(key)!r}, files {value:,}")
    stated = counts.get("excluded_by_reason")
    stated = {k: v for k, v in stated.items() if v} if isinstance(stated, dict) else stated
    if stated != by_reason:
        problems.append(
            f"excluded_by_reason: manifest {json.dumps(stated, sort_keys=True)}, "
            f"files {json.dumps(by_reason, sort_keys=True)}"
        )
    if problems:
        return False, "manifest counts differ from the files: " + "; ".join(problems)
    return True, f"manifest counts match the files ({a.height:,} eligible, {e.height:,} excluded)"


def _check_segment_shares(r: _RunFiles) -> Result:
    """Each segment of the scenario gets its share of the budget, counted in whole cents.

    Members are the rows whose ``segment`` label names the segment (overlapping segments are
    joined with ``+``); shares are read through their decimal form so ``0.4 * B`` is exact.
    """
    segments = r.section("scenario", "segments") or []
    if not segments:
        return True, "no segment constraints"
    budget = r.money("budget_cents")
    labels = r.allocations[N.SEGMENT].fill_null("").str.split("+")
    cents = r.allocations[N.VOUCHER_CENTS]
    problems, done = [], []
    for seg in segments:
        name = seg["name"]
        got = int(cents.filter(labels.list.contains(name)).sum())
        lo = seg.get("min_share")
        hi = seg.get("max_share")
        lo_c = None if lo is None else math.ceil(Fraction(repr(float(lo))) * budget)
        hi_c = None if hi is None else math.floor(Fraction(repr(float(hi))) * budget)
        if lo_c is not None and got < lo_c:
            problems.append(f"segment {name!r} got {_usd(got)} USD, below its minimum {_usd(lo_c)}")
        elif hi_c is not None and got > hi_c:
            problems.append(f"segment {name!r} got {_usd(got)} USD, above its maximum {_usd(hi_c)}")
        else:
            done.append(f"{name} {_usd(got)} USD")
    if problems:
        return False, "; ".join(problems)
    return True, "every segment within its share: " + ", ".join(done)


# --------------------------------------------------------------------------------------------
# checks that do not rely on the stored hashes: keys, batches, prices and the objective
# --------------------------------------------------------------------------------------------


def _manifest_number(r: _RunFiles, *keys: str) -> float:
    """A number of the manifest as a float; strict JSON writes infinities as ``"inf"``."""
    value = r.section(*keys)
    where = ".".join(keys)
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf"):
        return -math.inf if value.strip().startswith("-") else math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Unavailable(f"{N.MANIFEST_FILE} {where} is not a number: {value!r}")
    return float(value)


def payout_key(programme: str, user_id: int) -> str:
    """The idempotency key the run directory contract gives one user of one programme.

    Parameters
    ----------
    programme
        ``manifest["programme"]``.
    user_id
        The user's id.

    Returns
    -------
    str
        ``sha256(f"{programme}:{user_id}")`` as lowercase hex, first :data:`KEY_HEX_CHARS`
        characters.

    Notes
    -----
    :func:`allocator.vouchers.payouts.idempotency_key` computes the same; the formula is written out
    again so that the check pins the documented contract. Were the writer's function changed
    (say, to include the amount, which would let a rerun pay a user twice), a check calling it
    would agree with every run it wrote; this one would not.
    """
    return hashlib.sha256(f"{programme}:{int(user_id)}".encode()).hexdigest()[:KEY_HEX_CHARS]


def _check_idempotency_keys(r: _RunFiles) -> Result:
    programme = r.section("programme")
    if not isinstance(programme, str) or not programme:
        raise _Unavailable(f"{N.MANIFEST_FILE} programme is not a non-empty string: {programme!r}")
    p = r.payouts
    expected = pl.Series(
        "expected", [payout_key(programme, u) for u in p[N.USER_ID].to_list()], dtype=pl.String
    )
    stated = p[N.IDEMPOTENCY_KEY].cast(pl.String)
    wrong = (
        p.select(N.USER_ID, N.IDEMPOTENCY_KEY)
        .with_columns(expected)
        .filter((stated != expected).fill_null(True))
    )
    if wrong.height:
        return False, (
            f"{wrong.height:,} payout(s) whose idempotency key is not "
            f"sha256('{programme}:<user_id>')[:{KEY_HEX_CHARS}], " + _examples(wrong)
        )
    return True, (f"all {p.height:,} keys are sha256('{programme}:<user_id>')[:{KEY_HEX_CHARS}]")


@dataclass(frozen=True)
class _Batch:
    number: int
    users: int
    cents: int
    scheduled_at: datetime
    due_at: datetime


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            at = None
        if at is not None and at.utcoffset() is not None:
            return at
    raise _Unavailable(f"{N.MANIFEST_FILE} {where} is not a date-time with a time zone: {value!r}")


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unavailable(f"{N.MANIFEST_FILE} {where} is not a whole number: {value!r}")
    return value


def _schedule(r: _RunFiles) -> list[_Batch]:
    """``manifest["payout_batches"]``, every entry complete and typed."""
    entries = r.section("payout_batches")
    if not isinstance(entries, list):
        raise _Unavailable(f"{N.MANIFEST_FILE} payout_batches is not a list")
    out = []
    for k, entry in enumerate(entries):
        where = f"payout_batches[{k}]"
        if not isinstance(entry, dict) or any(key not in entry for key in BATCH_KEYS):
            raise _Unavailable(f"{N.MANIFEST_FILE} {where} lacks one of {', '.join(BATCH_KEYS)}")
        out.append(
            _Batch(
                number=_whole(entry["number"], f"{where}.number"),
                users=_whole(entry["users"], f"{where}.users"),
                cents=_whole(entry["cents"], f"{where}.cents"),
                scheduled_at=_timestamp(entry["scheduled_at"], f"{where}.scheduled_at"),
                due_at=_timestamp(entry["due_at"], f"{where}.due_at"),
            )
        )
    return out


def _check_payout_batches(r: _RunFiles) -> Result:
    batches = _schedule(r)
    size = _whole(r.section("scenario", "payouts", "batch_size"), "scenario.payouts.batch_size")
    p = r.payouts
    if p.schema[N.BATCH] != pl.Int64:
        return False, f"{N.PAYOUTS_FILE}: column {N.BATCH} does not hold whole batch numbers"
    problems = []
    numbers = [b.number for b in batches]
    if numbers != list(range(1, len(batches) + 1)):
        problems.append(f"the manifest's batches are numbered {numbers[:5]}, not 1, 2, ...")
    too_big = [b for b in batches if not 1 <= b.users <= size]
    if too_big:
        problems.append(
            f"{len(too_big):,} scheduled batch(es) with a size outside 1..{size:,} "
            f"(payouts.batch_size), e.g. batch {too_big[0].number} of {too_big[0].users:,} users"
        )
    schedule = pl.DataFrame(
        {
            N.BATCH: [b.number for b in batches],
            "scheduled_users": [b.users for b in batches],
            "scheduled_cents": [b.cents for b in batches],
        },
        schema={N.BATCH: pl.Int64, "scheduled_users": pl.Int64, "scheduled_cents": pl.Int64},
    )
    stray = p.join(schedule, on=N.BATCH, how="anti").sort(N.USER_ID)
    if stray.height:
        problems.append(
            f"{stray.height:,} payout(s) in a batch the manifest does not schedule, "
            + _examples(stray.select(N.USER_ID, N.BATCH))
        )
    actual = p.group_by(N.BATCH).agg(
        pl.len().cast(pl.Int64).alias("users"), pl.col(AMOUNT_CENTS).sum().alias("cents")
    )
    both = schedule.join(actual, on=N.BATCH, how="left").with_columns(
        pl.col("users").fill_null(0), pl.col("cents").fill_null(0)
    )
    differs = (pl.col("users") != pl.col("scheduled_users")) | (
        pl.col("cents") != pl.col("scheduled_cents")
    )
    off = both.filter(differs).sort(N.BATCH)
    if off.height:
        problems.append(
            f"{off.height:,} batch(es) whose payouts differ from the manifest's schedule, "
            + _examples(off)
        )
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"{p.height:,} payouts in {len(batches):,} batch(es) of at most {size:,}, each with "
        "the users and cents of the manifest's schedule"
    )


def _check_payout_schedule(r: _RunFiles) -> Result:
    batches = _schedule(r)
    announced = _timestamp(
        r.section("scenario", "payouts", "announced_at"), "scenario.payouts.announced_at"
    )
    hours = {}
    for key in ("start_within_hours", "finish_within_hours"):
        h = _manifest_number(r, "scenario", "payouts", key)
        if not math.isfinite(h) or h < 0:
            raise _Unavailable(f"{N.MANIFEST_FILE} scenario.payouts.{key} is not >= 0: {h!r}")
        hours[key] = h
    start_by = announced + timedelta(hours=hours["start_within_hours"])
    finish_by = announced + timedelta(hours=hours["finish_within_hours"])
    if not batches:
        return True, "no batches to schedule"
    problems = []
    early = [b for b in batches if b.scheduled_at < announced]
    if early:
        problems.append(
            f"{len(early):,} batch(es) scheduled before the announcement "
            f"({announced.isoformat()}), e.g. batch {early[0].number} at "
            f"{early[0].scheduled_at.isoformat()}"
        )
    first = min(batches, key=lambda b: b.scheduled_at)
    if first.scheduled_at > start_by:
        problems.append(
            f"the first batch starts at {first.scheduled_at.isoformat()}, after "
            f"{start_by.isoformat()} (announcement + {hours['start_within_hours']:g} h)"
        )
    late = [b for b in batches if b.due_at > finish_by]
    if late:
        problems.append(
            f"{len(late):,} batch(es) due after {finish_by.isoformat()} (announcement + "
            f"{hours['finish_within_hours']:g} h), e.g. batch {late[0].number} due "
            f"{late[0].due_at.isoformat()}"
        )
    backwards = [b for b in batches if b.due_at <= b.scheduled_at]
    if backwards:
        problems.append(
            f"{len(backwards):,} batch(es) due no later than they are scheduled, e.g. batch "
            f"{backwards[0].number}"
        )
    if problems:
        return False, "; ".join(problems)
    last = max(b.due_at for b in batches)
    return True, (
        f"batches from {first.scheduled_at.isoformat()} (start by {start_by.isoformat()}) "
        f"to {last.isoformat()} (finish by {finish_by.isoformat()})"
    )


def best_response_usd(
    weights: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    alpha: float,
    prices: np.ndarray,
    vouchers: np.ndarray,
) -> np.ndarray:
    r"""Each user's best response (USD) at per-user prices, the rule a paid voucher must follow.

    .. math::

        v_i^\star = \operatorname{clip}\big((w_i/\lambda_i)^{1/\alpha}, \ell_i, h_i\big)

    maximises :math:`w_i u_\alpha(v) - \lambda_i v` over :math:`[\ell_i, h_i]` (:math:`h_i` when
    :math:`\lambda_i \le 0`). With ``alpha == 0`` (linear utility) it is :math:`h_i` when
    :math:`w_i > \lambda_i`, :math:`\ell_i` when :math:`w_i < \lambda_i`, and on a tie every
    point of the box, so the user's own voucher is returned; a tie is
    :math:`|w_i / \lambda_i - 1| \le` :data:`TIE_RTOL`. These are the rules of
    :func:`allocator.kernel.certificate.certify` with ``rounded=True``, written out again so that the
    check does not run the code it audits.

    Parameters
    ----------
    weights, lower, upper
        Per-user weight :math:`w_i > 0` and bounds in USD.
    alpha
        The objective's :math:`\alpha \ge 0`.
    prices
        Per-user price :math:`\lambda_i`.
    vouchers
        The paid vouchers in USD (used for ties at ``alpha == 0`` only).

    Returns
    -------
    numpy.ndarray
        :math:`v^\star` in USD (``nan`` where an input is ``nan``).
    """
    w = np.asarray(weights, dtype=np.float64)
    lam = np.asarray(prices, dtype=np.float64)
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if alpha == 0.0:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(lam > 0.0, w / lam, np.inf)
        out = np.where(ratio > 1.0 + TIE_RTOL, hi, lo)
        tie = np.abs(ratio - 1.0) <= TIE_RTOL
        out[tie] = np.asarray(vouchers, dtype=np.float64)[tie]
        out[np.isnan(w) | np.isnan(lam)] = np.nan
        return out
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = w / lam
        raw = ratio if alpha == 1.0 else np.power(ratio, 1.0 / alpha)
    raw = np.where(lam > 0.0, raw, np.where(np.isnan(lam), np.nan, np.inf))
    return np.minimum(np.maximum(raw, lo), hi)


def _alpha(r: _RunFiles) -> float:
    alpha = _manifest_number(r, "scenario", "objective", "alpha")
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise _Unavailable(f"{N.MANIFEST_FILE} scenario.objective.alpha is not >= 0: {alpha!r}")
    return alpha


def _segment_prices(r: _RunFiles) -> dict[str, tuple[float, float]]:
    raw = r.section("segment_prices")
    if not isinstance(raw, dict):
        raise _Unavailable(f"{N.MANIFEST_FILE} segment_prices is not an object")
    out = {}
    for name, pair in raw.items():
        ok = isinstance(pair, list) and len(pair) == 2
        if ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair):
            if all(math.isfinite(x) for x in pair):
                out[name] = (float(pair[0]), float(pair[1]))
                continue
        raise _Unavailable(
            f"{N.MANIFEST_FILE} segment_prices.{name} is not [mu_min, mu_max] in numbers: {pair!r}"
        )
    return out


def _price_sign_problems(
    r: _RunFiles, lam: float, mus: dict[str, tuple[float, float]]
) -> list[str]:
    """Dual feasibility as the certificate tests it: multipliers >= 0 (the budget's too unless
    the budget must be spent), and a segment price only for a share the segment has."""
    segments = r.section("scenario", "segments") or []
    shares = {seg.get("name"): seg for seg in segments if isinstance(seg, dict)}
    signed = [x for pair in mus.values() for x in pair]
    if not r.money("exhaust"):
        signed.append(lam)
    scale = max(abs(lam), max((abs(x) for x in signed), default=0.0), 1e-300)
    problems = []
    if any(x < -PRICE_SIGN_TOL * scale for x in signed):
        problems.append(
            "a multiplier is negative (shadow price "
            f"{lam:.6g}, segment prices {json.dumps(mus, sort_keys=True)})"
        )
    for name, (mu_min, mu_max) in sorted(mus.items()):
        seg = shares.get(name, {})
        for value, key in ((mu_min, "min_share"), (mu_max, "max_share")):
            if seg.get(key) is None and abs(value) > PRICE_SIGN_TOL * scale:
                problems.append(
                    f"segment {name!r} has a price {value:.6g} for a {key} it does not have"
                )
    return problems


def _check_optimality(r: _RunFiles) -> Result:
    a = r.allocations
    alpha = _alpha(r)
    lam = _manifest_number(r, "shadow_price")
    if not math.isfinite(lam):
        return False, f"the manifest's shadow price is not finite ({lam})"
    mus = _segment_prices(r)
    problems = _price_sign_problems(r, lam, mus)
    # lambda_i = lambda + sum over the user's segments of (mu_max - mu_min); a label joins the
    # names of overlapping segments with "+", as the segment shares check reads it.
    labels = a[N.SEGMENT].drop_nulls().unique().to_list()
    net = {name: mu_max - mu_min for name, (mu_min, mu_max) in mus.items()}
    offset = {label: math.fsum(net.get(s, 0.0) for s in label.split("+")) for label in labels}
    shift = (
        a[N.SEGMENT]
        .replace_strict(offset, default=0.0, return_dtype=pl.Float64)
        .fill_null(0.0)
        .to_numpy()
        if offset
        else np.zeros(a.height)
    )
    prices = lam + shift
    w = a[N.WEIGHT].to_numpy()
    bad_w = ~(np.isfinite(w) & (w > 0.0))
    if bad_w.any():
        problems.append(
            f"{int(bad_w.sum()):,} weight(s) not finite and positive, "
            + _examples(a.filter(pl.Series(bad_w)).select(N.USER_ID, N.WEIGHT))
        )
    v = a[N.VOUCHER_CENTS].to_numpy() / 100.0
    lo = a[LOWER_CENTS].to_numpy() / 100.0
    hi = a[UPPER_CENTS].to_numpy() / 100.0
    star = best_response_usd(w, lo, hi, alpha, prices, v)
    dist = np.abs(v - star)
    far = ~(dist <= BEST_RESPONSE_TOL_USD)
    if far.any():
        order = np.argsort(-np.where(far, np.nan_to_num(dist, nan=np.inf), -1.0), kind="stable")
        worst = order[: int(far.sum())]
        rows = (
            a[worst]
            .select(N.USER_ID, N.VOUCHER_CENTS, N.WEIGHT)
            .with_columns(pl.Series("best_response_usd", np.round(star[worst], 6)))
        )
        problems.append(
            f"{int(far.sum()):,} voucher(s) more than one cent from their best response at the "
            f"manifest's prices (alpha {alpha:g}, shadow price {lam:.6g}), up to "
            f"{float(np.nanmax(np.where(far, dist, 0.0))):.4f} USD, worst first: " + _examples(rows)
        )
    if problems:
        return False, "; ".join(problems)
    gap = float(dist.max(initial=0.0))
    return True, (
        f"every voucher within {gap:.4f} USD of its best response at the manifest's prices "
        f"(alpha {alpha:g}, shadow price {lam:.6g}, {len(mus)} segment price(s))"
    )


def objective_terms(weights: np.ndarray, vouchers: np.ndarray, alpha: float) -> np.ndarray:
    r"""Per-user :math:`w_i u_\alpha(v_i)`: :math:`u = \log v` for :math:`\alpha = 1`, else
    :math:`v^{1-\alpha}/(1-\alpha)`.

    Parameters
    ----------
    weights, vouchers
        Per-user weight and voucher in USD.
    alpha
        The objective's :math:`\alpha \ge 0`.

    Returns
    -------
    numpy.ndarray
        The terms (``-inf`` for a zero voucher when :math:`\alpha \ge 1`).
    """
    w = np.asarray(weights, dtype=np.float64)
    v = np.asarray(vouchers, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if alpha == 1.0:
            return w * np.log(v)
        return w * (np.power(v, 1.0 - alpha) / (1.0 - alpha))


def objective_tolerance(terms: np.ndarray) -> float:
    r"""How far a float evaluation of :math:`\sum_i t_i` may honestly lie from the exact sum.

    .. math::

        \tau = (10^{-12} + 2 n \epsilon) \sum_i |t_i|

    allocate stores ``objective_rounded`` as a float dot product, whose summation error is at
    most :math:`n \epsilon/2 \sum_i |t_i|` in any order; each term carries a few ulps of
    :math:`\epsilon` from the utility (at most about :math:`|(1-\alpha)\log v|\,\epsilon`, under
    :math:`10^{-13}` relative for the shipped alphas), covered by the :math:`10^{-12}` floor.
    """
    t = np.asarray(terms, dtype=np.float64)
    return (OBJECTIVE_RTOL + 2.0 * t.shape[0] * _EPS) * math.fsum(np.abs(t).tolist())


def _check_objective(r: _RunFiles) -> Result:
    r"""The manifest's objective is that of the files.

    A cent moved between two users changes the objective by about
    :math:`0.01\,(w_j v_j^{-\alpha} - w_i v_i^{-\alpha})`, first order in how far apart their
    marginal utilities are. Between two interior users of an optimal run both equal the price,
    so the change is second order and, in a large run, below float noise: there the optimality
    check is what limits such a move (each voucher stays within a cent of its best response).
    """
    a = r.allocations
    alpha = _alpha(r)
    stated = _manifest_number(r, "objective_rounded")
    terms = objective_terms(a[N.WEIGHT].to_numpy(), a[N.VOUCHER_CENTS].to_numpy() / 100.0, alpha)
    if not np.isfinite(terms).all():
        return False, (
            f"the objective of the files is not finite ({int((~np.isfinite(terms)).sum()):,} "
            "term(s): a zero voucher with alpha >= 1, or a weight that is not a number)"
        )
    actual = math.fsum(terms.tolist())
    tol = objective_tolerance(terms)
    if not abs(actual - stated) <= tol:
        return False, (
            f"manifest objective_rounded {stated!r} but the files give {actual!r} "
            f"(difference {actual - stated:.6g}, tolerance {tol:.3g})"
        )
    return True, (
        f"manifest objective_rounded {stated:.12g} == the files' to {tol:.3g} "
        f"(difference {actual - stated:.3g})"
    )


CHECKS: tuple[tuple[str, Callable[[_RunFiles], Result]], ...] = (
    ("manifest", _check_manifest),
    ("allocations file", _check_allocations_file),
    ("excluded file", _check_excluded_file),
    ("payouts file", _check_payouts_file),
    ("budget", _check_budget),
    ("paid", _check_paid),
    ("unspent", _check_unspent),
    ("within bounds", _check_within_bounds),
    ("bounds", _check_bounds),
    ("voucher_usd", _check_voucher_usd),
    ("bound labels", _check_bound_labels),
    ("segment shares", _check_segment_shares),
    ("unique allocations", _check_unique_allocations),
    ("unique exclusions", _check_unique_exclusions),
    ("allocated or excluded", _check_disjoint),
    ("exclusion reasons", _check_reasons),
    ("liquidated users", _check_liquidated),
    ("payout rows", _check_payout_rows),
    ("payout amounts", _check_payout_amounts),
    ("payout keys", _check_payout_keys),
    ("idempotency keys", _check_idempotency_keys),
    ("payout batches", _check_payout_batches),
    ("payout schedule", _check_payout_schedule),
    ("input hashes", _check_input_hashes),
    ("output hashes", _check_output_hashes),
    ("counts", _check_counts),
    ("optimality", _check_optimality),
    ("objective", _check_objective),
)
#: Names of every check, in the order they are reported.
CHECK_NAMES = tuple(name for name, _ in CHECKS)


def check_run_dir(path: str | Path) -> CheckReport:
    """Run every finance check on a run directory and report each one; never raises for bad files.

    Parameters
    ----------
    path
        A run directory written by :func:`allocator.runs.rundir.write_run_dir`.

    Returns
    -------
    CheckReport
        One :class:`Check` per entry of :data:`CHECK_NAMES`, in that order.

    Raises
    ------
    InputError
        ``path`` does not exist or is not a directory: nothing to check, so a report of every
        check failing would only hide the mistaken path.
    """
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise InputError(
            f"{path}: {what}; expected a run directory holding {', '.join(OUTPUT_FILES)} and "
            f"{N.MANIFEST_FILE} (as written by allocate --out).",
        )
    files = _RunFiles(path)
    results = []
    for name, fn in CHECKS:
        try:
            ok, detail = fn(files)
        except _Unavailable as exc:
            ok, detail = False, f"not checked: {exc}"
        except Exception as exc:  # a malformed file must be reported, never a traceback
            ok, detail = False, f"could not check ({type(exc).__name__}: {exc})"
        results.append(Check(name=name, ok=bool(ok), detail=detail))
    return CheckReport(path=str(path), checks=tuple(results))
