"""The gateway's WebSocket (`/v1/ws`) against real services with the simulated feed ticking: auth by the first
message, live ticks and signals on subscribed topics, unsubscribe, clear errors for bad frames and bad topics, and
no upstream stream left behind when a client unsubscribes or disconnects."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from services.market.streaming import TickHub
from services.signal.live.hub import SignalHub
from tests.gateway_platform import GatewayPlatform, running_gateway
from tests.support import eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def platform() -> AsyncIterator[GatewayPlatform]:
    async with running_gateway(
        market_feeds=["sim"], sim_tick_interval_seconds=0.05, sim_history_daily_days=0, sim_history_minute_days=0
    ) as running:
        yield running


def _component(platform: GatewayPlatform, kind: type[Any]) -> Any:
    for registration in platform.server.registrations:
        for component in registration.components:
            if isinstance(component, kind):
                return component
    raise AssertionError(f"no {kind.__name__}")


def _url(platform: GatewayPlatform) -> str:
    return platform.base_url.replace("http://", "ws://") + "/v1/ws"


async def _next(socket: Any, kinds: set[str], timeout: float = 15.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message["type"] in kinds:
                return message


PASSWORD = "correct horse battery staple"


async def _token(platform: GatewayPlatform, email: str = "ws@example.com") -> str:
    """A real user's access token, through the gateway's REST side."""
    await platform.http.post("/v1/auth:register", json={"email": email, "password": PASSWORD})
    login = await platform.http.post("/v1/auth:login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["accessToken"])


async def test_ticks_and_signals_over_one_socket_and_nothing_left_behind(platform: GatewayPlatform) -> None:
    ticks: TickHub = _component(platform, TickHub)
    signals: SignalHub = _component(platform, SignalHub)
    before = ticks.subscriber_count
    async with websockets.connect(_url(platform)) as socket:
        await socket.send(json.dumps({"type": "auth", "token": await _token(platform)}))
        assert (await _next(socket, {"authenticated", "error"}))["type"] == "authenticated"
        await socket.send(json.dumps({"type": "subscribe", "topic": "ticks:SIM-AAPL"}))
        await socket.send(json.dumps({"type": "subscribe", "topic": "signals"}))
        await socket.send(json.dumps({"type": "ping"}))
        assert (await _next(socket, {"pong"}))["type"] == "pong"
        seen: dict[str, list[str]] = {}
        async with asyncio.timeout(30):
            while "ticks" not in seen.get("ticks:SIM-AAPL", []) or not seen.get("signals"):
                message = await _next(socket, {"event"})
                seen.setdefault(message["topic"], []).append(next(iter(message["data"])))
        assert seen["ticks:SIM-AAPL"][0] == "snapshot"
        assert seen["signals"][0] == "heartbeat"  # (no symbol: the engine is not asked to stream ticks)
        assert ticks.subscriber_count == before + 1
        assert signals.listener_count == 1
        await socket.send(json.dumps({"type": "unsubscribe", "topic": "ticks:SIM-AAPL"}))
        await _next(socket, {"unsubscribed"})
        await eventually(lambda: ticks.subscriber_count == before, timeout=10)
        assert signals.listener_count == 1
    # The client went away: its remaining upstream stream ends too.
    await eventually(lambda: signals.listener_count == 0, timeout=10)


async def test_a_client_leaving_with_several_topics_ends_every_stream(
    platform: GatewayPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    ticks: TickHub = _component(platform, TickHub)
    gateway = platform.app.state.gateway
    before = ticks.subscriber_count
    symbols = ["SIM-AAPL", "SIM-005930", "SIM-BTC-USDT", "SIM-EUR-USD"]
    with caplog.at_level(logging.ERROR):
        async with websockets.connect(_url(platform)) as socket:
            await socket.send(json.dumps({"type": "auth", "token": await _token(platform, "leaver@example.com")}))
            assert (await _next(socket, {"authenticated", "error"}))["type"] == "authenticated"
            for symbol in symbols:
                await socket.send(json.dumps({"type": "subscribe", "topic": f"ticks:{symbol}"}))
            subscribed = {(await _next(socket, {"subscribed"}))["topic"] for _ in symbols}
            assert subscribed == {f"ticks:{symbol}" for symbol in symbols}
            assert ticks.subscriber_count == before + len(symbols)
            assert len(gateway.connections) == 1
        # Every topic's stream ends, and the connection's own tasks with them, without an error.
        await eventually(lambda: ticks.subscriber_count == before and not gateway.connections, timeout=10)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_bad_frames_and_topics_get_clear_errors(platform: GatewayPlatform) -> None:
    async with websockets.connect(_url(platform)) as socket:
        await socket.send("not json")
        statuses = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                statuses.append(json.loads(await socket.recv())["error"]["status"])
        assert statuses == ["INVALID_ARGUMENT", "UNAUTHENTICATED"]
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401

    async with websockets.connect(_url(platform)) as socket:
        await socket.send(json.dumps({"type": "auth", "token": "forged"}))
        refused = await _next(socket, {"error"})
        assert refused["error"]["status"] == "UNAUTHENTICATED"

    async with websockets.connect(_url(platform)) as socket:
        await socket.send(json.dumps({"type": "auth", "token": await _token(platform)}))
        await _next(socket, {"authenticated"})
        for frame, status in (
            ("{nope", "INVALID_ARGUMENT"),
            (json.dumps([1, 2]), "INVALID_ARGUMENT"),
            (json.dumps({"type": "dance"}), "INVALID_ARGUMENT"),
            (json.dumps({"type": "subscribe"}), "INVALID_ARGUMENT"),
            (json.dumps({"type": "subscribe", "topic": "weather:paris"}), "INVALID_ARGUMENT"),
            (json.dumps({"type": "subscribe", "topic": "ticks:NOPE-1"}), "NOT_FOUND"),
            ("x" * 5000, "INVALID_ARGUMENT"),
        ):
            await socket.send(frame)
            error = await _next(socket, {"error"})
            assert error["error"]["status"] == status, (frame[:40], error)
        # Still usable after every refusal.
        await socket.send(json.dumps({"type": "ping"}))
        assert (await _next(socket, {"pong"}))["type"] == "pong"


async def test_sockets_watching_one_symbol_get_the_same_ticks_written_once(platform: GatewayPlatform) -> None:
    gateway = platform.app.state.gateway
    token = await _token(platform, "pair@example.com")
    async with websockets.connect(_url(platform)) as first, websockets.connect(_url(platform)) as second:
        for socket in (first, second):
            await socket.send(json.dumps({"type": "auth", "token": token}))
            assert (await _next(socket, {"authenticated", "error"}))["type"] == "authenticated"
            await socket.send(json.dumps({"type": "subscribe", "topic": "ticks:SIM-AAPL"}))
        hits = gateway.memo.hits
        received: list[dict[str, dict[str, Any]]] = [{}, {}]

        async def collect(socket: Any, into: dict[str, dict[str, Any]]) -> None:
            while True:
                message = await _next(socket, {"event"})
                for tick in message["data"].get("ticks", {}).get("ticks", []):
                    into[tick["sequence"]] = tick

        tasks = [
            asyncio.create_task(collect(socket, into)) for socket, into in zip((first, second), received, strict=True)
        ]
        try:
            await eventually(lambda: len(received[0].keys() & received[1].keys()) >= 5, timeout=30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    common = received[0].keys() & received[1].keys()
    assert all(received[0][sequence] == received[1][sequence] for sequence in common)
    assert {tick["symbol"] for tick in received[0].values()} == {"SIM-AAPL"}
    # The second socket's copies came from the memo rather than being decoded and written again.
    assert gateway.memo.hits > hits
