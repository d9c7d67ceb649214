r"""Claims rules: dividing an estate among claims, each rule exact and fast at a million claims.

A claims (bankruptcy) problem has claims :math:`c_i \ge 0` and an estate :math:`E`. A voucher
programme adds per-user bounds :math:`[\ell_i, h_i]` (a floor and a cap); every rule here keeps
each award within its bounds and never above its claim:

.. math::

    u_i = \min(h_i, c_i), \qquad l_i = \min(\ell_i, u_i), \qquad
    l_i \le x_i \le u_i, \qquad \sum_i x_i = E,

so :math:`\sum_i l_i \le E \le \sum_i u_i` is required (:class:`~allocator.errors.InfeasibleError`
otherwise). Without bounds (:math:`\ell = 0`, :math:`h = \infty`) each rule is the textbook one.

One multiplier
    Every rule is a path of awards that is non-decreasing in one number :math:`\lambda`, made of
    one or two stages, each of the form

    .. math::

        x_i(\lambda) = \operatorname{clip}(a_i + b_i \lambda,\; lo_i,\; hi_i), \qquad b_i \ge 0,

    so the total :math:`S(\lambda)` is continuous, non-decreasing and piecewise linear, and the
    rule's award is the point of the path where :math:`S(\lambda) = E`.
    :func:`~allocator.kernel.affine_root.affine_clip_root`
    finds it exactly: a safeguarded search over the users' breakpoints
    (:math:`(lo_i - a_i)/b_i` and :math:`(hi_i - a_i)/b_i`), median by median, moves every user
    whose breakpoints have left the bracket into running sums, and ends with the closed form
    :math:`\lambda = (E - C - A)/K` on the last piece (:math:`C` the users held at a bound,
    :math:`A + K\lambda` the users strictly inside). The work is linear in the number of users
    on average.

The rules (:data:`RULES`; each docstring gives its path)
    * proportional: :math:`x_i = \lambda c_i`;
    * constrained equal awards (CEA): :math:`x_i = \min(c_i, \lambda)`;
    * constrained equal losses (CEL): :math:`x_i = \max(0, c_i - \lambda)`;
    * Talmud (Aumann and Maschler 1985): CEA on the half-claims while :math:`E \le C/2`,
      otherwise :math:`c_i` minus CEA of the half-claims on the loss :math:`C - E`;
    * base then pro rata (Mt. Gox): :math:`\min(c_i, \beta)` to everyone first (by CEA while
      the estate cannot pay it), then the rest pro rata on the remaining claims;
    * convenience class (FTX): claims up to a threshold :math:`\tau` paid in full first (pro rata
      among them while the estate cannot), then the larger claims pro rata;
    * minimum payment with redistribution (class actions): proportional, except that awards
      below a minimum :math:`m` are dropped and their money shared by the others (repeated until
      no award is below :math:`m`);
    * the limits of the alpha-fair family: :func:`lexicographic_max_min` (alpha = infinity)
      is water-filling, :math:`x_i = \operatorname{clip}(\lambda s_i, \ell_i, h_i)` with
      :math:`s_i = 1` in voucher form and :math:`s_i = L_i` in coverage form; alpha = 0 is the
      fractional knapsack of :func:`allocator.kernel.solve.solve`.

Raised lower bounds (a later round)
    A later round of a distribution raises each user's lower bound to what they already hold,
    :math:`\ell_i' = \max(\ell_i, H_i)` (no claw-back). No rule's path is redrawn for it: the
    award is the path clamped to the raised bounds,
    :math:`x_i = \operatorname{clip}(a_i + b_i \lambda, \ell_i', u_i)`, with the root
    :math:`\lambda` found for the round's total, so a held user's award is
    :math:`\max(H_i, \text{path})` and everyone else stays on the rule's path. Every function
    here takes per-user ``lower`` arrays, and :func:`~allocator.kernel.rule_certificate.certify_rule`
    certifies the clamped awards on that path (a two-stage rule's middle bounds, the Talmud's
    half-claims and the base amounts, are clipped to the raised bounds as well).

Cents
    :func:`awards_to_cents` turns awards into integer cents that sum to the estate exactly, each
    within its bounds and within a cent of its exact award (largest remainder, ties to the larger
    claim, then the earlier claim).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from allocator.errors import InfeasibleError
from allocator.kernel.affine_root import affine_clip_root
from allocator.kernel.feasibility import InvalidProblemError
from allocator.kernel.money import CENTS_PER_USD, bounds_in_cents, budget_to_cents, format_usd
from allocator.kernel.rounding import round_to_cents_report
from allocator.kernel.select import pick

#: Relative slack on the estate's feasibility check (the sums are floats).
_FEASIBLE_RTOL = 1e-12


#: A rule's path, :math:`x_i = \operatorname{clip}(a_i + b_i \lambda, lo_i, hi_i)`, as
#: ``(a, b, lo, hi)``.
AffinePath = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class ClaimsAwards:
    """A rule's exact awards (USD, float64) and the multiplier that sets them.

    ``parameter`` is the rule's own number: the proportional rate, the CEA award level, the CEL
    loss, the Talmud/base/class stage's level; ``stage`` is 1 or 2 for the two-stage rules
    (0 otherwise); ``dropped`` marks the awards a minimum payment set to zero.
    """

    rule: str
    awards: np.ndarray
    parameter: float
    stage: int = 0
    dropped: np.ndarray | None = None
    #: The path the awards lie on, :math:`x_i = \operatorname{clip}(a_i + b_i \lambda, lo_i,
    #: hi_i)` as ``(a, b, lo, hi)``, at :math:`\lambda` = ``root`` (the stage that paid the
    #: estate); :func:`allocator.kernel.rule_certificate.certify_rule` checks awards against it.
    path: AffinePath | None = None
    root: float = math.nan
    #: What stage 1 of a two-stage rule can pay at most: stage 2 is right only above it.
    first_stage_total: float | None = None


# ----------------------------------------------------------------------------- the problem


def _bounds(
    claims: np.ndarray, lower: np.ndarray | float | None, upper: np.ndarray | float | None
) -> tuple[np.ndarray, np.ndarray]:
    c = claims
    h = np.full_like(c, np.inf) if upper is None else np.broadcast_to(upper, c.shape)
    ell = np.zeros_like(c) if lower is None else np.broadcast_to(lower, c.shape)
    u = np.minimum(np.asarray(h, dtype=np.float64), c)
    return np.minimum(np.asarray(ell, dtype=np.float64), u), u


def _check(claims: np.ndarray, estate: float, lo: np.ndarray, hi: np.ndarray) -> None:
    if claims.ndim != 1:
        raise InvalidProblemError(f"claims must be one list of amounts, got shape {claims.shape}")
    # one reduction each on the usual path; the element-wise search only to name a bad claim
    if not (np.isfinite(claims.sum()) and claims.min(initial=0.0) >= 0.0):
        bad = np.flatnonzero(~np.isfinite(claims) | (claims < 0.0))
        if bad.size == 0:
            raise InvalidProblemError("the claims add up to more than a float can hold")
        i = int(bad[0])
        raise InvalidProblemError(
            f"claim {i + 1} is {claims[i]!r}: every claim must be a finite amount >= 0"
        )
    if not np.isfinite(estate) or estate < 0.0:
        raise InvalidProblemError(f"the estate must be a finite amount >= 0, got {estate!r}")
    most, least = float(hi.sum()), float(lo.sum())
    if not (lo.min(initial=0.0) >= 0.0) or np.isnan(most):
        raise InvalidProblemError("floors must be >= 0 and caps must not be NaN")
    slack = _FEASIBLE_RTOL * max(1.0, abs(estate))
    if estate > most + slack:
        raise InfeasibleError(
            f"the estate {format_usd(estate, currency=True)} is more than the claims can take "
            f"({format_usd(most, currency=True)}: no award exceeds its claim or its cap)",
            hint="lower the estate, or raise the caps",
        )
    if estate < least - slack:
        raise InfeasibleError(
            f"the estate {format_usd(estate, currency=True)} cannot pay every floor "
            f"({format_usd(least, currency=True)})",
            hint="raise the estate, or lower the floor",
        )


def _prepare(
    claims: np.ndarray,
    estate: float,
    lower: np.ndarray | float | None,
    upper: np.ndarray | float | None,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    c = np.asarray(claims, dtype=np.float64)
    e = float(estate)
    lo, hi = _bounds(c, lower, upper)
    _check(c, e, lo, hi)
    return c, e, lo, hi


def _two_stage(
    rule: str,
    estate: float,
    first_caps: np.ndarray,
    first: Callable[[], AffinePath],
    second: Callable[[], AffinePath],
) -> ClaimsAwards:
    """Stage 1 pays up to the stage's caps ``first_caps``; if the estate is larger, stage 2
    starts from them. Only the stage that pays is built (each path is four arrays)."""
    first_total = float(first_caps.sum())
    if estate <= first_total:
        path = first()
        lam, x = affine_clip_root(*path, estate)
        return ClaimsAwards(rule, x, lam, stage=1, path=path, root=lam)
    path = second()
    lam, x = affine_clip_root(*path, estate)
    return ClaimsAwards(rule, x, lam, stage=2, path=path, root=lam, first_stage_total=first_total)


# ------------------------------------------------------------------------------- the rules


def proportional(
    claims: np.ndarray,
    estate: float,
    *,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""Proportional (PRO): :math:`x_i = \operatorname{clip}(\lambda c_i, l_i, u_i)`.

    Without bounds :math:`\lambda = E / \sum c`. The only rule immune to merging and splitting
    claims (Ju, Miyagawa and Sakai 2007); self-dual.
    """
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    path = (np.zeros_like(c), c, lo, hi)
    lam, x = affine_clip_root(*path, e)
    return ClaimsAwards("proportional", x, lam, path=path, root=lam)


def constrained_equal_awards(
    claims: np.ndarray,
    estate: float,
    *,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""Constrained equal awards (CEA): :math:`x_i = \operatorname{clip}(\lambda, l_i, u_i)`,
    i.e. :math:`\min(c_i, \lambda)` without bounds: an equal split in which nobody gets more
    than their claim. It is the lexicographic max-min of the awards."""
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    path = (np.zeros_like(c), np.ones_like(c), lo, hi)
    lam, x = affine_clip_root(*path, e)
    return ClaimsAwards("constrained_equal_awards", x, lam, path=path, root=lam)


def constrained_equal_losses(
    claims: np.ndarray,
    estate: float,
    *,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""Constrained equal losses (CEL): :math:`x_i = \operatorname{clip}(c_i - \lambda, l_i, u_i)`,
    i.e. :math:`\max(0, c_i - \lambda)` without bounds: everyone loses the same amount
    :math:`\lambda` (``parameter``), nobody below zero. The dual of CEA."""
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    path = (c, np.ones_like(c), lo, hi)
    mu, x = affine_clip_root(*path, e)
    return ClaimsAwards("constrained_equal_losses", x, -mu, path=path, root=mu)


def talmud(
    claims: np.ndarray,
    estate: float,
    *,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""The Talmud rule (Aumann and Maschler 1985).

    With :math:`e_i = \operatorname{clip}(c_i/2, l_i, u_i)` (the half-claim within the bounds):
    stage 1, while :math:`E \le \sum e`, is CEA up to the half-claims,
    :math:`x_i = \operatorname{clip}(\lambda, l_i, e_i)`; stage 2 gives each claim its half and
    then equal losses on the other half, :math:`x_i = \operatorname{clip}(c_i - \mu, e_i, u_i)`
    (``parameter`` is :math:`\mu`, the loss). Without bounds it reproduces the Talmud's
    estates of 100, 200 and 300 over claims of 100, 200 and 300, and the contested garment.
    Self-dual.
    """
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    half = np.clip(c / 2.0, lo, hi)
    result = _two_stage(
        "talmud",
        e,
        half,
        lambda: (np.zeros_like(c), np.ones_like(c), lo, half),
        lambda: (c, np.ones_like(c), half, hi),
    )
    if result.stage == 2:
        return dataclasses.replace(result, parameter=-result.parameter)
    return result


def base_then_pro_rata(
    claims: np.ndarray,
    estate: float,
    *,
    base: float,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""Base amount then pro rata (Mt. Gox).

    With :math:`e_i = \operatorname{clip}(\min(c_i, \beta), l_i, u_i)`: stage 1 (the estate
    cannot pay every base) is CEA up to the bases, :math:`x_i = \operatorname{clip}(\lambda, l_i,
    e_i)`; stage 2 pays the bases and the rest in proportion to the remaining claims,
    :math:`x_i = \operatorname{clip}(e_i + \lambda (u_i - e_i), e_i, u_i)` (without bounds,
    :math:`\min(c_i,\beta) + \lambda\,(c_i - \min(c_i, \beta))`).
    """
    if not np.isfinite(base) or base < 0.0:
        raise InvalidProblemError(f"the base amount must be a finite amount >= 0, got {base!r}")
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    first_cap = np.clip(np.minimum(c, base), lo, hi)
    return _two_stage(
        "base_then_pro_rata",
        e,
        first_cap,
        lambda: (np.zeros_like(c), np.ones_like(c), lo, first_cap),
        lambda: (first_cap, hi - first_cap, first_cap, hi),
    )


def convenience_class(
    claims: np.ndarray,
    estate: float,
    *,
    threshold: float,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""Convenience class then pro rata (FTX).

    Claims up to :math:`\tau` form the class. Stage 1 pays the class in proportion to its claims
    (in full when the estate allows), :math:`x_i = \operatorname{clip}(\lambda c_i, l_i, u_i)`
    for :math:`c_i \le \tau`, while larger claims get their floor; stage 2 pays the class in
    full and the larger claims pro rata, :math:`x_i = \operatorname{clip}(\lambda c_i, l_i,
    u_i)` for :math:`c_i > \tau`.
    """
    if not np.isfinite(threshold) or threshold < 0.0:
        raise InvalidProblemError(
            f"the class threshold must be a finite amount >= 0, got {threshold!r}"
        )
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    small = c <= threshold
    class_caps = pick(small, hi, lo)  # a cap may be infinite: picked
    # the claims are finite and >= 0: a claim times the mask is the claim or 0, exactly
    return _two_stage(
        "convenience_class",
        e,
        class_caps,
        lambda: (np.zeros_like(c), c * small, lo, class_caps),
        lambda: (np.zeros_like(c), c * ~small, class_caps, hi),
    )


def minimum_payment(
    claims: np.ndarray,
    estate: float,
    *,
    minimum: float,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> ClaimsAwards:
    r"""Proportional with a minimum payment, redistributing what is dropped (class actions).

    Awards are :math:`x_i = \operatorname{clip}(\lambda c_i, l_i, u_i)` over the kept claims;
    a kept claim whose award is below :math:`m` is dropped (award 0) and the estate is shared
    again among the rest, until every award is 0 or at least :math:`m`. A dropped claim stays
    dropped (as in a class action's rounds). Dropping raises :math:`\lambda`, and with it every
    kept award, so no claim kept in the first round falls below :math:`m` later: the second
    solve is the last. Floors of at least :math:`m` make the rule proportional.
    """
    if not np.isfinite(minimum) or minimum < 0.0:
        raise InvalidProblemError(
            f"the minimum payment must be a finite amount >= 0, got {minimum!r}"
        )
    c, e, lo, hi = _prepare(claims, estate, lower, upper)
    kept = c > 0.0
    near: tuple[float, float] | None = None
    while True:
        every = bool(kept.all())  # the first round, unless a claim is zero
        lo_k, hi_k, c_k = (lo, hi, c) if every else _zeroed(np.flatnonzero(~kept), lo, hi, c)
        if e > float(hi_k.sum()) * (1.0 + _FEASIBLE_RTOL):
            raise InfeasibleError(
                f"after dropping awards below {format_usd(minimum, currency=True)}, the "
                f"remaining claims cannot take the estate {format_usd(e, currency=True)}",
                hint="lower the minimum payment",
            )
        path = (np.zeros_like(c), c_k, lo_k, hi_k)
        lam, x = affine_clip_root(*path, e, near=near)
        drop = kept & (x < minimum)
        if not drop.any():
            return ClaimsAwards(
                "minimum_payment", x, lam, dropped=~kept & (c > 0.0), path=path, root=lam
            )
        kept &= ~drop
        # the kept claims share what the dropped ones had: proportionally, the rate rises by
        # that share of the estate (exact without bounds; with them, where to look first)
        freed = float(x[np.flatnonzero(drop)].sum())
        guess = lam * e / max(e - freed, 1e-300)
        near = (guess, 2.0 * (guess - lam) + 1e-9 * (abs(guess) + 1.0))


def _zeroed(where: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Copies of ``arrays`` with zeros at the indices ``where`` (the dropped claims, a few: a
    copy and a scatter cost less than selecting every entry)."""
    out = tuple(x.copy() for x in arrays)
    for x in out:
        x[where] = 0.0
    return out


def lexicographic_max_min(
    lower: np.ndarray, upper: np.ndarray, budget: float, *, scale: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    r"""The alpha-fair allocation at :math:`\alpha = \infty`, exactly: lexicographic max-min.

    Maximise the smallest :math:`v_i / s_i`, then the next smallest, and so on, subject to
    :math:`\ell_i \le v_i \le h_i` and :math:`\sum v_i = B`. For a sum constraint over boxes
    the answer is water-filling, :math:`v_i = \operatorname{clip}(\lambda s_i, \ell_i, h_i)`:
    raising any :math:`v_j / s_j` above the water level :math:`\lambda` would take from a user
    at or below it. :math:`s_i = 1` is the voucher form (an equal split within the bounds, CEA);
    :math:`s_i = L_i` the coverage form (equal coverage within the bounds, i.e. proportional to
    the loss). Returns :math:`(\lambda, v)`.
    """
    s = np.ones_like(np.asarray(lower, dtype=np.float64)) if scale is None else scale
    result = water_filling(s, budget, lower=lower, upper=upper)
    return result.root, result.awards


def water_filling(
    scale: np.ndarray,
    budget: float,
    *,
    lower: np.ndarray | float,
    upper: np.ndarray | float,
) -> ClaimsAwards:
    r"""Lexicographic max-min of :math:`v_i / s_i` within the bounds (no claim cap):
    :math:`v_i = \operatorname{clip}(\lambda s_i, \ell_i, h_i)`, :math:`s_i > 0`.

    The rule ``max_min`` of a voucher scenario (see :func:`lexicographic_max_min`); unlike the
    claims rules it caps nobody at a claim, only at the bounds.
    """
    s = np.asarray(scale, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), s.shape)
    hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), s.shape)
    # the claims rules' slack: a budget equal to the floors' (or caps') total, summed in another
    # order, is feasible
    slack = _FEASIBLE_RTOL * max(1.0, abs(float(budget)))
    if not float(lo.sum()) - slack <= float(budget) <= float(hi.sum()) + slack:
        raise InfeasibleError(
            f"the budget {format_usd(float(budget), currency=True)} is outside what the bounds "
            f"allow ({format_usd(float(lo.sum()), currency=True)} to "
            f"{format_usd(float(hi.sum()), currency=True)})"
        )
    path = (np.zeros_like(s), s, lo, hi)
    lam, x = affine_clip_root(*path, float(budget))
    return ClaimsAwards("max_min", x, lam, path=path, root=lam)


# ------------------------------------------------------------------------- catalogue, cents

Rule = Callable[..., ClaimsAwards]

#: Every claims rule by its full name, with the parameter it needs (if any).
RULES: dict[str, tuple[Rule, str | None]] = {
    "proportional": (proportional, None),
    "constrained_equal_awards": (constrained_equal_awards, None),
    "constrained_equal_losses": (constrained_equal_losses, None),
    "talmud": (talmud, None),
    "base_then_pro_rata": (base_then_pro_rata, "base"),
    "convenience_class": (convenience_class, "threshold"),
    "minimum_payment": (minimum_payment, "minimum"),
}

#: Short names and the names of the programmes that used them.
ALIASES: dict[str, str] = {
    "pro": "proportional",
    "pro_rata": "proportional",
    "cea": "constrained_equal_awards",
    "cel": "constrained_equal_losses",
    "mt_gox": "base_then_pro_rata",
    "ftx": "convenience_class",
    "ftx_convenience": "convenience_class",
    "class_action": "minimum_payment",
}


def rule_name(name: str) -> str:
    """The full name of a rule given by its full or short name (case and ``-`` ignored)."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in RULES:
        known = ", ".join([*RULES, *ALIASES])
        raise InvalidProblemError(f"unknown claims rule {name!r}; known rules: {known}")
    return key


def divide(
    rule: str,
    claims: np.ndarray,
    estate: float,
    *,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
    parameter: float | None = None,
) -> ClaimsAwards:
    """Apply a rule by name (full or short); ``parameter`` is its base, threshold or minimum."""
    full = rule_name(rule)
    func, needs = RULES[full]
    if needs is None:
        return func(claims, estate, lower=lower, upper=upper)
    if parameter is None:
        raise InvalidProblemError(f"the {full} rule needs its {needs} (an amount in USD)")
    return func(claims, estate, lower=lower, upper=upper, **{needs: float(parameter)})


def describe(rule: str, parameter: float, stage: int = 0, *, coverage: bool = True) -> str:
    """The rule's multiplier in plain words (``parameter`` as :class:`ClaimsAwards` states it;
    ``coverage`` says whether a ``max_min`` level is a share of the loss or an amount)."""
    usd = format_usd(parameter, currency=True)
    share = f"{parameter:.4%}"
    if rule in ("proportional", "minimum_payment"):
        return f"every award is {share} of the claim, within the bounds"
    if rule == "constrained_equal_awards":
        return f"every award is {usd}, or the claim if smaller, within the bounds"
    if rule == "constrained_equal_losses":
        return f"every award is the claim less {usd}, within the bounds"
    if rule == "talmud":
        if stage == 2:
            return f"every award is half the claim and the other half less {usd}, within the bounds"
        return f"every award is {usd}, or half the claim if smaller, within the bounds"
    if rule == "base_then_pro_rata":
        if stage == 2:
            return f"every award is the base and {share} of the claim above it, within the bounds"
        return f"the bases are not all paid: every award is {usd}, or the base if smaller"
    if rule == "convenience_class":
        if stage == 2:
            return (
                f"the convenience class is paid in full; larger claims get {share} of the claim, "
                "within the bounds"
            )
        return f"the convenience class gets {share} of its claims; larger claims get the floor"
    if rule == "max_min":
        if coverage:
            return f"every user recovers {share} of the loss, within the bounds"
        return f"every voucher is {usd}, within the bounds"
    return f"multiplier {parameter:.6g}"


def awards_to_cents(
    awards: ClaimsAwards,
    claims: np.ndarray,
    estate: float,
    *,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
) -> np.ndarray:
    """Integer cents (int64) summing exactly to the estate (a whole number of cents), each within
    its bounds and within a cent of its exact award; ties go to the larger claim, then the
    earlier one. A dropped award stays 0.

    Claims and caps that are not whole cents are paid at most their amount rounded down to the
    cent (a claim of USD 1.914 gets at most 1.91), and a floor above such a cap is that cap.
    """
    c = np.asarray(claims, dtype=np.float64)
    lo, hi = _bounds(c, lower, upper)
    if awards.dropped is not None:
        lo = np.where(awards.dropped, 0.0, lo)
        hi = np.where(awards.dropped, 0.0, hi)
    budget_to_cents(estate)  # refuses an estate that is not whole cents
    # What can be paid: caps (and claims) down to the cent, floors up but never above the cap.
    lo_c, hi_c = bounds_in_cents(lo, hi)
    lo_c = np.minimum(lo_c, hi_c)
    lo_usd, hi_usd = lo_c / CENTS_PER_USD, hi_c / CENTS_PER_USD
    cents, _ = round_to_cents_report(
        np.clip(awards.awards, lo_usd, hi_usd),
        lo_usd,
        hi_usd,
        estate,
        exhaust=True,
        loss=c,
        user_id=np.arange(c.size, dtype=np.int64),
    )
    return cents
