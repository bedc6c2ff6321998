"""gRPC adapter of the signal domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

import asyncio
import functools
import operator
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import grpc
import numpy as np

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.auth.identity import require_identity
from services.core.db.databases import utc_now
from services.core.dependencies import Dependencies
from services.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.core.market_data import BarSeries, InstrumentInfo, MarketData
from services.core.messages import decode_parameters, naive_utc, parameter_values, timestamp
from services.core.paging import decode_keyset, decode_page_token, encode_keyset, encode_page_token, page_size
from services.core.parameters import Params
from services.core.server import ServiceRegistration
from services.core.timeframes import Timeframe
from services.signal.alert_encoding import MUTABLE_PATHS, alert_message, alert_settings, new_rule, updated
from services.signal.alert_store import AlertLimitReached, AlertRule, AlertStore
from services.signal.analytics import IndicatorRequest, PriceSource, compute, prepare
from services.signal.backtest.config import BacktestConfig
from services.signal.backtest.metrics import bars_per_year
from services.signal.backtest_encoding import (
    SYMBOL,
    DecodedBacktest,
    ProtoReportCodec,
    backtest_message,
    decode_config,
    progress_message,
)
from services.signal.backtest_runner import BacktestRunner
from services.signal.backtest_store import BacktestFilter, BacktestRecord, BacktestState, BacktestStore, Owner
from services.signal.backtests import (
    MAX_BARS_PER_SYMBOL,
    MAX_BARS_TOTAL,
    MAX_SWEEP_BAR_RUNS,
    BacktestPlan,
    SymbolBars,
    parameter_sets,
)
from services.signal.encoding import event_message, find_strategy, strategy_message
from services.signal.indicators.base import REGISTRY, Bars, IndicatorDef, Param
from services.signal.indicators.catalogue import load_indicators
from services.signal.strategies.base import REGISTRY as STRATEGIES
from services.signal.strategies.base import StrategyBars, StrategyDef
from services.signal.strategies.catalogue import load_strategies

SERVICE = signal_pb2.DESCRIPTOR.services_by_name["SignalService"]
Context = grpc.aio.ServicerContext[Any, Any]
# Bars one ComputeIndicators or EvaluateStrategy call may cover (the response carries every value).
MAX_RANGE_BARS = 200_000
MAX_REQUEST_ID = 128
# Most bars read before a range for a strategy's time history (a month of minute bars).
MAX_HISTORY_BARS = 50_000


def _parameter_spec(param: Param) -> common_pb2.ParameterSpec:
    def value(number: float) -> common_pb2.ParameterValue:
        if param.integer:
            return common_pb2.ParameterValue(int_value=int(number))
        return common_pb2.ParameterValue(double_value=number)

    spec = common_pb2.ParameterSpec(
        name=param.name,
        description=param.description,
        type=common_pb2.PARAMETER_TYPE_INTEGER if param.integer else common_pb2.PARAMETER_TYPE_NUMBER,
        default_value=value(param.default),
        unit=param.unit,
    )
    if param.minimum is not None:
        spec.min_value.CopyFrom(value(param.minimum))
    if param.maximum is not None:
        spec.max_value.CopyFrom(value(param.maximum))
    if param.step is not None:
        spec.step = param.step
    return spec


def _indicator_message(definition: IndicatorDef) -> signal_pb2.Indicator:
    return signal_pb2.Indicator(
        name=definition.name,
        display_name=definition.display_name,
        description=definition.description,
        parameters=[_parameter_spec(param) for param in definition.params],
        outputs=[
            signal_pb2.IndicatorOutput(
                name=output.name, description=output.description, display_offset_bars=output.display_offset_bars
            )
            for output in definition.outputs
        ],
        inputs=list(definition.inputs),
        accepts_source=definition.accepts_source,
        overlay=definition.overlay,
    )


class _Targeted(Protocol):
    """Requests over one symbol's stored bars."""

    @property
    def symbol(self) -> str: ...
    @property
    def timeframe(self) -> Any: ...
    @property
    def range(self) -> common_pb2.TimeRange: ...


def _target(request: _Targeted) -> tuple[str, datetime, datetime | None]:
    """The symbol (upper case) and range of a request over stored bars, validated with its timeframe."""
    symbol = request.symbol.strip().upper()
    violations: list[FieldViolation] = []
    if not SYMBOL.match(symbol):
        violations.append(FieldViolation("symbol", "is required: 1-32 of A-Z 0-9 . _ -"))
    if request.timeframe not in Timeframe._value2member_map_:
        violations.append(FieldViolation("timeframe", "is required: one of TIMEFRAME_1M … TIMEFRAME_1D"))
    if not request.range.HasField("start_time"):
        violations.append(FieldViolation("range.start_time", "is required"))
    if violations:
        raise InvalidArgument(violations)
    start = naive_utc(request.range.start_time)
    end = naive_utc(request.range.end_time) if request.range.HasField("end_time") else None
    if end is not None and not start < end:
        raise InvalidArgument(FieldViolation("range", "start_time must be before end_time"), reason="INVALID_RANGE")
    return symbol, start, end


def strategy_bars(series: BarSeries, span: timedelta) -> StrategyBars:
    """Bars read from the market service in the strategies' input form."""
    times = np.array(series.times, dtype="datetime64[us]").astype("datetime64[ns]")
    return StrategyBars(times, series.open, series.high, series.low, series.close, series.volume, span)


def _too_large(count: int, limit: int, field: str = "range") -> None:
    if count > limit:
        raise InvalidArgument(
            FieldViolation(field, f"at most {limit} bars per call; narrow the range"), reason="RANGE_TOO_LARGE"
        )


class SignalServicer(signal_pb2_grpc.SignalServiceServicer):
    """bullant.signal.v1.SignalService: indicators, strategies, backtests and alert rules. The live engine's methods
    (StreamSignals, ListSignals, GetSignal, GetSignalPerformance) answer UNIMPLEMENTED until it lands."""

    def __init__(
        self, market: MarketData, runner: BacktestRunner, alerts: AlertStore, *, alert_limit: int = 100
    ) -> None:
        self._market = market
        self._runner = runner
        self._alerts = alerts
        self._alert_limit = alert_limit

    async def _range_bars(self, symbol: str, timeframe: int, start: datetime, end: datetime | None) -> BarSeries:
        """The stored bars of the range: RANGE_TOO_LARGE past MAX_RANGE_BARS, NO_BARS when there are none."""
        series = await self._market.bars(symbol, timeframe, start=start, end=end, limit=MAX_RANGE_BARS + 1)
        _too_large(len(series), MAX_RANGE_BARS)
        if not len(series):
            raise FailedPrecondition(f"no stored {symbol} bars in the range", reason="NO_BARS")
        return series

    async def _with_history(
        self, series: BarSeries, symbol: str, timeframe: int, start: datetime, need: History
    ) -> tuple[BarSeries, int]:
        """`series` preceded by the stored bars before `start` that `need` asks for (at least `need.bars` of them,
        and all of those within `need.span`), and how many were found."""
        earlier = await self._market.bars(symbol, timeframe, start=None, end=start, limit=need.bars, descending=True)
        if need.span and (not len(earlier) or earlier.times[0] > start - need.span):
            # Calendars have gaps (nights, weekends): read the span's bars by time, with room for a long weekend.
            since = start - need.span * 1.5 - timedelta(days=4)
            by_time = await self._market.bars(
                symbol, timeframe, start=since, end=start, limit=MAX_HISTORY_BARS, descending=True
            )
            earlier = by_time if len(by_time) > len(earlier) else earlier
        return (earlier.followed_by(series), len(earlier)) if len(earlier) else (series, 0)

    async def ListIndicators(
        self, request: signal_pb2.ListIndicatorsRequest, context: Context
    ) -> signal_pb2.ListIndicatorsResponse:
        size = page_size(request.page_size)
        position = decode_page_token(request.page_token)
        after = str(position.get("after", "")) if position else ""
        names = sorted(name for name in REGISTRY if name > after)
        page = names[:size]
        token = encode_page_token({"after": page[-1]}) if len(names) > size else ""
        return signal_pb2.ListIndicatorsResponse(
            indicators=[_indicator_message(REGISTRY[name]) for name in page], next_page_token=token
        )

    async def ComputeIndicators(
        self, request: signal_pb2.ComputeIndicatorsRequest, context: Context
    ) -> signal_pb2.ComputeIndicatorsResponse:
        symbol, start, end = _target(request)
        prepared = prepare(
            [
                IndicatorRequest(
                    name=spec.name,
                    parameters=dict(spec.parameters),
                    alias=spec.alias,
                    outputs=list(spec.outputs),
                    source=PriceSource(spec.source)
                    if spec.source in PriceSource._value2member_map_
                    else PriceSource.UNSPECIFIED,
                )
                for spec in request.indicators
            ]
        )
        series = await self._range_bars(symbol, request.timeframe, start, end)
        whole, skip = series, 0
        if request.extend_for_warmup:
            lookback = max(indicator.lookback for indicator in prepared)
            whole, skip = await self._with_history(series, symbol, request.timeframe, start, History(lookback))
        bars = Bars(whole.open, whole.high, whole.low, whole.close, whole.volume)
        results = []
        for indicator in prepared:
            spec = signal_pb2.IndicatorSpec(
                name=indicator.definition.name,
                parameters={name: float(value) for name, value in indicator.parameters.items()},
                alias=indicator.alias,
                outputs=list(indicator.outputs),
                source=int(indicator.source),  # type: ignore[arg-type]
            )
            results.append(
                signal_pb2.IndicatorResult(
                    spec=spec,
                    series=[
                        signal_pb2.IndicatorSeries(
                            name=item.name, output=item.output, values=item.values.tolist(), warmup_bars=item.warmup
                        )
                        for item in compute(indicator, bars, skip=skip)
                    ],
                )
            )
        return signal_pb2.ComputeIndicatorsResponse(
            bar_times=[timestamp(moment) for moment in series.times], results=results
        )

    # -- strategies -------------------------------------------------------------------------------------------------

    async def ListStrategies(
        self, request: signal_pb2.ListStrategiesRequest, context: Context
    ) -> signal_pb2.ListStrategiesResponse:
        size = page_size(request.page_size)
        tag = request.tag.strip().lower()
        position = decode_page_token(request.page_token, query=tag)
        after = str(position.get("after", "")) if position else ""
        ids = sorted(
            strategy_id
            for strategy_id, strategy in STRATEGIES.items()
            if strategy_id > after and (not tag or tag in strategy.tags)
        )
        page = ids[:size]
        token = encode_page_token({"after": page[-1]}, query=tag) if len(ids) > size else ""
        return signal_pb2.ListStrategiesResponse(
            strategies=[strategy_message(STRATEGIES[strategy_id]) for strategy_id in page], next_page_token=token
        )

    async def EvaluateStrategy(
        self, request: signal_pb2.EvaluateStrategyRequest, context: Context
    ) -> signal_pb2.EvaluateStrategyResponse:
        strategy = find_strategy(request.strategy_id)
        symbol, start, end = _target(request)
        timeframe = Timeframe(request.timeframe)
        parameters = strategy.resolve(decode_parameters(request.parameters), timeframe=timeframe)
        series = await self._range_bars(symbol, request.timeframe, start, end)
        warmup = strategy.warmup(parameters)
        skip = 0
        if request.extend_for_warmup:
            series, skip = await self._with_history(
                series, symbol, request.timeframe, start, History.of(strategy, parameters)
            )
        bars = strategy_bars(series, timeframe.delta)
        frame = await asyncio.to_thread(strategy.evaluate, bars, parameters)
        events = strategy.events(bars, frame, parameters, start=skip)
        count = len(bars) - skip
        return signal_pb2.EvaluateStrategyResponse(
            events=[event_message(event, bars.open_time[event.index]) for event in events],
            parameters=parameter_values(parameters),
            bar_count=count,
            warmup_bars=min(count, max(0, warmup - skip)),
        )

    # -- backtests --------------------------------------------------------------------------------------------------

    async def RunBacktest(
        self, request: signal_pb2.RunBacktestRequest, context: Context
    ) -> AsyncIterator[signal_pb2.RunBacktestResponse]:
        owner = _owner()
        if len(request.request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))
        if not request.HasField("config"):
            raise InvalidArgument(FieldViolation("config", "is required"))
        decoded = decode_config(request.config)
        request_id = request.request_id or None
        record = None
        if request_id is not None:
            record = await self._runner.by_request(owner, request_id, decoded.digest)
        if record is None:
            plan, data = await self._plan(decoded)
            record = await self._runner.submit(
                owner,
                plan=plan,
                data=data,
                config=decoded.config_json,
                request_id=request_id,
                digest=decoded.digest,
            )
        async for update in self._runner.watch(owner, record.backtest_id):
            if isinstance(update, BacktestRecord):
                yield signal_pb2.RunBacktestResponse(
                    backtest_id=record.backtest_id, backtest=backtest_message(update, full=True)
                )
            else:
                yield signal_pb2.RunBacktestResponse(backtest_id=record.backtest_id, progress=progress_message(update))

    async def _plan(self, decoded: DecodedBacktest) -> tuple[BacktestPlan, list[SymbolBars]]:
        """Read the instruments and bars the backtest needs and check its size."""
        instruments = await asyncio.gather(*(self._market.instrument(symbol) for symbol in decoded.symbols))
        currencies = sorted({item.quote_currency for item in instruments})
        if len(currencies) > 1:
            raise InvalidArgument(
                FieldViolation(
                    "config.symbols", f"the symbols are quoted in {', '.join(currencies)}; use one currency"
                ),
                reason="MIXED_QUOTE_CURRENCIES",
            )
        combinations = parameter_sets(decoded.parameters, decoded.grid)
        history = functools.reduce(operator.or_, (History.of(decoded.strategy, item) for item in combinations))
        span = decoded.timeframe.delta
        data: list[SymbolBars] = []
        for symbol in decoded.symbols:
            series = await self._market.bars(
                symbol, decoded.timeframe, start=decoded.start, end=decoded.end, limit=MAX_BARS_PER_SYMBOL + 1
            )
            _too_large(len(series), MAX_BARS_PER_SYMBOL, "config.range")
            if not len(series):
                raise FailedPrecondition(
                    f"no stored {symbol} bars in the range", reason="NO_BARS", metadata={"symbol": symbol}
                )
            series, warmup = await self._with_history(series, symbol, decoded.timeframe, decoded.start, history)
            data.append(SymbolBars(symbol=symbol, bars=strategy_bars(series, span), warmup=warmup))
        simulated = sum(item.simulated for item in data)
        _too_large(simulated, MAX_BARS_TOTAL, "config.range")
        if simulated * len(combinations) > MAX_SWEEP_BAR_RUNS:
            raise InvalidArgument(
                FieldViolation(
                    "config.sweep.grid",
                    f"{len(combinations)} combinations × {simulated} bars is more than {MAX_SWEEP_BAR_RUNS} bar runs",
                ),
                reason="SWEEP_TOO_LARGE",
            )
        try:
            engine = _engine_config(decoded, instruments, span)
        except ValueError as error:
            raise InvalidArgument(FieldViolation("config.sizing", str(error)), reason="INVALID_SIZING") from None
        plan = BacktestPlan(
            strategy=decoded.strategy,
            parameters=decoded.parameters,
            symbols=decoded.symbols,
            timeframe=decoded.timeframe,
            start=decoded.start,
            end=decoded.end,
            engine=engine,
            grid=decoded.grid,
            rank_by=decoded.rank_by,
            max_equity_points=decoded.max_equity_points,
        )
        return plan, data

    async def CancelBacktest(
        self, request: signal_pb2.CancelBacktestRequest, context: Context
    ) -> signal_pb2.CancelBacktestResponse:
        owner = _owner()
        record = await self._runner.cancel(owner, _backtest_id(request.backtest_id))
        if record is None:
            raise _backtest_not_found(request.backtest_id)
        return signal_pb2.CancelBacktestResponse(backtest=backtest_message(record, full=False))

    async def GetBacktest(
        self, request: signal_pb2.GetBacktestRequest, context: Context
    ) -> signal_pb2.GetBacktestResponse:
        owner = _owner()
        full = _full_view(request.view, default=True)
        record = await self._runner.get(owner, _backtest_id(request.backtest_id), with_detail=full)
        if record is None:
            raise _backtest_not_found(request.backtest_id)
        return signal_pb2.GetBacktestResponse(backtest=backtest_message(record, full=full))

    async def ListBacktests(
        self, request: signal_pb2.ListBacktestsRequest, context: Context
    ) -> signal_pb2.ListBacktestsResponse:
        owner = _owner()
        size = page_size(request.page_size)
        full = _full_view(request.view, default=False)
        if request.state not in BacktestState._value2member_map_ and request.state != 0:
            raise InvalidArgument(FieldViolation("state", "unknown backtest state"))
        filters = BacktestFilter(
            strategy_id=request.strategy_id.strip(),
            symbol=request.symbol.strip().upper(),
            state=BacktestState(request.state) if request.state else None,
        )
        query = f"{filters.strategy_id}|{filters.symbol}|{request.state}"
        after = decode_keyset(request.page_token, query=query)
        records = await self._runner.find(owner, filters, after=after, limit=size + 1, with_detail=full)
        token = ""
        if len(records) > size:
            records = records[:size]
            token = encode_keyset(records[-1].create_time, records[-1].backtest_id, query=query)
        return signal_pb2.ListBacktestsResponse(
            backtests=[backtest_message(record, full=full) for record in records], next_page_token=token
        )

    # -- alerts -----------------------------------------------------------------------------------------------------

    async def CreateAlert(
        self, request: signal_pb2.CreateAlertRequest, context: Context
    ) -> signal_pb2.CreateAlertResponse:
        owner = _owner()
        if len(request.request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))
        if not request.HasField("alert"):
            raise InvalidArgument(FieldViolation("alert", "is required"))
        settings = alert_settings(request.alert)
        await self._market.instrument(settings.symbol)
        rule = new_rule(
            settings, alert_id=new_alert_id(), owner=owner, now=utc_now(), request_id=request.request_id or None
        )
        try:
            stored, created = await self._alerts.insert(rule, limit=self._alert_limit)
        except AlertLimitReached as full:
            raise ResourceExhausted(
                f"{full.count} alert rules already; delete one first",
                reason="ALERT_LIMIT_EXCEEDED",
                metadata={"limit": self._alert_limit},
            ) from None
        if not created and stored.request_digest != rule.request_digest:
            raise AlreadyExists("this request id was used for a different alert", reason="REQUEST_ID_REUSED")
        return signal_pb2.CreateAlertResponse(alert=alert_message(stored))

    async def ListAlerts(
        self, request: signal_pb2.ListAlertsRequest, context: Context
    ) -> signal_pb2.ListAlertsResponse:
        owner = _owner()
        size = page_size(request.page_size)
        symbol = request.symbol.strip().upper()
        enabled = request.enabled if request.HasField("enabled") else None
        query = f"{symbol}|{enabled}"
        after = decode_keyset(request.page_token, query=query)
        rules = await self._alerts.find(owner, symbol=symbol, enabled=enabled, after=after, limit=size + 1)
        token = ""
        if len(rules) > size:
            rules = rules[:size]
            token = encode_keyset(rules[-1].create_time, rules[-1].alert_id, query=query)
        return signal_pb2.ListAlertsResponse(alerts=[alert_message(rule) for rule in rules], next_page_token=token)

    async def GetAlert(self, request: signal_pb2.GetAlertRequest, context: Context) -> signal_pb2.GetAlertResponse:
        return signal_pb2.GetAlertResponse(alert=alert_message(await self._alert(_owner(), request.alert_id)))

    async def UpdateAlert(
        self, request: signal_pb2.UpdateAlertRequest, context: Context
    ) -> signal_pb2.UpdateAlertResponse:
        owner = _owner()
        paths = list(request.update_mask.paths)
        wrong = [path for path in paths if path not in MUTABLE_PATHS]
        if not paths or wrong:
            raise InvalidArgument(
                FieldViolation(
                    "update_mask",
                    f"name some of {', '.join(sorted(MUTABLE_PATHS))}" + (f"; not {', '.join(wrong)}" if wrong else ""),
                ),
                reason="INVALID_UPDATE_MASK",
            )
        rule = await self._alert(owner, request.alert.alert_id, field="alert.alert_id")
        changed = updated(rule, request.alert, paths, utc_now())
        if changed.symbol != rule.symbol:
            await self._market.instrument(changed.symbol)
        if not await self._alerts.save(changed):
            raise _alert_not_found(rule.alert_id)
        return signal_pb2.UpdateAlertResponse(alert=alert_message(changed))

    async def DeleteAlert(
        self, request: signal_pb2.DeleteAlertRequest, context: Context
    ) -> signal_pb2.DeleteAlertResponse:
        owner = _owner()
        alert_id = _alert_id(request.alert_id)
        if not await self._alerts.delete(owner, alert_id) and not request.allow_missing:
            raise _alert_not_found(alert_id)
        return signal_pb2.DeleteAlertResponse()

    async def _alert(self, owner: Owner, alert_id: str, *, field: str = "alert_id") -> AlertRule:
        rule = await self._alerts.get(owner, _alert_id(alert_id, field))
        if rule is None:
            raise _alert_not_found(alert_id)
        return rule


def _owner() -> Owner:
    identity = require_identity()
    return Owner(identity.account_id, identity.shard)


@dataclass(frozen=True, slots=True)
class History:
    """History to read before a range: a number of bars and a span of time (for strategies that aggregate bars
    into a higher timeframe)."""

    bars: int
    span: timedelta = timedelta(0)

    @classmethod
    def of(cls, strategy: StrategyDef, parameters: Params) -> History:
        """What `strategy` needs to signal from a range's first bar: three times its warm-up (so recursive averages
        forget their seed) and its time history."""
        return cls(3 * strategy.warmup(parameters) + 10, strategy.history(parameters))

    def __or__(self, other: History) -> History:
        return History(max(self.bars, other.bars), max(self.span, other.span))


def _engine_config(decoded: DecodedBacktest, instruments: Sequence[InstrumentInfo], span: timedelta) -> BacktestConfig:
    """Engine settings: the request's, with the calendar (periods per year) and lot size of the instruments (the
    first symbol's calendar; the smallest lot when they differ)."""
    first = instruments[0]
    return BacktestConfig(
        initial_cash=decoded.initial_cash,
        periods_per_year=bars_per_year(span, days_per_year=first.days_per_year, hours_per_day=first.session_hours),
        commission=decoded.commission,
        slippage_bps=decoded.slippage_bps,
        sizing=decoded.sizing,
        fill_timing=decoded.fill_timing,
        allow_short=decoded.allow_short,
        allow_fractional=decoded.allow_fractional,
        lot_size=min(item.lot_size for item in instruments),
        stop_loss=decoded.stop_loss,
        take_profit=decoded.take_profit,
        trailing_stop=decoded.trailing_stop,
        risk_free_rate=decoded.risk_free_rate,
    )


def new_alert_id() -> str:
    return "alr_" + secrets.token_hex(12)


def _alert_id(value: str, field: str = "alert_id") -> str:
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(value) > 32 or not value.isascii() or not value.replace("_", "").isalnum():
        raise _alert_not_found(value)
    return value


def _alert_not_found(alert_id: str) -> NotFound:
    return NotFound(f"no alert {alert_id[:64]!r}", reason="ALERT_NOT_FOUND", metadata={"alert_id": alert_id[:64]})


def _backtest_id(value: str) -> str:
    if not value:
        raise InvalidArgument(FieldViolation("backtest_id", "is required"))
    if len(value) > 32 or not value.isascii():
        raise _backtest_not_found(value)
    return value


def _backtest_not_found(backtest_id: str) -> NotFound:
    return NotFound(
        f"no backtest {backtest_id!r}", reason="BACKTEST_NOT_FOUND", metadata={"backtest_id": backtest_id[:64]}
    )


def _full_view(view: int, *, default: bool) -> bool:
    if view not in (0, 1, 2):
        raise InvalidArgument(FieldViolation("view", "unknown view"))
    return default if view == 0 else view == 2


def registration(deps: Dependencies) -> ServiceRegistration:
    """The signal service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    load_indicators()
    load_strategies()
    runner = BacktestRunner(
        BacktestStore(deps.databases),
        ProtoReportCodec(),
        workers=deps.settings.backtest_workers,
        per_account=deps.settings.backtests_per_account,
    )
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = SignalServicer(  # type: ignore[abstract]
        MarketData(deps.clients),
        runner,
        AlertStore(deps.databases),
        alert_limit=deps.settings.max_alerts_per_account,
    )
    return ServiceRegistration(
        name="signal",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: signal_pb2_grpc.add_SignalServiceServicer_to_server(servicer, server),
        components=(runner,),
    )
