r"""Who moves: every user's paid voucher now and at :math:`B \pm \delta`.

:func:`budget_moves` lists every user's voucher now and at :math:`B \pm \delta`, re-solved and
rounded to cents exactly as a run at that budget is (so each row is what ``allocator allocate``
would pay), beside the linear prediction :math:`\delta\,\mathrm{d}v_i/\mathrm{d}B` and the bound
each voucher sits on. The prediction is exact while the active set holds; the users where it is
not are those who reach or leave a bound between the two budgets. :func:`top_movers` picks the
largest changes; :func:`write_moves` writes the list (``--users-out``).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.sensitivity.budget import BudgetSensitivity
from allocator.errors import InputError
from allocator.kernel.allocation import Allocation
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.rounding import bounds_to_cents, round_to_cents_by_segment
from allocator.runs.reader import refuse_output_in_run
from allocator.runs.store import atomic_write
from allocator.vouchers.pipeline import bound_labels

#: Columns of :func:`budget_moves` (the ``--users-out`` file), in order.
MOVES_COLUMNS = (
    N.USER_ID,
    N.LOSS_USD,
    N.VOUCHER_CENTS,
    "voucher_up_cents",
    "voucher_down_cents",
    "change_up_cents",
    "change_down_cents",
    "dv_dbudget",
    "predicted_change_usd",
    N.BOUND,
    "bound_up",
    "bound_down",
)
#: Suffixes :func:`write_moves` accepts.
MOVES_FORMATS = (".parquet", ".csv")
#: Users listed as the largest movers in the text and JSON output.
TOP_MOVERS = 10
#: Most users ``top`` may ask for (every user's move is in ``--users-out``).
MAX_TOP_MOVERS = 1_000_000


def _cents_and_bounds(
    problem: AllocationProblem,
    budget: float,
    v: np.ndarray,
    user_id: np.ndarray,
    loss: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``v`` rounded as :func:`allocator.vouchers.pipeline.allocate` rounds a run, and the bound labels."""

    cents, _ = round_to_cents_by_segment(
        v,
        problem.lower,
        problem.upper,
        budget,
        exhaust=problem.exhaust,
        loss=loss,
        user_id=user_id,
        segments=problem.segments,
    )
    lo_c, hi_c = bounds_to_cents(problem.lower, problem.upper)
    return cents.astype(np.int64), bound_labels(cents, lo_c, hi_c)


def budget_moves(
    problem: AllocationProblem,
    allocation: Allocation,
    sens: BudgetSensitivity,
    *,
    user_id: np.ndarray,
    loss: np.ndarray,
    cents: np.ndarray | None = None,
) -> pl.DataFrame:
    r"""Every user's voucher now and at :math:`B \pm \delta`, in paid cents, with the prediction.

    The re-solved optima of ``sens`` are rounded exactly as a run at that budget rounds them
    (:func:`allocator.kernel.rounding.round_to_cents_by_segment`, then the bound labels of
    ``allocations.parquet``), so ``voucher_up_cents`` is what ``allocator allocate`` pays at
    :math:`B + \delta` when it solves with the same method (the fast solver wherever it applies).

    Parameters
    ----------
    problem, allocation
        The problem and its optimal allocation (rows in ``user_id`` order).
    sens
        :func:`budget_sensitivity` of them.
    user_id, loss
        Per row: the user and the loss (the rounding's tie-breaks use both).
    cents
        The paid cents at :math:`B`; the allocation rounded the same way when omitted.

    Returns
    -------
    polars.DataFrame
        :data:`MOVES_COLUMNS`, one row per user in problem order: ``voucher_cents`` (now),
        ``voucher_up_cents`` / ``voucher_down_cents`` (null when that budget is infeasible),
        ``change_up_cents`` / ``change_down_cents`` against now, ``dv_dbudget``,
        ``predicted_change_usd`` (:math:`\delta\,\mathrm{d}v_i/\mathrm{d}B`, the linear
        prediction for :math:`+\delta`; for :math:`-\delta` it is the negative) and the
        bound (``floor``, ``interior``, ``cap``) of each voucher.
    """

    user_id = np.asarray(user_id, dtype=np.int64)
    loss = np.asarray(loss, dtype=np.float64)
    if cents is None:
        now, bound = _cents_and_bounds(problem, problem.budget, allocation.vouchers, user_id, loss)
    else:
        now = np.asarray(cents, dtype=np.int64)
        bound = bound_labels(now, *bounds_to_cents(problem.lower, problem.upper))
    columns: dict[str, pl.Series] = {
        N.USER_ID: pl.Series(N.USER_ID, user_id, dtype=pl.Int64),
        N.LOSS_USD: pl.Series(N.LOSS_USD, loss, dtype=pl.Float64),
        N.VOUCHER_CENTS: pl.Series(N.VOUCHER_CENTS, now, dtype=pl.Int64),
    }
    sides = {}
    for side, v, change in (
        ("up", sens.vouchers_up, sens.up),
        ("down", sens.vouchers_down, sens.down),
    ):
        if v is None:
            sides[side] = (
                pl.Series([None] * len(now), dtype=pl.Int64),
                pl.Series([None] * len(now), dtype=pl.String),
            )
            continue
        c, b = _cents_and_bounds(problem, change.budget_usd, v, user_id, loss)
        sides[side] = (pl.Series(c, dtype=pl.Int64), pl.Series(b.tolist(), dtype=pl.String))
    columns["voucher_up_cents"] = sides["up"][0].alias("voucher_up_cents")
    columns["voucher_down_cents"] = sides["down"][0].alias("voucher_down_cents")
    frame = pl.DataFrame(columns).with_columns(
        (pl.col("voucher_up_cents") - pl.col(N.VOUCHER_CENTS)).alias("change_up_cents"),
        (pl.col("voucher_down_cents") - pl.col(N.VOUCHER_CENTS)).alias("change_down_cents"),
        pl.Series("dv_dbudget", sens.dv_dbudget, dtype=pl.Float64),
        pl.Series("predicted_change_usd", sens.dv_dbudget * sens.delta_usd, dtype=pl.Float64),
        pl.Series(N.BOUND, bound.tolist(), dtype=pl.String),
        sides["up"][1].alias("bound_up"),
        sides["down"][1].alias("bound_down"),
    )
    return frame.select(MOVES_COLUMNS)


def top_movers(moves: pl.DataFrame, k: int = TOP_MOVERS) -> pl.DataFrame:
    """The ``k`` users whose voucher moves most, by the larger of the two changes (an infeasible
    side counts as no change), ties by smaller user id."""
    size = pl.max_horizontal(
        pl.col("change_up_cents").abs().fill_null(0), pl.col("change_down_cents").abs().fill_null(0)
    )
    return (
        moves.with_columns(size.alias("_size"))
        .filter(pl.col("_size") > 0)
        .sort(["_size", N.USER_ID], descending=[True, False])
        .head(k)
        .drop("_size")
    )


def moves_format(path: str | Path) -> str:
    """``"parquet"`` or ``"csv"`` from the file name; an :class:`InputError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in MOVES_FORMATS:
        raise InputError(
            f"the per-user file {path} must end in {' or '.join(MOVES_FORMATS)} (its format is "
            f"taken from the name), not {suffix or 'no suffix'!r}."
        )
    return suffix[1:]


def write_moves(moves: pl.DataFrame, path: str | Path) -> Path:
    """Write :func:`budget_moves` to ``path`` (parquet or CSV by suffix) atomically: a temporary
    file in the same folder, flushed, then renamed over the target, so a reader never sees half a
    file. The same frame always gives the same bytes (fixed row groups and compression, no
    timestamps).

    Raises
    ------
    InputError
        The suffix is neither ``.parquet`` nor ``.csv``, the path is in a run directory
        (:func:`allocator.runs.reader.refuse_output_in_run`), or the folder cannot be written.
    """

    path = Path(path)
    fmt = moves_format(path)
    refuse_output_in_run(path, "the per-user file")

    def write(fh: IO[bytes]) -> None:
        if fmt == "parquet":
            # fixed row groups and compression: the same frame always gives the same bytes
            moves.rechunk().write_parquet(
                fh, compression="zstd", compression_level=3, statistics=True, row_group_size=262_144
            )
        else:
            moves.write_csv(fh, line_terminator="\n")

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise InputError(f"cannot write the per-user file {path}: {exc.strerror or exc}.") from None
    return path
