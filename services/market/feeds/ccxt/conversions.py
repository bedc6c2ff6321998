"""ccxt's values in the platform's terms: symbols, price and size increments, epoch milliseconds, redirected API
URLs, loose numbers and OHLCV rows."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from services.core.clock import as_naive_utc
from services.market.records import EPOCH, Bar

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")

# ccxt's precisionMode values (ccxt.base.decimal_to_precision): how a market's `precision` numbers read.
_DECIMAL_PLACES = 2
_TICK_SIZE = 4


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
    return (as_naive_utc(moment) - EPOCH) // timedelta(milliseconds=1)


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


def float_or_none(value: object) -> float | None:
    """A number ccxt gave as int, float or text; None for anything else."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def ohlcv_bars(rows: list[Any]) -> Iterator[tuple[int, Bar]]:
    """ccxt OHLCV rows ([ms, open, high, low, close, volume]) as (open ms, Bar), skipping malformed rows."""
    for row in rows:
        if not isinstance(row, list) or len(row) < 6 or not isinstance(row[0], int):
            continue
        values = [float_or_none(value) for value in row[1:6]]
        open_, high, low, close = values[:4]
        if open_ is None or high is None or low is None or close is None:
            continue
        yield row[0], Bar(from_millis(row[0]), open_, high, low, close, values[4] or 0.0)
