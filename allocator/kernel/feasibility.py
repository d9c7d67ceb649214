"""Checks before any solver runs: the problem's numbers are valid, and some allocation satisfies
every constraint.

Invalid input raises :class:`InvalidProblemError` (an :class:`~allocator.errors.AllocatorError`
with exit code 2 that is also a :class:`ValueError`); a problem that cannot be satisfied raises
:class:`~allocator.errors.InfeasibleError`, each in plain words with the amounts involved.
"""

from __future__ import annotations

import math

import numpy as np

from allocator.errors import AllocatorError, InfeasibleError
from allocator.kernel.problem import AllocationProblem


class InvalidProblemError(AllocatorError, ValueError):
    """The problem's numbers are not a valid input (bad weights, alpha, budget, shapes).

    Exit code 2, like other input errors; also a :class:`ValueError` for library callers.
    """

    exit_code = 2


def _usd(x: float) -> str:
    return f"USD {x:,.2f}"


def _users(k: int) -> str:
    return f"{k:,} user" + ("" if k == 1 else "s")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def validate(problem: AllocationProblem) -> None:
    """Raise :class:`InvalidProblemError` unless the problem's numbers make sense.

    Weights must be positive and finite, bounds finite with ``lower >= 0``, the budget positive
    and finite, ``alpha`` finite and ``>= 0``, segment masks boolean of length ``n`` with shares
    in ``[0, 1]`` and distinct names.
    """
    try:
        w = np.asarray(problem.weights, dtype=np.float64)
        np.asarray(problem.lower, dtype=np.float64)
        np.asarray(problem.upper, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"weights and bounds must be numeric arrays ({exc})") from None
    if w.ndim != 1 or w.size == 0:
        raise InvalidProblemError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    n = w.shape[0]
    for label, arr in (("lower", problem.lower), ("upper", problem.upper)):
        if np.shape(arr) != (n,):
            raise InvalidProblemError(
                f"{label} bounds must have one entry per user ({n}), got shape {np.shape(arr)}"
            )
    bad = ~(np.isfinite(w) & (w > 0))
    if bad.any():
        i = _first_bad(bad)
        raise InvalidProblemError(
            f"weights must be positive finite numbers: {int(bad.sum())} of {n} users are not "
            f"(first at index {i}: {w[i]!r})"
        )
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    for label, arr in (("lower", lo), ("upper", hi)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidProblemError(
                f"{label} bounds must be finite: {int(bad.sum())} users are not "
                f"(first at index {i}: {arr[i]!r})"
            )
    bad = lo < 0
    if bad.any():
        i = _first_bad(bad)
        raise InvalidProblemError(
            f"lower bounds must be >= 0: {int(bad.sum())} users are negative "
            f"(first at index {i}: {lo[i]!r})"
        )
    alpha = problem.alpha
    if not (
        isinstance(alpha, (int, float, np.floating, np.integer))
        and math.isfinite(alpha)
        and alpha >= 0
    ):
        raise InvalidProblemError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if alpha >= 1:
        bad = hi <= 0
        if bad.any():
            i = _first_bad(bad)
            raise InvalidProblemError(
                f"with alpha >= 1 every user needs a positive upper bound (the utility of 0 is "
                f"-infinity): {int(bad.sum())} users have upper bound 0 (first at index {i})"
            )
    budget = problem.budget
    if not (math.isfinite(budget) and budget > 0):
        raise InvalidProblemError(f"the budget must be a positive finite amount, got {budget!r}")
    names: set[str] = set()
    for seg in problem.segments:
        if seg.name in names:
            raise InvalidProblemError(f"segment names must be distinct: {seg.name!r} appears twice")
        names.add(seg.name)
        members = np.asarray(seg.members)
        if members.shape != (n,) or members.dtype != np.bool_:
            raise InvalidProblemError(
                f"segment {seg.name!r}: members must be a boolean mask of length {n}, got "
                f"{members.dtype} of shape {members.shape}"
            )
        for side, share in (("min_share", seg.min_share), ("max_share", seg.max_share)):
            if share is not None and not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise InvalidProblemError(
                    f"segment {seg.name!r}: {side} must lie in [0, 1], got {share!r}"
                )


def segments_disjoint(problem: AllocationProblem) -> bool:
    """True when no user belongs to two segments."""
    if len(problem.segments) < 2:
        return True
    count = np.zeros(problem.n, dtype=np.int32)
    for seg in problem.segments:
        count += np.asarray(seg.members, dtype=bool)
    return bool(count.max() <= 1)


def check_feasible(problem: AllocationProblem) -> None:
    """Raise :class:`~allocator.errors.InfeasibleError` with a plain message when the problem
    visibly has no solution (bounds, budget, segment shares and their combinations, one segment
    inside another).

    Overlapping segments can hide infeasibility that only the solver finds; those cases reach
    the cvxpy model, which raises the same error.
    """
    n = problem.n
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    budget = float(problem.budget)
    rtol = 1e-12 * budget  # money slack for float sums, far below a cent

    bad = lo > hi
    if bad.any():
        i = _first_bad(bad)
        raise InfeasibleError(
            f"{int(bad.sum())} of {n} users have a lower bound above their upper bound "
            f"(e.g. index {i}: lower {lo[i]:g} > upper {hi[i]:g} USD)",
            hint="check the floor against the cap and coverage cap",
        )
    sum_lo = float(np.sum(lo))
    if sum_lo > budget + rtol:
        if np.all(lo == lo[0]):
            what = f"the floor of {_usd(lo[0])} for {n:,} users needs {_usd(sum_lo)}"
        else:
            what = f"the floors of {n:,} users need {_usd(sum_lo)}"
        raise InfeasibleError(
            f"{what} but the budget is {_usd(budget)}", hint="lower the floor or raise the budget"
        )
    zero_floor = (lo == 0) & (hi > 0) if problem.alpha > 0 and float(lo.min()) == 0.0 else None
    if zero_floor is not None and sum_lo >= budget - rtol and zero_floor.any():
        # the only allocation left pays 0 to users who value the first dollar infinitely:
        # no finite shadow price exists (and for alpha >= 1 the objective is -infinity)
        raise InfeasibleError(
            f"the floors use the whole budget of {_usd(budget)}, leaving nothing for "
            f"{_users(int(zero_floor.sum()))} with a zero floor",
            hint="raise the budget or give every user a positive floor",
        )
    sum_hi = float(np.sum(hi))
    if problem.exhaust and sum_hi < budget - rtol:
        raise InfeasibleError(
            f"caps allow only {_usd(sum_hi)}: {_usd(budget - sum_hi)} of the budget "
            "cannot be spent",
            hint="raise the caps or allow an unspent budget (exhaust = false)",
        )
    seg_sums: list[tuple[float, float]] = []
    for seg in problem.segments:
        members = np.asarray(seg.members, dtype=bool)
        seg_lo = float(np.einsum("i,i->", lo, members))
        seg_hi = float(np.einsum("i,i->", hi, members))
        seg_sums.append((seg_lo, seg_hi))
        k = int(np.count_nonzero(members))
        if (
            seg.min_share is not None
            and seg.max_share is not None
            and seg.min_share > seg.max_share
        ):
            raise InfeasibleError(
                f"segment {seg.name!r}: min share {seg.min_share:g} is above its max share "
                f"{seg.max_share:g}"
            )
        if seg.min_share is not None and seg.min_share * budget > seg_hi + rtol:
            raise InfeasibleError(
                f"segment {seg.name!r} must receive at least {_usd(seg.min_share * budget)} "
                f"({seg.min_share:g} of the budget) but the caps of its {_users(k)} allow only "
                f"{_usd(seg_hi)}"
            )
        if seg.max_share is not None and seg.max_share * budget < seg_lo - rtol:
            raise InfeasibleError(
                f"segment {seg.name!r} may receive at most {_usd(seg.max_share * budget)} "
                f"({seg.max_share:g} of the budget) but the floors of its {_users(k)} need "
                f"{_usd(seg_lo)}"
            )
        seg_zero = zero_floor & members if zero_floor is not None else None
        if (
            seg_zero is not None
            and seg.max_share is not None
            and seg.max_share * budget <= seg_lo + rtol
            and seg_zero.any()
        ):
            raise InfeasibleError(
                f"segment {seg.name!r} may receive at most {_usd(seg.max_share * budget)}, "
                "only its floors, "
                f"leaving nothing for its {_users(int(seg_zero.sum()))} with a zero floor",
                hint="raise the segment's max share or give every user a positive floor",
            )
    _check_nested_segments(problem, lo, hi, budget, rtol)
    if not problem.segments or not segments_disjoint(problem):
        return
    min_total = sum(s.min_share for s in problem.segments if s.min_share is not None)
    if min_total > 1.0 + 1e-12:
        raise InfeasibleError(
            f"the segments' minimum shares add up to {min_total:g}, more than the whole budget"
        )
    # disjoint segments: the users outside every segment hold the rest of the floors and caps
    need = sum_lo  # least total any feasible allocation pays
    room = sum_hi  # most total any feasible allocation can pay
    for seg, (seg_lo, seg_hi) in zip(problem.segments, seg_sums, strict=True):
        need += max(seg_lo, (seg.min_share or 0.0) * budget) - seg_lo
        max_total = seg.max_share * budget if seg.max_share is not None else math.inf
        room += min(seg_hi, max_total) - seg_hi
    if need > budget + rtol:
        raise InfeasibleError(
            f"floors and segment minimum shares together need {_usd(need)} but the budget is "
            f"{_usd(budget)}"
        )
    if problem.exhaust and room < budget - rtol:
        raise InfeasibleError(
            f"caps and segment maximum shares together allow only {_usd(room)}: "
            f"{_usd(budget - room)} of the budget cannot be spent",
            hint="raise a segment's max share or the caps, or allow an unspent budget "
            "(exhaust = false)",
        )


def _check_nested_segments(
    problem: AllocationProblem, lo: np.ndarray, hi: np.ndarray, budget: float, rtol: float
) -> None:
    r"""Contradictions between a segment and one that contains it, in plain words.

    Overlapping segments go to cvxpy, whose "infeasible" names no segment; the common overlap,
    one segment inside another (say "loss under 1k" inside "loss under 10k"), is checked here:
    for :math:`S \subseteq T`, the least :math:`T` can receive is
    :math:`\max(m_S B, \ell(S)) + \ell(T \setminus S)` and the most
    :math:`\min(M_S B, h(S)) + h(T \setminus S)`; they must meet :math:`[m_T B, M_T B]`.
    """
    segs = problem.segments
    masks = [np.asarray(seg.members, dtype=bool) for seg in segs]
    for a, inner in enumerate(segs):
        for b, outer in enumerate(segs):
            if a == b or np.any(masks[a] & ~masks[b]):
                continue  # not inside
            rest = masks[b] & ~masks[a]
            rest_lo, rest_hi = float(lo[rest].sum()), float(hi[rest].sum())
            in_lo, in_hi = float(lo[masks[a]].sum()), float(hi[masks[a]].sum())
            least = max((inner.min_share or 0.0) * budget, in_lo) + rest_lo
            most = (
                min(inner.max_share * budget if inner.max_share is not None else math.inf, in_hi)
                + rest_hi
            )
            if outer.max_share is not None and least > outer.max_share * budget + rtol:
                raise InfeasibleError(
                    f"segment {inner.name!r} lies inside segment {outer.name!r}: with its "
                    f"minimum share and the floors, {outer.name!r} must receive at least "
                    f"{_usd(least)}, above its maximum of {_usd(outer.max_share * budget)} "
                    f"({outer.max_share:g} of the budget)",
                    hint=f"lower {inner.name!r}'s min share or raise {outer.name!r}'s max share",
                )
            if outer.min_share is not None and most < outer.min_share * budget - rtol:
                raise InfeasibleError(
                    f"segment {inner.name!r} lies inside segment {outer.name!r}: with its "
                    f"maximum share and the caps, {outer.name!r} can receive at most "
                    f"{_usd(most)}, below its minimum of {_usd(outer.min_share * budget)} "
                    f"({outer.min_share:g} of the budget)",
                    hint=f"raise {inner.name!r}'s max share or lower {outer.name!r}'s min share",
                )


# ----------------------------------------------------------------------------------------------
# the fast solver, alpha > 0: root of S(y) = target
# ----------------------------------------------------------------------------------------------
