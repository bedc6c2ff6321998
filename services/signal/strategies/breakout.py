"""Breakout strategies: a close beyond a band, a moving-average envelope, a price channel or a volatility range."""

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
REVERSION = "mean_reversion"


# --- bollinger_breakout: the seed's rule -------------------------------------------------------------------------


def _previous_bands(bars: StrategyBars, params: Params) -> tuple[Array, Array, Array]:
    """The Bollinger bands of the bars before each bar: with period 5 and k 2 the bands through the current close
    can never be exceeded (a close lies at most sqrt(period - 1) deviations from a mean that includes it)."""
    bands = indicator("bbands", bars.indicator_bars, period=params["period"], k=params["k"])
    upper, middle, lower = (previous(line) for line in bands)
    return upper, middle, lower


def _bollinger_breakout(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    upper, middle, lower = _previous_bands(bars, params)
    near = float(params["near_band_percent"]) / 100.0
    sell_level, buy_level = upper * (1.0 - near), lower * (1.0 + near)
    with np.errstate(invalid="ignore"):  # NaN bands while warming up compare False
        sell = close > sell_level
        buy = (close < buy_level) & ~sell  # the seed tests the upper band first
        strong = np.where(sell, close > upper, close < lower)
    deviation = (upper - middle) / float(params["k"])
    with np.errstate(divide="ignore", invalid="ignore"):
        beyond = np.where(sell, close - upper, lower - close) / deviation  # in standard deviations, inf if flat
        depth = np.where(sell, close - sell_level, buy_level - close) / np.where(sell, upper, lower) / near
    confidence = np.where(strong, grade(beyond, strong), 0.2 + 0.3 * np.clip(np.nan_to_num(depth, nan=1.0), 0, 1))
    values = {
        "close": close,
        "upper": upper,
        "middle": middle,
        "lower": lower,
        "sell_level": sell_level,
        "buy_level": buy_level,
    }
    return frame(buy, sell, strong=strong, confidence=confidence, values=values)


def _explain_bollinger_breakout(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    bands = f"the previous bar's Bollinger({params['period']}, {params['k']:g})"
    if side < 0:
        where = (
            f"above the upper band {num(at['upper'])}"
            if strong
            else f"within {params['near_band_percent']:g}% below the upper band {num(at['upper'])} "
            f"(above {num(at['sell_level'])})"
        )
        verdict = "SELL, fading the move up"
    else:
        where = (
            f"below the lower band {num(at['lower'])}"
            if strong
            else f"within {params['near_band_percent']:g}% above the lower band {num(at['lower'])} "
            f"(below {num(at['buy_level'])})"
        )
        verdict = "BUY, fading the move down"
    return f"close {num(at['close'])} {where} of {bands}: {strength(strong)} {verdict}"


register(
    StrategyDef(
        strategy_id="bollinger_breakout",
        display_name="Bollinger breakout (seed rule)",
        description=(
            "The seed's detect_breakout_signal, exactly: it fades closes at the Bollinger bands (a mean-reversion "
            "reading; for the trend-following one see bollinger_trend_breakout). Bands: SMA of the `period` closes "
            "before the bar ± k population standard deviations (defaults 5 and 2; bands through the close itself "
            "could never be exceeded at k >= sqrt(period - 1)). Every bar is classified: a close above upper × (1 - "
            "near_band_percent/100) is a SELL, STRONG when above the upper band itself; otherwise a close below "
            "lower × (1 + near_band_percent/100) is a BUY, STRONG when below the lower band itself; anything else "
            "is HOLD (no event). Each bar in a zone is an event (the live engine's repeat rule keeps a close that "
            "stays there from signalling every bar). Confidence: STRONG 0.5 + 0.5·(1 - exp(-d)) with d the distance "
            "beyond the band in the bands' standard deviations; WEAK 0.2 + 0.3·w with w in (0, 1] how far into the "
            "near zone the close is."
        ),
        params=(
            period("period", "bars in the Bollinger average and deviation", 5),
            multiple("k", "standard deviations from the middle band", 2.0, 10.0, minimum=0.1),
            percent("near_band_percent", "a close this close to a band (in percent of it) is a WEAK signal", 1.0, 20.0),
        ),
        tags=(REVERSION, BREAKOUT),
        compute=_bollinger_breakout,
        explain=_explain_bollinger_breakout,
        warmup=lambda p: int(p["period"]),
    )
)


# --- bollinger_trend_breakout: a close beyond a band, followed ---------------------------------------------------


def _bollinger_trend_breakout(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    upper, middle, lower = _previous_bands(bars, params)
    average_range = atr(bars, int(params["atr_period"]))
    near = float(params["near_band_percent"]) / 100.0
    move = close - previous(close)
    valid = finite(upper, average_range)
    # Levels: 2 beyond the band (STRONG), 1 within near_band_percent inside it (WEAK), 0 elsewhere.
    up_level = np.where(close > upper, 2, np.where(close >= upper * (1.0 - near), 1, 0)).astype(np.int8)
    down_level = np.where(close < lower, 2, np.where(close <= lower * (1.0 + near), 1, 0)).astype(np.int8)
    real_move = np.abs(move) >= float(params["atr_multiple"]) * average_range
    buy = edge(up_level, valid) & real_move
    sell = edge(down_level, valid) & real_move
    strong = np.where(buy, up_level, down_level) == 2
    beyond = np.where(buy, close - upper, lower - close)
    within = np.where(buy, close - upper * (1.0 - near), lower * (1.0 + near) - close)
    excess = in_atr(np.where(strong, beyond, within), average_range)
    values = {"close": close, "upper": upper, "middle": middle, "lower": lower, "atr": average_range, "move": move}
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_bollinger_trend_breakout(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    band = "upper" if side > 0 else "lower"
    if strong:
        where = f"{side_word(side)} {band} band {num(at[band])}"
    else:
        where = f"within {params['near_band_percent']:g}% of the {band} band {num(at[band])}"
    text = f"close {num(at['close'])} {where} (period {params['period']}, k {params['k']:g}, previous bar)"
    if float(params["atr_multiple"]) > 0:
        text += f"; move {num(at['move'])} ≥ {params['atr_multiple']:g} × ATR {num(at['atr'])}"
    return f"{text}: {strength(strong)} breakout {'up' if side > 0 else 'down'}"


register(
    StrategyDef(
        strategy_id="bollinger_trend_breakout",
        display_name="Bollinger trend breakout",
        description=(
            "Trend-following reading of the Bollinger bands – the opposite of the seed's bollinger_breakout, which "
            "fades band breaks. Bands of the previous bar (SMA of `period` closes ± k standard deviations), so that "
            "a close can break out of them. A close above the upper band is a STRONG BUY, a close within "
            "near_band_percent below it a WEAK BUY; a close below the lower band is a STRONG SELL, within "
            "near_band_percent above it a WEAK SELL. An event fires on the bar the close reaches the zone (or climbs "
            "from WEAK to STRONG), and only when the bar's move |close - previous close| is at least atr_multiple × "
            "ATR(atr_period) (0 disables the filter). Confidence: 0.5 + 0.5·(1 - exp(-d)) for STRONG with d the "
            "distance beyond the band in ATRs, 0.2 + 0.3·(1 - exp(-d)) for WEAK with d the distance into the near "
            "zone in ATRs."
        ),
        params=(
            period("period", "bars in the Bollinger average and deviation", 5),
            multiple("k", "standard deviations from the middle band", 2.0, 10.0, minimum=0.1),
            percent("near_band_percent", "a close this close to a band (in percent of it) is a WEAK signal", 1.0, 20.0),
            period("atr_period", "bars in the ATR of the move filter and the confidence", 14, 1),
            multiple("atr_multiple", "least move, in ATRs, of a breakout bar (0 disables the filter)", 0.5),
        ),
        tags=(BREAKOUT, "trend"),
        compute=_bollinger_trend_breakout,
        explain=_explain_bollinger_trend_breakout,
        warmup=lambda p: max(int(p["period"]), int(p["atr_period"])) + 1,
    )
)


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
