"""The runtime-overhead benchmark's workload passes Bullant's own request rules: a stream longer than StreamTicks'
1,000-symbol limit is measured, not refused."""

from __future__ import annotations

from bench import runtime_overhead


async def test_the_benchmark_streams_more_messages_than_a_request_may_name_symbols() -> None:
    metadata = runtime_overhead._token_metadata()
    latencies, rate = await runtime_overhead._measure(runtime_overhead._authenticated, 3, 1_001, metadata)
    assert len(latencies) == 3
    assert rate > 0
