"""How the ``allocator`` process keeps its memory: two allocators, each told once at start.

Polars allocates through its own jemalloc, NumPy through the C library's malloc; each keeps
freed memory by its own rule, and each rule was wrong for this tool in its own way. A command
that runs once wants freed memory back soon (its peak is a goal: ``allocate`` at two million
users within 1.5 GiB); the studio, a server answering one setting after another, wants it kept
for the next setting (memory touched for the first time is what makes a setting slow).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = [
    "POLARS_MALLOC_CONF",
    "STUDIO_MALLOC_CONF",
    "STUDIO_TRIM_THRESHOLD",
    "TRIM_THRESHOLD",
    "keep_freed_arrays",
    "memory_for",
]

#: How a command asks Polars' jemalloc to give freed memory back. Polars' jemalloc keeps freed
#: pages for seconds before returning them; between the stages of a run they pile up (allocate
#: at two million users peaked at 1.6 GiB, of which about 0.2 GiB freed but kept). A
#: background purger with a short decay returns them as the run goes, at no measured cost in
#: time. Read when Polars is first imported; a value set in the environment
#: (``_RJEM_MALLOC_CONF``) wins.
POLARS_MALLOC_CONF = "background_thread:true,dirty_decay_ms:200,muzzy_decay_ms:0"

#: The studio's: freed pages kept for a minute. Returned after 200 ms, they come back as fresh
#: pages on the next setting (its tables are built anew each time): with them kept, a knob at a
#: million users went from 157 to 131 ms (p50) and from 199 to 146 ms (p95) in alternating
#: runs of ``benchmarks/bench_studio.py``.
STUDIO_MALLOC_CONF = "background_thread:true,dirty_decay_ms:60000,muzzy_decay_ms:60000"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: Arrays up to this size come from the heap, not from pages of their own (glibc's largest
#: allowed value on 64-bit systems).
MMAP_THRESHOLD = 32 << 20
#: Freed heap memory a command keeps for its next arrays before giving it back. Kept, it is
#: not Polars' to reuse: with 512 MiB, ``allocate`` at two million users peaked at 1.44 GiB
#: against 1.35 GiB with this (alternating runs of ``benchmarks/bench_allocate_scale.py``).
TRIM_THRESHOLD = 64 << 20
#: The studio's: a server keeps what its settings free for the next one.
STUDIO_TRIM_THRESHOLD = 512 << 20
#: Heap grown at once when it must grow.
TOP_PAD = 64 << 20


def _command(argv: list[str]) -> str | None:
    return next((word for word in argv if not word.startswith("-")), None)


def memory_for(argv: list[str]) -> None:
    """The memory settings of the command ``argv`` names (``sys.argv[1:]``: its first word that
    is not an option): Polars' (:data:`STUDIO_MALLOC_CONF` for ``studio``,
    :data:`POLARS_MALLOC_CONF` for every other, unless ``_RJEM_MALLOC_CONF`` is set) and
    NumPy's (:func:`keep_freed_arrays`). It must run before Polars is first imported, so before
    the command line is parsed."""
    studio = _command(argv) == "studio"
    os.environ.setdefault("_RJEM_MALLOC_CONF", STUDIO_MALLOC_CONF if studio else POLARS_MALLOC_CONF)
    keep_freed_arrays(STUDIO_TRIM_THRESHOLD if studio else TRIM_THRESHOLD)


def keep_freed_arrays(trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Let NumPy's large temporaries reuse freed memory instead of fresh pages.

    glibc gives an allocation of more than its threshold (128 KiB at start, raised as such
    blocks are freed) pages of its own and returns them to the system when freed, so the next
    array of a million floats touches 2,048 new pages, each a fault and a zeroing. A solve and
    its certificate make dozens of such arrays: at a million users the studio's knob went from
    about 240 to 180 ms, and a solve with a binding segment from 68 to 47 ms, with arrays of up
    to :data:`MMAP_THRESHOLD` taken from the heap (medians, alternating runs in one sitting).
    Freed heap memory up to ``trim_threshold`` is kept. Returns whether the C library took the
    settings (glibc only; elsewhere nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, trim_threshold),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
