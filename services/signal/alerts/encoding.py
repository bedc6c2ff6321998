"""Alert rules ⇄ bullant.signal.v1 messages: an Alert's settable fields decoded as given (their rules are
AlertSettings' constructor, services/signal/alerts/rules.py) and stored rules encoded back."""

from __future__ import annotations

from bullant.signal.v1 import signal_pb2
from services.core.parameter_messages import decode_parameters, parameter_values
from services.core.timestamps import timestamp
from services.signal.alerts.rules import MUTABLE_PATHS, AlertDraft
from services.signal.alerts.store import AlertRule


def alert_draft(alert: signal_pb2.Alert) -> AlertDraft:
    """An Alert's settable fields, as given."""
    return AlertDraft(
        display_name=alert.display_name,
        symbol=alert.symbol,
        timeframe=alert.timeframe,
        strategy_id=alert.strategy_id,
        parameters=decode_parameters(alert.parameters),
        min_grade=alert.min_grade,
        channels=tuple(alert.channels),
        cooldown_seconds=alert.cooldown_seconds,
        enabled=alert.enabled if alert.HasField("enabled") else None,
    )


def update_paths(paths: list[str]) -> list[str]:
    """An update mask's paths ("*": every settable field). The declared rules admitted only those, or "*"."""
    return sorted(MUTABLE_PATHS) if "*" in paths else list(paths)


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
