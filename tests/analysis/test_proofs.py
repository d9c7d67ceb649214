"""Proofs of allocation: the Merkle sum tree, its proofs, and ``allocator proofs`` on a run."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import stat
from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, strict_json
from hypothesis import assume, given
from hypothesis import strategies as st

import allocator.cli.cmd_proofs  # noqa: F401  (registers the proofs commands)
from allocator import names as N
from allocator.analysis.proofs import (
    ALGORITHM,
    PAD_HASH,
    Proof,
    ProofFormatError,
    Root,
    Step,
    build_tree,
    derive_nonce,
    node_hash,
    tree_depth,
    verify,
)
from allocator.analysis.proofs_files import (
    open_tree,
    proof_text,
    root_text,
)
from allocator.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SECRET = bytes(range(32))

users_st = st.lists(
    st.tuples(st.integers(INT64_MIN, INT64_MAX), st.integers(0, 10**12)),
    min_size=1,
    max_size=70,
    unique_by=lambda t: t[0],
)
secret_st = st.binary(min_size=32, max_size=64)


def _tree(users: list[tuple[int, int]], secret: bytes = SECRET):
    return build_tree([u for u, _ in users], [c for _, c in users], secret)


# --------------------------------------------------------------------------------------------
# the construction
# --------------------------------------------------------------------------------------------


@given(users=users_st, secret=secret_st)
def test_every_proof_verifies_and_the_root_totals_the_amounts(
    users: list[tuple[int, int]], secret: bytes
) -> None:
    tree = _tree(users, secret)
    root = tree.root()
    assert root.total_cents == sum(c for _, c in users)
    assert root.leaves == len(users)
    expected = sorted(users)
    for index, proof in enumerate(tree.proofs()):
        assert (proof.user_id, proof.amount_cents) == expected[index]
        assert proof.nonce == derive_nonce(secret, proof.user_id)
        assert len(proof.path) == tree_depth(len(users))
        ok, reason = verify(root, proof)
        assert ok, reason
        assert tree.proof(proof.user_id) == proof


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _with_step(proof: Proof, k: int, **change: object) -> Proof:
    path = list(proof.path)
    path[k] = dataclasses.replace(path[k], **change)  # type: ignore[arg-type]
    return dataclasses.replace(proof, path=tuple(path))


@given(users=users_st, data=st.data())
def test_changing_any_part_of_a_proof_fails(
    users: list[tuple[int, int]], data: st.DataObject
) -> None:
    tree = _tree(users)
    root = tree.root()
    proof = tree.proof_at(data.draw(st.integers(0, len(users) - 1), label="leaf"))
    kind = data.draw(
        st.sampled_from(
            [
                "amount",
                "nonce",
                "user_id",
                "sibling_hash",
                "sibling_sum",
                "side",
                "drop_step",
                "extra_step",
                "total",
                "root_hash",
            ]
        ),
        label="change",
    )
    if kind in {"sibling_hash", "sibling_sum", "side", "drop_step"}:
        assume(proof.path)
    k = data.draw(st.integers(0, max(len(proof.path) - 1, 0)), label="step")
    bit = data.draw(st.integers(0, 255), label="bit")
    delta = data.draw(st.integers(1, 10**6), label="delta") * data.draw(
        st.sampled_from([-1, 1]), label="sign"
    )
    if kind == "amount":
        forged = dataclasses.replace(proof, amount_cents=proof.amount_cents + delta)
    elif kind == "nonce":
        forged = dataclasses.replace(proof, nonce=_flip(proof.nonce, bit))
    elif kind == "user_id":
        uid = proof.user_id + delta
        assume(INT64_MIN <= uid <= INT64_MAX)
        forged = dataclasses.replace(proof, user_id=uid)
    elif kind == "sibling_hash":
        forged = _with_step(proof, k, hash=_flip(proof.path[k].hash, bit))
    elif kind == "sibling_sum":
        forged = _with_step(proof, k, sum_cents=proof.path[k].sum_cents + delta)
    elif kind == "side":
        side = "left" if proof.path[k].side == "right" else "right"
        forged = _with_step(proof, k, side=side)
    elif kind == "drop_step":
        forged = dataclasses.replace(proof, path=proof.path[:k] + proof.path[k + 1 :])
    elif kind == "extra_step":
        forged = dataclasses.replace(proof, path=(*proof.path, Step("right", PAD_HASH, 0)))
    elif kind == "total":
        forged = dataclasses.replace(proof, total_cents=proof.total_cents + delta)
    else:
        forged = dataclasses.replace(proof, root_hash=_flip(proof.root_hash, bit))
    ok, reason = verify(root, forged)
    assert not ok, kind
    assert reason and "\n" not in reason
    # a root that lies about the total fails every true proof
    lying = dataclasses.replace(root, total_cents=root.total_cents + abs(delta))
    assert not verify(lying, dataclasses.replace(proof, total_cents=lying.total_cents))[0]


@given(users=st.lists(st.integers(0, 10**9), min_size=1, max_size=40), secret=secret_st)
def test_the_root_total_equals_the_amount_paid(users: list[int], secret: bytes) -> None:
    tree = build_tree(list(range(len(users))), users, secret)
    assert tree.total_cents == sum(users)
    for proof in tree.proofs():  # each proof splits the total into its amount and its siblings
        assert proof.amount_cents + sum(s.sum_cents for s in proof.path) == sum(users)
        assert proof.total_cents == sum(users)


@given(users=users_st)
def test_a_negative_sibling_sum_and_a_compensating_one_fail(users: list[tuple[int, int]]) -> None:
    tree = _tree(users)
    assume(tree.depth >= 2)
    root = tree.root()
    proof = tree.proof_at(0)
    x = proof.path[0].sum_cents + 12_345
    forged = _with_step(proof, 0, sum_cents=-x)
    forged = _with_step(forged, 1, sum_cents=proof.path[1].sum_cents + x + proof.path[0].sum_cents)
    # the sums still add up to the published total; the negative one is what gives it away
    assert forged.amount_cents + sum(s.sum_cents for s in forged.path) == root.total_cents
    ok, reason = verify(root, forged)
    assert not ok
    assert "negative" in reason


def _node_hash_signed(lh: bytes, ls: int, rh: bytes, rs: int) -> bytes:
    """A dishonest operator's node hash, with sums in two's complement."""
    return hashlib.sha256(
        b"allocator-proof-node\x00"
        + lh
        + ls.to_bytes(8, "big", signed=True)
        + rh
        + rs.to_bytes(8, "big", signed=True)
    ).digest()


def test_an_operator_cannot_hide_a_users_amount_behind_a_negative_node() -> None:
    # user 7 is owed 100,000 cents; the operator publishes a total of 50 cents by pairing
    # their leaf with an invented node of -99,950 cents, hashed consistently in two's complement
    nonce = derive_nonce(SECRET, 7)
    leaf = hashlib.sha256(
        b"allocator-proof-leaf\x00"
        + (7).to_bytes(8, "big", signed=True)
        + nonce
        + (100_000).to_bytes(8, "big")
    ).digest()
    fake = hashlib.sha256(b"invented").digest()
    top = _node_hash_signed(leaf, 100_000, fake, -99_950)
    root = Root(ALGORITHM, top, 50, 2)
    for sibling_sum in (-99_950, (1 << 64) - 99_950):  # as a negative, or as its 64-bit pattern
        proof = Proof(7, 100_000, nonce, (Step("right", fake, sibling_sum),), top, 50)
        ok, reason = verify(root, proof)
        assert not ok
        assert "negative" in reason or "overflows" in reason


def test_the_documented_bytes_give_the_root() -> None:
    # an independent rebuild of a three-leaf tree from the construction in the docstring
    users = [(30, 500), (-2, 1), (10, 0)]

    def leaf(uid: int, amount: int) -> bytes:
        nonce = hmac.new(SECRET, b"nonce" + uid.to_bytes(8, "big", signed=True), "sha256")
        return hashlib.sha256(
            b"allocator-proof-leaf\x00"
            + uid.to_bytes(8, "big", signed=True)
            + nonce.digest()
            + amount.to_bytes(8, "big")
        ).digest()

    def node(lh: bytes, ls: int, rh: bytes, rs: int) -> bytes:
        return hashlib.sha256(
            b"allocator-proof-node\x00" + lh + ls.to_bytes(8, "big") + rh + rs.to_bytes(8, "big")
        ).digest()

    pad = hashlib.sha256(b"allocator-proof-pad\x00").digest()
    assert pad == PAD_HASH
    a, b, c = leaf(-2, 1), leaf(10, 0), leaf(30, 500)
    expected = node(node(a, 1, b, 0), 1, node(c, 500, pad, 0), 500)
    tree = _tree(users)
    assert tree.root_hash == expected
    assert tree.total_cents == 501
    assert node_hash(a, 1, b, 0) == node(a, 1, b, 0)
    proof = tree.proof(30)
    assert [s.side for s in proof.path] == ["right", "left"]
    assert proof.path[0] == Step("right", pad, 0)
    single = _tree([(5, 42)])
    assert single.root_hash == leaf(5, 42) and single.proof(5).path == ()
    assert verify(single.root(), single.proof(5))[0]


@given(users=users_st, secret=secret_st, other=secret_st)
def test_rebuilds_are_byte_identical_and_the_secret_changes_every_hash(
    users: list[tuple[int, int]], secret: bytes, other: bytes
) -> None:
    one = _tree(users, secret)
    two = _tree(list(reversed(users)), secret)
    assert one.leaf_blob == two.leaf_blob and one.node_blob == two.node_blob
    if other != secret:
        three = _tree(users, other)
        assert three.total_cents == one.total_cents
        assert three.root_hash != one.root_hash


@given(users=users_st)
def test_proofs_and_roots_round_trip_through_json(users: list[tuple[int, int]]) -> None:
    tree = _tree(users)
    root = tree.root({"scenario": "s", "manifest_sha256": "ab" * 32})
    assert Root.from_dict(json.loads(root_text(root))) == root
    for proof in tree.proofs():
        assert Proof.from_dict(strict_json(proof_text(proof))) == proof


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.pop("nonce"), "nonce"),
        (lambda d: d.update(amount_cents="12"), "amount_cents"),
        (lambda d: d.update(amount_cents=1.0), "amount_cents"),
        (lambda d: d.update(user_id=True), "user_id"),
        (lambda d: d.update(root_hash="zz" * 32), "root_hash"),
        (lambda d: d.update(path={}), "path"),
        (lambda d: d["path"][0].update(side="up"), "path[0].side"),
        (lambda d: d["path"][0].pop("sum_cents"), "path[0].sum_cents"),
        (lambda d: d["path"][0].update(hash="ab"), "path[0].hash"),
    ],
)
def test_a_malformed_proof_names_the_key(change, named: str) -> None:
    data = _tree([(1, 5), (2, 6)]).proof(1).to_dict()
    change(data)
    with pytest.raises(ProofFormatError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Proof.from_dict(data)


def test_build_tree_refuses_what_it_cannot_commit_to() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_tree([], [], SECRET)
    with pytest.raises(ValueError, match="twice"):
        build_tree([3, 1, 3], [1, 2, 3], SECRET)
    with pytest.raises(ValueError, match="non-negative"):
        build_tree([1, 2], [1, -2], SECRET)
    with pytest.raises(ValueError, match="32 bytes"):
        build_tree([1], [1], b"short")
    with pytest.raises(ValueError, match="amounts"):
        build_tree([1, 2], [1], SECRET)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        build_tree([1, 2], [INT64_MAX, 1], SECRET)
    with pytest.raises(ValueError, match="64 signed bits"):
        build_tree([1 << 63], [1], SECRET)


# --------------------------------------------------------------------------------------------
# the commands on a written run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("proofs")
    data = base / "data"
    generate(data, users=2000, seed=3)
    out = base / "run"
    r = invoke(
        "allocate",
        "--scenario",
        ROOT / "scenarios" / "baseline.toml",
        "--data",
        data,
        "--out",
        out,
        "-q",
        "--set",
        "budget.total_usd=2e6",
    )
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def proofs(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "proofs"
    r = invoke("proofs", "build", run, "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _paid(run: Path) -> pl.DataFrame:
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    return alloc.filter(pl.col(N.VOUCHER_CENTS) > 0).select(N.USER_ID, N.VOUCHER_CENTS)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_build_writes_a_root_that_reveals_no_user(run: Path, proofs: Path) -> None:
    paid = _paid(run)
    assert sorted(p.name for p in proofs.iterdir()) == [
        "leaves.bin",
        "nodes.bin",
        "root.json",
        "secret.key",
    ]
    assert stat.S_IMODE((proofs / "secret.key").stat().st_mode) == 0o600
    assert len((proofs / "secret.key").read_bytes()) >= 32
    text = (proofs / "root.json").read_text()
    root = strict_json(text)
    assert set(root) == {"algorithm", "root_hash", "total_cents", "leaves", "run"}
    assert set(root["run"]) == {"scenario", "manifest_sha256"}
    assert root["algorithm"] == ALGORITHM
    assert root["run"]["scenario"] == "baseline"
    assert (
        root["run"]["manifest_sha256"]
        == hashlib.sha256((run / N.MANIFEST_FILE).read_bytes()).hexdigest()
    )
    manifest = json.loads((run / N.MANIFEST_FILE).read_text())
    assert root["total_cents"] == int(paid[N.VOUCHER_CENTS].sum())
    assert root["total_cents"] == manifest["money"]["paid_cents"]
    assert root["leaves"] == paid.height
    # no amount of any user: the only numbers are the total (larger than any one amount) and
    # the count; and no user id appears anywhere in the text
    assert root["total_cents"] > int(paid[N.VOUCHER_CENTS].max())
    assert not any(str(uid) in text for uid in paid[N.USER_ID].to_list())


def test_every_users_proof_in_the_directory_verifies(run: Path, proofs: Path) -> None:
    paid = dict(_paid(run).iter_rows())
    with open_tree(proofs) as (root, tree):
        seen = {}
        for proof in tree.proofs():
            ok, reason = verify(root, proof)
            assert ok, reason
            seen[proof.user_id] = proof.amount_cents
    assert seen == paid


def test_show_and_verify_round_trip(run: Path, proofs: Path, tmp_path: Path) -> None:
    uid, cents = _paid(run).row(17)
    r = invoke("proofs", "show", proofs, uid, "--json")
    assert r.exit_code == 0, r.output
    proof = strict_json(r.stdout)
    assert list(proof) == ["user_id", "amount_cents", "nonce", "path", "root_hash", "total_cents"]
    assert proof["user_id"] == uid and proof["amount_cents"] == cents
    assert set(proof["path"][0]) == {"side", "hash", "sum_cents"}

    file = tmp_path / "proof.json"
    r = invoke("proofs", "show", proofs, uid, "--out", file)
    assert r.exit_code == 0, r.output
    assert f"user {uid}" in r.stdout and "path to the root" in r.stdout
    assert strict_json(file.read_text()) == proof

    r = invoke("proofs", "verify", proofs / "root.json", file)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ok:")
    r = invoke("proofs", "verify", proofs / "root.json", file, "--json")
    assert r.exit_code == 0 and strict_json(r.stdout)["ok"] is True

    # one cent more: exit 1, one line saying what failed
    proof["amount_cents"] += 1
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(proof))
    r = invoke("proofs", "verify", proofs / "root.json", forged)
    assert r.exit_code == 1
    assert "does not verify" in r.stderr and "root hash" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = invoke("proofs", "verify", proofs / "root.json", forged, "--json")
    assert r.exit_code == 1 and strict_json(r.stdout)["ok"] is False


def test_show_refuses_an_unknown_user(run: Path, proofs: Path) -> None:
    for uid in ("1", "-5"):
        r = invoke("proofs", "show", proofs, uid)
        assert r.exit_code == 2
        assert f"user {uid} is not among" in r.stderr
        assert "Traceback" not in r.output
    r = invoke("proofs", "show", proofs, "abc")
    assert r.exit_code == 2 and "whole number" in r.stderr
    r = invoke("proofs", "show", proofs.parent / "nowhere", "1")
    assert r.exit_code == 2 and "does not exist" in r.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"user_id": NaN}', "not strict JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"user_id": 1}', "key path is missing"),
    ],
)
def test_verify_names_a_bad_file(
    proofs: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    r = invoke("proofs", "verify", proofs / "root.json", bad)
    assert r.exit_code == 2, r.output
    assert str(bad) in r.stderr and message in r.stderr
    r = invoke("proofs", "verify", bad, bad)
    assert r.exit_code == 2 and str(bad) in r.stderr


def test_verify_names_a_wrong_type_and_a_missing_file(
    run: Path, proofs: Path, tmp_path: Path
) -> None:
    uid = _paid(run).row(0)[0]
    r = invoke("proofs", "show", proofs, uid, "--json")
    proof = strict_json(r.stdout)
    proof["path"][0]["sum_cents"] = "7"
    bad = tmp_path / "typed.json"
    bad.write_text(json.dumps(proof))
    r = invoke("proofs", "verify", proofs / "root.json", bad)
    assert r.exit_code == 2
    assert str(bad) in r.stderr and "path[0].sum_cents must be a whole number" in r.stderr
    # the root file handed as a proof, and a file that is not there
    r = invoke("proofs", "verify", proofs / "root.json", proofs / "root.json")
    assert r.exit_code == 2 and "key path is missing" in r.stderr
    r = invoke("proofs", "verify", proofs / "root.json", tmp_path / "missing.json")
    assert r.exit_code == 2 and "missing.json" in r.stderr


def test_rebuilds_are_byte_identical(run: Path, proofs: Path, tmp_path: Path) -> None:
    before = _files(proofs)
    again = tmp_path / "again"
    shutil.copytree(proofs, again)
    r = invoke("proofs", "build", run, "--out", again)
    assert r.exit_code == 2 and "--force" in r.stderr
    r = invoke("proofs", "build", run, "--out", again, "--force")
    assert r.exit_code == 0, r.output
    assert _files(again) == before  # the secret in secret.key is kept
    # with a secret file: the same bytes from two builds, no secret.key, and another root
    key = tmp_path / "key"
    key.write_bytes(bytes(range(100, 148)))
    one, two = tmp_path / "one", tmp_path / "two"
    for out in (one, two):
        r = invoke("proofs", "build", run, "--out", out, "--secret-file", key, "--json")
        assert r.exit_code == 0, r.output
        built = strict_json(r.stdout)
        assert built["secret"] == "file" and built["root"] == strict_json(
            (out / "root.json").read_text()
        )
    assert _files(one) == _files(two)
    assert "secret.key" not in _files(one)
    assert (
        strict_json(_files(one)["root.json"])["root_hash"]
        != strict_json(before["root.json"])["root_hash"]
    )
    # the generated secret handed back as a file gives the generated build's bytes
    three = tmp_path / "three"
    r = invoke("proofs", "build", run, "--out", three, "--secret-file", proofs / "secret.key")
    assert r.exit_code == 0, r.output
    assert {k: v for k, v in before.items() if k != "secret.key"} == _files(three)


def test_build_refuses_a_short_secret_and_foreign_directories(
    run: Path, proofs: Path, tmp_path: Path
) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 31)
    out = tmp_path / "out"
    r = invoke("proofs", "build", run, "--out", out, "--secret-file", short)
    assert r.exit_code == 2 and "31 byte(s)" in r.stderr and "at least 32" in r.stderr
    assert not out.exists()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    r = invoke("proofs", "build", run, "--out", other, "--force")
    assert r.exit_code == 2 and "not a proofs directory" in r.stderr
    assert (other / "notes.txt").read_text() == "keep me"

    foreign = tmp_path / "foreign"
    shutil.copytree(proofs, foreign)
    root = strict_json((foreign / "root.json").read_text())
    root["run"]["manifest_sha256"] = "0" * 64
    (foreign / "root.json").write_text(json.dumps(root))
    r = invoke("proofs", "build", run, "--out", foreign, "--force")
    assert r.exit_code == 2 and "another run" in r.stderr

    r = invoke("proofs", "build", run, "--out", run / "proofs")
    assert r.exit_code == 2 and "run directory" in r.stderr
    assert not (run / "proofs").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("proofs", "build", run, "--out", empty)
    assert r.exit_code == 0, r.output


def test_build_refuses_a_damaged_run_and_show_a_damaged_tree(
    run: Path, proofs: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    alloc = pl.read_parquet(damaged / N.ALLOCATIONS_FILE)
    alloc.with_columns(pl.col(N.VOUCHER_CENTS) + 1).write_parquet(damaged / N.ALLOCATIONS_FILE)
    r = invoke("proofs", "build", damaged, "--out", tmp_path / "p")
    assert r.exit_code == 2 and "damaged" in r.stderr
    assert not (tmp_path / "p").exists()

    broken = tmp_path / "broken"
    shutil.copytree(proofs, broken)
    nodes = bytearray((broken / "nodes.bin").read_bytes())
    nodes[5] ^= 1  # the first leaf's hash: the second user's sibling
    (broken / "nodes.bin").write_bytes(bytes(nodes))
    uid = _paid(run).row(1)[0]
    r = invoke("proofs", "show", broken, uid)
    assert r.exit_code == 2 and "damaged" in r.stderr
    (broken / "nodes.bin").write_bytes(bytes(nodes[:-1]))
    r = invoke("proofs", "show", broken, uid)
    assert r.exit_code == 2 and "damaged" in r.stderr
