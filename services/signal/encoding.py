"""Conversions between the catalogue (indicators, strategies, their parameters and events) and bullant.signal.v1
messages."""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.parameter_messages import parameter_spec, parameter_values
from services.core.timestamps import naive_utc, timestamp
from services.signal.analytics import IndicatorRequest, PriceSource
from services.signal.indicators.base import IndicatorDef
from services.signal.service.catalogue import BarsRequest, Evaluation, IndicatorValues
from services.signal.strategies.base import SignalEvent, StrategyDef


class _Targeted(Protocol):
    """Requests over one symbol's stored bars."""

    @property
    def symbol(self) -> str: ...
    @property
    def timeframe(self) -> Any: ...
    @property
    def range(self) -> common_pb2.TimeRange: ...
    @property
    def extend_for_warmup(self) -> bool: ...


def bars_request(request: _Targeted) -> BarsRequest:
    """The symbol (upper case), timeframe and range of a request over stored bars (the declared rules – symbol,
    timeframe, range.start_time – were checked before the handler; the service checks the range's order)."""
    return BarsRequest(
        symbol=request.symbol.upper(),
        timeframe=request.timeframe,
        start=naive_utc(request.range.start_time),
        end=naive_utc(request.range.end_time) if request.range.HasField("end_time") else None,
        extend_for_warmup=request.extend_for_warmup,
    )


def indicator_requests(specs: Any) -> list[IndicatorRequest]:
    """ComputeIndicators' IndicatorSpecs, as asked (an unknown source is unspecified)."""
    return [
        IndicatorRequest(
            name=spec.name,
            parameters=dict(spec.parameters),
            alias=spec.alias,
            outputs=list(spec.outputs),
            source=PriceSource(spec.source)
            if spec.source in PriceSource._value2member_map_
            else PriceSource.UNSPECIFIED,
        )
        for spec in specs
    ]


def indicator_values_message(values: IndicatorValues) -> signal_pb2.ComputeIndicatorsResponse:
    results = []
    for indicator, found in values.results:
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
        bar_times=[timestamp(moment) for moment in values.bar_times], results=results
    )


def indicator_message(definition: IndicatorDef) -> signal_pb2.Indicator:
    """ListIndicators' description of an indicator."""
    return signal_pb2.Indicator(
        name=definition.name,
        display_name=definition.display_name,
        description=definition.description,
        parameters=[parameter_spec(param) for param in definition.params],
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


def strategy_message(strategy: StrategyDef) -> signal_pb2.Strategy:
    """ListStrategies' description of a strategy."""
    return signal_pb2.Strategy(
        strategy_id=strategy.strategy_id,
        display_name=strategy.display_name,
        description=strategy.description,
        parameters=[parameter_spec(param) for param in strategy.params],
        timeframes=[int(timeframe) for timeframe in strategy.timeframes],  # type: ignore[misc]
        warmup_bars=strategy.warmup(strategy.defaults),
        tags=list(strategy.tags),
    )


_SIDES = {1: 1, -1: 2}  # +1 → SIDE_BUY, -1 → SIDE_SELL


def event_message(event: SignalEvent, bar_time: np.datetime64) -> signal_pb2.SignalEvent:
    """A strategy event as a SignalEvent."""
    return signal_pb2.SignalEvent(
        bar_time=timestamp(bar_time),
        side=_SIDES[event.side],  # type: ignore[arg-type]
        strength=signal_pb2.SIGNAL_STRENGTH_STRONG if event.strong else signal_pb2.SIGNAL_STRENGTH_WEAK,
        confidence=event.confidence,
        reason=event.reason,
        price=event.price,
        indicator_values={name: value for name, value in event.values.items() if math.isfinite(value)},
    )


def evaluation_message(evaluation: Evaluation) -> signal_pb2.EvaluateStrategyResponse:
    return signal_pb2.EvaluateStrategyResponse(
        events=[event_message(event, bar_time) for event, bar_time in evaluation.events],
        parameters=parameter_values(evaluation.parameters),
        bar_count=evaluation.bar_count,
        warmup_bars=evaluation.warmup_bars,
    )
