"""Strict TOML -> frozen dataclass conversion, driven by the dataclass's fields and type hints.

A settings schema is written once, as frozen dataclasses with type hints and defaults
(:mod:`allocator.settings.models`); this module reads a TOML file into it and writes it back to a
JSON-safe dict, with no per-schema code. It knows nothing about vouchers or loans: any schema
built from the supported types below works (the voucher scenario in :mod:`allocator.settings.scenarios`
is one such schema).

Supported field types and the TOML (or JSON) values they accept:

=======================================  ===================================================
``int``                                  an integer (``true``/``false`` are refused)
``float``                                a finite number; integers are accepted and converted
``bool``                                 ``true`` or ``false`` (integers are refused)
``str``                                  a string
``Literal["a", "b"]``                    one of the listed values
``datetime``                             an offset date-time (``2025-10-10T00:00:00Z``) or an
                                         ISO-8601 string with an offset; local (naive)
                                         date-times are refused; values are stored in UTC
``tuple[X, ...]``                        an array of X
``tuple[tuple[str, X], ...]``            a table ``{name = X, ...}``, kept in file order
``X | None``                             X, or ``None`` from a dict (TOML has no null: omit
                                         the key to get the default)
a dataclass                              a table
``tuple[Dataclass, ...]``                an array of tables (``[[section]]``)
=======================================  ===================================================

Strictness: an unknown key, a wrong type or a missing required key raises
:class:`~allocator.errors.ScenarioError` naming the file and the dotted key (``objective.alpha``,
``segments[1].where``); unknown keys also list the allowed ones, wrong types the expected type
and the value given. Omitted keys take the dataclass default. Range checks are the schema
owner's job, after typing.

Round trip: ``build(cls, to_dict(x), file=...) == x`` for every ``x`` this module can build;
``to_dict`` output is JSON-safe (datetimes as ISO-8601 with ``Z``, tuples as lists, tuples of
pairs as dicts).
"""

from __future__ import annotations

import codecs
import difflib
import math
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from datetime import UTC, date, datetime, time
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from allocator.errors import ScenarioError

__all__ = ["build", "describe_type", "load_toml", "to_dict"]

T = TypeVar("T")

_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict.

    A leading UTF-8 byte-order mark (added by Notepad and other Windows editors) is skipped:
    TOML forbids it, but it carries no content and refusing it would only puzzle the user.

    Raises
    ------
    ScenarioError
        The file is missing or unreadable, or is not valid TOML (the message names the file,
        the line and the column).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found.") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02X} at line {line}); TOML files "
            f"are UTF-8: save the file again as UTF-8."
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _LINE_RE.search(msg)
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "unknown position"
        reason = _LINE_RE.sub("", msg).strip()
        raise ScenarioError(f"{path}: not valid TOML at {where}: {reason}.") from None


@cache
def _hints(cls: type) -> dict[str, Any]:
    # Schemas use ``from __future__ import annotations``: hints are strings until resolved.
    return get_type_hints(cls)


def _init_fields(cls: type) -> list[Any]:
    return [f for f in fields(cls) if f.init]


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _is_pairs(tp: Any) -> bool:
    """``tuple[tuple[str, X], ...]``: a name -> value table."""
    if get_origin(tp) is not tuple:
        return False
    args = get_args(tp)
    if len(args) != 2 or args[1] is not Ellipsis or get_origin(args[0]) is not tuple:
        return False
    inner = get_args(args[0])
    return len(inner) == 2 and inner[0] is str and inner[1] is not Ellipsis


def describe_type(tp: Any) -> str:
    """A reader-facing description of what a field accepts (used in error messages)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(parts)
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
    if _is_pairs(tp):
        return f"a table of names to {describe_type(get_args(get_args(tp)[0])[1])}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            inner = args[0]
            if is_dataclass(inner):
                return "an array of tables"
            plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
            if inner in plural:
                return f"an array of {plural[inner]}"
            return f"an array whose items are each {describe_type(inner)}"
        return f"an array of {len(args)} items"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
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


def _type_error(file: Any, key: str, tp: Any, value: Any) -> ScenarioError:
    return ScenarioError(f"{file}: key '{key}' must be {describe_type(tp)}; got {_show(value)}.")


def _convert(tp: Any, value: Any, *, file: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, file=file, key=key)
        for option in options:
            try:
                return _convert(option, value, file=file, key=key)
            except ScenarioError:
                continue
        raise _type_error(file, key, tp, value)
    if origin is Literal:
        # ``True == 1``: compare types too so that a boolean never passes for an integer value.
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise ScenarioError(
            f"{file}: key '{key}' must be one of {', '.join(repr(a) for a in args)}; "
            f"got {_show(value)}."
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(file, key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(file, key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
            if math.isfinite(out):
                return out
        raise _type_error(file, key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(file, key, tp, value)
    if tp is datetime:
        return _convert_datetime(value, file=file, key=key)
    if is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise _type_error(file, key, tp, value)
        return build(tp, value, file=file, prefix=key)
    if _is_pairs(tp):
        if not isinstance(value, Mapping):
            raise _type_error(file, key, tp, value)
        value_tp = get_args(get_args(tp)[0])[1]
        return tuple(
            (str(k), _convert(value_tp, v, file=file, key=_join(key, str(k))))
            for k, v in value.items()
        )
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(file, key, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _convert(args[0], item, file=file, key=f"{key}[{i}]")
                for i, item in enumerate(value)
            )
        if len(value) != len(args):
            raise _type_error(file, key, tp, value)
        return tuple(
            _convert(a, item, file=file, key=f"{key}[{i}]")
            for i, (a, item) in enumerate(zip(args, value, strict=True))
        )
    raise TypeError(f"allocator.settings.toml: unsupported field type {tp!r} for key '{key}'")


def _convert_datetime(value: Any, *, file: Any, key: str) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _type_error(file, key, datetime, value) from None
        value = parsed
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ScenarioError(
                f"{file}: key '{key}' is a local date-time without a time zone ({value.isoformat()}); "
                f"write it with an offset, e.g. {value.replace(tzinfo=None).isoformat()}Z for UTC."
            )
        return value.astimezone(UTC)
    if isinstance(value, (date, time)):
        raise ScenarioError(
            f"{file}: key '{key}' must be {describe_type(datetime)} (date and time with an offset); "
            f"got {_show(value)}."
        )
    raise _type_error(file, key, datetime, value)


def build(cls: type[T], data: Mapping[str, Any], *, file: str | Path, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a parsed TOML (or JSON) mapping, strictly.

    Parameters
    ----------
    cls
        A dataclass whose fields carry type hints of the supported kinds (module docstring).
    data
        The mapping for ``cls``: a whole parsed file, or one of its tables.
    file
        The file the data came from, named in every error message (any label will do for data
        that did not come from a file).
    prefix
        Dotted key of ``data`` inside the file (``"objective"``), so that errors name the full key.

    Raises
    ------
    ScenarioError
        An unknown key (the allowed keys are listed), a missing required key, or a value of the
        wrong type (the expected type and the value given are named).
    """
    if not isinstance(data, Mapping):
        raise _type_error(file, prefix or "(top level)", cls, data)
    hints = _hints(cls)
    known = _init_fields(cls)
    names = [f.name for f in known]
    for key in data:
        if key not in names:
            where = f"table '{prefix}'" if prefix else "the top level"
            close = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f" Did you mean '{close[0]}'?" if close else ""
            raise ScenarioError(
                f"{file}: unknown key '{_join(prefix, str(key))}'. Allowed keys in {where}: "
                f"{', '.join(names)}.{suggestion}"
            )
    kwargs: dict[str, Any] = {}
    for f in known:
        key = _join(prefix, f.name)
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], file=file, key=key)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ScenarioError(
                f"{file}: missing required key '{key}' ({describe_type(hints[f.name])})."
            )
    return cls(**kwargs)


def _iso_utc(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def _dump(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _dump(options[0], value) if len(options) == 1 else _dump_any(value)
    if is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, datetime):
        return _iso_utc(value)
    if _is_pairs(tp):
        value_tp = get_args(get_args(tp)[0])[1]
        return {str(k): _dump(value_tp, v) for k, v in value}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return [_dump(args[0], v) for v in value]
        return [_dump(a, v) for a, v in zip(args, value, strict=True)]
    if tp is float:
        return float(value)
    return value


def _dump_any(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, (list, tuple)):
        return [_dump_any(v) for v in value]
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-safe dict of a dataclass built by :func:`build`, with every field resolved.

    Datetimes become ISO-8601 strings in UTC with ``Z``, tuples lists, name -> value tuples
    dicts, nested dataclasses dicts, and ``None`` stays ``None``; ``build(type(obj),
    to_dict(obj), file=...)`` gives back an equal object.
    """
    if not (is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError(f"to_dict expects a dataclass instance, not {type(obj).__name__}")
    hints = _hints(type(obj))
    return {f.name: _dump(hints[f.name], getattr(obj, f.name)) for f in _init_fields(type(obj))}
