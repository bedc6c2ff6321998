"""The feed adapter port: what every source of market data (simulator, replay, exchanges) offers the platform."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from enum import StrEnum

from services.market.records import Bar, Instrument, Tick, Timeframe


class Transport(StrEnum):
    """How an adapter receives data (bullant.market.v1.FeedTransport)."""

    INTERNAL = "internal"
    STREAMING = "streaming"
    POLLING = "polling"


class FeedError(Exception):
    """The source failed (connection lost, bad answer, rate limited); the feed runner reconnects with backoff.

    The message is what clients may see (ListFeeds, Backfill): what failed, in our words. `detail` keeps what the
    source or the network said (an exchange's error text, addresses) for the log only."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class HistoryNotSupported(Exception):
    """The adapter has no history for this instrument or timeframe."""


class FeedAdapter(ABC):
    """A source of market data. The feed runner (on the replica holding the feed's leader lock) calls:

    1. `await start()` – connect, load markets; may raise FeedError.
    2. `instruments()` – what the feed supplies (the runner stores them in the catalogue).
    3. `ticks(symbols)` – an async iterator of tick batches for live symbols, until cancelled or a FeedError. Each
       batch is a list of ticks in event order (sequence left 0: the runner numbers them). Between two batches
       (and while it has nothing to give) the iterator must suspend – sleep or wait for I/O: the runner consumes it
       on the server's event loop, and an iterator that never suspends would stall every call the server serves.
    4. `await stop()` – close connections. start() may be called again after stop() (reconnect).

    `history(...)` serves BackfillBars and may be called on any replica, started or not.
    """

    #: Adapter name: "sim", "replay", "ccxt".
    adapter: str = ""
    #: Whether the data is simulated (marked on its instruments and quotes).
    simulated: bool = False

    def __init__(self, feed_id: str) -> None:
        self.feed_id = feed_id

    @property
    def display_name(self) -> str:
        return self.feed_id

    @property
    def transport(self) -> Transport:
        """How ticks currently arrive (an adapter that fell back from streaming to polling says POLLING)."""
        return Transport.INTERNAL

    def degradation(self) -> str:
        """Why the adapter works in a fallback mode (e.g. "streaming failed; polling"), empty when it does not."""
        return ""

    def waiting_for(self) -> str:
        """What the adapter waits for before it can deliver any tick (e.g. "stored 1m bars of X"), empty when it
        is not waiting. A waiting feed is not stale: it is not reconnected for being quiet."""
        return ""

    @abstractmethod
    async def start(self) -> None:
        """Connect and load what the feed supplies."""

    @abstractmethod
    async def stop(self) -> None:
        """Close connections; idempotent."""

    @abstractmethod
    def instruments(self) -> Sequence[Instrument]:
        """The instruments this feed supplies live (after start())."""

    @abstractmethod
    def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        """Live ticks of `symbols`, in batches, until cancelled; raises FeedError when the source fails."""

    async def history(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Closed bars with open_time in [start, end), oldest first; HistoryNotSupported when there are none."""
        raise HistoryNotSupported(f"feed {self.feed_id} has no history")

    def history_timeframes(self, symbol: str) -> Sequence[Timeframe]:
        """Timeframes history() supplies directly (others are rolled up from 1m by the caller)."""
        return ()
