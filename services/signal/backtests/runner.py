"""Runs backtests in the background of a signal replica and keeps their record in the owner's shard, on the
platform's job runner (services/core/jobs.py: slots, heartbeat, cancellation from any replica, abandoned runs
marked FAILED INTERRUPTED, request-id idempotency).

What is the backtests' own: a run is the engine in a thread (compiled, it releases the GIL) that checks for a stop
at each progress report; an account may have `per_account` backtests queued or running; the report is encoded
off the event loop and stored with the SUCCEEDED state. A watcher gets progress as it changes, then the finished
backtest with its detail."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from services.core.clock import WallClock, utc_now
from services.core.errors import ResourceExhausted
from services.core.jobs import JobControl, JobMessages, JobRunner, JobWork
from services.signal.backtests.simulation import BacktestOutcome, BacktestPlan, SymbolBars, simulate
from services.signal.backtests.store import (
    BacktestFilter,
    BacktestRecord,
    BacktestState,
    BacktestStore,
    Progress,
)
from services.signal.owners import Owner

MESSAGES = JobMessages(
    restarted="the server was restarted while the backtest was queued or running; run it again",
    shut_down="the server shut down while the backtest was running",
    abandoned="the server running the backtest stopped; run it again",
    failed="the backtest failed; the error is logged",
)
# Progress reaches local watchers at most this often (the engine reports far more often).
_PUBLISH_EVERY_SECONDS = 0.05


class ReportCodec(Protocol):
    """Turns an outcome into the stored report: (summary without trades/curve/sweep, whole report)."""

    def encode(self, outcome: BacktestOutcome, max_equity_points: int) -> tuple[bytes, bytes]: ...


class _Cancelled(Exception):
    """Raised from the progress callback to stop a run."""


Update = Progress | BacktestRecord


def new_backtest_id() -> str:
    """An opaque id: "bt_" and 24 random hex digits."""
    return "bt_" + secrets.token_hex(12)


class _Jobs:
    """BacktestStore as the job runner's store port."""

    def __init__(self, store: BacktestStore) -> None:
        self._store = store

    async def insert(self, job: BacktestRecord) -> BacktestRecord | None:
        return await self._store.insert(job)

    async def reload(self, job: BacktestRecord) -> BacktestRecord | None:
        return await self._store.get(job.owner, job.backtest_id, with_detail=False)

    async def save_if_active(self, job: BacktestRecord) -> bool:
        return await self._store.save(job, only_if_active=True)

    async def heartbeat(self, job: BacktestRecord, progress: Progress, now: datetime) -> bool:
        return await self._store.heartbeat(job.owner, job.backtest_id, progress, now)

    async def orphans(self, runner_id: str) -> list[BacktestRecord]:
        return await self._store.active_of_runner(runner_id)


class BacktestRunner:
    """The replica's backtest runs (a Component: stop() ends local runs as FAILED INTERRUPTED)."""

    def __init__(
        self,
        store: BacktestStore,
        codec: ReportCodec,
        *,
        workers: int = 2,
        per_account: int = 3,
        clock: WallClock = utc_now,
        heartbeat_seconds: float = 1.0,
        stale_seconds: float = 30.0,
        runner_id: str = "",
    ) -> None:
        self._store = store
        self._codec = codec
        self._per_account = per_account
        self._clock = clock
        # The replica's identity across restarts (services.core.replica), or one of this runner only.
        self.runner_id = runner_id or "runner-" + secrets.token_hex(6)
        self._jobs: JobRunner[BacktestRecord, Progress] = JobRunner(
            _Jobs(store),
            MESSAGES,
            name="backtest",
            slots=workers,
            runner_id=self.runner_id,
            clock=clock,
            heartbeat_seconds=heartbeat_seconds,
            stale_seconds=stale_seconds,
        )

    async def start(self) -> None:
        """Fail at once the backtests this replica's previous run left queued or running (it was killed: nobody
        will finish them); other replicas' abandoned runs are marked when read."""
        await self._jobs.start()

    async def stop(self) -> None:
        """Stop local runs; each is recorded FAILED INTERRUPTED (run it again)."""
        await self._jobs.stop()

    # -- submitting -------------------------------------------------------------------------------------------------

    async def by_request(self, owner: Owner, request_id: str, digest: str) -> BacktestRecord | None:
        """The owner's backtest submitted with `request_id`, None when there is none; REQUEST_ID_REUSED when it was
        submitted for a different request."""
        found = await self._store.find(
            owner, BacktestFilter(), after=None, limit=1, with_detail=False, request_id=request_id
        )
        return await self._jobs.same_request(found[0] if found else None, digest, "backtest")

    async def submit(
        self,
        owner: Owner,
        *,
        plan: BacktestPlan,
        data: Sequence[SymbolBars],
        config: str,
        request_id: str | None,
        digest: str,
    ) -> BacktestRecord:
        """Store the backtest and start it (or return the one already submitted with `request_id`);
        BACKTEST_LIMIT_EXCEEDED when the owner already has `per_account` queued or running."""
        active = await self._jobs.active(await self._store.active(owner))
        if len(active) >= self._per_account:
            raise ResourceExhausted(
                f"{len(active)} backtests are already queued or running; wait for one to finish or cancel one",
                reason="BACKTEST_LIMIT_EXCEEDED",
                retry_after_seconds=5.0,
                metadata={"limit": self._per_account},
            )
        now = self._clock()
        total = sum(item.simulated for item in data) * len(plan.combinations)
        record = BacktestRecord(
            backtest_id=new_backtest_id(),
            owner=owner,
            request_id=request_id,
            request_digest=digest,
            strategy_id=plan.strategy.strategy_id,
            symbols=plan.symbols,
            state=BacktestState.QUEUED,
            config=config,
            progress=Progress(bars_total=total, combinations_total=len(plan.combinations)),
            runner_id=self.runner_id,
            heartbeat_time=now,
            create_time=now,
        )
        return await self._jobs.submit(record, self._work(plan, data), what="backtest")

    # -- reading ----------------------------------------------------------------------------------------------------

    async def get(self, owner: Owner, backtest_id: str, *, with_detail: bool) -> BacktestRecord | None:
        """The owner's backtest as it is now."""
        record = await self._store.get(owner, backtest_id, with_detail=with_detail)
        return await self._jobs.settled(record) if record is not None else None

    async def find(
        self,
        owner: Owner,
        filters: BacktestFilter,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        with_detail: bool,
    ) -> list[BacktestRecord]:
        """The owner's backtests, newest first."""
        records = await self._store.find(owner, filters, after=after, limit=limit, with_detail=with_detail)
        return [await self._jobs.settled(record) for record in records]

    async def watch(self, owner: Owner, backtest_id: str) -> AsyncIterator[Update]:
        """Progress as it changes, then the finished backtest (with its detail) as the last item."""
        record = await self._store.get(owner, backtest_id, with_detail=False)
        if record is None:
            return
        last: Progress | None = None
        async for job in self._jobs.watch(record):
            if job is None or job.is_finished:
                continue
            if job.progress != last:
                last = job.progress
                yield job.progress
        final = await self.get(owner, backtest_id, with_detail=True)
        if final is not None:
            yield final

    # -- cancelling -------------------------------------------------------------------------------------------------

    async def cancel(self, owner: Owner, backtest_id: str) -> BacktestRecord | None:
        """Cancel the owner's queued or running backtest (a finished one is returned unchanged)."""
        record = await self._store.get(owner, backtest_id, with_detail=False)
        return await self._jobs.cancel(record) if record is not None else None

    # -- running ----------------------------------------------------------------------------------------------------

    def _work(self, plan: BacktestPlan, data: Sequence[SymbolBars]) -> JobWork[BacktestRecord, Progress]:
        codec, clock, store = self._codec, self._clock, self._store

        async def run(record: BacktestRecord, control: JobControl[Progress]) -> BacktestRecord | None:
            latest = [record.progress]
            published = [0.0]

            def report(done: int, total: int, combinations_done: int, combinations: int, stage: str) -> None:
                if control.stop.is_set():
                    raise _Cancelled
                progress = Progress(
                    fraction=done / total if total else 1.0,
                    bars_processed=done,
                    bars_total=total,
                    combinations_completed=combinations_done,
                    combinations_total=combinations,
                    message=stage,
                )
                latest[0] = progress
                now = time.monotonic()
                if now - published[0] >= _PUBLISH_EVERY_SECONDS or done >= total:
                    published[0] = now
                    control.report(progress)

            thread = asyncio.ensure_future(asyncio.to_thread(simulate, plan, data, report))
            try:
                # Shielded: cancelling this task asks the thread to stop (at its next report) and waits for it.
                outcome = await asyncio.shield(thread)
            except asyncio.CancelledError:
                control.stop.set()
                with contextlib.suppress(BaseException):
                    await thread
                raise
            except _Cancelled:
                raise asyncio.CancelledError from None
            summary, detail = await asyncio.to_thread(codec.encode, outcome, plan.max_equity_points)
            done = replace(latest[0], fraction=1.0, message="done")
            succeeded = record.finished(BacktestState.SUCCEEDED, clock(), summary=summary, detail=detail, progress=done)
            return succeeded if await store.save(succeeded, only_if_active=True) else None

        return run
