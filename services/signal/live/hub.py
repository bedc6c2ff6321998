"""Each replica's side of the live signals: the hub that hands the engine's published signals and alert firings to
this replica's StreamSignals callers, and the watch registry that tells the engine (wherever it leads) which
series those callers want evaluated. Both are Components."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

from services.core.coordination.base import PubSub
from services.core.coordination.follow import follow_channel, until_live
from services.core.timeframes import Timeframe
from services.signal.live.encoding import Envelope
from services.signal.live.records import SeriesKey

log = logging.getLogger("bullant.signal.hub")
SIGNALS_CHANNEL = "live-signals"
WATCH_CHANNEL = "live-watch"
# Events remembered per replica to drop a repeat (a signal re-published by a new leader after a fail-over).
_RECENT_EVENTS = 20_000
_HUB_MAX_PENDING = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFilter:
    """What one StreamSignals caller wants: empty collections match everything."""

    account_id: int
    symbols: frozenset[str] = frozenset()
    strategy_ids: frozenset[str] = frozenset()
    timeframes: frozenset[int] = frozenset()
    grades: frozenset[int] = frozenset()
    alerts_only: bool = False

    def wants(self, envelope: Envelope) -> bool:
        if envelope.is_alert:
            if envelope.account_id != self.account_id:
                return False
        elif self.alerts_only:
            return False
        return (
            (not self.symbols or envelope.symbol in self.symbols)
            and (not self.strategy_ids or envelope.strategy_id in self.strategy_ids)
            and (not self.timeframes or envelope.timeframe in self.timeframes)
            and (not self.grades or envelope.grade in self.grades)
        )


@dataclass(eq=False, slots=True)
class Listener:
    """One StreamSignals caller's queue of encoded StreamSignalsResponse messages."""

    filter: StreamFilter
    capacity: int
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    overflowed: bool = False
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, payload: bytes) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.capacity:
            self.overflowed = True
        else:
            self.queue.put_nowait(payload)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class SignalHub:
    """The replica's subscription to the engine's events, dispatching to local listeners."""

    def __init__(self, pubsub: PubSub, *, capacity: int = 4096, draining: asyncio.Event | None = None) -> None:
        self._pubsub = pubsub
        self._capacity = capacity
        self._draining = draining
        self._listeners: set[Listener] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._live = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="signal-hub")
        if self._draining is not None:
            self._drain_task = asyncio.create_task(self._close_on_drain(self._draining), name="signal-hub-drain")
        await until_live(self._task, self._live)

    async def stop(self) -> None:
        for listener in list(self._listeners):
            listener.close()
        for task in (self._drain_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._drain_task = None

    async def _close_on_drain(self, draining: asyncio.Event) -> None:
        await draining.wait()
        for listener in list(self._listeners):
            listener.close()

    def listen(self, wanted: StreamFilter) -> Listener:
        listener = Listener(wanted, self._capacity)
        if self._draining is not None and self._draining.is_set():
            listener.close()
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    async def publish(self, envelope: Envelope) -> None:
        """Send an event to every replica's listeners (this one's included)."""
        await self._pubsub.publish(SIGNALS_CHANNEL, envelope.encode())

    def dispatch(self, data: bytes) -> None:
        try:
            envelope = Envelope.decode(data)
        except (ValueError, TypeError):
            log.warning("dropped a malformed live-signal event of %d bytes", len(data))
            return
        if envelope.event_id in self._recent:
            return
        self._recent[envelope.event_id] = None
        if len(self._recent) > _RECENT_EVENTS:
            self._recent.popitem(last=False)
        for listener in self._listeners:
            if listener.filter.wants(envelope):
                listener.offer(envelope.payload)

    async def _run(self) -> None:
        await follow_channel(
            self._pubsub, SIGNALS_CHANNEL, self.dispatch, self._live, max_pending=_HUB_MAX_PENDING, what="live-signal"
        )


def _series_list(series: Collection[SeriesKey]) -> list[list[object]]:
    return [[key.symbol, int(key.timeframe)] for key in sorted(series)]


class WatchRegistry:
    """The series this replica's StreamSignals callers watch, announced on the watch channel when they change,
    every `refresh` seconds, and when a new engine leader asks; announcements expire after three periods."""

    def __init__(self, pubsub: PubSub, *, refresh: float = 10.0) -> None:
        self._pubsub = pubsub
        self._refresh = refresh
        self.replica = uuid.uuid4().hex[:12]
        self._counts: Counter[SeriesKey] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="signal-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._counts:
            self._counts.clear()
            with contextlib.suppress(Exception):
                await self._announce()

    def add(self, series: Collection[SeriesKey]) -> None:
        fresh = [key for key in series if not self._counts[key]]
        self._counts.update(series)
        if fresh:
            self._changed.set()

    def remove(self, series: Collection[SeriesKey]) -> None:
        self._counts.subtract(series)
        gone = [key for key in series if self._counts[key] <= 0]
        for key in gone:
            del self._counts[key]
        if gone:
            self._changed.set()

    @property
    def watched(self) -> frozenset[SeriesKey]:
        return frozenset(self._counts)

    async def notify_rules_changed(self) -> None:
        """Tell the engine that alert rules changed (it re-reads them at once)."""
        await self._pubsub.publish(WATCH_CHANNEL, json.dumps({"type": "rules"}).encode())

    async def _announce(self) -> None:
        message = {
            "type": "streams",
            "replica": self.replica,
            "series": _series_list(self._counts),
            "expires_in": 3 * self._refresh,
        }
        await self._pubsub.publish(WATCH_CHANNEL, json.dumps(message).encode())

    async def _run(self) -> None:
        async with self._pubsub.subscribe([WATCH_CHANNEL]) as subscription:
            asked = asyncio.create_task(self._answer_requests(subscription))
            try:
                while True:
                    try:
                        await self._announce()
                    except Exception:
                        log.exception("could not announce the watched series")
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self._refresh)
            finally:
                asked.cancel()

    async def _answer_requests(self, subscription: object) -> None:
        async for message in subscription:  # type: ignore[attr-defined]
            try:
                kind = json.loads(message.data).get("type")
            except (ValueError, AttributeError):
                continue
            if kind == "request":
                self._changed.set()


def parse_series(items: list[list[object]]) -> set[SeriesKey]:
    found: set[SeriesKey] = set()
    for item in items:
        try:
            symbol, number = item
            found.add(SeriesKey(str(symbol), Timeframe(int(number))))  # type: ignore[call-overload]
        except (ValueError, TypeError):
            continue
    return found
