"""Group commit: concurrent requests share batches, each gets its own result, a failing batch fails its requests
only, and a lone request runs at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.core.db.group_commit import GroupCommit


async def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    async def run(requests: Sequence[int]) -> list[int]:
        batches.append(list(requests))
        await asyncio.sleep(0.01)  # a transaction in flight: later requests queue for the next batch
        return [request * 10 for request in requests]

    group: GroupCommit[int, int] = GroupCommit(run)
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0.001)  # its batch is in flight
    rest = await asyncio.gather(*(group.submit(n) for n in range(1, 20)))
    assert [await first, *rest] == [n * 10 for n in range(20)]
    assert batches == [[0], list(range(1, 20))]  # the first ran at once, alone; the others waited and went together
    assert await group.submit(7) == 70


async def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs() -> None:
    calls = 0

    async def run(requests: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if "bad" in requests:
            raise ValueError("refused")
        return [request.upper() for request in requests]

    group: GroupCommit[str, str] = GroupCommit(run)
    first = asyncio.ensure_future(group.submit("bad"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(group.submit("good"))
    with pytest.raises(ValueError, match="refused"):
        await first
    assert await second == "GOOD"
    assert calls == 2


async def test_a_cancelled_request_is_skipped() -> None:
    seen: list[list[int]] = []

    async def run(requests: Sequence[int]) -> list[int]:
        seen.append(list(requests))
        await asyncio.sleep(0.01)
        return list(requests)

    group: GroupCommit[int, int] = GroupCommit(run)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(group.submit(2))
    kept = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await first, await kept) == (1, 3)
    assert seen == [[1], [3]]
    await group.close()
