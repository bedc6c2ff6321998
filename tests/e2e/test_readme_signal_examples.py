"""The README's shell examples of the signal sections (Indicators, Strategies and backtests, Live signals and
alerts), run as written by bash against `bullant serve all` on whatever day the suite runs: none may depend on the
date it was written (a fixed replay time, for instance, falls out of the 24-hour replay window)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.platform import BIN, GRPCURL, Platform, dev_token
from tests.signal_platform import free_port

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("Indicators", "Strategies and backtests", "Live signals and alerts")
STREAMING = "SignalService/StreamSignals"  # runs until cancelled: given a deadline, which ends it


def examples(section: str) -> str:
    """The sh code blocks of a README section, as one script."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL)
    assert blocks, section
    return "\n".join(blocks)


# Every grpcurl call through `$G` runs this function: it records each call's exit code and method for the test;
# any other failing command ends the script (set -e).
PRELUDE = """
set -e
call() {
  local deadline="" code=0
  case "$*" in *%(streaming)s*) deadline="-max-time 15" ;; esac
  %(grpcurl)s -plaintext $deadline "$@" || code=$?
  echo "@@ $code ${@: -1}" >&2
}
G=call
"""


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    port = str(free_port())
    running = Platform("serve", "all", "--port", port, "--metrics-port", "-1", "--grace", "3").wait_ready(60)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def token(platform: Platform) -> str:
    """The README's `bullant token --scopes read,trade`, run once for the three sections."""
    return dev_token(platform.data_dir, "--scopes", "read,trade")


@pytest.mark.parametrize("section", SECTIONS)
def test_the_examples_run_as_written(platform: Platform, token: str, section: str, tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(BIN.parent)  # the examples call .venv/bin/...; images land in tmp_path
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment.update(
        {
            "BULLANT_DATA_DIR": platform.data_dir,
            "BULLANT_PORT": platform.address.rsplit(":", 1)[1],
            "TOKEN": token,
            "A": platform.address,
        }
    )
    script = PRELUDE % {"streaming": STREAMING, "grpcurl": GRPCURL} + examples(section)
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=300, check=False
    )
    calls = re.findall(r"^@@ (\d+) (\S+)$", result.stderr, flags=re.MULTILINE)
    assert calls, result.stderr
    for code, method in calls:
        if method.endswith(STREAMING):
            # Ended by its deadline after the heartbeat and whatever the replay window held, not refused.
            assert "DeadlineExceeded" in result.stderr, result.stderr
            assert '"heartbeat"' in result.stdout
        else:
            assert code == "0", f"{method} failed:\n{result.stderr}"
    assert result.returncode == 0, result.stderr  # set -e: the other commands (bullant backtest) succeeded too
    assert "Traceback" not in result.stderr
    assert "REPLAY_WINDOW_EXCEEDED" not in result.stdout + result.stderr
