"""Jobs a killed replica left running, through real channels: the replica restarted with the same identity fails its
own training jobs and backtests at once (not after their heartbeat lapses, 30 s later), and leaves other replicas'
running jobs to the heartbeat rule. The killed process is played by rows as `kill -9` leaves them: RUNNING, with a
fresh heartbeat and the replica's id."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.core.accounts import AccountRef
from services.core.clock import utc_now
from services.model.training.jobs import TrainingJob
from services.model.training.store import JobStore
from services.signal.backtests.store import BacktestState, BacktestStore
from tests.model_records import running_job, training_spec
from tests.signal_platform import START, running_signal_platform, stamp
from tests.support import fresh_data_dir

pytestmark = pytest.mark.timeout(180)
SERVICES = ("market", "signal", "model")


def _job(job_id: str, runner_id: str, beat_ahead: timedelta = timedelta(0)) -> TrainingJob:
    now = utc_now()
    spec = training_spec(start=START, end=START + timedelta(days=300))
    return running_job(job_id, started=now, heartbeat=now + beat_ahead, spec=spec, runner_id=runner_id)


async def test_a_restarted_replica_fails_its_orphans_at_once(tmp_path: Path) -> None:
    data_dir = fresh_data_dir()
    settings: dict[str, Any] = {"data_dir": data_dir, "model_dir": str(tmp_path / "models")}
    # The replica before it was killed: it ran a backtest, and the rows below are what kill -9 leaves of its work.
    async with running_signal_platform(services=SERVICES, replica_id="replica-a", **settings) as before:
        config = signal_pb2.BacktestConfig(
            strategy_id="ema_cross",
            symbols=["DEMO"],
            timeframe=common_pb2.TIMEFRAME_1D,
            range=common_pb2.TimeRange(start_time=stamp(START)),
            initial_cash=10_000.0,
        )
        call = before.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=config), metadata=before.trader)
        finished = [message async for message in call][-1].backtest
        backtests = BacktestStore(before.deps.databases)
        owner = AccountRef(account_id=3, shard=0)
        stored = await backtests.get(owner, finished.backtest_id, with_detail=False)
        assert stored is not None
        running = replace(stored, state=BacktestState.RUNNING, heartbeat_time=utc_now(), end_time=None, summary=None)
        assert await backtests.save(running)
        models = JobStore(before.deps.databases)
        await models.insert_job(_job("job_orphan_a", "replica-a"))
        # Another replica's job, alive as far as anyone can tell (its heartbeat cannot lapse during this test).
        await models.insert_job(_job("job_alive_b", "replica-b", beat_ahead=timedelta(minutes=10)))
        # (Stopping now touches none of these rows: the replica only ends the runs it has in hand.)

    # The same replica started again (on the same data).
    async with running_signal_platform(store=False, services=SERVICES, replica_id="replica-a", **settings) as after:
        job = (
            await after.model.GetTrainingJob(
                model_pb2.GetTrainingJobRequest(job_id="job_orphan_a"), metadata=after.admin
            )
        ).job
        assert job.state == model_pb2.TRAINING_JOB_STATE_FAILED
        assert (job.failure.reason, job.failure.message) == (
            "INTERRUPTED",
            "the service was restarted while the job was queued or running; train again",
        )
        backtest = (
            await after.signal.GetBacktest(
                signal_pb2.GetBacktestRequest(backtest_id=finished.backtest_id), metadata=after.trader
            )
        ).backtest
        assert backtest.state == signal_pb2.BACKTEST_STATE_FAILED
        assert "restarted while the backtest was queued or running" in backtest.failure.message
        other = (
            await after.model.GetTrainingJob(
                model_pb2.GetTrainingJobRequest(job_id="job_alive_b"), metadata=after.admin
            )
        ).job
        assert other.state == model_pb2.TRAINING_JOB_STATE_RUNNING
