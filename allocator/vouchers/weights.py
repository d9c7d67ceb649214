r"""From the eligible users' feature matrix and a scenario to an :class:`AllocationProblem`.

Weights
-------
.. math::

    \log w_i = a \log L_i + b \log \min(r_i, \bar r) + \sum_k c_k x_{ik}
               \;[+\; (\alpha - 1)\log L_i \text{ in coverage form}]

with loss :math:`L_i` (``loss_usd``), loss ratio :math:`r_i` (``loss_ratio``, +inf for users
without net assets, so capped at :math:`\bar r` = ``ratio_cap``), and feature columns
:math:`x_{ik}` (booleans as 0/1). Working in logs keeps a product of large powers finite; a
factor whose exponent or coefficient is zero contributes exactly 0 (so :math:`0^0 = 1`).

Coverage form. Maximising the utility of coverage :math:`v_i / L_i` is the voucher problem with
re-scaled weights, because for :math:`\alpha \ne 1`

.. math::

    u_\alpha(v / L) = \frac{(v/L)^{1-\alpha}}{1-\alpha} = L^{\alpha-1}\,u_\alpha(v),

and for :math:`\alpha = 1`, :math:`\log(v/L) = \log v - \log L`. Hence
:math:`\sum_i w_i u_\alpha(v_i/L_i) = \sum_i w_i L_i^{\alpha-1} u_\alpha(v_i) + \text{const}`
(the constant is :math:`-\sum_i w_i \log L_i` at :math:`\alpha = 1` and 0 otherwise), and both
problems have the same maximisers.

Bounds
------
:math:`\ell_i = \lceil f \rceil_{\text{cent}}` (``floor_usd``) and
:math:`h_i = \lfloor \min(c, \kappa L_i) \rfloor_{\text{cent}}` (``cap_usd``, ``coverage_cap``),
described by a :class:`~allocator.kernel.problem.ScalarBounds` with ``whole_cents``. The problem is
solved on the amounts that can actually be paid: with raw caps such as :math:`0.3 \times 123.45
= 37.035`, every capped user would lose a fraction of a cent in rounding and, in exhaust mode,
the interior users would have to absorb it, several cents each once capped users outnumber
them, which would break the promise that each paid voucher is within a cent of its optimum.

Phase-in band
-------------
When the eligibility rules have a phase-in band, the feature matrix carries ``phase_factor``
:math:`\phi_i \in (0, 1]` (1 for users past both thresholds) and

.. math::

    \log w_i \mathrel{+}= \log \phi_i, \qquad
    h_i = \max\big(\lfloor\min(\phi_i c, \kappa L_i)\rfloor_{\text{cent}},\;
        \min(\lceil f \rceil_{\text{cent}}, \kappa L_i)\big), \qquad
    \ell_i = \lceil f \rceil_{\text{cent}},

so a user 90% of the way through the band counts for 90% of the weight and gets at most 90% of
the cap. The floor stays for everyone: where the phased cap would fall below it (a factor below
:math:`f / c`, very near the lower end of the band) the cap is raised to the floor and the user
receives the floor, so nobody is paid a positive amount below the announced minimum. With a
zero floor the phased cap is at least one cent: an eligible user is paid. The bounds are then
no longer scalar knobs (``scalar_bounds`` is ``None``).

Rules
-----
With ``objective.rule`` other than ``alpha_fair`` the weights are what the rule divides by
(:func:`rule_weights`): a claims rule's claims are the losses, and its coverage cap is at most 1
(nobody is paid more than their claim).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, MutableMapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.errors import InfeasibleError, InputError, ScenarioError
from allocator.kernel.money import (
    CENTS_PER_USD,
    bounds_in_cents,
    budget_to_cents,
    format_cents,
    format_usd,
    whole_cent_bounds,
)
from allocator.kernel.problem import AllocationProblem, ScalarBounds, Segment
from allocator.settings.models import (
    CLAIMS_RULES,
    RULE_ALPHA_FAIR,
    RULE_MAX_MIN,
    BoundsSpec,
    ObjectiveSpec,
    Scenario,
    SegmentSpec,
    round_budget_usd,
)

__all__ = [
    "FACTOR_COVERAGE",
    "FACTOR_LOSS",
    "FACTOR_PHASE",
    "FACTOR_RATIO",
    "LOG_WEIGHT",
    "bounds_cents",
    "build_problem",
    "check_feasible_cents",
    "compute_bounds",
    "compute_weights",
    "feature_factor",
    "phase_bounds",
    "rule_weights",
    "segment_labels",
    "segment_masks",
    "weight_factors",
]

#: Columns of :func:`weight_factors`: each factor's contribution to :math:`\log w_i`.
FACTOR_LOSS = "log_w.loss"
FACTOR_RATIO = "log_w.ratio"
FACTOR_COVERAGE = "log_w.coverage"
#: Present only when the feature matrix has ``phase_factor`` (a phase-in band).
FACTOR_PHASE = "log_w.phase"
LOG_WEIGHT = "log_weight"
FEATURE_FACTOR_PREFIX = "log_w.feature."

#: Where the features come from, in messages.
_SOURCE = "the eligible feature matrix"
#: ``exp`` overflows to inf above this and underflows to 0 below its negative (about 745).
_LOG_MAX = math.log(np.finfo(np.float64).max)
_LOG_MIN = math.log(np.finfo(np.float64).tiny)


def feature_factor(name: str) -> str:
    """Column of :func:`weight_factors` holding :math:`c_k x_{ik}` for feature ``name``."""
    return f"{FEATURE_FACTOR_PREFIX}{name}"


def _user_ids(features: pl.DataFrame) -> np.ndarray:
    if N.USER_ID in features.columns:
        return features[N.USER_ID].to_numpy()
    return np.arange(features.height)


def _column(features: pl.DataFrame, name: str, *, why: str) -> np.ndarray:
    """A column as float64 (booleans 0/1), refusing missing columns, nulls and strings."""
    if name not in features.columns:
        raise InputError(f"{_SOURCE} has no column '{name}', needed for {why}.")
    col = features[name]
    if not (col.dtype.is_numeric() or col.dtype == pl.Boolean):
        raise ScenarioError(
            f"column '{name}' of {_SOURCE} is {col.dtype}, not numeric or boolean; it cannot be used "
            f"for {why}."
        )
    if col.null_count():
        row = int(np.flatnonzero(col.is_null().to_numpy())[0])
        raise InputError(
            f"{_SOURCE}: column '{name}' is empty (null) for {col.null_count()} user(s), e.g. user "
            f"{_user_ids(features)[row]} (row {row}); it is needed for {why}."
        )
    return col.cast(pl.Float64).to_numpy()


def _bad_factor(
    features: pl.DataFrame, factor: np.ndarray, raw: np.ndarray, column: str, what: str
) -> None:
    """Raise if a log-factor is not finite, naming the first such user and the column."""
    bad = ~np.isfinite(factor)
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    uid = _user_ids(features)[row]
    value = raw[row]
    message = (
        f"the weight of user {uid} is not a positive finite number: column '{column}' = {value!r} "
        f"gives {what} = {factor[row]!r} ({int(bad.sum())} user(s) affected)."
    )
    if np.isnan(value) or (column in (N.LOSS_USD, N.LOSS_RATIO) and value < 0):
        raise InputError(f"{_SOURCE}: {message}")
    raise ScenarioError(
        message,
        hint=(
            f"this factor needs a positive finite '{column}'; set its exponent or coefficient to 0, "
            f"or make the eligibility rules exclude such users (e.g. eligibility.min_loss_usd > 0)"
        ),
    )


def weight_factors(features: pl.DataFrame, spec: ObjectiveSpec) -> pl.DataFrame:
    r"""Each user's log-weight, split by factor (for per-user explanations).

    Columns: ``user_id``, :data:`FACTOR_LOSS` (:math:`a\log L_i`), :data:`FACTOR_RATIO`
    (:math:`b\log\min(r_i,\bar r)`), one :func:`feature_factor` column per feature
    (:math:`c_k x_{ik}`), :data:`FACTOR_COVERAGE` (:math:`(\alpha-1)\log L_i` in coverage form,
    else 0) and :data:`LOG_WEIGHT`, their sum. Rows follow ``features``.

    Raises
    ------
    InputError
        A needed column is missing or has nulls/NaN, or a loss is negative.
    ScenarioError
        A factor is not finite (e.g. loss 0 with a non-zero loss exponent), or the weight
        over- or underflows float64; the message names the user and the column.
    """
    n = features.height
    zeros = np.zeros(n)
    out: dict[str, np.ndarray] = {}

    needs_loss = spec.loss_exponent != 0 or (spec.form == "coverage" and spec.alpha != 1)
    loss = (
        _column(features, N.LOSS_USD, why="the loss factor of the weights") if needs_loss else zeros
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        log_loss = np.log(loss) if needs_loss else zeros

        if spec.loss_exponent != 0:
            out[FACTOR_LOSS] = spec.loss_exponent * log_loss
            _bad_factor(
                features, out[FACTOR_LOSS], loss, N.LOSS_USD, f"{spec.loss_exponent:g} * log(loss)"
            )
        else:
            out[FACTOR_LOSS] = zeros

        if spec.ratio_exponent != 0:
            ratio = _column(features, N.LOSS_RATIO, why="the loss-ratio factor of the weights")
            # np.minimum keeps NaN, so a missing ratio is reported rather than capped.
            out[FACTOR_RATIO] = spec.ratio_exponent * np.log(np.minimum(ratio, spec.ratio_cap))
            _bad_factor(
                features,
                out[FACTOR_RATIO],
                ratio,
                N.LOSS_RATIO,
                f"{spec.ratio_exponent:g} * log(min(ratio, {spec.ratio_cap:g}))",
            )
        else:
            out[FACTOR_RATIO] = zeros

        for name, coef in spec.features:
            if coef == 0:
                out[feature_factor(name)] = zeros
                continue
            x = _column(features, name, why=f"the weight feature '{name}'")
            out[feature_factor(name)] = coef * x
            _bad_factor(features, out[feature_factor(name)], x, name, f"{coef:g} * {name}")

        if spec.form == "coverage" and spec.alpha != 1:
            out[FACTOR_COVERAGE] = (spec.alpha - 1.0) * log_loss
            _bad_factor(
                features,
                out[FACTOR_COVERAGE],
                loss,
                N.LOSS_USD,
                f"({spec.alpha:g} - 1) * log(loss) (coverage form)",
            )
        else:
            out[FACTOR_COVERAGE] = zeros

    if N.PHASE_FACTOR in features.columns:
        phi = _column(features, N.PHASE_FACTOR, why="the phase-in factor of the weights")
        with np.errstate(divide="ignore", invalid="ignore"):
            out[FACTOR_PHASE] = np.log(phi)
        _bad_factor(features, out[FACTOR_PHASE], phi, N.PHASE_FACTOR, "log(phase_factor)")

    total = np.zeros(n)
    for values in out.values():
        total = total + values
    frame = {N.USER_ID: pl.Series(N.USER_ID, _user_ids(features), dtype=pl.Int64)}
    frame.update({k: pl.Series(k, v, dtype=pl.Float64) for k, v in out.items()})
    frame[LOG_WEIGHT] = pl.Series(LOG_WEIGHT, total, dtype=pl.Float64)

    outside = ~((total <= _LOG_MAX) & (total >= _LOG_MIN))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        parts = {k: float(v[row]) for k, v in out.items()}
        worst = max(parts, key=lambda k: abs(parts[k]))
        raise ScenarioError(
            f"the weight of user {_user_ids(features)[row]} is not a positive finite number: "
            f"log w = {total[row]:.6g} is outside float64 ({_LOG_MIN:.0f} to {_LOG_MAX:.0f}); "
            f"the largest contribution is {worst} = {parts[worst]:.6g} "
            f"({int(outside.sum())} user(s) affected).",
            hint="lower that exponent or coefficient (or alpha in coverage form)",
        )
    return pl.DataFrame(frame)


def compute_weights(features: pl.DataFrame, spec: ObjectiveSpec) -> np.ndarray:
    r"""Weights :math:`w_i > 0`, finite, one per row of ``features`` (see the module docstring).

    Raises the errors of :func:`weight_factors`.
    """
    log_w = weight_factors(features, spec)[LOG_WEIGHT].to_numpy()
    return np.asarray(np.exp(log_w), dtype=np.float64)


def bounds_cents(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds in whole cents, ``lower`` rounded up and ``upper`` down, without raising.

    Same convention as :func:`allocator.kernel.rounding.bounds_to_cents` (a float within about
    ``1e-6`` cent of a whole cent is that cent; caps above USD 10 billion are read as that),
    which refuses bounds with no cent between them; here the caller decides what to report.
    """
    return bounds_in_cents(lower, upper)


def compute_bounds(
    features: pl.DataFrame, spec: BoundsSpec
) -> tuple[np.ndarray, np.ndarray, ScalarBounds]:
    r"""Per-user bounds :math:`\ell_i = f`, :math:`h_i = \min(c, \kappa L_i)` and their description.

    Returns ``(lower, upper, scalar_bounds)`` with ``(lower, upper) == scalar_bounds.arrays()``.

    Raises
    ------
    InfeasibleError
        Some users' upper bound is below the floor once both are in whole cents (the floor
        rounded up, the upper bound down): the message gives their count, an example user id and
        the smallest loss, and the hint says to lower the floor or raise the coverage cap.
    ScenarioError
        ``cap_usd`` and ``floor_usd`` leave no whole cent between them.
    InputError
        A loss is missing, negative or not finite.
    """
    (floor_c,), (cap_c,) = bounds_cents(np.array([spec.floor_usd]), np.array([spec.cap_usd]))
    if cap_c < floor_c:
        raise ScenarioError(
            f"bounds.cap_usd ({spec.cap_usd!r}) and bounds.floor_usd ({spec.floor_usd!r}) leave no "
            f"whole-cent voucher between them."
        )
    loss = _column(features, N.LOSS_USD, why="the voucher bounds")
    invalid = ~(np.isfinite(loss) & (loss >= 0))
    if invalid.any():
        row = int(np.flatnonzero(invalid)[0])
        raise InputError(
            f"{_SOURCE}: column '{N.LOSS_USD}' must be a finite amount >= 0, but user "
            f"{_user_ids(features)[row]} (row {row}) has {loss[row]!r} "
            f"({int(invalid.sum())} user(s) affected)."
        )
    scalar = ScalarBounds(
        floor=float(spec.floor_usd),
        cap=float(spec.cap_usd),
        coverage_cap=None if spec.coverage_cap is None else float(spec.coverage_cap),
        loss=loss,
        whole_cents=True,
    )
    lower, upper = scalar.arrays()
    if spec.coverage_cap is None:
        # every user has the floor and the cap checked above: nothing per user to check
        return lower, upper, scalar
    lo_c, hi_c = bounds_cents(lower, upper)
    bad = hi_c < lo_c
    if bad.any():  # only the coverage cap can do this once floor and cap leave a cent between
        rows = np.flatnonzero(bad)
        smallest = rows[np.argmin(loss[rows])]
        uid = _user_ids(features)[smallest]
        need = spec.floor_usd / spec.coverage_cap
        raise InfeasibleError(
            f"{rows.size} of {features.height} eligible user(s) cannot receive the floor of "
            f"{spec.floor_usd:g} USD: coverage_cap {spec.coverage_cap:g} x loss is below it "
            f"(smallest loss {loss[smallest]:.2f} USD, user {uid}; a loss of at least "
            f"{need:.2f} USD is needed).",
            hint=(
                "lower bounds.floor_usd, raise bounds.coverage_cap, or raise "
                "eligibility.min_loss_usd so that coverage_cap x min_loss >= floor"
            ),
        )
    return lower, upper, scalar


def phase_bounds(
    lower: np.ndarray, upper: np.ndarray, cap_usd: float, factor: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Bounds of a phase-in band: the cap scaled by ``factor`` and rounded down to the cent, but
    never below the floor (or one cent with a zero floor), nor above the unphased cap; the floor
    is kept (module docstring).

    The one-cent minimum matters only for users a hair past the lower end of the band (a factor
    below 1 / (100 c)): they are eligible, so they are paid, and a zero voucher would make the
    objective :math:`-\infty` for :math:`\alpha \ge 1`.
    """
    phased = np.minimum(upper, float(cap_usd) * np.asarray(factor, dtype=np.float64))
    _, phased = whole_cent_bounds(phased, phased)
    # the announced minimum holds in the band too: nobody is paid a positive amount below the
    # floor (and, with a zero floor, nobody eligible is paid nothing)
    phased = np.maximum(phased, np.minimum(upper, np.maximum(lower, 1 / CENTS_PER_USD)))
    return np.minimum(lower, phased), phased


def _predicate(where: str) -> pl.Expr:
    try:
        return pl.sql_expr(where)
    except Exception as exc:
        raise ScenarioError(
            f"segment predicate {where!r} is not a Polars SQL expression ({exc})."
        ) from None


def _mask(features: pl.DataFrame, seg: SegmentSpec) -> np.ndarray:
    expr = _predicate(seg.where).fill_null(False)
    try:
        col = features.select(expr.alias("_m")).to_series()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScenarioError(
            f"segment '{seg.name}': where = {seg.where!r} cannot be evaluated on {_SOURCE} ({first})."
        ) from None
    if col.dtype != pl.Boolean or col.len() != features.height:
        raise ScenarioError(
            f"segment '{seg.name}': where = {seg.where!r} is not a row-by-row true/false condition "
            f"(gives {col.len()} value(s) of type {col.dtype} for {features.height} users)."
        )
    return col.to_numpy().astype(bool, copy=False)


def segment_masks(features: pl.DataFrame, segments: Sequence[SegmentSpec]) -> tuple[Segment, ...]:
    """One :class:`~allocator.kernel.problem.Segment` per spec; a user is a member when ``where`` is
    true (null counts as false)."""
    return tuple(
        Segment(
            name=s.name, members=_mask(features, s), min_share=s.min_share, max_share=s.max_share
        )
        for s in segments
    )


def segment_labels(
    features: pl.DataFrame,
    segments: Sequence[SegmentSpec],
    *,
    masks: tuple[Segment, ...] | None = None,
) -> pl.Series:
    """Per user, the name of the segment it belongs to, names joined by ``+`` for users in several
    (in scenario order), or null for users in none.

    ``masks`` are the segments' members already evaluated on ``features`` (a built problem's
    :attr:`~allocator.kernel.problem.AllocationProblem.segments`), so the predicates need not
    run twice.
    """
    if masks is None:
        masks = segment_masks(features, segments)
    if not masks:
        return pl.repeat(None, features.height, dtype=pl.String, eager=True).alias(N.SEGMENT)
    frame = pl.DataFrame({f"_m{k}": seg.members for k, seg in enumerate(masks)})
    joined = pl.concat_str(
        [pl.when(pl.col(f"_m{k}")).then(pl.lit(seg.name)) for k, seg in enumerate(masks)],
        separator="+",
        ignore_nulls=True,
    )
    # With ignore_nulls, a user in no segment gets "" (names are never empty): make it null.
    labels = frame.select(pl.when(joined != "").then(joined).alias(N.SEGMENT)).to_series()
    return labels.cast(pl.String)


def _check_sorted(features: pl.DataFrame) -> None:
    if N.USER_ID not in features.columns:
        raise InputError(f"{_SOURCE} has no column '{N.USER_ID}'.")
    ids = features[N.USER_ID]
    if ids.null_count():
        raise InputError(
            f"{_SOURCE}: column '{N.USER_ID}' has {ids.null_count()} empty (null) value(s)."
        )
    arr = ids.to_numpy()
    if arr.size > 1:
        steps = np.diff(arr)
        if (steps <= 0).any():
            row = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise InputError(
                f"{_SOURCE} must be sorted by '{N.USER_ID}' with one row per user; row {row} "
                f"(user {arr[row]}) follows user {arr[row - 1]}."
            )


def check_feasible_cents(
    budget_usd: float,
    exhaust: bool,
    lower: np.ndarray,
    upper: np.ndarray,
    segments: tuple[Segment, ...],
    *,
    in_cents: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Infeasibility visible before solving, judged in whole cents (``in_cents``: the bounds
    already in cents, e.g. a problem's :meth:`~AllocationProblem.bounds_in_cents`)."""
    # the budget is whole cents (scenario validation; the rounding refuses anything else too)
    budget_c = budget_to_cents(budget_usd)
    lo_c, hi_c = bounds_cents(lower, upper) if in_cents is None else in_cents
    n = lower.shape[0]
    if n == 0 and exhaust:
        raise InfeasibleError(
            "no liquidated user passes the eligibility rules, so there is nobody to pay and the "
            f"budget of {format_cents(budget_c)} USD (budget.exhaust = true) cannot be spent.",
            hint="relax the [eligibility] thresholds, window, products or regions",
        )
    if int(lo_c.sum()) > budget_c:
        raise InfeasibleError(
            f"the floors of {n:,} eligible users add up to {format_cents(int(lo_c.sum()))} USD, more than the "
            f"budget of {format_cents(budget_c)} USD: {format_cents(int(lo_c.sum()) - budget_c)} USD "
            "short.",
            hint="lower bounds.floor_usd or raise budget.total_usd",
        )
    if exhaust and int(hi_c.sum()) < budget_c:
        raise InfeasibleError(
            f"the budget of {format_cents(budget_c)} USD must be paid in full (budget.exhaust = true), "
            f"but the upper bounds of the {n:,} eligible users add up to only "
            f"{format_cents(int(hi_c.sum()))} USD: {format_cents(budget_c - int(hi_c.sum()))} USD cannot be "
            "spent.",
            hint="raise bounds.cap_usd or bounds.coverage_cap, or set budget.exhaust = false",
        )
    for seg in segments:
        members = seg.members
        if seg.min_share is not None:
            need = seg.min_share * budget_c
            have = int(hi_c[members].sum())
            if have < need - 0.5:
                raise InfeasibleError(
                    f"segment '{seg.name}' must receive at least {seg.min_share:g} of the budget "
                    f"({format_usd(need / CENTS_PER_USD)} USD) but its {int(members.sum()):,} users can receive at most "
                    f"{format_cents(have)} USD.",
                    hint=f"lower segments.{seg.name}.min_share or widen its bounds or predicate",
                )
        if seg.max_share is not None:
            allow = seg.max_share * budget_c
            floor = int(lo_c[members].sum())
            if floor > allow + 0.5:
                raise InfeasibleError(
                    f"segment '{seg.name}' may receive at most {seg.max_share:g} of the budget "
                    f"({format_usd(allow / CENTS_PER_USD)} USD) but the floors of its {int(members.sum()):,} users add "
                    f"up to {format_cents(floor)} USD.",
                    hint=f"raise segments.{seg.name}.max_share or lower bounds.floor_usd",
                )


def build_problem(
    features: pl.DataFrame,
    scenario: Scenario,
    *,
    budget_usd: float | None = None,
    memo: MutableMapping[Hashable, Any] | None = None,
) -> AllocationProblem:
    """The allocation problem for the eligible users (rows of ``features``, sorted by user id).

    The budget is ``budget_usd`` when given (a later round's cumulative total), else what round
    1 pays: ``budget.total_usd`` less ``budget.reserve_usd``
    (:func:`~allocator.settings.models.round_budget_usd`).

    ``memo``: a dict kept by the caller for these very ``features`` (a data session keeps one
    per eligibility result). The weights depend on the objective's exponents and coefficients
    but not on alpha (except in coverage form), the bounds on the bounds' knobs alone: moving
    alpha, the budget or one of the two reuses the other's arrays (kept read-only) instead of
    recomputing them for every user.

    Raises
    ------
    InputError
        ``features`` is not sorted by unique user id, or a needed column is missing or empty.
    ScenarioError
        A weight is not finite, or a segment predicate cannot be evaluated.
    InfeasibleError
        Bounds, budget or segment shares cannot all hold (checked in whole cents).
    """
    _check_sorted(features)
    spec = scenario.objective
    bounds = scenario.bounds
    if spec.rule in CLAIMS_RULES:
        # a claims rule pays nobody more than their claim, the loss: a coverage cap of 1
        cover = 1.0 if bounds.coverage_cap is None else min(bounds.coverage_cap, 1.0)
        bounds = dataclasses.replace(bounds, coverage_cap=cover)
    weights_key = (
        "weights",
        tuple(
            (f.name, getattr(spec, f.name))
            for f in dataclasses.fields(spec)
            if f.name != "alpha" or spec.form == "coverage"
        ),
    )
    bounds_key = ("bounds", bounds)
    if memo is not None and weights_key in memo:
        weights = memo[weights_key]
    else:
        weights = rule_weights(features, scenario)
    if memo is not None and bounds_key in memo:
        lower, upper, scalar_bounds, cents = memo[bounds_key]
    else:
        lower, upper, scalar = compute_bounds(features, bounds)
        scalar_bounds = scalar
        if N.PHASE_FACTOR in features.columns:
            factor = _column(features, N.PHASE_FACTOR, why="the phase-in factor of the bounds")
            lower, upper = phase_bounds(lower, upper, bounds.cap_usd, factor)
            scalar_bounds = None
        cents = None
    segments = segment_masks(features, scenario.segments)
    budget = round_budget_usd(scenario) if budget_usd is None else float(budget_usd)
    rule = None if spec.rule == RULE_ALPHA_FAIR else spec.rule
    problem = AllocationProblem(
        weights=weights,
        lower=lower,
        upper=upper,
        budget=budget,
        alpha=float(spec.alpha),
        exhaust=bool(scenario.budget.exhaust),
        segments=segments,
        scalar_bounds=scalar_bounds,
        rule=rule,
        rule_parameter=spec.base_usd if spec.base_usd is not None else spec.threshold_usd,
    )
    problem.bounds_in_cents(known=cents)
    if memo is not None:
        for array in (weights, lower, upper):
            array.flags.writeable = False  # shared by the problems of one memo
        _remember(memo, weights_key, weights)
        _remember(memo, bounds_key, (lower, upper, scalar_bounds, problem.bounds_in_cents()))
    check_feasible_cents(
        budget, problem.exhaust, lower, upper, segments, in_cents=problem.bounds_in_cents()
    )
    return problem


#: Weights and bounds a memo keeps of each kind (each a few arrays of one float per user).
MEMO_SIZE = 4


def _remember(memo: MutableMapping[Hashable, Any], key: tuple[str, Any], value: Any) -> None:
    memo.pop(key, None)
    memo[key] = value  # the most recent last
    same = [k for k in memo if isinstance(k, tuple) and k[0] == key[0]]
    for old in same[:-MEMO_SIZE]:
        del memo[old]


def rule_weights(features: pl.DataFrame, scenario: Scenario) -> np.ndarray:
    r"""What the objective's rule weighs each user by: the alpha-fair weight :math:`w_i`
    (:func:`compute_weights`), the claim :math:`L_i` of a claims rule, or the scale of the exact
    max-min (:math:`L_i` in coverage form, 1 in voucher form)."""
    spec = scenario.objective
    if spec.rule == RULE_ALPHA_FAIR:
        return compute_weights(features, spec)
    if spec.rule == RULE_MAX_MIN and spec.form == "voucher":
        return np.ones(features.height, dtype=np.float64)
    loss = _column(features, N.LOSS_USD, why=f"the claims of rule {spec.rule!r}")
    return np.ascontiguousarray(loss, dtype=np.float64)
