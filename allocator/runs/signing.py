"""Maker and checker: the manifest of a run signed with Ed25519, verified against a public key.

The manifest holds the sha256 of every output file, so a signature over its exact bytes covers
the whole run: whoever edits a file must rewrite its hash in the manifest, and whoever rewrites
the manifest without the private key cannot produce a signature the public key accepts.

The signature is ``manifest.sig`` inside the run directory, strict JSON::

    {"algorithm": "ed25519", "manifest_sha256": "...", "public_key_sha256": "...",
     "signature": "<base64 of 64 bytes>"}

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key) made by
:func:`new_key_pair`; the private key file is readable by its owner only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from allocator.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported where a key is used (a tenth of the start-up of every run written,
# signed or not, which reaches this module through the writer's SIGNATURE_FILE).

__all__ = [
    "ALGORITHM",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "SIGNATURE_FILE",
    "load_private_key",
    "load_public_key",
    "new_key_pair",
    "signature_of",
    "verify_signature",
]

ALGORITHM = "ed25519"
#: The signature's file inside a run directory.
SIGNATURE_FILE = "manifest.sig"
PRIVATE_KEY_FILE = "allocator-signing.key"
PUBLIC_KEY_FILE = "allocator-signing.pub"


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def new_key_pair(out_dir: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir``: the private key (mode 0600) and the public key.

    Raises
    ------
    InputError
        ``out_dir`` is not a folder, or a key file exists and ``force`` is false.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    for path in (private, public):
        if os.path.lexists(path) and not force:
            raise InputError(
                f"{path} exists; refusing to replace a signing key (runs signed with it could "
                "no longer be told apart from forgeries once it is lost).",
                hint="choose another --out, or add --force",
            )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = private.with_name(f".{private.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, private)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a private key written by :func:`new_key_pair` (errors name the file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise _bad_key(path, "private", str(exc)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _bad_key(path, "private", "it is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read a public key written by :func:`new_key_pair` (errors name the file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise _bad_key(path, "public", str(exc)) from None
    if not isinstance(key, Ed25519PublicKey):
        raise _bad_key(path, "public", "it is not an Ed25519 key")
    return key


def _read(path: str | Path, kind: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read the {kind} key ({exc.strerror or exc}).",
            hint=f"make a key pair with: allocator keys new --out keys (then keys/{PRIVATE_KEY_FILE}"
            f" signs and keys/{PUBLIC_KEY_FILE} verifies)",
        ) from None


def _bad_key(path: str | Path, kind: str, why: str) -> InputError:
    return InputError(
        f"{path} is not an Ed25519 {kind} key in PEM form ({why.rstrip('.')}).",
        hint="use the files of: allocator keys new --out keys",
    )


def signature_of(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` document (strict JSON bytes) for these exact manifest bytes."""
    doc = {
        "algorithm": ALGORITHM,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "public_key_sha256": hashlib.sha256(_public_bytes(key.public_key())).hexdigest(),
        "signature": base64.b64encode(key.sign(manifest_bytes)).decode("ascii"),
    }
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("ascii")


def verify_signature(run_dir: str | Path, key: Ed25519PublicKey) -> tuple[bool, str]:
    """Whether ``run_dir``'s manifest carries a valid signature by ``key``, and why not."""
    from cryptography.exceptions import InvalidSignature

    run = Path(run_dir)
    sig_path, man_path = run / SIGNATURE_FILE, run / "manifest.json"
    for path in (sig_path, man_path):
        if path.is_symlink() or not path.is_file():
            what = "a link" if path.is_symlink() else "missing"
            return False, f"{path.name} is {what}: the run is not signed"
    try:
        doc = json.loads(sig_path.read_bytes().decode("ascii"))
        signature = base64.b64decode(doc["signature"], validate=True)
        algorithm = doc["algorithm"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return False, f"{SIGNATURE_FILE} is not a signature document ({exc})"
    if algorithm != ALGORITHM:
        return False, f"{SIGNATURE_FILE} uses {algorithm!r}, not {ALGORITHM}"
    manifest = man_path.read_bytes()
    fingerprint = hashlib.sha256(_public_bytes(key)).hexdigest()
    if doc.get("public_key_sha256") != fingerprint:
        return False, (
            f"signed with another key (fingerprint {str(doc.get('public_key_sha256'))[:16]}..., "
            f"this key's is {fingerprint[:16]}...)"
        )
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        return False, "the signature does not match manifest.json: it was changed after signing"
    return True, f"manifest.json signed by key {fingerprint[:16]}... ({ALGORITHM})"
