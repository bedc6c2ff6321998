"""The HTTP gateway's cost: `GET /v1/quotes/SIM-AAPL` through the gateway next to the same `GetQuote` called
directly over gRPC, and live ticks over the gateway's WebSocket next to `StreamTicks` directly.

- `bullant serve market` and `bullant gateway` run as two subprocesses, as deployed (SQLite in a temporary data
  directory, the simulated feed ticking every 10 ms, authentication on), so neither shares an event loop with the
  other or with the load.
- Unary: this process keeps 32 requests in flight for a fixed time, once with httpx over keep-alive HTTP/1.1
  connections to the gateway and once with a grpc.aio stub on one channel to the server, each with a "read" token;
  requests per second and p50/p99 latency. The client libraries differ (httpx is pure Python, grpc.aio is C-core),
  which is part of what a browser-facing REST path costs and is included in the figures.
- Stream: ticks of all simulated symbols received per second for a fixed time, over one WebSocket subscribed to every
  `ticks:<symbol>` topic, and over one StreamTicks call for the same symbols.

Ratios are gateway over direct (latency) and direct over gateway (throughput): the target is the gateway within 2x.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import websockets

from bullant.market.v1 import market_pb2, market_pb2_grpc

CONCURRENCY = 32
SYMBOL = "SIM-AAPL"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _load(call: Callable[[], Awaitable[None]], seconds: float) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 (ms) with CONCURRENCY calls in flight for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return len(latencies) / elapsed, statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


async def _ws_ticks(url: str, token: str, symbols: list[str], seconds: float) -> float:
    async with websockets.connect(url, max_size=None) as socket:
        await socket.send(json.dumps({"type": "auth", "token": token}))
        for symbol in symbols:
            await socket.send(json.dumps({"type": "subscribe", "topic": f"ticks:{symbol}"}))
        count = 0
        deadline = time.perf_counter() + seconds
        began = time.perf_counter()
        while time.perf_counter() < deadline:
            message = json.loads(await socket.recv())
            if message.get("type") == "event" and "ticks" in message["data"]:
                count += len(message["data"]["ticks"]["ticks"])
        return count / (time.perf_counter() - began)


async def _grpc_ticks(
    stub: market_pb2_grpc.MarketServiceStub, metadata: tuple[tuple[str, str], ...], symbols: list[str], seconds: float
) -> float:
    call: Any = stub.StreamTicks(market_pb2.StreamTicksRequest(symbols=symbols), metadata=metadata)
    count = 0
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    try:
        while time.perf_counter() < deadline:
            message = await call.read()
            if message is grpc.aio.EOF:
                break
            if message.WhichOneof("event") == "ticks":
                count += len(message.ticks.ticks)
    finally:
        call.cancel()
    return count / (time.perf_counter() - began)


async def run(*, quick: bool = False) -> None:
    seconds = 2.0 if quick else 8.0
    grpc_port, http_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="bullant-bench-gw-") as data:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
        environment.update(
            BULLANT_DATA_DIR=data,
            BULLANT_PORT=str(grpc_port),
            BULLANT_GATEWAY_PORT=str(http_port),
            BULLANT_METRICS_PORT="-1",
            BULLANT_LOG_LEVEL="WARNING",
            BULLANT_SIM_TICK_INTERVAL_SECONDS="0.01",
            BULLANT_SIM_HISTORY_DAILY_DAYS="0",
            BULLANT_SIM_HISTORY_MINUTE_DAYS="0",
            BULLANT_GATEWAY_REQUESTS_PER_MINUTE="0",
            BULLANT_MAX_STREAMS_PER_ACCOUNT="1000",
        )
        # The gateway in its own process, as deployed in front of separate service Deployments.
        server = await asyncio.create_subprocess_exec(
            str(BIN / "bullant"),
            "serve",
            "market",
            env=environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        front = await asyncio.create_subprocess_exec(
            str(BIN / "bullant"),
            "gateway",
            "--default-upstream",
            f"127.0.0.1:{grpc_port}",
            env=environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            minting = await asyncio.create_subprocess_exec(
                str(BIN / "bullant"), "token", "--scopes", "read", env=environment, stdout=asyncio.subprocess.PIPE
            )
            token = (await minting.communicate())[0].decode().strip()
            headers = {"authorization": f"Bearer {token}"}
            metadata = (("authorization", f"Bearer {token}"),)
            base = f"http://127.0.0.1:{http_port}"
            async with (
                httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=CONCURRENCY)) as http,
                grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            ):
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"/v1/quotes/{SYMBOL}", headers=headers)).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                stub = market_pb2_grpc.MarketServiceStub(channel)
                symbols = [
                    item.symbol
                    for item in (
                        await stub.ListInstruments(market_pb2.ListInstrumentsRequest(), metadata=metadata)
                    ).instruments
                ]

                async def rest() -> None:
                    response = await http.get(f"/v1/quotes/{SYMBOL}", headers=headers)
                    response.raise_for_status()

                async def direct() -> None:
                    await stub.GetQuote(market_pb2.GetQuoteRequest(symbol=SYMBOL), metadata=metadata)

                await _load(rest, 0.5)
                await _load(direct, 0.5)
                gateway = await _load(rest, seconds)
                plain = await _load(direct, seconds)
                ws = await _ws_ticks(f"ws://127.0.0.1:{http_port}/v1/ws", token, symbols, seconds)
                stream = await _grpc_ticks(stub, metadata, symbols, seconds)
        finally:
            for process in (front, server):
                process.terminate()
                await process.wait()
    print(f"Gateway: GET /v1/quotes/{SYMBOL} vs GetQuote over gRPC, {CONCURRENCY} in flight, {seconds:g} s each")
    print(f"{'path':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'gateway':>10} {gateway[0]:>9.0f} {gateway[1]:>8.2f} {gateway[2]:>8.2f}")
    print(f"{'gRPC':>10} {plain[0]:>9.0f} {plain[1]:>8.2f} {plain[2]:>8.2f}")
    print(
        f"ratio: throughput gRPC/gateway {plain[0] / gateway[0]:.2f}x, p99 gateway/gRPC {gateway[2] / plain[2]:.2f}x "
        "(target within 2x)"
    )
    print(f"ticks/s over the WebSocket {ws:.0f}, over StreamTicks {stream:.0f} ({len(symbols)} symbols; "
          f"gRPC/WebSocket {stream / ws if ws else float('inf'):.2f}x)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(run())
