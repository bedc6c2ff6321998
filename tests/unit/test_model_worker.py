"""The training worker starts its child process off the event loop: a spawned child is handed its pickled job through
a pipe that drains only once the new interpreter runs, which on a busy machine took seconds and stalled every lease
renewal and call of the process. A job cancelled while its child is starting still kills the child."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from datetime import datetime
from typing import Any

import numpy as np

from services.model.forecasting.evaluation import Gate
from services.model.training.jobs import JobProgress
from services.model.training.runner import TrainingData
from services.model.training.worker import ProcessWorker
from tests.model_records import training_spec

DATA = TrainingData(times=[datetime(2026, 1, day) for day in range(1, 4)], closes=np.array([1.0, 2.0, 3.0]))


class FakeProcess:
    """Stands in for the spawned child: start() answers at once (or after `release`), as the child would."""

    def __init__(self, target: Any, args: tuple[Any, ...], daemon: bool, name: str) -> None:
        self.sender = args[0]
        self.exitcode: int | None = None
        self.alive = False
        self.started_on_loop_thread: bool | None = None
        self.killed = self.joined = False

    release: threading.Event | None = None

    def start(self) -> None:
        self.started_on_loop_thread = threading.current_thread() is threading.main_thread()
        if self.release is not None:
            self.release.wait(10)
        self.alive = True
        self.sender.send(("done", b"artifact", {"mase": 0.9}, Gate(True, 0.9, 0.99, "passed")))

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed, self.alive = True, False

    def join(self, timeout: float | None = None) -> None:
        self.joined = True


class FakeContext:
    def __init__(self, release: threading.Event | None = None) -> None:
        self.processes: list[FakeProcess] = []
        self.release = release

    def Pipe(self, duplex: bool) -> Any:
        return multiprocessing.Pipe(duplex=duplex)

    def Process(self, **kwargs: Any) -> FakeProcess:
        process = FakeProcess(**kwargs)
        process.release = self.release
        self.processes.append(process)
        return process


def _worker(context: FakeContext) -> ProcessWorker:
    worker = ProcessWorker()
    worker._context = context  # type: ignore[assignment]
    return worker


def _ignore(progress: JobProgress) -> None:
    return None


async def test_the_child_is_started_off_the_event_loop() -> None:
    context = FakeContext()
    trained = await _worker(context)(training_spec(), DATA, _ignore)
    assert trained.artifact == b"artifact"
    [process] = context.processes
    assert process.started_on_loop_thread is False
    assert process.joined


async def test_a_job_cancelled_while_its_child_starts_kills_the_child() -> None:
    release = threading.Event()
    context = FakeContext(release)
    job = asyncio.create_task(_worker(context)(training_spec(), DATA, _ignore))
    while not context.processes or context.processes[0].started_on_loop_thread is None:
        await asyncio.sleep(0.01)
    job.cancel()
    release.set()
    done, _ = await asyncio.wait({job}, timeout=30)
    assert job in done
    assert job.cancelled()
    [process] = context.processes
    assert process.killed
    assert process.joined
