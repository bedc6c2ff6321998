"""The simulator's price model: per-symbol paths of days, minutes and ticks, a pure function of (seed, symbol, time)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from services.market.feeds.sim.symbols import JUMP_SIZE_SHARE, SimSymbol, session_minutes
from services.market.records import Bar

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
K = TypeVar("K")
V = TypeVar("V")

# Where every symbol's price level is pinned to its start_price; a recent anchor keeps live prices near the
# configured levels, and the path extends both ways from it.
ANCHOR = datetime(2025, 1, 1)
# The simulator trades around the clock, so volatility and drift are annualised over calendar days.
DAYS_PER_YEAR = 365.0
MINUTES_PER_DAY = 1440
MICROS_PER_MINUTE = 60_000_000
# Each chunk of days restarts its regime chain from the stationary distribution, so a chunk depends on no other
# chunk's draws; with turbulent spells lasting ~2 weeks the seams are statistically invisible.
_CHUNK_DAYS = 128
_TURBULENT_VOLUME_FACTOR = 1.6
_VOLUME_NOISE = 0.4
_OFF_SESSION_WEIGHT = 0.15
# The open, the close, the high and the low each need a tick of their own.
_MIN_TICKS_PER_MINUTE = 4
MAX_CATCH_UP = timedelta(seconds=10)
# Daily bars are computed this many days at a time, bounding memory while amortising numpy's per-call cost.
_BLOCK_DAYS = 16


def _decimals(step: float) -> int:
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _u_shape(position: Floats) -> Floats:
    # Trading clusters around the open and the close and is quiet mid-session.
    return 0.6 + 2.4 * (2.0 * position - 1.0) ** 4


class _Cache(Generic[K, V]):
    """A bounded dict; races between threads can only duplicate deterministic work, so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> V:
        if len(self._items) >= self._limit:
            self._items.clear()
        self._items[key] = value
        return value


@dataclass(frozen=True, slots=True)
class _DayChunk:
    """The daily-scale process over _CHUNK_DAYS days: regime, diffusion volatility and jump of each day."""

    offsets: Floats  # log open of each day relative to the chunk's first open, _CHUNK_DAYS + 1 entries
    daily_sigma: Floats
    jump: Floats
    jump_minute: Ints
    turbulent: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Profile:
    """The intraday volume profile of a day: minute weights (summing to 1), their square roots, the normalised
    running total (the bridge's clock, one entry more) and the mean trade count of each minute with its root."""

    weights: Floats
    root: Floats
    elapsed: Floats
    trade_rate: Floats
    trade_rate_root: Floats

    def __iter__(self) -> Iterator[Floats]:
        return iter((self.weights, self.root, self.elapsed, self.trade_rate, self.trade_rate_root))


@dataclass(frozen=True, slots=True)
class _Days:
    """1-minute OHLC, traded lots, trade counts and log volatility of consecutive UTC days, one row a day."""

    open: Floats
    high: Floats
    low: Floats
    close: Floats
    lots: Ints
    trades: Ints
    sigma: Floats


@dataclass(frozen=True, slots=True)
class MinuteTicks:
    """Every tick of one minute; offsets are microseconds after the minute's start."""

    offsets: Ints
    prices: Floats
    sizes: Floats
    bids: Floats
    asks: Floats
    bid_sizes: Floats
    ask_sizes: Floats
    sides: Ints


class SymbolPath:
    """One symbol's price path: a pure function of (seed, symbol, time), with caches that only save work."""

    def __init__(self, spec: SimSymbol, seed: int) -> None:
        self.spec = spec
        self._seed = seed
        total = spec.calm_to_turbulent_per_day + spec.turbulent_to_calm_per_day
        self._turbulent_share = spec.calm_to_turbulent_per_day / total if total > 0 else 0.0
        self._jump_sigma = JUMP_SIZE_SHARE * spec.annual_volatility
        jump_variance = spec.jumps_per_year * self._jump_sigma**2
        regime_variance = 1 - self._turbulent_share + self._turbulent_share * spec.turbulence_multiplier**2
        self._calm_volatility = math.sqrt((spec.annual_volatility**2 - jump_variance) / regime_variance)
        # Compensates the jumps so the expected price still grows at annual_drift.
        self._jump_compensator = spec.jumps_per_year * (math.exp(self._jump_sigma**2 / 2) - 1)
        self._volume_norm = 1 - self._turbulent_share + self._turbulent_share * _TURBULENT_VOLUME_FACTOR
        self._price_decimals = _decimals(spec.tick_size)
        self._lot_decimals = _decimals(spec.lot_size)
        self._zone = ZoneInfo(spec.timezone)
        self._levels = {0: math.log(spec.start_price)}
        self._chunks: _Cache[int, _DayChunk] = _Cache(4096)
        self._open_prices: _Cache[int, float] = _Cache(100_000)
        self._profiles: _Cache[float, _Profile] = _Cache(64)
        self._days: _Cache[int, _Days] = _Cache(16)
        self._day_bars: _Cache[int, Bar] = _Cache(100_000)
        self._minutes: _Cache[int, MinuteTicks] = _Cache(64)

    def _rng(self, kind: str, index: int) -> np.random.Generator:
        """A counter-based stream that depends on nothing but (seed, symbol, kind, index)."""
        material = f"{self._seed}|{self.spec.symbol}|{kind}|{index}".encode()
        key = int.from_bytes(hashlib.blake2b(material, digest_size=16).digest(), "big")
        return np.random.Generator(np.random.Philox(key=key))

    def round_price(self, prices: Floats) -> Floats:
        ticks = np.maximum(np.rint(prices / self.spec.tick_size), 1.0)
        rounded: Floats = np.round(ticks * self.spec.tick_size, self._price_decimals)
        return rounded

    def quantity(self, lots: Ints) -> Floats:
        rounded: Floats = np.round(lots * self.spec.lot_size, self._lot_decimals)
        return rounded

    # --- the daily-scale process -------------------------------------------------------------------------------

    def _chunk(self, chunk: int) -> _DayChunk:
        cached = self._chunks.get(chunk)
        if cached is not None:
            return cached
        spec, rng = self.spec, self._rng("days", chunk)
        switches = rng.random(_CHUNK_DAYS)
        turbulent = np.empty(_CHUNK_DAYS, dtype=np.bool_)
        state = bool(rng.random() < self._turbulent_share)
        for day in range(_CHUNK_DAYS):  # a Markov chain is sequential; 128 steps cost microseconds
            turbulent[day] = state
            leave = spec.turbulent_to_calm_per_day if state else spec.calm_to_turbulent_per_day
            state ^= bool(switches[day] < leave)
        annual_sigma = self._calm_volatility * np.where(turbulent, spec.turbulence_multiplier, 1.0)
        drift = (spec.annual_drift - annual_sigma**2 / 2 - self._jump_compensator) / DAYS_PER_YEAR
        daily_sigma = annual_sigma / math.sqrt(DAYS_PER_YEAR)
        diffusion = drift + daily_sigma * rng.standard_normal(_CHUNK_DAYS)
        jump_count = rng.poisson(spec.jumps_per_year / DAYS_PER_YEAR, _CHUNK_DAYS)
        jump = np.sqrt(jump_count) * self._jump_sigma * rng.standard_normal(_CHUNK_DAYS)
        jump_minute = rng.integers(0, MINUTES_PER_DAY, _CHUNK_DAYS)
        offsets = np.concatenate(([0.0], np.cumsum(diffusion + jump)))
        return self._chunks.put(chunk, _DayChunk(offsets, daily_sigma, jump, jump_minute, turbulent))

    def _level(self, chunk: int) -> float:
        """Log price at the first open of `chunk`, walked out from the anchor so it never depends on call order."""
        levels = self._levels
        if chunk not in levels:
            known = list(levels)  # a snapshot: history() threads may be adding levels meanwhile
            if chunk > 0:
                for index in range(max(i for i in known if i < chunk), chunk):
                    levels[index + 1] = levels[index] + float(self._chunk(index).offsets[-1])
            else:
                for index in range(min(i for i in known if i > chunk), chunk, -1):
                    levels[index - 1] = levels[index] - float(self._chunk(index - 1).offsets[-1])
        return levels[chunk]

    def _log_open(self, day: int) -> float:
        chunk, position = divmod(day, _CHUNK_DAYS)
        return self._level(chunk) + float(self._chunk(chunk).offsets[position])

    def open_price(self, day: int) -> float:
        """The day's opening price (and the previous day's close), the one value both share."""
        cached = self._open_prices.get(day)
        if cached is None:
            cached = self._open_prices.put(day, float(self.round_price(np.exp(np.array([self._log_open(day)])))[0]))
        return cached

    def _volume_profile(self, day: int) -> _Profile:
        """Each UTC minute's share of the day's activity: a U over the UTC day, or over the local session."""
        session = self.spec.trading_session
        offset = None if session.always_open else self._zone.utcoffset(ANCHOR + timedelta(days=day, hours=12))
        offset_minutes = 0.0 if offset is None else offset.total_seconds() / 60
        cached = self._profiles.get(offset_minutes)
        if cached is not None:
            return cached
        minutes = np.arange(MINUTES_PER_DAY, dtype=np.float64) + 0.5
        if session.always_open:
            weights = _u_shape(minutes / MINUTES_PER_DAY)
        else:
            opens, closes = session_minutes(session)
            length = (closes - opens) % MINUTES_PER_DAY or MINUTES_PER_DAY
            since_open = (minutes + offset_minutes - opens) % MINUTES_PER_DAY
            inside = since_open < length
            weights = np.where(inside, _u_shape(np.minimum(since_open / length, 1.0)), _OFF_SESSION_WEIGHT)
        weights /= weights.sum()
        elapsed = np.concatenate(([0.0], np.cumsum(weights)))
        trade_rate = self.spec.ticks_per_second * 60 * MINUTES_PER_DAY * weights
        profile = _Profile(weights, np.sqrt(weights), elapsed / elapsed[-1], trade_rate, np.sqrt(trade_rate))
        return self._profiles.put(offset_minutes, profile)

    # --- days of minutes ---------------------------------------------------------------------------------------

    def day(self, day: int) -> _Days:
        """One day's minutes (a one-row _Days), cached for live ticks and intraday history."""
        cached = self._days.get(day)
        return cached if cached is not None else self._days.put(day, self.days(day, 1))

    def days(self, first: int, count: int) -> _Days:
        """Minutes of `count` days from `first`: a Brownian bridge from each day's open to its close, in a clock
        that runs faster while the volume profile is busy, with a day's jump as a step at its minute."""
        span, minutes = range(first, first + count), MINUTES_PER_DAY
        daily = [(self._chunk(chunk), position) for chunk, position in (divmod(day, _CHUNK_DAYS) for day in span)]
        daily_sigma = np.array([chunk.daily_sigma[position] for chunk, position in daily])[:, None]
        jump = np.array([chunk.jump[position] for chunk, position in daily])[:, None]
        jump_minute = np.array([chunk.jump_minute[position] for chunk, position in daily])[:, None]
        turbulent = np.array([chunk.turbulent[position] for chunk, position in daily])[:, None]
        log_opens = np.array([self._log_open(day) for day in range(first, first + count + 1)])
        open_prices = np.array([self.open_price(day) for day in range(first, first + count + 1)])
        profiles = [self._volume_profile(day) for day in span]
        # Rows share one profile unless a daylight-saving change falls inside the block (only exact arithmetic
        # touches these arrays, so broadcasting and stacking give identical numbers).
        if all(profile is profiles[0] for profile in profiles):
            weights, root, elapsed, rate, rate_root = (column[None, :] for column in profiles[0])
        else:
            weights, root, elapsed, rate, rate_root = (np.stack(column) for column in zip(*profiles, strict=True))
        normal, extreme = np.empty((count, 2 * minutes)), np.empty((count, 2 * minutes))
        for row, day in enumerate(span):
            rng = self._rng("day", day)
            rng.standard_normal(out=normal[row])
            rng.standard_exponential(out=extreme[row])
        sigma = daily_sigma * root
        walk = np.zeros((count, minutes + 1))
        np.cumsum(sigma * normal[:, :minutes], axis=1, out=walk[:, 1:])
        bridge = walk - elapsed * walk[:, -1:]
        log_open, log_close = log_opens[:-1, None], log_opens[1:, None]
        steps = np.arange(minutes + 1) > jump_minute
        path = log_open + (log_close - log_open - jump) * elapsed + bridge + jump * steps
        if self.spec.minute_noise > 0:
            # Each minute's close off the efficient price by minute_noise times that minute's own volatility, so
            # the noise-to-volatility ratio (and what a model can learn from it) is the same at every hour of the
            # day (a stream of its own: the other draws stay the same). The day's ends stay pinned below.
            noise = np.zeros((count, minutes + 1))
            for row, day in enumerate(span):
                self._rng("noise", day).standard_normal(out=noise[row, 1:-1])
            noise[:, 1:] *= self.spec.minute_noise * sigma
            path = path + noise
        boundary = self.round_price(np.exp(path))
        # Pin the ends so a day's close is bit for bit the next day's open and what price_at() says at midnight.
        boundary[:, 0], boundary[:, -1] = open_prices[:-1], open_prices[1:]
        opens, closes = boundary[:, :-1], boundary[:, 1:]
        # Extremes of a Brownian bridge from a to b with variance s²: (a + b ± sqrt((b - a)² + 2s²E)) / 2 with
        # E ~ Exp(1), the inverse of their exact distribution.
        middle, gap, variance = path[:, :-1] + path[:, 1:], (path[:, 1:] - path[:, :-1]) ** 2, 2 * sigma**2
        top = (middle + np.sqrt(gap + variance * extreme[:, :minutes])) / 2
        bottom = (middle - np.sqrt(gap + variance * extreme[:, minutes:])) / 2
        highs = np.maximum(self.round_price(np.exp(top)), np.maximum(opens, closes))
        lows = np.minimum(self.round_price(np.exp(bottom)), np.minimum(opens, closes))
        # One activity shock per minute moves both the number of trades (~Poisson, by its normal approximation
        # as rates are in the hundreds) and the traded quantity.
        shock = normal[:, minutes:]
        trades = np.maximum(np.rint(rate + rate_root * shock), _MIN_TICKS_PER_MINUTE).astype(np.int64)
        mean_lots = self.spec.daily_volume / self.spec.lot_size / self._volume_norm
        factor = np.where(turbulent, _TURBULENT_VOLUME_FACTOR * mean_lots, mean_lots) * weights
        lots = np.rint(factor * np.exp(_VOLUME_NOISE * shock - _VOLUME_NOISE**2 / 2)).astype(np.int64)
        return _Days(opens, highs, lows, closes, np.maximum(lots, trades), trades, sigma)

    def rolled_up(self, minutes: _Days, step: int) -> list[tuple[float, float, float, float, float, int]]:
        """Bars of `step` minutes over the rows of `minutes`, as (open, high, low, close, volume, trade_count)."""

        def grouped(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return values.reshape(-1, step)

        columns = (
            grouped(minutes.open)[:, 0],
            grouped(minutes.high).max(axis=1),
            grouped(minutes.low).min(axis=1),
            grouped(minutes.close)[:, -1],
            self.quantity(grouped(minutes.lots).sum(axis=1)),
        )
        trades = grouped(minutes.trades).sum(axis=1).tolist()
        return list(zip(*(column.tolist() for column in columns), trades, strict=True))

    def day_bars(self, first: int, count: int) -> list[Bar]:
        """Daily bars, computed a block of days at a time and kept (a year of them is a few kilobytes)."""
        bars: list[Bar] = []
        for block_start in range(first, first + count, _BLOCK_DAYS):
            block = range(block_start, min(block_start + _BLOCK_DAYS, first + count))
            if any(self._day_bars.get(day) is None for day in block):
                rows = self.rolled_up(self.days(block.start, len(block)), MINUTES_PER_DAY)
                for day, values in zip(block, rows, strict=True):
                    self._day_bars.put(day, Bar(ANCHOR + timedelta(days=day), *values))
            bars.extend(bar for day in block if (bar := self._day_bars.get(day)) is not None)
        return bars

    # --- one minute of ticks -----------------------------------------------------------------------------------

    def minute_ticks(self, minute: int) -> MinuteTicks:
        """The minute's ticks: a Brownian bridge pinned to its open (first tick), high, low and close (last)."""
        cached = self._minutes.get(minute)
        if cached is not None:
            return cached
        day, index = divmod(minute, MINUTES_PER_DAY)
        minutes = self.day(day)
        count, rng = int(minutes.trades[0, index]), self._rng("minute", minute)
        first, high, low = float(minutes.open[0, index]), float(minutes.high[0, index]), float(minutes.low[0, index])
        gaps = rng.exponential(size=count)
        fractions = np.cumsum(gaps)[:-1] / gaps.sum()
        # Strictly increasing whole microseconds, the first exactly at the minute's start.
        later = np.floor(fractions * (MICROS_PER_MINUTE - count)).astype(np.int64) + np.arange(1, count)
        offsets = np.concatenate((np.zeros(1, dtype=np.int64), later))
        high_at, low_at = rng.choice(np.arange(1, count - 1), size=2, replace=False).tolist()
        pins = [*sorted([(0, first), (high_at, high), (low_at, low)]), (count - 1, float(minutes.close[0, index]))]
        pin_index, pin_price = np.array([i for i, _ in pins]), np.array([p for _, p in pins])
        times = offsets / MICROS_PER_MINUTE
        noise = first * float(minutes.sigma[0, index]) * np.sqrt(np.diff(times)) * rng.standard_normal(count - 1)
        walk = np.concatenate(([0.0], np.cumsum(noise)))
        segment = np.minimum(np.searchsorted(pin_index, np.arange(count), side="right") - 1, len(pins) - 2)
        left, right = pin_index[segment], pin_index[segment + 1]
        share = (times - times[left]) / (times[right] - times[left])
        path = pin_price[segment] + (pin_price[segment + 1] - pin_price[segment]) * share
        path += walk - walk[left] - share * (walk[right] - walk[left])
        prices = np.clip(self.round_price(np.clip(path, low, high)), low, high)
        prices[pin_index] = pin_price
        # Upticks are bought, downticks sold; unchanged prints go either way.
        change = np.diff(prices, prepend=prices[0])
        sides = np.where(change > 0, 1, np.where(change < 0, 2, rng.integers(1, 3, count))).astype(np.int64)
        spread = rng.integers(1, 4, count) * self.spec.tick_size
        bought = sides == 1
        bids = self.round_price(np.where(bought, prices - spread, prices))
        asks = self.round_price(np.where(bought, prices, prices + spread))
        lots = int(minutes.lots[0, index])
        weights = rng.lognormal(0.0, 1.0, count)
        sizes = self.quantity(1 + rng.multinomial(lots - count, weights / weights.sum()))
        book = np.maximum(np.rint(lots / count * rng.uniform(0.5, 4.0, (2, count))), 1).astype(np.int64)
        ticks = MinuteTicks(offsets, prices, sizes, bids, asks, self.quantity(book[0]), self.quantity(book[1]), sides)
        return self._minutes.put(minute, ticks)
