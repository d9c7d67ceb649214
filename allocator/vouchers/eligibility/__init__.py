r"""Who qualifies for a voucher, and why everyone else does not.

The rules are those of :class:`~allocator.settings.models.EligibilityRules`. For each event :math:`e`
of user :math:`i`

.. math::

    \ell_e = \big[(q_e + f_e\,[\text{include\_fees}])\; p_{a_e}(t_e)\big]_{10^{-9}},
    \qquad
    G_i = \sum_{e \in C_i} \ell_e,

where :math:`q_e` is the realised loss and :math:`f_e` the liquidation fee, both in the
settlement asset :math:`a_e`, :math:`p_a(t)` is the USD price of the latest bar of asset
:math:`a` with bar time :math:`\le t`, and :math:`[\cdot]_{10^{-9}}` rounds to the nano-dollar:
the float product with :math:`10^9` rounded half to even, which can differ by one nano-dollar
from rounding the exact decimal product when that product lies within a float's last place of
a half (a user's loss moves by at most a nano-dollar per event; the sums stay exact). :math:`C_i` holds the *counted* events of user
:math:`i`: product in ``rules.products`` and time in the half-open window
``[window_start, window_end)``. The announced "2025-10-11 23:59 inclusive" therefore means
"through 23:59:59.999999": an event at 2025-10-12 00:00:00 is outside.

The counted loss is :math:`L_i = G_i` (``depeg_policy`` ``"exclude"`` or ``"ignore"``) or
:math:`L_i = \max(G_i - D_i, 0)` with the depeg compensation :math:`D_i` (``"net"``), and the
loss ratio is :math:`r_i = L_i / A_i` for snapshot net assets :math:`A_i > 0`, :math:`+\infty`
when :math:`A_i \le 0`.

Every *liquidated user* (a distinct ``user_id`` of the events table, any product, any time) is
either eligible or excluded with the first rule, in the order of :data:`allocator.names.REASONS`,
that fails:

``product_not_covered``
    no counted event, and the user does not fall under ``outside_window`` (below): either the
    user has events inside the window on non-covered products only, or no covered-product event
    at all. In words: if the user was liquidated during the window, the product is what
    disqualifies.
``outside_window``
    no counted event, at least one covered-product event, and no event of any product inside
    the window.
``no_user_record``
    ``user_id`` is missing from the users table.
``restricted_region``
    ``region`` is in ``rules.restricted_regions``.
``kyc_not_verified``
    ``rules.require_kyc`` and ``kyc_status`` is not ``"verified"``.
``depeg_compensated``
    ``depeg_policy == "exclude"`` and ``depeg_comp_usd > 0``.
``below_min_loss``
    not :math:`L_i \ge` ``min_loss_usd``.
``no_snapshot``
    ``user_id`` is missing from the snapshot.
``nonpositive_net_assets``
    :math:`A_i \le 0` and ``nonpositive_net_assets == "exclude"``.
``below_loss_ratio``
    not :math:`r_i \ge` ``min_loss_ratio``.

Phase-in band. With ``phase_in_loss_usd`` :math:`p < m` = ``min_loss_usd``, the loss rule
becomes :math:`L_i > p` and the eligible feature matrix gets the column ``phase_factor``,
:math:`\phi_i = \phi^L_i \phi^r_i` with :math:`\phi^L_i = \min(1, (L_i - p)/(m - p))`
(:mod:`allocator.kernel.phase`, which writes the ramp once);
``phase_in_ratio`` does the same for the ratio (:math:`r_i > p_r`, an infinite ratio gives 1).
The lower end is excluded because a factor of 0 would pay nothing. Without either option the
rules, the columns and the outputs are exactly those of the hard thresholds.

Both thresholds are exact ``>=`` comparisons on Float64. The ratio rule is applied to the
published column, ``fl(L_i / A_i) >= min_loss_ratio``, so that anyone can re-check it from
``eligible.parquet``. IEEE division is correctly rounded and rounding is monotone, so a user
whose ratio of the stored values is at least the decimal threshold in exact arithmetic (300 of
1000 against 0.30) always passes; only a ratio within half a unit in the last place below the
threshold is rounded up to it and passes too. The multiplied form ``L >= 0.3 * A`` would instead
exclude 30 USD against 100 USD, because ``0.3 * 100 == 30.000000000000004``. A loss itself built
in floating point as ``0.3 * A`` may land one unit in the last place under 30% and then fails,
as its published ratio shows.

Sums are exact. Event losses are summed as whole nano-dollars in 128-bit integers, so a user's
loss does not depend on the order in which a parallel group-by meets the events (Float64 sums
do, in the last bits, from run to run), the outputs are byte-identical on every rerun, and
decimal amounts add as decimals: 1.91 + 32.01 + 16.08 is exactly 50, not 49.99999999999999.

A price is needed only for counted events; a counted event whose asset has no bar at or before
it, or whose USD loss is not finite, is an :class:`~allocator.errors.InputError`.

The work is two Polars queries. Stage 1, the one pass over the events, computes per-event
nano-dollar losses and aggregates them per user (Polars' default engine, ``"auto"``; the
``engine`` argument can ask for ``"streaming"``, which gives the same bytes). Prices are not joined: when
every bar time is a multiple of a grid step (one minute for minute bars) the price of each
(asset, grid cell) of the window is laid out in a small dense array and each event gathers its
price by index, which avoids sorting the events; otherwise an as-of join is used. Stage 2
filters the users and snapshot tables to the liquidated users with a hash set, joins them to
the per-user frame and applies the rules in order (in-memory engine). With the input checks
folded in (``checks``, from ``load_inputs(..., validate="folded")``), stage 1 also sums a
problem flag per event and the users and snapshot filters flag every row they read, so each
input file is read once; data breaking a rule then raises the error a separate validation
would have raised.

The modules: :mod:`~allocator.vouchers.eligibility.rules` (the configured rules, checked, and
their bands), :mod:`~allocator.vouchers.eligibility.schema` (input contracts and output
columns), :mod:`~allocator.vouchers.eligibility.prices` (event prices),
:mod:`~allocator.vouchers.eligibility.losses` (loss aggregation over the events),
:mod:`~allocator.vouchers.eligibility.reasons` (each rule decided per user, the reasons and
their details), :mod:`~allocator.vouchers.eligibility.reconciliation`,
:mod:`~allocator.vouchers.eligibility.compute` (the query) and
:mod:`~allocator.vouchers.eligibility.files` (reading a data directory, writing the outputs).
"""

from allocator.vouchers.eligibility.compute import (
    EligibilityResult,
    UserTable,
    compute_eligibility,
    decide_users,
    event_rules,
    user_table,
)
from allocator.vouchers.eligibility.files import (
    RECONCILIATION_FILE,
    ROW_GROUP_ROWS,
    run_eligibility,
    write_eligibility,
)
from allocator.vouchers.eligibility.losses import MAX_LOSS_USD, NANO_PER_USD
from allocator.vouchers.eligibility.prices import MAX_GRID_CELLS
from allocator.vouchers.eligibility.reasons import RuleDecision, covered_event, in_window_event
from allocator.vouchers.eligibility.reconciliation import RECONCILE_RTOL, Reconciliation
from allocator.vouchers.eligibility.rules import has_phase_in, loss_band, ratio_band
from allocator.vouchers.eligibility.schema import eligible_columns, excluded_columns

__all__ = [
    "MAX_GRID_CELLS",
    "MAX_LOSS_USD",
    "NANO_PER_USD",
    "RECONCILE_RTOL",
    "RECONCILIATION_FILE",
    "ROW_GROUP_ROWS",
    "EligibilityResult",
    "Reconciliation",
    "RuleDecision",
    "UserTable",
    "compute_eligibility",
    "covered_event",
    "decide_users",
    "eligible_columns",
    "event_rules",
    "excluded_columns",
    "has_phase_in",
    "in_window_event",
    "loss_band",
    "ratio_band",
    "run_eligibility",
    "user_table",
    "write_eligibility",
]
