"""Conversions between the live records and bullant.signal.v1 messages, and the envelope the engine publishes them
in to every replica's StreamSignals hub (routing fields up front, so the hub filters without decoding)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from bullant.signal.v1 import signal_pb2
from services.core.parameter_messages import parameter_values
from services.core.timestamps import timestamp
from services.signal.fusion import BUY
from services.signal.live.records import Firing, LiveSignal

_SIDE_BUY, _SIDE_SELL = 1, 2  # bullant.common.v1.Side


def side_number(side: int) -> int:
    """+1 / -1 as bullant.common.v1.Side."""
    return _SIDE_BUY if side == BUY else _SIDE_SELL


def signal_message(signal: LiveSignal) -> signal_pb2.Signal:
    message = signal_pb2.Signal(
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        timeframe=int(signal.timeframe),  # type: ignore[arg-type]
        strategy_id=signal.strategy_id,
        parameters=parameter_values(signal.parameters),
        side=side_number(signal.side),  # type: ignore[arg-type]
        strength=signal_pb2.SIGNAL_STRENGTH_STRONG if signal.strong else signal_pb2.SIGNAL_STRENGTH_WEAK,
        technical_confidence=signal.technical_confidence,
        fused_confidence=signal.fused_confidence,
        grade=int(signal.grade),  # type: ignore[arg-type]
        technical_only=signal.technical_only,
        technical_only_reason=signal.technical_only_reason,  # type: ignore[arg-type]
        reason=signal.reason,
        price=signal.price,
        bar_time=timestamp(signal.bar_time),
        create_time=timestamp(signal.create_time),
        model_prediction_id=signal.model_prediction_id,
        model_id=signal.model_id,
        indicator_values=signal.indicator_values,
    )
    if signal.model_confidence is not None:
        message.model_confidence = signal.model_confidence
    if signal.model_agrees is not None:
        message.model_agrees = signal.model_agrees
    return message


def triggered_message(firing: Firing, display_name: str, signal: LiveSignal) -> signal_pb2.AlertTriggered:
    return signal_pb2.AlertTriggered(
        alert_id=firing.alert_id,
        alert_display_name=display_name,
        signal=signal_message(signal),
        trigger_time=timestamp(firing.trigger_time),
        notification_id=str(firing.notification_id) if firing.notification_id else "",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One published event: a platform signal (account 0) or an alert firing for `account_id`, with the fields
    StreamSignals filters on, and the encoded StreamSignalsResponse."""

    event_id: str
    account_id: int
    symbol: str
    strategy_id: str
    timeframe: int
    grade: int
    payload: bytes
    created: datetime | None = None

    def encode(self) -> bytes:
        head = [self.event_id, self.account_id, self.symbol, self.strategy_id, self.timeframe, self.grade]
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        head, _, payload = data.partition(b"\n")
        event_id, account_id, symbol, strategy_id, timeframe, grade = json.loads(head)
        return cls(
            event_id=str(event_id),
            account_id=int(account_id),
            symbol=str(symbol),
            strategy_id=str(strategy_id),
            timeframe=int(timeframe),
            grade=int(grade),
            payload=payload,
        )

    @property
    def is_alert(self) -> bool:
        return self.account_id != 0


def signal_envelope(signal: LiveSignal) -> Envelope:
    payload = signal_pb2.StreamSignalsResponse(signal=signal_message(signal)).SerializeToString()
    return Envelope(
        event_id=signal.signal_id,
        account_id=0,
        symbol=signal.symbol,
        strategy_id=signal.strategy_id,
        timeframe=int(signal.timeframe),
        grade=int(signal.grade),
        payload=payload,
    )


def firing_envelope(firing: Firing, display_name: str, signal: LiveSignal) -> Envelope:
    payload = signal_pb2.StreamSignalsResponse(
        alert_triggered=triggered_message(firing, display_name, signal)
    ).SerializeToString()
    return Envelope(
        event_id=firing.firing_id,
        account_id=firing.owner.account_id,
        symbol=signal.symbol,
        strategy_id=signal.strategy_id,
        timeframe=int(signal.timeframe),
        grade=int(signal.grade),
        payload=payload,
    )
