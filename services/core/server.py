"""The gRPC server every Bullant process runs: hosted services, health, reflection, interceptors, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.core.auth.authenticator import Authenticator
from services.core.health import HEALTH_SERVICE_NAME, NOT_SERVING, SERVING, HealthService, Readiness
from services.core.interceptors import server_interceptors
from services.core.metrics import GrpcMetrics
from services.core.settings import ServerSettings
from services.core.startup import StartupError

log = logging.getLogger("bullant.server")


class Component(Protocol):
    """Something a service depends on that opens resources in start() and releases them in stop()."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """One servicer to host: its short name, full proto name, how to add it, and the components it needs."""

    name: str
    full_name: str
    add_to_server: Callable[[grpc.aio.Server], None]
    components: Sequence[Component] = field(default=())


class Lifecycle:
    """Shared shutdown signal: long streams watch `draining` and end themselves when it is set."""

    def __init__(self) -> None:
        self.draining = asyncio.Event()


class ServerError(StartupError):
    """The server could not start (port taken, bad address); the message says what to change."""


def _check_port_free(host: str, port: int) -> None:
    """Raise ServerError when `host:port` is taken (port 0 always binds). Binds as gRPC does (SO_REUSEADDR, so a port
    left in TIME_WAIT counts as free) and lets go at once."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServerError(f"cannot listen on {host}:{port}: {error.strerror}; set BULLANT_HOST or --host") from None
    for family, kind, protocol, _name, address in addresses:
        with contextlib.closing(socket.socket(family, kind, protocol)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ServerError(
                        f"cannot listen on {host}:{port}: the address is in use; is another process using it? "
                        "Set BULLANT_PORT or --port."
                    ) from None
                if error.errno == errno.EADDRNOTAVAIL:
                    raise ServerError(
                        f"cannot listen on {host}:{port}: no such local address; set BULLANT_HOST or --host"
                    ) from None
                raise ServerError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Channel arguments for the server: message size limits, keepalive, and exclusive port binding."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_seconds * 1000),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_seconds * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client pings as often as every 10 s, so clients with keepalive are not cut off as abusive.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # Without this a second server could bind the same port silently and steal half the connections.
        ("grpc.so_reuseport", 0),
    ]


class GrpcServer:
    """A grpc.aio server hosting some of Bullant's services. Nothing is opened until start()."""

    def __init__(
        self,
        settings: ServerSettings,
        registrations: Sequence[ServiceRegistration],
        *,
        lifecycle: Lifecycle | None = None,
        metrics: GrpcMetrics | None = None,
        components: Sequence[Component] = (),
        readiness: Readiness | None = None,
        authenticator: Authenticator | None,
        on_bound: Sequence[Callable[[int], None]] = (),
    ) -> None:
        """`settings`: the process's server section. `on_bound`: told the port once it is bound (before any
        component starts), e.g. the client factory, so that with port 0 the services of this process call each other
        on the port picked."""
        if not registrations:
            raise ValueError("a server needs at least one service")
        self.settings = settings
        self.registrations = tuple(registrations)
        self.lifecycle = lifecycle or Lifecycle()
        self.metrics = metrics or GrpcMetrics()
        self.health = HealthService(r.full_name for r in self.registrations)
        # Shared dependencies (databases, coordination backend, their monitors), started before any service's own.
        self.components = tuple(components)
        self.readiness = readiness or Readiness()
        self.authenticator = authenticator
        self._on_bound = tuple(on_bound)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._started_components: list[Component] = []

    @property
    def address(self) -> str:
        """host:port the server listens on (after start)."""
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Start dependencies, bind the port, start serving, then report SERVING."""
        server = grpc.aio.server(
            interceptors=tuple(server_interceptors(self.metrics, self.authenticator)),
            options=server_options(self.settings),
        )
        for registration in self.registrations:
            registration.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*(r.full_name for r in self.registrations), HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        # Checked first: gRPC's own failure also prints a C-core error line to stderr before it raises.
        _check_port_free(self.settings.host, self.settings.port)
        try:
            self.port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        except RuntimeError as exc:
            raise ServerError(
                f"cannot listen on {self.settings.host}:{self.settings.port} ({exc}); "
                "is another process using it? Set BULLANT_PORT or --port."
            ) from None
        for hook in self._on_bound:
            hook(self.port)
        try:
            # The authenticator last: its credential watcher listens on the coordination backend started before it.
            authentication = [self.authenticator] if self.authenticator is not None else []
            hosted = (c for r in self.registrations for c in r.components)
            for component in [*self.components, *hosted, *authentication]:
                await component.start()
                self._started_components.append(component)
        except BaseException:
            await self._stop_components()
            raise
        self._server = server
        await server.start()
        if self.settings.metrics_port >= 0:
            self._start_metrics_http()
        self.readiness.subscribe(self._on_readiness)
        self._on_readiness(self.readiness.ready)
        log.info(
            "serving %s on %s",
            ", ".join(r.name for r in self.registrations),
            self.address,
            extra={
                "services": [r.full_name for r in self.registrations],
                "port": self.port,
                "metrics_port": self.metrics_port,
            },
        )

    def _on_readiness(self, ready: bool) -> None:
        self.health.set_all(SERVING if ready else NOT_SERVING)
        if not ready:
            log.warning("dependencies failing, every service NOT_SERVING: %s", self.readiness.failing)

    def _start_metrics_http(self) -> None:
        try:
            self.metrics_port = self.metrics.serve_http(self.settings.metrics_host, self.settings.metrics_port)
        except OSError as exc:
            raise ServerError(
                f"cannot serve metrics on {self.settings.metrics_host}:{self.settings.metrics_port} ({exc}); "
                "set BULLANT_METRICS_PORT or --metrics-port (0 picks a free port)."
            ) from None

    def begin_shutdown(self) -> None:
        """Report NOT_SERVING everywhere and tell long streams to end; stop() does this first, and a process stops
        it before what sits in front of the server (the HTTP gateway), so those streams end too."""
        self.health.enter_graceful_shutdown()
        self.lifecycle.draining.set()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, let streams end, drain in-flight calls within the grace period, then stop
        dependencies in reverse order."""
        grace = self.settings.grace_seconds if grace is None else grace
        started = self._server is not None or bool(self._started_components)
        self.begin_shutdown()
        if self._server is not None:
            log.info("draining in-flight calls (grace %.1fs)", grace)
            await self._server.stop(grace)
            self._server = None
        await self._stop_components()
        self.metrics.stop_http()
        if started:  # a server that never started (its port was taken, say) has nothing to report
            log.info("stopped")

    async def _stop_components(self) -> None:
        for component in reversed(self._started_components):
            try:
                await component.stop()
            except Exception:
                log.exception("error while stopping %r", component)
        self._started_components.clear()


async def serve_until_signal(
    server: GrpcServer,
    on_started: Callable[[GrpcServer], None] | None = None,
    *,
    beside: Sequence[Component] = (),
) -> None:
    """Start `server` (then the components `beside` it, e.g. the HTTP gateway), serve until SIGTERM or SIGINT, then
    shut down gracefully in reverse order. A signal during start-up ends it there."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    received: list[str] = []

    def request_stop(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    started: list[Component] = []

    async def start_all() -> None:
        await server.start()
        for component in beside:
            await component.start()
            started.append(component)

    try:
        # A signal during start-up (waiting for a dependency, migrating) stops it there, like one while serving.
        starting = asyncio.ensure_future(start_all())
        signalled = asyncio.ensure_future(stop_requested.wait())
        try:
            await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signalled.cancel()
        if not starting.done():
            log.info("received %s while starting, stopping", received[0])
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()
        if on_started:
            on_started(server)
        await stop_requested.wait()
        log.info("received %s, shutting down", received[0])
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        # Health first (load balancers stop sending) and long streams told to end, then what stands in front of the
        # server (the gateway's streams wind down), then the server: its calls drain, then its components stop, each
        # before what it depends on. One grace period for the whole process, however long the front took.
        server.begin_shutdown()
        deadline = loop.time() + server.settings.grace_seconds
        for component in reversed(started):
            await component.stop()
        await server.stop(max(0.0, deadline - loop.time()))


def _passthrough(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer that sends pre-encoded bytes as they are."""

    def serialize(message: Any) -> bytes:
        return message if isinstance(message, bytes) else serializer(message)

    return serialize


class PreEncodedResponses:
    """Stands in for the server when a generated `add_<Service>Servicer_to_server` registers a service, so that the
    named streaming methods may yield pre-encoded response bytes as well as messages (a fan-out that encodes once
    for many subscribers). The generated code is kept; only those handlers' serializers change."""

    def __init__(self, server: grpc.aio.Server, methods: set[str]) -> None:
        self._server = server
        self._methods = methods

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        return None  # replaced by add_registered_method_handlers below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        handlers = dict(handlers)
        for name in self._methods:
            original = handlers[name]
            handlers[name] = grpc.unary_stream_rpc_method_handler(
                original.unary_stream,
                request_deserializer=original.request_deserializer,
                response_serializer=_passthrough(original.response_serializer),
            )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        self._server.add_registered_method_handlers(service, handlers)
