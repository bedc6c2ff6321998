"""ListIndicators and ComputeIndicators through real channels: the signal service reads bars from the market service
over gRPC (same process, its configured upstream) and matches TA-Lib; bad requests get the contract's reasons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import numpy as np
import pytest
import talib

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.market.records import Timeframe
from services.signal.indicators.base import Bars
from services.signal.indicators.catalogue import load_indicators
from tests.account_platform import refusal
from tests.signal_platform import START, StoredSymbol, running_signal_platform
from tests.signal_platform import stamp as _stamp


@dataclass
class Platform:
    signal: signal_pb2_grpc.SignalServiceAsyncStub
    reader: tuple[tuple[str, str], ...]
    closes: np.ndarray


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    async with running_signal_platform() as running:
        yield Platform(running.signal, running.reader, running.closes())


def _request(**extra: object) -> signal_pb2.ComputeIndicatorsRequest:
    values: dict[str, object] = {
        "symbol": "demo",
        "timeframe": common_pb2.TIMEFRAME_1D,
        "range": common_pb2.TimeRange(start_time=_stamp(START)),
    }
    values.update(extra)
    return signal_pb2.ComputeIndicatorsRequest(**values)  # type: ignore[arg-type]


async def test_the_catalogue_lists_at_least_twenty_indicators(platform: Platform) -> None:
    reply = await platform.signal.ListIndicators(
        signal_pb2.ListIndicatorsRequest(page_size=1000), metadata=platform.reader
    )
    names = {indicator.name for indicator in reply.indicators}
    assert len(names) >= 20
    assert {"sma", "ema", "rsi", "macd", "bbands", "atr", "adx", "ichimoku", "vwap"} <= names
    macd = next(indicator for indicator in reply.indicators if indicator.name == "macd")
    assert [output.name for output in macd.outputs] == ["macd", "signal", "histogram"]
    assert {param.name for param in macd.parameters} >= {"fast", "slow", "signal"}


async def test_compute_matches_talib_over_stored_bars(platform: Platform) -> None:
    reply = await platform.signal.ComputeIndicators(
        _request(
            indicators=[
                signal_pb2.IndicatorSpec(name="sma", parameters={"period": 20}),
                signal_pb2.IndicatorSpec(name="rsi", alias="rsi14"),
                signal_pb2.IndicatorSpec(name="bbands", alias="bb", outputs=["upper", "lower"]),
            ]
        ),
        metadata=platform.reader,
    )
    assert len(reply.bar_times) == len(platform.closes)
    sma, rsi, bands = reply.results
    assert sma.series[0].name == "sma_20"
    np.testing.assert_allclose(sma.series[0].values, talib.SMA(platform.closes, 20), rtol=1e-8, equal_nan=True)
    assert sma.series[0].warmup_bars == 19
    np.testing.assert_allclose(rsi.series[0].values, talib.RSI(platform.closes, 14), rtol=1e-8, equal_nan=True)
    assert [item.name for item in bands.series] == ["bb.upper", "bb.lower"]
    assert bands.spec.parameters["period"] > 0  # defaults are filled in


async def test_warmup_extension_reads_earlier_bars(platform: Platform) -> None:
    later = START + timedelta(days=100)
    reply = await platform.signal.ComputeIndicators(
        _request(
            range=common_pb2.TimeRange(start_time=_stamp(later)),
            indicators=[signal_pb2.IndicatorSpec(name="sma", parameters={"period": 20})],
            extend_for_warmup=True,
        ),
        metadata=platform.reader,
    )
    [series] = reply.results[0].series
    assert series.warmup_bars == 0
    assert reply.bar_times[0].ToDatetime() == later
    np.testing.assert_allclose(series.values, talib.SMA(platform.closes, 20)[100:], rtol=1e-8)


async def test_every_indicator_on_a_sub_range_equals_the_whole_history() -> None:
    """With extend_for_warmup, each of the catalogue's indicators (defaults) gives on a late sub-range the values it
    has there computed over every stored bar – recursive ones (EMA, TEMA, MACD, ADX, RSI, ...) to 1e-9 of the
    series' magnitude – except OBV and VWAP (period 0), which are cumulated from the range's first bar."""
    catalogue = load_indicators()
    long_series = StoredSymbol("LONG", "SIM-AAPL", seed=21, timeframe=Timeframe.H1)
    async with running_signal_platform((long_series,), days=100) as running:  # 2,400 hourly bars
        stored = running.bars["LONG"]
        full = Bars(stored.open, stored.high, stored.low, stored.close, stored.volume)
        count = len(stored)
        for first, last in ((1500, count), (1100, 1700)):
            window = common_pb2.TimeRange(start_time=_stamp(START + timedelta(hours=first)))
            if last < count:
                window.end_time.CopyFrom(_stamp(START + timedelta(hours=last)))
            reply = await running.signal.ComputeIndicators(
                signal_pb2.ComputeIndicatorsRequest(
                    symbol="LONG",
                    timeframe=common_pb2.TIMEFRAME_1H,
                    range=window,
                    extend_for_warmup=True,
                    indicators=[signal_pb2.IndicatorSpec(name=name) for name in sorted(catalogue)],
                ),
                metadata=running.reader,
            )
            assert reply.bar_times[0].ToDatetime() == START + timedelta(hours=first)
            assert len(reply.bar_times) == last - first
            close, volume = stored.close[first:last], stored.volume[first:last]
            typical = (stored.high[first:last] + stored.low[first:last] + close) / 3.0
            cumulative = {
                "obv": talib.OBV(close, volume),  # from the range's first bar
                "vwap": np.cumsum(typical * volume) / np.cumsum(volume),  # anchored there
            }
            for result in reply.results:
                name = result.spec.name
                everything = catalogue[name].batch(full)
                for series in result.series:
                    if name in cumulative:
                        expected = cumulative[name]
                    else:
                        index = [output.name for output in catalogue[name].outputs].index(series.output)
                        expected = everything[index][first:last]
                    scale = np.nanmax(np.abs(expected))
                    np.testing.assert_allclose(
                        series.values, expected, rtol=1e-9, atol=1e-9 * scale, equal_nan=True, err_msg=series.name
                    )
                    assert series.warmup_bars == 0, series.name
            assert len(reply.results) == len(catalogue) == 21


@pytest.mark.parametrize(
    ("extra", "code", "reason"),
    [
        ({"symbol": "NOPE"}, grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND"),
        ({"indicators": [signal_pb2.IndicatorSpec(name="nope")]}, grpc.StatusCode.NOT_FOUND, "INDICATOR_NOT_FOUND"),
        (
            {"indicators": [signal_pb2.IndicatorSpec(name="sma", parameters={"period": 0})]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {"indicators": [signal_pb2.IndicatorSpec(name="sma", outputs=["upper"])]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_OUTPUT",
        ),
        (
            {
                "indicators": [
                    signal_pb2.IndicatorSpec(name="sma", alias="a"),
                    signal_pb2.IndicatorSpec(name="ema", alias="a"),
                ]
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "DUPLICATE_ALIAS",
        ),
        (
            {
                "range": common_pb2.TimeRange(start_time=_stamp(START), end_time=_stamp(START)),
                "indicators": [signal_pb2.IndicatorSpec(name="sma")],
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RANGE",
        ),
        (
            {
                "range": common_pb2.TimeRange(
                    start_time=_stamp(datetime(2010, 1, 1)), end_time=_stamp(datetime(2011, 1, 1))
                ),
                "indicators": [signal_pb2.IndicatorSpec(name="sma")],
            },
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_BARS",
        ),
        (
            {"indicators": [signal_pb2.IndicatorSpec(name="sma")] * 51},
            grpc.StatusCode.INVALID_ARGUMENT,
            "TOO_MANY_INDICATORS",
        ),
    ],
)
async def test_bad_requests(platform: Platform, extra: dict[str, object], code: grpc.StatusCode, reason: str) -> None:
    if "indicators" not in extra:
        extra = {**extra, "indicators": [signal_pb2.IndicatorSpec(name="sma")]}
    call = platform.signal.ComputeIndicators(_request(**extra), metadata=platform.reader)
    assert await refusal(call) == (code, reason)
