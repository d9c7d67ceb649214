"""Typed exceptions, each mapped to a CLI exit code.

A small hierarchy in the cvxportfolio style: callers catch :class:`AllocatorError` for any
failure the tool understands; the CLI turns each one into a one-paragraph message and its exit
code, never a traceback.

Exit codes: 0 success, 1 a check failed, 2 usage or input error, 3 infeasible or solver failure.
"""

from __future__ import annotations


class AllocatorError(Exception):
    """Base of every error the tool reports to its user."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} Hint: {self.hint}"


class InputError(AllocatorError):
    """A data file is missing, malformed, or breaks a rule of its schema.

    The message names the file, the column and an example row.
    """

    exit_code = 2


class ScenarioError(AllocatorError):
    """A scenario file has an unknown key, a wrong type or an out-of-range value."""

    exit_code = 2


class InfeasibleError(AllocatorError):
    """The allocation problem has no solution; raised before solving when it can be seen.

    ``status`` is the solver's status when a solver found it (``None`` for the checks made
    before solving).
    """

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, status: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class SolverError(AllocatorError):
    """A solver failed or returned a result that cannot be paid out."""

    exit_code = 3

    def __init__(self, message: str, *, status: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class SolverFailedError(SolverError):
    """The solver stopped without a solution (numerical trouble, iteration limit, crash)."""


class NotCertifiedError(SolverError):
    """A solution came back but its optimality certificate does not hold within tolerance."""


class CheckFailedError(AllocatorError):
    """A finance check found at least one failure (``check-budget``)."""

    exit_code = 1
