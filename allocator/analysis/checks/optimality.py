r"""Optimality recomputed from the files: the manifest's prices are valid multipliers, every paid
voucher is within a cent of its best response at them, and the manifest's objective is that of
the paid vouchers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.checks.rules import path_awards, rule_path
from allocator.analysis.checks.runfiles import (
    Result,
    RunFiles,
    Unavailable,
    examples,
    manifest_number,
)
from allocator.kernel.money import CENTS_PER_USD
from allocator.runs.contract import LOWER_CENTS, UPPER_CENTS

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


_EPS = float(np.finfo(np.float64).eps)


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


def _alpha(r: RunFiles) -> float:
    alpha = manifest_number(r, "scenario", "objective", "alpha")
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise Unavailable(f"{N.MANIFEST_FILE} scenario.objective.alpha is not >= 0: {alpha!r}")
    return alpha


def _segment_prices(r: RunFiles) -> dict[str, tuple[float, float]]:
    raw = r.section("segment_prices")
    if not isinstance(raw, dict):
        raise Unavailable(f"{N.MANIFEST_FILE} segment_prices is not an object")
    out = {}
    for name, pair in raw.items():
        ok = isinstance(pair, list) and len(pair) == 2
        if ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair):
            if all(math.isfinite(x) for x in pair):
                out[name] = (float(pair[0]), float(pair[1]))
                continue
        raise Unavailable(
            f"{N.MANIFEST_FILE} segment_prices.{name} is not [mu_min, mu_max] in numbers: {pair!r}"
        )
    return out


def _price_sign_problems(r: RunFiles, lam: float, mus: dict[str, tuple[float, float]]) -> list[str]:
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


def _rule(r: RunFiles) -> str:
    """The scenario's rule (``alpha_fair`` when the manifest predates rules)."""
    rule = r.section("scenario", "objective").get("rule", "alpha_fair")
    if not isinstance(rule, str):
        raise Unavailable(f"{N.MANIFEST_FILE} scenario.objective.rule is not a name: {rule!r}")
    return rule


def check_rule_awards(r: RunFiles, rule: str) -> Result:
    """Every paid voucher is within a cent of the rule's award, recomputed by bisection."""
    a = r.allocations
    objective = r.section("scenario", "objective")
    parameter = objective.get("base_usd") or objective.get("threshold_usd")
    if rule == "max_min" and objective.get("form") == "voucher":
        claims = np.ones(a.height)
    else:
        claims = a[N.LOSS_USD].to_numpy()
    lo = a[LOWER_CENTS].to_numpy() / CENTS_PER_USD
    hi = a[UPPER_CENTS].to_numpy() / CENTS_PER_USD
    budget = r.money("budget_cents") / CENTS_PER_USD
    try:
        path = rule_path(rule, claims, lo, hi, budget, parameter)
    except ValueError as exc:
        return False, f"{N.MANIFEST_FILE} scenario.objective: {exc}"
    t, awards = path_awards(path, budget)
    v = a[N.VOUCHER_CENTS].to_numpy() / CENTS_PER_USD
    dist = np.abs(v - awards)
    far = ~(dist <= BEST_RESPONSE_TOL_USD)
    if far.any():
        order = np.argsort(-np.where(far, dist, -1.0), kind="stable")[: int(far.sum())]
        rows = (
            a[order]
            .select(N.USER_ID, N.LOSS_USD, N.VOUCHER_CENTS)
            .with_columns(pl.Series("rule_award_usd", np.round(awards[order], 6)))
        )
        return False, (
            f"{int(far.sum()):,} voucher(s) more than one cent from the {rule} award "
            f"recomputed from the files (multiplier {t:.12g}), up to "
            f"{float(dist.max()):.4f} USD, worst first: " + examples(rows)
        )
    return True, (
        f"every voucher within {float(dist.max(initial=0.0)):.4f} USD of the {rule} award "
        f"recomputed by bisection from the losses and bounds (multiplier {t:.12g})"
    )


def check_optimality(r: RunFiles) -> Result:
    rule = _rule(r)
    if rule != "alpha_fair":
        return check_rule_awards(r, rule)
    a = r.allocations
    alpha = _alpha(r)
    lam = manifest_number(r, "shadow_price")
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
            + examples(a.filter(pl.Series(bad_w)).select(N.USER_ID, N.WEIGHT))
        )
    v = a[N.VOUCHER_CENTS].to_numpy() / CENTS_PER_USD
    lo = a[LOWER_CENTS].to_numpy() / CENTS_PER_USD
    hi = a[UPPER_CENTS].to_numpy() / CENTS_PER_USD
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
            f"{float(np.nanmax(np.where(far, dist, 0.0))):.4f} USD, worst first: " + examples(rows)
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
    return float((OBJECTIVE_RTOL + 2.0 * t.shape[0] * _EPS) * math.fsum(np.abs(t).tolist()))


def check_objective(r: RunFiles) -> Result:
    r"""The manifest's objective is that of the files.

    A cent moved between two users changes the objective by about
    :math:`0.01\,(w_j v_j^{-\alpha} - w_i v_i^{-\alpha})`, first order in how far apart their
    marginal utilities are. Between two interior users of an optimal run both equal the price,
    so the change is second order and, in a large run, below float noise: there the optimality
    check is what limits such a move (each voucher stays within a cent of its best response).
    """
    a = r.allocations
    rule = _rule(r)
    if rule != "alpha_fair":
        stated_value = r.section("objective_rounded")
        if stated_value is not None:
            return False, (
                f"the {rule} rule has no objective, but the manifest states objective_rounded "
                f"{stated_value!r}"
            )
        return True, f"the {rule} rule has no objective to recompute (its awards are checked)"
    alpha = _alpha(r)
    stated = manifest_number(r, "objective_rounded")
    terms = objective_terms(
        a[N.WEIGHT].to_numpy(), a[N.VOUCHER_CENTS].to_numpy() / CENTS_PER_USD, alpha
    )
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
