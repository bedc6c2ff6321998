"""Tick streaming end to end: how many ticks per second `bullant.market.v1.MarketService/StreamTicks` delivers to 1,
10 and 100 concurrent subscribers over loopback, and the latency from publication to receipt, next to a bare
grpc.aio server that streams the same messages with no platform code.

- bullant: the real market service on a GrpcServer with authentication on (the subscribers hold a "read" token),
  fed by a feed adapter whose tick batches this harness pushes. Every tick takes the whole path: the feed runner
  numbers it and folds it into quotes and bars, encodes the batch and publishes it on the in-memory pub-sub, the
  tick hub splits it and hands it to every subscriber's queue, and StreamTicks sends it on pre-encoded.
- bare grpcio: a plain grpc.aio server with one generic handler for the same method: the harness fans each batch
  out (as protobuf Ticks) to per-call asyncio queues, and the handler yields StreamTicksResponse messages of up to
  max_batch_size ticks. No interceptors, no authentication, no pub-sub.

The subscribers run in another process (bench/stream_client.py) so that parsing does not take the server's CPU;
they open the streams with skip_snapshot and the default max_batch_size (256), spread over channels of ten.

Reported per subscriber count:

- throughput: ticks received per second, summed over all subscribers, while the harness publishes batches of 128
  ticks over 10 symbols as fast as the server keeps up (it waits while the most-behind subscriber has more than
  4096 ticks not yet handed to gRPC, so queues stay full but bounded and nothing is conflated). Ratio bare/bullant.
- latency: p50 and p99 of receipt minus event time (stamped at publication; the first tick of each message), with
  a steady 20k ticks/s delivered in total, published every 10 ms. Ratio bullant/bare.

The ratios are the figures: 1.00x means the platform costs nothing over bare grpcio, and the aim is bullant within
1.5x of it with at least 100k ticks/s delivered in total. Reading them: with one subscriber, throughput and latency
are bound by the work done once per published tick (bullant: numbering, quotes, bars, encoding, the hub's split; bare:
building the protobuf Ticks); with many subscribers, by the work per stream and message (bare serializes every
message for every subscriber, bullant joins pre-encoded ticks), so the ratio can fall below 1.00x there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.market.v1 import market_pb2
from services.bootstrap import build_authenticator, build_dependencies
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.server import GrpcServer
from services.core.settings import load_settings
from services.market import servicer as market_servicer
from services.market import wiring as market_wiring
from services.market.feeds.base import FeedAdapter
from services.market.feeds.runner import FeedRunner, FeedState
from services.market.records import AssetClass, Instrument, Tick
from services.market.streaming import TickHub

SUBSCRIBERS = (1, 10, 100)
SYMBOLS = tuple(f"BENCH{index}" for index in range(10))
FEED_ID = "bench"
METHOD = "StreamTicks"
# Throughput: batches of this many ticks, published while the most-behind subscriber has at most BACKLOG queued.
BATCH = 128
BACKLOG = 4096
# Latency: ticks per second delivered in total (over all subscribers), published every LATENCY_PERIOD seconds.
LATENCY_RATE = 20_000
LATENCY_PERIOD = 0.01
# Ticks (symbol, price, size) the harness cycles through; both servers get the same.
TEMPLATE = [
    (SYMBOLS[index % len(SYMBOLS)], 100.0 + (index % 97) * 0.01, float(1 + index % 5)) for index in range(BATCH)
]
ROOT = Path(__file__).resolve().parent.parent

Template = Sequence[tuple[str, float, float]]


class Target(ABC):
    """A running server the harness publishes to and the client process subscribes to."""

    label: str
    port: int
    token = ""

    @abstractmethod
    def subscribers(self) -> int:
        """Streams currently subscribed."""

    @abstractmethod
    def backlog(self) -> int:
        """Ticks published but not yet handed to gRPC, for the subscriber furthest behind."""

    @abstractmethod
    def publish(self, ticks: Template) -> None:
        """Publish these ticks as one batch, stamped now."""

    @abstractmethod
    async def stop(self) -> None: ...


# -- bullant ---------------------------------------------------------------------------------------------------------


class BenchFeed(FeedAdapter):
    """A feed whose tick batches the harness pushes."""

    adapter = "bench"
    simulated = True

    def __init__(self) -> None:
        super().__init__(FEED_ID)
        self.queue: asyncio.Queue[list[Tick]] = asyncio.Queue()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def instruments(self) -> Sequence[Instrument]:
        return [
            Instrument(
                symbol=symbol, venue="BENCH", asset_class=AssetClass.CRYPTO, quote_currency="USD", feed_id=FEED_ID
            )
            for symbol in SYMBOLS
        ]

    async def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        while True:
            yield await self.queue.get()


class BullantTarget(Target):
    label = "bullant"

    def __init__(
        self,
        *,
        server: GrpcServer,
        feed: BenchFeed,
        runner: FeedRunner,
        hub: TickHub,
        token: str,
        directory: tempfile.TemporaryDirectory[str],
    ) -> None:
        assert server.port is not None
        self.port = server.port
        self.token = token
        self._server = server
        self._directory = directory
        self._feed = feed
        self._runner = runner
        self._hub = hub
        self._pushed = 0
        self._last_size = BATCH

    @classmethod
    async def start(cls) -> BullantTarget:
        directory = tempfile.TemporaryDirectory(prefix="bullant-bench-")
        settings = load_settings(
            environ={},
            host="127.0.0.1",
            port=0,
            metrics_port=-1,
            data_dir=Path(directory.name),
            market_feeds=[],
            # Deep enough that the throughput run measures delivery, not conflation.
            stream_queue_capacity=65_536,
            max_streams_per_account=max(SUBSCRIBERS),
        )
        feed = BenchFeed()
        deps = build_dependencies(settings)
        registration = market_wiring.build(deps, factories={FEED_ID: lambda: feed})
        server = GrpcServer(
            settings.server,
            [registration],
            lifecycle=deps.lifecycle,
            components=(deps.databases, deps.coordination),
            authenticator=build_authenticator(deps),
        )
        await server.start()
        runner = next(item for item in registration.components if isinstance(item, FeedRunner))
        hub = next(item for item in registration.components if isinstance(item, TickHub))
        try:
            # Leader, instruments stored, consuming ticks.
            await _until(lambda: runner.status.state == FeedState.HEALTHY, "the bench feed to become healthy")
        except BaseException:
            await server.stop(grace=0)
            directory.cleanup()
            raise
        assert deps.signing_keys is not None
        token, _ = TokenIssuer(deps.signing_keys, token_policy(settings.auth)).issue(
            account_id=1, shard=0, roles=["user"], scopes=["read"], session_id="bench"
        )
        return cls(server=server, feed=feed, runner=runner, hub=hub, token=token, directory=directory)

    @property
    def data_dir(self) -> str:
        """The server's data directory (its development signing key lives there)."""
        return self._directory.name

    def subscribers(self) -> int:
        return self._hub.subscriber_count

    def backlog(self) -> int:
        # Batches pushed that the hub has not dispatched yet (in the feed's queue, the runner or the pub-sub)...
        in_flight = (self._pushed - self._hub.received_batches) * self._last_size
        # ...plus the longest subscriber queue (the hub keeps no public list of its subscribers).
        queued = max((item.pending for item in self._hub._subscribers), default=0)
        return in_flight + queued

    def publish(self, ticks: Template) -> None:
        when = datetime.now(UTC).replace(tzinfo=None)
        self._feed.queue.put_nowait([Tick(symbol, when, price, size) for symbol, price, size in ticks])
        self._pushed += 1
        self._last_size = len(ticks)

    async def stop(self) -> None:
        try:
            await self._server.stop(grace=0.5)
        finally:
            self._directory.cleanup()


# -- bare grpcio -----------------------------------------------------------------------------------------------------


class BareTarget(Target):
    """StreamTicks in a dozen lines: each published batch goes to every call's queue; calls send what is queued."""

    label = "bare grpcio"

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self.port = port
        self._server = server
        self._queues: set[asyncio.Queue[list[market_pb2.Tick]]] = set()
        self._sequences = dict.fromkeys(SYMBOLS, 0)

    @classmethod
    async def start(cls) -> BareTarget:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        target = cls(server, port)
        handler = grpc.unary_stream_rpc_method_handler(
            target._stream,
            request_deserializer=market_pb2.StreamTicksRequest.FromString,
            response_serializer=market_pb2.StreamTicksResponse.SerializeToString,
        )
        service = market_servicer.SERVICE.full_name
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {METHOD: handler}),))
        await server.start()
        return target

    async def _stream(
        self, request: market_pb2.StreamTicksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[market_pb2.StreamTicksResponse]:
        limit = request.max_batch_size or 256
        queue: asyncio.Queue[list[market_pb2.Tick]] = asyncio.Queue()
        self._queues.add(queue)
        try:
            while True:
                ticks = list(await queue.get())
                while len(ticks) < limit and not queue.empty():
                    ticks += queue.get_nowait()
                yield market_pb2.StreamTicksResponse(ticks=market_pb2.TickBatch(ticks=ticks))
        finally:
            self._queues.discard(queue)

    def subscribers(self) -> int:
        return len(self._queues)

    def backlog(self) -> int:
        return max((queue.qsize() for queue in self._queues), default=0) * BATCH

    def publish(self, ticks: Template) -> None:
        when = time.time_ns()
        stamp = Timestamp(seconds=when // 1_000_000_000, nanos=when % 1_000_000_000)
        batch = []
        for symbol, price, size in ticks:
            self._sequences[symbol] += 1
            batch.append(
                market_pb2.Tick(
                    symbol=symbol, event_time=stamp, price=price, size=size, sequence=self._sequences[symbol]
                )
            )
        for queue in self._queues:
            queue.put_nowait(batch)

    async def stop(self) -> None:
        await self._server.stop(0)


# -- subscribers -----------------------------------------------------------------------------------------------------


class Client:
    """The subscriber process (bench/stream_client.py)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(
        cls, target: Target, streams: int, *, arguments: Sequence[str] = (), expected: int | None = None
    ) -> Client:
        """`arguments`: more for bench/stream_client.py; `expected`: hub subscribers to wait for (default: streams)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.stream_client",
            f"--port={target.port}",
            f"--streams={streams}",
            f"--symbols={','.join(SYMBOLS)}",
            *arguments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "BENCH_TOKEN": target.token},
            limit=1 << 24,  # the report is one long line
        )
        client = cls(process)
        try:
            await _until(
                lambda: target.subscribers() >= (expected or streams) or process.returncode is not None,
                f"{expected or streams} subscribers",
                within=30.0,
            )
            if process.returncode is not None:
                raise RuntimeError(f"the subscriber process exited with status {process.returncode}")
        except BaseException:
            await client.close()
            raise
        return client

    async def command(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode() + b"\n")
        await self._process.stdin.drain()

    async def report(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        await self.command("stop")
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=30.0)
        if not line:
            raise RuntimeError(f"the subscriber process ended (status {await self._process.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def close(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.command("quit")
            try:
                await asyncio.wait_for(self._process.wait(), timeout=10.0)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


# -- publishing and measuring ----------------------------------------------------------------------------------------


async def _until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _flood(target: Target, stop: asyncio.Event) -> None:
    """As fast as the server keeps up: a batch, then one turn of the event loop; waits while the backlog is full."""
    while not stop.is_set():
        if target.backlog() > BACKLOG:
            await asyncio.sleep(0.001)
            continue
        target.publish(TEMPLATE)
        await asyncio.sleep(0)


async def _steady(target: Target, stop: asyncio.Event, per_batch: int) -> None:
    """`per_batch` ticks every LATENCY_PERIOD seconds, on a fixed schedule."""
    loop = asyncio.get_running_loop()
    ticks = list(itertools.islice(itertools.cycle(TEMPLATE), per_batch))
    due = loop.time()
    while not stop.is_set():
        target.publish(ticks)
        due += LATENCY_PERIOD
        await asyncio.sleep(max(0.0, due - loop.time()))


@dataclass
class Durations:
    warmup: float
    throughput: float
    latency: float


async def _phase(
    target: Target,
    client: Client,
    publisher: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    window: float,
    warmup: float,
) -> dict[str, Any]:
    stop = asyncio.Event()
    task = asyncio.create_task(publisher(stop))
    try:
        await asyncio.sleep(warmup)
        await client.command("start")
        await asyncio.sleep(window)
        report = await client.report()
    finally:
        stop.set()
        await task
    # Let the queues empty, so the next phase starts from rest.
    await _until(lambda: target.backlog() == 0, "the backlog to drain")
    await asyncio.sleep(0.2)
    return report


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    dropped: int = 0


async def _measure(target: Target, streams: int, durations: Durations, figures: Figures) -> None:
    client = await Client.start(target, streams)
    try:
        flood = await _phase(target, client, lambda stop: _flood(target, stop), durations.throughput, durations.warmup)
        per_batch = max(1, round(LATENCY_RATE * LATENCY_PERIOD / streams))
        steady = await _phase(
            target, client, lambda stop: _steady(target, stop, per_batch), durations.latency, durations.warmup
        )
    finally:
        await client.close()
    figures.rates.append(flood["ticks"] / flood["elapsed_s"])
    figures.latencies += steady["latencies_ms"]
    figures.dropped += flood["dropped"] + steady["dropped"]


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


async def run(quick: bool = False) -> None:
    """Print, per subscriber count, ticks/s delivered at saturation and p50/p99 publish→receipt latency for bare
    grpcio and Bullant, and their ratios.

    The servers are measured in alternating rounds so that machine noise hits both alike; throughput is the median
    over rounds, latency percentiles are over every round's samples.
    """
    logging.getLogger("bullant").setLevel(logging.WARNING)
    rounds, durations = (1, Durations(0.3, 1.0, 1.0)) if quick else (3, Durations(0.5, 3.0, 2.0))
    starters: list[tuple[str, Callable[[], Awaitable[Target]]]] = [
        ("bare grpcio", BareTarget.start),
        ("bullant", BullantTarget.start),
    ]
    figures = {(label, streams): Figures() for label, _ in starters for streams in SUBSCRIBERS}
    for _ in range(rounds):
        for label, start in starters:
            target = await start()
            try:
                for streams in SUBSCRIBERS:
                    await _measure(target, streams, durations, figures[label, streams])
            finally:
                await target.stop()
    bare, bullant = (label for label, _ in starters)
    print("== tick streaming: StreamTicks through the market service vs bare grpc.aio fan-out (loopback) ==")
    print(
        f"{'subscribers':>11}{'bare ticks/s':>15}{'bullant ticks/s':>17}{'ratio':>8}"
        f"{'bare p50/p99 ms':>19}{'bullant p50/p99 ms':>21}{'ratio p50/p99':>16}"
    )
    for streams in SUBSCRIBERS:
        ours, theirs = figures[bullant, streams], figures[bare, streams]
        rate, base = statistics.median(ours.rates), statistics.median(theirs.rates)
        p50, p99 = _p(ours.latencies, 50), _p(ours.latencies, 99)
        b50, b99 = _p(theirs.latencies, 50), _p(theirs.latencies, 99)
        print(
            f"{streams:>11}{base:>15,.0f}{rate:>17,.0f}{base / rate:>7.2f}x"
            f"{f'{b50:.2f}/{b99:.2f}':>19}{f'{p50:.2f}/{p99:.2f}':>21}{f'{p50 / b50:.2f}x/{p99 / b99:.2f}x':>16}"
        )
    dropped = {key: item.dropped for key, item in figures.items() if item.dropped}
    if dropped:
        print(f"conflated (dropped) ticks, which should not happen: {dropped}")
    print(
        "(ticks/s: delivered at saturation, summed over subscribers, ratio bare/bullant; latency: publish→receipt at "
        f"{LATENCY_RATE // 1000}k ticks/s in total, ratio bullant/bare; 1.00x = no overhead; aim <= 1.50x and "
        ">= 100k ticks/s)"
    )
