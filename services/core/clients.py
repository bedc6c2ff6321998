"""Typed stubs to other Bullant services: deadlines, retries for idempotent methods, request-id propagation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from services.core.context import REQUEST_ID_KEY, current_call, new_request_id
from services.core.settings import Settings

StubT = TypeVar("StubT")

# A retry is only safe where a repeated call cannot do something twice; the contracts say which calls those are.
RETRYABLE_IDEMPOTENCY = frozenset({MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT})
RETRYABLE_CODES = ("UNAVAILABLE",)


def service_short_name(service: ServiceDescriptor) -> str:
    """`bullant.market.v1.MarketService` → `market` (the key of its upstream address in settings)."""
    parts = service.full_name.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "bullant" else service.full_name


def is_retryable(method: MethodDescriptor) -> bool:
    """Whether the contract marks `method` safe to repeat (idempotency_level)."""
    return method.GetOptions().idempotency_level in RETRYABLE_IDEMPOTENCY


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def service_config(service: ServiceDescriptor, settings: Settings) -> dict[str, Any]:
    """gRPC service config enabling exponential backoff with jitter for the idempotent methods of `service`.

    gRPC's own retry machinery does the waiting: a randomized delay of up to
    min(initial * multiplier^(n-1), max) before attempt n, and it never retries once a response has started.
    """
    retryable = [{"service": service.full_name, "method": m.name} for m in service.methods if is_retryable(m)]
    if not retryable:
        return {}
    return {
        "methodConfig": [
            {
                "name": retryable,
                "retryPolicy": {
                    "maxAttempts": settings.retry_max_attempts,
                    "initialBackoff": _seconds(settings.retry_initial_backoff_seconds),
                    "maxBackoff": _seconds(settings.retry_max_backoff_seconds),
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": list(RETRYABLE_CODES),
                },
            }
        ]
    }


def channel_options(settings: Settings, config: dict[str, Any]) -> list[tuple[str, Any]]:
    """Channel arguments: message limits, keepalive, and the retry service config."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_seconds * 1000),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_seconds * 1000),
        ("grpc.enable_retries", 1),
    ]
    if config:
        options.append(("grpc.service_config", json.dumps(config)))
    return options


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


def client_interceptors(default_timeout: float | None) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors every outgoing channel uses."""
    return [_UnaryUnary(default_timeout), _UnaryStream(default_timeout), _StreamUnary(default_timeout)]


class ClientFactory:
    """Gives typed stubs to other services at their configured addresses; one channel per service.

    Channels open on first use and close in stop(). Unary calls get the configured default timeout unless the caller
    passes one; every call carries the current request id and the caller's credentials.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def start(self) -> None:
        """Nothing to open up front: channels connect lazily."""

    def channel(self, service: ServiceDescriptor, *, propagate: bool = True) -> grpc.aio.Channel:
        """The channel to `service`, created on first use.

        `propagate=False`: a channel without the propagating interceptors, for an edge (the HTTP gateway) that serves
        no gRPC call and sets every call's metadata and deadline itself. grpc.aio passes each message of an
        intercepted stream through an extra task; without it the gateway's WebSocket relayed a third more ticks.
        Retries and the other channel options are the same."""
        key = service.full_name if propagate else f"{service.full_name} (edge)"
        channel = self._channels.get(key)
        if channel is None:
            address = self._settings.upstream(service_short_name(service))
            channel = grpc.aio.insecure_channel(
                address,
                options=channel_options(self._settings, service_config(service, self._settings)),
                interceptors=client_interceptors(self._settings.request_timeout_seconds) if propagate else None,
            )
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
