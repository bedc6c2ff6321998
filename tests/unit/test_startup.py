"""The bounded start-up wait for a dependency: one log line per attempt, then a clear error with its exit code."""

from __future__ import annotations

import logging

import pytest

from services.core.startup import (
    EXIT_DEPENDENCY_UNREACHABLE,
    DependencyUnreachable,
    StartupError,
    wait_until_reachable,
)
from tests.conftest import RecordingHandler


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def _waits(handler: RecordingHandler) -> list[logging.LogRecord]:
    return [r for r in handler.records if r.name == "bullant.startup" and r.levelno == logging.WARNING]


async def test_a_dependency_that_comes_up_is_waited_for_with_one_line_per_attempt(
    captured_logs: RecordingHandler,
) -> None:
    time = FakeTime()
    answers = ["Connection refused", "Connection refused", None]

    async def probe() -> str | None:
        return answers.pop(0)

    await wait_until_reachable(
        "redis", probe, wait_seconds=30, hint="Check BULLANT_REDIS_URL.", clock=time.clock, sleep=time.sleep
    )
    waits = _waits(captured_logs)
    assert [r.getMessage().split(" (")[0] for r in waits] == ["waiting for redis", "waiting for redis"]
    assert all("Connection refused" in r.getMessage() for r in waits)
    assert "giving up in 30s" in waits[0].getMessage()
    assert not any(r.exc_info for r in captured_logs.records), "no tracebacks while waiting"
    assert len(time.pauses) == 2
    assert all(0 < pause <= 5 for pause in time.pauses)


async def test_a_dependency_that_never_answers_ends_the_wait_after_the_bound() -> None:
    time = FakeTime()
    attempts = 0

    async def probe() -> str | None:
        nonlocal attempts
        attempts += 1
        return "Error 111 connecting to 127.0.0.1:1"

    with pytest.raises(DependencyUnreachable) as caught:
        await wait_until_reachable(
            "redis", probe, wait_seconds=20, hint="Check BULLANT_REDIS_URL.", clock=time.clock, sleep=time.sleep
        )
    assert str(caught.value) == (
        "redis did not answer within 20s: Error 111 connecting to 127.0.0.1:1. Check BULLANT_REDIS_URL."
    )
    assert caught.value.exit_code == EXIT_DEPENDENCY_UNREACHABLE == 69
    assert isinstance(caught.value, StartupError)
    assert time.now == pytest.approx(20)  # never sleeps past the bound
    assert attempts == len(time.pauses) + 1


async def test_no_wait_gives_up_at_the_first_failure() -> None:
    time = FakeTime()

    async def probe() -> str | None:
        return "no answer within 2s"

    with pytest.raises(DependencyUnreachable, match="BULLANT_STARTUP_WAIT_SECONDS=0"):
        await wait_until_reachable("the database", probe, wait_seconds=0, hint="", clock=time.clock, sleep=time.sleep)
    assert time.pauses == []
