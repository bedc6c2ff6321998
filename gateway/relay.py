"""One upstream tick stream per symbol for all of a gateway's WebSockets.

Without it, every socket's `ticks:<symbol>` topic is a StreamTicks call of its own: the market sends each tick once
per socket and the gateway decodes and writes each copy. With it, the gateway opens one StreamTicks per watched
symbol as the platform's service identity (services.core.auth.service_identity: it needs the platform signing
key, as the other services' background work does), writes each batch as a WebSocket frame once, and hands the same
text to every socket watching the symbol.

Each socket still proves its own right to the topic: `Connection` asks the market for the symbol's quote with the
socket's credentials (BatchGetQuotes: the same "read" access as StreamTicks, NOT_FOUND for an unknown symbol, no
quote yet for a symbol without market data) and sends that as the topic's snapshot. It joins before asking, holding
the frames that arrive meanwhile, and after the snapshot sends only batches with ticks newer than the quote. A socket
that cannot keep up is conflated by the socket (the newest batch per topic is kept, the skipped ticks reported in a
`drops` event), so no socket holds back the shared stream or the others. The upstream stream ends when its last
socket leaves; when it fails, every socket on it gets the topic's error, as with a stream of its own. When the
market refuses the gateway's identity (a key that is not the platform's), the relay turns itself off and sockets
stream on their own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from bullant.market.v1 import market_pb2
from gateway.errors import error_body, from_rpc_error
from gateway.protojson import dumps, to_dict
from services.core.auth.service_identity import ServiceIdentity
from services.core.clients import ClientFactory

log = logging.getLogger("bullant.gateway.relay")
_MARKET = market_pb2.DESCRIPTOR.services_by_name["MarketService"]
_STREAM_TICKS = f"/{_MARKET.full_name}/StreamTicks"
# Heartbeats asked of the market while a symbol is quiet: the relay ignores them, but they keep an idle stream's
# connection carrying traffic through proxies and load balancers.
_HEARTBEAT_SECONDS = 15


class Subscriber(Protocol):
    """What a socket offers the relay (gateway.websocket.Connection)."""

    def offer(self, topic: str, frame: str, ticks: int, last_sequence: int) -> None:
        """A ticks frame of `topic`: `ticks` ticks, the newest with sequence `last_sequence`. Never blocks."""

    def end_topic(self, topic: str, error: dict[str, object]) -> None:
        """The shared stream of `topic` failed with this AIP-193 error; the topic is over for the socket."""


@dataclass(eq=False)
class SharedStream:
    """One symbol's upstream stream and the sockets it feeds."""

    symbol: str
    topic: str
    subscribers: set[Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # Set once the market has subscribed the stream (its snapshot arrived): ticks published later all come through.
    live: asyncio.Event = field(default_factory=asyncio.Event)


class TickRelay:
    """The shared StreamTicks calls of one gateway, by symbol."""

    def __init__(self, clients: ClientFactory, identity: ServiceIdentity) -> None:
        self._clients = clients
        self._identity = identity
        self._streams: dict[str, SharedStream] = {}
        self._usable = True

    @property
    def usable(self) -> bool:
        """False once the market refused the gateway's service identity (its key is not the platform's): sockets
        then stream on their own."""
        return self._usable

    @property
    def stream_count(self) -> int:
        """Upstream streams open (tests and diagnostics)."""
        return len(self._streams)

    def join(self, symbol: str, topic: str, subscriber: Subscriber) -> SharedStream:
        """Deliver `symbol`'s ticks to `subscriber` as `topic` frames, opening the shared stream if needed; its
        `live` event is set once every tick published from then on will be delivered."""
        stream = self._streams.get(symbol)
        if stream is None:
            stream = self._streams[symbol] = SharedStream(symbol, topic)
            stream.task = asyncio.create_task(self._run(stream), name=f"relay-{symbol}")
        stream.subscribers.add(subscriber)
        return stream

    def leave(self, stream: SharedStream, subscriber: Subscriber) -> None:
        """Stop feeding `subscriber` from `stream` (the one `join` gave: a later stream of the symbol is another);
        the last one to leave ends it."""
        stream.subscribers.discard(subscriber)
        if not stream.subscribers:
            if self._streams.get(stream.symbol) is stream:
                del self._streams[stream.symbol]
            if stream.task is not None:
                stream.task.cancel()

    async def stop(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        tasks = [stream.task for stream in streams if stream.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, stream: SharedStream) -> None:
        try:
            error = await self._relay(stream)
        except asyncio.CancelledError:
            raise
        except Exception as unexpected:  # a bug must end the topic visibly, not leave sockets waiting
            log.exception("the shared tick stream of %s failed", stream.symbol)
            error = error_body(grpc.StatusCode.INTERNAL, f"the tick stream failed: {type(unexpected).__name__}")[
                "error"
            ]
        if self._streams.get(stream.symbol) is stream:
            del self._streams[stream.symbol]
        for subscriber in list(stream.subscribers):
            subscriber.end_topic(stream.topic, error)

    async def _relay(self, stream: SharedStream) -> dict[str, object]:
        """Relay until the upstream ends; the error for the sockets."""
        metadata = [
            ("authorization", f"Bearer {self._identity.token()}"),
            ("x-request-id", uuid.uuid4().hex),
        ]
        request = market_pb2.StreamTicksRequest(
            symbols=[stream.symbol],
            # Every socket conflates for itself; should the gateway itself fall behind, the market keeps the newest
            # ticks and reports the rest (passed on to every socket) rather than ending the stream.
            conflation=market_pb2.CONFLATION_MODE_LATEST,
            # Its snapshot only says the stream is live: each socket gets a snapshot of its own when it joins.
            heartbeat_interval_seconds=_HEARTBEAT_SECONDS,
        )
        call: grpc.aio.UnaryStreamCall[Any, market_pb2.StreamTicksResponse] = self._clients.channel(
            _MARKET, propagate=False
        ).unary_stream(
            _STREAM_TICKS,
            request_serializer=market_pb2.StreamTicksRequest.SerializeToString,
            response_deserializer=market_pb2.StreamTicksResponse.FromString,
        )(request, metadata=metadata)
        try:
            deliver = _deliverer(stream)
            while (message := await call.read()) is not grpc.aio.EOF:
                assert isinstance(message, market_pb2.StreamTicksResponse)
                kind = message.WhichOneof("event")
                if (kind == "ticks" and message.ticks.ticks) or kind == "drops":
                    deliver(message)
                elif kind == "snapshot":
                    stream.live.set()
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                if self._usable:
                    log.error(
                        "the market refused the gateway's service identity (%s): its signing key is not the "
                        "platform's; WebSocket ticks now stream per socket",
                        error.details(),
                    )
                self._usable = False
            _, body, _ = from_rpc_error(error)
            return dict(body["error"])
        finally:
            call.cancel()
        return dict(error_body(grpc.StatusCode.UNAVAILABLE, "the stream ended; subscribe again")["error"])


def _deliverer(stream: SharedStream) -> Callable[[market_pb2.StreamTicksResponse], None]:
    prefix = dumps({"type": "event", "topic": stream.topic})[:-1].decode() + ',"data":'

    def deliver(message: market_pb2.StreamTicksResponse) -> None:
        """A tick batch, or a drop report (no ticks, sequence 0), written once for every socket."""
        ticks = message.ticks.ticks
        frame = prefix + dumps(to_dict(message)).decode() + "}"
        last = ticks[len(ticks) - 1].sequence if ticks else 0
        for subscriber in list(stream.subscribers):
            subscriber.offer(stream.topic, frame, len(ticks), last)

    return deliver
