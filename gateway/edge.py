"""What every HTTP answer of the gateway gets, whichever part of it answers: the request id (`X-Request-Id`, the
client's or a new one), CORS for the configured origins (preflights answered here, by the policy and nothing else),
and for anything unexpected an AIP-193 INTERNAL error naming the request id, logged with its traceback, instead of
a plain-text 500."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_body, error_info, request_info
from gateway.protojson import dumps
from gateway.transcode import header_value

log = logging.getLogger("bullant.gateway")
REQUEST_ID = "x-request-id"
_SCOPE_KEY = "bullant.request_id"
# Request headers browsers may always send (the Fetch standard's CORS-safelisted ones, within their limits).
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})


def request_id_of(scope: Scope) -> str:
    """The request's id: the client's `X-Request-Id` when it can travel as gRPC metadata, else a new one; the same
    for every part of the gateway that asks."""
    found = scope.get(_SCOPE_KEY)
    if isinstance(found, str):
        return found
    given = Headers(scope=scope).get(REQUEST_ID, "").strip()
    chosen = given[:128] if given and header_value(given) else uuid.uuid4().hex
    scope[_SCOPE_KEY] = chosen
    return chosen


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which browser origins may call the gateway, and with what."""

    origins: frozenset[str]
    methods: tuple[str, ...]
    headers: frozenset[str]  # request headers a page may send besides the safelisted ones (lowercase)
    exposed: tuple[str, ...]  # response headers a page may read
    max_age_seconds: int = 600

    def grant(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for `origin`, None when it is not allowed."""
        if origin in self.origins:
            return origin
        return "*" if "*" in self.origins else None


class Edge:
    """ASGI middleware in front of the whole gateway (HTTP only; WebSockets pass through)."""

    def __init__(self, app: ASGIApp, cors: CorsPolicy) -> None:
        self.app = app
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin is not None and "access-control-request-method" in headers:
            await self._preflight(send, origin, headers, request_id)
            return
        granted = self.cors.grant(origin) if origin is not None else None
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                response_headers = MutableHeaders(scope=message)
                if REQUEST_ID not in response_headers:
                    response_headers[REQUEST_ID] = request_id
                if self.cors.origins:
                    response_headers.add_vary_header("Origin")
                if granted is not None:
                    response_headers["access-control-allow-origin"] = granted
                    response_headers["access-control-expose-headers"] = ", ".join(self.cors.exposed)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception(
                "unexpected error answering %s %s", scope["method"], scope["path"], extra={"request_id": request_id}
            )
            if started:
                raise  # the answer is under way: the server ends the connection
            body = error_body(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            body["error"]["details"] = [error_info("INTERNAL", "bullant.gateway"), request_info(request_id)]
            await _send_json(send_with_headers, 500, body)

    async def _preflight(self, send: Send, origin: str, headers: Headers, request_id: str) -> None:
        """A CORS preflight: 204 with the grant, or 403 (an AIP-193 error, no grant) saying what is not allowed."""
        granted = self.cors.grant(origin)
        method = headers["access-control-request-method"].strip().upper()
        requested = [
            name.strip().lower()
            for name in headers.get("access-control-request-headers", "").split(",")
            if name.strip()
        ]
        refused_headers = [name for name in requested if name not in self.cors.headers | SAFELISTED_HEADERS]
        refusal = None
        if granted is None:
            refusal = ("CORS_ORIGIN_NOT_ALLOWED", f"the origin {origin} is not allowed (BULLANT_GATEWAY_CORS_ORIGINS)")
        elif method not in self.cors.methods:
            refusal = ("CORS_METHOD_NOT_ALLOWED", f"{method} is not allowed; allowed: {', '.join(self.cors.methods)}")
        elif refused_headers:
            allowed = ", ".join(sorted(self.cors.headers | SAFELISTED_HEADERS))
            refusal = (
                "CORS_HEADERS_NOT_ALLOWED",
                f"header(s) {', '.join(refused_headers)} not allowed; allowed: {allowed}",
            )
        if refusal is not None:
            reason, message = refusal
            body = error_body(grpc.StatusCode.PERMISSION_DENIED, message)
            body["error"]["details"] = [error_info(reason, "bullant.gateway"), request_info(request_id)]
            await _send_json(send, 403, body, [(REQUEST_ID, request_id), ("vary", "Origin")])
            return
        assert granted is not None
        response = [
            (REQUEST_ID, request_id),
            ("vary", "Origin"),
            ("access-control-allow-origin", granted),
            ("access-control-allow-methods", ", ".join(self.cors.methods)),
            ("access-control-max-age", str(self.cors.max_age_seconds)),
        ]
        if requested:
            response.append(("access-control-allow-headers", ", ".join(requested)))
        await send({"type": "http.response.start", "status": 204, "headers": _encoded(response)})
        await send({"type": "http.response.body", "body": b""})


def cors_policy(origins: Sequence[str], methods: Sequence[str], headers: Sequence[str]) -> CorsPolicy:
    return CorsPolicy(
        origins=frozenset(origins),
        methods=tuple(methods),
        headers=frozenset(name.lower() for name in headers),
        exposed=(REQUEST_ID, "retry-after"),
    )


def _encoded(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _send_json(send: Send, status: int, body: object, headers: Sequence[tuple[str, str]] = ()) -> None:
    content = dumps(body)
    response = [("content-type", "application/json"), ("content-length", str(len(content))), *headers]
    await send({"type": "http.response.start", "status": status, "headers": _encoded(response)})
    await send({"type": "http.response.body", "body": content})
