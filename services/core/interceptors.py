"""Server interceptors: call context and request id, access log and metrics, domain-error mapping, authentication,
and the admission of each request by its contract's size limit and field rules."""

from __future__ import annotations

import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError

from services.core.auth.authenticator import Authenticator
from services.core.auth.identity import bind_identity
from services.core.context import (
    FORWARDED_KEYS,
    REQUEST_ID_KEY,
    CallContext,
    accept_request_id,
    bind_call,
    current_request_id,
)
from services.core.db.retry import as_unavailable
from services.core.errors import DomainError, FieldViolation, InvalidArgument, ResourceExhausted
from services.core.grpc_errors import (
    domain_of_method,
    status_for_domain_error,
    status_for_internal_error,
    status_for_unimplemented,
)
from services.core.metrics import GrpcMetrics
from services.core.rulebook import RuleBook
from services.core.rules import max_request_bytes

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[..., Any]
UnaryWrapper = Callable[[Any, Context], Awaitable[Any]]
StreamWrapper = Callable[[Any, Context], AsyncIterator[Any]]

access_log = logging.getLogger("bullant.access")
error_log = logging.getLogger("bullant.errors")

# Probes and tooling call these constantly; their access lines go to DEBUG so they do not drown real traffic.
_QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


async def _call_unary(behavior: Behavior, request: Any, context: Context) -> Any:
    result = behavior(request, context)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _iterate(behavior: Behavior, request: Any, context: Context) -> AsyncGenerator[Any, None]:
    result = behavior(request, context)
    if inspect.isawaitable(result):
        # A handler that writes with context.write() and returns nothing.
        await result
        return
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif result is not None:
        for item in result:
            yield item


class _HandlerReplacingInterceptor(grpc.aio.ServerInterceptor, ABC):
    """Replaces each method's handler with one of its own making. Handlers are the same object for every call of a
    method, so each is replaced once, not once per call."""

    def __init__(self) -> None:
        self._replaced: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self._applies(handler, method):
            return handler
        cached = self._replaced.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        replacement = self._replace(handler, method)
        self._replaced[method] = (handler, replacement)
        return replacement

    def _applies(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> bool:
        return True

    @abstractmethod
    def _replace(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler to use for `method` instead of `handler`."""


class _WrappingInterceptor(_HandlerReplacingInterceptor):
    """Wraps each method's behaviour; subclasses say what happens around unary and stream calls."""

    def _replace(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self.wrap_unary(handler.unary_unary, method), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self.wrap_unary(handler.stream_unary, method), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self.wrap_stream(handler.unary_stream, method), **kwargs)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(self.wrap_stream(handler.stream_stream, method), **kwargs)
        return handler

    @abstractmethod
    def wrap_unary(self, behavior: Behavior, method: str) -> UnaryWrapper:
        """A coroutine function that runs `behavior` for a unary-response call."""

    @abstractmethod
    def wrap_stream(self, behavior: Behavior, method: str) -> StreamWrapper:
        """An async generator function that runs `behavior` for a streaming-response call."""


class CallContextInterceptor(_WrappingInterceptor):
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
                return await _call_unary(behavior, request, context)
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
                async for item in _iterate(behavior, request, context):
                    sent += 1
                    yield item
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                self._finish(context, call, started, outcome, peer=peer, messages_sent=sent)

        return observed


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Turns domain errors into statuses with details; anything unexpected becomes INTERNAL with the request id,
    its traceback logged and its text never sent to the client."""

    async def _handle(self, exc: Exception, context: Context, method: str) -> None:
        request_id = current_request_id()
        domain = domain_of_method(method)
        error: Exception = as_unavailable(exc) or exc  # an unreachable database is an outage, not a bug
        if isinstance(error, DomainError):
            if error.detail:  # what the operator needs; the client gets the reason and the public message
                error_log.warning(
                    "%s answered %s (request id %s): %s",
                    method,
                    error.reason,
                    request_id,
                    error.detail,
                    extra={"method": method, "request_id": request_id, "reason": error.reason},
                )
            await context.abort_with_status(status_for_domain_error(error, domain=domain, request_id=request_id))
        if _code_of(context.code()) is grpc.StatusCode.UNIMPLEMENTED:
            # The generated base servicer marks a method with no behaviour yet this way before it raises.
            await context.abort_with_status(status_for_unimplemented(method, domain=domain, request_id=request_id))
        error_log.error(
            "unhandled exception in %s (request id %s)",
            method,
            request_id,
            exc_info=exc,
            extra={"method": method, "request_id": request_id},
        )
        await context.abort_with_status(status_for_internal_error(domain=domain, request_id=request_id))

    def wrap_unary(self, behavior: Behavior, method: str) -> UnaryWrapper:
        async def mapped(request: Any, context: Context) -> Any:
            try:
                return await _call_unary(behavior, request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._handle(exc, context, method)

        return mapped

    def wrap_stream(self, behavior: Behavior, method: str) -> StreamWrapper:
        async def mapped(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for item in _iterate(behavior, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._handle(exc, context, method)

        return mapped


class AuthenticationInterceptor(_WrappingInterceptor):
    """Inside error mapping: establishes the caller's Identity and enforces the method's access rule before the
    handler runs (before the first message of a stream). A streaming response then runs under a watch of its
    credential (services.core.auth.watch): when the credential expires, is revoked or its account disabled, the
    stream ends within moments with the refusal a new call would get, whatever the handler is waiting for."""

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self._authenticator = authenticator

    def wrap_unary(self, behavior: Behavior, method: str) -> UnaryWrapper:
        async def authenticated(request: Any, context: Context) -> Any:
            bind_identity(await self._authenticator.authenticate(method, context.invocation_metadata() or ()))
            return await _call_unary(behavior, request, context)

        return authenticated

    def wrap_stream(self, behavior: Behavior, method: str) -> StreamWrapper:
        async def authenticated(request: Any, context: Context) -> AsyncIterator[Any]:
            metadata = tuple(context.invocation_metadata() or ())
            identity = await self._authenticator.authenticate(method, metadata)
            bind_identity(identity)
            items = _iterate(behavior, request, context)
            if identity is None:  # a public stream called without credentials: nothing to watch
                async for item in items:
                    yield item
                return
            try:
                async with self._authenticator.watch(method, metadata, identity) as watch:
                    while True:
                        # Only the wait for the handler's next message is cut short; while gRPC sends one, the
                        # end of the credential is noticed at the next step.
                        with watch.interruptible():
                            try:
                                item = await anext(items)
                            except StopAsyncIteration:
                                return
                        yield item
            finally:
                await items.aclose()

        return authenticated


class _RequestPolicy:
    """How one method's requests are admitted: the size limit, the parser, and the declared rules."""

    def __init__(self, method: str, limit: int, parse: Callable[[bytes], Any], rules: RuleBook) -> None:
        self.method = method
        self.limit = limit
        self._parse = parse
        self._rules = rules

    def admit(self, raw: Any) -> Any:
        """The parsed request, refused before parsing when it is larger than the method allows, and after parsing
        when it breaks a declared rule."""
        if not isinstance(raw, bytes):  # an in-process caller that handed over a message
            self._rules.check(raw)
            return raw
        size = len(raw)
        if size > self.limit:
            raise ResourceExhausted(
                f"the request is {size} bytes; {self.method} accepts at most {self.limit}",
                reason="REQUEST_TOO_LARGE",
                metadata={"limit_bytes": self.limit, "size_bytes": size},
            )
        try:
            message = self._parse(raw)
        except DecodeError:
            raise InvalidArgument(
                FieldViolation("", "the request is not a valid protobuf message of this method"),
                reason="MALFORMED_REQUEST",
            ) from None
        self._rules.check(message)
        return message


class RequestRulesInterceptor(_HandlerReplacingInterceptor):
    """Innermost: admits each request of a Bullant method by its contract before the handler sees it. The handler
    receives raw bytes (no deserializer), so an oversize message is refused by its length, never parsed; a parsed
    one is checked against every declared field rule (services/core/rules.py), all violations at once. Methods of
    other services (health, reflection) pass through unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._rules = RuleBook()

    def _applies(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> bool:
        return method.startswith("/bullant.") and handler.request_deserializer is not None

    def _replace(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        assert handler.request_deserializer is not None
        return self._wrap(handler, self._policy(method, handler.request_deserializer))

    def _policy(self, method: str, parse: Callable[[bytes], Any]) -> _RequestPolicy:
        descriptor = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
        self._rules.checker(descriptor.input_type)  # compiled now, not on the first call
        return _RequestPolicy(method, max_request_bytes(descriptor), parse, self._rules)

    @staticmethod
    def _wrap(handler: grpc.RpcMethodHandler[Any, Any], policy: _RequestPolicy) -> grpc.RpcMethodHandler[Any, Any]:
        serializer = handler.response_serializer
        if handler.unary_unary or handler.unary_stream:
            behavior: Behavior = handler.unary_unary or handler.unary_stream  # type: ignore[assignment]

            async def unary(raw: Any, context: Context) -> Any:
                return await _call_unary(behavior, policy.admit(raw), context)

            async def streamed(raw: Any, context: Context) -> AsyncIterator[Any]:
                request = policy.admit(raw)
                async for item in _iterate(behavior, request, context):
                    yield item

            if handler.unary_unary:
                return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serializer)
            return grpc.unary_stream_rpc_method_handler(streamed, response_serializer=serializer)
        behavior = handler.stream_unary or handler.stream_stream  # type: ignore[assignment]

        async def admitted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for raw in requests:
                yield policy.admit(raw)

        if handler.stream_unary:

            async def client_stream(requests: Any, context: Context) -> Any:
                return await _call_unary(behavior, admitted(requests), context)

            return grpc.stream_unary_rpc_method_handler(client_stream, response_serializer=serializer)

        async def bidi(requests: Any, context: Context) -> AsyncIterator[Any]:
            async for item in _iterate(behavior, admitted(requests), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(bidi, response_serializer=serializer)


def _code_of(raw: Any) -> grpc.StatusCode | None:
    if raw is None or isinstance(raw, grpc.StatusCode):
        return raw
    for code in grpc.StatusCode:
        if code.value[0] == raw:
            return code
    return None


def _final_code(context: Context, outcome: BaseException | None) -> grpc.StatusCode:
    code = _code_of(context.code())
    if code is not None:
        return code
    if outcome is None:
        return grpc.StatusCode.OK
    if not isinstance(outcome, Exception):
        # CancelledError or GeneratorExit: cancelled by the client, its deadline or server shutdown.
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def server_interceptors(
    metrics: GrpcMetrics | None, authenticator: Authenticator | None
) -> Iterable[grpc.aio.ServerInterceptor]:
    """The standard chain, outermost first; without an authenticator every method is open (tests of other
    concerns only: the composition root always passes one)."""
    chain: list[grpc.aio.ServerInterceptor] = [CallContextInterceptor(metrics), ErrorMappingInterceptor()]
    if authenticator is not None:
        chain.append(AuthenticationInterceptor(authenticator))
    # Innermost, so only an authenticated caller makes the server parse anything.
    chain.append(RequestRulesInterceptor())
    return chain
