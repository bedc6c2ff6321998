"""Randomised exponential backoff, the one formula every retry and reconnect loop uses."""

from __future__ import annotations

import random

# 2**60 already dwarfs any cap; bounding the exponent keeps huge attempt counts from overflowing to inf.
_MAX_EXPONENT = 60


def backoff_delay(retry: int, initial_seconds: float, max_seconds: float, *, jitter_floor: float = 0.0) -> float:
    """Seconds to wait before retry number `retry` (0 for the first): drawn uniformly from
    [jitter_floor x ceiling, ceiling] with ceiling = min(max_seconds, initial_seconds x 2**retry).

    jitter_floor 0 is "full jitter" (best at spreading a crowd of retrying clients); 0.5 keeps a minimum wait, for
    reconnect loops that must not hammer a server that is still down.
    """
    ceiling = min(max_seconds, initial_seconds * 2.0 ** min(max(retry, 0), _MAX_EXPONENT))
    return jittered(ceiling, jitter_floor)


def jittered(seconds: float, floor: float = 0.5) -> float:
    """`seconds` scaled by a random factor in [floor, 1], so replicas on the same schedule drift apart."""
    return seconds * (floor + (1.0 - floor) * random.random())  # noqa: S311 - jitter, not cryptography
