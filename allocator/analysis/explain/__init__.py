r"""Why did a user get this amount? A per-user explanation, from a run directory alone.

:func:`explain_user` reads the run directory and the input files its manifest names, and
rebuilds the user's case step by step, checking each step against what the run wrote. First,
:func:`allocator.runs.reader.load_run` refuses a damaged or changed run directory, and input files
whose sha256 is not the manifest's (edited or regenerated since the run). Then:

1. **Liquidations.** The user's events are read from the liquidations file (a lazy scan filtered
   on ``user_id``), valued in USD at the latest price bar at or before each event
   (realised loss, plus the fee when ``include_fees``), and grouped by product and by whether
   they counted (covered product inside the window) or not.
2. **Eligibility.** :func:`allocator.vouchers.eligibility.compute_eligibility` is run on the one-user
   subsets of the four input tables with the run's eligibility rules. Eligibility is per user,
   so the result must equal the run's row: the loss (to a nano-dollar), the reason of an
   exclusion and the weight are checked against ``allocations.parquet`` / ``excluded.parquet``,
   and an :class:`~allocator.errors.InputError` says the inputs changed since the run otherwise.
   Which rules the user fails, in order, and the phase-in factors are read from that run's
   per-user decision (:class:`~allocator.vouchers.eligibility.RuleDecision`), not decided
   again: an excluded user gets the first failing rule in words, its numbers, how far they were
   from passing and the other failing rules. With a phase-in band
   (``eligibility.phase_in_loss_usd`` / ``phase_in_ratio``) the rule of that threshold is the
   band's lower end, passed strictly (:math:`L_i > p`, :mod:`allocator.kernel.phase`).
3. **Weight.** :math:`\log w_i = \sum_k f_{ik}` by factor (:func:`allocator.vouchers.weights.weight_factors`:
   loss, ratio, each feature, coverage, and the phase-in factor :math:`\log\phi_i` when the
   rules have a band). Each factor is shown as its log contribution
   :math:`f_{ik}`, its multiplicative factor :math:`e^{f_{ik}}` and against a **reference user**,
   the median-weight eligible user :math:`m` (the lower median of ``weight``, ties by smaller
   user id): :math:`w_i / w_m = \prod_k e^{d_k}` with :math:`d_k = f_{ik} - f_{mk}`, and the
   factor's **share** of the log-weight gap :math:`s_k = d_k / \sum_j |d_j|` (signed, the
   :math:`|s_k|` add up to 1; all 0 when the user's weight equals the median's). The median user
   is a meaningful zero point: an absolute log-weight depends on units (USD vs cents), the gap
   to a typical user does not, and at interior vouchers it is what sets
   :math:`v_i / v_m = (w_i / w_m)^{1/\alpha}`.
4. **Amount.** The user's price is the run's shadow price :math:`\lambda`, plus the segment
   multipliers of the segments the user is in (:math:`\lambda_i = \lambda + \sum_{s\ni i}
   (\mu^{\max}_s - \mu^{\min}_s)`, from ``manifest["segment_prices"]``). The closed form
   :math:`(w_i/\lambda_i)^{1/\alpha}`, clipped to :math:`[\ell_i, h_i]`, is the continuous
   voucher; rounding to cents moves it by less than a cent, which is verified and shown. The
   bounds are the whole cents the problem is posed in (:func:`allocator.kernel.money.whole_cent_bounds`):
   :math:`\ell_i = \lceil f\rceil_{\text{cent}}`, :math:`h_i = \lfloor\min(c, \kappa L_i)
   \rfloor_{\text{cent}}`, and in a phase-in band :math:`h_i = \lfloor\min(\phi_i c, \kappa
   L_i)\rfloor_{\text{cent}}` raised to the floor where it would fall below it (to one cent with a
   zero floor; :func:`allocator.vouchers.weights.phase_bounds`); both are recomputed and checked against
   ``lower_cents`` / ``upper_cents``. Which bound binds is read from the paid cents: the floor,
   the cap, the phased cap or the coverage cap (``upper_cents`` equal to
   :math:`\lfloor 100\,\kappa L_i\rfloor` below the other caps' cents). A paid user of a
   run with a band also gets a :class:`PhaseIn`: which band they are in, their factor and its
   formula, and the scaled cap.
5. **Other scenarios.** Every shipped ``scenarios/*.toml`` except the loan fund's, run on the
   same data at *this run's budget* (so that differences come from the rules, not from the
   amount of money), without payout plans; the data is loaded and checked once per call.

The modules: :mod:`~allocator.analysis.explain.facts` (the run, the inputs, the user's rows and
events), :mod:`~allocator.analysis.explain.excluded` (step 2 in words),
:mod:`~allocator.analysis.explain.allocated` (steps 3 and 4),
:mod:`~allocator.analysis.explain.others` (step 5), :mod:`~allocator.analysis.explain.user`
(the entry points), :mod:`~allocator.analysis.explain.results` (the result types),
:mod:`~allocator.analysis.explain.render` (the text) and
:mod:`~allocator.analysis.explain.wording` (how numbers are written).
"""

from allocator.analysis.explain.others import SCENARIOS_DIR, shipped_scenarios
from allocator.analysis.explain.results import (
    AmountDerivation,
    EventGroup,
    Exclusion,
    Explanation,
    Factor,
    OtherScenario,
    PhaseIn,
    WeightBreakdown,
)
from allocator.analysis.explain.user import explain_user, explain_users
from allocator.analysis.explain.wording import COUNTED, NOT_COVERED, OUTSIDE_WINDOW, cents_text

__all__ = [
    "COUNTED",
    "NOT_COVERED",
    "OUTSIDE_WINDOW",
    "SCENARIOS_DIR",
    "AmountDerivation",
    "EventGroup",
    "Exclusion",
    "Explanation",
    "Factor",
    "OtherScenario",
    "PhaseIn",
    "WeightBreakdown",
    "cents_text",
    "explain_user",
    "explain_users",
    "shipped_scenarios",
]
