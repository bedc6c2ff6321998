"""The market domain's records: timeframes, instruments, bars, ticks, quotes and feed status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from services.core.bars import Bar
from services.core.errors import FieldViolation, InvalidArgument
from services.core.timeframes import EPOCH, Timeframe

# Bar, EPOCH and Timeframe live in core (the signal service uses them too); re-exported for the market's modules.
__all__ = ["EPOCH", "AssetClass", "Bar", "BarWindow", "Instrument", "Quote", "Tick", "Timeframe", "TradingSession"]


class AssetClass(IntEnum):
    """Numbers of bullant.market.v1.AssetClass."""

    UNSPECIFIED = 0
    STOCK = 1
    CRYPTO = 2
    FX = 3
    INDEX = 4


@dataclass(frozen=True, slots=True)
class BarWindow:
    """The open times a bar listing covers: from `start` (inclusive) to `end` (exclusive), either open-ended.
    INVALID_ARGUMENT TIME_RANGE_INVALID unless start is before end."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise InvalidArgument(FieldViolation("start_time", "must be before end_time"), reason="TIME_RANGE_INVALID")


@dataclass(frozen=True, slots=True, kw_only=True)
class TradingSession:
    """The trading calendar (see services.core.calendars; "" when not named) and regular trading hours in the venue's
    time zone ("HH:MM"), or always open."""

    always_open: bool = True
    open_local_time: str = ""
    close_local_time: str = ""
    description: str = "24/7"
    calendar: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    """A tradable or quoted thing (see bullant.market.v1.Instrument)."""

    symbol: str
    venue: str
    asset_class: AssetClass
    quote_currency: str
    venue_symbol: str = ""
    display_name: str = ""
    base_currency: str = ""
    tick_size: float = 0.0
    lot_size: float = 0.0
    timezone: str = "UTC"
    trading_session: TradingSession = field(default_factory=TradingSession)
    feed_id: str = ""
    simulated: bool = False
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade print (with the top of the book when known); `event_time` naive UTC. `sequence` is assigned by
    the publisher, strictly increasing per symbol."""

    symbol: str
    event_time: datetime
    price: float
    size: float
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    # 0 unknown, 1 buy, 2 sell (bullant.common.v1.Side).
    aggressor_side: int = 0
    sequence: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """The latest state of an instrument's market (see bullant.market.v1.Quote)."""

    symbol: str
    last_price: float
    last_tick_time: datetime
    sequence: int
    day_volume: float = 0.0
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    previous_close: float | None = None
    day_open: float | None = None
    day_high: float | None = None
    day_low: float | None = None
    simulated: bool = False
    stale: bool = False

    @property
    def change(self) -> float | None:
        return None if self.previous_close is None else self.last_price - self.previous_close

    @property
    def change_percent(self) -> float | None:
        if self.previous_close is None or self.previous_close == 0:
            return None
        return 100.0 * (self.last_price - self.previous_close) / self.previous_close
