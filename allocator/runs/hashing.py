"""SHA-256, once: of a file (read in chunks) and of bytes, as lowercase hex.

Every hash the project records (a run's input and output files, a loan run's blobs, the
idempotency keys of payouts) goes through these two functions, so that "the sha256 of a file"
means the same thing in the writer and in every checker.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Bytes read at a time by :func:`sha256_file`: memory stays flat for a file of any size.
CHUNK_BYTES = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_digests(prefix: bytes, items: list[bytes]) -> list[bytes]:
    """The SHA-256 digest of ``prefix + item`` for every item (one C call each, nothing else
    per item: the payout keys of a million users)."""
    sha = hashlib.sha256
    return [sha(prefix + item).digest() for item in items]


def sha256_file(path: str | Path, *, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Lowercase hex SHA-256 of the file at ``path``, read ``chunk_bytes`` at a time.

    Raises
    ------
    OSError
        The file cannot be opened or read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()
