"""Staying subscribed to one pub-sub channel for a replica's lifetime: what every fan-out hub (ticks, live signals)
runs in its background task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.core.backoff import backoff_delay
from services.core.coordination.base import PubSub
from services.core.errors import Unavailable

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
        except Unavailable as error:
            # An outage (Redis down or restarting): expected, and said in one line; health reports it too.
            attempt += 1
            delay = backoff_delay(attempt - 1, 0.1, 5.0, jitter_floor=0.5)
            log.warning(
                "%s subscription unavailable, resubscribing in %.1fs (attempt %d): %s",
                what,
                delay,
                attempt,
                _cause(error),
            )
            await asyncio.sleep(delay)
        except Exception:
            attempt += 1
            log.exception("%s subscription failed; resubscribing (attempt %d)", what, attempt)
            await asyncio.sleep(backoff_delay(attempt - 1, 0.1, 5.0, jitter_floor=0.5))


def _cause(error: Unavailable) -> str:
    cause = error.__cause__
    return f"{error.message} ({type(cause).__name__}: {cause})" if cause is not None else error.message


async def until_live(task: asyncio.Task[None], live: asyncio.Event) -> None:
    """Wait until a follower is subscribed (or has ended), so start() returns with the hub live."""
    waiter = asyncio.create_task(live.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()  # also when start-up is cancelled meanwhile: no task is left pending
