"""Log formatting: JSON lines with extra fields and the current request id; cancelled RPCs are not errors, and
alembic's per-connection chatter is DEBUG."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.core.context import CallContext, bind_call, unbind_call
from services.core.logging import CancelledRpcFilter, JsonFormatter, configure_logging
from services.core.settings import LogFormat


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers and level: put the test runner's back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def _record(message: str, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bullant.test", logging.ERROR, __file__, 1, message, None, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_fields_extras_and_request_id() -> None:
    token = bind_call(CallContext(request_id="rid-5"))
    try:
        line = JsonFormatter().format(_record("hello %s", method="/x.Y/Z", duration_ms=1.5))
    finally:
        unbind_call(token)
    entry = json.loads(line)
    assert entry["message"] == "hello %s"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "bullant.test"
    assert entry["request_id"] == "rid-5"
    assert entry["method"] == "/x.Y/Z"
    assert entry["duration_ms"] == 1.5
    assert entry["time"].endswith("+00:00")


def test_json_line_carries_the_traceback() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError as exc:
        record = _record("failed")
        record.exc_info = (type(exc), exc, exc.__traceback__)
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad thing" in entry["exception"]


def test_cancelled_rpc_records_are_lowered_to_debug() -> None:
    cancelled = _record("Exception not handled", asyncio.CancelledError())
    kept = CancelledRpcFilter().filter(cancelled)
    assert cancelled.levelno == logging.DEBUG
    assert cancelled.exc_info is None
    assert kept == logging.getLogger().isEnabledFor(logging.DEBUG)
    real = _record("boom", RuntimeError("x"))
    assert CancelledRpcFilter().filter(real)
    assert real.levelno == logging.ERROR


def test_configure_logging_writes_json_or_text(restored_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", LogFormat.JSON, stream)
    logging.getLogger("bullant.x").info("one", extra={"k": 1})
    logging.getLogger("bullant.x").debug("hidden")
    assert [json.loads(line)["k"] for line in stream.getvalue().splitlines()] == [1]
    stream = io.StringIO()
    configure_logging("DEBUG", LogFormat.TEXT, stream)
    logging.getLogger("bullant.x").debug("plain words")
    logging.getLogger("bullant.x").info("in a call", extra={"request_id": "r-1"})
    first, second = stream.getvalue().splitlines()
    assert first.endswith("DEBUG   bullant.x: plain words")
    assert second.endswith("INFO    bullant.x: in a call [request_id=r-1]")


def test_alembic_per_connection_chatter_is_debug_and_its_upgrades_stay(restored_root_logger: None) -> None:
    alembic = logging.getLogger("alembic.runtime.migration")

    def logged(level: str) -> list[tuple[str, str]]:
        stream = io.StringIO()
        configure_logging(level, LogFormat.JSON, stream)
        alembic.info("Context impl SQLiteImpl.")
        alembic.info("Will assume non-transactional DDL.")
        alembic.info("Running upgrade 0005 -> 0006, alerts")
        return [(entry["level"], entry["message"]) for entry in map(json.loads, stream.getvalue().splitlines())]

    assert logged("INFO") == [("INFO", "Running upgrade 0005 -> 0006, alerts")]
    assert logged("DEBUG") == [
        ("DEBUG", "Context impl SQLiteImpl."),
        ("DEBUG", "Will assume non-transactional DDL."),
        ("INFO", "Running upgrade 0005 -> 0006, alerts"),
    ]
