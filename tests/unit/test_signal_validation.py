"""The request rules the signal domain shares (services/signal/validation.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.timeframes import Timeframe
from services.signal.strategies.catalogue import load_strategies
from services.signal.validation import BarRange, find_strategy, timeframe_of, too_large

load_strategies()
DAY = datetime(2024, 1, 1)


def test_a_range_starts_before_it_ends() -> None:
    assert BarRange(DAY, None).end is None
    assert BarRange(None, DAY).start is None
    for end in (DAY, datetime(2023, 1, 1)):
        with pytest.raises(InvalidArgument) as raised:
            BarRange(DAY, end)
        assert raised.value.reason == "INVALID_RANGE"
        assert raised.value.violations == (FieldViolation("range", "start_time must be before end_time"),)


def test_strategies_timeframes_and_sizes() -> None:
    assert find_strategy("golden_cross").strategy_id == "golden_cross"
    with pytest.raises(NotFound) as missing:
        find_strategy("nope")
    assert missing.value.reason == "STRATEGY_NOT_FOUND"
    with pytest.raises(InvalidArgument):
        find_strategy("", "alert.strategy_id")
    assert timeframe_of(int(Timeframe.H1)) is Timeframe.H1
    with pytest.raises(InvalidArgument) as unset:
        timeframe_of(0, "config.timeframe")
    assert unset.value.violations[0].field == "config.timeframe"
    too_large(10, 10)
    with pytest.raises(InvalidArgument) as large:
        too_large(11, 10, "config.range")
    assert large.value.reason == "RANGE_TOO_LARGE"
