"""The simulated feed: determinism, bars that agree with ticks at every timeframe, model statistics, streaming."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from services.market.feeds.base import HistoryNotSupported, Transport
from services.market.feeds.sim import SimulatedFeed
from services.market.feeds.sim.symbols import DEMO_SYMBOLS, SimSymbol
from services.market.records import AssetClass, Bar, Tick, Timeframe
from tests.support import eventually

NOW = datetime(2026, 3, 10, 12, 0, 30)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
BY_SYMBOL = {spec.symbol: spec for spec in DEMO_SYMBOLS}
INTRADAY = (Timeframe.M5, Timeframe.M15, Timeframe.H1)


def feed_at(now: datetime = NOW, *, seed: int = 42, symbols: Sequence[SimSymbol] | None = None) -> SimulatedFeed:
    return SimulatedFeed(seed=seed, symbols=symbols, clock=lambda: now)


class SteppingClock:
    """A clock that moves `step` forward every time it is read."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.step
        return now


def ohlcv(bars: Sequence[Bar]) -> tuple[float, float, float, float, float, int]:
    """The roll-up of consecutive bars into one."""
    return (
        bars[0].open,
        max(bar.high for bar in bars),
        min(bar.low for bar in bars),
        bars[-1].close,
        sum(bar.volume for bar in bars),
        sum(bar.trade_count or 0 for bar in bars),
    )


def assert_same_bar(bar: Bar, values: tuple[float, float, float, float, float, int]) -> None:
    assert (bar.open, bar.high, bar.low, bar.close) == values[:4]
    assert bar.volume == pytest.approx(values[4], rel=1e-12)
    assert bar.trade_count == values[5]


def daily_log_returns(feed: SimulatedFeed, symbol: str, start: datetime, days: int) -> npt.NDArray[np.float64]:
    closes = np.array([feed.price_at(symbol, start + i * DAY) for i in range(days + 1)])
    return np.diff(np.log(closes))


def plain(
    symbol: str = "SIM-TEST",
    *,
    annual_volatility: float = 0.3,
    jumps_per_year: float = 3.0,
    turbulence_multiplier: float = 2.5,
) -> SimSymbol:
    """An always-open test symbol."""
    return SimSymbol(
        symbol=symbol,
        display_name="Test (simulated)",
        asset_class=AssetClass.STOCK,
        quote_currency="USD",
        start_price=100.0,
        annual_volatility=annual_volatility,
        tick_size=0.01,
        lot_size=1.0,
        daily_volume=1_000_000,
        jumps_per_year=jumps_per_year,
        turbulence_multiplier=turbulence_multiplier,
    )


# --- the adapter's surface ---------------------------------------------------------------------------------------


async def test_describes_itself_and_its_demo_instruments() -> None:
    feed = feed_at()
    await feed.start()
    await feed.start()
    assert (feed.adapter, feed.simulated, feed.transport, feed.feed_id) == ("sim", True, Transport.INTERNAL, "sim")
    instruments = feed.instruments()
    assert [instrument.symbol for instrument in instruments] == [spec.symbol for spec in DEMO_SYMBOLS]
    assert {"SIM-AAPL", "SIM-005930", "SIM-BTC-USDT", "SIM-EUR-USD", "SIM-KOSPI"} <= set(BY_SYMBOL)
    for instrument in instruments:
        assert re.fullmatch(r"[A-Z0-9][A-Z0-9._-]{0,31}", instrument.symbol)
        assert "(simulated)" in instrument.display_name
        assert instrument.simulated
        assert instrument.feed_id == "sim"
        assert instrument.venue_symbol == instrument.symbol
        assert instrument.tick_size > 0
        assert instrument.lot_size > 0
        assert list(feed.history_timeframes(instrument.symbol)) == list(Timeframe)
    korean = next(instrument for instrument in instruments if instrument.symbol == "SIM-005930")
    assert (korean.quote_currency, korean.timezone) == ("KRW", "Asia/Seoul")
    # The simulator trades around the clock, so its bars come every day: the instruments say so, and name the
    # hours whose volume profile they imitate.
    assert korean.trading_session.description == "24/7 (simulated), busiest in KRX regular hours 09:00-15:30 Asia/Seoul"
    for instrument in instruments:
        assert (instrument.trading_session.always_open, instrument.trading_session.calendar) == (True, "24/7")
    assert SimulatedFeed("other").instruments()[0].feed_id == "other"
    await feed.stop()
    await feed.stop()


@pytest.mark.parametrize(
    "changes",
    [{"symbol": "sim-lower"}, {"symbol": "-SIM"}, {"display_name": "Real Corp"}, {"tick_size": 0.0}],
)
def test_rejects_invalid_symbols(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each field has its own message
        replace(plain(), **changes)


async def test_unknown_symbols_are_rejected() -> None:
    feed = feed_at()
    with pytest.raises(HistoryNotSupported):
        await feed.history("NOPE", Timeframe.M1, NOW - DAY, NOW)
    with pytest.raises(ValueError, match="NOPE"):
        feed.ticks(["SIM-AAPL", "NOPE"])
    with pytest.raises(ValueError, match="NOPE"):
        feed.price_at("NOPE", NOW)
    assert feed.history_timeframes("NOPE") == ()


# --- determinism -------------------------------------------------------------------------------------------------


def test_same_seed_same_market_whatever_the_order_of_questions() -> None:
    first, second, other = feed_at(), feed_at(), feed_at(seed=7)
    symbols = ["SIM-AAPL", "SIM-BTC-USDT"]
    # The second feed answers far-away questions first: the path must not depend on what was computed before.
    second.price_at("SIM-AAPL", datetime(2031, 6, 1, 3, 4, 5))
    second.price_at("SIM-AAPL", datetime(2019, 6, 1))
    second.bars("SIM-AAPL", Timeframe.M1, NOW - DAY, NOW)
    for symbol in symbols:
        daily = first.bars(symbol, Timeframe.D1, NOW - 90 * DAY, NOW)
        assert len(daily) == 89  # whole days after NOW - 90 days, up to yesterday
        assert daily == second.bars(symbol, Timeframe.D1, NOW - 90 * DAY, NOW)
        assert first.bars(symbol, Timeframe.M1, NOW - DAY, NOW) == second.bars(symbol, Timeframe.M1, NOW - DAY, NOW)
        assert [bar.close for bar in daily] != [
            bar.close for bar in other.bars(symbol, Timeframe.D1, NOW - 90 * DAY, NOW)
        ]
    start = datetime(2026, 3, 9, 17, 59, 50)
    ticks = first.ticks_between(symbols, start, start + timedelta(seconds=20))
    assert ticks == second.ticks_between(symbols, start, start + timedelta(seconds=20))
    assert [t.price for t in ticks] != [
        t.price for t in other.ticks_between(symbols, start, start + timedelta(seconds=20))
    ]
    moments = [datetime(2024, 2, 29, 13, 1, 2), datetime(2026, 1, 1), datetime(2026, 3, 10, 11, 11, 11, 111)]
    assert [first.price_at("SIM-KOSPI", m) for m in moments] == [second.price_at("SIM-KOSPI", m) for m in moments]


def test_prices_are_anchored_at_the_configured_start_price() -> None:
    feed = feed_at()
    for spec in DEMO_SYMBOLS:
        assert feed.price_at(spec.symbol, datetime(2025, 1, 1)) == pytest.approx(spec.start_price, rel=1e-4)


def test_zero_volatility_and_drift_give_a_flat_market() -> None:
    flat = plain(annual_volatility=0.0, jumps_per_year=0.0)
    feed = feed_at(symbols=[flat])
    for bar in feed.bars(flat.symbol, Timeframe.H1, NOW - 3 * DAY, NOW):
        assert (bar.open, bar.high, bar.low, bar.close) == (100.0, 100.0, 100.0, 100.0)
        assert bar.volume > 0
    assert {tick.price for tick in feed.ticks_between([flat.symbol], NOW - MINUTE, NOW)} == {100.0}


# --- bars and ticks agree ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["SIM-AAPL", "SIM-005930", "SIM-BTC-USDT", "SIM-EUR-USD"])
def test_daily_and_hourly_bars_are_roll_ups_of_minute_bars(symbol: str) -> None:
    feed = feed_at()
    # Daily bars are computed in blocks of days; this range spans New York's switch to daylight saving time.
    daily = feed.bars(symbol, Timeframe.D1, datetime(2026, 2, 20), NOW)
    assert [bar.open_time for bar in daily] == [datetime(2026, 2, 20) + i * DAY for i in range(18)]
    for bar in [*daily[::4], daily[-1], next(b for b in daily if b.open_time == datetime(2026, 3, 8))]:
        minutes = feed.bars(symbol, Timeframe.M1, bar.open_time, bar.open_time + DAY)
        assert len(minutes) == 1440
        assert_same_bar(bar, ohlcv(minutes))
        for timeframe in INTRADAY:
            step = timeframe.seconds // 60
            rolled = feed.bars(symbol, timeframe, bar.open_time, bar.open_time + DAY)
            assert len(rolled) == 1440 // step
            for index, larger in enumerate(rolled):
                assert larger.open_time == bar.open_time + index * timeframe.delta
                assert_same_bar(larger, ohlcv(minutes[index * step : (index + 1) * step]))
    for earlier, later in itertools.pairwise(daily):
        assert earlier.close == later.open


@pytest.mark.parametrize("symbol", [spec.symbol for spec in DEMO_SYMBOLS])
def test_minute_bars_are_the_ohlcv_of_their_ticks(symbol: str) -> None:
    feed, spec = feed_at(), BY_SYMBOL[symbol]
    start = datetime(2026, 3, 9, 23, 57)
    minutes = feed.bars(symbol, Timeframe.M1, start, start + 6 * MINUTE)
    ticks = feed.ticks_between([symbol], start, start + 6 * MINUTE)
    assert len(minutes) == 6
    for bar in minutes:
        own = [tick for tick in ticks if bar.open_time <= tick.event_time < bar.open_time + MINUTE]
        assert own[0].event_time == bar.open_time
        assert (bar.open, bar.close) == (own[0].price, own[-1].price)
        assert (bar.high, bar.low) == (max(t.price for t in own), min(t.price for t in own))
        assert bar.volume == pytest.approx(sum(tick.size for tick in own), rel=1e-12)
        assert bar.trade_count == len(own)
        assert feed.price_at(symbol, bar.open_time + MINUTE - timedelta(microseconds=1)) == bar.close
        assert feed.price_at(symbol, bar.open_time) == bar.open
    times = [tick.event_time for tick in ticks]
    assert times == sorted(set(times))
    for tick in ticks:
        assert_valid_tick(tick, spec)
    # A day's open, as price_at reports it without generating the day, is the previous daily close.
    daily = feed.bars(symbol, Timeframe.D1, datetime(2026, 3, 8), datetime(2026, 3, 10))
    assert feed.price_at(symbol, datetime(2026, 3, 9)) == daily[0].close == daily[1].open


def assert_valid_tick(tick: Tick, spec: SimSymbol) -> None:
    assert tick.bid is not None
    assert tick.ask is not None
    assert tick.bid_size is not None
    assert tick.ask_size is not None
    assert tick.price > 0
    assert tick.size > 0
    assert tick.bid_size > 0
    assert tick.ask_size > 0
    assert tick.bid <= tick.price <= tick.ask
    assert tick.ask - tick.bid >= spec.tick_size * 0.999 or tick.bid == spec.tick_size
    assert tick.aggressor_side in (1, 2)
    assert tick.price == (tick.ask if tick.aggressor_side == 1 else tick.bid)
    for value in (tick.price, tick.bid, tick.ask):
        assert is_multiple(value, spec.tick_size)
    assert is_multiple(tick.size, spec.lot_size)
    assert tick.sequence == 0


def is_multiple(value: float, step: float) -> bool:
    return abs(value / step - round(value / step)) < 1e-6


def test_ticks_in_any_slices_are_the_same_ticks() -> None:
    feed = feed_at()
    start = datetime(2026, 3, 10, 9, 59, 40)
    whole = feed.ticks_between(["SIM-EUR-USD", "SIM-AAPL"], start, start + timedelta(seconds=40))
    pieces: list[Tick] = []
    for index in range(160):
        piece_start = start + index * timedelta(seconds=0.25)
        pieces.extend(
            feed.ticks_between(["SIM-EUR-USD", "SIM-AAPL"], piece_start, piece_start + timedelta(seconds=0.25))
        )
    assert pieces == whole
    assert {tick.symbol for tick in whole} == {"SIM-EUR-USD", "SIM-AAPL"}
    assert all(start <= tick.event_time < start + timedelta(seconds=40) for tick in whole)
    # Around 4 ticks a second per symbol on average (busier near the open and close of the day).
    assert 40 < len(whole) / 2 < 40 * 20


# --- bar validity ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeframe", list(Timeframe))
async def test_bars_are_valid_aligned_and_closed(timeframe: Timeframe) -> None:
    feed = feed_at()
    span = 40 * DAY if timeframe is Timeframe.D1 else 2 * DAY
    for spec in DEMO_SYMBOLS:
        bars = await feed.history(spec.symbol, timeframe, NOW - span + timedelta(seconds=1), NOW + DAY)
        assert bars
        assert bars == feed.bars(spec.symbol, timeframe, NOW - span + timedelta(seconds=1), NOW + DAY)
        assert bars[0].open_time >= NOW - span
        assert timeframe.aligned(bars[0].open_time)
        assert bars[-1].open_time + timeframe.delta <= NOW < bars[-1].open_time + 2 * timeframe.delta
        for earlier, later in itertools.pairwise(bars):
            assert later.open_time - earlier.open_time == timeframe.delta
        for bar in bars:
            assert bar.high >= max(bar.open, bar.close)
            assert bar.low <= min(bar.open, bar.close)
            assert bar.low > 0
            assert bar.volume > 0
            assert (bar.trade_count or 0) > 0
            for price in (bar.open, bar.high, bar.low, bar.close):
                assert is_multiple(price, spec.tick_size)
            assert is_multiple(bar.volume, spec.lot_size)


def test_history_ranges_are_half_open_and_stop_at_the_clock() -> None:
    feed = feed_at()
    start = datetime(2026, 3, 10, 10, 0)
    assert [b.open_time for b in feed.bars("SIM-AAPL", Timeframe.H1, start, start + 2 * timedelta(hours=1))] == [
        start,
        start + timedelta(hours=1),
    ]
    assert feed.bars("SIM-AAPL", Timeframe.M1, NOW - timedelta(seconds=10), NOW + DAY) == []
    assert feed.bars("SIM-AAPL", Timeframe.D1, datetime(2026, 3, 10), NOW + DAY) == []
    assert feed.bars("SIM-AAPL", Timeframe.M5, NOW, NOW - DAY) == []
    later = feed_at(NOW + DAY)
    assert later.bars("SIM-AAPL", Timeframe.D1, datetime(2026, 3, 10), NOW + DAY)[0].open_time == datetime(2026, 3, 10)


# --- statistics --------------------------------------------------------------------------------------------------

# Daily closes are cheap (price_at at midnight needs only the daily process), so samples can be long.
YEARS = 20
SAMPLE_START = datetime(2010, 1, 1)


@pytest.mark.parametrize("spec", DEMO_SYMBOLS, ids=lambda spec: spec.symbol)
def test_realised_volatility_matches_the_configured_one(spec: SimSymbol) -> None:
    returns = daily_log_returns(feed_at(), spec.symbol, SAMPLE_START, 365 * YEARS)
    realised = returns.std() * math.sqrt(365)
    assert 0.8 * spec.annual_volatility < realised < 1.25 * spec.annual_volatility


def test_daily_returns_come_from_the_daily_closes() -> None:
    feed = feed_at()
    daily = feed.bars("SIM-BTC-USDT", Timeframe.D1, datetime(2025, 12, 1), datetime(2026, 3, 1))
    closes = [feed.price_at("SIM-BTC-USDT", bar.open_time + DAY) for bar in daily]
    assert closes == [bar.close for bar in daily]


def test_turbulent_regimes_cluster_volatility() -> None:
    regimes = plain("SIM-REGIMES", jumps_per_year=0.0)
    steady = plain("SIM-STEADY", jumps_per_year=0.0, turbulence_multiplier=1.0)
    feed = feed_at(symbols=[regimes, steady])

    def clustering(symbol: str) -> tuple[float, float]:
        returns = daily_log_returns(feed, symbol, SAMPLE_START, 365 * YEARS)
        size = np.abs(returns)
        autocorrelation = float(np.corrcoef(size[:-1], size[1:])[0, 1])
        windows = np.lib.stride_tricks.sliding_window_view(returns, 20).std(axis=1)
        return autocorrelation, float(np.quantile(windows, 0.95) / np.quantile(windows, 0.05))

    regime_acf, regime_spread = clustering(regimes.symbol)
    steady_acf, steady_spread = clustering(steady.symbol)
    # Persistent turbulent spells make large moves follow large moves, and 20-day volatility range widely.
    assert regime_acf > 0.1
    assert abs(steady_acf) < 0.05
    assert regime_spread > 1.4 * steady_spread


def test_jumps_make_fat_tails() -> None:
    jumpy, smooth = (
        plain("SIM-JUMPY", jumps_per_year=6.0, turbulence_multiplier=1.0),
        plain("SIM-SMOOTH", jumps_per_year=0.0, turbulence_multiplier=1.0),
    )
    feed = feed_at(symbols=[jumpy, smooth, *DEMO_SYMBOLS])

    def extreme_days(symbol: str) -> int:
        returns = daily_log_returns(feed, symbol, SAMPLE_START, 365 * YEARS)
        deviation = returns - np.median(returns)
        calm_sigma = 1.4826 * np.median(np.abs(deviation))  # robust to jumps and to the rarer turbulent days
        return int(np.sum(np.abs(deviation) > 4 * calm_sigma))

    assert extreme_days(smooth.symbol) <= 3  # a Gaussian day beyond 4 sigma: about one in 16,000
    assert extreme_days(jumpy.symbol) >= 0.25 * 6 * YEARS
    assert extreme_days("SIM-AAPL") >= 5  # the demo model, with regimes and jumps, has fat tails too


def test_volume_follows_the_intraday_profile() -> None:
    feed = feed_at()

    def minute_volume(symbol: str) -> npt.NDArray[np.float64]:
        """Mean volume of each minute of the UTC day over 20 days, relative to the overall mean."""
        bars = feed.bars(symbol, Timeframe.M1, datetime(2026, 2, 1), datetime(2026, 2, 21))
        volume = np.array([bar.volume for bar in bars]).reshape(20, 1440)
        profile: npt.NDArray[np.float64] = volume.mean(axis=0) / volume.mean()
        return profile

    crypto = minute_volume("SIM-BTC-USDT")  # a U over the UTC day
    edges = np.concatenate((crypto[:60], crypto[-60:])).mean()
    assert edges > 1.8 * crypto[600:840].mean()
    korean = minute_volume("SIM-005930")  # a U over 09:00-15:30 Seoul, 00:00-06:30 UTC
    in_session, off_session = korean[:390], korean[390:]
    assert in_session.mean() > 4 * off_session.mean()
    quiet = in_session[150:240].mean()
    assert in_session[:30].mean() > 1.8 * quiet
    assert in_session[-30:].mean() > 1.8 * quiet
    daily = [bar.volume for bar in feed.bars("SIM-AAPL", Timeframe.D1, datetime(2025, 1, 1), datetime(2026, 1, 1))]
    assert 0.7 * BY_SYMBOL["SIM-AAPL"].daily_volume < np.mean(daily) < 1.4 * BY_SYMBOL["SIM-AAPL"].daily_volume


def test_minute_noise_makes_minute_returns_mean_revert_and_leaves_the_days_alone() -> None:
    """SIM-BTC-USDT's minute closes carry an independent error of 1.2 volatilities of their minute around the
    efficient price: minute log returns then have a lag-1 autocorrelation of about -k²/(1 + 2k²) = -0.37 (the other
    lags about 0), in the busy hours around midnight UTC as in the quiet ones; the other demo symbols stay random
    walks, and the days are the same as without the noise."""
    spec = BY_SYMBOL["SIM-BTC-USDT"]
    assert spec.minute_noise == 1.2
    noisy, plain_feed = feed_at(), feed_at(symbols=[replace(spec, minute_noise=0.0), BY_SYMBOL["SIM-AAPL"]])
    start, end = datetime(2026, 2, 1), datetime(2026, 2, 11)

    def autocorrelations(feed: SimulatedFeed, symbol: str) -> list[float]:
        closes = np.array([bar.close for bar in feed.bars(symbol, Timeframe.M1, start, end)])
        returns = np.diff(np.log(closes))
        return [float(np.corrcoef(returns[lag:], returns[:-lag])[0, 1]) for lag in (1, 2, 3)]

    k = spec.minute_noise
    lag1, lag2, lag3 = autocorrelations(noisy, "SIM-BTC-USDT")
    assert lag1 == pytest.approx(-(k**2) / (1 + 2 * k**2), abs=0.03)
    assert abs(lag2) < 0.03
    assert abs(lag3) < 0.03
    # The noise scales with each minute's volatility, so the reversion is as strong at every hour of the UTC day.
    closes = np.array([bar.close for bar in noisy.bars("SIM-BTC-USDT", Timeframe.M1, start, end)])
    returns = np.diff(np.log(closes))
    hour = (np.arange(1, closes.shape[0]) // 60) % 24  # the UTC hour of each return's minute
    busy, quiet = (hour >= 21) | (hour < 3), (hour >= 9) & (hour < 15)
    for hours in (busy, quiet):
        pairs = hours[1:] & hours[:-1]
        lag1_in = float(np.corrcoef(returns[1:][pairs], returns[:-1][pairs])[0, 1])
        assert lag1_in == pytest.approx(-(k**2) / (1 + 2 * k**2), abs=0.05)
    for symbol in ("SIM-AAPL", "SIM-EUR-USD"):
        assert all(abs(value) < 0.03 for value in autocorrelations(noisy, symbol)), symbol
    assert all(abs(value) < 0.03 for value in autocorrelations(plain_feed, "SIM-BTC-USDT"))
    noisy_days = noisy.bars("SIM-BTC-USDT", Timeframe.D1, start, end)
    plain_days = plain_feed.bars("SIM-BTC-USDT", Timeframe.D1, start, end)
    assert [(bar.open, bar.close, bar.volume) for bar in noisy_days] == [
        (bar.open, bar.close, bar.volume) for bar in plain_days
    ]
    # The other symbols' paths do not move at all.
    assert noisy.bars("SIM-AAPL", Timeframe.M1, start, start + DAY) == plain_feed.bars(
        "SIM-AAPL", Timeframe.M1, start, start + DAY
    )
    with pytest.raises(ValueError, match="minute noise"):
        replace(spec, minute_noise=-0.1)


# --- streaming ---------------------------------------------------------------------------------------------------


async def test_live_ticks_are_batches_of_the_elapsed_intervals() -> None:
    start, step = datetime(2026, 3, 10, 8, 59, 58), timedelta(seconds=0.5)
    clock = SteppingClock(start, step)
    feed = SimulatedFeed(seed=42, clock=clock, tick_interval_seconds=0.001)
    symbols = ["SIM-AAPL", "SIM-KOSPI"]
    batches: list[list[Tick]] = []
    async for batch in feed.ticks(symbols):
        batches.append(batch)
        if clock.now > start + timedelta(seconds=10):
            break
    streamed = [tick for batch in batches for tick in batch]
    end = streamed[-1].event_time
    assert streamed == feed.ticks_between(symbols, start, end + timedelta(microseconds=1))
    assert len(batches) >= 15
    assert {tick.symbol for tick in streamed} == set(symbols)
    for batch in batches:
        assert [tick.event_time for tick in batch] == sorted(tick.event_time for tick in batch)
        assert batch[-1].event_time - batch[0].event_time < step


async def test_the_stream_stops_promptly_when_cancelled() -> None:
    feed = SimulatedFeed(tick_interval_seconds=0.01)  # the real clock
    received: list[list[Tick]] = []

    async def consume() -> None:
        async for batch in feed.ticks(list(BY_SYMBOL)):
            received.append(batch)

    task = asyncio.create_task(consume())
    await eventually(lambda: len(received) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1.0)
    latest = received[-1][-1].event_time
    assert abs(latest - datetime.now(UTC).replace(tzinfo=None)) < timedelta(seconds=5)


async def test_a_stalled_clock_jump_is_not_replayed_in_full() -> None:
    clock = SteppingClock(NOW, timedelta(hours=1))
    feed = SimulatedFeed(clock=clock, tick_interval_seconds=0.001)
    stream = feed.ticks(["SIM-EUR-USD"])
    batch = await anext(stream)
    assert batch[-1].event_time - batch[0].event_time <= timedelta(seconds=10)
    await stream.aclose()  # type: ignore[attr-defined]
