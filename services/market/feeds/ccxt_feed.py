"""A feed of real crypto exchanges' public market data through ccxt's async REST API (polling, no API keys)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from services.core.timing import SYSTEM_TIMER, Timer
from services.market.feeds.base import FeedAdapter, FeedError, HistoryNotSupported, Transport
from services.market.records import (
    EPOCH,
    AssetClass,
    Bar,
    Instrument,
    Tick,
    Timeframe,
    TradingSession,
)

T = TypeVar("T")

log = logging.getLogger("bullant.market.ccxt")

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")

# ccxt's precisionMode values (ccxt.base.decimal_to_precision): how a market's `precision` numbers read.
_DECIMAL_PLACES = 2
_TICK_SIZE = 4

# Exchange options that make load_markets fetch spot markets only: the platform's crypto instruments are spot
# pairs, and binance would otherwise also call its futures hosts (fapi/dapi) on every load. Keyed by ccxt id;
# exchanges not listed load what ccxt loads by default. `ccxt_options` passed to CcxtFeed override these.
_SPOT_ONLY_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
}

# How far behind the clock a symbol's trade cursor may lag. Binance answers `since` with the hour after it only
# (ccxt sends endTime = since + 1 h), so a symbol quiet for longer would otherwise pin its cursor to an hour with
# no trades and never see the new ones. A poll never legitimately lags this much.
_MAX_TRADE_LOOKBACK = timedelta(minutes=30)

# When an exchange does not advertise its largest OHLCV page (ccxt `features`), ask for this many bars.
_DEFAULT_OHLCV_PAGE = 500


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@cache
def _ccxt() -> Any:
    """ccxt.async_support, imported on first use: it imports every exchange (about a second), and it has no type
    information, so the rest of this module meets it only through the typed helpers below."""
    return importlib.import_module("ccxt.async_support")


def platform_symbol(ccxt_symbol: str) -> str:
    """The platform symbol of a ccxt unified symbol: "BTC/USDT" → "BTC-USDT", "BTC/USDT:USDT" → "BTC-USDT-USDT"."""
    symbol = ccxt_symbol.replace("/", "-").replace(":", "-").upper()
    if not _SYMBOL.match(symbol):
        raise ValueError(f"ccxt symbol {ccxt_symbol!r} gives no valid platform symbol ({symbol!r})")
    return symbol


def precision_to_step(value: object, precision_mode: int) -> float:
    """A ccxt market precision as the smallest increment: a tick size stays as it is, a number of decimal places
    n becomes 10**-n; significant digits (or a missing value) have no fixed increment, 0.0 means unknown."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        number = float(value)
    except ValueError:
        return 0.0
    if not math.isfinite(number) or number < 0:
        return 0.0
    if precision_mode == _TICK_SIZE:
        return number
    if precision_mode == _DECIMAL_PLACES:
        return float(f"1e-{int(number)}")
    return 0.0


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch of a naive-UTC (or aware) datetime."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_millis(millis: int) -> datetime:
    """The naive-UTC datetime of epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=millis)


def redirect_api_urls(api: Any, base_url: str) -> Any:
    """A copy of a ccxt `urls['api']` value (a URL, or a dict of them, possibly nested) with every URL's scheme and
    host replaced by `base_url`'s, keeping each URL's own path: "https://api.binance.com/api/v3" with base
    "http://127.0.0.1:8080" becomes "http://127.0.0.1:8080/api/v3"."""
    if isinstance(api, dict):
        return {key: redirect_api_urls(value, base_url) for key, value in api.items()}
    if isinstance(api, str):
        return base_url.rstrip("/") + urlsplit(api).path
    return api


def _float_or_none(value: object) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


_ORDERED_TIMEFRAMES = (Timeframe.M1, Timeframe.M5, Timeframe.M15, Timeframe.H1, Timeframe.D1)
_SIDES = {"buy": 1, "sell": 2}


@dataclasses.dataclass(slots=True)
class _TradeCursor:
    """Where a symbol's trade polling stands: the newest trade time emitted and the trades emitted at that time
    (several trades can share a millisecond, and `since` is inclusive, so they come back on the next poll)."""

    since_ms: int
    keys_at_since: set[str] = dataclasses.field(default_factory=set)

    def admit(self, timestamp: int, key: str) -> bool:
        """Whether a trade is new; advances the cursor when it is. Older trades are never new: ticks only go
        forward."""
        if timestamp < self.since_ms or (timestamp == self.since_ms and key in self.keys_at_since):
            return False
        if timestamp > self.since_ms:
            self.since_ms = timestamp
            self.keys_at_since = set()
        self.keys_at_since.add(key)
        return True


class RequestPacer:
    """Spaces an exchange's requests as ccxt's rate limiter would, on a Timer: each request waits until the one
    before it is `cost × rateLimit` milliseconds behind (ccxt weighs every endpoint in units of the exchange's
    `rateLimit`). Unlike ccxt's own limiter (wall time, no burst credit either way here) it runs on the feed's
    Timer, and one pacer serves every exchange instance of a feed, so live polls and history pages share the
    exchange's budget. Requests go in the order they asked."""

    def __init__(self, timer: Timer) -> None:
        self._timer = timer
        self._ready_at = -math.inf
        self._turn = asyncio.Lock()

    async def wait(self, cost: float, unit_seconds: float) -> None:
        """Return when a request of `cost` units (of `unit_seconds` each) may go."""
        async with self._turn:
            wait = self._ready_at - self._timer.now()
            if wait > 0:
                await self._timer.sleep(wait)
            self._ready_at = max(self._timer.now(), self._ready_at) + max(cost, 0.0) * unit_seconds


class CcxtFeed(FeedAdapter):
    """Public market data of one exchange through ccxt's unified async API: markets as instruments, trades as
    ticks (polled), OHLCV candles as history.

    Ticks arrive by REST polling: ccxt's streaming API (ccxt.pro) is not used, so polling is both the fallback and
    the only transport implemented. Rate limiting is always on, so polls and history pages are spaced as the
    exchange asks (ccxt weighs binance's spot calls in units of its 50 ms `rateLimit`: aggTrades, klines and a
    symbol's ticker 0.4 each, exchangeInfo 4, so about 50 polls a second per feed at most). The spacing and the
    poll schedule run on the `timer` given (a RequestPacer stands in for ccxt's wall-clock throttler).

    `base_url`, when set, redirects every REST endpoint of the exchange to that server, keeping each endpoint's path
    (https://api.binance.com/api/v3/klines → {base_url}/api/v3/klines): the tests point it at a loopback fake.
    """

    adapter = "ccxt"
    simulated = False

    def __init__(
        self,
        feed_id: str,
        *,
        exchange: str,
        symbols: Sequence[str],
        base_url: str | None = None,
        poll_interval_seconds: float = 1.0,
        clock: Callable[[], datetime] = _utc_now,
        timer: Timer = SYSTEM_TIMER,
        fetch_quotes: bool = True,
        rate_limit_ms: float | None = None,
        timeout_seconds: float = 10.0,
        ccxt_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`exchange` is a ccxt id ("binance"); `symbols` ccxt unified symbols ("BTC/USDT"). `clock` gives naive UTC
        (where new trades start and which bars are closed); `timer` schedules polls and spaces requests.
        `fetch_quotes` asks for the ticker after new trades to
        put the bid and ask on the symbol's last tick. `rate_limit_ms` replaces the exchange's request spacing
        unit (tests shrink it; the limiter stays on). `ccxt_options` are merged into the exchange's options."""
        super().__init__(feed_id)
        ccxt = _ccxt()
        if exchange not in ccxt.exchanges:
            raise ValueError(f"unknown ccxt exchange {exchange!r}")
        if poll_interval_seconds <= 0:
            raise ValueError("poll_interval_seconds must be positive")
        if not symbols:
            raise ValueError("a ccxt feed needs at least one symbol")
        self._exchange_id = exchange
        self._base_url = base_url
        self._poll_interval = poll_interval_seconds
        self._clock = clock
        self._timer = timer
        self._pacer = RequestPacer(timer)
        self._fetch_quotes = fetch_quotes
        self._rate_limit_ms = rate_limit_ms
        self._timeout_ms = int(timeout_seconds * 1000)
        self._options = {**_SPOT_ONLY_OPTIONS.get(exchange, {}), **(ccxt_options or {})}
        # Platform symbol → ccxt symbol, in configuration order.
        self._ccxt_symbols: dict[str, str] = {}
        for ccxt_symbol in symbols:
            symbol = platform_symbol(ccxt_symbol)
            if symbol in self._ccxt_symbols:
                raise ValueError(
                    f"ccxt symbols {self._ccxt_symbols[symbol]!r} and {ccxt_symbol!r} both map to {symbol}"
                )
            self._ccxt_symbols[symbol] = ccxt_symbol
        # An unopened instance answers static questions (name, timeframes, page sizes) without any connection.
        self._template: Any = getattr(ccxt, exchange)()
        self._exchange: Any = None
        self._instruments: tuple[Instrument, ...] = ()
        # The last markets loaded (ccxt's parsed dict), so history() on a stopped feed need not reload them.
        self._markets: dict[str, Any] | None = None

    @property
    def transport(self) -> Transport:
        return Transport.POLLING

    @property
    def exchange(self) -> Any:
        """The live ccxt exchange instance (None when stopped): for inspection, not for making calls."""
        return self._exchange

    def _exchange_name(self) -> str:
        name = getattr(self._template, "name", None)
        return name if isinstance(name, str) and name else self._exchange_id.capitalize()

    # ----- lifecycle -----

    def _new_exchange(self, markets: dict[str, Any] | None = None) -> Any:
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": self._timeout_ms,
            "options": dict(self._options),
        }
        if self._rate_limit_ms is not None:
            config["rateLimit"] = self._rate_limit_ms
        if markets is not None:
            config["markets"] = markets
        exchange = getattr(_ccxt(), self._exchange_id)(config)

        async def throttle(cost: float | None = None) -> None:
            # ccxt calls this before every request while enableRateLimit is on.
            await self._pacer.wait(1.0 if cost is None else float(cost), float(exchange.rateLimit) / 1000)

        exchange.throttle = throttle
        if self._base_url is not None:
            exchange.urls = {**exchange.urls, "api": redirect_api_urls(exchange.urls["api"], self._base_url)}
        return exchange

    async def start(self) -> None:
        await self.stop()
        exchange = self._new_exchange()
        try:
            markets = await self._call(exchange, "load markets", exchange.load_markets())
            if not isinstance(markets, dict):
                raise FeedError(f"feed {self.feed_id}: load_markets answered {type(markets).__name__}")
            missing = [s for s in self._ccxt_symbols.values() if s not in markets]
            if missing:
                raise FeedError(f"feed {self.feed_id}: {self._exchange_id} has no market {', '.join(missing)}")
            self._instruments = tuple(
                self._instrument(symbol, markets[ccxt_symbol], exchange.precisionMode)
                for symbol, ccxt_symbol in self._ccxt_symbols.items()
            )
        except BaseException:
            await _close_quietly(exchange)
            raise
        self._markets = markets
        self._exchange = exchange

    async def stop(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await _close_quietly(exchange)

    def instruments(self) -> Sequence[Instrument]:
        return self._instruments

    def _instrument(self, symbol: str, market: Mapping[str, Any], precision_mode: int) -> Instrument:
        base = str(market.get("base") or "")
        quote = str(market.get("quote") or "")
        precision = market.get("precision") or {}
        return Instrument(
            symbol=symbol,
            venue=self._exchange_id.upper(),
            asset_class=AssetClass.CRYPTO,
            quote_currency=quote,
            base_currency=base,
            venue_symbol=str(market["symbol"]),
            display_name=f"{base} / {quote} on {self._exchange_name()}",
            tick_size=precision_to_step(precision.get("price"), precision_mode),
            lot_size=precision_to_step(precision.get("amount"), precision_mode),
            timezone="UTC",
            trading_session=TradingSession(always_open=True),
            feed_id=self.feed_id,
            simulated=False,
        )

    # ----- ticks -----

    async def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        """Polls every `poll_interval_seconds`: fetch_trades since each symbol's newest trade seen, ticks for the
        trades not seen before (from the clock's now on), one batch per poll in event order; empty polls yield
        nothing. Unknown symbols are a ValueError (the caller asked for what instruments() never offered)."""
        unknown = [s for s in symbols if s not in self._ccxt_symbols]
        if unknown:
            raise ValueError(f"feed {self.feed_id} does not supply {', '.join(unknown)}")
        if self._exchange is None:
            raise FeedError(f"feed {self.feed_id} is not started")
        exchange = self._exchange
        start_ms = to_millis(self._clock())
        cursors = {symbol: _TradeCursor(since_ms=start_ms) for symbol in symbols}
        timer = self._timer
        next_poll = timer.now()
        while True:
            batch: list[Tick] = []
            for symbol, cursor in cursors.items():
                batch.extend(await self._poll_trades(exchange, symbol, cursor))
            if batch:
                # Stable: each symbol's ticks keep the exchange's order within a millisecond.
                batch.sort(key=lambda tick: tick.event_time)
                yield batch
            # Every poll sleeps (at least a turn of the event loop), whatever the exchange answered.
            next_poll = max(next_poll + self._poll_interval, timer.now())
            await timer.sleep(next_poll - timer.now())

    async def _poll_trades(self, exchange: Any, symbol: str, cursor: _TradeCursor) -> list[Tick]:
        ccxt_symbol = self._ccxt_symbols[symbol]
        since = max(cursor.since_ms, to_millis(self._clock() - _MAX_TRADE_LOOKBACK))
        trades = await self._call(exchange, f"fetch trades of {ccxt_symbol}", exchange.fetch_trades(ccxt_symbol, since))
        ticks: list[Tick] = []
        for trade in trades if isinstance(trades, list) else ():
            tick = self._tick(symbol, trade, cursor)
            if tick is not None:
                ticks.append(tick)
        if ticks and self._fetch_quotes:
            ticker = await self._call(exchange, f"fetch ticker of {ccxt_symbol}", exchange.fetch_ticker(ccxt_symbol))
            if isinstance(ticker, dict):
                ticks[-1] = dataclasses.replace(
                    ticks[-1],
                    bid=_float_or_none(ticker.get("bid")),
                    ask=_float_or_none(ticker.get("ask")),
                    bid_size=_float_or_none(ticker.get("bidVolume")),
                    ask_size=_float_or_none(ticker.get("askVolume")),
                )
        return ticks

    @staticmethod
    def _tick(symbol: str, trade: object, cursor: _TradeCursor) -> Tick | None:
        """The tick of a ccxt trade structure if it is new and complete, else None."""
        if not isinstance(trade, dict):
            return None
        timestamp = trade.get("timestamp")
        price = _float_or_none(trade.get("price"))
        size = _float_or_none(trade.get("amount"))
        if not isinstance(timestamp, int) or price is None or size is None:
            return None
        side = trade.get("side")
        trade_id = trade.get("id")
        # Without an exchange trade id, a trade is told apart by what it says; identical prints in the same
        # millisecond then count once.
        key = str(trade_id) if trade_id is not None else f"{timestamp}/{price}/{size}/{side}"
        if not cursor.admit(timestamp, key):
            return None
        return Tick(
            symbol=symbol,
            event_time=from_millis(timestamp),
            price=price,
            size=size,
            aggressor_side=_SIDES.get(str(side), 0),
        )

    # ----- history -----

    def history_timeframes(self, symbol: str) -> Sequence[Timeframe]:
        if symbol not in self._ccxt_symbols:
            return ()
        supported = self._template.timeframes or {}
        return tuple(tf for tf in _ORDERED_TIMEFRAMES if tf.label in supported)

    async def history(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Closed bars (open_time + timeframe <= clock()) with open_time in [start, end), oldest first, fetched in
        pages of the exchange's largest OHLCV request. Works on a stopped feed too (with a short-lived exchange)."""
        ccxt_symbol = self._ccxt_symbols.get(symbol)
        if ccxt_symbol is None:
            raise HistoryNotSupported(f"feed {self.feed_id} has no symbol {symbol}")
        if timeframe not in self.history_timeframes(symbol):
            raise HistoryNotSupported(f"{self._exchange_id} has no {timeframe.label} candles")
        step = timeframe.seconds * 1000
        start_ms = to_millis(start)
        end_ms = min(to_millis(end), to_millis(self._clock()) - step + 1)
        async with self._history_exchange() as exchange:
            if ccxt_symbol not in (exchange.markets or {}):
                raise HistoryNotSupported(f"{self._exchange_id} has no market {ccxt_symbol}")
            page = self._ohlcv_page_size(exchange.markets[ccxt_symbol])
            bars: list[Bar] = []
            since = start_ms
            while since < end_ms:
                # Never more bars than the range still holds: a short range costs one small request.
                limit = min(page, -(-(end_ms - since) // step))
                rows = await self._call(
                    exchange,
                    f"fetch {timeframe.label} candles of {ccxt_symbol}",
                    exchange.fetch_ohlcv(ccxt_symbol, timeframe.label, since, limit),
                )
                newest = since - 1
                for bar_time, bar in _bars(rows if isinstance(rows, list) else []):
                    # Pages may overlap or run past the range; keep each bar once, in order.
                    if bar_time >= since and bar_time < end_ms and bar_time > newest:
                        bars.append(bar)
                        newest = bar_time
                if newest < since:
                    break  # nothing new: the exchange has no more bars in the range
                since = newest + step
        return bars

    def _ohlcv_page_size(self, market: Mapping[str, Any]) -> int:
        """The exchange's largest fetch_ohlcv limit for this kind of market, from ccxt's `features` table."""
        features = self._template.features or {}
        market_type = market.get("type") or "spot"
        section = features.get(market_type) or {}
        if market_type in ("swap", "future"):
            section = section.get("linear" if market.get("linear") else "inverse") or {}
        limit = (section.get("fetchOHLCV") or {}).get("limit")
        return limit if isinstance(limit, int) and limit > 0 else _DEFAULT_OHLCV_PAGE

    @asynccontextmanager
    async def _history_exchange(self) -> AsyncIterator[Any]:
        """The live exchange when started; otherwise a short-lived one, closed after the call."""
        if self._exchange is not None:
            yield self._exchange
            return
        exchange = self._new_exchange(markets=self._markets)
        try:
            if self._markets is None:
                markets = await self._call(exchange, "load markets", exchange.load_markets())
                self._markets = markets if isinstance(markets, dict) else None
            yield exchange
        finally:
            await _close_quietly(exchange)

    # ----- errors -----

    async def _call(self, exchange: Any, what: str, request: Awaitable[T]) -> T:
        """Await a ccxt call, turning whatever the exchange or the network did wrong into FeedError."""
        ccxt = _ccxt()
        failed = f"feed {self.feed_id}: {what} failed"
        try:
            return await request
        except ccxt.BaseError as error:
            # The exchange's own words go to the log only: they may carry its internals or our request's details.
            detail = f"{type(error).__name__}: {error}"
            if isinstance(error, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
                retry_after = _retry_after(exchange)
                wait = f", retry after {retry_after}" if retry_after else ""
                raise FeedError(f"{failed}: the exchange is rate limiting us{wait}", detail=detail) from error
            if isinstance(error, ccxt.AuthenticationError | ccxt.PermissionDenied):
                raise FeedError(f"{failed}: the exchange refused our credentials", detail=detail) from error
            if isinstance(error, ccxt.NetworkError):
                raise FeedError(f"{failed}: the exchange could not be reached", detail=detail) from error
            raise FeedError(f"{failed}: the exchange refused the request", detail=detail) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            detail = f"{type(error).__name__}: {error}"
            raise FeedError(f"{failed}: the exchange could not be reached", detail=detail) from error
        except (KeyError, TypeError, ValueError) as error:
            # ccxt parsing an answer of an unexpected shape.
            raise FeedError(f"{failed}: the exchange's answer was not understood", detail=repr(error)) from error


def _bars(rows: list[Any]) -> Iterator[tuple[int, Bar]]:
    """ccxt OHLCV rows ([ms, open, high, low, close, volume]) as (open ms, Bar), skipping malformed rows."""
    for row in rows:
        if not isinstance(row, list) or len(row) < 6 or not isinstance(row[0], int):
            continue
        values = [_float_or_none(value) for value in row[1:6]]
        open_, high, low, close = values[:4]
        if open_ is None or high is None or low is None or close is None:
            continue
        yield row[0], Bar(from_millis(row[0]), open_, high, low, close, values[4] or 0.0)


def _retry_after(exchange: Any) -> str | None:
    """The Retry-After header of the exchange's last answer, if it sent one."""
    headers = getattr(exchange, "last_response_headers", None)
    for name, value in headers.items() if isinstance(headers, dict) else ():
        if str(name).lower() == "retry-after":
            return str(value)
    return None


async def _close_quietly(exchange: Any) -> None:
    """Close a ccxt exchange's HTTP session; closing is best effort (the session may already be broken)."""
    try:
        await exchange.close()
    except Exception:
        log.warning("closing a ccxt exchange failed", exc_info=True)
