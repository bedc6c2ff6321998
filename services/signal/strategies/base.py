"""What every strategy is: typed, validated parameters and a pure, vectorised function of closed bars to per-bar
decisions, from which signal events (side, strength, confidence, a reason with the numbers) are read.

Contract of `StrategyDef.compute(bars, params)`:
- it returns one decision per bar, and the decision at bar t depends only on bars 0..t (no look-ahead; every
  strategy has a test that rewrites the bars after t and checks that decisions up to t do not change);
- `side[t]` is +1 (BUY), -1 (SELL) or 0 (no event); `strong[t]` and `confidence[t]` (in [0, 1], derived from how
  clearly the condition is met, never a constant) matter only where side is not 0;
- `values` are the indicator series behind the decisions (one value per bar, NaN while warming up), shown with each
  event and used by `explain` to write the reason.
The same function serves EvaluateStrategy, backtests (events become target positions) and the live engine (which
runs it over a window of the latest closed bars and reads the last bar's decision).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from services.core import parameters
from services.core.errors import FieldViolation, InvalidArgument
from services.core.parameters import Param, Params, ParamValue, resolve_params
from services.core.timeframes import Timeframe
from services.signal.indicators.base import Array, Bars

StrategyParam = Param


def integer(
    name: str, description: str, default: int, minimum: int, maximum: int, *, unit: str = "bars"
) -> StrategyParam:
    """An INTEGER parameter (periods, counts), in bars unless said otherwise."""
    return parameters.integer(name, description, default, minimum, maximum, unit=unit)


number = parameters.number
boolean = parameters.boolean
choice = parameters.choice


@dataclass(frozen=True, slots=True)
class StrategyBars:
    """Closed bars of one symbol, ascending: open times as datetime64[ns] (UTC), float64 prices and the timeframe's
    `span`."""

    open_time: npt.NDArray[np.datetime64]
    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    span: timedelta

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @property
    def indicator_bars(self) -> Bars:
        """The arrays in the indicators' input form."""
        return Bars(self.open, self.high, self.low, self.close, self.volume)

    def head(self, count: int) -> StrategyBars:
        """The first `count` bars."""
        return StrategyBars(
            self.open_time[:count],
            self.open[:count],
            self.high[:count],
            self.low[:count],
            self.close[:count],
            self.volume[:count],
            self.span,
        )


@dataclass(frozen=True, slots=True)
class SignalFrame:
    """A strategy's decisions over n bars (see the module docstring)."""

    side: npt.NDArray[np.int8]
    strong: npt.NDArray[np.bool_]
    confidence: Array
    values: dict[str, Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.side.shape[0])

    def event_indices(self, start: int = 0) -> npt.NDArray[np.intp]:
        """Bars at or after `start` with an event."""
        return np.flatnonzero(self.side[start:]) + start

    def target_positions(self) -> Array:
        """The backtest engine's signal: +1 after a BUY, -1 after a SELL, NaN (no change) elsewhere."""
        targets = np.full(len(self), np.nan)
        targets[self.side > 0] = 1.0
        targets[self.side < 0] = -1.0
        return targets


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalEvent:
    """One event read from a frame: the bar index, its decision, the reason and the values behind it."""

    index: int
    side: int
    strong: bool
    confidence: float
    reason: str
    price: float
    values: dict[str, float]


Explain = Callable[[Params, Mapping[str, float], int, bool], str]
Constraint = Callable[[Params, Timeframe | None], list[FieldViolation]]


def _no_constraints(params: Params, timeframe: Timeframe | None) -> list[FieldViolation]:
    return []


def _no_history(params: Params) -> timedelta:
    return timedelta(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyDef:
    """A strategy: identity and description, parameters, and its two functions.

    - `compute(bars, params)` → SignalFrame (params are resolved: every parameter present with its Python type);
    - `explain(params, values_at_bar, side, strong)` → the human-readable reason with the numbers;
    - `warmup(params)` → bars before the first bar that can signal;
    - `history(params)` → besides those bars, the time span the bars must cover before the first bar that can
      signal (multi-timeframe strategies need completed higher-timeframe bars; zero for the others);
    - `constraints(params, timeframe)` → violations across parameters (e.g. fast < slow) or against the timeframe
      (field "timeframe" for those; the service answers UNSUPPORTED_TIMEFRAME).
    """

    strategy_id: str
    display_name: str
    description: str
    params: tuple[StrategyParam, ...]
    tags: tuple[str, ...]
    compute: Callable[[StrategyBars, Params], SignalFrame]
    explain: Explain
    warmup: Callable[[Params], int]
    timeframes: tuple[Timeframe, ...] = ()
    constraints: Constraint = _no_constraints
    history: Callable[[Params], timedelta] = _no_history

    @property
    def defaults(self) -> dict[str, ParamValue]:
        return {param.name: param.default for param in self.params}

    def resolve(
        self, given: Params, *, timeframe: Timeframe | None = None, field: str = "parameters"
    ) -> dict[str, ParamValue]:
        """Every parameter's value (defaults filled in). INVALID_ARGUMENT with a violation per problem: reason
        UNKNOWN_PARAMETER when a name is unknown, UNSUPPORTED_TIMEFRAME when the timeframe is refused, else
        INVALID_PARAMETER."""
        values = resolve_params(self.params, given, owner=self.strategy_id, field=field)
        if timeframe is not None and self.timeframes and timeframe not in self.timeframes:
            allowed = ", ".join(item.proto_name for item in self.timeframes)
            raise InvalidArgument(
                FieldViolation("timeframe", f"{self.strategy_id} runs on {allowed}"), reason="UNSUPPORTED_TIMEFRAME"
            )
        problems = self.constraints(values, timeframe)
        if problems:
            on_timeframe = any(item.field == "timeframe" for item in problems)
            rewritten = [
                item if item.field == "timeframe" else FieldViolation(f"{field}.{item.field}", item.description)
                for item in problems
            ]
            raise InvalidArgument(rewritten, reason="UNSUPPORTED_TIMEFRAME" if on_timeframe else "INVALID_PARAMETER")
        return values

    def evaluate(self, bars: StrategyBars, params: Params) -> SignalFrame:
        """The decisions over `bars` (params must be resolved), checked for shape and range."""
        frame = self.compute(bars, params)
        count = len(bars)
        if frame.side.shape != (count,) or frame.strong.shape != (count,) or frame.confidence.shape != (count,):
            raise AssertionError(f"{self.strategy_id} returned a frame of the wrong length")
        return frame

    def events(self, bars: StrategyBars, frame: SignalFrame, params: Params, *, start: int = 0) -> list[SignalEvent]:
        """The events at or after bar `start`, with reasons and the values behind them."""
        events = []
        for index in frame.event_indices(start):
            at = {name: float(series[index]) for name, series in frame.values.items()}
            side, strong = int(frame.side[index]), bool(frame.strong[index])
            events.append(
                SignalEvent(
                    index=int(index),
                    side=side,
                    strong=strong,
                    confidence=float(np.clip(frame.confidence[index], 0.0, 1.0)),
                    reason=self.explain(params, at, side, strong),
                    price=float(bars.close[index]),
                    values={name: value for name, value in at.items() if math.isfinite(value)},
                )
            )
        return events


REGISTRY: dict[str, StrategyDef] = {}


def register(definition: StrategyDef) -> StrategyDef:
    """Add a strategy to the registry (each strategy module registers its own at import)."""
    if definition.strategy_id in REGISTRY:
        raise ValueError(f"strategy {definition.strategy_id} registered twice")
    REGISTRY[definition.strategy_id] = definition
    return definition


def frame(
    buy: npt.NDArray[np.bool_],
    sell: npt.NDArray[np.bool_],
    *,
    strong: npt.NDArray[np.bool_],
    confidence: Array,
    values: dict[str, Array],
) -> SignalFrame:
    """A frame from boolean buy and sell conditions (a bar where both hold has no event)."""
    side = np.zeros(buy.shape[0], dtype=np.int8)
    side[buy & ~sell] = 1
    side[sell & ~buy] = -1
    confidence = np.where(side != 0, np.clip(np.nan_to_num(confidence, nan=0.0), 0.0, 1.0), 0.0)
    return SignalFrame(side, np.asarray(strong & (side != 0), dtype=np.bool_), confidence, values)
