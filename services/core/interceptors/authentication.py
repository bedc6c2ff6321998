"""Authentication: the caller's identity and the method's access rule before the handler runs, and the watch of a
stream's credential while it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.core.auth.authenticator import Authenticator
from services.core.auth.identity import bind_identity
from services.core.interceptors.base import (
    Behavior,
    Context,
    StreamWrapper,
    UnaryWrapper,
    WrappingInterceptor,
    call_unary,
    iterate,
)


class AuthenticationInterceptor(WrappingInterceptor):
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
            return await call_unary(behavior, request, context)

        return authenticated

    def wrap_stream(self, behavior: Behavior, method: str) -> StreamWrapper:
        async def authenticated(request: Any, context: Context) -> AsyncIterator[Any]:
            metadata = tuple(context.invocation_metadata() or ())
            identity = await self._authenticator.authenticate(method, metadata)
            bind_identity(identity)
            items = iterate(behavior, request, context)
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
