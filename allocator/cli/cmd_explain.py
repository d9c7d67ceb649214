"""``allocator explain`` (why a user got their amount) and ``allocator audit`` (fairness audit)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, err_console, guarded, out_console, styled
from allocator.cli.common import check_sample, print_json
from allocator.errors import InputError

#: A user id on the command line: a whole number, negative ones included.
_USER_ID_RE = re.compile(r"[+-]?[0-9]+")


def parse_user_id(text: str) -> int:
    """The USER_ID argument as an int (any size: one outside 64 bits is refused later as not in
    the run); an :class:`InputError` for anything that is not a whole number."""
    if _USER_ID_RE.fullmatch(text.strip()):
        return int(text.strip())
    if text.startswith("-"):
        raise InputError(
            f"no such option {text!r} (and it is not a user id). Options of explain: --run, "
            f"--json, --no-others; a negative user id is written as is, e.g. "
            f"allocator explain -5 --run RUN_DIR."
        )
    raise InputError(f"USER_ID must be a whole number (a user id), not {text!r}.")


# Unknown "options" reach USER_ID as text, so that a negative id (-5) is an id, not an option;
# parse_user_id still names a mistyped option as one.
@app.command("explain", context_settings={"ignore_unknown_options": True})
@guarded
def explain_cmd(
    user_id: Annotated[
        str,
        typer.Argument(
            metavar="USER_ID",
            help="The user to explain: a whole number; negative ids work as is (-5) or after --.",
            show_default=False,
        ),
    ],
    run: Annotated[
        Path, typer.Option("--run", help="Run directory written by 'allocator allocate'.")
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the explanation as strict JSON.")
    ] = False,
    no_others: Annotated[
        bool, typer.Option("--no-others", help="Skip the other shipped scenarios (faster).")
    ] = False,
) -> None:
    """Explain one user's voucher or exclusion: why did I get this amount?

    Liquidations by product and whether they counted; loss, net assets, loss ratio; each weight factor against the median-weight user; the price, the closed form (w / price)^(1/alpha) and the bound that binds (bounds in the whole cents that can be paid); with a phase-in band, the band the user is in, their phase factor and the scaled cap; or the rule that excluded the user (the band's lower end when there is one), its numbers and the distance to passing; and the amount under the other shipped scenarios. Everything is recomputed from the inputs and checked against the run (exit 2 if the user was never liquidated or the inputs changed).

    A negative user id is given as is or after --: allocator explain -5 --run runs/baseline, or allocator explain --run runs/baseline -- -5. An id outside 64 bits is in no run (exit 2). The run directory and its input files are verified first: a damaged run directory, or inputs changed since the run, are refused (exit 2; allocator check-budget RUN_DIR lists every check).

    Example: allocator explain 10000080 --run runs/baseline --no-others
    """
    from allocator.analysis.explain import explain_user

    explanation = explain_user(run, parse_user_id(user_id), other_scenarios=not no_others)
    if json_out:
        print_json(explanation.to_dict())
        return
    out_console.print("\n".join(explanation.lines()), markup=False)


@app.command("audit")
@guarded
def audit_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'allocator allocate'.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the audit as strict JSON.")
    ] = False,
    axioms: Annotated[
        bool,
        typer.Option(
            "--axioms",
            help="Also check the fairness axioms on the run's own problem (solves it again: "
            "needs the run's input data; see `allocator axioms`).",
        ),
    ] = False,
    sample: Annotated[
        int, typer.Option("--sample", help="With --axioms: users perturbed, split or merged.")
    ] = 1000,
) -> None:
    """Fairness audit of a run: inequality, coverage by loss band, ordering violations.

    Gini, Lorenz curve, coverage by loss band, and exact counts of monotonicity and envy violations, split by the documented factor that explains them (segment, weight features, bounds, loss ratio, cent tie-break). Exit 1 when violations remain unexplained although the run's weights are monotone in loss and loss ratio.

    The run directory is verified first (manifest, files, columns, the sha256 the manifest recorded): a damaged or changed one is refused (exit 2; allocator check-budget RUN_DIR lists every check).

    With --axioms the audit also checks the fairness axioms on the run's own problem (the table
    of `allocator axioms`); they do not change the exit code.

    Example: allocator audit runs/baseline --json
    """
    from allocator.analysis.audit import audit
    from allocator.analysis.axioms_run import run_axioms
    from allocator.runs.reader import load_run

    check_sample(sample)
    # refuses a damaged run directory or one changed since the run (exit 2)
    run = load_run(run_dir)
    result = audit(run.allocations, objective=run.scenario.objective)
    table = run_axioms(run_dir, sample=sample) if axioms else None
    if json_out:
        out = result.to_dict()
        if table is not None:
            out["axioms"] = [a.to_dict() for a in table.axioms]
        print_json(out)
    else:
        out_console.print("\n".join(result.lines()), markup=False)
        if table is not None:
            out_console.print("\nfairness axioms\n" + "\n".join(table.lines()[1:]), markup=False)
    if not result.ok:
        err_console.print(
            styled(
                "audit failed:",
                "bold red",
                " violations that no documented factor explains (monotonicity "
                f"{result.monotonicity.unexplained:,}, envy {result.envy.unexplained:,}).",
            )
        )
        raise typer.Exit(1)
