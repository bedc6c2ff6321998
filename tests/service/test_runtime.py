"""The shared runtime through real channels on loopback: health, reflection, request ids, error mapping with
details, INTERNAL hiding the exception, access log, metrics, and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
import redis.exceptions
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from sqlalchemy.exc import OperationalError

from bullant.chat.v1 import chat_pb2
from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.bootstrap import build_server
from services.core import errors
from services.core.clients import ClientFactory
from services.core.context import CallContext, bind_call, unbind_call
from services.core.coordination.redis_connection import unavailable_on_outage
from services.core.server import GrpcServer, ServiceRegistration
from services.core.settings import BUILT_SERVICES, SERVICE_NAMES
from services.core.startup import ConfigurationError
from services.market.servicer import SERVICE as MARKET
from tests.conftest import RecordingHandler
from tests.support import eventually, make_settings, running_server

ERRORS: dict[str, errors.DomainError] = {
    "INVALID": errors.InvalidArgument(
        [
            errors.FieldViolation("symbol", "must be upper case"),
            errors.FieldViolation("venue", "unknown venue"),
        ],
        reason="BAD_SYMBOL",
    ),
    "MISSING": errors.NotFound("no such instrument", reason="SYMBOL_NOT_FOUND", metadata={"symbol": "MISSING"}),
    "DUP": errors.AlreadyExists("exists", reason="INSTRUMENT_EXISTS"),
    "DENIED": errors.PermissionDenied("admins only", reason="ADMIN_REQUIRED"),
    "ANON": errors.Unauthenticated("sign in first", reason="TOKEN_EXPIRED"),
    "STATE": errors.FailedPrecondition("not trained", reason="MODEL_NOT_TRAINED"),
    "LIMIT": errors.ResourceExhausted("slow down", retry_after_seconds=2.5, reason="RATE_LIMITED"),
    "DOWN": errors.Unavailable("feed down", reason="FEED_UNAVAILABLE"),
    "RACE": errors.Aborted("lost lease", reason="LEASE_LOST"),
    "LATE": errors.DeadlineExceeded("too slow", reason="TIMEOUT"),
}
EXPECTED_CODES = {
    "INVALID": grpc.StatusCode.INVALID_ARGUMENT,
    "MISSING": grpc.StatusCode.NOT_FOUND,
    "DUP": grpc.StatusCode.ALREADY_EXISTS,
    "DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "ANON": grpc.StatusCode.UNAUTHENTICATED,
    "STATE": grpc.StatusCode.FAILED_PRECONDITION,
    "LIMIT": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DOWN": grpc.StatusCode.UNAVAILABLE,
    "RACE": grpc.StatusCode.ABORTED,
    "LATE": grpc.StatusCode.DEADLINE_EXCEEDED,
}
SECRET = "connection string mysql://root:hunter2@db"
CHAT = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


class ScriptedMarket(market_pb2_grpc.MarketServiceServicer):
    """A market servicer whose GetInstrument raises the error its symbol names, for exercising the runtime."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def GetInstrument(
        self, request: market_pb2.GetInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.GetInstrumentResponse:
        if request.symbol in ERRORS:
            raise ERRORS[request.symbol]
        if request.symbol == "CRASH":
            raise RuntimeError(SECRET)
        if request.symbol == "REDIS-DOWN":
            with unavailable_on_outage("MGET"):
                raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:53475. Connection refused.")
        if request.symbol == "DB-DOWN":
            refused = "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"
            raise OperationalError("SELECT 1", {}, ConnectionError(2003, refused))
        if request.symbol == "SLOW":
            await self.release.wait()
        return market_pb2.GetInstrumentResponse(instrument=market_pb2.Instrument(symbol=request.symbol))

    async def StreamTicks(
        self, request: market_pb2.StreamTicksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[market_pb2.StreamTicksResponse]:
        for _ in range(2):
            yield market_pb2.StreamTicksResponse()
        if "CRASH" in request.symbols:
            raise RuntimeError(SECRET)
        if "MISSING" in request.symbols:
            raise ERRORS["MISSING"]
        # Otherwise a stream that never ends by itself.
        await asyncio.Event().wait()


def _registration(servicer: market_pb2_grpc.MarketServiceServicer) -> ServiceRegistration:
    return ServiceRegistration(
        name="market",
        full_name=MARKET.full_name,
        add_to_server=lambda server: market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, server),
    )


def _details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == error.code().value[0]
    found: dict[str, Any] = {}
    for kind in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RequestInfo,
        error_details_pb2.RetryInfo,
    ):
        for detail in status.details:
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for item_key, value in error.trailing_metadata() or ():
        if item_key == key:
            return str(value)
    return None


async def _call_trailer(call: grpc.aio.UnaryUnaryCall[Any, Any], key: str) -> str | None:
    for item_key, value in await call.trailing_metadata() or ():
        if item_key == key:
            return str(value)
    return None


@pytest.fixture
async def market() -> AsyncIterator[tuple[GrpcServer, market_pb2_grpc.MarketServiceStub, ScriptedMarket]]:
    servicer = ScriptedMarket()
    async with (
        running_server([_registration(servicer)]) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        yield server, market_pb2_grpc.MarketServiceStub(channel), servicer


async def test_health_reports_each_hosted_service_and_overall() -> None:
    server = build_server(make_settings())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            names = [r.full_name for r in server.registrations]
            assert [r.name for r in server.registrations] == list(BUILT_SERVICES)
            for name in ["", *names]:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health.Check(health_pb2.HealthCheckRequest(service="bullant.trading.v1.TradingService"))
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            listed = await health.List(health_pb2.HealthListRequest())
            assert set(listed.statuses) == {"", *names}
            # One service going down takes the overall status with it.
            server.health.set(names[1], health_pb2.HealthCheckResponse.NOT_SERVING)
            overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(grace=0.5)


async def test_a_service_that_is_not_built_is_not_served_at_all() -> None:
    # SERVING must mean a service can do its job: one whose methods would all answer UNIMPLEMENTED is left out of
    # health, Health/List and reflection alike.
    unbuilt = [name for name in SERVICE_NAMES if name not in BUILT_SERVICES]
    assert unbuilt == ["chat"]
    server = build_server(make_settings())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health.Check(health_pb2.HealthCheckRequest(service=CHAT.full_name))
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            listed = await health.List(health_pb2.HealthListRequest())
            assert CHAT.full_name not in listed.statuses

            def services() -> list[str]:
                with grpc.insecure_channel(server.address) as sync_channel:
                    return list(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

            assert CHAT.full_name not in await asyncio.to_thread(services)
    finally:
        await server.stop(grace=0.5)
    with pytest.raises(ConfigurationError, match="chat: not built yet") as refused:
        build_server(make_settings(), ["market", "chat"])
    assert refused.value.exit_code == 2


async def test_the_services_of_a_server_on_port_0_call_each_other_on_the_port_it_bound(
    captured_logs: RecordingHandler,
) -> None:
    # No upstream configured: services reach each other on this server, whichever port 0 picked.
    server = build_server(make_settings(port=0), ["market"])
    await server.start()
    try:
        factory = next(c for c in server.components if isinstance(c, ClientFactory))
        stub = factory.stub(market_pb2_grpc.MarketServiceStub, MARKET)
        token = bind_call(CallContext(request_id="self-call-1"))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListInstruments(market_pb2.ListInstrumentsRequest(), timeout=10)
        finally:
            unbind_call(token)
    finally:
        await server.stop(grace=0.5)
    # No authenticator token: this server's own interceptors answered (and logged the call).
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    assert any(
        json.loads(line).get("request_id") == "self-call-1" and json.loads(line)["logger"] == "bullant.access"
        for line in captured_logs.lines
    )


async def test_reflection_describes_services_and_messages() -> None:
    server = build_server(make_settings(), ["market", "signal"])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            # The reflection client is synchronous; run it in a thread against its own channel.
            def describe() -> tuple[list[str], list[str]]:
                with grpc.insecure_channel(server.address) as sync_channel:
                    database = ProtoReflectionDescriptorDatabase(sync_channel)
                    pool = descriptor_pool.DescriptorPool(database)
                    services = list(database.get_services())
                    method = pool.FindServiceByName("bullant.market.v1.MarketService").FindMethodByName("GetQuote")
                    fields = [f.name for f in method.input_type.fields]
                    return services, fields

            services, fields = await asyncio.to_thread(describe)
            assert channel is not None
        assert "bullant.market.v1.MarketService" in services
        assert "bullant.signal.v1.SignalService" in services
        assert "bullant.account.v1.AccountService" not in services
        assert "grpc.health.v1.Health" in services
        assert "symbol" in fields
    finally:
        await server.stop(grace=0.5)


async def test_request_id_is_echoed_or_created(market: Any) -> None:
    _, stub, _ = market
    call = stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="AAPL"), metadata=(("x-request-id", "req-42"),))
    await call
    assert await _call_trailer(call, "x-request-id") == "req-42"

    call = stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="AAPL"))
    await call
    created = await _call_trailer(call, "x-request-id")
    assert created is not None
    assert len(created) == 32
    assert all(c in "0123456789abcdef" for c in created)

    # A hostile id (huge, or with spaces) is not echoed into logs and headers.
    call = stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="AAPL"), metadata=(("x-request-id", "x" * 500),))
    await call
    assert await _call_trailer(call, "x-request-id") != "x" * 500


@pytest.mark.parametrize("symbol", sorted(ERRORS))
async def test_each_typed_error_maps_to_its_status_with_details(market: Any, symbol: str) -> None:
    _, stub, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol=symbol), metadata=(("x-request-id", f"rid-{symbol}"),)
        )
    error = caught.value
    expected = ERRORS[symbol]
    assert error.code() is EXPECTED_CODES[symbol]
    assert error.details() == expected.message
    found = _details(error)
    assert found["ErrorInfo"].reason == expected.reason
    assert found["ErrorInfo"].domain == "bullant.market"
    assert dict(found["ErrorInfo"].metadata) == expected.metadata
    assert found["RequestInfo"].request_id == f"rid-{symbol}"
    assert _trailer(error, "x-request-id") == f"rid-{symbol}"
    if symbol == "INVALID":
        violations = [(v.field, v.description) for v in found["BadRequest"].field_violations]
        assert violations == [("symbol", "must be upper case"), ("venue", "unknown venue")]
    else:
        assert "BadRequest" not in found
    if symbol == "LIMIT":
        assert found["RetryInfo"].retry_delay.ToMilliseconds() == 2500


async def test_an_outage_answers_its_reason_and_logs_its_detail(market: Any, captured_logs: RecordingHandler) -> None:
    _, stub, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol="REDIS-DOWN"), metadata=(("x-request-id", "outage-1"),)
        )
    error = caught.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details() == "the platform's cache is unavailable for now; try again shortly"
    everything_sent = repr(error.trailing_metadata()) + str(error.details())
    assert "127.0.0.1" not in everything_sent
    assert "Error 111" not in everything_sent
    found = _details(error)
    assert found["ErrorInfo"].reason == "CACHE_UNAVAILABLE"
    assert found["RetryInfo"].retry_delay.ToMilliseconds() == 1000
    logged = [json.loads(line) for line in captured_logs.lines if "outage-1" in line]
    assert any(entry["logger"] == "bullant.errors" and "Error 111" in entry["message"] for entry in logged)


async def test_an_unreachable_database_is_unavailable_not_internal(
    market: Any, captured_logs: RecordingHandler
) -> None:
    _, stub, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol="DB-DOWN"), metadata=(("x-request-id", "db-down-1"),)
        )
    error = caught.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details() == "the database is unavailable for now; try again shortly"
    assert "Can't connect" not in repr(error.trailing_metadata()) + str(error.details())
    assert _details(error)["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"
    logged = [json.loads(line) for line in captured_logs.lines if "db-down-1" in line]
    assert any(entry["logger"] == "bullant.errors" and "Can't connect" in entry["message"] for entry in logged)
    assert not any("exception" in entry for entry in logged), "an outage is not logged as a crash"


async def test_unexpected_exception_is_internal_and_hides_its_text(
    market: Any, captured_logs: RecordingHandler
) -> None:
    _, stub, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol="CRASH"), metadata=(("x-request-id", "boom-1"),)
        )
    error = caught.value
    assert error.code() is grpc.StatusCode.INTERNAL
    assert error.details() == "internal error (request id boom-1)"
    everything_sent = repr(error.trailing_metadata()) + repr(error.initial_metadata()) + str(error.details())
    assert "hunter2" not in everything_sent
    found = _details(error)
    assert found["ErrorInfo"].reason == "INTERNAL"
    assert found["RequestInfo"].request_id == "boom-1"
    # The operator finds the traceback by the request id.
    logged = [json.loads(line) for line in captured_logs.lines if "boom-1" in line]
    errors_logged = [entry for entry in logged if entry["logger"] == "bullant.errors"]
    assert errors_logged
    assert "RuntimeError" in errors_logged[0]["exception"]
    assert "hunter2" in errors_logged[0]["exception"]
    assert errors_logged[0]["request_id"] == "boom-1"


async def test_streams_map_errors_after_messages(market: Any) -> None:
    _, stub, _ = market
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamTicks(market_pb2.StreamTicksRequest(symbols=["MISSING"])):
            received += 1
    assert received == 2
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert _details(caught.value)["ErrorInfo"].reason == "SYMBOL_NOT_FOUND"

    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamTicks(market_pb2.StreamTicksRequest(symbols=["CRASH"])):
            received += 1
    assert received == 2
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "hunter2" not in str(caught.value.details())


async def test_unbuilt_method_is_unimplemented_with_reason(market: Any) -> None:
    _, stub, _ = market
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQuote(market_pb2.GetQuoteRequest(symbol="AAPL"))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    info = _details(caught.value)["ErrorInfo"]
    assert info.reason == "NOT_IMPLEMENTED"
    assert info.metadata["method"] == "/bullant.market.v1.MarketService/GetQuote"


async def test_access_log_line_per_call(market: Any, captured_logs: RecordingHandler) -> None:
    _, stub, _ = market
    await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="AAPL"), metadata=(("x-request-id", "log-1"),))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol="MISSING"), metadata=(("x-request-id", "log-2"),)
        )

    def access_lines() -> dict[str, Any]:
        entries = [json.loads(line) for line in captured_logs.lines]
        return {e["request_id"]: e for e in entries if e["logger"] == "bullant.access"}

    # A call is logged as its handler finishes, which may be just after the client has its answer.
    await eventually(lambda: {"log-1", "log-2"} <= access_lines().keys())
    access = access_lines()
    assert access["log-1"]["method"] == "/bullant.market.v1.MarketService/GetInstrument"
    assert access["log-1"]["code"] == "OK"
    assert access["log-2"]["code"] == "NOT_FOUND"
    assert isinstance(access["log-1"]["duration_ms"], float)
    assert access["log-1"]["peer"].startswith("ipv4:127.0.0.1:")


async def test_metrics_count_calls_by_method_and_code(market: Any) -> None:
    server, stub, _ = market
    for _ in range(3):
        await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="AAPL"))
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="DOWN"))
    labels = {"grpc_service": "bullant.market.v1.MarketService", "grpc_method": "GetInstrument"}
    registry = server.metrics.registry

    def handled(code: str) -> object:
        return registry.get_sample_value("bullant_grpc_server_handled_total", {**labels, "grpc_code": code})

    # A call is counted as its handler finishes, which may be just after the client has its answer.
    await eventually(lambda: handled("UNAVAILABLE") == 2)
    assert registry.get_sample_value("bullant_grpc_server_started_total", labels) == 5
    assert handled("OK") == 3
    assert handled("UNAVAILABLE") == 2
    assert registry.get_sample_value("bullant_grpc_server_handling_seconds_count", {**labels, "grpc_code": "OK"}) == 3
    assert b"bullant_grpc_server_handled_total" in server.metrics.exposition()


async def test_graceful_shutdown_finishes_in_flight_calls_and_refuses_new_ones() -> None:
    servicer = ScriptedMarket()
    server = GrpcServer(make_settings().server, [_registration(servicer)], authenticator=None)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = market_pb2_grpc.MarketServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="SLOW")))
        await eventually(
            lambda: (
                server.metrics.registry.get_sample_value(
                    "bullant_grpc_server_started_total",
                    {"grpc_service": MARKET.full_name, "grpc_method": "GetInstrument"},
                )
                == 1
            )
        )
        stopping = asyncio.ensure_future(server.stop(grace=5))
        await eventually(server.lifecycle.draining.is_set)
        assert server.health.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        servicer.release.set()
        reply = await in_flight
        assert reply.instrument.symbol == "SLOW"
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="AAPL"), timeout=2)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_shutdown_cuts_a_stream_that_outlives_the_grace_period() -> None:
    server = GrpcServer(make_settings().server, [_registration(ScriptedMarket())], authenticator=None)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stream = market_pb2_grpc.MarketServiceStub(channel).StreamTicks(market_pb2.StreamTicksRequest(symbols=["AAPL"]))
        await stream.read()
        started = time.monotonic()
        await asyncio.wait_for(server.stop(grace=1.0), 60)  # the bound guards against a hang only
        # The stream had its grace period before it was cut (a lower bound: a loaded machine only adds to it).
        assert time.monotonic() - started >= 0.9
        with pytest.raises(grpc.aio.AioRpcError):
            while True:
                message = await stream.read()
                if message is grpc.aio.EOF:
                    raise AssertionError("the stream ended without a status")


async def test_health_watch_reports_shutdown_and_ends() -> None:
    server = build_server(make_settings(), ["model"])
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="bullant.model.v1.ModelService")
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await server.stop(grace=10)
        # The watcher is told and its stream ends with OK: had it held the server for the whole grace period, the
        # stream would have been cut and the reads below would raise.
        statuses = []
        while (message := await watch.read()) is not grpc.aio.EOF:
            statuses.append(message.status)
        assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert await watch.code() is grpc.StatusCode.OK
