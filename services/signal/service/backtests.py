"""Backtests' use cases: plan a validated spec (the instruments and bars it needs, one quote currency, its size and
sweep size, the engine's settings) and hand it to the runner; run with request-id idempotency, cancel, read and
list the caller's backtests."""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from services.core.accounts import AccountRef
from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.core.market_data import InstrumentInfo, MarketData
from services.core.paging import Page, PageTokens, keyset_after, keyset_cursor, keyset_page
from services.signal.backtests.engine.config import BacktestConfig
from services.signal.backtests.runner import BacktestRunner, Update
from services.signal.backtests.simulation import (
    MAX_BARS_PER_SYMBOL,
    MAX_BARS_TOTAL,
    MAX_SWEEP_BAR_RUNS,
    BacktestPlan,
    SymbolBars,
    parameter_sets,
)
from services.signal.backtests.spec import BacktestSpec
from services.signal.backtests.store import BacktestFilter, BacktestRecord
from services.signal.history import History, read_history, strategy_bars
from services.signal.validation import too_large

_BACKTESTS_CURSOR = keyset_cursor("signal.ListBacktests")


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """A validated backtest to run: the spec, its config as stored and that config's digest (a request id reused
    with another config is REQUEST_ID_REUSED)."""

    spec: BacktestSpec
    config: str
    digest: str
    request_id: str | None


class Backtests:
    """The caller's backtests, run by this replica's runner over bars read from the market service."""

    def __init__(self, market: MarketData, runner: BacktestRunner, pages: PageTokens) -> None:
        self._market = market
        self._runner = runner
        self._pages = pages

    async def run(self, owner: AccountRef, submission: Submission) -> AsyncGenerator[tuple[str, Update], None]:
        """Run the backtest (or follow the one already submitted with the request id): its id with each progress
        update, then with the finished record."""
        record = None
        if submission.request_id is not None:
            record = await self._runner.by_request(owner, submission.request_id, submission.digest)
        if record is None:
            plan, data = await self.plan(submission.spec)
            record = await self._runner.submit(
                owner,
                plan=plan,
                data=data,
                config=submission.config,
                request_id=submission.request_id,
                digest=submission.digest,
            )
        async for update in self._runner.watch(owner, record.backtest_id):
            yield record.backtest_id, update

    async def plan(self, spec: BacktestSpec) -> tuple[BacktestPlan, list[SymbolBars]]:
        """Read the instruments and bars the backtest needs and check its size: MIXED_QUOTE_CURRENCIES,
        RANGE_TOO_LARGE, NO_BARS, SWEEP_TOO_LARGE, INVALID_SIZING."""
        instruments = await asyncio.gather(*(self._market.instrument(symbol) for symbol in spec.symbols))
        currencies = sorted({item.quote_currency for item in instruments})
        if len(currencies) > 1:
            raise InvalidArgument(
                FieldViolation(
                    "config.symbols", f"the symbols are quoted in {', '.join(currencies)}; use one currency"
                ),
                reason="MIXED_QUOTE_CURRENCIES",
            )
        combinations = parameter_sets(spec.parameters, spec.grid)
        history = functools.reduce(operator.or_, (History.of(spec.strategy, item) for item in combinations))
        span = spec.timeframe.delta
        data: list[SymbolBars] = []
        for symbol in spec.symbols:
            series = await self._market.bars(
                symbol, spec.timeframe, start=spec.start, end=spec.end, limit=MAX_BARS_PER_SYMBOL + 1
            )
            too_large(len(series), MAX_BARS_PER_SYMBOL, "config.range")
            if not len(series):
                raise FailedPrecondition(
                    f"no stored {symbol} bars in the range", reason="NO_BARS", metadata={"symbol": symbol}
                )
            earlier = await read_history(self._market, symbol, spec.timeframe, spec.start, history)
            if len(earlier):
                series = earlier.followed_by(series)
            data.append(SymbolBars(symbol=symbol, bars=strategy_bars(series, span), warmup=len(earlier)))
        simulated = sum(item.simulated for item in data)
        too_large(simulated, MAX_BARS_TOTAL, "config.range")
        if simulated * len(combinations) > MAX_SWEEP_BAR_RUNS:
            raise InvalidArgument(
                FieldViolation(
                    "config.sweep.grid",
                    f"{len(combinations)} combinations × {simulated} bars is more than {MAX_SWEEP_BAR_RUNS} bar runs",
                ),
                reason="SWEEP_TOO_LARGE",
            )
        try:
            engine = engine_config(spec, instruments, span)
        except ValueError as error:
            raise InvalidArgument(FieldViolation("config.sizing", str(error)), reason="INVALID_SIZING") from None
        plan = BacktestPlan(
            strategy=spec.strategy,
            parameters=spec.parameters,
            symbols=spec.symbols,
            timeframe=spec.timeframe,
            start=spec.start,
            end=spec.end,
            engine=engine,
            grid=spec.grid,
            rank_by=spec.rank_by,
            max_equity_points=spec.max_equity_points,
        )
        return plan, data

    async def cancel(self, owner: AccountRef, backtest_id: str) -> BacktestRecord:
        """Cancel the caller's queued or running backtest (a finished one is returned unchanged)."""
        record = await self._runner.cancel(owner, backtest_id_of(backtest_id))
        if record is None:
            raise backtest_not_found(backtest_id)
        return record

    async def get(self, owner: AccountRef, backtest_id: str, *, full: bool) -> BacktestRecord:
        """The caller's backtest (with the whole report in the full view)."""
        record = await self._runner.get(owner, backtest_id_of(backtest_id), with_detail=full)
        if record is None:
            raise backtest_not_found(backtest_id)
        return record

    async def find(
        self, owner: AccountRef, filters: BacktestFilter, *, size: int, page_token: str, full: bool
    ) -> Page[BacktestRecord]:
        """The caller's backtests, newest first."""
        return await keyset_page(
            self._pages,
            _BACKTESTS_CURSOR,
            page_token,
            query=f"{filters.strategy_id}|{filters.symbol}|{int(filters.state) if filters.state else 0}",
            size=size,
            fetch=lambda after, limit: self._runner.find(
                owner, filters, after=keyset_after(after), limit=limit, with_detail=full
            ),
            position=lambda record: {"t": record.create_time, "id": record.backtest_id},
        )


def engine_config(spec: BacktestSpec, instruments: Sequence[InstrumentInfo], span: timedelta) -> BacktestConfig:
    """Engine settings: the spec's, with the calendar (periods per year) and lot size of the instruments (the
    first symbol's calendar; the smallest lot when they differ). ValueError when the engine refuses them."""
    first = instruments[0]
    return BacktestConfig(
        initial_cash=spec.initial_cash,
        periods_per_year=first.periods_per_year(span),
        commission=spec.commission,
        slippage_bps=spec.slippage_bps,
        sizing=spec.sizing,
        fill_timing=spec.fill_timing,
        close_at_end=spec.close_at_end,
        allow_short=spec.allow_short,
        allow_fractional=spec.allow_fractional,
        lot_size=min(item.lot_size for item in instruments),
        stop_loss=spec.stop_loss,
        take_profit=spec.take_profit,
        trailing_stop=spec.trailing_stop,
        risk_free_rate=spec.risk_free_rate,
    )


def backtest_id_of(value: str) -> str:
    """A requested backtest id: INVALID_ARGUMENT when empty, BACKTEST_NOT_FOUND when it cannot be one."""
    if not value:
        raise InvalidArgument(FieldViolation("backtest_id", "is required"))
    if len(value) > 32 or not value.isascii():
        raise backtest_not_found(value)
    return value


def backtest_not_found(backtest_id: str) -> NotFound:
    return NotFound(
        f"no backtest {backtest_id!r}", reason="BACKTEST_NOT_FOUND", metadata={"backtest_id": backtest_id[:64]}
    )
