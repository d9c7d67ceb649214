"""Column, file, product and reason-code names shared by every module.

One place for every string key keeps the data pipeline, the model, the run directory and the CLI
in step (the cvxmarkowitz ``names`` idea): a column is renamed here or nowhere.
"""

from __future__ import annotations

# --- input files: a data directory holds each table as ``<stem>.parquet`` or ``<stem>.csv`` ---
EVENTS_FILE = "liquidations"
PRICES_FILE = "prices"
SNAPSHOT_FILE = "snapshot"
USERS_FILE = "users"
INPUT_TABLES = (EVENTS_FILE, PRICES_FILE, SNAPSHOT_FILE, USERS_FILE)

# --- liquidations: one row per forced-liquidation event ---
EVENT_ID = "event_id"  # Int64, unique
USER_ID = "user_id"  # Int64
TS = "ts"  # Datetime[us, UTC]
PRODUCT = "product"  # String, one of PRODUCTS
SYMBOL = "symbol"  # String, e.g. BTCUSDT, BTCUSD_PERP
SIDE = "side"  # String, one of SIDES
QUANTITY = "quantity"  # Float64 >= 0, base-asset units liquidated
LIQ_PRICE = "liq_price"  # Float64 > 0, quote units
REALISED_LOSS = "realised_loss"  # Float64 >= 0, in SETTLE_ASSET units
LIQ_FEE = "liq_fee"  # Float64 >= 0, in SETTLE_ASSET units
SETTLE_ASSET = "settle_asset"  # String, asset of realised_loss and liq_fee (USDT, BTC, ...)
COLLATERAL = "collateral"  # String, collateral assets joined by COLLATERAL_SEP
COLLATERAL_SEP = "|"

# --- prices: USD price per asset, bars of any width; an event takes the latest bar at or before it ---
ASSET = "asset"  # String
PRICE_TS = "ts"  # Datetime[us, UTC]
PRICE_USD = "price_usd"  # Float64 > 0

# --- snapshot: net assets at 2025-10-09 23:59 UTC ---
NET_ASSETS_USD = "net_assets_usd"  # Float64, may be zero or negative

# --- user attributes ---
VIP_TIER = "vip_tier"  # Int64, 0..9
IS_INSTITUTIONAL = "is_institutional"  # Boolean
REGION = "region"  # String, ISO 3166-1 alpha-2
CREATED_AT = "created_at"  # Datetime[us, UTC]
KYC_STATUS = "kyc_status"  # String, one of KYC_STATUSES
DEPEG_COMP_USD = "depeg_comp_usd"  # Float64 >= 0, depeg compensation already received

# --- vocabularies ---
USDM_FUTURES = "usdm_futures"
COINM_FUTURES = "coinm_futures"
CROSS_MARGIN = "cross_margin"
ISOLATED_MARGIN = "isolated_margin"
OPTIONS = "options"
SPOT = "spot"
LOAN = "loan"
COVERED_PRODUCTS = (USDM_FUTURES, COINM_FUTURES, CROSS_MARGIN, ISOLATED_MARGIN)
PRODUCTS = COVERED_PRODUCTS + (OPTIONS, SPOT, LOAN)
SIDES = ("long", "short")
KYC_VERIFIED = "verified"
KYC_STATUSES = (KYC_VERIFIED, "pending", "unverified")
DEPEG_ASSETS = ("USDe", "BNSOL", "WBETH")

# --- feature matrix (eligible.parquet) ---
LOSS_USD = "loss_usd"  # counted loss after the depeg policy, USD
GROSS_LOSS_USD = "gross_loss_usd"  # counted loss before any depeg netting, USD
FEE_USD = "fee_usd"  # liquidation fees inside loss_usd, USD
LOSS_RATIO = "loss_ratio"  # loss_usd / net_assets_usd; +inf when net assets <= 0
N_EVENTS = "n_events"  # counted events
FIRST_EVENT_TS = "first_event_ts"
LAST_EVENT_TS = "last_event_ts"
ACCOUNT_AGE_DAYS = "account_age_days"  # whole days from created_at to the snapshot
PHASE_FACTOR = "phase_factor"  # in (0, 1]; only when a phase-in band is configured


def product_loss_column(product: str) -> str:
    """Feature-matrix column holding the USD loss on one covered product."""
    return f"loss_{product}_usd"


# --- exclusions (excluded.parquet) ---
REASON = "reason"
DETAIL = "detail"
# Checked in this order; a user is excluded with the first rule that fails.
REASON_PRODUCT_NOT_COVERED = "product_not_covered"
REASON_OUTSIDE_WINDOW = "outside_window"
REASON_NO_USER_RECORD = "no_user_record"
REASON_RESTRICTED_REGION = "restricted_region"
REASON_KYC = "kyc_not_verified"
REASON_DEPEG = "depeg_compensated"
REASON_BELOW_MIN_LOSS = "below_min_loss"
REASON_NO_SNAPSHOT = "no_snapshot"
REASON_NONPOSITIVE_NET_ASSETS = "nonpositive_net_assets"
REASON_BELOW_LOSS_RATIO = "below_loss_ratio"
REASONS = (
    REASON_PRODUCT_NOT_COVERED,
    REASON_OUTSIDE_WINDOW,
    REASON_NO_USER_RECORD,
    REASON_RESTRICTED_REGION,
    REASON_KYC,
    REASON_DEPEG,
    REASON_BELOW_MIN_LOSS,
    REASON_NO_SNAPSHOT,
    REASON_NONPOSITIVE_NET_ASSETS,
    REASON_BELOW_LOSS_RATIO,
)

# --- eligibility outputs ---
ELIGIBLE_FILE = "eligible.parquet"
EXCLUDED_FILE = "excluded.parquet"

# --- run directory ---
ALLOCATIONS_FILE = "allocations.parquet"
MANIFEST_FILE = "manifest.json"
PAYOUTS_FILE = "payouts.csv"
VOUCHER_CENTS = "voucher_cents"  # Int64
VOUCHER_USD = "voucher_usd"  # Float64, voucher_cents / 100
WEIGHT = "weight"
BOUND = "bound"  # one of BOUND_STATES
SEGMENT = "segment"  # segment name, or null
BOUND_FLOOR = "floor"
BOUND_CAP = "cap"
BOUND_INTERIOR = "interior"
BOUND_STATES = (BOUND_FLOOR, BOUND_INTERIOR, BOUND_CAP)
#: From round 2 on: at the lower bound raised to what the user held (no claw-back), below the cap.
BOUND_HELD = "held"
ROUND_BOUND_STATES = (*BOUND_STATES, BOUND_HELD)
AMOUNT = "amount"
BATCH = "batch"
IDEMPOTENCY_KEY = "idempotency_key"

# --- distribution rounds (allocate --previous): the run directory of round 2 and later ---
VOUCHERS_FILE = "vouchers.parquet"  # every voucher issued so far and what became of it
APPEALS_FILE = "appeals.parquet"  # every appeal decided so far
PAID_BEFORE_CENTS = "paid_before_cents"  # Int64, what the user held before this round
DELTA_CENTS = "delta_cents"  # Int64, voucher_cents - paid_before_cents, paid this round
ROUND = "round"  # Int64, the round a voucher was issued or an appeal decided in
CENTS = "cents"  # Int64, one voucher's amount
STATUS = "status"  # String, one of VOUCHER_STATUSES
SETTLED_ROUND = "settled_round"  # Int64, the round whose redemptions file settled it, or null
VOUCHER_OUTSTANDING = "outstanding"  # no redemptions file has named it yet
VOUCHER_REDEEMED = "redeemed"  # redeemed by the deadline
VOUCHER_UNCLAIMED = "unclaimed"  # not redeemed, kept valid (rounds.unclaimed = "keep")
VOUCHER_EXPIRED = "expired"  # not redeemed, taken back into the pool (rounds.unclaimed = "expire")
VOUCHER_STATUSES = (VOUCHER_OUTSTANDING, VOUCHER_REDEEMED, VOUCHER_UNCLAIMED, VOUCHER_EXPIRED)
REDEEMED = "redeemed"  # Boolean column of a redemptions file
DECISION = "decision"  # String, one of APPEAL_DECISIONS
NOTE = "note"  # String, the appeal's reason in words
WAIVED = "waived"  # String, the rules a reinstatement waived, joined by "+", or null
OUTCOME = "outcome"  # String, "eligible" or "excluded:<reason>" after the appeal
DECISION_REINSTATE = "reinstate"
DECISION_UPHOLD = "uphold"
DECISION_CORRECT = "correct"
APPEAL_DECISIONS = (DECISION_REINSTATE, DECISION_UPHOLD, DECISION_CORRECT)
#: Values an appeal may correct, each a column of the users table, the snapshot or the loss.
CORRECTABLE = (GROSS_LOSS_USD, NET_ASSETS_USD, DEPEG_COMP_USD, KYC_STATUS, REGION)
#: Excluded from a round on: every voucher of the user expired unclaimed (rounds.unclaimed =
#: "expire"), so the user forfeited and holds nothing. Not an eligibility rule.
REASON_VOUCHER_EXPIRED = "voucher_expired"
ROUND_REASONS = (REASON_VOUCHER_EXPIRED,)
