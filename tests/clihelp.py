"""Helpers shared by the tests that drive the CLI (imported as ``clihelp``: pytest puts the tests
folder on ``sys.path``)."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from allocator.cli import app

runner = CliRunner()


def invoke(*args: object, catch_exceptions: bool = True) -> Result:
    """Run ``allocator ARGS...`` in-process; stdout and stderr are kept apart."""
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=catch_exceptions)


def strict_json(text: str) -> Any:
    """Parse JSON, refusing NaN and Infinity (``--json`` promises strict JSON)."""

    def reject(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=reject)
