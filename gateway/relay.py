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
stream on their own. The service token an upstream call runs under expires like any credential, and the market then
ends the call: so each call is replaced before that by one with a newer token, live before the old one is let go,
and the sockets never notice.
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
# How long a replaced upstream call keeps delivering (ticks it had in flight) once its replacement is live.
_OVERLAP_SECONDS = 2.0
# How soon a failed renewal is tried again (the current call has its token's remaining life to go).
_RETRY_RENEW_SECONDS = 5.0


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
        """Relay until the upstream ends; the error for the sockets.

        The upstream call carries the service token it was opened with, and the market ends a stream when its
        token expires. So before then the call is replaced, make-before-break: a call with a newer token is opened,
        and once it is live (its snapshot arrived, so every later tick comes through it) the old one delivers for a
        moment longer – ticks it already had in flight – and is let go; sequences drop the ticks both deliver."""
        feed = _Feed(stream)
        current = self._open(stream)
        reading = asyncio.create_task(self._read(current, feed), name=f"relay-read-{stream.symbol}")
        retired: list[tuple[_Upstream, asyncio.Task[dict[str, object]]]] = []
        try:
            while True:
                renew_in = self._identity.renew_time(current.expires_at)
                await asyncio.wait({reading}, timeout=renew_in)
                if reading.done():
                    return self._ended(current, reading.result())
                replacement = self._open(stream)
                replacing = asyncio.create_task(self._read(replacement, feed), name=f"relay-read-{stream.symbol}")
                live = asyncio.ensure_future(replacement.live.wait())
                try:
                    await asyncio.wait({live, replacing, reading}, return_when=asyncio.FIRST_COMPLETED)
                    if reading.done() and not live.done() and not replacing.done():
                        # The current call ended first (its token ran out on a busy machine): the replacement may
                        # still make it, and then the sockets go on.
                        await asyncio.wait({live, replacing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    live.cancel()
                if replacement.live.is_set() and not replacing.done():
                    log.debug("the shared tick stream of %s moved to a renewed credential", stream.symbol)
                    retired = [(upstream, task) for upstream, task in retired if not task.done()]
                    retired.append((current, reading))
                    asyncio.get_running_loop().call_later(_OVERLAP_SECONDS, _let_go, current, reading)
                    current, reading = replacement, replacing
                    continue
                replacing.cancel()
                replacement.call.cancel()
                if reading.done():
                    return self._ended(current, reading.result())
                # The replacement failed (the market restarting?): keep the current call, try again shortly.
                log.warning("could not renew the shared tick stream of %s; trying again", stream.symbol)
                await asyncio.wait({reading}, timeout=_RETRY_RENEW_SECONDS)
                if reading.done():
                    return self._ended(current, reading.result())
        finally:
            for upstream, task in [*retired, (current, reading)]:
                task.cancel()
                upstream.call.cancel()

    def _open(self, stream: SharedStream) -> _Upstream:
        token = self._identity.token()
        metadata = [("authorization", f"Bearer {token}"), ("x-request-id", uuid.uuid4().hex)]
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
        return _Upstream(call, self._identity.expires_at)

    async def _read(self, upstream: _Upstream, feed: _Feed) -> dict[str, object]:
        """Deliver what one upstream call sends until it ends; the error it ended with."""
        try:
            while (message := await upstream.call.read()) is not grpc.aio.EOF:
                assert isinstance(message, market_pb2.StreamTicksResponse)
                kind = message.WhichOneof("event")
                if (kind == "ticks" and message.ticks.ticks) or kind == "drops":
                    feed.deliver(message)
                elif kind == "snapshot":
                    upstream.live.set()
                    feed.stream.live.set()
        except grpc.aio.AioRpcError as error:
            upstream.refusal = error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            if upstream.refusal and not upstream.live.is_set():
                upstream.details = error.details() or ""
            _, body, _ = from_rpc_error(error)
            return dict(body["error"])
        return dict(error_body(grpc.StatusCode.UNAVAILABLE, "the stream ended; subscribe again")["error"])

    def _ended(self, upstream: _Upstream, error: dict[str, object]) -> dict[str, object]:
        """The error for the sockets; a call refused before it went live means the market does not take the
        gateway's identity at all (its key is not the platform's): then sockets stream on their own from now on."""
        if upstream.refusal and not upstream.live.is_set():
            if self._usable:
                log.error(
                    "the market refused the gateway's service identity (%s): its signing key is not the "
                    "platform's; WebSocket ticks now stream per socket",
                    upstream.details,
                )
            self._usable = False
        return error


def _let_go(upstream: _Upstream, reading: asyncio.Task[dict[str, object]]) -> None:
    reading.cancel()
    upstream.call.cancel()


@dataclass(eq=False)
class _Upstream:
    """One StreamTicks call of a shared stream, and the expiry of the token it was opened with."""

    call: grpc.aio.UnaryStreamCall[Any, market_pb2.StreamTicksResponse]
    expires_at: float
    live: asyncio.Event = field(default_factory=asyncio.Event)
    refusal: bool = False
    details: str = ""


class _Feed:
    """Writes a shared stream's batches once for every socket, never a tick twice: while a renewed call overlaps
    the one it replaces, both may carry the same ticks (a symbol's sequences only grow)."""

    def __init__(self, stream: SharedStream) -> None:
        self.stream = stream
        self._deliver = _deliverer(stream)
        self._last_sequence = 0

    def deliver(self, message: market_pb2.StreamTicksResponse) -> None:
        ticks = message.ticks.ticks
        if ticks:
            fresh = [tick for tick in ticks if tick.sequence > self._last_sequence]
            if not fresh:
                return
            if len(fresh) < len(ticks):
                message = market_pb2.StreamTicksResponse(ticks=market_pb2.TickBatch(ticks=fresh))
            self._last_sequence = fresh[-1].sequence
        self._deliver(message)


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
