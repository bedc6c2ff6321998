"""The live engine's parts without a server: bars from ticks (and their trust), the repeat rule and keyed ids, which
grades fire which rules, direction-aware returns and the performance figures, the published envelope and the
stores' idempotence (signals, series checkpoints, the outbox keyed by firing)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from services.core.bars import Bar, bars_from_ticks, roll_up
from services.core.db.databases import Databases
from services.core.db.outbox import OutboxMessage, add_outbox
from services.core.db.schema import outbox_messages
from services.core.timeframes import Timeframe
from services.signal.fusion import BUY, SELL, Grade
from services.signal.live.encoding import Envelope, signal_envelope
from services.signal.live.evaluator import UnitState
from services.signal.live.hub import StreamFilter
from services.signal.live.outcome_store import SignalOutcome
from services.signal.live.performance import directional_returns, group_rows, summarize
from services.signal.live.records import LiveSignal, SeriesKey, Unit, grade_fires
from services.signal.live.series import BarBuffer, SymbolBars
from services.signal.live.signal_store import SignalFilter, SignalStore
from services.signal.strategies.catalogue import load_strategies
from tests.db_support import DatabaseSet, new_prefix

T0 = datetime(2026, 3, 2, 14, 0)
MINUTE = timedelta(minutes=1)


# -- bars from ticks ------------------------------------------------------------------------------------------------


def _ticks(minutes: int, per_minute: int = 4) -> list[tuple[datetime, float, float]]:
    rng = np.random.default_rng(3)
    found = []
    price = 100.0
    for minute in range(minutes):
        for step in range(per_minute):
            price *= 1 + rng.normal(0, 0.002)
            found.append((T0 + minute * MINUTE + step * timedelta(seconds=12), round(price, 4), float(step + 1)))
    return found


def test_the_engine_builds_the_bars_the_market_stores_in_every_timeframe() -> None:
    ticks = _ticks(31)
    bars = SymbolBars("X")
    for timeframe in (Timeframe.M1, Timeframe.M5, Timeframe.M15):
        bars.watch(timeframe)
    closed = []
    for sequence, (moment, price, size) in enumerate(ticks, start=1):
        closed += bars.on_tick(moment, price, size, sequence)
    minutes = bars_from_ticks(*(list(column) for column in zip(*ticks, strict=True)))
    by_timeframe = {tf: [item.bar for item in closed if item.timeframe is tf] for tf in (Timeframe.M1, Timeframe.M5)}
    # The 31st minute is still open; its 5-minute period too. The first minute began before the subscription.
    assert by_timeframe[Timeframe.M1] == minutes[:30]
    assert by_timeframe[Timeframe.M5] == roll_up(minutes[:30], Timeframe.M5)
    assert [item.bar for item in closed if item.timeframe is Timeframe.M15] == roll_up(minutes[:30], Timeframe.M15)
    trusted = {item.bar.open_time: item.trusted for item in closed if item.timeframe is Timeframe.M1}
    assert not trusted[T0]
    assert all(trusted[T0 + n * MINUTE] for n in range(1, 30))
    assert not next(item for item in closed if item.timeframe is Timeframe.M5 and item.bar.open_time == T0).trusted

    # A quiet symbol's bars close when the period is over.
    flushed = bars.flush(T0 + 35 * MINUTE)
    assert {(item.timeframe, item.bar.open_time) for item in flushed} == {
        (Timeframe.M1, T0 + 30 * MINUTE),
        (Timeframe.M5, T0 + 30 * MINUTE),
    }


def test_ticks_seen_twice_while_streams_switch_count_once_and_a_broken_stream_distrusts_the_next_bar() -> None:
    bars = SymbolBars("X")
    bars.watch(Timeframe.M1)
    bars.on_tick(T0, 10.0, 1.0, 1)
    bars.on_tick(T0 + MINUTE, 11.0, 1.0, 2)
    assert bars.on_tick(T0 + MINUTE + timedelta(seconds=5), 12.0, 1.0, 3) == []
    assert bars.on_tick(T0 + MINUTE + timedelta(seconds=5), 12.0, 1.0, 3) == []  # the same tick again
    bars.resync()
    [closed] = bars.on_tick(T0 + 2 * MINUTE, 13.0, 1.0, 4)
    assert closed.bar == Bar(T0 + MINUTE, 11.0, 12.0, 11.0, 12.0, 2.0, 2)
    [after] = bars.on_tick(T0 + 3 * MINUTE, 14.0, 1.0, 5)
    assert not after.trusted  # began before the stream was whole again
    [whole] = bars.on_tick(T0 + 4 * MINUTE, 15.0, 1.0, 6)
    assert whole.trusted


def test_the_buffer_keeps_the_newest_bars_and_finds_those_after_a_checkpoint() -> None:
    buffer = BarBuffer(Timeframe.M1, keep=5)
    for n in range(23):
        assert buffer.append(Bar(T0 + n * MINUTE, 1, 1, 1, float(n), 1))
    assert not buffer.append(Bar(T0 + 3 * MINUTE, 1, 1, 1, 1, 1))
    assert 5 <= len(buffer) <= 10
    assert buffer.last_time == T0 + 22 * MINUTE
    window = buffer.window(len(buffer) - 3, len(buffer) - 1)
    assert window.close.tolist() == [20.0, 21.0, 22.0]
    assert [buffer.times[i].astype(datetime) for i in buffer.after(T0 + 20 * MINUTE)] == [
        T0 + 21 * MINUTE,
        T0 + 22 * MINUTE,
    ]


# -- units, repeats, grades -----------------------------------------------------------------------------------------


def test_a_signal_id_names_the_unit_and_bar_and_the_repeat_rule_holds_a_side_back() -> None:
    load_strategies()
    series = SeriesKey("X", Timeframe.M1)
    default = Unit.of(series, "ema_cross", {"fast": 9, "slow": 21})
    same = Unit.of(series, "ema_cross", {"slow": 21, "fast": 9})
    other = Unit.of(series, "ema_cross", {"fast": 5, "slow": 21})
    assert default == same
    assert default.signal_id(T0) == same.signal_id(T0)
    assert len({default.signal_id(T0), default.signal_id(T0 + MINUTE), other.signal_id(T0)}) == 3
    assert default.signal_id(T0).startswith("sig_")
    assert len(default.signal_id(T0)) == 32

    state = UnitState.of(default, platform=True)
    state.remember(BUY, T0)
    within = 3 * MINUTE
    assert state.repeats(BUY, T0 + 2 * MINUTE, within)
    assert not state.repeats(BUY, T0 + 3 * MINUTE, within)
    assert not state.repeats(SELL, T0 + MINUTE, within)


@pytest.mark.parametrize(
    ("min_grade", "fired_by"),
    [
        (0, set(Grade)),
        (Grade.HOLD, set(Grade)),
        (Grade.BUY, {Grade.BUY, Grade.STRONG_BUY}),
        (Grade.STRONG_BUY, {Grade.STRONG_BUY}),
        (Grade.SELL, {Grade.SELL, Grade.STRONG_SELL}),
        (Grade.STRONG_SELL, {Grade.STRONG_SELL}),
    ],
)
def test_which_grades_fire_a_rule(min_grade: int, fired_by: set[Grade]) -> None:
    assert {grade for grade in Grade if grade_fires(min_grade, grade)} == fired_by


# -- performance ----------------------------------------------------------------------------------------------------


def test_returns_are_taken_in_the_signals_direction() -> None:
    times = np.array([T0 + n * MINUTE for n in range(8)], dtype="datetime64[us]")
    closes = np.array([100, 100, 98, 97, 99, 95, 94, 90], dtype=np.float64)
    sell = directional_returns(times, closes, T0 + MINUTE, 100.0, SELL, horizons=(1, 5, 20))
    assert sell == pytest.approx({1: 0.02, 5: 0.06})  # a fall after a SELL is a win; 20 bars have not passed
    buy = directional_returns(times, closes, T0 + MINUTE, 100.0, BUY, horizons=(1, 5))
    assert buy == pytest.approx({1: -0.02, 5: -0.06})


def test_performance_figures_follow_their_definitions() -> None:
    values = [0.10, -0.05, 0.02, -0.10, 0.04]
    stats = summarize(values)
    assert (stats.count, stats.wins) == (5, 3)
    assert stats.win_rate == pytest.approx(0.6)
    assert stats.average == pytest.approx(0.002)
    assert stats.sharpe == pytest.approx(0.002 / np.std(values, ddof=1))
    # Equity 1 → 1.1 → 1.045 → 1.0659 → 0.95931 → 0.9976824: the deepest fall is from 1.1 to 0.95931.
    assert stats.max_drawdown == pytest.approx(1 - 0.95931 / 1.1)
    assert (stats.best, stats.worst) == (0.10, -0.10)
    empty = summarize([])
    assert empty.count == 0
    assert empty.win_rate is None
    assert empty.max_drawdown is None
    single = summarize([0.01])
    assert single.sharpe is None
    assert single.max_drawdown == 0.0


def test_performance_rows_count_pending_signals_per_horizon() -> None:
    outcomes = [
        SignalOutcome(signal_id="a", bar_time=T0, returns={1: 0.01, 5: 0.03, 20: None}, outcome_time=T0 + MINUTE),
        SignalOutcome(signal_id="b", bar_time=T0 + MINUTE, returns={1: -0.02, 5: None, 20: None}, outcome_time=None),
        SignalOutcome(signal_id="c", bar_time=T0 + 2 * MINUTE, returns={1: None, 5: None, 20: None}, outcome_time=None),
    ]
    rows = group_rows(("ema_cross", "X", 1), outcomes)
    assert [(row.horizon, row.stats.count, row.pending) for row in rows] == [(1, 2, 1), (5, 1, 2), (20, 0, 3)]
    assert rows[0].first_signal_time == T0
    assert rows[0].last_signal_time == T0 + MINUTE
    assert rows[0].stats.average == pytest.approx(-0.005)
    assert rows[2].first_signal_time is None
    assert rows[0].compute_time == T0 + MINUTE


# -- the published envelope -----------------------------------------------------------------------------------------


def _signal(bar_time: datetime = T0, *, platform: bool = True, side: int = BUY, grade: Grade = Grade.BUY) -> LiveSignal:
    unit = Unit.of(SeriesKey("X", Timeframe.M1), "ema_cross", {"fast": 9, "slow": 21})
    return LiveSignal(
        signal_id=unit.signal_id(bar_time),
        symbol="X",
        timeframe=Timeframe.M1,
        strategy_id="ema_cross",
        parameters=dict(unit.parameters),
        parameters_key=unit.parameters_key,
        platform=platform,
        side=side,
        strong=True,
        technical_confidence=0.7,
        model_confidence=None,
        model_agrees=None,
        fused_confidence=0.7,
        grade=grade,
        technical_only_reason=3,
        reason="test",
        price=101.5,
        bar_time=bar_time,
        create_time=bar_time + MINUTE,
        returns={1: None, 5: None, 20: None},
    )


def test_the_envelope_round_trips_and_routes_alerts_to_their_owner_only() -> None:
    envelope = signal_envelope(_signal())
    decoded = Envelope.decode(envelope.encode())
    assert decoded == envelope
    everyone = StreamFilter(account_id=5)
    assert everyone.wants(decoded)
    assert not StreamFilter(account_id=5, alerts_only=True).wants(decoded)
    assert not StreamFilter(account_id=5, symbols=frozenset({"Y"})).wants(decoded)
    assert not StreamFilter(account_id=5, grades=frozenset({int(Grade.SELL)})).wants(decoded)
    alert = Envelope(
        event_id="fir_1", account_id=9, symbol="X", strategy_id="ema_cross", timeframe=1, grade=2, payload=b"x"
    )
    assert StreamFilter(account_id=9, alerts_only=True).wants(alert)
    assert not everyone.wants(alert)


# -- stores ---------------------------------------------------------------------------------------------------------


@pytest.fixture
async def databases(tmp_path: Path) -> AsyncIterator[Databases]:
    found = Databases(DatabaseSet("sqlite", str(tmp_path), new_prefix()).config(1))
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


async def test_a_signal_is_stored_once_and_a_checkpoint_never_moves_back(databases: Databases) -> None:
    store = SignalStore(databases)
    first, second = _signal(T0), _signal(T0 + MINUTE, side=SELL, grade=Grade.SELL)
    new, existing = await store.add_split([first])
    assert (new, existing) == ([first], [])
    new, existing = await store.add_split([first, second])
    assert [s.signal_id for s in new] == [second.signal_id]
    assert [s.signal_id for s in existing] == [first.signal_id]
    assert (await store.get(first.signal_id)) == first
    found = await store.find(SignalFilter(side=SELL), after=None, limit=10)
    assert [s.signal_id for s in found] == [second.signal_id]
    newest = await store.find(SignalFilter(), after=None, limit=1)
    assert newest == [second]
    rest = await store.find(SignalFilter(), after=(second.bar_time, second.signal_id), limit=10)
    assert rest == [first]

    series = SeriesKey("X", Timeframe.M1)
    assert await store.checkpoint(series) is None
    await store.advance(series, T0 + 5 * MINUTE, T0)
    await store.advance(series, T0 + 2 * MINUTE, T0)
    assert await store.checkpoint(series) == T0 + 5 * MINUTE
    await store.advance(series, T0 + 6 * MINUTE, T0)
    assert await store.checkpoint(series) == T0 + 6 * MINUTE


async def test_the_outbox_keeps_one_message_per_key(databases: Databases) -> None:
    message = OutboxMessage(
        account_id=3, channel="alert", recipient="account:3", template="t", payload={"a": 1}, dedup_key="fir_x"
    )
    first = await databases.run_global(lambda connection: add_outbox(connection, message, T0))
    again = await databases.run_global(lambda connection: add_outbox(connection, message, T0 + MINUTE))
    assert first == again
    assert first > 0

    async def count(connection: object) -> int:
        query = select(func.count()).select_from(outbox_messages).where(outbox_messages.c.dedup_key == "fir_x")
        return int(await connection.scalar(query))  # type: ignore[attr-defined]

    assert await databases.run_global(count) == 1
    assert math.isfinite(first)
