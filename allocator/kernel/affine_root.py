r"""The root of a sum of clipped affine functions, exactly: the one search every claims rule
of :mod:`allocator.kernel.claims` rests on.

For intercepts :math:`a_i`, slopes :math:`b_i \ge 0` and bounds :math:`lo_i \le hi_i`, the total

.. math::

    S(\lambda) = \sum_i \operatorname{clip}(a_i + b_i \lambda,\; lo_i,\; hi_i)

is continuous, non-decreasing and piecewise linear; :func:`affine_clip_root` finds a
:math:`\lambda` with :math:`S(\lambda) = T`. A strided sample brackets the root, one pass over
every user (block by block) settles those whose breakpoints lie outside the bracket, and the
median of the breakpoints left halves the rest until the closed form on the last piece.
"""

from __future__ import annotations

import math

import numpy as np

from allocator.errors import SolverFailedError
from allocator.kernel.select import pick
from allocator.kernel.sums import all_finite

__all__ = ["BLOCK", "affine_clip_root"]

#: Breakpoints sampled per step to pick the next pivot (their median splits the rest in about half).
_PIVOT_SAMPLE = 2048
#: Users per block of the first pass over everyone (see :func:`_settle_on_bracket`).
BLOCK = 1 << 15
#: From this many users on, a strided sample of about _SAMPLE_USERS first brackets the root.
_SAMPLE_MIN_USERS = 65_536
_SAMPLE_USERS = 16_384
#: A bracket wider than this (relative to the guess) is no better than none.
_WIDEST = 1e12


def affine_clip_root(
    a: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    target: float,
    *,
    near: tuple[float, float] | None = None,
) -> tuple[float, np.ndarray]:
    r"""Solve :math:`\sum_i \operatorname{clip}(a_i + b_i\lambda, lo_i, hi_i) = T` exactly.

    Parameters
    ----------
    a, b
        Intercepts and slopes, :math:`b_i \ge 0` (a user with :math:`b_i = 0` is constant).
    lo, hi
        Bounds with :math:`lo_i \le hi_i` (``hi`` may be ``inf``).
    target
        :math:`T`, with :math:`\sum lo \le T \le \sum hi` (checked by the callers).
    near
        ``(guess, margin)``: where the caller knows the root to lie, instead of a sample's
        estimate (the second round of a minimum payment starts from the first round's root).
        Only where to look first: a wrong guess costs a wider bracket, never a wrong root.

    Returns
    -------
    (lambda, x)
        A root and the awards there. Where :math:`S` is flat at :math:`T` any point of the flat
        piece is returned (the awards are the same on it).

    Notes
    -----
    A user whose breakpoints :math:`p_i = (lo_i - a_i)/b_i` and :math:`q_i = (hi_i - a_i)/b_i`
    both lie outside a bracket :math:`[\lambda_l, \lambda_r]` adds a constant or
    :math:`a_i + b_i\lambda` on all of it, so it joins running sums and leaves the search.
    For many users a strided sample's root, widened by six of its sampling errors, is the
    first bracket: one pass over every user settles almost all of them and checks that the
    bracket holds the root (it is widened and tried again if not, so the answer is exact
    whatever the sample says). Then the median breakpoint of the few users left halves them
    until none is left.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    guess, margin = _sample_guess(a, b, lo, hi, float(target)) if near is None else near
    found = None
    while math.isfinite(margin) and found is None:
        # a user with b = 0 is constant: settled on any finite bracket in the first pass
        found = _root_in_bracket(a, b, lo, hi, float(target), guess - margin, guess + margin)
        margin *= 8.0  # the sample misled: a wider bracket (at worst, everything)
        if margin > _WIDEST * (abs(guess) + 1.0):
            margin = math.inf
    if found is None:
        found = _root_everywhere(a, b, lo, hi, float(target))
    x = b * found
    x += a
    return found, np.clip(x, lo, hi, out=x)


def _root_everywhere(
    a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: float
) -> float:
    """The root with no bracket to start from (few users, or a sample that said nothing): the
    constant users (``b = 0``) set aside, everyone else searched."""
    moving = b > 0.0
    if moving.all():
        found = _root_in_bracket(a, b, lo, hi, target, -math.inf, math.inf)
    else:
        # gathers by index: a boolean index branches on every user (kernel.select)
        still = np.flatnonzero(~moving)
        rest = target - float(np.clip(a[still], lo[still], hi[still]).sum())
        idx = np.flatnonzero(moving)
        found = _root_in_bracket(a[idx], b[idx], lo[idx], hi[idx], rest, -math.inf, math.inf)
    if found is None:  # pragma: no cover - the whole line always holds the root
        raise SolverFailedError(
            "the claims rule's multiplier search found no root on the whole line; this is a bug",
            hint="report the claims and the estate",
        )
    return found


def _root_in_bracket(
    aa: np.ndarray,
    bb: np.ndarray,
    ll: np.ndarray,
    hh: np.ndarray,
    rest: float,
    left: float,
    right: float,
) -> float | None:
    """The root inside ``[left, right]``, or ``None`` when the bracket does not hold it."""
    # First pass: users settled on the bracket judged by their values at its ends, which
    # needs no division; the breakpoints are then formed only for the users left.
    held, a_in, k_in, keep = _settle_on_bracket(aa, bb, ll, hh, left, right)
    aa, bb, ll, hh = aa[keep], bb[keep], ll[keep], hh[keep]
    if not (math.isinf(left) and math.isinf(right)):  # the whole line always holds the root
        low = held + a_in + k_in * left + _spend(aa, bb, ll, hh, left)
        high = held + a_in + k_in * right + _spend(aa, bb, ll, hh, right)
        slack = 1e-12 * max(abs(rest), 1.0)  # float noise of the sums, far below a cent
        if low > rest + slack or high < rest - slack:
            return None
    with np.errstate(divide="ignore", invalid="ignore"):
        pp = (ll - aa) / bb  # below pp a user sits at lo
        qq = (hh - aa) / bb  # above qq a user sits at hi
    while aa.size:
        # users whose breakpoints both lie outside the bracket behave linearly on all of it
        at_hi = qq <= left
        at_lo = (pp >= right) & ~at_hi
        inside = (pp <= left) & (qq >= right) & ~(at_hi | at_lo)  # a point bracket: counted once
        settled = at_hi | at_lo | inside
        if settled.any():
            held, a_in, k_in = _settle(aa, bb, ll, hh, at_hi, at_lo, inside, held, a_in, k_in)
            keep = np.flatnonzero(~settled)
            aa, bb, ll, hh, pp, qq = aa[keep], bb[keep], ll[keep], hh[keep], pp[keep], qq[keep]
        if left == right or not aa.size:
            break
        # the pivot: the median breakpoint inside the bracket, from a strided sample of them
        step = max(1, aa.size // _PIVOT_SAMPLE)
        cand = np.concatenate((pp[::step], qq[::step]))
        cand = cand[(cand > left) & (cand < right) & np.isfinite(cand)]
        if cand.size == 0 and step > 1:
            cand = np.concatenate((pp, qq))
            cand = cand[(cand > left) & (cand < right) & np.isfinite(cand)]
        if cand.size == 0:
            # an unsettled user has a breakpoint inside the bracket, so this cannot happen; if
            # it ever did, an answer would be wrong silently, so say so instead
            raise SolverFailedError(
                "the claims rule's multiplier search lost its bracket; this is a bug",
                hint="report the claims and the estate",
            )
        pivot = float(np.partition(cand, cand.size // 2)[cand.size // 2])
        spend = held + a_in + k_in * pivot + _spend(aa, bb, ll, hh, pivot)
        if spend == rest:
            left = right = pivot
        elif spend < rest:
            left = pivot
        else:
            right = pivot
    if left == right:
        return left
    if k_in > 0.0:
        return min(max((rest - held - a_in) / k_in, left), right)
    # flat on the bracket: every point pays the target
    return left if np.isfinite(left) else (right if np.isfinite(right) else 0.0)


def _settle_on_bracket(
    aa: np.ndarray, bb: np.ndarray, ll: np.ndarray, hh: np.ndarray, left: float, right: float
) -> tuple[float, float, float, np.ndarray]:
    """The running sums of :func:`_settle` over the users settled on ``[left, right]`` (judged
    by their values at its ends), and the indices of the others.

    Block by block: a block's arrays stay in the core's cache from one step to the next, where
    a million users' would go to memory and back at each (twice as long, measured)."""
    held = a_in = k_in = 0.0
    keep: list[np.ndarray] = [np.empty(0, dtype=np.intp)]
    x_left, x_right = np.empty(min(aa.shape[0], BLOCK)), np.empty(min(aa.shape[0], BLOCK))
    for start in range(0, aa.shape[0], BLOCK):
        at = slice(start, start + BLOCK)
        a, b, lo, hi = aa[at], bb[at], ll[at], hh[at]
        xl, xr = x_left[: a.shape[0]], x_right[: a.shape[0]]
        with np.errstate(invalid="ignore"):
            np.multiply(b, left, out=xl)
            xl += a
            np.multiply(b, right, out=xr)
            xr += a
        at_hi = xl >= hi
        at_lo = (xr <= lo) & ~at_hi
        inside = (xl >= lo) & (xr <= hi) & ~(at_hi | at_lo)  # b = 0 at a bound: counted once
        # held: users at a bound over the whole bracket; a_in + k_in * lambda: those inside it
        held, a_in, k_in = _settle(a, b, lo, hi, at_hi, at_lo, inside, held, a_in, k_in)
        keep.append(np.flatnonzero(~(at_hi | at_lo | inside)) + start)
    return held, a_in, k_in, np.concatenate(keep)


def _settle(
    aa: np.ndarray,
    bb: np.ndarray,
    ll: np.ndarray,
    hh: np.ndarray,
    at_hi: np.ndarray,
    at_lo: np.ndarray,
    inside: np.ndarray,
    held: float,
    a_in: float,
    k_in: float,
) -> tuple[float, float, float]:
    """The running sums with the users at a bound (``held``) or inside it (``a_in + k_in *
    lambda``) over the whole bracket added."""
    return (
        held + _masked_sum(hh, at_hi) + _masked_sum(ll, at_lo),
        a_in + float(np.dot(aa, inside)),
        k_in + float(np.dot(bb, inside)),
    )


def _masked_sum(x: np.ndarray, mask: np.ndarray) -> float:
    """``x[mask].sum()``, the same float (the same array is summed, zeros for the rest), in
    three passes: finite bounds are multiplied by the mask; a cap may be infinite (``inf * 0``
    is NaN), and then the entries are picked (seven passes)."""
    if not mask.any():
        return 0.0
    if all_finite(x):
        return float(np.multiply(x, mask).sum())
    return float(pick(mask, x, 0.0).sum())


def _spend(aa: np.ndarray, bb: np.ndarray, ll: np.ndarray, hh: np.ndarray, lam: float) -> float:
    if not aa.size:
        return 0.0
    with np.errstate(invalid="ignore"):
        x = bb * lam
        x += aa
    np.clip(x, ll, hh, out=x)
    return float(x.sum())


def _sample_guess(
    aa: np.ndarray, bb: np.ndarray, ll: np.ndarray, hh: np.ndarray, rest: float
) -> tuple[float, float]:
    """A guess at the root and a margin around it from a strided sample (``inf`` margin: no
    guess, for few users or a sample that says nothing).

    The sample's root (its target scaled to the sample) estimates the multiplier; six of the
    sample's sampling errors (the spread of its awards, over the slope of its total) either
    side make the margin. It only decides where to look first.
    """
    n = aa.size
    if n < _SAMPLE_MIN_USERS:
        return 0.0, math.inf
    s = slice(None, None, n // _SAMPLE_USERS)
    s_a, s_b, s_l, s_h = aa[s], bb[s], ll[s], hh[s]
    target = min(max(rest * (s_a.size / n), float(s_l.sum())), float(s_h.sum()))
    lam, x = affine_clip_root(s_a, s_b, s_l, s_h, target)
    slope = float(s_b[(x > s_l) & (x < s_h)].sum())
    if not (math.isfinite(lam) and slope > 0.0):
        return 0.0, math.inf
    spread = float(x.std()) * math.sqrt(x.size)
    return lam, max(6.0 * spread / slope, 1e-12 * (abs(lam) + 1.0))
