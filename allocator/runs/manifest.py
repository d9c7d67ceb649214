"""Manifests, once: what a run records about itself, how it is written and how it is read.

Every programme's run directory ends with a ``manifest.json``: strict JSON (a non-finite float
is written as ``null``, ``"inf"`` or ``"-inf"``, never ``NaN``), sorted keys, indent 2 and a
trailing newline, so that the same manifest is always the same bytes. Its ``versions`` object
comes from :func:`versions`, one list for every programme.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from allocator import __version__
from allocator import names as N
from allocator.errors import InputError
from allocator.jsonsafe import json_safe
from allocator.runs.store import atomic_write_text

#: Packages whose versions a manifest records (distribution names), besides Python and this
#: package: the numerical stack, the solvers and the file formats every programme uses.
VERSIONED_PACKAGES = (
    "numpy",
    "scipy",
    "polars",
    "cvxpy",
    "clarabel",
    "highspy",
    "ecos",
    "scs",
    "pyarrow",
)

#: Deepest nesting a strict read accepts in a manifest (allocate writes about 5 levels); a
#: deeper one is damaged, and would exhaust the recursion of the code that walks it.
MAX_MANIFEST_DEPTH = 32


def versions() -> dict[str, str | None]:
    """Versions of Python, this package and :data:`VERSIONED_PACKAGES` (``None`` when absent).

    Read from package metadata, so nothing heavy (cvxpy) is imported.
    """
    out: dict[str, str | None] = {"allocator": __version__, "python": platform.python_version()}
    for dist in VERSIONED_PACKAGES:
        try:
            out[dist] = dist_version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def dumps_manifest(manifest: Mapping[str, Any]) -> str:
    """The canonical text of a manifest: strict JSON, sorted keys, indent 2, trailing newline.

    Raises
    ------
    TypeError, ValueError
        A value JSON cannot hold (checked before anything is written).
    """
    return json.dumps(json_safe(manifest), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``directory/manifest.json`` atomically in the canonical text; return its path.

    The file appears complete or not at all, so a reader that takes the manifest as the mark
    of a complete directory never sees half of one.
    """
    return atomic_write_text(Path(directory) / N.MANIFEST_FILE, dumps_manifest(manifest))


def _manifest_depth(data: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_MANIFEST_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(token: str) -> None:
    raise ValueError(
        f'{token} is not strict JSON (allocate writes a non-finite number as null, "inf" or "-inf")'
    )


def read_manifest(path: str | Path, *, strict: bool = False) -> dict[str, Any]:
    """Read ``manifest.json`` from a run directory (or the file itself); InputError if unusable.

    Parameters
    ----------
    path
        The run directory or its manifest file.
    strict
        Also refuse ``NaN``/``Infinity`` tokens and nesting deeper than
        :data:`MAX_MANIFEST_DEPTH` (what a verified read of a run requires).

    Raises
    ------
    InputError
        The file is missing, unreadable, not UTF-8, not JSON (or too deeply nested to parse), or
        not a JSON object.
    """
    path = Path(path)
    file = path / N.MANIFEST_FILE if path.is_dir() else path
    if file.is_symlink():
        raise InputError(
            f"{file}: a symbolic link, not a file; a run directory holds its own files."
        )
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{file}: file not found; a run directory must hold {N.MANIFEST_FILE}."
        ) from None
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or exc}).") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            f"a manifest is the JSON that allocator allocate writes."
        ) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant if strict else None)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None
    except RecursionError:
        raise InputError(
            f"{file}: JSON nested too deeply to read; a manifest is nested about 5 levels."
        ) from None
    except ValueError as exc:  # a NaN/Infinity token under strict
        raise InputError(f"{file}: {exc}.") from None
    if not isinstance(data, dict):
        raise InputError(
            f"{file}: expected a JSON object at the top level, found {type(data).__name__}."
        )
    if strict:
        depth = _manifest_depth(data)
        if depth > MAX_MANIFEST_DEPTH:
            raise InputError(
                f"{file}: JSON nested more than {MAX_MANIFEST_DEPTH} levels deep; a manifest is "
                f"nested about 5 levels."
            )
    return data
