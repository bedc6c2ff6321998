"""Outermost interceptor: the call context and its request id, the access log and the metrics of every call."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.core.context import FORWARDED_KEYS, REQUEST_ID_KEY, CallContext, accept_request_id, bind_call
from services.core.interceptors.base import (
    Behavior,
    Context,
    StreamWrapper,
    UnaryWrapper,
    WrappingInterceptor,
    call_unary,
    iterate,
    status_code_of,
)
from services.core.metrics import GrpcMetrics

access_log = logging.getLogger("bullant.access")

# Probes and tooling call these constantly; their access lines go to DEBUG so they do not drown real traffic.
_QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class CallContextInterceptor(WrappingInterceptor):
    """Outermost: binds the CallContext (request id, deadline, forwarded credentials), echoes the request id in
    trailing metadata, and records each call in the access log and the metrics."""

    def __init__(self, metrics: GrpcMetrics | None) -> None:
        super().__init__()
        self._metrics = metrics

    def _begin(self, context: Context, method: str) -> CallContext:
        metadata = context.invocation_metadata() or ()
        candidate = None
        forwarded: list[tuple[str, str]] = []
        for key, value in metadata:
            if key == REQUEST_ID_KEY and isinstance(value, str):
                candidate = value
            elif key in FORWARDED_KEYS and isinstance(value, str):
                forwarded.append((key, value))
        remaining = context.time_remaining()
        call = CallContext(
            request_id=accept_request_id(candidate),
            method=method,
            deadline=None if remaining is None else time.monotonic() + remaining,
            forwarded=tuple(forwarded),
        )
        # Each RPC runs in its own task, so the binding ends with the call; nothing to reset.
        bind_call(call)
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        if self._metrics:
            self._metrics.started(method)
        return call

    def _finish(
        self,
        context: Context,
        call: CallContext,
        started: float,
        outcome: BaseException | None,
        *,
        peer: str,
        messages_sent: int | None = None,
    ) -> None:
        code = _final_code(context, outcome)
        elapsed = time.perf_counter() - started
        if self._metrics:
            self._metrics.handled(call.method, code.name, elapsed, messages_sent)
        level = logging.DEBUG if call.method.startswith(_QUIET_SERVICES) else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(
                level,
                "%s %s %.1fms",
                call.method,
                code.name,
                elapsed * 1000,
                extra={
                    "method": call.method,
                    "code": code.name,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": call.request_id,
                    "peer": peer,
                    **({"messages_sent": messages_sent} if messages_sent is not None else {}),
                },
            )

    def wrap_unary(self, behavior: Behavior, method: str) -> UnaryWrapper:
        async def observed(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            call = self._begin(context, method)
            peer = context.peer()  # now: after a client's cancellation, grpcio's peer() crashes the process
            outcome: BaseException | None = None
            try:
                return await call_unary(behavior, request, context)
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                self._finish(context, call, started, outcome, peer=peer)

        return observed

    def wrap_stream(self, behavior: Behavior, method: str) -> StreamWrapper:
        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            call = self._begin(context, method)
            peer = context.peer()  # now: after a client's cancellation, grpcio's peer() crashes the process
            outcome: BaseException | None = None
            sent = 0
            try:
                async for item in iterate(behavior, request, context):
                    sent += 1
                    yield item
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                self._finish(context, call, started, outcome, peer=peer, messages_sent=sent)

        return observed


def _final_code(context: Context, outcome: BaseException | None) -> grpc.StatusCode:
    code = status_code_of(context.code())
    if code is not None:
        return code
    if outcome is None:
        return grpc.StatusCode.OK
    if not isinstance(outcome, Exception):
        # CancelledError or GeneratorExit: cancelled by the client, its deadline or server shutdown.
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
