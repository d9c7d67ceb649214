"""Keep native libraries' output off stdout, where ``--json`` promises strict JSON only.

HiGHS (1.16) prints a banner ("Running HiGHS 1.x ... Copyright ...") from the constructor of its
C++ solver object, once per process, straight to file descriptor 1: before any option can be
set, so neither cvxpy's ``verbose=False`` nor HiGHS's ``output_flag`` / ``log_to_console``
silences it, and replacing ``sys.stdout`` does not catch it. Every call into such a solver runs
inside :func:`native_stdout_to_stderr`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["native_stdout_to_stderr"]


@contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (stdout) to descriptor 2 (stderr) meanwhile.

    Left alone, a native banner lands in front of the JSON of ``--json``. Every native solver
    call that may print runs inside this guard; the CLI uses it around whole computations as
    well, for native code it does not know about.

    Descriptor 1 is process-wide: output that another thread writes to stdout meanwhile goes to
    stderr too. Without a usable descriptor 1 or 2 (a daemon with both closed) it does nothing.
    Nesting is safe: each level restores what it found.
    """
    _flush_stdout()
    try:
        saved: int | None = os.dup(1)
    except OSError:
        saved = None
    moved = False
    if saved is not None:
        try:
            os.dup2(2, 1)
            moved = True
        except OSError:
            pass
    try:
        yield
    finally:
        if moved:
            # Output still buffered for descriptor 1 (Python's, and C stdio's, which buffers
            # fully on a pipe) would otherwise be written after the restore, onto stdout.
            _flush_stdout()
            _flush_c_stdio()
            os.dup2(saved, 1)  # type: ignore[arg-type]
        if saved is not None:
            os.close(saved)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except (AttributeError, ValueError, OSError):  # closed or replaced by an object without it
        pass


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library handle (Windows): nothing to do
        pass
