"""One view of the three programmes after the crash: vouchers, depeg compensation, loans.

The exchange announced USD 300M of vouchers (the Together Initiative), about USD 283M of depeg
compensation paid earlier, and a USD 100M low-interest loan fund: USD 683M in all. This module
puts what the project computes for each beside those figures:

* **vouchers**: a voucher run directory (``allocations.parquet`` and ``manifest.json``), or the
  baseline voucher scenario run on the data through :mod:`allocator.vouchers.pipeline`;
* **depeg**: :mod:`allocator.depeg.compensation` applied to the data (the rule's computed cents; what the
  users table says was paid is reported beside it);
* **loans**: a loan run directory (``term_sheet.parquet`` and ``manifest.json``), or the default
  loan scenario solved on the synthetic applications.

Overlaps are counted on ``user_id``: vouchers and depeg compensation reach the same accounts, so
their intersection is exact, both against the depeg compensation computed by the rule and
against the compensation the users table says was paid (the one the voucher rules act on: under
the baseline ``depeg_policy = "exclude"`` nobody paid depeg compensation gets a voucher, so the
second intersection must be empty; under ``"net"`` or ``"ignore"`` it need not be). Loan
applicants are institutions identified by ``institution_id``, and the data has no table mapping
an institution to its user accounts: their overlap with the other programmes is reported as
not linkable, with the number of voucher and depeg recipients flagged ``is_institutional`` as
the closest available indication.

Loans are counted at face value, as the announcement did, although they are repaid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.inputs import load_inputs
from allocator.depeg.compensation import compute_depeg
from allocator.depeg.positions import COMPENSATION_CENTS
from allocator.errors import InputError
from allocator.kernel.money import budget_to_cents, cents_to_usd, format_cents
from allocator.loans.allocate import allocate_loans
from allocator.loans.applications import INSTITUTION_ID, generate_applications
from allocator.loans.checks import run_solver_status
from allocator.loans.run import MANIFEST, MANIFEST_KIND, TERM_SHEET_PARQUET
from allocator.loans.terms import AMOUNT_CENTS
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import read_manifest
from allocator.runs.reader import load_run, read_parquet_file
from allocator.settings.depeg import DepegRules
from allocator.settings.loans import LoanScenario, load_loan_scenario
from allocator.settings.models import Scenario
from allocator.settings.scenarios import load_scenario
from allocator.vouchers.pipeline import DataSession, allocate

__all__ = [
    "ANNOUNCED_USD",
    "Overlap",
    "ProgrammeLine",
    "ProgrammeSummary",
    "default_scenario_path",
    "summarise_programmes",
]

VOUCHERS = "vouchers"
DEPEG = "depeg"
LOANS = "loans"
#: Announced size of each programme, USD (domain brief, sections 1-3).
ANNOUNCED_USD: dict[str, float] = {
    VOUCHERS: 300_000_000.0,
    DEPEG: 283_000_000.0,
    LOANS: 100_000_000.0,
}
VOUCHER_SCENARIO_FILE = "baseline.toml"
LOAN_SCENARIO_FILE = "loans_default.toml"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ProgrammeLine:
    """What one programme pays (or lends), to how many recipients, from which source."""

    programme: str
    announced_usd: float
    amount_cents: int
    recipients: int
    recipient_kind: str  # "users" or "institutions"
    source: str
    notes: tuple[str, ...] = ()

    @property
    def announced_cents(self) -> int:
        return budget_to_cents(self.announced_usd)

    @property
    def difference_cents(self) -> int:
        """Amount minus announced: negative when the project pays less than announced."""
        return self.amount_cents - self.announced_cents

    def to_dict(self) -> dict[str, Any]:
        return {
            "programme": self.programme,
            "announced_usd": self.announced_usd,
            "amount_cents": self.amount_cents,
            "amount_usd": cents_to_usd(self.amount_cents),
            "difference_cents": self.difference_cents,
            "recipients": self.recipients,
            "recipient_kind": self.recipient_kind,
            "source": self.source,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Overlap:
    """Recipients of two programmes at once; ``users`` is None when they cannot be linked."""

    first: str
    second: str
    users: int | None
    linkable: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "programmes": [self.first, self.second],
            "users": self.users,
            "linkable": self.linkable,
            "note": self.note,
        }


@dataclass(frozen=True)
class ProgrammeSummary:
    """The three programmes side by side, their overlaps and consistency checks."""

    data_dir: str
    programmes: tuple[ProgrammeLine, ...]
    overlaps: tuple[Overlap, ...]
    users_reached: int  # distinct users with a voucher or computed depeg compensation
    voucher_depeg_policy: str
    depeg_paid_cents: int  # users.depeg_comp_usd, summed
    depeg_paid_users: int
    institutional: dict[str, int]
    checks: tuple[tuple[str, bool, str], ...]

    @property
    def total_cents(self) -> int:
        return sum(p.amount_cents for p in self.programmes)

    @property
    def announced_total_usd(self) -> float:
        return math.fsum(p.announced_usd for p in self.programmes)

    @property
    def difference_cents(self) -> int:
        return self.total_cents - budget_to_cents(self.announced_total_usd)

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def line(self, programme: str) -> ProgrammeLine:
        return next(p for p in self.programmes if p.programme == programme)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "programmes": [p.to_dict() for p in self.programmes],
            "total_cents": self.total_cents,
            "total_usd": cents_to_usd(self.total_cents),
            "announced_total_usd": self.announced_total_usd,
            "difference_cents": self.difference_cents,
            "users_reached": self.users_reached,
            "voucher_depeg_policy": self.voucher_depeg_policy,
            "depeg_paid_cents": self.depeg_paid_cents,
            "depeg_paid_users": self.depeg_paid_users,
            "overlaps": [o.to_dict() for o in self.overlaps],
            "institutional": dict(self.institutional),
            "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in self.checks],
            "ok": self.ok,
        }

    def lines(self) -> list[str]:
        """A plain-text table of the programmes, then overlaps and checks."""

        head = f"{'programme':<10}{'announced USD':>18}{'amount USD':>18}{'difference USD':>19}  recipients"
        out = [head, "-" * len(head)]
        for p in self.programmes:
            out.append(
                f"{p.programme:<10}{format_cents(p.announced_cents):>18}{format_cents(p.amount_cents):>18}"
                f"{format_cents(p.difference_cents):>19}  {p.recipients:,} {p.recipient_kind}"
            )
        out.append("-" * len(head))
        out.append(
            f"{'total':<10}{format_cents(budget_to_cents(self.announced_total_usd)):>18}"
            f"{format_cents(self.total_cents):>18}{format_cents(self.difference_cents):>19}  "
            f"{self.users_reached:,} users reached by vouchers or depeg"
        )
        out.append("")
        for p in self.programmes:
            out.append(f"{p.programme}: {p.source}")
            out += [f"  {n}" for n in p.notes]
        out.append(
            f"depeg paid per users table: {format_cents(self.depeg_paid_cents)} USD to "
            f"{self.depeg_paid_users:,} users; voucher depeg policy: {self.voucher_depeg_policy}"
        )
        out.append("")
        out.append("overlaps:")
        for o in self.overlaps:
            shown = f"{o.users:,} users" if o.users is not None else "not linkable"
            out.append(f"  {o.first} & {o.second}: {shown} ({o.note})")
        inst = ", ".join(f"{k} {v:,}" for k, v in self.institutional.items())
        out.append(f"institutional users (is_institutional) among recipients: {inst}")
        out.append("")
        for name, passed, detail in self.checks:
            out.append(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
        return out


# ----------------------------------------------------------------------------- sources


def default_scenario_path(file_name: str) -> Path:
    """A scenario file shipped in the project's ``scenarios/`` folder."""
    path = Path(__file__).resolve().parent.parent / "scenarios" / file_name
    if not path.is_file():
        raise InputError(
            f"default scenario {path} not found (the scenarios/ folder ships with the project "
            f"source, not with an installed package).",
            hint="pass the scenario file explicitly, or a run directory.",
        )
    return path


@dataclass(frozen=True)
class _Paid:
    user_or_institution: np.ndarray
    cents: np.ndarray
    source: str
    notes: tuple[str, ...]
    checks: tuple[tuple[str, bool, str], ...]


def _check_same_data(manifest: dict[str, Any], data_hashes: dict[str, str], run: Path) -> None:
    """Refuse a voucher run made on other data: its user ids would not match the others'."""
    recorded = manifest.get("inputs") or {}
    for stem in (N.USERS_FILE, N.EVENTS_FILE):
        want = (recorded.get(stem) or {}).get("sha256")
        if want and stem in data_hashes and want != data_hashes[stem]:
            raise InputError(
                f"voucher run {run} was computed on other data: its manifest's inputs.{stem}.sha256 "
                f"{want[:12]}... differs from {data_hashes[stem][:12]}... of the data directory; "
                f"overlaps between programmes would be meaningless.",
                hint="pass --data with the data directory of that run (see its manifest.json).",
            )


def _vouchers_from_run(run: Path, data_hashes: dict[str, str]) -> tuple[_Paid, str]:
    # the same verification as audit, explain, report and sensitivity: a damaged or edited run
    # directory (files changed after their hashes were written) is refused, not summed
    loaded = load_run(run)
    man, alloc = loaded.manifest, loaded.allocations
    _check_same_data(man, data_hashes, run)
    cents = alloc[N.VOUCHER_CENTS].fill_null(0).to_numpy().astype(np.int64)
    users = alloc[N.USER_ID].to_numpy()
    paid = int(cents.sum())
    stated = (man.get("money") or {}).get("paid_cents")
    scenario = man.get("scenario") or {}
    policy = str((scenario.get("eligibility") or {}).get("depeg_policy", "unknown"))
    checks = (
        (
            "voucher total = manifest",
            stated == paid,
            f"sum of voucher_cents {paid:,} vs manifest money.paid_cents {stated!r}",
        ),
        (
            "voucher users unique",
            len(np.unique(users)) == users.size,
            f"{users.size:,} rows in allocations.parquet",
        ),
    )
    source = f"run directory {run} (scenario {scenario.get('name', '?')!r})"
    return _Paid(users, cents, source, (), checks), policy


def _vouchers_computed(
    session: Any, scenario_path: Path | None, scenario: Any, progress: Progress
) -> tuple[_Paid, str]:
    if scenario is None:
        scenario_path = scenario_path or default_scenario_path(VOUCHER_SCENARIO_FILE)
        scenario = load_scenario(scenario_path)
    progress(f"running voucher scenario {scenario.name}")
    run = allocate(session, scenario, with_payouts=False)
    users = run.allocations[N.USER_ID].to_numpy()
    cents = np.asarray(run.cents, dtype=np.int64)
    where = f" ({scenario_path})" if scenario_path else ""
    source = f"computed: voucher scenario {scenario.name!r}{where} on the data"
    checks = (
        (
            "voucher total within budget",
            int(cents.sum()) <= run.budget_cents,
            f"paid {int(cents.sum()):,} of {run.budget_cents:,} cents",
        ),
    )
    return _Paid(users, cents, source, (), checks), scenario.eligibility.depeg_policy


def _loans_from_run(run: Path) -> _Paid:
    man = read_manifest(run / MANIFEST)
    if man.get("kind") != MANIFEST_KIND:
        raise InputError(
            f"{run} is not a loan run directory: {MANIFEST} has kind "
            f"{man.get('kind')!r}, not {MANIFEST_KIND!r}."
        )
    sheet = read_parquet_file(run / TERM_SHEET_PARQUET)
    missing = [c for c in (INSTITUTION_ID, AMOUNT_CENTS) if c not in sheet.columns]
    if missing:
        raise InputError(f"{run / TERM_SHEET_PARQUET}: missing column(s) {', '.join(missing)}.")
    cents = sheet[AMOUNT_CENTS].fill_null(0).to_numpy().astype(np.int64)
    lent = int(cents.sum())
    stated = (man.get("totals") or {}).get("lent_cents")
    # A run whose solver stopped at a limit is not an allocation to add up (older versions of
    # `allocator loans allocate` wrote such runs).
    status_ok, status_detail = run_solver_status(man)
    checks = (
        (
            "loan total = manifest",
            stated == lent,
            f"sum of amount_cents {lent:,} vs manifest totals.lent_cents {stated!r}",
        ),
        ("loan run solved to optimality", status_ok, status_detail),
    )
    name = (man.get("scenario") or {}).get("name", "?")
    apps = (man.get("applications") or {}).get("source", "?")
    source = f"run directory {run} (scenario {name!r}, applications {apps})"
    return _Paid(
        sheet[INSTITUTION_ID].to_numpy(),
        cents,
        source,
        ("lent, not given: repaid with interest",),
        checks,
    )


def _loans_computed(
    scenario_path: Path | None, scenario: Any, applications: pl.DataFrame | None, progress: Progress
) -> _Paid:
    if scenario is None:
        scenario_path = scenario_path or default_scenario_path(LOAN_SCENARIO_FILE)
        scenario = load_loan_scenario(scenario_path)
    if applications is None:
        applications = generate_applications()
        apps = f"synthetic applications (n={applications.height}, default seed)"
    else:
        apps = f"{applications.height} given applications"
    progress(f"solving loan scenario {scenario.name} for {applications.height} applications")
    result = allocate_loans(applications, scenario, source=apps)
    sheet = result.term_sheet
    cents = sheet[AMOUNT_CENTS].to_numpy().astype(np.int64)
    where = f" ({scenario_path})" if scenario_path else ""
    source = f"computed: loan scenario {scenario.name!r}{where}, {apps}"
    checks = (
        (
            "loan total within fund",
            int(cents.sum()) <= result.problem.fund_cents,
            f"lent {int(cents.sum()):,} of {result.problem.fund_cents:,} cents",
        ),
    )
    return _Paid(
        sheet[INSTITUTION_ID].to_numpy(),
        cents,
        source,
        ("lent, not given: repaid with interest",),
        checks,
    )


# ----------------------------------------------------------------------------- summary


def summarise_programmes(
    data_dir: str | Path,
    *,
    voucher_run: str | Path | None = None,
    loans_run: str | Path | None = None,
    voucher_scenario: Scenario | str | Path | None = None,
    loan_scenario: LoanScenario | str | Path | None = None,
    applications: pl.DataFrame | None = None,
    depeg_rules: DepegRules | None = None,
    progress: Progress = _quiet,
) -> ProgrammeSummary:
    """Vouchers, depeg compensation and loans side by side, with overlaps and checks.

    Parameters
    ----------
    data_dir
        The data directory (liquidations, prices, snapshot, users).
    voucher_run, loans_run
        Run directories to read; when omitted the programme is computed.
    voucher_scenario, loan_scenario
        For the computed programmes: a scenario object or a TOML path (defaults:
        ``scenarios/baseline.toml`` and ``scenarios/loans_default.toml``).
    applications
        Loan applications for the computed loans (default: the synthetic set).
    depeg_rules
        :class:`allocator.settings.depeg.DepegRules` (default rules when omitted).

    Raises
    ------
    InputError
        A run directory that is unreadable, of the wrong kind, or (vouchers) made on other data.
    """
    data_dir = Path(data_dir)
    progress(f"loading and validating {data_dir}")
    inputs = load_inputs(data_dir, validate=True)
    data_hashes = {stem: sha256_file(inputs.paths[stem]) for stem in (N.USERS_FILE, N.EVENTS_FILE)}

    if voucher_run is not None:
        vouchers, policy = _vouchers_from_run(Path(voucher_run), data_hashes)
    else:
        path, obj = (
            (Path(voucher_scenario), None)
            if isinstance(voucher_scenario, (str, Path))
            else (None, voucher_scenario)
        )
        session = DataSession(data_dir=data_dir, inputs=inputs)
        vouchers, policy = _vouchers_computed(session, path, obj, progress)

    progress("computing depeg compensation")
    source = {k: str(v) for k, v in inputs.paths.items()}
    depeg = compute_depeg(inputs.events, inputs.prices, inputs.users, depeg_rules, source=source)
    depeg_users = depeg.users.filter(pl.col(COMPENSATION_CENTS) > 0)
    rec = depeg.reconciliation

    if loans_run is not None:
        loans = _loans_from_run(Path(loans_run))
    else:
        loan_path, loan_obj = (
            (Path(loan_scenario), None)
            if isinstance(loan_scenario, (str, Path))
            else (None, loan_scenario)
        )
        loans = _loans_computed(loan_path, loan_obj, applications, progress)

    v_ids = np.unique(vouchers.user_or_institution[vouchers.cents > 0])
    d_ids = np.unique(depeg_users[N.USER_ID].to_numpy())
    paid = (
        inputs.users.filter(pl.col(N.DEPEG_COMP_USD) > 0)
        .select(N.USER_ID, N.IS_INSTITUTIONAL)
        .collect()
    )
    p_ids = np.unique(paid[N.USER_ID].to_numpy())
    both_computed = int(np.intersect1d(v_ids, d_ids, assume_unique=True).size)
    both_paid = int(np.intersect1d(v_ids, p_ids, assume_unique=True).size)
    lines = (
        ProgrammeLine(
            VOUCHERS,
            ANNOUNCED_USD[VOUCHERS],
            int(vouchers.cents.sum()),
            int(v_ids.size),
            "users",
            vouchers.source,
            (f"depeg policy {policy!r}",),
        ),
        ProgrammeLine(
            DEPEG,
            ANNOUNCED_USD[DEPEG],
            rec.users_cents,
            int(d_ids.size),
            "users",
            "computed: allocator.depeg rules on the data",
            (
                (
                    f"the users table says {format_cents(rec.paid_cents)} USD was paid to "
                    f"{rec.paid_users:,} users; {rec.users_by_status['match']:,} users match the "
                    f"rule to the cent"
                ),
            ),
        ),
        ProgrammeLine(
            LOANS,
            ANNOUNCED_USD[LOANS],
            int(loans.cents.sum()),
            int((loans.cents > 0).sum()),
            "institutions",
            loans.source,
            loans.notes,
        ),
    )
    not_linkable = (
        "loan applicants are institutions (institution_id); the data has no "
        "institution -> user_id mapping"
    )
    overlaps = (
        Overlap(
            VOUCHERS,
            DEPEG,
            both_computed,
            True,
            "voucher recipients owed depeg compensation by the rule",
        ),
        Overlap(
            VOUCHERS,
            "depeg (paid)",
            both_paid,
            True,
            "voucher recipients with depeg_comp_usd > 0 in the users table"
            + (": must be 0 under the exclude policy" if policy == "exclude" else ""),
        ),
        Overlap(LOANS, VOUCHERS, None, False, not_linkable),
        Overlap(LOANS, DEPEG, None, False, not_linkable),
    )
    inst = (
        inputs.users.filter(pl.col(N.IS_INSTITUTIONAL))
        .select(N.USER_ID)
        .collect()[N.USER_ID]
        .to_numpy()
    )
    institutional = {
        VOUCHERS: int(np.isin(v_ids, inst).sum()),
        DEPEG: int(np.isin(d_ids, inst).sum()),
    }
    checks = list(vouchers.checks) + list(loans.checks)
    checks.append(
        (
            "depeg reconciles",
            not rec.failures(),
            "positions = compensated + zero, cents over positions = over users"
            if not rec.failures()
            else "; ".join(rec.failures()),
        )
    )
    if policy == "exclude":
        checks.append(
            (
                "exclude policy respected",
                both_paid == 0,
                f"{both_paid:,} voucher recipient(s) already paid depeg compensation",
            )
        )
    return ProgrammeSummary(
        data_dir=str(data_dir),
        programmes=lines,
        overlaps=overlaps,
        users_reached=int(np.union1d(v_ids, d_ids).size),
        voucher_depeg_policy=policy,
        depeg_paid_cents=rec.paid_cents,
        depeg_paid_users=rec.paid_users,
        institutional=institutional,
        checks=tuple(checks),
    )


def summary_json(summary: ProgrammeSummary) -> str:
    """Strict JSON text of a summary (sorted keys, indent 2)."""
    return json.dumps(summary.to_dict(), sort_keys=True, indent=2, allow_nan=False)
