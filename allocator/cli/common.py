"""Pieces shared by the commands: default data, progress on stderr, strict JSON on stdout."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from allocator.cli.app import err_console


def resolve_data_dir(data: Path | None) -> Path:
    """The ``--data`` directory, or the built-in default data (generated once, then cached)."""
    if data is not None:
        return data
    from allocator.synthetic import default_data_dir

    with stage("preparing built-in default data (first use generates it)"):
        return default_data_dir()


@contextmanager
def stage(label: str) -> Iterator[None]:
    """Show a spinner on stderr while a long stage runs; silent when stderr is not a terminal."""
    if err_console.is_terminal:
        with err_console.status(label):
            yield
    else:
        yield


def progress_printer(quiet: bool):  # noqa: ANN201 - a small closure factory
    def report(label: str) -> None:
        if not quiet:
            err_console.print(f"[dim]· {label}[/]", markup=True)

    return report


def _json_safe(obj: Any) -> Any:
    # Strict JSON has no NaN or Infinity: the loss ratio of a user with no net assets is +inf.
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def dumps_json(obj: Any) -> str:
    return json.dumps(_json_safe(obj), sort_keys=True, indent=2, allow_nan=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps_json(obj) + "\n")
    sys.stdout.flush()


def usd(x: float) -> str:
    return f"{x:,.2f}"
