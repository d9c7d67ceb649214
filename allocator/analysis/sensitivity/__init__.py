r"""How the allocation moves with the budget, the weights, alpha and the eligibility thresholds.

The model (:mod:`allocator.kernel.problem`) is

.. math::

    \max_v \sum_i w_i u_\alpha(v_i)\quad\text{s.t.}\quad \ell_i \le v_i \le h_i,\quad
    \sum_i v_i \le B\;(= B \text{ in exhaust mode}),\quad
    m_s B \le \sum_{i\in S_s} v_i \le M_s B .

One module per analysis, each stating its maths:

* :mod:`~allocator.analysis.sensitivity.groups`: the groups of users that move together when
  the active set is held (and the ties at the margin of linear utility);
* :mod:`~allocator.analysis.sensitivity.budget`: derivatives in the budget by implicit
  differentiation, the value of the budget, and the exact re-solves at :math:`B \pm \delta`;
* :mod:`~allocator.analysis.sensitivity.moves`: every user's paid voucher now and at
  :math:`B \pm \delta`, the largest movers, the ``--users-out`` file;
* :mod:`~allocator.analysis.sensitivity.weights`: derivatives in the weight coefficients and
  in alpha (exact one-sided ones at ``alpha = 0``);
* :mod:`~allocator.analysis.sensitivity.cliffs`: users just below the loss and ratio
  thresholds, the height of each cliff, and the phase-in bands;
* :mod:`~allocator.analysis.sensitivity.phase_in`: the price of a phase-in band;
* :mod:`~allocator.analysis.sensitivity.report`: a run directory end to end, and its text.

The names below are this package's public interface (``from allocator.analysis.sensitivity
import ...``).
"""

from __future__ import annotations

from allocator.analysis.sensitivity.budget import (
    MOVE_TOL_USD,
    BudgetChange,
    BudgetSensitivity,
    budget_derivatives,
    budget_sensitivity,
)
from allocator.analysis.sensitivity.cliffs import CliffAnalysis, PhaseInBand, cliff_analysis
from allocator.analysis.sensitivity.groups import TIE_RTOL, groups, ties_at_margin
from allocator.analysis.sensitivity.moves import (
    MAX_TOP_MOVERS,
    MOVES_COLUMNS,
    MOVES_FORMATS,
    TOP_MOVERS,
    budget_moves,
    moves_format,
    top_movers,
    write_moves,
)
from allocator.analysis.sensitivity.phase_in import (
    PhaseInPrice,
    band_price,
    phase_in_price,
    without_phase_in,
)
from allocator.analysis.sensitivity.report import SensitivityReport, run_sensitivity
from allocator.analysis.sensitivity.weights import (
    ALPHA,
    METRIC_STEP,
    ParameterSensitivity,
    WeightSensitivity,
    linear_alpha_metrics,
    log_derivatives,
    weight_sensitivity,
)

__all__ = [
    "ALPHA",
    "MAX_TOP_MOVERS",
    "METRIC_STEP",
    "MOVES_COLUMNS",
    "MOVES_FORMATS",
    "MOVE_TOL_USD",
    "TIE_RTOL",
    "TOP_MOVERS",
    "BudgetChange",
    "BudgetSensitivity",
    "CliffAnalysis",
    "ParameterSensitivity",
    "PhaseInBand",
    "PhaseInPrice",
    "SensitivityReport",
    "WeightSensitivity",
    "band_price",
    "budget_derivatives",
    "budget_moves",
    "budget_sensitivity",
    "cliff_analysis",
    "groups",
    "linear_alpha_metrics",
    "log_derivatives",
    "moves_format",
    "phase_in_price",
    "run_sensitivity",
    "ties_at_margin",
    "top_movers",
    "weight_sensitivity",
    "without_phase_in",
    "write_moves",
]
