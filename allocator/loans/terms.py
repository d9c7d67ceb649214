r"""The term sheet: loans rounded to cents and the constraint that decides each one.

**Money** is integer cents: each loan is the solver's amount rounded down to the cent and never
above any of its limits (each limit converted to cents by rounding down); if solver tolerance
leaves the total a few cents above the fund or the expected loss above its budget, the excess is
taken from the loans with the most room (then the highest default probability), and the cents
so removed are reported.

**Binding labels.** The term sheet names, per applicant, the constraint that decides its loan:
one of its own limits, the minimum ticket (holding a loan up, or excluding an applicant who
would borrow at the final prices), or the fund and/or the expected-loss budget through their
multipliers; :func:`binding_labels` states the rule and its tie order.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from allocator.errors import SolverFailedError
from allocator.kernel.money import CENTS_PER_USD, cents_to_usd, floor_cents_array
from allocator.loans import applications as D
from allocator.loans.problem import (
    BIND_EL,
    BIND_FUND,
    BIND_FUND_EL,
    BIND_INTERIOR,
    BIND_MIN_TICKET,
    BIND_MIN_TICKET_EXCLUDED,
    LoanProblem,
    marginal_utility,
)

# --- term sheet columns ---
TIER = "credit_tier"
PD = "default_probability"
WEIGHT = "weight"
COLLATERAL_LIMIT_USD = "collateral_limit_usd"
AMOUNT_CENTS = "amount_cents"
AMOUNT_USD = "amount_usd"
RATE = "rate"
EXPECTED_LOSS_USD = "expected_loss_usd"
BINDING = "binding"
TERM_SHEET_COLUMNS = (
    D.INSTITUTION_ID,
    TIER,
    PD,
    WEIGHT,
    D.REQUESTED_USD,
    COLLATERAL_LIMIT_USD,
    AMOUNT_CENTS,
    AMOUNT_USD,
    RATE,
    EXPECTED_LOSS_USD,
    BINDING,
)


def round_to_cents(P: LoanProblem, x: np.ndarray, on: np.ndarray) -> tuple[np.ndarray, int]:
    """Loans in cents: floor, clip to every limit, keep tickets at least T, then remove any
    excess over the fund or the expected-loss budget. Returns the cents and the cents removed
    beyond flooring."""
    ub = np.minimum.reduce(list(P.limits_cents().values()))
    cents = np.minimum(floor_cents_array(np.maximum(x, 0.0)), ub)
    T = P.min_ticket_cents
    floor_ = np.zeros(P.n, dtype=np.int64)
    if T > 0:
        floor_ = np.where(on, T, 0).astype(np.int64)
        cents = np.where(on, np.maximum(cents, T), 0)
    start = int(cents.sum())
    order_ids = np.array(P.ids)

    excess = int(cents.sum()) - P.fund_cents
    if excess > 0:
        room = cents - floor_
        for i in np.lexsort((order_ids, -room)):
            take = int(min(excess, room[i]))
            cents[i] -= take
            excess -= take
            if excess == 0:
                break
    el = cents_expected_loss(P, cents)
    if el > P.el_budget:
        for i in np.lexsort((order_ids, -P.el_coef)):
            if P.el_coef[i] <= 0:
                break
            room = int(cents[i] - floor_[i])
            need = math.ceil((el - P.el_budget) * CENTS_PER_USD / P.el_coef[i]) + 1
            cents[i] -= min(room, need)
            el = cents_expected_loss(P, cents)
            if el <= P.el_budget:
                break
    if int(cents.sum()) > P.fund_cents or cents_expected_loss(P, cents) > P.el_budget:
        raise SolverFailedError(
            "rounding the loans to cents could not keep the total within the "
            "fund and the expected-loss budget without dropping a minimum "
            "ticket; the solver's answer is too far off.",
            status="rounding",
        )
    return cents, start - int(cents.sum())


def cents_expected_loss(P: LoanProblem, cents: np.ndarray) -> float:
    return math.fsum((P.el_coef * cents).tolist()) / CENTS_PER_USD


def binding_labels(
    P: LoanProblem,
    cents: np.ndarray,
    lam: float | None,
    mu: float | None,
    fund_binding: bool,
    el_binding: bool,
) -> list[str]:
    r"""The constraint that decides each applicant's loan: the term sheet's ``binding`` column.

    With limits in cents :math:`R_i, C_i, K` (request, collateral, concentration, each rounded
    down), :math:`U_i = \min(R_i, C_i, K)`, minimum ticket :math:`T` (0: none), smallest
    possible loan :math:`t = \max(T, 1\text{ cent})`, loan :math:`x_i`, multipliers
    :math:`\lambda` (fund) and :math:`\mu` (expected-loss budget :math:`E`), price
    :math:`p_i = \lambda + \mu\,\mathrm{PD}_i\,\mathrm{LGD}` and tolerance
    :math:`\delta_i = \max(1\ \text{USD}, 10^{-6} U_i)` (solver tolerance and rounding to
    cents never move a loan further), the first rule that holds gives the label:

    1. :math:`U_i < t`: the limit attaining :math:`U_i` — no loan fits under the applicant's
       own limits (no collateral, or less than a ticket's worth), whatever the prices;
    2. :math:`x_i > 0` and :math:`x_i \ge U_i - \delta_i`: the limit attaining :math:`U_i`;
    3. :math:`x_i > 0`, :math:`T > 0` and :math:`x_i \le T + \delta_i`: ``min_ticket`` — the
       lower bound of a ticket holds the loan up;
    4. :math:`x_i > 0`: the shared constraints with a positive multiplier, ``fund``,
       ``el_budget`` or ``fund+el_budget`` (``interior`` if neither);
    5. :math:`x_i = 0` and :math:`\mathrm{PD}_i\,\mathrm{LGD}\,t > E`: ``el_budget`` — the
       smallest loan alone exceeds the budget (the fund cannot be the reason here: a fund
       below :math:`t` lets nobody borrow and is refused before solving);
    6. :math:`x_i = 0` and :math:`w_i\,u_\alpha'(s) = w_i s^{-\alpha} \le p_i`: the shared
       label of rule 4 — at these prices the applicant would not borrow even without a
       minimum ticket (the concave objective gives a positive amount exactly when the
       marginal utility at zero exceeds the price);
    7. :math:`x_i = 0` otherwise: ``min_ticket_excluded`` — it would borrow at these prices,
       but a ticket of at least :math:`T` did not fit (with :math:`T = 0`, a loan below a cent
       rounded down: the shared label).

    Ties between limits of equal value go to the request, then the collateral, then the
    concentration cap (the applicant's own figures before the fund-wide policy). Rules 1-2 come
    before 3, so a loan at a limit equal to the ticket is labelled by the limit: it could not
    be larger without the ticket rule either.

    Parameters
    ----------
    P : LoanProblem
        The model.
    cents : numpy.ndarray
        Final loans in cents.
    lam, mu : float or None
        Multipliers of the fund and the budget (utility per USD); None when unknown (the
        minimum-ticket pattern's polish failed), which skips rule 6.
    fund_binding, el_binding : bool
        Whether each shared constraint binds (see :func:`allocator.loans.allocate.shared_binding`).

    Returns
    -------
    list of str
        One of :data:`BINDING_STATES` per applicant, in the order of ``P.ids``.
    """
    limits = P.limits_cents()
    names = list(limits)  # requested, collateral, concentration: the tie order
    stack = np.vstack(list(limits.values()))
    ub = stack.min(axis=0)
    at_limit = [names[k] for k in np.argmin(stack, axis=0)]  # argmin takes the first of ties
    T = P.min_ticket_cents
    smallest = max(T, 1)
    shared = (
        BIND_FUND_EL
        if fund_binding and el_binding
        else BIND_FUND
        if fund_binding
        else BIND_EL
        if el_binding
        else BIND_INTERIOR
    )
    near = np.maximum(CENTS_PER_USD, np.ceil(1e-6 * ub)).astype(np.int64)  # one USD at least
    ticket_over_budget = P.el_coef * cents_to_usd(smallest) > P.el_budget
    if lam is not None and mu is not None:
        with np.errstate(divide="ignore"):
            # s = 0 (allowed for alpha < 1) makes the marginal utility at zero infinite.
            marginal0 = P.weight * float(marginal_utility(np.array(P.shift), P.alpha))
        # A relative margin keeps an alpha = 0 tie (weight equal to price) on the price side.
        priced_out = marginal0 <= (lam + mu * P.el_coef) * (1 + 1e-9)
    else:
        priced_out = np.zeros(P.n, dtype=bool)
    out = []
    for i in range(P.n):
        c = int(cents[i])
        if ub[i] < smallest or (c > 0 and c >= ub[i] - near[i]):
            out.append(at_limit[i])
        elif c > 0:
            out.append(BIND_MIN_TICKET if T > 0 and c <= T + near[i] else shared)
        elif ticket_over_budget[i]:
            out.append(BIND_EL)
        elif priced_out[i] or T <= 0:
            out.append(shared)
        else:
            out.append(BIND_MIN_TICKET_EXCLUDED)
    return out


def term_sheet(
    P: LoanProblem, cents: np.ndarray, amount: np.ndarray, binding: list[str]
) -> pl.DataFrame:
    """The term sheet: one row per applicant in the order of ``P.ids``, with the columns of
    :data:`TERM_SHEET_COLUMNS` (``amount_usd`` is ``amount``, the cents in USD)."""
    el_each = P.el_coef * amount
    return pl.DataFrame(
        {
            D.INSTITUTION_ID: list(P.ids),
            TIER: list(P.tier),
            PD: P.pd,
            WEIGHT: P.weight,
            D.REQUESTED_USD: P.requested,
            COLLATERAL_LIMIT_USD: P.collateral_limit,
            AMOUNT_CENTS: cents,
            AMOUNT_USD: amount,
            RATE: P.rate,
            EXPECTED_LOSS_USD: el_each,
            BINDING: binding,
        },
        schema={
            D.INSTITUTION_ID: pl.String,
            TIER: pl.String,
            PD: pl.Float64,
            WEIGHT: pl.Float64,
            D.REQUESTED_USD: pl.Float64,
            COLLATERAL_LIMIT_USD: pl.Float64,
            AMOUNT_CENTS: pl.Int64,
            AMOUNT_USD: pl.Float64,
            RATE: pl.Float64,
            EXPECTED_LOSS_USD: pl.Float64,
            BINDING: pl.String,
        },
    )
