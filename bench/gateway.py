"""The HTTP gateway's cost: `GET /v1/quotes/SIM-AAPL` through the gateway next to the same `GetQuote` called
directly over gRPC, and live ticks over the gateway's WebSocket next to `StreamTicks` directly.

Unary (REST vs gRPC):
- `bullant serve market` and `bullant gateway` run as two subprocesses, as deployed (SQLite in a temporary data
  directory, the simulated feed, authentication on), so neither shares an event loop with the other or the load.
- This process keeps 32 requests in flight for a fixed time, once with aiohttp over keep-alive HTTP/1.1 connections
  to the gateway and once with a grpc.aio stub on one channel to the server, each with a "read" token: requests per
  second and p50/p99 latency. Both clients parse in C (aiohttp's HTTP parser, gRPC's C core), as a browser would;
  httpx, a pure-Python client, spent more CPU in this process than the gateway did in its own (the 2-core machine
  is shared by all three processes) and measured itself rather than the gateway.

Ticks (WebSocket vs StreamTicks):
- The market service runs in this process with the harness feed of bench/stream_ticks.py (ticks of 10 symbols
  pushed by the harness, the whole path: numbering, quotes, bars, pub-sub, tick hub), the gateway as a subprocess in
  front of it, and the subscribers in a third process (bench/stream_client.py): 1 and 10 WebSockets, each
  subscribed to `ticks:<symbol>` for the 10 symbols, next to 1 and 10 StreamTicks calls for the same symbols.
- Latency: publish -> receipt p50/p99 at a steady 2,000 ticks/s in total (a busy screen), measured first; then
  throughput: ticks/s received at saturation (the harness publishes while the slowest stream keeps up).

Ratios are gateway over direct (latency) and direct over gateway (throughput); the target is the gateway within 2x.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc

from bench import stream_ticks
from bullant.market.v1 import market_pb2, market_pb2_grpc

CONCURRENCY = 32
SYMBOL = "SIM-AAPL"
BIN = Path(sys.executable).parent
CLIENTS = (1, 10)
STEADY_RATE = 2_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(data: str, **settings: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment.update(
        BULLANT_DATA_DIR=data,
        BULLANT_METRICS_PORT="-1",
        BULLANT_LOG_LEVEL="WARNING",
        BULLANT_GATEWAY_REQUESTS_PER_MINUTE="0",
        **settings,
    )
    return environment


@contextlib.asynccontextmanager
async def _process(*arguments: str, environment: dict[str, str]) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "bullant"),
        *arguments,
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def _until_ok(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    for _ in range(600):
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url, headers=headers) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within 60 s")


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


async def _unary(seconds: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(gateway, direct) requests/s, p50 and p99 for GetQuote."""
    grpc_port, http_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="bullant-bench-gw-") as data:
        environment = _environment(
            data,
            BULLANT_PORT=str(grpc_port),
            BULLANT_GATEWAY_PORT=str(http_port),
            BULLANT_SIM_HISTORY_DAILY_DAYS="0",
            BULLANT_SIM_HISTORY_MINUTE_DAYS="0",
        )
        async with (
            _process("serve", "market", environment=environment),
            # The gateway in its own process, as deployed in front of separate service Deployments.
            _process("gateway", "--default-upstream", f"127.0.0.1:{grpc_port}", environment=environment),
        ):
            minting = await asyncio.create_subprocess_exec(
                str(BIN / "bullant"), "token", "--scopes", "read", env=environment, stdout=asyncio.subprocess.PIPE
            )
            token = (await minting.communicate())[0].decode().strip()
            headers = {"authorization": f"Bearer {token}"}
            metadata = (("authorization", f"Bearer {token}"),)
            url = f"http://127.0.0.1:{http_port}/v1/quotes/{SYMBOL}"
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http,
                grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            ):
                await _until_ok(http, url, headers)
                stub = market_pb2_grpc.MarketServiceStub(channel)

                async def rest() -> None:
                    async with http.get(url, headers=headers) as response:
                        await response.read()
                        response.raise_for_status()

                async def direct() -> None:
                    await stub.GetQuote(market_pb2.GetQuoteRequest(symbol=SYMBOL), metadata=metadata)

                await _load(rest, 0.5)
                await _load(direct, 0.5)
                return await _load(rest, seconds), await _load(direct, seconds)


# Ticks/s received at saturation, p50 and p99 latency (ms) at the steady rate, ticks/s conflated away.
Tally = tuple[float, float, float, float]


async def _ticks(durations: stream_ticks.Durations) -> dict[tuple[str, int], Tally]:
    """Per (path, clients): ticks/s at saturation and p50/p99 latency at STEADY_RATE ticks/s in total."""
    target = await stream_ticks.BullantTarget.start()
    http_port = _free_port()
    results: dict[tuple[str, int], Tally] = {}
    try:
        # The market's data directory: the gateway acts as the platform's service with the same development key
        # (its shared tick streams, gateway/relay.py).
        environment = _environment(target.data_dir, BULLANT_GATEWAY_PORT=str(http_port))
        async with (
            _process("gateway", "--default-upstream", f"127.0.0.1:{target.port}", environment=environment),
            aiohttp.ClientSession() as http,
        ):
            await _until_ok(http, f"http://127.0.0.1:{http_port}/healthz", {})
            websocket = ["--websocket", f"ws://127.0.0.1:{http_port}/v1/ws"]
            for clients in CLIENTS:
                # Every client's topics share the gateway's one stream per symbol.
                results["WebSocket", clients] = await _tick_figures(
                    target, clients, websocket, len(stream_ticks.SYMBOLS), durations
                )
            for clients in CLIENTS:
                results["StreamTicks", clients] = await _tick_figures(target, clients, [], clients, durations)
    finally:
        await target.stop()
    return results


async def _tick_figures(
    target: stream_ticks.BullantTarget,
    clients: int,
    arguments: list[str],
    upstream_streams: int,
    durations: stream_ticks.Durations,
) -> Tally:
    client = await stream_ticks.Client.start(target, clients, arguments=arguments, expected=upstream_streams)
    try:
        per_batch = max(1, round(STEADY_RATE * stream_ticks.LATENCY_PERIOD / clients))
        steady = await stream_ticks._phase(
            target,
            client,
            lambda stop: stream_ticks._steady(target, stop, per_batch),
            durations.latency,
            durations.warmup,
        )
        flood = await stream_ticks._phase(
            target, client, lambda stop: stream_ticks._flood(target, stop), durations.throughput, durations.warmup
        )
    finally:
        await client.close()
    if steady["dropped"]:
        raise RuntimeError(f"ticks were conflated (dropped) at the steady rate: {steady['dropped']}")
    latencies = steady["latencies_ms"]
    return (
        flood["ticks"] / flood["elapsed_s"],
        stream_ticks._p(latencies, 50),
        stream_ticks._p(latencies, 99),
        flood["dropped"] / flood["elapsed_s"],
    )


async def run(*, quick: bool = False) -> None:
    seconds = 2.0 if quick else 8.0
    durations = stream_ticks.Durations(0.3, 1.0, 1.0) if quick else stream_ticks.Durations(0.5, 4.0, 3.0)
    gateway, plain = await _unary(seconds)
    ticks = await _ticks(durations)
    print(f"== gateway: GET /v1/quotes/{SYMBOL} vs GetQuote over gRPC, {CONCURRENCY} in flight, {seconds:g} s each ==")
    print(f"{'path':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'gateway':>10} {gateway[0]:>9.0f} {gateway[1]:>8.2f} {gateway[2]:>8.2f}")
    print(f"{'gRPC':>10} {plain[0]:>9.0f} {plain[1]:>8.2f} {plain[2]:>8.2f}")
    print(
        f"ratio: throughput gRPC/gateway {plain[0] / gateway[0]:.2f}x, p99 gateway/gRPC {gateway[2] / plain[2]:.2f}x "
        "(target within 2x)"
    )
    print()
    symbols = len(stream_ticks.SYMBOLS)
    print(f"== gateway: ticks over /v1/ws vs StreamTicks, {symbols} symbols per client ==")
    print(
        f"{'clients':>8}{'ws ticks/s':>13}{'gRPC ticks/s':>14}{'ratio':>8}"
        f"{'ws p50/p99 ms':>16}{'gRPC p50/p99 ms':>18}{'ratio p50/p99':>16}{'ws conflated/s':>16}"
    )
    for clients in CLIENTS:
        ws, direct = ticks["WebSocket", clients], ticks["StreamTicks", clients]
        print(
            f"{clients:>8}{ws[0]:>13,.0f}{direct[0]:>14,.0f}{direct[0] / ws[0]:>7.2f}x"
            f"{f'{ws[1]:.2f}/{ws[2]:.2f}':>16}{f'{direct[1]:.2f}/{direct[2]:.2f}':>18}"
            f"{f'{ws[1] / direct[1]:.2f}x/{ws[2] / direct[2]:.2f}x':>16}{ws[3]:>16,.0f}"
        )
    print(
        f"(throughput: ticks/s received at saturation, summed over clients, ratio gRPC/WebSocket; a WebSocket that "
        f"falls behind is conflated (newest ticks kept), StreamTicks here is not; latency: publish -> receipt at "
        f"{STEADY_RATE:,} ticks/s in total, ratio WebSocket/gRPC; target within 2x)"
    )


if __name__ == "__main__":
    asyncio.run(run())
