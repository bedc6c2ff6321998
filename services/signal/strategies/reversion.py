"""Mean-reversion strategies: an oscillator or the close coming back out of an extreme zone, and stochastic
crossings in the outer half of the range."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from services.core.parameters import Params
from services.signal.indicators.base import Array
from services.signal.strategies.base import (
    SignalFrame,
    StrategyBars,
    StrategyDef,
    StrategyParam,
    frame,
    register,
)
from services.signal.strategies.common import (
    ZoneExit,
    crosses_above,
    crosses_below,
    increasing,
    indicator,
    level,
    multiple,
    num,
    period,
    strength,
    tiered,
)

REVERSION = "mean_reversion"
LEVELS = ("strong_oversold", "oversold", "overbought", "strong_overbought")

ZONE_CONFIDENCE = (
    "STRONG when the excursion reached beyond the strong level, else WEAK. Confidence from the excursion's depth d "
    "(0 at the trigger level, 1 at the strong level): 0.2 + 0.3·d for WEAK, 0.5 + 0.5·(1 - exp(1 - d)) for STRONG."
)


def zone_strategy(
    *,
    strategy_id: str,
    display_name: str,
    description: str,
    oscillator: str,
    line: str,
    params: tuple[StrategyParam, ...],
    compute_values: Callable[[StrategyBars, Params], dict[str, Array]],
    warmup: Callable[[Params], int],
    tags: tuple[str, ...] = (REVERSION,),
) -> StrategyDef:
    """Registers a strategy that trades an oscillator's exits from its oversold and overbought zones (ZoneExit).
    `compute_values` returns the series to show, the oscillator among them as `line` (named `oscillator` in
    reasons); `params` must include the four LEVELS."""

    def compute(bars: StrategyBars, given: Params) -> SignalFrame:
        values = compute_values(bars, given)
        strong_low, low, high, strong_high = (float(given[name]) for name in LEVELS)
        zones = ZoneExit(values[line], (strong_low, low, high, strong_high))
        values["extreme"] = zones.extreme
        return frame(zones.buy, zones.sell, strong=zones.strong, confidence=zones.confidence, values=values)

    def explain(given: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
        zone, trigger, deep = ("oversold", given["oversold"], given["strong_oversold"])
        if side < 0:
            zone, trigger, deep = ("overbought", given["overbought"], given["strong_overbought"])
        reach = "beyond" if strong else "short of"
        return (
            f"{oscillator} {num(at[line])} crossed {'up' if side > 0 else 'down'} out of {zone} "
            f"{float(trigger):g} after reaching {num(at['extreme'])}, {reach} {float(deep):g}: {strength(strong)}"
        )

    return register(
        StrategyDef(
            strategy_id=strategy_id,
            display_name=display_name,
            description=f"{description} {ZONE_CONFIDENCE}",
            params=params,
            tags=tags,
            compute=compute,
            explain=explain,
            warmup=warmup,
            constraints=increasing(*LEVELS),
        )
    )


def zone_levels(defaults: tuple[float, float, float, float], bounds: tuple[float, float]) -> tuple[StrategyParam, ...]:
    """The four LEVELS parameters within `bounds`; `defaults` in LEVELS order (strong oversold first)."""
    strong_oversold, oversold, overbought, strong_overbought = defaults
    low, high = bounds
    return (
        level("oversold", "crossing up through it after an excursion below is a BUY", oversold, low, high),
        level("overbought", "crossing down through it after an excursion above is a SELL", overbought, low, high),
        level("strong_oversold", "an excursion below it makes the BUY STRONG", strong_oversold, low, high),
        level("strong_overbought", "an excursion above it makes the SELL STRONG", strong_overbought, low, high),
    )


def _single(name: str, line: str) -> Callable[[StrategyBars, Params], dict[str, Array]]:
    """The close and an oscillator of the catalogue with one `period` parameter, named `line`."""

    def compute_values(bars: StrategyBars, params: Params) -> dict[str, Array]:
        (values,) = indicator(name, bars.indicator_bars, period=params["period"])
        return {"close": bars.close, line: values}

    return compute_values


zone_strategy(
    strategy_id="rsi_reversal",
    display_name="RSI reversal",
    description=(
        "RSI(period): BUY when it crosses up out of oversold (from at or below `oversold` to above it), SELL when it "
        "crosses down out of overbought."
    ),
    oscillator="RSI",
    line="rsi",
    params=(period("period", "bars smoothed by the RSI", 14), *zone_levels((20.0, 30.0, 70.0, 80.0), (0.0, 100.0))),
    compute_values=_single("rsi", "rsi"),
    warmup=lambda p: int(p["period"]) + 1,
)

zone_strategy(
    strategy_id="cci_reversal",
    display_name="CCI reversal",
    description=(
        "Commodity Channel Index(period): BUY when it crosses back up through `oversold` (-100) after being at or "
        "below it, SELL when it crosses back down through `overbought` (+100)."
    ),
    oscillator="CCI",
    line="cci",
    params=(
        period("period", "bars in the CCI window", 20),
        *zone_levels((-200.0, -100.0, 100.0, 200.0), (-1000.0, 1000.0)),
    ),
    compute_values=_single("cci", "cci"),
    warmup=lambda p: int(p["period"]),
)

zone_strategy(
    strategy_id="williams_r",
    display_name="Williams %R reversal",
    description=(
        "Williams %R(period), -100 at the window's low to 0 at its high: BUY when it crosses back up through "
        "`oversold` (-80), SELL when it crosses back down through `overbought` (-20)."
    ),
    oscillator="%R",
    line="williams_r",
    params=(
        period("period", "bars in the high-low window", 14),
        *zone_levels((-95.0, -80.0, -20.0, -5.0), (-100.0, 0.0)),
    ),
    compute_values=_single("willr", "williams_r"),
    warmup=lambda p: int(p["period"]),
)

zone_strategy(
    strategy_id="mfi_reversal",
    display_name="Money Flow Index reversal",
    description=(
        "Money Flow Index(period), a volume-weighted RSI: BUY when it crosses up out of oversold (20), SELL when it "
        "crosses down out of overbought (80)."
    ),
    oscillator="MFI",
    line="mfi",
    params=(
        period("period", "bars in the money-flow window", 14),
        *zone_levels((10.0, 20.0, 80.0, 90.0), (0.0, 100.0)),
    ),
    compute_values=_single("mfi", "mfi"),
    warmup=lambda p: int(p["period"]) + 1,
    tags=(REVERSION, "volume"),
)


def _percent_b(bars: StrategyBars, params: Params) -> dict[str, Array]:
    upper, middle, lower = indicator("bbands", bars.indicator_bars, period=params["period"], k=params["k"])
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        percent_b = np.where(width > 0, (bars.close - lower) / width, np.nan)
    return {"close": bars.close, "upper": upper, "middle": middle, "lower": lower, "percent_b": percent_b}


zone_strategy(
    strategy_id="bollinger_reversion",
    display_name="Bollinger mean reversion",
    description=(
        "Bollinger bands (period, k) read as %B = (close - lower) / (upper - lower): BUY when the close comes back "
        "inside the lower band from below (%B crosses up through `oversold` 0), SELL when it comes back inside the "
        "upper band from above (%B crosses down through `overbought` 1). Levels are in band widths: -0.2 is 0.2 "
        "widths below the lower band."
    ),
    oscillator="%B",
    line="percent_b",
    params=(
        period("period", "bars in the Bollinger average and deviation", 20),
        multiple("k", "standard deviations from the middle band", 2.0, 10.0, minimum=0.1),
        *zone_levels((-0.2, 0.0, 1.0, 1.2), (-10.0, 10.0)),
    ),
    compute_values=_percent_b,
    warmup=lambda p: int(p["period"]),
)


# --- stochastic_cross -------------------------------------------------------------------------------------------


def _stochastic_cross(bars: StrategyBars, params: Params) -> SignalFrame:
    slow_k, slow_d = indicator(
        "stoch",
        bars.indicator_bars,
        fastk_period=params["fastk_period"],
        slowk_period=params["slowk_period"],
        slowd_period=params["slowd_period"],
    )
    oversold, overbought = float(params["oversold"]), float(params["overbought"])
    buy = crosses_above(slow_k, slow_d) & (slow_d < 50.0)
    sell = crosses_below(slow_k, slow_d) & (slow_d > 50.0)
    depth = np.where(buy, (50.0 - slow_d) / (50.0 - oversold), (slow_d - 50.0) / (overbought - 50.0))
    strong, confidence = tiered(depth)
    values = {"close": bars.close, "slowk": slow_k, "slowd": slow_d}
    return frame(buy, sell, strong=strong, confidence=confidence, values=values)


def _explain_stochastic_cross(params: Params, at: Mapping[str, float], side: int, strong: bool) -> str:
    zone = ("oversold", params["oversold"]) if side > 0 else ("overbought", params["overbought"])
    where = f"in the {zone[0]} zone (beyond {float(zone[1]):g})" if strong else f"outside the {zone[0]} zone"
    return (
        f"%K {num(at['slowk'])} crossed {'above' if side > 0 else 'below'} %D {num(at['slowd'])} {where}: "
        f"{strength(strong)}"
    )


register(
    StrategyDef(
        strategy_id="stochastic_cross",
        display_name="Stochastic crossover",
        description=(
            "Slow stochastic %K and %D. BUY when %K crosses above %D in the lower half (%D < 50), SELL when it "
            "crosses below %D in the upper half (%D > 50); crossings on the far side of 50 are ignored. STRONG when "
            "%D is beyond `oversold` (BUY) or `overbought` (SELL), WEAK between that level and 50. Confidence from "
            "the depth d = (50 - %D) / (50 - oversold) (or (%D - 50) / (overbought - 50)): 0.2 + 0.3·d for WEAK, "
            "0.5 + 0.5·(1 - exp(1 - d)) for STRONG."
        ),
        params=(
            period("fastk_period", "bars in the high-low range of fast %K", 14, 1),
            period("slowk_period", "bars smoothing fast %K into %K", 3, 1),
            period("slowd_period", "bars smoothing %K into %D", 3, 1),
            level("oversold", "%D below it makes a BUY STRONG", 20.0, 0.0, 49.0),
            level("overbought", "%D above it makes a SELL STRONG", 80.0, 51.0, 100.0),
        ),
        tags=(REVERSION, "momentum"),
        compute=_stochastic_cross,
        explain=_explain_stochastic_cross,
        warmup=lambda p: int(p["fastk_period"]) + int(p["slowk_period"]) + int(p["slowd_period"]) - 2,
    )
)
