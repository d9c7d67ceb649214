"""The studio's engine and views, without a browser: every number recomputed from the run.

Covers: the knobs are exactly the scenario keys the settings accept; a setting is the base
scenario with the moved knobs (bad values get the settings' message); an evaluation is the
allocation ``allocate`` makes, cent for cent; a threshold change re-uses the pass over the
events and still equals a fresh eligibility computation for every rule; a saved scenario reads
back as the setting and allocates the same cents; and every view's numbers are recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import names as N
from allocator.analysis.metrics import LOSS_BANDS, lorenz
from allocator.data.synthetic import generate
from allocator.settings.models import EligibilityRules
from allocator.settings.scenarios import load_scenario, with_overrides
from allocator.studio import views as V
from allocator.studio.engine import Studio, StudioError
from allocator.studio.knobs import KNOBS, knob_values, knobs_for
from allocator.vouchers.eligibility import compute_eligibility
from allocator.vouchers.pipeline import DataSession, allocate, manifest

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 3_000_000.0  # the 3,000-user data set's scale


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studio-data") / "data"
    generate(out, users=3000, seed=7)
    return out


@pytest.fixture(scope="module")
def base():
    return with_overrides(
        load_scenario(ROOT / "scenarios" / "baseline.toml"), {"budget.total_usd": BUDGET}
    )


@pytest.fixture(scope="module")
def studio(data: Path, base) -> Studio:
    s = Studio(DataSession.open(data), base)
    yield s
    s.close()


def _moved(knob) -> object:
    """A value of ``knob`` different from the baseline's and inside its range."""
    return {
        "objective.rule": "talmud",
        "objective.form": "coverage",
        "objective.base_usd": 100.0,
        "objective.threshold_usd": 500.0,
        "bounds.coverage_cap": 1.0,
        "budget.total_usd": 2_000_000.0,
        "budget.exhaust": False,
        "eligibility.phase_in_loss_usd": 25.0,
        "eligibility.phase_in_ratio": 0.2,
        "eligibility.depeg_policy": "net",
        "eligibility.restricted_regions": "US, CU",
        "eligibility.require_kyc": False,
        "bounds.cap_usd": 5000.0,
        "bounds.floor_usd": 5.0,
        "objective.features.vip_tier": 0.25,
    }.get(knob.key, knob.low + (knob.step or 1.0) if knob.low is not None else None)


def test_every_knob_is_a_scenario_key_and_the_start_is_the_base(studio: Studio, base) -> None:
    assert studio.scenario(studio.values()) is base
    assert set(knob_values(base)) == {k.key for k in knobs_for(base)}
    assert set(KNOBS) < set(knobs_for(base))  # and a coefficient per offered feature
    for knob in knobs_for(base):
        value = _moved(knob)
        values = {**studio.values(), knob.key: value}
        if knob.key == "objective.base_usd":
            values["objective.rule"] = "mt_gox"
        if knob.key == "objective.threshold_usd":
            values["objective.rule"] = "ftx"
        if knob.key == "objective.form":
            values["objective.rule"] = "max_min"
        moved = studio.scenario(values)
        got = knob_values(moved)[knob.key]
        want = value
        if knob.key == "eligibility.restricted_regions":
            want = "US, CU"
        assert got == want, knob.key
        # nothing else moved but what the knob (and its rule) implies
        others = {k for k, v in knob_values(moved).items() if v != studio.values()[k]}
        assert others <= {knob.key, "objective.rule"}, knob.key


def test_a_feature_coefficient_moves_the_weights(studio: Studio) -> None:
    values = {**studio.values(), "objective.features.vip_tier": 0.25}
    scenario = studio.scenario(values)
    assert dict(scenario.objective.features) == {"vip_tier": 0.25}
    run = studio.evaluate(scenario).run
    base = studio.evaluate(studio.base).run
    tier = run.eligibility.eligible["vip_tier"].to_numpy()
    ratio = run.allocations[N.WEIGHT].to_numpy() / base.allocations[N.WEIGHT].to_numpy()
    assert ratio == pytest.approx(np.exp(0.25 * tier))


def test_a_rule_parameter_counts_only_under_its_rule(studio: Studio) -> None:
    values = {**studio.values(), "objective.base_usd": 100.0}
    assert studio.scenario(values).objective.base_usd is None  # alpha-fair: the box is ignored
    with pytest.raises(StudioError, match=r"objective.base_usd is required by rule"):
        studio.scenario({**studio.values(), "objective.rule": "mt_gox"})


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("bounds.floor_usd", -1.0, "bounds.floor_usd = -1.0 is out of range"),
        ("objective.alpha", 1e9, "objective.alpha"),
        ("eligibility.restricted_regions", "usa", "is not a region code"),
    ],
)
def test_a_bad_value_gets_the_settings_message(
    studio: Studio, key: str, value: object, named: str
) -> None:
    with pytest.raises(StudioError, match=named):
        studio.scenario({**studio.values(), key: value})


def test_an_evaluation_is_what_allocate_pays_and_is_kept(studio: Studio, data: Path) -> None:
    scenario = studio.scenario({**studio.values(), "objective.alpha": 1.5})
    result = studio.evaluate(scenario)
    session = DataSession.open(data)
    fresh = allocate(session, scenario, with_payouts=False)
    assert result.run.allocations.equals(fresh.allocations)
    assert result.run.paid_cents == round(BUDGET * 100)
    assert studio.evaluate(scenario) is result
    # the page certifies the cents it shows with every test a written run's certificate has;
    # only the reported gap and the continuous vouchers' certificate are left to written runs
    page, full = result.run.final_certificate, fresh.final_certificate
    assert page.certified and full.certified
    for field in ("failures", "best_response_max_usd", "bound_violation", "budget_violation",
                  "segment_violation", "n_floor", "n_cap", "objective"):  # fmt: skip
        assert getattr(page, field) == getattr(full, field), field
    assert math.isnan(page.duality_gap) and math.isfinite(full.duality_gap)
    assert result.run.allocation.certificate is None and fresh.allocation.certificate.certified
    with pytest.raises(ValueError, match="both of its certificates"):
        manifest(session, result.run, solver_requested="auto")


@pytest.mark.parametrize(
    "change",
    [
        {"min_loss_usd": 80.0},
        {"min_loss_ratio": 0.5},
        {"restricted_regions": ("US",)},
        {"require_kyc": False},
        {"depeg_policy": "net"},
        {"depeg_policy": "ignore"},
        {"nonpositive_net_assets": "exclude"},
        {"phase_in_loss_usd": 25.0, "phase_in_ratio": 0.2},
        {"include_fees": False},
        {"products": ("usdm_futures", "cross_margin")},
        {"window_end": EligibilityRules().window_end - timedelta(hours=30)},
        {"snapshot_at": EligibilityRules().snapshot_at - timedelta(days=1)},
    ],
    ids=lambda c: ",".join(c),
)
def test_a_cached_pass_over_the_events_decides_like_a_fresh_one(
    data: Path, base, change: dict
) -> None:
    """The pass over the events is kept per window, products and fees; any other rule is
    applied to the kept per-user table. If a rule the pass reads were missing from that key, a
    session that saw the base rules first would answer with stale losses."""
    session = DataSession.open(data)
    session.eligibility(base.eligibility)
    rules = dataclasses.replace(base.eligibility, **change)
    cached, _ = session.eligibility(rules)
    inp = session.inputs
    fresh = compute_eligibility(inp.events, inp.prices, inp.snapshot, inp.users, rules)
    assert cached.eligible.equals(fresh.eligible)
    assert cached.excluded.equals(fresh.excluded)
    assert cached.reconciliation == fresh.reconciliation
    assert cached.eligible.height != session.eligibility(base.eligibility)[0].eligible.height or (
        change.keys() <= {"snapshot_at", "include_fees", "nonpositive_net_assets"}
    )


def test_saving_writes_a_scenario_that_allocates_the_same_cents(
    studio: Studio, data: Path, tmp_path: Path
) -> None:
    scenario = studio.scenario(
        {**studio.values(), "objective.alpha": 2.0, "eligibility.min_loss_usd": 70.0}
    )
    result = studio.evaluate(scenario)
    path = studio.save(scenario, tmp_path / "my_policy.toml")
    saved = load_scenario(path)
    assert saved.name == "my_policy" and "objective.alpha = 2.0" in saved.description
    again = allocate(DataSession.open(data), saved, with_payouts=False)
    assert again.allocations[N.VOUCHER_CENTS].equals(result.run.allocations[N.VOUCHER_CENTS])
    assert again.allocations[N.USER_ID].equals(result.run.allocations[N.USER_ID])
    with pytest.raises(StudioError, match="exists"):
        studio.save(scenario, path)
    assert studio.save(scenario, path, overwrite=True) == path
    with pytest.raises(StudioError, match=r"ends in \.toml"):
        studio.save(scenario, tmp_path / "my_policy.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_policy.toml"]  # nothing left over


def test_the_views_numbers_are_the_runs(studio: Studio) -> None:
    ref = studio.evaluate(studio.base).run
    run = studio.evaluate(studio.scenario({**studio.values(), "objective.alpha": 3.0})).run
    a = run.allocations
    head = V.as_dict(V.headline(run, ref))
    assert head["Eligible users"] == f"{a.height:,}"
    assert head["Paid"] == f"USD {run.paid_cents / 100:,.2f}"
    cov = (a[N.VOUCHER_CENTS] / 100 / a[N.LOSS_USD]).median()
    assert head["Median share of the loss repaid"] == f"{cov:.1%}"
    at_cap = int((a[N.BOUND] == N.BOUND_CAP).sum())
    assert head["Paid their largest voucher (at most USD 6,000)"] == f"{at_cap:,}"
    assert all(i.pinned is not None for i in V.headline(run, ref))

    hist = pl.DataFrame(V.histogram(run, ref).data)
    for name, r in ((V.CURRENT, run), (V.PINNED, ref)):
        rows = hist.filter(pl.col("run") == name)
        assert rows["users"].sum() == r.allocations.height
        assert (rows["to"] - rows["from"]).n_unique() == 1  # linear bins, one width

    bands = pl.DataFrame(V.coverage_by_band(run).data)
    loss = a[N.LOSS_USD].to_numpy()
    share = (a[N.VOUCHER_CENTS] / 100 / a[N.LOSS_USD]).to_numpy()
    for (_, lo, hi), row in zip(LOSS_BANDS, bands.iter_rows(named=True)):
        inside = (loss >= lo) & (loss < hi)
        assert row["users"] == int(inside.sum())
        assert row["share"] == pytest.approx(float(np.median(share[inside])))

    curve = pl.DataFrame(V.lorenz_chart(run).data).filter(pl.col("run") == V.CURRENT)
    pop, money = lorenz(a[N.VOUCHER_CENTS].to_numpy() / 100)
    assert curve["money"].to_numpy() == pytest.approx(
        np.interp(curve["users"].to_numpy(), pop, money)
    )

    moves = V.moved(run, ref)
    diff = (a[N.VOUCHER_CENTS] - ref.allocations[N.VOUCHER_CENTS]).to_numpy() / 100
    assert moves.users == int((np.abs(diff) > 1.0).sum())
    assert moves.gained_usd == pytest.approx(diff[diff > 0].sum())
    # the same budget paid in full both times: what some gain, others lose, to the cent
    assert round(moves.gained_usd * 100) == round(moves.lost_usd * 100)
    assert moves.largest.height == min(V.TOP_MOVES, moves.users)
    assert abs(moves.largest["Change (USD)"][0]) == pytest.approx(np.abs(diff).max(), abs=0.01)

    words = V.budget_in_words(run)
    interior = int((a[N.BOUND] == N.BOUND_INTERIOR).sum())
    assert f"each of {interior:,} users" in words


def test_a_rule_in_words_and_the_cliffs(studio: Studio) -> None:
    run = studio.evaluate(studio.scenario({**studio.values(), "objective.rule": "cea"})).run
    words = V.budget_in_words(run)
    assert words.startswith("Every award is USD ") and "USD 1M more" in words
    lines, chart = V.cliffs(run)
    excluded = run.eligibility.excluded
    below = excluded.filter(
        (pl.col(N.REASON) == "below_min_loss") & (pl.col(N.LOSS_USD) >= 40)
    ).height
    assert lines[0].startswith(f"{below:,} users lost between USD 40 and USD 50")
    assert chart.to_dict()["title"]["text"] == "Users on either side of each threshold"


def test_the_axioms_table_is_in_words(studio: Studio) -> None:
    result = studio.evaluate(studio.scenario({**studio.values(), "objective.rule": "proportional"}))
    table = V.axioms_table(studio.axioms(result, sample=30))
    assert table.height == 9 and table.columns[0] == "Property"
    assert "Nobody is paid more than their loss" in table["Property"].to_list()
    assert not any("_" in p for p in table["Property"])
    assert studio.axioms(result, sample=30) is studio.axioms(result)  # kept per setting


@pytest.mark.parametrize("extra", [{}, {"eligibility.phase_in_loss_usd": 25.0}])
def test_cliffs_sharing_the_excluded_side_equal_a_full_analysis(studio: Studio, extra) -> None:
    """The excluded users' side of the cliffs is kept per eligibility; for every later run the
    whole analysis must still be the one computed from scratch."""
    from allocator.analysis.sensitivity.cliffs import cliff_analysis

    first = studio.evaluate(studio.scenario({**studio.values(), **extra})).run
    V.cliff_of(first)
    for alpha in (0.5, 2.5):
        run = studio.evaluate(
            studio.scenario({**studio.values(), **extra, "objective.alpha": alpha})
        ).run
        assert run.eligibility is first.eligibility  # the kept side applies
        full = cliff_analysis(run.eligibility.excluded, run.allocations, run.scenario.eligibility)
        assert V.cliff_of(run).to_dict() == full.to_dict()


def test_moves_against_a_reference_with_other_users_count_everyone_once(studio: Studio) -> None:
    ref = studio.evaluate(studio.base).run
    run = studio.evaluate(
        studio.scenario({**studio.values(), "eligibility.min_loss_usd": 120.0})
    ).run
    assert (
        run.eligibility is not ref.eligibility and run.allocations.height < ref.allocations.height
    )
    both = (
        run.allocations.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("now"))
        .join(
            ref.allocations.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("ref")),
            on=N.USER_ID,
            how="full",
            coalesce=True,
        )
        .fill_null(0)
    )
    change = (both["now"] - both["ref"]).to_numpy()
    moves = V.moved(run, ref)
    assert moves.users == int((np.abs(change) > 100).sum())
    assert round(moves.gained_usd * 100) == int(change[change > 0].sum())
    assert round(moves.lost_usd * 100) == int(-change[change < 0].sum())
    assert moves.no_longer_paid == int(((both["ref"] > 0) & (both["now"] == 0)).sum()) > 0
    assert moves.newly_paid == 0
    top = moves.largest
    assert top["Change (USD)"].abs().to_list() == sorted(top["Change (USD)"].abs(), reverse=True)
    for row in top.iter_rows(named=True):
        got = both.filter(pl.col(N.USER_ID) == row["User"]).row(0, named=True)
        assert round(row["Now (USD)"] * 100) == got["now"]
        assert round(row["Pinned (USD)"] * 100) == got["ref"]


def test_a_session_reusing_weights_and_bounds_allocates_as_a_fresh_one(data: Path, base) -> None:
    # Each move reuses what the one before built (weights across alpha, bounds across the
    # weights' knobs): every allocation must be the one a fresh session makes.
    session = DataSession.open(data)
    moves = [
        {},
        {"objective.alpha": 2.0},
        {"objective.alpha": 2.0, "bounds.cap_usd": 2500.0},
        {"objective.alpha": 0.5, "bounds.cap_usd": 2500.0, "objective.loss_exponent": 0.7},
        {"objective.alpha": 3.0, "objective.form": "coverage"},
        {"objective.alpha": 1.5, "objective.form": "coverage"},
        {"bounds.coverage_cap": 0.8},
        {"objective.rule": "cea"},
        {},
    ]
    for move in moves:
        scenario = with_overrides(base, move) if move else base
        reused = allocate(session, scenario, with_payouts=False)
        fresh = allocate(DataSession.open(data), scenario, with_payouts=False)
        assert reused.allocations.equals(fresh.allocations), move
        assert not reused.problem.weights.flags.writeable
    elig = session.eligibility(base.eligibility)[0]
    kinds = [key[0] for key in session.problem_memo(elig)]
    assert kinds.count("weights") <= 4 and kinds.count("bounds") <= 4


def test_every_chart_the_page_sends_is_valid_vega_lite(studio: Studio) -> None:
    ref = studio.evaluate(studio.base).run
    run = studio.evaluate(studio.scenario({**studio.values(), "objective.alpha": 2.0})).run
    for pinned in (None, ref):
        charts = [
            V.histogram(run, pinned),
            V.coverage_by_band(run, pinned),
            V.voucher_against_loss(run, pinned),
            V.lorenz_chart(run, pinned),
            V.cliffs(run)[1],
        ]
        for chart in charts:
            chart.to_dict()  # validates against the Vega-Lite schema; raises when it does not
            # what the page sends (the kind's template with these rows) is that chart's JSON
            media_type, text = chart._mime_()
            assert media_type == V.VEGA_LITE_MEDIA_TYPE
            sent, built = json.loads(text), chart.to_dict(validate=False)
            (name,) = built["datasets"]
            assert sent["datasets"] == {"rows": built["datasets"][name]}
            assert {**sent, "datasets": None, "data": None} == {
                **built,
                "datasets": None,
                "data": None,
            }
            assert sent["data"] == {"name": "rows"} and built["data"] == {"name": name}


@given(
    parts=st.lists(
        st.lists(
            st.one_of(
                st.just(0.0),
                st.floats(0.0, 1e6, allow_subnormal=True),
                st.sampled_from([0.25, 1.0, 5e-324]),
            ),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_median_of_sorted_parts_is_numpys(parts: list[list[float]]) -> None:
    arrays = [np.sort(np.array(p)) for p in parts]
    assert V._median_of_parts(arrays) == float(np.median(np.concatenate(arrays)))


@given(
    sizes=st.lists(st.integers(0, 50), min_size=V.TOP_MOVES + 1, max_size=400),
    spike=st.integers(0, 3),
)
def test_the_largest_moves_are_every_user_at_or_above_the_cut(sizes: list[int], spike: int) -> None:
    size = np.array(sizes, dtype=np.int64)
    size[: spike * 7] += 1000  # a few large moves, some seen by the sample and some not
    got = V._largest(size)
    cut = np.sort(size)[::-1][V.TOP_MOVES - 1]
    np.testing.assert_array_equal(got, np.flatnonzero(size >= cut))


@given(
    cents=st.lists(st.integers(0, 600_000), min_size=1, max_size=300),
    wide=st.booleans(),
    data=st.data(),
)
def test_sums_of_the_smallest_are_the_sorted_prefix_sums(
    cents: list[int], wide: bool, data: st.DataObject
) -> None:
    c = np.array(cents, dtype=np.int64) * (10**6 if wide else 1)  # wide: the sort's path
    k = np.array(data.draw(st.lists(st.integers(0, c.shape[0]), min_size=1, max_size=30)))
    want = np.concatenate([[0], np.cumsum(np.sort(c))])[k]
    np.testing.assert_array_equal(V._sums_of_smallest(c, k), want)


def test_warming_up_fills_the_caches_with_real_settings_and_keeps_the_base(
    data: Path, base
) -> None:
    from allocator.studio.engine import RESULT_CACHE_SIZE

    s = Studio(DataSession.open(data), base)
    try:
        first = s.evaluate(s.base)
        drawn: list[object] = []
        paid = s.warm_up(draw=drawn.append)
        assert paid >= RESULT_CACHE_SIZE
        kept = list(s._results.values())
        assert len(kept) == RESULT_CACHE_SIZE
        # every setting paid was drawn once, as the page would draw it, the last ones kept
        assert len(drawn) == paid and drawn[-RESULT_CACHE_SIZE:] == kept
        # each kept setting is near the base and is what allocate pays for it, to the cent
        for evaluation in kept[-2:]:
            again = allocate(s.session, evaluation.scenario, with_payouts=False)
            np.testing.assert_array_equal(evaluation.run.cents, again.cents)
        assert all(e.scenario != s.base for e in kept)
        # the base's rule set is still the newest in the eligibility cache: a knob move after
        # the warm-up needs no new pass
        newest = next(reversed(s.session._eligibility))
        assert newest == s.base.eligibility
        assert s.evaluate(s.base).run.eligibility is first.run.eligibility
    finally:
        s.close()


def test_drawing_a_setting_computes_every_number_the_page_shows(studio: Studio) -> None:
    """``views.draw`` (what the warm-up draws for each setting) leaves each view's numbers
    computed for the run and its reference, so the page's own calls find them ready."""
    ref = studio.evaluate(studio.base).run
    run = studio.evaluate(studio.scenario({**studio.values(), "objective.alpha": 1.7})).run
    V._PER_RUN.pop(run, None)
    V._PER_RUN.pop(ref, None)
    V.draw(run, ref)
    assert set(V._PER_RUN[run]) >= set(V._NUMBERS) - {"top"}
    assert "headline" in V._PER_RUN[ref]  # the reference's numbers, shown beside the run's
    ready = V._PER_RUN[run]["headline"]
    V.headline(run, ref)
    assert V._PER_RUN[run]["headline"] is ready
