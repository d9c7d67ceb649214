r"""Money and bounds: the budget, what is paid and left, every voucher within its bounds, the bounds
recomputed from the scenario's knobs, ``voucher_usd``, the bound labels and the segment shares.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.checks.runfiles import Result, RunFiles, Unavailable, examples
from allocator.kernel import phase
from allocator.kernel.money import CENTS_PER_USD, format_cents
from allocator.runs.contract import LOWER_CENTS, UPPER_CENTS

#: Cents: a float within this distance of a whole cent is that cent (the project's convention,
#: :data:`allocator.kernel.rounding.CENT_TOL`).
CENT_TOLERANCE = 1e-6


#: Largest cap in cents (:data:`allocator.kernel.rounding.MAX_CENTS`); an infinite cap is read as this.
MAX_CENTS = 10**12


_EPS = float(np.finfo(np.float64).eps)


#: Rules whose awards are not capped at the claim (the others are claims rules).
CAP_FREE_RULES = ("alpha_fair", "max_min")


def _usd_cents(r: RunFiles, key: str, default: float | None = None) -> set[int]:
    """``scenario.budget.<key>`` in cents: both whole cents next to the decimal it reads as."""
    budget = r.section("scenario", "budget")
    total = budget.get(key, default) if isinstance(budget, dict) else None
    if not isinstance(total, (int, float)) or isinstance(total, bool) or not math.isfinite(total):
        raise Unavailable(f"{N.MANIFEST_FILE} scenario.budget.{key} is not a number: {total!r}")
    exact = Decimal(repr(total)) * 100  # repr is the shortest decimal that reads back as the float
    return {
        int(exact.to_integral_value(rounding="ROUND_FLOOR")),
        int(exact.to_integral_value(rounding="ROUND_CEILING")),
    }


def round_of(r: RunFiles) -> int:
    """The run's round (``round.number``; 1 for a run without a ``round`` section)."""
    section = r.manifest.get("round")
    if section is None:
        return 1
    number = section.get("number") if isinstance(section, dict) else None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise Unavailable(f"{N.MANIFEST_FILE} round.number is not a whole number >= 1: {number!r}")
    return number


def _scenario_budget_cents(r: RunFiles) -> set[int]:
    r"""What the run must pay in total over its rounds, :math:`T_k = B - R\,[k < k_R]`: the
    budget, less the reserve (``budget.reserve_usd``, 0 in runs that predate it) before the
    round that releases it (``rounds.reserve_release_round``, 2 by default)."""
    totals = _usd_cents(r, "total_usd")
    rounds = r.manifest.get("scenario", {}).get("rounds") or {}
    release = rounds.get("reserve_release_round", 2) if isinstance(rounds, dict) else 2
    if not isinstance(release, int) or isinstance(release, bool):
        raise Unavailable(f"{N.MANIFEST_FILE} scenario.rounds.reserve_release_round: {release!r}")
    if round_of(r) >= release:
        return totals
    reserves = _usd_cents(r, "reserve_usd", 0.0)
    return {t - q for t in totals for q in reserves}


def check_budget(r: RunFiles) -> Result:
    budget = r.money("budget_cents")
    exhaust = r.money("exhaust")
    problems = []
    allowed = _scenario_budget_cents(r)
    if budget not in allowed:
        total = r.section("scenario", "budget", "total_usd")
        reserve = r.section("scenario", "budget").get("reserve_usd", 0.0)
        held = f" less the reserve {reserve} USD in round {round_of(r)}" if reserve else ""
        problems.append(
            f"manifest budget {format_cents(budget)} USD is not the scenario's {total} USD{held}"
        )
    scen_exhaust = r.section("scenario", "budget", "exhaust")
    if scen_exhaust != exhaust:
        problems.append(f"money.exhaust={exhaust} but scenario budget.exhaust={scen_exhaust}")
    paid = r.paid_cents
    if exhaust and paid != budget:
        problems.append(
            f"paid {format_cents(paid)} USD != budget {format_cents(budget)} USD (difference {paid - budget:+,} cents)"
        )
    if not exhaust and paid > budget:
        problems.append(
            f"paid {format_cents(paid)} USD exceeds budget {format_cents(budget)} USD by {paid - budget:,} cents"
        )
    if problems:
        return False, "; ".join(problems)
    rel = "==" if paid == budget else "<="
    return (
        True,
        f"paid {format_cents(paid)} {rel} budget {format_cents(budget)} USD ({'exhaust' if exhaust else 'cap only'})",
    )


def check_paid(r: RunFiles) -> Result:
    stated = r.money("paid_cents")
    paid = r.paid_cents
    if stated != paid:
        return (
            False,
            f"manifest paid_cents {stated:,} but the vouchers add up to {paid:,} "
            f"(difference {stated - paid:+,})",
        )
    return True, f"manifest paid_cents {stated:,} == sum of vouchers"


def check_unspent(r: RunFiles) -> Result:
    budget, unspent = r.money("budget_cents"), r.money("unspent_cents")
    paid = r.paid_cents
    if unspent != budget - paid:
        return False, f"manifest unspent_cents {unspent:,} but budget - paid = {budget - paid:,}"
    return True, f"unspent {format_cents(unspent)} USD == budget - paid"


def check_within_bounds(r: RunFiles) -> Result:
    a = r.allocations
    v, lo, hi = pl.col(N.VOUCHER_CENTS), pl.col(LOWER_CENTS), pl.col(UPPER_CENTS)
    bad = a.filter((v < lo) | (v > hi)).select(N.USER_ID, N.VOUCHER_CENTS, LOWER_CENTS, UPPER_CENTS)
    if bad.height:
        below = a.filter(v < lo).height
        return False, (
            f"{bad.height:,} voucher(s) outside their bounds "
            f"({below:,} below, {bad.height - below:,} above), " + examples(bad)
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
    user's phase factor :math:`\varphi_i`, but never below the floor (one cent with a zero floor).
    A claims rule caps every award at the claim: its coverage cap is at most 1.
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
        # the floor holds in the band: a phased cap below it is raised to it (to one cent with
        # a zero floor), never above the unphased cap
        unphased = np.full(loss.shape[0], float(cap_usd))
        if coverage_cap is not None:
            unphased = np.minimum(unphased, float(coverage_cap) * loss)
        unphased = np.minimum(unphased * 100.0, float(MAX_CENTS))
        unphased = np.floor(unphased + (CENT_TOLERANCE + 4.0 * _EPS * np.abs(unphased)))
        hi = np.maximum(hi, np.minimum(unphased, np.maximum(lo, 1.0)))
        lo = np.minimum(lo, hi)
    return lo, hi


def _phase_factor(r: RunFiles) -> np.ndarray | None:
    """Each user's phase-in factor recomputed from loss, loss ratio and the manifest's bands (the
    one ramp, :func:`allocator.kernel.phase.phase_factor`), or None without a band (the file's
    ``phase_factor`` column must then match it)."""
    rules = r.section("scenario", "eligibility")
    p_loss, p_ratio = rules.get("phase_in_loss_usd"), rules.get("phase_in_ratio")
    if p_loss is None and p_ratio is None:
        return None
    a = r.allocations
    loss, ratio = a[N.LOSS_USD].to_numpy(), a[N.LOSS_RATIO].to_numpy()
    loss_band = phase.Band(p_loss, float(rules["min_loss_usd"]))
    ratio_band = phase.Band(p_ratio, float(rules["min_loss_ratio"]))
    if not r.later_round:
        return phase.phase_factor(loss, ratio, loss_band, ratio_band)
    # a reinstated user's waived loss or ratio rule no longer scales them (appeals.parquet's
    # waived column, itself recomputed by the appeals check)
    waived = a.select(N.USER_ID).join(r.waived(), on=N.USER_ID, how="left")[N.WAIVED]
    rules_waived = waived.fill_null("").str.split("+")
    no_loss = rules_waived.list.contains(N.REASON_BELOW_MIN_LOSS).to_numpy()
    no_ratio = rules_waived.list.contains(N.REASON_BELOW_LOSS_RATIO).to_numpy()
    f_loss = np.where(no_loss, 1.0, phase.band_factor(loss, loss_band))
    f_ratio = np.where(no_ratio, 1.0, phase.band_factor(ratio, ratio_band))
    return np.asarray(f_loss * f_ratio, dtype=np.float64)


def _optional_knob(r: RunFiles, key: str) -> float | None:
    """``scenario.bounds.<key>`` as a float, ``None`` when the manifest holds null."""
    if r.section("scenario", "bounds", key) is None:
        return None
    return _knob(r, key)


def _knob(r: RunFiles, key: str) -> float:
    """``scenario.bounds.<key>`` as a float (an infinite cap included)."""
    value = r.section("scenario", "bounds", key)
    # The manifest writes an infinite cap as the string "inf" (strict JSON has no Infinity).
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise Unavailable(f"{N.MANIFEST_FILE} scenario.bounds.{key} is not a number: {value!r}")
    return float(value)


def check_bounds(r: RunFiles) -> Result:
    floor, cap = _knob(r, "floor_usd"), _knob(r, "cap_usd")
    cover = _optional_knob(r, "coverage_cap")
    if r.section("scenario", "objective").get("rule", "alpha_fair") not in CAP_FREE_RULES:
        cover = 1.0 if cover is None else min(cover, 1.0)  # award <= claim (the loss)
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
    if r.later_round:
        # no claw-back: the lower bound is raised to what the user holds, and a user who
        # forfeited a voucher is held there
        held = a[N.PAID_BEFORE_CENTS].to_numpy().astype(np.float64)
        pinned = a[N.USER_ID].is_in(r.forfeited().implode()).to_numpy()
        exp_lo = np.where(pinned, held, np.maximum(exp_lo, held))
        exp_hi = np.where(pinned, held, exp_hi)
    bad_lo = a[LOWER_CENTS].to_numpy() != exp_lo
    bad_hi = a[UPPER_CENTS].to_numpy() != exp_hi
    bad = bad_lo | bad_hi
    knobs = f"floor {floor:g}, cap {cap:g}, coverage_cap {cover if cover is None else f'{cover:g}'}"
    if r.later_round:
        knobs += ", lower bounds raised to what users hold"
    if bad.any():
        rows = a.filter(pl.Series(bad)).select(N.USER_ID, N.LOSS_USD, LOWER_CENTS, UPPER_CENTS)
        rows = rows.with_columns(
            pl.Series("expected_lower", exp_lo[bad].astype(np.int64)),
            pl.Series("expected_upper", exp_hi[bad].astype(np.int64)),
        )
        return False, (
            f"{int(bad.sum()):,} user(s) with bounds that are not the scenario's ({knobs}): "
            f"{int(bad_lo.sum()):,} lower, {int(bad_hi.sum()):,} upper, " + examples(rows)
        )
    return True, f"every user's bounds are the scenario's ({knobs}) in cents"


def check_voucher_usd(r: RunFiles) -> Result:
    a = r.allocations
    # numpy divides exactly (IEEE); Polars multiplies by the reciprocal and is off by an ulp at
    # about one value in eight, so the expression is not the reference here.
    exact = a[N.VOUCHER_CENTS].to_numpy() / CENTS_PER_USD
    bad = a.filter(pl.Series(a[N.VOUCHER_USD].to_numpy() != exact))
    if bad.height:
        return (
            False,
            f"{bad.height:,} row(s) with voucher_usd != voucher_cents / 100, "
            + examples(bad.select(N.USER_ID, N.VOUCHER_CENTS, N.VOUCHER_USD)),
        )
    return True, "voucher_usd == voucher_cents / 100 on every row"


def check_bound_labels(r: RunFiles) -> Result:
    a = r.allocations
    v, lo, hi = pl.col(N.VOUCHER_CENTS), pl.col(LOWER_CENTS), pl.col(UPPER_CENTS)
    expected = (
        pl.when(v <= lo)
        .then(pl.lit(N.BOUND_FLOOR))
        .when(v >= hi)
        .then(pl.lit(N.BOUND_CAP))
        .otherwise(pl.lit(N.BOUND_INTERIOR))
    )
    if r.later_round:
        # the cap first (a user held at their cap), then a lower bound that is what the user
        # held (a forfeited user is held there, never "at the cap")
        held = pl.col(N.PAID_BEFORE_CENTS)
        pinned = pl.col(N.USER_ID).is_in(r.forfeited().implode())
        expected = (
            pl.when((v >= hi) & ~pinned)
            .then(pl.lit(N.BOUND_CAP))
            .when((v <= lo) & (lo == held) & (held > 0))
            .then(pl.lit(N.BOUND_HELD))
            .when(v <= lo)
            .then(pl.lit(N.BOUND_FLOOR))
            .otherwise(pl.lit(N.BOUND_INTERIOR))
        )
    bad = a.with_columns(expected.alias("expected")).filter(pl.col(N.BOUND) != pl.col("expected"))
    if bad.height:
        return False, f"{bad.height:,} bound label(s) disagree with the cents, " + examples(
            bad.select(N.USER_ID, N.VOUCHER_CENTS, LOWER_CENTS, UPPER_CENTS, N.BOUND, "expected")
        )
    return True, "every bound label matches the voucher's position in its bounds"


def check_segment_shares(r: RunFiles) -> Result:
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
            problems.append(
                f"segment {name!r} got {format_cents(got)} USD, below its minimum {format_cents(lo_c)}"
            )
        elif hi_c is not None and got > hi_c:
            problems.append(
                f"segment {name!r} got {format_cents(got)} USD, above its maximum {format_cents(hi_c)}"
            )
        else:
            done.append(f"{name} {format_cents(got)} USD")
    if problems:
        return False, "; ".join(problems)
    return True, "every segment within its share: " + ", ".join(done)
