"""gRPC adapter of the signal domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.dependencies import Dependencies
from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.core.paging import decode_page_token, encode_page_token, page_size
from services.core.server import ServiceRegistration
from services.signal.analytics import IndicatorRequest, PriceSource, compute, prepare
from services.signal.indicators.base import REGISTRY, IndicatorDef, Param
from services.signal.indicators.catalogue import load_indicators
from services.signal.market_data import MarketData

SERVICE = signal_pb2.DESCRIPTOR.services_by_name["SignalService"]
Context = grpc.aio.ServicerContext[Any, Any]
# Bars one ComputeIndicators call may cover (the response carries every value of every series).
MAX_RANGE_BARS = 200_000
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
_TIMEFRAMES = {1, 2, 3, 4, 5}


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


def _naive(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.replace(tzinfo=UTC))
    return stamp


class SignalServicer(signal_pb2_grpc.SignalServiceServicer):
    """bullant.signal.v1.SignalService. Indicators are built (issue 6); strategies, backtests, live signals and alerts
    follow (issues 6 and 8) and answer UNIMPLEMENTED until they land."""

    def __init__(self, market: MarketData) -> None:
        self._market = market

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
        symbol = request.symbol.strip().upper()
        violations: list[FieldViolation] = []
        if not _SYMBOL.match(symbol):
            violations.append(FieldViolation("symbol", "is required: 1-32 of A-Z 0-9 . _ -"))
        if request.timeframe not in _TIMEFRAMES:
            violations.append(FieldViolation("timeframe", "is required: one of TIMEFRAME_1M … TIMEFRAME_1D"))
        if not request.range.HasField("start_time"):
            violations.append(FieldViolation("range.start_time", "is required"))
        if violations:
            raise InvalidArgument(violations)
        start = _naive(request.range.start_time)
        end = _naive(request.range.end_time) if request.range.HasField("end_time") else None
        if end is not None and not start < end:
            raise InvalidArgument(FieldViolation("range", "start_time must be before end_time"), reason="INVALID_RANGE")
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
        series = await self._market.bars(symbol, request.timeframe, start=start, end=end, limit=MAX_RANGE_BARS + 1)
        if len(series) > MAX_RANGE_BARS:
            raise InvalidArgument(
                FieldViolation("range", f"at most {MAX_RANGE_BARS} bars per call; narrow the range"),
                reason="RANGE_TOO_LARGE",
            )
        if not len(series):
            raise FailedPrecondition(f"no stored {symbol} bars in the range", reason="NO_BARS")
        skip = 0
        bars = series.bars
        if request.extend_for_warmup:
            lookback = max(indicator.lookback for indicator in prepared)
            earlier = await self._market.bars(
                symbol, request.timeframe, start=None, end=start, limit=lookback, descending=True
            )
            if len(earlier):
                skip = len(earlier)
                bars = earlier.followed_by(series).bars
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
            bar_times=[_stamp(moment) for moment in series.times], results=results
        )


def registration(deps: Dependencies) -> ServiceRegistration:
    """The signal service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    load_indicators()
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = SignalServicer(MarketData(deps.clients))  # type: ignore[abstract]
    return ServiceRegistration(
        name="signal",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: signal_pb2_grpc.add_SignalServiceServicer_to_server(servicer, server),
    )
