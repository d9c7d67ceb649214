r"""The cvxpy reference model of the weighted alpha-fairness allocation problem.

.. math::

    \max_v \sum_i w_i u_\alpha(v_i)\quad\text{s.t.}\quad
    \ell_i \le v_i \le h_i,\quad \sum_i v_i \le B\;(= B \text{ in exhaust mode}),\quad
    m_s B \le \sum_{i\in S_s} v_i \le M_s B,

with :math:`u_1(v) = \log v` and :math:`u_\alpha(v) = v^{1-\alpha}/(1-\alpha)` otherwise
(:math:`\alpha = 0` is utilitarian, large :math:`\alpha` approaches max-min).

Built once, solved many times
    The expressions are built once (cvxportfolio style) and the problem is DPP, so cvxpy
    compiles it on the first solve and re-uses the compiled form when Parameters change.
    Parameters: the budget :math:`B`, each segment's bounds :math:`m_s B` and :math:`M_s B`
    (USD; a product of two Parameters would not be DPP), and, when the problem carries
    :class:`~allocator.kernel.problem.ScalarBounds`, the floor :math:`f`, the cap :math:`c` and the
    coverage cap :math:`\kappa` (:math:`h_i = \min(c, \kappa L_i)` as two constraints, with the
    losses :math:`L_i` constants). The n weights are constants, never a length-n Parameter:
    cvxpy's parameter canonicalisation is quadratic in memory there (cvxpy issue 1622).
    ``alpha`` and which constraints exist are structural.

Scaling
    Interior-point solvers are sensitive to units. Each voucher is solved as
    :math:`v_i = s_i x_i` with :math:`s_i` a rough guess of its optimal value (the unsegmented
    problem solved by bisection on a sample, clipped to the bounds), so :math:`x_i = O(1)`;
    constraints are divided by :math:`\sigma = \operatorname{mean}(s)`, and the objective by
    :math:`C = \sigma\hat\lambda` with :math:`\hat\lambda` the guessed shadow price, which makes
    the scaled multipliers :math:`O(1)`. The argmax does not move; multipliers are mapped back
    as :math:`\lambda = C\,y/\sigma`. Exponential and power cones still stall now and then
    (Clarabel "InsufficientProgress"); the model then rebuilds itself with the
    :data:`FALLBACK_SCALINGS` (the median objective coefficient as :math:`C`, then one common
    :math:`s`) and lets Clarabel hand back its last iterate, which counts only if it certifies.

Power form
    ``cp.power(x, p)`` with ``approx=True`` builds second-order cones from a rational
    :math:`p`; for :math:`p` with a small denominator (``alpha`` 0.5, 2, 3, 5, ...) that
    representation is exact and Clarabel handles it far more robustly than the power cone.
    Otherwise the exact power cone (``approx=False``) is used where the solver has one
    (CLARABEL, SCS); ECOS has none and gets the rational SOC form (the certificate judges the
    result against the true ``alpha``). ``alpha = 1`` uses ``cp.log`` (exponential cone).

Accuracy and the polish
    An interior-point answer has the optimal objective to about 1e-9 but a voucher whose
    marginal utility is nearly flat can still be off by cents. :func:`~allocator.kernel.polish.polish` refines the
    solver's multipliers by Newton steps on the dual, which has only :math:`1 + 2S` variables,
    and takes the users' best responses as the vouchers (the role OSQP's solution polishing
    plays). The solver's own answer is kept in :attr:`FairnessModel.raw`; the polished one is
    returned when it certifies, else the raw one if that certifies.

Statuses
    ``infeasible`` raises :class:`~allocator.errors.InfeasibleError`; ``unbounded``, a solver
    error or no status (after the fallbacks) raise
    :class:`~allocator.errors.SolverFailedError`; ``optimal`` and ``optimal_inaccurate`` are
    accepted only when the certificate passes, else :class:`~allocator.errors.NotCertifiedError`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from fractions import Fraction
from typing import Any, Literal

import cvxpy as cp
import numpy as np

from allocator.errors import InfeasibleError, NotCertifiedError, SolverFailedError
from allocator.kernel.allocation import Allocation, bound_states
from allocator.kernel.certificate import DEFAULT_TOL, certify
from allocator.kernel.feasibility import InvalidProblemError, check_feasible, validate
from allocator.kernel.native import native_stdout_to_stderr
from allocator.kernel.polish import PolishResult, RawSolution, polish, spread_residual
from allocator.kernel.problem import AllocationProblem, Segment

SOLVERS = ("CLARABEL", "ECOS", "SCS")
PowerForm = Literal["auto", "soc", "powcone"]
Scaling = Literal["guess", "uniform"]
Normalise = Literal["price", "median"]

#: Clarabel keeps its defaults (the polish supplies the last digits); ECOS and SCS are tightened.
DEFAULT_SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {},
    "ECOS": {"abstol": 1e-10, "reltol": 1e-10, "feastol": 1e-10, "max_iters": 300},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
}
_POWCONE_SOLVERS = ("CLARABEL", "SCS")
#: Simplex LP solver (through cvxpy) for alpha = 0 when the conic solver's answer is refused.
LP_SOLVER = "HIGHS"
# Rational exponents with denominators up to this size become a handful of SOCs per user.
_SOC_MAX_DENOMINATOR = 32
_SCALE_SAMPLE = 20_000
#: Tried in order when the model as built fails: (variable scaling, objective normalisation).
FALLBACK_SCALINGS: tuple[tuple[Scaling, Normalise], ...] = (
    ("guess", "median"),
    ("uniform", "median"),
)


def _guess_scale(
    problem: AllocationProblem, scaling: Scaling = "guess"
) -> tuple[np.ndarray, float]:
    """Per-user voucher guess ``s`` (USD, within bounds, > 0) and the shadow price it implies;
    ``scaling="uniform"`` returns the guesses' mean for every user instead.

    Solves the unsegmented problem roughly: bisection on a strided sample of users for the
    common factor in :math:`s_i = \\operatorname{clip}(k\\,w_i^{1/\\alpha}, \\ell_i, h_i)`.
    """
    w = np.asarray(problem.weights, dtype=np.float64)
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    n, alpha, budget = problem.n, float(problem.alpha), float(problem.budget)
    mean_voucher = budget / n
    if alpha == 0.0:
        s = np.clip(np.full(n, mean_voucher), lo, hi)
        lam = float(np.median(w))
    else:
        logw = np.log(w)
        logc = (logw - logw.max()) / alpha
        step = max(1, n // _SCALE_SAMPLE)
        sl = slice(0, n, step)
        target = budget * (logc[sl].size / n)
        a = math.log(mean_voucher) - float(logc.max()) - 50.0
        b = math.log(mean_voucher) - float(logc.min()) + 50.0
        for _ in range(100):
            mid = 0.5 * (a + b)
            if float(np.clip(np.exp(logc[sl] + mid), lo[sl], hi[sl]).sum()) > target:
                b = mid
            else:
                a = mid
        with np.errstate(over="ignore"):
            raw = np.exp(logc + 0.5 * (a + b))
        s = np.clip(raw, lo, hi)
        inside = (raw > lo) & (raw < hi)
        ref = inside if inside.any() else np.ones(n, dtype=bool)
        lam = float(np.median(np.exp(logw[ref] - alpha * np.log(s[ref]))))
    # keep x = v / s of moderate size even for zero floors and tiny weights
    s = np.minimum(np.maximum(s, 1e-3 * mean_voucher), np.maximum(hi, 1e-300))
    if scaling == "uniform":
        s = np.full(n, float(np.mean(s)))
    if alpha == 1.0:
        # x = e rather than 1 near the optimum: log x = 1 keeps the objective away from 0, where
        # relative gap tests cannot be met
        s = s / math.e
    return s, lam


def _use_soc(alpha: float, solver: str, power_form: PowerForm) -> bool:
    if power_form == "soc" or solver not in _POWCONE_SOLVERS:
        return True
    if power_form == "powcone":
        return False
    probe = cp.power(cp.Variable(1), 1.0 - alpha)  # cvxpy's rational form of the exponent
    exact = getattr(probe, "approx_error", 1.0) <= 1e-12
    small = all(Fraction(x).denominator <= _SOC_MAX_DENOMINATOR for x in getattr(probe, "w", ()))
    return bool(exact and small)


class FairnessModel:
    r"""The allocation problem as a cvxpy problem, built once and re-solvable.

    Parameters
    ----------
    problem
        The allocation problem (validated and pre-checked unless ``check=False``).
    solver
        The solver the model is meant for; it decides the power form (see module docs).
    power_form
        ``"auto"`` (SOC when exact, else power cone), ``"soc"`` or ``"powcone"``.
    scaling
        ``"guess"``: per-user scale :math:`s_i` from a rough solution; ``"uniform"``: one
        common scale.
    normalise
        ``"price"``: divide the objective by :math:`\sigma\hat\lambda`; ``"median"``: by the
        median objective coefficient times :math:`\sigma`.
    check
        Run :func:`allocator.kernel.feasibility.validate` and :func:`allocator.kernel.feasibility.check_feasible`.

    Attributes
    ----------
    x : cp.Variable
        Scaled vouchers; the vouchers in USD are :attr:`vouchers` :math:`= s \odot x`.
    scale : np.ndarray
        :math:`s` (USD per unit of :math:`x`).
    budget : cp.Parameter
        :math:`B` (USD).
    segment_min, segment_max : dict[str, cp.Parameter]
        :math:`m_s B` and :math:`M_s B` (USD) for the sides each segment constrains.
    floor, cap, coverage_cap : cp.Parameter or None
        Present when the problem carries :class:`~allocator.kernel.problem.ScalarBounds`.
    cvx_problem : cp.Problem
        The cvxpy problem.
    fixed : np.ndarray
        Users whose bounds coincide (an equality each: see :meth:`__init__`).
    raw : RawSolution or None
        The last solve's answer as the solver gave it (USD, before the polish).
    polished : PolishResult or None
        The last solve's polished answer (``None`` when the polish did not converge).
    fallback : FairnessModel or None
        The rebuilt model that produced the last answer, when the model as built failed.
    """

    def __init__(
        self,
        problem: AllocationProblem,
        *,
        solver: str = "CLARABEL",
        power_form: PowerForm = "auto",
        scaling: Scaling = "guess",
        normalise: Normalise = "price",
        check: bool = True,
    ) -> None:
        if check:
            validate(problem)
            check_feasible(problem)
        solver = solver.upper()
        if solver not in SOLVERS:
            raise InvalidProblemError(
                f"unknown cvxpy solver {solver!r}: use one of {', '.join(SOLVERS)}"
            )
        self.problem = problem
        self.solver = solver
        n, alpha = problem.n, float(problem.alpha)
        self.alpha = alpha
        self.scaling = scaling
        self.power_form: PowerForm = power_form
        self.fallback: FairnessModel | None = None
        self.normalise: Normalise = normalise
        self.scale, lam_guess = _guess_scale(problem, scaling)
        self.sigma = float(np.mean(self.scale))
        w = np.asarray(problem.weights, dtype=np.float64)
        if normalise == "median":
            # the typical objective coefficient w s^(1-alpha) (w s for alpha = 0) becomes 1
            coef = w if alpha == 1.0 else w * np.power(self.scale, 1.0 - alpha)
            lam_guess = float(np.median(coef)) / self.sigma
        self.objective_scale = self.sigma * lam_guess  # C: objective divided by this
        self.uses_soc = alpha not in (0.0, 1.0) and _use_soc(alpha, solver, power_form)
        s = self.scale
        inv_s = 1.0 / s

        self.x = cp.Variable(n, name="x")
        self.vouchers = cp.multiply(s, self.x)
        self.budget = cp.Parameter(nonneg=True, name="budget", value=float(problem.budget))

        # objective: sum_i w_i u(s_i x_i) / C, dropping the constant sum_i w_i log s_i at alpha = 1
        if alpha == 0.0:
            self._objective = (w * s / self.objective_scale) @ self.x
        elif alpha == 1.0:
            self._objective = (w / self.objective_scale) @ cp.log(self.x)
        else:
            coef = w * np.power(s, 1.0 - alpha) / self.objective_scale / (1.0 - alpha)
            self._objective = coef @ cp.power(self.x, 1.0 - alpha, approx=self.uses_soc)

        constraints: list[cp.Constraint] = []
        lo = np.asarray(problem.lower, dtype=np.float64)
        hi = np.asarray(problem.upper, dtype=np.float64)
        # Users whose bounds coincide get an equality: a pair of opposite inequalities has no
        # strict interior, which stalls interior-point methods at their first iteration.
        self.fixed = lo >= hi
        fixed_idx = np.flatnonzero(self.fixed)
        free_idx = np.flatnonzero(~self.fixed)
        x_free = self.x if fixed_idx.size == 0 else self.x[free_idx]
        s_free = inv_s if fixed_idx.size == 0 else inv_s[free_idx]
        if fixed_idx.size:
            constraints.append(self.x[fixed_idx] == lo[fixed_idx] * inv_s[fixed_idx])
        self.floor = self.cap = self.coverage_cap = None
        sb = problem.scalar_bounds
        self.coverage_cap_built = None if sb is None else sb.coverage_cap
        if free_idx.size and sb is not None:
            floor, cap = sb.knobs()
            self.floor = cp.Parameter(nonneg=True, name="floor", value=floor)
            self.cap = cp.Parameter(nonneg=True, name="cap", value=cap)
            constraints += [x_free >= self.floor * s_free, x_free <= self.cap * s_free]
            if sb.coverage_cap is not None and not sb.whole_cents:
                self.coverage_cap = cp.Parameter(
                    nonneg=True, name="coverage_cap", value=float(sb.coverage_cap)
                )
                loss = np.asarray(sb.loss, dtype=np.float64)
                loss_free = loss if fixed_idx.size == 0 else loss[free_idx]
                constraints.append(x_free <= self.coverage_cap * (loss_free * s_free))
            elif sb.coverage_cap is not None:
                # caps rounded down to the cent are not affine in kappa: constants (set_bounds
                # rebuilds when kappa changes)
                caps = sb.coverage_caps()
                assert caps is not None
                caps_free = caps if fixed_idx.size == 0 else caps[free_idx]
                constraints.append(x_free <= caps_free * s_free)
        elif free_idx.size:
            lo_free = lo if fixed_idx.size == 0 else lo[free_idx]
            hi_free = hi if fixed_idx.size == 0 else hi[free_idx]
            constraints += [x_free >= lo_free * s_free, x_free <= hi_free * s_free]
        self._bound_constraints = list(constraints)

        spend = (s / self.sigma) @ self.x
        rhs = self.budget / self.sigma
        self._budget_constraint = spend == rhs if problem.exhaust else spend <= rhs
        constraints.append(self._budget_constraint)

        self.segment_min: dict[str, cp.Parameter] = {}
        self.segment_max: dict[str, cp.Parameter] = {}
        self._segment_constraints: dict[str, tuple[cp.Constraint | None, cp.Constraint | None]] = {}
        for seg in problem.segments:
            members = np.asarray(seg.members, dtype=bool)
            seg_spend = (np.where(members, s, 0.0) / self.sigma) @ self.x
            c_min = c_max = None
            if seg.min_share is not None:
                p = cp.Parameter(
                    nonneg=True,
                    name=f"segment_min[{seg.name}]",
                    value=seg.min_share * problem.budget,
                )
                self.segment_min[seg.name] = p
                c_min = seg_spend >= p / self.sigma
                constraints.append(c_min)
            if seg.max_share is not None:
                p = cp.Parameter(
                    nonneg=True,
                    name=f"segment_max[{seg.name}]",
                    value=seg.max_share * problem.budget,
                )
                self.segment_max[seg.name] = p
                c_max = seg_spend <= p / self.sigma
                constraints.append(c_max)
            self._segment_constraints[seg.name] = (c_min, c_max)

        self.cvx_problem = cp.Problem(cp.Maximize(self._objective), constraints)
        self.raw: RawSolution | None = None
        self.polished: PolishResult | None = None

    # ------------------------------------------------------------------ structure
    def is_dpp(self) -> bool:
        """Whether the problem is DPP (re-solves skip recompilation)."""
        return bool(self.cvx_problem.is_dpp())

    @property
    def variables(self) -> list[cp.Variable]:
        """The problem's variables (just :attr:`x`)."""
        return list(self.cvx_problem.variables())

    @property
    def parameters(self) -> dict[str, cp.Parameter]:
        """Every Parameter by name."""
        return {p.name(): p for p in self.cvx_problem.parameters()}

    # ------------------------------------------------------------------ updates
    def set_budget(self, budget: float) -> None:
        """Change :math:`B` (and the segment bounds :math:`m_s B`, :math:`M_s B` with it)."""
        problem = dataclasses.replace(self.problem, budget=float(budget))
        validate(problem)
        self.problem = problem
        self._sync_parameters()

    def set_segment_shares(
        self, name: str, *, min_share: float | None = None, max_share: float | None = None
    ) -> None:
        """Change a segment's shares; only sides the model was built with can change."""
        segs = list(self.problem.segments)
        pos = next((k for k, s in enumerate(segs) if s.name == name), None)
        if pos is None:
            raise InvalidProblemError(f"no segment named {name!r}")
        seg = segs[pos]
        if (min_share is not None and seg.min_share is None) or (
            max_share is not None and seg.max_share is None
        ):
            raise InvalidProblemError(
                f"segment {name!r}: a share side absent when the model was built cannot be "
                "added; rebuild the model"
            )
        segs[pos] = Segment(
            name=seg.name,
            members=seg.members,
            min_share=seg.min_share if min_share is None else float(min_share),
            max_share=seg.max_share if max_share is None else float(max_share),
        )
        problem = dataclasses.replace(self.problem, segments=tuple(segs))
        validate(problem)
        self.problem = problem
        self._sync_parameters()

    def set_bounds(
        self,
        *,
        floor: float | None = None,
        cap: float | None = None,
        coverage_cap: float | None = None,
    ) -> None:
        """Change the scalar bound knobs (only for problems built with ``scalar_bounds``)."""
        sb = self.problem.scalar_bounds
        if sb is None:
            raise InvalidProblemError(
                "this model has per-user bounds (no scalar_bounds): rebuild it to change them"
            )
        if coverage_cap is not None and sb.coverage_cap is None:
            raise InvalidProblemError(
                "the model was built without a coverage cap: rebuild it to add one"
            )
        sb = dataclasses.replace(
            sb,
            floor=sb.floor if floor is None else float(floor),
            cap=sb.cap if cap is None else float(cap),
            coverage_cap=sb.coverage_cap if coverage_cap is None else float(coverage_cap),
        )
        lower, upper = sb.arrays()
        problem = dataclasses.replace(self.problem, lower=lower, upper=upper, scalar_bounds=sb)
        validate(problem)
        # whole-cent coverage caps are constants in the compiled problem (see __init__)
        new_caps = sb.whole_cents and sb.coverage_cap != self.coverage_cap_built
        if new_caps or not np.array_equal(lower >= upper, self.fixed):
            # which users have equal bounds is structural: rebuild (a fresh compile)
            self.__init__(  # type: ignore[misc]
                problem,
                solver=self.solver,
                power_form=self.power_form,
                scaling=self.scaling,
                normalise=self.normalise,
                check=False,
            )
            return
        self.problem = problem
        self._sync_parameters()

    def _sync_parameters(self) -> None:
        p = self.problem
        self.budget.value = float(p.budget)
        for seg in p.segments:
            # a share's Parameter exists only when the share is set
            if seg.name in self.segment_min and seg.min_share is not None:
                self.segment_min[seg.name].value = float(seg.min_share) * float(p.budget)
            if seg.name in self.segment_max and seg.max_share is not None:
                self.segment_max[seg.name].value = float(seg.max_share) * float(p.budget)
        sb = p.scalar_bounds
        if sb is not None and self.floor is not None and self.cap is not None:
            self.floor.value, self.cap.value = sb.knobs()
            if self.coverage_cap is not None and sb.coverage_cap is not None:
                self.coverage_cap.value = float(sb.coverage_cap)

    # ------------------------------------------------------------------ solve
    def solve(
        self,
        solver: str | None = None,
        *,
        tol: float = DEFAULT_TOL,
        solver_options: dict[str, Any] | None = None,
        verbose: bool = False,
        started: float | None = None,
    ) -> Allocation:
        """Solve with cvxpy and return a certified :class:`~allocator.kernel.allocation.Allocation`.

        Parameters
        ----------
        solver
            CLARABEL (default: the model's), ECOS or SCS.
        tol
            Relative tolerance of the optimality certificate.
        solver_options
            Passed to the solver, over :data:`DEFAULT_SOLVER_OPTIONS`.
        verbose
            Solver log on stdout.
        started
            ``time.perf_counter()`` at the start of the caller's solve, for ``seconds``.
        """
        started = time.perf_counter() if started is None else started
        solver = (solver or self.solver).upper()
        if solver not in SOLVERS:
            raise InvalidProblemError(
                f"unknown cvxpy solver {solver!r}: use one of {', '.join(SOLVERS)}"
            )
        if (
            self.uses_soc is False
            and self.alpha not in (0.0, 1.0)
            and solver not in _POWCONE_SOLVERS
        ):
            raise InvalidProblemError(
                f"this model uses power cones, which {solver} does not support: build it with "
                f"solver={solver!r}"
            )
        check_feasible(self.problem)
        options = {**DEFAULT_SOLVER_OPTIONS[solver], **(solver_options or {})}
        self.fallback = None
        try:
            return self._attempt(solver, options, tol, verbose, started)
        except (SolverFailedError, NotCertifiedError) as first:
            if self.alpha == 0.0 and LP_SOLVER in cp.installed_solvers():
                # alpha = 0 is a linear programme. An interior-point answer sits inside the
                # optimal face, with many users strictly between their bounds at prices a little
                # off their weights, which the certificate refuses; the polish needs alpha > 0.
                # A simplex method ends on a vertex, where at most one user per price is
                # fractional and the duals are exact.
                try:
                    with native_stdout_to_stderr():
                        return self._attempt(LP_SOLVER, {}, tol, verbose, started)
                except (SolverFailedError, NotCertifiedError):
                    pass
            # Interior-point methods on exponential and power cones sometimes stall on one
            # scaling and not on another: rebuild with other scalings, and let Clarabel hand
            # back a stalled iterate, which only counts if the polish and certificate pass.
            retry = {**options, "accept_unknown": True} if solver == "CLARABEL" else options
            for scaling, normalise in FALLBACK_SCALINGS:
                if (scaling, normalise) == (self.scaling, self.normalise):
                    continue
                alt = FairnessModel(
                    self.problem,
                    solver=solver,
                    power_form=self.power_form,
                    scaling=scaling,
                    normalise=normalise,
                    check=False,
                )
                try:
                    alloc = alt._attempt(solver, retry, tol, verbose, started)
                except (SolverFailedError, NotCertifiedError):
                    continue
                self.fallback = alt
                self.raw, self.polished = alt.raw, alt.polished
                return alloc
            raise first from None

    def _attempt(
        self, solver: str, options: dict[str, Any], tol: float, verbose: bool, started: float
    ) -> Allocation:
        hint = (
            "try another solver (CLARABEL, ECOS, SCS) or method 'fast'; "
            "check the scaling of weights and bounds"
        )
        try:
            with warnings.catch_warnings():
                # the status says it; the certificate decides
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                # SCS warns when its answer is approximate: the certificate judges that too
                warnings.filterwarnings("ignore", category=UserWarning, module=r"cvxpy\..*")
                self.cvx_problem.solve(solver=solver, verbose=verbose, **options)
        except cp.error.SolverError as exc:
            raise SolverFailedError(
                f"{solver} stopped without a solution ({exc})", status="solver_error", hint=hint
            ) from None
        except (ValueError, ArithmeticError, RuntimeError, cp.error.DCPError) as exc:
            # a failure inside cvxpy or the solver's bindings (a numerical error, a panic turned
            # into an exception) is a solver failure for the user, not a traceback
            raise SolverFailedError(
                f"{solver} failed inside cvxpy ({type(exc).__name__}: {exc})",
                status="solver_exception",
                hint=hint,
            ) from None
        status = self.cvx_problem.status
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise InfeasibleError(
                f"{solver} reports the allocation problem infeasible ({status}): no allocation "
                "meets the bounds, the budget and the segment shares together",
                hint="overlapping segments' shares may conflict; relax a share, the floor or caps",
                status=str(status),
            )
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or self.x.value is None:
            raise SolverFailedError(
                f"{solver} returned status {status!r} without a usable solution",
                status=str(status),
                hint=hint,
            )
        raw_v, raw_lam, raw_prices = self._extract()
        self.raw = RawSolution(
            status=str(status), vouchers=raw_v, shadow_price=raw_lam, segment_prices=raw_prices
        )
        self.polished = polish(self.problem, raw_lam, raw_prices) if self.alpha > 0 else None
        cert = None
        if self.polished is not None:
            vouchers, lam, seg_prices = (
                self.polished.vouchers,
                self.polished.shadow_price,
                self.polished.segment_prices,
            )
            cert = certify(self.problem, vouchers, lam, seg_prices, tol=tol)
        if cert is None or not cert.certified:
            raw_cert = certify(self.problem, raw_v, raw_lam, raw_prices, tol=tol)
            if raw_cert.certified or cert is None:
                vouchers, lam, seg_prices, cert = raw_v, raw_lam, raw_prices, raw_cert
        if not cert.certified:
            raise NotCertifiedError(
                f"{solver} returned {status!r} but the allocation does not pass its optimality "
                "certificate: " + "; ".join(cert.failures),
                status=str(status),
                hint=hint,
            )
        return Allocation(
            vouchers=vouchers,
            bound_state=bound_states(
                vouchers, self.problem.lower, self.problem.upper, cert.bound_tol_usd
            ),
            method=f"cvxpy:{solver}",
            status=str(status),
            objective=cert.objective,
            shadow_price=lam,
            segment_prices=seg_prices,
            certificate=cert,
            seconds=time.perf_counter() - started,
        )

    def _extract(self) -> tuple[np.ndarray, float, dict[str, tuple[float, float]]]:
        """The solver's answer in USD: vouchers clipped to the bounds (the budget residual spread
        over interior users) and multipliers mapped back by ``C / sigma``; the multipliers of
        inequalities are clipped at 0."""
        p = self.problem
        lo = np.asarray(p.lower, dtype=np.float64)
        hi = np.asarray(p.upper, dtype=np.float64)
        budget = float(p.budget)
        v = np.minimum(np.maximum(self.scale * np.asarray(self.x.value, dtype=np.float64), lo), hi)
        to_usd = self.objective_scale / self.sigma

        def dual(con: cp.Constraint | None) -> float:
            if con is None or con.dual_value is None:
                return 0.0
            return float(np.asarray(con.dual_value).reshape(-1)[0]) * to_usd

        lam = dual(self._budget_constraint)
        if not p.exhaust:
            lam = max(lam, 0.0)
        spent = float(v.sum())
        if p.exhaust or spent > budget:
            spread_residual(v, lo, hi, budget - spent)
        prices: dict[str, tuple[float, float]] = {}
        for seg in p.segments:
            c_min, c_max = self._segment_constraints[seg.name]
            prices[seg.name] = (max(dual(c_min), 0.0), max(dual(c_max), 0.0))
        return v, lam, prices
