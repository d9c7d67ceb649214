"""``allocator proofs ...``: proofs of allocation (build a run's Merkle sum tree, show, verify)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from allocator.analysis.proofs import (
    SECRET_FILE,
    verify,
)
from allocator.analysis.proofs_files import (
    build_proofs_dir,
    read_proof_file,
    read_proof_from_dir,
    read_root_file,
    write_proof_file,
)
from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json, stage
from allocator.errors import CheckFailedError, InputError
from allocator.kernel.money import format_cents

proofs_app = typer.Typer(
    help=(
        "Proofs of allocation, as exchanges publish proofs of reserves: a Merkle sum tree over "
        "a run's paid users whose root (a hash and the total paid) is published, and one proof "
        "per user that their amount is a non-negative part of that total, revealing no other "
        "user's id.\n\n"
        "Example: allocator proofs build runs/baseline --out runs/proofs"
    ),
    no_args_is_help=True,
)
app.add_typer(proofs_app, name="proofs")

#: A user id on the command line: a whole number, negative ones included.
_USER_ID_RE = re.compile(r"[+-]?[0-9]+")


def _user_id(text: str) -> int:
    if _USER_ID_RE.fullmatch(text.strip()):
        return int(text.strip())
    if text.startswith("-"):
        raise InputError(
            f"no such option {text!r} (and it is not a user id). Options of proofs show: "
            f"--json, --out; a negative user id is written as is, e.g. "
            f"allocator proofs show DIR -5."
        )
    raise InputError(f"USER_ID must be a whole number (a user id), not {text!r}.")


@proofs_app.command("build")
@guarded
def build_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(metavar="RUN_DIR", help="Run directory written by `allocator allocate`."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Proofs directory to write (new or empty; never inside a run directory)."
        ),
    ],
    secret_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-file",
            help="File of at least 32 random bytes used as the secret of the nonces; default: a "
            f"new secret written to OUT/{SECRET_FILE} (mode 0600).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace OUT when it holds earlier proofs of the same run."),
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print root.json and where it was written as strict JSON."),
    ] = False,
) -> None:
    """Build the proofs of allocation of a run: root.json to publish, one proof per paid user.

    A Merkle sum tree over the paid users (voucher above 0 cents), ordered by user id. A leaf is
    SHA-256 of the user id, a nonce (HMAC-SHA256 of the user id under the secret) and the
    amount in cents; a node hashes both children with their sums; an odd level's last node is
    paired with a zero-sum padding node. root.json holds the root hash, the total in cents, the
    number of leaves and the run (scenario, manifest sha256): no user's amount.

    The run is verified first (a damaged or changed run is refused, exit 2). OUT is built aside
    and renamed into place; an existing OUT is refused unless it holds this run's proofs and
    --force is given (the secret in OUT/secret.key is then kept, so the same bytes are written).
    Keep OUT and the secret private: whoever holds the secret can link amounts to users only
    through the proofs they already hold.

    Example: allocator proofs build runs/baseline --out runs/proofs
    """
    with stage("building the proofs of allocation"):
        result = build_proofs_dir(run_dir, out, secret_file=secret_file, force=force)
    root = result.root
    if json_out:
        print_json(
            {
                "out": str(result.out),
                "root": root.to_dict(),
                "secret": result.secret_source,
                "seconds": round(result.seconds, 3),
            },
            sort_keys=False,
        )
        return
    secret = {
        "file": f"from {secret_file} (not copied into {out})",
        "reused": f"kept in {out / SECRET_FILE} (mode 0600; keep it private)",
        "generated": f"new, in {out / SECRET_FILE} (mode 0600; keep it private)",
    }[result.secret_source]
    out_console.print(
        "\n".join(
            [
                f"proofs of allocation of {run_dir} (scenario {root.run.get('scenario')}) "
                f"written to {out} in {result.seconds:.1f} s",
                f"  paid users (leaves)  {root.leaves:,}",
                f"  total                {format_cents(root.total_cents, currency=True)} "
                f"({root.total_cents} cents)",
                f"  root hash            {root.root_hash.hex()}",
                f"  secret               {secret}",
                f"publish {out / 'root.json'}; give each user their own proof "
                f"(allocator proofs show {out} USER_ID --out FILE).",
            ]
        )
    )


@proofs_app.command("show", context_settings={"ignore_unknown_options": True})
@guarded
def show_cmd(
    directory: Annotated[
        Path, typer.Argument(help="Proofs directory of `allocator proofs build`.")
    ],
    user_id: Annotated[
        str,
        typer.Argument(
            metavar="USER_ID",
            help="The paid user: a whole number; negative ids work as is (-5) or after --.",
            show_default=False,
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the proof itself as strict JSON.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the proof to this file (the file a user checks)."),
    ] = None,
) -> None:
    """Show one paid user's proof: their amount, and the path of sibling hashes and sums.

    The proof is read from the tree in a few file reads and checked against root.json before it
    is shown (a damaged directory is refused, exit 2); a user who is not paid in the run has no
    proof (exit 2). With --json the proof is printed as strict JSON (user_id, amount_cents,
    nonce, path of {side, hash, sum_cents} from the leaf up, root_hash, total_cents), the file
    that `allocator proofs verify` reads; --out writes the same file.

    Example: allocator proofs show runs/proofs 10000043 --out runs/proof-10000043.json
    """
    uid = _user_id(user_id)
    root, proof = read_proof_from_dir(directory, uid)
    if out is not None:
        write_proof_file(out, proof)
    if json_out:
        print_json(proof.to_dict(), sort_keys=False)
        return
    lines = [
        f"user {proof.user_id}: paid {format_cents(proof.amount_cents, currency=True)} "
        f"({proof.amount_cents} cents)",
        f"  one of {root.leaves:,} paid users; total "
        f"{format_cents(root.total_cents, currency=True)}; root {root.root_hash.hex()}",
        f"  path to the root ({len(proof.path)} steps; the sibling's side, hash and sum):",
    ]
    lines += [
        f"    {k:>2}. {step.side:<5}  {step.hash.hex()}  {step.sum_cents:>15,} cents"
        for k, step in enumerate(proof.path, 1)
    ]
    if out is not None:
        lines.append(
            f"written to {out}; check it with: allocator proofs verify "
            f"{Path(directory) / 'root.json'} {out}"
        )
    else:
        lines.append("--json prints the proof file, --out writes it")
    out_console.print("\n".join(lines))


@proofs_app.command("verify")
@guarded
def verify_cmd(
    root_json: Annotated[
        Path, typer.Argument(metavar="ROOT_JSON", help="The published root.json.")
    ],
    proof_json: Annotated[
        Path, typer.Argument(metavar="PROOF_JSON", help="One user's proof file.")
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help='Print {"ok", "reason", ...} as strict JSON.')
    ] = False,
) -> None:
    """Check one proof against a published root: exit 0 only if it reaches it.

    Recomputes the leaf hash from the user id, nonce and amount and walks the path: every sum
    must be non-negative, the path must have the tree's depth and end at the root hash, and the
    sums must add up to the root's total. Exit 1 with one line saying what failed; exit 2 for a
    file that is not a root or a proof (not JSON, a missing key, a wrong type), naming it.
    Needs nothing but the two files.

    Example: allocator proofs verify runs/proofs/root.json runs/proof-10000043.json
    """
    root = read_root_file(root_json)
    proof = read_proof_file(proof_json)
    ok, reason = verify(root, proof)
    if json_out:
        print_json(
            {
                "ok": ok,
                "reason": reason,
                "user_id": proof.user_id,
                "amount_cents": proof.amount_cents,
                "root_hash": root.root_hash.hex(),
                "total_cents": root.total_cents,
            },
            sort_keys=False,
        )
        if not ok:
            raise typer.Exit(1)
        return
    if not ok:
        raise CheckFailedError(f"{proof_json} does not verify against {root_json}: {reason}.")
    out_console.print(
        f"ok: user {proof.user_id}'s {format_cents(proof.amount_cents, currency=True)} is "
        f"counted in the total {format_cents(root.total_cents, currency=True)} of root "
        f"{root.root_hash.hex()[:16]}... ({len(proof.path)} steps, {root.leaves:,} paid users)"
    )
