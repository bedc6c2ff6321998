"""Momentum strategies: the rate of change through a threshold, and trend, momentum and volume agreeing."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.core.parameters import Params
from services.signal.strategies.base import SignalFrame, StrategyBars, StrategyDef, frame, register
from services.signal.strategies.common import (
    ATR_PERIOD,
    atr,
    average,
    crosses_above,
    crosses_below,
    edge,
    finite,
    grade,
    indicator,
    multiple,
    num,
    percent,
    period,
    previous,
    series,
    side_word,
    strength,
)

MOMENTUM = "momentum"


# --- roc_momentum -----------------------------------------------------------------------------------------------


def _roc_momentum(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    (roc,) = indicator("roc", series(close), period=params["period"])
    threshold = float(params["threshold_percent"])
    with np.errstate(divide="ignore", invalid="ignore"):
        atr_percent = atr(bars) / close * 100.0
    ready = finite(atr_percent)
    buy = crosses_above(roc, threshold) & ready
    sell = crosses_below(roc, -threshold) & ready
    roc_change = roc - previous(roc)
    strong = np.where(buy, roc_change, -roc_change) >= atr_percent
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = (np.abs(roc) - threshold) / atr_percent
    values = {"close": close, "roc": roc, "roc_change": roc_change, "atr_percent": atr_percent}
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_roc_momentum(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    sign = "+" if side > 0 else "-"
    jump = "at least" if strong else "less than"
    return (
        f"ROC({params['period']}) {at['roc']:.2f}% crossed {side_word(side)} {sign}{params['threshold_percent']:g}%; "
        f"it moved {at['roc_change']:+.2f} points this bar, {jump} the ATR of {at['atr_percent']:.2f}%: "
        f"{strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="roc_momentum",
        display_name="Rate-of-change momentum",
        description=(
            "Rate of change over `period` bars, in percent. BUY when it crosses above +threshold_percent, SELL when it "
            "crosses below -threshold_percent (threshold 0: the zero line). STRONG when the ROC jumped on that bar by "
            f"at least the ATR({ATR_PERIOD}) expressed in percent of the close (an accelerating move). Confidence: "
            "1 - exp(-x) with x the ROC beyond the threshold in those ATR percents, mapped to 0.5-1 (STRONG) or "
            "0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars back the close is compared with", 12, 1),
            percent("threshold_percent", "ROC level, in percent, that must be crossed", 1.0, 100.0),
        ),
        tags=(MOMENTUM,),
        compute=_roc_momentum,
        explain=_explain_roc_momentum,
        warmup=lambda p: max(int(p["period"]) + 1, ATR_PERIOD),
    )
)


# --- triple_confirmation ----------------------------------------------------------------------------------------


def _triple_confirmation(bars: StrategyBars, params: Params) -> SignalFrame:
    close, volume = bars.close, bars.volume
    trend = average(close, int(params["trend_period"]))
    (rsi,) = indicator("rsi", series(close), period=params["rsi_period"])
    rsi_change = rsi - previous(rsi)
    volume_average = average(volume, int(params["volume_period"]))
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_ratio = volume / volume_average
    loud = volume_ratio > float(params["volume_multiple"])
    valid = finite(trend, rsi_change, volume_average)
    buy = edge((close > trend) & (rsi > 50.0) & (rsi_change > 0) & loud, valid)
    sell = edge((close < trend) & (rsi < 50.0) & (rsi_change < 0) & loud, valid)
    strong = volume_ratio >= 2.0 * float(params["volume_multiple"])
    excess = np.abs(rsi - 50.0) / 10.0 + (volume_ratio - float(params["volume_multiple"]))
    values = {
        "close": close,
        "trend_ma": trend,
        "rsi": rsi,
        "rsi_change": rsi_change,
        "volume": volume,
        "volume_average": volume_average,
        "volume_ratio": volume_ratio,
    }
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_triple_confirmation(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"close {num(at['close'])} {side_word(side)} SMA({params['trend_period']}) {num(at['trend_ma'])}; "
        f"RSI({params['rsi_period']}) {at['rsi']:.2f} {side_word(side)} 50 and {side_word(side, 'rising', 'falling')} "
        f"({at['rsi_change']:+.2f}); volume {at['volume_ratio']:.2f} × its {params['volume_period']}-bar average "
        f"(needs {params['volume_multiple']:g}, STRONG from {2 * float(params['volume_multiple']):g}): "
        f"{strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="triple_confirmation",
        display_name="Triple confirmation",
        description=(
            "Three independent checks: trend (close above SMA(trend_period)), momentum (RSI(rsi_period) above 50 and "
            "rising) and participation (volume above volume_multiple × its SMA(volume_period)). BUY on the bar all "
            "three first agree upwards, SELL when all three first agree downwards (close below the SMA, RSI below 50 "
            "and falling, heavy volume). STRONG when the volume is at least twice the required multiple. Confidence: "
            "1 - exp(-x) with x = |RSI - 50|/10 + (volume ratio - volume_multiple), mapped to 0.5-1 (STRONG) or "
            "0.2-0.5 (WEAK)."
        ),
        params=(
            period("trend_period", "bars in the trend SMA", 50),
            period("rsi_period", "bars smoothed by the RSI", 14),
            period("volume_period", "bars in the volume average", 20),
            multiple("volume_multiple", "volume, in multiples of its average, that confirms", 1.5, minimum=0.1),
        ),
        tags=(MOMENTUM, "trend", "volume"),
        compute=_triple_confirmation,
        explain=_explain_triple_confirmation,
        warmup=lambda p: max(int(p["trend_period"]) - 1, int(p["rsi_period"]) + 1, int(p["volume_period"]) - 1) + 1,
    )
)
