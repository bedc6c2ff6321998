"""Alert rules through real channels: create (defaults filled in, idempotent on request_id), list, get, update by
mask, delete; another account's rules are NOT_FOUND; every bad input gets the contract's reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from alembic import command
from alembic.config import Config
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import Connection, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.db.migrate import alembic_config, upgrade_to_head
from services.signal.alerts.store import alerts
from services.signal.backtests.store import backtests
from services.signal.live.signal_store import signals
from services.signal.strategies.base import REGISTRY as STRATEGIES
from tests.account_platform import refusal
from tests.signal_platform import START, SignalPlatform, StoredSymbol, running_signal_platform, stamp

SYMBOLS = (StoredSymbol("DEMO", "SIM-AAPL"), StoredSymbol("OTHER", "SIM-AAPL", seed=12))


@pytest.fixture
async def platform() -> AsyncIterator[SignalPlatform]:
    async with running_signal_platform(SYMBOLS, days=30, max_alerts_per_account=3) as running:
        yield running


def _alert(**extra: Any) -> signal_pb2.Alert:
    values: dict[str, Any] = {
        "symbol": "demo",
        "timeframe": common_pb2.TIMEFRAME_1D,
        "strategy_id": "rsi_reversal",
        "channels": [signal_pb2.ALERT_CHANNEL_IN_APP],
    }
    values.update(extra)
    return signal_pb2.Alert(**values)


async def _create(platform: SignalPlatform, request_id: str = "", **extra: Any) -> signal_pb2.Alert:
    reply = await platform.signal.CreateAlert(
        signal_pb2.CreateAlertRequest(request_id=request_id, alert=_alert(**extra)), metadata=platform.trader
    )
    return reply.alert


async def test_the_life_of_an_alert_rule(platform: SignalPlatform) -> None:
    created = await _create(platform, request_id="alert-1", min_grade=signal_pb2.SIGNAL_GRADE_BUY)
    assert created.alert_id.startswith("alr_")
    assert created.symbol == "DEMO"
    assert created.display_name.endswith(" on DEMO")  # "<strategy display name> on <symbol>"
    assert created.cooldown_seconds == 3600  # the server default
    assert created.enabled
    assert created.parameters["period"].int_value == 14  # defaults stored filled in
    assert created.trigger_count == 0
    assert not created.HasField("last_trigger_time")
    again = await _create(platform, request_id="alert-1", min_grade=signal_pb2.SIGNAL_GRADE_BUY)
    assert again == created
    call = platform.signal.CreateAlert(
        signal_pb2.CreateAlertRequest(request_id="alert-1", alert=_alert(cooldown_seconds=120)),
        metadata=platform.trader,
    )
    assert await refusal(call) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")

    second = await _create(platform, symbol="OTHER", enabled=False)
    listed = await platform.signal.ListAlerts(signal_pb2.ListAlertsRequest(), metadata=platform.trader)
    assert [item.alert_id for item in listed.alerts] == [second.alert_id, created.alert_id]
    page = await platform.signal.ListAlerts(signal_pb2.ListAlertsRequest(page_size=1), metadata=platform.trader)
    rest = await platform.signal.ListAlerts(
        signal_pb2.ListAlertsRequest(page_size=1, page_token=page.next_page_token), metadata=platform.trader
    )
    assert [page.alerts[0].alert_id, rest.alerts[0].alert_id] == [second.alert_id, created.alert_id]
    enabled = await platform.signal.ListAlerts(signal_pb2.ListAlertsRequest(enabled=True), metadata=platform.trader)
    assert [item.alert_id for item in enabled.alerts] == [created.alert_id]
    by_symbol = await platform.signal.ListAlerts(signal_pb2.ListAlertsRequest(symbol="other"), metadata=platform.trader)
    assert [item.alert_id for item in by_symbol.alerts] == [second.alert_id]

    update = signal_pb2.UpdateAlertRequest(
        alert=signal_pb2.Alert(
            alert_id=created.alert_id,
            cooldown_seconds=600,
            parameters={"period": common_pb2.ParameterValue(int_value=7)},
            enabled=False,
            symbol="IGNORED",
        ),
        update_mask=FieldMask(paths=["cooldown_seconds", "parameters", "enabled"]),
    )
    changed = (await platform.signal.UpdateAlert(update, metadata=platform.trader)).alert
    assert changed.cooldown_seconds == 600
    assert changed.parameters["period"].int_value == 7
    assert changed.parameters["oversold"].double_value == 30.0  # the replaced map is filled in again
    assert not changed.enabled
    assert changed.symbol == "DEMO"  # not in the mask
    got = await platform.signal.GetAlert(
        signal_pb2.GetAlertRequest(alert_id=created.alert_id), metadata=platform.trader
    )
    assert got.alert == changed

    await platform.signal.DeleteAlert(
        signal_pb2.DeleteAlertRequest(alert_id=created.alert_id), metadata=platform.trader
    )
    gone = platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=created.alert_id), metadata=platform.trader)
    assert await refusal(gone) == (grpc.StatusCode.NOT_FOUND, "ALERT_NOT_FOUND")
    delete = signal_pb2.DeleteAlertRequest(alert_id=created.alert_id)
    assert await refusal(platform.signal.DeleteAlert(delete, metadata=platform.trader)) == (
        grpc.StatusCode.NOT_FOUND,
        "ALERT_NOT_FOUND",
    )
    delete.allow_missing = True
    await platform.signal.DeleteAlert(delete, metadata=platform.trader)


async def test_another_accounts_rules_are_not_found(platform: SignalPlatform) -> None:
    mine = await _create(platform)
    theirs = await platform.signal.ListAlerts(signal_pb2.ListAlertsRequest(), metadata=platform.other_trader)
    assert list(theirs.alerts) == []
    update = signal_pb2.UpdateAlertRequest(
        alert=signal_pb2.Alert(alert_id=mine.alert_id, enabled=False), update_mask=FieldMask(paths=["enabled"])
    )
    for call in (
        platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=mine.alert_id), metadata=platform.other_trader),
        platform.signal.UpdateAlert(update, metadata=platform.other_trader),
        platform.signal.DeleteAlert(
            signal_pb2.DeleteAlertRequest(alert_id=mine.alert_id), metadata=platform.other_trader
        ),
    ):
        assert await refusal(call) == (grpc.StatusCode.NOT_FOUND, "ALERT_NOT_FOUND")
    still = await platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=mine.alert_id), metadata=platform.trader)
    assert still.alert.enabled


async def test_the_per_account_limit(platform: SignalPlatform) -> None:
    for _ in range(3):
        await _create(platform)
    call = platform.signal.CreateAlert(signal_pb2.CreateAlertRequest(alert=_alert()), metadata=platform.trader)
    assert await refusal(call) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "ALERT_LIMIT_EXCEEDED")
    other = await platform.signal.CreateAlert(
        signal_pb2.CreateAlertRequest(alert=_alert()), metadata=platform.other_trader
    )
    assert other.alert.alert_id


@pytest.mark.parametrize(
    ("extra", "code", "reason"),
    [
        ({"symbol": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"symbol": "NOPE"}, grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND"),
        ({"strategy_id": "nope"}, grpc.StatusCode.NOT_FOUND, "STRATEGY_NOT_FOUND"),
        ({"strategy_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"timeframe": 0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"strategy_id": "multi_timeframe"}, grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_TIMEFRAME"),
        (
            {"parameters": {"speed": common_pb2.ParameterValue(int_value=1)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_PARAMETER",
        ),
        (
            {"parameters": {"period": common_pb2.ParameterValue(double_value=1.5)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        ({"cooldown_seconds": 30}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COOLDOWN"),
        ({"cooldown_seconds": 700_000}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COOLDOWN"),
        ({"channels": []}, grpc.StatusCode.INVALID_ARGUMENT, "NO_CHANNELS"),
        ({"channels": [99]}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"min_grade": 42}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"display_name": "x" * 201}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_bad_alerts(platform: SignalPlatform, extra: dict[str, Any], code: grpc.StatusCode, reason: str) -> None:
    call = platform.signal.CreateAlert(signal_pb2.CreateAlertRequest(alert=_alert(**extra)), metadata=platform.trader)
    assert await refusal(call) == (code, reason)


async def test_bad_updates_and_ids(platform: SignalPlatform) -> None:
    mine = await _create(platform)
    for paths in ([], ["alert_id"], ["trigger_count"], ["create_time"], ["nope"]):
        call = platform.signal.UpdateAlert(
            signal_pb2.UpdateAlertRequest(
                alert=signal_pb2.Alert(alert_id=mine.alert_id), update_mask=FieldMask(paths=paths)
            ),
            metadata=platform.trader,
        )
        assert await refusal(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPDATE_MASK")
    # A change that breaks the rule as a whole is refused: multi_timeframe does not run on daily bars.
    call = platform.signal.UpdateAlert(
        signal_pb2.UpdateAlertRequest(
            alert=signal_pb2.Alert(alert_id=mine.alert_id, strategy_id="multi_timeframe"),
            update_mask=FieldMask(paths=["strategy_id", "parameters"]),
        ),
        metadata=platform.trader,
    )
    assert await refusal(call) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_TIMEFRAME")
    for alert_id in ("alr_missing", "../x", "a" * 300):
        get = platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=alert_id), metadata=platform.trader)
        assert await refusal(get) == (grpc.StatusCode.NOT_FOUND, "ALERT_NOT_FOUND")
    empty = platform.signal.GetAlert(signal_pb2.GetAlertRequest(), metadata=platform.trader)
    assert (await refusal(empty))[0] == grpc.StatusCode.INVALID_ARGUMENT
    create = platform.signal.CreateAlert(signal_pb2.CreateAlertRequest(alert=_alert()), metadata=platform.reader)
    assert await refusal(create) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")


async def _migrate(platform: SignalPlatform, revision: str | None) -> None:
    """Every database of the running platform down to `revision`, or (None) up to head, through Alembic."""
    for name, url, kind in platform.deps.databases.config.locations():
        engine = create_async_engine(url)
        try:
            if revision is None:
                await upgrade_to_head(engine, kind, name)
                continue
            config = alembic_config(kind)

            def down(connection: Connection, config: Config = config) -> None:
                config.attributes["connection"] = connection
                command.downgrade(config, revision)

            async with engine.begin() as connection:
                await connection.run_sync(down)
        finally:
            await engine.dispose()


def _signal_row(strategy_id: str, signal_id: str) -> dict[str, object]:
    """A stored live signal (every column filled; only the strategy matters here)."""
    row: dict[str, object] = {}
    for column in signals.columns:
        python = column.type.python_type
        row[column.name] = {str: "", int: 0, float: 0.0, bool: False, datetime: datetime(2026, 1, 5)}[python]
    return {**row, "signal_id": signal_id, "strategy_id": strategy_id, "parameters": "{}", "indicator_values": "{}"}


async def _stored_strategies(platform: SignalPlatform) -> dict[str, str]:
    async with platform.deps.databases.global_transaction() as connection:
        rows = await connection.execute(select(signals.c.signal_id, signals.c.strategy_id))
        return {row.signal_id: row.strategy_id for row in rows}


async def test_rules_backtests_and_signals_of_the_trend_reading_move_to_its_id_on_upgrade(
    platform: SignalPlatform,
) -> None:
    """Before issue 16, bollinger_breakout was the trend-following reading (BUY above the upper band); now it is the
    seed's rule and the trend reading is bollinger_trend_breakout. Downgrading gives the old id to what the trend
    reading made (as the old code stored it); upgrading moves it back, so an alert keeps firing on its side."""
    trend = STRATEGIES["bollinger_trend_breakout"]
    rule = await _create(platform, strategy_id="bollinger_trend_breakout")
    other = await _create(platform, strategy_id="rsi_reversal")
    config = signal_pb2.BacktestConfig(
        strategy_id="bollinger_trend_breakout",
        symbols=["DEMO"],
        timeframe=common_pb2.TIMEFRAME_1D,
        range=common_pb2.TimeRange(start_time=stamp(START)),
        initial_cash=10_000.0,
    )
    run = [
        message
        async for message in platform.signal.RunBacktest(
            signal_pb2.RunBacktestRequest(config=config), metadata=platform.trader
        )
    ]
    backtest_id = run[-1].backtest_id
    async with platform.deps.databases.global_transaction() as connection:
        await connection.execute(insert(signals), [_signal_row("bollinger_trend_breakout", "sig1")])
        await connection.execute(insert(signals), [_signal_row("ema_cross", "sig2")])

    await _migrate(platform, "0005")
    async with platform.deps.databases.shard_transaction(0) as connection:
        stored = (await connection.execute(select(alerts.c.alert_id, alerts.c.strategy_id))).all()
        config_json = (await connection.execute(select(backtests.c.config, backtests.c.strategy_id))).one()
    assert dict(stored) == {rule.alert_id: "bollinger_breakout", other.alert_id: "rsi_reversal"}
    assert config_json.strategy_id == "bollinger_breakout"
    assert '"strategyId": "bollinger_breakout"' in config_json.config
    assert await _stored_strategies(platform) == {"sig1": "bollinger_breakout", "sig2": "ema_cross"}

    await _migrate(platform, None)
    got = (
        await platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=rule.alert_id), metadata=platform.trader)
    ).alert
    assert got == rule
    assert got.strategy_id == "bollinger_trend_breakout"
    assert set(got.parameters) == {param.name for param in trend.params}
    kept = (
        await platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=other.alert_id), metadata=platform.trader)
    ).alert
    assert kept == other
    stored_backtest = (
        await platform.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id=backtest_id), metadata=platform.trader
        )
    ).backtest
    assert stored_backtest == run[-1].backtest
    assert stored_backtest.config.strategy_id == "bollinger_trend_breakout"
    assert await _stored_strategies(platform) == {"sig1": "bollinger_trend_breakout", "sig2": "ema_cross"}
