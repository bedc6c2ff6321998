"""Live signals: the time from the tick that closes a bar to that bar's signal reaching a StreamSignals subscriber
(and the alert it fires), next to the time the same tick takes to reach a plain StreamTicks subscriber.

- The market, signal and model services in one real GrpcServer on loopback (SQLite in a temporary data directory,
  in-memory pub-sub, authentication on), the signal service calling the others through its upstream (that same
  server) with its service token. A feed adapter whose ticks the harness pushes serves 1, 10 or 50 crypto symbols,
  each with 100 stored one-minute bars of history, all of them watched by the engine (BULLANT_SIGNAL_SYMBOLS) with
  the platform strategy volume_spike (defaults).
- The tape spikes the volume every fourth minute, moving the price up or down: every fourth bar close makes a BUY
  or a SELL on every symbol. A subscriber's alert rule on each symbol (volume_spike with the defaults, the shortest
  cooldown) fires with it. So each measured signal takes the whole path: the engine's tick stream (no
  conflation), the bar built from ticks, the strategy evaluated over its history in a worker thread, the model
  service asked for a prediction within the fusion deadline (it has no production model here, so it answers
  NOT_TRAINED and the signal is technical-only), the signal stored and published on the pub-sub to the hub that
  feeds StreamSignals; the alert additionally has its firing written with its trigger count and cooldown check in
  the owner's shard and its notification in the outbox.
- Each round pushes one tick per symbol stamped in the next minute (minutes in the future, so only that tick closes
  a bar – never a wall-clock timer) and waits for every expected signal and alert. Latency = receipt at the
  subscriber minus the moment the harness handed the tick batch to the feed. The first rounds are not counted
  (their bars began before the engine's subscription and are read back from the market's store).
- The subscribers (StreamSignals, StreamTicks) run in the same process as the server, so their decoding is in
  every figure alike.

Reported per symbol count: p50 and p99 of the signal, alert and tick latencies, and the signal's p99 over the
tick's (the cost of the signal path on top of delivering the tick). The target is a signal p99 under 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2, market_pb2_grpc
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.bootstrap import build_authenticator, build_dependencies
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.clock import utc_now
from services.core.dependencies import Dependencies
from services.core.server import GrpcServer, ServiceRegistration
from services.core.settings import load_settings
from services.core.timeframes import Timeframe
from services.market import wiring as market_wiring
from services.market.feeds.base import FeedAdapter
from services.market.feeds.runner import FeedRunner, FeedState
from services.market.records import AssetClass, Instrument, Tick
from services.model import wiring as model_wiring
from services.signal import wiring as signal_wiring
from services.signal.live.engine import LiveEngine
from services.signal.live.records import SeriesKey

SYMBOL_COUNTS = (1, 10, 50)
FEED_ID = "bench"
HISTORY_BARS = 100
WARMUP_ROUNDS = 4
Metadata = tuple[tuple[str, str], ...]
TARGET_P99_MS = 50.0
MINUTE = timedelta(minutes=1)


class BenchFeed(FeedAdapter):
    adapter = "bench"
    simulated = True

    def __init__(self, symbols: Sequence[str]) -> None:
        super().__init__(FEED_ID)
        self._symbols = list(symbols)
        self.queue: asyncio.Queue[list[Tick]] = asyncio.Queue()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def instruments(self) -> Sequence[Instrument]:
        return [
            Instrument(symbol=s, venue="BENCH", asset_class=AssetClass.CRYPTO, quote_currency="USD", feed_id=FEED_ID)
            for s in self._symbols
        ]

    async def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        while True:
            yield await self.queue.get()


def _spike(index: int) -> int:
    """+1 / -1 on the minutes the volume spikes with the price up / down, else 0."""
    return 1 if index % 8 == 0 else -1 if index % 8 == 4 else 0


def _price(index: int) -> float:
    return 100.0 + _spike(index)


def _volume(index: int) -> float:
    return 10.0 if _spike(index) else 1.0


def _stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment.replace(tzinfo=UTC))
    return value


async def _until(condition: object, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = condition()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass(frozen=True, slots=True)
class Figures:
    symbols: int
    signals: int
    signal_p50: float
    signal_p99: float
    alert_p50: float
    alert_p99: float
    tick_p50: float
    tick_p99: float


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(count: int, rounds: int) -> Figures:
    symbols = [f"BENCH{index}" for index in range(count)]
    directory = tempfile.TemporaryDirectory(prefix="bullant-bench-live-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = load_settings(
        environ={},
        host="127.0.0.1",
        port=port,
        # The signal service reaches the market and model services through this same server.
        default_upstream=f"127.0.0.1:{port}",
        metrics_port=-1,
        data_dir=Path(directory.name),
        market_feeds=[],
        model_demo_symbols=[],
        signal_symbols=symbols,
        signal_strategies=["volume_spike"],
        signal_repeat_bars=0,
        signal_watch_refresh_seconds=0.5,
        signal_performance_interval_seconds=3600.0,
        max_alerts_per_account=max(100, count),
    )
    feed = BenchFeed(symbols)
    deps = build_dependencies(settings)
    market = market_wiring.build(deps, factories={FEED_ID: lambda: feed})
    signal = signal_wiring.build(deps)
    server = GrpcServer(
        settings.server,
        [market, signal, model_wiring.build(deps)],
        lifecycle=deps.lifecycle,
        components=(deps.databases, deps.coordination, deps.clients),
        authenticator=build_authenticator(deps),
    )
    await server.start()
    try:
        return await _run(server, deps=deps, feed=feed, symbols=symbols, rounds=rounds, market=market, signal=signal)
    finally:
        await server.stop(grace=0)
        await deps.clients.stop()
        directory.cleanup()


async def _run(
    server: GrpcServer,
    *,
    deps: Dependencies,
    feed: BenchFeed,
    symbols: list[str],
    rounds: int,
    market: ServiceRegistration,
    signal: ServiceRegistration,
) -> Figures:
    runner = next(c for c in market.components if isinstance(c, FeedRunner))
    engine = next(c for c in signal.components if isinstance(c, LiveEngine))
    await _until(lambda: runner.status.state == FeedState.HEALTHY, "the bench feed")
    assert deps.signing_keys is not None
    issuer = TokenIssuer(deps.signing_keys, token_policy(deps.settings.auth))

    def bearer(account: int, scopes: list[str], roles: list[str]) -> tuple[tuple[str, str], ...]:
        token, _ = issuer.issue(account_id=account, shard=0, roles=roles, scopes=scopes, session_id=f"b{account}")
        return (("authorization", f"Bearer {token}"),)

    admin = bearer(1, ["read", "trade", "admin"], ["user", "admin"])
    trader = bearer(2, ["read", "trade"], ["user"])
    history_end = Timeframe.M1.floor(utc_now())
    start = history_end + 10 * MINUTE
    async with grpc.aio.insecure_channel(server.address) as channel:
        markets = market_pb2_grpc.MarketServiceStub(channel)
        signals = signal_pb2_grpc.SignalServiceStub(channel)
        for symbol in symbols:
            await _prepare(markets, signals, symbol, history_end=history_end, admin=admin, trader=trader)

        def ready() -> bool:
            return set(symbols) <= set(engine.streaming) and all(
                SeriesKey(symbol, Timeframe.M1) in engine.runners for symbol in symbols
            )

        await _until(ready, "the engine to stream every symbol", within=60.0)
        stream = signals.StreamSignals(signal_pb2.StreamSignalsRequest(symbols=symbols), metadata=trader)
        tape = markets.StreamTicks(market_pb2.StreamTicksRequest(symbols=symbols, max_batch_size=4096), metadata=trader)
        # Both subscriptions are live once their first message (heartbeat, snapshot) is in.
        await stream.read()
        await tape.read()
        return await _rounds(feed, symbols, rounds=rounds, start=start, stream=stream, tape=tape)


async def _prepare(
    markets: market_pb2_grpc.MarketServiceAsyncStub,
    signals: signal_pb2_grpc.SignalServiceAsyncStub,
    symbol: str,
    *,
    history_end: datetime,
    admin: Metadata,
    trader: Metadata,
) -> None:
    """The symbol's history (the same tape, minutes before `history_end`) and the trader's alert rule on it."""
    first = history_end - HISTORY_BARS * MINUTE
    offset = -HISTORY_BARS
    bars = [
        market_pb2.Bar(
            open_time=_stamp(first + n * MINUTE),
            open=_price(offset + n),
            high=_price(offset + n),
            low=_price(offset + n),
            close=_price(offset + n),
            volume=_volume(offset + n),
        )
        for n in range(HISTORY_BARS)
    ]
    await markets.ImportBars(
        market_pb2.ImportBarsRequest(symbol=symbol, timeframe=common_pb2.TIMEFRAME_1M, bars=bars), metadata=admin
    )
    await signals.CreateAlert(
        signal_pb2.CreateAlertRequest(
            alert=signal_pb2.Alert(
                symbol=symbol,
                timeframe=common_pb2.TIMEFRAME_1M,
                strategy_id="volume_spike",
                channels=[signal_pb2.ALERT_CHANNEL_IN_APP],
                cooldown_seconds=60,
            )
        ),
        metadata=trader,
    )


async def _rounds(
    feed: BenchFeed, symbols: list[str], *, rounds: int, start: datetime, stream: Any, tape: Any
) -> Figures:
    events: asyncio.Queue[tuple[float, str, datetime]] = asyncio.Queue()

    async def read_signals() -> None:
        while (message := await stream.read()) is not grpc.aio.EOF:
            now = time.perf_counter()
            kind = message.WhichOneof("event")
            if kind == "signal":
                events.put_nowait((now, "signal", message.signal.bar_time.ToDatetime()))
            elif kind == "alert_triggered":
                events.put_nowait((now, "alert", message.alert_triggered.signal.bar_time.ToDatetime()))

    async def read_ticks() -> None:
        while (message := await tape.read()) is not grpc.aio.EOF:
            if message.WhichOneof("event") == "ticks":
                now = time.perf_counter()
                for item in message.ticks.ticks:
                    events.put_nowait((now, "tick", item.event_time.ToDatetime()))

    readers = [asyncio.create_task(read_signals()), asyncio.create_task(read_ticks())]
    found: dict[str, list[float]] = {"signal": [], "alert": [], "tick": []}
    try:
        for index in range(rounds):
            minute = start + index * MINUTE
            batch = [Tick(symbol, minute, _price(index), _volume(index)) for symbol in symbols]
            sent = time.perf_counter()
            await feed.queue.put(batch)
            # The tick of minute `index` closes the bar of minute index - 1: a signal there when it spiked.
            wanted = {"tick": (minute, len(symbols))}
            if index > 0 and _spike(index - 1):
                wanted |= {kind: (minute - MINUTE, len(symbols)) for kind in ("signal", "alert")}
            got = dict.fromkeys(wanted, 0)
            async with asyncio.timeout(30.0):
                while any(got[kind] < wanted[kind][1] for kind in wanted):
                    moment, kind, stamp = await events.get()
                    if kind in wanted and stamp == wanted[kind][0]:
                        got[kind] += 1
                        if index >= WARMUP_ROUNDS:
                            found[kind].append((moment - sent) * 1000)
            await asyncio.sleep(0.02)
    finally:
        for reader in readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
    return Figures(
        symbols=len(symbols),
        signals=len(found["signal"]),
        signal_p50=statistics.median(found["signal"]),
        signal_p99=_percentile(found["signal"], 0.99),
        alert_p50=statistics.median(found["alert"]),
        alert_p99=_percentile(found["alert"], 0.99),
        tick_p50=statistics.median(found["tick"]),
        tick_p99=_percentile(found["tick"], 0.99),
    )


async def run(*, quick: bool = False) -> list[Figures]:
    logging.getLogger("bullant").setLevel(logging.ERROR)
    rounds = 40 if quick else 160
    print("Live signals: closing tick -> StreamSignals subscriber, ms (signal; the alert it fires; the tick itself)")
    heads = ("signal p50", "signal p99", "alert p50", "alert p99", "tick p50", "tick p99")
    print(f"{'symbols':>8} {'signals':>8} " + " ".join(f"{head:>10}" for head in heads) + f" {'signal/tick p99':>16}")
    found = []
    for count in SYMBOL_COUNTS:
        figures = await measure(count, rounds)
        found.append(figures)
        verdict = "met" if figures.signal_p99 < TARGET_P99_MS else "MISSED"
        print(
            f"{figures.symbols:>8} {figures.signals:>8} {figures.signal_p50:>10.1f} {figures.signal_p99:>10.1f} "
            f"{figures.alert_p50:>10.1f} {figures.alert_p99:>10.1f} "
            f"{figures.tick_p50:>10.1f} {figures.tick_p99:>10.1f} "
            f"{figures.signal_p99 / figures.tick_p99:>15.1f}x  signal p99 < {TARGET_P99_MS:.0f} ms: {verdict}"
        )
    return found


if __name__ == "__main__":
    asyncio.run(run())
