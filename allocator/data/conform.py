"""Selecting a table's columns in the contract's types, with errors that name the file.

Programmes read the loaded tables through :func:`conform`: it keeps only the columns a rule
needs, in the dtypes of :mod:`allocator.data.schemas` (a no-op on validated data), and names the
table, the column and the types when a frame handed in by a library caller does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from allocator.errors import InputError


def table_name(stem: str, source: Mapping[str, Any] | None) -> str:
    if source and stem in source:
        return f"{stem} file {source[stem]}"
    return f"{stem} table"


def conform(
    frame: pl.LazyFrame | pl.DataFrame,
    columns: Mapping[str, pl.DataType],
    stem: str,
    source: Mapping[str, Any] | None,
) -> pl.LazyFrame:
    """Select the columns the rules need, in the contract's dtypes (a no-op on loaded data)."""
    lf = frame.lazy()
    schema = lf.collect_schema()
    missing = [c for c in columns if c not in schema]
    if missing:
        raise InputError(
            f"The {table_name(stem, source)} has no column {missing[0]!r} "
            f"(columns: {', '.join(schema.names())}).",
        )
    exprs = []
    for name, dtype in columns.items():
        have = schema[name]
        if have == dtype:
            exprs.append(pl.col(name))
        elif isinstance(dtype, pl.Datetime) and isinstance(have, pl.Datetime) and have.time_zone:
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif dtype == pl.String and isinstance(have, (pl.Categorical, pl.Enum)):
            exprs.append(pl.col(name).cast(pl.String))
        elif (have.is_numeric() and dtype.is_numeric()) or (have == pl.Null):
            exprs.append(pl.col(name).cast(dtype))
        else:
            raise InputError(
                f"The {table_name(stem, source)} has column {name!r} of type {have}; "
                f"expected {dtype}.",
            )
    return lf.select(exprs)
