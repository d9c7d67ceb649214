r"""Certificates for a claims rule's awards: they are the rule's, within the bounds, and spend the estate.

Every rule of :mod:`allocator.kernel.claims` pays along a path that is non-decreasing in one
number :math:`\lambda`,

.. math::

    x_i(\lambda) = \operatorname{clip}(a_i + b_i \lambda,\; lo_i,\; hi_i), \qquad b_i \ge 0,

and its award is the point of the path where :math:`\sum_i x_i(\lambda) = E`. Because each
:math:`x_i` is non-decreasing in :math:`\lambda`, two multipliers that both spend :math:`E`
give the same awards: a multiplier that reproduces the awards and spends the estate proves that
they *are* the rule's. For a two-stage rule (Talmud, base then pro rata, convenience class) the
second stage is the right one only when the first cannot pay the estate, which is checked too.

:func:`certify_rule` checks, within a tolerance that is one cent for amounts rounded to cents:

* every award lies on the path at the stated multiplier;
* every award lies within its bounds (the claim is one of them: nobody above their claim);
* the awards add up to the estate;
* the second stage, when used, starts above what the first stage can pay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allocator.kernel.claims import ClaimsAwards
from allocator.kernel.money import format_usd
from allocator.kernel.sums import fsum

#: USD: the tolerance on unrounded awards (the root is exact up to float error on the sum).
EXACT_TOL_USD = 1e-6
#: USD: the tolerance on awards rounded to cents (one cent, as for the alpha-fair certificate).
ROUNDED_TOL_USD = 0.01 + 1e-6


@dataclass(frozen=True)
class RuleCertificate:
    """What was checked about a rule's awards and whether it holds.

    ``parameter`` is the multiplier on the rule's path; ``path_max_usd`` the largest distance of
    an award from the path there. ``objective`` is not a number: a claims rule is defined by
    its path, not by an objective (it is kept so that a run's manifest has one shape).
    """

    certified: bool
    failures: tuple[str, ...]
    rule: str
    parameter: float
    stage: int
    spent: float
    budget: float
    budget_violation: float
    bound_violation: float
    path_max_usd: float
    n_floor: int
    n_interior: int
    n_cap: int
    rounded: bool
    tol_usd: float
    n: int = 0
    objective: float = field(default=math.nan)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite floats become ``None``; tuples become lists)."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if key == "failures":
                out[key] = list(value)
            elif isinstance(value, (bool, np.bool_)):
                out[key] = bool(value)
            elif isinstance(value, (int, np.integer)):
                out[key] = int(value)
            elif isinstance(value, str):
                out[key] = value
            else:
                x = float(value)
                out[key] = x if math.isfinite(x) else None
        return out


def certify_rule(
    awards: ClaimsAwards,
    vouchers: np.ndarray,
    budget: float,
    *,
    rounded: bool = False,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> RuleCertificate:
    """Check ``vouchers`` (USD) against the rule's path in ``awards`` (see the module docstring).

    ``rounded=True`` allows one cent per voucher and on the total's float sum; the bounds
    checked are the path's own (``lo``, ``hi``), which a pipeline rounds to cents before paying.
    ``bounds`` are the users' own floor and cap (the cap at most the claim), by which
    ``n_floor``, ``n_interior`` and ``n_cap`` are counted, as for the run; without them the
    counts are at the path's bounds, which in a stage can differ (a Talmud award at half its
    claim is at the first stage's cap, not at the user's).
    """
    if awards.path is None:
        raise ValueError(f"the {awards.rule} awards carry no path to certify against")
    a, b, lo, hi = awards.path
    v = np.asarray(vouchers, dtype=np.float64)
    tol = ROUNDED_TOL_USD if rounded else EXACT_TOL_USD
    failures: list[str] = []
    if bool((b < 0.0).any()):
        failures.append("the rule's path decreases for some users (a negative slope)")
    floor, cap = (lo, hi) if bounds is None else bounds
    path_max, bound_violation, n_floor, n_cap = _tally(
        a, b, lo, hi, v, np.broadcast_to(floor, v.shape), np.broadcast_to(cap, v.shape),
        float(awards.root), tol,
    )  # fmt: skip
    if not path_max <= tol:  # the test user by user, only when some award may be off the path
        with np.errstate(invalid="ignore"):
            on_path = np.clip(a + b * awards.root, lo, hi)
            dist = np.abs(v - on_path)
        far = ~(dist <= tol + 1e-9 * np.abs(on_path))
        if far.any():
            i = int(np.argmax(np.where(far, dist, -1.0)))
            failures.append(
                f"{int(far.sum()):,} award(s) off the {awards.rule} path at its multiplier "
                f"{awards.root:.12g}, up to {format_usd(path_max, currency=True)} "
                f"(user {i + 1}: {v[i]!r} instead of {on_path[i]!r})"
            )
    # cents can sit a hair outside a bound that is not a whole cent (a cap of 1.914 pays 1.91)
    if bound_violation > tol:
        below, above = np.maximum(lo - v, 0.0), np.maximum(v - hi, 0.0)
        failures.append(
            f"{int(((below > tol) | (above > tol)).sum()):,} award(s) outside their bounds, "
            f"by up to {format_usd(bound_violation, currency=True)}"
        )
    spent = fsum(v)
    budget_violation = abs(spent - float(budget))
    if budget_violation > (0.005 if rounded else 1e-9 * max(1.0, abs(float(budget)))):
        failures.append(
            f"the awards add up to {format_usd(spent, currency=True)}, not the estate "
            f"{format_usd(float(budget), currency=True)}"
        )
    if awards.stage == 2 and awards.first_stage_total is not None:
        if not float(budget) > awards.first_stage_total:
            failures.append(
                f"the second stage is used although the first can pay the estate "
                f"(it pays up to {format_usd(awards.first_stage_total, currency=True)})"
            )
    return RuleCertificate(
        certified=not failures,
        failures=tuple(failures),
        rule=awards.rule,
        parameter=float(awards.root),
        stage=int(awards.stage),
        spent=spent,
        budget=float(budget),
        budget_violation=budget_violation,
        bound_violation=bound_violation,
        path_max_usd=path_max,
        n_floor=n_floor,
        n_interior=int(v.size) - n_floor - n_cap,
        n_cap=n_cap,
        rounded=rounded,
        tol_usd=tol,
        n=int(v.size),
    )


#: Users per block: a block's arrays stay in the core's cache between the steps of the checks.
BLOCK = 1 << 15


def _tally(
    a: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    v: np.ndarray,
    floor: np.ndarray,
    cap: np.ndarray,
    root: float,
    tol: float,
) -> tuple[float, float, int, int]:
    """The largest distance from the path, the largest bound violation (both NaN if some
    award is not a number) and the users at their floor and at their cap, block by block."""
    n = v.shape[0]
    path_max, outside, n_floor, n_cap = [0.0], [0.0], 0, 0
    buffer = np.empty(min(n, BLOCK))
    for start in range(0, n, BLOCK):
        at = slice(start, start + BLOCK)
        vv = v[at]
        x = buffer[: vv.shape[0]]
        with np.errstate(invalid="ignore"):
            np.multiply(b[at], root, out=x)
            x += a[at]
            np.clip(x, lo[at], hi[at], out=x)
            x -= vv
            path_max += (float(x.max()), -float(x.min()))  # |v - on path| at its largest
            np.subtract(lo[at], vv, out=x)
            outside.append(float(x.max()))
            np.subtract(vv, hi[at], out=x)
            outside.append(float(x.max()))
            np.add(floor[at], tol, out=x)
            at_floor = vv <= x
            np.subtract(cap[at], tol, out=x)
            at_cap = (vv >= x) & ~at_floor
        n_floor += int(np.count_nonzero(at_floor))
        n_cap += int(np.count_nonzero(at_cap))
    # np.max carries a NaN through, as the maxima over every user at once would
    return float(np.max(path_max)), float(np.max(outside)), n_floor, n_cap
