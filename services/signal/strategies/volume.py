"""Volume strategies: on-balance volume against its average, the close against the VWAP, and volume spikes (the
money-flow reversal lives with the other zone exits in reversion.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.core.parameters import Params
from services.signal.indicators.base import Array
from services.signal.strategies.base import SignalFrame, StrategyBars, StrategyDef, frame, register
from services.signal.strategies.common import (
    ATR_PERIOD,
    atr,
    atr_text,
    average,
    edge,
    finite,
    grade,
    in_atr,
    indicator,
    multiple,
    num,
    period,
    previous,
    side_word,
    strength,
)

VOLUME = "volume"


def _volume_ratio(volume: Array, volume_average: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(volume_average > 0, volume / volume_average, np.nan)


# --- obv_trend --------------------------------------------------------------------------------------------------


def _obv_trend(bars: StrategyBars, params: Params) -> SignalFrame:
    close, window = bars.close, int(params["period"])
    (obv,) = indicator("obv", bars.indicator_bars)
    obv_average = average(obv, window)
    price_average = average(close, window)
    volume_average = average(bars.volume, window)
    valid = finite(obv_average, price_average, volume_average)
    buy = edge((obv > obv_average) & (close > price_average), valid)
    sell = edge((obv < obv_average) & (close < price_average), valid)
    volume_ratio = _volume_ratio(bars.volume, volume_average)
    strong = volume_ratio > 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.abs(obv - obv_average) / volume_average
    values = {
        "close": close,
        "price_ma": price_average,
        "obv": obv,
        "obv_ma": obv_average,
        "volume_ratio": volume_ratio,
    }
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_obv_trend(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"OBV {num(at['obv'])} {side_word(side)} its {params['period']}-bar SMA {num(at['obv_ma'])} and close "
        f"{num(at['close'])} {side_word(side)} its SMA {num(at['price_ma'])}; bar volume {at['volume_ratio']:.2f} × "
        f"average (STRONG above 1): {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="obv_trend",
        display_name="On-balance volume trend",
        description=(
            "On-balance volume (running volume signed by the close's direction) against its SMA(period), confirmed by "
            "price against its own SMA(period). BUY on the bar both first lie above their averages, SELL when both "
            "first lie below. STRONG when the bar's volume is above its SMA(period). Confidence: 1 - exp(-x) with x "
            "the OBV's distance from its SMA in average bar volumes, mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(period("period", "bars in the OBV, price and volume averages", 20),),
        tags=(VOLUME, "trend"),
        compute=_obv_trend,
        explain=_explain_obv_trend,
        warmup=lambda p: int(p["period"]),
    )
)


# --- vwap_cross -------------------------------------------------------------------------------------------------


def _vwap_cross(bars: StrategyBars, params: Params) -> SignalFrame:
    close, window = bars.close, int(params["period"])
    (vwap,) = indicator("vwap", bars.indicator_bars, period=window)
    average_range = atr(bars)
    volume_ratio = _volume_ratio(bars.volume, average(bars.volume, window))
    valid = finite(vwap, average_range)
    buy = edge(close > vwap, valid)
    sell = edge(close < vwap, valid)
    strong = volume_ratio >= float(params["volume_multiple"])
    distance = in_atr(np.abs(close - vwap), average_range)
    values = {"close": close, "vwap": vwap, "atr": average_range, "volume_ratio": volume_ratio}
    return frame(buy, sell, strong=strong, confidence=grade(distance, strong), values=values)


def _explain_vwap_cross(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"close {num(at['close'])} crossed {side_word(side)} the {params['period']}-bar VWAP {num(at['vwap'])} "
        f"({atr_text(at['close'] - at['vwap'], at['atr'])} away) on {at['volume_ratio']:.2f} × average volume "
        f"(STRONG from {params['volume_multiple']:g}): {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="vwap_cross",
        display_name="VWAP cross",
        description=(
            "Rolling volume-weighted average price over `period` bars. BUY on the bar the close first gets above the "
            "VWAP, SELL below it. STRONG when the bar's volume is at least volume_multiple × its SMA(period). "
            f"Confidence: 1 - exp(-d) with d the close's distance from the VWAP in ATR({ATR_PERIOD}), mapped to "
            "0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars in the VWAP and the volume average", 20, 1),
            multiple("volume_multiple", "volume, in multiples of its average, of a STRONG cross", 1.5, minimum=0.1),
        ),
        tags=(VOLUME, "trend"),
        compute=_vwap_cross,
        explain=_explain_vwap_cross,
        warmup=lambda p: max(int(p["period"]), ATR_PERIOD + 1),
    )
)


# --- volume_spike -----------------------------------------------------------------------------------------------


def _volume_spike(bars: StrategyBars, params: Params) -> SignalFrame:
    close, volume = bars.close, bars.volume
    volume_average = previous(average(volume, int(params["period"])))
    volume_ratio = _volume_ratio(volume, volume_average)
    move = close - previous(close)
    average_range = atr(bars)
    valid = finite(volume_average, average_range)
    spike = volume_ratio > float(params["volume_multiple"])
    buy = edge(spike & (move > 0), valid)
    sell = edge(spike & (move < 0), valid)
    move_atr = in_atr(np.abs(move), average_range)
    strong = move_atr >= float(params["strong_atr"])
    excess = volume_ratio / float(params["volume_multiple"]) - 1.0 + move_atr
    values = {
        "close": close,
        "move": move,
        "atr": average_range,
        "volume": volume,
        "volume_average": volume_average,
        "volume_ratio": volume_ratio,
    }
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_volume_spike(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"volume {num(at['volume'])} is {at['volume_ratio']:.2f} × the {params['period']}-bar average "
        f"{num(at['volume_average'])} (spike from {params['volume_multiple']:g}) with the close "
        f"{side_word(side, 'up', 'down')} {num(abs(at['move']))} = {atr_text(at['move'], at['atr'])} "
        f"(STRONG from {params['strong_atr']:g}): {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="volume_spike",
        display_name="Volume spike",
        description=(
            "A bar whose volume exceeds volume_multiple × the average volume of the `period` bars before it, moving "
            "the close up (BUY) or down (SELL); fires on the first such bar of a run. STRONG when the close moved at "
            f"least strong_atr ATR({ATR_PERIOD}). Confidence: 1 - exp(-x) with x = volume ratio / volume_multiple - "
            "1 + the move in ATRs, mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars in the volume average", 20, 1),
            multiple("volume_multiple", "volume, in multiples of its average, of a spike", 2.0, minimum=1.0),
            multiple("strong_atr", "close-to-close move, in ATRs, of a STRONG spike", 1.0),
        ),
        tags=(VOLUME, "momentum"),
        compute=_volume_spike,
        explain=_explain_volume_spike,
        warmup=lambda p: max(int(p["period"]), ATR_PERIOD) + 1,
    )
)
