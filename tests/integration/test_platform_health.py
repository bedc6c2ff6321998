"""A whole server on real Redis: its health follows Redis through an outage, and its services share one backend."""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import from_url

from services.bootstrap import build_dependencies, build_server
from tests.proxy import TcpProxy
from tests.support import eventually, make_settings

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_follows_redis_through_an_outage(redis_url: str) -> None:
    client = from_url(redis_url)
    host = client.connection_pool.connection_kwargs.get("host", "127.0.0.1")
    port = client.connection_pool.connection_kwargs.get("port", 6379)
    await client.aclose()
    proxy = TcpProxy(host, port)
    await proxy.start()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0", db_health_interval_seconds=0.2)
    server = build_server(settings, ["signal"])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="bullant.signal.v1.SignalService")

            async def status_is(expected: int) -> bool:
                return bool((await health.Check(request)).status == expected)

            assert await status_is(SERVING)
            await proxy.cut()
            await eventually(lambda: status_is(NOT_SERVING), timeout=15)
            assert "redis" in server.readiness.failing
            await proxy.restore()
            await eventually(lambda: status_is(SERVING), timeout=15)
    finally:
        await server.stop(grace=0.5)
        await proxy.stop()


async def test_services_of_one_process_hear_each_other_in_memory() -> None:
    deps = build_dependencies(make_settings())
    await deps.coordination.start()
    try:
        market = deps.coordination.for_service("market")
        async with market.pubsub.subscribe(["ticks.AAPL"]) as subscription:
            # The signal service listens in the market service's namespace, on the same in-memory backend.
            await deps.coordination.for_service("market").pubsub.publish("ticks.AAPL", b"187.5")
            message = await asyncio.wait_for(subscription.__anext__(), 5)
        assert message.data == b"187.5"
        assert deps.coordination.backend.name == "memory"
    finally:
        await deps.coordination.stop()
