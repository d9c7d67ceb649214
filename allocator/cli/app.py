"""The Typer application and the error boundary every command goes through.

Command modules register themselves on :data:`app` (imported on demand:
:mod:`allocator.cli.lazy`); :func:`guarded` turns each
:class:`~allocator.errors.AllocatorError` into a one-paragraph message on stderr and its exit
code (0 success, 1 a check failed, 2 usage or input error, 3 infeasible or solver failure); an
``OSError`` (a path that cannot be read or written) is a usage error, exit 2.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from allocator.cli.lazy import LazyGroup
from allocator.errors import AllocatorError

app = typer.Typer(
    name="allocator",
    help="Optimisation-based budget allocator for compensation programmes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
)


@app.callback()
def _group() -> None:
    # A callback keeps the app a group before any command module has registered a command.
    return None


def _console(*, stderr: bool) -> Console:
    # Rich falls back to 80 columns when output is piped, which squeezes the comparison tables
    # into unreadable cells; files and pipes get a wide page instead. Markup is off: the text
    # printed holds user input (scenario names, paths, error messages quoting file contents),
    # and a stray "[/x]" in it would raise MarkupError instead of being shown. Styles are set
    # with styled() instead.
    console = Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(
            stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False, width=220
        )
    return console


#: Progress, logs and errors go to stderr so that stdout stays clean for ``--json``.
err_console = _console(stderr=True)
out_console = _console(stderr=False)

F = TypeVar("F", bound=Callable[..., Any])


def styled(head: str, style: str, tail: str = "") -> Text:
    """``head`` in ``style`` followed by ``tail`` as plain text (never parsed as markup)."""
    return Text.assemble((head, style), tail)


#: OS errors as Polars words them inside its own exceptions.
_OS_ERROR_TEXT = re.compile(
    r"os error \d+|No space left on device|Permission denied|Read-only file system|Disk quota"
)


def _is_polars_os_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("polars") and bool(_OS_ERROR_TEXT.search(str(exc)))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def guarded(func: F) -> F:
    """Run a command, mapping tool errors to a message and exit code instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AllocatorError as exc:
            err_console.print(styled("error:", "bold red", f" {exc}"))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            # a path the user gave cannot be read or written (an --out under a file, a
            # read-only folder, a full disk): their input to fix, not a bug to trace
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
            why = exc.strerror or str(exc)
            err_console.print(
                styled("error:", "bold red", f" {where or 'a file'}: {why}. Nothing was written.")
            )
            raise typer.Exit(2) from None
        except Exception as exc:
            # Polars reports a failed write (a full disk, a read-only folder) as a ComputeError
            # carrying the OS error's text: the same user problem as an OSError. Anything else
            # is a bug, and its traceback is what a bug report needs.
            if not _is_polars_os_error(exc):
                raise
            err_console.print(
                styled("error:", "bold red", f" {_first_line(exc)}. Nothing was written.")
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
