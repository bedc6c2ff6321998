"""Alert rules: the Alert message validated into an AlertRule (every contract rule, each with its reason), and
rules encoded back."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from bullant.signal.v1 import signal_pb2
from services.core.auth.identity import require_identity
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.messages import decode_parameters, parameter_values, timestamp
from services.core.timeframes import Timeframe
from services.signal.alert_store import AlertRule
from services.signal.backtest_store import Owner
from services.signal.encoding import find_strategy, timeframe_of

DEFAULT_COOLDOWN = 3600
# UpdateAlert paths that may change, and the fields each one validates.
MUTABLE_PATHS = frozenset(
    {"display_name", "symbol", "timeframe", "strategy_id", "parameters", "min_grade", "channels", "cooldown_seconds",
     "enabled"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    """The user-settable part of a rule, validated (the symbol's existence is checked by the caller)."""

    display_name: str
    symbol: str
    timeframe: Timeframe
    strategy_id: str
    parameters: dict[str, int | float | bool | str]
    min_grade: int
    channels: tuple[int, ...]
    cooldown_seconds: int
    enabled: bool


def alert_settings(alert: signal_pb2.Alert, *, field: str = "alert") -> AlertSettings:
    """An Alert's settable fields as settings: STRATEGY_NOT_FOUND, UNKNOWN/INVALID_PARAMETER or
    UNSUPPORTED_TIMEFRAME. Its declared rules (symbol, display name, grade, channels NO_CHANNELS, cooldown
    INVALID_COOLDOWN) were checked before the handler, on the fields an update names."""
    symbol = alert.symbol.upper()
    timeframe = timeframe_of(alert.timeframe, f"{field}.timeframe")
    strategy = find_strategy(alert.strategy_id, f"{field}.strategy_id")
    parameters = strategy.resolve(
        decode_parameters(alert.parameters),
        timeframe=timeframe,
        field=f"{field}.parameters",
    )
    return AlertSettings(
        display_name=alert.display_name.strip() or f"{strategy.display_name} on {symbol}",
        symbol=symbol,
        timeframe=timeframe,
        strategy_id=strategy.strategy_id,
        parameters=parameters,
        min_grade=alert.min_grade,
        channels=tuple(dict.fromkeys(alert.channels)),
        cooldown_seconds=alert.cooldown_seconds or DEFAULT_COOLDOWN,
        enabled=alert.enabled if alert.HasField("enabled") else True,
    )


def new_rule(
    settings: AlertSettings, *, alert_id: str, owner: Owner, now: datetime, request_id: str | None
) -> AlertRule:
    """A rule to create; its request digest covers every setting."""
    digest = hashlib.sha256(repr(sorted(settings_fields(settings).items())).encode()).hexdigest()
    return AlertRule(
        alert_id=alert_id,
        owner=owner,
        create_time=now,
        update_time=now,
        request_id=request_id,
        request_digest=digest,
        **settings_fields(settings),  # type: ignore[arg-type]
    )


def settings_fields(settings: AlertSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in AlertSettings.__dataclass_fields__}


def updated(rule: AlertRule, alert: signal_pb2.Alert, paths: list[str], now: datetime) -> AlertRule:
    """The rule with the masked fields taken from `alert` and the whole result validated again (a new timeframe
    must suit the strategy, a new strategy must accept the parameters)."""
    merged = alert_message(rule)
    for path in paths:
        if path == "parameters":
            merged.parameters.clear()
            for name, value in alert.parameters.items():
                merged.parameters[name].CopyFrom(value)
        elif path == "channels":
            del merged.channels[:]
            merged.channels.extend(alert.channels)
        elif path == "enabled":
            merged.enabled = alert.enabled
        else:
            setattr(merged, path, getattr(alert, path))
    settings = alert_settings(merged)
    return replace(rule, update_time=now, **settings_fields(settings))  # type: ignore[arg-type]


def alert_message(rule: AlertRule) -> signal_pb2.Alert:
    message = signal_pb2.Alert(
        alert_id=rule.alert_id,
        display_name=rule.display_name,
        symbol=rule.symbol,
        timeframe=int(rule.timeframe),  # type: ignore[arg-type]
        strategy_id=rule.strategy_id,
        parameters=parameter_values(rule.parameters),
        min_grade=rule.min_grade,  # type: ignore[arg-type]
        channels=list(rule.channels),  # type: ignore[arg-type]
        cooldown_seconds=rule.cooldown_seconds,
        enabled=rule.enabled,
        create_time=timestamp(rule.create_time),
        update_time=timestamp(rule.update_time),
        trigger_count=rule.trigger_count,
    )
    if rule.last_trigger_time is not None:
        message.last_trigger_time.CopyFrom(timestamp(rule.last_trigger_time))
    return message


def caller() -> Owner:
    """The calling account, which owns what it creates here."""
    identity = require_identity()
    return Owner(identity.account_id, identity.shard)


def new_alert_id() -> str:
    return "alr_" + secrets.token_hex(12)


def alert_id_of(value: str, field: str = "alert_id") -> str:
    """A requested alert id: INVALID_ARGUMENT when empty, ALERT_NOT_FOUND when it cannot be one."""
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(value) > 32 or not value.isascii() or not value.replace("_", "").isalnum():
        raise alert_not_found(value)
    return value


def alert_not_found(alert_id: str) -> NotFound:
    return NotFound(f"no alert {alert_id[:64]!r}", reason="ALERT_NOT_FOUND", metadata={"alert_id": alert_id[:64]})
