"""Strict value types of the settings schemas, for pydantic, and the rule errors validators raise.

The schemas (:mod:`allocator.settings.models`, :mod:`allocator.settings.loans`,
:mod:`allocator.settings.depeg`) are plain frozen dataclasses whose fields carry these types;
pydantic reads the annotations when a file is loaded, and code that builds a dataclass directly
is not checked (so tests and the command line can build any value and let the owners judge it).

=====================  ===================================================================
type                   TOML (or JSON) values accepted
=====================  ===================================================================
:data:`Int`            an integer within int64 (``true``/``false`` and ``1.5`` are refused)
:data:`Float`          a finite number; integers are accepted and converted (``alpha = 1``)
:data:`Bool`           ``true`` or ``false`` (integers are refused)
:data:`Str`            a string
:data:`UtcDateTime`    an offset date-time (``2025-10-10T00:00:00Z``) or an ISO-8601 string
                       with an offset; local date-times are refused; stored in UTC
:func:`pairs_table`    a table ``{name = value, ...}`` kept in file order as a tuple of pairs
=====================  ===================================================================

Ranges are ``Field`` constraints; :class:`Allowed` words the allowed range for messages when
the constraints alone would say it badly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "INT64_MAX",
    "NOT_BOOL",
    "SETTINGS_CONFIG",
    "Allowed",
    "Bool",
    "Float",
    "Int",
    "PairsTable",
    "Str",
    "UtcDateTime",
    "pairs_table",
    "rule_error",
]

#: Largest integer a setting may hold: numpy and Polars keep counts in int64.
INT64_MAX = 2**63 - 1

#: Configuration of every settings dataclass: unknown keys are errors, NaN and infinities are
#: refused. The docstring under a field is its description in the JSON Schema, read when the
#: schema is written (:mod:`allocator.settings.docstrings`), not when each class is built.
SETTINGS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Allowed:
    """Annotation metadata: how a message words the allowed values of a field."""

    text: str


#: The error type of :func:`rule_error`, recognised by :mod:`allocator.settings.messages`.
RULE_ERROR = "setting_rule"

_NO_VALUE = object()


def rule_error(
    key: str,
    why: str,
    *,
    value: Any = _NO_VALUE,
    allowed: str | None = None,
    quote_key: bool = False,
) -> PydanticCustomError:
    """An error a cross-field validator raises, for :mod:`allocator.settings.messages` to word.

    Parameters
    ----------
    key
        Dotted key below the validated object (``"window_start"``, ``"segments[1].name"``);
        empty for the object itself.
    why
        What is wrong, worded after the key (``"must be before eligibility.window_end"``).
    value
        The value given, shown after the key when passed.
    allowed
        What is allowed, appended as ``"; allowed: ..."``.
    quote_key
        Word the key as ``key 'name'`` (for a key that reads like an ordinary word).
    """
    ctx: dict[str, Any] = {"key": key, "why": why, "allowed": allowed, "quote_key": quote_key}
    if value is not _NO_VALUE:
        ctx["value"] = value
    return PydanticCustomError(RULE_ERROR, "{key} {why}", ctx)


Int = Annotated[int, Strict(), Field(ge=-(2**63), le=INT64_MAX)]
"""An integer within int64."""

Float = Annotated[float, Strict()]
"""A finite number; integers are accepted (strict mode refuses strings and booleans)."""

Bool = Annotated[bool, Strict()]


def _refuse_bool(value: Any) -> Any:
    # ``True == 1`` in Python: a lax Literal[1, 2] would take ``true`` for 1.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_literal", "not a boolean")
    return value


#: Metadata for a ``Literal`` of numbers: ``true``/``false`` are refused, not read as 1/0.
NOT_BOOL = BeforeValidator(_refuse_bool)
Str = Annotated[str, Strict()]


def _parse_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "datetime_type", "an offset date-time such as 2025-10-10T00:00:00Z"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError(
                "naive_datetime",
                "is a local date-time without a time zone ({given}); write it with an offset, "
                "e.g. {fixed}Z for UTC",
                {"given": value.isoformat(), "fixed": value.replace(tzinfo=None).isoformat()},
            )
        return value
    if isinstance(value, (date, time)):
        raise PydanticCustomError(
            "datetime_type",
            "an offset date-time such as 2025-10-10T00:00:00Z (date and time with an offset)",
        )
    raise PydanticCustomError("datetime_type", "an offset date-time such as 2025-10-10T00:00:00Z")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDateTime = Annotated[
    datetime, Strict(), BeforeValidator(_parse_datetime), AfterValidator(_to_utc)
]
"""A time-zone-aware date-time, stored in UTC."""


def _pairs_to_table(value: Any) -> Any:
    # A typed object re-validated (its tuple of pairs) reads like the table it came from.
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return dict(value)
    if not isinstance(value, Mapping):
        raise PydanticCustomError("pairs_type", "a table of names to values")
    return value


@dataclass(frozen=True)
class PairsTable:
    """Annotation metadata reading a table ``{name = value}`` into ``tuple[tuple[str, value], ...]``.

    The table is validated as a dict (so errors name ``features.vip_tier``, and the JSON Schema
    is an object whose values are ``value_type``), then kept in file order as pairs.
    """

    value_type: Any

    def __get_pydantic_core_schema__(self, _source: Any, handler: Any) -> core_schema.CoreSchema:
        table = handler.generate_schema(dict[Str, self.value_type])  # type: ignore[name-defined]
        return core_schema.no_info_before_validator_function(
            _pairs_to_table,
            core_schema.no_info_after_validator_function(lambda d: tuple(d.items()), table),
        )


def pairs_table(value_type: Any) -> PairsTable:
    """:class:`PairsTable` metadata for a field of ``value_type`` values."""
    return PairsTable(value_type)
