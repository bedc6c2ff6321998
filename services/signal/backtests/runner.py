"""Runs backtests in the background of a signal replica and keeps their record in the owner's shard.

A submitted backtest is stored QUEUED, waits for one of the replica's worker slots, then runs in a thread (the
engine is compiled and releases the GIL), reporting progress to local watchers at once and to the store about once
a second (its heartbeat). A watcher on another replica follows the stored progress. Cancelling from any replica
marks the row CANCELLED; the running replica sees it at its next heartbeat and stops. A run whose heartbeat stops
(its replica died) is marked FAILED INTERRUPTED by whoever reads it next, so nothing stays RUNNING forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from services.core.db.databases import utc_now
from services.core.errors import AlreadyExists, ResourceExhausted
from services.signal.backtests.simulation import BacktestOutcome, BacktestPlan, SymbolBars, simulate
from services.signal.backtests.store import (
    BacktestFilter,
    BacktestRecord,
    BacktestState,
    BacktestStore,
    Progress,
)
from services.signal.owners import Owner

log = logging.getLogger("bullant.signal.backtests")


class ReportCodec(Protocol):
    """Turns an outcome into the stored report: (summary without trades/curve/sweep, whole report)."""

    def encode(self, outcome: BacktestOutcome, max_equity_points: int) -> tuple[bytes, bytes]: ...


class _Cancelled(Exception):
    """Raised from the progress callback to stop a run."""


@dataclass(slots=True)
class _Run:
    record: BacktestRecord
    plan: BacktestPlan
    data: Sequence[SymbolBars]
    stop: threading.Event = field(default_factory=threading.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def publish(self, record: BacktestRecord) -> None:
        self.record = record
        self.changed.set()


Update = Progress | BacktestRecord


def new_backtest_id() -> str:
    """An opaque id: "bt_" and 24 random hex digits."""
    return "bt_" + secrets.token_hex(12)


class BacktestRunner:
    """The replica's backtest runs (a Component: stop() ends local runs as FAILED INTERRUPTED)."""

    def __init__(
        self,
        store: BacktestStore,
        codec: ReportCodec,
        *,
        workers: int = 2,
        per_account: int = 3,
        clock: Callable[[], datetime] = utc_now,
        heartbeat_seconds: float = 1.0,
        stale_seconds: float = 30.0,
        runner_id: str = "",
    ) -> None:
        self._store = store
        self._codec = codec
        self._slots = asyncio.Semaphore(workers)
        self._per_account = per_account
        self._clock = clock
        self._heartbeat = heartbeat_seconds
        self._stale = timedelta(seconds=stale_seconds)
        self._runs: dict[str, _Run] = {}
        # The replica's identity across restarts (services.core.replica), or one of this runner only.
        self.runner_id = runner_id or "runner-" + secrets.token_hex(6)

    async def start(self) -> None:
        """Fail at once the backtests this replica's previous run left queued or running (it was killed: nobody
        will finish them); other replicas' stale runs are marked when read, as before."""
        for record in await self._store.active_of_runner(self.runner_id):
            await self._finish_interrupted(
                record, "the server was restarted while the backtest was queued or running; run it again"
            )

    async def stop(self) -> None:
        """Stop local runs; each is recorded FAILED INTERRUPTED (run it again)."""
        runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
            if run.task is not None:
                run.task.cancel()
        for run in runs:
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
            await self._finish_interrupted(run.record, "the server shut down while the backtest was running")

    # -- submitting -------------------------------------------------------------------------------------------------

    async def by_request(self, owner: Owner, request_id: str, digest: str) -> BacktestRecord | None:
        """The owner's backtest submitted with `request_id`, None when there is none; REQUEST_ID_REUSED when it was
        submitted for a different request."""
        found = await self._store.find(
            owner, BacktestFilter(), after=None, limit=1, with_detail=False, request_id=request_id
        )
        if not found:
            return None
        if found[0].request_digest != digest:
            raise AlreadyExists("this request id was used for a different backtest", reason="REQUEST_ID_REUSED")
        return await self._settled(found[0])

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
        active = [
            record for record in await self._store.active(owner) if not (await self._settled(record)).state.finished
        ]
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
        existing = await self._store.insert(record)
        if existing is not None:  # a concurrent retry with the same request id won the insert
            if existing.request_digest != digest:
                raise AlreadyExists("this request id was used for a different backtest", reason="REQUEST_ID_REUSED")
            return existing
        run = _Run(record, plan, data)
        self._runs[record.backtest_id] = run
        run.task = asyncio.create_task(self._execute(run), name=f"backtest {record.backtest_id}")
        return record

    # -- reading ----------------------------------------------------------------------------------------------------

    async def get(self, owner: Owner, backtest_id: str, *, with_detail: bool) -> BacktestRecord | None:
        """The owner's backtest as it is now."""
        record = await self._store.get(owner, backtest_id, with_detail=with_detail)
        return await self._settled(record) if record is not None else None

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
        return [await self._settled(record) for record in records]

    async def watch(self, owner: Owner, backtest_id: str) -> AsyncIterator[Update]:
        """Progress as it changes, then the finished backtest (with its detail) as the last item."""
        run = self._runs.get(backtest_id)
        if run is not None and run.record.owner == owner:
            while not run.done.is_set():
                run.changed.clear()
                yield run.record.progress
                waiter = asyncio.ensure_future(run.changed.wait())
                finished = asyncio.ensure_future(run.done.wait())
                try:
                    await asyncio.wait({waiter, finished}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    finished.cancel()
        else:
            last: Progress | None = None
            while True:
                record = await self.get(owner, backtest_id, with_detail=False)
                if record is None or record.state.finished:
                    break
                if record.progress != last:
                    last = record.progress
                    yield record.progress
                await asyncio.sleep(min(self._heartbeat, 0.5))
        final = await self.get(owner, backtest_id, with_detail=True)
        if final is not None:
            yield final

    # -- cancelling -------------------------------------------------------------------------------------------------

    async def cancel(self, owner: Owner, backtest_id: str) -> BacktestRecord | None:
        """Cancel the owner's queued or running backtest (a finished one is returned unchanged)."""
        record = await self.get(owner, backtest_id, with_detail=False)
        if record is None or record.state.finished:
            return record
        cancelled = record.finished(BacktestState.CANCELLED, self._clock())
        if not await self._store.save(cancelled, only_if_active=True):
            return await self.get(owner, backtest_id, with_detail=False)  # it finished meanwhile
        run = self._runs.get(backtest_id)
        if run is not None:
            run.stop.set()
        return cancelled

    # -- running ----------------------------------------------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        try:
            async with self._slots:
                if run.stop.is_set():
                    return
                now = self._clock()
                running = replace(run.record, state=BacktestState.RUNNING, start_time=now, heartbeat_time=now)
                running = replace(running, progress=replace(running.progress, message="starting"))
                if not await self._store.save(running, only_if_active=True):
                    return  # cancelled while queued
                run.publish(running)
                await self._simulate(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("backtest %s failed", run.record.backtest_id)
            failed = run.record.finished(
                BacktestState.FAILED, self._clock(), failure=("INTERNAL", "the backtest failed; the error is logged")
            )
            await self._store.save(failed, only_if_active=True)
            run.publish(failed)
        finally:
            self._runs.pop(run.record.backtest_id, None)
            run.done.set()

    async def _simulate(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        latest: list[Progress] = [run.record.progress]
        last_publish = [0.0]

        def report(done: int, total: int, combinations_done: int, combinations: int, stage: str) -> None:
            if run.stop.is_set():
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
            if now - last_publish[0] >= 0.05 or done >= total:
                last_publish[0] = now
                loop.call_soon_threadsafe(lambda: run.publish(replace(run.record, progress=progress)))

        work = asyncio.ensure_future(asyncio.to_thread(simulate, run.plan, run.data, report))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self._heartbeat)
                if not work.done() and not await self._store.heartbeat(
                    run.record.owner, run.record.backtest_id, latest[0], self._clock()
                ):
                    run.stop.set()  # cancelled (or declared interrupted) elsewhere
            outcome = work.result()
        except _Cancelled:
            current = await self._store.get(run.record.owner, run.record.backtest_id, with_detail=False)
            if current is not None:
                run.publish(current)
            return
        except BaseException:
            run.stop.set()
            with contextlib.suppress(BaseException):
                await work
            raise
        summary, detail = await asyncio.to_thread(self._codec.encode, outcome, run.plan.max_equity_points)
        done = replace(latest[0], fraction=1.0, message="done")
        succeeded = run.record.finished(
            BacktestState.SUCCEEDED, self._clock(), summary=summary, detail=detail, progress=done
        )
        if await self._store.save(succeeded, only_if_active=True):
            run.publish(succeeded)

    # -- interruption -----------------------------------------------------------------------------------------------

    async def _settled(self, record: BacktestRecord) -> BacktestRecord:
        """The record, marked FAILED INTERRUPTED first when it is active but nobody has run it for a while."""
        if record.state.finished or record.backtest_id in self._runs:
            return record
        beat = record.heartbeat_time or record.start_time or record.create_time
        if self._clock() - beat <= self._stale:
            return record
        return await self._finish_interrupted(record, "the server running the backtest stopped; run it again")

    async def _finish_interrupted(self, record: BacktestRecord, message: str) -> BacktestRecord:
        failed = record.finished(BacktestState.FAILED, self._clock(), failure=("INTERRUPTED", message))
        if await self._store.save(failed, only_if_active=True):
            return failed
        current = await self._store.get(record.owner, record.backtest_id, with_detail=False)
        return current or failed
