"""Breakout strategies: a close beyond a moving-average envelope, a price channel or a volatility range (the
Bollinger band readings are in bollinger.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.core.parameters import Params
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
    ATR_PERIOD,
    atr,
    average,
    edge,
    finite,
    grade,
    in_atr,
    indicator,
    multiple,
    num,
    percent,
    period,
    previous,
    run_length,
    series,
    side_word,
    strength,
)

BREAKOUT = "breakout"


# --- ma_breakout ------------------------------------------------------------------------------------------------


def _ma_breakout(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    line = average(close, int(params["period"]), str(params["ma_type"]))
    threshold = float(params["threshold_percent"])
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = (close / line - 1.0) * 100.0
    valid = finite(line)
    buy = edge(distance > threshold, valid)
    sell = edge(distance < -threshold, valid)
    slope = line - previous(line)
    strong = np.where(buy, slope > 0, slope < 0)
    excess = (np.abs(distance) - threshold) / max(threshold, 0.1)
    values = {"close": close, "ma": line, "distance_percent": distance, "ma_slope": slope}
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_ma_breakout(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    ma = f"{params['ma_type']}({params['period']})"
    slope = "agrees" if strong else "does not agree"
    return (
        f"close {num(at['close'])} is {abs(at['distance_percent']):.2f}% {side_word(side)} {ma} {num(at['ma'])} "
        f"(threshold {params['threshold_percent']:g}%); the average's slope {num(at['ma_slope'])} {slope}"
    )


register(
    StrategyDef(
        strategy_id="ma_breakout",
        display_name="Moving-average breakout",
        description=(
            "BUY on the bar the close first gets more than threshold_percent above its moving average (SMA or EMA of "
            "`period` closes), SELL on the bar it first gets more than threshold_percent below it. STRONG when the "
            "average itself moves the same way on that bar, else WEAK. Confidence grows with the distance beyond the "
            "threshold, in thresholds: 0.5-1 (STRONG) or 0.2-0.5 (WEAK) as 1 - exp(-excess)."
        ),
        params=(
            period("period", "bars in the moving average", 20),
            choice("ma_type", "kind of moving average", "SMA", ("SMA", "EMA")),
            percent("threshold_percent", "distance from the average, in percent, that makes a breakout", 2.0, 50.0),
        ),
        tags=(BREAKOUT, "trend"),
        compute=_ma_breakout,
        explain=_explain_ma_breakout,
        warmup=lambda p: int(p["period"]),
    )
)


# --- donchian_breakout and keltner_breakout: a close beyond a channel line ---------------------------------------


def _channel_breakout(
    bars: StrategyBars, upper: Array, lower: Array, average_range: Array, strong_atr: float
) -> SignalFrame:
    """BUY when the close first gets above `upper`, SELL below `lower`; STRONG when beyond by `strong_atr` ATRs."""
    close = bars.close
    valid = finite(upper, lower, average_range)
    buy = edge(close > upper, valid)
    sell = edge(close < lower, valid)
    beyond = in_atr(np.where(buy, close - upper, lower - close), average_range)
    strong = beyond >= strong_atr
    values = {"close": close, "upper": upper, "lower": lower, "atr": average_range, "beyond_atr": beyond}
    return frame(buy, sell, strong=strong, confidence=grade(beyond, strong), values=values)


def _donchian_breakout(bars: StrategyBars, params: Params) -> SignalFrame:
    upper, _, lower = indicator("donchian", bars.indicator_bars, period=params["period"])
    return _channel_breakout(bars, previous(upper), previous(lower), atr(bars), float(params["strong_atr"]))


def _keltner_breakout(bars: StrategyBars, params: Params) -> SignalFrame:
    upper, middle, lower = indicator(
        "keltner", bars.indicator_bars, period=params["period"], multiplier=params["multiplier"]
    )
    average_range = (upper - middle) / float(params["multiplier"])
    result = _channel_breakout(bars, upper, lower, average_range, float(params["strong_atr"]))
    result.values["middle"] = middle
    return result


def _explain_channel(channel: str, params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    band = "upper" if side > 0 else "lower"
    return (
        f"close {num(at['close'])} broke {side_word(side)} the {channel} {band} line {num(at[band])} "
        f"by {at['beyond_atr']:.2f} ATR (ATR {num(at['atr'])}; STRONG from {params['strong_atr']:g} ATR): "
        f"{strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="donchian_breakout",
        display_name="Donchian breakout",
        description=(
            "BUY on the bar the close first gets above the previous bar's Donchian upper line (highest high of the "
            "`period` bars before it), SELL below the previous bar's lower line (lowest low). STRONG when the close "
            f"is at least strong_atr ATR({ATR_PERIOD}) beyond the line. Confidence: 1 - exp(-d) with d the distance "
            "beyond the line in ATRs, mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars in the channel", 20, 1),
            multiple("strong_atr", "distance beyond the line, in ATRs, of a STRONG breakout", 0.25),
        ),
        tags=(BREAKOUT, "trend"),
        compute=_donchian_breakout,
        explain=lambda p, at, side, strong: _explain_channel("previous bar's Donchian", p, at, side, strong),
        warmup=lambda p: max(int(p["period"]), ATR_PERIOD) + 1,
    )
)

register(
    StrategyDef(
        strategy_id="keltner_breakout",
        display_name="Keltner breakout",
        description=(
            "Keltner channel: EMA of `period` closes ± multiplier × ATR(period). BUY on the bar the close first gets "
            "above the upper line, SELL below the lower line. STRONG when the close is at least strong_atr ATRs "
            "beyond the line. Confidence: 1 - exp(-d) with d the distance beyond the line in ATRs, mapped to 0.5-1 "
            "(STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars in the EMA and the ATR", 20, 1),
            multiple("multiplier", "ATRs from the middle line", 2.0, 10.0, minimum=0.1),
            multiple("strong_atr", "distance beyond the line, in ATRs, of a STRONG breakout", 0.5),
        ),
        tags=(BREAKOUT, "trend"),
        compute=_keltner_breakout,
        explain=lambda p, at, side, strong: _explain_channel("Keltner", p, at, side, strong),
        warmup=lambda p: int(p["period"]) + 1,
    )
)


# --- keltner_squeeze --------------------------------------------------------------------------------------------


def _keltner_squeeze(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    bb_upper, middle, bb_lower = indicator("bbands", bars.indicator_bars, period=params["bb_period"], k=params["bb_k"])
    kc_upper, _, kc_lower = indicator(
        "keltner", bars.indicator_bars, period=params["kc_period"], multiplier=params["kc_multiplier"]
    )
    average_range = (kc_upper - kc_lower) / (2.0 * float(params["kc_multiplier"]))
    valid = finite(bb_upper, kc_upper)
    squeezed = valid & (bb_upper < kc_upper) & (bb_lower > kc_lower)
    released = edge(valid & ~squeezed, valid)
    squeeze_bars = previous(run_length(squeezed).astype(np.float64))
    strong = squeeze_bars >= int(params["min_squeeze"])
    values = {
        "close": close,
        "middle": middle,
        "bb_upper": bb_upper,
        "bb_lower": bb_lower,
        "kc_upper": kc_upper,
        "kc_lower": kc_lower,
        "atr": average_range,
        "squeeze_bars": squeeze_bars,
    }
    confidence = grade(in_atr(np.abs(close - middle), average_range), strong)
    return frame(
        released & (close > middle), released & (close < middle), strong=strong, confidence=confidence, values=values
    )


def _explain_keltner_squeeze(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"Bollinger bands ({num(at['bb_lower'])}-{num(at['bb_upper'])}) left the Keltner channel "
        f"({num(at['kc_lower'])}-{num(at['kc_upper'])}) after a {at['squeeze_bars']:.0f}-bar squeeze "
        f"(STRONG from {params['min_squeeze']}); close {num(at['close'])} {side_word(side)} the middle "
        f"{num(at['middle'])}: {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="keltner_squeeze",
        display_name="Keltner squeeze release",
        description=(
            "A squeeze is a bar whose Bollinger bands (bb_period, bb_k) lie inside the Keltner channel (kc_period, "
            "kc_multiplier): volatility is compressed. On the first bar after a squeeze the breakout side is read from "
            "the close: above the Bollinger middle line BUY, below it SELL. STRONG when the squeeze lasted at least "
            "min_squeeze bars. Confidence: 1 - exp(-d) with d the close's distance from the middle in Keltner ATRs, "
            "mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("bb_period", "bars in the Bollinger bands", 20),
            multiple("bb_k", "Bollinger standard deviations", 2.0, 10.0, minimum=0.1),
            period("kc_period", "bars in the Keltner EMA and ATR", 20, 1),
            multiple("kc_multiplier", "Keltner ATRs from the middle", 1.5, 10.0, minimum=0.1),
            period("min_squeeze", "bars of squeeze that make the release STRONG", 6, 1),
        ),
        tags=(BREAKOUT, "momentum"),
        compute=_keltner_squeeze,
        explain=_explain_keltner_squeeze,
        warmup=lambda p: max(int(p["bb_period"]) - 1, int(p["kc_period"])) + 1,
    )
)


# --- dual_thrust ------------------------------------------------------------------------------------------------


def _dual_thrust(bars: StrategyBars, params: Params) -> SignalFrame:
    close, window = bars.close, int(params["period"])
    highest_high, _, lowest_low = (previous(line) for line in indicator("donchian", bars.indicator_bars, period=window))
    highest_close, _, lowest_close = (previous(line) for line in indicator("donchian", series(close), period=window))
    thrust = np.maximum(highest_high - lowest_close, highest_close - lowest_low)
    buy_line = bars.open + float(params["k_up"]) * thrust
    sell_line = bars.open - float(params["k_down"]) * thrust
    average_range = atr(bars)
    valid = finite(thrust, average_range)
    buy = edge(close > buy_line, valid)
    sell = edge(close < sell_line, valid)
    strong = np.where(buy, close > highest_high, close < lowest_low)
    excess = in_atr(np.where(buy, close - buy_line, sell_line - close), average_range)
    values = {
        "close": close,
        "open": bars.open,
        "range": thrust,
        "buy_line": buy_line,
        "sell_line": sell_line,
        "highest_high": highest_high,
        "lowest_low": lowest_low,
        "atr": average_range,
    }
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_dual_thrust(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    line, factor = ("buy_line", params["k_up"]) if side > 0 else ("sell_line", params["k_down"])
    extreme, word = ("highest_high", "high") if side > 0 else ("lowest_low", "low")
    breaks = "breaks" if strong else "does not break"
    return (
        f"close {num(at['close'])} {side_word(side)} open {num(at['open'])} {'+' if side > 0 else '-'} "
        f"{factor:g} × range {num(at['range'])} = {num(at[line])}; it {breaks} the {params['period']}-bar {word} "
        f"{num(at[extreme])}"
    )


register(
    StrategyDef(
        strategy_id="dual_thrust",
        display_name="Dual Thrust",
        description=(
            "Range = max(highest high - lowest close, highest close - lowest low) over the `period` bars before the "
            "current one. BUY on the bar the close first gets above open + k_up × range, SELL below open - k_down × "
            "range. STRONG when the close also breaks the highest high (lowest low) of those bars. Confidence: "
            f"1 - exp(-d) with d the distance beyond the trigger line in ATR({ATR_PERIOD}), mapped to 0.5-1 (STRONG) "
            "or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars in the range", 4, 1),
            multiple("k_up", "range fraction above the open that triggers a BUY", 0.5, 5.0, minimum=0.01),
            multiple("k_down", "range fraction below the open that triggers a SELL", 0.5, 5.0, minimum=0.01),
        ),
        tags=(BREAKOUT,),
        compute=_dual_thrust,
        explain=_explain_dual_thrust,
        warmup=lambda p: max(int(p["period"]), ATR_PERIOD) + 1,
    )
)
