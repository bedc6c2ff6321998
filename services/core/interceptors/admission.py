"""Request admission: each request of a Bullant method is refused by its contract's size limit before it is
parsed and by its declared field rules after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError

from services.core.errors import FieldViolation, InvalidArgument, ResourceExhausted
from services.core.interceptors.base import Behavior, Context, HandlerReplacingInterceptor, call_unary, iterate
from services.core.rulebook import RuleBook
from services.core.rules import max_request_bytes


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


class RequestRulesInterceptor(HandlerReplacingInterceptor):
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
                return await call_unary(behavior, policy.admit(raw), context)

            async def streamed(raw: Any, context: Context) -> AsyncIterator[Any]:
                request = policy.admit(raw)
                async for item in iterate(behavior, request, context):
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
                return await call_unary(behavior, admitted(requests), context)

            return grpc.stream_unary_rpc_method_handler(client_stream, response_serializer=serializer)

        async def bidi(requests: Any, context: Context) -> AsyncIterator[Any]:
            async for item in iterate(behavior, admitted(requests), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(bidi, response_serializer=serializer)
