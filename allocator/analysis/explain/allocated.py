r"""How a paid user's amount follows: the weight by factor against the median-weight user, the
phase-in band, the bounds in whole cents and the closed form :math:`(w_i/\lambda_i)^{1/\alpha}`
clipped to them (steps 3 and 4 of :mod:`allocator.analysis.explain`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.checks.rules import rule_path
from allocator.analysis.explain.facts import LoadedRun, changed, row_of
from allocator.analysis.explain.results import AmountDerivation, Factor, PhaseIn, WeightBreakdown
from allocator.analysis.explain.wording import (
    above,
    cents_text,
    num,
    ratio_text,
    threshold_text,
    usd,
)
from allocator.errors import InputError
from allocator.kernel.money import CENTS_PER_USD, bounds_in_cents, cents_to_usd, format_usd
from allocator.settings.models import CLAIMS_RULES, EligibilityRules, Scenario
from allocator.vouchers.eligibility import RuleDecision, has_phase_in, loss_band, ratio_band
from allocator.vouchers.weights import (
    FACTOR_COVERAGE,
    FACTOR_LOSS,
    FACTOR_PHASE,
    FACTOR_RATIO,
    FEATURE_FACTOR_PREFIX,
    LOG_WEIGHT,
    weight_factors,
)

__all__ = [
    "CENT_USD",
    "SLACK",
    "WEIGHT_RTOL",
    "amount_derivation",
    "phase_in_of",
    "weight_breakdown",
]

#: Relative tolerance of the recomputed weight against ``allocations.parquet``.
WEIGHT_RTOL = 1e-9
#: The closed form, clipped, must be within this of the paid amount (one cent, plus float slack).
CENT_USD = 1 / CENTS_PER_USD
SLACK = 1e-9


def _phase_formula(
    loss: float | None, ratio: float | None, rules: EligibilityRules, decision: RuleDecision
) -> str:
    """Each band's part of the phase factor as a formula with the user's numbers (a part is 1
    past its threshold, or without that band); the factors are eligibility's (``decision``)."""
    parts: list[str] = []
    band = loss_band(rules)
    if band.low is not None:
        low, top = band.low, band.high
        x = math.nan if loss is None else float(loss)
        if x >= top:
            parts.append(f"1 (loss {usd(x)} >= {num(top)} USD)")
        else:
            parts.append(f"(loss {above(x, low)} - {num(low)}) / ({num(top)} - {num(low)})")
    band = ratio_band(rules)
    if band.low is not None:
        low, top = band.low, band.high
        r = math.nan if ratio is None else float(ratio)
        lo_t, top_t = threshold_text(low), threshold_text(top)
        if r >= top:
            parts.append(f"1 (ratio {ratio_text(r)} >= {top_t})")
        else:
            parts.append(f"(ratio {above(r, low, 4)} - {lo_t}) / ({top_t} - {lo_t})")
    if not parts:
        return "1 (no phase-in band)"
    return " x ".join(parts) + f" = {decision.phase_factor:.4g}"


def _factor_formula(
    column: str, scenario: Scenario, feats: dict[str, Any], decision: RuleDecision
) -> tuple[str, str]:
    """The factor's display name and its formula with the user's numbers."""
    o = scenario.objective
    loss = feats.get(N.LOSS_USD)
    if column == FACTOR_LOSS:
        text = (
            f"{num(o.loss_exponent)} x log(loss {usd(loss)})"
            if o.loss_exponent
            else "off (loss_exponent = 0)"
        )
        return "loss", text
    if column == FACTOR_RATIO:
        r = feats.get(N.LOSS_RATIO)
        text = (
            f"{num(o.ratio_exponent)} x log(min(ratio {ratio_text(r)}, ratio_cap {num(o.ratio_cap)}))"
            if o.ratio_exponent
            else "off (ratio_exponent = 0)"
        )
        return "ratio", text
    if column == FACTOR_COVERAGE:
        if o.form == "coverage" and o.alpha != 1:
            return "coverage", f"(alpha {num(o.alpha)} - 1) x log(loss {usd(loss)}) (coverage form)"
        return "coverage", "off (voucher form, or alpha = 1)"
    if column == FACTOR_PHASE:
        phi = feats.get(N.PHASE_FACTOR)
        text = _phase_formula(loss, feats.get(N.LOSS_RATIO), scenario.eligibility, decision)
        return "phase", f"log(phase {num(float(phi)) if phi is not None else '-'}); phase = {text}"
    if not column.startswith(FEATURE_FACTOR_PREFIX):
        # a factor this version does not know: shown under its column name, not as a feature
        return column, "-"
    name = column[len(FEATURE_FACTOR_PREFIX) :]
    coef = dict(o.features).get(name, 0.0)
    return f"feature:{name}", f"{num(coef)} x {name} ({feats.get(name)})"


def claim_of(alloc: Mapping[str, Any], run: LoadedRun) -> float:
    """A claims rule's claim for the user (the loss; 1 for max-min of the vouchers), checked
    against the run's ``weight`` column, which holds it."""
    objective = run.scenario.objective
    loss = float(alloc[N.LOSS_USD])
    claim = 1.0 if objective.rule == "max_min" and objective.form == "voucher" else loss
    written = float(alloc[N.WEIGHT])
    if not math.isclose(claim, written, rel_tol=WEIGHT_RTOL):
        raise changed(
            f"user {alloc[N.USER_ID]}'s claim under the {objective.rule} rule is {claim!r}, but "
            f"{N.ALLOCATIONS_FILE} has the weight {written!r}",
            run,
        )
    return claim


def weight_breakdown(
    features: pl.DataFrame,
    uid: int,
    ref: int,
    run: LoadedRun,
    run_weight: float,
    ref_weight: float,
    decision: RuleDecision,
) -> WeightBreakdown:
    """The user's weight by factor against the reference user ``ref`` (module docstring, step
    3), checked against the run's ``weight``."""
    factors = weight_factors(features, run.scenario.objective)
    mine = row_of(factors, uid)
    theirs = row_of(factors, ref)
    assert mine is not None and theirs is not None
    weight = math.exp(mine[LOG_WEIGHT])
    if not math.isclose(weight, run_weight, rel_tol=WEIGHT_RTOL):
        raise changed(
            f"user {uid}'s weight recomputed from the inputs is {weight!r}, but "
            f"{N.ALLOCATIONS_FILE} has {run_weight!r}",
            run,
        )
    columns = [c for c in factors.columns if c not in (N.USER_ID, LOG_WEIGHT)]
    gaps = {c: mine[c] - theirs[c] for c in columns}
    total = sum(abs(d) for d in gaps.values())
    feats = row_of(features, uid) or {}
    out = []
    for c in columns:
        name, formula = _factor_formula(c, run.scenario, feats, decision)
        out.append(
            Factor(
                name=name,
                formula=formula,
                log_contribution=float(mine[c]),
                multiplier=math.exp(mine[c]),
                reference_log_contribution=float(theirs[c]),
                relative_multiplier=math.exp(gaps[c]),
                share=gaps[c] / total if total > 0 else 0.0,
            )
        )
    return WeightBreakdown(
        weight=weight,
        log_weight=float(mine[LOG_WEIGHT]),
        reference_user=ref,
        reference_weight=ref_weight,
        relative_weight=math.exp(mine[LOG_WEIGHT] - theirs[LOG_WEIGHT]),
        factors=tuple(out),
    )


@dataclass(frozen=True)
class _Bounds:
    """A paid user's bounds in whole cents, and how the upper one came about."""

    lower_cents: int
    upper_cents: int
    source: str  # "cap", "phased_cap" or "coverage_cap"
    formula: str
    scaled_cap_cents: int  # floor to the cent of cap x phase factor (the cap without a band)
    raised_to_one_cent: bool
    cap_raised_to_floor: bool
    #: "floor", or from round 2 on "held" (raised to what the user held: no claw-back) or
    #: "forfeited" (held there for good after an expired voucher)
    lower_source: str = "floor"


def _floor_cents(amount_usd: float) -> int:
    """An upper bound rounded down to the cent (:func:`allocator.kernel.money.bounds_in_cents`)."""
    return int(bounds_in_cents(np.array([0.0]), np.array([amount_usd]))[1][0])


def _bounds(alloc: Mapping[str, Any], run: LoadedRun) -> _Bounds:
    """The user's bounds in whole cents, rebuilt from the scenario, the loss and the phase factor
    (module docstring, step 4) and checked against ``lower_cents`` / ``upper_cents``."""
    b = run.scenario.bounds
    uid = int(alloc[N.USER_ID])
    loss = float(alloc[N.LOSS_USD])
    phase_raw = alloc.get(N.PHASE_FACTOR)
    phase = 1.0 if phase_raw is None else float(phase_raw)
    (floor_c,), (cap_c,) = bounds_in_cents(
        np.array([float(b.floor_usd)]), np.array([float(b.cap_usd)])
    )
    floor_c, cap_c = int(floor_c), int(cap_c)
    kappa = None if b.coverage_cap is None else float(b.coverage_cap)
    if run.scenario.objective.rule in CLAIMS_RULES:  # award <= claim: coverage cap at most 1
        kappa = 1.0 if kappa is None else min(kappa, 1.0)
    cov_c = None if kappa is None else _floor_cents(kappa * loss)
    plain_c = cap_c if cov_c is None else min(cap_c, cov_c)
    scaled_c = _floor_cents(float(b.cap_usd) * phase) if phase < 1.0 else cap_c
    upper_c = min(plain_c, scaled_c)
    # weights.phase_bounds: the floor holds in the band (a phased cap below it is raised to it),
    # and with a zero floor an eligible user is still paid: a phased cap is at least one cent
    least = min(plain_c, max(floor_c, 1))
    raised_floor = upper_c < least and floor_c >= 1
    raised = upper_c < least and floor_c < 1
    upper_c = max(upper_c, least)
    lower_c = min(floor_c, upper_c)
    source = (
        "coverage_cap"
        if cov_c is not None and cov_c < min(cap_c, scaled_c)
        else "phased_cap"
        if phase < 1.0
        else "cap"
    )
    cap_text = f"cap {cents_text(cap_c)}"
    if phase < 1.0:
        cap_text = f"cap {cents_text(cap_c)} x phase {num(phase)} = {format_usd(float(b.cap_usd) * phase, decimals=4)}"
    if cov_c is None and phase == 1.0:
        formula = cap_text
    else:
        inner = cap_text
        if kappa is not None:
            cov = format_usd(kappa * loss, decimals=4)
            inner += f", coverage_cap {num(kappa)} x loss {usd(loss)} = {cov}"
        formula = f"floor to the cent of min({inner}) = {cents_text(min(plain_c, scaled_c))}"
        if raised:
            formula += ", raised to one cent (an eligible user is paid)"
        if raised_floor:
            formula += f", raised to the floor {cents_text(floor_c)} (nobody is paid less)"
    lower_source = "floor"
    held = alloc.get(N.PAID_BEFORE_CENTS)
    if held is not None and int(held) > 0:  # a later round: no claw-back
        vouchers = run.run.vouchers
        gone = vouchers is not None and bool(
            vouchers.filter(
                (pl.col(N.USER_ID) == uid) & (pl.col(N.STATUS) == N.VOUCHER_EXPIRED)
            ).height
        )
        if gone:
            lower_c = upper_c = int(held)
            lower_source = "forfeited"
            formula += f"; held at the {cents_text(int(held))} the user holds (forfeited)"
        elif int(held) > lower_c:
            lower_c = int(held)
            lower_source = "held"
    for what, mine, theirs in (
        ("upper", upper_c, alloc.get("upper_cents")),
        ("lower", lower_c, alloc.get("lower_cents")),
    ):
        if theirs is not None and int(theirs) != mine:
            raise changed(
                f"user {uid}'s {what} bound from the scenario and the loss is {mine} cents, but "
                f"{N.ALLOCATIONS_FILE} has {theirs}",
                run,
            )
    return _Bounds(
        lower_cents=lower_c,
        upper_cents=upper_c,
        source=source,
        formula=formula,
        scaled_cap_cents=scaled_c,
        raised_to_one_cent=raised,
        cap_raised_to_floor=raised_floor,
        lower_source=lower_source,
    )


def phase_in_of(
    alloc: Mapping[str, Any], feats: Mapping[str, Any], run: LoadedRun, decision: RuleDecision
) -> PhaseIn | None:
    """The user against the run's bands (``None`` when the rules have none): the factors are
    eligibility's (``decision``), checked against the run's ``phase_factor``."""
    rules = run.scenario.eligibility
    if not has_phase_in(rules):
        return None
    factor = alloc.get(N.PHASE_FACTOR)
    if factor is None:
        raise changed(
            f"the run's rules have a phase-in band but {N.ALLOCATIONS_FILE} has no "
            f"{N.PHASE_FACTOR} for user {alloc[N.USER_ID]}",
            run,
        )
    loss, ratio = feats.get(N.LOSS_USD), feats.get(N.LOSS_RATIO)
    text = _phase_formula(loss, ratio, rules, decision)
    loss_f, ratio_f = decision.loss_factor, decision.ratio_factor
    if not math.isclose(decision.phase_factor, float(factor), rel_tol=1e-12, abs_tol=1e-15):
        raise changed(
            f"user {alloc[N.USER_ID]}'s phase factor from the loss and ratio is "
            f"{decision.phase_factor!r}, but {N.ALLOCATIONS_FILE} has {factor!r}",
            run,
        )
    bounds = _bounds(alloc, run)
    bands = loss_band(rules), ratio_band(rules)
    loss_range, ratio_range = ((b.low, b.high) if b.low is not None else None for b in bands)
    return PhaseIn(
        factor=float(factor),
        loss_band_usd=loss_range,
        ratio_band=ratio_range,
        loss_factor=loss_f,
        ratio_factor=ratio_f,
        in_loss_band=loss_f < 1.0,
        in_ratio_band=ratio_f < 1.0,
        formula=text,
        cap_usd=float(run.scenario.bounds.cap_usd),
        coverage_cap=(
            None
            if run.scenario.bounds.coverage_cap is None
            else float(run.scenario.bounds.coverage_cap)
        ),
        scaled_cap_cents=bounds.scaled_cap_cents,
        upper_cents=bounds.upper_cents,
        raised_to_one_cent=bounds.raised_to_one_cent,
        cap_raised_to_floor=bounds.cap_raised_to_floor,
    )


def amount_derivation(alloc: dict[str, Any], weight: float, run: LoadedRun) -> AmountDerivation:
    """How the paid amount follows from the weight, the price and the bounds (module docstring,
    step 4)."""
    s = run.scenario
    man = run.run.manifest
    lam = man.get("shadow_price")
    if not isinstance(lam, (int, float)):
        raise InputError(f"{run.run.path / N.MANIFEST_FILE}: no numeric 'shadow_price'.")
    seg_label = alloc.get(N.SEGMENT)
    segments = tuple(seg_label.split("+")) if seg_label else ()
    prices = man.get("segment_prices") or {}
    adjust = 0.0
    for name in segments:
        mu = prices.get(name, (0.0, 0.0))
        adjust += float(mu[1]) - float(mu[0])
    price = float(lam) + adjust
    alpha = float(s.objective.alpha)
    bounds = _bounds(alloc, run)
    lower, upper = cents_to_usd(bounds.lower_cents), cents_to_usd(bounds.upper_cents)
    upper_source = bounds.source

    cents = int(alloc[N.VOUCHER_CENTS])
    bound = str(alloc[N.BOUND])
    binding = {N.BOUND_FLOOR: "floor", N.BOUND_CAP: upper_source}.get(bound, "interior")
    if bounds.cap_raised_to_floor:
        # the phased cap was raised to the floor: the floor is what pins the voucher
        binding = "floor"
    if bound == N.BOUND_HELD:
        # a later round: the user sits on what they already hold (no claw-back)
        binding = "held"
    closed: float | None = None
    continuous: float | None = None
    diff: float | None = None
    ok: bool | None = None
    rule_formula: str | None = None
    if s.objective.rule != "alpha_fair":
        closed, rule_formula = _rule_point(alloc, run, lower, upper)
        continuous = min(max(closed, lower), upper)
        diff = cents_to_usd(cents) - continuous
        ok = abs(diff) <= CENT_USD + SLACK * max(1.0, continuous)
    elif alpha > 0:
        if price <= 0:
            unclipped = math.inf  # the budget does not bind: everyone at the cap
        else:
            x = (math.log(weight) - math.log(price)) / alpha
            unclipped = math.exp(x) if x < 709 else math.inf
        clipped = min(max(unclipped, lower), upper)
        closed, continuous = unclipped, clipped
        diff = cents_to_usd(cents) - clipped
        ok = abs(diff) <= CENT_USD + SLACK * max(1.0, clipped)
    rounded = man.get("certificate_rounded")
    run_max = rounded.get("best_response_max_usd") if isinstance(rounded, Mapping) else None
    return AmountDerivation(
        alpha=alpha,
        shadow_price=float(lam),
        segments=segments,
        segment_adjustment=adjust,
        effective_price=price,
        closed_form_usd=closed,
        lower_usd=lower,
        upper_usd=upper,
        upper_source=upper_source,
        lower_cents=bounds.lower_cents,
        upper_cents=bounds.upper_cents,
        upper_formula=bounds.formula,
        continuous_usd=continuous,
        voucher_cents=cents,
        bound=bound,
        binding=binding,
        difference_usd=diff,
        reproduces_within_cent=ok,
        run_max_difference_usd=None if not isinstance(run_max, (int, float)) else float(run_max),
        rule=s.objective.rule,
        rule_formula=rule_formula,
        lower_source=bounds.lower_source,
    )


def _rule_point(
    alloc: Mapping[str, Any], run: LoadedRun, lower: float, upper: float
) -> tuple[float, str]:
    """The user's point on the rule's path at the run's multiplier (before the bounds), and how
    it is computed, in words: the rule written out per user by
    :func:`allocator.analysis.checks.rules.rule_path`, in the stage the run's manifest states."""
    objective = run.scenario.objective
    section = run.run.manifest.get("rule") or {}
    t, stage = section.get("multiplier"), section.get("stage")
    if not isinstance(t, (int, float)) or not isinstance(stage, int):
        raise InputError(f"{run.run.path / N.MANIFEST_FILE}: no numeric 'rule.multiplier'.")
    loss = float(alloc[N.LOSS_USD])
    claim = 1.0 if objective.rule == "max_min" and objective.form == "voucher" else loss
    parameter = objective.base_usd if objective.base_usd is not None else objective.threshold_usd
    a, b, lo, hi = rule_path(
        objective.rule,
        np.array([claim]),
        np.array([lower]),
        np.array([upper]),
        0.0,
        parameter,
        stage=stage or None,
    )
    point = float(a[0] + b[0] * float(t))
    # the stage's own bounds (a half-claim, a base) clip first, then the user's bounds
    point = min(max(point, float(lo[0])), float(hi[0]))
    stage_text = f", stage {stage}" if stage else ""
    formula = (
        f"{objective.rule}{stage_text}: clip({format_usd(float(a[0]), decimals=4)} + "
        f"{float(b[0]):.6g} x multiplier {float(t):.6g}, {format_usd(float(lo[0]), decimals=2)}, "
        f"{format_usd(float(hi[0]), decimals=2)}) = {format_usd(point, decimals=4)} USD"
    )
    return point, formula
