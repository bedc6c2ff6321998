"""The gateway's WebSocket (`/v1/ws`) against real services with the simulated feed ticking: auth by the first
message, live ticks and signals on subscribed topics, unsubscribe, clear errors for bad frames and bad topics, and
no upstream stream left behind when a client unsubscribes or disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets

from gateway.app import create_app
from services.market.streaming import TickHub
from services.signal.live.hub import SignalHub
from tests.gateway_platform import GatewayPlatform, running_gateway, running_uvicorn
from tests.signal_platform import free_port
from tests.support import eventually, fresh_data_dir

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
    # The shared stream opened for the unknown symbol ended with its refusal.
    await eventually(lambda: platform.app.state.gateway.relay.stream_count == 0, timeout=10)


@pytest.fixture
async def per_socket_platform() -> AsyncIterator[GatewayPlatform]:
    """Shared tick streams off: each socket topic is a StreamTicks call of its own."""
    async with running_gateway(
        market_feeds=["sim"],
        sim_tick_interval_seconds=0.05,
        sim_history_daily_days=0,
        sim_history_minute_days=0,
        gateway_shared_ticks=False,
        max_streams_per_account=2,
    ) as running:
        yield running


async def _two_sockets_receive(
    platform: GatewayPlatform, symbol: str, while_subscribed: Callable[[], None]
) -> list[dict[str, dict[str, Any]]]:
    """The ticks two sockets of one user receive on `ticks:<symbol>`, by sequence, until they share five;
    `while_subscribed` runs (asserts) while both are subscribed."""
    token = await _token(platform, "pair@example.com")
    received: list[dict[str, dict[str, Any]]] = [{}, {}]
    async with websockets.connect(_url(platform)) as first, websockets.connect(_url(platform)) as second:
        for socket in (first, second):
            await socket.send(json.dumps({"type": "auth", "token": token}))
            assert (await _next(socket, {"authenticated", "error"}))["type"] == "authenticated"
            await socket.send(json.dumps({"type": "subscribe", "topic": f"ticks:{symbol}"}))
            assert (await _next(socket, {"subscribed", "error"}))["type"] == "subscribed"

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
            while_subscribed()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    common = received[0].keys() & received[1].keys()
    assert all(received[0][sequence] == received[1][sequence] for sequence in common)
    assert {tick["symbol"] for tick in received[0].values()} == {symbol}
    return received


async def test_sockets_watching_one_symbol_share_one_upstream_stream(platform: GatewayPlatform) -> None:
    ticks: TickHub = _component(platform, TickHub)
    relay = platform.app.state.gateway.relay
    before = ticks.subscriber_count

    def one_stream_for_both() -> None:
        assert relay.stream_count == 1
        assert ticks.subscriber_count == before + 1

    await _two_sockets_receive(platform, "SIM-BTC-USDT", one_stream_for_both)
    await eventually(lambda: relay.stream_count == 0 and ticks.subscriber_count == before, timeout=10)


async def test_without_shared_streams_each_socket_streams_and_the_memo_writes_each_tick_once(
    per_socket_platform: GatewayPlatform,
) -> None:
    platform = per_socket_platform
    gateway = platform.app.state.gateway
    assert gateway.relay is None
    ticks: TickHub = _component(platform, TickHub)
    before, hits = ticks.subscriber_count, gateway.memo.hits

    def a_stream_each() -> None:
        assert ticks.subscriber_count == before + 2

    await _two_sockets_receive(platform, "SIM-BTC-USDT", a_stream_each)
    # The second socket's copies came from the memo rather than being decoded and written again.
    assert gateway.memo.hits > hits
    await eventually(lambda: ticks.subscriber_count == before, timeout=10)


async def test_shared_streams_do_not_count_against_the_users_stream_limit() -> None:
    """With max_streams_per_account=1, one user's socket still watches three symbols: the shared streams are the
    gateway's (a service, not limited), while each topic was still checked with the user's own credentials."""
    async with running_gateway(
        market_feeds=["sim"],
        sim_tick_interval_seconds=0.05,
        sim_history_daily_days=0,
        sim_history_minute_days=0,
        max_streams_per_account=1,
    ) as platform:
        symbols = ["SIM-BTC-USDT", "SIM-EUR-USD", "SIM-AAPL"]
        async with websockets.connect(_url(platform)) as socket:
            await socket.send(json.dumps({"type": "auth", "token": await _token(platform, "limit@example.com")}))
            await _next(socket, {"authenticated"})
            for symbol in symbols:
                await socket.send(json.dumps({"type": "subscribe", "topic": f"ticks:{symbol}"}))
            replies = [await _next(socket, {"subscribed", "error"}) for _ in symbols]
            assert {reply["type"] for reply in replies} == {"subscribed"}, replies
            assert platform.app.state.gateway.relay.stream_count == 3
            # Credentials revoked after the socket authenticated end the socket, although the shared stream of its
            # topic stays open for the others: the socket's own credential is watched.
            async with websockets.connect(_url(platform)) as leaving:
                email = "leaving@example.com"
                await platform.http.post("/v1/auth:register", json={"email": email, "password": PASSWORD})
                login = await platform.http.post("/v1/auth:login", json={"email": email, "password": PASSWORD})
                token = login.json()["accessToken"]
                await leaving.send(json.dumps({"type": "auth", "token": token}))
                assert (await _next(leaving, {"authenticated", "error"}))["type"] == "authenticated"
                logout = await platform.http.post(
                    "/v1/auth:logout", json={}, headers={"authorization": f"Bearer {token}"}
                )
                assert logout.status_code == 200, logout.text
                # The socket's credential watch may end it before this subscribe arrives; either way the socket hears
                # UNAUTHENTICATED and closes with 4401.
                with contextlib.suppress(websockets.ConnectionClosed):
                    await leaving.send(json.dumps({"type": "subscribe", "topic": "ticks:SIM-BTC-USDT"}))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        refused = await _next(leaving, {"error"})
                assert "topic" not in refused
                assert refused["error"]["status"] == "UNAUTHENTICATED"
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 4401
            assert platform.app.state.gateway.relay.stream_count == 3


async def test_a_gateway_whose_key_the_market_refuses_streams_ticks_per_socket(
    platform: GatewayPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    """A local gateway with a data directory of its own has a development key the services do not know: the market
    refuses its shared streams, and ticks topics fall back to one stream per socket instead of failing."""
    settings = platform.settings.with_overrides(data_dir=fresh_data_dir())
    app = create_app(settings)
    relay = app.state.gateway.relay
    port = free_port()
    async with running_uvicorn(app, port), websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as socket:
        await socket.send(json.dumps({"type": "auth", "token": await _token(platform, "elsewhere@example.com")}))
        assert (await _next(socket, {"authenticated", "error"}))["type"] == "authenticated"
        for symbol in ("SIM-BTC-USDT", "SIM-EUR-USD"):  # the first finds the identity refused, the second knows
            await socket.send(json.dumps({"type": "subscribe", "topic": f"ticks:{symbol}"}))
            assert (await _next(socket, {"subscribed", "error"}))["type"] == "subscribed"
            assert "ticks" in (await _ticks_event(socket, f"ticks:{symbol}"))["data"]
    assert relay is not None
    assert not relay.usable
    assert "refused the gateway's service identity" in caplog.text


async def _ticks_event(socket: Any, topic: str) -> dict[str, Any]:
    while True:
        message = await _next(socket, {"event"})
        if message["topic"] == topic and "ticks" in message["data"]:
            return message
