"""The gateway's REST side against real services: routes from the protos' annotations (path variables, a body
field, the query string with enum names and repeated keys, custom verbs), the proto3 JSON mapping both ways,
credentials and the request id passed through, every refusal as an AIP-193 error body (the service's field
violations and reasons included, Retry-After on RESOURCE_EXHAUSTED), and server streams as NDJSON and SSE whose
upstream call ends when the client goes away."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from bullant.market.v1 import market_pb2
from gateway.app import create_app
from gateway.openapi import openapi_path
from gateway.routes import Router, compile_template, generated_services
from gateway.server import GatewayServer
from services.core.startup import StartupError
from services.signal.live.hub import SignalHub
from tests.gateway_platform import GatewayPlatform, running_gateway, running_uvicorn
from tests.signal_platform import free_port
from tests.support import eventually, make_settings

pytestmark = pytest.mark.timeout(120)
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def platform() -> AsyncIterator[GatewayPlatform]:
    async with running_gateway(max_streams_per_account=1) as running:
        yield running


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "status", "message", "details"}
    assert error["code"] == response.status_code
    return error


def _reason(error: dict[str, Any]) -> str:
    return next((d["reason"] for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")), "")


def _violations(error: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in error["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            for violation in detail.get("fieldViolations", []):
                found[violation["field"]] = violation["description"]
    return found


def test_every_annotated_method_has_a_route_and_templates_compile() -> None:
    router = Router.from_services(generated_services())
    names = {route.method.full_name for route in router.routes}
    assert "bullant.signal.v1.SignalService.UpdateAlert" in names
    assert "bullant.market.v1.MarketService.StreamTicks" in names
    pattern, variables = compile_template("/v1/alerts/{alert.alert_id}")
    assert variables == ("alert.alert_id",)
    assert pattern.fullmatch("/v1/alerts/alr_1")
    assert not pattern.fullmatch("/v1/alerts/a/b")
    verb, _ = compile_template("/v1/trainingJobs/{job_id}:watch")
    assert verb.fullmatch("/v1/trainingJobs/j1:watch")
    assert not compile_template("/v1/trainingJobs/{job_id}")[0].fullmatch("/v1/trainingJobs/j1:watch")


async def test_register_log_in_and_call_with_the_token(platform: GatewayPlatform) -> None:
    http = platform.http
    registered = await http.post("/v1/auth:register", json={"email": "ada@example.com", "password": PASSWORD})
    assert registered.status_code == 200, registered.text
    login = await http.post(
        "/v1/auth:login", json={"email": "ada@example.com", "password": PASSWORD, "deviceName": "curl"}
    )
    assert login.status_code == 200, login.text
    token = login.json()["accessToken"]
    account = await http.get("/v1/account", headers={"authorization": f"Bearer {token}", "x-request-id": "req-42"})
    assert account.status_code == 200
    assert account.json()["account"]["email"] == "ada@example.com"
    assert account.headers["x-request-id"] == "req-42"
    anonymous = await http.get("/v1/account")
    assert anonymous.status_code == 401
    error = _error(anonymous)
    assert error["status"] == "UNAUTHENTICATED"
    assert _reason(error) == "CREDENTIALS_MISSING"
    assert len(anonymous.headers["x-request-id"]) == 32  # made up when the client sent none


async def test_path_body_and_query_mapping(platform: GatewayPlatform) -> None:
    http, admin, trader = platform.http, platform.bearer(1, admin=True), platform.bearer(3)
    created = await http.post(
        "/v1/instruments",
        headers=admin,
        # The body is the `instrument` field (`body: "instrument"`), in the proto3 JSON mapping.
        json={"symbol": "GW-1", "venue": "TEST", "assetClass": "ASSET_CLASS_CRYPTO", "quoteCurrency": "USD"},
    )
    assert created.status_code == 200, created.text
    got = await http.get("/v1/instruments/GW-1", headers=trader)
    assert got.json()["instrument"]["symbol"] == "GW-1"
    missing = await http.get("/v1/instruments/NOPE-1", headers=trader)
    assert missing.status_code == 404
    assert _reason(_error(missing)) == "SYMBOL_NOT_FOUND"
    bars = await http.get(
        "/v1/instruments/GW-1/bars", params={"timeframe": "TIMEFRAME_1D", "pageSize": "5"}, headers=trader
    )
    assert bars.status_code == 200, bars.text
    assert bars.json()["bars"] == []

    alert = await http.post(
        "/v1/alerts",
        headers=trader,
        json={
            "symbol": "GW-1",
            "timeframe": "TIMEFRAME_1M",
            "strategyId": "ema_cross",
            "channels": ["ALERT_CHANNEL_IN_APP"],
        },
    )
    assert alert.status_code == 200, alert.text
    alert_id = alert.json()["alert"]["alertId"]
    assert alert.json()["alert"]["enabled"] is True
    patched = await http.patch(
        f"/v1/alerts/{alert_id}", params={"updateMask": "enabled"}, headers=trader, json={"enabled": False}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["alert"]["enabled"] is False
    listed = await http.get("/v1/alerts", params=[("symbol", "GW-1"), ("enabled", "false")], headers=trader)
    assert [item["alertId"] for item in listed.json()["alerts"]] == [alert_id]
    signals = await http.get(
        "/v1/signals", params=[("symbols", "GW-1"), ("symbols", "GW-2"), ("grades", "SIGNAL_GRADE_BUY")], headers=trader
    )
    assert signals.status_code == 200
    assert signals.json() == {"signals": [], "nextPageToken": ""}
    other = await http.get(f"/v1/alerts/{alert_id}", headers=platform.bearer(4))
    assert other.status_code == 404
    assert _reason(_error(other)) == "ALERT_NOT_FOUND"


async def test_refusals_are_aip193_errors(platform: GatewayPlatform) -> None:
    http, trader = platform.http, platform.bearer(3)
    unknown_query = await http.get("/v1/signals", params={"colour": "red"}, headers=trader)
    assert unknown_query.status_code == 400
    assert "colour" in _violations(_error(unknown_query))
    unknown_body = await http.post("/v1/alerts", headers=trader, json={"symbol": "X", "colour": "red"})
    assert unknown_body.status_code == 400
    assert "colour" in _error(unknown_body)["message"]
    not_json = await http.post(
        "/v1/alerts",
        headers=trader,
        content=b"{nope",
    )
    assert not_json.status_code == 400
    bad_enum = await http.get("/v1/signals", params={"timeframes": "TIMEFRAME_2M"}, headers=trader)
    assert bad_enum.status_code == 400
    from_service = await http.post(
        "/v1/alerts",
        headers=trader,
        json={"symbol": "bad symbol!", "timeframe": "TIMEFRAME_1M", "strategyId": "ema_cross"},
    )
    assert from_service.status_code == 400
    error = _error(from_service)
    assert error["status"] == "INVALID_ARGUMENT"
    assert "alert.symbol" in _violations(error)
    assert (await http.get("/v1/nowhere", headers=trader)).status_code == 404
    wrong_method = await http.delete("/v1/signals", headers=trader)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, OPTIONS"
    huge = await http.post("/v1/alerts", headers=trader, content=b"{" + b" " * 2_000_000 + b"}")
    assert huge.status_code == 413
    assert _error(huge)["status"] == "RESOURCE_EXHAUSTED"


async def _lines(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.strip():
            yield json.loads(line)


def _hub(platform: GatewayPlatform) -> SignalHub:
    for registration in platform.server.registrations:
        for component in registration.components:
            if isinstance(component, SignalHub):
                return component
    raise AssertionError("no signal hub")


async def test_server_streams_as_ndjson_and_sse_end_upstream_when_the_client_leaves(platform: GatewayPlatform) -> None:
    http, trader = platform.http, platform.bearer(3)
    hub = _hub(platform)
    async with http.stream("GET", "/v1/signals:stream", headers=trader) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = _lines(response)  # held: a dropped iterator would close the response
        first = await anext(lines)
        assert "heartbeat" in first["result"]
        assert hub.listener_count == 1
        # The per-account limit: a second stream is refused before it starts, with Retry-After.
        refused = await http.get("/v1/signals:stream", headers=trader)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "5"
        assert _reason(_error(refused)) == "TOO_MANY_STREAMS"
    await eventually(lambda: hub.listener_count == 0, timeout=10)  # the client left: the upstream call ended

    async with http.stream("GET", "/v1/signals:stream", headers={**trader, "accept": "text/event-stream"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = response.aiter_lines()
        assert await anext(events) == "event: message"
        data = await anext(events)
        assert data.startswith("data: ")
        assert "heartbeat" in json.loads(data[len("data: ") :])["result"]
    await eventually(lambda: hub.listener_count == 0, timeout=10)

    bad = await http.get("/v1/signals:stream", params={"symbols": "NOPE-1"}, headers=trader)
    assert bad.status_code == 404
    assert _reason(_error(bad)) == "SYMBOL_NOT_FOUND"


async def test_health_and_readiness(platform: GatewayPlatform) -> None:
    assert (await platform.http.get("/healthz")).json() == {"status": "SERVING"}
    ready = await platform.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["services"]["bullant.signal.v1.SignalService"] == "SERVING"
    # A service with a contract but no implementation is served nowhere, so it does not count (nor show).
    assert "bullant.chat.v1.ChatService" not in ready.json()["services"]


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


async def test_the_openapi_document_covers_every_route(platform: GatewayPlatform) -> None:
    response = await platform.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    router = Router.from_services(generated_services())
    for route in router.routes:
        operation = document["paths"][openapi_path(route.template)][route.http_method.lower()]
        path_names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert path_names == {name.replace(".", "_") for name in route.variables}
    schemas = document["components"]["schemas"]
    for ref in _refs(document):  # every reference resolves
        kind, _, name = ref.removeprefix("#/components/").partition("/")
        assert name in document["components"][kind], ref
    # Every operation lists the errors it can give, each the AIP-193 body with the request id.
    for path in document["paths"].values():
        for operation in path.values():
            assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "429"} | {
                "500",
                "501",
                "503",
                "504",
            }
    unauthenticated = document["components"]["responses"]["Unauthenticated"]
    assert unauthenticated["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert unauthenticated["headers"]["X-Request-Id"] == {"$ref": "#/components/headers/RequestId"}
    login = document["paths"]["/v1/auth:login"]["post"]
    assert login["security"] == []  # public
    assert "email" in schemas["bullant.account.v1.LoginRequest"]["properties"]
    ticks = document["paths"]["/v1/ticks:stream"]["get"]
    assert "application/x-ndjson" in ticks["responses"]["200"]["content"]
    assert {p["name"] for p in ticks["parameters"]} >= {"symbols", "conflation"}


async def test_each_client_is_rate_limited_by_the_data_layer() -> None:
    async with running_gateway(gateway_requests_per_minute=3) as platform:
        http, first, second = platform.http, platform.bearer(3), platform.bearer(4)
        answers = [(await http.get("/v1/strategies", headers=first)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = await http.get("/v1/strategies", headers=first)
        error = _error(limited)
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert _reason(error) == "RATE_LIMITED"
        assert int(limited.headers["retry-after"]) >= 1
        assert (await http.get("/v1/strategies", headers=second)).status_code == 200  # per client


async def test_the_gateway_server_turns_nagle_off_on_client_connections() -> None:
    """Keep-alive responses go out at once (a response's header and body writes must not wait for a delayed ACK)."""
    server = GatewayServer(make_settings(gateway_port=0))
    await server.start()
    try:
        assert server.port
        async with httpx.AsyncClient(base_url=f"http://{server.address}") as http:
            assert (await http.get("/healthz")).status_code == 200
            assert server.connection_sockets()
            for sock in server.connection_sockets():
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        await server.stop()
    with pytest.raises(StartupError, match="cannot listen"):
        taken = GatewayServer(make_settings(gateway_port=0))
        await taken.start()
        try:
            await GatewayServer(make_settings(gateway_port=taken.port)).start()
        finally:
            await taken.stop()


async def test_an_upstream_that_does_not_answer_gets_the_deadline_as_504() -> None:
    """Every unary upstream call carries the configured deadline: a service that never answers becomes a 504 with
    DEADLINE_EXCEEDED, not a request hanging until the client gives up."""
    server = grpc.aio.server()
    entered = asyncio.Event()

    async def never(request: market_pb2.GetQuoteRequest, context: Any) -> market_pb2.GetQuoteResponse:
        entered.set()
        await asyncio.sleep(60)
        return market_pb2.GetQuoteResponse()

    handler = grpc.unary_unary_rpc_method_handler(
        never,
        request_deserializer=market_pb2.GetQuoteRequest.FromString,
        response_serializer=market_pb2.GetQuoteResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bullant.market.v1.MarketService", {"GetQuote": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = make_settings(default_upstream=f"127.0.0.1:{port}", request_timeout_seconds=0.5)
    http_port = free_port()
    try:
        async with (
            running_uvicorn(create_app(settings), http_port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30.0) as http,
        ):
            # Credentials present (the fake service does not check them), so the gateway calls it.
            response = await http.get("/v1/quotes/SIM-AAPL", headers={"authorization": "Bearer any"})
        assert entered.is_set()
        assert response.status_code == 504, response.text
        assert _error(response)["status"] == "DEADLINE_EXCEEDED"
    finally:
        await server.stop(0)
