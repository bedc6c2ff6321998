"""Multi-timeframe strategy: the trend of a higher timeframe, built from the input bars themselves, gates an
intraday EMA crossing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from services.core.errors import FieldViolation
from services.core.parameters import Params
from services.core.timeframes import INTRADAY, Timeframe
from services.signal.indicators.base import Array
from services.signal.strategies.base import (
    SignalFrame,
    StrategyBars,
    StrategyDef,
    choice,
    frame,
    register,
)
from services.signal.strategies.common import (
    average,
    crosses_above,
    crosses_below,
    grade,
    increasing,
    num,
    period,
    side_word,
    strength,
)

HIGHER_CHOICES = (Timeframe.H1.proto_name, Timeframe.D1.proto_name)


def higher_span(params: Params) -> timedelta:
    """The span of the `higher_timeframe` parameter (one of HIGHER_CHOICES)."""
    timeframe = Timeframe.from_proto_name(str(params["higher_timeframe"]))
    if timeframe is None:
        raise ValueError(f"unknown timeframe {params['higher_timeframe']}")
    return timeframe.delta


def completed_higher_closes(
    open_time: npt.NDArray[np.datetime64], close: Array, span: timedelta
) -> tuple[Array, npt.NDArray[np.intp]]:
    """Higher bars built from the input bars, and which of them each input bar may see.

    Input bars are bucketed by floor(open_time / span); a higher bar's close is the close of its bucket's last input
    bar, and a higher bar is complete once the input has a bar in a later bucket. Returns the closes of the completed
    higher bars, in order, and for each input bar the index of the last higher bar completed before its own bucket
    (-1 in the first bucket): bar t never sees its own, unfinished, bucket."""
    nanoseconds = span // timedelta(microseconds=1) * 1000
    bucket = open_time.astype("datetime64[ns]").astype(np.int64) // nanoseconds
    starts = np.ones(bucket.shape[0], dtype=np.bool_)
    starts[1:] = bucket[1:] != bucket[:-1]
    completed = close[np.flatnonzero(starts)[1:] - 1]
    return completed, np.cumsum(starts) - 2


def _multi_timeframe(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    completed, seen = completed_higher_closes(bars.open_time, close, higher_span(params))
    higher_ma = average(completed, int(params["trend_period"]))
    # Index -1 (no completed higher bar yet) reads the NaN appended at the end.
    higher_close = np.append(completed, np.nan)[seen]
    higher_average = np.append(higher_ma, np.nan)[seen]
    fast = average(close, int(params["fast"]), "EMA")
    slow = average(close, int(params["slow"]), "EMA")
    buy = crosses_above(fast, slow) & (higher_close > higher_average)
    sell = crosses_below(fast, slow) & (higher_close < higher_average)
    strong = np.where(buy, close > higher_close, close < higher_close)
    with np.errstate(divide="ignore", invalid="ignore"):
        trend_percent = (higher_close / higher_average - 1.0) * 100.0
        beyond_percent = (close / higher_close - 1.0) * 100.0 * np.where(sell, -1.0, 1.0)
    values = {
        "close": close,
        "fast_ema": fast,
        "slow_ema": slow,
        "higher_close": higher_close,
        "higher_ma": higher_average,
        "trend_percent": trend_percent,
    }
    confidence = grade(np.abs(trend_percent) + beyond_percent, strong)
    return frame(buy, sell, strong=strong, confidence=confidence, values=values)


def _explain_multi_timeframe(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    higher = str(params["higher_timeframe"]).removeprefix("TIMEFRAME_")
    beyond = "beyond" if strong else "not beyond"
    return (
        f"last completed {higher} close {num(at['higher_close'])} is {abs(at['trend_percent']):.2f}% "
        f"{side_word(side)} its SMA({params['trend_period']}) {num(at['higher_ma'])}; EMA({params['fast']}) "
        f"{num(at['fast_ema'])} crossed {side_word(side)} EMA({params['slow']}) {num(at['slow_ema'])}; close "
        f"{num(at['close'])} {beyond} that {higher} close: {strength(strong)}"
    )


def _constraints(params: Params, timeframe: Timeframe | None) -> list[FieldViolation]:
    problems = increasing("fast", "slow")(params, timeframe)
    if timeframe is not None and higher_span(params) <= timeframe.delta:
        problems.append(
            FieldViolation(
                "timeframe",
                f"higher_timeframe {params['higher_timeframe']} must be longer than the input {timeframe.proto_name}",
            )
        )
    return problems


register(
    StrategyDef(
        strategy_id="multi_timeframe",
        display_name="Higher-timeframe trend, intraday trigger",
        description=(
            "Higher bars (higher_timeframe, e.g. days) are built from the input bars by bucketing their open times; "
            "only completed higher bars count (a bar never sees its own bucket). Trend: the last completed higher "
            "close above the SMA(trend_period) of completed higher closes is up, below it down. BUY when EMA(fast) "
            "crosses above EMA(slow) on the input bars in an up trend, SELL when it crosses below in a down trend. "
            "STRONG when the close is already beyond the last completed higher close in the trade's direction. "
            "Confidence: 1 - exp(-x) with x the higher close's distance from its SMA in percent plus the close's "
            "distance beyond the higher close in percent (negative when short of it), mapped to 0.5-1 (STRONG) or "
            "0.2-0.5 (WEAK)."
        ),
        params=(
            choice("higher_timeframe", "timeframe of the trend", Timeframe.D1.proto_name, HIGHER_CHOICES),
            period("trend_period", "completed higher bars in the trend SMA", 20, 1),
            period("fast", "bars in the fast EMA of the trigger", 9, 1),
            period("slow", "bars in the slow EMA of the trigger", 21),
        ),
        tags=("multi_timeframe", "trend"),
        compute=_multi_timeframe,
        explain=_explain_multi_timeframe,
        warmup=lambda p: max(int(p["trend_period"]), int(p["slow"])),
        history=lambda p: (int(p["trend_period"]) + 1) * higher_span(p),
        timeframes=INTRADAY,
        constraints=_constraints,
    )
)
