"""A WebSocket's own credential, watched for as long as the socket is open.

Each topic of a socket is a gRPC stream, and every server stream ends when its credential expires or is revoked
(services.core.auth.watch). But the shared tick streams of gateway.relay run under the platform's identity, not the
socket's, so a socket must watch its credential itself: it holds one AccountService.WatchCredential call with its
credentials – the same server-side watch, which says nothing until the credential ends and then ends with the
refusal (TOKEN_EXPIRED, TOKEN_REVOKED, API_KEY_INVALID, ACCOUNT_DISABLED...). The socket then sends that error and
closes (gateway.websocket). When the watch breaks for another reason (the account replica shuts down), it is opened
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from bullant.account.v1 import account_pb2
from gateway.errors import from_rpc_error
from services.core.backoff import backoff_delay
from services.core.clients import ClientFactory

log = logging.getLogger("bullant.gateway.ws")
_ACCOUNT = account_pb2.DESCRIPTOR.services_by_name["AccountService"]
_WATCH = f"/{_ACCOUNT.full_name}/WatchCredential"
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The platform no longer accepts the socket's credential: the AIP-193 error and the close code to use."""

    error: dict[str, Any]
    close_code: int


def refusal_of(error: grpc.aio.AioRpcError) -> Refusal | None:
    """The refusal when `error` is the platform refusing a credential, else None."""
    if error.code() not in _REFUSED:
        return None
    _, body, _ = from_rpc_error(error)
    return Refusal(dict(body["error"]), 4401 if error.code() is grpc.StatusCode.UNAUTHENTICATED else 4403)


class SocketCredential:
    """The watch of one socket's credential (`metadata()` gives the credential headers with a fresh request id)."""

    def __init__(self, clients: ClientFactory, metadata: Callable[[], list[tuple[str, str]]]) -> None:
        self._clients = clients
        self._metadata = metadata
        self._ended: asyncio.Future[Refusal] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self.watched = False

    async def open(self, *, answer_within: float) -> Refusal | None:
        """Start watching: the refusal when the platform refuses the credential now. When it cannot be watched
        (the account service is not deployed behind this gateway, or does not answer in time), `watched` stays
        False and each topic's own stream decides."""
        call = self._call()
        try:
            async with asyncio.timeout(answer_within):
                first = await call.read()
        except grpc.aio.AioRpcError as error:
            call.cancel()
            refusal = refusal_of(error)
            if refusal is None:
                log.warning("cannot watch a socket's credential (%s): its topics stream on their own", error.code())
            return refusal
        except TimeoutError:
            call.cancel()
            log.warning("cannot watch a socket's credential (no answer): its topics stream on their own")
            return None
        if first is grpc.aio.EOF:
            call.cancel()
            return None
        self.watched = True
        self._task = asyncio.create_task(self._follow(call), name="ws-credential")
        return None

    async def ended(self) -> Refusal:
        """Wait until the platform refuses the credential (forever when it is not watched)."""
        return await asyncio.shield(self._ended)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _call(self) -> grpc.aio.UnaryStreamCall[Any, Any]:
        return self._clients.channel(_ACCOUNT, propagate=False).unary_stream(
            _WATCH,
            request_serializer=account_pb2.WatchCredentialRequest.SerializeToString,
            response_deserializer=account_pb2.WatchCredentialResponse.FromString,
        )(account_pb2.WatchCredentialRequest(), metadata=self._metadata())

    async def _follow(self, call: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
        attempt = 0
        while True:
            try:
                # The watch sends one message when it is in place, then nothing: it only ends.
                while await call.read() is not grpc.aio.EOF:
                    attempt = 0
            except grpc.aio.AioRpcError as error:
                refusal = refusal_of(error)
                if refusal is not None:
                    self._ended.set_result(refusal)
                    return
            finally:
                call.cancel()
            # Ended otherwise (the account replica shutting down, the connection lost): watch again.
            await asyncio.sleep(backoff_delay(attempt, 0.2, 5.0, jitter_floor=0.5))
            attempt += 1
            call = self._call()
