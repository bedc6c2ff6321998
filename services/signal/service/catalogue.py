"""The catalogue's use cases: list the indicators and strategies, compute indicators over a symbol's stored bars,
and evaluate a strategy over them (its events, warm-up and parameters)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from services.core.errors import FailedPrecondition
from services.core.market_data import BarSeries, MarketData
from services.core.paging import NAME, Cursor, Page, PageTokens, keyset_page
from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe
from services.signal.analytics import IndicatorRequest, PreparedIndicator, Series, compute, prepare, with_warmup
from services.signal.history import History, read_history, strategy_bars
from services.signal.indicators.base import REGISTRY, Bars, IndicatorDef
from services.signal.strategies.base import REGISTRY as STRATEGIES
from services.signal.strategies.base import SignalEvent, StrategyDef
from services.signal.validation import BarRange, find_strategy, too_large

# Bars one ComputeIndicators or EvaluateStrategy call may cover (the response carries every value).
MAX_RANGE_BARS = 200_000
# What each list's page tokens hold.
_INDICATORS_CURSOR = Cursor.of("signal.ListIndicators", after=NAME)
_STRATEGIES_CURSOR = Cursor.of("signal.ListStrategies", after=NAME)


@dataclass(frozen=True, slots=True, kw_only=True)
class BarsRequest:
    """A request over one symbol's stored bars (the symbol upper case; the range's order is checked here)."""

    symbol: str
    timeframe: int
    start: datetime
    end: datetime | None
    extend_for_warmup: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class IndicatorValues:
    """ComputeIndicators' answer: the range's bar times and each indicator's series on them."""

    bar_times: list[datetime]
    results: list[tuple[PreparedIndicator, list[Series]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """EvaluateStrategy's answer: the events on the range (with their bar's open time), the parameters used, the
    bars of the range and how many of them the strategy still needed to warm up."""

    events: list[tuple[SignalEvent, np.datetime64]]
    parameters: dict[str, ParamValue]
    bar_count: int
    warmup_bars: int


class Catalogue:
    """Indicators and strategies: what exists and what they say over stored bars (read from the market service)."""

    def __init__(self, market: MarketData, pages: PageTokens) -> None:
        self._market = market
        self._pages = pages

    async def indicators(self, *, size: int, page_token: str) -> Page[IndicatorDef]:
        async def fetch(position: dict[str, Any] | None, limit: int) -> list[IndicatorDef]:
            after = position["after"] if position else ""
            return [REGISTRY[name] for name in sorted(name for name in REGISTRY if name > after)[:limit]]

        return await keyset_page(
            self._pages,
            _INDICATORS_CURSOR,
            page_token,
            size=size,
            fetch=fetch,
            position=lambda indicator: {"after": indicator.name},
        )

    async def strategies(self, *, tag: str, size: int, page_token: str) -> Page[StrategyDef]:
        tag = tag.strip().lower()

        async def fetch(position: dict[str, Any] | None, limit: int) -> list[StrategyDef]:
            after = position["after"] if position else ""
            ids = sorted(
                strategy_id
                for strategy_id, strategy in STRATEGIES.items()
                if strategy_id > after and (not tag or tag in strategy.tags)
            )
            return [STRATEGIES[strategy_id] for strategy_id in ids[:limit]]

        return await keyset_page(
            self._pages,
            _STRATEGIES_CURSOR,
            page_token,
            query=tag,
            size=size,
            fetch=fetch,
            position=lambda strategy: {"after": strategy.strategy_id},
        )

    async def compute_indicators(self, target: BarsRequest, indicators: Sequence[IndicatorRequest]) -> IndicatorValues:
        """Every indicator over the range (INVALID_RANGE, then the indicators' own rules, RANGE_TOO_LARGE, NO_BARS);
        with extend_for_warmup their values are those of the whole stored history."""
        BarRange(target.start, target.end)
        prepared = prepare(indicators)
        series = await self._range_bars(target)
        whole, skip = series, 0
        if target.extend_for_warmup:

            async def earlier(count: int) -> BarSeries:
                return await read_history(self._market, target.symbol, target.timeframe, target.start, History(count))

            whole, skip = await with_warmup(prepared, series, earlier)
        bars = Bars(whole.open, whole.high, whole.low, whole.close, whole.volume)
        computed = await asyncio.to_thread(lambda: [compute(indicator, bars, skip=skip) for indicator in prepared])
        return IndicatorValues(bar_times=series.times, results=list(zip(prepared, computed, strict=True)))

    async def evaluate_strategy(
        self, strategy_id: str, target: BarsRequest, parameters: dict[str, ParamValue]
    ) -> Evaluation:
        """The strategy's events on the range (STRATEGY_NOT_FOUND, INVALID_RANGE, its parameters' rules, then
        RANGE_TOO_LARGE, NO_BARS); with extend_for_warmup the history before the range warms it up."""
        strategy = find_strategy(strategy_id)
        BarRange(target.start, target.end)
        timeframe = Timeframe(target.timeframe)
        resolved = strategy.resolve(parameters, timeframe=timeframe)
        series = await self._range_bars(target)
        warmup = strategy.warmup(resolved)
        skip = 0
        if target.extend_for_warmup:
            earlier = await read_history(
                self._market, target.symbol, target.timeframe, target.start, History.of(strategy, resolved)
            )
            if len(earlier):
                series, skip = earlier.followed_by(series), len(earlier)
        bars = strategy_bars(series, timeframe.delta)
        frame = await asyncio.to_thread(strategy.evaluate, bars, resolved)
        events = strategy.events(bars, frame, resolved, start=skip)
        count = len(bars) - skip
        return Evaluation(
            events=[(event, bars.open_time[event.index]) for event in events],
            parameters=resolved,
            bar_count=count,
            warmup_bars=min(count, max(0, warmup - skip)),
        )

    async def _range_bars(self, target: BarsRequest) -> BarSeries:
        """The stored bars of the range: RANGE_TOO_LARGE past MAX_RANGE_BARS, NO_BARS when there are none."""
        series = await self._market.bars(
            target.symbol, target.timeframe, start=target.start, end=target.end, limit=MAX_RANGE_BARS + 1
        )
        too_large(len(series), MAX_RANGE_BARS)
        if not len(series):
            raise FailedPrecondition(f"no stored {target.symbol} bars in the range", reason="NO_BARS")
        return series
