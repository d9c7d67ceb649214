"""Strict TOML -> dataclass conversion through pydantic: every error kind, defaults, and the
to_dict round trip."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import with_config

from allocator.errors import ScenarioError
from allocator.settings.models import Scenario
from allocator.settings.toml import build, load_toml, to_dict
from allocator.settings.types import (
    NOT_BOOL,
    SETTINGS_CONFIG,
    Bool,
    Float,
    Int,
    Str,
    UtcDateTime,
    pairs_table,
)

UTC = UTC


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class Part:
    name: Str
    share: Float | None = None


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class Sample:
    count: Int = 3
    ratio: Float = 0.5
    flag: Bool = False
    label: Str = "x"
    mode: Literal["a", "b"] = "a"
    level: Annotated[Literal[1, 2], NOT_BOOL] = 1
    tags: tuple[Str, ...] = ("t",)
    coefs: Annotated[tuple[tuple[str, float], ...], pairs_table(Float)] = ()
    limit: Float | None = None
    at: UtcDateTime = datetime(2025, 10, 10, tzinfo=UTC)
    when: UtcDateTime | None = None
    part: Part = field(default_factory=lambda: Part("p"))
    parts: tuple[Part, ...] = ()


def load(tmp_path: Path, text: str, cls: type = Sample, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return build(cls, load_toml(path), file=path)


def error(tmp_path: Path, text: str, cls: type = Sample) -> str:
    with pytest.raises(ScenarioError) as info:
        load(tmp_path, text, cls)
    return str(info.value)


# --- happy path -------------------------------------------------------------------------------


def test_defaults_apply_for_omitted_keys(tmp_path):
    assert load(tmp_path, "") == Sample()
    got = load(tmp_path, "count = 7\n[part]\nname = 'q'\n")
    assert got == Sample(count=7, part=Part("q"))


def test_every_supported_type_is_read(tmp_path):
    text = """
count = 5
ratio = 2          # an integer is accepted for a float
flag = true
label = "hello"
mode = "b"
level = 2
tags = ["x", "y"]
limit = 1.5
at = 2025-10-10T08:00:00+08:00
when = 2025-10-11T23:59:59.5Z
[coefs]
zeta = 1
alpha = -0.5
[part]
name = "one"
[[parts]]
name = "first"
share = 0.25
[[parts]]
name = "second"
"""
    got = load(tmp_path, text)
    assert got.count == 5 and type(got.count) is int
    assert got.ratio == 2.0 and type(got.ratio) is float
    assert got.flag is True and got.label == "hello" and got.mode == "b" and got.level == 2
    assert got.tags == ("x", "y")
    assert got.coefs == (("zeta", 1.0), ("alpha", -0.5))  # file order kept
    assert all(type(v) is float for _, v in got.coefs)
    assert got.limit == 1.5
    assert got.at == datetime(2025, 10, 10, 0, 0, tzinfo=UTC) and got.at.utcoffset() == timedelta(0)
    assert got.when == datetime(2025, 10, 11, 23, 59, 59, 500000, tzinfo=UTC)
    assert got.part == Part("one")
    assert got.parts == (Part("first", 0.25), Part("second", None))


# --- syntax and file errors -------------------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path):
    msg = error(tmp_path, "count = 1\nlabel = 'ok'\nratio = = 2\n")
    assert "s.toml" in msg and "line 3" in msg


def test_missing_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="nope.toml: file not found"):
        load_toml(tmp_path / "nope.toml")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"count = 2\nlabel = '\xff'\n")
    with pytest.raises(ScenarioError, match=r"bin.toml: not UTF-8 text \(byte 0xFF at line 2\)"):
        load_toml(path)


def test_utf8_bom_is_skipped(tmp_path):
    # Windows editors add a byte-order mark; tomllib alone calls it an "Invalid statement".
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeffcount = 7\nlabel = 'é'\n".encode())
    assert load_toml(path) == {"count": 7, "label": "é"}
    assert build(Sample, load_toml(path), file=path) == Sample(count=7, label="é")


def test_bom_only_at_the_start_is_skipped(tmp_path):
    path = tmp_path / "bom2.toml"
    path.write_bytes(b"count = 7\n\xef\xbb\xbflabel = 'x'\n")
    with pytest.raises(ScenarioError, match="line 2"):
        load_toml(path)


# --- unknown keys -----------------------------------------------------------------------------


def test_unknown_top_level_key_lists_allowed(tmp_path):
    msg = error(tmp_path, "cuont = 1\n")
    assert "s.toml" in msg and "'cuont'" in msg
    for f in fields(Sample):
        assert f.name in msg
    assert "Did you mean 'count'" in msg


def test_unknown_nested_key_is_dotted(tmp_path):
    msg = error(tmp_path, "[part]\nname = 'a'\nshaer = 0.1\n")
    assert "'part.shaer'" in msg and "name, share" in msg


def test_unknown_key_in_array_of_tables_is_indexed(tmp_path):
    msg = error(tmp_path, "[[parts]]\nname = 'a'\n[[parts]]\nname = 'b'\nextra = 1\n")
    assert "'parts[1].extra'" in msg


def test_missing_required_key(tmp_path):
    msg = error(tmp_path, "[[parts]]\nshare = 0.5\n")
    assert "missing required key 'parts[0].name'" in msg


# --- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "expected", "given"),
    [
        ("count = 'three'", "count", "an integer", "'three'"),
        ("count = 1.5", "count", "an integer", "1.5"),
        ("count = true", "count", "an integer", "True"),
        ("ratio = true", "ratio", "a finite number", "True"),
        ("ratio = 'x'", "ratio", "a finite number", "'x'"),
        ("ratio = nan", "ratio", "a finite number", "nan"),
        ("ratio = inf", "ratio", "a finite number", "inf"),
        ("flag = 1", "flag", "true or false", "1"),
        ("label = 3", "label", "a string", "3"),
        ("tags = 'x'", "tags", "an array of strings", "'x'"),
        ("tags = ['x', 2]", "tags[1]", "a string", "2"),
        ("coefs = [1.0, 2.0]", "coefs", "a table of names to a finite number", "[1.0, 2.0]"),
        ("coefs = {a = 'b'}", "coefs.a", "a finite number", "'b'"),
        ("limit = 'none'", "limit", "a finite number", "'none'"),
        ("part = 'p'", "part", "a table", "'p'"),
        ("parts = {name = 'x'}", "parts", "an array of tables", "{'name': 'x'}"),
        ("at = 2025", "at", "offset date-time", "2025"),
    ],
)
def test_wrong_type_names_key_expected_and_given(tmp_path, text, key, expected, given):
    msg = error(tmp_path, text + "\n")
    assert "s.toml" in msg
    assert f"'{key}'" in msg
    assert expected in msg
    assert given in msg


@pytest.mark.parametrize(("text", "allowed"), [("mode = 'c'", "'a', 'b'"), ("level = 3", "1, 2")])
def test_bad_literal_lists_allowed_values(tmp_path, text, allowed):
    msg = error(tmp_path, text + "\n")
    assert "must be one of " + allowed in msg


def test_literal_refuses_boolean_for_integer(tmp_path):
    # ``True == 1`` in Python; the schema must not confuse them.
    assert "must be one of 1, 2" in error(tmp_path, "level = true\n")


def test_naive_datetime_is_refused_with_a_fix(tmp_path):
    msg = error(tmp_path, "at = 2025-10-10T00:00:00\n")
    assert "'at'" in msg and "without a time zone" in msg and "2025-10-10T00:00:00Z" in msg


@pytest.mark.parametrize("value", ["2025-10-10", "12:00:00"])
def test_date_or_time_alone_is_refused(tmp_path, value):
    msg = error(tmp_path, f"at = {value}\n")
    assert "'at'" in msg and "offset date-time" in msg


def test_datetime_string_from_json_is_accepted_and_naive_string_refused():
    got = build(Sample, {"at": "2025-10-10T01:00:00+01:00"}, file="x.json")
    assert got.at == datetime(2025, 10, 10, tzinfo=UTC)
    with pytest.raises(ScenarioError, match="without a time zone"):
        build(Sample, {"at": "2025-10-10T01:00:00"}, file="x.json")


def test_none_accepted_only_for_optional_fields():
    assert build(Sample, {"limit": None}, file="d").limit is None
    with pytest.raises(ScenarioError, match="'ratio' must be a finite number"):
        build(Sample, {"ratio": None}, file="d")


# --- to_dict and the round trip ---------------------------------------------------------------


def test_to_dict_is_json_safe_and_shaped():
    x = Sample(
        tags=("a",),
        coefs=(("k", 2.0),),
        at=datetime(2025, 10, 10, 8, tzinfo=timezone(timedelta(hours=8))),
        parts=(Part("a", 0.5),),
    )
    d = to_dict(x)
    json.dumps(d, allow_nan=False)
    assert d["at"] == "2025-10-10T00:00:00Z"
    assert d["when"] is None
    assert d["tags"] == ["a"]
    assert d["coefs"] == {"k": 2.0}
    assert d["parts"] == [{"name": "a", "share": 0.5}]
    assert d["part"] == {"name": "p", "share": None}


def _strategy(tp):
    """A Hypothesis strategy for any value the schema types can hold (driven by the hints)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        inner = st.one_of(*[_strategy(a) for a in options])
        return st.one_of(st.none(), inner) if type(None) in args else inner
    if origin is Literal:
        return st.sampled_from(args)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**63), 2**63 - 1)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is str:
        return st.text(max_size=8)
    if tp is datetime:
        zones = st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
        )
        return st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones
        )
    if is_dataclass(tp):
        hints = get_type_hints(tp)
        return st.builds(tp, **{f.name: _strategy(hints[f.name]) for f in fields(tp) if f.init})
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if get_origin(item) is tuple and get_args(item)[0] is str:
            value = _strategy(get_args(item)[1])
            pairs = st.lists(
                st.tuples(st.text(max_size=6), value), max_size=4, unique_by=lambda p: p[0]
            )
            return pairs.map(tuple)
        return st.lists(_strategy(item), max_size=3).map(tuple)
    raise AssertionError(f"no strategy for {tp!r}")


@given(_strategy(Sample))
def test_round_trip_sample(x):
    d = json.loads(json.dumps(to_dict(x), allow_nan=False))
    assert build(Sample, d, file="round-trip") == x


@given(_strategy(Scenario))
def test_to_dict_of_any_typed_scenario_is_json(x):
    # Any typed scenario, valid or not, can be written to a manifest.
    d = json.loads(json.dumps(to_dict(x), allow_nan=False))
    assert set(d) == {f.name for f in fields(Scenario)}


def _valid_scenarios():
    from allocator.settings.models import (
        BoundsSpec,
        BudgetSpec,
        EligibilityRules,
        ObjectiveSpec,
        PayoutSpec,
    )

    objective = st.builds(
        ObjectiveSpec,
        alpha=st.one_of(st.just(0.0), st.floats(1e-6, 100.0)),
        loss_exponent=st.floats(-10.0, 10.0),
        ratio_exponent=st.floats(-10.0, 10.0),
        ratio_cap=st.floats(1e-9, 1e6),
        features=st.lists(
            st.tuples(
                st.sampled_from(["vip_tier", "loss_usd", "is_institutional"]), st.floats(-5, 5)
            ),
            max_size=3,
            unique_by=lambda p: p[0],
        ).map(tuple),
        form=st.sampled_from(["voucher", "coverage"]),
    )
    bounds = st.tuples(st.floats(0, 1000.0), st.floats(1.0, 1e6)).map(
        lambda t: BoundsSpec(floor_usd=t[0], cap_usd=t[0] + t[1])
    )
    zones = st.sampled_from([UTC, timezone(timedelta(hours=8))])
    moments = st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=zones)
    eligibility = st.tuples(moments, st.floats(1.0, 1e6), st.floats(0.0, 1e6)).map(
        lambda t: EligibilityRules(
            window_start=t[0].astimezone(UTC),
            window_end=(t[0] + timedelta(hours=t[1])).astimezone(UTC),
            min_loss_usd=t[2],
        )
    )
    return st.builds(
        Scenario,
        name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
        description=st.text(max_size=20),
        eligibility=eligibility,
        objective=objective,
        bounds=bounds,
        budget=st.builds(BudgetSpec, total_usd=st.integers(1, 10**15).map(lambda c: c / 100)),
        payouts=st.builds(
            PayoutSpec,
            batch_size=st.integers(1, 10**9),
            start_within_hours=st.floats(0, 100.0),
            finish_within_hours=st.floats(101.0, 87_600.0),
        ),
    )


@given(_valid_scenarios())
def test_round_trip_valid_scenarios(x):
    d = json.loads(json.dumps(to_dict(x), allow_nan=False))
    back = build(Scenario, d, file="round-trip")
    assert back == x
    assert to_dict(back) == to_dict(x)


def test_build_refuses_a_non_table():
    with pytest.raises(ScenarioError, match="must be a table"):
        build(Sample, [1, 2], file="d")  # type: ignore[arg-type]
