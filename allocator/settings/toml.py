"""Settings files: TOML in, validated frozen dataclasses out (through pydantic), and back to dicts.

A settings schema is written once, as frozen dataclasses whose fields carry the strict types of
:mod:`allocator.settings.types`, ``Field`` ranges and pydantic validators
(:mod:`allocator.settings.models` and its siblings). :func:`build` validates a parsed TOML (or
JSON) mapping against one with pydantic and words the first problem with
:mod:`allocator.settings.messages`; :func:`to_dict` writes an object back to a JSON-safe dict.

Strictness: an unknown key, a wrong type, a missing required key or a value out of range raises
:class:`~allocator.errors.ScenarioError` naming the file and the dotted key (``objective.alpha``,
``segments[1].where``); unknown keys also list the allowed ones and the closest, wrong types the
expected type and the value given. Omitted keys take the dataclass default.

Round trip: ``build(cls, to_dict(x), file=...) == x`` for every valid ``x``; ``to_dict`` output
is JSON-safe (datetimes as ISO-8601 with ``Z``, tuples as lists, tuples of pairs as dicts).
"""

from __future__ import annotations

import codecs
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError

from allocator.errors import ScenarioError
from allocator.settings.messages import RangeStyle, describe_type, scenario_error, show_value

__all__ = ["adapter", "build", "describe_type", "load_toml", "to_dict"]

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


@cache
def adapter(cls: type) -> TypeAdapter[Any]:
    """The (cached) pydantic validator of a settings dataclass."""
    return TypeAdapter(cls)


def _init_fields(cls: type) -> list[Any]:
    return [f for f in fields(cls) if f.init]


def _is_pairs(tp: Any) -> bool:
    """``tuple[tuple[str, X], ...]``: a name -> value table."""
    if get_origin(tp) is not tuple:
        return False
    args = get_args(tp)
    if len(args) != 2 or args[1] is not Ellipsis or get_origin(args[0]) is not tuple:
        return False
    inner = get_args(args[0])
    return len(inner) == 2 and inner[0] is str and inner[1] is not Ellipsis


def build(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    file: str | Path,
    prefix: str = "",
    style: RangeStyle = "assign",
) -> T:
    """Validate a parsed TOML (or JSON) mapping into the settings dataclass ``cls``.

    Parameters
    ----------
    cls
        A dataclass whose fields carry the types of :mod:`allocator.settings.types`.
    data
        The mapping for ``cls``: a whole parsed file, or one of its tables.
    file
        The file the data came from, named in every error message (any label will do for data
        that did not come from a file).
    prefix
        Dotted key of ``data`` inside the file (``"depeg"``), so that errors name the full key.
    style
        How an out-of-range value is worded (:data:`allocator.settings.messages.RangeStyle`).

    Raises
    ------
    ScenarioError
        An unknown key (the allowed keys are listed), a missing required key, a value of the
        wrong type (the expected type and the value given are named) or out of its range, or a
        broken cross-field rule.
    """
    if not isinstance(data, Mapping):
        key = prefix or "(top level)"
        raise ScenarioError(f"{file}: key '{key}' must be a table; got {show_value(data)}.")
    try:
        return cast(T, adapter(cast(type, cls)).validate_python(dict(data)))
    except ValidationError as exc:
        raise scenario_error(exc, cls, file=file, prefix=prefix, style=style) from None


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
