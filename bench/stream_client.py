"""The subscribers of bench/stream_ticks.py, in a process of their own so that parsing what arrives does not take
the server's CPU: `python -m bench.stream_client --port P --streams N --symbols A,B` opens N concurrent StreamTicks
calls (at most 10 per channel), then obeys lines on stdin:

- `start`: forget what arrived so far and start counting;
- `stop`: print one JSON line: {"ticks", "messages", "dropped", "elapsed_s", "latencies_ms"}, the latter one
  publish→receipt latency per message (of its first tick; at most `--max-samples`, evenly thinned);
- `quit` (or the end of stdin): close every call and exit.

With `--websocket URL` each "stream" is instead a WebSocket to the HTTP gateway (`/v1/ws`) that authenticates and
subscribes to `ticks:<symbol>` for every symbol; ticks are counted from the JSON events, latency from the first
tick's `eventTime`.

The bearer token, when the server wants one, comes in the BENCH_TOKEN environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import datetime

import grpc
import grpc.aio
import websockets

from bullant.market.v1 import market_pb2, market_pb2_grpc

STREAMS_PER_CHANNEL = 10


class Tally:
    """What every stream received since the last `start`."""

    def __init__(self) -> None:
        self.ticks = 0
        self.messages = 0
        self.dropped = 0
        self.latencies: list[float] = []
        self.started = time.perf_counter()

    def report(self, max_samples: int) -> str:
        elapsed = time.perf_counter() - self.started
        samples = self.latencies
        if len(samples) > max_samples:
            step = len(samples) / max_samples
            samples = [samples[int(index * step)] for index in range(max_samples)]
        return json.dumps(
            {
                "ticks": self.ticks,
                "messages": self.messages,
                "dropped": self.dropped,
                "elapsed_s": elapsed,
                "latencies_ms": [round(value * 1e3, 4) for value in samples],
            }
        )


async def _receive(
    channel: grpc.aio.Channel,
    request: market_pb2.StreamTicksRequest,
    metadata: tuple[tuple[str, str], ...],
    tallies: list[Tally],
) -> None:
    clock = time.time
    stub = market_pb2_grpc.MarketServiceStub(channel)
    async for response in stub.StreamTicks(request, metadata=metadata):
        tally = tallies[-1]
        kind = response.WhichOneof("event")
        if kind == "ticks":
            ticks = response.ticks.ticks
            if ticks:
                stamp = ticks[0].event_time
                tally.latencies.append(clock() - stamp.seconds - stamp.nanos * 1e-9)
            tally.ticks += len(ticks)
            tally.messages += 1
        elif kind == "drops":
            tally.dropped += sum(item.dropped_count for item in response.drops.symbols)


_TICKS_EVENT = '"data":{"ticks":{"ticks":[{'
_EVENT_TIME = '"eventTime":"'
_SEQUENCE = '"sequence":'


async def _receive_websocket(url: str, token: str, symbols: list[str], tallies: list[Tally]) -> None:
    clock = time.time
    async with websockets.connect(url, max_size=None, compression=None) as socket:
        await socket.send(json.dumps({"type": "auth", "token": token}))
        for symbol in symbols:
            await socket.send(json.dumps({"type": "subscribe", "topic": f"ticks:{symbol}"}))
        async for frame in socket:
            assert isinstance(frame, str)
            if _TICKS_EVENT in frame[:160]:
                # A tick batch, read the way a browser's C++ JSON parser would cost: count the ticks and take the
                # first one's time without building Python objects for all of them (json.loads of every batch
                # made this process, not the gateway, the bottleneck).
                tally = tallies[-1]
                start = frame.index(_EVENT_TIME) + len(_EVENT_TIME)
                stamp = datetime.fromisoformat(frame[start : frame.index('"', start)]).timestamp()
                tally.latencies.append(clock() - stamp)
                tally.ticks += frame.count(_SEQUENCE)
                tally.messages += 1
                continue
            message = json.loads(frame)
            kind = message.get("type")
            if kind == "error":
                raise RuntimeError(f"the gateway refused: {message}")
            if kind != "event":
                continue
            tally = tallies[-1]
            data = message["data"]
            if "ticks" in data:
                ticks = data["ticks"].get("ticks", [])
                if ticks:
                    stamp = datetime.fromisoformat(ticks[0]["eventTime"]).timestamp()
                    tally.latencies.append(clock() - stamp)
                tally.ticks += len(ticks)
                tally.messages += 1
            elif "drops" in data:
                tally.dropped += sum(int(item.get("droppedCount", 0)) for item in data["drops"].get("symbols", []))


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(
    port: int, streams: int, symbols: list[str], max_batch: int, max_samples: int, *, websocket: str = ""
) -> None:
    token = os.environ.get("BENCH_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    request = market_pb2.StreamTicksRequest(symbols=symbols, max_batch_size=max_batch, skip_snapshot=True)
    channels = (
        []
        if websocket
        else [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            for _ in range((streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
        ]
    )
    # One list shared by every stream: `start` appends a fresh tally, which all of them then count into.
    tallies = [Tally()]
    calls = [
        asyncio.create_task(
            _receive_websocket(websocket, token, symbols, tallies)
            if websocket
            else _receive(channels[index // STREAMS_PER_CHANNEL], request, metadata, tallies)
        )
        for index in range(streams)
    ]
    commands = await _commands()
    try:
        while True:
            reading = asyncio.ensure_future(commands.readline())
            done, _ = await asyncio.wait({reading, *calls}, return_when=asyncio.FIRST_COMPLETED)
            if reading not in done:
                reading.cancel()
                for call in done:
                    call.result()  # the stream's error
                raise RuntimeError("a stream ended early")
            line = reading.result().decode().strip()
            if line == "start":
                tallies.append(Tally())
            elif line == "stop":
                print(tallies[-1].report(max_samples), flush=True)
            elif line in ("quit", ""):
                break
    finally:
        for call in calls:
            call.cancel()
        for call in calls:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await call
        for channel in channels:
            await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_client", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--symbols", required=True, help="comma-separated")
    parser.add_argument("--max-batch", type=int, default=0, help="StreamTicksRequest.max_batch_size (0: 256)")
    parser.add_argument("--max-samples", type=int, default=50_000)
    parser.add_argument("--websocket", default="", help="the gateway's /v1/ws URL: subscribe there instead")
    args = parser.parse_args()
    asyncio.run(
        run(
            args.port, args.streams, args.symbols.split(","), args.max_batch, args.max_samples, websocket=args.websocket
        )
    )


if __name__ == "__main__":
    main()
