"""Backtest planning at its home, the Backtests facade (services/signal/service/backtests.py): one quote currency,
bars in the range, the engine's settings from the instruments; over an in-memory market."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

import numpy as np
import pytest

from services.core.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.market_data import BarSeries, InstrumentInfo, MarketData
from services.core.paging import PageTokens
from services.core.timeframes import Timeframe
from services.signal.backtests.runner import BacktestRunner
from services.signal.backtests.spec import BacktestSpec
from services.signal.service.backtests import Backtests, backtest_id_of
from services.signal.strategies.catalogue import load_strategies
from tests.unit.test_backtest_spec import valid_request

load_strategies()
START = datetime(2024, 1, 1)


class _Market:
    def __init__(self, currencies: dict[str, str], days: int = 300) -> None:
        self.currencies = currencies
        self.days = days

    async def instrument(self, symbol: str) -> InstrumentInfo:
        return InstrumentInfo(symbol=symbol, quote_currency=self.currencies[symbol], lot_size=1.0, calendar=None)

    async def bars(
        self,
        symbol: str,
        timeframe: int,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        descending: bool = False,
    ) -> BarSeries:
        if start is None or start < START:  # no history before the range
            return BarSeries([], *(np.zeros(0) for _ in range(5)))
        count = min(self.days, limit)
        close = 100.0 + np.sin(np.arange(count) / 7.0) * 10.0
        times = [START + timedelta(days=index) for index in range(count)]
        return BarSeries(times, close, close + 1.0, close - 1.0, close, np.full(count, 1000.0))


def _spec(*symbols: str) -> BacktestSpec:
    return BacktestSpec.of(
        valid_request(symbols=symbols, timeframe=int(Timeframe.D1), start=START, parameters={"fast": 5, "slow": 20})
    )


def _backtests(market: _Market) -> Backtests:
    return Backtests(cast(MarketData, market), cast(BacktestRunner, None), PageTokens(b"k" * 32))


async def test_a_plan_reads_each_symbols_bars_and_takes_the_engine_settings_from_the_instruments() -> None:
    plan, data = await _backtests(_Market({"A": "USD", "B": "USD"})).plan(_spec("A", "B"))
    assert plan.symbols == ("A", "B")
    assert [item.symbol for item in data] == ["A", "B"]
    assert all(item.simulated == 300 for item in data)
    assert plan.engine.lot_size == 1.0
    assert plan.engine.initial_cash == 10_000.0


async def test_symbols_quoted_in_two_currencies_are_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        await _backtests(_Market({"A": "USD", "B": "EUR"})).plan(_spec("A", "B"))
    assert raised.value.reason == "MIXED_QUOTE_CURRENCIES"
    assert raised.value.violations[0].field == "config.symbols"


async def test_a_range_without_bars_is_no_bars() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        await _backtests(_Market({"A": "USD"}, days=0)).plan(_spec("A"))
    assert raised.value.reason == "NO_BARS"
    assert raised.value.metadata == {"symbol": "A"}


def test_backtest_ids_are_checked_before_any_read() -> None:
    with pytest.raises(InvalidArgument):
        backtest_id_of("")
    with pytest.raises(NotFound) as raised:
        backtest_id_of("x" * 40)
    assert raised.value.reason == "BACKTEST_NOT_FOUND"
    assert backtest_id_of("bt_1") == "bt_1"
