"""RunBacktest's config rules at their home, BacktestSpec's constructor, and the normalised config stored with a
backtest (services/signal/backtests/spec.py, services/signal/backtests/encoding.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from google.protobuf import json_format

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.timestamps import timestamp
from services.signal.backtests.encoding import backtest_request, stored_config
from services.signal.backtests.engine.config import (
    BacktestMetric,
    CommissionModel,
    FillTiming,
    FixedFraction,
    VolatilityTarget,
)
from services.signal.backtests.spec import (
    DEFAULT_EQUITY_POINTS,
    MAX_COMBINATIONS,
    BacktestRequest,
    BacktestSpec,
    SweepRequest,
)
from services.signal.strategies.catalogue import load_strategies

load_strategies()
START = datetime(2024, 1, 1)


def valid_request(**changes: Any) -> BacktestRequest:
    """A valid request (golden cross on one symbol's daily bars) with `changes`."""
    given = BacktestRequest(
        strategy_id="golden_cross",
        symbols=("demo",),
        timeframe=common_pb2.TIMEFRAME_1D,
        start=START,
        end=None,
        parameters={"fast": 10, "slow": 30},
        sweep=None,
        initial_cash=10_000.0,
        commission=CommissionModel(),
        slippage_bps=0.0,
        sizing=FixedFraction(fraction=1.0),
        stop_loss=None,
        take_profit=None,
        trailing_stop=None,
        allow_short=False,
        allow_fractional=False,
        fill_timing=0,
        close_at_end=True,
        risk_free_rate=0.0,
        max_equity_points=0,
    )
    return replace(given, **changes)


def _refused(request: BacktestRequest) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        BacktestSpec.of(request)
    return raised.value


def test_a_valid_request_gets_its_defaults_and_upper_case_symbols() -> None:
    spec = BacktestSpec.of(valid_request())
    assert spec.symbols == ("DEMO",)
    assert spec.strategy.strategy_id == "golden_cross"
    assert spec.parameters["fast"] == 10
    assert spec.parameters["slow"] == 30
    assert spec.fill_timing is FillTiming.NEXT_BAR_OPEN
    assert spec.max_equity_points == DEFAULT_EQUITY_POINTS
    assert spec.rank_by is BacktestMetric.SHARPE
    assert spec.grid == {}


def test_an_unknown_strategy_is_not_found_before_anything_else() -> None:
    with pytest.raises(NotFound) as raised:
        BacktestSpec.of(valid_request(strategy_id="no_such", symbols=("A", "a"), end=START))
    assert raised.value.reason == "STRATEGY_NOT_FOUND"


def test_problems_are_reported_together_under_the_first_ones_reason() -> None:
    error = _refused(valid_request(symbols=("DEMO", "demo"), end=START, parameters={"fast": 0}))
    assert error.reason == "DUPLICATE_SYMBOL"
    assert error.violations[:2] == (
        FieldViolation("config.symbols[1]", "DEMO is listed twice"),
        FieldViolation("config.range", "start_time must be before end_time"),
    )
    assert [violation.field for violation in error.violations[2:]] == ["config.parameters.fast"]


def test_a_range_out_of_order_is_invalid_range() -> None:
    error = _refused(valid_request(end=datetime(2023, 1, 1)))
    assert error.reason == "INVALID_RANGE"
    assert error.violations == (FieldViolation("config.range", "start_time must be before end_time"),)


def test_an_unset_timeframe_is_refused_at_once() -> None:
    error = _refused(valid_request(timeframe=0, symbols=("A", "A")))
    assert error.violations == (FieldViolation("config.timeframe", "is required: one of TIMEFRAME_1M … TIMEFRAME_1D"),)


def test_a_sweep_names_known_parameters_within_the_limit() -> None:
    unknown = _refused(valid_request(sweep=SweepRequest(grid={"nope": [1]})))
    assert unknown.reason == "UNKNOWN_PARAMETER"
    assert unknown.violations[0].field == "config.sweep.grid.nope"
    too_large = _refused(valid_request(sweep=SweepRequest(grid={"fast": list(range(2, 3 + MAX_COMBINATIONS))})))
    assert too_large.reason == "SWEEP_TOO_LARGE"
    assert too_large.violations[0].field == "config.sweep.grid"


def test_every_sweep_combination_must_be_valid() -> None:
    # fast must stay below slow (30): 40 is refused as a combination.
    error = _refused(valid_request(sweep=SweepRequest(grid={"fast": [5, 40]})))
    assert error.reason == "INVALID_PARAMETER"
    assert all(violation.field.startswith("config.sweep.grid") for violation in error.violations)


def test_a_sweep_ranks_by_its_metric_or_sharpe() -> None:
    swept = BacktestSpec.of(valid_request(sweep=SweepRequest(grid={"fast": [5, 10]}, rank_by=2)))
    assert swept.grid == {"fast": [5, 10]}
    assert swept.rank_by is BacktestMetric.CAGR
    assert BacktestSpec.of(valid_request(sweep=SweepRequest(grid={"fast": [5]}))).rank_by is BacktestMetric.SHARPE


def _config(**fields: Any) -> signal_pb2.BacktestConfig:
    config = signal_pb2.BacktestConfig(
        strategy_id="golden_cross",
        symbols=["demo"],
        timeframe=common_pb2.TIMEFRAME_1D,
        range=common_pb2.TimeRange(start_time=timestamp(START)),
        initial_cash=10_000.0,
        **fields,
    )
    return config


def test_the_stored_config_has_the_defaults_written_in() -> None:
    config = _config(
        sizing=signal_pb2.PositionSizing(volatility_target=signal_pb2.VolatilityTargetSizing(annual_volatility=0.15)),
        sweep=signal_pb2.ParameterSweep(
            grid={"fast": common_pb2.ParameterValueList(values=[common_pb2.ParameterValue(int_value=5)])}
        ),
    )
    spec = BacktestSpec.of(backtest_request(config))
    assert spec.sizing == VolatilityTarget(annual_volatility=0.15, lookback_bars=20, max_fraction=1.0)
    stored = signal_pb2.BacktestConfig()
    json_format.Parse(stored_config(config, spec).text, stored)
    assert list(stored.symbols) == ["DEMO"]
    assert stored.sizing.volatility_target.lookback_bars == 20
    assert stored.sizing.volatility_target.max_fraction == 1.0
    assert stored.fill_timing == signal_pb2.FILL_TIMING_NEXT_BAR_OPEN
    assert stored.end_of_data == signal_pb2.END_OF_DATA_CLOSE
    assert stored.max_equity_points == DEFAULT_EQUITY_POINTS
    assert stored.sweep.rank_by == signal_pb2.BACKTEST_METRIC_SHARPE
    # The strategy's defaults, resolved.
    assert {name: value.int_value for name, value in stored.parameters.items()} == {"fast": 50, "slow": 200}
    plain = signal_pb2.BacktestConfig()
    json_format.Parse(stored_config(_config(), BacktestSpec.of(backtest_request(_config()))).text, plain)
    assert plain.sizing.WhichOneof("method") == "fixed_fraction"
    assert plain.sizing.fixed_fraction.fraction == 1.0


def test_configs_that_mean_the_same_have_one_digest() -> None:
    def digest(config: signal_pb2.BacktestConfig) -> str:
        return stored_config(config, BacktestSpec.of(backtest_request(config))).digest

    explicit = _config(
        max_equity_points=DEFAULT_EQUITY_POINTS,
        parameters={"fast": common_pb2.ParameterValue(int_value=50)},
    )
    explicit.symbols[:] = ["DEMO"]
    assert digest(_config()) == digest(explicit)
    richer = _config()
    richer.initial_cash = 20_000.0
    assert digest(_config()) != digest(richer)
