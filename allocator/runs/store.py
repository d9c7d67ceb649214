"""Atomic writes, once: a file or a whole directory appears complete or not at all.

Every output the project writes goes through this module, so that a crash (a power cut, a
kill) or an exception never leaves a half-written file where a reader would find it.

Files
-----
:func:`atomic_write` (and :func:`atomic_write_bytes`, :func:`atomic_write_text`) writes into a
hidden temporary file in the target's directory (same file system, so the rename is atomic),
flushes it to disk, renames it over the target with :func:`os.replace` and flushes the
directory. The temporary file is created with the usual permissions (0666 less the umask), not
the private 0600 of :func:`tempfile.mkstemp`: outputs are meant to be shared. On an exception the
temporary file is removed and the target is untouched.

Directories
-----------
:func:`atomic_directory` yields a fresh hidden sibling ``.<name>.new-<random>`` to write into.
When the ``with`` block ends normally, every file in it is flushed to disk and it is moved into
place. An existing target is renamed aside to ``.<name>.old-<random>``, the new one renamed in,
and the old one deleted. When the block raises, the staging directory is deleted and the target
is untouched.

Crash windows of the directory swap (a Python exception cleans up after itself):

1. while the new files are written: the target is untouched (old content or nothing); a hidden
   ``.new-`` directory may remain;
2. between the two renames: nothing is at the target; the complete old and new directories are
   both in their hidden siblings;
3. after the second rename, before the old one is deleted: the target is the complete new
   directory; a hidden ``.old-`` directory may remain.

So there is never an incomplete directory at the target. Hidden leftovers are never read and
are safe to delete. A writer whose readers must tell "complete" from "in progress" writes a
marker file last (a run directory's ``manifest.json``).

Parquet
-------
:func:`write_parquet` writes a frame with explicit zstd compression, row-group size and
statistics (:data:`PARQUET_OPTIONS`); parquet written by polars carries no timestamps, so
identical frames give byte-identical files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import polars as pl

#: Options of every deterministic parquet file (run directories): identical frames, identical bytes.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "statistics": True,
    "row_group_size": 262_144,
}


# --------------------------------------------------------------------------------------------
# flushing to disk
# --------------------------------------------------------------------------------------------


def fsync_file(path: str | Path) -> None:
    """Flush the content of the file at ``path`` to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename into it) to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """Flush every file and directory under ``root`` (and ``root`` itself) to disk."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            file = os.path.join(dirpath, name)
            if not os.path.islink(file):
                fsync_file(file)
        fsync_dir(dirpath)


def hidden_sibling(target: str | Path, tag: str) -> Path:
    """A path ``.<name>.<tag>-<random>`` beside ``target`` that does not exist yet."""
    target = Path(target)
    while True:
        candidate = target.parent / f".{target.name}.{tag}-{secrets.token_hex(6)}"
        if not os.path.lexists(candidate):
            return candidate


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _temp_sibling(path: Path) -> tuple[Path, int]:
    while True:
        tmp = path.parent / f".{path.name}.part-{secrets.token_hex(6)}"
        try:
            # O_EXCL: never write through someone else's file; 0o666 less the umask, not 0600.
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def atomic_write_all(
    outputs: Sequence[tuple[str | Path, Callable[[IO[bytes]], object]]],
) -> list[Path]:
    """Write several files together or not at all.

    Each ``write(fh)`` fills a temporary sibling of its file; only when every one has been
    written (and flushed to disk) are they all renamed into place. A failure on any (a full
    disk, a folder where a file should go) leaves none of them, removes every temporary file
    and every folder it created.

    Parameters
    ----------
    outputs
        ``(path, write)`` pairs; each ``write`` is called once with a binary file handle.

    Returns
    -------
    list of Path
        The paths written, in order.
    """
    temps: list[tuple[Path, Path]] = []
    made: list[Path] = []  # folders created here, removed again if the write fails
    try:
        for target, write in outputs:
            path = Path(target)
            if path.is_dir():
                raise IsADirectoryError(21, "is a folder, not a file", str(path))
            missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
            made.extend(missing)
            tmp, fd = _temp_sibling(path)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        for folder in made:  # deepest first: nothing is left behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    for parent in {path.parent for _, path in temps}:
        fsync_dir(parent)
    return [path for _, path in temps]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file atomically: ``write(fh)`` fills a temporary sibling renamed over ``path``
    (its parent directories are created); returns ``path``."""
    return atomic_write_all([(path, write)])[0]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, with no newline translation (``\\n`` stays ``\\n``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def write_parquet(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` as deterministic parquet (:data:`PARQUET_OPTIONS`).

    Not atomic by itself: meant for files inside an :func:`atomic_directory`, or wrapped in
    :func:`atomic_write`.
    """
    frame.rechunk().write_parquet(path, **PARQUET_OPTIONS)
    return Path(path)


# --------------------------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------------------------


@contextmanager
def atomic_directory(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Build a directory in a hidden staging sibling and swap it into place on success.

    Parameters
    ----------
    target
        The directory to create (or replace); its parent directories are created.
    replace
        Replace an existing ``target`` (its whole content is deleted). With ``False`` an existing
        ``target`` raises :class:`FileExistsError`, before anything is written.

    Yields
    ------
    Path
        The empty staging directory to write into.

    Raises
    ------
    FileExistsError
        ``target`` exists and ``replace`` is false.
    """
    target = Path(os.path.abspath(target))
    if not replace and os.path.lexists(target):
        raise FileExistsError(f"{target} exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = hidden_sibling(target, "new")
    staging.mkdir()  # the caller's umask, unlike mkdtemp's 0700
    try:
        yield staging
        fsync_tree(staging)
        _swap_into_place(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, target: Path, *, replace: bool) -> None:
    """Move ``staging`` to ``target`` by renames (see the crash windows in the module docstring)."""
    if not os.path.lexists(target):
        os.rename(staging, target)
        fsync_dir(target.parent)
        return
    if not replace:
        raise FileExistsError(f"{target} exists")
    aside = hidden_sibling(target, "old")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)  # put the old one back: the target is never left empty by an error
        raise
    fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)
