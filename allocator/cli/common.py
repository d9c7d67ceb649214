"""Pieces shared by the commands: default data, progress on stderr, strict JSON on stdout.

Imported by every command module, so it imports nothing heavy at module level (the CLI's start
and each command's ``--help`` stay fast; :mod:`allocator.cli.lazy`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from allocator.cli.app import err_console, styled
from allocator.errors import AllocatorError
from allocator.jsonsafe import dumps

#: Values of every command's ``--solver`` option.
SOLVERS = ("auto", "fast", "cvxpy")


def check_solver_option(solver: str | None) -> None:
    """Reject an unknown ``--solver`` before any data is loaded (exit 2, one line)."""
    if solver is not None and solver not in SOLVERS:
        raise AllocatorError(f"--solver must be one of {', '.join(SOLVERS)}, not {solver!r}.")


def resolve_data_dir(data: Path | None) -> Path:
    """The ``--data`` directory, or the built-in default data (generated once, then cached)."""
    if data is not None:
        return data
    from allocator.data.synthetic import default_data_dir

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


#: Largest --sample of the axiom checks: each sampled user is a perturbed solve or an account.
MAX_SAMPLE = 100_000


def check_sample(sample: int) -> None:
    """Refuse an axioms ``--sample`` outside 1 to :data:`MAX_SAMPLE` before any work (exit 2)."""
    if not 1 <= sample <= MAX_SAMPLE:
        raise AllocatorError(f"--sample must be 1 to {MAX_SAMPLE:,} users, not {sample}.")


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """A progress callback printing each stage on stderr (nothing when ``quiet``)."""

    def report(label: str) -> None:
        if not quiet:
            err_console.print(styled(f"· {label}", "dim"))

    return report


def print_json(obj: Any, *, sort_keys: bool = True) -> None:
    sys.stdout.write(dumps(obj, sort_keys=sort_keys) + "\n")
    sys.stdout.flush()


def usd(x: float) -> str:
    """A USD amount as the commands print it: ``1,234.56``."""
    from allocator.kernel.money import format_usd

    return format_usd(x)
