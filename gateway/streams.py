"""REST server streams: each message of the upstream gRPC stream as one NDJSON line or one Server-Sent Event, the
upstream call cancelled however the response ends, and a last `error` item when the stream fails or the gateway shuts
down (Gateway.drain cancels the upstream call of every open stream, marked `drained`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.errors import error_body, error_info, from_rpc_error
from gateway.protojson import dumps, to_dict


@dataclass(eq=False)
class OpenStream:
    """A REST server stream in progress; `drained` once the gateway cancelled it for shutdown."""

    call: Any
    drained: bool = False


def cancelled() -> bool:
    """Whether the current task itself is being cancelled (rather than a gRPC call it awaits)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def draining_body() -> dict[str, Any]:
    body = error_body(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect to continue")
    body["error"]["details"] = [error_info("SERVER_DRAINING", "bullant.gateway")]
    return body


async def relay(stream: OpenStream, first: Any, streams: set[OpenStream], *, sse: bool) -> AsyncIterator[bytes]:
    """Each message of a server stream as one NDJSON line or SSE event; an error ends it as a last `error` item, and
    so does the gateway's shutdown. The upstream call is cancelled however the response ends (a client that
    disconnects included)."""

    def frame(document: dict[str, Any], event: str = "message") -> bytes:
        text = dumps(document)
        if sse:
            return b"event: " + event.encode() + b"\ndata: " + text + b"\n\n"
        return text + b"\n"

    call = stream.call
    try:
        message = first
        while message is not grpc.aio.EOF:
            yield frame({"result": to_dict(message)})
            message = await call.read()
    except grpc.aio.AioRpcError as error:
        _, body, _ = from_rpc_error(error)
        yield frame(body, "error")
    except asyncio.CancelledError:
        if not stream.drained or cancelled():
            raise
        yield frame(draining_body(), "error")
    finally:
        call.cancel()
        streams.discard(stream)
