"""The whole platform on real Redis across restarts: every start and stop is quiet (no ERROR, no traceback), and
during a Redis outage clients are told the reason, never Redis's address or words."""

from __future__ import annotations

import gc
import logging
import uuid
from typing import TypeVar

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from redis.asyncio import from_url

from bullant.market.v1 import market_pb2
from services.bootstrap import build_server
from services.core.server import GrpcServer
from services.core.settings import Settings
from services.market.feeds.runner import FeedRunner
from services.signal.live.engine import LiveEngine
from tests.conftest import RecordingHandler
from tests.market_platform import ScriptedFeed, market_settings, running_market
from tests.proxy import TcpProxy
from tests.support import eventually, make_settings

pytestmark = pytest.mark.integration


T = TypeVar("T")


def _component(server: GrpcServer, kind: type[T]) -> T:
    return next(c for r in server.registrations for c in r.components if isinstance(c, kind))


async def _run_once(settings: Settings) -> None:
    server = build_server(settings)
    await server.start()
    try:
        feed = _component(server, FeedRunner)
        engine = _component(server, LiveEngine)
        # Running for real: the feed leads and publishes, the engine streams its ticks from the market service.
        await eventually(lambda: feed.is_leader and feed.published_ticks > 0, timeout=60)
        await eventually(lambda: bool(engine.streaming), timeout=60)
    finally:
        await server.stop(grace=1.0)


async def test_serve_all_on_redis_starts_and_stops_quietly_again_and_again(
    redis_url: str, captured_logs: RecordingHandler
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        app_name=f"t{uuid.uuid4().hex[:12]}",
        signal_symbols=["SIM-AAPL", "SIM-BTC-USDT"],
        sim_history_daily_days=30,
        sim_history_minute_days=1,
        sim_tick_interval_seconds=0.05,
    )
    for _cycle in range(3):
        await _run_once(settings)
        gc.collect()  # an abandoned task that failed is reported when collected
    # A clean stop is not even a warning: what ends on the way down (the engine's tick stream) is expected to.
    loud = [r for r in captured_logs.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], "\n".join(captured_logs.lines[captured_logs.records.index(r)] for r in loud)


async def test_a_redis_outage_answers_its_reason_without_the_servers_words(redis_url: str) -> None:
    client = from_url(redis_url)
    host = client.connection_pool.connection_kwargs.get("host", "127.0.0.1")
    port = client.connection_pool.connection_kwargs.get("port", 6379)
    await client.aclose()
    proxy = TcpProxy(host, port)
    await proxy.start()
    settings = market_settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0", app_name=f"t{uuid.uuid4().hex[:12]}")
    try:
        async with running_market(settings, feed=ScriptedFeed()) as platform:
            await platform.feed_running()
            await platform.stub.ListFeeds(market_pb2.ListFeedsRequest(), metadata=platform.reader)
            await proxy.cut()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await platform.stub.ListFeeds(market_pb2.ListFeedsRequest(), metadata=platform.reader)
    finally:
        await proxy.stop()
    error = caught.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    sent = f"{error.details()} {error.trailing_metadata()!r}"
    assert str(proxy.port) not in sent
    assert "Error " not in sent
    assert "redis" not in sent.lower()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reasons = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
    assert reasons == ["CACHE_UNAVAILABLE"]
