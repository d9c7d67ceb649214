"""The feature matrix as scenarios see it: its columns, the weight features, segment predicates.

A voucher scenario names feature-matrix columns (``eligible.parquet``) in two places: weight
coefficients (``[objective.features]``) and segment predicates (``[[segments]] where``). This
module holds the columns and their dtypes and checks a predicate against them without any data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import ScenarioError

__all__ = [
    "FEATURE_SCHEMA",
    "check_predicate",
    "feature_schema",
    "predicate_problem",
    "weight_feature_columns",
]

#: Feature-matrix columns (``eligible.parquet``) a segment predicate or a weight may use, with
#: the dtypes predicates are checked against. The per-product loss columns are added for the
#: products a scenario covers (:func:`feature_schema`).
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.LOSS_USD: pl.Float64(),
    N.GROSS_LOSS_USD: pl.Float64(),
    N.FEE_USD: pl.Float64(),
    N.LOSS_RATIO: pl.Float64(),
    N.NET_ASSETS_USD: pl.Float64(),
    N.N_EVENTS: pl.Int64(),
    N.FIRST_EVENT_TS: pl.Datetime("us", "UTC"),
    N.LAST_EVENT_TS: pl.Datetime("us", "UTC"),
    N.VIP_TIER: pl.Int64(),
    N.IS_INSTITUTIONAL: pl.Boolean(),
    N.REGION: pl.String(),
    N.ACCOUNT_AGE_DAYS: pl.Int64(),
    N.KYC_STATUS: pl.String(),
    N.DEPEG_COMP_USD: pl.Float64(),
}

#: Columns that are not weight features: identifiers, timestamps, strings, and the loss ratio
#: (it is +inf for users with no net assets; ``ratio_exponent`` and ``ratio_cap`` handle it).
_NOT_WEIGHT_FEATURES = frozenset({N.USER_ID, N.FIRST_EVENT_TS, N.LAST_EVENT_TS, N.LOSS_RATIO})


def feature_schema(products: tuple[str, ...] = N.COVERED_PRODUCTS) -> dict[str, pl.DataType]:
    """Feature-matrix columns and dtypes for a scenario covering ``products``."""
    schema = dict(FEATURE_SCHEMA)
    for p in products:
        schema[N.product_loss_column(p)] = pl.Float64()
    return schema


def weight_feature_columns(products: tuple[str, ...] = N.COVERED_PRODUCTS) -> tuple[str, ...]:
    """Numeric and boolean feature columns an ``[objective.features]`` coefficient may name."""
    return tuple(
        name
        for name, dtype in feature_schema(products).items()
        if name not in _NOT_WEIGHT_FEATURES and (dtype.is_numeric() or dtype == pl.Boolean())
    )


def predicate_problem(where: str, schema: Mapping[str, pl.DataType]) -> tuple[pl.Expr | None, str]:
    """Parse a segment predicate and check it is a row-wise boolean over ``schema``.

    The expression is evaluated on an empty frame with the feature-matrix schema, which catches
    unknown columns, type mismatches, non-boolean results and aggregates without any data.

    Returns
    -------
    (expr, problem)
        The parsed expression and ``""``, or ``None`` and what is wrong, worded to follow
        ``key = 'predicate'``.
    """
    known = ", ".join(schema)
    try:
        expr = pl.sql_expr(where)
    except Exception as exc:
        return None, f"is not a Polars SQL expression ({_first_line(exc)}). Columns: {known}"
    try:
        roots = expr.meta.root_names()
    except Exception:
        roots = []
    unknown = sorted({r for r in roots if r not in schema})
    if unknown:
        return None, f"uses unknown column(s) {', '.join(unknown)}; columns: {known}"
    try:
        result = pl.DataFrame(schema=dict(schema)).select(expr.alias("_m"))
    except Exception as exc:
        return None, f"cannot be evaluated on the feature matrix ({_first_line(exc)})"
    if result.height != 0 or result.width != 1:
        return None, "is not a row-by-row condition (aggregates such as SUM are not allowed)"
    dtype = result.schema["_m"]
    if dtype != pl.Boolean():
        return None, (f'gives {dtype}, not a true/false condition (e.g. "{N.LOSS_USD} < 10000")')
    return expr, ""


def check_predicate(
    where: str, schema: Mapping[str, pl.DataType], *, file: Any, key: str
) -> pl.Expr:
    """Parse a segment predicate with ``pl.sql_expr`` and check it is a row-wise boolean over ``schema``.

    Raises
    ------
    ScenarioError
        Naming ``file`` and ``key``: not an expression, an unknown column, a type mismatch, an
        aggregate, or a result that is not true/false.
    """
    expr, problem = predicate_problem(where, schema)
    if expr is None:
        raise ScenarioError(f"{file}: {key} = {where!r} {problem}.")
    return expr


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
