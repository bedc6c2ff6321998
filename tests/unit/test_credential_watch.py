"""Credential watches on their own: expiry on an injected clock, announcements, the periodic check as a safety net,
and the cut – whatever the stream waits for is interrupted with the refusal, and only the watch's own cancellation
becomes one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from services.core.auth.identity import Credential, Identity
from services.core.auth.revocation import RevocationList
from services.core.auth.watch import CredentialWatch, CredentialWatcher
from services.core.coordination import KeySpace, MemoryBackend
from services.core.errors import PermissionDenied, Unauthenticated
from tests.support import eventually

SESSION = Identity(
    account_id=7, shard=1, roles=("user",), scopes=("read",), credential=Credential.SESSION, session_id="s-7"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Check:
    """A credential check whose answer the test decides, counting how often it runs."""

    def __init__(self) -> None:
        self.refusal: Exception | None = None
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1
        if self.refusal is not None:
            raise self.refusal


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    memory = MemoryBackend()
    await memory.start()
    yield memory
    await memory.stop()


def _revocations(backend: MemoryBackend) -> RevocationList:
    space = KeySpace("bullant", "test", "account")
    return RevocationList(backend.cache(space), backend.pubsub(space))


async def _stream_under(watch: CredentialWatch, forever: asyncio.Event) -> None:
    """What the interceptor does for a handler that waits (for the next tick) and never yields."""
    async with watch:
        with watch.interruptible():
            await forever.wait()


async def test_a_waiting_stream_ends_at_the_expiry_on_the_injected_clock(backend: MemoryBackend) -> None:
    clock = Clock()
    watcher = CredentialWatcher(_revocations(backend), clock=clock, recheck_seconds=0.05)
    identity = replace(SESSION, expires_at=clock.now + 900)
    check = Check()
    stream = asyncio.create_task(_stream_under(watcher.watch(identity, check), asyncio.Event()))
    await eventually(lambda: check.runs >= 2)  # checked, still good, still open
    assert not stream.done()
    clock.now += 900  # not a second of wall time: the watch follows the clock it was given
    with pytest.raises(Unauthenticated) as ended:
        await asyncio.wait_for(stream, 10)
    assert ended.value.reason == "TOKEN_EXPIRED"
    assert watcher.watch_count == 0


async def test_an_announcement_makes_the_accounts_streams_check_at_once(backend: MemoryBackend) -> None:
    revocations = _revocations(backend)
    # The periodic check is an hour away: only the announcement can end the stream in time.
    watcher = CredentialWatcher(revocations, recheck_seconds=3600)
    await watcher.start()
    try:
        mine, other = Check(), Check()
        other_identity = replace(SESSION, account_id=8)
        streams = [
            asyncio.create_task(_stream_under(watcher.watch(SESSION, mine), asyncio.Event())),
            asyncio.create_task(_stream_under(watcher.watch(other_identity, other), asyncio.Event())),
        ]
        await eventually(lambda: watcher.watch_count == 2)
        mine.refusal = Unauthenticated("this session was signed out", reason="TOKEN_REVOKED")
        other.refusal = Unauthenticated("would end it", reason="TOKEN_REVOKED")
        await revocations.announce(7)
        with pytest.raises(Unauthenticated) as ended:
            await asyncio.wait_for(streams[0], 10)
        assert ended.value.reason == "TOKEN_REVOKED"
        assert (mine.runs, other.runs) == (1, 0)  # only the announced account's streams checked
        assert not streams[1].done()
        streams[1].cancel()
    finally:
        await watcher.stop()


async def test_the_periodic_check_ends_a_stream_whose_announcement_was_lost(backend: MemoryBackend) -> None:
    watcher = CredentialWatcher(_revocations(backend), recheck_seconds=0.05)  # not started: hears nothing
    check = Check()
    stream = asyncio.create_task(_stream_under(watcher.watch(SESSION, check), asyncio.Event()))
    await eventually(lambda: check.runs >= 1)
    check.refusal = PermissionDenied("this account is disabled", reason="ACCOUNT_DISABLED")
    with pytest.raises(PermissionDenied) as ended:
        await asyncio.wait_for(stream, 10)
    assert ended.value.reason == "ACCOUNT_DISABLED"


async def test_a_check_that_cannot_be_made_leaves_the_stream_open(backend: MemoryBackend) -> None:
    watcher = CredentialWatcher(_revocations(backend), recheck_seconds=0.05)
    check = Check()
    check.refusal = ConnectionError("redis is unreachable")
    stream = asyncio.create_task(_stream_under(watcher.watch(SESSION, check), asyncio.Event()))
    await eventually(lambda: check.runs >= 3)
    assert not stream.done()
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream


async def test_a_cancellation_from_outside_stays_a_cancellation(backend: MemoryBackend) -> None:
    watcher = CredentialWatcher(_revocations(backend), recheck_seconds=3600)
    stream = asyncio.create_task(_stream_under(watcher.watch(SESSION, Check()), asyncio.Event()))
    await eventually(lambda: watcher.watch_count == 1)
    stream.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await stream
    assert watcher.watch_count == 0


async def test_a_step_that_swallows_the_cut_still_ends_with_the_refusal(backend: MemoryBackend) -> None:
    clock = Clock()
    watcher = CredentialWatcher(_revocations(backend), clock=clock, recheck_seconds=0.05)
    identity = replace(SESSION, expires_at=clock.now + 60)
    started = asyncio.Event()

    async def stubborn() -> None:
        async with watcher.watch(identity, Check()) as watch:
            with watch.interruptible():
                started.set()
                # A handler that cleans up and returns instead of re-raising.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()

    stream = asyncio.create_task(stubborn())
    await started.wait()
    clock.now += 61
    with pytest.raises(Unauthenticated):
        await asyncio.wait_for(stream, 10)
    assert stream.cancelling() == 0  # the watch took back its own cancellation
