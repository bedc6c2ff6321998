"""Server interceptors, the same chain for every service (outermost first): the call context, request id, access
log and metrics (observability.py); domain-error mapping (error_mapping.py); authentication and the watch of a
stream's credential (authentication.py); the admission of each request by its contract's size limit and field
rules (admission.py). base.py is what they are built on."""

from __future__ import annotations

from collections.abc import Iterable

import grpc.aio

from services.core.auth.authenticator import Authenticator
from services.core.interceptors.admission import RequestRulesInterceptor
from services.core.interceptors.authentication import AuthenticationInterceptor
from services.core.interceptors.error_mapping import ErrorMappingInterceptor
from services.core.interceptors.observability import CallContextInterceptor
from services.core.metrics import GrpcMetrics


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
