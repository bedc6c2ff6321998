"""`/v1/ws`: one WebSocket multiplexing topics with small JSON messages, each topic a gRPC server stream.

Client → gateway: `{"type": "auth", "token": "..."}` (or `"apiKey"`) first, then `{"type": "subscribe", "topic":
"ticks:SIM-AAPL"}`, `{"type": "unsubscribe", "topic": ...}`, `{"type": "ping"}`. Gateway → client:
`{"type": "authenticated"}`, `{"type": "subscribed" | "unsubscribed", "topic": ...}`, `{"type": "event", "topic":
..., "data": <the stream message in the proto3 JSON mapping>}`, `{"type": "error", "topic"?: ..., "error": <AIP-193
error>}`, `{"type": "pong"}`, and `{"type": "heartbeat"}` when quiet. Topics: `ticks:<symbol>` (MarketService
.StreamTicks, conflated: a slow client gets the newest price, not a backlog), `signals` and `signals:<symbol>`
(SignalService.StreamSignals). Every upstream stream ends when its topic is unsubscribed or the socket closes. The
socket's credential is watched while it is open (gateway.credentials): when it expires or is revoked, or its account
disabled, every topic ends and the socket gets `{"type": "error", "error": ...}` with the reason, then is closed
(4401 UNAUTHENTICATED, 4403 PERMISSION_DENIED)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from bullant.market.v1 import market_pb2
from bullant.signal.v1 import signal_pb2
from gateway.credentials import Refusal, SocketCredential
from gateway.errors import error_body, from_rpc_error
from gateway.protojson import Memo, dumps, to_dict
from gateway.relay import TickRelay
from services.core.clients import ClientFactory

log = logging.getLogger("bullant.gateway.ws")
MAX_TOPICS = 50
MAX_FRAME_CHARS = 4096
AUTH_TIMEOUT_SECONDS = 10.0
HEARTBEAT_SECONDS = 20.0
# Messages queued for one socket; a full queue holds the upstream streams back (ticks are conflated upstream).
QUEUE_SIZE = 256
_MARKET = market_pb2.DESCRIPTOR.services_by_name["MarketService"]
_SIGNAL = signal_pb2.DESCRIPTOR.services_by_name["SignalService"]


@dataclass(frozen=True, slots=True)
class Topic:
    """How a topic name maps onto a gRPC server stream."""

    method: str
    request: Message
    response_class: type[Message]
    service: Any
    symbol: str = ""  # ticks topics: the symbol, which a TickRelay can serve


def parse_topic(name: str) -> Topic:
    """The stream behind a topic name; ValueError saying what is wrong."""
    kind, _, argument = name.partition(":")
    if kind == "ticks":
        if not argument:
            raise ValueError("ticks needs a symbol: ticks:<symbol>")
        return Topic(
            f"/{_MARKET.full_name}/StreamTicks",
            market_pb2.StreamTicksRequest(symbols=[argument], conflation=market_pb2.CONFLATION_MODE_LATEST),
            market_pb2.StreamTicksResponse,
            _MARKET,
            argument,
        )
    if kind == "signals":
        return Topic(
            f"/{_SIGNAL.full_name}/StreamSignals",
            signal_pb2.StreamSignalsRequest(symbols=[argument] if argument else []),
            signal_pb2.StreamSignalsResponse,
            _SIGNAL,
        )
    raise ValueError(f"unknown topic {name!r}: ticks:<symbol>, signals or signals:<symbol>")


class Connection:
    """One socket: its credentials, its topics' upstream streams and the single sender."""

    def __init__(
        self,
        socket: WebSocket,
        clients: ClientFactory,
        metadata: Callable[[], list[tuple[str, str]]],
        memo: Memo,
        relay: TickRelay | None = None,
    ) -> None:
        """`memo`: shared by the gateway's sockets, so each tick is written as JSON once however many watch it;
        `relay`: the gateway's shared tick streams (None: each ticks topic is a stream of its own)."""
        self._socket = socket
        self._memo = memo
        self._relay = relay
        self._clients = clients
        self._base_metadata = metadata
        self._credentials: list[tuple[str, str]] = []
        # The socket's credential, watched while it is open: the relay's streams run under another identity.
        self._credential = SocketCredential(clients, self._metadata)
        self._topics: dict[str, asyncio.Task[None]] = {}
        # Messages to send, or frames already written (the relay's).
        self._outgoing: asyncio.Queue[dict[str, Any] | str] = asyncio.Queue(QUEUE_SIZE)
        # Relayed topics: frames that arrive before the topic's snapshot is sent, the newest frame kept while the
        # queue is full (with the ticks skipped before it), and the relay's verdict when it ends a topic.
        self._held: dict[str, _Held] = {}
        self._conflated: dict[str, tuple[str, int, int]] = {}
        self._ended: dict[str, asyncio.Future[dict[str, object]]] = {}

    @property
    def topic_count(self) -> int:
        return len(self._topics)

    async def run(self) -> None:
        await self._socket.accept()
        sender = asyncio.create_task(self._send_loop(), name="ws-sender")
        try:
            if await self._authenticate():
                await self._serve()
        except WebSocketDisconnect:
            pass
        finally:
            await self._credential.close()
            # Taken out first: each topic's task removes itself from the dict as it ends.
            tasks = list(self._topics.values())
            self._topics.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _send_loop(self) -> None:
        outgoing = self._outgoing
        while True:
            if outgoing.empty():  # only an idle socket pays for the heartbeat timer
                try:
                    message = await asyncio.wait_for(outgoing.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await self._socket.send_text('{"type":"heartbeat"}')
                    continue
            else:
                message = outgoing.get_nowait()
            try:
                await self._socket.send_text(message if isinstance(message, str) else dumps(message).decode())
            finally:
                self._outgoing.task_done()
            if outgoing.empty() and self._conflated:
                await self._send_conflated()

    async def _send_conflated(self) -> None:
        """Once the queue has drained: each conflated topic's drop report, then its newest frame."""
        conflated, self._conflated = self._conflated, {}
        for topic, (frame, _, dropped) in conflated.items():
            if dropped:
                await self._socket.send_text(_drops_frame(topic, dropped))
            await self._socket.send_text(frame)

    # -- the relay's side (gateway.relay.Subscriber) -----------------------------------------------------------------

    def offer(self, topic: str, frame: str, ticks: int, last_sequence: int) -> None:
        held = self._held.get(topic)
        if held is not None:
            held.frames.append((frame, ticks, last_sequence))
            if len(held.frames) > QUEUE_SIZE:
                held.dropped += held.frames.pop(0)[1]
            return
        self._enqueue(topic, frame, ticks, 0)

    def end_topic(self, topic: str, error: dict[str, object]) -> None:
        ended = self._ended.get(topic)
        if ended is not None and not ended.done():
            ended.set_result(error)

    def _enqueue(self, topic: str, frame: str, ticks: int, dropped: int) -> None:
        """Queue a relayed frame; with the queue full (or the topic already conflated) keep only the newest."""
        pending = self._conflated.get(topic)
        if pending is None and not self._outgoing.full():
            if dropped:
                self._outgoing.put_nowait(_drops_frame(topic, dropped))
                if self._outgoing.full():
                    self._conflated[topic] = (frame, ticks, 0)
                    return
            self._outgoing.put_nowait(frame)
            return
        if pending is not None:
            dropped += pending[1] + pending[2]
        self._conflated[topic] = (frame, ticks, dropped)

    async def _say(self, message: dict[str, Any]) -> None:
        await self._outgoing.put(message)

    async def _refuse(self, code: grpc.StatusCode, text: str, topic: str | None = None) -> None:
        message: dict[str, Any] = {"type": "error", "error": error_body(code, text)["error"]}
        if topic is not None:
            message["topic"] = topic
        await self._say(message)

    async def _frame(self, *, within: float | None = None) -> dict[str, Any] | None:
        """The next client message, or None after telling the client what was wrong with it."""
        async with asyncio.timeout(within):
            text = await self._socket.receive_text()
        if len(text) > MAX_FRAME_CHARS:
            await self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"a message is at most {MAX_FRAME_CHARS} characters")
            return None
        try:
            message = json.loads(text)
        except ValueError:
            await self._refuse(grpc.StatusCode.INVALID_ARGUMENT, 'not JSON: send {"type": ...} objects')
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._refuse(grpc.StatusCode.INVALID_ARGUMENT, "a message is a JSON object with a string `type`")
            return None
        return message

    async def _authenticate(self) -> bool:
        try:
            message = await self._frame(within=AUTH_TIMEOUT_SECONDS)
        except TimeoutError:
            await self._close_with(grpc.StatusCode.UNAUTHENTICATED, "no auth message within 10 seconds", 4401)
            return False
        if message is None or message.get("type") != "auth":
            await self._close_with(
                grpc.StatusCode.UNAUTHENTICATED, 'the first message must be {"type": "auth", ...}', 4401
            )
            return False
        token, api_key = message.get("token"), message.get("apiKey")
        if isinstance(token, str) and token:
            self._credentials = [("authorization", f"Bearer {token}")]
        elif isinstance(api_key, str) and api_key:
            self._credentials = [("x-api-key", api_key)]
        else:
            await self._close_with(grpc.StatusCode.UNAUTHENTICATED, "auth needs a `token` or an `apiKey`", 4401)
            return False
        # Only credentials the platform refuses end the socket; anything else (the account service not deployed
        # here) leaves it to each topic's stream to decide.
        refusal = await self._credential.open(answer_within=AUTH_TIMEOUT_SECONDS)
        if refusal is not None:
            await self._end_with(refusal)
            return False
        await self._say({"type": "authenticated"})
        return True

    async def _serve(self) -> None:
        """The client's messages until it leaves, or until the platform stops accepting the socket's credential
        (expired, revoked, account disabled): then every topic ends, the socket gets the error and is closed."""
        receiving = asyncio.create_task(self._receive_loop(), name="ws-receiver")
        ended = asyncio.create_task(self._credential.ended(), name="ws-credential-end")
        try:
            await asyncio.wait({receiving, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiving, ended):
                task.cancel()
        if receiving.done() and not receiving.cancelled():
            receiving.result()  # the client left (WebSocketDisconnect)
            return
        await self._end_with(ended.result())

    async def _end_with(self, refusal: Refusal) -> None:
        """Stop every topic, then tell the client why and close (4401 UNAUTHENTICATED, 4403 PERMISSION_DENIED)."""
        tasks = list(self._topics.values())
        self._topics.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._say({"type": "error", "error": refusal.error})
        await self._drain_and_close(refusal.close_code)

    def _metadata(self) -> list[tuple[str, str]]:
        return [*self._base_metadata(), *self._credentials]

    async def _close_with(self, code: grpc.StatusCode, text: str, close_code: int) -> None:
        await self._refuse(code, text)
        await self._drain_and_close(close_code)

    async def _drain_and_close(self, close_code: int, reason: str | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._outgoing.join()
        await self._socket.close(close_code, reason)

    async def shut_down(self) -> None:
        """The gateway is shutting down: an UNAVAILABLE error, then the close frame 1012 (service restart), so the
        client knows to reconnect (to another replica, or once this one is back)."""
        error = error_body(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect to continue")
        with contextlib.suppress(asyncio.QueueFull):
            self._outgoing.put_nowait({"type": "error", "error": error["error"]})
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the socket closed meanwhile
            await self._drain_and_close(1012, "server shutting down")

    async def _receive_loop(self) -> None:
        while True:
            message = await self._frame()
            if message is None:
                continue
            kind = message["type"]
            topic = message.get("topic")
            if kind == "ping":
                await self._say({"type": "pong"})
            elif kind in ("subscribe", "unsubscribe") and not isinstance(topic, str):
                await self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"{kind} needs a string `topic`")
            elif kind == "subscribe":
                await self._subscribe(str(topic))
            elif kind == "unsubscribe":
                task = self._topics.pop(str(topic), None)
                if task is not None:
                    task.cancel()
                await self._say({"type": "unsubscribed", "topic": topic})
            else:
                await self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"unknown message type {kind[:40]!r}")

    async def _subscribe(self, name: str) -> None:
        if name in self._topics:
            await self._say({"type": "subscribed", "topic": name})
            return
        if len(self._topics) >= MAX_TOPICS:
            await self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {MAX_TOPICS} topics per socket", name)
            return
        try:
            topic = parse_topic(name)
        except ValueError as error:
            await self._refuse(grpc.StatusCode.INVALID_ARGUMENT, str(error), name)
            return
        # Only a socket whose credential is watched may use the relay: its streams run under another identity.
        shared = self._relay is not None and self._relay.usable and topic.symbol and self._credential.watched
        follow = self._follow_shared(name, topic) if shared else self._follow(name, topic)
        self._topics[name] = asyncio.create_task(follow, name=f"ws-topic-{name}")

    async def _follow_shared(self, name: str, topic: Topic) -> None:
        """A ticks topic served by the relay: join (holding frames), wait until the shared stream is live, check
        the socket's own right to the symbol by asking for its quote, send that quote as the snapshot, then the
        held frames with newer ticks, then whatever the relay offers until unsubscribed or the stream ends."""
        assert self._relay is not None
        ended = self._ended[name] = asyncio.get_running_loop().create_future()
        self._held[name] = _Held()
        stream = self._relay.join(topic.symbol, name, self)
        try:
            waiting = asyncio.ensure_future(stream.live.wait())
            try:
                await asyncio.wait({waiting, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if ended.done():
                if not self._relay.usable:  # the market refused the gateway's identity: a stream of its own
                    self._relay.leave(stream, self)
                    await self._follow(name, topic)
                    return
                await self._say({"type": "error", "topic": name, "error": ended.result()})
                return
            # BatchGetQuotes: the same "read" access as StreamTicks, NOT_FOUND for an unknown symbol, and, like
            # StreamTicks' own snapshot, no quote (rather than an error) for a symbol without market data yet.
            call = self._clients.channel(_MARKET, propagate=False).unary_unary(
                f"/{_MARKET.full_name}/BatchGetQuotes",
                request_serializer=market_pb2.BatchGetQuotesRequest.SerializeToString,
                response_deserializer=market_pb2.BatchGetQuotesResponse.FromString,
            )
            try:
                reply = await call(
                    market_pb2.BatchGetQuotesRequest(symbols=[topic.symbol]),
                    metadata=self._metadata(),
                    timeout=AUTH_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as error:
                _, body, _ = from_rpc_error(error)
                await self._say({"type": "error", "topic": name, "error": body["error"]})
                return
            await self._say({"type": "subscribed", "topic": name})
            snapshot = market_pb2.StreamTicksResponse(snapshot=market_pb2.QuoteSnapshot(quotes=reply.quotes))
            await self._say({"type": "event", "topic": name, "data": to_dict(snapshot)})
            known = max((quote.sequence for quote in reply.quotes), default=0)
            held = self._held.pop(name)
            dropped = held.dropped
            for frame, ticks, last_sequence in held.frames:
                if last_sequence > known:  # older ticks are in the snapshot already
                    self._enqueue(name, frame, ticks, dropped)
                    dropped = 0
            await self._say({"type": "error", "topic": name, "error": await ended})
        finally:
            self._relay.leave(stream, self)
            self._held.pop(name, None)
            self._conflated.pop(name, None)
            self._ended.pop(name, None)
            if self._topics.get(name) is asyncio.current_task():
                del self._topics[name]

    async def _follow(self, name: str, topic: Topic) -> None:
        call: grpc.aio.UnaryStreamCall[Any, bytes] = self._clients.channel(topic.service, propagate=False).unary_stream(
            topic.method,
            request_serializer=type(topic.request).SerializeToString,
            # Read undecoded: the memo decodes and writes each distinct message once for every socket.
            response_deserializer=None,
        )(topic.request, metadata=self._metadata())
        try:
            first = True
            while (raw := await call.read()) is not grpc.aio.EOF:
                if first:
                    await self._say({"type": "subscribed", "topic": name})
                    first = False
                assert isinstance(raw, bytes)
                data = self._memo.document(topic.response_class, raw)
                await self._say({"type": "event", "topic": name, "data": data})
            await self._refuse(grpc.StatusCode.UNAVAILABLE, "the stream ended; subscribe again", name)
        except grpc.aio.AioRpcError as error:
            _, body, _ = from_rpc_error(error)
            await self._say({"type": "error", "topic": name, "error": body["error"]})
        finally:
            call.cancel()
            if self._topics.get(name) is asyncio.current_task():
                del self._topics[name]


@dataclass
class _Held:
    """Frames of a relayed topic that arrived before its snapshot was sent (bounded: the oldest go, counted)."""

    frames: list[tuple[str, int, int]] = field(default_factory=list)
    dropped: int = 0


def _drops_frame(topic: str, dropped: int) -> str:
    """The event reporting ticks conflated away for this socket, as the market's DropReport."""
    symbol = topic.partition(":")[2]
    report = market_pb2.StreamTicksResponse(
        drops=market_pb2.DropReport(symbols=[market_pb2.SymbolDropCount(symbol=symbol, dropped_count=dropped)])
    )
    return dumps({"type": "event", "topic": topic, "data": to_dict(report)}).decode()


def connection_metadata(socket: WebSocket) -> Callable[[], list[tuple[str, str]]]:
    """Per upstream call: a fresh request id and the client's address."""
    client = socket.client.host if socket.client else ""

    def metadata() -> list[tuple[str, str]]:
        found = [("x-request-id", uuid.uuid4().hex)]
        if client:
            found.append(("x-forwarded-for", client))
        return found

    return metadata
