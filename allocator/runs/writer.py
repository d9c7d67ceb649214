"""Writing a voucher run directory: the files of :mod:`allocator.runs.contract`, atomically.

Writing
-------
:func:`write_run_dir` writes through :func:`allocator.runs.store.atomic_directory`: the three
data files go into a fresh hidden sibling directory ``.<name>.new-<random>``; it hashes them into ``outputs``, writes ``manifest.json`` last, flushes
everything to disk and only then moves the directory into place. An existing run directory is
renamed aside to ``.<name>.old-<random>``, the new one renamed in, and the old one deleted.

Crash windows (a crash is a power cut or a kill; a Python exception cleans up after itself):

1. while the new files are written: ``out_dir`` is untouched (old run or nothing); a hidden
   ``.new-`` directory may remain, without ``manifest.json`` unless every file is complete;
2. between the two renames: nothing is at ``out_dir`` (``check-budget`` reports it missing); the
   complete old and new runs are both in their hidden siblings;
3. after the second rename, before the old one is deleted: ``out_dir`` is the complete new run;
   a hidden ``.old-`` directory may remain.

So at no point is there a directory at ``out_dir`` that ``check-budget`` would accept but is
incomplete. Hidden leftovers are never read and are safe to delete. Parquet files are written
with explicit zstd compression, row-group size and statistics, and carry no timestamps, so
identical frames give byte-identical files; ``manifest.json`` is byte-identical when the manifest
is (its ``timings_s`` differ between reruns).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.runs.contract import (
    ANY_RUN_FILES,
    OUTPUT_FILES,
    RUN_FORMAT,
    canonical_allocations,
    canonical_excluded,
    canonical_round_file,
    write_payouts_frame,
)
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import dumps_manifest, write_manifest
from allocator.runs.signing import SIGNATURE_FILE
from allocator.runs.store import atomic_directory, write_parquet

#: How payouts.csv is written: a frame in the payouts layout, or a callable given the file path.
PayoutsSource = Callable[[Path], object] | pl.DataFrame


def _write_payouts(payouts: PayoutsSource, path: Path) -> None:
    if isinstance(payouts, pl.DataFrame):
        write_payouts_frame(payouts, path)
    elif callable(payouts):
        payouts(path)
    else:
        raise ValueError(
            "write_run_dir needs payouts (a frame or a writer): a run directory always has payouts.csv"
        )
    if not path.is_file():
        raise ValueError(f"the payouts writer did not create {path.name}")


def check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything but a run directory: ``--out ~`` must not delete a home."""
    if not os.path.lexists(out_dir):
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise InputError(
            f"{out_dir} exists and is not a directory; refusing to replace it with a run directory.",
            hint="choose another --out.",
        )
    foreign = sorted(
        p.name for p in out_dir.iterdir() if p.name not in (*ANY_RUN_FILES, SIGNATURE_FILE)
    )
    if foreign:
        raise InputError(
            f"{out_dir} exists and holds files that are not part of a run directory "
            f"(e.g. {foreign[0]!r}); refusing to replace it.",
            hint="choose an empty or new --out, or an earlier run directory.",
        )


def existing_run(out_dir: Path) -> str | None:
    """A description of the run at ``out_dir`` (its scenario and when it was made), or ``None``
    when there is none (nothing there, or an empty directory)."""
    if not os.path.lexists(out_dir) or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    try:
        man = json.loads((out_dir / N.MANIFEST_FILE).read_text(encoding="utf-8"))
        scenario = man["scenario"]["name"]
        made = man.get("created_at")
    except (OSError, ValueError, KeyError, TypeError):
        return "a run directory whose manifest cannot be read"
    return f"a run of scenario {scenario!r}" + (f" made {made}" if made else "")


def refuse_existing(out_dir: str | Path) -> None:
    """Refuse an ``--out`` that already holds a run (exit 2), naming the run and its scenario."""
    target = Path(os.path.abspath(out_dir))
    check_replaceable(target)
    held = existing_run(target)
    if held is not None:
        raise InputError(
            f"--out {out_dir} already holds {held}; refusing to replace it.",
            hint="choose another --out, or add --force to replace that run",
        )


@contextmanager
def writer_lock(out_dir: str | Path) -> Iterator[None]:
    """Keep two writers of the same run directory apart: an exclusive lock on a hidden sibling
    file, released when the writer finishes or dies (so it never goes stale).

    Raises
    ------
    InputError
        Another process is writing ``out_dir`` now.
    """
    target = Path(os.path.abspath(out_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another process is writing {out_dir} (it holds {path.name}); two runs cannot "
                "be written to one directory at once.",
                hint="wait for it to finish, or choose another --out",
            ) from None
        try:
            # the holder before us removes the file when done: a lock on a removed file
            # guards nothing, so lock the file that is there now
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        # removed while still held, so nobody can lock this file after us (no leftover)
        path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_run_dir(
    out_dir: str | Path,
    *,
    allocations: pl.DataFrame,
    excluded: pl.DataFrame,
    payouts: PayoutsSource,
    manifest: Mapping[str, Any],
    replace: bool = True,
    sign: Callable[[bytes], bytes] | None = None,
    round_files: Mapping[str, pl.DataFrame] | None = None,
) -> Path:
    """Write a complete run directory atomically (see the module docstring) and return its path.

    Parameters
    ----------
    out_dir
        Target directory; replaced if it is an earlier run directory (or empty).
    allocations, excluded
        Frames in the contract's layout (columns are cast and ordered, rows sorted by user id).
    payouts
        How payouts.csv is written: a callable taking the file path, a frame with ``user_id``,
        ``amount`` (String) or ``amount_cents`` (Int64), ``batch`` and ``idempotency_key``, or a
        payout plan understood by ``allocator.vouchers.payouts.write_payouts_csv``.
    manifest
        The manifest without ``outputs``; the caller's mapping is not modified.
    replace
        Replace an earlier run at ``out_dir``; with ``False`` one is refused (checked again
        under the writer lock, so that of two writers racing for one directory one fails).
    sign
        Given the exact bytes of ``manifest.json``, the ``manifest.sig`` document
        (:func:`allocator.runs.signing.signature_of`); written inside the same atomic swap.
    round_files
        A round after the first: vouchers.parquet and appeals.parquet by file name
        (:data:`allocator.runs.contract.ROUND_FILES`), written and hashed with the others.

    Raises
    ------
    InputError
        ``out_dir`` exists and is not a run directory, holds a run and ``replace`` is false, or
        another process is writing it.
    """
    target = Path(os.path.abspath(out_dir))
    with writer_lock(target):
        if not replace:
            refuse_existing(out_dir)
        extra = {
            name: canonical_round_file(name, frame) for name, frame in (round_files or {}).items()
        }
        return _write_locked(target, allocations, excluded, payouts, manifest, sign, extra)


def _write_locked(
    target: Path,
    allocations: pl.DataFrame,
    excluded: pl.DataFrame,
    payouts: PayoutsSource,
    manifest: Mapping[str, Any],
    sign: Callable[[bytes], bytes] | None,
    extra: Mapping[str, pl.DataFrame],
) -> Path:
    check_replaceable(target)
    allocations = canonical_allocations(allocations)
    excluded = canonical_excluded(excluded)
    man = dict(manifest)
    man.setdefault("format", RUN_FORMAT)
    dumps_manifest(man)  # fail on an unserialisable manifest before touching the disk

    started = time.perf_counter()
    try:
        with atomic_directory(target) as staging:
            _write_files(staging, allocations, excluded, payouts, man, started, sign, extra)
    except OSError as exc:
        raise _write_error(target, exc.filename or target, exc.strerror or str(exc)) from None
    except pl.exceptions.PolarsError as exc:
        # Polars reports a failed write (a full disk) with the OS's words and no path
        raise _write_error(target, target, str(exc).splitlines()[0] if str(exc) else "") from None
    return target


def _write_error(target: Path, where: object, why: str) -> InputError:
    return InputError(
        f"cannot write the run directory {target} ({where}: {why}); nothing was written and "
        "any earlier run there is unchanged.",
        hint="free some space or choose another --out",
    )


def _write_files(
    staging: Path,
    allocations: pl.DataFrame,
    excluded: pl.DataFrame,
    payouts: PayoutsSource,
    man: dict[str, Any],
    started: float,
    sign: Callable[[bytes], bytes] | None,
    extra: Mapping[str, pl.DataFrame],
) -> None:
    """The run's files, into the staging directory; ``manifest.json`` (and its signature) last."""
    write_parquet(allocations, staging / N.ALLOCATIONS_FILE)
    write_parquet(excluded, staging / N.EXCLUDED_FILE)
    _write_payouts(payouts, staging / N.PAYOUTS_FILE)
    for name, frame in extra.items():
        write_parquet(frame, staging / name)
    man["outputs"] = {name: sha256_file(staging / name) for name in (*OUTPUT_FILES, *extra)}
    if isinstance(man.get("timings_s"), Mapping):
        # Writing the outputs is a stage too; the manifest itself is written after this.
        man["timings_s"] = {**man["timings_s"], "write": round(time.perf_counter() - started, 6)}
    # manifest.json appears complete or not at all, even inside the staging directory.
    write_manifest(staging, man)
    if sign is not None:
        (staging / SIGNATURE_FILE).write_bytes(sign((staging / N.MANIFEST_FILE).read_bytes()))
