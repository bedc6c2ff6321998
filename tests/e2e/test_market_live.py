"""`bullant serve all` on embedded defaults has live simulated ticks, history and quotes, as the README shows with
grpcurl; `bullant import-bars` loads a CSV file."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.platform import BULLANT, Platform, dev_token, grpcurl, grpcurl_stream, wait_until

pytestmark = pytest.mark.e2e

MARKET = "bullant.market.v1.MarketService"
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = Platform("serve", "all", "--port", "0", "--metrics-port", "-1", "--grace", "3").wait_ready()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def reader_token(platform: Platform) -> str:
    """`bullant token --scopes read` for the module's platform, run once."""
    return dev_token(platform.data_dir, "--scopes", "read")


def test_stream_ticks_shows_a_snapshot_then_live_ticks(platform: Platform, reader_token: str) -> None:
    token = reader_token
    messages, errors = grpcurl_stream(
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps({"symbols": ["SIM-BTC-USDT", "SIM-AAPL"]}),
        platform.address,
        f"{MARKET}/StreamTicks",
        until=lambda got: sum(len(m["ticks"]["ticks"]) for m in got if "ticks" in m) >= 3,
    )
    assert messages, errors
    assert "snapshot" in messages[0]
    ticks = [tick for message in messages if "ticks" in message for tick in message["ticks"]["ticks"]]
    assert len(ticks) >= 3, messages
    assert {tick["symbol"] for tick in ticks} <= {"SIM-BTC-USDT", "SIM-AAPL"}
    sequences = [int(tick["sequence"]) for tick in ticks if tick["symbol"] == "SIM-BTC-USDT"]
    assert sequences == sorted(sequences)


def test_history_and_quotes_are_there_on_a_fresh_start(platform: Platform, reader_token: str) -> None:
    token = reader_token
    bars = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps({"symbol": "SIM-AAPL", "timeframe": "TIMEFRAME_1D", "page_size": 400}),
        platform.address,
        f"{MARKET}/ListBars",
    )
    assert bars.returncode == 0, bars.stderr
    assert len(json.loads(bars.stdout)["bars"]) >= 360
    quote = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps({"symbol": "SIM-AAPL"}),
        platform.address,
        f"{MARKET}/GetQuote",
    )
    assert quote.returncode == 0, quote.stderr
    body = json.loads(quote.stdout)["quote"]
    assert body["simulated"] is True
    assert "previous_close" in body


def _import_environment(platform: Platform) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment["BULLANT_DATA_DIR"] = platform.data_dir
    return environment


def test_import_bars_from_a_csv_file(platform: Platform, tmp_path: Path) -> None:
    csv = tmp_path / "bars.csv"
    csv.write_text(
        "time,open,high,low,close,volume\n"
        "2020-01-02T00:00:00Z,10,11,9,10.5,100\n"
        "2020-01-03T00:00:00Z,10.5,12,10,11,150\n"
        "2020-01-04T00:00:00Z,11,10,9,10,150\n"
    )
    environment = _import_environment(platform)
    command = [BULLANT, "import-bars", str(csv), "--symbol", "sim-aapl", "--timeframe", "1d"]
    refused = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60, check=False)
    assert refused.returncode == 1  # nothing written
    assert "line 4" in refused.stderr
    assert "HIGH_TOO_LOW" in refused.stderr
    checked = subprocess.run(
        [*command, "--validate-only"], capture_output=True, text=True, env=environment, timeout=60, check=False
    )
    assert checked.returncode == 3
    assert checked.stdout == (
        "SIM-AAPL 1d: 3 rows checked, nothing written; if imported: 2 new, 0 changed, 0 already stored, 1 rejected\n"
    )
    skipped = subprocess.run(
        [*command, "--skip-invalid"], capture_output=True, text=True, env=environment, timeout=60, check=False
    )
    assert skipped.returncode == 3  # done, with rejected rows
    assert skipped.stdout == "SIM-AAPL 1d: 3 rows: 2 new, 0 changed, 0 already stored, 1 rejected\n"
    again = subprocess.run(
        [*command, "--skip-invalid"], capture_output=True, text=True, env=environment, timeout=60, check=False
    )
    assert again.stdout == "SIM-AAPL 1d: 3 rows: 0 new, 0 changed, 2 already stored, 1 rejected\n"


def _readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with `prefix`, as words (its trailing comment dropped)."""
    readme = (REPOSITORY / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if line.startswith(prefix)]
    return shlex.split(line, comments=True)


def test_the_readme_imports_the_shipped_sample(platform: Platform) -> None:
    words = _readme_command(".venv/bin/bullant import-bars ")
    assert words[2] == "examples/sim-aapl-1d.csv"
    command = [BULLANT, *words[1:]]  # this test's bullant, run from the repository root as the README is

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=_import_environment(platform),
            cwd=REPOSITORY,
            timeout=60,
            check=False,
        )

    first, second = run(), run()

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stdout == "SIM-AAPL 1d: 5 rows: 5 new, 0 changed, 0 already stored, 0 rejected\n"
    assert second.stdout == "SIM-AAPL 1d: 5 rows: 0 new, 0 changed, 5 already stored, 0 rejected\n"
    # Not a terminal: no progress redrawn, one line at the end.
    assert first.stderr == "[##############################] 100.0% 5 rows, 0 rejected\n"


def test_replaying_a_demo_symbol_from_a_fresh_data_directory() -> None:
    """The README's replay setup on a fresh data directory: the replay starts before the simulator has stored the
    history it replays, waits for it, then replays it; the server answers throughout and stops on SIGTERM."""
    running = Platform(
        "serve", "market", "--port", "0", "--metrics-port", "-1", "--grace", "3",
        env={"BULLANT_MARKET_FEEDS": "sim,replay", "BULLANT_REPLAY_SYMBOLS": "SIM-EUR-USD"},
    ).wait_ready()  # fmt: skip
    try:
        token = dev_token(running.data_dir, "--scopes", "read")
        seen: list[tuple[str, str]] = []

        def replaying() -> bool:
            health = grpcurl(
                "-plaintext", "-max-time", "10", "-d", json.dumps({"service": MARKET}),
                running.address, "grpc.health.v1.Health/Check",
            )  # fmt: skip
            assert health.returncode == 0, f"health did not answer: {health.stderr}\n{running.output()[-3000:]}"
            assert json.loads(health.stdout) == {"status": "SERVING"}
            listed = grpcurl(
                "-plaintext", "-max-time", "10", "-H", f"authorization: Bearer {token}", "-d", "{}",
                running.address, f"{MARKET}/ListFeeds",
            )  # fmt: skip
            assert listed.returncode == 0, listed.stderr
            replay = next(feed for feed in json.loads(listed.stdout)["feeds"] if feed["feed_id"] == "replay")
            seen.append((replay["state"], replay.get("state_reason", "")))
            return replay["state"] == "FEED_STATE_HEALTHY" and "last_tick_time" in replay

        assert wait_until(replaying, timeout=120), seen
        running.terminate()
        assert running.wait(timeout=15) == 0, running.output()[-3000:]
    finally:
        running.stop()
