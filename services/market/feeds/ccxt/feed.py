"""A feed of real crypto exchanges' public market data through ccxt's async REST API (polling, no API keys)."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar

import aiohttp

from services.core.clock import SYSTEM_TIMER, Timer, WallClock, utc_now
from services.market.feeds.base import FeedAdapter, FeedError, HistoryNotSupported, Transport
from services.market.feeds.ccxt.conversions import (
    float_or_none,
    from_millis,
    ohlcv_bars,
    platform_symbol,
    precision_to_step,
    redirect_api_urls,
    to_millis,
)
from services.market.feeds.ccxt.pacing import RequestPacer, TradeCursor
from services.market.records import (
    AssetClass,
    Bar,
    Instrument,
    Tick,
    Timeframe,
    TradingSession,
)

T = TypeVar("T")

log = logging.getLogger("bullant.market.ccxt")

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


@cache
def _ccxt() -> Any:
    """ccxt.async_support, imported on first use: it imports every exchange (about a second), and it has no type
    information, so the rest of this module meets it only through the typed helpers below."""
    return importlib.import_module("ccxt.async_support")


_ORDERED_TIMEFRAMES = (Timeframe.M1, Timeframe.M5, Timeframe.M15, Timeframe.H1, Timeframe.D1)
_SIDES = {"buy": 1, "sell": 2}


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
        clock: WallClock = utc_now,
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
        cursors = {symbol: TradeCursor(since_ms=start_ms) for symbol in symbols}
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

    async def _poll_trades(self, exchange: Any, symbol: str, cursor: TradeCursor) -> list[Tick]:
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
                    bid=float_or_none(ticker.get("bid")),
                    ask=float_or_none(ticker.get("ask")),
                    bid_size=float_or_none(ticker.get("bidVolume")),
                    ask_size=float_or_none(ticker.get("askVolume")),
                )
        return ticks

    @staticmethod
    def _tick(symbol: str, trade: object, cursor: TradeCursor) -> Tick | None:
        """The tick of a ccxt trade structure if it is new and complete, else None."""
        if not isinstance(trade, dict):
            return None
        timestamp = trade.get("timestamp")
        price = float_or_none(trade.get("price"))
        size = float_or_none(trade.get("amount"))
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
                for bar_time, bar in ohlcv_bars(rows if isinstance(rows, list) else []):
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
