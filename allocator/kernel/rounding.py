r"""Continuous vouchers (USD) to integer cents that pay the budget exactly.

The solver returns real amounts :math:`v_i` with :math:`\ell_i \le v_i \le h_i` and
:math:`\sum_i v_i \approx B`. Payment needs integer cents :math:`c_i` with

.. math::

    \lceil 100\,\ell_i \rceil \le c_i \le \lfloor 100\,h_i \rfloor,\qquad
    \sum_i c_i = T,

where :math:`T` is the budget in cents in exhaust mode, and otherwise the largest whole number of
cents that is at most the budget and at most :math:`\operatorname{round}(\sum_i 100\,v_i)`.
When :math:`T` can be reached by rounding every :math:`100\,v_i` down or up (the normal case,
step 1 of :func:`round_to_cents_report`), the largest-remainder method does exactly that, giving
the cents needed to reach :math:`T` to the largest fractional parts; among such :math:`c` this
minimises both :math:`\sum_i |c_i - 100\,v_i|` and :math:`\max_i |c_i - 100\,v_i|`.

Float conventions (why the tolerances exist):

- A bound or voucher within :data:`CENT_TOL` cents of a whole cent *is* that cent:
  ``0.29 * 100 == 28.999999999999996`` stands for 29 cents. So a floor of USD 0.29 is 29 cents
  (not 30) and a cap of USD 0.29 is 29 cents (not 28).
- A voucher within ``snap_rtol`` (relative, default :data:`SNAP_RTOL`) of its floor or cap is
  *at* that bound: solver noise must not decide who gets a spare cent.
- Caps above :data:`MAX_CENTS` (including ``inf``) are read as :data:`MAX_CENTS`, so that sums of
  cents over millions of users stay exact in int64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from allocator import names as N
from allocator.errors import InfeasibleError, InputError, ScenarioError, SolverError

# CENT_TOL (a float within this many cents of a whole cent is that cent) and MAX_CENTS (the
# largest per-user cap, USD 10 billion; 1M users times it still fits in int64) live with the
# problem, whose bounds are posed in whole cents by the same rule.
from allocator.kernel.money import CENT_TOL, MAX_CENTS, bounds_in_cents, budget_to_cents
from allocator.kernel.problem import Segment
from allocator.kernel.select import pick

#: Relative distance from a bound within which a solver's voucher counts as on the bound.
SNAP_RTOL = 1e-9

_EPS = np.finfo(np.float64).eps

Mode = Literal["largest_remainder", "extra_up", "extra_down"]


@dataclass(frozen=True)
class RoundingReport:
    """What rounding did, in cents.

    ``start_cents`` is the sum of the vouchers rounded down into their bounds; ``cents_up`` and
    ``cents_down`` are the cents added to and removed from that start (their difference is
    ``total_cents - start_cents``). ``mode`` is ``"largest_remainder"`` when every user got
    :math:`100 v_i` rounded down or up, ``"extra_up"`` / ``"extra_down"`` when the target could
    only be met by moving some users further (the continuous vouchers did not sum to the target
    within one cent per user, or bounds are not whole cents).
    """

    n_users: int
    budget_cents: int
    target_cents: int
    total_cents: int
    start_cents: int
    cents_up: int
    cents_down: int
    users_up: int
    users_down: int
    max_deviation_cents: float
    mode: Mode

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- conversions


def _tol(x: np.ndarray) -> np.ndarray:
    # A few ulps on top of CENT_TOL keeps the rule meaningful for very large amounts.
    return CENT_TOL + 4.0 * _EPS * np.abs(x)


def bounds_to_cents(
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    user_id: np.ndarray | None = None,
    in_cents: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-user floors and caps in whole cents.

    .. math::

        \underline c_i = \lceil 100\,\ell_i - \tau_i \rceil,\qquad
        \overline c_i = \lfloor \min(100\,h_i, M) + \tau_i \rfloor,\qquad
        \tau_i = 10^{-6} + 4\,\epsilon\,|100\,\ell_i| \text{ (resp. } h_i\text{)}

    A floor is rounded up and a cap down (nobody is paid below a floor or above a cap), after
    treating anything within :math:`\tau` cents of a whole cent as that cent; :math:`M` is
    :data:`MAX_CENTS`.

    Parameters
    ----------
    lower, upper
        Floors and caps in USD, one per user.
    user_id
        Optional ids, only used to name an example user in error messages.
    in_cents
        The bounds already in cents by :func:`~allocator.kernel.money.bounds_in_cents` (a
        problem's :meth:`~allocator.kernel.problem.AllocationProblem.bounds_in_cents`): only
        checked, not computed again.

    Returns
    -------
    (lo_c, hi_c)
        int64 arrays of cents.

    Raises
    ------
    ScenarioError
        A floor is negative or NaN, or a cap is NaN.
    InfeasibleError
        Some user has no whole-cent amount between floor and cap.
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    if lower.ndim != 1 or lower.shape != upper.shape:
        raise ValueError(
            f"lower and upper must be 1-D of equal length: {lower.shape}, {upper.shape}"
        )

    def example(mask: np.ndarray) -> str:
        i = int(np.flatnonzero(mask)[0])
        who = f"user_id {int(user_id[i])}" if user_id is not None else f"user at position {i}"
        return f"{who}: floor USD {lower[i]!r}, cap USD {upper[i]!r}"

    # the mask is only built when the cheap reductions find something to report
    clean = lower.size == 0 or (
        bool(np.isfinite(lower).all()) and lower.min() >= 0 and not np.isnan(upper).any()
    )
    bad = None if clean else ~np.isfinite(lower) | (lower < 0) | np.isnan(upper)
    if bad is not None and bad.any():
        raise ScenarioError(
            f"{int(bad.sum())} users have a floor that is negative or not a number, or a cap that "
            f"is not a number (e.g. {example(bad)}). Floors must be finite and >= 0."
        )
    lo_c, hi_c = bounds_in_cents(lower, upper) if in_cents is None else in_cents
    if lo_c.size and bool(np.any(lo_c > hi_c)):
        empty = lo_c > hi_c
        raise InfeasibleError(
            f"{int(empty.sum())} users have no whole-cent voucher between their floor and cap "
            f"(e.g. {example(empty)}); no payment in cents can respect their bounds.",
            hint="raise the cap or lower the floor (a coverage cap can push a cap below the floor).",
        )
    return lo_c, hi_c


# --------------------------------------------------------------------------- selection


Key = np.ndarray | Callable[[np.ndarray], np.ndarray]


def _top(keys: tuple[Key, ...], idx: np.ndarray, t: int) -> np.ndarray:
    """The ``t`` entries of ``idx`` that come first in the lexicographic order of ``keys`` (full
    length arrays, or functions giving the key of the entries they are passed; every key
    larger-first; the last key must be unique).

    Selection, not sorting: a partition on the first key, then the same on the next key within
    the tie at the threshold only, so a million users with equal remainders cost a few linear
    passes and the later keys are only read (or computed) for the tie.
    """
    m = idx.shape[0]
    if t <= 0:
        return idx[:0]
    if t >= m:
        return idx
    k1 = keys[0](idx) if callable(keys[0]) else keys[0][idx]
    return _top_by(k1, keys[1:], idx, t)


def _top_by(
    first: np.ndarray, later: tuple[Key, ...], idx: np.ndarray | None, t: int
) -> np.ndarray:
    """:func:`_top` given the first key's values ``first`` of the entries ``idx`` (``None``:
    every entry, and ``0 < t <`` the entries whose first key is above ``-inf``)."""
    m = first.shape[0]
    kth = np.partition(first, m - t)[m - t]  # the t-th largest first key
    # by index, not by mask: a mask branches on every user (allocator.kernel.select)
    above = np.flatnonzero(first > kth)
    tie = np.flatnonzero(first == kth)
    if idx is not None:
        above, tie = idx[above], idx[tie]
    need = t - above.shape[0]
    picked = tie[:need] if not later else _top(later, tie, need)
    return np.concatenate([above, picked])


def _rank_within_equal(
    x: np.ndarray, v: np.ndarray, sign: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Key function: each entry's dense rank of ``sign * v`` among the entries with the same
    ``x``; 0 for an entry whose ``x`` no other entry shares.

    It separates users whose amounts in cents ``x = 100 v`` came out as the same float although
    their vouchers differ (the larger voucher has the larger exact remainder), and nobody else,
    so between different amounts with equal remainders the loss decides as the rule says.
    """

    def key(idx: np.ndarray) -> np.ndarray:
        xs, vs = x[idx], sign * v[idx]
        order = np.lexsort((vs, xs))
        xs, vs = xs[order], vs[order]
        new_x = np.r_[True, xs[1:] != xs[:-1]]
        new_v = np.r_[True, vs[1:] != vs[:-1]]
        steps = np.cumsum(new_v & ~new_x)
        rank = steps - np.maximum.accumulate(np.where(new_x, steps, 0))
        out = np.empty(idx.shape[0], dtype=np.int64)
        out[order] = rank
        return out

    return key


def _spread(room: np.ndarray, d: int, keys: tuple[Key, ...]) -> np.ndarray:
    """Hand out ``d`` cents one at a time in passes over the users with room left, in the order of
    ``keys``; each user takes at most ``room_i``. Closed form: every user first gets
    ``min(room_i, k)`` for the largest ``k`` with ``sum(min(room, k)) <= d`` (``k`` full passes),
    then one more cent goes to the leading users among those with ``room_i > k``."""
    extra = np.zeros(room.shape[0], dtype=np.int64)
    if d <= 0:
        return extra
    k = 0
    if d > int(np.count_nonzero(room)):
        lo, hi = 1, int(room.max())
        while lo < hi:  # bisection on k: O(n log max room), only off the normal path
            mid = (lo + hi + 1) // 2
            if int(np.minimum(room, mid).sum()) <= d:
                lo = mid
            else:
                hi = mid - 1
        k = lo
        extra = np.minimum(room, k)
    rest = d - int(extra.sum())
    if rest > 0:
        first = keys[0]
        if callable(first):
            extra[_top(keys, np.flatnonzero(room > k), rest)] += 1
        else:
            # everyone at once, those without room last: no list of the others to gather by
            extra[_top_by(pick(room > k, first, -np.inf), keys[1:], None, rest)] += 1
    return extra


# --------------------------------------------------------------------------- rounding


def _validate(
    v: np.ndarray, lower: np.ndarray, upper: np.ndarray, loss: np.ndarray, user_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    v = np.asarray(v, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    user_id = np.asarray(user_id)
    n = v.shape[0] if v.ndim == 1 else -1
    arrays = {"vouchers": v, "lower": lower, "upper": upper, "loss": loss, "user_id": user_id}
    for name, a in arrays.items():
        if a.ndim != 1 or a.shape[0] != n:
            raise ValueError(
                f"{name} must be 1-D with one entry per user ({n}), got shape {a.shape}"
            )
    if not np.issubdtype(user_id.dtype, np.integer):
        raise InputError(f"column {N.USER_ID} must hold integers, got dtype {user_id.dtype}.")
    user_id = user_id.astype(np.int64, copy=False)
    if not np.isfinite(v).all():
        bad = ~np.isfinite(v)
        i = int(np.flatnonzero(bad)[0])
        raise SolverError(
            f"the solver returned {int(bad.sum())} vouchers that are not finite numbers "
            f"(e.g. user_id {int(user_id[i])}: {v[i]!r}); they cannot be paid."
        )
    if np.isnan(loss).any():
        bad = np.isnan(loss)
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"column {N.LOSS_USD} has {int(bad.sum())} missing values (e.g. user_id {int(user_id[i])}); "
            "the loss orders ties when cents are rounded."
        )
    if n > 1 and bool(np.all(user_id[1:] > user_id[:-1])):
        return v, lower, upper, loss, user_id  # strictly increasing (the pipeline's order): unique
    s = np.sort(user_id)
    dup = s[1:] == s[:-1]
    if dup.any():
        raise InputError(
            f"column {N.USER_ID} repeats {int(dup.sum())} ids (e.g. {int(s[1:][dup][0])}); "
            "each user must appear once to be paid once."
        )
    return v, lower, upper, loss, user_id


def _snap_band(bound: np.ndarray, side: float, snap_rtol: float) -> np.ndarray:
    r"""The edge of a bound's snapping band in cents, :math:`b \pm (\text{snap} \cdot
    \max(|b|, 1) + \tau(b))` with :math:`b = 100\,\ell_i` (``side = 1``) or
    :math:`\min(100\,h_i, M)` (``side = -1``), evaluated in the same order as written;
    one number (broadcast) when every user has the same bound."""
    if bound.size > 1 and bound[0] == bound.min() == bound.max():
        # one floor (or cap) for everyone, the common case: the band of that one number
        return _snap_band_of(bound[:1], side, snap_rtol)
    return _snap_band_of(bound, side, snap_rtol)


def _snap_band_of(bound: np.ndarray, side: float, snap_rtol: float) -> np.ndarray:
    b = bound * 100.0
    if side < 0:
        np.minimum(b, float(MAX_CENTS), out=b)
    a = np.abs(b)
    band = np.maximum(a, 1.0)
    band *= snap_rtol
    a *= 4.0 * _EPS
    a += CENT_TOL
    band += a
    if side > 0:
        band += b
    else:
        np.subtract(b, band, out=band)
    return band


def round_to_cents_report(
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: float,
    *,
    exhaust: bool,
    loss: np.ndarray,
    user_id: np.ndarray,
    snap_rtol: float = SNAP_RTOL,
    in_cents: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, RoundingReport]:
    r"""Round vouchers to integer cents by largest remainder; also return a :class:`RoundingReport`.

    Let :math:`x_i = 100\,v_i`, :math:`[\underline c_i, \overline c_i]` the cent bounds of
    :func:`bounds_to_cents` and :math:`T` the target total (see the module docstring). Each user
    has a rounded-down and a rounded-up amount inside the bounds,

    .. math::

        f_i = \operatorname{clip}(\lfloor x_i \rfloor, \underline c_i, \overline c_i),\qquad
        g_i = \operatorname{clip}(\lceil x_i \rceil, \underline c_i, \overline c_i),

    with :math:`f_i = g_i =` the bound for a voucher within ``snap_rtol`` of its floor or cap, and
    :math:`f_i = g_i = x_i` for one within :data:`CENT_TOL` of a whole cent.

    1. If :math:`\sum f \le T \le \sum g` (the normal case), start from :math:`f` and give one
       cent to each of the :math:`T - \sum f` users with :math:`g_i > f_i` that come first in the
       order: larger remainder :math:`x_i - f_i`, then larger loss, then smaller user id. (Users
       whose :math:`x_i = 100 v_i` came out as the same float although their :math:`v_i` differ
       are ordered by :math:`v_i` before the loss: the larger voucher has the larger exact
       remainder. Nobody else is ordered by :math:`v`.)
    2. If :math:`T > \sum g`, start from :math:`g` and hand out the rest in passes (one cent per
       user per pass, never above the cap) in the order larger :math:`x_i - g_i`, larger loss,
       smaller user id (with the same exception).
    3. If :math:`T < \sum f`, start from :math:`f` and take cents away in passes (never below the
       floor) in the exact reverse order of step 1.

    Guarantees
    ----------
    * :math:`\underline c_i \le c_i \le \overline c_i` and :math:`\sum c = T` (so exactly the
      budget in exhaust mode, at most the budget otherwise).
    * **Within one cent.** If the bounds are whole cents, :math:`v` is feasible and
      :math:`T = \operatorname{round}(\sum x)` or :math:`T = \sum x`: then
      :math:`\underline c_i \le f_i \le x_i \le g_i \le \overline c_i`, so
      :math:`\sum f \le \lfloor \sum x \rfloor \le T \le \lceil \sum x \rceil \le \sum g`; step 1
      applies, :math:`c_i \in \{f_i, g_i\}` and :math:`|c_i - x_i| < 1` (up to :data:`CENT_TOL`
      where a voucher was read as a whole cent).
    * **Monotone.** For two users with the same bounds, :math:`v_i > v_j \Rightarrow c_i \ge c_j`.
      :math:`f` and :math:`g` are non-decreasing in :math:`x` (snapping to a bound or a whole cent
      is non-decreasing too), so :math:`f_i > f_j` gives :math:`c_i \ge f_i \ge g_j \ge c_j`. If
      :math:`f_i = f_j`, both candidates of step 1 share :math:`f`, so their order is the order of
      :math:`x` and then :math:`v`: whoever of the two gets a cent, :math:`i` gets it first; if only
      :math:`j` is a candidate then :math:`g_j > f_j = f_i = g_i`, impossible as :math:`g` is
      monotone. Steps 2 and 3 order users with equal start by :math:`x` (then :math:`v`) in the
      same way, and a user with a larger start keeps at least as many cents after the passes.
      Equal :math:`v` cannot always get equal cents (the total is fixed): they differ by at most
      one cent, the larger loss and then the smaller id first.
    * **Higher weight never gets less.** With a solver monotone in weight,
      :math:`v_i = \operatorname{clip}((w_i/\lambda)^{1/\alpha}, \ell, h)`, :math:`w_i > w_j`
      gives :math:`v_i \ge v_j`. If :math:`v_i > v_j` the point above applies. If
      :math:`v_i = v_j` both sit on the same bound, or are interior with weights equal to float
      precision (the solver itself could not tell them apart; the loss, then the id, decide). On
      a bound :math:`f_i = g_i = f_j = g_j`, snapping included, so in step 1 neither moves.
      Steps 2 and 3 only run when the vouchers do not add up to the target (a solver that missed
      the budget, or bounds that are not whole cents); there equal vouchers on a bound are also
      ordered by loss, then id, since rounding sees vouchers, not weights.
    * **Deterministic**: the result per user id does not depend on the order of the input rows.

    Parameters
    ----------
    v
        Continuous vouchers in USD (float64), one per user.
    lower, upper
        Per-user floor and cap in USD.
    budget
        Budget in USD; must be a whole number of cents (:func:`budget_to_cents`).
    exhaust
        Pay exactly the budget (``True``) or at most it.
    loss
        Loss in USD per user (tie-break: larger first).
    user_id
        Unique int64 user ids (last tie-break: smaller first).
    snap_rtol
        Relative distance from a bound under which a voucher counts as on it.
    in_cents
        ``lower`` and ``upper`` already in cents (see :func:`bounds_to_cents`).

    Raises
    ------
    InfeasibleError
        The cent bounds cannot meet the target: floors above the budget, or (exhaust) caps below
        it; the message says how many cents cannot be placed.
    SolverError
        A voucher is NaN or infinite.
    InputError
        Repeated user ids or missing losses.
    """
    v, lower, upper, loss, user_id = _validate(v, lower, upper, loss, user_id)
    n = v.shape[0]
    lo_c, hi_c = bounds_to_cents(lower, upper, user_id=user_id, in_cents=in_cents)
    budget_c = budget_to_cents(budget)
    sum_lo, sum_hi = int(lo_c.sum()), int(hi_c.sum())
    if sum_lo > budget_c:
        raise InfeasibleError(
            f"the floors of {n:,} users add up to {sum_lo:,} cents but the budget is {budget_c:,} "
            f"cents: {sum_lo - budget_c:,} cents of floors cannot be paid.",
            hint="lower the floor, raise the budget, or tighten eligibility.",
        )
    x = v * 100.0
    if exhaust:
        if sum_hi < budget_c:
            raise InfeasibleError(
                f"the caps of {n:,} users add up to {sum_hi:,} cents but the budget to exhaust is "
                f"{budget_c:,} cents: {budget_c - sum_hi:,} cents cannot be placed.",
                hint="raise the caps, or allow unspent budget (exhaust = false).",
            )
        target = budget_c
    else:
        target = min(budget_c, int(np.rint(x.sum())), sum_hi)
        target = max(target, sum_lo)

    # Rounded-down / rounded-up amounts inside the bounds (see the docstring). The arithmetic is
    # done in place on a few buffers: at a million users each fresh temporary costs as much as
    # the operation that fills it.
    at_lo = x <= _snap_band(lower, 1.0, snap_rtol)
    at_hi = x >= _snap_band(upper, -1.0, snap_rtol)
    # the bounds in cents as floats (exact: below 2**53), for branch-free selection and clips
    lo_f, hi_f = lo_c.astype(np.float64), hi_c.astype(np.float64)
    # A voucher in a bound's band is that bound (a whole number of cents, so both of its
    # roundings are the bound); the floor's band wins when floor and cap are less than a cent
    # apart (then lo_c == hi_c and it does not matter).
    xs = pick(at_lo, lo_f, pick(at_hi, hi_f, x))
    del at_lo, at_hi
    whole = np.rint(xs)
    off = xs - whole
    tol = np.abs(xs)
    tol *= 4.0 * _EPS
    tol += CENT_TOL
    near = np.abs(off) <= tol
    del tol
    # floor and ceil, except that a value within the tolerance of a whole cent is that cent:
    # floor(xs) is that cent minus one when xs lies just below it, ceil(xs) plus one just above
    f = np.floor(xs)
    f += near & (off < 0.0)
    g = f + ~near  # ceil(xs) with the same exception: that cent near one, floor + 1 elsewhere
    del xs, whole, off, near
    f = np.clip(f, lo_f, hi_f, out=f).astype(np.int64)  # one pass each (min of max)
    g = np.clip(g, lo_f, hi_f, out=g).astype(np.int64)
    del lo_f, hi_f

    sum_f, sum_g = int(f.sum()), int(g.sum())
    neg_uid = ~user_id  # smaller id first; bitwise not cannot overflow, unlike -id
    mode: Mode
    if target < sum_f:
        mode = "extra_down"
        # the exact reverse of the giving order
        keys = (-(x - f), _rank_within_equal(x, v, -1.0), -loss, user_id)
        cents = f - _spread(f - lo_c, sum_f - target, keys)
    elif target <= sum_g:
        mode = "largest_remainder"
        keys = (x - f, _rank_within_equal(x, v, 1.0), loss, neg_uid)
        cents = f + _spread(g - f, target - sum_f, keys)
    else:
        mode = "extra_up"
        keys = (x - g, _rank_within_equal(x, v, 1.0), loss, neg_uid)
        cents = g + _spread(hi_c - g, target - sum_g, keys)

    diff = cents - f
    cents_up = int(np.maximum(diff, 0).sum())
    total = int(cents.sum())
    dev = cents - x
    np.abs(dev, out=dev)
    report = RoundingReport(
        n_users=n,
        budget_cents=budget_c,
        target_cents=target,
        total_cents=total,
        start_cents=sum_f,
        cents_up=cents_up,
        cents_down=cents_up - (total - sum_f),
        users_up=int(np.count_nonzero(diff > 0)),
        users_down=int(np.count_nonzero(diff < 0)),
        max_deviation_cents=float(dev.max()) if n else 0.0,
        mode=mode,
    )
    return cents, report


def round_to_cents(
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: float,
    *,
    exhaust: bool,
    loss: np.ndarray,
    user_id: np.ndarray,
    snap_rtol: float = SNAP_RTOL,
) -> np.ndarray:
    """Integer cents (int64) per user; see :func:`round_to_cents_report` for the method and its
    guarantees."""
    cents, _ = round_to_cents_report(
        v, lower, upper, budget, exhaust=exhaust, loss=loss, user_id=user_id, snap_rtol=snap_rtol
    )
    return cents


def _share_limits_cents(seg: Segment, budget_cents: int) -> tuple[int | None, int | None]:
    """A segment's share bounds in whole cents: at least ``ceil(m B)``, at most ``floor(M B)``.

    Shares are decimal knobs (0.4, 0.1); reading them through their shortest decimal form keeps
    ``0.4 * B`` exact instead of ``12000000000.000002`` cents.
    """
    lo = None if seg.min_share is None else math.ceil(Fraction(repr(seg.min_share)) * budget_cents)
    hi = None if seg.max_share is None else math.floor(Fraction(repr(seg.max_share)) * budget_cents)
    return lo, hi


def round_to_cents_by_segment(
    v: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    budget: float,
    *,
    exhaust: bool,
    loss: np.ndarray,
    user_id: np.ndarray,
    segments: tuple[Segment, ...] = (),
    in_cents: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, object]]:
    r"""Round to cents so that segment budget shares hold exactly in cents, not just the total.

    Rounding each user independently can push a segment over its maximum share (or under its
    minimum) by a few cents per member. With disjoint segments the users fall into groups
    :math:`g` (each segment, and everyone outside all segments); each group first gets a whole
    number of cents

    .. math::

        T_g = \operatorname{clip}\big(\operatorname{round}(100 \textstyle\sum_{i \in g} v_i),\;
              \max(\sum_g \underline c_i, \lceil m_g B \rceil),\;
              \min(\sum_g \overline c_i, \lfloor M_g B \rfloor)\big),

    then the few cents by which :math:`\sum_g T_g` misses the overall target go to the groups
    that were rounded down the most (up the most, when taking cents back), within those limits;
    finally each group is rounded by :func:`round_to_cents_report` to exactly :math:`T_g`. Within a
    group every guarantee of that function holds. Overlapping segments (outside the fast solver's
    reach) are rounded as one group and their shares are checked afterwards.

    Returns the cents and a JSON-safe report (per-group targets, largest deviation in cents).
    ``in_cents``: the bounds already in cents (see :func:`bounds_to_cents`).
    """
    v = np.asarray(v, dtype=np.float64)
    n = v.shape[0]
    budget_cents = budget_to_cents(budget)
    members = [np.asarray(s.members, dtype=bool) for s in segments]
    overlapping = bool(members) and bool((np.sum(members, axis=0) > 1).any())
    if not segments or overlapping:
        cents, rep = round_to_cents_report(
            v, lower, upper, budget, exhaust=exhaust, loss=loss, user_id=user_id, in_cents=in_cents
        )
        report: dict[str, object] = {"groups": "one", **rep.to_dict()}
        for seg, mask in zip(segments, members):
            lo_s, hi_s = _share_limits_cents(seg, budget_cents)
            got = int(cents[mask].sum())
            if (lo_s is not None and got < lo_s) or (hi_s is not None and got > hi_s):
                raise SolverError(
                    f"rounding to cents moves segment {seg.name!r} to {got / 100:,.2f} USD, "
                    f"outside its share [{(lo_s or 0) / 100:,.2f}, "
                    f"{(hi_s if hi_s is not None else budget_cents) / 100:,.2f}] USD.",
                    status="rounding",
                    hint="make the segments disjoint so each can be rounded on its own.",
                )
        return cents, report

    lo_c, hi_c = bounds_to_cents(lower, upper, user_id=user_id, in_cents=in_cents)
    label = np.full(n, len(segments), dtype=np.int64)
    for k, mask in enumerate(members):
        label[mask] = k
    groups = len(segments) + 1
    x = np.bincount(label, weights=v * 100.0, minlength=groups)
    floor_g = np.bincount(label, weights=lo_c, minlength=groups).round().astype(np.int64)
    cap_g = np.bincount(label, weights=hi_c, minlength=groups).round().astype(np.int64)
    low = floor_g.copy()
    high = cap_g.copy()
    for k, seg in enumerate(segments):
        lo_s, hi_s = _share_limits_cents(seg, budget_cents)
        if lo_s is not None:
            low[k] = max(low[k], lo_s)
        if hi_s is not None:
            high[k] = min(high[k], hi_s)
    if (low > high).any():
        k = int(np.flatnonzero(low > high)[0])
        name = segments[k].name if k < len(segments) else "users outside every segment"
        raise InfeasibleError(
            f"segment {name!r} cannot be paid a whole number of cents within its bounds and "
            f"share: it needs at least {low[k] / 100:,.2f} USD but may get at most "
            f"{high[k] / 100:,.2f} USD."
        )
    target = np.clip(np.round(x).astype(np.int64), low, high)
    total_x = float(v.sum() * 100.0)
    want = budget_cents if exhaust else min(budget_cents, round(total_x))
    missing = want - int(target.sum())
    # Groups rounded down the most take the missing cents first (and give back last); the group
    # index breaks ties so the result is deterministic.
    order = np.lexsort((np.arange(groups), -(x - target) if missing > 0 else (x - target)))
    for k in order:
        if missing == 0:
            break
        room = (high[k] - target[k]) if missing > 0 else (low[k] - target[k])
        step = min(missing, room) if missing > 0 else max(missing, room)
        target[k] += step
        missing -= step
    if missing != 0:
        raise InfeasibleError(
            f"the budget cannot be paid to the cent: {abs(missing) / 100:,.2f} USD cannot be "
            f"placed within the users' bounds and the segments' shares."
        )

    cents = np.zeros(n, dtype=np.int64)
    max_dev = 0.0
    for k in range(groups):
        idx = np.flatnonzero(label == k)
        if idx.size == 0:
            continue
        part, rep = round_to_cents_report(
            v[idx],
            np.asarray(lower)[idx],
            np.asarray(upper)[idx],
            int(target[k]) / 100.0,
            exhaust=True,
            loss=np.asarray(loss)[idx],
            user_id=np.asarray(user_id)[idx],
        )
        cents[idx] = part
        max_dev = max(max_dev, rep.max_deviation_cents)
    report = {
        "groups": "by_segment",
        "budget_cents": budget_cents,
        "total_cents": int(cents.sum()),
        "max_deviation_cents": max_dev,
        "group_targets_cents": {
            (segments[k].name if k < len(segments) else "(no segment)"): int(target[k])
            for k in range(groups)
        },
    }
    return cents, report
