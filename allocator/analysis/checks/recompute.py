r"""Eligibility and weights recomputed from the input files, on a path of their own.

The checks here do not trust anything the run wrote about its users: they read the four input
tables the manifest names (``manifest["inputs"][stem]["path"]``, whose hashes the ``input
hashes`` check ties to the manifest) and the fully resolved scenario of the manifest, and derive
again, with Polars and NumPy only (none of the allocating code, see the import contract "Finance
checks are independent of the allocating path"):

* each liquidated user's counted loss: the events on a covered product inside the half-open
  window ``[window_start, window_end)``, realised loss plus the liquidation fee when
  ``include_fees``, valued at the latest price bar of the settlement asset at or before the
  event (an as-of join), rounded to whole nano-dollars per event and summed exactly;
* the loss after the depeg policy (``net``: :math:`\max(G - D, 0)`), the snapshot's net assets
  and the loss ratio (:math:`+\infty` for net assets :math:`\le 0`);
* the decision, eligible or the first failing rule in the order of
  :data:`allocator.names.REASONS`, with the phase-in bands of :mod:`allocator.kernel.phase`;
* each eligible user's weight: :math:`L^a \min(r, \bar r)^b \exp(\sum_k c_k x_k)` (times
  :math:`L^{\alpha-1}` in coverage form and the phase factor with a band) for alpha-fairness,
  the loss for a claims rule, 1 (voucher form) or the loss (coverage form) for the exact max-min.

``eligibility recomputed``
    The allocated users are exactly the recomputed eligible users, every excluded user has the
    recomputed reason, and ``loss_usd``, ``loss_ratio`` (and ``phase_factor`` with a band) of
    ``allocations.parquet`` (and ``loss_usd`` of ``excluded.parquet``) are the recomputed ones (:data:`LOSS_ATOL_USD`,
    :data:`LOSS_RTOL`, :data:`RATIO_RTOL`).
``weights recomputed``
    Every allocated user's ``weight`` is the recomputed weight to :data:`WEIGHT_RTOL`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.checks.appealed import (
    WAIVED_RECOMPUTED,
    corrected,
    forfeit,
    reinstated,
    waived_text,
)
from allocator.analysis.checks.runfiles import Result, RunFiles, Unavailable, examples
from allocator.errors import AllocatorError
from allocator.kernel.phase import Band, band_factor, passes
from allocator.settings.models import CLAIMS_RULES, RULE_ALPHA_FAIR, RULE_MAX_MIN, Scenario
from allocator.settings.scenarios import parse_scenario

__all__ = [
    "LOSS_ATOL_USD",
    "LOSS_RTOL",
    "RATIO_RTOL",
    "WEIGHT_RTOL",
    "check_eligibility_recomputed",
    "check_weights_recomputed",
    "recompute_users",
]

#: A loss agrees within this many USD plus :data:`LOSS_RTOL` of its size (both sides sum
#: nano-dollars exactly, so in practice they agree bit for bit).
LOSS_ATOL_USD = 1e-6
LOSS_RTOL = 1e-12
#: Loss ratios and phase factors agree to this relative tolerance (infinities exactly).
RATIO_RTOL = 1e-12
#: Weights agree to this relative tolerance.
WEIGHT_RTOL = 1e-9

_NANO_PER_USD = 1_000_000_000
_US_PER_DAY = 86_400_000_000
_UTC_US = pl.Datetime("us", "UTC")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}

# private columns of the recomputed table
_COUNTED = "_n_counted"
_COVERED = "_n_covered"
_IN_WINDOW = "_n_in_window"
_IN_USERS = "_in_users"
_IN_SNAPSHOT = "_in_snapshot"
_PRICE = "_price"
_LOSS_NANO = "_loss_nano"
_FEE_NANO = "_fee_nano"
_UNPRICED = "_n_unpriced"
_W = "_weight"

#: The columns read from each input table, with the kind each is typed as.
_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    N.EVENTS_FILE: {
        N.USER_ID: pl.Int64(),
        N.TS: _UTC_US,
        N.PRODUCT: pl.String(),
        N.REALISED_LOSS: pl.Float64(),
        N.LIQ_FEE: pl.Float64(),
        N.SETTLE_ASSET: pl.String(),
    },
    N.PRICES_FILE: {N.ASSET: pl.String(), N.PRICE_TS: _UTC_US, N.PRICE_USD: pl.Float64()},
    N.SNAPSHOT_FILE: {N.USER_ID: pl.Int64(), N.NET_ASSETS_USD: pl.Float64()},
    N.USERS_FILE: {
        N.USER_ID: pl.Int64(),
        N.VIP_TIER: pl.Int64(),
        N.IS_INSTITUTIONAL: pl.Boolean(),
        N.REGION: pl.String(),
        N.CREATED_AT: _UTC_US,
        N.KYC_STATUS: pl.String(),
        N.DEPEG_COMP_USD: pl.Float64(),
    },
}

#: One recomputation per RunFiles: both checks share it.
_CACHE: weakref.WeakKeyDictionary[RunFiles, pl.DataFrame | Unavailable] = (
    weakref.WeakKeyDictionary()
)


# --------------------------------------------------------------------------- reading


def _typed(col: str, target: pl.DataType, have: pl.DataType) -> pl.Expr:
    c = pl.col(col)
    if have == pl.String and target != pl.String:  # CSV text
        s = c.str.strip_chars()
        if target == _UTC_US:
            return s.str.to_datetime(format="%+", time_unit="us", time_zone="UTC")
        if target == pl.Boolean:
            return s.str.to_lowercase().replace_strict(_BOOL_TEXT, return_dtype=pl.Boolean)
        return s.cast(target)
    if target == _UTC_US:
        if not isinstance(have, pl.Datetime) or have.time_zone is None:
            raise Unavailable(f"column {col!r} is {have}, not a time-zone-aware datetime")
        return c.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if isinstance(have, (pl.Categorical, pl.Enum)):
        return c.cast(pl.String).cast(target)
    return c.cast(target)


def _scan(r: RunFiles, stem: str) -> pl.LazyFrame:
    """One input table the manifest names, with the columns of :data:`_COLUMNS` typed."""
    meta = r.section("inputs", stem)
    if not isinstance(meta, Mapping) or "path" not in meta:
        raise Unavailable(f"{N.MANIFEST_FILE} inputs.{stem} has no path")
    path = Path(str(meta["path"]))
    if not path.is_file():
        raise Unavailable(f"{stem} input {path} not found")
    if path.suffix == ".parquet":
        scan = pl.scan_parquet(path)
    elif path.suffix == ".csv":
        scan = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
    else:
        raise Unavailable(f"{stem} input {path} is neither .parquet nor .csv")
    schema = scan.collect_schema()
    want = _COLUMNS[stem]
    missing = [c for c in want if c not in schema]
    if missing:
        raise Unavailable(f"{stem} input {path} has no column(s) {', '.join(missing)}")
    return scan.select(_typed(c, t, schema[c]).alias(c) for c, t in want.items())


def _scenario(r: RunFiles) -> Scenario:
    data = r.section("scenario")
    if not isinstance(data, Mapping):
        raise Unavailable(f"{N.MANIFEST_FILE} scenario is not an object")
    try:
        return parse_scenario(data, file=f"{N.MANIFEST_FILE} scenario")
    except AllocatorError as exc:
        raise Unavailable(f"the manifest's scenario does not parse: {exc}") from None


def _utc(dt: datetime) -> pl.Expr:
    return pl.lit(dt.astimezone(UTC)).cast(_UTC_US)


def _to_usd(nano: pl.Series) -> np.ndarray:
    # each element divided (correctly rounded), not multiplied by a rounded reciprocal
    return np.asarray(nano.cast(pl.Float64).to_numpy() / _NANO_PER_USD, dtype=np.float64)


# --------------------------------------------------------------------------- recomputation


def _nano(usd: pl.Expr) -> pl.Expr:
    return (usd * _NANO_PER_USD).round().cast(pl.Int128, strict=False)


def _per_user(r: RunFiles, scenario: Scenario) -> pl.DataFrame:
    """Per liquidated user: event counts and the exact nano-dollar sums of the counted events."""
    rules = scenario.eligibility
    products = list(dict.fromkeys(rules.products))
    events = _scan(r, N.EVENTS_FILE)
    covered = pl.col(N.PRODUCT).is_in(products)
    ts = pl.col(N.TS)
    in_window = (ts >= _utc(rules.window_start)) & (ts < _utc(rules.window_end))
    counts = events.group_by(N.USER_ID).agg(
        covered.sum().cast(pl.Int64).alias(_COVERED),
        in_window.sum().cast(pl.Int64).alias(_IN_WINDOW),
        (covered & in_window).sum().cast(pl.Int64).alias(N.N_EVENTS),
    )
    prices = (
        _scan(r, N.PRICES_FILE)
        .rename({N.ASSET: "_asset", N.PRICE_TS: "_bar", N.PRICE_USD: _PRICE})
        .sort("_bar")
    )
    amount = pl.col(N.REALISED_LOSS)
    if rules.include_fees:
        amount = amount + pl.col(N.LIQ_FEE)
    fee = pl.col(N.LIQ_FEE) * pl.col(_PRICE) if rules.include_fees else pl.lit(0.0)
    priced = (
        events.filter(covered & in_window)
        .with_columns(pl.col(N.SETTLE_ASSET).alias("_asset"))
        .sort(N.TS)
        .join_asof(
            prices,
            left_on=N.TS,
            right_on="_bar",
            by="_asset",
            strategy="backward",
            check_sortedness=False,
        )
        .with_columns(_nano(amount * pl.col(_PRICE)).alias(_LOSS_NANO), _nano(fee).alias(_FEE_NANO))
    )
    loss = pl.col(_LOSS_NANO)
    sums = priced.group_by(N.USER_ID).agg(
        loss.is_null().sum().cast(pl.Int64).alias(_UNPRICED),
        loss.sum().alias(_LOSS_NANO),
        pl.col(_FEE_NANO).sum().alias(_FEE_NANO),
        *(pl.when(pl.col(N.PRODUCT) == p).then(loss).sum().alias(f"_nano_{p}") for p in products),
    )
    frame = counts.join(sums, on=N.USER_ID, how="left").sort(N.USER_ID).collect()
    zero = pl.lit(0, dtype=pl.Int128)
    frame = frame.with_columns(
        pl.col(c).fill_null(zero)
        for c in [_LOSS_NANO, _FEE_NANO, *(f"_nano_{p}" for p in products)]
    ).with_columns(pl.col(_UNPRICED).fill_null(0))
    return frame.with_columns(
        pl.Series(N.GROSS_LOSS_USD, _to_usd(frame[_LOSS_NANO])),
        pl.Series(N.FEE_USD, _to_usd(frame[_FEE_NANO])),
        *(pl.Series(N.product_loss_column(p), _to_usd(frame[f"_nano_{p}"])) for p in products),
    )


def _bands(scenario: Scenario) -> tuple[Band, Band]:
    rules = scenario.eligibility
    low_l = None if rules.phase_in_loss_usd is None else float(rules.phase_in_loss_usd)
    low_r = None if rules.phase_in_ratio is None else float(rules.phase_in_ratio)
    return Band(low_l, float(rules.min_loss_usd)), Band(low_r, float(rules.min_loss_ratio))


def _decide(table: pl.DataFrame, scenario: Scenario, waive: np.ndarray) -> pl.DataFrame:
    """Add the reason (null: eligible), the phase factor and the rules waived to the joined
    per-user table; the users of ``waive`` (reinstated on appeal) are eligible whatever they
    fail, and a waived loss or ratio rule scales them by 1."""
    rules = scenario.eligibility
    loss = table[N.LOSS_USD].fill_null(float("nan")).to_numpy()
    ratio = table[N.LOSS_RATIO].fill_null(float("nan")).to_numpy()
    loss_band, ratio_band = _bands(scenario)

    def arr(expr: pl.Expr) -> np.ndarray:
        return table.select(expr.fill_null(False)).to_series().to_numpy().astype(bool)

    n_events = pl.col(N.N_EVENTS)
    in_users = arr(pl.col(_IN_USERS))
    in_snapshot = arr(pl.col(_IN_SNAPSHOT))
    outside = arr((n_events == 0) & (pl.col(_COVERED) > 0) & (pl.col(_IN_WINDOW) == 0))
    none_counted = arr(n_events == 0)
    region = arr(pl.col(N.REGION).is_in(list(rules.restricted_regions)))
    kyc = arr(pl.col(N.KYC_STATUS) != N.KYC_VERIFIED) if rules.require_kyc else None
    depeg = arr(pl.col(N.DEPEG_COMP_USD) > 0) if rules.depeg_policy == "exclude" else None
    nonpos = (
        arr(pl.col(N.NET_ASSETS_USD) <= 0) if rules.nonpositive_net_assets == "exclude" else None
    )
    no = np.zeros(table.height, dtype=bool)
    fails = {
        N.REASON_PRODUCT_NOT_COVERED: none_counted & ~outside,
        N.REASON_OUTSIDE_WINDOW: outside,
        N.REASON_NO_USER_RECORD: ~in_users,
        N.REASON_RESTRICTED_REGION: in_users & region,
        N.REASON_KYC: in_users & (no if kyc is None else kyc),
        N.REASON_DEPEG: in_users & (no if depeg is None else depeg),
        N.REASON_BELOW_MIN_LOSS: ~passes(loss, loss_band),
        N.REASON_NO_SNAPSHOT: ~in_snapshot,
        N.REASON_NONPOSITIVE_NET_ASSETS: in_snapshot & (no if nonpos is None else nonpos),
        N.REASON_BELOW_LOSS_RATIO: in_snapshot & ~passes(ratio, ratio_band),
    }
    reason = np.full(table.height, None, dtype=object)
    for code in reversed(N.REASONS):  # the first failing rule is written last
        reason[fails[code]] = code
    reason[waive] = None
    f_loss = np.where(waive & fails[N.REASON_BELOW_MIN_LOSS], 1.0, band_factor(loss, loss_band))
    f_ratio = np.where(
        waive & fails[N.REASON_BELOW_LOSS_RATIO], 1.0, band_factor(ratio, ratio_band)
    )
    return table.with_columns(
        pl.Series(N.REASON, reason.tolist(), dtype=pl.String),
        pl.Series(N.PHASE_FACTOR, f_loss * f_ratio, dtype=pl.Float64),
        pl.Series(WAIVED_RECOMPUTED, waived_text(fails, waive), dtype=pl.String),
    )


def _weights(table: pl.DataFrame, scenario: Scenario) -> np.ndarray:
    """Each user's weight under the scenario's objective (NaN where it cannot be formed)."""
    spec = scenario.objective
    loss = table[N.LOSS_USD].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if spec.rule in CLAIMS_RULES:
        return loss
    if spec.rule == RULE_MAX_MIN:
        return loss if spec.form == "coverage" else np.ones(table.height)
    if spec.rule != RULE_ALPHA_FAIR:
        raise Unavailable(f"unknown objective rule {spec.rule!r}")
    log_w = np.zeros(table.height)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if spec.loss_exponent != 0:
            log_w += spec.loss_exponent * np.log(loss)
        if spec.ratio_exponent != 0:
            ratio = table[N.LOSS_RATIO].fill_null(float("nan")).to_numpy()
            log_w += spec.ratio_exponent * np.log(np.minimum(ratio, spec.ratio_cap))
        for name, coef in spec.features:
            if coef == 0:
                continue
            if name not in table.columns:
                raise Unavailable(f"weight feature {name!r} is not a feature the check knows")
            x = table[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            log_w += coef * x
        if spec.form == "coverage" and spec.alpha != 1:
            log_w += (spec.alpha - 1.0) * np.log(loss)
        rules = scenario.eligibility
        if rules.phase_in_loss_usd is not None or rules.phase_in_ratio is not None:
            log_w += np.log(table[N.PHASE_FACTOR].to_numpy())
        return np.asarray(np.exp(log_w), dtype=np.float64)


def recompute_users(r: RunFiles) -> pl.DataFrame:
    """Every liquidated user recomputed from the inputs: ``user_id``, ``reason`` (null for the
    eligible), ``loss_usd``, ``loss_ratio``, ``phase_factor``, the weight features and the
    weight (column ``_weight``); cached per :class:`RunFiles`.

    Raises
    ------
    Unavailable
        An input file or the manifest's scenario cannot be read.
    """
    cached = _CACHE.get(r)
    if cached is None:
        try:
            cached = _recompute(r)
        except Unavailable as exc:
            cached = exc
        except Exception as exc:  # a damaged input is a finding, not a crash
            cached = Unavailable(f"inputs could not be recomputed ({type(exc).__name__}: {exc})")
        _CACHE[r] = cached
    if isinstance(cached, Unavailable):
        raise cached
    return cached


def _recompute(r: RunFiles) -> pl.DataFrame:
    scenario = _scenario(r)
    rules = scenario.eligibility
    per_user = _per_user(r, scenario)
    unpriced = per_user.filter(pl.col(_UNPRICED) > 0)
    if unpriced.height:
        raise Unavailable(
            f"{unpriced.height:,} user(s) have counted events without a price at or before "
            "them (the run should have been refused), "
            + examples(unpriced.select(N.USER_ID, _UNPRICED))
        )
    ids = per_user.select(N.USER_ID).lazy()
    users = (
        _scan(r, N.USERS_FILE)
        .join(ids, on=N.USER_ID, how="semi")
        .with_columns(pl.lit(True).alias(_IN_USERS))
    )
    snapshot = (
        _scan(r, N.SNAPSHOT_FILE)
        .join(ids, on=N.USER_ID, how="semi")
        .with_columns(pl.lit(True).alias(_IN_SNAPSHOT))
    )
    gross, depeg, net = pl.col(N.GROSS_LOSS_USD), pl.col(N.DEPEG_COMP_USD), pl.col(N.NET_ASSETS_USD)
    if rules.depeg_policy == "net":
        loss = pl.when(depeg.is_null()).then(None).otherwise(pl.max_horizontal(gross - depeg, 0.0))
    else:
        loss = gross
    snapshot_at = _utc(rules.snapshot_at)
    joined = (
        per_user.lazy()
        .join(users, on=N.USER_ID, how="left")
        .join(snapshot, on=N.USER_ID, how="left")
        .with_columns(pl.col(_IN_USERS).fill_null(False), pl.col(_IN_SNAPSHOT).fill_null(False))
        .sort(N.USER_ID)
        .collect()
    )
    # from round 2 on, the appeals' corrected values replace the inputs before any rule
    table = (
        corrected(r, joined, _IN_SNAPSHOT)
        .lazy()
        .with_columns(
            loss.alias(N.LOSS_USD),
            ((snapshot_at - pl.col(N.CREATED_AT)).dt.total_microseconds() // _US_PER_DAY)
            .cast(pl.Int64)
            .alias(N.ACCOUNT_AGE_DAYS),
        )
        .with_columns(
            pl.when(net <= 0)
            .then(float("inf"))
            .otherwise(pl.col(N.LOSS_USD) / net)
            .alias(N.LOSS_RATIO)
        )
        .collect()
    )
    table = forfeit(r, _decide(table, scenario, reinstated(r, table[N.USER_ID])))
    return table.with_columns(pl.Series(_W, _weights(table, scenario), dtype=pl.Float64))


# --------------------------------------------------------------------------- the checks


def _close(a: pl.Expr, b: pl.Expr, *, rtol: float, atol: float = 0.0) -> pl.Expr:
    """Whether two Float64 columns agree (equal infinities agree; NaN or null never does)."""
    same = (a == b).fill_null(False) | (a.is_null() & b.is_null())
    near = ((a - b).abs() <= atol + rtol * pl.max_horizontal(a.abs(), b.abs())).fill_null(False)
    return same | near


def _first(frame: pl.DataFrame, what: str) -> str:
    return f"{frame.height:,} {what}, " + examples(frame.sort(N.USER_ID))


def check_eligibility_recomputed(r: RunFiles) -> Result:
    mine = recompute_users(r)
    alloc, excl = r.allocations, r.excluded
    ours = mine.select(N.USER_ID, pl.col(N.REASON).alias("recomputed"))
    problems: list[str] = []

    a = alloc.select(N.USER_ID).join(ours, on=N.USER_ID, how="left")
    bad = a.filter(pl.col("recomputed").is_not_null())
    if bad.height:
        problems.append(_first(bad, "allocated user(s) the rules exclude"))
    unknown = a.filter(~pl.col(N.USER_ID).is_in(ours[N.USER_ID].implode()))
    if unknown.height:
        problems.append(_first(unknown.select(N.USER_ID), "allocated user(s) never liquidated"))
    allocated = alloc[N.USER_ID].implode()
    missing = ours.filter(pl.col("recomputed").is_null() & ~pl.col(N.USER_ID).is_in(allocated))
    if missing.height:
        missing = missing.join(excl.select(N.USER_ID, N.REASON), on=N.USER_ID, how="left")
        problems.append(
            _first(missing.select(N.USER_ID, N.REASON), "eligible user(s) not allocated")
        )
    e = excl.select(N.USER_ID, N.REASON).join(ours, on=N.USER_ID, how="inner")
    wrong = e.filter(
        pl.col("recomputed").is_not_null() & (pl.col(N.REASON) != pl.col("recomputed"))
    )
    if wrong.height:
        problems.append(_first(wrong, "excluded user(s) with another reason than the rules give"))

    cols = [N.LOSS_USD, N.LOSS_RATIO]
    phased = N.PHASE_FACTOR in alloc.columns
    rules = _scenario(r).eligibility
    if (rules.phase_in_loss_usd is not None or rules.phase_in_ratio is not None) != phased:
        problems.append(
            f"allocations {'have' if phased else 'lack'} a {N.PHASE_FACTOR} column, but the "
            f"scenario {'has no' if phased else 'has a'} phase-in band"
        )
    if phased:
        cols.append(N.PHASE_FACTOR)
    both = alloc.select(N.USER_ID, *cols).join(
        mine.select(N.USER_ID, *(pl.col(c).alias(f"{c}_recomputed") for c in cols)),
        on=N.USER_ID,
        how="inner",
    )
    for col in cols:
        atol = LOSS_ATOL_USD if col == N.LOSS_USD else 0.0
        rtol = LOSS_RTOL if col == N.LOSS_USD else RATIO_RTOL
        other = f"{col}_recomputed"
        off = both.filter(
            ~_close(pl.col(col).cast(pl.Float64), pl.col(other), rtol=rtol, atol=atol)
        ).select(N.USER_ID, col, other)
        if off.height:
            problems.append(_first(off, f"allocated user(s) whose {col} is not the recomputed one"))
    lost = excl.select(N.USER_ID, N.LOSS_USD).join(
        mine.select(N.USER_ID, pl.col(N.LOSS_USD).alias("recomputed")), on=N.USER_ID, how="inner"
    )
    off = lost.filter(
        ~_close(
            pl.col(N.LOSS_USD).cast(pl.Float64),
            pl.col("recomputed"),
            rtol=LOSS_RTOL,
            atol=LOSS_ATOL_USD,
        )
    )
    if off.height:
        problems.append(_first(off, "excluded user(s) whose loss_usd is not the recomputed one"))
    if problems:
        return False, "; ".join(problems)
    n_eligible = int(mine[N.REASON].is_null().sum())
    return True, (
        f"{mine.height:,} liquidated users recomputed from the inputs: the {n_eligible:,} "
        f"eligible are the allocated, {mine.height - n_eligible:,} excluded with the same "
        f"reasons, losses and ratios as recomputed"
    )


def check_weights_recomputed(r: RunFiles) -> Result:
    mine = recompute_users(r)
    alloc = r.allocations
    rule = _scenario(r).objective.rule
    both = alloc.select(N.USER_ID, N.WEIGHT).join(
        mine.filter(pl.col(N.REASON).is_null()).select(N.USER_ID, pl.col(_W).alias("recomputed")),
        on=N.USER_ID,
        how="inner",
    )
    skipped = alloc.height - both.height
    off = both.filter(
        ~_close(pl.col(N.WEIGHT).cast(pl.Float64), pl.col("recomputed"), rtol=WEIGHT_RTOL)
    )
    if off.height:
        return False, _first(off, "allocated user(s) whose weight is not the recomputed one")
    note = (
        f" ({skipped:,} allocated user(s) the rules exclude not compared: see eligibility "
        "recomputed)"
        if skipped
        else ""
    )
    what = "alpha-fair weights" if rule == RULE_ALPHA_FAIR else f"weights of rule {rule}"
    finite = bool(np.isfinite(both["recomputed"].to_numpy()).all()) if both.height else True
    if not finite:
        return False, "some recomputed weights are not finite"
    return True, f"{both.height:,} {what} equal the recomputed ones to {WEIGHT_RTOL:g}{note}"
