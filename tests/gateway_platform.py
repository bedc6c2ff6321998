"""Every service in one real gRPC server on loopback and the gateway in front of it, served by uvicorn on its own
loopback port: tests talk HTTP to the gateway as a browser would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from services.bootstrap import build_server
from services.core.auth.keys import load_signing_keys
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.server import GrpcServer
from services.core.settings import Settings
from tests.signal_platform import free_port
from tests.support import make_settings


@dataclass
class GatewayPlatform:
    server: GrpcServer
    settings: Settings
    http: httpx.AsyncClient
    base_url: str
    app: Any

    def bearer(
        self, account_id: int = 3, scopes: tuple[str, ...] = ("read", "trade"), *, admin: bool = False
    ) -> dict[str, str]:
        return bearer(self.settings, account_id, scopes, admin=admin)


def bearer(
    settings: Settings, account_id: int = 3, scopes: tuple[str, ...] = ("read", "trade"), *, admin: bool = False
) -> dict[str, str]:
    """The authorization header of an access token signed with the platform's key (no account row needed)."""
    roles = ("user", "admin") if admin else ("user",)
    token, _ = TokenIssuer(load_signing_keys(settings), token_policy(settings.auth)).issue(
        account_id=account_id,
        shard=account_id % 2,
        roles=roles,
        scopes=scopes + (("admin",) if admin else ()),
        session_id=f"g{account_id}",
    )
    return {"authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_uvicorn(app: Any, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def running_gateway(**overrides: Any) -> AsyncIterator[GatewayPlatform]:
    port = free_port()
    values: dict[str, Any] = {"port": port, "default_upstream": f"127.0.0.1:{port}", "market_feeds": [], **overrides}
    settings = make_settings(**values)
    server = build_server(settings)
    await server.start()
    http_port = free_port()
    app = create_app(settings)
    try:
        async with (
            running_uvicorn(app, http_port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30.0) as http,
        ):
            yield GatewayPlatform(server, settings, http, f"http://127.0.0.1:{http_port}", app)
    finally:
        await server.stop(grace=0.5)
