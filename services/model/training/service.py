"""Training's use cases – ListAlgorithms, TrainModel, WatchTraining, GetTrainingJob, ListTrainingJobs, CancelTraining –
and the retraining that drift and the schedule start: request-id idempotency, the range resolved to the stored bars,
and the jobs run by the replica's TrainingRunner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from services.core.clock import WallClock, utc_now
from services.core.errors import NotFound
from services.core.market_data import MarketData
from services.core.paging import COUNT, Cursor, Page, PageTokens, keyset_after, keyset_cursor, keyset_page
from services.model.forecasting.base import Algorithm, AlgorithmDef
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.registry.service import ModelRegistry
from services.model.registry.versions import ModelVersion
from services.model.training.data import minimum_range_bars, training_data
from services.model.training.jobs import DEFAULT_HOLDOUT, JobFilter, JobState, TrainingJob, TrainingSpec, Trigger
from services.model.training.runner import TrainingRunner
from services.model.training.store import JobStore

# A retrained version's evaluation window, as a share of its range, stays within these bounds.
_RETRAIN_HOLDOUT_BOUNDS = (0.1, 0.5)
# What each list's page tokens hold.
_ALGORITHMS_CURSOR = Cursor.of("model.ListAlgorithms", after=COUNT)
_JOBS_CURSOR = keyset_cursor("model.ListTrainingJobs")


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"no training job {job_id[:64]!r}", reason="JOB_NOT_FOUND", metadata={"job_id": job_id[:64]})


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingOrder:
    """A TrainModel request in the domain's terms: the spec (range not yet resolved), the request id that makes a
    retry return the same job (None: none given), and the digest of the request that id is bound to."""

    spec: TrainingSpec
    request_id: str | None
    digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlgorithmSummary:
    """One algorithm as ListAlgorithms describes it: its definition and the fewest bars a default job needs."""

    definition: AlgorithmDef
    min_training_bars: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Quiet:
    """WatchTraining's heartbeat: nothing changed for a while."""

    server_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingOutcome:
    """WatchTraining's last event: the finished job and, when it succeeded, the version it registered."""

    job: TrainingJob
    model: ModelVersion | None


# What WatchTraining yields: the job at each change, a heartbeat when quiet, and the outcome last.
WatchEvent = TrainingJob | Quiet | TrainingOutcome


class TrainingService:
    """Submits, reads, follows and cancels training jobs."""

    def __init__(
        self,
        runner: TrainingRunner,
        jobs: JobStore,
        registry: ModelRegistry,
        market: MarketData,
        *,
        pages: PageTokens,
        clock: WallClock = utc_now,
    ) -> None:
        self._runner = runner
        self._jobs = jobs
        self._registry = registry
        self._market = market
        self._pages = pages
        self._clock = clock

    @staticmethod
    def algorithms(*, after: int, limit: int) -> list[AlgorithmSummary]:
        """The catalogue in algorithm order after `after` (an Algorithm number), at most `limit`."""
        chosen = [algorithm for algorithm in sorted(ALGORITHMS) if algorithm > after][:limit]
        return [_summary(ALGORITHMS[algorithm]) for algorithm in chosen]

    async def list_algorithms(self, *, size: int, page_token: str) -> Page[AlgorithmSummary]:
        """ListAlgorithms: the catalogue in algorithm order, a page at a time."""

        async def fetch(position: dict[str, Any] | None, limit: int) -> list[AlgorithmSummary]:
            return self.algorithms(after=position["after"] if position else 0, limit=limit)

        return await keyset_page(
            self._pages,
            _ALGORITHMS_CURSOR,
            page_token,
            size=size,
            fetch=fetch,
            position=lambda summary: {"after": int(summary.definition.algorithm)},
        )

    async def train(self, order: TrainingOrder, *, account_id: int) -> TrainingJob:
        """The job for `order`: the one its request id made before (REQUEST_ID_REUSED for a different request), or
        a new one queued on the range's stored bars (INSUFFICIENT_DATA when too few)."""
        job = await self._runner.by_request(order.request_id, order.digest) if order.request_id else None
        if job is not None:
            return job
        return await self.submit(
            order.spec, trigger=Trigger.MANUAL, account_id=account_id, request_id=order.request_id, digest=order.digest
        )

    async def submit(
        self, spec: TrainingSpec, *, trigger: Trigger, account_id: int, request_id: str | None = None, digest: str = ""
    ) -> TrainingJob:
        """Queue a job on the range's stored bars, the spec's range resolved to the first and the last bar read."""
        data = await training_data(self._market, spec)
        spec = replace(spec, start=data.times[0], end=data.times[-1] + spec.timeframe.delta)
        return await self._runner.submit(
            spec, data, trigger=trigger, account_id=account_id, request_id=request_id, digest=digest
        )

    async def retrain(self, version: ModelVersion, trigger: Trigger) -> TrainingJob:
        """A new training job of the version's algorithm and parameters on the latest bars (the same length of
        history), with the version as its parent."""
        span = version.training_end - version.training_start
        spec = TrainingSpec(
            algorithm=Algorithm(version.algorithm),
            parameters=dict(version.parameters),
            symbol=version.symbol,
            timeframe=version.timeframe,
            start=self._clock() - span - timedelta(days=7),
            end=None,
            holdout_fraction=_holdout(version),
            horizon=int(version.metrics.get("horizon_bars") or 1),
            seed=version.seed,
            auto_retrain=version.auto_retrain,
            parent_model_id=version.model_id,
        )
        return await self.submit(spec, trigger=trigger, account_id=0)

    async def job(self, job_id: str) -> TrainingJob:
        job = await self._runner.job(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def list_jobs(self, filters: JobFilter, *, size: int, page_token: str) -> Page[TrainingJob]:
        """ListTrainingJobs: jobs newest first (by create_time, then job_id), a page at a time."""
        numbers = [int(value or 0) for value in (filters.algorithm, filters.state)]
        return await keyset_page(
            self._pages,
            _JOBS_CURSOR,
            page_token,
            query="|".join([filters.symbol, *map(str, numbers)]),
            size=size,
            fetch=lambda after, limit: self._runner.jobs(filters, after=keyset_after(after), limit=limit),
            position=lambda job: {"t": job.create_time, "id": job.job_id},
        )

    async def active(self) -> list[TrainingJob]:
        """The queued and running jobs of every replica, as stored."""
        return await self._jobs.active_jobs()

    async def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a queued or running job (a finished one is returned unchanged)."""
        job = await self._runner.cancel(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def watch(self, job_id: str) -> AsyncIterator[WatchEvent]:
        """The job at once and at each change, a Quiet heartbeat when nothing changes for a while, and its
        TrainingOutcome once it finished; JOB_NOT_FOUND before anything when there is no such job."""
        await self.job(job_id)
        async for job in self._runner.watch(job_id):
            if job is None:
                yield Quiet(server_time=self._clock())
                continue
            yield job
            if job.state.finished:
                model = await self._registry.get(job.model_id) if job.state is JobState.SUCCEEDED else None
                yield TrainingOutcome(job=job, model=model)


def _summary(definition: AlgorithmDef) -> AlgorithmSummary:
    defaults = definition.resolve({})
    return AlgorithmSummary(
        definition=definition, min_training_bars=minimum_range_bars(definition, defaults, DEFAULT_HOLDOUT, 1)
    )


def _holdout(version: ModelVersion) -> float:
    """The holdout fraction the version was evaluated with (its held-out window over its whole range)."""
    start = version.metrics.get("evaluation_start_time")
    if not start:
        return DEFAULT_HOLDOUT
    held = version.training_end - datetime.fromisoformat(str(start))
    whole = version.training_end - version.training_start
    low, high = _RETRAIN_HOLDOUT_BOUNDS
    return min(high, max(low, held / whole)) if whole.total_seconds() > 0 else DEFAULT_HOLDOUT
