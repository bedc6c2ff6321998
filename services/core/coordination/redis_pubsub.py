"""Pub-sub on Redis: PUBLISH with an envelope, and subscriptions that reconnect and resubscribe on their own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import redis.exceptions
from redis.asyncio.client import PubSub as RedisPubSubConnection

from services.core.backoff import backoff_delay
from services.core.coordination.base import DEFAULT_MAX_PENDING, PubSub
from services.core.coordination.envelope import Sequencer
from services.core.coordination.keys import KeySpace
from services.core.coordination.redis_connection import OUTAGES, RedisConnection, outage, unavailable_on_outage
from services.core.coordination.subscription import Subscription
from services.core.coordination.tasks import cancel_and_wait

log = logging.getLogger("bullant.coordination")


class RedisSubscription(Subscription):
    """A subscription with its own connection and a reconnect loop (backoff with jitter, then resubscribe)."""

    def __init__(
        self,
        connection: RedisConnection,
        keyspace: KeySpace,
        channels: Sequence[str],
        patterns: Sequence[str],
        max_pending: int,
    ) -> None:
        super().__init__(keyspace, channels, patterns, max_pending)
        self._connection = connection
        self._full_channels = [keyspace.channel(c) for c in self.channels]
        self._full_patterns = [keyspace.pattern(p) for p in self.patterns]
        self._live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: BaseException | None = None

    @property
    def live(self) -> bool:
        """True while subscribed on a working connection."""
        return self._live.is_set()

    async def _open(self) -> None:
        self._connection.subscriptions.add(self)
        names = ",".join([*self._full_channels, *self._full_patterns])
        self._task = asyncio.create_task(self._run(), name=f"redis-subscription:{names}")
        self._task.add_done_callback(self._on_task_done)
        options = self._connection.options
        live = asyncio.create_task(self._live.wait())
        try:
            await asyncio.wait(
                {live, self._task},
                timeout=options.connect_timeout_seconds + options.command_timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            live.cancel()
        if not self._live.is_set():
            reason = self._failure or self.last_error or "no answer"
            await self.close()
            raise outage(f"cannot subscribe on redis: {reason}")

    async def _close(self) -> None:
        self._connection.subscriptions.discard(self)
        if self._task is not None:
            # A task that died of an error has reported it already (_on_task_done).
            await cancel_and_wait(self._task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("redis subscription stopped by an unexpected error", exc_info=error)
            self._fail(error)

    async def _run(self) -> None:
        options = self._connection.options
        attempt = 0
        subscribed_before = False
        while not self.closed:
            pubsub = self._connection.subscriber.pubsub()
            try:
                await self._subscribe(pubsub)
                if subscribed_before:
                    self.reconnects += 1
                    log.info("redis subscription re-established", extra={"channels": self._full_channels})
                attempt, subscribed_before = 0, True
                self._live.set()
                await self._listen(pubsub)
            except OUTAGES as exc:
                if self._live.is_set() or self.last_error is None:
                    log.warning("redis subscription lost, reconnecting: %s", exc)
                self._live.clear()
                self.last_error = exc
            finally:
                with suppress(*OUTAGES, redis.exceptions.RedisError):
                    await pubsub.aclose()
            await asyncio.sleep(
                backoff_delay(
                    attempt,
                    options.reconnect_initial_backoff_seconds,
                    options.reconnect_max_backoff_seconds,
                    jitter_floor=0.5,
                )
            )
            attempt += 1

    async def _subscribe(self, pubsub: RedisPubSubConnection) -> None:
        options = self._connection.options
        async with asyncio.timeout(options.connect_timeout_seconds + options.command_timeout_seconds):
            if self._full_channels:
                await pubsub.subscribe(*self._full_channels)
            if self._full_patterns:
                await pubsub.psubscribe(*self._full_patterns)
            # Live only once Redis confirmed every subscription: a message published after that reaches us.
            confirmations = 0
            while confirmations < len(self._full_channels) + len(self._full_patterns):
                message = await pubsub.get_message(timeout=options.command_timeout_seconds)
                if message is None:
                    continue
                if message["type"] in ("subscribe", "psubscribe"):
                    confirmations += 1
                else:
                    self._handle(message)

    async def _listen(self, pubsub: RedisPubSubConnection) -> None:
        options = self._connection.options
        interval = options.health_check_interval_seconds
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        ping_sent_at: float | None = None
        while not self.closed:
            message = await pubsub.get_message(timeout=min(interval, 1.0))
            now = loop.time()
            if message is not None:
                last_heard, ping_sent_at = now, None
                self._handle(message)
            elif ping_sent_at is not None and now - ping_sent_at > options.command_timeout_seconds:
                raise redis.exceptions.TimeoutError("no answer to PING on the subscription connection")
            elif ping_sent_at is None and now - last_heard >= interval:
                await pubsub.ping()
                ping_sent_at = now

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._deliver(message["channel"].decode(), message["data"], None)
        elif kind == "pmessage":
            self._deliver(message["channel"].decode(), message["data"], message["pattern"].decode())


class RedisPubSub(PubSub):
    """Pub-sub on Redis PUBLISH / SUBSCRIBE / PSUBSCRIBE."""

    def __init__(self, connection: RedisConnection, keyspace: KeySpace) -> None:
        self._connection = connection
        self._keyspace = keyspace
        self._sequencer = Sequencer()

    async def publish(self, channel: str, data: bytes) -> None:
        full = self._keyspace.channel(channel)
        raw = self._sequencer.seal(channel, data)
        with unavailable_on_outage("PUBLISH"):
            await self._connection.client.publish(full, raw)

    def subscribe(
        self,
        channels: Sequence[str] = (),
        patterns: Sequence[str] = (),
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> Subscription:
        return RedisSubscription(self._connection, self._keyspace, channels, patterns, max_pending)
