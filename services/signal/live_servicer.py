"""gRPC adapter of the live side of bullant.signal.v1.SignalService: StreamSignals, ListSignals, GetSignal and
GetSignalPerformance, as a part of SignalServicer. It validates and decodes requests, reads the live stores and the
replica's hub, and encodes responses; the engine that produces the signals is services/signal/live/engine.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.db.databases import utc_now
from services.core.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.core.market_data import MarketData
from services.core.messages import naive_utc
from services.core.paging import NAME, Cursor, Integer, PageTokens, Row, keyset_cursor, page_size
from services.core.timeframes import Timeframe
from services.signal.alert_encoding import alert_id_of, alert_not_found, caller
from services.signal.alert_store import AlertRule, AlertStore
from services.signal.backtest_store import Owner
from services.signal.encoding import find_strategy
from services.signal.fusion import BUY, SELL
from services.signal.live.encoding import firing_envelope, signal_envelope, signal_message
from services.signal.live.firing_store import FiringFilter, FiringStore
from services.signal.live.hub import Listener, SignalHub, StreamFilter, WatchRegistry
from services.signal.live.outcome_store import OutcomeStore
from services.signal.live.performance import PerformanceRow, group_rows
from services.signal.live.records import HORIZONS, SeriesKey
from services.signal.live.requests import (
    grades_of,
    performance_message,
    range_of,
    strings_of,
    symbols_of,
    timeframes_of,
)
from services.signal.live.signal_store import SignalFilter, SignalStore

Context = grpc.aio.ServicerContext[Any, Any]
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
_SIDES = {common_pb2.SIDE_BUY: BUY, common_pb2.SIDE_SELL: SELL}


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveParts:
    """What the live methods use on this replica."""

    signals: SignalStore
    outcomes: OutcomeStore
    firings: FiringStore
    hub: SignalHub
    watch: WatchRegistry
    draining: asyncio.Event
    # The timeframes a stream's listed symbols are watched in when the request names none.
    timeframes: tuple[Timeframe, ...]
    heartbeat_seconds: float
    # Concurrent StreamSignals per account on this server.
    max_streams: int = 32
    streams: Counter[int] = field(default_factory=Counter)


def _heartbeat() -> signal_pb2.StreamSignalsResponse:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return signal_pb2.StreamSignalsResponse(heartbeat=common_pb2.Heartbeat(server_time=stamp))


def _signal_not_found(signal_id: str) -> NotFound:
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


class LiveSignalMethods:
    """The live methods of SignalServicer (which provides the market, the alert store and the live parts)."""

    _market: MarketData
    _alerts: AlertStore
    _live: LiveParts
    _pages: PageTokens

    async def _alert(self, owner: Owner, alert_id: str, *, field: str = "alert_id") -> AlertRule:
        """The caller's rule: ALERT_NOT_FOUND also when another account owns it."""
        rule = await self._alerts.get(owner, alert_id_of(alert_id, field))
        if rule is None:
            raise alert_not_found(alert_id)
        return rule

    # -- StreamSignals ----------------------------------------------------------------------------------------------

    # Yields pre-encoded bytes as well as messages; the registration installs a serializer that passes bytes through.
    async def StreamSignals(
        self, request: signal_pb2.StreamSignalsRequest, context: Context
    ) -> AsyncIterator[signal_pb2.StreamSignalsResponse | bytes]:
        owner = caller()
        symbols = symbols_of(request.symbols)
        strategy_ids = strings_of(request.strategy_ids)
        timeframes = timeframes_of(request.timeframes)
        grades = grades_of(request.grades)
        for index, strategy_id in enumerate(strategy_ids):
            find_strategy(strategy_id, f"strategy_ids[{index}]")
        since = naive_utc(request.replay_since_time) if request.HasField("replay_since_time") else None
        if since is not None and since < utc_now() - REPLAY_WINDOW:
            raise InvalidArgument(
                FieldViolation("replay_since_time", "at most 24 hours back; use ListSignals for older signals"),
                reason="REPLAY_WINDOW_EXCEEDED",
            )
        await asyncio.gather(*(self._market.instrument(symbol) for symbol in symbols))
        live = self._live
        if live.streams[owner.account_id] >= live.max_streams:
            raise ResourceExhausted(
                f"at most {live.max_streams} signal streams per account on this server",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=5.0,
            )
        wanted = StreamFilter(
            account_id=owner.account_id,
            symbols=frozenset(symbols),
            strategy_ids=frozenset(strategy_ids),
            timeframes=frozenset(int(timeframe) for timeframe in timeframes),
            grades=frozenset(grades),
            alerts_only=request.alerts_only,
        )
        # Listen before the replay reads the stores: what is published meanwhile waits in the queue.
        listener = live.hub.listen(wanted)
        series = [SeriesKey(symbol, timeframe) for symbol in symbols for timeframe in timeframes or live.timeframes]
        live.watch.add(series)
        live.streams[owner.account_id] += 1
        try:
            yield _heartbeat()
            if since is not None:
                async for payload in self._replay(owner, wanted, since):
                    yield payload
            async for message in self._follow(listener):
                yield message
        finally:
            live.hub.forget(listener)
            live.watch.remove(series)
            live.streams[owner.account_id] -= 1
            if live.streams[owner.account_id] <= 0:
                del live.streams[owner.account_id]

    async def _follow(self, listener: Listener) -> AsyncIterator[signal_pb2.StreamSignalsResponse | bytes]:
        draining = self._live.draining
        while True:
            if listener.overflowed:
                raise ResourceExhausted(
                    "the stream fell too far behind; reconnect with replay_since_time", reason="SUBSCRIBER_TOO_SLOW"
                )
            if listener.closed or draining.is_set():
                raise Unavailable("the server is shutting down: reconnect", reason="SERVER_DRAINING")
            if not listener.queue.empty():
                yield listener.queue.get_nowait()
                continue
            listener.wake.clear()
            try:
                async with asyncio.timeout(self._live.heartbeat_seconds):
                    await listener.wake.wait()
            except TimeoutError:
                yield _heartbeat()

    async def _replay(self, owner: Owner, wanted: StreamFilter, since: datetime) -> AsyncIterator[bytes]:
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
            page = await self._live.signals.created_since(where, since, after=after, limit=_REPLAY_PAGE)
            for signal in page:
                yield signal.create_time, signal_envelope(signal).payload
            if len(page) < _REPLAY_PAGE:
                return
            after = page[-1].create_time, page[-1].signal_id

    async def _replayed_firings(
        self, owner: Owner, wanted: StreamFilter, since: datetime
    ) -> AsyncIterator[tuple[datetime, bytes]]:
        names: dict[str, str] = {}
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._live.firings.since(owner, since, after=after, limit=_REPLAY_PAGE)
            found = await self._live.signals.get_many(sorted({firing.signal_id for firing in page}))
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

    async def ListSignals(
        self, request: signal_pb2.ListSignalsRequest, context: Context
    ) -> signal_pb2.ListSignalsResponse:
        owner = caller()
        size = page_size(request.page_size)
        symbols = symbols_of(request.symbols)
        strategy_ids = strings_of(request.strategy_ids)
        timeframes = timeframes_of(request.timeframes)
        grades = grades_of(request.grades)
        start, end = range_of(request.range)
        technical_only = request.technical_only if request.HasField("technical_only") else None
        side = _SIDES.get(request.side, 0)
        query = json.dumps(
            [symbols, strategy_ids, timeframes, grades, side, str(start), str(end), technical_only, request.alert_id]
        )
        position = self._pages.decode(_SIGNALS_CURSOR, request.page_token, query=query)
        after = (position["t"], position["id"]) if position else None
        if request.alert_id:
            rule_filter = SignalFilter(symbols=symbols, strategy_ids=strategy_ids, timeframes=timeframes)
            firing_filter = FiringFilter(grades=grades, side=side, start=start, end=end, technical_only=technical_only)
            return await self._alert_signals(
                owner, request.alert_id, rule_filter, firing_filter, after=after, size=size, query=query
            )
        where = SignalFilter(
            symbols=symbols,
            strategy_ids=strategy_ids,
            timeframes=timeframes,
            grades=grades,
            side=side,
            start=start,
            end=end,
            technical_only=technical_only,
        )
        found = await self._live.signals.find(where, after=after, limit=size + 1)
        token = ""
        if len(found) > size:
            found = found[:size]
            token = self._pages.encode(
                _SIGNALS_CURSOR, {"t": found[-1].bar_time, "id": found[-1].signal_id}, query=query
            )
        return signal_pb2.ListSignalsResponse(
            signals=[signal_message(signal) for signal in found], next_page_token=token
        )

    async def _alert_signals(
        self,
        owner: Owner,
        alert_id: str,
        rule_filter: SignalFilter,
        where: FiringFilter,
        *,
        after: tuple[datetime, str] | None,
        size: int,
        query: str,
    ) -> signal_pb2.ListSignalsResponse:
        """The signals that fired one of the caller's rules, newest bar first."""
        rule = await self._alert(owner, alert_id)
        if (
            (rule_filter.symbols and rule.symbol not in rule_filter.symbols)
            or (rule_filter.strategy_ids and rule.strategy_id not in rule_filter.strategy_ids)
            or (rule_filter.timeframes and rule.timeframe not in rule_filter.timeframes)
        ):
            return signal_pb2.ListSignalsResponse()
        firings = await self._live.firings.of_alert(owner, rule.alert_id, where, after=after, limit=size + 1)
        token = ""
        if len(firings) > size:
            firings = firings[:size]
            token = self._pages.encode(
                _SIGNALS_CURSOR, {"t": firings[-1].bar_time, "id": firings[-1].firing_id}, query=query
            )
        found = await self._live.signals.get_many([firing.signal_id for firing in firings])
        return signal_pb2.ListSignalsResponse(
            signals=[signal_message(found[firing.signal_id]) for firing in firings if firing.signal_id in found],
            next_page_token=token,
        )

    async def GetSignal(self, request: signal_pb2.GetSignalRequest, context: Context) -> signal_pb2.GetSignalResponse:
        owner = caller()
        signal_id = request.signal_id.strip()
        if not signal_id:
            raise InvalidArgument(FieldViolation("signal_id", "is required"))
        if not _SIGNAL_ID.match(signal_id):
            raise _signal_not_found(signal_id)
        signal = await self._live.signals.get(signal_id)
        if signal is None or (not signal.platform and not await self._live.firings.fired_by(owner, signal_id)):
            raise _signal_not_found(signal_id)
        return signal_pb2.GetSignalResponse(signal=signal_message(signal))

    # -- GetSignalPerformance ---------------------------------------------------------------------------------------

    async def GetSignalPerformance(
        self, request: signal_pb2.GetSignalPerformanceRequest, context: Context
    ) -> signal_pb2.GetSignalPerformanceResponse:
        size = page_size(request.page_size)
        symbol = request.symbol.upper()
        grades = grades_of(request.grades)
        horizons = sorted(set(request.horizons)) or list(HORIZONS)
        strategy_id = request.strategy_id
        if strategy_id:
            find_strategy(strategy_id)
        start, end = range_of(request.range)
        query = json.dumps([strategy_id, symbol, request.timeframe, horizons, grades, str(start), str(end)])
        position = self._pages.decode(_PERFORMANCE_CURSOR, request.page_token, query=query)
        after = position["after"] if position else None
        where = SignalFilter(
            symbols=[symbol] if symbol else (),
            strategy_ids=[strategy_id] if strategy_id else (),
            timeframes=[request.timeframe] if request.timeframe else (),
            grades=grades,
            start=start,
            end=end,
        )
        rows = await self._performance_rows(where, horizons, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self._pages.encode(_PERFORMANCE_CURSOR, {"after": rows[-1].key}, query=query)
        return signal_pb2.GetSignalPerformanceResponse(
            performances=[performance_message(row) for row in rows], next_page_token=token
        )

    async def _performance_rows(
        self, where: SignalFilter, horizons: Sequence[int], after: tuple[str, str, int, int] | None, wanted: int
    ) -> list[PerformanceRow]:
        """Up to `wanted` rows after the key `after`, computed group by group from the stored returns."""
        outcomes_store = self._live.outcomes
        rows: list[PerformanceRow] = []
        start = after[:3] if after is not None else None
        batch = max(2, wanted // len(horizons) + 2)
        while len(rows) < wanted:
            groups = await outcomes_store.performance_groups(where, start=start, limit=batch)
            for group in groups:
                outcomes = await outcomes_store.outcomes(where, group, limit=_MAX_GROUP_SIGNALS)
                rows.extend(row for row in group_rows(group, outcomes, horizons) if after is None or row.key > after)
                if len(rows) >= wanted:
                    break
            if len(groups) < batch:
                break
            last = groups[-1]
            start = (last[0], last[1], last[2] + 1)
        return rows[:wanted]
