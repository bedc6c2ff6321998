"""The client factory through real channels: request-id and credential propagation, deadlines, and retries only
for methods the contract marks idempotent."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import grpc
import grpc.aio
import pytest

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core import errors
from services.core.clients import ClientFactory, is_retryable
from services.core.context import CallContext, bind_call, unbind_call
from services.core.server import ServiceRegistration
from services.market.servicer import SERVICE as MARKET
from services.market.servicer import MarketServicer
from tests.support import make_settings, running_server

# A request the contract's rules admit, so the call reaches the servicer.
NEW_INSTRUMENT = market_pb2.CreateInstrumentRequest(
    instrument=market_pb2.Instrument(
        symbol="TEST-NEW", venue="NASDAQ", asset_class=market_pb2.ASSET_CLASS_STOCK, quote_currency="USD"
    )
)


class FlakyMarket(MarketServicer):
    """Fails the first `failures` calls of each method with UNAVAILABLE and records what every call carried."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: dict[str, int] = {}
        self.seen_metadata: list[dict[str, str]] = []
        self.seen_remaining: list[float | None] = []

    def _attempt(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.attempts[method] = self.attempts.get(method, 0) + 1
        self.seen_metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        self.seen_remaining.append(context.time_remaining())
        if self.attempts[method] <= self.failures:
            raise errors.Unavailable("warming up")

    async def ListInstruments(
        self, request: market_pb2.ListInstrumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.ListInstrumentsResponse:
        self._attempt("ListInstruments", context)
        return market_pb2.ListInstrumentsResponse()

    async def CreateInstrument(
        self, request: market_pb2.CreateInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.CreateInstrumentResponse:
        self._attempt("CreateInstrument", context)
        return market_pb2.CreateInstrumentResponse()

    async def GetInstrument(
        self, request: market_pb2.GetInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.GetInstrumentResponse:
        self.seen_remaining.append(context.time_remaining())
        await asyncio.sleep(float(request.symbol or 0))
        return market_pb2.GetInstrumentResponse()


def _registration(servicer: MarketServicer) -> ServiceRegistration:
    return ServiceRegistration(
        name="market",
        full_name=MARKET.full_name,
        add_to_server=lambda server: market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, server),
    )


async def _factory_for(address: str, **overrides: Any) -> ClientFactory:
    values: dict[str, Any] = {"retry_initial_backoff_seconds": 0.01, "retry_max_backoff_seconds": 0.05, **overrides}
    settings = make_settings(upstreams={"market": address}, **values)
    factory = ClientFactory(settings.calls, settings.server)
    await factory.start()
    return factory


def test_the_contracts_mark_reads_retryable_and_writes_not() -> None:
    assert is_retryable(MARKET.methods_by_name["ListInstruments"])
    assert is_retryable(MARKET.methods_by_name["GetQuote"])
    assert is_retryable(MARKET.methods_by_name["ImportBars"])  # keyed by (symbol, timeframe, open time)
    assert not is_retryable(MARKET.methods_by_name["CreateInstrument"])


async def test_idempotent_call_is_retried_until_it_succeeds() -> None:
    servicer = FlakyMarket(failures=2)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(server.address)
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            await stub.ListInstruments(market_pb2.ListInstrumentsRequest())
        finally:
            await factory.stop()
    assert servicer.attempts["ListInstruments"] == 3


async def test_retries_stop_at_the_configured_attempts() -> None:
    servicer = FlakyMarket(failures=10)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(server.address, retry_max_attempts=3)
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListInstruments(market_pb2.ListInstrumentsRequest())
        finally:
            await factory.stop()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts["ListInstruments"] == 3


async def test_non_idempotent_call_is_never_retried() -> None:
    servicer = FlakyMarket(failures=1)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(server.address)
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateInstrument(NEW_INSTRUMENT)
        finally:
            await factory.stop()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts["CreateInstrument"] == 1


async def test_request_id_and_credentials_are_propagated() -> None:
    servicer = FlakyMarket(failures=0)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(server.address)
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            token = bind_call(
                CallContext(
                    request_id="outer-7",
                    forwarded=(("authorization", "Bearer abc"), ("x-api-key", "key-1")),
                )
            )
            try:
                await stub.ListInstruments(market_pb2.ListInstrumentsRequest())
            finally:
                unbind_call(token)
            await stub.ListInstruments(market_pb2.ListInstrumentsRequest())
        finally:
            await factory.stop()
    inside, outside = servicer.seen_metadata
    assert inside["x-request-id"] == "outer-7"
    assert inside["authorization"] == "Bearer abc"
    assert inside["x-api-key"] == "key-1"
    # Outside any served call a fresh id is made, and no credentials appear from nowhere.
    assert outside["x-request-id"] != "outer-7"
    assert "authorization" not in outside


async def test_unary_calls_get_the_default_deadline_bounded_by_the_served_call() -> None:
    servicer = FlakyMarket(failures=0)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(server.address, request_timeout_seconds=5)
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="0"))
            token = bind_call(CallContext(request_id="r", deadline=time.monotonic() + 0.3))
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="2"))
            finally:
                unbind_call(token)
        finally:
            await factory.stop()
    default_remaining, bounded_remaining = servicer.seen_remaining
    assert default_remaining is not None
    assert 4 < default_remaining < 5.1
    assert bounded_remaining is not None
    assert bounded_remaining < 0.35
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def _refusing_address() -> tuple[socket.socket, str]:
    """A loopback port that refuses connections: bound (so nobody else takes it during the test) but not listening."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    return closed, f"127.0.0.1:{closed.getsockname()[1]}"


@pytest.mark.parametrize("propagate", [True, False], ids=["service channel", "edge channel"])
async def test_a_refused_connection_is_unavailable_at_once_not_after_the_deadline(propagate: bool) -> None:
    # A retry schedule far longer than the deadline: backing off against a dead upstream would wait it all out.
    closed, address = _refusing_address()
    with closed:
        factory = await _factory_for(
            address, retry_max_attempts=5, retry_initial_backoff_seconds=5, retry_max_backoff_seconds=20
        )
        try:
            stub = market_pb2_grpc.MarketServiceStub(factory.channel(MARKET, propagate=propagate))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                # The hang guard is generous; the call itself has a 30 s deadline it must not wait out.
                await asyncio.wait_for(stub.ListInstruments(market_pb2.ListInstrumentsRequest(), timeout=30), 120)
        finally:
            await factory.stop()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value.details()


async def test_a_short_deadline_to_a_dead_upstream_still_ends_unavailable() -> None:
    # The default retry settings against the 0.5 s deadline live signals give the model service.
    closed, address = _refusing_address()
    with closed:
        settings = make_settings(upstreams={"market": address})
        factory = ClientFactory(settings.calls, settings.server)
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await asyncio.wait_for(stub.GetQuote(market_pb2.GetQuoteRequest(symbol="X"), timeout=0.5), 60)
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value.details()
        finally:
            await factory.stop()


async def test_a_retry_that_would_outlast_the_deadline_is_not_made() -> None:
    servicer = FlakyMarket(failures=10)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(
            server.address, retry_initial_backoff_seconds=30, retry_max_backoff_seconds=30, request_timeout_seconds=1
        )
        try:
            stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(stub.ListInstruments(market_pb2.ListInstrumentsRequest()), 60)
        finally:
            await factory.stop()
    # With full jitter a drawn delay could be tiny; any retry made must still leave the answer UNAVAILABLE.
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "warming up"


async def test_the_edge_channel_retries_idempotent_calls_too() -> None:
    servicer = FlakyMarket(failures=2)
    async with running_server([_registration(servicer)]) as server:
        factory = await _factory_for(server.address)
        try:
            stub = market_pb2_grpc.MarketServiceStub(factory.channel(MARKET, propagate=False))
            await stub.ListInstruments(market_pb2.ListInstrumentsRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.CreateInstrument(NEW_INSTRUMENT, timeout=10)
        finally:
            await factory.stop()
    assert servicer.attempts == {"ListInstruments": 3, "CreateInstrument": 1}
