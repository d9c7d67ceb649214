"""The loan fund: applications data, scenario, model, term sheet, run directory, check, CLI.

Every property is recomputed here from the outputs and the raw applications (limits, weights,
expected loss, optimality conditions) rather than compared with numbers copied from a run.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import allocator.cli.cmd_loans  # noqa: F401  (registers `allocator loans`)
from allocator.cli.app import app
from allocator.errors import InfeasibleError, InputError, ScenarioError, SolverFailedError
from allocator.kernel.native import native_stdout_to_stderr
from allocator.loans import applications as D
from allocator.loans.allocate import LoanResult, allocate_loans
from allocator.loans.checks import check_loans, run_solver_status
from allocator.loans.problem import BINDING_STATES, build_loan_problem
from allocator.loans.run import applications_sha256, write_loan_run
from allocator.settings import loans as LS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = ROOT / "scenarios" / "loans_default.toml"


# --- helpers: independent recomputation from raw applications -------------------------------


def scenario(**kw) -> LS.LoanScenario:
    """The default scenario with top-level or section overrides (``limits=dict(...)``)."""
    base = LS.load_loan_scenario(DEFAULT_TOML)
    parts = {}
    for section in ("weights", "limits", "risk", "pricing", "solver"):
        if section in kw:
            parts[section] = type(getattr(base, section))(
                **{
                    **{
                        f: getattr(getattr(base, section), f)
                        for f in getattr(base, section).__dataclass_fields__
                    },
                    **kw.pop(section),
                }
            )
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    return LS.LoanScenario(**{**fields, **parts, **kw})


def limits_usd(apps: pl.DataFrame, scn: LS.LoanScenario) -> dict[str, np.ndarray]:
    apps = apps.sort("institution_id")
    return {
        "requested": apps["requested_usd"].to_numpy(),
        "collateral": scn.limits.advance_rate
        * (1 - apps["collateral_haircut"].to_numpy())
        * apps["collateral_usd"].to_numpy(),
        "concentration": np.full(apps.height, scn.limits.concentration_cap * scn.fund_usd),
    }


def weights(apps: pl.DataFrame, scn: LS.LoanScenario) -> np.ndarray:
    apps = apps.sort("institution_id")
    w = (
        np.maximum(apps["crash_loss_usd"].to_numpy(), scn.weights.loss_floor_usd)
        ** scn.weights.loss_exponent
        * np.maximum(apps["pre_crash_volume_usd"].to_numpy(), scn.weights.volume_floor_usd)
        ** scn.weights.volume_exponent
        * np.exp(scn.weights.vip_coefficient * apps["vip_tier"].to_numpy())
    )
    return w / w.mean()


def pd_of(apps: pl.DataFrame) -> np.ndarray:
    return apps.sort("institution_id")["default_probability"].to_numpy()


def objective(amount: np.ndarray, w: np.ndarray, alpha: float, shift: float) -> float:
    y = amount + shift
    u = np.log(y) if alpha == 1 else (y if alpha == 0 else y ** (1 - alpha) / (1 - alpha))
    return math.fsum((w * u).tolist())


def assert_feasible(
    res: LoanResult | tuple[pl.DataFrame, dict], apps: pl.DataFrame, scn: LS.LoanScenario
) -> np.ndarray:
    """Every limit of every loan, the fund, the budget and the minimum ticket, from raw data;
    ``res`` is a result or a (term sheet, manifest totals) pair read from a run directory."""
    sheet, totals = (res.term_sheet, res.totals) if isinstance(res, LoanResult) else res
    assert sheet["institution_id"].to_list() == sorted(apps["institution_id"].to_list())
    cents = sheet["amount_cents"].to_numpy()
    assert sheet.schema["amount_cents"] == pl.Int64
    assert (cents >= 0).all()
    assert np.array_equal(sheet["amount_usd"].to_numpy(), cents / 100)
    amount = cents / 100
    for name, lim in limits_usd(apps, scn).items():
        assert (amount <= lim + 1e-9 * np.maximum(lim, 1)).all(), name
    assert int(cents.sum()) <= round(scn.fund_usd * 100)
    el = math.fsum((pd_of(apps) * scn.risk.lgd * amount).tolist())
    assert el <= scn.risk.el_budget_usd + 0.005
    T = scn.limits.min_ticket_usd
    assert ((amount == 0) | (amount >= T)).all()
    assert totals["lent_cents"] == int(cents.sum())
    return amount


def small(n: int = 40, seed: int = 7) -> pl.DataFrame:
    return D.generate_applications(n, seed)


def scarce(apps: pl.DataFrame, **kw) -> LS.LoanScenario:
    """A scenario where the fund binds: a third of the requests; the budget is set by ``el``."""
    total = float(apps["requested_usd"].sum())
    el = kw.pop("el", 0.05)
    return scenario(fund_usd=total / 3, risk=dict(el_budget_usd=el * total / 3), **kw)


def toml_text(**overrides: object) -> str:
    """The default scenario file with ``key = value`` lines replaced (first occurrence)."""
    text = DEFAULT_TOML.read_text()
    for key, value in overrides.items():
        text, k = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        assert k == 1, key
    return text


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


# --- applications data ------------------------------------------------------------------------


def test_generated_applications_are_deterministic_valid_and_realistic():
    a, b = D.generate_applications(), D.generate_applications()
    assert a.equals(b)
    assert not a.equals(D.generate_applications(seed=1))
    assert a.schema == pl.Schema(D.SCHEMA)
    assert D.validate_applications(a).equals(a)
    req = a["requested_usd"]
    assert req.min() >= 100_000 and req.max() <= 15_000_000
    assert req.sum() > 2 * 100_000_000  # the USD 100M fund binds
    assert req.max() > 20 * req.median()  # heavy tail
    by_tier = (
        a.group_by("credit_tier").agg(pl.col("default_probability").mean()).sort("credit_tier")
    )
    assert by_tier["credit_tier"].to_list() == ["A", "B", "C", "D"]
    assert np.all(np.diff(by_tier["default_probability"].to_numpy()) > 0)
    little = (a["collateral_usd"] < 0.3 * a["requested_usd"]).mean()
    assert 0.05 < little < 0.3
    assert set(a["vip_tier"].unique().to_list()) <= set(range(10))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_applications_round_trip(tmp_path, suffix):
    df = small(25)
    path = D.write_applications(df, tmp_path / f"apps{suffix}")
    assert D.load_applications(path).equals(df)


def _write_csv(tmp_path: Path, df: pl.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    df.write_csv(path)
    return path


BAD_CASES = {
    "missing column": (lambda df: df.drop("collateral_usd"), "collateral_usd"),
    "unknown column": (
        lambda df: df.with_columns(pl.lit(1).alias("colateral_usd")),
        "colateral_usd",
    ),
    "no risk column": (lambda df: df.drop("credit_tier", "default_probability"), "credit_tier"),
    "null": (
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(None)
            .otherwise(pl.col("crash_loss_usd"))
            .alias("crash_loss_usd")
        ),
        "crash_loss_usd",
    ),
    "haircut 1": (
        lambda df: df.with_columns(pl.lit(1.0).alias("collateral_haircut")),
        "collateral_haircut",
    ),
    "negative collateral": (
        lambda df: df.with_columns(-pl.col("collateral_usd")),
        "collateral_usd",
    ),
    "zero request": (
        lambda df: df.with_columns(pl.lit(0.0).alias("requested_usd")),
        "requested_usd",
    ),
    "vip 10": (lambda df: df.with_columns(pl.lit(10).alias("vip_tier")), "vip_tier"),
    "pd above 1": (
        lambda df: df.with_columns(pl.lit(1.5).alias("default_probability")),
        "default_probability",
    ),
    "duplicate id": (
        lambda df: df.with_columns(pl.lit("INST-0001").alias("institution_id")),
        "institution_id",
    ),
    "wrong type": (
        lambda df: df.with_columns(pl.col("requested_usd").cast(pl.String) + "k"),
        "requested_usd",
    ),
    "fractional vip": (lambda df: df.with_columns(pl.col("vip_tier") + 0.5), "vip_tier"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_application_files_name_file_column_and_row(tmp_path, case):
    make, column = BAD_CASES[case]
    path = _write_csv(tmp_path, make(small(12)))
    with pytest.raises(InputError) as info:
        D.load_applications(path)
    msg = str(info.value)
    assert str(path) in msg and column in msg and "row" in msg, msg


def test_bad_parquet_types_nan_empty_and_paths(tmp_path):
    df = small(10)
    p = tmp_path / "t.parquet"
    df.with_columns(pl.col("vip_tier").cast(pl.String)).write_parquet(p)
    with pytest.raises(InputError, match="vip_tier"):
        D.load_applications(p)
    df.with_columns(pl.lit(float("nan")).alias("crash_loss_usd")).write_parquet(p)
    with pytest.raises(InputError, match="crash_loss_usd.*finite"):
        D.load_applications(p)
    df.head(0).write_parquet(p)
    with pytest.raises(InputError, match="no rows"):
        D.load_applications(p)
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(InputError, match="e.csv"):
        D.load_applications(tmp_path / "e.csv")
    with pytest.raises(InputError, match="does not exist"):
        D.load_applications(tmp_path / "nope.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match=r"\.parquet or \.csv"):
        D.load_applications(tmp_path / "x.json")


@pytest.mark.parametrize(
    "column", ["requested_usd", "collateral_usd", "pre_crash_volume_usd", "crash_loss_usd"]
)
@pytest.mark.parametrize("value", [1e300, 1.0000001e13])
def test_amounts_beyond_the_cents_arithmetic_are_refused(tmp_path, column, value):
    # 1e300 used to overflow the int64 cents silently (a loan of 0 labelled "collateral").
    df = small(12).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(value).otherwise(pl.col(column)).alias(column)
    )
    path = _write_csv(tmp_path, df)
    with pytest.raises(InputError) as info:
        D.load_applications(path)
    msg = str(info.value)
    assert str(path) in msg and repr(column) in msg and "row 5" in msg and "1e13" in msg, msg
    res = cli(
        "loans", "allocate", "-s", str(DEFAULT_TOML), "-a", str(path), "--out", str(tmp_path / "r")
    )
    assert res.exit_code == 2 and column in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_amounts_at_the_bound_give_exact_loans_without_warnings(tmp_path):
    import warnings

    # Every amount at USD 1e13 (one row, then all rows): limits in cents are exact, nobody
    # is wrongly held by collateral, the run passes its own check, and numpy warns of nothing.
    apps = small(12)
    one = apps.with_columns(
        pl.when(pl.int_range(pl.len()) == 4)
        .then(1e13)
        .otherwise(pl.col("collateral_usd"))
        .alias("collateral_usd")
    )
    every = apps.with_columns(
        *[
            pl.lit(1e13).alias(c)
            for c in ("requested_usd", "collateral_usd", "pre_crash_volume_usd", "crash_loss_usd")
        ]
    )
    scn = scenario(fund_usd=1e13, risk=dict(el_budget_usd=1e13), limits=dict(advance_rate=10.0))
    for k, (table, s) in enumerate([(one, scenario()), (every, scn)]):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            table = D.validate_applications(table)
            res = allocate_loans(table, s)
            run = write_loan_run(res, tmp_path / f"r{k}", applications=table, source="test")
            report = check_loans(run)
        assert report.ok, report.failures
        amount = assert_feasible(res, table, s)
        sheet = res.term_sheet
        big = sheet["collateral_limit_usd"].to_numpy() >= 1e12
        assert big.any() and (amount[big] > 0).all()
        assert "collateral" not in set(sheet.filter(pl.Series(big))["binding"])
    # The limits (USD 1e12 each) exceed the USD 1e13 fund: it is lent in full, to a dollar.
    assert 10**15 - 100 <= res.totals["lent_cents"] <= 10**15 == res.problem.fund_cents


def test_tier_or_probability_alone_is_completed_from_the_tier_table(tmp_path):
    apps = small(30)
    scn = scarce(apps)
    only_tier = apps.drop("default_probability")
    P = build_loan_problem(only_tier, scn)
    table = {t.name: t.pd for t in scn.pricing.tiers}
    assert np.array_equal(P.pd, [table[t] for t in only_tier.sort("institution_id")["credit_tier"]])
    only_pd = apps.drop("credit_tier")
    P = build_loan_problem(only_pd, scn)
    edges = [(t.name, t.max_pd) for t in scn.pricing.tiers]
    expect = [next(n for n, e in edges if p <= e) for p in pd_of(apps)]
    assert list(P.tier) == expect
    with pytest.raises(InputError, match="credit_tier.*'Z'"):
        build_loan_problem(apps.with_columns(pl.lit("Z").alias("credit_tier")), scn)


def _alternate_risk_fields(apps: pl.DataFrame) -> pl.DataFrame:
    """Even rows give only a tier, odd rows only a default probability."""
    odd = pl.int_range(pl.len()) % 2 == 1
    return apps.with_columns(
        pl.when(odd).then(None).otherwise(pl.col("credit_tier")).alias("credit_tier"),
        pl.when(odd)
        .then(pl.col("default_probability"))
        .otherwise(None)
        .alias("default_probability"),
    )


def test_each_row_may_give_a_tier_or_a_probability(tmp_path):
    apps = _alternate_risk_fields(small(30))
    # One row gives both, and they disagree: both are used as given.
    apps = apps.with_columns(
        pl.when(pl.col("institution_id") == "INST-0001")
        .then(pl.lit("D"))
        .otherwise(pl.col("credit_tier"))
        .alias("credit_tier"),
        pl.when(pl.col("institution_id") == "INST-0001")
        .then(0.001)
        .otherwise(pl.col("default_probability"))
        .alias("default_probability"),
    )
    path = tmp_path / "mixed.csv"
    apps.write_csv(path)
    loaded = D.load_applications(path)
    assert loaded.equals(apps)  # blank fields stay blank: nothing is filled in at load time
    scn = scarce(apps)
    P = build_loan_problem(loaded, scn)
    tiers = scn.pricing.tiers
    for k, row in enumerate(apps.sort("institution_id").iter_rows(named=True)):
        tier, pd_ = row["credit_tier"], row["default_probability"]
        assert P.tier[k] == (
            tier if tier is not None else next(t.name for t in tiers if pd_ <= t.max_pd)
        )
        assert P.pd[k] == (pd_ if pd_ is not None else next(t.pd for t in tiers if t.name == tier))
    assert (P.tier[0], P.pd[0]) == ("D", 0.001)
    run = tmp_path / "run"
    res = cli(
        "loans", "allocate", "-s", str(DEFAULT_TOML), "-a", str(path), "--out", str(run), "--json"
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["funded"] > 0
    assert cli("loans", "check", str(run)).exit_code == 0


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        # Row 4 (file order, header not counted) gives neither; a blank-looking tier is blank.
        (
            lambda df: df.with_columns(
                pl.when(pl.int_range(pl.len()) == 3)
                .then(None)
                .otherwise(pl.col("default_probability"))
                .alias("default_probability"),
                pl.when(pl.int_range(pl.len()) == 3)
                .then(pl.lit("  "))
                .otherwise(pl.col("credit_tier"))
                .alias("credit_tier"),
            ),
            ["credit_tier", "default_probability", "row 4", "INST-0004"],
        ),
        # Only the tier column, with a blank in row 2: nothing to fall back on.
        (
            lambda df: df.drop("default_probability").with_columns(
                pl.when(pl.int_range(pl.len()) == 1)
                .then(None)
                .otherwise(pl.col("credit_tier"))
                .alias("credit_tier")
            ),
            ["column 'credit_tier' has 1 missing", "no 'default_probability' column", "row 2"],
        ),
    ],
)
def test_a_row_without_tier_and_probability_is_named(tmp_path, edit, expect):
    path = _write_csv(tmp_path, edit(small(12)))
    with pytest.raises(InputError) as info:
        D.load_applications(path)
    msg = str(info.value)
    assert str(path) in msg and all(e in msg for e in expect), msg
    res = cli(
        "loans", "allocate", "-s", str(DEFAULT_TOML), "-a", str(path), "--out", str(tmp_path / "r")
    )
    assert res.exit_code == 2 and "row" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


# --- scenario ---------------------------------------------------------------------------------


def test_default_scenario_file_writes_out_every_knob():
    raw = tomllib.loads(DEFAULT_TOML.read_text())
    scn = LS.load_loan_scenario(DEFAULT_TOML)
    full = LS.loan_scenario_to_dict(scn)

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    assert keys(raw) == keys(full)
    assert LS.loan_scenario_from_dict(full) == scn
    assert DEFAULT_TOML.read_text().startswith("#")
    # The file's values are the dataclass defaults: one documented configuration.
    assert scn == LS.LoanScenario(name=scn.name, description=scn.description)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (toml_text(fund_usd="-5.0"), "fund_usd"),
        (toml_text(alpha="3.5"), "alpha"),
        (toml_text(alpha="2.5"), "alpha"),  # above the mixed-integer limit with a minimum ticket
        (toml_text(lgd="1.5"), "risk.lgd"),
        (toml_text(concentration_cap="0.0"), "limits.concentration_cap"),
        (toml_text(min_ticket_usd="-1.0"), "limits.min_ticket_usd"),
        (toml_text(rate_ceiling="0.01"), "pricing.rate_ceiling"),
        (toml_text(pwl_breakpoints="1"), "solver.pwl_breakpoints"),
        (toml_text(alpha='"one"'), "alpha"),
        (toml_text(pwl_breakpoints="24.5"), "solver.pwl_breakpoints"),
        (toml_text(convex_solver='"MOSEK"'), "solver.convex_solver"),
        (DEFAULT_TOML.read_text() + "\n[extra]\nx = 1\n", "extra"),
        (DEFAULT_TOML.read_text().replace("lgd = 0.45", "lgd = 0.45\nlgdd = 1"), "risk.lgdd"),
        (DEFAULT_TOML.read_text().replace("max_pd = 0.03", "max_pd = 0.005"), "pricing.tiers"),
        # Amounts beyond what integer cents hold (USD 1e13), and the advance rate's bound.
        (toml_text(fund_usd="1e300"), "fund_usd"),
        (toml_text(fund_usd="1.0000001e13"), "fund_usd"),
        (toml_text(el_budget_usd="1e14"), "risk.el_budget_usd"),
        (toml_text(min_ticket_usd="1e300"), "limits.min_ticket_usd"),
        (toml_text(shift_usd="1e300"), "shift_usd"),
        (toml_text(loss_floor_usd="1e300"), "weights.loss_floor_usd"),
        (toml_text(advance_rate="1e300"), "limits.advance_rate"),
    ],
)
def test_bad_scenario_keys_are_named(tmp_path, text, key):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        LS.load_loan_scenario(path)
    assert key in str(info.value) and str(path) in str(info.value)
    res = cli("loans", "allocate", "--scenario", str(path), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2 and key in res.output
    assert not (tmp_path / "run").exists()


def test_scenario_amounts_are_bounded_by_the_cents_arithmetic(tmp_path):
    # The message states the allowed range, not only the key; the bound itself is accepted.
    path = tmp_path / "s.toml"
    path.write_text(toml_text(fund_usd="1e300"))
    with pytest.raises(ScenarioError, match=r"fund_usd must be in \(0, 1e13\] USD"):
        LS.load_loan_scenario(path)
    path.write_text(toml_text(fund_usd="1e13", el_budget_usd="1e13"))
    assert LS.load_loan_scenario(path).fund_usd == LS.MAX_AMOUNT_USD == 1e13
    path.write_text(toml_text(advance_rate="10.5"))
    with pytest.raises(ScenarioError, match=r"limits.advance_rate must be in \(0, 10\]"):
        LS.load_loan_scenario(path)


def test_a_voucher_scenario_given_to_loans_is_named_as_such(tmp_path):
    from allocator.settings.models import Scenario

    voucher = {f.name for f in dataclasses.fields(Scenario)}
    loan = {f.name for f in dataclasses.fields(LS.LoanScenario)}
    assert LS.VOUCHER_SCENARIO_KEYS == voucher - loan and LS.LOAN_ONLY_KEYS == loan - voucher
    path = ROOT / "scenarios" / "baseline.toml"
    res = cli("loans", "allocate", "-s", str(path), "--out", str(tmp_path / "r"))
    assert (
        res.exit_code == 2
        and "voucher scenario" in res.output
        and "allocator allocate" in res.output
    )


# --- model: feasibility, optimality -----------------------------------------------------------


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 40),
    alpha=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    fund_share=st.floats(0.05, 1.5),
    el_share=st.floats(0.0005, 0.2),
    cap=st.floats(0.02, 1.0),
    advance=st.floats(0.3, 1.5),
    ticket=st.sampled_from([0.0, 50_000.0, 150_000.0]),
)
def test_every_loan_within_every_limit(seed, n, alpha, fund_share, el_share, cap, advance, ticket):
    apps = D.generate_applications(n, seed)
    total = float(apps["requested_usd"].sum())
    scn = scenario(
        alpha=alpha,
        fund_usd=fund_share * total,
        limits=dict(concentration_cap=cap, advance_rate=advance, min_ticket_usd=ticket),
        risk=dict(el_budget_usd=el_share * fund_share * total),
    )
    try:
        res = allocate_loans(apps, scn)
    except InfeasibleError:
        # Only when nobody can receive even the smallest loan, each on their own.
        lim = np.minimum.reduce(list(limits_usd(apps, scn).values()))
        smallest = max(ticket, 0.01)
        ok = (lim >= smallest) & (pd_of(apps) * scn.risk.lgd * smallest <= scn.risk.el_budget_usd)
        assert not ok.any() or smallest > scn.fund_usd
        return
    amount = assert_feasible(res, apps, scn)
    assert (
        res.objective["value"]
        <= res.objective["upper_bound"] + 1e-9 * abs(res.objective["upper_bound"]) + 1e-9
    )
    assert math.isclose(
        res.objective["value"],
        objective(amount, weights(apps, scn), alpha, scn.shift_usd),
        rel_tol=1e-9,
        abs_tol=1e-9,
    )
    lent = res.totals["lent_cents"] / 100
    if (
        lent < scn.fund_usd - 1
        and res.totals["expected_loss_usd"] < scn.risk.el_budget_usd - 1
        and alpha > 0
    ):
        # Neither shared constraint binds: utility is increasing, so every loan is at a limit;
        # a zero loan is explained by a limit, the minimum ticket, or a budget too small for
        # one ticket alone.
        sheet = res.term_sheet
        assert set(sheet.filter(pl.col("amount_cents") > 0)["binding"]) <= {
            "requested",
            "collateral",
            "concentration",
        }
        assert set(sheet.filter(pl.col("amount_cents") == 0)["binding"]) <= {
            "requested",
            "collateral",
            "concentration",
            "min_ticket_excluded",
            "el_budget",
        }


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("el", [0.05, 0.005])
def test_convex_loans_satisfy_the_optimality_conditions(alpha, el):
    apps = small(50, seed=11)
    scn = scarce(apps, alpha=alpha, el=el, limits=dict(min_ticket_usd=0.0))
    res = allocate_loans(apps, scn)
    amount = assert_feasible(res, apps, scn)
    m = res.multipliers
    lam, mu = m["fund_per_usd"], m["el_budget_per_usd"]
    assert lam >= 0 and mu >= 0 and (lam > 0 or mu > 0)
    w, c = weights(apps, scn), pd_of(apps) * scn.risk.lgd
    assert np.allclose(res.term_sheet["weight"].to_numpy(), w, rtol=1e-12, atol=0)
    upper = np.minimum.reduce(list(limits_usd(apps, scn).values()))
    # Stationarity: each loan is, to the cent, the one its prices imply.
    implied = np.clip((w / (lam + mu * c)) ** (1 / alpha) - scn.shift_usd, 0, upper)
    assert np.abs(amount - implied).max() <= 0.01 + 1e-9 * implied.max()
    # Complementary slackness: a priced constraint is used up (to the cents lost in rounding).
    n = apps.height
    if lam > 0:
        assert scn.fund_usd - amount.sum() <= 0.01 * n + 1e-6
    if mu > 0:
        assert (
            scn.risk.el_budget_usd - math.fsum((c * amount).tolist()) <= 0.01 * n * c.max() + 1e-6
        )
    # Perturbation: no budget-neutral transfer that keeps the expected loss within budget helps.
    f0 = objective(amount, w, alpha, scn.shift_usd)
    interior = np.flatnonzero((amount > 1000) & (amount < upper - 1000))
    assert interior.size >= 2
    rng = np.random.default_rng(0)
    for _ in range(200):
        i, j = rng.choice(interior, 2, replace=False)
        if c[j] > c[i] and mu > 0:
            i, j = j, i
        x = amount.copy()
        x[i] -= 500.0
        x[j] += 500.0
        assert objective(x, w, alpha, scn.shift_usd) <= f0 + 1e-9 * abs(f0)


def test_minimum_ticket_model_against_its_relaxation_and_a_heuristic():
    apps = small(60, seed=3)
    scn = scarce(apps, el=0.02, limits=dict(min_ticket_usd=120_000.0))
    res = allocate_loans(apps, scn)
    amount = assert_feasible(res, apps, scn)
    o = res.objective
    w = weights(apps, scn)
    value = objective(amount, w, scn.alpha, scn.shift_usd)
    relaxed = allocate_loans(apps, replace(scn, limits=replace(scn.limits, min_ticket_usd=0.0)))
    relax_value = objective(
        relaxed.term_sheet["amount_usd"].to_numpy(), w, scn.alpha, scn.shift_usd
    )
    # A relaxation is never worse than the mixed-integer optimum.
    assert value <= relax_value + 1e-9 and math.isclose(o["relaxation"], relax_value, rel_tol=1e-7)
    # The PWL cuts over-estimate: its optimum bounds the true one from above, within the bound.
    assert o["pwl_upper_bound"] >= value - 1e-7
    assert 0 <= o["pwl_gap"] <= o["pwl_error_bound"] + 1e-9
    assert o["milp_true"] <= value + 1e-7  # the polish only improves the MILP's own amounts
    # Dropping the relaxation's loans below the ticket gives a feasible answer: ours is no worse
    # than it, up to the reported optimality gap.
    heuristic = relaxed.term_sheet["amount_usd"].to_numpy().copy()
    heuristic[heuristic < scn.limits.min_ticket_usd] = 0.0
    assert value >= objective(heuristic, w, scn.alpha, scn.shift_usd) - o["optimality_gap"] - 1e-7
    assert o["optimality_gap"] <= 1e-3 * abs(value)
    # Loans at exactly the ticket, and exclusions, are labelled as such: synthetic requests
    # start at USD 100k, below this 120k ticket, so some are zero because of the request.
    sheet = res.term_sheet
    assert (sheet.filter(pl.col("binding") == "min_ticket")["amount_cents"] == 12_000_000).all()
    assert (sheet.filter(pl.col("binding") == "min_ticket_excluded")["amount_cents"] == 0).all()
    lim = limits_usd(apps, scn)
    small_request = np.flatnonzero(lim["requested"] < 120_000.0)
    assert small_request.size > 0
    for k in small_request:
        # Labelled by the request, unless the collateral limit is smaller still.
        label = "collateral" if lim["collateral"][k] < lim["requested"][k] else "requested"
        assert sheet["amount_cents"][int(k)] == 0 and sheet["binding"][int(k)] == label


@settings(max_examples=15)
@given(
    seed=st.integers(0, 1000),
    alpha=st.sampled_from([0.5, 1.0, 2.0]),
    f1=st.floats(0.05, 1.2),
    f2=st.floats(0.05, 1.2),
)
def test_more_fund_never_lowers_the_total_lent(seed, alpha, f1, f2):
    apps = D.generate_applications(30, seed)
    total = float(apps["requested_usd"].sum())
    lo, hi = sorted((f1, f2))
    # The per-borrower cap is held fixed in USD: as a share of the fund it would grow with the
    # fund, and with the expected-loss budget binding a larger cap can rightly lend less in
    # total (more to a few low-risk, high-weight borrowers).
    cap_usd = 0.1 * lo * total
    lent = []
    for share in (lo, hi):
        scn = scenario(
            alpha=alpha,
            fund_usd=share * total,
            limits=dict(min_ticket_usd=0.0, concentration_cap=cap_usd / (share * total)),
            risk=dict(el_budget_usd=0.01 * total),
        )
        lent.append(allocate_loans(apps, scn).totals["lent_cents"])
    # Rounding each loan down can lose up to a cent per applicant.
    assert lent[1] >= lent[0] - apps.height


def test_binding_labels_match_the_amounts():
    apps = small(60, seed=3)
    scn = scarce(apps, el=0.02, limits=dict(min_ticket_usd=120_000.0, concentration_cap=0.05))
    res = allocate_loans(apps, scn)
    amount = res.term_sheet["amount_usd"].to_numpy()
    lim = limits_usd(apps, scn)
    upper = np.minimum.reduce(list(lim.values()))
    T = scn.limits.min_ticket_usd
    for k, b in enumerate(res.term_sheet["binding"]):
        if b in lim:
            # The smallest limit, and the loan at it, or zero because it is below a ticket.
            assert lim[b][k] <= upper[k] + 1e-9
            assert math.isclose(amount[k], lim[b][k], abs_tol=1.0) or (
                amount[k] == 0 and lim[b][k] < T
            )
        elif b == "min_ticket_excluded":
            assert amount[k] == 0 and upper[k] >= T
        elif b == "min_ticket":
            assert amount[k] == T
        else:
            assert b in ("fund", "el_budget", "fund+el_budget", "interior")
            assert amount[k] == 0 or T < amount[k] < upper[k] - 1.0


# Hand-built applications: every field but the ones a case sets is the same for all rows.
BASE_ROW = dict(
    requested_usd=600_000.0,
    collateral_usd=1e7,
    collateral_haircut=0.0,
    credit_tier="A",
    default_probability=0.005,
    pre_crash_volume_usd=1e8,
    crash_loss_usd=1e6,
    vip_tier=0,
)


def table(*rows: dict) -> pl.DataFrame:
    return D.validate_applications(
        pl.DataFrame([{**BASE_ROW, "institution_id": f"I{k}", **r} for k, r in enumerate(rows)])
    )


def labels(apps: pl.DataFrame, scn: LS.LoanScenario) -> tuple[list[float], list[str], LoanResult]:
    res = allocate_loans(apps, scn)
    return res.term_sheet["amount_usd"].to_list(), res.term_sheet["binding"].to_list(), res


def test_binding_labels_limits_decide_even_below_the_ticket():
    # Plenty of fund and budget: every applicant is held by its own smallest limit, whether
    # that allows a loan (at it) or is below the USD 100k ticket (zero).
    apps = table(
        dict(collateral_usd=0.0),  # no collateral
        dict(collateral_usd=100_000.0, collateral_haircut=0.5),  # 50k after the haircut
        dict(requested_usd=60_000.0),  # asks for less than a ticket
        dict(requested_usd=80_000.0, collateral_usd=80_000.0),  # tie: the request comes first
        dict(requested_usd=200_000.0),
        dict(requested_usd=1e6, collateral_usd=300_000.0),
        dict(requested_usd=2e7, collateral_usd=5e7),  # above the 10% cap of USD 10M
    )
    amount, binding, res = labels(apps, scenario())
    assert amount == [0, 0, 0, 0, 200_000, 300_000, 10_000_000]
    assert binding == [
        "collateral",
        "collateral",
        "requested",
        "requested",
        "requested",
        "collateral",
        "concentration",
    ]
    assert res.multipliers["fund_per_usd"] == 0 and res.multipliers["el_budget_per_usd"] == 0


@pytest.mark.parametrize("ticket", [0.0, 100_000.0])
def test_binding_labels_linear_model_priced_out_by_the_fund(ticket):
    # alpha = 0: lend where the weight per dollar is highest. Weights 3:2:1, USD 1M for three
    # requests of 600k: the first is filled, the second takes the rest, the third gets nothing
    # because the fund's price (the second's weight) exceeds its weight - not for the ticket.
    apps = table(dict(crash_loss_usd=3e6), dict(crash_loss_usd=2e6), dict(crash_loss_usd=1e6))
    scn = scenario(
        alpha=0.0, fund_usd=1e6, limits=dict(concentration_cap=1.0, min_ticket_usd=ticket)
    )
    amount, binding, res = labels(apps, scn)
    assert amount == [600_000, 400_000, 0]
    assert binding == ["requested", "fund", "fund"]
    w = res.term_sheet["weight"].to_numpy()
    assert math.isclose(res.multipliers["fund_per_usd"], w[1], rel_tol=1e-9) and w[2] < w[1]


@pytest.mark.parametrize("ticket", [0.0, 100_000.0])
def test_binding_labels_linear_model_priced_out_by_the_budget(ticket):
    # Equal weights, expected-loss budget USD 8,100 and an ample fund: lend by weight per unit
    # of expected loss. Pd 0.5% is filled (EL 1,350), pd 5% takes the remaining 6,750 (300k);
    # pd 15% is priced out by the budget. For pd 90% a ticket alone (EL 40,500) exceeds the
    # budget; without a ticket it is priced out like the 15% one. Either way: the budget.
    apps = table(
        dict(default_probability=0.005),
        dict(credit_tier="C", default_probability=0.05),
        dict(credit_tier="D", default_probability=0.15),
        dict(credit_tier="D", default_probability=0.9),
    )
    scn = scenario(alpha=0.0, limits=dict(min_ticket_usd=ticket), risk=dict(el_budget_usd=8_100.0))
    amount, binding, res = labels(apps, scn)
    cents = res.term_sheet["amount_cents"].to_list()
    assert cents[0] == 60_000_000 and abs(cents[1] - 30_000_000) <= 1 and cents[2:] == [0, 0]
    assert binding == ["requested", "el_budget", "el_budget", "el_budget"]
    assert res.multipliers["fund_per_usd"] == 0 and res.multipliers["el_budget_per_usd"] > 0


def test_binding_labels_minimum_ticket_holds_up_or_excludes():
    # Proportional fairness, USD 2M, weights 1000 : 1000 : 50 : 1 (crash losses 10M, 10M,
    # 500k, none - floored at 10k). At the fund's price the third would take about 47.5k, so
    # it gets exactly the ticket; the fourth would take a few hundred dollars, and a ticket
    # for it costs the two large borrowers more utility than it gains: excluded.
    apps = table(*[dict(crash_loss_usd=v, requested_usd=5e6) for v in (1e7, 1e7, 5e5, 0.0)])
    scn = scenario(fund_usd=2e6, limits=dict(concentration_cap=1.0))
    amount, binding, res = labels(apps, scn)
    assert binding == ["fund", "fund", "min_ticket", "min_ticket_excluded"]
    cents = res.term_sheet["amount_cents"].to_list()
    assert cents[2:] == [10_000_000, 0] and all(abs(c - 95_000_000) <= 1 for c in cents[:2])
    lam, s = res.multipliers["fund_per_usd"], scn.shift_usd
    w = res.term_sheet["weight"].to_numpy()
    # What each would take at the fund's price without the ticket rule: below the ticket, but
    # positive, for both - so the ticket, not the price, decides them.
    desired = w / lam - s
    assert 0 < desired[3] < desired[2] < 100_000


def test_default_run_labels_follow_the_rule(default_run):
    sheet = pl.read_parquet(default_run / "term_sheet.parquet")
    man = json.loads((default_run / "manifest.json").read_text())
    scn = LS.loan_scenario_from_dict(man["scenario"])
    lim = limits_usd(D.generate_applications(), scn)
    upper = np.minimum.reduce(list(lim.values()))
    T = scn.limits.min_ticket_usd
    b = np.array(sheet["binding"].to_list())
    zero = sheet["amount_cents"].to_numpy() == 0
    below = upper < T
    # Everyone whose own limits cannot hold a ticket is labelled by that limit (most by
    # collateral), never as excluded by the ticket; the ticket excludes only the others.
    assert below.sum() > 50 and (b[below] == "collateral").sum() > 50
    for k in np.flatnonzero(below):
        assert zero[k] and lim[b[k]][k] == upper[k]
    assert set(b[zero & ~below]) <= {"min_ticket_excluded", "el_budget", "fund", "fund+el_budget"}
    assert man["totals"]["binding_counts"] == {s: int((b == s).sum()) for s in BINDING_STATES}


def test_settings_that_lend_nothing_are_explained_before_solving():
    apps = small(20)
    with pytest.raises(InfeasibleError, match="minimum ticket"):
        allocate_loans(apps, scenario(limits=dict(min_ticket_usd=16_000_000.0)))
    with pytest.raises(InfeasibleError, match="collateral"):
        allocate_loans(apps.with_columns(pl.lit(0.0).alias("collateral_usd")), scenario())
    with pytest.raises(InfeasibleError, match="expected-loss budget"):
        allocate_loans(apps, scenario(risk=dict(el_budget_usd=0.0)))
    # A zero budget still lends to applicants with no default risk, and only to them.
    safe = apps.with_columns(
        pl.when(pl.int_range(pl.len()) < 3)
        .then(0.0)
        .otherwise(pl.col("default_probability"))
        .alias("default_probability")
    )
    res = allocate_loans(
        safe, scenario(risk=dict(el_budget_usd=0.0), limits=dict(min_ticket_usd=0.0))
    )
    funded = res.term_sheet.filter(pl.col("amount_cents") > 0)
    assert funded.height > 0 and (funded["default_probability"] == 0).all()


def test_rates_follow_the_tier_schedule():
    apps = small(40)
    scn = scenario()
    res = allocate_loans(apps, scn)
    spread = {t.name: t.spread for t in scn.pricing.tiers}
    expect = [
        min(scn.pricing.base_rate + spread[t], scn.pricing.rate_ceiling)
        for t in res.term_sheet["credit_tier"]
    ]
    assert np.allclose(res.term_sheet["rate"].to_numpy(), expect, rtol=0, atol=1e-12)
    assert res.term_sheet["rate"].max() <= scn.pricing.rate_ceiling


# --- run directory, check, CLI ----------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`allocator loans allocate` on the default scenario and the built-in synthetic set."""
    out = tmp_path_factory.mktemp("loans") / "run"
    res = cli("loans", "allocate", "--scenario", str(DEFAULT_TOML), "--out", str(out))
    assert res.exit_code == 0, res.output
    return out


def test_default_run_is_feasible_from_its_files_alone(default_run):
    man = json.loads((default_run / "manifest.json").read_text())
    scn = LS.loan_scenario_from_dict(man["scenario"])
    apps = D.generate_applications()
    sheet = pl.read_parquet(default_run / "term_sheet.parquet")
    assert sheet.equals(
        pl.read_csv(default_run / "term_sheet.csv", schema_overrides={"amount_cents": pl.Int64})
    )
    assert_feasible((sheet, man["totals"]), apps, scn)
    assert man["applications"]["table_sha256"] == applications_sha256(apps)
    for name, digest in man["files"].items():
        assert hashlib.sha256((default_run / name).read_bytes()).hexdigest() == digest
    assert man["solver"]["method"] == "milp_pwl" and man["solver"]["status"] == "optimal"
    assert man["totals"]["lent_cents"] <= man["totals"]["fund_cents"]
    assert man["objective"]["value"] <= man["objective"]["relaxation"]
    res = cli("loans", "check", str(default_run))
    assert res.exit_code == 0, res.output
    assert "all checks hold" in res.output


def _copy(run: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in run.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def _rehash(run: Path) -> None:
    man = json.loads((run / "manifest.json").read_text())
    for name in man["files"]:
        man["files"][name] = hashlib.sha256((run / name).read_bytes()).hexdigest()
    (run / "manifest.json").write_text(json.dumps(man))


def _failed(run: Path) -> set[str]:
    res = cli("loans", "check", str(run), "--json")
    assert res.exit_code == 1, res.output
    return {c["name"] for c in json.loads(res.stdout)["checks"] if not c["ok"]}


def test_check_rejects_tampered_outputs(default_run, tmp_path):
    # One cent more in the CSV only: the hash and the CSV/parquet agreement fail.
    run = _copy(default_run, tmp_path / "a")
    text = (run / "term_sheet.csv").read_text().splitlines()
    row = next(k for k, line in enumerate(text) if line.endswith(",collateral"))
    cells = text[row].split(",")
    cells[6] = str(int(cells[6]) + 1)
    cells[7] = repr(int(cells[6]) / 100)
    text[row] = ",".join(cells)
    (run / "term_sheet.csv").write_text("\n".join(text) + "\n")
    assert {"file hashes", "csv equals parquet"} <= _failed(run)

    # A consistent forgery (both files and the manifest hashes): the recomputed limits catch it.
    run = _copy(default_run, tmp_path / "b")
    sheet = pl.read_parquet(run / "term_sheet.parquet")
    # The collateral-limited loan whose extra dollar moves the objective most (weight per USD
    # lent), so that the objective check sees it beyond its relative tolerance.
    k = max(
        (
            i
            for i, (b, c) in enumerate(zip(sheet["binding"], sheet["amount_cents"]))
            if b == "collateral" and c > 0
        ),
        key=lambda i: sheet["weight"][i] / sheet["amount_cents"][i],
    )
    bump = pl.int_range(pl.len()) == k
    sheet = sheet.with_columns(
        pl.when(bump)
        .then(pl.col("amount_cents") + 100)
        .otherwise(pl.col("amount_cents"))
        .alias("amount_cents")
    )
    sheet = sheet.with_columns((pl.col("amount_cents") / 100).alias("amount_usd"))
    sheet.write_parquet(run / "term_sheet.parquet")
    sheet.write_csv(run / "term_sheet.csv")
    _rehash(run)
    failed = _failed(run)
    assert {"within collateral limit", "total matches manifest", "objective"} <= failed
    assert "file hashes" not in failed

    # The manifest's total, or a missing file.
    run = _copy(default_run, tmp_path / "c")
    man = json.loads((run / "manifest.json").read_text())
    man["totals"]["lent_cents"] += 1
    (run / "manifest.json").write_text(json.dumps(man))
    assert _failed(run) == {"total matches manifest"}
    run = _copy(default_run, tmp_path / "d")
    (run / "applications.parquet").unlink()
    assert _failed(run) == {"files present"}
    res = cli("loans", "check", str(tmp_path / "missing"))
    assert res.exit_code == 2


def test_reruns_are_byte_identical_and_replace_only_loan_runs(tmp_path):
    apps_file = tmp_path / "apps.csv"
    res = cli("loans", "generate", "--out", str(apps_file), "--n", "40", "--seed", "5")
    assert res.exit_code == 0, res.output
    assert D.load_applications(apps_file).equals(D.generate_applications(40, 5))
    scen = tmp_path / "s.toml"
    scen.write_text(toml_text(fund_usd="5_000_000.0"))
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        res = cli(
            "loans", "allocate", "-s", str(scen), "-a", str(apps_file), "--out", str(out), "--json"
        )
        assert res.exit_code == 0, res.output
        summary = json.loads(res.stdout)
        assert summary["lent_cents"] <= 500_000_000
        outs.append(out)
    for f in ("term_sheet.csv", "term_sheet.parquet", "applications.parquet", "manifest.json"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    # Rerunning into an existing run directory replaces it; a foreign directory is refused.
    res = cli("loans", "allocate", "-s", str(scen), "-a", str(apps_file), "--out", str(outs[0]))
    assert (
        res.exit_code == 0
        and (outs[0] / "manifest.json").read_bytes() == (outs[1] / "manifest.json").read_bytes()
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = cli("loans", "allocate", "-s", str(scen), "-a", str(apps_file), "--out", str(foreign))
    assert res.exit_code == 2 and (foreign / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".run*"))  # no temporary directories left behind


def test_native_output_goes_to_stderr_inside_the_guard(capfd):
    with native_stdout_to_stderr():
        os.write(1, b"native write\n")
        with native_stdout_to_stderr():  # nested: each level restores what it found
            os.write(1, b"nested\n")
        if sys.platform != "win32":
            # C stdio buffers fully when stdout is not a terminal; the guard must flush it
            # before restoring, or the text would surface on stdout later.
            ctypes.CDLL(None).printf(b"c stdio\n")
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert out == "after\n"
    assert "native write\nnested\n" in err and (sys.platform == "win32" or "c stdio" in err)


def _console_script(*args: str) -> subprocess.CompletedProcess:
    # A real process: C code writing to descriptor 1 (the HiGHS banner) reaches its stdout,
    # which CliRunner, running in-process on Python's sys.stdout, never sees.
    return subprocess.run(
        [sys.executable, "-m", "allocator", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_json_stdout_is_strict_json_in_a_real_process(tmp_path):
    run = tmp_path / "run"
    proc = _console_script(
        "loans", "allocate", "-s", str(DEFAULT_TOML), "--out", str(run), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout, nothing before or after
    man = json.loads((run / "manifest.json").read_text())
    assert summary["lent_cents"] == man["totals"]["lent_cents"] > 0
    assert summary["method"] == "milp_pwl"  # the run went through HiGHS
    assert "Warning" not in proc.stderr, proc.stderr  # no numpy RuntimeWarning on stderr
    proc = _console_script("loans", "check", str(run), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True
    assert "Warning" not in proc.stderr, proc.stderr


def test_cli_reports_bad_input_and_infeasible_settings(tmp_path):
    bad = _write_csv(tmp_path, small(10).drop("vip_tier"))
    res = cli(
        "loans", "allocate", "-s", str(DEFAULT_TOML), "-a", str(bad), "--out", str(tmp_path / "r")
    )
    assert res.exit_code == 2 and "vip_tier" in res.output and "Traceback" not in res.output
    scen = tmp_path / "s.toml"
    scen.write_text(toml_text(min_ticket_usd="20_000_000.0"))
    res = cli("loans", "allocate", "-s", str(scen), "--out", str(tmp_path / "r"))
    assert res.exit_code == 3 and "minimum ticket" in res.output
    res = cli("loans", "generate", "--out", str(tmp_path / "x.txt"))
    assert res.exit_code == 2
    assert cli("loans", "--help").exit_code == 0


def test_a_run_that_hits_the_time_limit_is_refused_not_written(tmp_path):
    # HiGHS stops at once with an incumbent that lends nothing; that used to be written as a
    # successful run (exit 0) that `loans check` passed.
    scen = tmp_path / "s.toml"
    scen.write_text(toml_text(time_limit_s="1e-9"))
    out = tmp_path / "r"
    res = cli("loans", "allocate", "-s", str(scen), "--out", str(out))
    assert res.exit_code == 3, res.output
    assert "time_limit" in res.output and "solver.time_limit_s" in res.output
    assert "solver.mip_rel_gap" in res.output and "Traceback" not in res.output
    assert not out.exists()
    with pytest.raises(SolverFailedError) as info:
        allocate_loans(D.generate_applications(), LS.load_loan_scenario(scen))
    assert info.value.status == "time_limit"


def test_check_verifies_the_solver_status_and_gap(default_run, tmp_path):
    man = json.loads((default_run / "manifest.json").read_text())
    ok, detail = run_solver_status(man)
    assert ok and "'optimal'" in detail
    # A run written by an older version after a time limit, or with a gap above the setting.
    for k, edit in enumerate(
        [
            dict(status="time_limit", mip_rel_gap_achieved="inf"),
            dict(mip_rel_gap_achieved=10 * man["scenario"]["solver"]["mip_rel_gap"]),
        ]
    ):
        run = _copy(default_run, tmp_path / f"s{k}")
        forged = json.loads((run / "manifest.json").read_text())
        forged["solver"].update(edit)
        (run / "manifest.json").write_text(json.dumps(forged))
        assert _failed(run) == {"solver status"}
    # A convex run is judged by its optimality certificate, within one cent (alpha > 0).
    convex = {
        "scenario": {"alpha": 1.0},
        "solver": {"method": "convex", "status": "optimal"},
        "multipliers": {"kkt_violation": 0.0},
    }
    assert run_solver_status(convex)[0]
    convex["multipliers"]["kkt_violation"] = 0.5
    assert not run_solver_status(convex)[0]
    assert not run_solver_status({"solver": {"method": "other"}})[0]


def test_an_unmappable_solver_status_is_a_solver_failure(monkeypatch):
    import cvxpy as cp

    def broken(self, *args, **kwargs):
        raise ValueError("Cannot unpack invalid solution: Solution(status=UNKNOWN, ...)")

    monkeypatch.setattr(cp.Problem, "solve", broken)
    apps = small(12)
    with pytest.raises(SolverFailedError, match="unknown status"):
        allocate_loans(apps, scenario())
    # Without a minimum ticket the exact answer comes from the optimality conditions alone,
    # which its certificate proves: the conic failure is reported in the status.
    res = allocate_loans(apps, scenario(limits=dict(min_ticket_usd=0.0)))
    assert res.solver["status"] == "failed: unknown" and res.multipliers["kkt_violation"] <= 0.01


def test_requests_below_a_cent_are_named_as_the_reason():
    apps = small(10).with_columns(pl.lit(1e-3).alias("requested_usd"))
    with pytest.raises(InfeasibleError, match="requested less than one cent"):
        allocate_loans(apps, scenario(limits=dict(min_ticket_usd=0.0)))


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--n", "99999999999999"], "--n"),
        (["--n", "0"], "--n"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**63)], "--seed"),
    ],
)
def test_generate_limits_are_usage_errors(tmp_path, args, option):
    out = tmp_path / "apps.csv"
    res = cli("loans", "generate", "--out", str(out), *args)
    assert res.exit_code == 2 and option in res.output and "Traceback" not in res.output, res.output
    assert not out.exists()


def test_generate_bounds_themselves_are_accepted():
    assert D.generate_applications(3, D.MAX_SEED).height == 3
    assert D.generate_applications(1, 0).height == 1
    with pytest.raises(InputError, match="1,000,000"):
        D.generate_applications(D.MAX_GENERATE_N + 1)
    with pytest.raises(InputError, match="seed"):
        D.generate_applications(3, D.MAX_SEED + 1)


def test_check_of_a_file_says_it_is_not_a_directory(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    res = cli("loans", "check", str(f))
    assert (
        res.exit_code == 2
        and "not a directory" in res.output
        and "does not exist" not in res.output
    )
    res = cli("loans", "check", str(tmp_path / "missing"))
    assert res.exit_code == 2 and "does not exist" in res.output
