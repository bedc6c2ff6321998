"""The gateway's ASGI application (Starlette): every annotated RPC of the generated services as a REST route,
server-streaming ones as newline-delimited JSON or Server-Sent Events (gateway.streams), the pages behind the links
the account service mails (gateway.pages), `/healthz`, `/readyz` and the WebSocket. It holds no business logic:
requests are transcoded, sent to the owning service with the caller's credentials, and the answer (or the error, per
AIP-193) is transcoded back; on shutdown (`drain`) open streams and sockets are ended with a last word."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route as HttpRoute
from starlette.routing import WebSocketRoute, request_response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketClose

from gateway.edge import SAFELISTED_HEADERS, Edge, cors_policy, request_id_of
from gateway.errors import bad_request, error_body, error_info, from_rpc_error, http_error_body, request_info
from gateway.openapi import openapi_document
from gateway.pages import LinkPages
from gateway.protojson import Memo, dumps, to_dict
from gateway.relay import TickRelay
from gateway.routes import Route, Router, generated_services
from gateway.streams import OpenStream, cancelled, draining_body, relay
from gateway.transcode import (
    FORWARDED,
    BadRequest,
    build_request,
    call_metadata,
    header_value,
    percent_decoded,
    query_items,
)
from gateway.websocket import Connection, connection_metadata
from services.core.access import rule_of
from services.core.auth.keys import load_signing_keys
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
from services.core.clients import ClientFactory, service_short_name
from services.core.coordination.base import RateLimiter
from services.core.coordination.factory import build_coordination, keyspace_for
from services.core.grpc_errors import domain_of_method
from services.core.links import RESET_PASSWORD_PATH, VERIFY_EMAIL_PATH
from services.core.rules import JSON_BODY_FACTOR, max_request_bytes
from services.core.settings import BUILT_SERVICES, Environment, GatewaySettings, Settings

log = logging.getLogger("bullant.gateway")
# The reason the services give a credential they cannot use, by the header that carries it.
_CREDENTIAL_REASONS = {"authorization": "TOKEN_INVALID", "x-api-key": "API_KEY_INVALID"}
REQUEST_ID = "x-request-id"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Request headers a browser page may send (CORS): the credentials, the request id, and Last-Event-ID for SSE.
_CORS_HEADERS = [*FORWARDED, REQUEST_ID, "last-event-id"]
_READY_TIMEOUT = 2.0


class PayloadTooLarge(Exception):
    pass


class JSONResponse(Response):
    """A JSON answer written by orjson (compact UTF-8)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Gateway:
    """The routes, the upstream channels and the handlers."""

    def __init__(
        self,
        settings: GatewaySettings,
        clients: ClientFactory,
        router: Router,
        limiter: RateLimiter | None = None,
        *,
        identity: ServiceIdentity | None,
        request_timeout_seconds: float,
    ) -> None:
        """`settings`: the gateway section; `identity`: the platform service the gateway acts as for shared tick
        streams (None: each socket's ticks topic streams on its own); `request_timeout_seconds`: a unary call's
        deadline."""
        self._settings = settings
        self._request_timeout = request_timeout_seconds
        self._clients = clients
        self.router = router
        self._limiter = limiter
        self._document: dict[str, Any] | None = None
        self.connections: set[Connection] = set()
        # Shared tick streams need the gateway to act as the platform's service; without the key, each ticks topic
        # is a stream of its own.
        self.relay = TickRelay(clients, identity) if identity is not None else None
        # The stream items every socket receives alike (ticks), each written as JSON once.
        self.memo = Memo()
        # One callable per method, made on first use (the channels live as long as the app).
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self.pages = LinkPages(clients, request_timeout_seconds)
        # Shutting down (drain): /readyz says NOT_SERVING, new streams are refused, open ones are ended.
        self.draining = False
        self._streams: set[OpenStream] = set()
        self._rest_app = request_response(self.rest)

    def _json(self, body: Any, status: int, request_id: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers={REQUEST_ID: request_id, **(headers or {})})

    async def fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request no fixed route takes: REST for HTTP (whatever its path holds), a refusal for WebSockets."""
        if scope["type"] == "websocket":
            await WebSocketClose(code=1008, reason="no WebSocket here: use /v1/ws")(scope, receive, send)
        else:
            await self._rest_app(scope, receive, send)

    async def rest(self, request: Request) -> Response:
        request_id = request_id_of(request.scope)
        raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or request.url.path
        found = self.router.find(request.method, raw_path)
        if isinstance(found, list):
            if not found:
                body = error_body(grpc.StatusCode.NOT_FOUND, f"no route {request.method} {request.url.path}")
                return self._json(body, 404, request_id)
            allow = ", ".join(sorted({*found, "OPTIONS"}))
            if request.method == "OPTIONS":  # not a CORS preflight (the edge answers those): the methods
                return Response(status_code=204, headers={REQUEST_ID: request_id, "allow": allow})
            body = http_error_body(405, f"{request.url.path} takes {', '.join(found)}")
            return self._json(body, 405, request_id, {"allow": allow})
        route, raw_variables = found
        limited = await self._rate_limited(request, request_id)
        if limited is not None:
            return limited
        # Before the body is read or checked: a request without credentials learns that first (401, not a 400).
        missing = self._credentials_missing(request, route, request_id)
        if missing is not None:
            return missing
        # The route's limits come from its method's declared request size (services/core/rules.py).
        encoded_limit = max_request_bytes(route.method)
        limit = min(self._settings.gateway_max_body_bytes, JSON_BODY_FACTOR * encoded_limit)
        try:
            payload = await _body(request, limit)
        except PayloadTooLarge:
            return self._too_large(f"the body is larger than {limit} bytes", limit, request_id)
        try:
            variables = {name: percent_decoded(name, value) for name, value in raw_variables.items()}
            query = query_items(request.scope.get("query_string", b""))
            message = build_request(route, variables, query, payload)
            metadata = call_metadata(request, request_id)
        except BadRequest as error:
            return self._json(bad_request(error.field, error.description), 400, request_id)
        if (size := message.ByteSize()) > encoded_limit:
            text = f"the request is {size} bytes encoded; {route.method.name} accepts at most {encoded_limit}"
            return self._too_large(text, encoded_limit, request_id)
        channel = self._clients.channel(route.service, propagate=False)
        if route.server_streaming:
            return await self._stream(
                request, route, message, metadata=metadata, request_id=request_id, channel=channel
            )
        call = self._unary.get(route.full_method)
        if call is None:
            call = self._unary[route.full_method] = channel.unary_unary(
                route.full_method,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
        try:
            response = await call(message, metadata=metadata, timeout=self._request_timeout)
        except grpc.aio.AioRpcError as error:
            status, body, headers = from_rpc_error(error)
            return self._json(body, status, request_id, headers)
        return self._json(to_dict(response), 200, request_id)

    def _credentials_missing(self, request: Request, route: Route, request_id: str) -> Response | None:
        """401 for a request without credentials to a method whose contract needs them (its access rule), as the
        service would answer it, and for a credential header that cannot be a credential (ours are printable ASCII,
        which is all gRPC metadata carries); whether given credentials are good stays the service's to decide."""
        domain = domain_of_method(route.full_method)
        for name, reason in _CREDENTIAL_REASONS.items():
            value = request.headers.get(name)
            if value and not header_value(value):
                body = error_body(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"the {name} header holds characters no credential has (printable ASCII only)",
                    [error_info(reason, domain), request_info(request_id)],
                )
                return self._json(body, 401, request_id, {"www-authenticate": "Bearer"})
        rule = rule_of(route.method)
        if rule is None or rule.public or any(request.headers.get(name) for name in FORWARDED):
            return None
        body = error_body(
            grpc.StatusCode.UNAUTHENTICATED,
            "this method needs credentials: `Authorization: Bearer <access token>` or `X-Api-Key: <key>`",
            [error_info("CREDENTIALS_MISSING", domain), request_info(request_id)],
        )
        return self._json(body, 401, request_id, {"www-authenticate": "Bearer"})

    def _too_large(self, message: str, limit: int, request_id: str) -> JSONResponse:
        """413 with the limit that was passed (REQUEST_TOO_LARGE, as the services say it)."""
        details = [
            error_info("REQUEST_TOO_LARGE", "bullant.gateway", {"limit_bytes": str(limit)}),
            request_info(request_id),
        ]
        return self._json(http_error_body(413, message, details), 413, request_id)

    async def _rate_limited(self, request: Request, request_id: str) -> Response | None:
        """429 when the client spent its requests of the minute; a limiter that cannot answer lets requests pass."""
        limit = self._settings.gateway_requests_per_minute
        if self._limiter is None or not limit:
            return None
        try:
            decision = await self._limiter.hit(_client_key(request), limit, 60.0)
        except Exception as error:  # the data layer is down: serving beats refusing everyone
            log.warning("rate limiter unavailable, request let through: %s", error)
            return None
        if decision.allowed:
            return None
        wait = max(1, math.ceil(decision.retry_after_seconds))
        body = error_body(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {limit} requests a minute; retry in {wait} s")
        body["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMITED",
                "domain": "bullant.gateway",
                "metadata": {"limit": str(limit)},
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"},
        ]
        return self._json(body, 429, request_id, {"retry-after": str(wait)})

    async def _stream(
        self,
        request: Request,
        route: Route,
        message: Any,
        *,
        metadata: Sequence[tuple[str, str]],
        request_id: str,
        channel: grpc.aio.Channel,
    ) -> Response:
        if self.draining:
            return self._json(draining_body(), 503, request_id, {"retry-after": "1"})
        call = channel.unary_stream(
            route.full_method,
            request_serializer=route.request_class.SerializeToString,
            response_deserializer=route.response_class.FromString,
        )(message, metadata=metadata)
        stream = OpenStream(call)
        self._streams.add(stream)
        try:
            # The first message (or the refusal) decides the HTTP status, as for a unary call.
            first = await call.read()
        except grpc.aio.AioRpcError as error:
            self._streams.discard(stream)
            status, body, headers = from_rpc_error(error)
            return self._json(body, status, request_id, headers)
        except asyncio.CancelledError:
            self._streams.discard(stream)
            if stream.drained and not cancelled():
                return self._json(draining_body(), 503, request_id, {"retry-after": "1"})
            call.cancel()
            raise
        except BaseException:
            self._streams.discard(stream)
            call.cancel()
            raise
        sse = "text/event-stream" in request.headers.get("accept", "")
        return StreamingResponse(
            relay(stream, first, self._streams, sse=sse),
            media_type="text/event-stream" if sse else "application/x-ndjson",
            headers={REQUEST_ID: request_id, "cache-control": "no-cache"},
        )

    async def drain(self, within_seconds: float) -> None:
        """The server is shutting down: /readyz answers NOT_SERVING and new streams are refused at once; every open
        REST stream ends with a last UNAVAILABLE error item, and every WebSocket gets that error and the close frame
        1012 (service restart), sockets bounded by `within_seconds`."""
        self.draining = True
        for stream in list(self._streams):
            stream.drained = True
            stream.call.cancel()  # its relay sees the cancellation and writes the last item
        sockets = list(self.connections)
        if sockets:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_seconds):
                    await asyncio.gather(*(socket.shut_down() for socket in sockets), return_exceptions=True)

    async def verify_email(self, request: Request) -> Response:
        request_id = request_id_of(request.scope)
        return await self._rate_limited(request, request_id) or await self.pages.verify_email(request, request_id)

    async def reset_password(self, request: Request) -> Response:
        request_id = request_id_of(request.scope)
        return await self._rate_limited(request, request_id) or await self.pages.reset_password(request, request_id)

    async def openapi(self, request: Request) -> Response:
        if self._document is None:
            self._document = openapi_document(self.router.routes)
        return JSONResponse(self._document, headers={REQUEST_ID: request_id_of(request.scope)})

    async def websocket(self, socket: WebSocket) -> None:
        if self.draining:
            await socket.close(1012, "the server is shutting down")
            return
        connection = Connection(socket, self._clients, connection_metadata(socket), self.memo, self.relay)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "SERVING"}, headers={REQUEST_ID: request_id_of(request.scope)})

    async def readyz(self, request: Request) -> Response:
        request_id = request_id_of(request.scope)
        if self.draining:
            return JSONResponse(
                {"status": "NOT_SERVING", "services": {}, "draining": True},
                status_code=503,
                headers={REQUEST_ID: request_id},
            )
        # Services with a contract but no implementation yet are served nowhere: they do not count.
        served = (route.service for route in self.router.routes if service_short_name(route.service) in BUILT_SERVICES)
        services = sorted({service.full_name: service for service in served}.items())

        async def check(name: str, service: Any) -> tuple[str, str]:
            stub = health_pb2_grpc.HealthStub(self._clients.channel(service, propagate=False))
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=_READY_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                return name, error.code().name
            return name, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        statuses = dict(await asyncio.gather(*(check(name, service) for name, service in services)))
        ready = all(status == "SERVING" for status in statuses.values())
        return JSONResponse(
            {"status": "SERVING" if ready else "NOT_SERVING", "services": statuses},
            status_code=200 if ready else 503,
            headers={REQUEST_ID: request_id},
        )


def _service_identity(settings: Settings) -> ServiceIdentity | None:
    """The gateway's identity as the platform's service for shared tick streams, when they are on and it holds the
    platform signing key (a configured private key file, or the local environment's development key)."""
    if not settings.gateway.gateway_shared_ticks:
        return None
    if settings.auth.jwt_private_key_file is None and settings.env is not Environment.LOCAL:
        return None
    keys = load_signing_keys(settings)
    if keys.private_key is None:
        return None
    return ServiceIdentity(keys, token_policy(settings.auth), "gateway")


def _client_key(request: Request) -> str:
    """Who a request counts against: its credential, else its address."""
    credential = request.headers.get("authorization") or request.headers.get("x-api-key")
    if credential:
        return "credential:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
    return "address:" + (request.client.host if request.client else "unknown")


def create_app(settings: Settings, *, clients: ClientFactory | None = None) -> Starlette:
    """The gateway for the services at the settings' upstream addresses."""
    factory = clients or ClientFactory(settings.calls, settings.server)
    coordination = build_coordination(settings.coordination.redis_url, keyspace_for(settings, "gateway"))
    gateway = Gateway(
        settings.gateway,
        factory,
        Router.from_services(generated_services()),
        coordination.limiter,
        identity=_service_identity(settings),
        request_timeout_seconds=settings.calls.request_timeout_seconds,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await coordination.start()
        await factory.start()
        try:
            yield
        finally:
            if gateway.relay is not None:
                await gateway.relay.stop()
            await factory.stop()
            await coordination.stop()

    cors = cors_policy(settings.gateway.gateway_cors_origins, _METHODS, [*_CORS_HEADERS, *SAFELISTED_HEADERS])
    app = Starlette(
        routes=[
            HttpRoute("/healthz", gateway.healthz, methods=["GET"]),
            HttpRoute("/readyz", gateway.readyz, methods=["GET"]),
            HttpRoute("/openapi.json", gateway.openapi, methods=["GET"]),
            HttpRoute(f"/{VERIFY_EMAIL_PATH}", gateway.verify_email, methods=["GET"]),
            HttpRoute(f"/{RESET_PASSWORD_PATH}", gateway.reset_password, methods=["GET", "POST"]),
            WebSocketRoute("/v1/ws", gateway.websocket),
        ],
        middleware=[Middleware(Edge, cors=cors)],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    # Every other path is REST, whatever it holds (control characters included): the router's own 404 and slash
    # redirects would answer in plain text.
    app.router.default = gateway.fallback
    app.router.redirect_slashes = False
    app.state.gateway = gateway
    return app


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (a fixed route asked with another method) as AIP-193 errors."""
    assert isinstance(exc, HTTPException)
    body = http_error_body(exc.status_code, exc.detail or "refused")
    return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.headers or {}))
