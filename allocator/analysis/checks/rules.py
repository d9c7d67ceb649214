r"""The awards of a claims rule, recomputed from a run's files by bisection (``optimality`` of a rule run).

A run whose scenario sets ``objective.rule`` to a claims rule (or ``max_min``) is not the optimum
of an objective with prices; its vouchers must be the rule's awards on the run's claims and
bounds. This module writes each rule's path out again, from the rule's definition rather than
the kernel's code, and finds its multiplier by plain bisection (slow and simple: 200 halvings of
the bracket between the users' breakpoints), so that the check does not run the code it audits.

Each path is :math:`x_i(t) = \operatorname{clip}(a_i + b_i t, lo_i, hi_i)` with
:math:`b_i \ge 0`, non-decreasing in :math:`t`; the bounds are the file's ``lower_cents`` and
``upper_cents`` (checked against the scenario by the ``bounds`` check) and the claims the
losses (for ``max_min``: the loss in coverage form, 1 in voucher form).

==========================  ==================================================================
rule                        path
==========================  ==================================================================
proportional, max_min       :math:`\operatorname{clip}(t\,c_i, lo_i, hi_i)`
constrained_equal_awards    :math:`\operatorname{clip}(t, lo_i, hi_i)`
constrained_equal_losses    :math:`\operatorname{clip}(c_i + t, lo_i, hi_i)` (:math:`-t` is the loss)
talmud                      :math:`h_i = \operatorname{clip}(c_i/2, lo_i, hi_i)`; while the
                            estate is at most :math:`\sum h`, :math:`\operatorname{clip}(t, lo_i,
                            h_i)`, else :math:`\operatorname{clip}(c_i + t, h_i, hi_i)`
base_then_pro_rata          :math:`e_i = \operatorname{clip}(\min(c_i, \beta), lo_i, hi_i)`; while
                            the estate is at most :math:`\sum e`, :math:`\operatorname{clip}(t,
                            lo_i, e_i)`, else :math:`\operatorname{clip}(e_i + t (hi_i - e_i), e_i,
                            hi_i)`
convenience_class           class :math:`c_i \le \tau`: while the estate is at most what the class
                            can take above the others' floors, the class gets
                            :math:`\operatorname{clip}(t c_i, lo_i, hi_i)` and the others their
                            floor; else the class its cap and the others
                            :math:`\operatorname{clip}(t c_i, lo_i, hi_i)`
==========================  ==================================================================
"""

from __future__ import annotations

import numpy as np

#: Halvings of the multiplier's bracket: far below a cent for any bracket a float can hold.
BISECTIONS = 200

Path = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def rule_path(
    rule: str,
    claims: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    estate: float,
    parameter: float | None,
    *,
    stage: int | None = None,
) -> Path:
    """``(a, b, lo, hi)`` of the rule's path that pays ``estate`` (see the module docstring).

    ``stage`` (1 or 2) picks a two-stage rule's stage instead of comparing ``estate`` with what
    the first stage can pay: one user's path, when the stage is known from the run.
    """

    def first(capacity: np.ndarray) -> bool:
        return stage == 1 if stage is not None else estate <= float(capacity.sum())

    c = np.asarray(claims, dtype=np.float64)
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    zero, one = np.zeros_like(c), np.ones_like(c)
    if rule in ("proportional", "max_min"):
        return zero, c, lo, hi
    if rule == "constrained_equal_awards":
        return zero, one, lo, hi
    if rule == "constrained_equal_losses":
        return c, one, lo, hi
    if rule == "talmud":
        half = np.minimum(np.maximum(c / 2.0, lo), hi)
        if first(half):
            return zero, one, lo, half
        return c, one, half, hi
    if rule == "base_then_pro_rata":
        if parameter is None:
            raise ValueError("base_then_pro_rata needs its base")
        base = np.minimum(np.maximum(np.minimum(c, parameter), lo), hi)
        if first(base):
            return zero, one, lo, base
        return base, hi - base, base, hi
    if rule == "convenience_class":
        if parameter is None:
            raise ValueError("convenience_class needs its threshold")
        small = c <= parameter
        first_hi = np.where(small, hi, lo)
        if first(first_hi):
            return zero, np.where(small, c, 0.0), lo, first_hi
        return zero, np.where(small, 0.0, c), first_hi, hi
    raise ValueError(f"unknown rule {rule!r}")


def path_awards(path: Path, estate: float) -> tuple[float, np.ndarray]:
    """The multiplier where the path pays ``estate`` (by bisection) and the awards there."""
    a, b, lo, hi = path
    moving = b > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ends = np.concatenate(((lo - a)[moving] / b[moving], (hi - a)[moving] / b[moving]))
    ends = ends[np.isfinite(ends)]
    left = float(ends.min(initial=0.0))
    right = float(ends.max(initial=0.0))

    def pay(t: float) -> np.ndarray:
        return np.minimum(np.maximum(a + b * t, lo), hi)

    for _ in range(BISECTIONS):
        mid = 0.5 * (left + right)
        if mid in (left, right):
            break
        if float(pay(mid).sum()) < estate:
            left = mid
        else:
            right = mid
    # the two ends pay within float error of the estate; the one closer to it is the answer
    x_left, x_right = pay(left), pay(right)
    if abs(float(x_left.sum()) - estate) <= abs(float(x_right.sum()) - estate):
        return left, x_left
    return right, x_right
