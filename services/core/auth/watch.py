"""Credential watches: an open stream ends within moments of its credential expiring or being revoked.

A call is authenticated once, when it starts; a server stream may then run for hours. Every streaming call is
therefore watched (services.core.interceptors.authentication.AuthenticationInterceptor does it for every
server-streaming method, so no handler can forget): the watch ends the stream with the refusal a new call would
get –

- at the credential's expiry, on the server's clock (the token's `exp` claim, the API key's expiry): UNAUTHENTICATED
  TOKEN_EXPIRED (API_KEY_INVALID for a key), strictly, without the leeway a new call is allowed for clock skew;
- as soon as a credential of the account was revoked or the account disabled: the account service announces each
  change on the coordination pub-sub (services.core.auth.revocation), and every replica's watcher makes the
  account's watches check again at once – TOKEN_REVOKED, API_KEY_INVALID, ACCOUNT_DISABLED, whatever the check says;
- and, as a safety net for an announcement lost on the way (pub-sub delivers at most once), every
  `recheck_seconds` (spread out so a thousand streams opened together do not check together).

The check is the same authentication a new call goes through, so a stream never outlives what a unary call would
be refused. A check that cannot be made (the cache unreachable) leaves the stream open and is tried again: an outage
of the revocation list must not cut every stream of the platform.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from services.core.auth.identity import Credential, Identity
from services.core.auth.revocation import RevocationList, announced_account
from services.core.backoff import backoff_delay, jittered
from services.core.clock import EpochClock
from services.core.coordination import Subscription
from services.core.errors import DomainError, PermissionDenied, Unauthenticated

log = logging.getLogger("bullant.auth")

# Re-runs the call's authentication: returns when the credential is still good, raises Unauthenticated or
# PermissionDenied when it is not (anything else: the check could not be made).
Check = Callable[[], Awaitable[object]]
DEFAULT_RECHECK_SECONDS = 30.0
_FAILURE_LOG_SECONDS = 60.0


def expired_error(identity: Identity) -> Unauthenticated:
    """What a stream whose credential reached its expiry is told."""
    if identity.credential is Credential.API_KEY:
        return Unauthenticated("this API key expired: create a new one", reason="API_KEY_INVALID")
    return Unauthenticated("access token expired: refresh it", reason="TOKEN_EXPIRED")


class CredentialWatch:
    """The watch of one call's credential. `async with` it around the call's life; run each step that may wait
    (reading the handler's next message) inside `interruptible()`: when the credential ends, that step is cancelled
    and the refusal raised in its place. Between steps, `raise_if_ended()`."""

    def __init__(self, watcher: CredentialWatcher, identity: Identity, check: Check) -> None:
        self._watcher = watcher
        self.identity = identity
        self._check = check
        self._poked = asyncio.Event()
        self.error: DomainError | None = None
        self._task: asyncio.Task[None] | None = None
        # The call's task while it is inside interruptible(), and whether this watch cancelled it.
        self._inside: asyncio.Task[object] | None = None
        self._cancelled = False
        # One reusable context manager: a stream enters it once per message.
        self._step = _Interruptible(self)

    @property
    def ended(self) -> bool:
        return self.error is not None

    async def __aenter__(self) -> CredentialWatch:
        self._watcher._register(self)
        self._task = asyncio.create_task(self._run(), name=f"credential-watch-{self.identity.account_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._watcher._unregister(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def poke(self) -> None:
        """Check again now (a credential of the account changed)."""
        self._poked.set()

    def raise_if_ended(self) -> None:
        if self.error is not None:
            raise self.error

    def interruptible(self) -> _Interruptible:
        """Run a step that the end of the credential may cut short (`with watch.interruptible(): ...`). Modelled on
        asyncio.timeout(): the watch cancels the waiting task and the block turns that cancellation – and only that
        one – into the refusal."""
        return self._step

    def _end(self, error: DomainError) -> None:
        if self.error is not None:
            return
        self.error = error
        inside = self._inside
        if inside is not None and not inside.done():
            self._cancelled = True
            inside.cancel(msg="credential ended")

    async def _run(self) -> None:
        clock = self._watcher.clock
        expires_at = self.identity.expires_at
        while True:
            now = clock()
            if expires_at is not None and now >= expires_at:
                self._end(expired_error(self.identity))
                return
            # Spread out, so the streams opened together (a reconnecting client, a restart) check at different times.
            wait = jittered(self._watcher.recheck_seconds, 0.75)
            if expires_at is not None:
                wait = min(wait, expires_at - now)
            try:
                async with asyncio.timeout(wait):
                    await self._poked.wait()
            except TimeoutError:
                pass
            self._poked.clear()
            if expires_at is not None and clock() >= expires_at:
                continue
            try:
                await self._check()
            except (Unauthenticated, PermissionDenied) as refusal:
                self._end(refusal)
                return
            except asyncio.CancelledError:
                raise
            except Exception as problem:
                self._watcher.check_failed(self.identity, problem)


class _Interruptible:
    """CredentialWatch.interruptible() (a class rather than a generator-based context manager: entered once per
    message of every stream)."""

    __slots__ = ("_cancelling", "_task", "_watch")

    def __init__(self, watch: CredentialWatch) -> None:
        self._watch = watch
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def __enter__(self) -> None:
        watch = self._watch
        if watch.error is not None:
            raise watch.error
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        watch._inside = task

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        watch = self._watch
        watch._inside = None
        if not (watch._cancelled and watch.error is not None):
            return
        watch._cancelled = False
        task = self._task
        assert task is not None
        # Someone else (the client, a shutdown) may have cancelled too: then theirs wins. Otherwise the watch takes
        # its cancellation back – also when the step finished, or swallowed it, before it landed – and ends here.
        if task.uncancel() > self._cancelling and exc_type is asyncio.CancelledError:
            return
        raise watch.error from None


class CredentialWatcher:
    """The watches of one process's open streams, by account, and the listener for credential announcements.

    Started with the server (its start() subscribes); without a pub-sub, watches still end at expiry and at their
    periodic checks."""

    def __init__(
        self,
        revocations: RevocationList,
        *,
        clock: EpochClock = time.time,
        recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
    ) -> None:
        if recheck_seconds <= 0:
            raise ValueError("recheck_seconds must be positive")
        self._revocations = revocations
        self.clock = clock
        self.recheck_seconds = recheck_seconds
        self._by_account: dict[int, set[CredentialWatch]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._failed_checks = 0
        self._last_failure_log = -math.inf

    @property
    def watch_count(self) -> int:
        """Open watches (tests and diagnostics)."""
        return sum(len(watches) for watches in self._by_account.values())

    def watch(self, identity: Identity, check: Check) -> CredentialWatch:
        """A watch of `identity`'s credential, `check` re-running its authentication; enter it to start it."""
        return CredentialWatch(self, identity, check)

    async def start(self) -> None:
        """Subscribe to the announcements (live when this returns)."""
        subscription = self._revocations.subscribe()
        if subscription is None:
            return
        await subscription.__aenter__()
        self._listener = asyncio.create_task(self._listen(subscription), name="credential-announcements")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def _listen(self, first: Subscription) -> None:
        subscription: Subscription | None = first
        attempt = 0
        while True:
            try:
                if subscription is None:
                    subscription = self._revocations.subscribe()
                    assert subscription is not None
                    await subscription.__aenter__()
                async for message in subscription:
                    attempt = 0
                    self._deliver(message.data, missed=message.missed_before)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("credential announcements failed; streams rely on their periodic checks meanwhile")
            finally:
                if subscription is not None:
                    await subscription.close()
                subscription = None
            # Announcements may have been lost while the subscription was down.
            self._poke_all()
            await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0, jitter_floor=0.5))
            attempt += 1

    def _deliver(self, data: bytes, *, missed: int) -> None:
        if missed:
            # Announcements were lost: any account's credentials may have changed.
            self._poke_all()
        account_id = announced_account(data)
        if account_id is not None:
            for watch in list(self._by_account.get(account_id, ())):
                watch.poke()

    def _poke_all(self) -> None:
        for watches in list(self._by_account.values()):
            for watch in list(watches):
                watch.poke()

    def check_failed(self, identity: Identity, problem: Exception) -> None:
        """A check could not be made (the cache unreachable?): said once a minute, not once per stream."""
        self._failed_checks += 1
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_SECONDS:
            log.warning(
                "could not check the credentials of %d open stream(s) (latest: account %d, %s); they stay open and "
                "are checked again later",
                self._failed_checks,
                identity.account_id,
                problem,
            )
            self._failed_checks = 0
            self._last_failure_log = now

    def _register(self, watch: CredentialWatch) -> None:
        self._by_account.setdefault(watch.identity.account_id, set()).add(watch)

    def _unregister(self, watch: CredentialWatch) -> None:
        watches = self._by_account.get(watch.identity.account_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._by_account[watch.identity.account_id]
