"""Staying subscribed to one pub-sub channel for a replica's lifetime: what every fan-out hub (ticks, live signals)
runs in its background task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.core.backoff import backoff_delay
from services.core.coordination.base import PubSub

log = logging.getLogger("bullant.coordination")


async def follow_channel(
    pubsub: PubSub,
    channel: str,
    on_message: Callable[[bytes], None],
    live: asyncio.Event,
    *,
    max_pending: int,
    what: str,
) -> None:
    """Hand every message of `channel` to `on_message` until cancelled; `live` is set once subscribed, and a broken
    subscription is opened again with backoff (`what` names it in the log)."""
    attempt = 0
    while True:
        try:
            async with pubsub.subscribe([channel], max_pending=max_pending) as subscription:
                live.set()
                attempt = 0
                async for message in subscription:
                    on_message(message.data)
        except asyncio.CancelledError:
            raise
        except Exception:
            attempt += 1
            log.exception("%s subscription failed; resubscribing (attempt %d)", what, attempt)
            await asyncio.sleep(backoff_delay(attempt - 1, 0.1, 5.0, jitter_floor=0.5))


async def until_live(task: asyncio.Task[None], live: asyncio.Event) -> None:
    """Wait until a follower is subscribed (or has ended), so start() returns with the hub live."""
    waiter = asyncio.create_task(live.wait())
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
