"""What every server interceptor of the chain is built on: replacing a method's handler once, wrapping its
behaviour around unary and streaming calls, and running a behaviour whatever form its result takes."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[..., Any]
UnaryWrapper = Callable[[Any, Context], Awaitable[Any]]
StreamWrapper = Callable[[Any, Context], AsyncIterator[Any]]


async def call_unary(behavior: Behavior, request: Any, context: Context) -> Any:
    result = behavior(request, context)
    if inspect.isawaitable(result):
        result = await result
    return result


async def iterate(behavior: Behavior, request: Any, context: Context) -> AsyncGenerator[Any, None]:
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


class HandlerReplacingInterceptor(grpc.aio.ServerInterceptor, ABC):
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


class WrappingInterceptor(HandlerReplacingInterceptor):
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


def status_code_of(raw: Any) -> grpc.StatusCode | None:
    """The status code a context reports (grpcio gives an int or a StatusCode), or None while none is set."""
    if raw is None or isinstance(raw, grpc.StatusCode):
        return raw
    for code in grpc.StatusCode:
        if code.value[0] == raw:
            return code
    return None
