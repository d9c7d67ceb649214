"""Helpers shared by the tests that drive the CLI (imported as ``clihelp``: pytest puts the tests
folder on ``sys.path``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from allocator import names as N
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


def rehash_outputs(run: Path) -> None:
    """Rewrite a run manifest's output hashes to match its files: what an insider who edits a
    file would do, so that a test reaches the checks beyond the hashes."""
    man = json.loads((run / N.MANIFEST_FILE).read_text())
    for name in man["outputs"]:
        man["outputs"][name] = hashlib.sha256((run / name).read_bytes()).hexdigest()
    (run / N.MANIFEST_FILE).write_text(json.dumps(man, sort_keys=True, indent=2) + "\n")
