"""Records of the live side: stored signals, the series and units the engine evaluates, alert firings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from services.core.accounts import AccountRef
from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe
from services.signal.fusion import BUY, Grade

HORIZONS = (1, 5, 20)


def parameters_key(parameters: dict[str, ParamValue]) -> str:
    """A short stable key of a full parameter set (defaults filled in)."""
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """The bars of one symbol in one timeframe: what the engine aggregates and evaluates at each close."""

    symbol: str
    timeframe: Timeframe


@dataclass(frozen=True, slots=True)
class Unit:
    """One strategy with one full parameter set on one series: the engine evaluates each at every close of the
    series. `platform` units run the strategy's defaults and their signals are everyone's; the others exist for
    alerts with their own parameters and are seen only through those alerts."""

    series: SeriesKey
    strategy_id: str
    parameters: dict[str, ParamValue] = field(compare=False, hash=False)
    parameters_key: str

    @classmethod
    def of(cls, series: SeriesKey, strategy_id: str, parameters: dict[str, ParamValue]) -> Unit:
        return cls(series, strategy_id, parameters, parameters_key(parameters))

    def signal_id(self, bar_time: datetime) -> str:
        """The id of this unit's signal at a bar: the same on every replica and after any fail-over, so a bar
        evaluated twice stores one signal."""
        text = "|".join((self.series.symbol, str(int(self.series.timeframe)), self.strategy_id, self.parameters_key))
        digest = hashlib.sha256(f"{text}|{bar_time.isoformat()}".encode()).hexdigest()
        return "sig_" + digest[:28]


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSignal:
    """A stored signal (bullant.signal.v1.Signal): a strategy's event at a bar close, fused with the model's
    prediction when one came. Enum fields carry the proto numbers; `side` is +1 (BUY) or -1 (SELL)."""

    signal_id: str
    symbol: str
    timeframe: Timeframe
    strategy_id: str
    parameters: dict[str, ParamValue]
    parameters_key: str
    platform: bool
    side: int
    strong: bool
    technical_confidence: float
    model_confidence: float | None
    model_agrees: bool | None
    fused_confidence: float
    grade: Grade
    technical_only_reason: int
    reason: str
    price: float
    bar_time: datetime
    create_time: datetime
    model_prediction_id: str = ""
    model_id: str = ""
    indicator_values: dict[str, float] = field(default_factory=dict)
    # Directional returns after each horizon (bars), filled in by the performance job; None while pending.
    returns: dict[int, float | None] = field(default_factory=dict)
    outcome_time: datetime | None = None

    @property
    def technical_only(self) -> bool:
        return self.model_confidence is None

    @property
    def close_time(self) -> datetime:
        """When the signal's bar closed."""
        return self.bar_time + self.timeframe.delta


def grade_fires(min_grade: int, grade: int) -> bool:
    """Whether a signal of `grade` fires a rule with `min_grade` (bullant.signal.v1.Alert.min_grade): BUY fires on
    BUY and STRONG_BUY, STRONG_BUY only on itself, likewise for the sell side; HOLD or unspecified on every grade."""
    if min_grade in (0, Grade.HOLD):
        return True
    if min_grade == Grade.STRONG_BUY:
        return grade == Grade.STRONG_BUY
    if min_grade == Grade.BUY:
        return grade in (Grade.BUY, Grade.STRONG_BUY)
    if min_grade == Grade.STRONG_SELL:
        return grade == Grade.STRONG_SELL
    if min_grade == Grade.SELL:
        return grade in (Grade.SELL, Grade.STRONG_SELL)
    return False


def side_name(side: int) -> str:
    return "BUY" if side == BUY else "SELL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Firing:
    """One firing of an alert rule by a signal, stored in the shard of the rule's owner; `notification_id` is the
    outbox row written for it, 0 until written."""

    firing_id: str
    alert_id: str
    owner: AccountRef
    signal_id: str
    bar_time: datetime
    trigger_time: datetime
    notification_id: int = 0


def firing_id(alert_id: str, signal_id: str) -> str:
    """A rule fires at most once per signal: the firing's id is derived from both."""
    return "fir_" + hashlib.sha256(f"{alert_id}|{signal_id}".encode()).hexdigest()[:28]
