"""Every refusal of the gateway, against real services: the AIP-193 JSON body with X-Request-Id whatever answers
(the gateway's router, its transcoding, Starlette's routing, a service), nesting bounded before the body is parsed,
field-naming messages in our words (never a parser's exception text), enums by name only as the OpenAPI document
says, 401 before any body validation for a request without credentials, and CORS preflights."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.jsonfields import MAX_DEPTH
from tests.gateway_platform import GatewayPlatform, running_gateway, running_uvicorn
from tests.signal_platform import free_port
from tests.support import make_settings

pytestmark = pytest.mark.timeout(120)
_PYTHON_TEXT = ("invalid literal", "Failed to parse", "Message type", "Expecting", "Traceback", "<class", "json_format")


@pytest.fixture
async def platform() -> AsyncIterator[GatewayPlatform]:
    async with running_gateway(gateway_cors_origins=["https://app.example.com"]) as running:
        yield running


def _error(response: httpx.Response) -> dict[str, Any]:
    """The AIP-193 error of a response, after checking its shape, its media type and its request id."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert response.headers.get("x-request-id"), response.headers
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "status", "message", "details"}
    assert error["code"] == response.status_code
    assert not any(text in error["message"] for text in _PYTHON_TEXT), error["message"]
    return error


def _violations(error: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in error["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            found.update({v.get("field", ""): v["description"] for v in detail["fieldViolations"]})
    return found


def _reason(error: dict[str, Any]) -> str:
    return next((d["reason"] for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")), "")


def _nested(depth: int) -> bytes:
    """A JSON body `{"a": {"a": ... {}}}` whose objects nest `depth` levels."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


async def test_deep_nesting_is_a_400_naming_the_limit_before_parsing(platform: GatewayPlatform) -> None:
    http, trader = platform.http, platform.bearer(3)
    # The body of the report: 2.2 KB of arrays nested 1,100 levels (a 500 without X-Request-Id before).
    deep = await http.post("/v1/alerts", headers=trader, content=b"[" * 1100 + b"]" * 1100)
    assert deep.status_code == 400
    error = _error(deep)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == f"the JSON nests deeper than {MAX_DEPTH} levels"
    # Exactly at the bound the body is parsed (and refused for what it says); one level more is not.
    at_limit = _error(await http.post("/v1/alerts", headers=trader, content=_nested(MAX_DEPTH)))
    assert _violations(at_limit) == {"alert.a": "no such field"}
    beyond = _error(await http.post("/v1/alerts", headers=trader, content=_nested(MAX_DEPTH + 1)))
    assert "nests deeper" in beyond["message"]
    # Brackets inside strings are text, not nesting.
    text = json.dumps({"symbol": "[" * 500, "strategyId": "{" * 500}).encode()
    assert "alert.symbol" in _violations(_error(await http.post("/v1/alerts", headers=trader, content=text)))


async def test_every_refusal_is_an_aip193_body_with_a_request_id(platform: GatewayPlatform) -> None:
    http, trader = platform.http, platform.bearer(3)
    assert _error(await http.get("/v1/nowhere", headers=trader))["status"] == "NOT_FOUND"
    wrong_method = await http.delete("/v1/signals", headers=trader)
    assert _error(wrong_method)["code"] == 405
    assert wrong_method.headers["allow"] == "GET, OPTIONS"
    # A fixed route asked with another method: Starlette's refusal, in the same shape.
    assert _error(await http.post("/healthz"))["code"] == 405
    too_large = await http.post("/v1/alerts", headers=trader, content=b"{" + b" " * 2_000_000 + b"}")
    assert _error(too_large)["code"] == 413
    not_json = _error(await http.post("/v1/alerts", headers=trader, content=b'{"symbol": nope}'))
    assert not_json["message"] == "the body is not valid JSON (line 1, column 12)"
    not_utf8 = _error(await http.post("/v1/alerts", headers=trader, content=b'{"symbol": "\xff"}'))
    assert not_utf8["message"] == "the body is not UTF-8 text"
    # Bad percent-encoding in a path variable and in the query string.
    broken_escape = _error(await http.get("/v1/alerts/alr%ZZ1", headers=trader))
    assert _violations(broken_escape) == {"alert_id": "a % must start an escape of two hex digits, such as %2F"}
    not_utf8_path = _error(await http.get("/v1/alerts/%FF%FE", headers=trader))
    assert _violations(not_utf8_path) == {"alert_id": "is not UTF-8 once percent-decoded"}
    not_utf8_query = _error(await http.get("/v1/alerts?symbol=%C3%28", headers=trader))
    assert _violations(not_utf8_query) == {"symbol": "is not UTF-8 once percent-decoded"}
    # A control character in a path variable reaches the route (a text/plain 404 before): the service refuses it.
    newline = await http.get("/v1/instruments/SIM%0AAAPL", headers=trader)
    assert newline.status_code == 400
    assert "symbol" in _violations(_error(newline))
    newline_id = await http.get("/v1/alerts/alr%0A1", headers=trader)
    assert newline_id.status_code in (400, 404)
    _error(newline_id)


async def test_parse_errors_name_the_field_and_say_what_was_expected(platform: GatewayPlatform) -> None:
    http, trader = platform.http, platform.bearer(3)
    page_size = _error(await http.get("/v1/instruments/SIM-AAPL/bars", params={"pageSize": ""}, headers=trader))
    assert page_size["message"] == "pageSize: expected an integer, got ''"
    assert _violations(page_size) == {"pageSize": "expected an integer, got ''"}
    too_big = _error(await http.get("/v1/instruments/SIM-AAPL/bars", params={"page_size": "1e12"}, headers=trader))
    assert _violations(too_big) == {"page_size": "expected an integer from -2147483648 to 2147483647, got '1e12'"}
    flag = _error(await http.get("/v1/alerts", params={"enabled": "perhaps"}, headers=trader))
    assert _violations(flag) == {"enabled": "expected true or false, got 'perhaps'"}
    body = {"symbol": 5, "timeframe": "TIMEFRAME_1M", "strategyId": "ema_cross"}
    wrong_type = _error(await http.post("/v1/alerts", headers=trader, json=body))
    assert _violations(wrong_type) == {"alert.symbol": "expected a string, got a number"}
    unknown = _error(await http.post("/v1/alerts", headers=trader, json={"colour": "red"}))
    assert _violations(unknown) == {"alert.colour": "no such field"}
    channels = _error(await http.post("/v1/alerts", headers=trader, json={"channels": "ALERT_CHANNEL_IN_APP"}))
    assert _violations(channels) == {"alert.channels": "expected a JSON list, got a string"}
    twice = _error(await http.post("/v1/alerts", headers=trader, json={"strategyId": "a", "strategy_id": "b"}))
    assert _violations(twice) == {"alert.strategy_id": "the same field as strategyId; set it once"}


async def test_enums_are_accepted_by_name_only_as_the_document_says(platform: GatewayPlatform) -> None:
    http, trader = platform.http, platform.bearer(3)
    document = (await http.get("/openapi.json")).json()
    timeframe = document["components"]["schemas"]["bullant.common.v1.Timeframe"]
    assert timeframe["type"] == "string"
    names = timeframe["enum"]
    assert "TIMEFRAME_1M" in names
    by_name = await http.get("/v1/signals", params={"timeframes": "TIMEFRAME_1M"}, headers=trader)
    assert by_name.status_code == 200, by_name.text
    by_number = _error(await http.get("/v1/signals", params={"timeframes": "3"}, headers=trader))
    description = _violations(by_number)["timeframes"]
    assert description.startswith("expected a name, not a number: one of TIMEFRAME_UNSPECIFIED, ")
    body = {"symbol": "SIM-AAPL", "timeframe": 3, "strategyId": "ema_cross", "channels": ["ALERT_CHANNEL_IN_APP"]}
    in_body = _error(await http.post("/v1/alerts", headers=trader, json=body))
    assert _violations(in_body)["alert.timeframe"].startswith("expected a name, not a number: one of ")
    unknown = _error(await http.get("/v1/signals", params={"timeframes": "TIMEFRAME_2M"}, headers=trader))
    assert "got 'TIMEFRAME_2M'" in _violations(unknown)["timeframes"]


async def test_a_request_without_credentials_is_401_before_its_body_is_read(platform: GatewayPlatform) -> None:
    http = platform.http
    for body in (b'{"password": 5}', b"not json", b"[" * 1100 + b"]" * 1100, b'{"colour": "red"}'):
        refused = await http.post("/v1/account/totp:disable", content=body)
        assert refused.status_code == 401, refused.text
        error = _error(refused)
        assert error["status"] == "UNAUTHENTICATED"
        assert _reason(error) == "CREDENTIALS_MISSING"
        assert refused.headers["www-authenticate"] == "Bearer"
    # With credentials the body is checked (the service then judges the credentials themselves).
    with_token = await http.post("/v1/account/totp:disable", headers=platform.bearer(3), content=b'{"password": 5}')
    assert _violations(_error(with_token)) == {"password": "expected a string, got a number"}
    # A public method needs none: its body is checked at once.
    login = await http.post("/v1/auth:login", content=b'{"email": 5}')
    assert _violations(_error(login)) == {"email": "expected a string, got a number"}


async def test_a_credential_header_no_credential_can_hold_is_401(platform: GatewayPlatform) -> None:
    """Credentials are printable ASCII (all gRPC metadata carries): a header with other characters is an invalid
    credential – 401 with the reason the services give – not a malformed request, whatever else is sent."""
    http = platform.http
    bearer = {name.encode(): value.encode() for name, value in platform.bearer(3).items()}
    cases: list[tuple[dict[bytes, bytes], str]] = [
        ({**bearer, b"x-api-key": "cl\xe9".encode("latin-1")}, "API_KEY_INVALID"),
        ({b"authorization": "Bearer \xe9t\xe9".encode("latin-1")}, "TOKEN_INVALID"),
    ]
    for headers, reason in cases:
        for refused in (
            await http.get("/v1/alerts", headers=headers),
            await http.post("/v1/auth:login", headers=headers, json={"email": "a@example.com", "password": "x"}),
        ):
            assert refused.status_code == 401, refused.text
            error = _error(refused)
            assert (error["status"], _reason(error)) == ("UNAUTHENTICATED", reason)


async def test_cors_preflight_grants_the_configured_origins_only(platform: GatewayPlatform) -> None:
    http = platform.http
    allowed = {"origin": "https://app.example.com", "access-control-request-method": "POST"}
    preflight = await http.options(
        "/v1/alerts", headers={**allowed, "access-control-request-headers": "Authorization, Content-Type"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {
        "GET",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
    }
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["access-control-max-age"] == "600"
    assert "Origin" in preflight.headers["vary"]
    assert preflight.headers["x-request-id"]
    stranger = await http.options("/v1/alerts", headers={**allowed, "origin": "https://evil.example.com"})
    assert stranger.status_code == 403
    assert _reason(_error(stranger)) == "CORS_ORIGIN_NOT_ALLOWED"
    assert not any(name.startswith("access-control-allow") for name in stranger.headers)
    odd_header = await http.options("/v1/alerts", headers={**allowed, "access-control-request-headers": "x-secret"})
    assert odd_header.status_code == 403
    assert "x-secret" in _error(odd_header)["message"]
    # The answers themselves: granted and exposed for the configured origin, nothing for another.
    answer = await http.get("/v1/strategies", headers={**platform.bearer(3), "origin": "https://app.example.com"})
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    refused = await http.get("/v1/nowhere", headers={"origin": "https://app.example.com"})
    assert refused.headers["access-control-allow-origin"] == "https://app.example.com"  # errors are readable too
    other = await http.get("/v1/strategies", headers={**platform.bearer(3), "origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
    # OPTIONS that is not a preflight: the methods of the path.
    plain = await http.options("/v1/alerts")
    assert plain.status_code == 204
    assert plain.headers["allow"] == "GET, OPTIONS, POST"


async def test_a_failing_channel_is_reported_without_its_internals() -> None:
    """An upstream that is not there: the client learns the service is unavailable (or late), not its address."""
    dead = free_port()
    settings = make_settings(default_upstream=f"127.0.0.1:{dead}", request_timeout_seconds=1.0)
    http_port = free_port()
    async with (
        running_uvicorn(create_app(settings), http_port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30.0) as http,
    ):
        response = await http.get("/v1/quotes/SIM-AAPL", headers={"authorization": "Bearer any"})
    error = _error(response)
    assert response.status_code in (503, 504)
    assert error["message"] in ("the service is unavailable; retry in a moment", "the service did not answer in time")
    assert "127.0.0.1" not in response.text
