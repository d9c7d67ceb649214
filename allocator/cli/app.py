"""The Typer application and the error boundary every command goes through.

Command modules register themselves on :data:`app`; :func:`guarded` turns each
:class:`~allocator.errors.AllocatorError` into a one-paragraph message on stderr and its exit
code (0 success, 1 a check failed, 2 usage or input error, 3 infeasible or solver failure).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from allocator.errors import AllocatorError

app = typer.Typer(
    name="allocator",
    help="Optimisation-based budget allocator for compensation programmes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(*, stderr: bool) -> Console:
    # Rich falls back to 80 columns when output is piped, which squeezes the comparison tables
    # into unreadable cells; files and pipes get a wide page instead.
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=220)
    return console


#: Progress, logs and errors go to stderr so that stdout stays clean for ``--json``.
err_console = _console(stderr=True)
out_console = _console(stderr=False)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F) -> F:
    """Run a command, mapping tool errors to a message and exit code instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AllocatorError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", markup=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]
