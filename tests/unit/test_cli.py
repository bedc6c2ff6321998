"""The `bullant` command line: every option explained, the import summary in plain words, the progress bar on and
off a terminal."""

from __future__ import annotations

import argparse
import base64
import io
import json
from datetime import datetime

import pytest

from services import cli
from services.account.development import development_ref
from services.core.accounts import AccountRef
from services.core.clock import utc_now
from services.core.db import schema
from services.core.db.databases import DatabaseConfig, Databases
from services.core.progress import ProgressBar
from services.market.imports.bar_import import ImportOutcome
from services.market.imports.command import summary
from services.market.records import Timeframe
from tests.support import fresh_data_dir, make_settings


def _commands() -> dict[str, argparse.ArgumentParser]:
    [subparsers] = [action for action in cli._parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_every_option_of_every_command_is_explained() -> None:
    unexplained = [
        f"{name} {action.dest}"
        for name, command in _commands().items()
        for action in command._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert unexplained == []


def test_the_token_command_says_how_it_relates_to_signing_in() -> None:
    text = _commands()["token"].format_help()
    assert "before signing in exists" not in text
    assert "without registering and logging in" in text
    assert "AccountService/Login" in text


def test_import_bars_help_lists_every_exit_code() -> None:
    text = _commands()["import-bars"].format_help()
    for code in ("0", "1", "2", "3"):
        assert f"\n  {code}  " in text
    assert "examples/sim-aapl-1d.csv" in text


def test_version_is_an_option_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == cli.version_text() + "\n"


def test_the_import_summary_is_plain() -> None:
    outcome = ImportOutcome(inserted=0, updated=1, unchanged=3, rejected=2, first_open_time=datetime(2024, 1, 2))
    assert summary("SIM-AAPL", Timeframe.D1, outcome, validate_only=False) == (
        "SIM-AAPL 1d: 6 rows: 0 new, 1 changed, 3 already stored, 2 rejected"
    )
    assert summary("SIM-AAPL", Timeframe.D1, outcome, validate_only=True) == (
        "SIM-AAPL 1d: 6 rows checked, nothing written; if imported: 0 new, 1 changed, 3 already stored, 2 rejected"
    )


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_quick_work_prints_one_line_at_the_end() -> None:
    stream, clock = _Stream(tty=False), _Clock()
    bar = ProgressBar(stream, width=10, clock=clock)
    bar.show(0.5, "half")
    clock.now += 1.0
    bar.show(1.0, "all")
    bar.show(1.0, "3 rows", final=True)
    bar.show(1.0, "3 rows", final=True)  # drawn once
    assert stream.getvalue() == "[##########] 100.0% 3 rows\n"


def test_off_a_terminal_long_work_prints_a_line_every_ten_seconds() -> None:
    stream, clock = _Stream(tty=False), _Clock()
    bar = ProgressBar(stream, width=10, clock=clock)
    for step in range(1, 26):
        clock.now += 1.0
        bar.show(step / 25, f"step {step}")
    bar.show(1.0, "done", final=True)
    assert stream.getvalue().splitlines() == [
        "[####------]  40.0% step 10",
        "[########--]  80.0% step 20",
        "[##########] 100.0% done",
    ]


def test_on_a_terminal_the_bar_is_redrawn_in_place() -> None:
    stream, clock = _Stream(tty=True), _Clock()
    bar = ProgressBar(stream, width=10, clock=clock)
    bar.show(0.1, "a")  # too soon after the bar was made
    clock.now += 0.2
    bar.show(0.5, "b")
    bar.show(0.6, "c")  # too soon after the last draw
    clock.now += 0.2
    bar.show(1.0, "d", final=True)
    assert stream.getvalue() == "\r[#####-----]  50.0% b\r[##########] 100.0% d\n"


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def test_a_development_token_claims_the_shard_its_account_is_routed_to() -> None:
    settings = make_settings(shard_count=2)
    databases = Databases(DatabaseConfig.from_settings(settings))
    await databases.start()
    try:
        # Account 4 recorded on shard 1 (not 4 % 2): the directory, not the arithmetic, decides.
        await databases.run_global(
            lambda connection: connection.execute(
                schema.shard_directory.insert().values(account_id=4, shard_id=1, assign_time=utc_now())
            )
        )
    finally:
        await databases.stop()
    assert await development_ref(settings, 4) == AccountRef(4, 1)
    # A made-up account gets the shard sign-up would give it.
    assert await development_ref(settings, 7) == AccountRef(7, 1)
    assert await development_ref(settings, 8) == AccountRef(8, 0)


def test_the_token_command_signs_the_routed_shard(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = fresh_data_dir()
    monkeypatch.setenv("BULLANT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("BULLANT_SHARD_COUNT", "2")
    assert cli.main(["token", "--account-id", "3"]) == 0
    claims = _claims(capsys.readouterr().out.strip())
    assert (claims["sub"], claims["shard"]) == ("3", 1)
