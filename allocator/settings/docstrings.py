"""Each settings field's docstring, read when a JSON Schema is written.

A field's description is the string literal under it in the class body. Pydantic can collect
them as it builds each class (``use_attribute_docstrings``), but that parses the source of
every settings class on the first file read: about 65 ms of every command, for descriptions
that only the JSON Schema shows. They are read here instead, the same way (the string right
after an annotated name, cleaned by :func:`inspect.cleandoc`), when ``allocator scenario
schema`` asks for them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import typing
from typing import Any

__all__ = ["field_docstrings", "with_field_descriptions"]


def field_docstrings(cls: type) -> dict[str, str]:
    """``{field: its docstring}`` of a class written in a source file (empty without one)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    (node,) = ast.parse(source).body
    docs: dict[str, str] = {}
    body = node.body if isinstance(node, ast.ClassDef) else []
    for first, second in itertools.pairwise(body):
        if (
            isinstance(first, ast.AnnAssign)
            and isinstance(first.target, ast.Name)
            and isinstance(second, ast.Expr)
            and isinstance(second.value, ast.Constant)
            and isinstance(second.value.value, str)
        ):
            docs[first.target.id] = inspect.cleandoc(second.value.value)
    return docs


def _dataclasses_under(cls: type) -> dict[str, type]:
    """Every dataclass reachable from ``cls`` through its fields' types, by class name (the
    names of a JSON Schema's ``$defs``)."""
    found: dict[str, type] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for hint in typing.get_type_hints(tp, include_extras=True).values():
                visit(hint)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(cls)
    return found


def with_field_descriptions(schema: dict[str, Any], cls: type) -> dict[str, Any]:
    """``schema`` (of ``cls``, as Pydantic writes it) with each property described by its field's
    docstring, in place; the property's keys stay sorted, as Pydantic sorts them."""
    classes = _dataclasses_under(cls)
    nodes = [(schema, cls)] + [
        (node, classes[name]) for name, node in schema.get("$defs", {}).items() if name in classes
    ]
    for node, owner in nodes:
        docs = field_docstrings(owner)
        properties = node.get("properties", {})
        for name, prop in list(properties.items()):
            if name in docs and "description" not in prop:
                properties[name] = dict(sorted({**prop, "description": docs[name]}.items()))
    return schema
