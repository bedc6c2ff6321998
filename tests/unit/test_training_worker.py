"""The training worker's failures: what a job's record says, and what only the log gets."""

from __future__ import annotations

import multiprocessing

import pytest

from services.model.training import fitting
from services.model.training.worker import _child, _Request


def _request() -> _Request:
    return _Request(
        algorithm=1,
        parameters={},
        closes=[1.0, 2.0, 3.0],
        times=[0, 60_000_000_000, 120_000_000_000],
        span_seconds=60.0,
        holdout_fraction=0.2,
        horizon=1,
        seed=1,
        gate_threshold=0.99,
        gate_max_pvalue=0.05,
    )


def test_an_unexpected_error_reaches_the_log_not_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(**_: object) -> None:
        raise RuntimeError("cannot open /srv/secret/path: permission denied")

    monkeypatch.setattr(fitting, "train_and_evaluate", explode)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    _child(sender, _request())
    kind, reason, message, detail = receiver.recv()
    assert (kind, reason) == ("failed", "FIT_FAILED")
    assert "secret" not in message
    assert "RuntimeError" not in message
    assert "could not be fitted" in message
    assert "RuntimeError: cannot open /srv/secret/path" in detail  # the traceback, for the server's log
