"""A user's facts: the verified run and its inputs, the user's rows, and their liquidations
valued in USD and grouped by status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.explain.results import EventGroup
from allocator.analysis.explain.wording import COUNTED, NOT_COVERED, OUTSIDE_WINDOW, iso
from allocator.data.inputs import Inputs, load_inputs
from allocator.errors import InputError
from allocator.runs.contract import RunDir
from allocator.runs.reader import load_run
from allocator.settings.models import EligibilityRules, Scenario
from allocator.vouchers.eligibility import NANO_PER_USD, covered_event, in_window_event

__all__ = [
    "LoadedRun",
    "changed",
    "event_groups",
    "one_user_inputs",
    "open_inputs",
    "open_run",
    "reference_user",
    "row_of",
    "valued_events",
]


@dataclass(frozen=True, eq=False)
class LoadedRun:
    """A verified run directory, its scenario and the input files its manifest names."""

    run: RunDir
    scenario: Scenario
    paths: dict[str, Path]
    data_dir: Path


def open_run(run_dir: str | Path) -> LoadedRun:
    """The run directory, refused when damaged or when its inputs changed since the run."""
    # load_run refuses a damaged or changed run directory, and inputs that changed since the run
    run = load_run(run_dir, inputs=True)
    assert run.data_dir is not None
    paths = {stem: Path(run.manifest["inputs"][stem]["path"]) for stem in N.INPUT_TABLES}
    return LoadedRun(run=run, scenario=run.scenario, paths=paths, data_dir=run.data_dir)


def open_inputs(run: LoadedRun) -> Inputs:
    """The run's input tables (lazy), refused unless they are the files the manifest names."""
    inputs = load_inputs(run.data_dir, validate=False)
    for stem, path in run.paths.items():
        if Path(inputs.paths[stem]).resolve() != path.resolve():
            raise InputError(
                f"the run's {stem} file {path} is not the one its data directory {run.data_dir} "
                f"now holds ({inputs.paths[stem]}); the inputs changed since the run."
            )
    return inputs


def one_user_inputs(inputs: Inputs, user_ids: Sequence[int]) -> dict[str, pl.DataFrame]:
    """The rows of the four input tables that the eligibility of ``user_ids`` depends on."""
    ids = pl.Series(N.USER_ID, list(user_ids), dtype=pl.Int64)
    events = inputs.events.filter(pl.col(N.USER_ID).is_in(ids.implode())).collect()
    assets = events[N.SETTLE_ASSET].unique()
    return {
        N.EVENTS_FILE: events,
        # An event's price depends only on its own asset's bars.
        N.PRICES_FILE: inputs.prices.filter(pl.col(N.ASSET).is_in(assets.implode())).collect(),
        N.SNAPSHOT_FILE: inputs.snapshot.filter(pl.col(N.USER_ID).is_in(ids.implode())).collect(),
        N.USERS_FILE: inputs.users.filter(pl.col(N.USER_ID).is_in(ids.implode())).collect(),
    }


def row_of(frame: pl.DataFrame, user_id: int) -> dict[str, Any] | None:
    """The user's row of ``frame`` as a dict, ``None`` when the user has none."""
    hit = frame.filter(pl.col(N.USER_ID) == user_id)
    return hit.row(0, named=True) if hit.height else None


def reference_user(allocations: pl.DataFrame) -> int | None:
    """The lower-median-weight user (ties by smaller id): the zero point of the factor shares."""
    if allocations.height == 0:
        return None
    ordered = allocations.select(N.USER_ID, N.WEIGHT).sort([N.WEIGHT, N.USER_ID])
    return int(ordered[N.USER_ID][(ordered.height - 1) // 2])


def changed(what: str, run: LoadedRun) -> InputError:
    """The error for a recomputed fact that differs from what the run wrote."""
    return InputError(
        f"{what}; the inputs changed since the run (data directory {run.data_dir}, run "
        f"{run.run.path}). The explanation is recomputed from the inputs and must match the run.",
        hint="re-run the scenario on the current data, or restore the data the run used",
    )


# --------------------------------------------------------------------------- events


def valued_events(
    events: pl.DataFrame, prices: pl.DataFrame, rules: EligibilityRules
) -> pl.DataFrame:
    """The user's events with their status and USD value (null without a price bar); which
    events count is the eligibility rule itself (:func:`covered_event`, :func:`in_window_event`)."""
    covered, in_window = covered_event(rules), in_window_event(rules)
    status = (
        pl.when(~covered)
        .then(pl.lit(NOT_COVERED))
        .when(~in_window)
        .then(pl.lit(OUTSIDE_WINDOW))
        .otherwise(pl.lit(COUNTED))
    )
    ev = events.sort(N.TS).with_columns(status.alias("status"), in_window.alias("in_window"))
    px = prices.select(
        pl.col(N.ASSET).alias(N.SETTLE_ASSET), pl.col(N.PRICE_TS).alias("_bar"), N.PRICE_USD
    ).sort("_bar")
    # Both sides are sorted by time, so they are sorted within every asset too.
    ev = ev.join_asof(
        px,
        left_on=N.TS,
        right_on="_bar",
        by=N.SETTLE_ASSET,
        strategy="backward",
        check_sortedness=False,
    )
    amount = pl.col(N.REALISED_LOSS)
    if rules.include_fees:
        amount = amount + pl.col(N.LIQ_FEE)
    return ev.with_columns(
        (amount * pl.col(N.PRICE_USD)).alias("loss_usd"),
        (pl.col(N.LIQ_FEE) * pl.col(N.PRICE_USD)).alias("fee_usd"),
    )


def _nano_sum(values: np.ndarray) -> float:
    # The run sums whole nano-dollars (exact in any order); the same here.
    return int(np.round(values * NANO_PER_USD).astype(np.int64).sum()) / NANO_PER_USD


def event_groups(valued: pl.DataFrame) -> tuple[EventGroup, ...]:
    """The valued events grouped by status and product: counts, USD losses and fees, first and
    last time."""
    out = []
    order = {COUNTED: 0, OUTSIDE_WINDOW: 1, NOT_COVERED: 2}
    keys = sorted(
        {
            (r["product"], r["status"])
            for r in valued.select(N.PRODUCT, "status").iter_rows(named=True)
        },
        key=lambda k: (order[k[1]], N.PRODUCTS.index(k[0]) if k[0] in N.PRODUCTS else 99, k[0]),
    )
    for product, status in keys:
        part = valued.filter((pl.col(N.PRODUCT) == product) & (pl.col("status") == status))
        priced = part.filter(pl.col(N.PRICE_USD).is_not_null())
        unpriced = part.height - priced.height
        loss = _nano_sum(priced["loss_usd"].to_numpy()) if priced.height else None
        fee = _nano_sum(priced["fee_usd"].to_numpy()) if priced.height else None
        out.append(
            EventGroup(
                product=product,
                status=status,
                n_events=part.height,
                loss_usd=loss,
                fee_usd=fee,
                unpriced_events=unpriced,
                first_ts=iso(cast(datetime, part[N.TS].min())),
                last_ts=iso(cast(datetime, part[N.TS].max())),
            )
        )
    return tuple(out)
