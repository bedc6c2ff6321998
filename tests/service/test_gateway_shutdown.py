"""The gateway shutting down with clients connected: /readyz turns NOT_SERVING at once, new streams are refused,
every open NDJSON and SSE stream ends with a last UNAVAILABLE error item, every WebSocket gets that error and the
close frame 1012, and the server then stops however the clients behave (the whole process: tests/e2e)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from gateway.server import GatewayServer
from services.bootstrap import build_server
from services.core.server import GrpcServer
from services.signal.live.hub import SignalHub
from tests.gateway_platform import bearer
from tests.signal_platform import free_port
from tests.support import eventually, make_settings

pytestmark = pytest.mark.timeout(120)
# A hang guard for reads, far above any answer's time (not a performance bound).
_GUARD_SECONDS = 30.0


async def _items(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """NDJSON lines, or SSE events as {"event": ..., **data}."""
    event = "message"
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield {"event": event, **json.loads(line[len("data: ") :])}
        elif line.strip() and not line.startswith(("event", "data")):
            yield json.loads(line)


def _hub(server: GrpcServer) -> SignalHub:
    for registration in server.registrations:
        for component in registration.components:
            if isinstance(component, SignalHub):
                return component
    raise AssertionError("no signal hub")


async def _last(items: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The last item before the stream ended (a hang guard only)."""
    last: dict[str, Any] = {}
    async with asyncio.timeout(_GUARD_SECONDS):
        async for item in items:
            last = item
    return last


async def test_open_streams_and_sockets_end_with_a_last_word_and_the_server_stops() -> None:
    port = free_port()
    settings = make_settings(port=port, default_upstream=f"127.0.0.1:{port}", market_feeds=[], gateway_port=0)
    server = build_server(settings)
    await server.start()
    gateway = GatewayServer(settings, beside=server)
    await gateway.start()
    assert gateway.gateway is not None
    base = f"http://{gateway.address}"
    headers = bearer(settings)
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=_GUARD_SECONDS) as http,
            http.stream("GET", "/v1/signals:stream", headers=headers) as ndjson,
            http.stream("GET", "/v1/signals:stream", headers={**headers, "accept": "text/event-stream"}) as sse,
            websockets.connect(base.replace("http://", "ws://") + "/v1/ws") as socket,
        ):
            # (Its services may be NOT_SERVING for a moment under load: the database probe is strict in tests.)
            assert "draining" not in (await http.get("/readyz")).json()
            lines, events = _items(ndjson), _items(sse)
            assert "heartbeat" in (await anext(lines))["result"]
            first_event = await anext(events)
            assert first_event["event"] == "message"
            assert "heartbeat" in first_event["result"]
            await socket.send(json.dumps({"type": "auth", "token": headers["authorization"].split()[1]}))
            assert json.loads(await socket.recv())["type"] == "authenticated"
            await eventually(lambda: _hub(server).listener_count == 2, timeout=_GUARD_SECONDS)

            await gateway.gateway.drain(within_seconds=5.0)

            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "NOT_SERVING", "services": {}, "draining": True}
            refused = await http.get("/v1/signals:stream", headers=headers)
            assert refused.status_code == 503
            assert refused.json()["error"]["status"] == "UNAVAILABLE"
            for last in (await _last(lines), await _last(events)):
                assert last["error"]["status"] == "UNAVAILABLE"
                assert "shutting down" in last["error"]["message"]
            assert last["event"] == "error"  # SSE says it is an error event
            farewell = json.loads(await socket.recv())
            assert farewell["type"] == "error"
            assert farewell["error"]["status"] == "UNAVAILABLE"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1012
            await eventually(lambda: _hub(server).listener_count == 0, timeout=_GUARD_SECONDS)
            async with asyncio.timeout(_GUARD_SECONDS):
                await gateway.stop()
    finally:
        await gateway.stop()
        await server.stop(grace=0.5)
