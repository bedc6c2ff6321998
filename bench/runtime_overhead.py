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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.auth.authenticator import Authenticator
from services.core.auth.keys import SigningKeys
from services.core.auth.revocation import RevocationList
from services.core.auth.tokens import TokenIssuer, TokenPolicy, TokenVerifier
from services.core.coordination import KeySpace, MemoryBackend
from services.core.server import GrpcServer, ServiceRegistration
from services.core.settings import load_settings
from services.market.servicer import SERVICE as MARKET


class EchoMarket(market_pb2_grpc.MarketServiceServicer):
    """Answers GetInstrument at once and streams `messages` empty tick batches to any StreamTicks call (a valid
    request of one symbol: the request rules cap symbols at 1,000, so the count cannot ride on the request)."""

    def __init__(self, messages: int) -> None:
        self.messages = messages

    async def GetInstrument(
        self, request: market_pb2.GetInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.GetInstrumentResponse:
        return market_pb2.GetInstrumentResponse(instrument=market_pb2.Instrument(symbol=request.symbol))

    async def StreamTicks(
        self, request: market_pb2.StreamTicksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[market_pb2.StreamTicksResponse]:
        message = market_pb2.StreamTicksResponse()
        for _ in range(self.messages):
            yield message


async def _bare_server(servicer: market_pb2_grpc.MarketServiceServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


KEYS = SigningKeys.from_private(Ed25519PrivateKey.generate())
POLICY = TokenPolicy()


async def _bullant_server(
    servicer: market_pb2_grpc.MarketServiceServicer, authenticator: Authenticator | None
) -> tuple[GrpcServer, int]:
    settings = load_settings(environ={}, port=0, metrics_port=-1)
    registration = ServiceRegistration(
        name="market",
        full_name=MARKET.full_name,
        add_to_server=lambda s: market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, s),
    )
    server = GrpcServer(settings.server, [registration], authenticator=authenticator)
    await server.start()
    assert server.port is not None
    return server, server.port


async def _open(servicer: market_pb2_grpc.MarketServiceServicer) -> tuple[GrpcServer, int]:
    return await _bullant_server(servicer, None)


async def _authenticated(servicer: market_pb2_grpc.MarketServiceServicer) -> tuple[GrpcServer, int]:
    backend = MemoryBackend()
    await backend.start()
    revocations = RevocationList(backend.cache(KeySpace("bullant", "bench", "account")))
    return await _bullant_server(servicer, Authenticator(TokenVerifier(KEYS, POLICY), revocations))


def _token_metadata() -> tuple[tuple[str, str], ...]:
    token, _ = TokenIssuer(KEYS, POLICY).issue(account_id=1, shard=0, roles=["user"], scopes=["read"], session_id="b")
    return (("authorization", f"Bearer {token}"),)


async def _unary_latencies(port: int, calls: int, metadata: tuple[tuple[str, str], ...]) -> list[float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = market_pb2_grpc.MarketServiceStub(channel)
        request = market_pb2.GetInstrumentRequest(symbol="AAPL")
        for _ in range(200):
            await stub.GetInstrument(request, metadata=metadata)
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.GetInstrument(request, metadata=metadata)
            latencies.append(time.perf_counter() - started)
        return latencies


async def _stream_rate(port: int, metadata: tuple[tuple[str, str], ...]) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = market_pb2_grpc.MarketServiceStub(channel)
        request = market_pb2.StreamTicksRequest(symbols=["X"])
        started = time.perf_counter()
        count = 0
        async for _ in stub.StreamTicks(request, metadata=metadata):
            count += 1
        return count / (time.perf_counter() - started)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


Starter = Callable[[market_pb2_grpc.MarketServiceServicer], Awaitable[tuple[Any, int]]]


async def _measure(
    start: Starter, calls: int, messages: int, metadata: tuple[tuple[str, str], ...]
) -> tuple[list[float], float]:
    server, port = await start(EchoMarket(messages))
    try:
        latencies = await _unary_latencies(port, calls, metadata)
        rate = await _stream_rate(port, metadata)
    finally:
        await server.stop(0)
    return latencies, rate


async def run(quick: bool = False) -> None:
    """Print unary p50/p99 and stream messages/s for bare grpcio, Bullant without and with authentication, and
    their ratios to bare grpcio.

    The servers are measured in alternating rounds so that machine noise hits all alike.
    """
    logging.getLogger("bullant").setLevel(logging.WARNING)
    rounds, calls, messages = (2, 500, 5_000) if quick else (5, 2_000, 20_000)
    token = _token_metadata()
    variants: list[tuple[str, Starter, tuple[tuple[str, str], ...]]] = [
        ("bare grpcio", _bare_server, ()),
        ("bullant", _open, ()),
        ("bullant+auth", _authenticated, token),
    ]
    latencies: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    rates: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for _ in range(rounds):
        for label, start, metadata in variants:
            measured, rate = await _measure(start, calls, messages, metadata)
            latencies[label] += measured
            rates[label].append(rate)
    bare = "bare grpcio"
    print("== runtime overhead: Bullant server vs bare grpc.aio (same servicer, loopback) ==")
    header = "".join(f"{label:>14}" for label, _, _ in variants)
    print(f"{'':22}{header}   ratios to bare")
    for name, q in (("unary p50 (us)", 50), ("unary p99 (us)", 99)):
        values = {label: _p(latencies[label], q) * 1e6 for label in latencies}
        ratios = " ".join(f"{values[label] / values[bare]:.2f}x" for label, _, _ in variants[1:])
        print(f"{name:22}" + "".join(f"{values[label]:14.1f}" for label, _, _ in variants) + f"   {ratios}")
    medians = {label: statistics.median(rates[label]) for label in rates}
    ratios = " ".join(f"{medians[bare] / medians[label]:.2f}x" for label, _, _ in variants[1:])
    print(f"{'stream messages/s':22}" + "".join(f"{medians[label]:14.0f}" for label, _, _ in variants) + f"   {ratios}")
    print("(ratio = cost relative to bare grpcio; 1.00x means no overhead; +auth checks a bearer token on every call)")
