"""Typed stubs to other Bullant services: deadlines, retries for idempotent methods, request-id propagation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from services.core.backoff import backoff_delay
from services.core.context import REQUEST_ID_KEY, current_call, new_request_id
from services.core.settings import CallSettings, ServerSettings

StubT = TypeVar("StubT")
log = logging.getLogger("bullant.clients")

# A retry is only safe where a repeated call cannot do something twice; the contracts say which calls those are.
RETRYABLE_IDEMPOTENCY = frozenset({MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT})
_MAX_RECONNECT_BACKOFF_MS = 5_000


def service_short_name(service: ServiceDescriptor) -> str:
    """`bullant.market.v1.MarketService` → `market` (the key of its upstream address in settings)."""
    parts = service.full_name.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "bullant" else service.full_name


def is_retryable(method: MethodDescriptor) -> bool:
    """Whether the contract marks `method` safe to repeat (idempotency_level)."""
    return method.GetOptions().idempotency_level in RETRYABLE_IDEMPOTENCY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How idempotent unary calls are retried: up to `max_attempts` in all, after a randomised exponential backoff
    (full jitter: up to min(initial x 2^(n-1), max) before attempt n+1)."""

    max_attempts: int = 4
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0

    @classmethod
    def from_settings(cls, calls: CallSettings) -> RetryPolicy:
        return cls(
            max_attempts=calls.retry_max_attempts,
            initial_backoff_seconds=calls.retry_initial_backoff_seconds,
            max_backoff_seconds=calls.retry_max_backoff_seconds,
        )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        return backoff_delay(retry, self.initial_backoff_seconds, self.max_backoff_seconds)


def retryable_methods(service: ServiceDescriptor) -> frozenset[str]:
    """Full method paths (`/bullant.market.v1.MarketService/GetQuote`) of the unary methods safe to repeat."""
    return frozenset(
        f"/{service.full_name}/{method.name}"
        for method in service.methods
        if is_retryable(method) and not method.client_streaming and not method.server_streaming
    )


def channel_options(server: ServerSettings) -> list[tuple[str, Any]]:
    """Channel arguments: the server's message limits and keepalive, and how soon a lost upstream is tried again."""
    return [
        ("grpc.max_send_message_length", server.max_message_bytes),
        ("grpc.max_receive_message_length", server.max_message_bytes),
        ("grpc.keepalive_time_ms", server.keepalive_time_seconds * 1000),
        ("grpc.keepalive_timeout_ms", server.keepalive_timeout_seconds * 1000),
        # While an upstream refuses connections every call fails at once (see RetryingInterceptor); the channel
        # tries to reconnect with backoff, by default growing to two minutes. A restarted upstream is found within
        # this bound instead.
        ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
    ]


def _outgoing_metadata(metadata: Any) -> grpc.aio.Metadata:
    outgoing = grpc.aio.Metadata(*(tuple(metadata) if metadata else ()))
    present = {key for key, _ in outgoing}
    call = current_call()
    if REQUEST_ID_KEY not in present:
        outgoing.add(REQUEST_ID_KEY, call.request_id if call else new_request_id())
    if call:
        for key, value in call.forwarded:
            if key not in present:
                outgoing.add(key, value)
    return outgoing


def _timeout(requested: float | None, default: float | None) -> float | None:
    """The call's own timeout, else the default, never beyond what is left of the call being served."""
    timeout = requested if requested is not None else default
    call = current_call()
    remaining = call.time_remaining() if call else None
    if remaining is not None:
        # A deadline already spent still gets a tiny timeout, so the call fails fast with DEADLINE_EXCEEDED.
        remaining = max(remaining, 0.001)
        timeout = remaining if timeout is None else min(timeout, remaining)
    return timeout


class _PropagatingInterceptor:
    """Adds the request id and forwarded credentials, and bounds the deadline, on every outgoing call."""

    def __init__(self, default_timeout: float | None) -> None:
        self._default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails, default: float | None) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=_timeout(details.timeout, default),
            metadata=_outgoing_metadata(details.metadata),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class _UnaryUnary(_PropagatingInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, self._default_timeout), request)


class _UnaryStream(_PropagatingInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        # Streams live as long as the caller wants: only the served call's own deadline bounds them.
        return await continuation(self._details(client_call_details, None), request)


class _StreamUnary(_PropagatingInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details, None), request_iterator)


class RetryingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Retries the idempotent unary calls of one channel that fail with UNAVAILABLE, per the RetryPolicy, within the
    call's deadline, and fails at once when the upstream is unreachable.

    gRPC's own retry policy (a service config) cannot tell a server answering UNAVAILABLE from a connection that
    was refused: it backs off and tries a dead upstream again until the attempts or the deadline run out, so a
    short deadline ended in DEADLINE_EXCEEDED after waiting all of it. Here a failure while the channel is in
    TRANSIENT_FAILURE (refused, unresolvable, unreachable) ends the call with UNAVAILABLE in milliseconds; the
    channel keeps reconnecting in the background. A retry whose backoff would outlast the deadline is not made
    either: the caller gets the UNAVAILABLE now rather than DEADLINE_EXCEEDED later.
    """

    def __init__(self, methods: frozenset[str], policy: RetryPolicy) -> None:
        self._methods = methods
        self._policy = policy
        self._channel: grpc.aio.Channel | None = None

    def watch(self, channel: grpc.aio.Channel) -> None:
        """The channel whose connectivity tells an unreachable upstream from a failing call."""
        self._channel = channel

    def _unreachable(self) -> bool:
        channel = self._channel
        return channel is not None and channel.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        if name not in self._methods or self._policy.max_attempts <= 1:
            return await continuation(client_call_details, request)
        timeout = client_call_details.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 1
        while True:
            call = await continuation(_with_timeout(client_call_details, deadline), request)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE or attempt >= self._policy.max_attempts:
                    return call
                if self._unreachable():
                    return call
                delay = self._policy.delay(attempt - 1)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    return call
                log.debug("%s answered UNAVAILABLE (attempt %d), retrying in %.3fs", name, attempt, delay)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            except asyncio.CancelledError:
                call.cancel()
                raise
            return call


def _with_timeout(details: grpc.aio.ClientCallDetails, deadline: float | None) -> grpc.aio.ClientCallDetails:
    """The call details with what is left of the overall deadline as this attempt's timeout."""
    if deadline is None:
        return details
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=max(deadline - time.monotonic(), 0.001),
        metadata=details.metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


def client_interceptors(default_timeout: float | None) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors every outgoing channel uses (besides its RetryingInterceptor)."""
    return [_UnaryUnary(default_timeout), _UnaryStream(default_timeout), _StreamUnary(default_timeout)]


class ClientFactory:
    """Gives typed stubs to other services at their configured addresses; one channel per service.

    Channels open on first use and close in stop(). Unary calls get the configured default timeout unless the caller
    passes one; every call carries the current request id and the caller's credentials. Idempotent unary calls are
    retried (RetryingInterceptor); an unreachable upstream fails them with UNAVAILABLE at once.
    """

    def __init__(self, calls: CallSettings, server: ServerSettings) -> None:
        """`calls`: where services are and how calls to them behave; `server`: this process's own server (its
        port, its message limits and keepalive, which channels share)."""
        self._calls = calls
        self._server = server
        self._policy = RetryPolicy.from_settings(calls)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._own_port: int | None = None

    async def start(self) -> None:
        """Nothing to open up front: channels connect lazily."""

    def listening_on(self, port: int) -> None:
        """The port this process's gRPC server bound (with BULLANT_PORT=0 known only then): services without an
        upstream of their own are reached there, as CallSettings.upstream says."""
        self._own_port = port

    def channel(self, service: ServiceDescriptor, *, propagate: bool = True) -> grpc.aio.Channel:
        """The channel to `service`, created on first use.

        `propagate=False`: a channel without the propagating interceptors, for an edge (the HTTP gateway) that serves
        no gRPC call and sets every call's metadata and deadline itself. grpc.aio passes each message of an
        intercepted stream through an extra task; without it the gateway's WebSocket relayed a third more ticks.
        Retries (a unary interceptor, which streams do not pass through) and the channel options are the same."""
        key = service.full_name if propagate else f"{service.full_name} (edge)"
        channel = self._channels.get(key)
        if channel is None:
            address = self._calls.upstream(service_short_name(service), port=self._own_port or self._server.port)
            retrying = RetryingInterceptor(retryable_methods(service), self._policy)
            interceptors: list[grpc.aio.ClientInterceptor] = (
                [*client_interceptors(self._calls.request_timeout_seconds), retrying] if propagate else [retrying]
            )
            channel = grpc.aio.insecure_channel(
                address, options=channel_options(self._server), interceptors=interceptors
            )
            retrying.watch(channel)
            self._channels[key] = channel
        return channel

    def stub(self, stub_class: Callable[[grpc.aio.Channel], StubT], service: ServiceDescriptor) -> StubT:
        """A typed stub, e.g. `stub(MarketServiceStub, market_pb2.DESCRIPTOR.services_by_name["MarketService"])`."""
        return stub_class(self.channel(service))

    async def stop(self) -> None:
        """Close every channel; calls in flight are cancelled."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
