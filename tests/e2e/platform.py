"""Runs `bullant serve ...` as a real subprocess and tells the tests where it listens."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
BULLANT = str(BIN / "bullant")
GRPCURL = str(BIN / "grpcurl")
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

    def wait_ready(self, timeout: float = 30.0) -> Platform:
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


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False
