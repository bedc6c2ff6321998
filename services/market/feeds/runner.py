"""Runs one feed on the replica holding its leader lock: connects the adapter, numbers and publishes its ticks,
keeps quotes and live bars, watches for staleness and reconnects with backoff; shares its health through the
cache so every replica can answer ListFeeds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from enum import IntEnum
from typing import Any

from services.core.backoff import backoff_delay
from services.core.bars import BarBuilder, roll_up
from services.core.clock import WallClock, utc_now
from services.core.coordination import Cache, LeaderElection, Lease, Locks
from services.core.errors import Unavailable
from services.core.settings import MarketSettings
from services.market.encoding import encode_ticks
from services.market.feeds.base import FeedAdapter, FeedError
from services.market.quotes import QuoteBook, QuoteCache
from services.market.records import Bar, Instrument, Tick, Timeframe
from services.market.store import MarketStore
from services.market.streaming import TickHub

log = logging.getLogger("bullant.market.feeds")

STATUS_PREFIX = "feed:"
# A status older than this means no replica is running the feed.
STATUS_TTL_SECONDS = 10.0
_QUOTE_FLUSH_SECONDS = 0.25
_CLEANUP_SECONDS = 3.0
_SUPERVISE_SECONDS = 1.0
_HIGHER_TIMEFRAMES = (Timeframe.M5, Timeframe.M15, Timeframe.H1, Timeframe.D1)


class FeedState(IntEnum):
    """Numbers of bullant.market.v1.FeedState."""

    UNSPECIFIED = 0
    STARTING = 1
    HEALTHY = 2
    DEGRADED = 3
    DOWN = 4
    STOPPED = 5
    WAITING = 6


@dataclass(slots=True, kw_only=True)
class FeedStatus:
    """What the leader of a feed says about it (stored as JSON in the cache)."""

    feed_id: str
    adapter: str
    display_name: str
    simulated: bool
    state: FeedState = FeedState.STARTING
    state_reason: str = ""
    state_change_time: str = ""
    transport: str = "internal"
    symbol_count: int = 0
    stale_symbols: list[str] = field(default_factory=list)
    last_tick_time: str = ""
    ticks_per_second: float = 0.0
    reconnect_count: int = 0
    leader: str = ""

    def encode(self) -> bytes:
        values = asdict(self)
        values["state"] = int(self.state)
        return json.dumps(values, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> FeedStatus | None:
        try:
            values: dict[str, Any] = json.loads(raw)
            values["state"] = FeedState(int(values["state"]))
            return cls(**values)
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerPolicy:
    """Timing of a feed runner."""

    staleness_seconds: float = 30.0
    reconnect_initial_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    lease_ttl_seconds: float = 10.0
    # History stored at the first start of a feed that has none (the simulator's demo history).
    initial_daily_days: int = 0
    initial_minute_days: int = 0

    @classmethod
    def for_feed(cls, market: MarketSettings, feed_id: str) -> RunnerPolicy:
        """The runner of `feed_id` under the market settings: their staleness, and the simulator's demo history for
        the sim feed only."""
        sim = feed_id == "sim"
        return cls(
            staleness_seconds=market.feed_staleness_seconds,
            initial_daily_days=market.sim_history_daily_days if sim else 0,
            initial_minute_days=market.sim_history_minute_days if sim else 0,
        )


class FeedRunner:
    """A Component: campaigns for the feed's leader lock and runs the feed while it holds it."""

    def __init__(
        self,
        adapter: FeedAdapter,
        *,
        store: MarketStore,
        hub: TickHub,
        cache: Cache,
        locks: Locks,
        policy: RunnerPolicy,
        clock: WallClock = utc_now,
    ) -> None:
        self.adapter = adapter
        self._store = store
        self._hub = hub
        self._cache = cache
        self._quotes = QuoteCache(cache)
        self._policy = policy
        self._clock = clock
        self._election = LeaderElection(
            locks, f"feed:{adapter.feed_id}", self._lead, ttl_seconds=policy.lease_ttl_seconds
        )
        self.status = FeedStatus(
            feed_id=adapter.feed_id,
            adapter=adapter.adapter,
            display_name=adapter.display_name,
            simulated=adapter.simulated,
        )
        self._book = QuoteBook(())
        self._sequence_floor = 0
        self._builders: dict[str, BarBuilder] = {}
        self._last_seen: dict[str, float] = {}
        self._tick_counts: deque[tuple[float, int]] = deque()
        self._closed_bars: list[tuple[str, Bar]] = []
        self.published_ticks = 0

    @property
    def is_leader(self) -> bool:
        return self._election.is_leader

    async def start(self) -> None:
        await self._election.start()

    async def stop(self) -> None:
        await self._election.stop()
        await self.adapter.stop()

    # -- leading ----------------------------------------------------------------------------------------------------

    async def _lead(self, lease: Lease) -> None:
        self.status.leader = lease.owner
        # Sequences of this leadership start above any earlier leader's, even one that died before sharing its last
        # numbers: they start at the leadership's start time in microseconds (and above the lease's fencing token,
        # which Redis also draws from its clock), and a leader hands out fewer than a million per second per symbol.
        # Within a leadership they go up by one.
        self._sequence_floor = max(lease.token, time.time_ns() // 1000)
        self.status.reconnect_count = 0
        attempt = 0
        try:
            while True:
                try:
                    self._set_state(FeedState.STARTING, "connecting")
                    await self._publish_status()
                    await self.adapter.start()
                    # The feed owns its instruments: they point at it, and a simulated feed's are marked so.
                    instruments = [
                        replace(
                            item,
                            feed_id=self.adapter.feed_id,
                            simulated=item.simulated or self.adapter.simulated,
                        )
                        for item in self.adapter.instruments()
                    ]
                    await self._prepare(instruments)
                    attempt = 0
                    finished = await self._run([item.symbol for item in instruments])
                    if finished:
                        self._set_state(FeedState.STOPPED, "finished")
                        await self._publish_status()
                        await self._idle()
                except FeedError as error:
                    attempt += 1
                    self.status.reconnect_count += 1
                    delay = backoff_delay(
                        attempt - 1,
                        self._policy.reconnect_initial_seconds,
                        self._policy.reconnect_max_seconds,
                        jitter_floor=0.5,
                    )
                    self._set_state(FeedState.DOWN, f"{error}; reconnecting in {delay:.1f}s (attempt {attempt})")
                    # The detail (the source's own words) goes to the log only; clients see the message.
                    log.warning("feed %s down: %s %s", self.adapter.feed_id, error, error.detail)
                    await self._publish_status()
                    await self.adapter.stop()
                    await asyncio.sleep(delay)
        finally:
            self._set_state(FeedState.DOWN, "the leader stepped down; another replica takes over")
            self.status.leader = ""
            await self._bounded(
                self._save_quotes(), self._flush(force=True), self._publish_status(), self.adapter.stop()
            )

    async def _idle(self) -> None:
        while True:
            await self._publish_status()
            await asyncio.sleep(_SUPERVISE_SECONDS)

    async def _prepare(self, instruments: Sequence[Instrument]) -> None:
        await self._store.upsert_instruments(instruments)
        symbols = [item.symbol for item in instruments]
        self.status.symbol_count = len(symbols)
        if self._policy.initial_daily_days or self._policy.initial_minute_days:
            await self._initial_history(symbols)
        previous = self._book
        self._book = QuoteBook(instruments)
        now = self._clock()
        closes: dict[str, float] = {}
        for symbol in symbols:
            daily = await self._store.last_bar(symbol, Timeframe.D1, before=Timeframe.D1.floor(now))
            if daily is not None:
                closes[symbol] = daily.close
        self._book.restore(await self._quotes.get(symbols), closes, floor=self._sequence_floor)
        # A reconnect within this leadership keeps counting from what it published, whatever the cache holds.
        self._book.continue_after(previous)
        self._builders = {symbol: BarBuilder() for symbol in symbols}
        start = time.monotonic()
        self._last_seen = dict.fromkeys(symbols, start)

    async def _initial_history(self, symbols: Sequence[str]) -> None:
        """Give a feed that never ran its demo history (a year of days, a few days of minutes and roll-ups)."""
        now = self._clock()
        plan = [(Timeframe.D1, self._policy.initial_daily_days)] + [
            (timeframe, self._policy.initial_minute_days)
            for timeframe in (Timeframe.M1, Timeframe.M5, Timeframe.M15, Timeframe.H1)
        ]
        for symbol in symbols:
            for timeframe, days in plan:
                if days <= 0 or await self._store.last_bar(symbol, timeframe) is not None:
                    continue
                end = timeframe.floor(now)
                history = await self.adapter.history(symbol, timeframe, end - timedelta(days=days), end)
                written = await self._store.write_bars_if_absent(symbol, timeframe, history)
                log.info("stored %d %s bars of %s", written, timeframe.label, symbol)

    async def _run(self, symbols: Sequence[str]) -> bool:
        """Consume ticks until the adapter finishes (True) or fails / goes stale (FeedError)."""
        self._supervise(time.monotonic())  # healthy, or waiting from the start
        await self._publish_status()
        consume = asyncio.create_task(self._consume(symbols), name=f"feed-{self.adapter.feed_id}")
        last_quotes = last_supervise = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({consume}, timeout=_QUOTE_FLUSH_SECONDS)
                if done:
                    consume.result()  # raises the adapter's FeedError
                    return True
                now = time.monotonic()
                if now - last_quotes >= _QUOTE_FLUSH_SECONDS:
                    last_quotes = now
                    await self._quotes.put(self._book.take_dirty())
                if now - last_supervise >= _SUPERVISE_SECONDS:
                    last_supervise = now
                    self._supervise(now)
                    await self._flush()
                    await self._publish_status()
        finally:
            await self._bounded(self._save_quotes())
            if not consume.done():
                consume.cancel()
                with contextlib.suppress(asyncio.CancelledError, FeedError):
                    await consume

    async def _bounded(self, *steps: Coroutine[Any, Any, None]) -> None:
        """Clean-up steps, given a few seconds in all: with Redis or the database down they could otherwise wait
        forever, and a stopping leader must stop (its lease runs out anyway)."""
        try:
            async with asyncio.timeout(_CLEANUP_SECONDS):
                for step in steps:
                    try:
                        await step
                    except Exception:
                        log.exception("clean-up of feed %s failed", self.adapter.feed_id)
        except TimeoutError:
            log.warning("clean-up of feed %s took over %.0fs; abandoned", self.adapter.feed_id, _CLEANUP_SECONDS)
        finally:
            for step in steps:
                step.close()  # steps never started (after a timeout) must not warn "never awaited"

    async def _save_quotes(self) -> None:
        try:
            await self._quotes.put(self._book.take_dirty())
        except Unavailable as error:  # Redis down: said in one line (health reports the outage too)
            log.warning("could not share the quotes of feed %s: %s", self.adapter.feed_id, error)
        except Exception:
            log.exception("could not share the quotes of feed %s", self.adapter.feed_id)

    async def _consume(self, symbols: Sequence[str]) -> None:
        async for batch in self.adapter.ticks(symbols):
            if batch:
                await self.publish(batch)

    async def publish(self, batch: Sequence[Tick]) -> None:
        """Number the ticks, fold them into quotes and bars, and publish them to every replica."""
        accepted: list[Tick] = []
        sequences: list[int] = []
        seen = time.monotonic()
        book, builders, last_seen, closed = self._book, self._builders, self._last_seen, self._closed_bars
        for tick in batch:
            builder = builders.get(tick.symbol)
            if builder is None:
                continue
            sequence = book.next_sequence(tick.symbol)
            book.apply(tick, sequence)
            for bar in builder.on_tick(tick.event_time, tick.price, tick.size):
                closed.append((tick.symbol, bar))
            last_seen[tick.symbol] = seen
            accepted.append(tick)
            sequences.append(sequence)
        if not accepted:
            return
        await self._hub.publish(encode_ticks(accepted, sequences))
        self.published_ticks += len(accepted)
        self._tick_counts.append((seen, len(accepted)))
        self.status.last_tick_time = accepted[-1].event_time.isoformat()

    def _supervise(self, now: float) -> None:
        """Staleness: some symbols quiet → degraded; every symbol quiet → the connection is dead, reconnect. An
        adapter waiting for something to deliver is neither: its quiet time counts from when it stops waiting."""
        while self._tick_counts and now - self._tick_counts[0][0] > 60.0:
            self._tick_counts.popleft()
        self.status.ticks_per_second = sum(count for _, count in self._tick_counts) / 60.0
        self.status.transport = self.adapter.transport.value
        if waiting := self.adapter.waiting_for():
            self._last_seen = dict.fromkeys(self._last_seen, now)
            self.status.stale_symbols = []
            self._set_state(FeedState.WAITING, waiting)
            return
        limit = self._policy.staleness_seconds
        stale = sorted(symbol for symbol, seen in self._last_seen.items() if now - seen > limit)
        self.status.stale_symbols = stale[:100]
        if stale and len(stale) == len(self._last_seen):
            raise FeedError(f"no tick for {limit:.0f}s on any symbol")
        if stale:
            self._set_state(FeedState.DEGRADED, f"no tick for {limit:.0f}s on {', '.join(stale[:5])}")
        elif degradation := self.adapter.degradation():
            self._set_state(FeedState.DEGRADED, degradation)
        else:
            self._set_state(FeedState.HEALTHY, "")

    async def _flush(self, *, force: bool = False) -> None:
        """Persist closed 1m bars (and close quiet symbols' bars), then the higher timeframes they complete."""
        now = self._clock()
        for symbol, builder in self._builders.items():
            for bar in builder.flush(now):
                self._closed_bars.append((symbol, bar))
        if not self._closed_bars:
            return
        closed, self._closed_bars = self._closed_bars, []
        by_symbol: dict[str, list[Bar]] = {}
        for symbol, bar in closed:
            by_symbol.setdefault(symbol, []).append(bar)
        for symbol, minutes in by_symbol.items():
            try:
                await self._store.write_bars_if_absent(symbol, Timeframe.M1, minutes)
                await self._roll_up(symbol, minutes)
            except Exception:
                if force:
                    raise
                log.exception("could not store live bars of %s; will retry", symbol)
                self._closed_bars.extend((symbol, bar) for bar in minutes)

    async def _roll_up(self, symbol: str, minutes: Sequence[Bar]) -> None:
        for timeframe in _HIGHER_TIMEFRAMES:
            ends = {
                timeframe.floor(bar.open_time)
                for bar in minutes
                if timeframe.floor(bar.open_time + Timeframe.M1.delta) != timeframe.floor(bar.open_time)
            }
            for period in sorted(ends):
                source = await self._store.bars(
                    symbol, Timeframe.M1, start=period, end=period + timeframe.delta, limit=100_000
                )
                await self._store.write_bars_if_absent(symbol, timeframe, roll_up(source, timeframe))

    def _set_state(self, state: FeedState, reason: str) -> None:
        if state is not self.status.state or reason != self.status.state_reason:
            if state is not self.status.state:
                self.status.state_change_time = utc_now().isoformat()
            self.status.state = state
            self.status.state_reason = reason

    async def _publish_status(self) -> None:
        try:
            await self._cache.set(
                STATUS_PREFIX + self.adapter.feed_id, self.status.encode(), ttl_seconds=STATUS_TTL_SECONDS
            )
        except Unavailable as error:
            log.warning("could not share the status of feed %s: %s", self.adapter.feed_id, error)
        except Exception:
            log.exception("could not share the status of feed %s", self.adapter.feed_id)


async def feed_statuses(cache: Cache, feed_ids: Sequence[str]) -> dict[str, FeedStatus]:
    """The statuses the feeds' leaders shared; feeds without a live leader are absent."""
    raw = await cache.get_many([STATUS_PREFIX + feed_id for feed_id in feed_ids]) if feed_ids else []
    found: dict[str, FeedStatus] = {}
    for feed_id, value in zip(feed_ids, raw, strict=True):
        status = FeedStatus.decode(value) if value is not None else None
        if status is not None:
            found[feed_id] = status
    return found
