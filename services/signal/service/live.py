"""Live signals' use cases: stream the platform's signals and the caller's alert firings (replayed from the stores,
then followed on this replica's hub, with heartbeats), list and read stored signals, and aggregate their scored
performance. The engine that produces the signals is services/signal/live/engine.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.core.accounts import AccountRef
from services.core.clock import utc_now
from services.core.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.core.market_data import MarketData
from services.core.paging import (
    NAME,
    Cursor,
    Integer,
    Page,
    PageTokens,
    Row,
    keyset_after,
    keyset_cursor,
    keyset_page,
)
from services.core.settings import SignalSettings
from services.core.timeframes import Timeframe
from services.signal.alerts.rules import alert_id_of, alert_not_found
from services.signal.alerts.store import AlertStore
from services.signal.live.encoding import firing_envelope, signal_envelope
from services.signal.live.firing_store import FiringFilter, FiringStore
from services.signal.live.hub import Listener, SignalHub, StreamFilter, WatchRegistry
from services.signal.live.outcome_store import OutcomeStore
from services.signal.live.performance import PerformanceRow, group_rows
from services.signal.live.records import HORIZONS, Firing, LiveSignal, SeriesKey
from services.signal.live.signal_store import SignalFilter, SignalStore
from services.signal.validation import BarRange, find_strategy

REPLAY_WINDOW = timedelta(hours=24)
# Stored events read per replay query; signals of one group GetSignalPerformance reads at most.
_REPLAY_PAGE = 500
_MAX_GROUP_SIGNALS = 1_000_000
_SIGNAL_ID = re.compile(r"^sig_[0-9a-f]{28}$")
# What the live lists' page tokens hold: ListSignals' (bar time, signal or firing id), GetSignalPerformance's row key
# (strategy id, symbol, timeframe, horizon).
_SIGNALS_CURSOR = keyset_cursor("signal.ListSignals")
_PERFORMANCE_CURSOR = Cursor.of(
    "signal.GetSignalPerformance", after=Row((NAME, NAME, Integer(0, 2**31 - 1), Integer(0, 2**31 - 1)))
)


class Heartbeat:
    """A stream item that says the stream is alive (the servicer sends the server's time)."""


HEARTBEAT = Heartbeat()
# A stream item: a pre-encoded StreamSignalsResponse, or a heartbeat.
StreamItem = bytes | Heartbeat


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamPolicy:
    """How this replica serves StreamSignals."""

    # The timeframes a stream's listed symbols are watched in when the request names none.
    timeframes: tuple[Timeframe, ...]
    heartbeat_seconds: float
    # Concurrent StreamSignals per account on this server.
    max_streams: int = 32

    @classmethod
    def from_settings(cls, signal: SignalSettings, *, max_streams: int) -> StreamPolicy:
        """The signal settings' timeframes and heartbeat, with the server's limit of streams per account."""
        return cls(
            timeframes=signal.timeframes(), heartbeat_seconds=signal.signal_heartbeat_seconds, max_streams=max_streams
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRequest:
    """What a StreamSignals caller asks for (empty collections: everything), and where its replay starts."""

    symbols: list[str]
    strategy_ids: list[str]
    timeframes: list[Timeframe]
    grades: list[int]
    alerts_only: bool = False
    replay_since: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalQuery:
    """ListSignals' filters (empty collections and None match everything; `side` 0: both)."""

    symbols: list[str]
    strategy_ids: list[str]
    timeframes: list[Timeframe]
    grades: list[int]
    side: int = 0
    start: datetime | None = None
    end: datetime | None = None
    technical_only: bool | None = None
    alert_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceQuery:
    """GetSignalPerformance's filters ("" and 0 match everything; no horizons: every scored horizon)."""

    strategy_id: str = ""
    symbol: str = ""
    timeframe: int = 0
    horizons: list[int] = field(default_factory=list)
    grades: list[int] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None


def signal_not_found(signal_id: str) -> NotFound:
    return NotFound(f"no signal {signal_id[:64]!r}", reason="SIGNAL_NOT_FOUND", metadata={"signal_id": signal_id[:64]})


async def _merged(*sources: AsyncIterator[tuple[datetime, bytes]]) -> AsyncIterator[bytes]:
    """The payloads of time-ordered sources, in time order."""
    heads = [await anext(source, None) for source in sources]
    while True:
        ready = [index for index, head in enumerate(heads) if head is not None]
        if not ready:
            return
        index = min(ready, key=lambda position: heads[position][0])  # type: ignore[index]
        yield heads[index][1]  # type: ignore[index]
        heads[index] = await anext(sources[index], None)


class LiveSignals:
    """The live signals this replica serves: stored ones from the shared stores, new ones from its hub."""

    def __init__(
        self,
        market: MarketData,
        *,
        signals: SignalStore,
        outcomes: OutcomeStore,
        firings: FiringStore,
        alerts: AlertStore,
        hub: SignalHub,
        watch: WatchRegistry,
        draining: asyncio.Event,
        pages: PageTokens,
        policy: StreamPolicy,
    ) -> None:
        self._market = market
        self._signals = signals
        self._outcomes = outcomes
        self._firings = firings
        self._alerts = alerts
        self._hub = hub
        self._watch = watch
        self._draining = draining
        self._pages = pages
        self._policy = policy
        # Open streams per account on this replica.
        self._streams: Counter[int] = Counter()

    # -- StreamSignals ----------------------------------------------------------------------------------------------

    async def stream(self, owner: AccountRef, request: StreamRequest) -> AsyncGenerator[StreamItem, None]:
        """A heartbeat, the replay (when asked), then what the hub publishes, with a heartbeat whenever nothing
        comes for a while: STRATEGY_NOT_FOUND, REPLAY_WINDOW_EXCEEDED, SYMBOL_NOT_FOUND, TOO_MANY_STREAMS first;
        SUBSCRIBER_TOO_SLOW or SERVER_DRAINING end it."""
        for index, strategy_id in enumerate(request.strategy_ids):
            find_strategy(strategy_id, f"strategy_ids[{index}]")
        since = request.replay_since
        if since is not None and since < utc_now() - REPLAY_WINDOW:
            raise InvalidArgument(
                FieldViolation("replay_since_time", "at most 24 hours back; use ListSignals for older signals"),
                reason="REPLAY_WINDOW_EXCEEDED",
            )
        await asyncio.gather(*(self._market.instrument(symbol) for symbol in request.symbols))
        policy = self._policy
        if self._streams[owner.account_id] >= policy.max_streams:
            raise ResourceExhausted(
                f"at most {policy.max_streams} signal streams per account on this server",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=5.0,
            )
        wanted = StreamFilter(
            account_id=owner.account_id,
            symbols=frozenset(request.symbols),
            strategy_ids=frozenset(request.strategy_ids),
            timeframes=frozenset(int(timeframe) for timeframe in request.timeframes),
            grades=frozenset(request.grades),
            alerts_only=request.alerts_only,
        )
        # Listen before the replay reads the stores: what is published meanwhile waits in the queue.
        listener = self._hub.listen(wanted)
        timeframes = request.timeframes or policy.timeframes
        series = [SeriesKey(symbol, timeframe) for symbol in request.symbols for timeframe in timeframes]
        self._watch.add(series)
        self._streams[owner.account_id] += 1
        try:
            yield HEARTBEAT
            if since is not None:
                async for payload in self._replay(owner, wanted, since):
                    yield payload
            async for item in self._follow(listener):
                yield item
        finally:
            self._hub.forget(listener)
            self._watch.remove(series)
            self._streams[owner.account_id] -= 1
            if self._streams[owner.account_id] <= 0:
                del self._streams[owner.account_id]

    async def _follow(self, listener: Listener) -> AsyncIterator[StreamItem]:
        while True:
            if listener.overflowed:
                raise ResourceExhausted(
                    "the stream fell too far behind; reconnect with replay_since_time", reason="SUBSCRIBER_TOO_SLOW"
                )
            if listener.closed or self._draining.is_set():
                raise Unavailable("the server is shutting down: reconnect", reason="SERVER_DRAINING")
            if not listener.queue.empty():
                yield listener.queue.get_nowait()
                continue
            listener.wake.clear()
            try:
                async with asyncio.timeout(self._policy.heartbeat_seconds):
                    await listener.wake.wait()
            except TimeoutError:
                yield HEARTBEAT

    async def _replay(self, owner: AccountRef, wanted: StreamFilter, since: datetime) -> AsyncIterator[bytes]:
        sources = [self._replayed_firings(owner, wanted, since)]
        if not wanted.alerts_only:
            sources.append(self._replayed_signals(wanted, since))
        async for payload in _merged(*sources):
            yield payload

    async def _replayed_signals(self, wanted: StreamFilter, since: datetime) -> AsyncIterator[tuple[datetime, bytes]]:
        where = SignalFilter(
            symbols=sorted(wanted.symbols),
            strategy_ids=sorted(wanted.strategy_ids),
            timeframes=sorted(wanted.timeframes),
            grades=sorted(wanted.grades),
        )
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._signals.created_since(where, since, after=after, limit=_REPLAY_PAGE)
            for signal in page:
                yield signal.create_time, signal_envelope(signal).payload
            if len(page) < _REPLAY_PAGE:
                return
            after = page[-1].create_time, page[-1].signal_id

    async def _replayed_firings(
        self, owner: AccountRef, wanted: StreamFilter, since: datetime
    ) -> AsyncIterator[tuple[datetime, bytes]]:
        names: dict[str, str] = {}
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._firings.since(owner, since, after=after, limit=_REPLAY_PAGE)
            found = await self._signals.get_many(sorted({firing.signal_id for firing in page}))
            for firing in page:
                signal = found.get(firing.signal_id)
                if signal is None:
                    continue
                if firing.alert_id not in names:
                    rule = await self._alerts.get(owner, firing.alert_id)
                    names[firing.alert_id] = rule.display_name if rule is not None else ""
                envelope = firing_envelope(firing, names[firing.alert_id], signal)
                if wanted.wants(envelope):
                    yield firing.trigger_time, envelope.payload
            if len(page) < _REPLAY_PAGE:
                return
            after = page[-1].trigger_time, page[-1].firing_id

    # -- ListSignals and GetSignal ----------------------------------------------------------------------------------

    async def find(self, owner: AccountRef, query: SignalQuery, *, size: int, page_token: str) -> Page[LiveSignal]:
        """Stored signals newest bar first (those that fired one of the caller's rules with `alert_id`)."""
        BarRange(query.start, query.end)
        digest = json.dumps(
            [
                query.symbols,
                query.strategy_ids,
                query.timeframes,
                query.grades,
                query.side,
                str(query.start),
                str(query.end),
                query.technical_only,
                query.alert_id,
            ]
        )
        if query.alert_id:
            return await self._alert_signals(owner, query, size=size, page_token=page_token, digest=digest)
        where = SignalFilter(
            symbols=query.symbols,
            strategy_ids=query.strategy_ids,
            timeframes=query.timeframes,
            grades=query.grades,
            side=query.side,
            start=query.start,
            end=query.end,
            technical_only=query.technical_only,
        )
        return await keyset_page(
            self._pages,
            _SIGNALS_CURSOR,
            page_token,
            query=digest,
            size=size,
            fetch=lambda after, limit: self._signals.find(where, after=keyset_after(after), limit=limit),
            position=lambda signal: {"t": signal.bar_time, "id": signal.signal_id},
        )

    async def _alert_signals(
        self, owner: AccountRef, query: SignalQuery, *, size: int, page_token: str, digest: str
    ) -> Page[LiveSignal]:
        """The signals that fired one of the caller's rules, newest bar first."""
        where = FiringFilter(
            grades=query.grades,
            side=query.side,
            start=query.start,
            end=query.end,
            technical_only=query.technical_only,
        )

        async def fetch(after: dict[str, Any] | None, limit: int) -> list[Firing]:
            # Read once the token is: a token this list did not issue is refused before the rule is looked up.
            rule = await self._alerts.get(owner, alert_id_of(query.alert_id))
            if rule is None:
                raise alert_not_found(query.alert_id)
            if (
                (query.symbols and rule.symbol not in query.symbols)
                or (query.strategy_ids and rule.strategy_id not in query.strategy_ids)
                or (query.timeframes and rule.timeframe not in query.timeframes)
            ):
                return []
            return await self._firings.of_alert(owner, rule.alert_id, where, after=keyset_after(after), limit=limit)

        firings = await keyset_page(
            self._pages,
            _SIGNALS_CURSOR,
            page_token,
            query=digest,
            size=size,
            fetch=fetch,
            position=lambda firing: {"t": firing.bar_time, "id": firing.firing_id},
        )
        found = await self._signals.get_many([firing.signal_id for firing in firings.items])
        signals = [found[firing.signal_id] for firing in firings.items if firing.signal_id in found]
        return Page(signals, firings.next_page_token)

    async def get(self, owner: AccountRef, signal_id: str) -> LiveSignal:
        """A platform signal, or one that fired the caller's rule: SIGNAL_NOT_FOUND otherwise."""
        signal_id = signal_id.strip()
        if not signal_id:
            raise InvalidArgument(FieldViolation("signal_id", "is required"))
        if not _SIGNAL_ID.match(signal_id):
            raise signal_not_found(signal_id)
        signal = await self._signals.get(signal_id)
        if signal is None or (not signal.platform and not await self._firings.fired_by(owner, signal_id)):
            raise signal_not_found(signal_id)
        return signal

    # -- GetSignalPerformance ---------------------------------------------------------------------------------------

    async def performance(self, query: PerformanceQuery, *, size: int, page_token: str) -> Page[PerformanceRow]:
        """Scored performance per (strategy, symbol, timeframe, horizon), computed from the stored returns."""
        symbol = query.symbol.upper()
        horizons = sorted(set(query.horizons)) or list(HORIZONS)
        if query.strategy_id:
            find_strategy(query.strategy_id)
        BarRange(query.start, query.end)
        digest = json.dumps(
            [query.strategy_id, symbol, query.timeframe, horizons, query.grades, str(query.start), str(query.end)]
        )
        where = SignalFilter(
            symbols=[symbol] if symbol else (),
            strategy_ids=[query.strategy_id] if query.strategy_id else (),
            timeframes=[query.timeframe] if query.timeframe else (),
            grades=query.grades,
            start=query.start,
            end=query.end,
        )
        return await keyset_page(
            self._pages,
            _PERFORMANCE_CURSOR,
            page_token,
            query=digest,
            size=size,
            fetch=lambda position, limit: self._performance_rows(
                where, horizons, position["after"] if position else None, limit
            ),
            position=lambda row: {"after": row.key},
        )

    async def _performance_rows(
        self, where: SignalFilter, horizons: Sequence[int], after: tuple[str, str, int, int] | None, wanted: int
    ) -> list[PerformanceRow]:
        """Up to `wanted` rows after the key `after`, computed group by group from the stored returns."""
        rows: list[PerformanceRow] = []
        start = after[:3] if after is not None else None
        batch = max(2, wanted // len(horizons) + 2)
        while len(rows) < wanted:
            groups = await self._outcomes.performance_groups(where, start=start, limit=batch)
            for group in groups:
                outcomes = await self._outcomes.outcomes(where, group, limit=_MAX_GROUP_SIGNALS)
                rows.extend(row for row in group_rows(group, outcomes, horizons) if after is None or row.key > after)
                if len(rows) >= wanted:
                    break
            if len(groups) < batch:
                break
            last = groups[-1]
            start = (last[0], last[1], last[2] + 1)
        return rows[:wanted]
