r"""Fairness audit of an allocation: inequality, coverage by loss size, and ordering violations.

Everything is computed from ``allocations.parquet`` (and, for the attribution of violations, the
run's objective), so anyone holding a run directory can re-check it.

Inequality and coverage
    Gini coefficient and Lorenz curve of the vouchers (:mod:`allocator.analysis.metrics`), and per loss
    band the count, median, 10th and 90th percentile of the coverage :math:`v_i / L_i`.

Ordering violations
    With loss :math:`L`, loss ratio :math:`r` and voucher :math:`v` (integer cents), two kinds
    of pairs :math:`(i, j)` are counted exactly:

    * **monotonicity**: :math:`L_j > L_i` and :math:`v_j < v_i` (a larger loss, a smaller voucher);
    * **envy**: :math:`L_j \ge L_i`, :math:`r_j \ge r_i`, not both equal, and :math:`v_j < v_i`
      (user :math:`j` lost at least as much, and at least as large a share of net assets, yet
      receives less than :math:`i`).

Attribution
    In a correct run such a pair can only come from a documented factor. Vouchers are
    :math:`v = \operatorname{clip}((w/\lambda_s)^{1/\alpha}, \ell, h)` rounded to cents, which is
    non-decreasing in the weight :math:`w` for users with the same bounds and the same segment
    price :math:`\lambda_s`; rounding gives a user with a higher weight and the same bounds
    never less, and breaks exact ties by the larger loss, then the smaller user id. The weight
    :math:`\log w = a\log L + b\log\min(r,\bar r) + \sum_k c_k x_k [+ (\alpha-1)\log L]` is
    non-decreasing in :math:`L` and :math:`r` when the exponents are :math:`\ge 0`. So each raw
    count is split along a cascade of restrictions, each stage counting the pairs that the
    previous stage kept but this one drops:

    1. ``segment``: their segments (hence segment prices) differ;
    2. ``features``: the non-loss/ratio part of their log-weight,
       :math:`\sum_k c_k x_k = \log w - (\text{loss, ratio and coverage factors})`, differs
       (needs the objective; without it every user is assumed to have the same features);
    3. ``bounds``: their cent bounds (``lower_cents``, ``upper_cents``) differ and at least one
       of the two is paid a bound. Two users strictly inside their bounds are paid
       :math:`(w/\lambda_s)^{1/\alpha}` whatever the bounds are, so they stay in the check:
       with a coverage cap nearly every user has bounds of their own, and keeping only pairs
       with equal bounds would leave almost nothing to check;
    4. monotonicity only, ``ratio``: :math:`r_j < r_i`, the ratio lowers :math:`j`'s weight
       (skipped when the objective is known and its ratio exponent is 0);
    5. envy only, ``rounding_tie``: equal loss and equal weight, so equal continuous vouchers,
       and the cent went to the smaller user id.

    The order only decides which factor a pair is credited to when several apply; the
    unexplained pairs are the same in any order.

    What remains is **unexplained** and must be zero when the weights are monotone
    (``expected_zero``: effective loss exponent and ratio exponent :math:`\ge 0`).

The modules: :mod:`~allocator.analysis.audit.counting` (the exact pair counts),
:mod:`~allocator.analysis.audit.results` (what the audit reports, and its text) and
:mod:`~allocator.analysis.audit.attribution` (the columns, the cascade of factors, the examples and
:func:`audit`).
"""

from __future__ import annotations

from allocator.analysis.audit.attribution import (
    FEATURE_RTOL,
    LORENZ_POINTS,
    MAX_EXAMPLES,
    audit,
    weights_monotone,
)
from allocator.analysis.audit.counting import count_envy, count_inversions, count_monotonicity
from allocator.analysis.audit.results import Audit, BandCoverage, ViolationPair, Violations

__all__ = [
    "FEATURE_RTOL",
    "LORENZ_POINTS",
    "MAX_EXAMPLES",
    "Audit",
    "BandCoverage",
    "ViolationPair",
    "Violations",
    "audit",
    "count_envy",
    "count_inversions",
    "count_monotonicity",
    "weights_monotone",
]
