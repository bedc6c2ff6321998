"""The rules an imported bar must pass (in the contract's order), and how accepted bars compare with stored ones."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.core.clock import as_naive_utc
from services.market.imports.rows import RawRow, RowError
from services.market.records import Bar, Timeframe

_ALIGNMENT_RULES = {
    Timeframe.M1: "on whole minutes",
    Timeframe.M5: "on multiples of 5 minutes",
    Timeframe.M15: "on multiples of 15 minutes",
    Timeframe.H1: "on whole hours",
    Timeframe.D1: "at 00:00:00 UTC",
}


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat() + "Z"


class BarValidator:
    """Checks rows in input order for one timeframe; the first failing rule (in the contract's order) is reported.

    TIME_NOT_INCREASING compares with the last *accepted* row only, so a rejected row never changes another row's
    verdict: a typo'd time (say a year in the future) rejects that one row, not every row after it, and the verdicts
    are those the file would get with the bad rows deleted.
    """

    def __init__(self, timeframe: Timeframe) -> None:
        self._timeframe = timeframe
        self._last_accepted: datetime | None = None

    @property
    def last_accepted_time(self) -> datetime | None:
        return self._last_accepted

    def validate(self, row: RawRow, now: datetime) -> Bar | RowError:
        bar = _complete(row)
        if isinstance(bar, RowError):
            return bar
        error = _check_values(bar) or self._check_time(bar.open_time, as_naive_utc(now))
        if error is not None:
            field, reason, message = error
            return RowError(row.line, field, reason, message)
        self._last_accepted = bar.open_time
        return bar

    def _check_time(self, open_time: datetime, now: datetime) -> tuple[str, str, str] | None:
        tf = self._timeframe
        if not tf.aligned(open_time):
            message = f"time {_rfc3339(open_time)} is not aligned: {tf.label} bars open {_ALIGNMENT_RULES[tf]}"
            return "time", "TIME_NOT_ALIGNED", message
        if open_time > now - tf.delta:  # not open_time + delta: that overflows near datetime.max
            return (
                "time",
                "BAR_NOT_CLOSED",
                f"the {tf.label} bar at {_rfc3339(open_time)} has not closed by now ({_rfc3339(now)})",
            )
        if self._last_accepted is not None and open_time <= self._last_accepted:
            previous = _rfc3339(self._last_accepted)
            message = f"time {_rfc3339(open_time)} is not after the previous accepted row's time {previous}"
            return "time", "TIME_NOT_INCREASING", message
        return None


def _complete(row: RawRow) -> Bar | RowError:
    def missing(name: str) -> RowError:
        return RowError(row.line, name, "MISSING_VALUE", f"{name} is missing")

    if row.time is None:
        return missing("time")
    if row.open is None:
        return missing("open")
    if row.high is None:
        return missing("high")
    if row.low is None:
        return missing("low")
    if row.close is None:
        return missing("close")
    if row.volume is None:
        return missing("volume")
    return Bar(row.time, row.open, row.high, row.low, row.close, row.volume, row.trade_count)


def _check_values(bar: Bar) -> tuple[str, str, str] | None:
    prices = {"open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close}
    for name, value in (*prices.items(), ("volume", bar.volume)):
        if not math.isfinite(value):
            return name, "NOT_FINITE", f"{name} {value} is not finite"
    for name, value in prices.items():
        if value <= 0:
            return name, "PRICE_NOT_POSITIVE", f"{name} {value} is not positive"
    top_name, top = ("close", bar.close) if bar.close > bar.open else ("open", bar.open)
    if bar.high < top:
        return "high", "HIGH_TOO_LOW", f"high {bar.high} is below {top_name} {top}"
    bottom_name, bottom = ("close", bar.close) if bar.close < bar.open else ("open", bar.open)
    if bar.low > bottom:
        return "low", "LOW_TOO_HIGH", f"low {bar.low} is above {bottom_name} {bottom}"
    if bar.volume < 0:
        return "volume", "VOLUME_NEGATIVE", f"volume {bar.volume} is negative"
    if bar.trade_count is not None and bar.trade_count < 0:
        # The contract has no reason of its own for this; a count below zero is not a count.
        return "trade_count", "PARSE_ERROR", f"trade_count {bar.trade_count} is negative"
    return None


@dataclass
class ImportPlan:
    """What writing accepted bars would do to the store."""

    inserts: list[Bar]
    updates: list[Bar]
    unchanged: int


def classify(accepted: Sequence[Bar], stored: Mapping[datetime, Bar]) -> ImportPlan:
    """Compares every value exactly: the store keeps float64 (DOUBLE / REAL) bit for bit, so a re-imported file whose
    values did not change compares equal and is counted unchanged."""
    plan = ImportPlan([], [], 0)
    for bar in accepted:
        old = stored.get(bar.open_time)
        if old is None:
            plan.inserts.append(bar)
        elif old == bar:
            plan.unchanged += 1
        else:
            plan.updates.append(bar)
    return plan
