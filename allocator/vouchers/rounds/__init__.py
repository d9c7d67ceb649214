"""Distribution rounds: a later round after ``allocate --previous RUN_DIR`` (:mod:`.allocate`),
the voucher ledger and redemptions (:mod:`.ledger`), and appeals (:mod:`.appeals`)."""

from allocator.vouchers.rounds.allocate import (
    RoundResult,
    allocate_round,
    open_previous,
    write_round,
)

__all__ = ["RoundResult", "allocate_round", "open_previous", "write_round"]
