"""The two readings of a close at a Bollinger band: the seed's rule, which fades it (bollinger_breakout), and the
trend-following one, which follows it (bollinger_trend_breakout)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.core.parameters import Params
from services.signal.indicators.base import Array
from services.signal.strategies.base import SignalFrame, StrategyBars, StrategyDef, frame, register
from services.signal.strategies.common import (
    atr,
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
