"""Over real Redis: a revocation announced by another process (the account service's replica) ends a stream open on
this market server at once – the announcement crosses processes, no periodic check is waited for."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from bullant.market.v1 import market_pb2
from services.core.auth.revocation import RevocationList
from services.core.coordination import build_coordination, keyspace_for
from services.core.grpc_errors import error_reason
from tests.market_platform import ScriptedFeed, market_settings, read, running_market, tick

pytestmark = pytest.mark.integration


async def test_an_announced_revocation_ends_a_stream_on_another_process(redis_url: str) -> None:
    settings = market_settings(redis_url=redis_url, app_name=f"t{uuid.uuid4().hex[:12]}")
    feed = ScriptedFeed()
    async with running_market(settings, feed=feed) as market:
        await market.feed_running()
        # Another process's view of the account service's namespace, on its own connections.
        account = build_coordination(redis_url, keyspace_for(settings, "account"))
        await account.start()
        try:
            metadata = market.token("read", account_id=7)  # session "s7"
            stream = market.stub.StreamTicks(
                market_pb2.StreamTicksRequest(symbols=["TEST-AAPL"], skip_snapshot=True), metadata=metadata
            )
            await market.subscribed()
            await feed.push(tick("TEST-AAPL", 100.0))
            assert (await read(stream)).WhichOneof("event") == "ticks"
            revocations = RevocationList(account.cache, account.pubsub)
            await revocations.revoke_session("s7", 900)
            await revocations.announce(7)
            # The periodic check is 30 s away: well within this bound only the announcement can end the stream.
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async with asyncio.timeout(15):
                    while True:
                        await read(stream)
            assert (ended.value.code(), error_reason(ended.value)) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "TOKEN_REVOKED",
            )
        finally:
            await account.stop()
