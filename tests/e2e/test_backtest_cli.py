"""`bullant backtest` against `bullant serve all` on embedded defaults: the demo history is backtested through
RunBacktest with a progress bar, a summary table and an equity-curve PNG; bad options and bad configs say why."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.platform import BULLANT, Platform, dev_token, grpcurl
from tests.signal_platform import free_port

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # A fixed port: the all-in-one server reaches its own market service at 127.0.0.1:<port>.
    port = str(free_port())
    running = Platform("serve", "all", "--port", port, "--metrics-port", "-1", "--grace", "3").wait_ready()
    try:
        yield running
    finally:
        running.stop()


def _backtest(platform: Platform, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment["BULLANT_DATA_DIR"] = platform.data_dir
    return subprocess.run(
        [BULLANT, "backtest", "--target", platform.address, *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_a_backtest_of_the_demo_data_prints_a_summary_and_writes_its_png(platform: Platform, tmp_path: Path) -> None:
    result = _backtest(
        platform,
        "--strategy", "golden_cross", "--symbol", "SIM-AAPL", "--param", "fast=10", "--param", "slow=30",
        "--commission-bps", "5", "--png", "equity.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "100.0%" in result.stderr  # the progress bar reached the end
    assert "golden_cross on SIM-AAPL (1d): SUCCEEDED" in result.stdout
    for row in ("total return", "buy and hold", "Sharpe", "max drawdown", "win rate", "trades"):
        assert row in result.stdout
    image = tmp_path / "equity.png"
    assert image.read_bytes()[:8] == PNG_MAGIC
    assert image.stat().st_size > 10_000
    assert f"equity curve: {image}" in result.stdout

    # The run is stored for the user: ListBacktests over grpcurl shows it.
    token = dev_token(platform.data_dir, "--account-id", "1", "--scopes", "read")
    listed = grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {token}", "-d", "{}",
        platform.address, "bullant.signal.v1.SignalService/ListBacktests",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "golden_cross" in listed.stdout
    assert "BACKTEST_STATE_SUCCEEDED" in listed.stdout


def test_the_image_goes_to_the_data_directory_by_default(platform: Platform, tmp_path: Path) -> None:
    result = _backtest(platform, "--strategy", "golden_cross", "--symbol", "SIM-AAPL", cwd=tmp_path)

    assert result.returncode == 0, result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing in the working directory
    [backtest_id] = re.findall(r"^backtest (\S+): ", result.stdout, re.MULTILINE)
    image = Path(platform.data_dir).resolve() / "backtests" / f"backtest-{backtest_id}.png"
    assert f"equity curve: {image}\n" in result.stdout
    assert image.read_bytes()[:8] == PNG_MAGIC
    # Not a terminal: the progress bar is one line, at the end.
    assert result.stderr.count("%") == 1
    assert "100.0%" in result.stderr


def test_a_sweep_over_two_symbols(platform: Platform, tmp_path: Path) -> None:
    result = _backtest(
        platform,
        "--strategy", "ema_cross", "--symbol", "SIM-AAPL", "--symbol", "SIM-KOSPI",
        "--sweep", "fast=5,9", "--sweep", "slow=21,30", "--rank-by", "total_return", "--sizing", "fraction:0.5",
        "--no-png",
        cwd=tmp_path,
    )  # fmt: skip
    # SIM-KOSPI is quoted in KRW, SIM-AAPL in USD: one cash balance cannot hold both.
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "one currency" in result.stderr
    result = _backtest(
        platform,
        "--strategy", "ema_cross", "--symbol", "SIM-AAPL",
        "--sweep", "fast=5,9", "--sweep", "slow=21,30", "--rank-by", "total_return", "--no-png",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sweep: 4 combinations, best first:" in result.stdout
    assert list(tmp_path.iterdir()) == []  # --no-png


def test_bad_options_are_explained(platform: Platform, tmp_path: Path) -> None:
    unknown = _backtest(platform, "--strategy", "no_such_strategy", "--symbol", "SIM-AAPL", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "NOT_FOUND" in unknown.stderr
    assert "ListStrategies" in unknown.stderr
    zero = _backtest(platform, "--strategy", "golden_cross", "--symbol", "SIM-AAPL", "--cash", "0", cwd=tmp_path)
    assert zero.returncode == 1
    assert "initial_cash" in zero.stderr
    malformed = _backtest(
        platform, "--strategy", "golden_cross", "--symbol", "SIM-AAPL", "--param", "fast", cwd=tmp_path
    )
    assert malformed.returncode == 2
    assert "NAME=VALUE" in malformed.stderr
