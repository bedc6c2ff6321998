"""Domain-error mapping: a domain error becomes its status with details, anything unexpected INTERNAL naming only
the request id."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from services.core.context import current_request_id
from services.core.db.retry import as_unavailable
from services.core.errors import DomainError
from services.core.grpc_errors import (
    domain_of_method,
    status_for_domain_error,
    status_for_internal_error,
    status_for_unimplemented,
)
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

error_log = logging.getLogger("bullant.errors")


class ErrorMappingInterceptor(WrappingInterceptor):
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
        if status_code_of(context.code()) is grpc.StatusCode.UNIMPLEMENTED:
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
                return await call_unary(behavior, request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._handle(exc, context, method)

        return mapped

    def wrap_stream(self, behavior: Behavior, method: str) -> StreamWrapper:
        async def mapped(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for item in iterate(behavior, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._handle(exc, context, method)

        return mapped
