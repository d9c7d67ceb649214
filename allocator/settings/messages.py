"""Pydantic's validation errors, worded for the person who wrote the settings file.

:func:`scenario_error` turns the first error of a :class:`pydantic.ValidationError` into one
:class:`~allocator.errors.ScenarioError` paragraph naming the file, the dotted key
(``objective.alpha``, ``segments[1].where``), what is allowed and the value given, and for an
unknown key the allowed keys and the closest one ("Did you mean 'alpha'?"). It reads the
schema's type hints to say what a key accepts, so the schemas need no message code.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import fields, is_dataclass
from datetime import date, datetime, time
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError

from allocator.errors import ScenarioError
from allocator.settings.types import RULE_ERROR, Allowed, PairsTable

__all__ = ["RangeStyle", "describe_type", "join_key", "scenario_error", "show_value"]

#: Range styles: ``"assign"`` words ``key = value is out of range; allowed: 0 <= key <= 100``
#: (voucher scenarios, depeg rules), ``"interval"`` words ``key must be in [0, 3], got 3.5``
#: (loan scenarios).
RangeStyle = Literal["assign", "interval"]


_TYPE_ERRORS = frozenset(
    {
        "int_type",
        "int_parsing",
        "int_from_float",
        "float_type",
        "float_parsing",
        "finite_number",
        "bool_type",
        "bool_parsing",
        "string_type",
        "tuple_type",
        "list_type",
        "dict_type",
        "dataclass_type",
        "dataclass_exact_type",
        "datetime_type",
        "pairs_type",
        "none_required",
    }
)
_UNKNOWN_KEY = frozenset({"unexpected_keyword_argument", "extra_forbidden"})
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _strip(tp: Any) -> tuple[Any, list[Any]]:
    """The type under ``Annotated`` and the metadata around it (outermost first)."""
    meta: list[Any] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp, meta = args[0], [*meta, *args[1:]]
    return tp, meta


def _pairs_value(meta: list[Any]) -> Any:
    """The value type of a :class:`~allocator.settings.types.PairsTable` field, or ``None``."""
    for m in meta:
        if isinstance(m, PairsTable):
            return m.value_type
    return None


def describe_type(tp: Any) -> str:
    """A reader-facing description of what a field accepts (used in error messages)."""
    tp, meta = _strip(tp)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is str:
        return "a string"
    if tp is datetime:
        return "an offset date-time such as 2025-10-10T00:00:00Z"
    if is_dataclass(tp):
        return "a table"
    value = _pairs_value(meta)
    if value is not None:
        return f"a table of names to {describe_type(value)}"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner, _ = _strip(args[0])
        if is_dataclass(inner):
            return "an array of tables"
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        if inner in plural:
            return f"an array of {plural[inner]}"
        return f"an array whose items are each {describe_type(args[0])}"
    return getattr(tp, "__name__", str(tp))


def show_value(value: Any) -> str:
    """``value`` as the file wrote it, with its TOML kind: ``'x' (string)``, ``1.5 (number)``."""
    text = value.isoformat() if isinstance(value, (date, time)) else repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        dict: "table",
        list: "array",
    }.get(type(value), type(value).__name__)
    return f"{text} ({kind})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def join_key(prefix: str, key: str | int) -> str:
    """``objective`` + ``alpha`` -> ``objective.alpha``; ``segments`` + 1 -> ``segments[1]``."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _walk(root: type, loc: tuple[Any, ...]) -> tuple[Any, Any]:
    """The declared type at ``loc`` below ``root`` and the dataclass that holds its last key."""
    tp: Any = root
    owner: Any = None
    for part in loc:
        base, meta = _strip(tp)
        origin, args = get_origin(base), get_args(base)
        if origin in (Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            base, meta = _strip(options[0]) if len(options) == 1 else (base, meta)
            origin, args = get_origin(base), get_args(base)
        if isinstance(part, str) and is_dataclass(base):
            owner = base
            tp = _hints(base).get(part)  # type: ignore[arg-type]
        elif isinstance(part, str) and _pairs_value(meta) is not None:
            owner, tp = None, _pairs_value(meta)
        elif isinstance(part, int) and origin is tuple and args:
            owner, tp = None, args[0]
        else:
            return None, None
        if tp is None:
            return None, owner
    return tp, owner


def _dotted(prefix: str, loc: tuple[Any, ...]) -> str:
    key = prefix
    for part in loc:
        key = join_key(key, part)
    return key or "(top level)"


def _bound(c: Any) -> str:
    value = next(getattr(c, k) for k in ("ge", "gt", "le", "lt") if hasattr(c, k))
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _range_text(tp: Any, style: RangeStyle, *, failed_high: bool = False) -> str:
    """The allowed range of a field: its :class:`Allowed` text, or one made of its constraints."""
    tp, meta = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        _, meta = _strip(options[0]) if len(options) == 1 else (tp, meta)
    low = high = None
    for m in meta:
        if isinstance(m, Allowed):
            return m.text
        for c in getattr(m, "metadata", [m]):
            if isinstance(c, (Ge, Gt)):
                low = c
            elif isinstance(c, (Le, Lt)):
                high = c
    if style == "interval":
        left = "(-inf" if low is None else ("[" if isinstance(low, Ge) else "(") + _bound(low)
        right = "inf)" if high is None else _bound(high) + ("]" if isinstance(high, Le) else ")")
        return f"{left}, {right}"
    sides = []
    if low is not None:
        sides.append(f"{'>=' if isinstance(low, Ge) else '>'} {_bound(low)}")
    if high is not None:
        sides.append(f"{'<=' if isinstance(high, Le) else '<'} {_bound(high)}")
    if failed_high:
        sides.reverse()
    # the side the value broke first, the other in brackets
    return sides[0] + (f" (and {sides[1]})" if len(sides) > 1 else "") if sides else "any value"


def scenario_error(
    exc: ValidationError,
    root: type,
    *,
    file: str | Path,
    prefix: str = "",
    style: RangeStyle = "assign",
) -> ScenarioError:
    """The first error of ``exc`` (raised validating ``root``) as a one-paragraph ScenarioError.

    An unknown key is reported before any other problem, as a misspelt key also leaves its
    intended key missing.

    Parameters
    ----------
    exc
        The validation error.
    root
        The dataclass that was validated; its type hints say what each key accepts.
    file
        The file (or label) named first in the message.
    prefix
        Dotted key of the validated table inside the file (``"depeg"``).
    style
        How a value out of a ``Field`` range is worded (:data:`RangeStyle`).
    """
    errors = exc.errors(include_url=False)
    # An unknown key first: it is often a misspelt required key, reported missing as well.
    unknown = [e for e in errors if e["type"] in _UNKNOWN_KEY]
    err = (unknown or errors)[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    more = f" ({len(errors) - 1} more problem(s) after this one.)" if len(errors) > 1 else ""
    if kind == RULE_ERROR:
        key = _dotted(prefix, loc)
        if ctx.get("key"):
            key = f"{key}.{ctx['key']}" if loc or prefix else str(ctx["key"])
            key = key.replace(".[", "[")
        shown = f"key '{key}'" if ctx.get("quote_key") else key
        text = (
            f"{shown} = {_short(ctx['value'])} {ctx['why']}"
            if "value" in ctx
            else f"{shown} {ctx['why']}"
        )
        if ctx.get("allowed"):
            text += f"; allowed: {ctx['allowed']}"
        return ScenarioError(f"{file}: {text}.{more}")
    key = _dotted(prefix, loc)
    if kind in _UNKNOWN_KEY:
        owner_tp, _ = _walk(root, loc[:-1]) if loc[:-1] else (root, None)
        owner, _ = _strip(owner_tp)
        names = [f.name for f in fields(owner) if f.init] if is_dataclass(owner) else []
        parent = _dotted(prefix, loc[:-1]) if loc[:-1] or prefix else ""
        where = f"table '{parent}'" if parent else "the top level"
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return ScenarioError(
            f"{file}: unknown key '{key}'. Allowed keys in {where}: {', '.join(names)}.{hint}{more}"
        )
    tp, _ = _walk(root, loc)
    if kind in ("missing", "missing_argument"):
        what = f" ({describe_type(tp)})" if tp is not None else ""
        return ScenarioError(f"{file}: missing required key '{key}'{what}.{more}")
    if kind == "naive_datetime":
        return ScenarioError(f"{file}: key '{key}' {err['msg']}.{more}")
    literal, _ = _strip(tp)
    if get_origin(literal) is Literal:
        expected = ", ".join(repr(a) for a in get_args(literal))
        return ScenarioError(
            f"{file}: key '{key}' must be one of {expected}; got {show_value(value)}.{more}"
        )
    if kind in _RANGE_ERRORS and tp is not None:
        allowed = _range_text(tp, style, failed_high=kind.startswith("less"))
        if style == "interval":
            return ScenarioError(f"{file}: {key} must be in {allowed}, got {_short(value)}.{more}")
        return ScenarioError(
            f"{file}: {key} = {_short(value)} is out of range; allowed: {allowed}.{more}"
        )
    if kind in _TYPE_ERRORS or kind in _RANGE_ERRORS:
        what = describe_type(tp) if tp is not None else err["msg"]
        return ScenarioError(f"{file}: key '{key}' must be {what}; got {show_value(value)}.{more}")
    return ScenarioError(f"{file}: key '{key}': {err['msg']}; got {show_value(value)}.{more}")
