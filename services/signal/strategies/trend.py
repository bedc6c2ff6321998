"""Trend-following strategies: moving-average and MACD crossings, ADX with the directional indices, parabolic SAR
flips, a TEMA trend and the Ichimoku cloud."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.core.parameters import Params
from services.signal.strategies.base import (
    SignalFrame,
    StrategyBars,
    StrategyDef,
    frame,
    number,
    register,
)
from services.signal.strategies.common import (
    ATR_PERIOD,
    atr,
    atr_text,
    average,
    crosses_above,
    crosses_below,
    edge,
    finite,
    grade,
    in_atr,
    increasing,
    indicator,
    lagged,
    level,
    multiple,
    num,
    period,
    previous,
    series,
    side_word,
    strength,
)

TREND = "trend"


# --- golden_cross and ema_cross: a fast average crossing a slow one ----------------------------------------------


def _average_cross(kind: str, *, strategy_id: str, display_name: str, fast: int, slow: int, lead: str) -> StrategyDef:
    """Registers a crossing of two moving averages of one kind (SMA or EMA)."""

    def compute(bars: StrategyBars, params: Params) -> SignalFrame:
        close = bars.close
        fast_ma = average(close, int(params["fast"]), kind)
        slow_ma = average(close, int(params["slow"]), kind)
        average_range = atr(bars)
        ready = finite(average_range)
        buy = crosses_above(fast_ma, slow_ma) & ready
        sell = crosses_below(fast_ma, slow_ma) & ready
        slope = slow_ma - lagged(slow_ma, int(params["fast"]))
        strong = np.where(buy, slope > 0, slope < 0)
        distance = in_atr(np.abs(close - slow_ma), average_range)
        values = {"close": close, "fast_ma": fast_ma, "slow_ma": slow_ma, "slow_slope": slope, "atr": average_range}
        return frame(buy, sell, strong=strong, confidence=grade(distance, strong), values=values)

    def explain(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
        name = ("golden cross" if side > 0 else "death cross") if kind == "SMA" else "crossing"
        direction = "rising" if at["slow_slope"] > 0 else "falling" if at["slow_slope"] < 0 else "not moving"
        slope = f"slow {kind} {direction} over the last {params['fast']} bars"
        return (
            f"{kind} {params['fast']} {num(at['fast_ma'])} crossed {side_word(side)} {kind} {params['slow']} "
            f"{num(at['slow_ma'])} ({name}); {slope} (by {num(at['slow_slope'])}): {strength(strong)}; close "
            f"{num(at['close'])} is {atr_text(at['close'] - at['slow_ma'], at['atr'])} from the slow {kind}"
        )

    return register(
        StrategyDef(
            strategy_id=strategy_id,
            display_name=display_name,
            description=(
                f"{lead} BUY when the {kind} of `fast` closes crosses above the {kind} of `slow` closes, SELL when it "
                f"crosses below. STRONG when the slow {kind} moved in the signal's direction over the last `fast` bars "
                "(the crossing goes with the longer trend), else WEAK. "
                f"Confidence: 1 - exp(-d) with d the close's distance from the slow {kind} in ATR({ATR_PERIOD}), "
                "mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
            ),
            params=(
                period("fast", f"bars in the fast {kind}", fast, 1),
                period("slow", f"bars in the slow {kind}", slow),
            ),
            tags=(TREND,),
            compute=compute,
            explain=explain,
            warmup=lambda p: max(int(p["slow"]), ATR_PERIOD),
            constraints=increasing("fast", "slow"),
        )
    )


_average_cross(
    "SMA",
    strategy_id="golden_cross",
    display_name="Golden / death cross",
    fast=50,
    slow=200,
    lead="The classic long-term crossing:",
)
_average_cross(
    "EMA",
    strategy_id="ema_cross",
    display_name="EMA crossover",
    fast=9,
    slow=21,
    lead="A short-term crossing of exponential averages:",
)


# --- macd_cross -------------------------------------------------------------------------------------------------


def _macd_cross(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    line, signal, histogram = indicator(
        "macd", bars.indicator_bars, fast=params["fast"], slow=params["slow"], signal=params["signal"]
    )
    average_range = atr(bars)
    ready = finite(average_range)
    buy = crosses_above(line, signal) & ready
    sell = crosses_below(line, signal) & ready
    strong = np.where(buy, line > 0, line < 0)
    values = {"close": close, "macd": line, "signal": signal, "histogram": histogram, "atr": average_range}
    return frame(buy, sell, strong=strong, confidence=grade(in_atr(np.abs(line), average_range), strong), values=values)


def _explain_macd_cross(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    zone = "above" if at["macd"] > 0 else "below"
    return (
        f"MACD({params['fast']},{params['slow']},{params['signal']}) {num(at['macd'])} crossed {side_word(side)} its "
        f"signal line {num(at['signal'])} {zone} zero ({atr_text(at['macd'], at['atr'])} from it): "
        f"{strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="macd_cross",
        display_name="MACD crossover",
        description=(
            "BUY when the MACD line (fast EMA - slow EMA) crosses above its signal line (EMA of the MACD), SELL when "
            "it crosses below. STRONG when the cross happens on the trend side of zero (a BUY above zero, a SELL "
            "below it), WEAK against it. Confidence: 1 - exp(-d) with d the MACD line's distance from zero in "
            f"ATR({ATR_PERIOD}), mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("fast", "bars in the fast EMA", 12),
            period("slow", "bars in the slow EMA", 26),
            period("signal", "bars in the signal EMA", 9, 1),
        ),
        tags=(TREND, "momentum"),
        compute=_macd_cross,
        explain=_explain_macd_cross,
        warmup=lambda p: max(int(p["slow"]) + int(p["signal"]) - 1, ATR_PERIOD),
        constraints=increasing("fast", "slow"),
    )
)


# --- adx_trend --------------------------------------------------------------------------------------------------


def _adx_trend(bars: StrategyBars, params: Params) -> SignalFrame:
    adx, plus_di, minus_di = indicator("adx", bars.indicator_bars, period=params["period"])
    threshold = float(params["threshold"])
    trending = adx > threshold
    valid = finite(adx)
    buy = edge(trending & (plus_di > minus_di), valid)
    sell = edge(trending & (minus_di > plus_di), valid)
    adx_change = adx - previous(adx)
    strong = adx_change > 0
    excess = (adx - threshold) / 10.0 + np.abs(plus_di - minus_di) / 20.0
    values = {"close": bars.close, "adx": adx, "plus_di": plus_di, "minus_di": minus_di, "adx_change": adx_change}
    return frame(buy, sell, strong=strong, confidence=grade(excess, strong), values=values)


def _explain_adx_trend(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    lead, other = ("+DI", "-DI") if side > 0 else ("-DI", "+DI")
    lead_value, other_value = (at["plus_di"], at["minus_di"]) if side > 0 else (at["minus_di"], at["plus_di"])
    rising = "rising" if at["adx_change"] > 0 else "not rising"
    return (
        f"ADX({params['period']}) {num(at['adx'])} above {params['threshold']:g} with {lead} {num(lead_value)} over "
        f"{other} {num(other_value)}; ADX {rising} ({num(at['adx_change'])}): {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="adx_trend",
        display_name="ADX trend",
        description=(
            "Trend filter and direction from Wilder's directional system: BUY on the bar where ADX > threshold and "
            "+DI > -DI first hold together (a DI crossover while trending, or ADX rising through the threshold with "
            "+DI ahead), SELL likewise with -DI ahead. STRONG when ADX is rising on that bar. Confidence: "
            "1 - exp(-x) with x = (ADX - threshold)/10 + |+DI - -DI|/20, mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars smoothed by ADX and the DIs", 14),
            level("threshold", "ADX level above which a market is trending", 25.0, 0.0, 100.0),
        ),
        tags=(TREND,),
        compute=_adx_trend,
        explain=_explain_adx_trend,
        warmup=lambda p: 2 * int(p["period"]),
    )
)


# --- sar_reversal -----------------------------------------------------------------------------------------------


def _sar_reversal(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    (sar,) = indicator("sar", bars.indicator_bars, acceleration=params["acceleration"], maximum=params["maximum"])
    average_range = atr(bars)
    valid = finite(sar, average_range)
    buy = edge(close > sar, valid)
    sell = edge(close < sar, valid)
    gap = in_atr(np.abs(close - sar), average_range)
    strong = gap >= float(params["strong_atr"])
    values = {"close": close, "sar": sar, "atr": average_range}
    return frame(buy, sell, strong=strong, confidence=grade(gap, strong), values=values)


def _explain_sar_reversal(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"parabolic SAR flipped {side_word(side, 'below', 'above')} price: close {num(at['close'])}, SAR "
        f"{num(at['sar'])}, {atr_text(at['close'] - at['sar'], at['atr'])} apart (STRONG from "
        f"{params['strong_atr']:g}): {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="sar_reversal",
        display_name="Parabolic SAR reversal",
        description=(
            "BUY on the bar the close gets above the parabolic SAR (the stop flips below price), SELL on the bar it "
            "gets below it. STRONG when the close is at least strong_atr ATRs from the new SAR. Confidence: "
            f"1 - exp(-d) with d that gap in ATR({ATR_PERIOD}), mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            number("acceleration", "acceleration factor: start and increment", 0.02, 0.001, 1.0, step=0.01),
            number("maximum", "acceleration factor cap", 0.2, 0.001, 1.0, step=0.01),
            multiple("strong_atr", "gap between close and SAR, in ATRs, of a STRONG flip", 1.0),
        ),
        tags=(TREND,),
        compute=_sar_reversal,
        explain=_explain_sar_reversal,
        warmup=lambda p: ATR_PERIOD + 1,
        constraints=increasing("acceleration", "maximum"),
    )
)


# --- tema_trend -------------------------------------------------------------------------------------------------


def _tema_trend(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    (tema,) = indicator("tema", series(close), period=params["period"])
    slope = tema - previous(tema)
    average_range = atr(bars)
    valid = finite(slope, average_range)
    buy = edge((close > tema) & (slope > 0), valid)
    sell = edge((close < tema) & (slope < 0), valid)
    strong = in_atr(np.abs(slope), average_range) >= float(params["strong_slope_atr"])
    distance = in_atr(np.abs(close - tema), average_range)
    values = {"close": close, "tema": tema, "tema_slope": slope, "atr": average_range}
    return frame(buy, sell, strong=strong, confidence=grade(distance, strong), values=values)


def _explain_tema_trend(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    return (
        f"close {num(at['close'])} {side_word(side)} TEMA({params['period']}) {num(at['tema'])}, which is "
        f"{side_word(side, 'rising', 'falling')} {num(abs(at['tema_slope']))} a bar = "
        f"{atr_text(at['tema_slope'], at['atr'])} (STRONG from {params['strong_slope_atr']:g}): {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="tema_trend",
        display_name="TEMA trend",
        description=(
            "Triple exponential moving average, a low-lag trend line. BUY on the bar where the close is above a rising "
            "TEMA first, SELL where it is below a falling TEMA first. STRONG when the TEMA moved at least "
            f"strong_slope_atr ATR({ATR_PERIOD}) on that bar. Confidence: 1 - exp(-d) with d the close's distance "
            "from the TEMA in ATRs, mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("period", "bars in each EMA of the TEMA", 20),
            multiple("strong_slope_atr", "TEMA move in a bar, in ATRs, of a STRONG trend", 0.1, 5.0),
        ),
        tags=(TREND,),
        compute=_tema_trend,
        explain=_explain_tema_trend,
        warmup=lambda p: max(3 * (int(p["period"]) - 1) + 1, ATR_PERIOD) + 1,
    )
)


# --- ichimoku_cloud ---------------------------------------------------------------------------------------------


def _ichimoku_cloud(bars: StrategyBars, params: Params) -> SignalFrame:
    close = bars.close
    tenkan, kijun, senkou_a, senkou_b, _ = indicator(
        "ichimoku", bars.indicator_bars, tenkan=params["tenkan"], kijun=params["kijun"], senkou_b=params["senkou_b"]
    )
    # The cloud standing at bar t is the spans computed `kijun` bars earlier (charts draw them shifted forward):
    # values of the past only.
    cloud_a, cloud_b = (lagged(line, int(params["kijun"])) for line in (senkou_a, senkou_b))
    cloud_top, cloud_bottom = np.fmax(cloud_a, cloud_b), np.fmin(cloud_a, cloud_b)
    average_range = atr(bars)
    valid = finite(cloud_a, cloud_b, tenkan, kijun, average_range)
    buy = edge(close > cloud_top, valid)
    sell = edge(close < cloud_bottom, valid)
    strong = np.where(buy, tenkan > kijun, tenkan < kijun)
    beyond = in_atr(np.where(buy, close - cloud_top, cloud_bottom - close), average_range)
    values = {
        "close": close,
        "tenkan": tenkan,
        "kijun": kijun,
        "cloud_top": cloud_top,
        "cloud_bottom": cloud_bottom,
        "atr": average_range,
    }
    return frame(buy, sell, strong=strong, confidence=grade(beyond, strong), values=values)


def _explain_ichimoku_cloud(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    edge_name = "cloud_top" if side > 0 else "cloud_bottom"
    confirm = "confirms" if strong else "does not confirm"
    relation = ">" if at["tenkan"] > at["kijun"] else "<" if at["tenkan"] < at["kijun"] else "="
    return (
        f"close {num(at['close'])} crossed {side_word(side)} the cloud (edge {num(at[edge_name])}); tenkan "
        f"{num(at['tenkan'])} {relation} kijun {num(at['kijun'])} {confirm}: {strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="ichimoku_cloud",
        display_name="Ichimoku cloud breakout",
        description=(
            "Ichimoku Kinko Hyo. The cloud at a bar is spans A and B as computed `kijun` bars earlier (where charts "
            "draw them), so only past values are read. BUY on the bar the close first gets above the cloud, SELL "
            "below it. STRONG when the tenkan (conversion) line confirms against the kijun (base) line: tenkan > "
            f"kijun for a BUY, < for a SELL. Confidence: 1 - exp(-d) with d the distance beyond the cloud in "
            f"ATR({ATR_PERIOD}), mapped to 0.5-1 (STRONG) or 0.2-0.5 (WEAK)."
        ),
        params=(
            period("tenkan", "bars of the conversion line", 9, 1),
            period("kijun", "bars of the base line, and the cloud's displacement", 26, 1),
            period("senkou_b", "bars of leading span B", 52, 1),
        ),
        tags=(TREND, "breakout"),
        compute=_ichimoku_cloud,
        explain=_explain_ichimoku_cloud,
        warmup=lambda p: (
            max(max(int(p["tenkan"]), int(p["kijun"]), int(p["senkou_b"])) - 1 + int(p["kijun"]), ATR_PERIOD) + 1
        ),
    )
)
