"""Leader election on a lease: exactly one replica runs a singleton job, and another takes over when it dies."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from services.core.backoff import jittered
from services.core.coordination.base import Lease, Locks
from services.core.coordination.tasks import cancel_and_wait
from services.core.errors import Unavailable

log = logging.getLogger("bullant.coordination")

Job = Callable[[Lease], Coroutine[Any, Any, None]]


class LeaderElection:
    """Campaigns for lock `name` and runs `job(lease)` while holding it; a Component (start/stop).

    - While leader, the lease is renewed every `renew_every_seconds` (default ttl/4).
    - The job is cancelled as soon as a renewal reports the lease lost, or when renewals keep failing (store
      unreachable) until `safety_margin_seconds` (default ttl/10) before the lease expires: before any other
      replica can take the lock. A job must therefore let cancellation through promptly.
    - A singleton job is expected to run until cancelled. If it returns or raises, the lease is released and the
      campaign goes on, so whichever replica wins next starts it again.
    - stop() cancels the job, returns only once it has ended (cancelling it again every `stop_patience_seconds`
      should a cancellation be lost), and releases the lease, so another replica takes over without waiting for
      expiry, and nothing of the job outlives the stores the process stops next.
      A replica that dies without stopping leaves the lease to expire; then another takes over.
    - Resources the job writes to can refuse stale leaders by remembering the largest `lease.token` they saw.
    """

    def __init__(
        self,
        locks: Locks,
        name: str,
        job: Job,
        *,
        ttl_seconds: float = 10.0,
        renew_every_seconds: float | None = None,
        retry_every_seconds: float | None = None,
        safety_margin_seconds: float | None = None,
        owner: str | None = None,
        stop_patience_seconds: float = 5.0,
    ) -> None:
        self.locks = locks
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.renew_every = renew_every_seconds if renew_every_seconds is not None else ttl_seconds / 4
        self.retry_every = retry_every_seconds if retry_every_seconds is not None else ttl_seconds / 4
        self.safety_margin = safety_margin_seconds if safety_margin_seconds is not None else ttl_seconds / 10
        if not 0 < self.renew_every < ttl_seconds - self.safety_margin:
            raise ValueError(
                f"renew_every_seconds ({self.renew_every}) must be below ttl_seconds - safety_margin_seconds "
                f"({ttl_seconds - self.safety_margin}), or the lease lapses between renewals"
            )
        if self.retry_every <= 0:
            raise ValueError("retry_every_seconds must be positive")
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # How long a cancelled job gets before it is cancelled again (one whose cancellation was lost).
        self.stop_patience_seconds = stop_patience_seconds
        self.lease: Lease | None = None
        self.terms = 0
        self._job = job
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unreachable = False

    @property
    def is_leader(self) -> bool:
        """True while this elector holds the lease and its job runs."""
        return self.lease is not None

    async def start(self) -> None:
        """Start campaigning in the background."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name=f"leader-election:{self.name}")

    async def stop(self) -> None:
        """Stop campaigning: cancel the job if leading, and release the lease."""
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            await cancel_and_wait(task)

    async def run(self) -> None:
        """Campaign until cancelled or stopped: try for the lease, lead while holding it, try again after losing it."""
        while not self._stopping:
            try:
                lease = await self._acquire()
                if lease is not None:
                    await self._lead(lease)
            except Exception:
                # An error raised while cleaning up after a cancellation replaces the CancelledError; carrying on
                # would swallow the cancellation and leave stop() waiting forever.
                if _being_cancelled():
                    raise asyncio.CancelledError from None
                log.exception("leader election for %s failed unexpectedly; campaigning again", self.name)
            await asyncio.sleep(jittered(self.retry_every))

    async def _acquire(self) -> Lease | None:
        try:
            lease = await self.locks.acquire(self.name, self.ttl_seconds, self.owner)
        except Unavailable as exc:
            if not self._unreachable:  # once per outage, not once per attempt
                log.warning("cannot campaign for %s: %s", self.name, exc)
            self._unreachable = True
            return None
        self._unreachable = False
        return lease

    async def _lead(self, lease: Lease) -> None:
        self.lease = lease
        self.terms += 1
        log.info("leader for %s (token %d)", self.name, lease.token, extra={"owner": self.owner})
        job = asyncio.create_task(self._job(lease), name=f"leader-job:{self.name}")
        try:
            await self._hold(job)
        finally:
            try:
                await _end(job, patience_seconds=self.stop_patience_seconds)
                self._report_end(job)
            finally:
                held, self.lease = self.lease, None
                if held is not None:
                    await self._release(held)

    async def _hold(self, job: asyncio.Task[None]) -> None:
        """Renew the lease until the job ends or the lease is lost (or about to lapse unrenewed)."""
        clock = self.locks.clock
        failing = False
        while self.lease is not None and not self._stopping:
            lease = self.lease
            deadline = lease.expires_at - self.safety_margin
            pause = min(self.renew_every / 4 if failing else self.renew_every, deadline - clock())
            if pause > 0:
                done, _ = await asyncio.wait({job}, timeout=pause)
                if done:
                    return
            if clock() >= deadline:
                log.error("lease on %s about to lapse without renewal: stopping the job", self.name)
                return
            try:
                async with asyncio.timeout(deadline - clock()):
                    renewed = await self.locks.renew(lease)
            except (Unavailable, TimeoutError) as exc:
                if not failing:
                    log.warning("cannot renew the lease on %s, retrying until it lapses: %s", self.name, exc)
                failing = True
                continue
            if renewed is None:
                log.error("lost the lease on %s: stopping the job", self.name)
                return
            self.lease, failing = renewed, False

    def _report_end(self, job: asyncio.Task[None]) -> None:
        if job.cancelled():
            return
        error = job.exception()
        if error is not None:
            log.error("singleton job %s failed; giving up leadership", self.name, exc_info=error)
        else:
            log.info("singleton job %s returned; giving up leadership", self.name)

    async def _release(self, lease: Lease) -> None:
        # Best effort: an unreleased lease simply expires, and nobody can take it before that anyway.
        try:
            await self.locks.release(lease)
        except Unavailable as exc:
            log.warning("cannot release the lease on %s: %s", self.name, exc)
        except Exception:
            log.exception("cannot release the lease on %s", self.name)


async def _end(job: asyncio.Task[None], *, patience_seconds: float) -> None:
    """Cancel `job` and return only once it has ended, even when this task is itself cancelled meanwhile.

    The job's last steps (sharing its state, releasing what it holds) use the store that stop() of the process
    closes right after this elector's: a job left running would meet it closed. Python 3.11's asyncio.wait_for,
    which redis-py wraps around socket I/O, can drop a cancellation, so it is repeated until the job ends. A
    cancellation of this task meanwhile is passed on once the job has ended.
    """
    interrupted = False
    while not job.done():
        job.cancel()
        try:
            await asyncio.wait({job}, timeout=patience_seconds)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def run_as_leader(
    locks: Locks,
    name: str,
    job: Job,
    *,
    ttl_seconds: float = 10.0,
    renew_every_seconds: float | None = None,
    owner: str | None = None,
) -> None:
    """Campaign for `name` and run `job` whenever leader, until cancelled (see LeaderElection)."""
    election = LeaderElection(
        locks, name, job, ttl_seconds=ttl_seconds, renew_every_seconds=renew_every_seconds, owner=owner
    )
    await election.run()
