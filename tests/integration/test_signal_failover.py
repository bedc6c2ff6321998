"""Two signal servers (real `bullant serve signal` processes) on one Redis and one MariaDB, fed by a market server:
only the leader evaluates; when it is killed (SIGKILL: no goodbye, its lease must expire) the other takes over
within the lease and evaluates the bars closed meanwhile, and across the hand-over no signal is lost or doubled –
neither in the store nor on a StreamSignals subscriber of the surviving server. The model service is down all
along: the signals flow technical-only."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.auth.keys import DEV_KEY_NAME
from services.core.clock import utc_now
from services.core.timeframes import Timeframe
from services.signal.live.signal_store import signal_series
from tests.db_support import DatabaseSet, new_prefix
from tests.e2e.platform import Platform
from tests.live_platform import (
    MINUTE,
    SYMBOL,
    LivePlatform,
    bearer,
    live_settings,
    live_start,
    minute_ticks,
    next_event,
    push,
    running_live_platform,
    store_history,
)
from tests.market_platform import ScriptedFeed
from tests.signal_platform import free_port, stamp
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
LEASE_SECONDS = 3.0
TF = common_pb2.TIMEFRAME_1M


@pytest.fixture
async def shared(mysql_url: str, redis_url: str) -> AsyncIterator[dict[str, Any]]:
    databases = DatabaseSet("mysql", mysql_url, new_prefix())
    await databases.create(2)
    try:
        yield {
            "database_url": databases.url("global"),
            "shard_urls": [databases.url("shard_0"), databases.url("shard_1")],
            "db_auto_migrate": True,
            "redis_url": redis_url,
            "app_name": f"t{uuid.uuid4().hex[:12]}",
            "data_dir": Path(tempfile.mkdtemp(prefix="bullant-live-")),
        }
    finally:
        await databases.drop()


def _signal_server(shared: dict[str, Any], market_address: str) -> Platform:
    environment = {
        "BULLANT_DATABASE_URL": shared["database_url"],
        "BULLANT_SHARD_URLS": ",".join(shared["shard_urls"]),
        "BULLANT_DB_AUTO_MIGRATE": "true",
        "BULLANT_REDIS_URL": shared["redis_url"],
        "BULLANT_APP_NAME": shared["app_name"],
        "BULLANT_JWT_PRIVATE_KEY_FILE": str(shared["data_dir"] / "keys" / DEV_KEY_NAME),
        "BULLANT_DEFAULT_UPSTREAM": market_address,
        "BULLANT_PORT": "0",
        "BULLANT_METRICS_PORT": "-1",
        "BULLANT_SIGNAL_SYMBOLS": SYMBOL,
        "BULLANT_SIGNAL_STRATEGIES": "ema_cross",
        "BULLANT_SIGNAL_REPEAT_BARS": "0",
        # The model service is down: signals still flow, technical-only, within the fusion deadline.
        "BULLANT_UPSTREAMS": f"model=127.0.0.1:{free_port()}",
        "BULLANT_SIGNAL_FUSION_DEADLINE_SECONDS": "0.3",
        "BULLANT_SIGNAL_ENGINE_LEASE_SECONDS": str(LEASE_SECONDS),
        "BULLANT_SIGNAL_WATCH_REFRESH_SECONDS": "0.5",
        "BULLANT_SIGNAL_PERFORMANCE_INTERVAL_SECONDS": "1",
        "BULLANT_SIGNAL_HEARTBEAT_SECONDS": "0.5",
        "BULLANT_MODEL_DEMO_SYMBOLS": "",
    }
    return Platform("serve", "signal", env=environment)


async def _leader_pid(client: aioredis.Redis, app_name: str) -> int | None:
    """The process holding the engine's lease (its value is token:ttl:host:pid:nonce)."""
    async for key in client.scan_iter(match=f"*{app_name}*signal-engine*"):
        value = await client.get(key)
        if value:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return int(text.split(":")[3])
    return None


async def _checkpoint(market: LivePlatform) -> datetime | None:
    async def work(connection: AsyncConnection) -> datetime | None:
        found: datetime | None = await connection.scalar(
            select(signal_series.c.last_bar_time).where(signal_series.c.symbol == SYMBOL)
        )
        return found

    return await market.deps.databases.run_global(work)


async def test_killing_the_leader_hands_over_without_losing_or_doubling_a_signal(shared: dict[str, Any]) -> None:
    feed = ScriptedFeed()
    settings = live_settings(**shared)
    async with running_live_platform(settings, feed=feed, services=("market",)) as market:
        await market.instrument_stored()
        await store_history(market.market, market.admin, Timeframe.M1.floor(utc_now()))
        servers = [_signal_server(shared, market.server.address) for _ in range(2)]
        client = aioredis.Redis.from_url(shared["redis_url"])
        try:
            for server in servers:
                server.wait_ready(60)
            by_pid = {server.process.pid: server for server in servers}

            async def leader_known() -> bool:
                return await _leader_pid(client, shared["app_name"]) in by_pid

            await eventually(leader_known, timeout=30)
            leader = by_pid[await _leader_pid(client, shared["app_name"])]  # type: ignore[index]
            follower = next(server for server in servers if server is not leader)
            hub = market.server.registrations[0].components[0]
            await eventually(lambda: hub.subscriber_count >= 1, timeout=30)  # type: ignore[attr-defined]

            async def series_started() -> bool:
                return await _checkpoint(market) is not None

            await eventually(series_started, timeout=30)

            trader = bearer(market.deps, 3, ("read", "trade"))
            async with grpc.aio.insecure_channel(follower.address) as channel:
                stub = signal_pb2_grpc.SignalServiceStub(channel)
                stream = stub.StreamSignals(signal_pb2.StreamSignalsRequest(symbols=[SYMBOL]), metadata=trader)
                assert (await next_event(stream, {"heartbeat"})).WhichOneof("event") == "heartbeat"

                # The leader evaluates the rising minutes: a BUY reaches the follower's subscriber.
                start = live_start()
                rising = [100.0 + 0.8 * n for n in range(1, 9)]
                await push(feed, minute_ticks(start, rising))
                buy = (await next_event(stream, {"signal"})).signal
                assert buy.side == common_pb2.SIDE_BUY
                assert buy.technical_only_reason == signal_pb2.TECHNICAL_ONLY_REASON_MODEL_UNAVAILABLE

                # Kill it and keep the market going: the falling minutes close while nobody leads.
                os.kill(leader.process.pid, signal.SIGKILL)
                falling = [rising[-1] - 0.6 * n for n in range(1, 25)]
                await push(feed, minute_ticks(start + len(rising) * MINUTE, falling))

                async def follower_leads() -> bool:
                    return await _leader_pid(client, shared["app_name"]) == follower.process.pid

                # Within the lease (plus a campaign retry) on a quiet machine; the bound here only guards against
                # a follower that never takes over (lease expiry itself is tested on an injected clock).
                await eventually(follower_leads, timeout=6 * LEASE_SECONDS)

                sell = (await next_event(stream, {"signal"})).signal
                assert sell.side == common_pb2.SIDE_SELL
                last_closed = start + (len(rising) + len(falling) - 2) * MINUTE

                async def caught_up() -> bool:
                    return (await _checkpoint(market)) == last_closed

                await eventually(caught_up, timeout=30)
                # Nothing more, and nothing twice, reaches the subscriber.
                extra = []
                try:
                    async with asyncio.timeout(2.0):
                        while True:
                            extra.append((await next_event(stream, {"signal", "alert_triggered"})).signal.signal_id)
                except TimeoutError:
                    pass
                assert extra == []
                stream.cancel()

                # Stored: exactly what EvaluateStrategy decides bar by bar on the market's stored bars.
                expected: dict[datetime, int] = {}
                moment = start
                while moment <= last_closed:
                    reply = await stub.EvaluateStrategy(
                        signal_pb2.EvaluateStrategyRequest(
                            strategy_id="ema_cross",
                            symbol=SYMBOL,
                            timeframe=TF,
                            range=common_pb2.TimeRange(start_time=stamp(moment), end_time=stamp(moment + MINUTE)),
                            extend_for_warmup=True,
                        ),
                        metadata=trader,
                    )
                    for event in reply.events:
                        expected[moment] = event.side
                    moment += MINUTE
                listed = await stub.ListSignals(signal_pb2.ListSignalsRequest(page_size=100), metadata=trader)
                stored = {s.bar_time.ToDatetime(): s.side for s in listed.signals}
                assert stored == expected
                assert [s.signal_id for s in listed.signals] == [sell.signal_id, buy.signal_id]
        finally:
            await client.aclose()
            for server in servers:
                server.stop()
