"""The live signal engine, a leader-elected Component: while it holds the lease it works out the watch set (the
configured symbols, the series StreamSignals callers watch on any replica, and every enabled alert rule), keeps one
tick subscription to the market for those symbols (switched make-before-break as the set changes, ticks deduplicated
by sequence), builds bars, and hands each closed bar to its series' runner. It also runs the signal-performance job
and delivers alert firings a previous leader left undelivered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.core.auth.service_identity import ServiceIdentity
from services.core.backoff import backoff_delay
from services.core.clock import WallClock, utc_now
from services.core.coordination.base import Lease, Locks, PubSub
from services.core.coordination.leader import LeaderElection
from services.core.errors import DomainError, NotFound, Unavailable
from services.core.settings import SignalSettings
from services.core.timeframes import Timeframe
from services.signal.alerts.store import AlertRule, AlertStore
from services.signal.live.alerting import AlertDispatcher
from services.signal.live.evaluator import UnitState
from services.signal.live.hub import WATCH_CHANNEL, parse_series
from services.signal.live.market_ticks import MarketTicks, TickEvent
from services.signal.live.performance import PerformanceJob
from services.signal.live.records import SeriesKey, Unit
from services.signal.live.series import ClosedBar, SymbolBars
from services.signal.live.series_runner import SeriesRunner, SignalPipeline, Units
from services.signal.strategies.base import REGISTRY, StrategyDef

log = logging.getLogger("bullant.signal.engine")
_FLUSH_EVERY = 0.1
_LIVE_TIMEOUT = 10.0
_UNKNOWN_RETRY_SECONDS = 60.0
# Symbols one MarketService.StreamTicks call may name (its contract).
MAX_TICK_SYMBOLS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class EnginePolicy:
    """What the live engine watches and evaluates, and its timing."""

    symbols: tuple[str, ...]
    timeframes: tuple[Timeframe, ...]
    strategies: tuple[str, ...]
    grace_seconds: float
    lease_seconds: float
    refresh_seconds: float
    performance_seconds: float

    @classmethod
    def from_settings(cls, signal: SignalSettings) -> EnginePolicy:
        return cls(
            symbols=tuple(signal.signal_symbols),
            timeframes=signal.timeframes(),
            strategies=tuple(signal.signal_strategies),
            grace_seconds=signal.signal_bar_close_grace_seconds,
            lease_seconds=signal.signal_engine_lease_seconds,
            refresh_seconds=signal.signal_watch_refresh_seconds,
            performance_seconds=signal.signal_performance_interval_seconds,
        )


def platform_units(series: SeriesKey, strategies: Sequence[StrategyDef]) -> list[Unit]:
    """The platform's units on a series: each strategy that runs on its timeframe, with its defaults."""
    units = []
    for strategy in strategies:
        try:
            parameters = strategy.resolve({}, timeframe=series.timeframe)
        except DomainError:
            continue
        units.append(Unit.of(series, strategy.strategy_id, parameters))
    return units


def plan(
    platform_series: set[SeriesKey], rules: Sequence[AlertRule], strategies: Sequence[StrategyDef]
) -> dict[SeriesKey, Units]:
    """Every series to evaluate and its units: the platform's on `platform_series`, each rule's own (a rule with a
    strategy's defaults shares the platform unit)."""
    planned: dict[SeriesKey, dict[Unit, UnitState]] = {}
    rules_by: dict[SeriesKey, dict[Unit, list[AlertRule]]] = {}
    for series in platform_series:
        states = planned.setdefault(series, {})
        for unit in platform_units(series, strategies):
            states[unit] = UnitState.of(unit, platform=True)
    for rule in rules:
        strategy = REGISTRY.get(rule.strategy_id)
        if strategy is None:
            continue
        series = SeriesKey(rule.symbol, rule.timeframe)
        unit = Unit.of(series, rule.strategy_id, dict(rule.parameters))
        states = planned.setdefault(series, {})
        if unit not in states:
            # A rule with the strategy's defaults makes the platform's signal (everyone's) even where the platform
            # does not run the strategy by itself.
            states[unit] = UnitState.of(unit, platform=unit in platform_units(series, [strategy]))
        rules_by.setdefault(series, {}).setdefault(unit, []).append(rule)
    return {series: Units(list(states.values()), rules_by.get(series, {})) for series, states in planned.items()}


class LiveEngine:
    """A Component: campaigns for the engine's lease and runs the engine while holding it."""

    def __init__(
        self,
        *,
        pipeline: SignalPipeline,
        ticks: MarketTicks,
        rules: AlertStore,
        dispatcher: AlertDispatcher,
        performance: PerformanceJob,
        pubsub: PubSub,
        locks: Locks,
        identity: ServiceIdentity,
        policy: EnginePolicy,
        clock: WallClock = utc_now,
        draining: asyncio.Event | None = None,
    ) -> None:
        self._pipeline = pipeline
        # Set when this process shuts down: the market goes away with it, and a broken stream is expected then.
        self._draining = draining or asyncio.Event()
        self._ticks = ticks
        self._rules = rules
        self._dispatcher = dispatcher
        self._performance = performance
        self._pubsub = pubsub
        self._identity = identity
        self._policy = policy
        self._clock = clock
        self._election = LeaderElection(locks, "signal-engine", self._lead, ttl_seconds=policy.lease_seconds)
        self._reset()

    def _reset(self) -> None:
        self.runners: dict[SeriesKey, SeriesRunner] = {}
        self._tasks: dict[SeriesKey, asyncio.Task[None]] = {}
        self._symbols: dict[str, SymbolBars] = {}
        self._last_tick: dict[str, float] = {}
        self._streams: dict[str, tuple[set[SeriesKey], float]] = {}
        self._refresh = asyncio.Event()
        self._symbols_changed = asyncio.Event()
        # Symbols the market did not know, until when they stay out of the tick stream.
        self._unknown: dict[str, float] = {}
        self._over_limit = 0
        # The symbols of the live tick stream (tests and operators: the engine hears them).
        self.streaming: tuple[str, ...] = ()

    @property
    def is_leader(self) -> bool:
        return self._election.is_leader

    async def start(self) -> None:
        await self._election.start()

    async def stop(self) -> None:
        await self._election.stop()

    # -- leadership -------------------------------------------------------------------------------------------------

    async def _lead(self, lease: Lease) -> None:
        log.info("signal engine leading (%s)", lease.owner)
        self._reset()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._collect_watchers(), name="signal-engine-watch")
                group.create_task(self._keep_watch_set(), name="signal-engine-plan")
                group.create_task(self._keep_ticks(), name="signal-engine-ticks")
                group.create_task(self._flush_quiet(), name="signal-engine-flush")
                group.create_task(self._background_jobs(), name="signal-engine-jobs")
        finally:
            for task in self._tasks.values():
                task.cancel()
            for task in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._reset()
            log.info("signal engine stepped down")

    async def _collect_watchers(self) -> None:
        """Hear which series each replica's streams watch (and rule changes); ask them all once at the start."""
        async with self._pubsub.subscribe([WATCH_CHANNEL]) as subscription:
            await self._pubsub.publish(WATCH_CHANNEL, json.dumps({"type": "request"}).encode())
            async for message in subscription:
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if data.get("type") == "rules":
                    self._refresh.set()
                elif data.get("type") == "streams":
                    series = parse_series(data.get("series", []))
                    expires = time.monotonic() + float(data.get("expires_in", 30.0))
                    before = self._streams.get(str(data.get("replica")), (set(), 0.0))[0]
                    self._streams[str(data.get("replica"))] = (series, expires)
                    if series != before:
                        self._refresh.set()

    def _streamed(self) -> set[SeriesKey]:
        now = time.monotonic()
        for replica in [name for name, (_, expires) in self._streams.items() if expires < now]:
            del self._streams[replica]
        return {series for watched, _ in self._streams.values() for series in watched}

    async def _keep_watch_set(self) -> None:
        while True:
            try:
                with self._identity.acting():
                    rules = await self._rules.enabled_rules()
                self._apply(rules)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not read the alert rules; keeping the current watch set")
            self._refresh.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), self._policy.refresh_seconds)

    def _apply(self, rules: Sequence[AlertRule]) -> None:
        strategies = [REGISTRY[name] for name in self._policy.strategies if name in REGISTRY] or list(REGISTRY.values())
        configured = {
            SeriesKey(symbol, timeframe) for symbol in self._policy.symbols for timeframe in self._policy.timeframes
        }
        wanted = plan(configured | self._streamed(), rules, strategies)
        for series in [key for key in self.runners if key not in wanted]:
            self._tasks.pop(series).cancel()
            del self.runners[series]
            symbol = self._symbols.get(series.symbol)
            if symbol is not None:
                symbol.unwatch(series.timeframe)
                if not symbol.timeframes:
                    del self._symbols[series.symbol]
                    self._symbols_changed.set()
        for series, units in wanted.items():
            runner = self.runners.get(series)
            if runner is not None:
                runner.configure(units)
                continue
            runner = SeriesRunner(series, self._pipeline, units)
            self.runners[series] = runner
            self._tasks[series] = asyncio.create_task(runner.run(), name=f"signal-series-{series.symbol}")
            if series.symbol not in self._symbols:
                self._symbols[series.symbol] = SymbolBars(series.symbol)
                self._symbols_changed.set()
            self._symbols[series.symbol].watch(series.timeframe)

    # -- ticks and bars ---------------------------------------------------------------------------------------------

    def _on_ticks(self, ticks: list[TickEvent]) -> None:
        now = time.monotonic()
        for tick in ticks:
            bars = self._symbols.get(tick.symbol)
            if bars is None:
                continue
            self._last_tick[tick.symbol] = now
            for closed in bars.on_tick(tick.time, tick.price, tick.size, tick.sequence):
                self._hand_over(tick.symbol, closed)

    def _hand_over(self, symbol: str, closed: ClosedBar) -> None:
        runner = self.runners.get(SeriesKey(symbol, closed.timeframe))
        if runner is not None:
            runner.closed(closed)

    async def _flush_quiet(self) -> None:
        """Close the bars of symbols that went quiet after their period ended (no closing tick comes)."""
        grace = self._policy.grace_seconds
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            now = time.monotonic()
            moment = self._clock()
            for symbol, bars in self._symbols.items():
                if now - self._last_tick.get(symbol, 0.0) < grace:
                    continue
                for closed in bars.flush(moment - timedelta(seconds=grace)):
                    self._hand_over(symbol, closed)

    def _streamable(self) -> tuple[str, ...]:
        """The watched symbols, less those the market did not know lately (retried after a while)."""
        now = time.monotonic()
        for symbol in [name for name, until in self._unknown.items() if until <= now]:
            del self._unknown[symbol]
        symbols = sorted(symbol for symbol in self._symbols if symbol not in self._unknown)
        if len(symbols) > MAX_TICK_SYMBOLS:
            if len(symbols) != self._over_limit:
                log.error(
                    "%d symbols are watched; one tick stream carries %d, so %s and %d more are not evaluated",
                    len(symbols),
                    MAX_TICK_SYMBOLS,
                    symbols[MAX_TICK_SYMBOLS],
                    len(symbols) - MAX_TICK_SYMBOLS - 1,
                )
            self._over_limit = len(symbols)
            symbols = symbols[:MAX_TICK_SYMBOLS]
        return tuple(symbols)

    async def _keep_ticks(self) -> None:
        """One tick stream for the watched symbols; a new set gets a new stream that replaces the old one once it
        is live (both deliver meanwhile; sequences drop the repeats). So does the service token the stream runs
        under, before it expires (the market ends a stream whose credential expires). A symbol the market does not
        know is left out (and tried again later), so one bad alert symbol cannot stop every other series."""
        current: asyncio.Task[None] | None = None
        current_symbols: tuple[str, ...] = ()
        current_expires = 0.0
        attempt = 0
        try:
            while True:
                symbols = self._streamable()
                renew = current is not None and self._identity.renew_time(current_expires) <= 0
                if symbols != current_symbols or current is None or current.done() or renew:
                    if current is not None and current.done():
                        self.streaming = ()
                        for bars in self._symbols.values():
                            bars.resync()  # ticks were lost between the streams
                    self._symbols_changed.clear()
                    if not symbols:
                        if current is not None:
                            current.cancel()
                        current, current_symbols = None, ()
                        self.streaming = ()
                    else:
                        started = await self._open_stream(symbols)
                        if started is None:
                            attempt += 1
                            await asyncio.sleep(backoff_delay(attempt - 1, 0.2, 10.0, jitter_floor=0.5))
                            continue
                        attempt = 0
                        if current is not None:
                            current.cancel()
                        current, current_symbols = started, symbols
                        current_expires = self._identity.expires_at
                        self.streaming = symbols
                timeout = self._next_look(current_expires if current is not None else None)
                await _until_changed(self._symbols_changed, current, timeout)
        finally:
            if current is not None:
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await current

    def _next_look(self, stream_expires: float | None) -> float | None:
        """Seconds until the stream loop must look again without being woken: an unknown symbol's retry, or the
        renewal of the stream's credential; None when nothing is due."""
        retry = min(self._unknown.values(), default=None)
        timeout = max(0.0, retry - time.monotonic()) if retry is not None else None
        if stream_expires is not None:
            renew_in = self._identity.renew_time(stream_expires)
            timeout = renew_in if timeout is None else min(timeout, renew_in)
        return timeout

    async def _open_stream(self, symbols: tuple[str, ...]) -> asyncio.Task[None] | None:
        live = asyncio.Event()

        async def stream() -> None:
            with self._identity.acting():
                await self._ticks.stream(symbols, self._on_ticks, live.set)

        task = asyncio.create_task(stream(), name="signal-engine-stream")
        waiter = asyncio.create_task(live.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=_LIVE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The engine is stopping: the stream must not outlive it (and fail later, unobserved).
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if live.is_set() and not task.done():
            return task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        error = task.exception() if task.done() and not task.cancelled() else None
        if isinstance(error, NotFound) and error.metadata.get("symbol") in symbols:
            symbol = str(error.metadata["symbol"])
            log.warning("the market has no instrument %s: streaming the other symbols without it for now", symbol)
            self._unknown[symbol] = time.monotonic() + _UNKNOWN_RETRY_SECONDS
            self._symbols_changed.set()
        elif self._draining.is_set() or (isinstance(error, Unavailable) and error.reason == "MARKET_DRAINING"):
            log.info("tick stream for %d symbols ended: %s; opening it again", len(symbols), error)
        elif error is not None:
            log.warning("tick stream for %d symbols failed: %s", len(symbols), error)
        return None

    # -- jobs -------------------------------------------------------------------------------------------------------

    async def _background_jobs(self) -> None:
        while True:
            try:
                with self._identity.acting():
                    await self._dispatcher.recover()
                    await self._performance.run_once()
            except asyncio.CancelledError:
                raise
            except DomainError as error:
                log.warning("signal engine jobs: %s", error.message)
            except Exception:
                log.exception("signal engine jobs failed")
            await asyncio.sleep(self._policy.performance_seconds)


async def _until_changed(
    changed: asyncio.Event, current: asyncio.Task[None] | None, at_most_seconds: float | None
) -> None:
    """Wait until the watched symbols change, the current stream ends, or `at_most_seconds` pass; nothing is left
    pending when the engine is cancelled meanwhile."""
    waiter = asyncio.ensure_future(changed.wait())
    waiters: list[asyncio.Future[Any]] = [waiter] if current is None else [waiter, current]
    try:
        await asyncio.wait(waiters, timeout=at_most_seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
