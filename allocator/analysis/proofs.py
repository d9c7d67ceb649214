r"""Proofs of allocation: a Merkle sum tree over a run's paid users, and one proof per user.

An exchange proves its reserves by publishing the root of a Merkle sum tree over what it owes
and handing each customer the path from their balance to that root. The same construction
proves an allocation: the programme publishes one root (a hash and the total paid in cents),
and each paid user receives a proof that their own amount is one of the non-negative parts of
that total, without learning who the other users are.

Construction (``ALGORITHM``)
----------------------------
All integers are big-endian; ``H`` is SHA-256; ``||`` concatenates bytes.

Leaves
    One per paid user (``voucher_cents > 0`` in ``allocations.parquet``), ordered by user id
    (ascending, signed). Each leaf commits to the user id, a nonce and the amount::

        leaf_hash = H(b"allocator-proof-leaf\x00" || user_id (8 bytes, signed)
                      || nonce (32 bytes) || amount_cents (8 bytes, unsigned))

    and carries the sum ``amount_cents``.
Nonces
    ``nonce = HMAC-SHA256(secret, b"nonce" || user_id (8 bytes, signed))``. Without the nonce,
    a leaf hash could be brute-forced from a guessed user id and amount (both small spaces);
    with it, a leaf hash says nothing to anyone without the secret.
Internal nodes
    Each carries the sum of its two children, and::

        node_hash = H(b"allocator-proof-node\x00" || left_hash || left_sum (8 bytes)
                      || right_hash || right_sum (8 bytes))

    Both children's sums are inside the hash, so no sum can be moved between the two sides
    without changing the hash.
Padding
    A level with an odd number of nodes pairs its last node with the padding node: hash
    ``PAD_HASH = H(b"allocator-proof-pad\x00")``, sum 0. Every leaf is therefore at the same
    depth, ``ceil(log2(leaves))`` (0 for a single leaf, whose leaf hash is the root).
Root
    The hash of the single node of the top level; the total is its sum, which equals the sum
    of every paid user's cents. ``root.json`` holds the algorithm, the root hash, the total,
    the number of leaves and which run it is (scenario name, SHA-256 of ``manifest.json``):
    no user id and no user's amount.
Proof
    ``{"user_id", "amount_cents", "nonce", "path", "root_hash", "total_cents"}``, where
    ``path`` lists, from the leaf up, each sibling as ``{"side", "hash", "sum_cents"}``:
    ``side`` is the side the *sibling* is on (``"left"``: the sibling is the left child).
Verification (:func:`verify`)
    Recompute the leaf hash from the user id, nonce and amount; walk the path, refusing a
    negative sibling sum or a running sum of 64 bits or more; the path must have the depth of
    a tree of ``leaves`` leaves, end at the root hash, and its sum must equal ``total_cents``.

Threat model
------------
What a verified proof shows its user: their amount, bound to their user id, is committed in
the one published root, once, and every other part of the total is non-negative. So the
operator cannot show a user one amount and count another, cannot show two users the same leaf
(the leaf commits to the user id), and cannot cancel anyone's amount with a negative entry (a
negative sum fails verification): the published total is at least the sum of the amounts its
users verify, and everyone who checks the same root sees parts of the same tree.

What it does not show: that every leaf is a real user (invented leaves can *overstate* the
total; compare ``leaves`` and ``total_cents`` with the number of users paid and the amount
paid, which ``check-budget`` reconciles from the run), that the amounts follow the scenario's
rule (``check-budget``, ``explain`` and ``audit``), or that the money arrived (each user compares
their proof's amount with what they received).

What a proof reveals: its user's amount and nonce; its sides, which give the user's rank among
the paid users by id; and at each level the sibling's hash and sum. The first sibling is a
single leaf, so its sum is the amount of one other paid user (the next or previous in user-id
order), without their id; higher siblings are sums of 2, 4, 8, ... users. ``root.json`` reveals
only the total and the number of paid users.

The secret: on its own it reveals nothing (nonces carry no amounts). Whoever holds it can link
amounts to users only through proofs they already hold, by recomputing a sibling leaf's hash
for candidate user ids. Keep ``secret.key`` (and the proofs directory, which holds every leaf)
private; publish ``root.json`` and give each user their own proof.

The proofs directory
--------------------
``root.json`` (strict JSON, sorted keys, indent 2, trailing newline), ``leaves.bin`` (per leaf
in order: user id 8 bytes signed, nonce 32 bytes), ``nodes.bin`` (every node, leaves first, then
each level up to the root, each as hash 32 bytes and sum 8 bytes unsigned; padding is not
stored) and, when the secret was generated, ``secret.key`` (0600). A proof is read from it in
``O(log n)`` file reads (:func:`read_proof_from_dir`). Given the same run and secret, a rebuild
writes the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Name and version of the construction; written in ``root.json`` and checked by :func:`verify`.
ALGORITHM = "allocator-merkle-sum-sha256/1"
LEAF_PREFIX = b"allocator-proof-leaf\x00"
NODE_PREFIX = b"allocator-proof-node\x00"
PAD_PREFIX = b"allocator-proof-pad\x00"
#: Hash of the zero-sum padding node that pairs the last node of an odd level.
PAD_HASH = hashlib.sha256(PAD_PREFIX).digest()
NONCE_PREFIX = b"nonce"
#: Shortest secret accepted, in bytes.
SECRET_MIN_BYTES = 32
#: Longest ``--secret-file`` read, in bytes (a secret is a key, not a document).
SECRET_MAX_BYTES = 1 << 20
#: Sums are encoded on 8 unsigned bytes: every sum, the total included, stays below this.
SUM_LIMIT = 1 << 64
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SIDES = ("left", "right")

ROOT_FILE = "root.json"
LEAVES_FILE = "leaves.bin"
NODES_FILE = "nodes.bin"
SECRET_FILE = "secret.key"
#: Bytes of one record of ``leaves.bin`` (user id, nonce) and of ``nodes.bin`` (hash, sum).
LEAF_RECORD = 40
NODE_RECORD = 40
#: Largest ``root.json`` or proof file read (a proof of 2**64 leaves is about 8 kB).
MAX_JSON_BYTES = 1 << 20

_PAD_RECORD = PAD_HASH + bytes(8)
_HEX32 = re.compile(r"[0-9a-fA-F]{64}")


class ProofFormatError(ValueError):
    """A root or proof object that is not in the format of :data:`ALGORITHM` (wrong keys or
    types); the message names the key."""


# --------------------------------------------------------------------------------------------
# the construction
# --------------------------------------------------------------------------------------------


def tree_depth(leaves: int) -> int:
    """Steps from a leaf to the root of a tree of ``leaves`` leaves: ``ceil(log2(leaves))``.

    Every leaf is at this depth, since odd levels are padded rather than promoted.
    """
    if leaves < 1:
        raise ValueError(f"a tree has at least one leaf, not {leaves}")
    return (leaves - 1).bit_length()


def level_sizes(leaves: int) -> list[int]:
    """Nodes per level, leaves first: ``[n, ceil(n/2), ..., 1]`` (padding not counted)."""
    sizes = [leaves]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def derive_nonce(secret: bytes, user_id: int) -> bytes:
    """``HMAC-SHA256(secret, b"nonce" || user_id as 8 bytes big-endian signed)``."""
    return hmac.digest(secret, NONCE_PREFIX + user_id.to_bytes(8, "big", signed=True), "sha256")


def leaf_hash(user_id: int, nonce: bytes, amount_cents: int) -> bytes:
    """``SHA-256(LEAF_PREFIX || user_id (8 bytes signed) || nonce (32) || amount (8 unsigned))``.

    Raises
    ------
    ValueError
        The nonce is not 32 bytes; ``OverflowError`` when an integer does not fit its 8 bytes.
    """
    if len(nonce) != 32:
        raise ValueError(f"a nonce has 32 bytes, not {len(nonce)}")
    return hashlib.sha256(
        LEAF_PREFIX
        + user_id.to_bytes(8, "big", signed=True)
        + nonce
        + amount_cents.to_bytes(8, "big", signed=False)
    ).digest()


def node_hash(left_hash: bytes, left_sum: int, right_hash: bytes, right_sum: int) -> bytes:
    """``SHA-256(NODE_PREFIX || left_hash || left_sum (8) || right_hash || right_sum (8))``.

    Sums are 8 bytes big-endian unsigned: a negative or 64-bit sum raises ``OverflowError``.
    """
    return hashlib.sha256(
        NODE_PREFIX
        + left_hash
        + left_sum.to_bytes(8, "big", signed=False)
        + right_hash
        + right_sum.to_bytes(8, "big", signed=False)
    ).digest()


@dataclass(frozen=True)
class Step:
    """One sibling on a proof's path: the side it is on, its hash and its sum in cents."""

    side: str
    hash: bytes
    sum_cents: int

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.side, "hash": self.hash.hex(), "sum_cents": self.sum_cents}


@dataclass(frozen=True)
class Proof:
    """One paid user's proof of allocation (see the module docstring for its meaning)."""

    user_id: int
    amount_cents: int
    nonce: bytes
    path: tuple[Step, ...]
    root_hash: bytes
    total_cents: int

    def to_dict(self) -> dict[str, Any]:
        """The proof as JSON values, keys in the documented order."""
        return {
            "user_id": self.user_id,
            "amount_cents": self.amount_cents,
            "nonce": self.nonce.hex(),
            "path": [s.to_dict() for s in self.path],
            "root_hash": self.root_hash.hex(),
            "total_cents": self.total_cents,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Proof:
        """Parse a proof object; :class:`ProofFormatError` naming the first bad key.

        Only the format is checked here (keys, types, hex lengths); the values, signs included,
        are :func:`verify`'s to judge.
        """
        obj = _object(data, "the proof")
        path = _field(obj, "path", list, "a list of steps")
        steps = []
        for k, raw in enumerate(path):
            step = _object(raw, f"path[{k}]")
            side = _field(step, "side", str, '"left" or "right"', where=f"path[{k}].")
            if side not in SIDES:
                raise ProofFormatError(f'path[{k}].side must be "left" or "right", not {side!r}')
            steps.append(
                Step(
                    side=side,
                    hash=_hex32(step, "hash", where=f"path[{k}]."),
                    sum_cents=_int(step, "sum_cents", where=f"path[{k}]."),
                )
            )
        return cls(
            user_id=_int(obj, "user_id"),
            amount_cents=_int(obj, "amount_cents"),
            nonce=_hex32(obj, "nonce"),
            path=tuple(steps),
            root_hash=_hex32(obj, "root_hash"),
            total_cents=_int(obj, "total_cents"),
        )


@dataclass(frozen=True)
class Root:
    """The published root: algorithm, root hash, total in cents, leaves, and which run."""

    algorithm: str
    root_hash: bytes
    total_cents: int
    leaves: int
    run: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "root_hash": self.root_hash.hex(),
            "total_cents": self.total_cents,
            "leaves": self.leaves,
            "run": dict(self.run),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Root:
        """Parse ``root.json``'s object; :class:`ProofFormatError` naming the first bad key."""
        obj = _object(data, "the root")
        leaves = _int(obj, "leaves")
        if not 1 <= leaves <= INT64_MAX:
            raise ProofFormatError(f"leaves must be 1 to 2**63-1, not {leaves}")
        run = obj.get("run", {})
        if not isinstance(run, dict):
            raise ProofFormatError(f"run must be an object, not {type(run).__name__}")
        return cls(
            algorithm=_field(obj, "algorithm", str, "a string"),
            root_hash=_hex32(obj, "root_hash"),
            total_cents=_int(obj, "total_cents"),
            leaves=leaves,
            run=run,
        )


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProofFormatError(f"{what} must be a JSON object, not {_json_type(data)}")
    return data


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return names.get(type(value), type(value).__name__)


def _field(obj: dict[str, Any], key: str, kind: type, expected: str, *, where: str = "") -> Any:
    if key not in obj:
        raise ProofFormatError(f"key {where}{key} is missing (expected {expected})")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProofFormatError(f"{where}{key} must be {expected}, not {_json_type(value)}")
    return value


def _int(obj: dict[str, Any], key: str, *, where: str = "") -> int:
    value: int = _field(obj, key, int, "a whole number", where=where)
    return value


def _hex32(obj: dict[str, Any], key: str, *, where: str = "") -> bytes:
    value = _field(obj, key, str, "64 hexadecimal digits", where=where)
    if not _HEX32.fullmatch(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ProofFormatError(f"{where}{key} must be 64 hexadecimal digits, not {shown!r}")
    return bytes.fromhex(value)


def verify(root: Root, proof: Proof) -> tuple[bool, str]:
    """Check a proof against a root; never raises on a bad proof.

    Recomputes the leaf hash from ``user_id``, ``nonce`` and ``amount_cents`` and walks
    ``path`` to the top: each sibling's sum must be non-negative and every running sum below
    2**64 (the 8 bytes it is encoded on); the path must have the depth of a tree of
    ``root.leaves`` leaves, end at ``root.root_hash``, and its sum must equal
    ``root.total_cents``. The proof's own ``root_hash`` and ``total_cents`` must be the root's.

    Parameters
    ----------
    root
        The published root (``root.json``).
    proof
        One user's proof.

    Returns
    -------
    tuple of (bool, str)
        ``(True, summary)`` when the proof reaches the root, else ``(False, what failed)``,
        one line.
    """
    if root.algorithm != ALGORITHM:
        return (
            False,
            f"the root's algorithm is {root.algorithm!r}, this verifier knows {ALGORITHM!r}",
        )
    if proof.root_hash != root.root_hash:
        return False, (
            f"the proof is for root {proof.root_hash.hex()[:16]}..., not the published root "
            f"{root.root_hash.hex()[:16]}..."
        )
    if proof.total_cents != root.total_cents:
        return False, (
            f"the proof states a total of {proof.total_cents} cents, the root {root.total_cents}"
        )
    if not 0 <= root.total_cents < SUM_LIMIT:
        return False, f"the total {root.total_cents} cents is not a sum of 0 to 2**64-1 cents"
    if not INT64_MIN <= proof.user_id <= INT64_MAX:
        return False, f"user_id {proof.user_id} does not fit 64 signed bits"
    if proof.amount_cents < 0:
        return False, f"the amount {proof.amount_cents} cents is negative"
    if proof.amount_cents >= SUM_LIMIT:
        return False, f"the amount {proof.amount_cents} cents does not fit 64 bits"
    if len(proof.nonce) != 32:
        return False, f"the nonce has {len(proof.nonce)} bytes, not 32"
    depth = tree_depth(root.leaves)
    if len(proof.path) != depth:
        return False, (
            f"the path has {len(proof.path)} step(s); every leaf of a tree of {root.leaves} "
            f"leaves is {depth} step(s) from the root"
        )
    h = leaf_hash(proof.user_id, proof.nonce, proof.amount_cents)
    s = proof.amount_cents
    for k, step in enumerate(proof.path, 1):
        if step.side not in SIDES:
            return False, f'step {k}: side {step.side!r} is neither "left" nor "right"'
        if step.sum_cents < 0:
            return False, f"step {k}: the sibling's sum {step.sum_cents} cents is negative"
        if s + step.sum_cents >= SUM_LIMIT:
            return False, f"step {k}: the sum {s} + {step.sum_cents} cents overflows 64 bits"
        if len(step.hash) != 32:
            return False, f"step {k}: the sibling's hash has {len(step.hash)} bytes, not 32"
        if step.side == "left":
            h = node_hash(step.hash, step.sum_cents, h, s)
        else:
            h = node_hash(h, s, step.hash, step.sum_cents)
        s += step.sum_cents
    if not hmac.compare_digest(h, root.root_hash):
        return False, (
            f"the path does not reach the root hash: it ends at {h.hex()[:16]}..., the root is "
            f"{root.root_hash.hex()[:16]}..."
        )
    if s != root.total_cents:
        return False, f"the sums add up to {s} cents at the top, not the total {root.total_cents}"
    return True, (
        f"user {proof.user_id}'s {proof.amount_cents} cents are counted in the total of "
        f"{root.total_cents} cents under root {root.root_hash.hex()[:16]}... "
        f"({len(proof.path)} step(s), {root.leaves} leaves)"
    )


# --------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------


class Tree:
    """A built Merkle sum tree: its leaves (user id, nonce) and every node (hash, sum).

    Holds the two byte layouts of the proofs directory (``leaves.bin``, ``nodes.bin``), in
    memory after :func:`build_tree` or memory-mapped by :func:`open_tree`; a proof is read in
    ``O(log n)``.
    """

    def __init__(self, leaf_blob: Any, node_blob: Any, leaves: int) -> None:
        sizes = level_sizes(leaves)
        if len(leaf_blob) != leaves * LEAF_RECORD:
            raise ValueError(
                f"{LEAVES_FILE} holds {len(leaf_blob)} bytes; {leaves} leaves take "
                f"{leaves * LEAF_RECORD}"
            )
        if len(node_blob) != sum(sizes) * NODE_RECORD:
            raise ValueError(
                f"{NODES_FILE} holds {len(node_blob)} bytes; a tree of {leaves} leaves takes "
                f"{sum(sizes) * NODE_RECORD}"
            )
        self.leaf_blob = leaf_blob
        self.node_blob = node_blob
        self.leaves = leaves
        self._sizes = sizes
        top = (sum(sizes) - 1) * NODE_RECORD
        self.root_hash = bytes(node_blob[top : top + 32])
        self.total_cents = int.from_bytes(node_blob[top + 32 : top + 40], "big")

    @property
    def depth(self) -> int:
        return len(self._sizes) - 1

    def root(self, run: Mapping[str, Any] | None = None) -> Root:
        """The published root, with ``run`` (scenario name, manifest SHA-256) when given."""
        return Root(ALGORITHM, self.root_hash, self.total_cents, self.leaves, dict(run or {}))

    def user_id_at(self, index: int) -> int:
        off = index * LEAF_RECORD
        return int.from_bytes(self.leaf_blob[off : off + 8], "big", signed=True)

    def index_of(self, user_id: int) -> int | None:
        """Position of ``user_id`` among the leaves (binary search), or ``None``."""
        if not INT64_MIN <= user_id <= INT64_MAX:
            return None
        lo, hi = 0, self.leaves
        while lo < hi:
            mid = (lo + hi) // 2
            if self.user_id_at(mid) < user_id:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.leaves and self.user_id_at(lo) == user_id else None

    def _node(self, offset: int, index: int) -> tuple[bytes, int]:
        at = (offset + index) * NODE_RECORD
        rec = bytes(self.node_blob[at : at + NODE_RECORD])
        return rec[:32], int.from_bytes(rec[32:], "big")

    def proof_at(self, index: int) -> Proof:
        """The proof of the leaf at ``index`` (0-based, in user-id order)."""
        if not 0 <= index < self.leaves:
            raise IndexError(f"leaf {index} of {self.leaves}")
        off = index * LEAF_RECORD
        nonce = bytes(self.leaf_blob[off + 8 : off + LEAF_RECORD])
        _, amount = self._node(0, index)
        path: list[Step] = []
        offset, i = 0, index
        for size in self._sizes[:-1]:
            sibling = i ^ 1
            h, s = self._node(offset, sibling) if sibling < size else (PAD_HASH, 0)
            path.append(Step("left" if sibling < i else "right", h, s))
            offset += size
            i >>= 1
        return Proof(
            user_id=self.user_id_at(index),
            amount_cents=amount,
            nonce=nonce,
            path=tuple(path),
            root_hash=self.root_hash,
            total_cents=self.total_cents,
        )

    def proof(self, user_id: int) -> Proof:
        """The proof of ``user_id``; ``KeyError`` when it is not a leaf."""
        index = self.index_of(user_id)
        if index is None:
            raise KeyError(user_id)
        return self.proof_at(index)

    def proofs(self) -> Iterator[Proof]:
        """Every leaf's proof, in user-id order."""
        for index in range(self.leaves):
            yield self.proof_at(index)


def _records(hashes: bytes, sums: np.ndarray) -> bytes:
    """Nodes as ``hash (32) || sum (8 bytes big-endian unsigned)`` records."""
    m = len(sums)
    out = np.empty((m, NODE_RECORD), dtype=np.uint8)
    out[:, :32] = np.frombuffer(hashes, dtype=np.uint8).reshape(m, 32)
    out[:, 32:] = sums.astype(">u8").view(np.uint8).reshape(m, 8)
    return out.tobytes()


def _as_int64(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional")
    if arr.size and arr.dtype.kind not in "iuO":
        raise ValueError(f"{what} must be whole numbers, not {arr.dtype}")
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 8 and arr.dtype != np.uint64:
        return arr.astype(np.int64)
    try:
        return np.array([int(v) for v in arr.tolist()], dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        raise ValueError(f"{what} must be whole numbers within 64 signed bits") from None


def build_tree(
    user_ids: Sequence[int] | np.ndarray, cents: Sequence[int] | np.ndarray, secret: bytes
) -> Tree:
    """Build the Merkle sum tree of :data:`ALGORITHM` over paid users.

    Leaves are sorted by user id; each leaf's nonce is ``HMAC-SHA256(secret, b"nonce" ||
    user_id)``, its hash ``SHA-256(LEAF_PREFIX || user_id || nonce || amount)`` and its sum
    the amount; each node hashes both children with their sums; an odd level's last node is
    paired with the zero-sum node :data:`PAD_HASH`. The same inputs always give the same
    bytes. About three hashes per user: a million users take seconds.

    Parameters
    ----------
    user_ids
        Distinct user ids (64-bit signed), in any order.
    cents
        Each user's amount in cents (non-negative), aligned with ``user_ids``; the total must
        stay below 2**63.
    secret
        At least :data:`SECRET_MIN_BYTES` bytes; whoever holds it can derive every nonce.

    Returns
    -------
    Tree
        ``root_hash``, ``total_cents``, ``leaves``, ``root()``, and each user's proof through
        ``proof(user_id)`` / ``proofs()``.

    Raises
    ------
    ValueError
        No users, lengths that differ, a duplicate id, a negative amount, a total of 2**63
        cents or more, or a short secret.
    """
    if not isinstance(secret, bytes) or len(secret) < SECRET_MIN_BYTES:
        raise ValueError(f"the secret must be at least {SECRET_MIN_BYTES} bytes")
    ids = _as_int64(user_ids, "user_ids")
    amounts = _as_int64(cents, "cents")
    n = len(ids)
    if n != len(amounts):
        raise ValueError(f"{n} user ids but {len(amounts)} amounts")
    if n == 0:
        raise ValueError("a tree needs at least one paid user")
    if (amounts < 0).any():
        raise ValueError("amounts must be non-negative cents")
    if sum(amounts.tolist()) > INT64_MAX:
        raise ValueError("the total must stay below 2**63 cents")
    order = np.argsort(ids, kind="stable")
    ids, amounts = ids[order], amounts[order]
    if n > 1 and bool((ids[1:] == ids[:-1]).any()):
        dup = int(ids[1:][ids[1:] == ids[:-1]][0])
        raise ValueError(f"user id {dup} appears twice")

    sha = hashlib.sha256
    id_bytes = ids.astype(">i8").tobytes()
    keyed = hmac.new(secret, NONCE_PREFIX, "sha256")  # copied per user: the key is set up once
    nonce_list = []
    for k in range(0, 8 * n, 8):
        mac = keyed.copy()
        mac.update(id_bytes[k : k + 8])
        nonce_list.append(mac.digest())
    nonces = b"".join(nonce_list)
    # leaf preimages, the prefix aside: user id (8), nonce (32), amount (8)
    pre = np.empty((n, 48), dtype=np.uint8)
    pre[:, :8] = np.frombuffer(id_bytes, dtype=np.uint8).reshape(n, 8)
    pre[:, 8:40] = np.frombuffer(nonces, dtype=np.uint8).reshape(n, 32)
    pre[:, 40:] = amounts.astype(">u8").view(np.uint8).reshape(n, 8)
    leaf_blob = np.ascontiguousarray(pre[:, :LEAF_RECORD]).tobytes()
    pre_blob = pre.tobytes()
    del pre, nonce_list
    hashes = b"".join(
        [sha(LEAF_PREFIX + pre_blob[k : k + 48]).digest() for k in range(0, 48 * n, 48)]
    )
    del pre_blob
    sums = amounts.astype(np.uint64)
    level = _records(hashes, sums)
    nodes = bytearray(level)
    while len(sums) > 1:
        if len(sums) % 2:
            level += _PAD_RECORD
            sums = np.append(sums, np.uint64(0))
        hashes = b"".join(
            [sha(NODE_PREFIX + level[k : k + 80]).digest() for k in range(0, len(level), 80)]
        )
        sums = sums[0::2] + sums[1::2]
        level = _records(hashes, sums)
        nodes += level
    return Tree(leaf_blob, nodes, n)


__all__ = [
    "ALGORITHM",
    "PAD_HASH",
    "Proof",
    "ProofFormatError",
    "Root",
    "Step",
    "Tree",
    "build_tree",
    "derive_nonce",
    "leaf_hash",
    "node_hash",
    "tree_depth",
    "verify",
]
