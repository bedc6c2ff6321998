"""What the shared runtime costs per call: a Bullant server (interceptors, metrics, access log, error mapping) vs a
bare grpc.aio server running the same servicer, over loopback, unary and server-streaming."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.server import GrpcServer, ServiceRegistration
from services.core.settings import load_settings
from services.market.servicer import SERVICE as MARKET
from services.market.servicer import MarketServicer


class EchoMarket(MarketServicer):
    """Answers GetInstrument at once and streams `max_batch` empty tick batches."""

    async def GetInstrument(
        self, request: market_pb2.GetInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.GetInstrumentResponse:
        return market_pb2.GetInstrumentResponse(instrument=market_pb2.Instrument(symbol=request.symbol))

    async def StreamTicks(
        self, request: market_pb2.StreamTicksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[market_pb2.StreamTicksResponse]:
        message = market_pb2.StreamTicksResponse()
        for _ in range(len(request.symbols)):
            yield message


async def _bare_server(servicer: MarketServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _bullant_server(servicer: MarketServicer) -> tuple[GrpcServer, int]:
    settings = load_settings(environ={}, port=0, metrics_port=-1)
    registration = ServiceRegistration(
        name="market",
        full_name=MARKET.full_name,
        add_to_server=lambda s: market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, s),
    )
    server = GrpcServer(settings, [registration], authenticator=None)
    await server.start()
    assert server.port is not None
    return server, server.port


async def _unary_latencies(port: int, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = market_pb2_grpc.MarketServiceStub(channel)
        request = market_pb2.GetInstrumentRequest(symbol="AAPL")
        for _ in range(200):
            await stub.GetInstrument(request)
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.GetInstrument(request)
            latencies.append(time.perf_counter() - started)
        return latencies


async def _stream_rate(port: int, messages: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = market_pb2_grpc.MarketServiceStub(channel)
        request = market_pb2.StreamTicksRequest(symbols=["X"] * messages)
        started = time.perf_counter()
        count = 0
        async for _ in stub.StreamTicks(request):
            count += 1
        return count / (time.perf_counter() - started)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def _measure(
    start: Callable[[MarketServicer], Awaitable[tuple[Any, int]]], calls: int, messages: int
) -> tuple[list[float], float]:
    server, port = await start(EchoMarket())
    try:
        latencies = await _unary_latencies(port, calls)
        rate = await _stream_rate(port, messages)
    finally:
        await server.stop(0)
    return latencies, rate


async def run(quick: bool = False) -> None:
    """Print unary p50/p99 and stream messages/s for bare grpcio and Bullant, and their ratio.

    The two servers are measured in alternating rounds so that machine noise hits both alike.
    """
    logging.getLogger("bullant").setLevel(logging.WARNING)
    rounds, calls, messages = (2, 500, 5_000) if quick else (5, 2_000, 20_000)
    bare_lat: list[float] = []
    ours_lat: list[float] = []
    bare_rates: list[float] = []
    ours_rates: list[float] = []
    for _ in range(rounds):
        latencies, rate = await _measure(_bare_server, calls, messages)
        bare_lat += latencies
        bare_rates.append(rate)
        latencies, rate = await _measure(_bullant_server, calls, messages)
        ours_lat += latencies
        ours_rates.append(rate)
    bare_rate, ours_rate = statistics.median(bare_rates), statistics.median(ours_rates)
    print("== runtime overhead: Bullant server vs bare grpc.aio (same servicer, loopback) ==")
    print(f"{'':28}{'bare grpcio':>14}{'bullant':>14}{'ratio':>9}")
    for label, q in (("unary p50 (us)", 50), ("unary p99 (us)", 99)):
        bare, ours = _p(bare_lat, q) * 1e6, _p(ours_lat, q) * 1e6
        print(f"{label:28}{bare:14.1f}{ours:14.1f}{ours / bare:8.2f}x")
    print(f"{'stream messages/s':28}{bare_rate:14.0f}{ours_rate:14.0f}{bare_rate / ours_rate:8.2f}x")
    print("(ratio = bullant cost / bare cost; 1.00x means no overhead)")
