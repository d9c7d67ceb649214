"""The proofs directory of :mod:`allocator.analysis.proofs`: building it from a run, reading
it back, and the root and proof files (strict JSON), written atomically.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import mmap
import os
import secrets as secrets_mod
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator import names as N
from allocator.analysis.proofs import (
    ALGORITHM,
    LEAVES_FILE,
    MAX_JSON_BYTES,
    NODES_FILE,
    ROOT_FILE,
    SECRET_FILE,
    SECRET_MAX_BYTES,
    SECRET_MIN_BYTES,
    Proof,
    ProofFormatError,
    Root,
    Tree,
    build_tree,
    verify,
)
from allocator.errors import InputError
from allocator.jsonsafe import dumps
from allocator.runs.hashing import sha256_file
from allocator.runs.reader import load_run, refuse_output_in_run
from allocator.runs.store import atomic_directory, atomic_write_text


def _reject_constant(token: str) -> None:
    raise ValueError(f"{token} is not strict JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def read_json_file(path: str | Path, what: str) -> Any:
    """Strict JSON from a small file (no NaN, no duplicate keys); InputError naming the file."""
    file = Path(path)
    if not file.is_file():
        state = "is not a file" if os.path.lexists(file) else "does not exist"
        raise InputError(f"{file}: {state}; expected {what}.")
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or exc}).") from None
    if len(raw) > MAX_JSON_BYTES:
        raise InputError(f"{file}: larger than {MAX_JSON_BYTES:,} bytes; not {what}.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            f"expected {what}."
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"expected {what}."
        ) from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{file}: not strict JSON ({exc}); expected {what}.") from None


def read_root_file(path: str | Path) -> Root:
    """``root.json`` parsed; InputError (exit 2) naming the file and the bad key."""
    what = "the root.json of allocator proofs build"
    try:
        return Root.from_dict(read_json_file(path, what))
    except ProofFormatError as exc:
        raise InputError(f"{path}: {exc}; expected {what}.") from None


def read_proof_file(path: str | Path) -> Proof:
    """A proof file parsed; InputError (exit 2) naming the file and the bad key."""
    what = "a proof of allocation (allocator proofs show --json)"
    try:
        return Proof.from_dict(read_json_file(path, what))
    except ProofFormatError as exc:
        raise InputError(f"{path}: {exc}; expected {what}.") from None


def proof_text(proof: Proof) -> str:
    """A proof file's text: strict JSON, keys in the documented order, trailing newline."""
    return dumps(proof.to_dict(), sort_keys=False) + "\n"


def root_text(root: Root) -> str:
    """``root.json``'s text: strict JSON, sorted keys, indent 2, trailing newline."""
    return dumps(root.to_dict()) + "\n"


def write_proof_file(path: str | Path, proof: Proof) -> Path:
    """Write one proof atomically; refused (exit 2) inside a run directory."""
    refuse_output_in_run(path, "--out")
    return atomic_write_text(path, proof_text(proof))


@contextlib.contextmanager
def open_tree(directory: str | Path) -> Iterator[tuple[Root, Tree]]:
    """The root and the memory-mapped tree of a proofs directory.

    Raises
    ------
    InputError
        Not a proofs directory, or its files do not fit together (sizes, root hash, total).
    """
    directory = Path(directory)
    if not directory.is_dir():
        state = "is not a directory" if os.path.lexists(directory) else "does not exist"
        raise InputError(
            f"{directory}: {state}; expected a proofs directory written by allocator proofs build."
        )
    root = read_root_file(directory / ROOT_FILE)
    if root.algorithm != ALGORITHM:
        raise InputError(
            f"{directory / ROOT_FILE}: algorithm {root.algorithm!r}; this version reads "
            f"{ALGORITHM!r}. Rebuild it with allocator proofs build --force."
        )
    with contextlib.ExitStack() as stack:
        blobs = []
        for name in (LEAVES_FILE, NODES_FILE):
            file = directory / name
            if not file.is_file():
                raise InputError(
                    f"{file}: missing; {directory} is not a complete proofs directory."
                )
            fh = stack.enter_context(open(file, "rb"))
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise InputError(f"{file}: empty; {directory} is damaged.")
            blobs.append(stack.enter_context(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)))
        try:
            tree = Tree(blobs[0], blobs[1], root.leaves)
        except ValueError as exc:
            raise InputError(f"{directory}: damaged: {exc}.") from None
        if tree.root_hash != root.root_hash or tree.total_cents != root.total_cents:
            raise InputError(
                f"{directory}: damaged: the root of {NODES_FILE} is not the one in {ROOT_FILE}."
            )
        yield root, tree  # the tree reads the mapped files: use it inside the with block


def read_proof_from_dir(directory: str | Path, user_id: int) -> tuple[Root, Proof]:
    """One user's proof from a proofs directory, checked against its root before it is returned.

    Raises
    ------
    InputError
        ``user_id`` is not a paid user of it (exit 2), or the directory is damaged.
    """
    directory = Path(directory)
    with open_tree(directory) as (root, tree):
        index = tree.index_of(user_id)
        if index is None:
            raise InputError(
                f"user {user_id} is not among the {root.leaves:,} paid users of {directory} "
                f"(a user paid nothing has no proof)."
            )
        proof = tree.proof_at(index)
    ok, reason = verify(root, proof)
    if not ok:
        raise InputError(
            f"{directory}: damaged: the proof read for user {user_id} does not verify ({reason}).",
            hint="rebuild it with allocator proofs build RUN_DIR --out DIR --force.",
        )
    return root, proof


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_proofs_dir` wrote: where, the root, the secret's origin, the time."""

    out: Path
    root: Root
    secret_source: str  # "file", "reused" (the directory's secret.key) or "generated"
    secret_written: bool
    seconds: float


def read_secret_file(path: str | Path) -> bytes:
    """A secret from a file: its bytes, at least :data:`SECRET_MIN_BYTES`; InputError if not."""
    file = Path(path)
    if not file.is_file():
        state = "is not a file" if os.path.lexists(file) else "does not exist"
        raise InputError(f"--secret-file {file} {state}.")
    with open(file, "rb") as fh:
        secret = fh.read(SECRET_MAX_BYTES + 1)
    if len(secret) > SECRET_MAX_BYTES:
        raise InputError(
            f"--secret-file {file} is larger than {SECRET_MAX_BYTES:,} bytes; a secret is a key "
            f"of {SECRET_MIN_BYTES} bytes or more, not a document."
        )
    if len(secret) < SECRET_MIN_BYTES:
        raise InputError(
            f"--secret-file {file} holds {len(secret)} byte(s); a secret needs at least "
            f"{SECRET_MIN_BYTES} random bytes (e.g. head -c 32 /dev/urandom > {file}).",
        )
    return secret


def _previous_root(out: Path) -> Root | None:
    """The root of a proofs directory at ``out``, or ``None`` when it is not one."""
    try:
        root = read_root_file(out / ROOT_FILE)
    except InputError:
        return None
    if root.algorithm != ALGORITHM or not (out / NODES_FILE).is_file():
        return None
    return root


def _check_out(out: Path, manifest_sha256: str, force: bool) -> tuple[bool, bool]:
    """Refuse an ``--out`` that may not be written.

    Returns ``(replace, ours)``: whether a directory is there to be replaced (an empty one, or
    this run's proofs with ``force``), and whether it holds this run's proofs.
    """
    if not os.path.lexists(out):
        return False, False
    if not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory. Nothing was written.")
    if not any(out.iterdir()):
        return True, False
    previous = _previous_root(out)
    if previous is None:
        raise InputError(
            f"--out {out} exists, is not empty and is not a proofs directory. Nothing was written.",
            hint="choose a new or empty directory.",
        )
    theirs = previous.run.get("manifest_sha256")
    if theirs != manifest_sha256:
        raise InputError(
            f"--out {out} holds the proofs of another run (manifest sha256 "
            f"{str(theirs)[:12]}..., this run's is {manifest_sha256[:12]}...); --force only "
            f"replaces the proofs of the same run. Nothing was written.",
            hint="choose another --out, or delete that directory first.",
        )
    if not force:
        raise InputError(
            f"--out {out} already holds the proofs of this run. Nothing was written.",
            hint="add --force to rebuild it (same secret: same bytes).",
        )
    return True, True


def _run_secret(manifest_sha256: str) -> bytes:
    """A fresh secret for one run: HMAC-SHA256 of the run's manifest hash under 32 random bytes."""
    return hmac.digest(
        secrets_mod.token_bytes(32),
        b"allocator-proof-secret\x00" + bytes.fromhex(manifest_sha256),
        "sha256",
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def build_proofs_dir(
    run_dir: str | Path,
    out: str | Path,
    *,
    secret_file: str | Path | None = None,
    force: bool = False,
) -> BuildResult:
    """Build the proofs directory of a verified run: root.json, leaves.bin, nodes.bin (+ secret).

    The run is read with :func:`allocator.runs.reader.load_run` (a damaged or changed run is
    refused); the paid users are the rows of ``allocations.parquet`` with ``voucher_cents > 0``.
    The directory is built aside and renamed into place (:func:`atomic_directory`).

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``.
    out
        The proofs directory: new, empty, or (with ``force``) this run's earlier proofs. Never
        inside a run directory.
    secret_file
        A file of at least 32 bytes used as the secret. Without it, the secret is the one in
        ``out/secret.key`` when rebuilding with ``force``, else a fresh one,
        ``HMAC-SHA256(32 random bytes, manifest sha256)``, written to ``out/secret.key``
        (mode 0600).
    force
        Replace ``out`` when it holds the proofs of the same run.

    Raises
    ------
    InputError
        A damaged run, a run without paid users, a short or missing secret file, or an
        ``--out`` that may not be written (exit 2; nothing written).
    """
    started = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    refuse_output_in_run(out, "--out")
    secret = read_secret_file(secret_file) if secret_file is not None else None
    run = load_run(run_dir)
    manifest_sha256 = sha256_file(run_dir / N.MANIFEST_FILE)
    replace, ours = _check_out(out, manifest_sha256, force)

    # the secret of the directory being replaced is kept (and stays in secret.key) unless
    # another one is given: a rebuild then writes the same bytes
    previous = out / SECRET_FILE
    kept = read_secret_file(previous) if ours and previous.is_file() else None
    if secret is None and kept is not None:
        secret, source = kept, "reused"
    elif secret is None:
        secret, source = _run_secret(manifest_sha256), "generated"
    else:
        source = "reused" if secret == kept else "file"

    paid = run.allocations.filter(run.allocations[N.VOUCHER_CENTS] > 0)
    if paid.height == 0:
        raise InputError(
            f"{run_dir}: no user is paid in this run (every voucher is 0 cents); there is "
            f"nothing to prove. Nothing was written."
        )
    tree = build_tree(paid[N.USER_ID].to_numpy(), paid[N.VOUCHER_CENTS].to_numpy(), secret)
    name = getattr(run.scenario, "name", None) or run.manifest.get("scenario", {}).get("name")
    root = tree.root({"scenario": name, "manifest_sha256": manifest_sha256})
    with atomic_directory(out, replace=replace) as staging:
        (staging / ROOT_FILE).write_text(root_text(root), encoding="utf-8", newline="\n")
        (staging / LEAVES_FILE).write_bytes(tree.leaf_blob)
        (staging / NODES_FILE).write_bytes(tree.node_blob)
        if source != "file":
            _write_private(staging / SECRET_FILE, secret)
    return BuildResult(
        out=out,
        root=root,
        secret_source=source,
        secret_written=source != "file",
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "BuildResult",
    "build_proofs_dir",
    "open_tree",
    "proof_text",
    "read_json_file",
    "read_proof_file",
    "read_proof_from_dir",
    "read_root_file",
    "read_secret_file",
    "root_text",
    "write_proof_file",
]
