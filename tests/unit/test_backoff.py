"""The shared backoff formula: exponential, capped, jittered within its bounds."""

from __future__ import annotations

import pytest

from services.core.backoff import backoff_delay, jittered


@pytest.mark.parametrize("floor", [0.0, 0.5])
def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(floor: float) -> None:
    for retry, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (10, 2.0), (5000, 2.0)]:
        delays = [backoff_delay(retry, 0.1, 2.0, jitter_floor=floor) for _ in range(200)]
        assert all(floor * ceiling <= d <= ceiling for d in delays)
    assert len({backoff_delay(3, 0.1, 2.0, jitter_floor=floor) for _ in range(20)}) > 1


def test_jittered_stays_between_floor_and_full() -> None:
    values = [jittered(4.0, 0.5) for _ in range(200)]
    assert all(2.0 <= v <= 4.0 for v in values)
    assert len(set(values)) > 1
