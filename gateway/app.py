"""The gateway's ASGI application (Starlette): every annotated RPC of the generated services as a REST route,
server-streaming ones as newline-delimited JSON or Server-Sent Events, `/healthz` and `/readyz`. It holds no
business logic: requests are transcoded, sent to the owning service with the caller's credentials, and the answer
(or the error, per AIP-193) is transcoded back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route as HttpRoute
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from gateway.errors import bad_request, error_body, from_rpc_error
from gateway.openapi import openapi_document
from gateway.protojson import Memo, dumps, to_dict
from gateway.relay import TickRelay
from gateway.routes import Route, Router, generated_services
from gateway.transcode import BadRequest, build_request
from gateway.websocket import Connection, connection_metadata
from services.core.auth.keys import load_signing_keys
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
from services.core.clients import ClientFactory
from services.core.coordination.base import RateLimiter
from services.core.coordination.factory import build_coordination, keyspace_for
from services.core.rules import JSON_BODY_FACTOR, max_request_bytes
from services.core.settings import Environment, Settings

log = logging.getLogger("bullant.gateway")
REQUEST_ID = "x-request-id"
# Headers passed to the services as metadata (the request id and the client address are added separately).
FORWARDED = ("authorization", "x-api-key")
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_READY_TIMEOUT = 2.0


class PayloadTooLarge(Exception):
    pass


class JSONResponse(Response):
    """A JSON answer written by orjson (compact UTF-8)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID, "").strip()
    return given[:128] if given and _header_value(given) else uuid.uuid4().hex


def _header_value(value: str) -> bool:
    """Whether a header can travel as gRPC ASCII metadata (printable, no line breaks)."""
    return all(" " <= character <= "~" for character in value)


def _metadata(request: Request, request_id: str) -> list[tuple[str, str]]:
    """The metadata of the upstream call; BadRequest for a header gRPC cannot carry."""
    metadata = [(REQUEST_ID, request_id)]
    for name in FORWARDED:
        value = request.headers.get(name)
        if value:
            if not _header_value(value):
                raise BadRequest(f"header {name}", "only printable ASCII characters")
            metadata.append((name, value))
    client = request.client.host if request.client else ""
    chain = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
    if client:
        chain.append(client)
    if chain:
        metadata.append(("x-forwarded-for", ", ".join(chain)))
    return metadata


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
        self, settings: Settings, clients: ClientFactory, router: Router, limiter: RateLimiter | None = None
    ) -> None:
        self._settings = settings
        self._clients = clients
        self.router = router
        self._limiter = limiter
        self._document: dict[str, Any] | None = None
        self.connections: set[Connection] = set()
        identity = _service_identity(settings)
        # Shared tick streams need the gateway to act as the platform's service; without the key, each ticks topic
        # is a stream of its own.
        self.relay = TickRelay(clients, identity) if identity is not None else None
        # The stream items every socket receives alike (ticks), each written as JSON once.
        self.memo = Memo()
        # One callable per method, made on first use (the channels live as long as the app).
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    def _json(self, body: Any, status: int, request_id: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers={REQUEST_ID: request_id, **(headers or {})})

    async def rest(self, request: Request) -> Response:
        request_id = _request_id(request)
        raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or request.url.path
        found = self.router.find(request.method, raw_path)
        if isinstance(found, list):
            if not found:
                body = error_body(grpc.StatusCode.NOT_FOUND, f"no route {request.method} {request.url.path}")
                return self._json(body, 404, request_id)
            body = error_body(grpc.StatusCode.UNIMPLEMENTED, f"{request.url.path} takes {', '.join(found)}")
            body["error"]["code"] = 405
            return self._json(body, 405, request_id, {"allow": ", ".join(sorted(set(found)))})
        route, variables = found
        limited = await self._rate_limited(request, request_id)
        if limited is not None:
            return limited
        # The route's limits come from its method's declared request size (services/core/rules.py).
        encoded_limit = max_request_bytes(route.method)
        limit = min(self._settings.gateway_max_body_bytes, JSON_BODY_FACTOR * encoded_limit)
        try:
            payload = await _body(request, limit)
        except PayloadTooLarge:
            return self._too_large(f"the body is larger than {limit} bytes", limit, request_id)
        try:
            message = build_request(route, variables, request.query_params.multi_items(), payload)
            metadata = _metadata(request, request_id)
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
            response = await call(message, metadata=metadata, timeout=self._settings.request_timeout_seconds)
        except grpc.aio.AioRpcError as error:
            status, body, headers = from_rpc_error(error)
            return self._json(body, status, request_id, headers)
        return self._json(to_dict(response), 200, request_id)

    def _too_large(self, message: str, limit: int, request_id: str) -> JSONResponse:
        body = error_body(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        body["error"]["code"] = 413
        body["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "REQUEST_TOO_LARGE",
                "domain": "bullant.gateway",
                "metadata": {"limit_bytes": str(limit)},
            }
        ]
        return self._json(body, 413, request_id)

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
        call = channel.unary_stream(
            route.full_method,
            request_serializer=route.request_class.SerializeToString,
            response_deserializer=route.response_class.FromString,
        )(message, metadata=metadata)
        try:
            # The first message (or the refusal) decides the HTTP status, as for a unary call.
            first = await call.read()
        except grpc.aio.AioRpcError as error:
            status, body, headers = from_rpc_error(error)
            return self._json(body, status, request_id, headers)
        except BaseException:
            call.cancel()
            raise
        sse = "text/event-stream" in request.headers.get("accept", "")
        return StreamingResponse(
            _relay(call, first, sse=sse),
            media_type="text/event-stream" if sse else "application/x-ndjson",
            headers={REQUEST_ID: request_id, "cache-control": "no-cache"},
        )

    async def openapi(self, request: Request) -> Response:
        if self._document is None:
            self._document = openapi_document(self.router.routes)
        return JSONResponse(self._document, headers={REQUEST_ID: _request_id(request)})

    async def websocket(self, socket: WebSocket) -> None:
        connection = Connection(socket, self._clients, connection_metadata(socket), self.memo, self.relay)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "SERVING"}, headers={REQUEST_ID: _request_id(request)})

    async def readyz(self, request: Request) -> Response:
        services = sorted({route.service.full_name: route.service for route in self.router.routes}.items())

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
            headers={REQUEST_ID: _request_id(request)},
        )


async def _relay(call: Any, first: Any, *, sse: bool) -> AsyncIterator[bytes]:
    """Each message of a server stream as one NDJSON line or SSE event; an error ends it as a last `error` item.
    The upstream call is cancelled however the response ends (a client that disconnects included)."""

    def frame(document: dict[str, Any], event: str = "message") -> bytes:
        text = dumps(document)
        if sse:
            return b"event: " + event.encode() + b"\ndata: " + text + b"\n\n"
        return text + b"\n"

    try:
        message = first
        while message is not grpc.aio.EOF:
            yield frame({"result": to_dict(message)})
            message = await call.read()
    except grpc.aio.AioRpcError as error:
        _, body, _ = from_rpc_error(error)
        yield frame(body, "error")
    finally:
        call.cancel()


def _service_identity(settings: Settings) -> ServiceIdentity | None:
    """The gateway's identity as the platform's service for shared tick streams, when they are on and it holds the
    platform signing key (a configured private key file, or the local environment's development key)."""
    if not settings.gateway_shared_ticks:
        return None
    if settings.jwt_private_key_file is None and settings.env is not Environment.LOCAL:
        return None
    keys = load_signing_keys(settings)
    if keys.private_key is None:
        return None
    return ServiceIdentity(keys, token_policy(settings), "gateway")


def _client_key(request: Request) -> str:
    """Who a request counts against: its credential, else its address."""
    credential = request.headers.get("authorization") or request.headers.get("x-api-key")
    if credential:
        return "credential:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
    return "address:" + (request.client.host if request.client else "unknown")


def create_app(settings: Settings, *, clients: ClientFactory | None = None) -> Starlette:
    """The gateway for the services at the settings' upstream addresses."""
    factory = clients or ClientFactory(settings)
    coordination = build_coordination(settings.redis_url, keyspace_for(settings, "gateway"))
    gateway = Gateway(settings, factory, Router.from_services(generated_services()), coordination.limiter)

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

    middleware = []
    if settings.gateway_cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.gateway_cors_origins),
                allow_methods=_METHODS,
                allow_headers=["authorization", "x-api-key", "x-request-id", "content-type"],
                expose_headers=["x-request-id", "retry-after"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=[
            HttpRoute("/healthz", gateway.healthz, methods=["GET"]),
            HttpRoute("/readyz", gateway.readyz, methods=["GET"]),
            HttpRoute("/openapi.json", gateway.openapi, methods=["GET"]),
            WebSocketRoute("/v1/ws", gateway.websocket),
            HttpRoute("/{path:path}", gateway.rest, methods=_METHODS),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
