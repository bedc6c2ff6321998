"""gRPC adapter of the signal domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import grpc
import numpy as np

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
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
from services.core.paging import NAME, Cursor, PageTokens, keyset_cursor, page_size
from services.core.replica import replica_identity
from services.core.server import PreEncodedResponses, ServiceRegistration
from services.core.timeframes import Timeframe
from services.signal.alert_encoding import (
    MUTABLE_PATHS,
    alert_id_of,
    alert_message,
    alert_not_found,
    alert_settings,
    caller,
    new_alert_id,
    new_rule,
    updated,
)
from services.signal.alert_store import AlertLimitReached, AlertStore
from services.signal.analytics import IndicatorRequest, PriceSource, compute, prepare, with_warmup
from services.signal.backtest.config import BacktestConfig
from services.signal.backtest_encoding import (
    DecodedBacktest,
    ProtoReportCodec,
    backtest_message,
    decode_config,
    progress_message,
)
from services.signal.backtest_runner import BacktestRunner
from services.signal.backtest_store import BacktestFilter, BacktestRecord, BacktestState, BacktestStore
from services.signal.backtests import (
    MAX_BARS_PER_SYMBOL,
    MAX_BARS_TOTAL,
    MAX_SWEEP_BAR_RUNS,
    BacktestPlan,
    SymbolBars,
    parameter_sets,
)
from services.signal.encoding import event_message, find_strategy, strategy_message
from services.signal.fusion import ModelFusion
from services.signal.history import History, read_history
from services.signal.indicators.base import REGISTRY, Bars, IndicatorDef, Param
from services.signal.indicators.catalogue import load_indicators
from services.signal.live.alerting import AlertDispatcher
from services.signal.live.engine import EnginePolicy, LiveEngine
from services.signal.live.firing_store import FiringStore
from services.signal.live.hub import SignalHub, WatchRegistry
from services.signal.live.market_ticks import MarketTicks
from services.signal.live.outcome_store import OutcomeStore
from services.signal.live.performance import PerformanceJob
from services.signal.live.series_runner import ProcessedProbe, RunnerParts, RunnerPolicy
from services.signal.live.signal_store import SignalStore
from services.signal.live_servicer import LiveParts, LiveSignalMethods
from services.signal.strategies.base import REGISTRY as STRATEGIES
from services.signal.strategies.base import StrategyBars
from services.signal.strategies.catalogue import load_strategies

log = logging.getLogger("bullant.signal")
SERVICE = signal_pb2.DESCRIPTOR.services_by_name["SignalService"]
Context = grpc.aio.ServicerContext[Any, Any]
# Bars one ComputeIndicators or EvaluateStrategy call may cover (the response carries every value).
MAX_RANGE_BARS = 200_000


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
    """The symbol (upper case) and range of a request over stored bars; the declared rules (symbol, timeframe,
    range.start_time) were checked before the handler, the range's order is checked here."""
    start = naive_utc(request.range.start_time)
    end = naive_utc(request.range.end_time) if request.range.HasField("end_time") else None
    if end is not None and not start < end:
        raise InvalidArgument(FieldViolation("range", "start_time must be before end_time"), reason="INVALID_RANGE")
    return request.symbol.upper(), start, end


def strategy_bars(series: BarSeries, span: timedelta) -> StrategyBars:
    """Bars read from the market service in the strategies' input form."""
    times = np.array(series.times, dtype="datetime64[us]").astype("datetime64[ns]")
    return StrategyBars(times, series.open, series.high, series.low, series.close, series.volume, span)


def _too_large(count: int, limit: int, field: str = "range") -> None:
    if count > limit:
        raise InvalidArgument(
            FieldViolation(field, f"at most {limit} bars per call; narrow the range"), reason="RANGE_TOO_LARGE"
        )


# What each list's page tokens hold (the live lists' are in live_servicer).
_INDICATORS_CURSOR = Cursor.of("signal.ListIndicators", after=NAME)
_STRATEGIES_CURSOR = Cursor.of("signal.ListStrategies", after=NAME)
_BACKTESTS_CURSOR = keyset_cursor("signal.ListBacktests")
_ALERTS_CURSOR = keyset_cursor("signal.ListAlerts")


# StreamSignals yields pre-encoded bytes too, which the generated base's signature does not know.
class SignalServicer(LiveSignalMethods, signal_pb2_grpc.SignalServiceServicer):  # type: ignore[misc]
    """bullant.signal.v1.SignalService: indicators, strategies, backtests and alert rules here; live signals and
    their performance in LiveSignalMethods."""

    def __init__(
        self,
        market: MarketData,
        runner: BacktestRunner,
        alerts: AlertStore,
        live: LiveParts,
        *,
        pages: PageTokens,
        alert_limit: int = 100,
    ) -> None:
        self._market = market
        self._pages = pages
        self._runner = runner
        self._alerts = alerts
        self._live = live
        self._alert_limit = alert_limit

    async def _rules_changed(self) -> None:
        """Tell the engine's leader to re-read the alert rules now (it also does every few seconds)."""
        try:
            await self._live.watch.notify_rules_changed()
        except Exception:  # the rule is stored; the engine's periodic refresh picks it up
            log.warning("could not notify the signal engine of an alert rule change", exc_info=True)

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
        """`series` preceded by the stored bars before `start` that `need` asks for, and how many were found."""
        earlier = await read_history(self._market, symbol, timeframe, start, need)
        return (earlier.followed_by(series), len(earlier)) if len(earlier) else (series, 0)

    async def ListIndicators(
        self, request: signal_pb2.ListIndicatorsRequest, context: Context
    ) -> signal_pb2.ListIndicatorsResponse:
        size = page_size(request.page_size)
        position = self._pages.decode(_INDICATORS_CURSOR, request.page_token)
        after = position["after"] if position else ""
        names = sorted(name for name in REGISTRY if name > after)
        page = names[:size]
        token = self._pages.encode(_INDICATORS_CURSOR, {"after": page[-1]}) if len(names) > size else ""
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

            async def earlier(count: int) -> BarSeries:
                return await read_history(self._market, symbol, request.timeframe, start, History(count))

            whole, skip = await with_warmup(prepared, series, earlier)
        bars = Bars(whole.open, whole.high, whole.low, whole.close, whole.volume)
        computed = await asyncio.to_thread(lambda: [compute(indicator, bars, skip=skip) for indicator in prepared])
        results = []
        for indicator, found in zip(prepared, computed, strict=True):
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
                        for item in found
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
        position = self._pages.decode(_STRATEGIES_CURSOR, request.page_token, query=tag)
        after = position["after"] if position else ""
        ids = sorted(
            strategy_id
            for strategy_id, strategy in STRATEGIES.items()
            if strategy_id > after and (not tag or tag in strategy.tags)
        )
        page = ids[:size]
        token = self._pages.encode(_STRATEGIES_CURSOR, {"after": page[-1]}, query=tag) if len(ids) > size else ""
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
        owner = caller()
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
        owner = caller()
        record = await self._runner.cancel(owner, _backtest_id(request.backtest_id))
        if record is None:
            raise _backtest_not_found(request.backtest_id)
        return signal_pb2.CancelBacktestResponse(backtest=backtest_message(record, full=False))

    async def GetBacktest(
        self, request: signal_pb2.GetBacktestRequest, context: Context
    ) -> signal_pb2.GetBacktestResponse:
        owner = caller()
        full = _full_view(request.view, default=True)
        record = await self._runner.get(owner, _backtest_id(request.backtest_id), with_detail=full)
        if record is None:
            raise _backtest_not_found(request.backtest_id)
        return signal_pb2.GetBacktestResponse(backtest=backtest_message(record, full=full))

    async def ListBacktests(
        self, request: signal_pb2.ListBacktestsRequest, context: Context
    ) -> signal_pb2.ListBacktestsResponse:
        owner = caller()
        size = page_size(request.page_size)
        full = _full_view(request.view, default=False)
        filters = BacktestFilter(
            strategy_id=request.strategy_id.strip(),
            symbol=request.symbol.strip().upper(),
            state=BacktestState(request.state) if request.state else None,
        )
        query = f"{filters.strategy_id}|{filters.symbol}|{request.state}"
        position = self._pages.decode(_BACKTESTS_CURSOR, request.page_token, query=query)
        after = (position["t"], position["id"]) if position else None
        records = await self._runner.find(owner, filters, after=after, limit=size + 1, with_detail=full)
        token = ""
        if len(records) > size:
            records = records[:size]
            last = records[-1]
            token = self._pages.encode(_BACKTESTS_CURSOR, {"t": last.create_time, "id": last.backtest_id}, query=query)
        return signal_pb2.ListBacktestsResponse(
            backtests=[backtest_message(record, full=full) for record in records], next_page_token=token
        )

    # -- alerts -----------------------------------------------------------------------------------------------------

    async def CreateAlert(
        self, request: signal_pb2.CreateAlertRequest, context: Context
    ) -> signal_pb2.CreateAlertResponse:
        owner = caller()
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
        if created:
            await self._rules_changed()
        return signal_pb2.CreateAlertResponse(alert=alert_message(stored))

    async def ListAlerts(
        self, request: signal_pb2.ListAlertsRequest, context: Context
    ) -> signal_pb2.ListAlertsResponse:
        owner = caller()
        size = page_size(request.page_size)
        symbol = request.symbol.strip().upper()
        enabled = request.enabled if request.HasField("enabled") else None
        query = f"{symbol}|{enabled}"
        position = self._pages.decode(_ALERTS_CURSOR, request.page_token, query=query)
        after = (position["t"], position["id"]) if position else None
        rules = await self._alerts.find(owner, symbol=symbol, enabled=enabled, after=after, limit=size + 1)
        token = ""
        if len(rules) > size:
            rules = rules[:size]
            token = self._pages.encode(
                _ALERTS_CURSOR, {"t": rules[-1].create_time, "id": rules[-1].alert_id}, query=query
            )
        return signal_pb2.ListAlertsResponse(alerts=[alert_message(rule) for rule in rules], next_page_token=token)

    async def GetAlert(self, request: signal_pb2.GetAlertRequest, context: Context) -> signal_pb2.GetAlertResponse:
        return signal_pb2.GetAlertResponse(alert=alert_message(await self._alert(caller(), request.alert_id)))

    async def UpdateAlert(
        self, request: signal_pb2.UpdateAlertRequest, context: Context
    ) -> signal_pb2.UpdateAlertResponse:
        owner = caller()
        # The declared rules admitted only the alert's settable fields, or "*" for all of them.
        paths = sorted(MUTABLE_PATHS) if "*" in request.update_mask.paths else list(request.update_mask.paths)
        rule = await self._alert(owner, request.alert.alert_id, field="alert.alert_id")
        changed = updated(rule, request.alert, paths, utc_now())
        if changed.symbol != rule.symbol:
            await self._market.instrument(changed.symbol)
        if not await self._alerts.save(changed):
            raise alert_not_found(rule.alert_id)
        await self._rules_changed()
        return signal_pb2.UpdateAlertResponse(alert=alert_message(changed))

    async def DeleteAlert(
        self, request: signal_pb2.DeleteAlertRequest, context: Context
    ) -> signal_pb2.DeleteAlertResponse:
        owner = caller()
        alert_id = alert_id_of(request.alert_id)
        deleted = await self._alerts.delete(owner, alert_id)
        if not deleted and not request.allow_missing:
            raise alert_not_found(alert_id)
        if deleted:
            await self._rules_changed()
        return signal_pb2.DeleteAlertResponse()


def _engine_config(decoded: DecodedBacktest, instruments: Sequence[InstrumentInfo], span: timedelta) -> BacktestConfig:
    """Engine settings: the request's, with the calendar (periods per year) and lot size of the instruments (the
    first symbol's calendar; the smallest lot when they differ)."""
    first = instruments[0]
    return BacktestConfig(
        initial_cash=decoded.initial_cash,
        periods_per_year=first.periods_per_year(span),
        commission=decoded.commission,
        slippage_bps=decoded.slippage_bps,
        sizing=decoded.sizing,
        fill_timing=decoded.fill_timing,
        close_at_end=decoded.close_at_end,
        allow_short=decoded.allow_short,
        allow_fractional=decoded.allow_fractional,
        lot_size=min(item.lot_size for item in instruments),
        stop_loss=decoded.stop_loss,
        take_profit=decoded.take_profit,
        trailing_stop=decoded.trailing_stop,
        risk_free_rate=decoded.risk_free_rate,
    )


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
    return default if view == 0 else view == signal_pb2.BACKTEST_VIEW_FULL


def registration(
    deps: Dependencies, *, on_processed: ProcessedProbe | None = None, clock: Callable[[], datetime] = utc_now
) -> ServiceRegistration:
    """The signal service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies,
    `on_processed` the engine's probe (benchmarks and tests) and `clock` the live engine's (the market's time)."""
    load_indicators()
    load_strategies()
    settings = deps.settings
    runner = BacktestRunner(
        BacktestStore(deps.databases),
        ProtoReportCodec(),
        workers=settings.backtest_workers,
        per_account=settings.backtests_per_account,
        runner_id=replica_identity(settings),
    )
    market = MarketData(deps.clients)
    alerts = AlertStore(deps.databases)
    signals = SignalStore(deps.databases)
    firings = FiringStore(deps.databases)
    outcomes = OutcomeStore(deps.databases)
    coordination = deps.coordination.for_service("signal")
    hub = SignalHub(coordination.pubsub, draining=deps.lifecycle.draining)
    watch = WatchRegistry(coordination.pubsub, refresh=settings.signal_watch_refresh_seconds)
    dispatcher = AlertDispatcher(firings=firings, rules=alerts, signals=signals, databases=deps.databases, hub=hub)
    identity = ServiceIdentity(deps.signing_keys, token_policy(settings), "signal")
    timeframes = tuple(Timeframe.from_label(label) for label in settings.signal_timeframes)
    parts = RunnerParts(
        market=market,
        signals=signals,
        fusion=ModelFusion(
            deps.clients,
            deadline_seconds=settings.signal_fusion_deadline_seconds,
            enabled=settings.signal_fusion_enabled,
        ),
        hub=hub,
        dispatcher=dispatcher,
        identity=identity,
        policy=RunnerPolicy(
            repeat_bars=settings.signal_repeat_bars, fusion_horizon=settings.signal_fusion_horizon_bars
        ),
        on_processed=on_processed,
        clock=clock,
    )
    engine = LiveEngine(
        draining=deps.lifecycle.draining,
        parts=parts,
        ticks=MarketTicks(deps.clients),
        rules=alerts,
        dispatcher=dispatcher,
        performance=PerformanceJob(outcomes, market),
        pubsub=coordination.pubsub,
        locks=coordination.locks,
        identity=identity,
        policy=EnginePolicy(
            symbols=tuple(settings.signal_symbols),
            timeframes=timeframes,
            strategies=tuple(settings.signal_strategies),
            grace_seconds=settings.signal_bar_close_grace_seconds,
            lease_seconds=settings.signal_engine_lease_seconds,
            refresh_seconds=settings.signal_watch_refresh_seconds,
            performance_seconds=settings.signal_performance_interval_seconds,
        ),
        clock=clock,
    )
    live = LiveParts(
        signals=signals,
        outcomes=outcomes,
        firings=firings,
        hub=hub,
        watch=watch,
        draining=deps.lifecycle.draining,
        timeframes=timeframes,
        heartbeat_seconds=settings.signal_heartbeat_seconds,
        max_streams=settings.max_streams_per_account,
    )
    servicer = SignalServicer(
        market, runner, alerts, live, pages=deps.page_tokens, alert_limit=settings.max_alerts_per_account
    )
    return ServiceRegistration(
        name="signal",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: signal_pb2_grpc.add_SignalServiceServicer_to_server(
            servicer,
            PreEncodedResponses(server, {"StreamSignals"}),  # type: ignore[arg-type]
        ),
        # The hub listens before the engine publishes; the engine stops before the hub.
        components=(runner, hub, watch, engine),
    )
