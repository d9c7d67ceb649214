r"""The groups of users that move together when the active set is held fixed.

The model (:mod:`allocator.kernel.problem`) is

.. math::

    \max_v \sum_i w_i u_\alpha(v_i)\quad\text{s.t.}\quad \ell_i \le v_i \le h_i,\quad
    \sum_i v_i \le B\;(= B \text{ in exhaust mode}),\quad
    m_s B \le \sum_{i\in S_s} v_i \le M_s B .

With the active set held fixed, users fall into groups that move together:

* users at their floor or cap (``bound_state != 0``) do not move;
* the interior users of a (disjoint) segment whose min or max share *binds* (positive
  multiplier) form one group :math:`g = s` with its own price :math:`\lambda_s`; the segment's
  total is :math:`\sigma_s B` (:math:`\sigma_s` the binding share), so
  :math:`\mathrm{d}\sum_{i \in s} v_i / \mathrm{d}B = \sigma_s`;
* every other interior user is *free* and faces the budget price :math:`\lambda`; when the
  budget binds the free users absorb the rest,
  :math:`\mathrm{d}\sum_{i \in F} v_i / \mathrm{d}B = \tau_F = 1 - \sum_{s \text{ binding}}
  \sigma_s` (0 when the budget is slack).

Under linear utility (``alpha = 0``) users whose weight equals their group's price are *tied at
the margin* (:func:`ties_at_margin`).
"""

from __future__ import annotations

import numpy as np

from allocator.kernel.allocation import Allocation
from allocator.kernel.feasibility import InvalidProblemError, segments_disjoint
from allocator.kernel.problem import AllocationProblem

#: A segment multiplier counts as binding above this fraction of the prices around it.
_BINDING_RTOL = 1e-9
#: Weights this close (relative) to a price tie at the margin of linear utility.
TIE_RTOL = 1e-9


def _binding_shares(problem: AllocationProblem, allocation: Allocation) -> dict[int, float]:
    """Segment index -> its binding share (min or max), for the segments whose multiplier binds."""
    lam = float(allocation.shadow_price)
    out: dict[int, float] = {}
    for k, seg in enumerate(problem.segments):
        mu_min, mu_max = allocation.segment_prices.get(seg.name, (0.0, 0.0))
        scale = max(lam, mu_min, mu_max, np.finfo(float).tiny)
        if mu_min > _BINDING_RTOL * scale and seg.min_share is not None:
            out[k] = seg.min_share
        elif mu_max > _BINDING_RTOL * scale and seg.max_share is not None:
            out[k] = seg.max_share
    return out


def groups(problem: AllocationProblem, allocation: Allocation) -> tuple[np.ndarray, np.ndarray]:
    r"""The groups of the module docstring: ``(group, tau)``.

    ``group[i]`` is -1 for a user at a bound, 0 for a free interior user and ``k + 1`` for an
    interior user of binding segment ``k``; ``tau[g + 1]`` is :math:`\tau_g`, the share of an
    extra budget dollar that group ``g`` receives (``tau[0]`` for the users at bounds is 0).

    Raises
    ------
    InvalidProblemError
        The segments overlap (the groups are then not separable).
    """
    if not segments_disjoint(problem):
        raise InvalidProblemError(
            "sensitivities need disjoint segments, and some users belong to two segments",
            hint="remove the overlap between the scenario's segments",
        )
    n = problem.n
    # 0 inside, -1 at a bound: counted, not selected (a select branches on every user)
    group = (np.asarray(allocation.bound_state) == 0).astype(np.int64)
    group -= 1
    tau = np.zeros(len(problem.segments) + 2)
    lam = float(allocation.shadow_price)
    taken = 0.0
    for k, share in _binding_shares(problem, allocation).items():
        members = np.asarray(problem.segments[k].members, dtype=bool)
        group += (k + 1) * (members & (group == 0))
        tau[k + 2] = share
        taken += share
    assert group.shape == (n,)
    budget_binds = problem.exhaust or lam > 0.0
    tau[1] = (1.0 - taken) if budget_binds else 0.0
    return group, tau


def ties_at_margin(problem: AllocationProblem, allocation: Allocation) -> bool:
    r"""Whether two users with room share a group's price as their weight (``alpha = 0``).

    Under linear utility a group's price is its marginal weight. Users whose weight equals it
    (relative :data:`TIE_RTOL`) and whose bounds leave room are *tied at the margin*: the fast
    solver shares what is left among them in proportion to their room, while for any
    :math:`\alpha > 0` they share it as :math:`v_i \propto e^{\omega_i}` (equal weights).
    With at most one such user per group the allocation does not change on a stretch
    :math:`[0, \alpha_0)`; with two or more it jumps as soon as ``alpha`` leaves 0.
    """
    lam = float(allocation.shadow_price)
    price = np.full(problem.n, lam)
    member = np.zeros(problem.n, dtype=np.int64)
    for k in _binding_shares(problem, allocation):
        seg = problem.segments[k]
        mu_min, mu_max = allocation.segment_prices.get(seg.name, (0.0, 0.0))
        mask = np.asarray(seg.members, dtype=bool)
        price[mask] = lam - mu_min + mu_max
        member[mask] = k + 1
    w = np.asarray(problem.weights, dtype=np.float64)
    room = np.asarray(problem.upper, dtype=np.float64) > np.asarray(problem.lower, dtype=np.float64)
    tied = room & (price > 0) & (np.abs(w - price) <= TIE_RTOL * price)
    return bool(np.any(np.bincount(member[tied], minlength=len(problem.segments) + 1) >= 2))


def group_sums(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum of ``values`` per group, indexed ``g + 1`` (bound users at 0)."""
    if group.max(initial=-1) <= 0:  # no binding segment: the free users and the rest
        out = np.zeros(n_groups + 2)
        out[0], out[1] = float(np.dot(values, group < 0)), float(np.dot(values, group == 0))
        return out
    return np.bincount(group + 1, weights=values, minlength=n_groups + 2)


def absorb_shares(problem: AllocationProblem, v: np.ndarray) -> np.ndarray:
    """How a group's interior users share a change of its total: vouchers (alpha > 0) or room."""
    if problem.alpha > 0:
        return np.asarray(v, dtype=np.float64)
    return np.asarray(problem.upper, dtype=np.float64) - np.asarray(problem.lower, dtype=np.float64)
