"""Training in a separate process: the server keeps serving while a model fits, and a cancelled job's process is
killed. The child reports progress and its result through a pipe; nothing but plain data crosses it."""

from __future__ import annotations

import asyncio
import multiprocessing
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from services.model.training.jobs import JobProgress, Stage, TrainingSpec
from services.model.training.runner import Trained, TrainingData, WorkerFailed

# Nominal level of the prediction intervals scored at evaluation.
EVALUATION_LEVEL = 0.8
_POLL_SECONDS = 0.2
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    algorithm: int
    parameters: dict[str, Any]
    closes: list[float]
    times: list[int]
    span_seconds: float
    holdout_fraction: float
    horizon: int
    seed: int
    gate_threshold: float
    gate_max_pvalue: float


def _child(connection: Connection, request: _Request) -> None:
    """The worker process: fit, evaluate walk-forward on the held-out tail, and send the artifact and metrics."""
    # Imported here: the parent never pays for the numeric stack (or torch) it does not run.
    from services.model.training.fitting import train_and_evaluate  # noqa: PLC0415

    def progress(update: JobProgress) -> None:
        connection.send(("progress", update))

    try:
        result = train_and_evaluate(
            algorithm=request.algorithm,
            parameters=request.parameters,
            closes=np.asarray(request.closes, dtype=np.float64),
            times=np.asarray(request.times, dtype=np.int64),
            span=timedelta(seconds=request.span_seconds),
            holdout_fraction=request.holdout_fraction,
            horizon=request.horizon,
            level=EVALUATION_LEVEL,
            seed=request.seed,
            gate_threshold=request.gate_threshold,
            gate_max_pvalue=request.gate_max_pvalue,
            progress=progress,
        )
    except WorkerFailed as failure:
        connection.send(("failed", failure.reason, failure.message, ""))
    except Exception:
        # The job's record (which clients read) says what failed in our words; the traceback is for the log.
        message = "the model could not be fitted to this series; the server's log has the details"
        connection.send(("failed", "FIT_FAILED", message, traceback.format_exc()[-4000:]))
    else:
        connection.send(("done", result.artifact, result.metrics, result.gate))
    finally:
        connection.close()


class ProcessWorker:
    """Runs each job in a fresh process (spawned: no inherited event loop, threads or sockets)."""

    def __init__(self, *, gate_threshold: float = 0.99, gate_max_pvalue: float = 0.05) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._gate = (gate_threshold, gate_max_pvalue)

    async def __call__(
        self, spec: TrainingSpec, data: TrainingData, progress: Callable[[JobProgress], None]
    ) -> Trained:
        receiver, sender = self._context.Pipe(duplex=False)
        request = _Request(
            algorithm=int(spec.algorithm),
            parameters=dict(spec.parameters),
            closes=data.closes.tolist(),
            times=[int((moment - _EPOCH).total_seconds() * 1_000_000) * 1000 for moment in data.times],
            span_seconds=spec.timeframe.delta.total_seconds(),
            holdout_fraction=spec.holdout_fraction,
            horizon=spec.horizon,
            seed=spec.seed,
            gate_threshold=self._gate[0],
            gate_max_pvalue=self._gate[1],
        )
        process = self._context.Process(target=_child, args=(sender, request), daemon=True, name="bullant-trainer")
        progress(JobProgress(stage=Stage.PREPARING, fraction=0.01, message="starting a worker process"))
        # A spawned child is handed its pickled arguments through a pipe that only drains once the new interpreter has
        # started: on a busy machine that took over 3 s, so start() runs in a thread, never on the event loop.
        starting = asyncio.ensure_future(asyncio.to_thread(process.start))
        try:
            await asyncio.shield(starting)
            sender.close()
            while True:
                if await asyncio.to_thread(receiver.poll, _POLL_SECONDS):
                    try:
                        message = receiver.recv()
                    except EOFError:
                        raise WorkerFailed("INTERNAL", f"the worker exited with code {process.exitcode}") from None
                    kind = message[0]
                    if kind == "progress":
                        progress(message[1])
                    elif kind == "done":
                        _, artifact, metrics, gate = message
                        return Trained(artifact=artifact, metrics=metrics, gate=gate)
                    else:
                        raise WorkerFailed(message[1], message[2], detail=message[3])
                elif not process.is_alive():
                    raise WorkerFailed("INTERNAL", f"the worker exited with code {process.exitcode}")
        finally:
            # Cancelled while the thread was still starting the child: let it finish, so the child is killed too.
            await asyncio.wait({starting})
            sender.close()
            receiver.close()
            if starting.exception() is None:
                if process.is_alive():
                    process.kill()
                await asyncio.to_thread(process.join, 5.0)
