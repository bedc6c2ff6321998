"""Evaluating a series' units at one closed bar: each strategy runs over the same history EvaluateStrategy would
read before that bar (so live and on-demand decisions agree exactly), then the repeat rule drops a side a unit has
just signalled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.signal.history import MAX_HISTORY_BARS, History, window_start
from services.signal.live.records import Unit
from services.signal.live.series import BarBuffer
from services.signal.strategies.base import REGISTRY, SignalEvent, StrategyDef


@dataclass(slots=True)
class UnitState:
    """A unit, its strategy and history need, and its last signal (for the repeat rule)."""

    unit: Unit
    strategy: StrategyDef
    need: History
    platform: bool
    last_side: int = 0
    last_bar: datetime | None = None

    @classmethod
    def of(cls, unit: Unit, *, platform: bool) -> UnitState:
        strategy = REGISTRY[unit.strategy_id]
        return cls(unit, strategy, History.of(strategy, unit.parameters), platform)

    def repeats(self, side: int, bar_time: datetime, within: timedelta) -> bool:
        """Whether `side` at `bar_time` repeats this unit's last signal within `within`."""
        return self.last_side == side and self.last_bar is not None and bar_time - self.last_bar < within

    def remember(self, side: int, bar_time: datetime) -> None:
        self.last_side, self.last_bar = side, bar_time


def keep_for(states: list[UnitState]) -> int:
    """Bars a series' buffer must hold so every unit's history is there."""
    need = History(1)
    for state in states:
        need = need | state.need
    return need.bars + (MAX_HISTORY_BARS if need.span else 0) + 1


def evaluate_at(buffer: BarBuffer, index: int, states: list[UnitState]) -> list[tuple[UnitState, SignalEvent]]:
    """Each unit's event at bar `index` of `buffer`, if it has one (CPU work: run it in a thread)."""
    found: list[tuple[UnitState, SignalEvent]] = []
    times = buffer.times[: len(buffer)]
    for state in states:
        first = window_start(times, index, state.need)
        bars = buffer.window(first, index)
        frame = state.strategy.evaluate(bars, state.unit.parameters)
        last = len(bars) - 1
        if frame.side[last] == 0:
            continue
        events = state.strategy.events(bars, frame, state.unit.parameters, start=last)
        found.extend((state, event) for event in events)
    return found
