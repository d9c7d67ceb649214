r"""A run directory's files, read lazily for the checks: every read that fails becomes
:class:`Unavailable`, so the checks that need it fail as "not checked" and the others still run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.runs.manifest import read_manifest
from allocator.runs.reader import read_parquet_file, read_payouts_csv

#: Example rows a failing check names.
EXAMPLES = 3
T = TypeVar("T")


class Unavailable(Exception):
    """Something a check needs could not be read; the check fails as 'not checked'."""


def examples(frame: pl.DataFrame, k: int = EXAMPLES) -> str:
    rows = frame.head(k).to_dicts()
    text = "; ".join(", ".join(f"{key}={val}" for key, val in row.items()) for row in rows)
    return f"e.g. {text}" + (" ..." if frame.height > k else "")


def duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(N.USER_ID).len().filter(pl.col("len") > 1).sort(N.USER_ID)


class RunFiles:
    """Lazy, cached access to a run directory's contents; failures become Unavailable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def _load(loader: Callable[[], T]) -> T | Unavailable:
        # kept, not raised: every check that needs the file fails with the same reason
        try:
            return loader()
        except InputError as exc:
            return Unavailable(exc.message)

    @staticmethod
    def _get(value: T | Unavailable) -> T:
        if isinstance(value, Unavailable):
            raise value
        return value

    @cached_property
    def _manifest(self) -> dict[str, Any] | Unavailable:
        # strict: a NaN or Infinity in a number the checks compare is refused, not compared
        return self._load(lambda: read_manifest(self.path / N.MANIFEST_FILE, strict=True))

    @cached_property
    def _allocations(self) -> pl.DataFrame | Unavailable:
        return self._load(lambda: read_parquet_file(self.path / N.ALLOCATIONS_FILE))

    @cached_property
    def _excluded(self) -> pl.DataFrame | Unavailable:
        return self._load(lambda: read_parquet_file(self.path / N.EXCLUDED_FILE))

    @cached_property
    def _payouts(self) -> pl.DataFrame | Unavailable:
        return self._load(lambda: read_payouts_csv(self.path / N.PAYOUTS_FILE))

    @cached_property
    def _vouchers(self) -> pl.DataFrame | Unavailable:
        return self._load(lambda: read_parquet_file(self.path / N.VOUCHERS_FILE))

    @cached_property
    def _appeals(self) -> pl.DataFrame | Unavailable:
        return self._load(lambda: read_parquet_file(self.path / N.APPEALS_FILE))

    @property
    def vouchers(self) -> pl.DataFrame:
        """vouchers.parquet of a round after the first."""
        return self._get(self._vouchers)

    @property
    def appeals(self) -> pl.DataFrame:
        """appeals.parquet of a round after the first."""
        return self._get(self._appeals)

    @cached_property
    def round(self) -> int:
        """The run's round: ``round.number`` of the manifest, 1 without a ``round`` section (or
        without a readable manifest: the checks of the data files alone then still run, and
        the manifest's own checks report it)."""
        manifest = self._manifest
        if isinstance(manifest, Unavailable) or not isinstance(manifest, dict):
            return 1
        section = manifest.get("round")
        if section is None:
            return 1
        number = section.get("number") if isinstance(section, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise Unavailable(
                f"{N.MANIFEST_FILE} round.number is not a whole number >= 1: {number!r}"
            )
        return number

    @property
    def later_round(self) -> bool:
        """Whether the run is round 2 or later of a distribution (``allocate --previous``)."""
        return self.round > 1

    def forfeited(self) -> pl.Series:
        """Users with an expired voucher in the run's ledger (none in round 1)."""
        if not self.later_round:
            return pl.Series(N.USER_ID, [], dtype=pl.Int64)
        v = self.vouchers
        return v.filter(pl.col(N.STATUS) == N.VOUCHER_EXPIRED)[N.USER_ID].unique().sort()

    def waived(self) -> pl.DataFrame:
        """``user_id`` and ``waived`` of the reinstated users in force (none in round 1)."""
        if not self.later_round:
            return pl.DataFrame(schema={N.USER_ID: pl.Int64, N.WAIVED: pl.String})
        a = self.appeals
        return a.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE).select(N.USER_ID, N.WAIVED)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._get(self._manifest)

    @property
    def allocations(self) -> pl.DataFrame:
        return self._get(self._allocations)

    @property
    def excluded(self) -> pl.DataFrame:
        return self._get(self._excluded)

    @property
    def payouts(self) -> pl.DataFrame:
        return self._get(self._payouts)

    def section(self, *keys: str) -> Any:
        """``manifest[k1][k2]...``; Unavailable naming the missing key."""
        node: Any = self.manifest
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[: depth + 1])
                raise Unavailable(f"{N.MANIFEST_FILE} has no {where}")
            node = node[key]
        return node

    def money(self, key: str) -> int:
        value = self.section("money", key)
        if key == "exhaust":
            if not isinstance(value, bool):
                raise Unavailable(f"{N.MANIFEST_FILE} money.exhaust is not true/false: {value!r}")
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise Unavailable(
                f"{N.MANIFEST_FILE} money.{key} is not a whole number of cents: {value!r}"
            )
        return value

    @cached_property
    def paid_cents(self) -> int:
        return int(self.allocations[N.VOUCHER_CENTS].sum())

    @cached_property
    def _liquidated(self) -> pl.Series | Unavailable:
        try:
            meta = self.section("inputs", N.EVENTS_FILE)
            path = Path(meta["path"]) if isinstance(meta, dict) and "path" in meta else None
            if path is None:
                raise Unavailable(f"{N.MANIFEST_FILE} inputs.{N.EVENTS_FILE} has no path")
            if not path.is_file():
                raise Unavailable(f"liquidations input {path} not found")
            if path.suffix == ".parquet":
                scan = pl.scan_parquet(path)
            elif path.suffix == ".csv":
                scan = pl.scan_csv(path, infer_schema=False)
            else:
                raise Unavailable(f"liquidations input {path} is neither .parquet nor .csv")
            users = scan.select(pl.col(N.USER_ID).cast(pl.Int64, strict=True)).unique().collect()
            return users[N.USER_ID]
        except Unavailable as exc:
            return exc
        except Exception as exc:  # a damaged input file is a finding, not a crash
            return Unavailable(f"liquidations input unreadable ({type(exc).__name__}: {exc})")

    @property
    def liquidated(self) -> pl.Series:
        return self._get(self._liquidated)


Result = tuple[bool, str]


def manifest_number(r: RunFiles, *keys: str) -> float:
    """A number of the manifest as a float; strict JSON writes infinities as ``"inf"``."""
    value = r.section(*keys)
    where = ".".join(keys)
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf"):
        return -math.inf if value.strip().startswith("-") else math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise Unavailable(f"{N.MANIFEST_FILE} {where} is not a number: {value!r}")
    return float(value)
