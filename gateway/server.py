"""The gateway served by uvicorn as a Component (start/stop), so `bullant serve ... --gateway` runs it beside the gRPC
server in one process and `bullant gateway` runs it alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Iterator

import uvicorn

from gateway.app import Gateway, create_app
from services.core.coordination.factory import build_backend
from services.core.server import GrpcServer
from services.core.settings import Settings
from services.core.startup import StartupError, wait_until_reachable
from services.core.urls import redact_url

log = logging.getLogger("bullant.gateway")


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the platform's serve loop owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _wait_for_redis(settings: Settings) -> None:
    """Wait (a log line per attempt, BULLANT_STARTUP_WAIT_SECONDS at most) for the Redis the gateway's rate limits
    live in; DependencyUnreachable (exit 69) when it never answers. Nothing to wait for without Redis."""
    redis_url = settings.coordination.redis_url
    if not redis_url.strip():
        return
    backend = build_backend(redis_url)
    await backend.start()
    try:
        await wait_until_reachable(
            "redis",
            lambda: backend.ping(2.0),
            wait_seconds=settings.server.startup_wait_seconds,
            hint=f"Check BULLANT_REDIS_URL ({redact_url(redis_url)}) and that Redis is up "
            "(BULLANT_STARTUP_WAIT_SECONDS sets how long to wait).",
        )
    finally:
        await backend.stop()


class GatewayServer:
    """Serves the gateway on its section's gateway_host:gateway_port (port 0: a free one, see `port`)."""

    def __init__(self, settings: Settings, *, beside: GrpcServer | None = None) -> None:
        """`beside`: the gRPC server of this process, which the gateway then calls for every service."""
        self._settings = settings
        self._gateway = settings.gateway
        self._grace_seconds = settings.server.grace_seconds
        self._beside = beside
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        # The app's handlers, while serving (tests and the shutdown drain use them).
        self.gateway: Gateway | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        return f"{self._gateway.gateway_host}:{self.port}"

    async def start(self) -> None:
        settings = self._settings
        if self._beside is not None:
            settings = settings.with_overrides(upstreams={}, default_upstream=self._beside.address)
        else:
            # Beside a gRPC server, that server has waited for Redis already; alone, the gateway waits itself.
            await _wait_for_redis(settings)
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host=self._gateway.gateway_host,
            port=self._gateway.gateway_port,
            lifespan="on",
            http="httptools",
            log_config=None,  # the platform's logging
            access_log=False,
            server_header=False,
            # A bound on the wait for open connections at shutdown, whatever a client does (the gateway ends its
            # streams and sockets itself first; this is for requests still waiting on a service). stop() sets it to
            # what is left of the grace period.
            timeout_graceful_shutdown=math.ceil(self._grace_seconds),
        )
        server = _Server(config)
        # Bound here, so a taken port is a clear start-up error rather than uvicorn exiting the process.
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
        # keep-alive response waits ~40 ms for a delayed ACK (Nagle) between its header and body writes.
        family = socket.AF_INET6 if ":" in self._gateway.gateway_host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self._gateway.gateway_host, self._gateway.gateway_port))
        except OSError as error:
            listener.close()
            raise StartupError(
                f"the gateway cannot listen on {self._gateway.gateway_host}:{self._gateway.gateway_port}: "
                f"{error.strerror} (set BULLANT_GATEWAY_PORT)"
            ) from None
        self.port = int(listener.getsockname()[1])
        self.gateway = app.state.gateway
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[listener]), name="gateway")
        while not server.started:
            if self._task.done():
                self._task.result()
                raise StartupError("the gateway stopped while starting")
            await asyncio.sleep(0.01)
        log.info("gateway serving on http://%s", self.address)

    def connection_sockets(self) -> list[socket.socket]:
        """The sockets of the open client connections (tests and diagnostics)."""
        if self._server is None:
            return []
        found = []
        for connection in self._server.server_state.connections:
            transport = getattr(connection, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                found.append(sock)
        return found

    async def stop(self) -> None:
        """End open streams and sockets with a last word (Gateway.drain), then stop uvicorn: no new connections, the
        requests under way answered, then the app's shutdown (channels closed) – all within the grace period."""
        if self._server is None or self._task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace_seconds
        if self.gateway is not None:
            await self.gateway.drain(within_seconds=min(2.0, self._grace_seconds / 2))
        # What is left of the grace period for the requests under way (uvicorn reads it as asyncio.timeout's delay).
        self._server.config.timeout_graceful_shutdown = max(0.1, deadline - loop.time())  # type: ignore[assignment]
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = self.gateway = None
