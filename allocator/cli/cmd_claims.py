"""``allocator claims``: one claims problem, divided by a named rule, without the data pipeline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json
from allocator.errors import AllocatorError, InfeasibleError
from allocator.kernel.claims import ALIASES, RULES, awards_to_cents, divide, rule_name
from allocator.kernel.money import CENTS_PER_USD, budget_to_cents, format_cents

_SEPARATORS = re.compile(r"[,\s;]+")


def _numbers(text: str, where: str) -> list[float]:
    values = []
    for token in _SEPARATORS.split(text.strip()):
        if not token:
            continue
        try:
            values.append(float(token))
        except ValueError:
            raise AllocatorError(
                f"{where}: {token!r} is not an amount; give claims in USD, e.g. 100,200,300."
            ) from None
    if not values:
        raise AllocatorError(f"{where}: no claims given; e.g. 100,200,300.")
    return values


def _claims_file(path: Path) -> list[float]:
    """Claims from a text or CSV file: amounts separated by commas, spaces or new lines, or a
    CSV whose header names a ``claim`` (or ``loss``) column; ``#`` starts a comment."""
    lines = [
        ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()
    ]
    lines = [ln for ln in lines if ln]
    if lines and re.search(r"[A-Za-z_]", lines[0]):
        header = [h.strip().lower() for h in lines[0].split(",")]
        column = next(
            (header.index(c) for c in ("claim", "claims", "loss", "loss_usd") if c in header), None
        )
        if column is None:
            raise AllocatorError(
                f"{path}: the header {lines[0]!r} has no 'claim' column; give one amount per "
                "line, or a CSV with a claim column (e.g. 'user_id,claim')."
            )
        rows = [ln.split(",") for ln in lines[1:]]
        bad = next((i for i, r in enumerate(rows) if len(r) <= column), None)
        if bad is not None:
            raise AllocatorError(
                f"{path}: line {bad + 2} has no value in the claim column: {lines[bad + 1]!r}"
            )
        return _numbers(",".join(r[column] for r in rows), str(path))
    return _numbers(" ".join(lines), str(path))


def _rule_help() -> str:
    short = ", ".join(f"{a} ({full})" for a, full in ALIASES.items())
    return f"One of {', '.join(RULES)}; short names: {short}."


@app.command("claims")
@guarded
def claims_cmd(
    rule: Annotated[str, typer.Argument(help=_rule_help(), show_default=False)],
    estate: Annotated[float, typer.Option("--estate", help="Amount to divide, USD (whole cents).")],
    claims: Annotated[
        str | None, typer.Option("--claims", help="Claims in USD, comma-separated: 100,200,300.")
    ] = None,
    claims_file: Annotated[
        Path | None,
        typer.Option(
            "--claims-file", help="A file of claims: one per line, or a CSV with a claim column."
        ),
    ] = None,
    floor: Annotated[float | None, typer.Option("--floor", help="Smallest award, USD.")] = None,
    cap: Annotated[float | None, typer.Option("--cap", help="Largest award, USD.")] = None,
    base: Annotated[
        float | None, typer.Option("--base", help="base_then_pro_rata (mt_gox): the base amount.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="convenience_class (ftx): the largest claim in the class."
        ),
    ] = None,
    minimum: Annotated[
        float | None, typer.Option("--minimum", help="minimum_payment: the smallest payment made.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
) -> None:
    """Divide an estate among claims by a classical rule; awards in cents sum exactly to it.

    Without --floor/--cap it is the textbook problem: nobody gets more than their claim. The
    awards are printed in the order the claims were given, in USD with cents.

    Example: allocator claims talmud --estate 200 --claims 100,200,300
    """
    full = rule_name(rule)
    if (claims is None) == (claims_file is None):
        raise AllocatorError("give the claims with exactly one of --claims or --claims-file.")
    values = (
        _claims_file(claims_file) if claims_file is not None else _numbers(claims or "", "--claims")
    )
    c = np.asarray(values, dtype=np.float64)
    try:
        budget_to_cents(estate)
    except AllocatorError:
        raise AllocatorError(
            f"--estate must be a finite amount >= 0 USD in whole cents, got {estate!r} "
            "(e.g. --estate 200 or --estate 1234.56)."
        ) from None
    given = {"base_then_pro_rata": base, "convenience_class": threshold, "minimum_payment": minimum}
    parameter = given.get(full)
    try:
        awards = divide(full, c, estate, lower=floor, upper=cap, parameter=parameter)
        cents = awards_to_cents(awards, c, estate, lower=floor, upper=cap)
    except InfeasibleError as exc:
        # the problem was typed on the command line: an input to fix, not a solver outcome
        raise AllocatorError(exc.message, hint=exc.hint) from None
    if json_out:
        print_json(
            {"rule": full, "estate": estate, "awards": [int(x) / CENTS_PER_USD for x in cents]},
            sort_keys=False,
        )
        return
    total_claims = round(float(c.sum()) * CENTS_PER_USD)
    out_console.print(
        f"{full}: USD {format_cents(int(cents.sum()))} over {c.size:,} claims totalling "
        f"USD {format_cents(total_claims)}"
    )
    width = max(len(format_cents(round(x * CENTS_PER_USD))) for x in values)
    out_console.print(f"{'claim':>{width}}  award")
    for claim, award in zip(values, cents):
        out_console.print(
            f"{format_cents(round(claim * CENTS_PER_USD)):>{width}}  {format_cents(int(award))}"
        )
